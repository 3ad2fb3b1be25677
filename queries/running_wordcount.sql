-- A running word count: totals since the query started (Spark's
-- updateStateByKey), printed every batch. RUNNING(lines, 'update') prints
-- only the words each batch changed.
-- Run: cargo run --release -- run queries/running_wordcount.sql
SET batch_interval = '1 second';

CREATE STREAM lines (line TEXT) WITH (connector = 'queue', one_at_a_time = 'true');

INSERT INTO lines VALUES ('to be or not to be');
INSERT INTO lines VALUES ('that is the question');
INSERT INTO lines VALUES ('to sleep perchance to dream');

SELECT word, COUNT(*) AS total
FROM (SELECT unnest(split(line, ' ')) AS word FROM RUNNING(lines))
GROUP BY word
ORDER BY total DESC, word
LIMIT 5;
