# Sourced by scripts/cluster.sh and scripts/instances.sh: a local Redis
# Cluster from Debian's redis-server (7.0: sharded pub/sub).
#
#   redis_cluster_up DIR REPLICAS PORT...
#
# starts one node per PORT (its cluster bus on PORT+10000) with its data in
# DIR/<port>, makes them a cluster with `redis-cli --cluster create`
# (REPLICAS replicas per master: the first ports become masters), waits
# until every node reports cluster_state:ok, and appends the nodes' pids to
# the caller's `pids` array. Sets `cluster_urls` (comma-separated seed
# URLs, for --redis-url) and `cluster_pids` (space-separated).
#
# Every node runs with cluster-require-full-coverage no: when a master
# fails, the other masters keep serving their slots until its replica is
# promoted (cluster-node-timeout later).

redis_cluster_up() {
  local dir=$1 replicas=$2
  shift 2
  local port addrs=() urls=()
  cluster_pids=""
  for port in "$@"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --save "" \
      --appendonly no --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 2000 --cluster-require-full-coverage no \
      --logfile "$dir/$port/redis.log" &
    pids+=($!)
    cluster_pids="$cluster_pids $!"
    addrs+=("127.0.0.1:$port")
    urls+=("redis://127.0.0.1:$port")
  done
  for port in "$@"; do
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes \
    > "$dir/create.log" 2>&1 || { cat "$dir/create.log"; return 1; }
  for port in "$@"; do
    for _ in $(seq 200); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
  done
  cluster_urls=$(IFS=,; echo "${urls[*]}")
}
