#!/usr/bin/env bash
# What a program pays after leakhunt's rounds are over (issue 11): benches/after_round.rb runs the
# allocs workload for DURATION and prints how many objects it made per CPU second from 3 s on,
# after the two rounds at 1 s and 2 s. Lines, interleaved RUNS times, best of each kept:
#
#   1. ruby alone (the baseline; with BACKEND=lsan, LSan preloaded with leakhunt's options);
#   2. ruby with a TracePoint on the events the agent parks threads with (read from
#      src/run/agent.rb) enabled for 50 ms at 1 s and 2 s, as a round's parking does: no leakhunt;
#   3. the same with a TracePoint on :c_return only;
#   4. `leakhunt run --backend BACKEND --no-alloc-sites --snapshots 0`: the agent, no round before
#      exit;
#   5. `leakhunt run --backend BACKEND --no-alloc-sites --after 1s --every 1s --snapshots 2`
#      (the rounds hold Ruby's GVL: the default);
#   6. the same with LEAKHUNT_HELD_DUMP_MAX=0: the rounds park the threads with the TracePoint.
#
# "CPU ratio" is the baseline's objects per CPU second over the line's: what the same work costs
# in CPU after the rounds, against ruby alone. Not a test: nothing is asserted.
#
#   benches/after_round.sh                   # BACKEND=none RUNS=3 DURATION=9
#   BACKEND=lsan RUNS=2 benches/after_round.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-none}
RUNS=${RUNS:-3}
DURATION=${DURATION:-9}
OUT=${LEAKHUNT_BENCH_DIR:-$(mktemp -d)}
BIN=target/release/leakhunt
WORK=benches/after_round.rb
mkdir -p "$OUT"
command -v ruby >/dev/null || { echo "benches/after_round.sh needs ruby (Debian: apt-get install ruby)" >&2; exit 1; }
cargo build --release --quiet
export LEAKHUNT_NO_PROGRESS=1

# The agent's parking events, as agent.rb enables them.
park_events=$(grep -o 'TracePoint.new([^)]*) { park' src/run/agent.rb | grep -o ':[a-z_]*' | tr -d ':' | tr '\n' ' ' | sed 's/ $//')
[ -n "$park_events" ] || { echo "benches/after_round.sh: no parking TracePoint found in src/run/agent.rb" >&2; exit 1; }

preload=()
if [ "$BACKEND" = lsan ]; then
  lsan=$(ls /usr/lib/*/liblsan.so.0 2>/dev/null | head -1)
  [ -n "$lsan" ] || { echo "benches/after_round.sh: BACKEND=lsan needs liblsan0" >&2; exit 1; }
  preload=(env "LD_PRELOAD=$lsan" "LSAN_OPTIONS=fast_unwind_on_malloc=0:leak_check_at_exit=0:detect_leaks=1")
elif [ "$BACKEND" != none ]; then
  echo "benches/after_round.sh: BACKEND is none or lsan" >&2
  exit 1
fi

labels=(
  "ruby${preload:+ (LSan preloaded)}"
  "ruby, TracePoint ($park_events) on 50 ms at 1 s and 2 s"
  "ruby, TracePoint (c_return) on 50 ms at 1 s and 2 s"
  "leakhunt run --backend $BACKEND --no-alloc-sites --snapshots 0"
  "leakhunt run --backend $BACKEND --no-alloc-sites, rounds at 1 s and 2 s (held)"
  "leakhunt run --backend $BACKEND --no-alloc-sites, rounds at 1 s and 2 s, LEAKHUNT_HELD_DUMP_MAX=0 (parked)"
)

line() {
  local i=$1 bundle="$OUT/bundle-$1"
  rm -rf "$bundle"
  case $i in
    0) "${preload[@]}" ruby "$WORK" "$DURATION" ;;
    1) TRACE_EVENTS="$park_events" "${preload[@]}" ruby "$WORK" "$DURATION" ;;
    2) TRACE_EVENTS=c_return "${preload[@]}" ruby "$WORK" "$DURATION" ;;
    3) "$BIN" run --backend "$BACKEND" --no-alloc-sites --snapshots 0 -o "$bundle" ruby "$WORK" "$DURATION" ;;
    4) "$BIN" run --backend "$BACKEND" --no-alloc-sites --after 1s --every 1s --snapshots 2 -o "$bundle" \
         ruby "$WORK" "$DURATION" ;;
    5) LEAKHUNT_HELD_DUMP_MAX=0 "$BIN" run --backend "$BACKEND" --no-alloc-sites --after 1s --every 1s --snapshots 2 \
         -o "$bundle" ruby "$WORK" "$DURATION" ;;
  esac 2>&1 | sed -n 's/^after_round: \([0-9]*\) objects.*/\1/p'
}

declare -a best
for run in $(seq "$RUNS"); do
  for i in 0 1 2 3 4 5; do
    rate=$(line "$i" || true)
    [ -n "$rate" ] || { echo "run $run, ${labels[$i]}: no rate printed (see $OUT)" >&2; continue; }
    echo "run $run: ${labels[$i]}: $rate objects per CPU s" >&2
    if [ -z "${best[$i]:-}" ] || [ "$rate" -gt "${best[$i]}" ]; then best[$i]=$rate; fi
  done
done

printf '| %s | %s | %s |\n' "how (best of $RUNS)" "objects per CPU s from 3 s on" "CPU ratio"
printf '|---|---|---|\n'
for i in 0 1 2 3 4 5; do
  rate=${best[$i]:-}
  if [ -z "$rate" ]; then printf '| %s | – | – |\n' "${labels[$i]}"; continue; fi
  ratio=$(awk -v b="${best[0]:-0}" -v r="$rate" 'BEGIN { if (b > 0) printf "%.2fx", b / r; else print "–" }')
  printf '| %s | %s | %s |\n' "${labels[$i]}" "$rate" "$ratio"
done
