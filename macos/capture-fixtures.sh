#!/usr/bin/env bash
# Captures leakhunt fixtures on a Mac (see macos/README.md): the seed program under
# `leakhunt run --backend leaks`, and raw `leaks` outputs of the same program in several modes,
# each with stdout, stderr and exit status, plus the versions involved.
#
# usage: macos/capture-fixtures.sh [--ruby PATH] [--leakhunt PATH] [--out DIR]
#
# CAPTURE_SETTLE (seconds, default 8) is how long a started program runs before leaks looks
# at it (tests/macos_scripts.rs runs this script on Linux with stand-ins and a short one).
set -uo pipefail

cd "$(dirname "$0")/.."
RUBY=""
LEAKHUNT="target/release/leakhunt"
SETTLE="${CAPTURE_SETTLE:-8}"
OUT="macos-fixtures-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --ruby) RUBY="$2"; shift 2 ;;
    --leakhunt) LEAKHUNT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: $0 [--ruby PATH] [--leakhunt PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done

die() { echo "capture-fixtures: $*" >&2; exit 1; }
[ "$(uname -s)" = Darwin ] || die "run this on macOS"
command -v leaks >/dev/null || die "leaks(1) not found: xcode-select --install"
[ -n "$RUBY" ] || RUBY="$(command -v ruby || true)"
[ -x "$RUBY" ] || die "no ruby: pass --ruby PATH (a Homebrew, rbenv or asdf Ruby)"
case "$(cd "$(dirname "$RUBY")" && pwd -P)" in
  /usr/bin|/bin|/System/*) die "$RUBY is the SIP-protected system Ruby: pass --ruby with a Homebrew/rbenv/asdf Ruby" ;;
esac
"$RUBY" -e 'require "ffi-rzmq"' 2>/dev/null || die "ffi-rzmq missing: brew install zeromq && $(dirname "$RUBY")/gem install ffi-rzmq"
[ -x "$LEAKHUNT" ] || die "$LEAKHUNT not built: cargo build --release (or pass --leakhunt)"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

mkdir -p "$OUT" && chmod 700 "$OUT"
MANIFEST="$OUT/MANIFEST.txt"
SEED=fixtures/seed/leak-counter.rb
PORT=5549

note() { printf '%s\n' "$*" >>"$MANIFEST"; }

{
  echo "# leakhunt macOS fixtures, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "sw_vers: $(sw_vers -productName) $(sw_vers -productVersion) ($(sw_vers -buildVersion)), $(uname -m)"
  echo "ruby: $RUBY — $("$RUBY" -v)"
  echo "ffi-rzmq: $("$RUBY" -e 'require "ffi-rzmq"; print Gem.loaded_specs["ffi-rzmq"]&.version')," \
       "ffi: $("$RUBY" -e 'require "ffi"; print FFI::VERSION')"
  echo "xcode-select: $(xcode-select -p 2>/dev/null)"
  echo "DevToolsSecurity: $(DevToolsSecurity -status 2>&1)"
  echo "groups: $(id -Gn)"
  echo "leakhunt: $("$LEAKHUNT" --version)"
  echo
} >"$MANIFEST"

# Starts the seed program in the background with the given environment, long enough to be
# examined, and sets PID. Not in a $(…) subshell: the program must be this shell's child, for
# `wait` to reap it.
PID=""
start_seed() {
  local port=$1; shift
  env "$@" "$RUBY" "$SEED" "tcp://127.0.0.1:$port" 1024 100000000 >/dev/null 2>"$OUT/target-$port.stderr" &
  PID=$!
}

# Stops the program start_seed started and records how it ended (143: SIGTERM, as sent).
stop_seed() {
  kill "$PID"
  wait "$PID"
  note "    (the program, pid $PID, then ended with status $?)"
}

# capture NAME DESCRIPTION COMMAND...: stdout, stderr and exit status of one leaks command.
capture() {
  local name=$1 what=$2; shift 2
  "$@" >"$OUT/$name.txt" 2>"$OUT/$name.stderr"
  local status=$?
  note "$name.txt — $what"
  note "    command: $*"
  note "    exit status: $status; stdout $(wc -c <"$OUT/$name.txt") bytes; stderr $(wc -c <"$OUT/$name.stderr") bytes"
}

echo "1/4 leakhunt run on the seed program (counter, no close)…"
"$LEAKHUNT" run --backend leaks --ruby "$RUBY" -o "$OUT/bundle-counter" --after 3s --every 5s --snapshots 2 \
  -- "$SEED" "tcp://127.0.0.1:$PORT" 1024 300000 >"$OUT/bundle-counter.summary.txt" 2>"$OUT/bundle-counter.stderr"
note "bundle-counter/ — leakhunt run --backend leaks --ruby $RUBY on $SEED (exit $?); summary in bundle-counter.summary.txt"
"$LEAKHUNT" doctor --backend leaks --ruby "$RUBY" >"$OUT/doctor.txt" 2>&1
note "doctor.txt — leakhunt doctor --backend leaks --ruby $RUBY (exit $?)"

echo "2/4 raw leaks outputs with MallocStackLogging=1…"
start_seed 5550 MallocStackLogging=1
sleep "$SETTLE"
capture leaks-msl1-default "leaks PID, MallocStackLogging=1 (the seed's command)" leaks "$PID"
capture leaks-msl1-nocontent "leaks -noContent PID (what leakhunt runs)" leaks -noContent "$PID"
capture leaks-msl1-list "leaks --list PID (one-line Call stack: per leak)" leaks --list "$PID"
capture leaks-msl1-quiet "leaks -quiet PID" leaks -quiet "$PID"
capture leaks-msl1-graph "leaks --outputGraph (the .memgraph is kept next to it)" \
  leaks --outputGraph="$OUT/seed-counter.memgraph" "$PID"
capture leaks-memgraph-reread "leaks FILE.memgraph (offline re-read)" leaks "$OUT/seed-counter.memgraph"
capture leaks-memgraph-reread-list "leaks --list FILE.memgraph" leaks --list "$OUT/seed-counter.memgraph"
stop_seed

echo "3/4 other MallocStackLogging values…"
for msl in lite full none; do
  if [ "$msl" = none ]; then start_seed 5551; else start_seed 5551 MallocStackLogging=$msl; fi
  sleep "$SETTLE"
  capture "leaks-msl-$msl" "leaks PID with MallocStackLogging=$msl" leaks "$PID"
  stop_seed
done
capture leaks-atexit "leaks --atExit -- ruby seed (10,000 round trips)" \
  leaks --atExit -- "$RUBY" "$SEED" "tcp://127.0.0.1:5552" 1024 10000

echo "4/4 failures…"
start_seed 5553
stop_seed
capture leaks-fail-gone "leaks on a pid that has exited" leaks "$PID"
if [ -x /usr/bin/ruby ]; then
  /usr/bin/ruby -e 'sleep 30' & SIP_PID=$!
  sleep 1
  capture leaks-fail-sip "leaks on the SIP-protected /usr/bin/ruby" leaks "$SIP_PID"
  kill "$SIP_PID"; wait "$SIP_PID" 2>/dev/null
fi

chmod -R go-rwx "$OUT"
echo "done: $OUT (see $MANIFEST). Copy what you need into fixtures/leaks/ and note its provenance in fixtures/README.md."
