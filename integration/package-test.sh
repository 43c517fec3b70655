#!/usr/bin/env bash
# The .deb on this machine: builds it from the release binary already built
# (packaging/build-deb.sh --no-build), installs it with dpkg -i, and checks what a jumpbox gets:
# /usr/bin/cairn is the packaged binary, /usr/bin/bbr the `bbr` alternative pointing at it (both
# print their version lines), the example config is valid, the systemd units pass
# `systemd-analyze verify` as an instance (cairn-backup@example), one man page per command and
# the completions are where Debian looks for them. Then dpkg -r, and the alternative is gone.
#
# Needs root, cargo-deb 3.8.0 and dpkg-dev (integration/test.sh installs them). Leaves the
# machine as it found it: the cairn user and /etc/cairn the package made are removed again.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "package-test: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root (dpkg -i)"
if dpkg-query -W -f='${Status}' cairn 2>/dev/null | grep -q "ok installed"; then
  fail "a cairn package is already installed on this machine; remove it (dpkg -r cairn) first"
fi
[ ! -e /usr/bin/bbr ] || fail "/usr/bin/bbr exists already; this test needs a machine without bbr"

had_user=$(getent passwd cairn >/dev/null && echo yes || echo no)
had_etc=$([ -e /etc/cairn ] && echo yes || echo no)
work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-package-test.XXXXXX")
cleanup() {
  # Also the "removed, config-files" state dpkg keeps a package with maintainer scripts in.
  if dpkg-query -W cairn >/dev/null 2>&1; then
    dpkg --purge cairn >/dev/null 2>&1 || true
  fi
  # A package that failed to remove its alternative (the failure said above) must not leave a
  # dangling bbr behind for the next run.
  if [ "$(readlink /etc/alternatives/bbr 2>/dev/null)" = /usr/bin/cairn ]; then
    update-alternatives --remove bbr /usr/bin/cairn >/dev/null 2>&1 || true
  fi
  if [ "$had_etc" = no ]; then rm -rf /etc/cairn; fi
  if [ "$had_user" = no ] && getent passwd cairn >/dev/null; then
    userdel cairn >/dev/null 2>&1 || true
    if getent group cairn >/dev/null; then groupdel cairn >/dev/null 2>&1 || true; fi
    rm -rf /var/lib/cairn
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== package: building the .deb from the release binary (packaging/build-deb.sh --no-build)"
deb=$(packaging/build-deb.sh --no-build | tail -n 1)
[ -f "$deb" ] || fail "packaging/build-deb.sh printed no .deb path (got '$deb')"
echo "   $deb ($(du -h "$deb" | cut -f1))"
version=$(dpkg-deb -f "$deb" Version)

echo "== package: dpkg -i"
dpkg -i "$deb" >/dev/null

# The binaries on PATH are the package's: dpkg owns /usr/bin/cairn, its bytes are the packaged
# ones (dpkg --verify: md5sums), and bbr resolves to it through the alternatives system.
[ "$(dpkg -S /usr/bin/cairn | cut -d: -f1)" = cairn ] || fail "/usr/bin/cairn is not the package's"
verify=$(dpkg --verify cairn) || true
[ -z "$verify" ] || fail "installed files differ from the package: $verify"
[ "$(readlink -f /usr/bin/bbr)" = /usr/bin/cairn ] || fail "/usr/bin/bbr does not lead to /usr/bin/cairn"
update-alternatives --query bbr | grep -qx "Value: /usr/bin/cairn" ||
  fail "the bbr alternative does not point at /usr/bin/cairn"
upstream=${version%%-*}
cairn_line=$(/usr/bin/cairn --version)
bbr_line=$(/usr/bin/bbr --version)
echo "   /usr/bin/cairn --version: $cairn_line"
echo "   /usr/bin/bbr --version:   $bbr_line"
[[ "$cairn_line" == "cairn version $upstream (bbr "*")" ]] || fail "cairn --version: $cairn_line"
[[ "$bbr_line" == "bbr version "*" (cairn $upstream)" ]] || fail "bbr --version: $bbr_line"

echo "== package: man pages, one per command"
man_dir=/usr/share/man/man1
pages=$(dpkg -L cairn | grep -c "^$man_dir/cairn.*\.1\.gz$" || true)
# Every command the binary has (`cairn man --dir` into a scratch directory) has its page.
/usr/bin/cairn man --dir "$work/man" >/dev/null
for page in "$work"/man/*.1; do
  installed=$man_dir/$(basename "$page").gz
  [ -f "$installed" ] || fail "no man page $installed"
  zcat "$installed" | grep -q "^\.TH $(basename "$page" .1) 1 " || fail "$installed: no .TH line naming it"
done
[ "$pages" -eq "$(find "$work/man" -name '*.1' | wc -l)" ] || fail "$pages pages installed"
for page in cairn cairn-deployment-backup cairn-director-restore cairn-backups-list; do
  [ -f "$man_dir/$page.1.gz" ] || fail "no man page $page(1)"
done
if command -v man >/dev/null; then
  rendered=$(MANWIDTH=80 man -l "$man_dir/cairn-deployment-backup.1.gz" 2>"$work/man.err")
  [ ! -s "$work/man.err" ] || fail "man -l: $(cat "$work/man.err")"
  grep -q -- "--artifact-path" <<<"$rendered" || fail "man -l cairn-deployment-backup.1.gz lacks --artifact-path"
fi
echo "   $pages pages in $man_dir"

echo "== package: shell completions"
for file in /usr/share/bash-completion/completions/cairn /usr/share/zsh/vendor-completions/_cairn \
  /usr/share/fish/vendor_completions.d/cairn.fish; do
  [ -s "$file" ] || fail "no completion file $file"
done
bash -c 'source /usr/share/bash-completion/completions/cairn && complete -p cairn' >/dev/null ||
  fail "the bash completion does not register for cairn"

echo "== package: the example config and the systemd units (systemd-analyze verify)"
[ "$(stat -c '%a %U %G' /etc/cairn)" = "750 root cairn" ] || fail "/etc/cairn: $(stat -c '%a %U %G' /etc/cairn)"
install -m 0640 -o root -g cairn /usr/share/doc/cairn/examples/example.toml /etc/cairn/example.toml
/usr/bin/cairn --config /etc/cairn/example.toml config show >/dev/null ||
  fail "the packaged example.toml is refused by cairn config show"
# Each unit as an instance, `example`. Only the units given are checked (not what they name),
# without generators; with man(1) installed, Documentation= must name installed man pages.
man_check=no
if command -v man >/dev/null; then man_check=yes; fi
verify_units() {
  local dir=$1 output status=0
  output=$(cd "$dir" && systemd-analyze verify --man="$man_check" --generators=no --recursive-errors=no \
    ./cairn-backup@example.service ./cairn-backup@example.timer \
    ./cairn-backup-cleanup@example.service 2>&1) || status=$?
  # An unknown key, a bad value or a missing command exits 1 (systemd 252); any line at all
  # about these units counts as a failure too.
  if [ "$status" -ne 0 ] || [ -n "$output" ]; then
    echo "$output" >&2
    return 1
  fi
}
units=$work/units
mkdir -p "$units"
for unit in cairn-backup@.service cairn-backup@.timer cairn-backup-cleanup@.service; do
  cp "/usr/lib/systemd/system/$unit" "$units/${unit/@./@example.}"
done
verify_units "$units" || fail "systemd-analyze verify found problems in the units (above)"
# The check can fail: the same units with one setting misspelt are refused.
sed -i 's/^ProtectSystem=full/ProtectSytem=full/' "$units/cairn-backup@example.service"
if verify_units "$units" 2>/dev/null; then
  fail "a unit with a misspelt setting (ProtectSytem=) passed systemd-analyze verify"
fi
echo "   systemd-analyze verify passes the units, and refuses them with a misspelt setting"

echo "== package: dpkg -r"
dpkg -r cairn >/dev/null
if [ -e /usr/bin/bbr ] || [ -L /usr/bin/bbr ]; then fail "/usr/bin/bbr is left after dpkg -r"; fi
if update-alternatives --query bbr >/dev/null 2>&1; then
  fail "the bbr alternative is left after dpkg -r"
fi
[ ! -e /usr/bin/cairn ] || fail "/usr/bin/cairn is left after dpkg -r"
[ ! -e /usr/lib/systemd/system/cairn-backup@.service ] || fail "the units are left after dpkg -r"
dpkg --purge cairn >/dev/null
echo "== package: installed, checked and removed"
