#!/usr/bin/env bash
# `make profile-delivery` (issue 18): what the two instances ask of the
# kernel under the per-delivery load (400 rooms x 10 members, one sender
# per room at 10 msg/s, 40,000 deliveries/s), counted by perf over 5 s of
# the 10 the load generator measures: syscalls by kind (sendto: a delivery or a reply written
# to a client; writev: the Redis commands, and a reply written with what
# waited behind it), context switches, futex and epoll_wait calls, beside
# the run's CPU per delivery against the kernel floor. perf's counters
# rather than `strace -c`, which slows every syscall it counts.
# PROFILE_RUNS=N repeats the load N times on the same instances.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
work=$(mktemp -d)
. scripts/instances.sh
lines=$work/delivery.jsonl
events=task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter
for call in sendto writev write recvfrom futex epoll_wait; do
  events+=",syscalls:sys_enter_$call"
done

start_instances profile "$server" "${bench_args[@]}"
for _ in $(seq 1 "${PROFILE_RUNS:-1}"); do
  per_delivery "2 cores" > /dev/null 2> "$work/load.err" &
  load=$!
  # Count 5 s of the measured 10, from the moment the load generator says
  # it measures (its joins and warm-up are over), not after a guessed delay.
  until grep -q '^measuring' "$work/load.err"; do
    kill -0 "$load" 2>/dev/null || { cat "$work/load.err" >&2; exit 1; }
    sleep 0.2
  done
  sleep 1
  perf stat -e "$events" -p "${server_pids[0]},${server_pids[1]}" -- sleep 5
  wait "$load"
  grep '^bench' "$work/load.err" >&2
done
