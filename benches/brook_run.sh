#!/usr/bin/env bash
# Timings of the release binary as a user runs it (`brook run FILE`), for
# what the in-process harnesses do not cover cheaply. Each case is a script
# that fills a queue stream with 100 items of 100,000 rows (INSERT ...
# SELECT FROM generate_series), then starts one query or sink; the time
# of the case less the time of the fill alone is the query's or sink's.
#
#   benches/brook_run.sh lake [BROOK]   Parquet and Delta sinks, local disk
#                                       and a local SeaweedFS (S3), 10M rows;
#                                       row counts read back and checked
#   benches/brook_run.sh files [BROOK]  the directory source: 100 CSV files of
#                                       100,000 rows (written by brook's file
#                                       sink) read from local disk and from a
#                                       local SeaweedFS (S3) into a RUNNING
#                                       count and sum, checked exactly
#   benches/brook_run.sh hop  [BROOK]   event-time HOP 1 min / 5 s and
#                                       10 min / 5 s AVG, 10M events, 1,000 keys
#   benches/brook_run.sh words [BROOK]  a per-batch word count (split and
#                                       unnest, GROUP BY), 10M lines of 8
#                                       words, 1,000 distinct words
#
# BROOK defaults to target/release/brook; SeaweedFS is target/tools/weed
# (.ci/install-weed).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?lake, files, hop or words}
brook=$(realpath "${2:-target/release/brook}")
work=$(mktemp -d /tmp/brook-run-bench.XXXXXX)
trap 'kill "${weed_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

fill() { # $1: CREATE STREAM statement, $2: the INSERT's SELECT with {from} {to}
  echo "SET batch_interval = '10ms';"
  echo "$1"
  for b in $(seq 0 99); do
    local from=$((b * 100000)) to=$((b * 100000 + 99999))
    local select=${2//\{from\}/$from}
    echo "${select//\{to\}/$to};"
  done
}

case_time() { # $1: name, $2: fill file, $3: statement added (may be empty)
  cp "$2" "$work/case.sql"
  echo "$3" >> "$work/case.sql"
  local start end
  start=$(date +%s.%N)
  "$brook" -q --format csv run "$work/case.sql" > "$work/out.csv"
  end=$(date +%s.%N)
  printf '%-16s %6.2f s  (%s rows out)\n' "$1" "$(echo "$end - $start" | bc)" "$(wc -l < "$work/out.csv")"
}

queue="max_pending_rows = '20000000', max_pending_bytes = '2000000000', max_batch_rows = '200000', one_at_a_time = 'true'"

if [ "$mode" = hop ]; then
  fill "CREATE STREAM readings (sensor TEXT, temp DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (connector = 'queue', $queue);" \
       "INSERT INTO readings SELECT 'sensor-' || (g % 1000), (g % 100) * 0.5, CAST(to_timestamp_millis(1767225600000 + g / 10) AS TIMESTAMP) FROM generate_series({from}, {to}) AS t(g)" > "$work/fill.sql"
  for run in 1 2 3; do
    case_time fill "$work/fill.sql" ""
    for size in 1 10; do
      case_time "hop ${size} min" "$work/fill.sql" \
        "SELECT window_start, sensor, AVG(temp) AS t FROM HOP(readings, ts, INTERVAL '5' SECOND, INTERVAL '$size' MINUTE) GROUP BY window_start, sensor;"
    done
  done
  exit 0
fi

if [ "$mode" = words ]; then
  fill "CREATE STREAM lines (line TEXT) WITH (connector = 'queue', $queue);" \
       "INSERT INTO lines SELECT 'w' || (g % 1000) || ' w' || (g * 7 % 1000) || ' w' || (g * 13 % 1000) || ' w' || (g * 17 % 1000) || ' w' || (g * 19 % 1000) || ' w' || (g * 23 % 1000) || ' w' || (g * 29 % 1000) || ' w' || (g * 31 % 1000) FROM generate_series({from}, {to}) AS t(g)" > "$work/fill.sql"
  for run in 1 2 3; do
    case_time fill "$work/fill.sql" ""
    case_time "word count" "$work/fill.sql" \
      "SELECT word, COUNT(*) AS n FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines) GROUP BY word;"
  done
  exit 0
fi

# lake: a SeaweedFS on free ports, one bucket.
port=$((20000 + RANDOM % 20000))
mkdir -p "$work/weed/data"
echo '{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' > "$work/weed/s3.json"
target/tools/weed mini -dir="$work/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -master.port=$((port + 1)) -master.port.grpc=$((port + 2)) -volume.port=$((port + 3)) -volume.port.grpc=$((port + 4)) \
  -filer.port=$((port + 5)) -filer.port.grpc=$((port + 6)) -s3.port=$((port + 7)) -s3.port.grpc=$((port + 8)) \
  -s3.port.iceberg=0 -s3.port.lance=0 -admin.ui=false -admin.port=$((port + 9)) -admin.port.grpc=$((port + 10)) \
  -webdav=false -master.volumeSizeLimitMB=512 -s3.config="$work/weed/s3.json" > "$work/weed/log" 2>&1 &
weed_pid=$!
for _ in $(seq 1 60); do
  curl -s -o /dev/null -X POST "http://127.0.0.1:$((port + 5))/buckets/bench/?op=mkdir" && break
  sleep 0.5
done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL=http://127.0.0.1:$((port + 7)) AWS_ALLOW_HTTP=true
fill "CREATE STREAM r (id BIGINT, sensor TEXT, day TEXT, v DOUBLE) WITH (connector = 'queue', $queue);" \
     "INSERT INTO r SELECT g, 'sensor-' || (g % 500), 'd' || (g % 4), g * 0.5 FROM generate_series({from}, {to}) AS t(g)" > "$work/fill.sql"
if [ "$mode" = files ]; then
  # The inputs: the fill's 10M rows written by brook's CSV sink, a file per
  # batch (header, batch, batch_time, id, sensor, v), to disk and to S3.
  case_time "write, disk" "$work/fill.sql" "CREATE SINK o WITH (connector = 'file', format = 'csv', path = '$work/in/') AS SELECT id, sensor, v FROM r;"
  case_time "write, S3" "$work/fill.sql" "CREATE SINK o WITH (connector = 'file', format = 'csv', path = 's3://bench/in/') AS SELECT id, sensor, v FROM r;"
  echo "  $(ls "$work/in" | wc -l) files on disk"
  read_time() { # $1: name, $2: the directory
    cat > "$work/read.sql" <<SQL
SET batch_interval = '100ms';
CREATE STREAM s (batch BIGINT, batch_time TIMESTAMP, id BIGINT, sensor TEXT, v DOUBLE)
  WITH (connector = 'files', path = '$2', format = 'csv', header = 'true', settle = '0ms');
SELECT COUNT(*) AS n, SUM(id) AS total FROM RUNNING(s);
SQL
    # From brook's start to the result that holds every row (then stopped).
    python3 - "$brook" "$work/read.sql" "$1" <<'PY'
import subprocess, sys, time
brook, script, name = sys.argv[1:4]
start = time.monotonic()
run = subprocess.Popen([brook, "-q", "--format", "csv", "run", script], stdout=subprocess.PIPE, text=True)
done = None
for line in run.stdout:
    fields = line.strip().split(",")
    if len(fields) == 4 and fields[2] == "10000000":
        assert fields[3] == "49999995000000", line
        done = time.monotonic() - start
        break
    assert not (len(fields) == 4 and fields[2].isdigit() and int(fields[2]) > 10000000), line
run.kill()
run.wait()
assert done is not None, "the count never reached 10,000,000"
print(f"{name:<16} {done:6.2f} s  ({10_000_000 / done / 1e6:.2f}M rows/s)")
PY
  }
  for run in 1 2 3; do
    read_time "read, disk" "$work/in/"
    read_time "read, S3" "s3://bench/in/"
  done
  exit 0
fi
check() { # $1: CREATE EXTERNAL TABLE's STORED AS and LOCATION
  "$brook" -q --format csv -c "CREATE EXTERNAL TABLE t STORED AS $1" -c "SELECT count(*), sum(id) FROM t" | tail -1
}
for run in 1 2 3; do
  case_time fill "$work/fill.sql" ""
  case_time "parquet, disk" "$work/fill.sql" "CREATE SINK o WITH (connector = 'file', format = 'parquet', path = '$work/p$run/') AS SELECT * FROM r;"
  echo "  read back: $(check "PARQUET LOCATION '$work/p$run/'")"
  case_time "parquet, S3" "$work/fill.sql" "CREATE SINK o WITH (connector = 'file', format = 'parquet', path = 's3://bench/p$run/') AS SELECT * FROM r;"
  echo "  read back: $(check "PARQUET LOCATION 's3://bench/p$run/'")"
  case_time "delta, disk" "$work/fill.sql" "CREATE SINK o WITH (connector = 'delta', path = '$work/d$run') AS SELECT * FROM r;"
  echo "  read back: $(check "DELTA LOCATION '$work/d$run'")"
  case_time "delta, S3" "$work/fill.sql" "CREATE SINK o WITH (connector = 'delta', path = 's3://bench/d$run') AS SELECT * FROM r;"
  echo "  read back: $(check "DELTA LOCATION 's3://bench/d$run'")"
  rm -rf "$work/p$run" "$work/d$run"
done
