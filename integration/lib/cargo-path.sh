# shellcheck shell=bash
# Finds cargo the way the user's own shell would, also under sudo, and puts it on PATH.
# Sourced by integration/demo.sh and integration/test.sh (bash).
#
# `sudo` resets PATH to its `secure_path` (Debian: /usr/local/sbin:/usr/local/bin:/usr/sbin:
# /usr/bin:/sbin:/bin) and drops CARGO_HOME and RUSTUP_HOME, so a Rust toolchain installed with
# rustup (in ~/.cargo/bin, the usual way) is not found: `sudo integration/demo.sh` would fail
# with "cargo: command not found". This looks, in order, for a cargo of Rust >= the workspace's
# `rust-version` (Cargo.toml):
#   1. already on PATH;
#   2. in $CARGO_HOME/bin;
#   3. in ~/.cargo/bin of the user who ran sudo ($SUDO_USER, home from `getent passwd`);
#   4. in $HOME/.cargo/bin, then root's ~/.cargo/bin;
#   5. in /usr/local/cargo/bin (the layout of the official Rust container images).
# The first one found is prepended to PATH. A rustup proxy under another user's home needs that
# home's ~/.rustup to find its toolchain: RUSTUP_HOME is set to it (when not set already).
# A cargo that is too old (Debian's packaged Rust) is skipped when a newer one is found later.
# When none is found, it says what is missing and how to install it, and exits 1.
#
# cairn_require_rust_components rustfmt clippy: exits 1 with the rustup command to run when
# `cargo fmt` or `cargo clippy` is missing.

# The workspace's minimum Rust version (`rust-version` in Cargo.toml), e.g. 1.94.
cairn_rust_version_required() {
  local manifest
  manifest="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/Cargo.toml"
  sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$manifest" | head -n 1
}

# True when version $1 >= version $2 (dotted numbers).
cairn_version_at_least() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

# The rustup home that goes with a cargo bin directory ($1), or nothing:
# <home>/.cargo/bin -> <home>/.rustup, <prefix>/cargo/bin -> <prefix>/rustup.
cairn_rustup_home_for() {
  local cargo_home=${1%/bin}
  case $cargo_home in
    */.cargo) [ -d "${cargo_home%/.cargo}/.rustup" ] && echo "${cargo_home%/.cargo}/.rustup" ;;
    */cargo) [ -d "${cargo_home%/cargo}/rustup" ] && echo "${cargo_home%/cargo}/rustup" ;;
  esac
  return 0
}

# The Rust version of the cargo in directory $1 (with the RUSTUP_HOME it would get), or nothing.
cairn_rust_version_in() {
  local dir=$1 rustup_home=${RUSTUP_HOME:-} out
  [ -n "$rustup_home" ] || rustup_home=$(cairn_rustup_home_for "$dir")
  if [ -x "$dir/rustc" ]; then
    out=$(env PATH="$dir:$PATH" ${rustup_home:+RUSTUP_HOME="$rustup_home"} "$dir/rustc" --version 2>/dev/null) || return 0
  else
    out=$(env PATH="$dir:$PATH" ${rustup_home:+RUSTUP_HOME="$rustup_home"} "$dir/cargo" --version 2>/dev/null) || return 0
  fi
  # "rustc 1.95.0 (59807616e 2026-04-14)" -> 1.95.0
  echo "$out" | awk '{print $2}' | sed 's/-.*//'
}

# Finds cargo (see the top of this file); on success PATH (and RUSTUP_HOME) are set.
cairn_use_cargo() {
  local me=${0##*/} required candidates=() dir home version found="" too_old=""
  required=$(cairn_rust_version_required)
  if command -v cargo >/dev/null 2>&1; then
    candidates+=("$(dirname "$(command -v cargo)")")
  fi
  [ -n "${CARGO_HOME:-}" ] && candidates+=("$CARGO_HOME/bin")
  if [ -n "${SUDO_USER:-}" ]; then
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    [ -n "$home" ] && candidates+=("$home/.cargo/bin")
  fi
  [ -n "${HOME:-}" ] && candidates+=("$HOME/.cargo/bin")
  home=$(getent passwd root | cut -d: -f6)
  candidates+=("${home:-/root}/.cargo/bin" /usr/local/cargo/bin)

  for dir in "${candidates[@]}"; do
    [ -x "$dir/cargo" ] || continue
    version=$(cairn_rust_version_in "$dir")
    if [ -n "$version" ] && cairn_version_at_least "$version" "$required"; then
      found=$dir
      break
    fi
    [ -n "$too_old" ] || too_old="$dir/cargo (Rust ${version:-of unknown version})"
  done

  if [ -z "$found" ]; then
    {
      if [ -n "$too_old" ]; then
        echo "$me: the Rust toolchain found is too old: $too_old; Cairn needs Rust $required or newer."
      else
        echo "$me: cargo (Rust's build tool) was not found: Cairn is built from source and needs Rust $required or newer."
      fi
      echo "  Looked on PATH ($PATH), in \$CARGO_HOME/bin, in ~/.cargo/bin of \$SUDO_USER, \$HOME and root,"
      echo "  and in /usr/local/cargo/bin."
      echo "  Install Rust with rustup, as the user who runs sudo (Debian's packaged rustc is far older):"
      echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --component rustfmt,clippy"
      echo "  (or, with rustup already installed: rustup update stable && rustup component add rustfmt clippy),"
      echo "  then run this command again: it finds ~/.cargo/bin of the user who ran sudo."
    } >&2
    return 1
  fi

  if [ -z "${RUSTUP_HOME:-}" ]; then
    home=$(cairn_rustup_home_for "$found")
    # rustup's default is $HOME/.rustup: only say so when it is another one.
    if [ -n "$home" ] && [ "$home" != "${HOME:-}/.rustup" ]; then
      export RUSTUP_HOME=$home
    fi
  fi
  case ":$PATH:" in
    *":$found:"*) ;;
    *) PATH="$found:$PATH" ;;
  esac
  export PATH
}

# Exits 1 (with the command that fixes it) when one of the named cargo subcommands' components
# (rustfmt, clippy) is missing.
cairn_require_rust_components() {
  local component missing=()
  for component in "$@"; do
    case $component in
      rustfmt) cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt) ;;
      clippy) cargo clippy --version >/dev/null 2>&1 || missing+=(clippy) ;;
    esac
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "${0##*/}: the Rust toolchain ($(command -v cargo)) lacks ${missing[*]}; add with: rustup component add ${missing[*]}" >&2
    exit 1
  fi
}

cairn_use_cargo || exit 1
