-- CSV rows from a TCP socket, averaged per sensor each batch.
-- Feed it: `nc -lk 9001` and type rows such as
--              s1,20.5
--              s2,19.0
--          A malformed row (s1,warm) is skipped and reported with its line number;
--          the stream goes on. Add on_error = 'fail' to stop on it instead.
-- Run:     cargo run --release -- run queries/sensors_csv.sql
CREATE STREAM readings (sensor TEXT, temp DOUBLE)
WITH (connector = 'socket', host = 'localhost', port = '9001', format = 'csv');

SELECT sensor, AVG(temp) AS avg_temp, COUNT(*) AS n
FROM readings
GROUP BY sensor
ORDER BY sensor;
