#!/usr/bin/env bash
# Request latency under a server while leakhunt's rounds run, at scale (issue 16, item 4): Debian's
# puma in single mode (`-w 0`) serving benches/server_heap.ru, which holds about OBJECTS live
# objects (steady_heap.rb's shape), on a Unix socket. benches/server_client.rb sends `GET /` in a
# loop (one connection per request, 10 ms apart) and prints how many requests it made, their
# median, p99 and longest latency, and how many took over 100 ms and over 1 s:
#
#   1. baseline: the same server without leakhunt, for BASE_SECONDS of load;
#   2. under `leakhunt run --backend BACKEND --alloc-sites ALLOC_SITES --snapshots 2 --after AFTER
#      --every EVERY --duration AFTER+EVERY+TAIL`: two interval rounds and the last one at the
#      duration's end; the load runs from the server's first answer until the run ends it.
#
# Then the rounds' timings from the bundle's agent-*.json sidecars. AFTER must leave time for the
# heap to be built ("first answer" comes after the "built" line): the script warns if it did not.
# Not a test: nothing is asserted.
#
#   benches/server_latency.sh                        # BACKEND=none AFTER=20s EVERY=10s
#   BACKEND=lsan benches/server_latency.sh           # AFTER=40s by default
#   OBJECTS=300000 AFTER=5s EVERY=4s BASE_SECONDS=5 benches/server_latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-none}
OBJECTS=${OBJECTS:-1500000}
ALLOC_SITES=${ALLOC_SITES:-all}
if [ "$BACKEND" = lsan ]; then AFTER=${AFTER:-40}; else AFTER=${AFTER:-20}; fi
AFTER=${AFTER%s}
EVERY=${EVERY:-10}
EVERY=${EVERY%s}
TAIL=${TAIL:-10}
BASE_SECONDS=${BASE_SECONDS:-20}
OUT=${LEAKHUNT_BENCH_DIR:-$(mktemp -d)}
BIN=target/release/leakhunt
mkdir -p "$OUT"

for tool in ruby puma; do
  command -v $tool >/dev/null || { echo "benches/server_latency.sh needs $tool (Debian: apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --quiet
export LEAKHUNT_NO_PROGRESS=1 OBJECTS
client=benches/server_client.rb
app=benches/server_heap.ru

# 1. The baseline: puma alone.
sock="$OUT/plain.sock"
rm -f "$sock"
start=$(date +%s.%N)
puma -w 0 -e production -b "unix://$sock" "$app" >"$OUT/plain.out" 2>"$OUT/plain.err" &
puma_pid=$!
echo "plain puma: $(ruby "$client" "$sock" "$BASE_SECONDS" 100000 0.01 300 "$start")"
kill -TERM "$puma_pid"
wait "$puma_pid" || true
grep -o 'built [^.]*slots' "$OUT/plain.out" | sed 's/^/  program said: /' || true

# 2. The same server under leakhunt run; the client runs until the run ends the server.
duration=$((AFTER + EVERY + TAIL))
bundle="$OUT/bundle"
sock="$OUT/run.sock"
rm -rf "$bundle" "$sock"
start=$(date +%s.%N)
"$BIN" run --backend "$BACKEND" --alloc-sites "$ALLOC_SITES" --snapshots 2 --after "${AFTER}s" \
  --every "${EVERY}s" --duration "${duration}s" -o "$bundle" \
  -- puma -w 0 -e production -b "unix://$sock" "$app" >"$OUT/run.out" 2>"$OUT/run.err" &
run_pid=$!
line=$(ruby "$client" "$sock" $((duration + 120)) 1000000 0.01 300 "$start")
set +e
wait "$run_pid"
code=$?
set -e
echo "leakhunt run --backend $BACKEND (rounds at ${AFTER} s, $((AFTER + EVERY)) s, last at ${duration} s): $line"
grep -o 'built [^.]*slots' "$OUT/run.out" | sed 's/^/  program said: /' || true
ready=$(echo "$line" | sed -n 's/^first answer \([0-9.]*\) s.*/\1/p')
if [ -n "$ready" ] && awk -v r="$ready" -v a="$AFTER" 'BEGIN { exit !(r > a) }'; then
  echo "  WARNING: the server first answered after the first round (${AFTER} s): raise AFTER"
fi
echo "  run: exit $code; verdict: $(grep -m1 -o '^leakhunt: \(LEAK\|NO LEAK\|INCONCLUSIVE\)[^(]*' "$OUT/run.out" || echo none)"

# The agent's own steps per round (seconds; the server's threads are parked from gc to counts).
for s in "$bundle"/agent-*.json; do
  [ -e "$s" ] || { echo "  no agent-*.json sidecar in $bundle"; break; }
  ruby -rjson -e 'j = JSON.parse(File.read(ARGV[0])); t = j["timings"] || {}
    printf("  %s %s\n", File.basename(ARGV[0]), t.map { |k, v| format("%s %.2f", k, v) }.join(", "))' "$s"
done
grep '^leakhunt: warning' "$OUT/run.err" || true
echo "machine: $(nproc) cores, $(uname -sr), $(ruby -v | cut -d' ' -f1-2), $(puma --version 2>/dev/null | head -1), load $(cut -d' ' -f1-3 /proc/loadavg); bundle in $bundle"
