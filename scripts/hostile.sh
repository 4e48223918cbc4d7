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
. scripts/instances.sh
start_instances hostile "$server"
echo "hostile: redis $redis_url, instances ${urls[*]}, default limits, ${phase} s per phase"

"$loadgen" --urls "$joined_urls" --source-ips 50 --json --label hostile \
  hostile --users 1000 --rooms 100 --rate 0.2 --phase "$phase" --pids "$joined_pids" ${HOSTILE_PATTERNS:+--patterns "$HOSTILE_PATTERNS"} \
  | tee "$work/run.txt"
tail -n 1 "$work/run.txt" > bench/hostile.json
echo "hostile: wrote bench/hostile.json"
