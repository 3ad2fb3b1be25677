-- Word count over files dropped into a directory (Spark's textFileStream).
-- Feed it: mkdir -p incoming, then drop files in whole, e.g.
--          echo 'to be or not to be' > incoming/.a.txt && mv incoming/.a.txt incoming/a.txt
--          (names starting with . or _ are never read: write there, then rename).
-- Run:     cargo run --release -- run queries/files_wordcount.sql
-- Each file is read once; the counts are running totals since the start.
-- The stream does not end by itself: stop with Ctrl-C (what arrived still runs).
SET batch_interval = '1 second';

CREATE STREAM lines (line TEXT)
  WITH (connector = 'files', path = 'incoming', pattern = '*.txt', settle = '200ms');

SELECT word, COUNT(*) AS total
FROM (SELECT unnest(split(line, ' ')) AS word FROM RUNNING(lines))
WHERE word <> ''
GROUP BY word;
