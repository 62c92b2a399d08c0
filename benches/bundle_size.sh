#!/usr/bin/env bash
# Bundle size and round cost at scale (issue 16): `leakhunt run --backend BACKEND --alloc-sites
# all` (default none; every allocation traced, the default when BENCHMARKS.md's figures were
# taken: every object of a dump has its site) on benches/steady_heap.rb, a program holding about
# OBJECTS live objects, with three
# rounds (two interval rounds and the exit one). Prints each dump's plain and compressed size,
# the bundle's size, what the agent's rounds cost (sidecar timings) and whether `leakhunt
# analyze BUNDLE` prints exactly what the run printed. Not a test: nothing is asserted.
#
# The program prints its own view of the rounds: the longest gap of a 10 ms heartbeat thread.
#
#   benches/bundle_size.sh                 # OBJECTS=1500000 ALIVE=40 AFTER=15s EVERY=10s
#   BACKEND=lsan benches/bundle_size.sh
#   OBJECTS=300000 AFTER=4s EVERY=3s ALIVE=12 benches/bundle_size.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OBJECTS=${OBJECTS:-1500000}
ALIVE=${ALIVE:-40}
AFTER=${AFTER:-15s}
EVERY=${EVERY:-10s}
BACKEND=${BACKEND:-none}
OUT=${LEAKHUNT_BENCH_DIR:-$(mktemp -d)}
BIN=target/release/leakhunt
mkdir -p "$OUT"

command -v ruby >/dev/null || { echo "benches/bundle_size.sh needs ruby" >&2; exit 1; }
command -v zstd >/dev/null || { echo "benches/bundle_size.sh needs zstd (apt-get install zstd)" >&2; exit 1; }
cargo build --release --quiet
export LEAKHUNT_NO_PROGRESS=1

bundle="$OUT/bundle"
rm -rf "$bundle"
start=$(date +%s%N)
set +e
"$BIN" run --backend "$BACKEND" --alloc-sites all --after "$AFTER" --every "$EVERY" --snapshots 2 -o "$bundle" \
  -- ruby benches/steady_heap.rb "$OBJECTS" "$ALIVE" >"$OUT/run.out" 2>"$OUT/run.err"
code=$?
set -e
end=$(date +%s%N)

printf '%-22s %12s %12s %8s\n' dump "plain MB" "zst MB" ratio
plain_total=0
for f in "$bundle"/heap-*.json.zst; do
  plain=$(zstd -dc "$f" | wc -c)
  zst=$(stat -c %s "$f")
  plain_total=$((plain_total + plain))
  awk -v n="$(basename "$f")" -v p="$plain" -v z="$zst" \
    'BEGIN { printf "%-22s %12.1f %12.1f %7.1fx\n", n, p/1e6, z/1e6, p/z }'
done
bundle_bytes=$(du -sb "$bundle" | cut -f1)
awk -v b="$bundle_bytes" -v p="$plain_total" \
  'BEGIN { printf "bundle: %.1f MB (%.1f MB of dumps uncompressed)\n", b/1e6, p/1e6 }'
echo "run: exit $code, $(( (end - start) / 1000000 )) ms wall; program said: $(tr '\n' ' ' <"$OUT/run.out" | grep -o 'built [^.]*slots' || true)"
grep '^heartbeat:' "$OUT/run.out" || echo "heartbeat: not printed (the program did not end normally)"

# The agent's own steps per round (seconds; the program's threads are parked from gc to counts).
for s in "$bundle"/agent-*.json; do
  ruby -rjson -e 'j = JSON.parse(File.read(ARGV[0])); t = j["timings"]
    printf("%s %s\n", File.basename(ARGV[0]), t.map { |k, v| format("%s %.2f", k, v) }.join(", "))' "$s"
done

# The run's report is the part of its stdout from the verdict line on.
sed -n '/^leakhunt: \(LEAK\|NO LEAK\|INCONCLUSIVE\)/,$p' "$OUT/run.out" >"$OUT/run.report"
"$BIN" analyze "$bundle" >"$OUT/analyze.report" || true
if cmp -s "$OUT/run.report" "$OUT/analyze.report"; then
  echo "analyze BUNDLE: exactly what the run printed ($(wc -l <"$OUT/run.report") lines)"
else
  echo "analyze BUNDLE: DIFFERS from the run's report:"
  diff "$OUT/run.report" "$OUT/analyze.report" | head -20
fi
grep '^leakhunt: warning' "$OUT/run.err" || true
echo "machine: $(nproc) cores, $(uname -sr), $(ruby -v | cut -d' ' -f1-2); bundle in $bundle"
