-- Orders per status, from PostgreSQL's own change log: counts go up as orders arrive and
-- down as they move on; each batch prints the groups it changed (+I new, +U changed,
-- -D gone). No Kafka: brook reads the table through a logical replication slot.
-- Needs:   PostgreSQL with wal_level = logical (postgresql.conf, or start the server with
--          `postgres -c wal_level=logical ...`), a user allowed to create a publication and a
--          replication slot (the table's owner, with REPLICATION), and the table:
--              CREATE TABLE orders (id int PRIMARY KEY, status text, amount bigint);
--              INSERT INTO orders VALUES (1, 'new', 10), (2, 'new', 20), (3, 'paid', 5);
--          Edit the url (user, password, port, database) to yours.
-- Change:  psql -c "UPDATE orders SET status = 'paid' WHERE id = 1"
--          psql -c "DELETE FROM orders WHERE id = 2"
-- Run:     cargo run --release -- run queries/orders_by_status_cdc.sql
-- Clean:   brook keeps slot brook_orders (it holds WAL until read); when done for good:
--          psql -c "SELECT pg_drop_replication_slot('brook_orders')"
CREATE STREAM orders (id INT, status TEXT, amount BIGINT, PRIMARY KEY (id))
WITH (connector = 'postgres-cdc', url = 'postgres://postgres@127.0.0.1:5432/postgres', table = 'orders');

SELECT status, COUNT(*) AS n, SUM(amount) AS total
FROM RUNNING(orders, 'update')
GROUP BY status
ORDER BY status;
