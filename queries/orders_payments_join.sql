-- Orders and their payments, joined in event time across micro-batches: a
-- payment belongs to an order when it is paid within 10 minutes of it. Each
-- pair comes out once, in the batch that reads its second row, whichever
-- came first; an order with no payment comes out once, with NULLs, when the
-- payments' watermark has passed its 10 minutes (or when the streams end).
-- Each side keeps only the rows that can still match.
-- Run: cargo run --release -- run queries/orders_payments_join.sql
-- For files dropped into directories instead of these INSERTs:
--   CREATE STREAM orders (id BIGINT, customer TEXT, total DOUBLE, ts TIMESTAMP,
--     WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
--   WITH (connector = 'files', path = 'incoming/orders', format = 'csv', pattern = '*.csv');
--   -- and the same for payments; lines such as: 1,ann,25.5,2026-01-01 10:00:00
SET batch_interval = '200ms';

CREATE STREAM orders (
  id BIGINT,
  customer TEXT,
  total DOUBLE,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'queue', one_at_a_time = 'true');

CREATE STREAM payments (
  order_id BIGINT,
  amount DOUBLE,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'queue', one_at_a_time = 'true');

-- One INSERT of each stream per batch.
-- Batch 1: two orders, and a payment for order 1 paid 2 minutes after it.
INSERT INTO orders VALUES (1, 'ann', 25.5, '2026-01-01 10:00:00'), (2, 'bob', 12.0, '2026-01-01 10:01:00');
INSERT INTO payments VALUES (1, 25.5, '2026-01-01 10:02:00');
-- Batch 2: order 3 and its payment; bob pays 20 minutes after his order:
-- too late to match it, and it moves the payments' watermark to 10:20:55,
-- past order 2's 10 minutes: order 2 comes out with NULLs in this batch.
INSERT INTO orders VALUES (3, 'cy', 40.0, '2026-01-01 10:03:00');
INSERT INTO payments VALUES (3, 40.0, '2026-01-01 10:04:30'), (2, 12.0, '2026-01-01 10:21:00');
-- Batch 3: order 4 and its payment.
INSERT INTO orders VALUES (4, 'dee', 8.0, '2026-01-01 10:30:00');
INSERT INTO payments VALUES (4, 8.0, '2026-01-01 10:30:05');

SELECT o.id, o.customer, o.total, p.amount, p.ts AS paid_at
FROM orders o
LEFT JOIN payments p
  ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' MINUTE;
