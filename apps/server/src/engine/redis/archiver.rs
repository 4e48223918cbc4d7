//! The Redis engine's archive (issue 14): the room streams are moved into
//! the database (`--database-url`, PostgreSQL for a cluster) in batches,
//! off the publish path, and what Redis no longer holds is read back from
//! it.
//!
//! - **Exactly once, whoever dies.** Each stream has a consumer group,
//!   [`GROUP`]; every instance reads it as consumer `<instance id>`
//!   (`XREADGROUP … >`, after `lua/archive_read.lua` made the group and
//!   claimed what waited too long: [`RedisEngine::read_room`]), writes the
//!   batch, then
//!   acknowledges it (`lua/archive_ack.lua`: `XACK`). Entries a dead
//!   instance had read but not acknowledged stay pending to it; after
//!   `--archive-claim-after-secs` another instance claims them (`XCLAIM`)
//!   and writes them. A batch written twice (claimed while its first reader
//!   was only slow) changes nothing: the archive is idempotent on (room,
//!   epoch, offset).
//! - **Which rooms.** A room is marked in Redis before its first publish
//!   from this instance in each [`SWEEP_EVERY`], and before each cycle
//!   reads it: `P:{archive:<p>}:dirty`, a zset room → time marked (ms) per
//!   rooms partition `p`. The publishing instance archives the room within
//!   one cycle. Every [`SWEEP_EVERY`] each instance reads those lists
//!   (claiming what is pending too long) and takes off a room once nothing
//!   of it is pending or unread (`lua/archive_clean.lua`, unless it was
//!   marked again since), so a room whose publisher died is archived by
//!   another instance.
//! - **Trimming never loses a message.** The room's `archived` offset
//!   (meta field) is the highest below which every entry is archived;
//!   publishes and acknowledgements trim the stream to the cap or to that
//!   offset, whichever keeps more. While the archive is down the streams
//!   grow (and Redis memory with them); nothing is dropped.
//! - **A wiped store loses nothing.** A room without an epoch in Redis
//!   (`FLUSHALL`, a replacement, an expiry) is restored before it is used
//!   ([`RedisEngine::restore`]): its epoch and offset from the archive,
//!   plus the messages this instance received on the room's channel that
//!   were not archived yet ([`Tail`]: each acknowledgement announces the
//!   room's archived offset on the channel, `a <epoch> <offset>`, and the
//!   held messages up to it are dropped), written to the archive first.
//!   So offsets continue, and members recover with `recovered: true`.

use super::RedisEngine;
use super::{parse_payload, stream_message};
use crate::archive::{Archive, Archived};
use crate::engine::{new_epoch, EngineError, EngineEvent};
use crate::metrics as m;
use futures_util::StreamExt;
use protocol::{ChatMessage, RoomName};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The consumer group of every room stream that the archive reads.
pub(super) const GROUP: &str = "archive";

/// Entries read from one room at a time (also the ids one acknowledgement
/// passes to `XACK`, well inside Lua's stack).
const READ_COUNT: usize = 1_000;

/// How often each instance reads the rooms marked in Redis (and claims
/// entries pending too long).
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Rooms read from Redis at once.
const READS_AT_ONCE: usize = 16;

/// Rooms whose messages go into one batch (one transaction): at most
/// this many times [`READ_COUNT`] new entries, and as many claimed.
const ROOMS_PER_BATCH: usize = 16;

/// The archive as the Redis engine holds it.
pub(super) struct ArchiveLink {
    pub(super) archive: Archive,
    pub(super) tail: Arc<Tail>,
    /// Rooms this instance published to (or must read again) since its
    /// last cycle.
    published: Mutex<HashSet<RoomName>>,
    /// Rooms this instance marked in Redis, and when (pruned every sweep).
    marked: Mutex<HashMap<RoomName, Instant>>,
    wake: Notify,
    /// `--archive-claim-after-secs`.
    claim_after: Duration,
}

impl ArchiveLink {
    pub(super) fn new(archive: Archive, claim_after: Duration) -> ArchiveLink {
        ArchiveLink {
            archive,
            tail: Arc::new(Tail::default()),
            published: Mutex::new(HashSet::new()),
            marked: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            claim_after,
        }
    }

    /// The room has a message to archive: a cycle runs soon.
    pub(super) fn published(&self, room: &RoomName) {
        self.retry_later([room.clone()]);
        self.wake.notify_one();
    }

    fn take_published(&self) -> Vec<RoomName> {
        self.published
            .lock()
            .expect("published lock")
            .drain()
            .collect()
    }

    /// The rooms are read again at the next cycle (a mark or a sweep
    /// wakes it), not at once: a store that failed is not hammered.
    fn retry_later(&self, rooms: impl IntoIterator<Item = RoomName>) {
        self.published.lock().expect("published lock").extend(rooms);
    }
}

/// Messages of the rooms this instance is subscribed to that it knows were
/// stored and the archive may not hold yet: what it received on their
/// channels and what it published itself (its own may arrive on the
/// channel late, or never: a store killed with -9 resets the connection,
/// and the kernel drops what it had not read). What
/// [`RedisEngine::restore`] writes when the store lost them. Bounded by
/// the archive's lag (each `a` notice drops what it covers).
#[derive(Default)]
pub(super) struct Tail {
    rooms: Mutex<HashMap<RoomName, HeldRoom>>,
}

#[derive(Default)]
struct HeldRoom {
    /// Subscribes less unsubscribes ([`crate::engine::Broker::subscribe`]).
    subscribers: usize,
    epoch: Option<Arc<str>>,
    /// By offset: from two sources, in any order, with gaps where the
    /// channel dropped messages.
    messages: BTreeMap<u64, ChatMessage>,
}

impl Tail {
    pub(super) fn subscribed(&self, room: &RoomName) {
        let mut rooms = self.rooms.lock().expect("tail lock");
        rooms.entry(room.clone()).or_default().subscribers += 1;
    }

    pub(super) fn unsubscribed(&self, room: &RoomName) {
        let mut rooms = self.rooms.lock().expect("tail lock");
        if let Some(held) = rooms.get_mut(room) {
            held.subscribers -= 1;
            if held.subscribers == 0 {
                rooms.remove(room);
            }
        }
    }

    /// A message of `room` stored in `epoch` (from its channel, or this
    /// instance's own publish).
    pub(super) fn record(&self, room: &RoomName, epoch: &Arc<str>, message: ChatMessage) {
        let mut rooms = self.rooms.lock().expect("tail lock");
        let Some(held) = rooms.get_mut(room) else {
            return;
        };
        if held.epoch.as_deref() != Some(&**epoch) {
            held.epoch = Some(epoch.clone());
            held.messages.clear();
        }
        held.messages.entry(message.offset).or_insert(message);
    }

    /// Everything of `room` up to `offset` in `epoch` is archived.
    fn archived(&self, room: &RoomName, epoch: &str, offset: u64) {
        let mut rooms = self.rooms.lock().expect("tail lock");
        let Some(held) = rooms.get_mut(room) else {
            return;
        };
        if held.epoch.as_deref() == Some(epoch) {
            held.messages = held.messages.split_off(&offset.saturating_add(1));
        }
    }

    /// What is held of `room`: its epoch and messages, ascending.
    fn held(&self, room: &RoomName) -> Option<(Arc<str>, Vec<ChatMessage>)> {
        let rooms = self.rooms.lock().expect("tail lock");
        let held = rooms.get(room)?;
        Some((
            held.epoch.clone()?,
            held.messages.values().cloned().collect(),
        ))
    }
}

/// A payload received on `room`'s channel: the hub's event, if it is one
/// (an `a <epoch> <offset>` notice is the archive's, kept by `tail`).
/// Unreadable payloads are logged and skipped.
pub(super) fn receive(tail: Option<&Tail>, room: RoomName, payload: &str) -> Option<EngineEvent> {
    if let Some(rest) = payload.strip_prefix("a ") {
        let notice = rest
            .split_once(' ')
            .and_then(|(epoch, offset)| Some((epoch, offset.parse::<u64>().ok()?)));
        match (tail, notice) {
            (Some(tail), Some((epoch, offset))) => tail.archived(&room, epoch, offset),
            (_, None) => tracing::warn!(payload, "unreadable channel payload"),
            (None, Some(_)) => {}
        }
        return None;
    }
    let event = parse_payload(room, payload);
    match (&event, tail) {
        (
            Some(EngineEvent::Message {
                room,
                epoch,
                message,
                ..
            }),
            Some(tail),
        ) => tail.record(room, epoch, message.clone()),
        (None, _) => tracing::warn!(payload, "unreadable channel payload"),
        _ => {}
    }
    event
}

/// The epoch and offset a room the store lost continues from, and the
/// held messages to write to the archive first: the held messages that
/// continue what the archive has (`archived`: its epoch and highest
/// offset) without a gap, if any, else the archive's position, else a new
/// epoch at 0. `held` is ascending.
fn restore_point(
    archived: Option<(Arc<str>, u64)>,
    held: Option<(Arc<str>, Vec<ChatMessage>)>,
) -> (Arc<str>, u64, Vec<ChatMessage>) {
    let floor = archived.as_ref().map_or(0, |(_, offset)| *offset);
    if let Some((epoch, messages)) = held {
        let newer: Vec<ChatMessage> = messages
            .into_iter()
            .skip_while(|m| m.offset <= floor)
            .zip(floor + 1..)
            .take_while(|(m, next)| m.offset == *next)
            .map(|(m, _)| m)
            .collect();
        if let Some(last) = newer.last() {
            return (epoch, last.offset, newer);
        }
    }
    match archived {
        Some((epoch, offset)) => (epoch, offset, Vec::new()),
        None => (new_epoch(), 0, Vec::new()),
    }
}

/// A stream entry: its id and its field `m` (`None`: it has none).
type Entry = (String, Option<String>);

/// `lua/archive_read.lua`'s answer: the room's epoch and the claimed
/// entries, each its id and fields (nil: deleted meanwhile, before Redis
/// 7.0).
type ReadScriptReply = (String, Vec<Option<(String, Vec<String>)>>);

/// What [`RedisEngine::read_room`] found of a room.
struct RoomRead {
    /// The room's epoch (empty: the store has no epoch or no stream).
    epoch: String,
    /// Entries claimed from other consumers, then entries never read.
    entries: Vec<Entry>,
    /// The read of never-read entries came back full: more wait.
    full: bool,
    /// Nothing was read and nothing is pending to any consumer.
    idle: bool,
}

impl RedisEngine {
    fn link(&self) -> &ArchiveLink {
        self.archive
            .as_ref()
            .expect("archive calls are made only with an archive")
    }

    /// Before a publish: marks the room in Redis unless this instance did
    /// within the last [`SWEEP_EVERY`] (a sweep may have taken the mark off
    /// since; each cycle marks again before it reads), so an instance that
    /// dies right after publishing leaves the room listed for the others.
    pub(super) async fn mark_before_publish(&self, room: &RoomName) -> Result<(), EngineError> {
        let link = self.link();
        let fresh = |at: &Instant| at.elapsed() < SWEEP_EVERY;
        if link
            .marked
            .lock()
            .expect("marked lock")
            .get(room)
            .is_some_and(fresh)
        {
            return Ok(());
        }
        self.mark_in_store(std::slice::from_ref(room)).await
    }

    /// Restores a room the store has no epoch for (see the module doc).
    /// Errors: the archive or the store cannot be reached (`Unavailable`).
    pub(super) async fn restore(&self, room: &RoomName) -> Result<(), EngineError> {
        let link = self.link();
        let archived = link
            .archive
            .position(room)
            .await
            .map_err(EngineError::archive)?;
        let (epoch, offset, held) = restore_point(archived, link.tail.held(room));
        let from_tail = held.len();
        if !held.is_empty() {
            let batch: Vec<Archived> = held
                .into_iter()
                .map(|message| Archived {
                    room: room.clone(),
                    epoch: epoch.clone(),
                    message,
                })
                .collect();
            link.archive
                .write(&batch)
                .await
                .map_err(EngineError::archive)?;
        }
        let restored: u8 = self
            .commands
            .run(|mut conn| {
                let epoch = &epoch;
                async move {
                    self.scripts(&conn)
                        .restore
                        .key(self.keys.meta(room))
                        .key(self.keys.log(room))
                        .arg(&**epoch)
                        .arg(offset)
                        .arg(self.retention.as_millis() as u64)
                        .arg(self.presence_ttl.as_millis() as u64)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        if restored == 1 && offset > 0 {
            metrics::counter!(m::ARCHIVE_RESTORED).increment(1);
            tracing::info!(room = %room, epoch = %epoch, offset, from_tail, "the store did not know the room: restored from the archive");
        }
        Ok(())
    }

    /// The archiver task of this instance (see the module doc): a cycle
    /// when a publish marked a room, a sweep every [`SWEEP_EVERY`]; at
    /// `stop`, one last cycle of what this instance marked, for at most
    /// [`SWEEP_EVERY`] (what it leaves stays marked, or pending, for the
    /// other instances).
    pub(super) async fn run_archiver(self: Arc<Self>, stop: CancellationToken) {
        let link = self.link();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let swept = tokio::select! {
                _ = stop.cancelled() => {
                    let last = CancellationToken::new();
                    let _ = tokio::time::timeout(SWEEP_EVERY, self.archive_cycle(false, &last)).await;
                    return;
                }
                _ = link.wake.notified() => false,
                _ = sweep.tick() => true,
            };
            if let Err(e) = self.archive_cycle(swept, &stop).await {
                metrics::counter!(m::ARCHIVE_ERRORS).increment(1);
                tracing::warn!(error = %e, "archiving from the store failed; trying again");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// One cycle: mark this instance's rooms in Redis, read them (and, on
    /// a sweep, every marked room, claiming long-pending entries), write
    /// the batch, acknowledge it. A room that failed stays marked.
    async fn archive_cycle(
        &self,
        sweep: bool,
        stop: &CancellationToken,
    ) -> Result<(), EngineError> {
        let link = self.link();
        let local = link.take_published();
        if let Err(e) = self.mark_in_store(&local).await {
            link.retry_later(local);
            return Err(e);
        }
        // Room → the score its mark was read with (sweeps only).
        let mut rooms: HashMap<RoomName, Option<f64>> =
            local.into_iter().map(|room| (room, None)).collect();
        if sweep {
            link.marked
                .lock()
                .expect("marked lock")
                .retain(|_, at| at.elapsed() < SWEEP_EVERY);
            for (room, score) in self.marked_in_store().await? {
                rooms.entry(room).or_insert(Some(score));
            }
        }
        if rooms.is_empty() {
            return Ok(());
        }
        let claim_ms = if sweep {
            link.claim_after.as_millis() as u64
        } else {
            0
        };
        let rooms: Vec<(RoomName, Option<f64>)> = rooms.into_iter().collect();
        let mut first_error = None;
        for chunk in rooms.chunks(ROOMS_PER_BATCH) {
            if stop.is_cancelled() {
                break;
            }
            if let Err(e) = self.archive_rooms(chunk, claim_ms, stop).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Reads `rooms` (with the score of their mark, read by a sweep),
    /// writes what they hold in one batch, acknowledges it, and takes the
    /// rooms that had nothing off the marked list.
    async fn archive_rooms(
        &self,
        rooms: &[(RoomName, Option<f64>)],
        claim_ms: u64,
        stop: &CancellationToken,
    ) -> Result<(), EngineError> {
        let link = self.link();
        let reads: Vec<(RoomName, Option<f64>, Result<RoomRead, EngineError>)> =
            futures_util::stream::iter(rooms.iter().cloned())
                .map(|(room, score)| async move {
                    let read = self.read_room(&room, claim_ms).await;
                    (room, score, read)
                })
                .buffer_unordered(READS_AT_ONCE)
                .collect()
                .await;
        let mut batch = Vec::new();
        // Room → (epoch, highest offset, entry ids) to acknowledge.
        let mut acks: Vec<(RoomName, Arc<str>, u64, Vec<String>)> = Vec::new();
        let mut failed = Vec::new();
        let mut clean = Vec::new();
        let mut first_error = None;
        for (room, score, read) in reads {
            let read = match read {
                Ok(read) => read,
                Err(e) => {
                    first_error.get_or_insert(e);
                    failed.push(room);
                    continue;
                }
            };
            if read.entries.is_empty() {
                if let (Some(score), true) = (score, read.idle) {
                    clean.push((room, score));
                }
                continue;
            }
            let epoch: Arc<str> = Arc::from(read.epoch);
            let mut ids = Vec::with_capacity(read.entries.len());
            let mut highest = 0;
            for (id, json) in read.entries {
                match stream_message(&room, &id, json.as_deref()) {
                    Ok(message) => {
                        highest = highest.max(message.offset);
                        batch.push(Archived {
                            room: room.clone(),
                            epoch: epoch.clone(),
                            message,
                        });
                    }
                    // Not a message this server stored: it can never be
                    // archived, and left pending it would be claimed again
                    // at every sweep. Acknowledged, and said.
                    Err(e) => {
                        metrics::counter!(m::ARCHIVE_ERRORS).increment(1);
                        tracing::error!(room = %room, id = %id, error = %e, "a stream entry that is not a message was skipped");
                    }
                }
                ids.push(id);
            }
            if read.full {
                link.published(&room);
            }
            acks.push((room, epoch, highest, ids));
        }
        link.retry_later(failed);
        if !batch.is_empty() {
            tokio::select! {
                // Unacknowledged, the entries stay pending: another instance
                // claims them.
                _ = stop.cancelled() => return Ok(()),
                _ = crate::archive::writer::write_until_done(&link.archive, &batch) => {}
            }
            metrics::counter!(m::ARCHIVE_WRITTEN).increment(batch.len() as u64);
        }
        let acked: Vec<Result<(), EngineError>> = futures_util::stream::iter(acks)
            .map(|(room, epoch, highest, ids)| async move {
                let result = self.acknowledge(&room, &epoch, highest, &ids).await;
                if result.is_err() {
                    link.retry_later([room]);
                }
                result
            })
            .buffer_unordered(READS_AT_ONCE)
            .collect()
            .await;
        for (room, score) in clean {
            self.unmark_in_store(&room, score).await?;
        }
        match first_error {
            Some(e) => Err(e),
            None => acked.into_iter().collect(),
        }
    }

    /// `ZADD` of each room to its partition's list, with the time (ms).
    async fn mark_in_store(&self, rooms: &[RoomName]) -> Result<(), EngineError> {
        let mut by_partition: HashMap<usize, Vec<&RoomName>> = HashMap::new();
        for room in rooms {
            by_partition
                .entry(super::keys::Keys::rooms_partition(room))
                .or_default()
                .push(room);
        }
        let now = crate::engine::now_ms();
        for (p, rooms) in by_partition {
            let key = self.keys.archive_marks(p);
            self.commands
                .run(|mut conn| {
                    let (key, rooms) = (&key, &rooms);
                    async move {
                        let mut zadd = redis::cmd("ZADD");
                        zadd.arg(key);
                        for room in rooms.iter() {
                            zadd.arg(now).arg(room.as_str());
                        }
                        zadd.query_async::<i64>(&mut conn).await
                    }
                })
                .await?;
        }
        let link = self.link();
        let mut marked = link.marked.lock().expect("marked lock");
        let at = Instant::now();
        for room in rooms {
            marked.insert(room.clone(), at);
        }
        Ok(())
    }

    /// Every room marked in Redis, with its mark's score.
    async fn marked_in_store(&self) -> Result<Vec<(RoomName, f64)>, EngineError> {
        let mut rooms = Vec::new();
        for p in 0..super::keys::ROOMS_PARTITIONS {
            let key = self.keys.archive_marks(p);
            let marked: Vec<(String, f64)> = self
                .commands
                .run(|mut conn| {
                    let key = &key;
                    async move {
                        redis::cmd("ZRANGE")
                            .arg(key)
                            .arg(0)
                            .arg(-1)
                            .arg("WITHSCORES")
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            rooms.extend(
                marked
                    .into_iter()
                    .filter_map(|(room, score)| Some((RoomName::parse(&room).ok()?, score))),
            );
        }
        Ok(rooms)
    }

    async fn unmark_in_store(&self, room: &RoomName, score: f64) -> Result<(), EngineError> {
        let key = self
            .keys
            .archive_marks(super::keys::Keys::rooms_partition(room));
        let _: i64 = self
            .commands
            .run(|mut conn| {
                let key = &key;
                async move {
                    self.scripts(&conn)
                        .archive_clean
                        .key(key)
                        .arg(room.as_str())
                        .arg(score)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(())
    }

    /// What there is to archive of a room: `lua/archive_read.lua` (its
    /// epoch, and the entries pending `claim_ms` or longer, claimed; 0:
    /// none), then `XREADGROUP … >` (which Redis 5 refuses in scripts),
    /// then, when both found nothing, `XPENDING` (a sweep takes the room
    /// off its list only when nothing is pending either).
    async fn read_room(&self, room: &RoomName, claim_ms: u64) -> Result<RoomRead, EngineError> {
        self.commands
            .run(|mut conn| async move {
                let log = self.keys.log(room);
                let (epoch, claimed): ReadScriptReply = self
                    .scripts(&conn)
                    .archive_read
                    .key(self.keys.meta(room))
                    .key(&log)
                    .arg(GROUP)
                    .arg(&self.instance)
                    .arg(READ_COUNT)
                    .arg(claim_ms)
                    .invoke_async(&mut conn)
                    .await?;
                let mut entries: Vec<Entry> = claimed
                    .into_iter()
                    .flatten()
                    .map(|(id, fields)| {
                        let json = fields.chunks(2).find(|f| f[0] == "m").and_then(|f| f.get(1).cloned());
                        (id, json)
                    })
                    .collect();
                if epoch.is_empty() {
                    return Ok(RoomRead { epoch, idle: entries.is_empty(), entries, full: false });
                }
                let read: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.instance)
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("STREAMS")
                    .arg(&log)
                    .arg(">")
                    .query_async(&mut conn)
                    .await?;
                let before = entries.len();
                entries.extend(
                    read.into_iter()
                        .flat_map(|reply| reply.keys)
                        .flat_map(|key| key.ids)
                        .map(|entry| {
                            let json = entry.get::<String>("m");
                            (entry.id, json)
                        }),
                );
                let full = entries.len() - before >= READ_COUNT;
                let idle = entries.is_empty() && {
                    let summary: redis::Value = redis::cmd("XPENDING")
                        .arg(&log)
                        .arg(GROUP)
                        .query_async(&mut conn)
                        .await?;
                    // The summary form: [count, lowest id, highest id, consumers].
                    matches!(summary, redis::Value::Array(items) if matches!(items.first(), Some(redis::Value::Int(0))))
                };
                Ok(RoomRead { epoch, entries, full, idle })
            })
            .await
    }

    async fn acknowledge(
        &self,
        room: &RoomName,
        epoch: &str,
        highest: u64,
        ids: &[String],
    ) -> Result<(), EngineError> {
        let _archived: u64 = self
            .commands
            .run(|mut conn| async move {
                self.scripts(&conn)
                    .archive_ack
                    .key(self.keys.meta(room))
                    .key(self.keys.log(room))
                    .arg(GROUP)
                    .arg(epoch)
                    .arg(highest)
                    .arg(self.keys.channel(room))
                    .arg(self.history_cap)
                    .arg(ids)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: u64) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            offset,
            id: format!("m_{offset}"),
            client_id: format!("c{offset}"),
            from: protocol::User {
                id: "u_1".into(),
                name: "a".into(),
            },
            body: "b".into(),
            ts: 1,
        }
    }

    fn held(
        epoch: &str,
        offsets: std::ops::RangeInclusive<u64>,
    ) -> Option<(Arc<str>, Vec<ChatMessage>)> {
        Some((Arc::from(epoch), offsets.map(message).collect()))
    }

    #[test]
    fn a_restore_continues_from_the_held_messages_when_they_follow_the_archive() {
        let archived = Some((Arc::from("e1"), 10));
        // Held 8..=14 overlaps the archive: 11..=14 are written.
        let (epoch, offset, write) = restore_point(archived.clone(), held("e1", 8..=14));
        assert_eq!((&*epoch, offset), ("e1", 14));
        assert_eq!(
            write.iter().map(|m| m.offset).collect::<Vec<_>>(),
            vec![11, 12, 13, 14]
        );
        // Held 12..=14 leaves 11 nowhere: the archive's position.
        let (epoch, offset, write) = restore_point(archived.clone(), held("e1", 12..=14));
        assert_eq!((&*epoch, offset, write.len()), ("e1", 10, 0));
        // Nothing held past the archive.
        let (_, offset, write) = restore_point(archived.clone(), held("e1", 5..=10));
        assert_eq!((offset, write.len()), (10, 0));
        // A gap after 12 (the channel dropped 13): up to 12.
        let gap = Some((Arc::from("e1"), [11, 12, 14].map(message).to_vec()));
        let (_, offset, write) = restore_point(archived.clone(), gap);
        assert_eq!((offset, write.len()), (12, 2));
        // The room went on under a new epoch the archive has not seen yet.
        let (epoch, offset, write) = restore_point(archived, held("e2", 9..=12));
        assert_eq!((&*epoch, offset, write.len()), ("e2", 12, 2));
        // A room the archive never had: the held messages from offset 1.
        let (epoch, offset, write) = restore_point(None, held("e3", 1..=3));
        assert_eq!((&*epoch, offset, write.len()), ("e3", 3, 3));
        // Nothing anywhere: a new epoch at 0.
        let (epoch, offset, write) = restore_point(None, None);
        assert_eq!((epoch.len(), offset, write.len()), (16, 0, 0));
    }

    #[test]
    fn the_tail_holds_messages_until_archived() {
        let tail = Tail::default();
        let room = RoomName::parse("r").unwrap();
        let epoch: Arc<str> = Arc::from("e1");
        tail.record(&room, &epoch, message(1));
        assert!(tail.held(&room).is_none(), "only subscribed rooms are held");
        tail.subscribed(&room);
        for offset in [1, 2, 4, 3, 5, 3] {
            tail.record(&room, &epoch, message(offset));
        }
        tail.archived(&room, "e1", 2);
        let offsets = |tail: &Tail| -> Vec<u64> {
            tail.held(&room)
                .map_or(Vec::new(), |(_, m)| m.iter().map(|m| m.offset).collect())
        };
        assert_eq!(offsets(&tail), vec![3, 4, 5], "in order, once each");
        tail.archived(&room, "other", 5);
        assert_eq!(offsets(&tail), vec![3, 4, 5], "another epoch's notice");
        tail.record(&room, &epoch, message(8));
        assert_eq!(offsets(&tail), vec![3, 4, 5, 8], "a gap is kept");
        tail.record(&room, &Arc::from("e2"), message(9));
        assert_eq!(tail.held(&room).unwrap().0.as_ref(), "e2");
        assert_eq!(offsets(&tail), vec![9], "a new epoch starts over");
        tail.subscribed(&room);
        tail.unsubscribed(&room);
        assert!(tail.held(&room).is_some());
        tail.unsubscribed(&room);
        assert!(tail.held(&room).is_none());
    }

    #[test]
    fn archive_notices_are_kept_from_the_hub() {
        let tail = Tail::default();
        let room = RoomName::parse("r").unwrap();
        tail.subscribed(&room);
        let stored =
            r#"{"id":"m_1","client_id":"c-1","from":{"id":"u_1","name":"a"},"body":"hi","ts":5}"#;
        assert!(receive(Some(&tail), room.clone(), &format!("m e1 1 {stored}")).is_some());
        assert_eq!(tail.held(&room).unwrap().1.len(), 1);
        assert!(receive(Some(&tail), room.clone(), "a e1 1").is_none());
        assert!(tail.held(&room).unwrap().1.is_empty());
        assert!(receive(None, room, "a e1 x").is_none());
    }
}
