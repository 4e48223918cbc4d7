//! Writing the archive off the publish path: publishes queue their
//! message ([`ArchiveWriter::push`]) and one task writes what is queued in
//! batches — as many as are waiting when the last batch ends, up to
//! [`MAX_BATCH`] — so under load a batch grows and the database sees few
//! transactions, and when idle a message is written at once.
//!
//! A batch that fails is retried with backoff until it is written: the
//! archive never skips a message. Meanwhile the queue fills; once it holds
//! `capacity` messages, publishers wait (the hot store keeps every message
//! that is not archived yet, so it cannot grow without bound either).

use super::{Archive, Archived};
use crate::metrics as m;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Messages written in one transaction at most.
pub(crate) const MAX_BATCH: usize = 4_096;

/// Longest wait between two tries of a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Command {
    /// Archive the message, then raise `archived` to its offset.
    Write {
        item: Archived,
        archived: Arc<AtomicU64>,
    },
    /// Answer once everything queued before is written.
    Flush(oneshot::Sender<()>),
}

/// The queue into the archive. Cheap to clone.
#[derive(Clone)]
pub struct ArchiveWriter {
    tx: mpsc::Sender<Command>,
    archive: Archive,
}

impl ArchiveWriter {
    /// Starts the task that writes `archive`; it ends when every clone of
    /// the writer is dropped, after writing what was queued.
    pub fn start(archive: Archive, capacity: usize) -> ArchiveWriter {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_loop(archive.clone(), rx));
        ArchiveWriter { tx, archive }
    }

    /// The archive this writer writes, for reads.
    pub(crate) fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Queues `item`; once it is written, `archived` is raised to its
    /// offset (the hot store may then drop it). Waits while the queue is
    /// full. The message is lost only if the writer task is gone (the
    /// runtime is shutting down).
    pub async fn push(&self, item: Archived, archived: Arc<AtomicU64>) {
        metrics::gauge!(m::ARCHIVE_QUEUE).increment(1.0);
        if self
            .tx
            .send(Command::Write { item, archived })
            .await
            .is_err()
        {
            metrics::gauge!(m::ARCHIVE_QUEUE).decrement(1.0);
            tracing::error!("the archive writer has stopped: a message was not archived");
        }
    }

    /// Returns once every message queued before the call is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_loop(archive: Archive, mut rx: mpsc::Receiver<Command>) {
    let mut batch: Vec<Archived> = Vec::new();
    let mut marks: Vec<(Arc<AtomicU64>, u64)> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write { item, archived } => {
                    marks.push((archived, item.message.offset));
                    batch.push(item);
                }
                Command::Flush(done) => flushes.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        write_until_done(&archive, &batch).await;
        let written = batch.len();
        metrics::counter!(m::ARCHIVE_WRITTEN).increment(written as u64);
        metrics::gauge!(m::ARCHIVE_QUEUE).decrement(written as f64);
        for (archived, offset) in marks.drain(..) {
            archived.fetch_max(offset, Ordering::Release);
        }
        batch.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes `batch`, retrying with exponential backoff (capped at
/// [`MAX_BACKOFF`]) until the database takes it.
pub(crate) async fn write_until_done(archive: &Archive, batch: &[Archived]) {
    use backon::{BackoffBuilder, ExponentialBuilder};
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match archive.write(batch).await {
            Ok(()) => return,
            Err(e) => {
                metrics::counter!(m::ARCHIVE_ERRORS).increment(1);
                let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                tracing::warn!(error = %e, messages = batch.len(), ?wait, "archiving a batch failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
