#!/usr/bin/env bash
# The drain's avalanche benchmark (part of `make bench`; alone: `make
# bench-avalanche`). A redis-server and two release instances; 5,000
# clients on the first instance, one sender per room on the second at a
# steady rate; the first gets SIGTERM and is started again once it has
# exited, under the same load. `loadgen avalanche` reports the time until
# every client is back on the second instance, delivered % meanwhile, the
# replay p99 and the survivor's peak CPU. Run twice in one go: without a
# drain window (every client told at once, the avalanche) and with
# AVALANCHE_WINDOW_MS (10 s by default) spread over it. Writes
# bench/avalanche.json (one line per run).
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
clients=${AVALANCHE_CLIENTS:-5000}
window=${AVALANCHE_WINDOW_MS:-10000}
work=$(mktemp -d)
mkdir -p bench
. scripts/instances.sh
bench_args=(--rate-per-sec 100000 --rate-burst 100000 --max-conns-per-ip 100000
  --user-rate-per-sec 100000 --user-rate-burst 100000
  --address-rate-per-sec 1000000 --address-rate-burst 1000000
  --shutdown-deadline-ms 30000)
: > "$work/avalanche.jsonl"

restart_when_gone() {
  local pid=$1 port=$2 window=$3
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  exec "$server" --bind 127.0.0.1 --port "$port" --instance-id avalanche-a \
    --redis-url "$redis_url" --session-secret "avalanche-secret-0123456789" \
    "${bench_args[@]}" --drain-window-ms "$window" --log warn
}

for w in 0 "$window"; do
  start_instances avalanche "$server" "${bench_args[@]}" --drain-window-ms "$w"
  port=${urls[0]#ws://127.0.0.1:}; port=${port%/ws}
  restart_when_gone "${server_pids[0]}" "$port" "$w" &
  pids+=($!)
  "$loadgen" --urls "$joined_urls" --json \
    --label "avalanche: $clients clients leave a stopped instance, drain window $w ms" \
    avalanche --clients "$clients" --rooms $((clients / 10)) --rate 1 \
    --drain-pid "${server_pids[0]}" --survivor-pid "${server_pids[1]}" | tee "$work/run.txt"
  tail -n 1 "$work/run.txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); r["drain_window_ms"] = int(sys.argv[1]); print(json.dumps(r))' "$w" \
    >> "$work/avalanche.jsonl"
  server_pids+=("${pids[-1]}")
  stop_instances
done
cp "$work/avalanche.jsonl" bench/avalanche.json
python3 - "$work/avalanche.jsonl" <<'PY'
import json, sys
print("avalanche: window | all back | delivered | duplicates | replay p99 | survivor CPU peak / mean")
for line in open(sys.argv[1]):
    r = json.loads(line)
    back = "%.1f s" % r["all_back_s"] if r["all_back_s"] is not None else "%d of %d" % (r["back"], r["clients"])
    print("avalanche: %6d ms | %8s | %8.3f %% | %d | %.0f ms | %.0f %% / %.0f %%" % (
        r["drain_window_ms"], back, r["delivered_pct"], r["duplicates"],
        r["replay_ms"]["p99"], r["survivor_cpu_pct"]["peak"], r["survivor_cpu_pct"]["mean"]))
PY
echo "avalanche: wrote bench/avalanche.json"
