#!/usr/bin/env bash
# A MariaDB server for one test-bed host, for the `mysql` reference job
# (scripts-contract/adapters/mysql). Run as root INSIDE a host:
#
#   integration/testbed.sh exec DIR GROUP/INDEX -- integration/databases/mysql.sh SUBCOMMAND
#
# Subcommands:
#   start          mariadb-install-db (first time) and start the server; waits until it answers
#   stop           shut the server down and wait until it is gone
#   configure-job  write /var/vcap/jobs/mysql/bin/bbr/bbr.conf for this server
#   seed           (re)create the databases `shop` (130,000 rows) and `audit` (1,000 rows)
#   digest         print `db.table rows md5` for every user table, sorted
#   mutate         change the data in ways a restore must undo (digest differs afterwards)
#
# The server runs as vcap, data in /var/vcap/store/mysql/data, no TCP (skip-networking), socket
# /var/vcap/sys/run/mysql/mysqld.sock, root@localhost authenticated by unix_socket (so root on
# the host logs in without a password), logs in /var/vcap/sys/log/mysql/.

set -euo pipefail
cd / # the server runs as vcap, who may not be able to enter the caller's directory

OS_USER=vcap
STORE=/var/vcap/store/mysql
DATA=$STORE/data
CNF=$STORE/my.cnf
RUN_DIR=/var/vcap/sys/run/mysql
SOCKET=$RUN_DIR/mysqld.sock
PID_FILE=$RUN_DIR/mysqld.pid
LOG_DIR=/var/vcap/sys/log/mysql
JOB_DIR=/var/vcap/jobs/mysql
START_TIMEOUT=30

die() { echo "mysql.sh: error: $*" >&2; exit 1; }
log() { echo "mysql.sh: $*" >&2; }

usage() {
  sed -n '/^# Subcommands:/,/^# The server/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# The client as root over the socket; no option files of the machine.
sql() { mariadb --no-defaults --socket="$SOCKET" --user=root --batch --skip-column-names "$@"; }

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

write_cnf() {
  cat >"$CNF.tmp" <<EOF
# MariaDB server of the test bed (integration/databases/mysql.sh)
[mariadbd]
user = $OS_USER
datadir = $DATA
socket = $SOCKET
pid-file = $PID_FILE
log-error = $LOG_DIR/mysqld.err.log
skip-networking
skip-name-resolve
# Test data: durability traded for speed, little memory.
innodb_buffer_pool_size = 128M
innodb_log_file_size = 64M
innodb_flush_log_at_trx_commit = 0
innodb_doublewrite = 0
max_allowed_packet = 64M
character-set-server = utf8mb4
collation-server = utf8mb4_bin
EOF
  mv "$CNF.tmp" "$CNF"
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (inside a test-bed host)"
  id "$OS_USER" >/dev/null 2>&1 || die "user $OS_USER does not exist"
  mkdir -p "$STORE" "$RUN_DIR" "$LOG_DIR"
  chown "$OS_USER:" "$RUN_DIR" "$LOG_DIR"
  write_cnf
  if [ ! -d "$DATA/mysql" ]; then
    log "initialising $DATA"
    mkdir -p "$DATA"
    chown "$OS_USER:" "$DATA"
    mariadb-install-db --defaults-file="$CNF" --auth-root-authentication-method=socket \
      --skip-test-db >>"$LOG_DIR/install-db.log" 2>&1 \
      || die "mariadb-install-db failed (see $LOG_DIR/install-db.log)"
  fi
  if server_pid >/dev/null; then
    log "already running"
  else
    # Detached from our stdio (the caller waits for EOF on its pipes) and from our session.
    setsid mariadbd --defaults-file="$CNF" </dev/null >>"$LOG_DIR/mysqld.log" 2>&1 &
  fi
  for _ in $(seq $((START_TIMEOUT * 10))); do
    if sql -e 'SELECT 1' >/dev/null 2>&1; then
      log "started ($(sql -e 'SELECT VERSION()'), socket $SOCKET)"
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$LOG_DIR/mysqld.err.log" >&2 || true
  die "server does not answer after $START_TIMEOUT s (see $LOG_DIR/mysqld.err.log)"
}

cmd_stop() {
  local pid
  if ! pid=$(server_pid); then
    log "not running"
    return 0
  fi
  sql -e 'SHUTDOWN' >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((START_TIMEOUT * 10))); do
    if ! process_alive "$pid"; then
      log "stopped"
      return 0
    fi
    sleep 0.1
  done
  die "server (pid $pid) still running after $START_TIMEOUT s"
}

shell_quote() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }

cmd_configure_job() {
  [ -d "$JOB_DIR/bin/bbr" ] || die "$JOB_DIR/bin/bbr does not exist (is the mysql job on this host?)"
  local conf=$JOB_DIR/bin/bbr/bbr.conf
  {
    echo "# Written by integration/databases/mysql.sh configure-job for the test-bed server;"
    echo "# every key is described in scripts-contract/adapters/mysql/bin/bbr/bbr.conf."
    echo "MYSQL_BIN_DIR=$(shell_quote "$(dirname "$(command -v mariadb)")")"
    echo "MYSQL_SOCKET=$(shell_quote "$SOCKET")"
    echo "MYSQL_USER=root"
    echo "MYSQL_DEFAULTS_FILE=''"
    echo "DATABASES=''"
    echo "ENABLED=true"
    echo "VERIFY_EXACT_COUNTS=true"
  } >"$conf.tmp"
  chmod 0644 "$conf.tmp"
  mv "$conf.tmp" "$conf"
  log "wrote $conf"
}

cmd_seed() {
  sql <<'EOF'
DROP DATABASE IF EXISTS shop;
DROP DATABASE IF EXISTS audit;
CREATE DATABASE shop;
CREATE DATABASE audit;
USE shop;
CREATE TABLE customers (
  id INT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(100) NOT NULL UNIQUE,
  created_at DATETIME NOT NULL
) ENGINE = InnoDB;
CREATE TABLE orders (
  id INT PRIMARY KEY,
  customer_id INT NOT NULL,
  status VARCHAR(20) NOT NULL,
  total DECIMAL(10, 2) NOT NULL,
  FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE = InnoDB;
CREATE TABLE order_items (
  id INT PRIMARY KEY,
  order_id INT NOT NULL,
  sku VARCHAR(20) NOT NULL,
  quantity INT NOT NULL,
  FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB;
INSERT INTO customers
  SELECT seq, CONCAT('customer ', seq), CONCAT('customer', seq, '@example.com'),
         '2024-01-01 00:00:00' + INTERVAL seq MINUTE
  FROM seq_1_to_20000;
INSERT INTO orders
  SELECT seq, 1 + (seq * 7919) % 20000, ELT(1 + seq % 3, 'new', 'paid', 'shipped'),
         ((seq * 37) % 100000) / 100.0
  FROM seq_1_to_50000;
INSERT INTO order_items
  SELECT seq, 1 + (seq * 104729) % 50000, CONCAT('SKU-', LPAD(seq % 997, 4, '0')), 1 + seq % 5
  FROM seq_1_to_60000;
USE audit;
CREATE TABLE events (id INT PRIMARY KEY, kind VARCHAR(20) NOT NULL, at DATETIME NOT NULL) ENGINE = InnoDB;
INSERT INTO events
  SELECT seq, CONCAT('event-', seq % 10), '2024-01-01 00:00:00' + INTERVAL seq HOUR
  FROM seq_1_to_1000;
EOF
  log "seeded shop (customers 20000, orders 50000, order_items 60000) and audit (events 1000)"
}

# `db.table rows md5` for every base table outside the system schemas; md5 over the rows
# (every column QUOTE()d, so NULL and '' differ), ordered by primary key.
cmd_digest() {
  local statements
  statements=$(sql --raw <<'EOF'
SELECT CONCAT(
  'SELECT ', QUOTE(CONCAT(t.table_schema, '.', t.table_name)), ', COUNT(*), ',
  'MD5(COALESCE(GROUP_CONCAT(CONCAT_WS(\',\', ',
  (SELECT GROUP_CONCAT(CONCAT('QUOTE(`', c.column_name, '`)') ORDER BY c.ordinal_position)
     FROM information_schema.columns c
    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name),
  ') ORDER BY ',
  COALESCE(
    (SELECT GROUP_CONCAT(CONCAT('`', k.column_name, '`') ORDER BY k.ordinal_position)
       FROM information_schema.key_column_usage k
      WHERE k.table_schema = t.table_schema AND k.table_name = t.table_name
        AND k.constraint_name = 'PRIMARY'),
    '1'),
  ' SEPARATOR \'\\n\'), \'\')) FROM `', t.table_schema, '`.`', t.table_name, '`;')
FROM information_schema.tables t
WHERE t.table_type = 'BASE TABLE'
  AND t.table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
ORDER BY 1;
EOF
  )
  { echo 'SET SESSION group_concat_max_len = 1073741824;'; printf '%s\n' "$statements"; } \
    | sql | tr '\t' ' ' | LC_ALL=C sort
}

cmd_mutate() {
  sql <<'EOF'
USE shop;
DROP TABLE order_items;
UPDATE customers SET email = CONCAT('changed', id, '@example.org') WHERE id % 100 = 0;
DELETE FROM orders WHERE id % 250 = 0;
INSERT INTO customers
  SELECT seq, CONCAT('intruder ', seq), CONCAT('intruder', seq, '@example.net'), NOW()
  FROM seq_20001_to_20500;
INSERT INTO orders SELECT seq, 20001, 'new', 1.00 FROM seq_50001_to_50100;
DELETE FROM audit.events WHERE id <= 10;
EOF
  log "mutated shop (order_items dropped, 200 customers updated, 200 orders deleted, 500 customers and 100 orders added) and audit (10 events deleted)"
}

[ $# -eq 1 ] || usage
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || die "mariadbd is not installed"
PATH=$PATH:/usr/sbin
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
