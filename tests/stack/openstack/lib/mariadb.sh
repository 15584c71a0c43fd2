# The local cloud's database for start.sh (sourced): one MariaDB server
# (Debian's mariadb-server) in STATE/data/mysql, listening on a unix socket
# in STATE/run only (--skip-networking: no TCP port at all; the state
# directory is 0700, so only its owner reaches the socket), its PID recorded
# like every other process and stopped by PID.  One database and one user per
# service (nova: nova_api, nova_cell0, nova).
#
# Schemas come from each service's own migrations (db sync / db-manage
# upgrade).  They cost ~30 s of Python on 2 cores, so the migrated data
# directory is cached (~7 MB gzipped): a copy taken right after the migrations (server
# stopped cleanly, nothing per-run in it yet but the service users, whose
# passwords are reset on restore, and Nova's cell mappings, rewritten on
# restore), keyed by the installed package versions and the text of the
# functions that build the schemas.  Cache: $BOMARUN_OS_DB_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/bomarun/openstack-db; BOMARUN_OS_DB_CACHE=off
# disables it.

DB_SOCK=$(db_sock)
DB_DATA="$STATE/data/mysql"
# Every MariaDB tool takes --no-defaults first: Debian's /etc/mysql/my.cnf
# would point it at /run/mysqld.
DB_SERVER_OPTS=(--datadir="$DB_DATA" --socket="$DB_SOCK" --skip-networking
  --pid-file="$STATE/run/mysqld.pidfile" --log-error="$STATE/log/mariadb-error.log"
  --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
  --innodb-buffer-pool-size=64M --innodb-log-file-size=16M
  --performance-schema=OFF --skip-name-resolve --max-connections=1000
  --key-buffer-size=8M --table-open-cache=400 --thread-cache-size=8
  --innodb-flush-log-at-trx-commit=2)
# The databases each service owns (user = service name).
DB_SERVICES="keystone glance placement nova neutron octavia heat magnum"
db_names_of() {
  case "$1" in
    nova) echo "nova_api nova_cell0 nova" ;;
    *) echo "$1" ;;
  esac
}

[ "${#DB_SOCK}" -lt 100 ] || die "state directory path too long for a unix socket: $DB_SOCK (${#DB_SOCK} characters; 100 at most)"

# The SQLAlchemy URL for DB as service USER (PyMySQL over the socket).
db_url() { # USER [DB]
  local user=$1 db=${2:-$1} pw_var
  pw_var="DB_${user^^}_PASSWORD"
  echo "mysql+pymysql://$user:${!pw_var}@localhost/$db?unix_socket=$DB_SOCK&charset=utf8mb4"
}

# sql (lib/common.sh) runs statements as root over this socket.

db_cache_dir() {
  echo "${BOMARUN_OS_DB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bomarun/openstack-db}"
}

# The cache key: the versions of every package whose migrations or server
# make the data directory, the functions that run the migrations, and the
# layers (the magnum layer adds heat's and magnum's schemas).
db_cache_key() {
  {
    dpkg-query -W -f='${Package} ${Version}\n' mariadb-server python3-keystone python3-glance \
      python3-placement python3-nova python3-neutron python3-octavia python3-heat python3-magnum 2>/dev/null
    declare -f db_create_users db_migrate_all db_keystone db_glance db_compute db_octavia db_magnum 2>/dev/null
    echo "layers=$LAYERS"
    echo "opts=${DB_SERVER_OPTS[*]//$STATE/STATE}"
  } | sha256sum | cut -c1-16
}

db_wait_socket() { # SECONDS
  local i
  for i in $(seq 1 $(( $1 * 10 ))); do
    sql -e 'select 1' >/dev/null 2>&1 && return 0
    ours mariadb || fail_with mariadb "mariadbd exited (error log: $STATE/log/mariadb-error.log)"
    sleep 0.1
  done
  fail_with mariadb "mariadbd did not accept connections on $DB_SOCK within $1 s"
}

db_start_server() {
  spawn mariadb mariadbd --no-defaults "${DB_SERVER_OPTS[@]}" --user=root
  db_wait_socket 60
}

# Stop our server by its PID and wait for it to exit (a clean InnoDB
# shutdown, ~1 s), so its data directory can be copied.
db_stop_server() {
  stop_groups mariadb
  rm -f "$STATE/run/mariadb.pid" "$STATE/run/mariadb.start"
  sed -i '/^mariadb$/d' "$STATE/run/order"
}

db_create_users() {
  local svc db stmts=""
  for svc in $DB_SERVICES; do
    stmts="$stmts CREATE USER '$svc'@'localhost' IDENTIFIED BY 'placeholder';"
    for db in $(db_names_of "$svc"); do
      stmts="$stmts CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"
      stmts="$stmts GRANT ALL PRIVILEGES ON \`$db\`.* TO '$svc'@'localhost';"
    done
  done
  echo "$stmts" | sql
}

# This run's passwords for the service users (generated per run with the
# other secrets; set again after a restore from the cache).
db_set_passwords() {
  local svc pw_var stmts=""
  for svc in $DB_SERVICES; do
    pw_var="DB_${svc^^}_PASSWORD"
    stmts="$stmts ALTER USER '$svc'@'localhost' IDENTIFIED BY '${!pw_var}';"
  done
  echo "$stmts FLUSH PRIVILEGES;" | sql
}

# Nova's cell mappings hold this run's database URLs and RabbitMQ URL.
db_fix_cell_mappings() {
  has compute || return 0
  sql nova_api <<EOF
UPDATE cell_mappings SET database_connection = '$(db_url nova nova_cell0)' WHERE name = 'cell0';
UPDATE cell_mappings SET database_connection = '$(db_url nova nova)', transport_url = '$TRANSPORT_URL' WHERE name = 'cell1';
EOF
}

# Every layer's migrations, side by side (most of the time is Python
# start-up, which overlaps well on 2 cores).
db_migrate_all() {
  local l
  for l in ${LAYERS//,/ }; do
    case "$l" in rabbit) ;; *) bg "$l" "db_$l" ;; esac
  done
  wait_bg
}

# Up: restore the data directory from the cache, or build it (install the
# system tables, create the users and databases, migrate, then save it).
up_db() {
  local t0 key cache tarball
  t0=$(now)
  key=$(db_cache_key)
  cache=$(db_cache_dir)
  tarball="$cache/$key.tar.gz"
  mkdir -p "$DB_DATA"
  if [ "${BOMARUN_OS_DB_CACHE:-}" != off ] && [ -f "$tarball" ]; then
    tar -C "$DB_DATA" -xzf "$tarball" || die "cannot unpack the database cache $tarball"
    db_start_server
    db_set_passwords
    db_fix_cell_mappings
    echo "DB_SOURCE=cache $tarball" >>"$STATE/run/db.env"
    log "database: restored the migrated schemas from $tarball in $(elapsed "$t0") s"
    return 0
  fi
  manage mariadb-install-db mariadb-install-db --no-defaults --datadir="$DB_DATA" --user=root \
    --auth-root-authentication-method=normal --skip-test-db --innodb-log-file-size=16M
  db_start_server
  db_create_users
  db_set_passwords
  log "database: server up, users created (+$(elapsed "$T_ALL") s); migrating"
  db_migrate_all
  log "database: migrations done in $(elapsed "$t0") s"
  echo "DB_SOURCE=migrations" >>"$STATE/run/db.env"
  if [ "${BOMARUN_OS_DB_CACHE:-}" != off ]; then
    # A copy of a running InnoDB is not consistent: stop, copy, start again.
    db_stop_server
    if mkdir -p "$cache" && tar -C "$DB_DATA" --exclude=./ibtmp1 -c . | gzip -1 >"$tarball.tmp.$$" && mv "$tarball.tmp.$$" "$tarball"; then
      log "database: migrated data directory cached as $tarball"
      # Older keys are stale: keep only this one.
      find "$cache" -maxdepth 1 -name '*.tar*' ! -name "$key.tar.gz" -delete 2>/dev/null || true
    else
      rm -f "$tarball.tmp.$$"
      log "database: could not write the cache $tarball (continuing without)"
    fi
    db_start_server
  fi
}
