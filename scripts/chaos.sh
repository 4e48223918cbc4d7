#!/usr/bin/env bash
# `make chaos`: each Redis fault of issue 19 injected for real, one at a
# time, under a steady load from `loadgen steady` (senders resend until
# acked, receivers reconnect with `since`), against two release instances
# that reach Redis through a TCP proxy (scripts/tcp_proxy.py: the DNS name
# or NAT in between). Prints one row per fault:
#   detection  fault injected -> instance A's /readyz first answers 503
#              ("-": it never did, because writes never stopped succeeding)
#   recovery   fault injected -> /readyz answers 200 again
#   acked / delivered / lost / resets / longest wait for one ack
# and writes the table to bench/chaos.md. Lost must be 0.
# CHAOS_FAULTS picks faults (default: all), CHAOS_DURATION the seconds of
# load, CHAOS_KEEP=1 keeps the logs of the instances and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
only=${CHAOS_FAULTS:-restart restore failover failover-async blackhole loading pubsub-kill}
duration=${CHAOS_DURATION:-20}
work=$(mktemp -d)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p bench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${CHAOS_KEEP:-}" ]; then echo "chaos: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

# start_redis DIR PORT: redis-server with AOF fsynced on every write, as a
# deployment that promises durability runs it. Echoes its pid.
start_redis() {
  mkdir -p "$1"
  redis-server --port "$2" --bind 127.0.0.1 --dir "$1" --save "" --appendonly yes \
    --appendfsync always --enable-debug-command local --repl-diskless-sync-delay 0 \
    --logfile "$1/redis.log" \
    </dev/null >/dev/null 2>&1 &
  echo $!
}
wait_redis() {
  for _ in $(seq 600); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  echo "chaos: redis on :$1 did not answer" >&2
  return 1
}
wait_ready() {
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "chaos: instance on :$1 never ready" >&2
  return 1
}

# The readiness of instance A every 100 ms: "<ms> <status>" lines.
watch_ready() {
  while true; do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/readyz" || true)
    echo "$(now_ms) $code"
    sleep 0.1
  done
}

rows=()
for fault in $only; do
  dir=$work/$fault
  mkdir -p "$dir"
  fpids=()
  r1=$(free_port)
  r1pid=$(start_redis "$dir/r1" "$r1"); fpids+=("$r1pid")
  wait_redis "$r1"
  if [ "$fault" = failover ] || [ "$fault" = failover-async ]; then
    r2=$(free_port)
    r2pid=$(start_redis "$dir/r2" "$r2"); fpids+=("$r2pid")
    wait_redis "$r2"
    redis-cli -p "$r2" replicaof 127.0.0.1 "$r1" >/dev/null
    # A failover to a replica that never synced is a wiped store, not this
    # fault: wait for the link.
    until redis-cli -p "$r2" info replication | grep -q 'master_link_status:up'; do sleep 0.1; done
  fi
  if [ "$fault" = loading ]; then
    # A data set large enough that a restart answers LOADING for a while.
    redis-cli -p "$r1" debug populate 2000000 filler 64 >/dev/null
    redis-cli -p "$r1" bgrewriteaof >/dev/null
    until redis-cli -p "$r1" info persistence | grep -q 'aof_rewrite_in_progress:0'; do sleep 0.2; done
  fi
  echo "$r1" > "$dir/upstream"
  proxy=$(free_port)
  python3 scripts/tcp_proxy.py "$proxy" "$dir/upstream" </dev/null >/dev/null 2>&1 &
  proxypid=$!; fpids+=("$proxypid")
  sleep 0.3
  urls=()
  ports=()
  for name in chaos-a chaos-b; do
    port=$(free_port)
    "$server" --bind 127.0.0.1 --port "$port" --instance-id "$name-$fault" \
      --redis-url "redis://127.0.0.1:$proxy" --session-secret chaos-secret-0123456789 \
      --rate-per-sec 1000 --rate-burst 1000 --max-conns-per-ip 100000 \
      --address-rate-per-sec 1000000 --address-rate-burst 1000000 \
      --log warn 2>"$dir/$name.log" >&2 &
    fpids+=($!)
    urls+=("ws://127.0.0.1:$port/ws")
    ports+=("$port")
  done
  for port in "${ports[@]}"; do wait_ready "$port"; done
  pids+=("${fpids[@]}")

  watch_ready "${ports[0]}" > "$dir/ready" &
  watcher=$!
  joined=$(IFS=,; echo "${urls[*]}")
  "$loadgen" --urls "$joined" --json --label "$fault" \
    steady --clients 200 --rooms 10 --rate 5 --duration "$duration" > "$dir/load.out" 2>"$dir/load.err" &
  load=$!
  sleep 4
  if [ "$fault" = restore ]; then
    # The backup: taken now, restored after a few more seconds of traffic.
    redis-cli -p "$r1" save >/dev/null
    cp -r "$dir/r1" "$dir/backup"
    sleep 3
  fi
  t0=$(now_ms)
  case "$fault" in
    restart)
      redis-cli -p "$r1" shutdown >/dev/null 2>&1 || true
      sleep 2
      r1pid=$(start_redis "$dir/r1" "$r1"); pids+=("$r1pid") ;;
    restore)
      kill -9 "$r1pid"; wait "$r1pid" 2>/dev/null || true
      rm -rf "$dir/r1"; cp -r "$dir/backup" "$dir/r1"
      r1pid=$(start_redis "$dir/r1" "$r1"); pids+=("$r1pid") ;;
    failover)
      # Coordinated (Redis's FAILOVER, what a managed service's planned
      # failover does): writes pause until the replica has everything.
      redis-cli -p "$r1" failover >/dev/null
      until redis-cli -p "$r2" info replication | grep -q 'role:master'; do sleep 0.05; done
      sleep 2
      echo "$r2" > "$dir/upstream" ;;
    failover-async)
      # Uncoordinated (a replica promoted while the old primary still takes
      # writes, as after a network partition): what the old primary acked
      # meanwhile is lost by the store, and the rooms it touched get a new
      # epoch.
      redis-cli -p "$r2" replicaof no one >/dev/null
      redis-cli -p "$r1" replicaof 127.0.0.1 "$r2" >/dev/null
      sleep 2
      echo "$r2" > "$dir/upstream" ;;
    blackhole)
      kill -USR1 "$proxypid" ;;
    loading)
      redis-cli -p "$r1" shutdown >/dev/null 2>&1 || true
      r1pid=$(start_redis "$dir/r1" "$r1"); pids+=("$r1pid") ;;
    pubsub-kill)
      redis-cli -p "$r1" client kill type pubsub >/dev/null ;;
    *) echo "chaos: unknown fault $fault" >&2; exit 2 ;;
  esac
  wait "$load" || { echo "chaos: loadgen failed for $fault:" >&2; cat "$dir/load.err" >&2; exit 1; }
  kill "$watcher" 2>/dev/null || true
  json=$(tail -n 1 "$dir/load.out")
  row=$(python3 - "$t0" "$dir/ready" "$json" "$fault" <<'PY'
import json, sys
t0, ready, line, fault = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
v = json.loads(line)
down = up = None
for l in open(ready):
    parts = l.split()
    if len(parts) != 2:
        continue
    t, code = int(parts[0]), parts[1]
    if t < t0:
        continue
    if down is None and code != "200":
        down = t
    elif down is not None and code == "200":
        up = t
        break
fmt = lambda t: "-" if t is None else f"{(t - t0) / 1000:.1f} s"
print(f"| {fault} | {fmt(down)} | {fmt(up) if down is not None else '-'} | {v['acked']} | "
      f"{v['delivered']} / {v['expected_deliveries']} | {v['lost']} | {v['duplicates']} | "
      f"{v['resets']} | {v['longest_ack_wait_ms'] / 1000:.1f} s |")
PY
)
  echo "$row"
  rows+=("$row")
  for pid in "${fpids[@]}" "$r1pid"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
done

{
  echo "| fault | detection (/readyz 503) | recovery (/readyz 200) | acked | delivered / expected | lost | duplicates | rooms reset | longest ack wait |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} | tee bench/chaos.md
