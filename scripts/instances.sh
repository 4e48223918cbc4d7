# Sourced by scripts/bench.sh and scripts/hostile.sh: a redis-server and two
# release instances on free ports, stopped when the script exits.
#
#   start_instances NAME SERVER [EXTRA_SERVER_ARGS...]
#
# needs $work (a temporary directory, removed at exit) and sets redis_port,
# urls, server_pids, joined_urls and joined_pids (comma-separated).

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

start_instances() {
  local name=$1 server=$2
  shift 2
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save "" \
    --appendonly no --logfile "$work/redis.log" &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  urls=()
  server_pids=()
  local instance port pid
  for instance in "$name-a" "$name-b"; do
    port=$(free_port)
    "$server" --bind 127.0.0.1 --port "$port" --instance-id "$instance" \
      --redis-url "redis://127.0.0.1:$redis_port" --session-secret "$name-secret-0123456789" \
      "$@" --log warn &
    pid=$!
    pids+=($pid); server_pids+=($pid)
    urls+=("ws://127.0.0.1:$port/ws")
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  joined_urls=$(IFS=,; echo "${urls[*]}")
  joined_pids=$(IFS=,; echo "${server_pids[*]}")
}
