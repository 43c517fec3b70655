#!/usr/bin/env bash
# Builds Cairn's .deb (cargo-deb, `[package.metadata.deb]` in Cargo.toml) and prints its path.
#
# The man pages (`cairn man --dir`) and shell completions (`cairn completions SHELL`) are written
# by the release binary itself into $CARGO_TARGET_DIR/release/packaging/, so they always match
# the packaged flags; then `cargo deb --no-build` packs them with that same binary.
#
# Usage: packaging/build-deb.sh [--no-build]
#   --no-build  use the release binary already built (CI builds it once, for the benchmark)
# Needs cargo-deb (`cargo install --locked cargo-deb --version 3.8.0`) and dpkg-dev.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != --no-build ]; then
  cargo build --release --locked --bin cairn >&2
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
binary=$target/release/cairn
if [ ! -x "$binary" ]; then
  echo "packaging/build-deb.sh: no release binary at $binary; run without --no-build" >&2
  exit 1
fi
staging=$target/release/packaging
rm -rf "$staging"
mkdir -p "$staging/man" "$staging/completions"
"$binary" man --dir "$staging/man" >&2
# Compressed as Debian policy wants them (cargo-deb compresses only files it did not build).
gzip -9n "$staging"/man/*.1
"$binary" completions bash >"$staging/completions/cairn.bash"
"$binary" completions zsh >"$staging/completions/_cairn"
"$binary" completions fish >"$staging/completions/cairn.fish"
for file in "$staging"/completions/*; do
  if [ ! -s "$file" ]; then
    echo "packaging/build-deb.sh: $binary wrote an empty $file" >&2
    exit 1
  fi
done
# cargo-deb prints the path of the .deb on stdout.
cargo deb --no-build --locked
