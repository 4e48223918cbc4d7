//! Prometheus metrics: names as constants, labels of low cardinality only
//! (frame types, error codes, engine kinds; never a room or a user id).
//!
//! The recorder is process-wide (the `metrics` facade has one global
//! recorder), installed on first use; several servers in one test process
//! share it.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use protocol::frames::{CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES};
use std::sync::OnceLock;

/// Open WebSocket connections (gauge).
pub const CONNECTIONS: &str = "chat_connections";
/// Rooms with at least one local member (gauge).
pub const LOCAL_ROOMS: &str = "chat_local_rooms";
/// Frames received from clients, label `type` (counter).
pub const FRAMES_IN: &str = "chat_frames_in_total";
/// Frames written to clients, label `type` for direct replies; room fan-out
/// counts under `chat_messages_delivered_total` (counter).
pub const FRAMES_OUT: &str = "chat_frames_out_total";
/// Messages stored and published (counter).
pub const MESSAGES_PUBLISHED: &str = "chat_messages_published_total";
/// Message frames handed to local connections by the hub (counter).
pub const MESSAGES_DELIVERED: &str = "chat_messages_delivered_total";
/// Time from a `send` being accepted to the engine's publish answer, seconds.
pub const PUBLISH_SECONDS: &str = "chat_publish_duration_seconds";
/// Connections closed with 1013 because their outbox was full (counter).
pub const SLOW_CONSUMER_CLOSES: &str = "chat_slow_consumer_closes_total";
/// Error frames sent, label `code` (counter).
pub const REJECTED_FRAMES: &str = "chat_rejected_frames_total";
/// Engine operations that failed, label `engine` (counter).
pub const ENGINE_ERRORS: &str = "chat_engine_errors_total";
/// Catch-ups a message started: a gap in a room's offsets filled from
/// history by the hub, or an offset gone back (counter).
pub const GAP_FILLS: &str = "chat_gap_fills_total";
/// Rooms whose local members were reset (close 1013, re-join with
/// `recovered: false`) because the room's epoch changed, label `reason`:
/// `epoch` (another instance or the store announced it: also a loss the
/// publish script found), `diverged` (this instance found the loss on
/// pub/sub or on catch-up), `trimmed` (a
/// catch-up found the missing messages already trimmed) (counter).
pub const ROOM_RESETS: &str = "chat_room_resets_total";
/// Events dropped at the Redis pub/sub intake because the hub fell behind,
/// label `kind` (`message`: read again from the stream by the room's
/// catch-up; `typing`, `presence`: not stored, gone) (counter).
pub const INTAKE_DROPPED: &str = "chat_intake_dropped_total";
/// Joins that met an unavailable store and waited for it, label
/// `outcome`: `joined` (answered once it was back, or refused for another
/// reason), `refused_timeout` (`--join-wait-ms` ran out), `refused_full`
/// (`--join-waiters` were waiting already) (counter).
pub const JOIN_WAITS: &str = "chat_join_waits_total";
/// Frames refused `rate_limited`, labels `bucket` and `type` (counter).
pub const RATE_LIMITED: &str = "chat_rate_limited_total";
/// Presence frames sent to rooms' members after coalescing (counter).
pub const PRESENCE_FRAMES: &str = "chat_presence_frames_total";
/// WebSocket upgrades refused, label `reason` (counter).
pub const UPGRADES_REFUSED: &str = "chat_upgrades_refused_total";
/// TCP connections closed at accept, label `reason` (counter).
pub const HTTP_REFUSED: &str = "chat_http_refused_total";
/// Duration of the last presence refresh cycle, seconds (gauge); it must
/// stay well under a third of `--presence-ttl-ms`.
pub const PRESENCE_REFRESH_SECONDS: &str = "chat_presence_refresh_seconds";
/// Messages written to the archive (counter).
pub const ARCHIVE_WRITTEN: &str = "chat_archive_written_total";
/// Archive batches that failed and were retried (counter).
pub const ARCHIVE_ERRORS: &str = "chat_archive_errors_total";
/// Messages waiting to be archived (gauge).
pub const ARCHIVE_QUEUE: &str = "chat_archive_queue";
/// Rooms the Redis store had lost, restored from the archive (counter).
pub const ARCHIVE_RESTORED: &str = "chat_archive_restored_total";
/// Archived messages deleted by the retention (counter).
pub const ARCHIVE_EXPIRED: &str = "chat_archive_expired_total";

/// Every metric with what it measures, for the docs' operations page.
/// A new metric constant belongs in this list too.
pub const ALL: &[(&str, &str)] = &[
    (
        HTTP_REFUSED,
        "TCP connections closed as soon as they were accepted, label `reason`: `max_http_connections` (that many connections were being served as HTTP, not yet upgraded: `--max-http-connections`) (counter).",
    ),
    (CONNECTIONS, "Open WebSocket connections (gauge)."),
    (LOCAL_ROOMS, "Rooms with at least one local member (gauge)."),
    (FRAMES_IN, "Frames received from clients, label `type` (counter)."),
    (
        FRAMES_OUT,
        "Frames written to clients, label `type`, for direct replies; room fan-out counts under `chat_messages_delivered_total` (counter).",
    ),
    (MESSAGES_PUBLISHED, "Messages stored and published (counter)."),
    (
        MESSAGES_DELIVERED,
        "Message frames handed to local connections by the hub (counter).",
    ),
    (
        PUBLISH_SECONDS,
        "Time from a `send` being accepted to the engine's publish answer, in seconds (histogram).",
    ),
    (
        SLOW_CONSUMER_CLOSES,
        "Connections closed with 1013 because their outbox was full (counter).",
    ),
    (REJECTED_FRAMES, "Error frames sent, label `code` (counter)."),
    (ENGINE_ERRORS, "Engine operations that failed, label `engine` (counter)."),
    (
        GAP_FILLS,
        "Catch-ups a message started: a gap in a room's offsets filled from history by the hub, or an offset gone back (counter).",
    ),
    (
        ROOM_RESETS,
        "Rooms whose local members were reset (close 1013, re-join with `recovered: false`) because the room's epoch changed, label `reason`: `epoch` (announced by the store or another instance, also when the publish script found a loss), `diverged` (this instance found the store's loss on pub/sub or on catch-up), `trimmed` (a catch-up found the missing messages trimmed from the history) (counter).",
    ),
    (
        INTAKE_DROPPED,
        "Events dropped at the Redis pub/sub intake because the hub fell behind, label `kind`: `message` (read again from the stream by the room's catch-up, so nothing is lost), `typing`, `presence` (not stored: gone) (counter).",
    ),
    (
        JOIN_WAITS,
        "Joins that met an unavailable store and waited for it, label `outcome`: `joined` (answered once the store was back), `refused_timeout` (`--join-wait-ms` ran out), `refused_full` (`--join-waiters` joins were waiting already) (counter).",
    ),
    (
        RATE_LIMITED,
        "Frames refused `rate_limited`, label `bucket` (`connection`, `user`, `address`: which bucket lacked the frame's cost) and `type` (the frame) (counter).",
    ),
    (
        PRESENCE_FRAMES,
        "`presence` frames fanned out by the hub, each carrying every change of its room within `--presence-window-ms` (counter).",
    ),
    (
        UPGRADES_REFUSED,
        "WebSocket upgrades refused, label `reason` (`origin`; `per_ip`: `--max-conns-per-ip` open already; `connect_rate`: the address's bucket lacked the `connect` cost) (counter).",
    ),
    (
        ARCHIVE_WRITTEN,
        "Messages written to the archive (`--database-url`) (counter).",
    ),
    (
        ARCHIVE_ERRORS,
        "Archive batches that failed; each is retried with backoff until written, and publishers wait once `--archive-queue` messages are waiting; with Redis, also failed archiver cycles (retried) and stream entries that are not messages (skipped and logged) (counter).",
    ),
    (
        ARCHIVE_RESTORED,
        "Rooms with messages that the Redis store had lost (wiped, replaced, expired) and that took their epoch and offset back from the archive, with what this instance held of them that was not archived yet (counter).",
    ),
    (
        ARCHIVE_QUEUE,
        "Messages stored in the hot store and waiting to be archived (gauge).",
    ),
    (
        ARCHIVE_EXPIRED,
        "Archived messages deleted by `--archive-retention` (counter).",
    ),
    (
        PRESENCE_REFRESH_SECONDS,
        "Duration of the last presence refresh cycle, in seconds; it must stay well under a third of `--presence-ttl-ms` (gauge).",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once and returns the handle that renders
/// the text exposition format.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(PUBLISH_SECONDS.to_owned()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0,
                    ],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            describe(&recorder);
            let handle = recorder.handle();
            // Another recorder may exist in a test process; ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            process().describe();
            handle
        })
        .clone()
}

/// The metrics every frame and every published or delivered message
/// touches, as handles resolved once: the `counter!`/`histogram!` macros
/// build a metric's key and look it up in the recorder's registry on every
/// call, about 400–850 instructions each: four per message on the instance
/// publishing it, one on each instance delivering it (`make
/// bench-instructions`).
struct Hot {
    /// [`FRAMES_IN`] of each of [`CLIENT_FRAME_TYPES`], in its order.
    frames_in: [metrics::Counter; CLIENT_FRAME_TYPES.len()],
    /// [`FRAMES_OUT`] of each of [`SERVER_FRAME_TYPES`], in its order.
    frames_out: [metrics::Counter; SERVER_FRAME_TYPES.len()],
    published: metrics::Counter,
    publish_seconds: metrics::Histogram,
    delivered: metrics::Counter,
}

/// [`Hot`], resolved at the first use after [`install`]; `None` before it
/// (a handle taken then would stay a no-op for the process's life), and
/// the callers below go through the macros.
fn hot() -> Option<&'static Hot> {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HANDLE.get()?;
    Some(HOT.get_or_init(|| Hot {
        frames_in: CLIENT_FRAME_TYPES.map(|kind| metrics::counter!(FRAMES_IN, "type" => kind)),
        frames_out: SERVER_FRAME_TYPES.map(|kind| metrics::counter!(FRAMES_OUT, "type" => kind)),
        published: metrics::counter!(MESSAGES_PUBLISHED),
        publish_seconds: metrics::histogram!(PUBLISH_SECONDS),
        delivered: metrics::counter!(MESSAGES_DELIVERED),
    }))
}

/// The handle of `kind` among `handles`, resolved for the `kinds` in the
/// same order; `None` for a kind not among them (`invalid`).
fn of_kind<'a>(
    handles: &'a [metrics::Counter],
    kinds: &[&str],
    kind: &str,
) -> Option<&'a metrics::Counter> {
    kinds.iter().position(|k| *k == kind).map(|i| &handles[i])
}

/// Counts one frame of type `kind` read from a client ([`FRAMES_IN`]).
pub(crate) fn frame_in(kind: &'static str) {
    match hot().and_then(|h| of_kind(&h.frames_in, &CLIENT_FRAME_TYPES, kind)) {
        Some(counter) => counter.increment(1),
        None => metrics::counter!(FRAMES_IN, "type" => kind).increment(1),
    }
}

/// Counts one direct reply of type `kind` ([`FRAMES_OUT`]).
pub(crate) fn frame_out(kind: &'static str) {
    match hot().and_then(|h| of_kind(&h.frames_out, &SERVER_FRAME_TYPES, kind)) {
        Some(counter) => counter.increment(1),
        None => metrics::counter!(FRAMES_OUT, "type" => kind).increment(1),
    }
}

/// `n` deliveries of one room message to local members
/// ([`MESSAGES_DELIVERED`]).
pub(crate) fn delivered(n: u64) {
    match hot() {
        Some(hot) => hot.delivered.increment(n),
        None => metrics::counter!(MESSAGES_DELIVERED).increment(n),
    }
}

/// A publish the store answered after `seconds` ([`PUBLISH_SECONDS`]);
/// counted in [`MESSAGES_PUBLISHED`] unless it was a duplicate.
pub(crate) fn published(seconds: f64, duplicate: bool) {
    match hot() {
        Some(hot) => {
            hot.publish_seconds.record(seconds);
            if !duplicate {
                hot.published.increment(1);
            }
        }
        None => {
            metrics::histogram!(PUBLISH_SECONDS).record(seconds);
            if !duplicate {
                metrics::counter!(MESSAGES_PUBLISHED).increment(1);
            }
        }
    }
}

/// The process's own metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_threads`, `process_start_time_seconds`, …: what every
/// Prometheus client library exports), read from `/proc` by the
/// metrics-process crate.
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Reads the process's metrics now: called before each `/metrics` render.
pub fn collect_process() {
    process().collect();
}

/// What a metric of [`ALL`] is, from the last words of its description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The kind a description ends with (`(counter).`, `(gauge).`,
/// `(histogram).`) and the text before it.
fn kind_of(description: &str) -> Option<(Kind, &str)> {
    let (text, kind) = description.strip_suffix(").")?.rsplit_once(" (")?;
    let kind = match kind {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        "histogram" => Kind::Histogram,
        _ => return None,
    };
    Some((kind, text))
}

/// Gives every metric of [`ALL`] its `# HELP` line (the description,
/// without the docs' code marks) on `recorder` itself: the exposition
/// writes `# TYPE` for each series, and `# HELP` for described ones.
fn describe(recorder: &impl metrics::Recorder) {
    for (name, description) in ALL {
        let Some((kind, text)) = kind_of(description) else {
            continue;
        };
        let key = metrics::KeyName::from_const_str(name);
        let help = metrics::SharedString::from(text.replace('`', ""));
        match kind {
            Kind::Counter => recorder.describe_counter(key, None, help),
            Kind::Gauge => recorder.describe_gauge(key, None, help),
            Kind::Histogram => recorder.describe_histogram(key, None, help),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every description ends with its kind, which `describe` reads.
    #[test]
    fn every_description_names_its_kind() {
        for (name, description) in super::ALL {
            assert!(
                super::kind_of(description).is_some(),
                "{name}: {description}"
            );
        }
        assert_eq!(
            super::kind_of("Time, in seconds (histogram)."),
            Some((super::Kind::Histogram, "Time, in seconds"))
        );
        assert_eq!(super::kind_of("Open sockets (gauges)."), None);
    }

    /// `ALL` lists every metric name constant of this module.
    #[test]
    fn all_lists_every_metric() {
        let source = include_str!("metrics.rs");
        let names: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": &str = \"")?.1.strip_suffix("\";"))
            .collect();
        assert_eq!(names.len(), super::ALL.len(), "{names:?}");
        for name in names {
            assert!(super::ALL.iter().any(|(n, _)| *n == name), "{name}");
        }
    }
}
