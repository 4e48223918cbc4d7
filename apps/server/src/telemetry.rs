//! OpenTelemetry traces over OTLP, when `--otlp-endpoint` is set: the
//! `tracing` spans of the server become OTLP spans (through
//! tracing-opentelemetry) sent in batches as OTLP/HTTP protobuf to
//! `<endpoint>/v1/traces`. The spans: `conn` (one WebSocket, its whole
//! life), `join` and `publish` (one frame each), and `deliver` (a message
//! arriving at an instance's hub). A published message carries its
//! `publish` span's W3C `traceparent` (in the engine's envelope, not on the
//! wire to clients), and every instance's `deliver` span is its child: one
//! trace shows a message from the sender's instance to every instance
//! that delivered it.
//!
//! Off (the default), none of these spans is made for `join`, `publish`
//! or `deliver`: one atomic load per frame.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether this process exports traces ([`otlp`] was called).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter for `endpoint` (an `http://` URL: the collector's base,
/// `/v1/traces` is appended) and the layer that feeds it, for `main`'s
/// subscriber. Spans name their service `chat-server` and their instance
/// `instance`. Keep the provider and call its `shutdown` before exiting:
/// it sends what is still batched.
///
/// # Errors
/// An endpoint that is not `http://…`, or an exporter that cannot be built.
pub fn otlp<S>(
    endpoint: &str,
    instance: &str,
) -> anyhow::Result<(
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>,
    SdkTracerProvider,
)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let base = endpoint.trim_end_matches('/');
    if !base.starts_with("http://") {
        anyhow::bail!(
            "--otlp-endpoint must be an http:// URL (an OpenTelemetry Collector or agent beside \
             the instance), got {endpoint}"
        );
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/traces"))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("chat-server")
                .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("chat-server"));
    ENABLED.store(true, Ordering::Relaxed);
    Ok((layer, provider))
}

/// The frames that get a span of their own.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FrameSpan {
    Join,
    Publish,
}

/// A `join` or `publish` span for one frame of room `room`, or none when
/// traces are off.
pub(crate) fn frame_span(kind: FrameSpan, room: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    // `info_span!` takes its name as a literal.
    match kind {
        FrameSpan::Join => tracing::info_span!("join", room),
        FrameSpan::Publish => tracing::info_span!("publish", room),
    }
}

/// The W3C `traceparent` of the current span, when traces are on.
pub(crate) fn traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// A `deliver` span of message `offset` of `room`, the child of the
/// publisher's span `traceparent`; none when traces are off or the message
/// carries no trace.
pub(crate) fn deliver_span(traceparent: Option<&str>, room: &str, offset: u64) -> tracing::Span {
    let Some(parent) = traceparent.filter(|_| enabled()) else {
        return tracing::Span::none();
    };
    let carrier = HashMap::from([("traceparent".to_owned(), parent.to_owned())]);
    let span = tracing::info_span!("deliver", room, offset);
    // A span the layer does not know (filtered out) cannot take a parent;
    // it is then not exported either.
    let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    span
}
