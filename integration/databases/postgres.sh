#!/usr/bin/env bash
# A PostgreSQL server for one test-bed host, for the `postgres` reference job
# (scripts-contract/adapters/postgres). Run as root INSIDE a host:
#
#   integration/testbed.sh exec DIR GROUP/INDEX -- integration/databases/postgres.sh SUBCOMMAND
#
# Subcommands:
#   start          initdb (first time) and start the server; waits until it accepts queries
#   stop           stop the server (fast shutdown) and wait until it is gone
#   configure-job  write /var/vcap/jobs/postgres/bin/bbr/bbr.conf for this server
#   seed           (re)create the databases `shop` (130,000 rows) and `audit` (1,000 rows)
#   digest         print `db.table rows md5` for every user table, sorted
#   mutate         change the data in ways a restore must undo (digest differs afterwards)
#
# The server runs as vcap, data in /var/vcap/store/postgres/data, Unix socket only (no TCP) in
# /var/vcap/sys/run/postgres, trust authentication, log in /var/vcap/sys/log/postgres/.

set -euo pipefail
cd / # the server and tools run as vcap, who may not be able to enter the caller's directory

OS_USER=vcap
DB_USER=vcap
STORE=/var/vcap/store/postgres
DATA=$STORE/data
RUN_DIR=/var/vcap/sys/run/postgres
LOG_DIR=/var/vcap/sys/log/postgres
JOB_DIR=/var/vcap/jobs/postgres
START_TIMEOUT=30

die() { echo "postgres.sh: error: $*" >&2; exit 1; }
log() { echo "postgres.sh: $*" >&2; }

usage() {
  sed -n '/^# Subcommands:/,/^# The server/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# The newest installed PostgreSQL.
pg_bin() {
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] || [ ! -x "$dir/postgres" ]; then
    die "no PostgreSQL under /usr/lib/postgresql/*/bin"
  fi
  echo "$dir"
}

as_vcap() { runuser -u "$OS_USER" -- "$@"; }

# psql on database $1 (rest: psql arguments), quiet, unaligned, stop at the first error.
sql() {
  local db=$1
  shift
  as_vcap "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$RUN_DIR" -U "$DB_USER" -d "$db" "$@"
}

is_running() {
  as_vcap "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (inside a test-bed host)"
  id "$OS_USER" >/dev/null 2>&1 || die "user $OS_USER does not exist"
  mkdir -p "$STORE" "$RUN_DIR" "$LOG_DIR"
  chown "$OS_USER:" "$STORE" "$RUN_DIR" "$LOG_DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initialising $DATA"
    as_vcap "$PG_BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust --encoding=UTF8 \
      --locale=C.UTF-8 --no-sync >>"$LOG_DIR/initdb.log" 2>&1 \
      || die "initdb failed (see $LOG_DIR/initdb.log)"
    # Unix socket only; test data, so durability is traded for speed.
    cat >>"$DATA/postgresql.conf" <<EOF

# test bed (integration/databases/postgres.sh)
listen_addresses = ''
unix_socket_directories = '$RUN_DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
max_wal_size = 1GB
EOF
  fi
  if is_running; then
    log "already running"
  else
    # pg_ctl -w waits until the server accepts connections. Detached from our stdio: the
    # caller waits for EOF on its pipes.
    as_vcap "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG_DIR/postgresql.log" -w -t "$START_TIMEOUT" \
      start </dev/null >>"$LOG_DIR/pg_ctl.log" 2>&1 \
      || { tail -n 20 "$LOG_DIR/postgresql.log" >&2 || true; die "server did not start (see $LOG_DIR/postgresql.log)"; }
  fi
  for _ in $(seq $((START_TIMEOUT * 10))); do
    if sql postgres -c 'SELECT 1' >/dev/null 2>&1; then
      log "started ($("$PG_BIN/postgres" --version), socket $RUN_DIR)"
      return 0
    fi
    sleep 0.1
  done
  die "server does not answer queries after $START_TIMEOUT s (see $LOG_DIR/postgresql.log)"
}

cmd_stop() {
  if [ ! -f "$DATA/PG_VERSION" ] || ! is_running; then
    log "not running"
    return 0
  fi
  as_vcap "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t "$START_TIMEOUT" stop \
    </dev/null >>"$LOG_DIR/pg_ctl.log" 2>&1 || die "server did not stop (see $LOG_DIR/postgresql.log)"
  log "stopped"
}

# Single-quotes $1 for a shell KEY=VALUE file.
shell_quote() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }

cmd_configure_job() {
  [ -d "$JOB_DIR/bin/bbr" ] || die "$JOB_DIR/bin/bbr does not exist (is the postgres job on this host?)"
  local conf=$JOB_DIR/bin/bbr/bbr.conf
  {
    echo "# Written by integration/databases/postgres.sh configure-job for the test-bed server;"
    echo "# every key is described in scripts-contract/adapters/postgres/bin/bbr/bbr.conf."
    echo "PG_BIN=$(shell_quote "$PG_BIN")"
    echo "PGHOST=$(shell_quote "$RUN_DIR")"
    echo "PGPORT=5432"
    echo "PGUSER=$(shell_quote "$DB_USER")"
    echo "PG_OS_USER=$(shell_quote "$OS_USER")"
    echo "DATABASES=''"
    echo "ENABLED=true"
    echo "VERIFY_EXACT_COUNTS=true"
  } >"$conf.tmp"
  chmod 0644 "$conf.tmp"
  mv "$conf.tmp" "$conf"
  log "wrote $conf"
}

cmd_seed() {
  sql postgres <<'EOF'
SET client_min_messages = warning;
DROP DATABASE IF EXISTS shop;
DROP DATABASE IF EXISTS audit;
CREATE DATABASE shop;
CREATE DATABASE audit;
EOF
  sql shop <<'EOF'
BEGIN;
CREATE TABLE customers (
  id integer PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL
);
CREATE TABLE orders (
  id integer PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id),
  status text NOT NULL,
  total numeric(10, 2) NOT NULL
);
CREATE TABLE order_items (
  id integer PRIMARY KEY,
  order_id integer NOT NULL REFERENCES orders (id),
  sku text NOT NULL,
  quantity integer NOT NULL
);
INSERT INTO customers
  SELECT i, 'customer ' || i, 'customer' || i || '@example.com',
         timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute'
  FROM generate_series(1, 20000) AS i;
INSERT INTO orders
  SELECT i, 1 + (i * 7919) % 20000, (ARRAY['new', 'paid', 'shipped'])[1 + i % 3],
         ((i * 37) % 100000) / 100.0
  FROM generate_series(1, 50000) AS i;
INSERT INTO order_items
  SELECT i, 1 + (i::bigint * 104729) % 50000, 'SKU-' || lpad((i % 997)::text, 4, '0'), 1 + i % 5
  FROM generate_series(1, 60000) AS i;
CREATE INDEX orders_customer_id ON orders (customer_id);
CREATE INDEX order_items_order_id ON order_items (order_id);
COMMIT;
ANALYZE;
EOF
  sql audit <<'EOF'
CREATE TABLE events (id integer PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL);
INSERT INTO events
  SELECT i, 'event-' || (i % 10), timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'
  FROM generate_series(1, 1000) AS i;
EOF
  log "seeded shop (customers 20000, orders 50000, order_items 60000) and audit (events 1000)"
}

# `db.table rows md5` for every user table of every database except postgres and templates;
# md5 over the rows' text, ordered by primary key (by the row text if there is none).
cmd_digest() {
  local dbs db
  dbs=$(sql postgres -c "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1")
  while IFS= read -r db; do
    [ -n "$db" ] || continue
    sql "$db" -F ' ' -v db="$db" <<'EOF'
SELECT format(
  'SELECT %L, count(*), md5(coalesce(string_agg(t::text, E''\n'' ORDER BY %s), '''')) FROM %I.%I AS t',
  :'db' || '.' || CASE WHEN n.nspname = 'public' THEN '' ELSE n.nspname || '.' END || c.relname,
  coalesce(
    (SELECT string_agg(format('t.%I', a.attname), ', ' ORDER BY k.ord)
       FROM pg_index i
       CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE i.indrelid = c.oid AND i.indisprimary),
    't::text'),
  n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
\gexec
EOF
  done <<<"$dbs" | LC_ALL=C sort
}

cmd_mutate() {
  sql shop <<'EOF'
BEGIN;
DROP TABLE order_items;
UPDATE customers SET email = 'changed' || id || '@example.org' WHERE id % 100 = 0;
DELETE FROM orders WHERE id % 250 = 0;
INSERT INTO customers
  SELECT i, 'intruder ' || i, 'intruder' || i || '@example.net', now()
  FROM generate_series(20001, 20500) AS i;
INSERT INTO orders SELECT i, 20001, 'new', 1.00 FROM generate_series(50001, 50100) AS i;
COMMIT;
EOF
  sql audit -c "DELETE FROM events WHERE id <= 10"
  log "mutated shop (order_items dropped, 200 customers updated, 200 orders deleted, 500 customers and 100 orders added) and audit (10 events deleted)"
}

[ $# -eq 1 ] || usage
PG_BIN=$(pg_bin)
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
