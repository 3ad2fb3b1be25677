-- Sensor averages since the start, upserted into a PostgreSQL table: one row per sensor,
-- updated every batch in which the sensor sent readings.
-- Needs:   a PostgreSQL server; edit the url (user, password, port, database) to yours.
--          The table is created on first use (create_table); each batch commits together
--          with its record in brook_sink_progress, so no batch is written twice.
-- Feed it: `nc -lk 9001` and type rows such as
--              s1,20.5
--              s2,19.0
-- Run:     cargo run --release -- run queries/sensors_postgres.sql
-- Look:    psql -h 127.0.0.1 -c 'SELECT * FROM sensor_averages ORDER BY sensor'
CREATE STREAM readings (sensor TEXT, temp DOUBLE)
WITH (connector = 'socket', host = 'localhost', port = '9001', format = 'csv');

CREATE SINK averages WITH (
  connector = 'postgres',
  url = 'postgres://postgres@127.0.0.1:5432/postgres',
  table = 'sensor_averages',
  mode = 'upsert',
  key = 'sensor',
  create_table = 'true')
AS SELECT sensor, AVG(temp) AS avg_temp, COUNT(*) AS readings
   FROM RUNNING(readings, 'update')
   GROUP BY sensor;
