# Sourced by the bench scripts and scripts/hostile.sh: a redis-server (or,
# with REDIS=cluster, a local 3-master Redis Cluster) and two release
# instances on free ports, stopped when the script exits.
#
#   start_instances NAME SERVER [EXTRA_SERVER_ARGS...]   # = start_redis + start_servers
#   start_redis                  # sets redis_url and redis_pids
#   start_servers NAME SERVER [EXTRA_SERVER_ARGS...]   # under "${server_wrap[@]}" if set,
#                                # the first also under "${first_wrap[@]}"
#   stop_instances               # stops both, to start another store
#
# needs $work (a temporary directory, removed at exit) and sets redis_url,
# redis_pids, urls, server_pids, joined_urls and joined_pids (comma-separated).
# Also defines bench_args (rate limits raised for synthetic load) and
# per_delivery (issue 18's CPU per delivery against the kernel's floor).

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
# A command the instances run under (e.g. `taskset -c 0`); none by default.
server_wrap=()
# A command the first instance alone runs under, inside server_wrap (e.g.
# valgrind); none by default.
first_wrap=()
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
  local instance port pid wrap=("${first_wrap[@]}")
  for instance in "$name-a" "$name-b"; do
    port=$(free_port)
    "${server_wrap[@]}" "${wrap[@]}" "$server" --bind 127.0.0.1 --port "$port" --instance-id "$instance" \
      --redis-url "$redis_url" --session-secret "$name-secret-0123456789" \
      "$@" --log warn &
    pid=$!
    pids+=($pid); server_pids+=($pid)
    urls+=("ws://127.0.0.1:$port/ws")
    wrap=()
    # Up to a minute: an instance under valgrind takes seconds to start.
    for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
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

# The instances' rate limits raised for synthetic load (per connection, per
# user, per address): synthetic senders go faster than a person and all come
# from one address.
bench_args=(--rate-per-sec 100000 --rate-burst 100000 --max-conns-per-ip 100000
  --user-rate-per-sec 100000 --user-rate-burst 100000
  --address-rate-per-sec 1000000 --address-rate-burst 1000000)

# per_delivery CORES [--aligned]: issue 18's figure in one run, appended to
# $lines as one JSON line. The load: 400 rooms x 10 members over the
# instances, one sender per room at 10 msg/s (40,000 deliveries/s), each
# sender at its own phase of the 100 ms period (independent users), or
# with --aligned all at the same instant (a burst of 4,000 deliveries
# every 100 ms); the instances' utime+stime over the measured seconds
# (loadgen --pids); then bench/kernel_floor.c: one unbatched 260-byte
# write to one of 4,000 loopback TCP sockets read by another process,
# 40,000/s for 10 s, the sender's utime+stime per write. Needs $loadgen
# and $lines.
per_delivery() {
  local cores=$1 shape="senders at their own phase"
  shift
  [ "$*" = --aligned ] && shape="every sender at the same instant"
  [ -x "$work/kernel_floor" ] || cc -O2 -o "$work/kernel_floor" bench/kernel_floor.c
  "$loadgen" --urls "$joined_urls" --json \
    --label "per-delivery CPU on $cores: 400 rooms x 10 members, 1 sender/room at 10/s, $shape" \
    fanout --rooms 400 --members 10 --senders 1 --rate 10 --duration 10 --warmup 2 \
    --pids "$joined_pids" "$@" | tee "$work/run.txt"
  "$work/kernel_floor" 4000 40000 10 260 > "$work/floor.json"
  tail -n 1 "$work/run.txt" | python3 -c '
import json, sys
run = json.loads(sys.stdin.read())
floor = json.load(open(sys.argv[1]))
run["cores"] = sys.argv[2]
run["senders_aligned"] = sys.argv[3] == "--aligned"
run["kernel_floor_us_per_write"] = floor["us_per_write"]
run["cpu_ratio_to_floor"] = round(run["server_cpu"]["us_per_delivery"] / floor["us_per_write"], 2)
print(json.dumps(run))
print("bench: per delivery on %s%s: server CPU %.2f us, kernel floor %.2f us per write, ratio %.2fx; p99 %s ms; lost %s, out of order %s" % (
    sys.argv[2], ", senders aligned" if run["senders_aligned"] else "", run["server_cpu"]["us_per_delivery"], floor["us_per_write"], run["cpu_ratio_to_floor"],
    run["latency_ms"]["p99"], run["lost"], run["out_of_order"]), file=sys.stderr)' "$work/floor.json" "$cores" "${1:-}" >> "$lines"
}
