# The chat server with its web UI and docs. Build: docker build -t chat .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/ensure.sh wasm-target cargo-leptos wasm-bindgen wasm-opt \
 && cargo leptos build --release \
 && mkdir -p /out && cp target/release/server /out/server && cp -r target/site /out/site

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/server /usr/local/bin/server
COPY --from=build /out/site /app/site
WORKDIR /app
ENV LEPTOS_SITE_ROOT=/app/site BIND=0.0.0.0 PORT=3000
EXPOSE 3000
USER nobody
CMD ["server"]
