//! The `server` binary: parses the config, installs tracing, binds, and
//! runs [`server::run`] until SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser;
use server::config::{Args, LogFormat};
use std::io::IsTerminal as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// jemalloc instead of glibc's malloc. The delivery path allocates and
/// frees small blocks on every message (frames, events, futures); glibc's
/// bins, with their `malloc_consolidate` sweeps, took about 5% of the
/// instances' CPU under issue 18's load (perf), 2,428 instructions per
/// delivery (callgrind); jemalloc takes 891, and an idle connection costs
/// the same (2.7 KiB). mimalloc was as fast but doubled the idle cost.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::install_crypto_provider();
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log).context("--log / RUST_LOG")?;
    let (log_format, otlp_endpoint) = (args.log_format, args.otlp_endpoint.clone());
    let config = args.validate()?;
    let logs = match log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // Traces take this server's own spans whatever the log level says.
    let (traces, provider) = match otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let (layer, provider) = server::telemetry::otlp(endpoint, &config.instance_id)
                .context("--otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT")?;
            let ours = Targets::new().with_target("server", LevelFilter::INFO);
            (Some(layer.with_filter(ours)), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let result = server::run(config, listener, shutdown).await;
    // What is still batched is sent before the process ends (the SDK's
    // batch thread; blocking, so off the runtime's workers).
    if let Some(provider) = provider {
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
    result
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}
