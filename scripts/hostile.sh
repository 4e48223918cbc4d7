#!/usr/bin/env bash
# `make hostile`: what one abusive address costs everyone else. Starts a
# redis-server and two release instances with the default limits (nothing
# raised: the defaults are what protects), then `loadgen hostile`: 1,000
# honest users in 100 rooms over 50 source addresses send at a steady rate
# through a baseline, each abuse pattern from one attacker address in turn,
# and a recovery phase. Prints honest delivered %, p99 with and without the
# attacker, and the instances' RSS before, at the end of and after the
# attack; writes bench/hostile.json.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
phase=${HOSTILE_PHASE:-10}
work=$(mktemp -d)
mkdir -p bench
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save "" \
  --appendonly no --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

urls=()
server_pids=()
for name in hostile-a hostile-b; do
  port=$(free_port)
  "$server" --bind 127.0.0.1 --port "$port" --instance-id "$name" \
    --redis-url "redis://127.0.0.1:$redis_port" --session-secret hostile-secret-0123456789 \
    --log warn &
  pid=$!
  pids+=($pid); server_pids+=($pid)
  urls+=("ws://127.0.0.1:$port/ws")
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
joined_urls=$(IFS=,; echo "${urls[*]}")
joined_pids=$(IFS=,; echo "${server_pids[*]}")
echo "hostile: redis :$redis_port, instances ${urls[*]}, default limits, ${phase} s per phase"

"$loadgen" --urls "$joined_urls" --source-ips 50 --json --label hostile \
  hostile --users 1000 --rooms 100 --rate 0.2 --phase "$phase" --pids "$joined_pids" ${HOSTILE_PATTERNS:+--patterns "$HOSTILE_PATTERNS"} \
  | tee "$work/run.txt"
tail -n 1 "$work/run.txt" > bench/hostile.json
echo "hostile: wrote bench/hostile.json"
