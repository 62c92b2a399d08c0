#!/usr/bin/env bash
# Builds leakhunt for macOS on Linux: an x86_64 and an arm64 binary joined into one universal
# (fat) Mach-O, linked by zig's linker against the macOS libSystem stubs zig ships (no Xcode,
# no SDK). zig and cargo-zigbuild come from PyPI into a virtualenv under target/; the Rust
# targets come from rustup.
#
# usage: macos/build-universal.sh [--profile release|dev] [--out PATH]
#   --profile  cargo profile (default release: what ships; CI builds dev, which links the same)
#   --out      where the universal binary goes (default target/macos/leakhunt)
#
# rustc warns that `xcrun` cannot find MacOSX.sdk: it looks for an SDK to record its version;
# zig links without one. tests/macos_build.rs checks the result.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=release
OUT=target/macos/leakhunt
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--out PATH]" >&2; exit 2 ;;
  esac
done
case "$PROFILE" in
  dev) PROFILE_DIR=debug ;;
  *) PROFILE_DIR="$PROFILE" ;;
esac

ZIGLANG=0.17.0
ZIGBUILD=0.24.0
TOOLS=target/macos-tools
if [ "$("$TOOLS/venv/bin/cargo-zigbuild" --version 2>/dev/null)" != "cargo-zigbuild $ZIGBUILD" ] ||
   [ "$("$TOOLS/venv/bin/python-zig" version 2>/dev/null)" != "$ZIGLANG" ]; then
  echo "build-universal: installing ziglang $ZIGLANG and cargo-zigbuild $ZIGBUILD into $TOOLS/venv" >&2
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
    "ziglang==$ZIGLANG" "cargo-zigbuild==$ZIGBUILD"
fi
export PATH="$PWD/$TOOLS/venv/bin:$PATH"

installed=$(rustup target list --installed)
for target in x86_64-apple-darwin aarch64-apple-darwin; do
  grep -qx "$target" <<<"$installed" || rustup target add "$target"
done

cargo zigbuild --locked --profile "$PROFILE" --target universal2-apple-darwin --bin leakhunt
mkdir -p "$(dirname "$OUT")"
cp "${CARGO_TARGET_DIR:-target}/universal2-apple-darwin/$PROFILE_DIR/leakhunt" "$OUT"
echo "build-universal: $OUT (x86_64 + arm64, profile $PROFILE)" >&2
