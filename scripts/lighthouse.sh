#!/usr/bin/env bash
# `make lighthouse`: Lighthouse (default mobile settings, Debian's Chromium)
# against a release server as `make run` starts it (in-process engine), on a
# free port; prints the four category scores of the chat page and of a docs
# page, and writes the reports to target/lighthouse/.
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_BIN:?SERVER_BIN: path of the release server binary}
site_root=${SITE_ROOT:-$PWD/target/site}
lighthouse=${LIGHTHOUSE_DIR:-$HOME/.cache/chat/lighthouse-12.2.3}/node_modules/.bin/lighthouse
out=$PWD/target/lighthouse
mkdir -p "$out"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$server" --bind 127.0.0.1 --port "$port" --site-root "$site_root" --log warn &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

for page in "/" "/docs/operations"; do
  name=$([ "$page" = / ] && echo chat || echo docs)
  CHROME_PATH=${CHROMIUM_BIN:-/usr/bin/chromium} "$lighthouse" "http://127.0.0.1:$port$page" \
    --quiet --output=json --output=html --output-path="$out/$name" \
    --chrome-flags="--headless=new --no-sandbox --disable-gpu" >/dev/null
  python3 - "$out/$name.report.json" "$page" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
cats = report["categories"]
audits = report["audits"]
scores = " ".join(f"{c['title']} {round(c['score'] * 100)}" for c in cats.values())
print(f"lighthouse {sys.argv[2]}: {scores}")
for key in ["first-contentful-paint", "largest-contentful-paint", "total-blocking-time", "interactive", "total-byte-weight"]:
    if key in audits:
        print(f"  {audits[key]['title']}: {audits[key]['displayValue']}")
failing = [a["title"] for a in audits.values() if a.get("score") is not None and a["score"] < 1
           and a.get("scoreDisplayMode") in ("binary", "numeric")]
if failing:
    print("  not passing: " + "; ".join(failing[:12]))
PY
done
echo "lighthouse: reports in $out/chat.report.html and $out/docs.report.html"
