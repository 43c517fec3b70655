#!/usr/bin/env bash
# A Redis server for one test-bed host, for the `redis` reference job
# (scripts-contract/adapters/redis). Run as root INSIDE a host:
#
#   integration/testbed.sh exec DIR GROUP/INDEX -- integration/databases/redis.sh SUBCOMMAND
#
# Subcommands:
#   start          write the server's config (first time) and start it; waits until it answers
#   stop           shut the server down (SHUTDOWN SAVE) and wait until its process is gone
#   configure-job  write /var/vcap/jobs/redis/bin/bbr/bbr.conf for this server
#   seed           replace all data with 20,000 string keys and a few hashes, lists, sets
#   digest         print `redis.dbN keys sha256` for every database with keys
#   mutate         change the data in ways a restore must undo (digest differs afterwards)
#
# The server runs as vcap with /var/vcap/store/redis-server.conf: data in /var/vcap/store/redis
# (dump.rdb), no TCP (port 0), Unix socket /var/vcap/sys/run/redis/redis.sock, no automatic
# saves, appendonly no, log in /var/vcap/sys/log/redis/.

set -euo pipefail
cd / # the server runs as vcap, who may not be able to enter the caller's directory

SELF=$(realpath "${BASH_SOURCE[0]}")
OS_USER=vcap
CONF=/var/vcap/store/redis-server.conf
STORE=/var/vcap/store/redis
RUN_DIR=/var/vcap/sys/run/redis
SOCKET=$RUN_DIR/redis.sock
PID_FILE=$RUN_DIR/redis.pid
LOG_DIR=/var/vcap/sys/log/redis
JOB_DIR=/var/vcap/jobs/redis
START_TIMEOUT=30

die() { echo "redis.sh: error: $*" >&2; exit 1; }
log() { echo "redis.sh: $*" >&2; }

usage() {
  sed -n '/^# Subcommands:/,/^# The server/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

rcli() { timeout 10 redis-cli -s "$SOCKET" "$@"; }

# True if process $1 runs (a zombie does not count).
process_alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

server_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && process_alive "$pid" && echo "$pid"
}

write_conf() {
  cat >"$CONF.tmp" <<EOF
# Redis server of the test bed (integration/databases/redis.sh)
port 0
unixsocket $SOCKET
unixsocketperm 770
dir $STORE
dbfilename dump.rdb
save ""
appendonly no
daemonize yes
pidfile $PID_FILE
logfile $LOG_DIR/redis.log
databases 16
EOF
  mv "$CONF.tmp" "$CONF"
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (inside a test-bed host)"
  id "$OS_USER" >/dev/null 2>&1 || die "user $OS_USER does not exist"
  mkdir -p "$STORE" "$RUN_DIR" "$LOG_DIR"
  chown "$OS_USER:" "$STORE" "$RUN_DIR" "$LOG_DIR"
  [ -f "$CONF" ] || write_conf
  if server_pid >/dev/null; then
    log "already running"
  else
    # daemonize yes: the server forks and detaches; our stdio is not passed on.
    runuser -u "$OS_USER" -- redis-server "$CONF" </dev/null >>"$LOG_DIR/redis-server.out" 2>&1 \
      || die "redis-server failed to start (see $LOG_DIR/redis.log)"
  fi
  for _ in $(seq $((START_TIMEOUT * 10))); do
    if [ "$(rcli PING 2>/dev/null)" = PONG ] \
      && rcli INFO persistence 2>/dev/null | tr -d '\r' | grep -qx 'loading:0'; then
      log "started (redis $(rcli INFO server | tr -d '\r' | sed -n 's/^redis_version://p'), socket $SOCKET)"
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$LOG_DIR/redis.log" >&2 || true
  die "server does not answer after $START_TIMEOUT s (see $LOG_DIR/redis.log)"
}

cmd_stop() {
  local pid
  if ! pid=$(server_pid); then
    log "not running"
    return 0
  fi
  # Like a real shutdown with save points: the data is written to dump.rdb on the way out.
  rcli SHUTDOWN SAVE >/dev/null 2>&1 || true
  for _ in $(seq $((START_TIMEOUT * 10))); do
    if ! process_alive "$pid"; then
      log "stopped"
      return 0
    fi
    sleep 0.1
  done
  die "server (pid $pid) still running after $START_TIMEOUT s"
}

# $1 as one shell word: as it is if it is made of safe characters, else single-quoted.
shell_quote() {
  if [[ "$1" =~ ^[A-Za-z0-9/._+:=-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"
  fi
}

cmd_configure_job() {
  [ -d "$JOB_DIR/bin/bbr" ] || die "$JOB_DIR/bin/bbr does not exist (is the redis job on this host?)"
  local conf=$JOB_DIR/bin/bbr/bbr.conf
  {
    echo "# Written by integration/databases/redis.sh configure-job for the test-bed server;"
    echo "# every key is described in scripts-contract/adapters/redis/bin/bbr/bbr.conf."
    echo "REDIS_CLI=$(shell_quote "$(command -v redis-cli)")"
    echo "REDIS_CLI_ARGS=$(shell_quote "-s $SOCKET")"
    echo "REDIS_PASSWORD_FILE=''"
    echo "REDIS_RDB_FILE=$(shell_quote "$STORE/dump.rdb")"
    # The scripts run these with `sh -c`: the path is quoted inside the command.
    echo "REDIS_STOP_COMMAND=$(shell_quote "$(shell_quote "$SELF") stop")"
    echo "REDIS_START_COMMAND=$(shell_quote "$(shell_quote "$SELF") start")"
    echo "WAIT_SECONDS=$START_TIMEOUT"
    echo "ENABLED=true"
  } >"$conf.tmp"
  chmod 0644 "$conf.tmp"
  mv "$conf.tmp" "$conf"
  log "wrote $conf"
}

# Redis protocol for the command given as arguments.
resp() {
  printf '*%d\r\n' $#
  local arg
  for arg in "$@"; do
    printf '$%d\r\n%s\r\n' "${#arg}" "$arg"
  done
}

cmd_seed() {
  {
    resp FLUSHALL
    # 20,000 string keys in db 0, generated in one awk pass.
    awk 'BEGIN {
      for (i = 1; i <= 20000; i++) {
        k = sprintf("key:%05d", i); v = sprintf("value-%d-%d", i, (i * 7919) % 100003)
        printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
      }
    }'
    local i
    for i in 1 2 3 4 5; do
      resp HSET "user:$i" name "user $i" email "user$i@example.com" visits "$((i * 11))"
    done
    for i in 1 2 3; do
      resp RPUSH "queue:$i" "job-$i-a" "job-$i-b" "job-$i-c"
    done
    resp SADD tags red green blue
    resp ZADD scores 1 alice 2 bob 3 carol
    resp SET session:long-lived token EX 86400
    resp SELECT 1
    for i in 1 2 3 4 5 6 7 8 9 10; do
      resp SET "cache:$i" "cached value $i"
    done
  } | timeout 60 redis-cli -s "$SOCKET" --pipe >/dev/null || die "seeding failed"
  log "seeded db0 (20000 strings, 5 hashes, 3 lists, 1 set, 1 sorted set, 1 key with a TTL) and db1 (10 strings)"
}

# A Lua script returning every key of the current database with its type, whether it has a
# TTL and its value (collections sorted where their order is not part of the value), sorted.
DIGEST_LUA='
local keys = redis.call("KEYS", "*")
table.sort(keys)
local out = {}
for _, k in ipairs(keys) do
  local t = redis.call("TYPE", k)["ok"]
  local v
  if t == "string" then
    v = redis.call("GET", k)
  elseif t == "list" then
    v = table.concat(redis.call("LRANGE", k, 0, -1), "\31")
  elseif t == "hash" then
    local h = redis.call("HGETALL", k)
    local p = {}
    for i = 1, #h, 2 do p[#p + 1] = h[i] .. "=" .. h[i + 1] end
    table.sort(p)
    v = table.concat(p, "\31")
  elseif t == "set" then
    local m = redis.call("SMEMBERS", k)
    table.sort(m)
    v = table.concat(m, "\31")
  elseif t == "zset" then
    v = table.concat(redis.call("ZRANGE", k, 0, -1, "WITHSCORES"), "\31")
  else
    v = "?"
  end
  local ttl = "persistent"
  if redis.call("PTTL", k) > 0 then ttl = "ttl" end
  out[#out + 1] = k .. "\30" .. t .. "\30" .. ttl .. "\30" .. v
end
return table.concat(out, "\n")
'

cmd_digest() {
  local dbs db keys sum
  dbs=$(rcli INFO keyspace | tr -d '\r' | sed -n 's/^db\([0-9]*\):.*/\1/p') || die "server does not answer"
  for db in $dbs; do
    keys=$(rcli -n "$db" DBSIZE)
    sum=$(rcli -n "$db" EVAL "$DIGEST_LUA" 0 | sha256sum | cut -d ' ' -f 1)
    echo "redis.db$db $keys $sum"
  done | LC_ALL=C sort
}

cmd_mutate() {
  {
    local i
    for i in $(seq 1 100); do resp DEL "$(printf 'key:%05d' "$i")"; done
    for i in $(seq 101 200); do resp SET "$(printf 'key:%05d' "$i")" "changed-$i"; done
    for i in $(seq 1 50); do resp SET "new:$i" "added after the backup"; done
    resp HSET user:1 name mallory
    resp RPUSH queue:1 job-1-extra
    resp SREM tags green
    resp SELECT 1
    resp DEL cache:1 cache:2
  } | timeout 60 redis-cli -s "$SOCKET" --pipe >/dev/null || die "mutating failed"
  log "mutated db0 (100 keys deleted, 100 changed, 50 added, a hash, a list and a set changed) and db1 (2 keys deleted)"
}

[ $# -eq 1 ] || usage
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  configure-job) cmd_configure_job ;;
  seed) cmd_seed ;;
  digest) cmd_digest ;;
  mutate) cmd_mutate ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
