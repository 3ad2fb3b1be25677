#!/usr/bin/env bash
# An event-time TUMBLE count over a directory of 5,000,000 CSV rows
# (`sensor,ts`, 5 files, one event a millisecond ending about two hours ago),
# the release binary as a user runs it. Prints the seconds from start until
# the 499 windows that close are out, and checks their counts sum to
# 4,990,000.
#
#   benches/event_time_dir.sh [TRIGGER] [BROOK]   (TRIGGER defaults to 1s)
set -euo pipefail
cd "$(dirname "$0")/.."
trigger=${1:-1s}
brook=$(realpath "${2:-target/release/brook}")
w=$(mktemp -d /tmp/brook-event-dir.XXXXXX)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$w"' EXIT
mkdir -p "$w/in"
python3 - "$w/in" <<'PY'
import datetime, sys, time
base = int(time.time() * 1000) - 2 * 3600 * 1000
base -= base % 10000
per = 1_000_000
for f in range(5):
    with open(f"{sys.argv[1]}/src-{f}.csv", "w") as out:
        out.write("sensor,ts\n")
        out.write("".join(
            f"s{i % 1000},{datetime.datetime.fromtimestamp((base + i) / 1000, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}\n"
            for i in range(f * per, (f + 1) * per)))
PY
cat > "$w/q.sql" <<SQL
SET batch_interval = '$trigger';
CREATE STREAM ev (sensor TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (connector = 'files', path = '$w/in', format = 'csv', header = 'true', settle = '0ms');
SELECT window_start, COUNT(*) AS n FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY window_start;
SQL
start=$(date +%s.%N)
"$brook" -q --format csv run "$w/q.sql" > "$w/out.csv" &
pid=$!
for _ in $(seq 1 1200); do
  [ $(($(wc -l < "$w/out.csv") - 1)) -ge 499 ] && break
  sleep 0.05
done
end=$(date +%s.%N)
total=$(tail -n +2 "$w/out.csv" | head -499 | awk -F, '{s += $4} END {print s}')
[ "$total" = 4990000 ] || { echo "wrong counts: $total" >&2; exit 1; }
printf 'trigger %s: %.2f s for 499 windows (4,990,000 events)\n' "$trigger" "$(echo "$end - $start" | bc)"
