-- Word counts over a Kafka topic, every second: the lines of each message's value are
-- split into words. Running totals go to a second topic, keyed by word.
-- Needs:   a Kafka broker on 127.0.0.1:9092 with topics 'lines' and 'word_totals'. With tansu
--          (`bash .ci/install-tansu` puts it at target/tools/tansu):
--            target/tools/tansu broker --listener-url tcp://127.0.0.1:9092 \
--              --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ &
--            target/tools/tansu topic create lines --broker tcp://127.0.0.1:9092 --partitions 4
--            target/tools/tansu topic create word_totals --broker tcp://127.0.0.1:9092
-- Feed it: any producer, one line per message (or several lines in one message).
-- Run:     cargo run --release -- run queries/kafka_wordcount.sql
SET batch_interval = '1 second';

CREATE STREAM lines (line TEXT)
WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 'lines',
      group_id = 'brook-wordcount', start_offset = 'earliest',
      'kafka.session.timeout.ms' = '6000');

CREATE SINK word_totals WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092',
                              topic = 'word_totals', key = 'word')
AS SELECT word, COUNT(*) AS total
   FROM (SELECT unnest(split(line, ' ')) AS word FROM RUNNING(lines, 'update'))
   GROUP BY word;

SELECT word, COUNT(*) AS n
FROM (SELECT unnest(split(line, ' ')) AS word FROM lines)
GROUP BY word
ORDER BY n DESC, word
LIMIT 10;
