#!/usr/bin/env bash
# `make bench`: starts a redis-server and two release instances on free
# ports, runs the standard suite of the load generator against them, prints
# the figures, and writes bench/results.json (rendered by the docs'
# benchmarks page) and bench/results.svg. The instances
# run with the rate limits raised (per connection, per user, per address:
# the protocol default is 20 units/s per connection), because synthetic
# senders go faster than a person and all come from one address.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
work=$(mktemp -d)
mkdir -p bench
. scripts/instances.sh
start_instances bench "$server" "${bench_args[@]}"
echo "bench: redis $redis_url, instances ${urls[*]} (rate limit raised to 100000/s for synthetic load)"

lines=$work/results.jsonl
: > "$lines"
run() { "$loadgen" --urls "$joined_urls" --json "$@" | tee "$work/run.txt"; tail -n 1 "$work/run.txt" >> "$lines"; }

# The standard suite. Idle first: it reads the instances' RSS growth, which
# must start from fresh processes (later the allocator reuses freed memory).
run --label "idle: 10,000 connections, 100 rooms" \
  idle --connections 10000 --rooms 100 --pids "$joined_pids"
# The idle run's 10,000 users leave their rooms one presence grace (5 s)
# after their sockets close; measured in the next run, that burst of leaves
# showed as its p99 (27-60 ms instead of 5). Let it pass first.
sleep 10
run --label "fan-out small: 10 rooms x 20 members, 2 senders/room at 20/s" \
  fanout --rooms 10 --members 20 --senders 2 --rate 20 --duration 10 --warmup 2
run --label "fan-out large: 1 room x 1000 members, 1 sender at 50/s" \
  fanout --rooms 1 --members 1000 --senders 1 --rate 50 --duration 10 --warmup 2
run --label "saturation: 100 rooms x 10 members, 1 sender/room, p99 < 100 ms" \
  saturation --rooms 100 --members 10 --senders 1 --start-rate 5 --factor 2 --max-steps 6 --refine 2 \
  --step-duration 4 --p99-bound-ms 100
run --label "churn: 1,000 clients force-closed every ~15 s, 10 rooms, 1 sender/room at 5/s" \
  churn --clients 1000 --rooms 10 --senders 1 --rate 5 --every 15 --duration 30

# One Redis against a 3-master Redis Cluster at the same load, in one run:
# deliveries/s, p99 and the Redis processes' CPU per delivery (utime +
# stime of every redis-server, from /proc, over the load's whole run).
store_run() {
  local store=$1 before after
  before=$(cpu_ticks $redis_pids)
  "$loadgen" --urls "$joined_urls" --json --label "store $store: 200 rooms x 10 members, 1 sender/room at 10/s" \
    fanout --rooms 200 --members 10 --senders 1 --rate 10 --duration 10 --warmup 2 | tee "$work/run.txt"
  after=$(cpu_ticks $redis_pids)
  tail -n 1 "$work/run.txt" | python3 -c '
import json, sys
run = json.loads(sys.stdin.read())
store, ticks = sys.argv[1], int(sys.argv[2])
run["store"] = store
run["redis_cpu_s"] = ticks / 100
run["redis_cpu_us_per_delivery"] = round(ticks * 10_000 / max(run["delivered"], 1), 2)
print(json.dumps(run))' "$store" "$((after - before))" >> "$lines"
  tail -n 1 "$lines" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("bench: %s: %.0f deliveries/s, p99 %s ms, redis CPU %s us/delivery, lost %s" % (
    r["store"], r["deliveries_per_s"], r["latency_ms"]["p99"], r["redis_cpu_us_per_delivery"], r["lost"]))'
}
store_run "one Redis"

# Issue 18: our CPU per delivery against the kernel's floor, in one run
# (scripts/instances.sh; `make bench-delivery` has more).
per_delivery "2 cores"
stop_instances
REDIS=cluster start_redis
start_servers bench "$server" "${bench_args[@]}"
echo "bench: Redis Cluster $redis_url"
store_run "Redis Cluster, 3 masters"

python3 scripts/bench_report.py "$lines" bench/results.json bench/results.svg \
  "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)"
echo "bench: wrote bench/results.json and bench/results.svg (the docs' benchmarks page renders the former)"

# The drain: 5,000 clients leave a stopped instance, at once and spread
# over a drain window (scripts/avalanche.sh; bench/avalanche.json).
stop_instances
SERVER_BIN=$server LOADGEN_BIN=$loadgen scripts/avalanche.sh
