#!/usr/bin/env bash
# `make bench-archive`: the archive (issue 14) measured in one run.
#
# 1. Write throughput through the archive writer (batches of what is
#    waiting, one transaction each) into a PostgreSQL this script starts
#    itself (Debian's initdb in a scratch directory, a free loopback port,
#    fsync on as in production, never the machine's service) and into a
#    SQLite file: one line per database.
# 2. Delivery with and without the archive: a redis-server and two release
#    instances, the same load (200 rooms x 10 members, 1 sender per room at
#    10/s: 20,000 deliveries/s, 2,000 messages/s archived) run alternately
#    without an archive and with `--database-url` on that PostgreSQL, twice
#    each; one line per run with deliveries/s and p50/p99/max latency.
set -euo pipefail
cd "$(dirname "$0")/.."

bench=${ARCHIVE_BENCH_BIN:?ARCHIVE_BENCH_BIN: path of the archive_bench example}
server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
messages=${MESSAGES:-200000}
rooms=${ROOMS:-400}
work=$(mktemp -d)
# mktemp's directory is its owner's only; PostgreSQL runs as `postgres`.
chmod 755 "$work"
. scripts/instances.sh
. scripts/postgres.sh
port=$(free_port)
postgres_up "$work/pg/data" "$port"
pids+=("$pg_pid")
database=postgres://chat@127.0.0.1:$port/postgres

"$bench" "$database" "$messages" "$rooms"
"$bench" "sqlite://$work/sqlite/chat.db" "$messages" "$rooms"

bench_args=(--rate-per-sec 100000 --rate-burst 100000 --max-conns-per-ip 100000
  --user-rate-per-sec 100000 --user-rate-burst 100000
  --address-rate-per-sec 1000000 --address-rate-burst 1000000)
for round in 1 2; do
  for archive in none "$database"; do
    start_instances archive "$server" "${bench_args[@]}" --database-url "$archive"
    label="without an archive"
    [ "$archive" = none ] || label="archived to PostgreSQL"
    "$loadgen" --urls "$joined_urls" --json --label "$label" \
      fanout --rooms 200 --members 10 --senders 1 --rate 10 --duration 10 --warmup 2 \
      | tail -n 1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
l = r["latency_ms"]
print("archive-bench: delivery %s (round %s): %.0f deliveries/s, p50 %s ms, p99 %s ms, max %s ms, lost %s" % (
    r["label"], sys.argv[1], r["deliveries_per_s"], l["p50"], l["p99"], l["max"], r["lost"]))' "$round"
    stop_instances
  done
done
