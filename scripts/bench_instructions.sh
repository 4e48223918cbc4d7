#!/usr/bin/env bash
# `make bench-instructions` (issue 18): the instructions one instance
# executes per delivered message, counted by valgrind's callgrind, which
# counts instructions rather than seconds: the same binary and load give
# the same figure whatever else the machine does, so a change to the
# delivery path shows as a number instead of drowning in the CPU-time
# noise of a shared machine.
#
# Instance A runs under callgrind, instance B natively, both on one Redis
# started here; the load generator puts 40 rooms x 10 members over the two
# (5 members of each room on A) with one sender per room at 2 msg/s (the
# most A keeps up with under valgrind). Counting is zeroed once the joins
# are done and dumped 10 s later; the deliveries of that window are read
# from B's /metrics (its members are A's mirror image; A's /metrics is not
# read: procfs's auxv probe faults under valgrind). Prints the count per
# delivery, and per stage of a message's way through; writes
# bench/instructions.json.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
loadgen=${LOADGEN_BIN:?LOADGEN_BIN: path of the release loadgen binary}
work=$(mktemp -d)
mkdir -p bench
. scripts/instances.sh

first_wrap=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" --dump-instr=no)
start_instances instr "$server" "${bench_args[@]}"
instance_a=${server_pids[0]}
port_b=${urls[1]#ws://127.0.0.1:}
port_b=${port_b%/ws}
delivered() {
  curl -fs "http://127.0.0.1:$port_b/metrics" |
    awk '/^chat_messages_delivered_total/ {s += $2} END {print s + 0}'
}
"$loadgen" --urls "$joined_urls" \
  fanout --rooms 40 --members 10 --senders 1 --rate 2 --duration 50 --warmup 2 \
  > "$work/loadgen.txt" 2>&1 &
load=$!
# The joins of 400 members, 200 of them through valgrind, are over by then.
sleep 28
before=$(delivered)
callgrind_control -z "$instance_a" >/dev/null
sleep 10
callgrind_control -d "$instance_a" >/dev/null
after=$(delivered)
wait "$load" || { cat "$work/loadgen.txt"; exit 1; }
dump=$(ls "$work"/callgrind.out.* | head -n 1)
callgrind_annotate --inclusive=yes "$dump" > "$work/annotate.txt"
python3 - "$work/annotate.txt" $((after - before)) bench/instructions.json \
  "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, re, sys
annotate, deliveries, out, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = []
for line in open(annotate):
    m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
    if m:
        rows.append((int(m.group(1).replace(",", "")), m.group(2)))
total = next(n for n, name in rows if name.startswith("PROGRAM TOTALS"))
if deliveries <= 0:
    sys.exit("bench-instructions: no deliveries in the window")
# The stages of a message through the instance, each the inclusive count
# of the function that is that stage (what it calls included; stages nest:
# the publish is part of handling the client's frame).
stages = [
    ("a client's frame: decode, check, publish, reply", r"Connection>::on_frame::\{\{closure\}\} "),
    ("  the publish (EVALSHA of lua/publish.lua, its reply)", r"RedisEngine>::publish::\{\{closure\}\} "),
    ("redis-rs: reading replies and pub/sub messages", r"ValueCodec as tokio_util::codec::decoder::Decoder>::decode "),
    ("the pub/sub intake: a channel message to the hub", r"pubsub::Single::run::\{\{closure\}\} "),
    ("  decoding the message (JSON)", r"archiver::receive "),
    ("the hub: encode once, write to each member", r"server::hub::Hub::handle "),
    ("  encoding the frame (JSON + WebSocket header)", r"server::codec::encode "),
    ("  the writes (outboxes; the syscalls are the kernel's)", r"LocalRoom::deliver "),
    ("presence refresh (every 10 s)", r"PresenceStore for server::engine::redis::RedisEngine>::refresh::\{\{closure\}\} "),
    ("allocation (jemalloc, the global allocator)", r"__rustc::__rust_alloc "),
    ("deallocation", r"__rustc::__rust_dealloc "),
    ("the runtime parking (epoll)", r"worker::Context::park_internal "),
]
top = []
for label, pattern in stages:
    # None: the function did not run in the window (or was renamed: the
    # pattern above then needs its new name).
    n = next((n for n, name in rows if re.search(pattern, name)), None)
    top.append({"stage": label, "instructions_per_delivery": None if n is None else round(n / deliveries)})
result = {
    "label": "instructions per delivery, one instance under callgrind: 40 rooms x 10 members over two instances, 1 sender/room at 2/s",
    "commit": commit,
    "deliveries": deliveries,
    "instructions": total,
    "instructions_per_delivery": round(total / deliveries),
    "stages": top,
}
json.dump(result, open(out, "w"), indent=2)
open(out, "a").write("\n")
print("bench: %d instructions per delivery (%d instructions, %d deliveries); by stage:" % (
    result["instructions_per_delivery"], total, deliveries))
for t in top:
    n = t["instructions_per_delivery"]
    print("  %8s  %s" % ("not seen" if n is None else n, t["stage"]))
PY
