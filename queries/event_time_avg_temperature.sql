-- The average temperature over the last 2 seconds, every second, in event
-- time: the readings carry their own timestamps, arrive out of order, and one
-- arrives late. Windows close when the watermark (the largest timestamp seen,
-- minus 1 second) reaches their end, so each window's result comes out once,
-- final. The late reading is counted in the batch header and sent to the
-- stream late_readings, which the second query prints with how late it was.
-- Run: cargo run --release -- run queries/event_time_avg_temperature.sql
-- For live data, read the readings from a socket instead:
--   CREATE STREAM readings (sensor TEXT, temp DOUBLE, ts TIMESTAMP,
--     WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
--   WITH (connector = 'socket', port = '9001', format = 'csv');
--   -- and type lines such as: s1,20.5,2026-01-01 10:00:00.250
SET batch_interval = '500ms';

CREATE STREAM readings (
  sensor TEXT,
  temp DOUBLE,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'queue', one_at_a_time = 'true');

-- One INSERT per batch; the readings of each are out of order.
INSERT INTO readings VALUES ('s1', 20.0, '2026-01-01 10:00:00'), ('s2', 18.0, '2026-01-01 10:00:00.500'), ('s1', 21.0, '2026-01-01 10:00:01.200');
INSERT INTO readings VALUES ('s2', 18.5, '2026-01-01 10:00:02.100'), ('s1', 22.0, '2026-01-01 10:00:01.800'), ('s1', 24.0, '2026-01-01 10:00:03');
INSERT INTO readings VALUES ('s2', 17.5, '2026-01-01 10:00:04.200'), ('s1', 23.0, '2026-01-01 10:00:05.100');
-- 10:00:00.700 is late: the watermark is already 10:00:04.100, and every
-- window holding it (the last ends at 10:00:02) has closed.
INSERT INTO readings VALUES ('s1', 19.0, '2026-01-01 10:00:00.700'), ('s2', 16.0, '2026-01-01 10:00:06.300');
INSERT INTO readings VALUES ('s1', 25.0, '2026-01-01 10:00:07'), ('s2', 16.5, '2026-01-01 10:00:08.400');

SELECT window_start, window_end, sensor, AVG(temp) AS avg_temp, COUNT(*) AS readings
FROM HOP(readings, ts, INTERVAL '1 second', INTERVAL '2 seconds')
GROUP BY window_start, window_end, sensor
EMIT ON WINDOW CLOSE
LATE DATA TO late_readings;

SELECT sensor, temp, ts, lateness_ms FROM late_readings;
