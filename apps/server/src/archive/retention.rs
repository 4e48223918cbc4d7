//! `--archive-retention` applied: once at start and then every
//! [`EVERY`], each archived room loses the messages its rule
//! ([`Retention::for_room`]) no longer keeps.

use super::Archive;
use crate::config::{Keep, Retention};
use crate::metrics as m;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Time between two applications of the retention.
pub(crate) const EVERY: Duration = Duration::from_secs(3600);

/// Deletes what `retention` no longer keeps, as of `now_ms` (ms since the
/// Unix epoch). Returns how many messages were deleted.
pub(crate) async fn apply(
    archive: &Archive,
    retention: &Retention,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    if retention.is_unlimited() {
        return Ok(0);
    }
    let mut deleted = 0;
    for (room, last_offset) in archive.rooms().await? {
        deleted += match retention.for_room(&room) {
            Keep::Unlimited => 0,
            Keep::Messages(n) => {
                if last_offset <= n {
                    0
                } else {
                    archive.delete_upto(&room, last_offset - n).await?
                }
            }
            Keep::Days(days) => {
                let cutoff = now_ms.saturating_sub(i64::from(days) * 86_400_000);
                archive.delete_older(&room, cutoff).await?
            }
        };
    }
    Ok(deleted)
}

/// Applies the retention now and every [`EVERY`] until `shutdown`, as of
/// `now_ms` (ms since the Unix epoch: the engine's clock, passed in since
/// the archive does not depend on the engine).
pub(crate) async fn run(
    archive: Archive,
    retention: Retention,
    now_ms: fn() -> i64,
    shutdown: CancellationToken,
) {
    if retention.is_unlimited() {
        return;
    }
    loop {
        match apply(&archive, &retention, now_ms()).await {
            Ok(0) => {}
            Ok(deleted) => {
                metrics::counter!(m::ARCHIVE_EXPIRED).increment(deleted);
                tracing::info!(deleted, "archived messages past their retention deleted");
            }
            Err(e) => tracing::warn!(error = %e, "applying the archive retention failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
