#!/usr/bin/env bash
# `make cluster`: one machine, the whole picture. A redis-server on
# 127.0.0.1:6390 (its own data dir; never the 6379 one), two chat instances
# on 127.0.0.1:3001 and :3002 sharing it, and nginx on 127.0.0.1:3000 in
# front, rendered from deploy/nginx.conf.template (the same file
# docker-compose uses), and a PostgreSQL on 127.0.0.1:5433 (its data in
# target/cluster/postgres, kept between runs) that both instances archive
# into. Ctrl-C stops everything.
#
# `make cluster REDIS=cluster`: the same with a Redis Cluster instead of
# one Redis: 3 masters on 6390-6392 and a replica of each on 6393-6395
# (cluster bus on port + 10000), the instances given every node as a seed.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the server binary}
site_root=${SITE_ROOT:-$PWD/target/site}
work=$PWD/target/cluster
redis_port=${CLUSTER_REDIS_PORT:-6390}
mkdir -p "$work/redis" "$work/nginx/logs" "$work/nginx/tmp"

pids=()
stop() {
  trap - INT TERM EXIT
  echo "cluster: stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

if [ "${REDIS:-single}" = cluster ]; then
  . scripts/redis_cluster.sh
  rm -rf "$work/redis-cluster"
  redis_cluster_up "$work/redis-cluster" 1 $(seq "$redis_port" $((redis_port + 5)))
  redis_url=$cluster_urls
  redis_desc="Redis Cluster :$redis_port-:$((redis_port + 2)) (masters), :$((redis_port + 3))-:$((redis_port + 5)) (replicas)"
else
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
    --appendonly yes --save "" --logfile "$work/redis.log" &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis_url=redis://127.0.0.1:$redis_port
  redis_desc="redis :$redis_port"
fi

postgres_port=${CLUSTER_POSTGRES_PORT:-5433}
. scripts/postgres.sh
postgres_up "$work/postgres/data" "$postgres_port"
pids+=("$pg_pid")
database_url=postgres://chat@127.0.0.1:$postgres_port/postgres

secret=${SESSION_SECRET:-local-cluster-secret-change-me}
for i in 1 2; do
  name=server-$([ "$i" = 1 ] && echo a || echo b)
  "$server" --bind 127.0.0.1 --port "300$i" --instance-id "$name" \
    --redis-url "$redis_url" --database-url "$database_url" --session-secret "$secret" \
    --trusted-proxies 127.0.0.1 --site-root "$site_root" &
  pids+=($!)
done

LISTEN=127.0.0.1:3000 UPSTREAM_A=127.0.0.1:3001 UPSTREAM_B=127.0.0.1:3002 \
  envsubst '${LISTEN} ${UPSTREAM_A} ${UPSTREAM_B}' \
  < deploy/nginx.conf.template > "$work/nginx/chat.conf"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    include $work/nginx/chat.conf;
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)

echo "cluster: http://127.0.0.1:3000 (nginx) -> server-a :3001, server-b :3002; $redis_desc; postgres :$postgres_port"
wait -n "${pids[@]}"
