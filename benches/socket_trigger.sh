#!/usr/bin/env bash
# The socket word count as the peers' harness runs it: a 127.0.0.1 sender
# (Python, lines of 8 words from a 1,000-word vocabulary), brook as a separate
# process printing CSV. Prints the seconds from start to exit, lines/s, the
# words counted (checked: 8 per line) and peak RSS.
#
#   benches/socket_trigger.sh TRIGGER LINES [BROOK]   e.g. 1s 20000000
set -euo pipefail
cd "$(dirname "$0")/.."
trigger=${1:?trigger}; lines=${2:?lines}
brook=$(realpath "${3:-target/release/brook}")
w=$(mktemp -d /tmp/brook-socket-trigger.XXXXXX)
trap 'kill "${sender:-}" 2>/dev/null || true; rm -rf "$w"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$port" "$lines" > "$w/sender.out" <<'PY' &
import random, socket, sys
port, lines = int(sys.argv[1]), int(sys.argv[2])
random.seed(7)
block_lines = 100_000
block = "".join(" ".join(f"w{random.randrange(1000)}" for _ in range(8)) + "\n"
                for _ in range(block_lines)).encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
for _ in range(lines // block_lines):
    c.sendall(block)
c.close()
PY
sender=$!
until grep -q ready "$w/sender.out"; do sleep 0.05; done
cat > "$w/q.sql" <<SQL
SET batch_interval = '$trigger';
CREATE STREAM lines (line TEXT) WITH (connector = 'socket', host = '127.0.0.1', port = '$port');
SELECT word, COUNT(*) AS n FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) GROUP BY word;
SQL
start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$w/rss" "$brook" -q --format csv run "$w/q.sql" > "$w/out.csv"
end=$(date +%s.%N)
wait "$sender"
words=$(tail -n +2 "$w/out.csv" | awk -F, '{s += $NF} END {print s}')
[ "$words" = $((lines / 100000 * 100000 * 8)) ] || { echo "wrong count: $words" >&2; exit 1; }
secs=$(echo "$end - $start" | bc)
printf 'trigger %s, %s lines: %.2f s, %.0f lines/s, peak RSS %d MiB\n' \
  "$trigger" "$lines" "$secs" "$(echo "$lines / $secs" | bc -l)" "$(( $(cat "$w/rss") / 1024 ))"
