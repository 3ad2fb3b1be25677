-- Readings as Avro records on Kafka, their schema in a schema registry: per batch, each
-- sensor's hottest reading, printed and written to a second topic as Avro (its schema
-- registered as 'hottest-value').
-- Needs:   a Kafka broker on 127.0.0.1:9092 with topics 'readings' and 'hottest' (see
--          queries/kafka_wordcount.sql for tansu), and a Confluent-compatible schema registry
--          on http://127.0.0.1:8081 holding the subject 'readings-value', for example
--            {"type": "record", "name": "Reading", "fields": [
--              {"name": "sensor", "type": "string"}, {"name": "value", "type": "double"},
--              {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
--          The stream's columns are that schema's fields (DESCRIBE readings shows them).
-- Feed it: any Avro producer using the registry (the Confluent frame: byte 0, the schema
--          id, the body).
-- Run:     cargo run --release -- run queries/avro_readings.sql
SET batch_interval = '1 second';

CREATE STREAM readings
WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 'readings',
      format = 'avro', schema_registry = 'http://127.0.0.1:8081',
      group_id = 'brook-avro-readings', start_offset = 'earliest',
      'kafka.session.timeout.ms' = '6000');

CREATE SINK hottest WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092',
                          topic = 'hottest', key = 'sensor',
                          format = 'avro', schema_registry = 'http://127.0.0.1:8081')
AS SELECT sensor, MAX(value) AS hottest, MAX(at) AS last_at, COUNT(*) AS readings
   FROM readings GROUP BY sensor;

SELECT sensor, COUNT(*) AS n, AVG(value) AS avg_value
FROM readings
GROUP BY sensor
ORDER BY sensor;
