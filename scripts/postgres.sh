# Sourced: `postgres_up <data dir> <port>` starts a PostgreSQL of the
# caller's own (Debian's newest /usr/lib/postgresql/<major>; `initdb` into
# <data dir> when it holds no cluster yet; trust authentication for the
# user `chat`; loopback only; its socket in <data dir>/..), never the
# machine's service. As root it runs as the `postgres` user (PostgreSQL
# refuses root). Sets `pg_pid`; waits until it takes connections.
postgres_up() {
  local data=$1 port=$2 bin as_owner=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  mkdir -p "$(dirname "$data")"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$(dirname "$data")"
    as_owner=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    "${as_owner[@]}" "$bin/initdb" -D "$data" -A trust -U chat -E UTF8 >/dev/null
  fi
  "${as_owner[@]}" "$bin/postgres" -D "$data" -p "$port" -k "$(dirname "$data")" \
    -c listen_addresses=127.0.0.1 >"$(dirname "$data")/postgres.log" 2>&1 &
  pg_pid=$!
  for _ in $(seq 100); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U chat && return 0
    sleep 0.1
  done
  echo "postgres on :$port did not start: $(dirname "$data")/postgres.log" >&2
  return 1
}
