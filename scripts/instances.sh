# Sourced by scripts/bench.sh and scripts/hostile.sh: a redis-server (or,
# with REDIS=cluster, a local 3-master Redis Cluster) and two release
# instances on free ports, stopped when the script exits.
#
#   start_instances NAME SERVER [EXTRA_SERVER_ARGS...]   # = start_redis + start_servers
#   start_redis                  # sets redis_url and redis_pids
#   start_servers NAME SERVER [EXTRA_SERVER_ARGS...]
#   stop_instances               # stops both, to start another store
#
# needs $work (a temporary directory, removed at exit) and sets redis_url,
# redis_pids, urls, server_pids, joined_urls and joined_pids (comma-separated).

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
  # Newest first: the instances stop before the Redis they use.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

. scripts/redis_cluster.sh

start_redis() {
  if [ "${REDIS:-single}" = cluster ]; then
    local ports=() i
    for i in 1 2 3; do
      local p
      while :; do
        p=$(free_port)
        [ "$p" -lt 55000 ] && python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', $p + 10000))" 2>/dev/null && break
      done
      ports+=("$p")
    done
    redis_cluster_up "$work/cluster" 0 "${ports[@]}"
    redis_url=$cluster_urls
    redis_pids=$cluster_pids
  else
    local port
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save "" \
      --appendonly no --logfile "$work/redis.log" &
    pids+=($!)
    redis_pids=$!
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis_url=redis://127.0.0.1:$port
  fi
}

start_servers() {
  local name=$1 server=$2
  shift 2
  urls=()
  server_pids=()
  local instance port pid
  for instance in "$name-a" "$name-b"; do
    port=$(free_port)
    "$server" --bind 127.0.0.1 --port "$port" --instance-id "$instance" \
      --redis-url "$redis_url" --session-secret "$name-secret-0123456789" \
      "$@" --log warn &
    pid=$!
    pids+=($pid); server_pids+=($pid)
    urls+=("ws://127.0.0.1:$port/ws")
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  joined_urls=$(IFS=,; echo "${urls[*]}")
  joined_pids=$(IFS=,; echo "${server_pids[*]}")
}

start_instances() {
  start_redis
  start_servers "$@"
}

stop_instances() {
  local pid
  # The instances first: a Redis gone under them fills their logs.
  for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  for pid in $redis_pids; do kill "$pid" 2>/dev/null || true; done
  for pid in $redis_pids; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  rm -rf "$work/cluster"
}

# Sum of user + system CPU ticks (1/100 s) of the given pids.
cpu_ticks() {
  local pid total=0
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
