#!/usr/bin/env bash
# Heap-dump benchmark (not a test): histogram, 3-dump diff and retainers on large CRuby dumps.
#
#   benches/heap.sh            # generate (once) into benches/data/, build release, measure
#   BIG_OBJECTS=1350000 TRIPLE_OBJECTS=550000 RUNS=3 benches/heap.sh
#
# Dumps are made by benches/heap_gen.rb with the `ruby` on PATH (allocation tracing on) and
# cached in benches/data/ (gitignored). For every operation it prints the input size, the best
# wall time of RUNS runs, MB/s, the peak RSS (GNU time's %M) and the ratio to `wc -l` on the same
# input, run in the same invocation. Inputs are read from the page cache (wc -l warms it first).
set -euo pipefail
cd "$(dirname "$0")/.."

BIG_OBJECTS=${BIG_OBJECTS:-1350000}
TRIPLE_OBJECTS=${TRIPLE_OBJECTS:-550000}
RUNS=${RUNS:-3}
DATA=benches/data
BIN=target/release/leakhunt

if [ ! -x /usr/bin/time ]; then
  echo "benches/heap.sh needs GNU time for peak RSS: apt-get install time" >&2
  exit 1
fi
command -v ruby >/dev/null || { echo "benches/heap.sh needs ruby" >&2; exit 1; }

mkdir -p "$DATA"
big="$DATA/big-$BIG_OBJECTS.json"
triple="$DATA/triple-$TRIPLE_OBJECTS"
if [ ! -s "$big" ]; then
  echo "generating $big ..." >&2
  ruby benches/heap_gen.rb big "$big.tmp" "$BIG_OBJECTS" && mv "$big.tmp" "$big"
fi
if [ ! -s "$triple-c.json" ]; then
  echo "generating $triple-{a,b,c}.json ..." >&2
  ruby benches/heap_gen.rb triple "$triple" "$TRIPLE_OBJECTS"
fi
if [ ! -s "$big.gz" ]; then
  echo "compressing $big.gz ..." >&2
  gzip -1 -c "$big" >"$big.gz.tmp" && mv "$big.gz.tmp" "$big.gz"
fi

cargo build --release --quiet
export LEAKHUNT_NO_PROGRESS=1

# measure NAME -- CMD...: best wall time (s) and peak RSS (KB) over RUNS runs → "$best $rss".
measure() {
  local best="" rss=0 t0 t1 el kb
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    /usr/bin/time -f %M -o "$DATA/.rss" "$@" >/dev/null
    t1=$(date +%s%N)
    el=$(( (t1 - t0) / 1000 ))
    kb=$(tail -n1 "$DATA/.rss")
    if [ -z "$best" ] || [ "$el" -lt "$best" ]; then best=$el; fi
    if [ "$kb" -gt "$rss" ]; then rss=$kb; fi
  done
  echo "$best $rss"
}

size_of() { local s=0 f; for f in "$@"; do s=$((s + $(stat -c %s "$f"))); done; echo "$s"; }
lines_of() { cat "$@" | wc -l; }

printf '%-34s %9s %9s %9s %9s %8s %9s\n' operation "MB" "seconds" "MB/s" "wc -l s" "x wc" "RSS MB"
row() { # name bytes micros rss_kb wc_micros
  awk -v n="$1" -v b="$2" -v t="$3" -v r="$4" -v w="$5" 'BEGIN {
    printf "%-34s %9.1f %9.3f %9.0f %9.3f %8.1f %9.1f\n", n, b/1e6, t/1e6, (b/1e6)/(t/1e6), w/1e6, t/w, r/1024 }'
}

# Histogram of the big dump, plain and gzip (for gzip, MB and MB/s count the decompressed
# content, and the baseline is `gzip -dc | wc -l`).
bytes=$(size_of "$big")
read -r wc_t _ < <(measure wc -l "$big")
read -r histo_big rss < <(measure "$BIN" histo "$big")
row "histo $(basename "$big")" "$bytes" "$histo_big" "$rss" "$wc_t"
read -r wc_t _ < <(measure sh -c "gzip -dc '$big.gz' | wc -l")
read -r t rss < <(measure "$BIN" histo "$big.gz")
row "histo $(basename "$big").gz" "$bytes" "$t" "$rss" "$wc_t"
# The same on one core: decompression and scanning take turns instead of overlapping.
read -r t rss < <(measure taskset -c 0 "$BIN" histo "$big.gz")
row "histo $(basename "$big").gz, 1 core" "$bytes" "$t" "$rss" "$wc_t"

# Retainers on the big dump (the time target is relative to the histogram's).
bytes=$(size_of "$big")
read -r wc_t _ < <(measure wc -l "$big")
read -r t rss < <(measure "$BIN" retainers "$big" --class Order)
row "retainers --class Order" "$bytes" "$t" "$rss" "$wc_t"
ret_ratio=$(awk -v a="$t" -v b="$histo_big" 'BEGIN { printf "%.2f", a/b }')

# Diffs over the triple.
a="$triple-a.json"; b="$triple-b.json"; c="$triple-c.json"
bytes=$(size_of "$a" "$b" "$c")
read -r wc_t _ < <(measure wc -l "$a" "$b" "$c")
read -r t rss3 < <(measure "$BIN" diff "$a" "$b" "$c")
row "diff A B C" "$bytes" "$t" "$rss3" "$wc_t"
bytes=$(size_of "$a" "$b")
read -r wc_t _ < <(measure wc -l "$a" "$b")
read -r t rss < <(measure "$BIN" diff "$a" "$b")
row "diff A B" "$bytes" "$t" "$rss" "$wc_t"

largest=$(for f in "$a" "$b" "$c"; do wc -l <"$f"; done | sort -n | tail -n1)
echo
echo "inputs: big $(lines_of "$big") lines; A/B/C $(wc -l <"$a")/$(wc -l <"$b")/$(wc -l <"$c") lines"
echo "retainers / histogram time: ${ret_ratio}x"
awk -v r="$rss3" -v n="$largest" 'BEGIN { printf "diff A B C peak RSS per object of the largest dump: %.1f bytes\n", r*1024/n }'
echo "for scale (FACTS.md, same machine): heapy reads a 509 MB dump in 48 s (~11 MB/s);"
echo "heapy diff of 175+347+386 MB dumps takes 47 s (~19 MB/s); wc -l on the 509 MB file 0.15 s."
echo "machine: $(nproc) cores, $(uname -sr), $(ruby -v | cut -d' ' -f1-2)"
