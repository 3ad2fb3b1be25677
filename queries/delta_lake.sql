-- Clicks land in a Delta Lake table on S3, twice: every click appended (partitioned by day),
-- and each page's running view count upserted (a Delta MERGE on the page). Each batch is one
-- Delta commit, written exactly once (see the README's "S3 and Delta Lake").
-- Needs:   an S3 server on http://127.0.0.1:8333 with a bucket 'lake'. SeaweedFS, the one the
--          tests use (bash .ci/install-weed puts it at target/tools/weed):
--            AWS_ACCESS_KEY_ID=brook AWS_SECRET_ACCESS_KEY=brook-secret \
--              target/tools/weed mini -dir=/tmp/weed -ip=127.0.0.1 -ip.bind=127.0.0.1 \
--              -master.telemetry=false -s3.port=8333 &
--            curl -X POST 'http://127.0.0.1:8888/buckets/lake/?op=mkdir'   # the bucket
-- Run:     AWS_ACCESS_KEY_ID=brook AWS_SECRET_ACCESS_KEY=brook-secret \
--            cargo run --release --features delta -- run queries/delta_lake.sql
-- Read:    CREATE EXTERNAL TABLE pages STORED AS DELTA LOCATION 's3://lake/pages'
--            OPTIONS ('s3.endpoint' 'http://127.0.0.1:8333', 's3.allow_http' 'true');
SET batch_interval = '500ms';

CREATE STREAM clicks (user_id BIGINT, page TEXT, ts TIMESTAMP)
WITH (connector = 'queue', one_at_a_time = 'true');

INSERT INTO clicks VALUES (1, '/home', TIMESTAMP '2026-12-01 09:00:00'),
                          (2, '/docs', TIMESTAMP '2026-12-01 09:00:05');
INSERT INTO clicks VALUES (1, '/docs', TIMESTAMP '2026-12-01 23:59:59'),
                          (3, '/home', TIMESTAMP '2026-12-02 00:00:01');
INSERT INTO clicks VALUES (2, '/home', TIMESTAMP '2026-12-02 08:30:00');

CREATE SINK all_clicks
WITH (connector = 'delta', path = 's3://lake/clicks', partition_by = 'day',
      s3.endpoint = 'http://127.0.0.1:8333', s3.allow_http = 'true')
AS SELECT CAST(CAST(ts AS DATE) AS TEXT) AS day, user_id, page, ts FROM clicks;

CREATE SINK pages
WITH (connector = 'delta', path = 's3://lake/pages', mode = 'upsert', key = 'page',
      s3.endpoint = 'http://127.0.0.1:8333', s3.allow_http = 'true')
AS SELECT page, COUNT(*) AS views FROM RUNNING(clicks) GROUP BY page;
