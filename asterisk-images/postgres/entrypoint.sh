#!/bin/sh
# Create a throw-away cluster on first start and run PostgreSQL in the foreground.
set -eu
BIN=/usr/lib/postgresql/15/bin
DATA="${PGDATA:-/var/lib/postgresql/siplab}"
LISTEN="${PG_LISTEN:-127.0.0.5}"
PORT="${PG_PORT:-5432}"
USER_="${PG_USER:-siplab}"
PASS="${PG_PASSWORD:-siplab}"
DB="${PG_DB:-siplab}"
if [ ! -s "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA" && chown postgres:postgres "$DATA" && chmod 0700 "$DATA"
    printf '%s\n' "$PASS" > /tmp/pgpass && chown postgres /tmp/pgpass
    su postgres -c "$BIN/initdb -D '$DATA' -U '$USER_' --pwfile=/tmp/pgpass -A scram-sha-256 \
        --auth-local=trust -E UTF8 --locale=C.UTF-8" >/dev/null
    rm -f /tmp/pgpass
    echo "host all all 127.0.0.0/8 scram-sha-256" >> "$DATA/pg_hba.conf"
    su postgres -c "$BIN/postgres -D '$DATA' -c listen_addresses='' -k /tmp" &
    until su postgres -c "$BIN/pg_isready -h /tmp -q"; do sleep 0.2; done
    if [ "$DB" != postgres ]; then
        su postgres -c "psql -h /tmp -U '$USER_' -d postgres -qc 'CREATE DATABASE \"$DB\"'"
    fi
    su postgres -c "$BIN/pg_ctl -D '$DATA' -m fast -w stop" >/dev/null
fi
exec su postgres -c "exec $BIN/postgres -D '$DATA' -c listen_addresses='$LISTEN' -p $PORT \
    -k /tmp -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
