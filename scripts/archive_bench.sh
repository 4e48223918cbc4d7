#!/usr/bin/env bash
# `make bench-archive`: the archive's write throughput (issue 14), through
# the archive writer (batches of what is waiting, one transaction each),
# into a PostgreSQL this script starts itself (Debian's initdb in a
# scratch directory, a free loopback port, fsync on as in production,
# never the machine's service) and into a SQLite file. Prints one line
# per database.
set -euo pipefail
cd "$(dirname "$0")/.."

bench=${ARCHIVE_BENCH_BIN:?ARCHIVE_BENCH_BIN: path of the archive_bench example}
messages=${MESSAGES:-200000}
rooms=${ROOMS:-400}
work=$(mktemp -d)
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_pid=
cleanup() {
  [ -n "$pg_pid" ] && kill "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres:postgres "$work"
  as_owner=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
"${as_owner[@]}" "$bin/initdb" -D "$work/pg" -A trust -U chat -E UTF8 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_owner[@]}" "$bin/postgres" -D "$work/pg" -p "$port" -k "$work" \
  -c listen_addresses=127.0.0.1 >"$work/pg.log" 2>&1 &
pg_pid=$!
for _ in $(seq 100); do
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U chat && break
  sleep 0.1
done

"$bench" "postgres://chat@127.0.0.1:$port/postgres" "$messages" "$rooms"
"$bench" "sqlite://$work/sqlite/chat.db" "$messages" "$rooms"
