//! The files under `deploy/` name only metrics the server exports.
//!
//! A Grafana panel or an autoscaler on a metric name that does not exist
//! fails silently: an empty graph, an HPA that never scales. So a metric
//! renamed in `server::metrics` (or a typo in a query) would blind the
//! operators without any error. These tests read the files as committed and
//! check every metric name in them against `server::metrics::ALL` and the
//! process metrics of the metrics-process crate.

use serde_json::Value;
use server::metrics;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What metrics-process exports beside `ALL` (the names every Prometheus
/// client library uses).
const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
];

/// A file under the repository's `deploy/` folder.
fn deploy_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel of a dashboard, the panels inside rows included.
fn panels<'a>(parent: &'a Value, out: &mut Vec<&'a Value>) {
    for panel in parent["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        panels(panel, out);
    }
}

/// The metric-like names in a PromQL expression: the identifiers that
/// start with `chat_` or `process_`.
fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("chat_") || word.starts_with("process_"))
}

/// The metric of `ALL` named `name`; a histogram only if `histogram`.
fn in_all(name: &str, histogram: bool) -> Option<&'static str> {
    metrics::ALL
        .iter()
        .find(|(n, description)| {
            *n == name && (!histogram || description.ends_with("(histogram)."))
        })
        .map(|(n, _)| *n)
}

/// The exported metric a series belongs to: the series' own name, or a
/// histogram's for its `_bucket`, `_sum` and `_count` series.
fn exported(series: &str) -> Option<&'static str> {
    if series.starts_with("process_") {
        return PROCESS_METRICS.iter().copied().find(|n| *n == series);
    }
    in_all(series, false).or_else(|| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| in_all(series.strip_suffix(suffix)?, true))
    })
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_server_exports() {
    let text = deploy_file("grafana/chat-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");

    let mut all_panels = Vec::new();
    panels(&dashboard, &mut all_panels);
    let graphs: Vec<&Value> = all_panels
        .into_iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(graphs.len() >= 10, "only {} panels", graphs.len());

    // Every panel's queries, and the variables' (the `instance` list).
    let mut queries = Vec::new();
    for panel in &graphs {
        let title = &panel["title"];
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str();
            queries.push(expr.unwrap_or_else(|| panic!("panel {title}: a target with no expr")));
            // The data source is chosen on import or by the variable, never
            // a uid of the Grafana it was drawn in.
            assert_eq!(
                target["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {title}"
            );
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(definition) = variable["definition"].as_str() {
            queries.push(definition);
        }
    }

    let mut used = BTreeSet::new();
    for expr in queries {
        for series in metric_names(expr) {
            let name = exported(series).unwrap_or_else(|| {
                panic!("{series} is not a metric the server exports (server::metrics::ALL or the process's), in: {expr}")
            });
            used.insert(name);
        }
    }
    // What an operator looks at first.
    for wanted in [
        metrics::CONNECTIONS,
        metrics::MESSAGES_DELIVERED,
        metrics::MESSAGES_PUBLISHED,
        metrics::PUBLISH_SECONDS,
        metrics::SLOW_CONSUMER_CLOSES,
        metrics::ENGINE_ERRORS,
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}");
    }
}

#[test]
fn the_autoscaler_scales_on_a_metric_the_server_exports() {
    let hpa = deploy_file("k8s/chat-hpa.yaml");
    // The metric names of the manifest (its comments aside): the only
    // `name:` values that start with `chat_`.
    let names: Vec<&str> = hpa
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.trim().strip_prefix("name: "))
        .filter(|name| name.starts_with("chat_"))
        .collect();
    assert_eq!(names, [metrics::CONNECTIONS]);
}

/// Every environment variable the Deployment sets is one the server reads
/// (a flag's `env`), or one the manifest itself uses in another value: a
/// misspelt or removed variable would be ignored without a word.
#[test]
fn the_deployment_sets_only_variables_the_server_reads() {
    use clap::CommandFactory as _;
    let command = server::config::Args::command();
    let known: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let manifest = deploy_file("k8s/chat-deployment.yaml");
    let set: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(set.len() >= 8, "the Deployment's env: {set:?}");
    for name in set {
        let used_inside = manifest.contains(&format!("$({name})"));
        assert!(
            known.contains(name) || used_inside,
            "the Deployment sets {name}, which no server flag reads (flags: {known:?})"
        );
    }
}
