# The two commands a person types are `make run` and `make test`; every
# target installs what it needs first (scripts/ensure.sh) and skips that when
# it is present.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# CI keeps the target dir outside the clone (see .ci/run); by hand it is ./target.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TERM_COLOR ?= auto
ENSURE := scripts/ensure.sh
SITE_ROOT := $(CURDIR)/target/site
SERVER := $(CARGO_TARGET_DIR)/release/server
# Where scripts/ensure.sh keeps the Kubernetes manifest validator (a venv).
export KUBERNETES_VALIDATE_DIR ?= $(HOME)/.cache/chat/kubernetes-validate
# Kubernetes' own resources; kustomization.yaml is kustomize's, not the API's.
K8S_DIR ?= deploy/k8s
K8S_MANIFESTS = $(filter-out $(K8S_DIR)/kustomization.yaml,$(sort $(wildcard $(K8S_DIR)/*.yaml)))

.PHONY: help run dev build build-release test unit lint fmt fmt-check wasm-check compose-check k8s-check e2e bench bench-delivery bench-instructions profile-delivery bench-avalanche bench-archive wasm-size chaos hostile lighthouse cluster clean

help:
	@echo "make run      build (release) and serve the chat on http://127.0.0.1:3000, in-process engine"
	@echo "make test     everything CI checks: format, clippy, wasm builds, unit + integration tests, compose file, k8s manifests, browser tests"
	@echo "make e2e      browser tests: headless Chromium against redis + two instances + nginx"
	@echo "make dev      cargo leptos watch: the full stack with live reload"
	@echo "make build    build every app (server, web → WASM, docs) in release mode"
	@echo "make cluster  redis-server + two instances (:3001, :3002) behind nginx on :3000"
	@echo "              (make cluster REDIS=cluster: a 3-master + 3-replica Redis Cluster instead)"
	@echo "make bench    load generator against redis + two release instances"
	@echo "make bench-delivery  CPU per delivery vs the kernel's floor, 1 core and 2, saturation, a join burst"
	@echo "make bench-instructions  instructions per delivery of one instance (callgrind; repeatable)"
	@echo "make profile-delivery  perf's syscall and context-switch counts of both instances under the per-delivery load"
	@echo "make bench-avalanche  5,000 clients leave a stopped instance, with and without a drain window"
	@echo "make chaos    each Redis fault injected for real under load; prints a table"
	@echo "make bench-archive  messages/s into the archive (PostgreSQL, SQLite); delivery p99 with and without it"
	@echo "make wasm-size  what the web app's WebAssembly is made of, per crate"
	@echo "make lighthouse  Lighthouse scores of the chat page and a docs page (release)"
	@echo "make k8s-check  deploy/k8s/ manifests against the Kubernetes API schemas (offline, strict)"
	@echo "make lint     clippy with warnings denied;  make fmt: format the code"
	@echo "make clean    remove build outputs"

## run: a working chat on 127.0.0.1:3000 with no Redis.
run: build-release
	$(SERVER) --bind 127.0.0.1 --port 3000 --site-root $(SITE_ROOT)

## dev: the full stack, rebuilt and reloaded on every change.
dev:
	$(ENSURE) wasm-target cargo-leptos wasm-bindgen
	cargo leptos watch

## build: every app. The docs are pages of the server binary (apps/docs).
build: build-release

build-release:
	$(ENSURE) wasm-target cargo-leptos wasm-bindgen wasm-opt
	cargo leptos build --release --precompress

## cluster: redis-server + two instances (:3001, :3002) behind nginx on :3000.
## REDIS=cluster: a local Redis Cluster (3 masters + 3 replicas) instead.
cluster: build-release
	$(ENSURE) redis-server nginx envsubst
	SERVER_BIN=$(SERVER) SITE_ROOT=$(SITE_ROOT) scripts/cluster.sh

## bench: redis + two release instances under the load generator; prints figures.
bench: build-release
	$(ENSURE) redis-server
	cargo build --release -p loadgen
	SERVER_BIN=$(SERVER) LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/bench.sh

## bench-delivery: issue 18's figures: our CPU per delivery against the
## kernel's cost of one socket write (400 rooms x 10 members, 40,000
## deliveries/s), on both cores and pinned to one; the highest rate with
## p99 < 50 ms on each; a 5,000-client join burst. Writes
## bench/delivery.json.
bench-delivery: build-release
	$(ENSURE) redis-server
	cargo build --release -p loadgen
	SERVER_BIN=$(SERVER) LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/bench_delivery.sh

## bench-instructions: instructions one instance executes per delivered
## message (valgrind's callgrind: repeatable on a noisy machine), with the
## functions that take the most. Writes bench/instructions.json.
bench-instructions: build-release
	$(ENSURE) redis-server valgrind
	cargo build --release -p loadgen
	SERVER_BIN=$(SERVER) LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/bench_instructions.sh

## profile-delivery: perf's counters of both instances under the
## per-delivery load: syscalls by kind, context switches, futex and
## epoll_wait calls, with the run's CPU per delivery against the floor.
profile-delivery: build-release
	$(ENSURE) redis-server perf
	cargo build --release -p loadgen
	SERVER_BIN=$(SERVER) LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/profile_delivery.sh

## bench-avalanche: the drain (issue 16): 5,000 clients on one of two
## instances, which gets SIGTERM under a steady load, without and with a
## drain window; time until all are back on the other, delivered %,
## replay p99, the survivor's peak CPU. Also the end of `make bench`.
bench-avalanche: build-release
	$(ENSURE) redis-server
	cargo build --release -p loadgen
	SERVER_BIN=$(SERVER) LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/avalanche.sh

## lighthouse: Lighthouse's four scores for the chat page and a docs page,
## against a release server as `make run` starts it.
lighthouse: build-release
	$(ENSURE) lighthouse chromium
	SERVER_BIN=$(SERVER) SITE_ROOT=$(SITE_ROOT) scripts/lighthouse.sh

## wasm-size: code bytes per crate of the web app's WebAssembly (issue 13),
## from the named wasm `make build` leaves before wasm-bindgen/wasm-opt.
wasm-size: build-release
	python3 scripts/wasm_size.py $(CARGO_TARGET_DIR)/front/wasm32-unknown-unknown/wasm-release/web.wasm

## bench-archive: messages/s through the archive writer into a PostgreSQL
## the script starts itself, and into a SQLite file; delivery p99 with and
## without the archive; the Redis archiver's messages/s (issue 14).
bench-archive:
	$(ENSURE) postgresql redis-server
	cargo build --release -p server --bin server --example archive_bench
	cargo build --release -p loadgen
	ARCHIVE_BENCH_BIN=$(CARGO_TARGET_DIR)/release/examples/archive_bench SERVER_BIN=$(SERVER) \
	  LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/archive_bench.sh

## chaos: each Redis fault (restart, restore from an older backup, failover,
## silent drop, LOADING, pub/sub kill) injected for real under a steady load
## against two release instances behind a TCP proxy; prints a table and
## writes bench/chaos.md. Not part of `make test`: it needs the release
## build and about 5 minutes.
chaos: build-release
	$(ENSURE) redis-server
	cargo build --release -p loadgen
	SERVER_BIN=$(SERVER) LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/chaos.sh

## hostile: 1,000 honest users over two release instances while one
## address runs each abuse pattern in turn (issue 17); prints honest
## delivered % and p99 with and without the attacker and the instances'
## memory after each of two rounds; writes bench/hostile.json. About 4
## minutes; not in `make test`.
hostile: build-release
	$(ENSURE) redis-server
	cargo build --release -p loadgen
	SERVER_BIN=$(SERVER) LOADGEN_BIN=$(CARGO_TARGET_DIR)/release/loadgen scripts/hostile.sh

## test: what CI runs.
test: fmt-check lint wasm-check unit e2e compose-check k8s-check

fmt-check:
	cargo fmt --all -- --check

## lint: clippy with warnings denied, and no module importing one that
## imports it back (scripts/module_cycles.py).
lint:
	$(ENSURE) wasm-target
	python3 scripts/module_cycles.py apps/server/src apps/web/src apps/docs/src \
	  packages/protocol/src packages/ui/src tools/loadgen/src
	cargo clippy --workspace --all-targets -- -D warnings

wasm-check:
	$(ENSURE) wasm-target
	cargo check -p protocol --target wasm32-unknown-unknown
	cargo check -p web --target wasm32-unknown-unknown --no-default-features --features hydrate

unit:
	$(ENSURE) nextest redis-server faketime redis5 postgresql
	cargo nextest run --workspace --no-fail-fast

## e2e: browser tests (e2e/). A dev build of the site; the tests start
## redis-server, two instances and nginx on free ports, and drive Debian's
## Chromium with npm playwright-core. Screenshots land in target/e2e/.
e2e:
	$(ENSURE) wasm-target cargo-leptos wasm-bindgen chromium redis-server nginx envsubst npm-deps
	cargo leptos build
	SERVER_BIN=$(CARGO_TARGET_DIR)/debug/server SITE_ROOT=$(SITE_ROOT) \
	  node --test --test-concurrency=1 e2e/*.test.mjs

## compose-check: the compose file is valid with SESSION_SECRET set, and
## refuses to render without it (no public default secret).
compose-check:
	$(ENSURE) docker-compose
	SESSION_SECRET=compose-check-0123456789abcdef docker-compose -f docker-compose.yml config -q
	@if env -u SESSION_SECRET docker-compose -f docker-compose.yml config -q 2>/dev/null; then \
	  echo "docker-compose.yml renders without SESSION_SECRET: it must require it"; exit 1; \
	else echo "docker-compose.yml: valid, and requires SESSION_SECRET"; fi
	@echo "docker-compose.yml: valid"

## k8s-check: every manifest in deploy/k8s/ against the Kubernetes API's
## JSON schemas of 1.30 and 1.37 (kubernetes-validate, which carries them:
## no network), strictly: a misspelt or misplaced field fails, and so does
## a kind or apiVersion it has no schema for (a typo, a removed API), which
## the tool itself only warns about. kustomization.yaml lists them all.
## K8S_DIR=<dir> checks another folder (a broken copy proves it fails).
k8s-check:
	$(ENSURE) kubernetes-validate
	@out=$$("$(KUBERNETES_VALIDATE_DIR)/bin/kubernetes-validate" --strict --quiet \
	  -k 1.30 -k 1.37 $(K8S_MANIFESTS) 2>&1) && [ -z "$$out" ] || { \
	  printf '%s\n' "$$out"; echo "k8s-check: $(K8S_DIR) is not valid (above)"; exit 1; }
	@listed=$$("$(KUBERNETES_VALIDATE_DIR)/bin/python" -c 'import sys, yaml; \
	  print(" ".join(sorted(yaml.safe_load(open(sys.argv[1]))["resources"])))' $(K8S_DIR)/kustomization.yaml); \
	present="$(sort $(notdir $(K8S_MANIFESTS)))"; \
	[ "$$listed" = "$$present" ] || { \
	  echo "k8s-check: $(K8S_DIR)/kustomization.yaml lists [$$listed], the folder has [$$present]"; exit 1; }
	@echo "$(K8S_DIR): $(words $(K8S_MANIFESTS)) manifests valid for Kubernetes 1.30 and 1.37 (strict), all in kustomization.yaml"

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf target/site
