//! The benchmarks page. Figures come from `bench/results.json`, which
//! `make bench` writes (the runs as `tools/loadgen --json` prints them, plus
//! the commit and machine), never typed by hand.

use crate::pages::escape;
use leptos::prelude::*;
use serde_json::Value;

/// The committed results of the last `make bench`.
pub const RESULTS_JSON: &str = include_str!("../../../bench/results.json");

/// The drain's runs (`scripts/avalanche.sh`, the end of `make bench`): one
/// JSON line per run.
pub const AVALANCHE_JSON: &str = include_str!("../../../bench/avalanche.json");

/// Issue 18's runs (`scripts/bench_delivery.sh`, `make bench-delivery`):
/// `{"commit": ..., "runs": [...]}`.
pub const DELIVERY_JSON: &str = include_str!("../../../bench/delivery.json");

/// Issue 18's instruction count (`scripts/bench_instructions.sh`, `make
/// bench-instructions`): `{"commit", "deliveries", "instructions",
/// "instructions_per_delivery", "stages": [{"stage",
/// "instructions_per_delivery"}]}`.
pub const INSTRUCTIONS_JSON: &str = include_str!("../../../bench/instructions.json");

/// The section of [`INSTRUCTIONS_JSON`]: the count per delivery, and per
/// stage of a message's way through the instance.
fn instructions_section() -> impl IntoView {
    let v: Value = serde_json::from_str(INSTRUCTIONS_JSON).unwrap_or(Value::Null);
    let lead = format!(
        "At commit {}: {} instructions per delivered message ({} instructions over {} deliveries).",
        v["commit"].as_str().unwrap_or("?"),
        fmt(v["instructions_per_delivery"].as_f64()),
        fmt(v["instructions"].as_f64()),
        fmt(v["deliveries"].as_f64()),
    );
    let rows = v["stages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let stage = r["stage"].as_str().unwrap_or("?");
            // Indented in the file: a part of the stage above it.
            let stage = match stage.strip_prefix("  ") {
                Some(part) => format!("↳ {part}"),
                None => stage.to_owned(),
            };
            let per = fmt(r["instructions_per_delivery"].as_f64());
            view! { <tr><td>{stage}</td><td>{per}</td></tr> }
        })
        .collect_view();
    view! {
        <h2 id="instructions">"Instructions per delivery"</h2>
        <p>"From " <code>"make bench-instructions"</code> " (" <code>"bench/instructions.json"</code> "): one of two instances runs under valgrind's callgrind, which counts the instructions it executes rather than the seconds they take, so the figure is the same run after run however busy the machine is. 40 rooms x 10 members over the two instances, one sender per room at 2 messages a second; counted over 10 s once every member has joined, per message delivered to a member on that instance. The kernel's work (the writes themselves) is not counted: this is the part that is ours."</p>
        <p>{lead}</p>
        <table class="docs-table docs-bench">
            <thead><tr><th>"stage (its function, with what that calls; ↳: part of the one above)"</th><th>"instructions per delivery"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

/// The runs of [`DELIVERY_JSON`], in file order, and the commit measured.
pub fn delivery_runs() -> (Vec<BenchRun>, String) {
    let file: Value = serde_json::from_str(DELIVERY_JSON).unwrap_or(Value::Null);
    let runs = file["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|v| BenchRun {
                    label: v["label"].as_str().unwrap_or("unlabelled run").to_owned(),
                    mode: v["mode"].as_str().unwrap_or("").to_owned(),
                    fields: v.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    (runs, file["commit"].as_str().unwrap_or("?").to_owned())
}

/// The runs of [`AVALANCHE_JSON`], in file order.
fn avalanche_runs() -> Vec<BenchRun> {
    AVALANCHE_JSON
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| BenchRun {
            label: v["label"].as_str().unwrap_or("unlabelled run").to_owned(),
            mode: "avalanche".to_owned(),
            fields: v,
        })
        .collect()
}

/// One run of the load generator.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRun {
    pub label: String,
    /// `fanout` or `idle`.
    pub mode: String,
    pub fields: Value,
}

impl BenchRun {
    fn num(&self, key: &str) -> Option<f64> {
        self.fields.get(key).and_then(Value::as_f64)
    }

    fn latency(&self, key: &str) -> Option<f64> {
        self.fields
            .get("latency_ms")
            .and_then(|l| l.get(key))
            .and_then(Value::as_f64)
    }
}

/// The `generated`, `commit` and `machine` fields of the results file.
pub fn bench_meta() -> Value {
    let mut v: Value = serde_json::from_str(RESULTS_JSON).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("runs");
    }
    v
}

/// Every run of [`RESULTS_JSON`], in file order.
pub fn bench_runs() -> Vec<BenchRun> {
    let v: Value = serde_json::from_str(RESULTS_JSON).unwrap_or(Value::Null);
    v["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|v| BenchRun {
            label: v["label"].as_str().unwrap_or("unlabelled run").to_owned(),
            mode: v["mode"].as_str().unwrap_or("unknown").to_owned(),
            fields: v,
        })
        .collect()
}

/// A number for a table cell: integers without decimals, others with one
/// or (below 10) three.
fn fmt(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.abs() < 10.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// A horizontal bar chart: one bar per `(label, value)`, label above it.
fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    const WIDTH: f64 = 760.0;
    const BAR_MAX: f64 = 600.0;
    const ROW: f64 = 46.0;
    let max = bars.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let height = 30.0 + ROW * bars.len() as f64;
    let mut svg = format!(
        "<svg class=\"docs-chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\">\
         <text class=\"docs-chart-title\" x=\"0\" y=\"16\">{}</text>",
        escape(title),
        escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 30.0 + ROW * i as f64;
        let w = if max > 0.0 {
            value / max * BAR_MAX
        } else {
            0.0
        };
        svg.push_str(&format!(
            "<text class=\"docs-chart-label\" x=\"0\" y=\"{}\">{}</text>\
             <rect class=\"docs-chart-bar\" x=\"0\" y=\"{}\" width=\"{w:.1}\" height=\"18\" rx=\"3\"/>\
             <text class=\"docs-chart-value\" x=\"{:.1}\" y=\"{}\">{} {}</text>",
            y + 12.0,
            escape(label),
            y + 18.0,
            w + 6.0,
            y + 32.0,
            fmt(Some(*value)),
            escape(unit),
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[component]
pub(crate) fn Benchmarks() -> impl IntoView {
    let runs = bench_runs();
    let meta = bench_meta();
    let of =
        |mode: &str| -> Vec<BenchRun> { runs.iter().filter(|r| r.mode == mode).cloned().collect() };
    let (all_fanout, idle, saturation, churn) =
        (of("fanout"), of("idle"), of("saturation"), of("churn"));
    // The store comparison's runs carry `store`; the fan-out section shows
    // the others.
    let (stores, fanout): (Vec<BenchRun>, Vec<BenchRun>) = all_fanout
        .into_iter()
        .partition(|r| r.fields["store"].is_string());
    let per_delivery: Vec<BenchRun> = fanout
        .iter()
        .filter(|r| r.fields["kernel_floor_us_per_write"].is_number())
        .cloned()
        .collect();
    let (delivery, delivery_commit) = delivery_runs();
    let of_delivery = |mode: &str| -> Vec<BenchRun> {
        delivery
            .iter()
            .filter(|r| r.mode == mode)
            .cloned()
            .collect()
    };
    let (delivery_load, delivery_saturation, join_burst) = (
        of_delivery("fanout"),
        of_delivery("saturation"),
        of_delivery("joinburst"),
    );
    let measured = format!(
        "Measured at commit {} on {} ({} cores; {}).",
        meta["commit"].as_str().unwrap_or("?"),
        meta["generated"].as_str().unwrap_or("?"),
        meta["machine"]["cores"].as_u64().unwrap_or(0),
        meta["machine"]["note"].as_str().unwrap_or(""),
    );
    let rate_chart = bar_chart(
        "Deliveries per second",
        "/s",
        &fanout
            .iter()
            .map(|r| (r.label.clone(), r.num("deliveries_per_s").unwrap_or(0.0)))
            .collect::<Vec<_>>(),
    );
    let p99_chart = bar_chart(
        "p99 latency, send to delivery",
        "ms",
        &fanout
            .iter()
            .map(|r| (r.label.clone(), r.latency("p99").unwrap_or(0.0)))
            .collect::<Vec<_>>(),
    );
    view! {
        <p class="docs-lead">
            "Figures from " <code>"make bench"</code> ": a redis-server and two release instances "
            "on one machine, driven by " <code>"tools/loadgen"</code> ". The instances run with the "
            "rate limits raised (per connection, user and address), because synthetic senders go "
            "faster than a person and all come from one address. " <code>"make bench"</code> " writes " <code>"bench/results.json"</code>
            " (rendered here) and " <code>"bench/results.svg"</code> "; run it to reproduce them."
        </p>
        <p>{measured}</p>
        <h2 id="fanout">"Fan-out"</h2>
        <p>
            "Members of each room are spread over both instances; senders publish at a fixed "
            "rate. Latency is from the send to each delivery; lost, duplicated and out-of-order "
            "deliveries are counted against the expected set."
        </p>
        {runs_table(&fanout, &[
            ("sent", |r| fmt(r.num("sent"))),
            ("delivered", |r| fmt(r.num("delivered"))),
            ("deliveries/s", |r| fmt(r.num("deliveries_per_s"))),
            ("lost", |r| fmt(r.num("lost"))),
            ("dup.", |r| fmt(r.num("duplicates"))),
            ("out of order", |r| fmt(r.num("out_of_order"))),
            ("p50 ms", |r| fmt(r.latency("p50"))),
            ("p99 ms", |r| fmt(r.latency("p99"))),
            ("max ms", |r| fmt(r.latency("max"))),
        ])}
        <figure class="docs-figure"><div inner_html=rate_chart></div></figure>
        <figure class="docs-figure"><div inner_html=p99_chart></div></figure>
        <h2 id="per-delivery">"CPU per delivery against the kernel's floor"</h2>
        <p>"The instances' CPU (user + system, both processes) over the measured seconds of the 400 rooms x 10 members load, per delivered message, next to what the kernel alone costs per message in the same run: one unbatched 260-byte write to one of 4,000 loopback TCP sockets read by another process, 40,000 a second for 10 s (" <code>"bench/kernel_floor.c"</code> "). The ratio is what is ours to remove."</p>
        {runs_table(&per_delivery, &[
            FLOOR_COLUMNS.as_slice(),
            &[
                ("deliveries/s", |r| fmt(r.num("deliveries_per_s"))),
                ("p99 ms", |r| fmt(r.latency("p99"))),
                ("lost", |r| fmt(r.num("lost"))),
            ],
        ].concat())}
        <h2 id="cores">"One core and two; a join burst"</h2>
        <p>"From " <code>"make bench-delivery"</code> " (" <code>"bench/delivery.json"</code> ", commit " {delivery_commit} "): the same 400 rooms x 10 members load with the instances on both cores and pinned to one (" <code>"taskset -c 0"</code> ": one worker thread, so one hub shard, per instance), the highest load each sustains with p99 under 50 ms (100 rooms x 10 members, the rate doubling then bisecting), and 5,000 clients connecting and joining at once over the two instances (500 rooms). The load generator shares the machine's cores."</p>
        <p>"Each sender sends at its own phase of its 100 ms period, as independent users do, so the 40,000 deliveries a second arrive at a steady rate. The run marked \"every sender at the same instant\" sends all 400 rooms' messages together, a burst of 4,000 deliveries every 100 ms: its p99 is the time the two instances take to write a whole burst."</p>
        {runs_table(&delivery_load, &[
            FLOOR_COLUMNS.as_slice(),
            &[
                ("p99 ms", |r| fmt(r.latency("p99"))),
                ("lost", |r| fmt(r.num("lost"))),
                ("out of order", |r| fmt(r.num("out_of_order"))),
            ],
        ].concat())}
        {runs_table(&delivery_saturation, &[
            ("deliveries/s", |r| fmt(r.fields["best_deliveries_per_s"].as_f64())),
            ("rate per sender", |r| fmt(r.fields["best_rate_per_sender"].as_f64())),
            ("p99 ms", |r| fmt(r.fields["best_latency_ms"]["p99"].as_f64())),
            ("steps (msg/s per sender)", |r| saturation_steps(&r.fields["steps"])),
        ])}
        {runs_table(&join_burst, &[
            ("joined", |r| fmt(r.num("joined"))),
            ("failed", |r| fmt(r.num("failed"))),
            ("join p50 ms", |r| fmt(r.fields["join_ms"]["p50"].as_f64())),
            ("join p99 ms", |r| fmt(r.fields["join_ms"]["p99"].as_f64())),
            ("join max ms", |r| fmt(r.fields["join_ms"]["max"].as_f64())),
            ("connect to joined p99 ms", |r| fmt(r.fields["connect_to_joined_ms"]["p99"].as_f64())),
            ("all joined s", |r| fmt(r.num("all_joined_s"))),
        ])}
        {instructions_section()}
        <h2 id="stores">"One Redis or a Redis Cluster"</h2>
        <p>"The same load against one Redis and against a 3-master Redis Cluster (sharded pub/sub), in one run of " <code>"make bench"</code> ". Redis CPU is the user and system time of every redis-server process over the load's whole run, per delivered message: what the store costs, whatever the instances cost."</p>
        {runs_table(&stores, &[
            ("deliveries/s", |r| fmt(r.num("deliveries_per_s"))),
            ("lost", |r| fmt(r.num("lost"))),
            ("out of order", |r| fmt(r.num("out_of_order"))),
            ("p50 ms", |r| fmt(r.latency("p50"))),
            ("p99 ms", |r| fmt(r.latency("p99"))),
            ("Redis CPU s", |r| fmt(r.num("redis_cpu_s"))),
            ("Redis CPU per delivery, microseconds", |r| fmt(r.num("redis_cpu_us_per_delivery"))),
        ])}
        <h2 id="idle">"Idle connections"</h2>
        <p>"Connections that joined a room and wait: the memory each costs the instances (growth of their resident set size)."</p>
        {runs_table(&idle, &[
            ("connections", |r| fmt(r.num("connections"))),
            ("rooms", |r| fmt(r.num("rooms"))),
            ("RSS before KiB", |r| fmt(r.num("rss_before_kib"))),
            ("RSS after KiB", |r| fmt(r.num("rss_after_kib"))),
            ("bytes per connection", |r| fmt(r.num("bytes_per_connection"))),
        ])}
        <h2 id="saturation">"Saturation"</h2>
        <p>"The per-sender rate doubles step by step (fresh rooms each step), then bisects between the last rate that passed and the first that failed; the best step is the highest with zero loss, duplicates and reordering and p99 under the bound. Steps that failed are marked ✗."</p>
        {runs_table(&saturation, &[
            ("best rate per sender", |r| fmt(r.fields["best_rate_per_sender"].as_f64())),
            ("deliveries/s", |r| fmt(r.fields["best_deliveries_per_s"].as_f64())),
            ("p99 ms", |r| fmt(r.fields["best_latency_ms"]["p99"].as_f64())),
            ("steps (msg/s per sender)", |r| saturation_steps(&r.fields["steps"])),
        ])}
        <h2 id="churn">"Churn"</h2>
        <p>"Every receiver is force-closed and reconnects (to the next instance) with its token and since, while senders keep sending: what recovery by offset promises."</p>
        {runs_table(&churn, &[
            ("expected", |r| fmt(r.num("expected_deliveries"))),
            ("delivered %", |r| fmt(r.num("delivered_pct"))),
            ("duplicates", |r| fmt(r.num("duplicates"))),
            ("reconnects", |r| fmt(r.num("reconnects"))),
            ("replay p50 ms", |r| fmt(r.fields["replay_ms"]["p50"].as_f64())),
            ("replay p99 ms", |r| fmt(r.fields["replay_ms"]["p99"].as_f64())),
        ])}
        <h2 id="avalanche">"Drain: a reconnect avalanche and its spread"</h2>
        <p>"5,000 clients on one of two instances, one sender per room on the other at 1 message/s; the first gets SIGTERM and its clients move to the second, all told at once (drain window 0) or spread over a 10 s window. Delivered % counts every message sent during the whole run at every receiver; the replay is a reconnect up to its joined; the survivor's CPU is sampled every 0.5 s (the load generator shares the machine's cores). From " <code>"make bench-avalanche"</code> " (" <code>"bench/avalanche.json"</code> ")."</p>
        {runs_table(&avalanche_runs(), &[
            ("drain window ms", |r| fmt(r.num("drain_window_ms"))),
            ("all back s", |r| fmt(r.num("all_back_s"))),
            ("delivered %", |r| fmt(r.num("delivered_pct"))),
            ("duplicates", |r| fmt(r.num("duplicates"))),
            ("replay p99 ms", |r| fmt(r.fields["replay_ms"]["p99"].as_f64())),
            ("survivor CPU peak %", |r| fmt(r.fields["survivor_cpu_pct"]["peak"].as_f64())),
        ])}
    }
}

/// A cell of a runs table, from one run.
type Cell = fn(&BenchRun) -> String;

/// The columns of a run measured against the kernel's floor: our CPU per
/// delivery, the floor per write in the same run, their ratio.
const FLOOR_COLUMNS: [(&str, Cell); 3] = [
    ("server CPU µs/delivery", |r| {
        fmt(r.fields["server_cpu"]["us_per_delivery"].as_f64())
    }),
    ("kernel floor µs/write", |r| {
        fmt(r.num("kernel_floor_us_per_write"))
    }),
    ("ratio", |r| fmt(r.num("cpu_ratio_to_floor"))),
];

/// A table of runs: the run's label, then one column per `(heading, cell)`.
fn runs_table(runs: &[BenchRun], columns: &[(&'static str, Cell)]) -> impl IntoView {
    let headings = columns
        .iter()
        .map(|(heading, _)| view! { <th>{*heading}</th> })
        .collect_view();
    let rows = runs
        .iter()
        .map(|r| {
            let cells = columns
                .iter()
                .map(|(_, cell)| view! { <td>{cell(r)}</td> })
                .collect_view();
            view! { <tr><td>{r.label.clone()}</td>{cells}</tr> }
        })
        .collect_view();
    view! {
        <table class="docs-table docs-bench">
            <thead><tr><th>"run"</th>{headings}</tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

/// The rates a saturation run tried, in order, failed ones marked.
fn saturation_steps(steps: &Value) -> String {
    steps
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let mark = if s["passed"] == true { "" } else { " ✗" };
                    format!("{}{mark}", fmt(s["rate"].as_f64()))
                })
                .collect::<Vec<_>>()
                .join(" → ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_steps_read_in_order_with_failures_marked() {
        let steps = serde_json::json!([
            {"rate": 5.0, "passed": true}, {"rate": 10.0, "passed": true},
            {"rate": 20.0, "passed": false}, {"rate": 15.0, "passed": true},
        ]);
        assert_eq!(saturation_steps(&steps), "5 → 10 → 20 ✗ → 15");
        assert_eq!(saturation_steps(&Value::Null), "");
    }
}
