//! A progress bar on stderr while a run goes (hidden when stderr is not a
//! terminal), showing elapsed time and live counters.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

/// Starts a bar of `seconds` length that shows each named counter.
pub(crate) fn start(seconds: u64, counters: Vec<(&'static str, Arc<AtomicU64>)>) -> Progress {
    let bar = ProgressBar::new(seconds);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos:>3}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticking = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let started = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            ticking.set_position(started.elapsed().as_secs());
            let msg: Vec<String> = counters
                .iter()
                .map(|(name, c)| format!("{name} {}", c.load(Ordering::Relaxed)))
                .collect();
            ticking.set_message(msg.join("  "));
        }
    });
    Progress { bar, ticker }
}

impl Progress {
    pub(crate) fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
