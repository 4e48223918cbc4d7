"""Turns the load generator's JSON lines into bench/results.json (what the
docs' benchmarks page renders) and bench/results.svg (a bar chart of
deliveries per second and p99 latency of the fan-out runs).

usage: bench_report.py RESULTS.jsonl OUT.json OUT.svg COMMIT CORES
"""
import datetime
import json
import sys
from xml.sax.saxutils import escape

src, out_json, out_svg, commit, cores = sys.argv[1:6]
runs = [json.loads(line) for line in open(src) if line.strip()]
doc = {
    "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": commit,
    "machine": {"cores": int(cores), "note": "client, two instances and redis-server on one machine"},
    "runs": runs,
}
with open(out_json, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")

fan = [r for r in runs if r.get("mode") == "fanout"]
sat = [r for r in runs if r.get("mode") == "saturation" and r.get("best_deliveries_per_s")]
bars = [(r["label"], r["deliveries_per_s"], r["latency_ms"]["p99"]) for r in fan]
bars += [(r["label"], r["best_deliveries_per_s"], r["best_latency_ms"]["p99"]) for r in sat]
width, row = 760, 54
height = 40 + row * max(len(bars), 1)
top_rate = max([b[1] for b in bars] + [1])
top_p99 = max([b[2] for b in bars] + [1])
parts = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
    f'font-family="system-ui, sans-serif" font-size="12">',
    f'<text x="8" y="18" font-weight="bold">Deliveries per second (blue) and p99 latency (orange), commit {escape(commit)}</text>',
]
for i, (label, rate, p99) in enumerate(bars):
    y = 36 + i * row
    w_rate = 520 * rate / top_rate
    w_p99 = 520 * p99 / top_p99
    parts.append(f'<text x="8" y="{y + 10}">{escape(label)}</text>')
    parts.append(f'<rect x="8" y="{y + 14}" width="{w_rate:.1f}" height="12" fill="#4f46e5"/>')
    parts.append(f'<text x="{w_rate + 14:.1f}" y="{y + 24}">{rate:,.0f}/s</text>')
    parts.append(f'<rect x="8" y="{y + 28}" width="{w_p99:.1f}" height="12" fill="#ea580c"/>')
    parts.append(f'<text x="{w_p99 + 14:.1f}" y="{y + 38}">p99 {p99:.1f} ms</text>')
parts.append("</svg>")
with open(out_svg, "w") as f:
    f.write("\n".join(parts) + "\n")
