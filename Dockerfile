# syntax=docker/dockerfile:1
# The chat server with its web UI and docs. Build: docker build -t chat .
# Cargo's registry and the target directory are BuildKit cache mounts, so a
# rebuild after a source change recompiles the workspace, not every crate.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/ensure.sh wasm-target cargo-leptos wasm-bindgen wasm-opt \
 && cargo leptos build --release --precompress \
 && mkdir -p /out && cp target/release/server /out/server && cp -r target/site /out/site \
 && cp target/release/hash.txt /out/site/hash.txt

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/server /usr/local/bin/server
COPY --from=build /out/site /app/site
WORKDIR /app
# The default archive without Redis (sqlite:///app/data/chat.db): a volume
# the numeric user below can write.
RUN mkdir -p /app/data && chown 65532:65532 /app/data
VOLUME /app/data
ENV LEPTOS_SITE_ROOT=/app/site BIND=0.0.0.0 PORT=3000 DATA_DIR=/app/data
EXPOSE 3000
# A numeric user and group (no passwd entry needed), never root.
USER 65532:65532
# Ready: the engine takes writes (the load balancer should use /readyz too).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/readyz" || exit 1
CMD ["server"]
