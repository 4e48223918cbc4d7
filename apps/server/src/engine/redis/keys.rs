//! The key layout of the Redis engine: every key and the channel of room
//! `R` under prefix `P` start with `P:{R}:`, so the hash tag `{R}` puts a
//! whole room in one Redis Cluster slot (Redis Cluster specification, "Hash
//! tags"). The table is in the parent module's doc.

use protocol::RoomName;

/// Partitions of the rooms index: nothing global lives in one slot, and a
/// `rooms` page merges one read of each.
pub(super) const ROOMS_PARTITIONS: usize = 16;

/// The rooms index's order entry of a room with `members` members: the
/// count inverted and zero-padded, so byte order is the rooms order
/// (`lua/rooms_index.lua` writes the same).
pub(super) fn rooms_order_entry(members: u64, room: &str) -> String {
    format!("{:010}:{room}", ROOMS_ORDER_TOP.saturating_sub(members))
}

/// The room and member count of an order entry.
pub(super) fn parse_rooms_order_entry(entry: &str) -> Option<(u64, &str)> {
    let (inverted, room) = entry.split_once(':')?;
    Some((ROOMS_ORDER_TOP.checked_sub(inverted.parse().ok()?)?, room))
}

/// The count an order entry inverts (10 digits).
const ROOMS_ORDER_TOP: u64 = 9_999_999_999;

/// Key names of one deployment (one prefix).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `--redis-key-prefix`; never holds braces (checked at start), so the
    /// first `{…}` of a key is always the room's hash tag.
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// `P:{R}:` followed by `parts`, in one allocation of the exact size:
    /// the keys of a publish are made per message, and `format!` cost
    /// about 1,400 instructions per key there (issue 18's callgrind
    /// profile), this a tenth of it.
    fn room_key(&self, room: &RoomName, parts: &[&str]) -> String {
        let room = room.as_str();
        let len = self.prefix.len() + room.len() + 4 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(room);
        key.push_str("}:");
        for part in parts {
            key.push_str(part);
        }
        key
    }

    fn room(&self, room: &RoomName, what: &str) -> String {
        self.room_key(room, &[what])
    }

    /// Hash: `epoch`, `offset` (latest).
    pub(super) fn meta(&self, room: &RoomName) -> String {
        self.room(room, "meta")
    }

    /// Stream: the history, entry id `<offset>-0`.
    pub(super) fn log(&self, room: &RoomName) -> String {
        self.room(room, "log")
    }

    /// Pub/sub channel of the room.
    pub(super) fn channel(&self, room: &RoomName) -> String {
        self.room(room, "ch")
    }

    /// Zset: user id → latest expiry of its presence (ms).
    pub(super) fn users(&self, room: &RoomName) -> String {
        self.room(room, "users")
    }

    /// Hash: user id → display name.
    pub(super) fn names(&self, room: &RoomName) -> String {
        self.room(room, "names")
    }

    /// Hash: instance → expiry of that instance's presence entry of a user.
    pub(super) fn user(&self, room: &RoomName, user_id: &str) -> String {
        self.room_key(room, &["u:", user_id])
    }

    /// String: offset of a published (user, client id); expires.
    pub(super) fn dedupe(&self, room: &RoomName, user_id: &str, client_id: &str) -> String {
        self.room_key(room, &["d:", user_id, ":", client_id])
    }

    /// The rooms index partition a room is listed in: one of
    /// [`ROOMS_PARTITIONS`], by an FNV-1a hash of its name (stable across
    /// instances and versions: it is part of the layout).
    pub(super) fn rooms_partition(room: &RoomName) -> usize {
        let mut hash: u32 = 0x811c_9dc5;
        for b in room.as_str().bytes() {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash as usize % ROOMS_PARTITIONS
    }

    /// The keys of rooms index partition `p`, all in the hash tag
    /// `{rooms:<p>}` (one slot; the partitions spread over a cluster's
    /// masters): `[active, order, count]` — a zset room → latest presence
    /// expiry (which rooms are active), a zset of `<10-digit
    /// 9999999999 − members>:<room>` all scored 0 (`ZRANGEBYLEX` lists the
    /// busiest first, ties by name) and a hash room → members (the entry to
    /// replace when the count changes).
    pub(super) fn rooms_index(&self, p: usize) -> [String; 3] {
        ["active", "order", "count"].map(|what| format!("{}:{{rooms:{p}}}:{what}", self.prefix))
    }

    /// Zset of rooms partition `p` (hash tag `{archive:<p>}`): room → when
    /// it was last marked as having messages to archive (ms,
    /// [`super::archiver`]).
    pub(super) fn archive_marks(&self, p: usize) -> String {
        format!("{}:{{archive:{p}}}:dirty", self.prefix)
    }

    /// String: the nonce of the process holding instance id `instance`
    /// (`lua/instance.lua`), expires one presence TTL after its last renewal.
    pub(super) fn instance(&self, instance: &str) -> String {
        format!("{}:instance:{{{instance}}}", self.prefix)
    }

    /// The readiness probe's keys of one instance, all in the hash tag
    /// `{probe:<instance>}` (one slot): `[string, hash, stream, zset,
    /// scratch]`, each of the types the server's scripts write; they expire
    /// a minute after the last probe.
    pub(super) fn probe(&self, instance: &str) -> [String; 5] {
        ["s", "h", "x", "z", "d"].map(|what| format!("{}:{{probe:{instance}}}:{what}", self.prefix))
    }

    /// Channel the readiness probe publishes on and the pub/sub connection
    /// keeps subscribed, so the permissions of both are checked.
    pub(super) fn probe_channel(&self, instance: &str) -> String {
        format!("{}:{{probe:{instance}}}:ch", self.prefix)
    }

    /// Hash: instance id → its last heartbeat (the admin view, [`super::board`]).
    pub(super) fn admin_instances(&self) -> String {
        format!("{}:{{admin}}:instances", self.prefix)
    }

    /// Stream: admin actions for every instance (field `a`, JSON).
    pub(super) fn admin_actions(&self) -> String {
        format!("{}:{{admin}}:actions", self.prefix)
    }

    /// The room of a channel name, if it is one of ours.
    pub(super) fn room_of_channel(&self, channel: &str) -> Option<RoomName> {
        let inner = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:ch")?;
        RoomName::parse(inner).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_room_share_its_hash_tag() {
        let room = RoomName::parse("general").unwrap();
        let k = Keys::new("chat");
        for key in [
            k.meta(&room),
            k.log(&room),
            k.channel(&room),
            k.users(&room),
            k.names(&room),
            k.user(&room, "u_1"),
            k.dedupe(&room, "u_1", "c-1"),
        ] {
            assert!(key.starts_with("chat:{general}:"), "{key}");
        }
        // The layout, exactly: other instances (and versions) read these.
        assert_eq!(k.meta(&room), "chat:{general}:meta");
        assert_eq!(k.log(&room), "chat:{general}:log");
        assert_eq!(k.channel(&room), "chat:{general}:ch");
        assert_eq!(k.users(&room), "chat:{general}:users");
        assert_eq!(k.names(&room), "chat:{general}:names");
        assert_eq!(k.user(&room, "u_1"), "chat:{general}:u:u_1");
        assert_eq!(k.dedupe(&room, "u_1", "c-1"), "chat:{general}:d:u_1:c-1");
        assert_eq!(
            k.room_of_channel(&k.channel(&room))
                .as_ref()
                .map(RoomName::as_str),
            Some("general")
        );
    }

    #[test]
    fn order_entries_sort_as_the_rooms_order() {
        let mut entries = [
            rooms_order_entry(2, "b"),
            rooms_order_entry(12, "z"),
            rooms_order_entry(2, "a"),
            rooms_order_entry(1, "a"),
        ];
        entries.sort();
        let parsed: Vec<(u64, &str)> = entries
            .iter()
            .map(|e| parse_rooms_order_entry(e).unwrap())
            .collect();
        assert_eq!(parsed, vec![(12, "z"), (2, "a"), (2, "b"), (1, "a")]);
        assert_eq!(rooms_order_entry(12, "z"), "9999999987:z");
    }

    #[test]
    fn rooms_partitions_are_stable_and_spread() {
        // Part of the layout: a change would lose every listed room.
        assert_eq!(
            Keys::rooms_partition(&RoomName::parse("general").unwrap()),
            11
        );
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|i| Keys::rooms_partition(&RoomName::parse(&format!("r{i}")).unwrap()))
            .collect();
        assert_eq!(used.len(), ROOMS_PARTITIONS);
        let k = Keys::new("chat");
        assert_eq!(k.rooms_index(7)[1], "chat:{rooms:7}:order");
    }

    #[test]
    fn channel_names_map_back_to_rooms() {
        let k = Keys::new("chat");
        let room = RoomName::parse("a-b_c").unwrap();
        assert_eq!(k.room_of_channel(&k.channel(&room)), Some(room));
        assert_eq!(k.room_of_channel("other:{general}:ch"), None);
        assert_eq!(k.room_of_channel("chat:{Bad}:ch"), None);
    }
}
