//! The archive: every message of every room kept in a database behind the
//! engine (issue 14) — SQLite for one process (the default of `make run`),
//! PostgreSQL for a cluster — through sqlx, with one schema
//! (`apps/server/migrations`, embedded, migrated at start).
//!
//! The engine stays the hot store: members get messages from it as they
//! did without an archive, and the archive is written off that path, in
//! batches ([`writer::ArchiveWriter`]). Reads fall through: what the hot
//! store no longer holds (past its cap, or after a restart) is read here,
//! and a room the hot store does not know takes its epoch and offset from
//! here ([`Archive::position`]), so offsets continue.
//!
//! One lineage per room: a row is keyed by (room, offset); the same offset
//! under another epoch (the hot store lost messages and the room went on
//! under a new epoch) replaces it, so scroll-back shows the history the
//! room's members see now. Writing the same (room, epoch, offset) again
//! changes nothing: a batch retried after a failure is harmless.

pub(crate) mod retention;
pub mod writer;

use protocol::{ChatMessage, RoomName, User};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The schema, embedded at build time: `apps/server/migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows per INSERT statement: 9 values each stays under SQLite's 32,766
/// bound variables and PostgreSQL's 65,535.
const ROWS_PER_STATEMENT: usize = 1_000;

/// A database that keeps every message. Cheap to clone (a pool).
#[derive(Clone, Debug)]
pub enum Archive {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One message to archive, with the room and the epoch it was stored in.
#[derive(Debug, Clone)]
pub struct Archived {
    pub room: RoomName,
    pub epoch: Arc<str>,
    pub message: ChatMessage,
}

/// The same code over either pool: `$body` is compiled once per database
/// with `$pool` bound to its pool.
macro_rules! on_pool {
    ($archive:expr, $pool:ident => $body:expr) => {
        match $archive {
            Archive::Sqlite($pool) => $body,
            Archive::Postgres($pool) => $body,
        }
    };
}

/// An offset as the database stores it (BIGINT). Offsets never reach
/// 2^63; a bound past it (`u64::MAX`: "no upper bound") saturates.
fn sql_offset(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

const COLUMNS: &str = "room, msg_offset, epoch, id, client_id, user_id, user_name, body, ts";

impl Archive {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// `sqlite://<path>` (the file and its directory are created when
    /// missing; WAL journal) or `postgres://…` / `postgresql://…` (TLS as
    /// the URL's `sslmode` says). Errors: an unknown scheme, a database
    /// that cannot be reached or created, a failed migration.
    pub async fn connect(url: &str) -> anyhow::Result<Archive> {
        use anyhow::Context as _;
        let archive = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("creating the directory of the archive {}", dir.display())
                    })?;
                }
            }
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("parsing the database URL {url:?}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL makes NORMAL durable against a process crash; a
                // power loss may lose the last batches.
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .with_context(|| format!("opening the archive {path}"))?;
            Archive::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .context("connecting to the PostgreSQL archive")?;
            Archive::Postgres(pool)
        } else {
            anyhow::bail!(
                "--database-url must be sqlite://<path>, postgres://… or none, not {:?}",
                url.split("://").next().unwrap_or(url)
            );
        };
        on_pool!(&archive, pool => MIGRATOR.run(pool).await)
            .context("migrating the archive's schema")?;
        Ok(archive)
    }

    /// `sqlite` or `postgres`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Archive::Sqlite(_) => "sqlite",
            Archive::Postgres(_) => "postgres",
        }
    }

    /// Writes `batch` in one transaction, and moves each room's position
    /// to the last of its messages in the batch. Idempotent: a message
    /// already archived under the same epoch is left as it is.
    pub async fn write(&self, batch: &[Archived]) -> Result<(), sqlx::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        // One row per (room, offset), the last written winning: a
        // statement may not touch the same row twice (PostgreSQL refuses).
        let mut rows: HashMap<(&str, u64), &Archived> = HashMap::with_capacity(batch.len());
        let mut rooms: HashMap<&str, (&str, i64)> = HashMap::new();
        for a in batch {
            rows.insert((a.room.as_str(), a.message.offset), a);
            // A room's messages come in the order it stored them.
            rooms.insert(a.room.as_str(), (&a.epoch, sql_offset(a.message.offset)));
        }
        let mut rows: Vec<&Archived> = rows.into_values().collect();
        rows.sort_by(|a, b| {
            (a.room.as_str(), a.message.offset).cmp(&(b.room.as_str(), b.message.offset))
        });
        let rooms: Vec<(&str, (&str, i64))> = rooms.into_iter().collect();
        match self {
            Archive::Postgres(pool) => write_postgres(pool, &rows, &rooms).await,
            Archive::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let mut insert =
                        QueryBuilder::new(format!("INSERT INTO chat_messages ({COLUMNS}) "));
                    insert.push_values(chunk, |mut row, a| {
                        let m = &a.message;
                        row.push_bind(a.room.as_str())
                            .push_bind(sql_offset(m.offset))
                            .push_bind(&*a.epoch)
                            .push_bind(m.id.as_str())
                            .push_bind(m.client_id.as_str())
                            .push_bind(m.from.id.as_str())
                            .push_bind(m.from.name.as_str())
                            .push_bind(m.body.as_str())
                            .push_bind(m.ts);
                    });
                    insert.push(
                        " ON CONFLICT (room, msg_offset) DO UPDATE SET epoch = excluded.epoch, \
                     id = excluded.id, client_id = excluded.client_id, user_id = excluded.user_id, \
                     user_name = excluded.user_name, body = excluded.body, ts = excluded.ts \
                     WHERE chat_messages.epoch <> excluded.epoch",
                    );
                    insert.build().execute(&mut *tx).await?;
                }
                for chunk in rooms.chunks(ROWS_PER_STATEMENT) {
                    let mut upsert =
                        QueryBuilder::new("INSERT INTO chat_rooms (room, epoch, last_offset) ");
                    upsert.push_values(chunk, |mut row, (room, (epoch, offset))| {
                        row.push_bind(*room).push_bind(*epoch).push_bind(*offset);
                    });
                    upsert.push(
                        " ON CONFLICT (room) DO UPDATE SET epoch = excluded.epoch, \
                     last_offset = excluded.last_offset \
                     WHERE chat_rooms.epoch <> excluded.epoch \
                     OR chat_rooms.last_offset < excluded.last_offset",
                    );
                    upsert.build().execute(&mut *tx).await?;
                }
                tx.commit().await
            }
        }
    }

    /// The room's epoch and highest archived offset; `None` for a room
    /// never archived.
    pub(crate) async fn position(
        &self,
        room: &RoomName,
    ) -> Result<Option<(Arc<str>, u64)>, sqlx::Error> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT epoch, last_offset FROM chat_rooms WHERE room = $1")
                .bind(room.as_str())
                .fetch_optional(pool)
                .await?;
            row.map(|row| {
                Ok((
                    Arc::from(row.try_get::<String, _>("epoch")?),
                    u64::try_from(row.try_get::<i64, _>("last_offset")?).unwrap_or(0),
                ))
            })
            .transpose()
        })
    }

    /// Archived messages with `after < offset <= upto`, ascending.
    pub(crate) async fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        on_pool!(self, pool => {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM chat_messages \
                 WHERE room = $1 AND msg_offset > $2 AND msg_offset <= $3 ORDER BY msg_offset"
            ))
            .bind(room.as_str())
            .bind(sql_offset(after))
            .bind(sql_offset(upto))
            .fetch_all(pool)
            .await?;
            rows.iter().map(message_of).collect()
        })
    }

    /// The newest `limit` archived messages with `offset < before`,
    /// ascending.
    pub(crate) async fn before(
        &self,
        room: &RoomName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(self, pool => {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM chat_messages \
                 WHERE room = $1 AND msg_offset < $2 ORDER BY msg_offset DESC LIMIT $3"
            ))
            .bind(room.as_str())
            .bind(sql_offset(before))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut messages = rows.iter().map(message_of).collect::<Result<Vec<_>, _>>()?;
            messages.reverse();
            Ok(messages)
        })
    }

    /// Every archived room with its highest offset, for retention.
    pub(crate) async fn rooms(&self) -> Result<Vec<(String, u64)>, sqlx::Error> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT room, last_offset FROM chat_rooms ORDER BY room")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok((
                        row.try_get::<String, _>("room")?,
                        u64::try_from(row.try_get::<i64, _>("last_offset")?).unwrap_or(0),
                    ))
                })
                .collect()
        })
    }

    /// Deletes the room's messages with `offset <= upto`. Returns how many.
    pub(crate) async fn delete_upto(&self, room: &str, upto: u64) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            let done = sqlx::query("DELETE FROM chat_messages WHERE room = $1 AND msg_offset <= $2")
                .bind(room)
                .bind(sql_offset(upto))
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    /// Deletes the room's oldest messages, in offset order, up to the
    /// first one stamped at or after `cutoff_ms` (ms since the Unix epoch),
    /// which is kept with everything after it (a message stamped early by
    /// a skewed clock keeps its successors a little longer). Reads the
    /// primary key's order from the oldest: costs what it deletes. Returns
    /// how many.
    pub(crate) async fn delete_older(
        &self,
        room: &str,
        cutoff_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let first_kept: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT msg_offset FROM chat_messages WHERE room = $1 AND ts >= $2 \
                 ORDER BY msg_offset LIMIT 1",
            )
            .bind(room)
            .bind(cutoff_ms)
            .fetch_optional(pool)
            .await?
        });
        let upto = match first_kept {
            Some(offset) => u64::try_from(offset - 1).unwrap_or(0),
            None => u64::MAX,
        };
        self.delete_upto(room, upto).await
    }
}

/// [`Archive::write`] on PostgreSQL: each table's rows in one statement
/// of one array per column (`UNNEST`), so a batch costs two statements
/// whatever its size; rows as multi-row VALUES would bind nine parameters
/// each (31,557 messages/s in `make bench-archive` against 54,583 for
/// SQLite, before this).
async fn write_postgres(
    pool: &PgPool,
    rows: &[&Archived],
    rooms: &[(&str, (&str, i64))],
) -> Result<(), sqlx::Error> {
    let mut columns: [Vec<&str>; 7] = Default::default();
    let mut offsets = Vec::with_capacity(rows.len());
    let mut ts = Vec::with_capacity(rows.len());
    for a in rows {
        let m = &a.message;
        for (column, value) in columns.iter_mut().zip([
            a.room.as_str(),
            &*a.epoch,
            m.id.as_str(),
            m.client_id.as_str(),
            m.from.id.as_str(),
            m.from.name.as_str(),
            m.body.as_str(),
        ]) {
            column.push(value);
        }
        offsets.push(sql_offset(m.offset));
        ts.push(m.ts);
    }
    let [room, epoch, id, client_id, user_id, user_name, body] = columns;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO chat_messages (room, msg_offset, epoch, id, client_id, user_id, user_name, body, ts) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::int8[]) \
         ON CONFLICT (room, msg_offset) DO UPDATE SET epoch = excluded.epoch, \
         id = excluded.id, client_id = excluded.client_id, user_id = excluded.user_id, \
         user_name = excluded.user_name, body = excluded.body, ts = excluded.ts \
         WHERE chat_messages.epoch <> excluded.epoch",
    )
    .bind(room)
    .bind(offsets)
    .bind(epoch)
    .bind(id)
    .bind(client_id)
    .bind(user_id)
    .bind(user_name)
    .bind(body)
    .bind(ts)
    .execute(&mut *tx)
    .await?;
    let (names, positions): (Vec<&str>, Vec<(&str, i64)>) = rooms.iter().copied().unzip();
    let (epochs, last): (Vec<&str>, Vec<i64>) = positions.into_iter().unzip();
    sqlx::query(
        "INSERT INTO chat_rooms (room, epoch, last_offset) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[]) \
         ON CONFLICT (room) DO UPDATE SET epoch = excluded.epoch, \
         last_offset = excluded.last_offset \
         WHERE chat_rooms.epoch <> excluded.epoch \
         OR chat_rooms.last_offset < excluded.last_offset",
    )
    .bind(names)
    .bind(epochs)
    .bind(last)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A row of `chat_messages` (the [`COLUMNS`]) as the wire message.
fn message_of<R: Row>(row: &R) -> Result<ChatMessage, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ChatMessage {
        room: row.try_get("room")?,
        offset: u64::try_from(row.try_get::<i64, _>("msg_offset")?).unwrap_or(0),
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        from: User {
            id: row.try_get("user_id")?,
            name: row.try_get("user_name")?,
        },
        body: row.try_get("body")?,
        ts: row.try_get("ts")?,
    })
}

#[cfg(test)]
mod tests;
