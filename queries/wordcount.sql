-- Spark Streaming's queueStream word count, in brook.
-- Two items on an in-memory queue, taken one per 3-second batch:
--   batch 1 counts 'Spark Streaming Sample ssc', batch 2 'Spark Queue Spark API'.
-- Run: cargo run --release -- run queries/wordcount.sql
SET batch_interval = '3 seconds';

CREATE STREAM lines (line TEXT) WITH (connector = 'queue', one_at_a_time = 'true');

INSERT INTO lines VALUES ('Spark Streaming Sample ssc');
INSERT INTO lines VALUES ('Spark Queue Spark API');

SELECT word, COUNT(*) AS count
FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines)
GROUP BY word
ORDER BY count DESC, word;
