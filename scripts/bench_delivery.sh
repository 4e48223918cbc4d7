#!/usr/bin/env bash
# `make bench-delivery` (issue 18), in one run on this machine:
# - our CPU per delivery against the kernel's cost of one socket write:
#   400 rooms x 10 members over two release instances + Redis, one sender
#   per room at 10 msg/s (40,000 deliveries/s); the instances' utime+stime
#   over the measured seconds, per delivery; then bench/kernel_floor.c
#   (one unbatched 260-byte write to one of 4,000 loopback TCP sockets read
#   by another process, 40,000/s for 10 s, the sender's utime+stime per
#   write); their ratio, p99, lost and out of order; each sender sends at
#   its own phase of the period, as independent users do, and again with
#   every sender at the same instant (a 4,000-delivery burst per 100 ms);
# - the same load with both instances pinned to one core (`taskset -c 0`:
#   one worker thread, so one hub shard each) and on both cores (two
#   shards each), and the highest rate each sustains with p99 < 50 ms;
# - the join burst: 5,000 clients connect and join at once over the two
#   instances (500 rooms): p50/p99/max of join -> joined.
# Writes bench/delivery.json. The load generator runs on the same 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
work=$(mktemp -d)
mkdir -p bench
. scripts/instances.sh
lines=$work/delivery.jsonl
: > "$lines"

# saturate CORES: the highest per-sender rate with p99 under 50 ms.
saturate() {
  local cores=$1
  "$loadgen" --urls "$joined_urls" --json \
    --label "saturation on $cores: 100 rooms x 10 members, 1 sender/room, p99 < 50 ms" \
    saturation --rooms 100 --members 10 --senders 1 --start-rate 20 --factor 2 --max-steps 6 \
    --refine 2 --step-duration 4 --p99-bound-ms 50 | tee "$work/run.txt"
  tail -n 1 "$work/run.txt" | python3 -c '
import json, sys
run = json.loads(sys.stdin.read()); run["cores"] = sys.argv[1]; print(json.dumps(run))' "$cores" >> "$lines"
}

start_instances delivery "$server" "${bench_args[@]}"
echo "bench-delivery: redis $redis_url, instances ${urls[*]}"
per_delivery "2 cores"
per_delivery "2 cores" --aligned
saturate "2 cores"
"$loadgen" --urls "$joined_urls" --json \
  --label "join burst: 5,000 clients connect and join at once over two instances, 500 rooms" \
  joinburst --connections 5000 --rooms 500 | tee "$work/run.txt"
tail -n 1 "$work/run.txt" >> "$lines"
stop_instances

server_wrap=(taskset -c 0)
start_instances delivery "$server" "${bench_args[@]}"
echo "bench-delivery: both instances pinned to core 0"
per_delivery "1 core"
saturate "1 core"
stop_instances

python3 - "$lines" bench/delivery.json "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"commit": sys.argv[3], "runs": runs}, open(sys.argv[2], "w"), indent=1)
PY
echo "bench-delivery: wrote bench/delivery.json"
python3 - bench/delivery.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["runs"]:
    if r.get("mode") == "joinburst":
        print("bench: join burst of %d: join p50 %s ms, p99 %s ms, max %s ms; connect->joined p99 %s ms; failed %d" % (
            r["connections"], r["join_ms"]["p50"], r["join_ms"]["p99"], r["join_ms"]["max"],
            r["connect_to_joined_ms"]["p99"], r["failed"]))
    elif "server_cpu" in r:
        print("bench: %s%s: %.2f us/delivery vs floor %.2f us (%.2fx), p99 %s ms" % (
            r["cores"], ", senders aligned" if r.get("senders_aligned") else "", r["server_cpu"]["us_per_delivery"], r["kernel_floor_us_per_write"],
            r["cpu_ratio_to_floor"], r["latency_ms"]["p99"]))
    else:
        lat = r.get("best_latency_ms") or {}
        print("bench: %s: highest load with p99 < %s ms: %s deliveries/s (%s msg/s per sender), p99 %s ms" % (
            r["cores"], r["p99_bound_ms"], r["best_deliveries_per_s"], r["best_rate_per_sender"], lat.get("p99")))
PY
