-- Spark Streaming's socketTextStream("localhost", 9000).print(), in brook:
-- every line received during a batch interval is printed under that batch's header.
-- Feed it: in another terminal run `nc -lk 9000` and type lines.
-- Run:     cargo run --release -- run queries/socket_print.sql
CREATE STREAM ds (line TEXT) WITH (connector = 'socket', host = 'localhost', port = '9000');

SELECT * FROM ds;
