#!/usr/bin/env bash
# Cairn test bed: a few BOSH-like "VMs" on one Linux machine, reachable over real SSH.
#
# Every host gets
#   - its own network namespace, joined by a veth pair to a per-test-bed bridge in the root
#     namespace (bridge 10.199.K.1/24, hosts 10.199.K.10, .11, ...);
#   - its own mount namespace, where DIR/hosts/<group>-<index>/vcap is bind-mounted on /var/vcap
#     (and a small /etc/hosts on /etc/hosts), plus its own UTS namespace (hostname <group>-<index>);
#   - a real OpenSSH server (/usr/sbin/sshd -D) on port 22 of its address, with its own host key;
#   - BOSH jobs copied from scripts-contract/examples/<job>/ into /var/vcap/jobs/<job>/.
# The login user is `vcap` with passwordless sudo, as on a BOSH stemcell. sshd also accepts
# BOSH's temporary `bosh_*` users, with the key in the host's /var/vcap/bosh_ssh/<user>/.ssh
# (created by the Director stand-in, integration/director/director.py).
#
# Usage:
#   testbed.sh up DIR [--host GROUP/INDEX:job1,job2]... [--no-seed]
#   testbed.sh down DIR
#   testbed.sh exec DIR GROUP/INDEX -- COMMAND [ARG...]
#   testbed.sh ssh DIR GROUP/INDEX [-- COMMAND...]
#   testbed.sh down-all
# See integration/README.md for the layout of DIR and the file formats.
#
# Must run as root (namespaces, bridges, sshd on port 22).

set -euo pipefail
shopt -s inherit_errexit

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXAMPLES_DIR=$(cd "$SCRIPT_DIR/.." && pwd)/scripts-contract/examples
# The reference jobs for real databases (postgres, mysql, redis, directory).
ADAPTERS_DIR=$(cd "$SCRIPT_DIR/.." && pwd)/scripts-contract/adapters

# Machine-wide state: one directory per allocated slot K (subnet 10.199.K.0/24).
# /run is a tmpfs, so it is wiped on reboot together with the namespaces it describes.
STATE_ROOT=/run/cairn-testbed
SUBNET_PREFIX=10.199
FIRST_HOST_OCTET=10
MAX_SLOT=254

DEFAULT_HOSTS=("database/0:database" "app/0:app,files" "app/1:app,files")

# Names derived from the slot K (Linux interface names are at most 15 characters):
#   bridge          ctb<K>             e.g. ctb7
#   root-side veth  ctb<K>v<N>         e.g. ctb7v2 (N = host number, 0-based)
#   network ns      cairn<K>-<group>-<index>   e.g. cairn7-app-1 (the veth peer inside is eth0)
bridge_name() { echo "ctb$1"; }
veth_name() { echo "ctb$1v$2"; }
netns_name() { echo "cairn$1-$2-$3"; }

log() { echo "testbed: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '/^# Usage:/,/^# See/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

require_root() {
  [ "$(id -u)" = 0 ] || die "must run as root"
}

# Absolute path of $1 (which may not exist yet).
absolute_path() {
  case "$1" in
    /*) realpath -m -- "$1" ;;
    *) realpath -m -- "$PWD/$1" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Machine-wide prerequisites (shared by all test beds, done under a lock)
# ---------------------------------------------------------------------------------------------

ensure_prerequisites() {
  mkdir -p "$STATE_ROOT"
  (
    flock 9
    if [ ! -x /usr/sbin/sshd ] || ! command -v sudo >/dev/null; then
      log "installing openssh-server and sudo"
      DEBIAN_FRONTEND=noninteractive apt-get install -y openssh-server sudo >&2
    fi
    mkdir -p /run/sshd /var/vcap

    if ! id vcap >/dev/null 2>&1; then
      useradd --create-home --shell /bin/bash vcap
    fi
    # A locked password ("!") makes sshd refuse even key logins when UsePAM is off.
    if [ "$(getent shadow vcap | cut -d: -f2)" != '*' ]; then
      usermod -p '*' vcap
    fi
    local sudoers=/etc/sudoers.d/cairn-testbed
    if [ ! -f "$sudoers" ]; then
      echo 'vcap ALL=(ALL) NOPASSWD: ALL' > "$sudoers.tmp"
      chmod 0440 "$sudoers.tmp"
      mv "$sudoers.tmp" "$sudoers"
    fi

    # BOSH's temporary SSH users (`bosh ssh`, bbr): bosh-agent puts them in vcap and
    # bosh_sudoers (passwordless sudo on a stemcell); bosh_sshers exists on stemcells too. The
    # Director stand-in (integration/director) creates such users machine-wide and gives them a
    # key only on the hosts it targets.
    local group
    for group in bosh_sshers bosh_sudoers; do
      getent group "$group" >/dev/null || groupadd "$group"
    done
    local bosh_sudoers=/etc/sudoers.d/cairn-testbed-bosh-ssh
    if [ ! -f "$bosh_sudoers" ]; then
      echo '%bosh_sudoers ALL=(ALL) NOPASSWD: ALL' > "$bosh_sudoers.tmp"
      chmod 0440 "$bosh_sudoers.tmp"
      mv "$bosh_sudoers.tmp" "$bosh_sudoers"
    fi
  ) 9>"$STATE_ROOT/setup.lock"
}

# ---------------------------------------------------------------------------------------------
# Slots: K in 1..254, claimed with an atomic mkdir of $STATE_ROOT/slot-K
# ---------------------------------------------------------------------------------------------

# Is slot $1 claimed by a test bed whose DIR is gone (deleted without `down`)?
slot_is_stale() {
  local slot_dir=$STATE_ROOT/slot-$1 dir
  [ -f "$slot_dir/dir" ] || return 1
  dir=$(cat "$slot_dir/dir")
  ! grep -qx "SLOT=$1" "$dir/testbed.env" 2>/dev/null
}

# Claims a free slot for DIR ($1) and prints K.
allocate_slot() {
  local dir=$1 k
  (
    flock 9
    for ((k = 1; k <= MAX_SLOT; k++)); do
      if [ -d "$STATE_ROOT/slot-$k" ] && slot_is_stale "$k"; then
        log "reclaiming slot $k of the deleted test bed $(cat "$STATE_ROOT/slot-$k/dir")"
        teardown_slot "$k"
      fi
      # Skip subnets and names that something else (e.g. a leaked test bed) still uses.
      if [ -n "$(ip -4 route show "$SUBNET_PREFIX.$k.0/24")" ] \
        || ip link show "$(bridge_name "$k")" >/dev/null 2>&1; then
        continue
      fi
      if mkdir "$STATE_ROOT/slot-$k" 2>/dev/null; then
        echo "$dir" > "$STATE_ROOT/slot-$k/dir"
        printf 'SLOT=%s\nBRIDGE=%s\nSUBNET=%s\n' \
          "$k" "$(bridge_name "$k")" "$SUBNET_PREFIX.$k.0/24" > "$dir/testbed.env"
        echo "$k"
        exit 0
      fi
    done
    exit 1
  ) 9>"$STATE_ROOT/slot.lock" || die "no free test-bed slot (run '$0 down-all'?)"
}

# A killed process's sockets are closed a moment after it leaves the namespace, and its FIN
# may still need a retransmission; deleting the veth before the FIN is acknowledged would
# leave the client (in the root namespace) waiting on a connection that looks established.
# Waits up to 1 s for every TCP connection in namespace $1 to be closed or known closed by
# the peer.
wait_for_connections_closed() {
  local ns=$1 attempt busy
  for attempt in $(seq 20); do
    busy=$(nsenter --net="/run/netns/$ns" ss -Htan 2>/dev/null \
      | awk '$1 != "LISTEN" && $1 != "FIN-WAIT-2" && $1 != "TIME-WAIT"' || true)
    [ -n "$busy" ] || return 0
    sleep 0.05
  done
}

# Kills everything in the slot's network namespaces and deletes them, the bridge and the
# slot. Works on whatever a partial `up` left behind; never fails.
teardown_slot() {
  local k=$1 namespaces ns pids attempt link
  namespaces=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^cairn$k-" || true)
  for ns in $namespaces; do
    # TERM first so sshd and running scripts can exit cleanly, then KILL what is left.
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      kill -TERM $pids 2>/dev/null || true
      for attempt in $(seq 20); do
        sleep 0.05
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || break
      done
      if [ -n "$pids" ]; then
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
      fi
    fi
    wait_for_connections_closed "$ns"
    ip netns delete "$ns" 2>/dev/null || true
  done
  # Deleting a namespace destroys its veth pairs; delete leftovers and the bridge explicitly.
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 \
    | grep -E "^ctb${k}(v[0-9]+)?$" || true); do
    ip link delete "$link" 2>/dev/null || true
  done
  rm -rf "${STATE_ROOT:?}/slot-$k"
}

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------

# Host specs, filled by parse_host_specs: parallel arrays indexed by host number.
HOST_GROUPS=()
HOST_INDEXES=()
HOST_JOBS=() # comma-separated

parse_host_specs() {
  local spec group index jobs job seen=" "
  for spec in "$@"; do
    [[ "$spec" =~ ^([a-z0-9][a-z0-9_-]*)/([0-9]+)(:([a-z0-9_,-]*))?$ ]] \
      || die "bad --host '$spec' (expected GROUP/INDEX:job1,job2 with lower-case names)"
    group=${BASH_REMATCH[1]}
    index=$((10#${BASH_REMATCH[2]}))
    jobs=${BASH_REMATCH[4]}
    case "$seen" in *" $group/$index "*) die "host $group/$index given twice" ;; esac
    seen="$seen$group/$index "
    for job in ${jobs//,/ }; do
      [[ "$job" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "bad job name '$job' in --host '$spec'"
    done
    HOST_GROUPS+=("$group")
    HOST_INDEXES+=("$index")
    HOST_JOBS+=("$jobs")
  done
}

# Fills DIR/hosts/<h>/vcap like a BOSH VM: jobs, store, sys/run, sys/log, data.
install_host_tree() {
  local hostdir=$1 jobs=$2 job
  local vcap=$hostdir/vcap
  mkdir -p "$vcap/jobs" "$vcap/store" "$vcap/sys/run" "$vcap/sys/log" "$vcap/data" "$vcap/packages"
  for job in ${jobs//,/ }; do
    if [ -d "$EXAMPLES_DIR/$job" ]; then
      mkdir -p "$vcap/jobs/$job"
      cp -a "$EXAMPLES_DIR/$job/." "$vcap/jobs/$job/"
    elif [ -d "$ADAPTERS_DIR/$job" ]; then
      mkdir -p "$vcap/jobs/$job"
      cp -a "$ADAPTERS_DIR/$job/." "$vcap/jobs/$job/"
    else
      # Unknown job: an empty job that tests fill with TestBed::install_script.
      mkdir -p "$vcap/jobs/$job/bin/bbr"
    fi
  done
}

# A little realistic data in each job's store dir; contents name the host ($2) so that a
# restore onto the wrong host is visible.
seed_host() {
  local vcap=$1/vcap host=$2 jobs=$3 job store
  for job in ${jobs//,/ }; do
    store=$vcap/store/$job
    case "$job" in
      database)
        mkdir -p "$store"
        printf 'id,name,email\n1,alice,alice@example.com\n2,bob,bob@example.com\n' > "$store/users.table"
        printf 'id,user_id,total\n1,1,19.99\n2,2,5.00\n3,1,42.00\n' > "$store/orders.table"
        printf 'version\n20240101000000\n20240315120000\n' > "$store/schema_migrations.table"
        printf 'database seeded on %s\n' "$host" > "$store/ORIGIN"
        ;;
      files)
        mkdir -p "$store/nested/deeper"
        printf 'Files of %s.\n' "$host" > "$store/readme.txt"
        printf 'a file whose name has spaces\n' > "$store/report 2024 final.txt"
        : > "$store/empty"
        printf 'deep\n' > "$store/nested/deeper/leaf.txt"
        head -c 65536 /dev/urandom > "$store/nested/blob.bin"
        ;;
      app)
        mkdir -p "$store"
        printf 'host: %s\nlisten: 0.0.0.0:8080\ndatabase_url: postgres://database.service:5432/app\n' \
          "$host" > "$store/config.yml"
        printf '42\n' > "$store/last_job_id"
        ;;
      *) ;;
    esac
  done
}

# Writes the host's sshd_config (every path absolute, under DIR).
write_sshd_config() {
  local dir=$1 hostdir=$2 address=$3 label=$4
  cat > "$hostdir/sshd_config" <<EOF
# sshd of test-bed host $label, generated by integration/testbed.sh
ListenAddress $address:22
HostKey $hostdir/ssh_host_ed25519_key
PidFile $hostdir/sshd.pid
# vcap: the test bed's key. BOSH's temporary users (bosh_*, see the Match block at the end):
# their own key in the host's /var/vcap/bosh_ssh/<user>/.ssh, so such a user, although it exists
# machine-wide in /etc/passwd, can log in only on the hosts where it was set up.
AuthorizedKeysFile $dir/authorized_keys
# Keys live under a temporary directory that sshd's ownership checks would reject.
StrictModes no
# Without PAM, the vcap user needs a '*' (not '!') password field for key logins.
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers vcap bosh_*
UseDNS no
PrintMotd no
PrintLastLog no
# bbr opens one SSH connection per remote command, up to 10 hosts x jobs in parallel;
# OpenSSH's default (10:30:100) would randomly drop some of them.
MaxStartups 100:30:200
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp internal-sftp

Match User bosh_*
    AuthorizedKeysFile %h/.ssh/authorized_keys
EOF
}

# Creates host number $2's network namespace, veth and address.
create_host_network() {
  local k=$1 n=$2 ns=$3 address=$4
  local veth
  veth=$(veth_name "$k" "$n")
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$(bridge_name "$k")" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$address/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$SUBNET_PREFIX.$k.1"
}

# Starts sshd in the host's network namespace and in new mount + UTS namespaces where the
# host's own vcap dir is /var/vcap. Returns immediately; wait_for_sshd waits for it.
start_sshd() {
  local ns=$1 hostdir=$2 hostname=$3
  # Detached from our stdio: callers (Rust's Command::output) wait for EOF on their pipes.
  # shellcheck disable=SC2016 # expanded by the inner sh
  ip netns exec "$ns" unshare --mount --uts --propagation private \
    sh -c 'mount --bind "$1/vcap" /var/vcap \
        && mount --bind "$1/etc-hosts" /etc/hosts \
        && hostname "$2" \
        && exec /usr/sbin/sshd -D -f "$1/sshd_config" -E "$1/sshd.log"' \
    sh "$hostdir" "$hostname" </dev/null >>"$hostdir/sshd.log" 2>&1 &
  echo $! > "$hostdir/launcher.pid"
}

# True if pid $1 runs and is not a zombie (our own unreaped children are zombies after exit).
process_alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# sshd writes its PidFile only after binding its listening socket, so its appearance means
# "accepting connections". Prints the pid.
wait_for_sshd() {
  local hostdir=$1 label=$2 attempt launcher
  launcher=$(cat "$hostdir/launcher.pid")
  for ((attempt = 0; attempt < 200; attempt++)); do
    if [ -s "$hostdir/sshd.pid" ]; then
      cat "$hostdir/sshd.pid"
      return 0
    fi
    if ! process_alive "$launcher"; then
      tail -n 20 "$hostdir/sshd.log" >&2 || true
      die "sshd of $label exited during start-up (see $hostdir/sshd.log)"
    fi
    sleep 0.05
  done
  die "sshd of $label did not start within 10 s (see $hostdir/sshd.log)"
}

# Public key of a .pub file without its comment: "ssh-ed25519 AAAA...".
public_key() { awk '{print $1 " " $2}' "$1"; }

# ssh options of a test bed client: key and known_hosts from DIR only, no user config.
ssh_options() {
  local dir=$1
  echo -F /dev/null -i "$dir/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o UserKnownHostsFile="$dir/known_hosts" -o StrictHostKeyChecking=yes \
    -o ConnectTimeout=5 -o LogLevel=ERROR
}

# Runs `sudo true` over SSH on a host as a client of the inventory would.
verify_login() {
  local dir=$1 address=$2 label=$3 attempt
  # shellcheck disable=SC2046 # ssh_options is a list of words
  for attempt in 1 2 3; do
    if ssh $(ssh_options "$dir") "vcap@$address" sudo true; then
      return 0
    fi
    sleep 0.2
  done
  die "cannot log in to $label ($address) as vcap with sudo"
}

write_inventory() {
  local dir=$1 k=$2 n job jobs=" "
  # Every job comes from the release "<job>-release", as in the example jobs' metadata.
  for ((n = 0; n < ${#HOST_GROUPS[@]}; n++)); do
    for job in ${HOST_JOBS[$n]//,/ }; do
      case "$jobs" in *" $job "*) ;; *) jobs="$jobs$job " ;; esac
    done
  done
  {
    echo "deployment: testbed"
    if [ "$jobs" = " " ]; then
      echo "releases: {}"
    else
      echo "releases:"
      for job in $jobs; do
        echo "  $job: $job-release"
      done
    fi
    echo "instances:"
    for ((n = 0; n < ${#HOST_GROUPS[@]}; n++)); do
      echo "- group: ${HOST_GROUPS[$n]}"
      echo "  index: ${HOST_INDEXES[$n]}"
      echo "  address: $SUBNET_PREFIX.$k.$((FIRST_HOST_OCTET + n))"
      echo "  port: 22"
      echo "  username: vcap"
      echo "  private_key: id_ed25519"
      echo "  host_key: \"$(public_key "$dir/hosts/${HOST_GROUPS[$n]}-${HOST_INDEXES[$n]}/ssh_host_ed25519_key.pub")\""
    done
  } > "$dir/inventory.yml.tmp"
  mv "$dir/inventory.yml.tmp" "$dir/inventory.yml"
}

# EXIT trap of a running `up`: on failure, tear down slot $1 (DIR $2 keeps the logs).
on_up_exit() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    log "up failed, tearing down (logs under $2/hosts)"
    teardown_slot "$1"
  fi
}

cmd_up() {
  [ $# -ge 1 ] || usage
  local dir specs=() seed=1
  dir=$(absolute_path "$1")
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --host) [ $# -ge 2 ] || usage; specs+=("$2"); shift 2 ;;
      --host=*) specs+=("${1#--host=}"); shift ;;
      --no-seed) seed=0; shift ;;
      *) usage ;;
    esac
  done
  [ ${#specs[@]} -gt 0 ] || specs=("${DEFAULT_HOSTS[@]}")
  parse_host_specs "${specs[@]}"
  [ ${#HOST_GROUPS[@]} -le $((254 - FIRST_HOST_OCTET)) ] || die "too many hosts"

  # Paths end up in sshd_config and YAML unquoted: keep them simple.
  [[ "$dir" =~ ^[A-Za-z0-9/._+-]+$ ]] || die "DIR '$dir' may only contain [A-Za-z0-9/._+-]"
  require_root
  mkdir -p "$dir"
  [ -z "$(ls -A "$dir")" ] || die "DIR '$dir' is not empty (run 'down' on it and remove it first)"

  local started=$SECONDS
  ensure_prerequisites

  local k
  k=$(allocate_slot "$dir")
  # From here on, a failure tears down whatever was created (DIR keeps the logs).
  # (The trap runs after cmd_up's locals are gone, so their values are expanded now.)
  # shellcheck disable=SC2064
  trap "on_up_exit $k $(printf %q "$dir")" EXIT
  trap 'exit 130' INT TERM HUP

  local bridge
  bridge=$(bridge_name "$k")
  # A fixed MAC: by default a bridge takes the lowest MAC of its ports, so it would change as
  # hosts are torn down, and the FINs of the remaining hosts' connections would get lost.
  ip link add "$bridge" address "$(printf '02:ca:19:99:%02x:01' "$k")" type bridge
  ip addr add "$SUBNET_PREFIX.$k.1/24" dev "$bridge"
  ip link set "$bridge" up

  ssh-keygen -q -t ed25519 -N '' -C "cairn-testbed" -f "$dir/id_ed25519"
  chmod 0600 "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"

  local n group index label hostdir address ns
  for ((n = 0; n < ${#HOST_GROUPS[@]}; n++)); do
    group=${HOST_GROUPS[$n]} index=${HOST_INDEXES[$n]}
    label=$group/$index
    hostdir=$dir/hosts/$group-$index
    address=$SUBNET_PREFIX.$k.$((FIRST_HOST_OCTET + n))
    ns=$(netns_name "$k" "$group" "$index")

    mkdir -p "$hostdir"
    install_host_tree "$hostdir" "${HOST_JOBS[$n]}"
    [ "$seed" = 0 ] || seed_host "$hostdir" "$label" "${HOST_JOBS[$n]}"
    ssh-keygen -q -t ed25519 -N '' -C "$label" -f "$hostdir/ssh_host_ed25519_key"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\t%s-%s\n' "$address" "$group" "$index" \
      > "$hostdir/etc-hosts"
    write_sshd_config "$dir" "$hostdir" "$address" "$label"
    echo "$address $(public_key "$hostdir/ssh_host_ed25519_key.pub")" >> "$dir/known_hosts"

    create_host_network "$k" "$n" "$ns" "$address"
    start_sshd "$ns" "$hostdir" "$group-$index"
  done

  local pid
  : > "$dir/hosts.tsv.tmp"
  for ((n = 0; n < ${#HOST_GROUPS[@]}; n++)); do
    group=${HOST_GROUPS[$n]} index=${HOST_INDEXES[$n]}
    hostdir=$dir/hosts/$group-$index
    pid=$(wait_for_sshd "$hostdir" "$group/$index")
    printf '%s\t%s\t%s\t%s\t%s\n' "$group" "$index" "$SUBNET_PREFIX.$k.$((FIRST_HOST_OCTET + n))" \
      "$hostdir" "$pid" >> "$dir/hosts.tsv.tmp"
  done
  mv "$dir/hosts.tsv.tmp" "$dir/hosts.tsv"
  write_inventory "$dir" "$k"

  # Log in to every host in parallel, exactly as a client of the inventory would.
  local verifiers=()
  for ((n = 0; n < ${#HOST_GROUPS[@]}; n++)); do
    verify_login "$dir" "$SUBNET_PREFIX.$k.$((FIRST_HOST_OCTET + n))" \
      "${HOST_GROUPS[$n]}/${HOST_INDEXES[$n]}" &
    verifiers+=($!)
  done
  for pid in "${verifiers[@]}"; do
    wait "$pid" || die "login check failed"
  done

  trap - EXIT INT TERM HUP
  log "up: ${#HOST_GROUPS[@]} host(s) on $SUBNET_PREFIX.$k.0/24 in $((SECONDS - started)) s"
  echo "$dir/inventory.yml"
}

# ---------------------------------------------------------------------------------------------
# down, down-all, exec, ssh
# ---------------------------------------------------------------------------------------------

cmd_down() {
  [ $# -eq 1 ] || usage
  require_root
  local dir k
  dir=$(absolute_path "$1")
  if [ ! -f "$dir/testbed.env" ]; then
    log "down: $dir holds no test bed, nothing to do"
    return 0
  fi
  k=$(sed -n 's/^SLOT=//p' "$dir/testbed.env")
  [[ "$k" =~ ^[0-9]+$ ]] || die "bad $dir/testbed.env"
  # teardown_slot removes the slot directory last, so without it there is nothing left; and
  # the slot may have been reclaimed by another test bed since.
  if [ ! -d "$STATE_ROOT/slot-$k" ]; then
    log "down: $dir is already down"
    return 0
  fi
  if [ "$(cat "$STATE_ROOT/slot-$k/dir" 2>/dev/null)" != "$dir" ]; then
    log "down: slot $k now belongs to another test bed, nothing to do"
    return 0
  fi
  teardown_slot "$k"
  log "down: $dir"
}

cmd_down_all() {
  [ $# -eq 0 ] || usage
  require_root
  local slots k
  # Claimed slots, plus anything named like a test bed that lost its slot directory.
  slots=$(
    {
      find "$STATE_ROOT" -maxdepth 1 -name 'slot-*' -printf '%f\n' 2>/dev/null | sed 's/^slot-//'
      ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^cairn\([0-9]\+\)-.*/\1/p'
      ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed -n 's/^ctb\([0-9]\+\)\(v[0-9]\+\)\?\(@.*\)\?$/\1/p'
    } | grep -E '^[0-9]+$' | sort -un
  )
  for k in $slots; do
    teardown_slot "$k"
    log "down-all: slot $k"
  done
}

# Prints the sshd pid of GROUP/INDEX ($2) from DIR/hosts.tsv.
host_field() {
  local dir=$1 host=$2 column=$3 line
  [ -f "$dir/hosts.tsv" ] || die "$dir/hosts.tsv not found (is the test bed up?)"
  line=$(awk -F'\t' -v h="$host" '$1 "/" $2 == h' "$dir/hosts.tsv")
  [ -n "$line" ] || die "no host $host in $dir/hosts.tsv"
  echo "$line" | cut -f"$column"
}

cmd_exec() {
  [ $# -ge 3 ] && [ "$3" = "--" ] || usage
  require_root
  local dir host pid
  dir=$(absolute_path "$1")
  host=$2
  shift 3
  [ $# -ge 1 ] || usage
  pid=$(host_field "$dir" "$host" 5)
  process_alive "$pid" || die "sshd of $host (pid $pid) is not running"
  exec nsenter --target "$pid" --net --mount --uts -- "$@"
}

cmd_ssh() {
  [ $# -ge 2 ] || usage
  local dir host address
  dir=$(absolute_path "$1")
  host=$2
  shift 2
  if [ $# -gt 0 ]; then
    [ "$1" = "--" ] || usage
    shift
  fi
  address=$(host_field "$dir" "$host" 3)
  # shellcheck disable=SC2046 # ssh_options is a list of words
  exec ssh $(ssh_options "$dir") "vcap@$address" "$@"
}

main() {
  [ $# -ge 1 ] || usage
  local command=$1
  shift
  case "$command" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    down-all) cmd_down_all "$@" ;;
    exec) cmd_exec "$@" ;;
    ssh) cmd_ssh "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
