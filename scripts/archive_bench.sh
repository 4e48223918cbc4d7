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

# 3. The Redis engine's archiver catching up: $messages messages over
#    $rooms rooms put in the room streams directly (as instances would have
#    stored them, marked for archiving), then one release instance started
#    with the archive on a fresh database; the time until PostgreSQL holds
#    every one of them (from the instance's start, so it includes it).
start_redis
psql=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/psql
"$psql" -q -h 127.0.0.1 -p "$port" -U chat postgres -c "CREATE DATABASE streams"
python3 - "$messages" "$rooms" > "$work/streams.resp" <<'PY'
import json, sys
messages, rooms = int(sys.argv[1]), int(sys.argv[2])
def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    sys.stdout.buffer.write(b"".join(out))
def partition(room):  # engine/redis/keys.rs: FNV-1a of the name, 16 partitions
    h = 0x811c9dc5
    for b in room.encode():
        h = ((h ^ b) * 0x01000193) & 0xffffffff
    return h % 16
per_room = messages // rooms
for r in range(rooms):
    room = "bench-%d" % r
    for o in range(1, per_room + 1):
        stored = json.dumps({"id": "m_%d_%d" % (r, o), "client_id": "c%d" % o,
            "from": {"id": "u_bench", "name": "bench"}, "body": "x" * 100, "ts": 1})
        cmd("XADD", "chat:{%s}:log" % room, "%d-0" % o, "m", stored)
    cmd("HSET", "chat:{%s}:meta" % room, "epoch", "bench-epoch", "offset", per_room, "archived", 0)
    cmd("ZADD", "chat:{archive:%d}:dirty" % partition(room), 1, room)
PY
redis-cli -u "$redis_url" --pipe < "$work/streams.resp" > /dev/null
expected=$(( messages / rooms * rooms ))
started=$(date +%s.%N)
start_servers streams "$server" --database-url "postgres://chat@127.0.0.1:$port/streams"
while :; do
  got=$("$psql" -At -h 127.0.0.1 -p "$port" -U chat streams -c "SELECT count(*) FROM chat_messages" 2>/dev/null || echo 0)
  [ "$got" -ge "$expected" ] && break
  sleep 0.05
done
python3 -c '
import sys, time
n, started = int(sys.argv[1]), float(sys.argv[2])
took = time.time() - started
print("archive-bench: redis archiver: %d messages over %s rooms from the streams into postgres in %.2f s = %.0f messages/s (two instances, started within it)" % (n, sys.argv[3], took, n / took))' "$expected" "$started" "$rooms"
stop_instances
