#!/usr/bin/env bash
# Proves that `sudo integration/demo.sh` and `sudo integration/test.sh` find a rustup-installed
# cargo (integration/lib/cargo-path.sh), the two ways a newcomer runs them:
#   (a) through sudo as root, with sudo's secure_path (which lacks ~/.cargo/bin);
#   (b) as an unprivileged user whose rustup toolchain lives in its own home, who runs sudo:
#       a throwaway user `cairn-newcomer` gets the toolchain this machine has (bind mounts of
#       ~/.rustup and ~/.cargo/bin: rustup cannot download here), root's own toolchain is
#       hidden, and the user runs the probe through `sudo` (SUDO_USER=cairn-newcomer).
# (b) happens in a private mount namespace: the user (copies of /etc/passwd, group and shadow),
# its sudoers rule and the bind mounts exist only there and vanish with it; its home, a
# temporary directory, is removed on exit. Fails when cargo is not found or not the expected one.
#
# Usage (as root): integration/lib/check-cargo-path.sh [HELPER]
#   HELPER: the file to source instead of integration/lib/cargo-path.sh (to see this fail).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
helper=$(realpath "${1:-integration/lib/cargo-path.sh}")
me=integration/lib/check-cargo-path.sh
user=cairn-newcomer

if [ "$(id -u)" -ne 0 ]; then
  echo "$me: run as root" >&2
  exit 1
fi
for tool in sudo unshare getent; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$me: needs $tool" >&2; exit 1; }
done

# The toolchain of this run (found by the real helper), to hand to the newcomer.
read -r toolchain_bin rustup_home < <(
  bash -c 'source "$1" && echo "$(dirname "$(command -v cargo)") ${RUSTUP_HOME:-$HOME/.rustup}"' \
    _ "$root/integration/lib/cargo-path.sh"
)

scratch=$(mktemp -d /tmp/cairn-cargo-path.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
chmod 755 "$scratch"

# The probe, run through sudo: sources the helper, then cargo must run, from the expected
# directory ($2) with the expected RUSTUP_HOME ($3) when given.
probe="$scratch/probe"
cat >"$probe" <<'PROBE'
#!/usr/bin/env bash
set -u
echo "   as $(id -un) (SUDO_USER=${SUDO_USER:-}), PATH=$PATH"
if command -v cargo >/dev/null 2>&1; then
  echo "   note: cargo is already on this PATH ($(command -v cargo)): nothing to find"
fi
# shellcheck source=/dev/null
source "$1"
fail() { echo "   FAILED: $*" >&2; exit 1; }
cargo_path=$(command -v cargo) || fail "no cargo on PATH after sourcing $1"
version=$(cargo --version 2>&1) || fail "$cargo_path does not run: $version"
if [ -n "${2:-}" ] && [ "$(dirname "$cargo_path")" != "$2" ]; then
  fail "found $cargo_path, expected the one in $2"
fi
if [ -n "${3:-}" ] && [ "${RUSTUP_HOME:-}" != "$3" ]; then
  fail "RUSTUP_HOME is '${RUSTUP_HOME:-}', expected $3"
fi
echo "   found $cargo_path: $version${RUSTUP_HOME:+ (RUSTUP_HOME=$RUSTUP_HOME)}"
PROBE
chmod 755 "$probe"

echo "== cargo through sudo (a): as root, with sudo's secure_path"
if grep -qhs '^Defaults.*secure_path' /etc/sudoers /etc/sudoers.d/*; then
  # As the README's `sudo integration/test.sh` was run (by $SUDO_USER, whose toolchain it is).
  sudo -u root -- env ${SUDO_USER:+SUDO_USER="$SUDO_USER"} "$probe" "$helper"
else
  echo "   (/etc/sudoers sets no secure_path: using Debian's default one)"
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    ${SUDO_USER:+SUDO_USER="$SUDO_USER"} "$probe" "$helper"
fi

echo "== cargo through sudo (b): as $user, whose rustup toolchain is in its own home"
if [ ! -d "$rustup_home/toolchains" ]; then
  echo "   skipped: this machine's toolchain ($toolchain_bin) was not installed with rustup"
  exit 0
fi
home="$scratch/home"
mkdir -p "$home/.cargo/bin" "$home/.rustup"
uid=$(($(awk -F: '{print $3}' /etc/passwd | sort -n | tail -n 1) + 1))
while getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null; do uid=$((uid + 1)); done
chown -R "$uid:$uid" "$home"
cat >"$scratch/setup" <<SETUP
set -euo pipefail
# A user that exists only in this mount namespace.
for file in passwd group shadow; do
  cp -p "/etc/\$file" "$scratch/\$file"
done
echo "$user:x:$uid:$uid:Cairn newcomer (throwaway):$home:/bin/bash" >>"$scratch/passwd"
echo "$user:x:$uid:" >>"$scratch/group"
echo "$user:*:20000:0:99999:7:::" >>"$scratch/shadow"
for file in passwd group shadow; do
  mount --bind "$scratch/\$file" "/etc/\$file"
done
# Its sudo rule: the probe only, without a password.
mkdir "$scratch/sudoers.d"
cp -p /etc/sudoers.d/* "$scratch/sudoers.d/" 2>/dev/null || true
echo "$user ALL=(root) NOPASSWD: $probe" >"$scratch/sudoers.d/$user"
chmod 0440 "$scratch/sudoers.d/$user"
mount --bind "$scratch/sudoers.d" /etc/sudoers.d
# Its own toolchain (this machine's, read-only), and no toolchain for root.
mount --bind "$rustup_home" "$home/.rustup"
mount -o remount,bind,ro "$home/.rustup"
mount --bind "$toolchain_bin" "$home/.cargo/bin"
mount -o remount,bind,ro "$home/.cargo/bin"
root_home=\$(getent passwd root | cut -d: -f6)
for dir in "\$root_home/.rustup" "\$root_home/.cargo/bin" "$rustup_home" "$toolchain_bin"; do
  if [ -d "\$dir" ] && ! mountpoint -q "\$dir"; then mount -t tmpfs -o ro,size=4k none "\$dir"; fi
done
sudo -u "$user" -- sudo -n "$probe" "$helper" "$home/.cargo/bin" "$home/.rustup"
SETUP
unshare --mount --propagation private -- bash "$scratch/setup"
