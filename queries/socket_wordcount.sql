-- Word count per batch over lines from a TCP socket (Spark's NetworkWordCount).
-- Feed it: in another terminal run `nc -lk 9000` and type lines, or
--          `yes 'to be or not to be' | head -n 100000 | nc -lN 9000`.
-- Run:     cargo run --release -- run queries/socket_wordcount.sql
-- The query ends when the sender closes the connection.
SET batch_interval = '1 second';

CREATE STREAM lines (line TEXT) WITH (connector = 'socket', host = 'localhost', port = '9000');

-- split(text, delimiter) is brook's zero-copy string_to_array: the words are
-- views into the received lines, so the split copies no bytes.
SELECT word, COUNT(*) AS count
FROM (SELECT unnest(split(line, ' ')) AS word FROM lines)
WHERE word <> ''
GROUP BY word
ORDER BY count DESC, word;
