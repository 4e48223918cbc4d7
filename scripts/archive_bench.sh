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
pg_pid=
cleanup() {
  [ -n "$pg_pid" ] && kill "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# mktemp's directory is its owner's only; PostgreSQL runs as `postgres`.
chmod 755 "$work"
. scripts/postgres.sh
postgres_up "$work/pg/data" "$port"

"$bench" "postgres://chat@127.0.0.1:$port/postgres" "$messages" "$rooms"
"$bench" "sqlite://$work/sqlite/chat.db" "$messages" "$rooms"
