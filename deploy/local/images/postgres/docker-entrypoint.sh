#!/usr/bin/env bash
# Entrypoint of the db-operator PostgreSQL images (deploy/local/images). A small subset of the
# official postgres image's docker-entrypoint.sh with the same environment, so the pods the operator
# renders (args "-c config_file=...", env POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB/PGDATA) start:
#   POSTGRES_PASSWORD    superuser password; required when PGDATA holds no cluster yet
#   POSTGRES_USER        superuser name (default postgres)
#   POSTGRES_DB          database created on first start (default $POSTGRES_USER)
#   POSTGRES_INITDB_ARGS extra initdb arguments (word-split)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP connections (default scram-sha-256)
# First start: initdb (UTF8, C.UTF-8) into PGDATA, a `host all all all <method>` pg_hba line,
# CREATE DATABASE through a socket-only temporary server. Then exec postgres with the given args.
set -Eeuo pipefail

if [[ "${1:-}" == -* ]]; then set -- postgres "$@"; fi
server_start=0
if [[ "${1:-}" == postgres ]]; then
  server_start=1
  for a in "${@:2}"; do
    case "$a" in -V|--version|--help|-'?'|--describe-config|-C) server_start=0 ;; esac
  done
fi
if [[ $server_start == 0 ]]; then exec "$@"; fi

: "${PGDATA:?PGDATA must name the data directory}"
if [[ "$(id -u)" == 0 ]]; then
  # Started as root (not how the operator runs it): fix ownership and drop to postgres.
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 0700 "$PGDATA"
  command -v setpriv >/dev/null || { echo "docker-entrypoint: run as uid 999" >&2; exit 1; }
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    echo "docker-entrypoint: $PGDATA holds no database cluster and POSTGRES_PASSWORD is not set;" \
      "a superuser password is required to initialize it" >&2
    exit 1
  fi
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA" 2>/dev/null || true
  pwfile="$(mktemp)"
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words
  initdb --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
  rm -f "$pwfile"
  trap - EXIT
  printf '\n# Added by docker-entrypoint.sh: TCP connections from anywhere need a password.\nhost all all all %s\n' \
    "$auth" >>"$PGDATA/pg_hba.conf"
  if [[ "$db" != postgres ]]; then
    sock="$(mktemp -d)"
    pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses='' -c unix_socket_directories='$sock'" start
    psql -X -q -v ON_ERROR_STOP=1 -h "$sock" -U "$user" -d postgres -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
    pg_ctl -D "$PGDATA" -w -s -m fast stop
    rmdir "$sock"
  fi
  echo "docker-entrypoint: initialized $PGDATA (superuser $user, database $db)" >&2
fi
exec "$@"
