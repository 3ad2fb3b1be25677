-- The average temperature over the last 2 seconds, every second
-- (Spark's window(Seconds(2), Seconds(1)) over a DStream, in SQL).
-- Five seconds of readings sit on a queue, one second's worth per batch;
-- each window holds the last two batches (the first one only batch 1).
-- Run: cargo run --release -- run queries/sliding_avg_temperature.sql
-- For live data, read the readings from a socket instead:
--   CREATE STREAM readings (sensor TEXT, temp DOUBLE)
--   WITH (connector = 'socket', host = 'localhost', port = '9001', format = 'csv');
SET batch_interval = '1 second';

CREATE STREAM readings (sensor TEXT, temp DOUBLE)
WITH (connector = 'queue', one_at_a_time = 'true');

INSERT INTO readings VALUES ('s1', 20.0), ('s2', 18.0);
INSERT INTO readings VALUES ('s1', 22.0), ('s2', 18.5);
INSERT INTO readings VALUES ('s1', 24.0);
INSERT INTO readings VALUES ('s1', 23.0), ('s2', 17.0);
INSERT INTO readings VALUES ('s2', 16.0);

SELECT sensor, AVG(temp) AS avg_temp, COUNT(*) AS readings, window_start, window_end
FROM HOP(readings, INTERVAL '1 second', INTERVAL '2 seconds')
GROUP BY sensor, window_start, window_end
ORDER BY sensor;
