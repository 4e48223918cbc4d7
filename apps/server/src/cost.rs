//! What each client frame costs, and the token buckets that pay for it
//! (PROTOCOL.md, v1.1 "Costs").
//!
//! Every frame after `hello` costs units ([`FrameCosts`]); a `joined` or
//! `history` reply costs one more unit per `reply_bytes_per_unit` bytes it
//! carries, charged after the reply is made (the size of a replay is only
//! known then), so a client that asks for large replays runs into debt and
//! waits it out. Three buckets pay for each frame: the connection's, the
//! user's and the client address's (IPv4 address, or IPv6 /64), the last
//! two shared by the connections of one instance. A frame is admitted only
//! if all three hold its cost; otherwise none is charged and the client is
//! answered `rate_limited` (the socket stays open).
//!
//! The bucket is GCRA (the "virtual scheduling" form of a token bucket: one
//! instant per bucket, the theoretical arrival time), written here rather
//! than taken from `governor` because a charge after the work must be able
//! to put a bucket into debt, which `governor`'s API does not allow.

use protocol::ClientFrame;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Units of each client frame (`--frame-costs`,
/// [`protocol::limits::DEFAULT_FRAME_COSTS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameCosts {
    pub ping: u32,
    pub typing: u32,
    pub send: u32,
    pub leave: u32,
    pub join: u32,
    pub history: u32,
    pub rooms: u32,
    /// A WebSocket upgrade, from the address's bucket only (`connect`).
    pub connect: u32,
    /// A `joined` or `history` reply costs one unit more per this many
    /// bytes (`--reply-bytes-per-unit`).
    pub reply_bytes_per_unit: usize,
}

impl FrameCosts {
    /// Parses `type=units` pairs separated by commas over the defaults;
    /// every frame type named must be one that costs (not `hello`).
    pub fn parse(list: &str, reply_bytes_per_unit: usize) -> Result<FrameCosts, String> {
        let mut costs = FrameCosts {
            ping: 0,
            typing: 0,
            send: 0,
            leave: 0,
            join: 0,
            history: 0,
            rooms: 0,
            connect: 0,
            reply_bytes_per_unit,
        };
        for default in protocol::limits::DEFAULT_FRAME_COSTS.split(',') {
            costs.set(default)?;
        }
        for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            costs.set(pair)?;
        }
        Ok(costs)
    }

    fn set(&mut self, pair: &str) -> Result<(), String> {
        let (kind, units) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not type=units"))?;
        let units: u32 = units
            .trim()
            .parse()
            .map_err(|_| format!("{pair:?}: units must be a whole number"))?;
        let slot = match kind.trim() {
            "ping" => &mut self.ping,
            "typing" => &mut self.typing,
            "send" => &mut self.send,
            "leave" => &mut self.leave,
            "join" => &mut self.join,
            "history" => &mut self.history,
            "rooms" => &mut self.rooms,
            "connect" => &mut self.connect,
            other => {
                return Err(format!(
                    "{other:?} is not a frame with a cost (ping, typing, send, leave, join, history, rooms, connect)"
                ))
            }
        };
        *slot = units;
        Ok(())
    }

    /// Units of `frame` before any work (`hello` costs nothing).
    pub fn of(&self, frame: &ClientFrame) -> u32 {
        match frame {
            ClientFrame::Hello { .. } => 0,
            ClientFrame::Ping => self.ping,
            ClientFrame::Typing { .. } => self.typing,
            ClientFrame::Send { .. } => self.send,
            ClientFrame::Leave { .. } => self.leave,
            // A refresh verifies a signature, as much work as a join.
            ClientFrame::Join { .. } | ClientFrame::Refresh { .. } => self.join,
            ClientFrame::History { .. } => self.history,
            ClientFrame::Rooms { .. } => self.rooms,
        }
    }

    /// Units of a reply of `bytes` bytes, charged after it is made.
    pub fn of_reply(&self, bytes: usize) -> u32 {
        u32::try_from(bytes / self.reply_bytes_per_unit.max(1)).unwrap_or(u32::MAX)
    }
}

/// A refill rate and a burst, in units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per second.
    pub per_sec: u32,
    /// Units a full bucket holds.
    pub burst: u32,
}

impl Rate {
    fn interval(self) -> Duration {
        Duration::from_secs(1) / self.per_sec.max(1)
    }
}

/// One token bucket, as GCRA: `tat` (theoretical arrival time) is when the
/// bucket will be full again; it holds `burst - (tat - now) / interval`
/// units. Debt is a `tat` further ahead than a full burst.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tat: Instant,
}

impl Bucket {
    pub fn new(now: Instant) -> Bucket {
        Bucket { tat: now }
    }

    /// Whether the bucket holds `units` at `now`.
    fn holds(&self, rate: Rate, units: u32, now: Instant) -> bool {
        let after = self.tat.max(now) + rate.interval() * units;
        after.saturating_duration_since(now) <= rate.interval() * rate.burst
    }

    /// How long until the bucket holds `units` (zero if it does now).
    fn wait(&self, rate: Rate, units: u32, now: Instant) -> Duration {
        let after = self.tat.max(now) + rate.interval() * units;
        after.saturating_duration_since(now + rate.interval() * rate.burst)
    }

    /// Takes `units`, into debt if it must.
    fn charge(&mut self, rate: Rate, units: u32, now: Instant) {
        self.tat = self.tat.max(now) + rate.interval() * units;
    }

    /// Full again: the bucket is as if never used, so a shared map can
    /// forget it.
    fn is_full(&self, now: Instant) -> bool {
        self.tat <= now
    }
}

/// The key of a client address: an IPv4 address, or the /64 of an IPv6
/// one (a host gets a /64, so one host is one key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6(u64),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4.into()),
                None => AddressKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Buckets shared by the connections of one instance, by key. A bucket
/// that filled up again is forgotten at the next sweep, so the map holds
/// only keys that spent recently: it shrinks back after an attacker stops.
struct SharedBuckets<K> {
    rate: Rate,
    map: Mutex<Swept<K>>,
}

struct Swept<K> {
    buckets: HashMap<K, Bucket>,
    /// When the map was last swept.
    swept: Instant,
}

/// How often a shared map drops its full buckets, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl<K: Hash + Eq + Clone> SharedBuckets<K> {
    fn new(rate: Rate, now: Instant) -> Self {
        SharedBuckets {
            rate,
            map: Mutex::new(Swept {
                buckets: HashMap::new(),
                swept: now,
            }),
        }
    }

    fn len(&self) -> usize {
        self.map.lock().expect("bucket lock").buckets.len()
    }
}

/// A refused frame: which bucket lacked its cost, and how long until it
/// holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub bucket: Limited,
    pub wait: Duration,
}

/// Which bucket refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Connection,
    User,
    Address,
}

impl Limited {
    /// The metric label.
    pub fn bucket(self) -> &'static str {
        match self {
            Limited::Connection => "connection",
            Limited::User => "user",
            Limited::Address => "address",
        }
    }

    /// The `message` of the `rate_limited` error.
    pub fn message(self) -> &'static str {
        match self {
            Limited::Connection => "too many frames on this connection; slow down",
            Limited::User => "too many frames from this user; slow down",
            Limited::Address => "too many frames from this address; slow down",
        }
    }
}

/// The costs and the shared buckets of one instance.
pub struct Costs {
    pub frames: FrameCosts,
    pub connection: Rate,
    users: SharedBuckets<String>,
    addresses: SharedBuckets<AddressKey>,
}

/// What a connection pays with: its own bucket and its address's key (its
/// user's key is the user id).
pub struct Payer {
    pub bucket: Bucket,
    pub address: AddressKey,
}

impl Costs {
    pub fn new(frames: FrameCosts, connection: Rate, user: Rate, address: Rate) -> Costs {
        let now = Instant::now();
        Costs {
            frames,
            connection,
            users: SharedBuckets::new(user, now),
            addresses: SharedBuckets::new(address, now),
        }
    }

    /// Takes `units` from the payer's three buckets if all hold them;
    /// otherwise takes nothing and says which refused.
    pub fn admit(&self, payer: &mut Payer, user: &str, units: u32) -> Result<(), Refusal> {
        self.pay(payer, user, units, Instant::now(), false)
    }

    /// Takes `units` after the work, into debt if need be.
    pub fn charge(&self, payer: &mut Payer, user: &str, units: u32) {
        if units > 0 {
            let _ = self.pay(payer, user, units, Instant::now(), true);
        }
    }

    fn pay(
        &self,
        payer: &mut Payer,
        user: &str,
        units: u32,
        now: Instant,
        debt: bool,
    ) -> Result<(), Refusal> {
        if !debt && !payer.bucket.holds(self.connection, units, now) {
            return Err(Refusal {
                bucket: Limited::Connection,
                wait: payer.bucket.wait(self.connection, units, now),
            });
        }
        // One lock at a time, always users before addresses.
        {
            let mut users = self.users.map.lock().expect("bucket lock");
            // Looked up before inserting: no allocation for a known user.
            if !users.buckets.contains_key(user) {
                users.buckets.insert(user.to_owned(), Bucket::new(now));
            }
            let bucket = users.bucket(user, now);
            if !debt && !bucket.holds(self.users.rate, units, now) {
                return Err(Refusal {
                    bucket: Limited::User,
                    wait: bucket.wait(self.users.rate, units, now),
                });
            }
            let mut addresses = self.addresses.map.lock().expect("bucket lock");
            addresses
                .buckets
                .entry(payer.address)
                .or_insert(Bucket::new(now));
            let address = addresses.bucket(&payer.address, now);
            if !debt && !address.holds(self.addresses.rate, units, now) {
                return Err(Refusal {
                    bucket: Limited::Address,
                    wait: address.wait(self.addresses.rate, units, now),
                });
            }
            address.charge(self.addresses.rate, units, now);
            bucket.charge(self.users.rate, units, now);
        }
        payer.bucket.charge(self.connection, units, now);
        Ok(())
    }

    /// A new connection from `address` (a WebSocket upgrade) takes
    /// `connect` units from the address's bucket, so reconnect storms are
    /// bounded like frames; refused, the upgrade is answered HTTP 429.
    pub fn connect(&self, address: AddressKey) -> Result<(), Refusal> {
        let units = self.frames.connect;
        if units == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut addresses = self.addresses.map.lock().expect("bucket lock");
        addresses.buckets.entry(address).or_insert(Bucket::new(now));
        let bucket = addresses.bucket(&address, now);
        if !bucket.holds(self.addresses.rate, units, now) {
            return Err(Refusal {
                bucket: Limited::Address,
                wait: bucket.wait(self.addresses.rate, units, now),
            });
        }
        bucket.charge(self.addresses.rate, units, now);
        Ok(())
    }

    /// Keys held in the shared maps (users, addresses): what an attacker's
    /// many names cost in memory, for tests and metrics.
    pub fn shared_keys(&self) -> (usize, usize) {
        (self.users.len(), self.addresses.len())
    }
}

impl<K: Hash + Eq> Swept<K> {
    /// The bucket of `key` (present: the caller inserted it), after
    /// forgetting the full buckets if a sweep is due. `key` itself was
    /// just inserted or used, so it is never the one swept.
    fn bucket<Q>(&mut self, key: &Q, now: Instant) -> &mut Bucket
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if now.saturating_duration_since(self.swept) >= SWEEP_EVERY {
            self.buckets
                .retain(|k, b| k.borrow() == key || !b.is_full(now));
            if self.buckets.capacity() > 2 * self.buckets.len() + 64 {
                self.buckets.shrink_to_fit();
            }
            self.swept = now;
        }
        self.buckets.get_mut(key).expect("the caller inserted it")
    }
}

/// The client's address: the TCP `peer`, or the `X-Real-IP` (`real_ip`) a
/// `trusted` proxy (the peer is in `--trusted-proxies`) set.
pub fn client_ip(trusted: bool, peer: IpAddr, real_ip: Option<&str>) -> IpAddr {
    if trusted {
        if let Some(ip) = real_ip.and_then(|v| v.trim().parse().ok()) {
            return ip;
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_sec: 10,
        burst: 20,
    };

    #[test]
    fn a_bucket_admits_its_burst_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        for _ in 0..20 {
            assert!(b.holds(RATE, 1, t0));
            b.charge(RATE, 1, t0);
        }
        assert!(!b.holds(RATE, 1, t0), "burst of 20 spent");
        let later = t0 + Duration::from_millis(100);
        assert!(b.holds(RATE, 1, later), "one unit back after 1/10 s");
        assert!(!b.holds(RATE, 2, later), "but not two");
    }

    #[test]
    fn the_wait_is_how_long_until_the_bucket_holds_the_units() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        assert_eq!(b.wait(RATE, 20, t0), Duration::ZERO);
        b.charge(RATE, 20, t0);
        assert_eq!(b.wait(RATE, 1, t0), Duration::from_millis(100));
        assert_eq!(b.wait(RATE, 3, t0), Duration::from_millis(300));
    }

    #[test]
    fn a_charge_after_the_work_puts_the_bucket_into_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        b.charge(RATE, 50, t0);
        // 50 taken from a burst of 20: 30 units of debt, 3 s at 10/s, and
        // one more unit is back only 0.1 s after that.
        assert!(!b.holds(RATE, 1, t0 + Duration::from_millis(3050)));
        assert!(b.holds(RATE, 1, t0 + Duration::from_millis(3150)));
        assert!(b.is_full(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_key_and_mapped_ipv4_is_ipv4() {
        let a = AddressKey::of("2001:db8:1:2::1".parse().unwrap());
        let b = AddressKey::of("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        let c = AddressKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            AddressKey::of("::ffff:192.0.2.7".parse().unwrap()),
            AddressKey::of("192.0.2.7".parse().unwrap())
        );
        assert_ne!(
            AddressKey::of("192.0.2.7".parse().unwrap()),
            AddressKey::of("192.0.2.8".parse().unwrap())
        );
    }

    fn costs(user: Rate, address: Rate) -> Costs {
        Costs::new(FrameCosts::parse("", 1024).unwrap(), RATE, user, address)
    }

    fn payer(ip: &str) -> Payer {
        Payer {
            bucket: Bucket::new(Instant::now()),
            address: AddressKey::of(ip.parse().unwrap()),
        }
    }

    #[test]
    fn a_user_with_many_connections_is_limited_by_the_user_bucket() {
        let c = costs(
            Rate {
                per_sec: 1,
                burst: 30,
            },
            Rate {
                per_sec: 1000,
                burst: 1000,
            },
        );
        let mut tabs: Vec<Payer> = (0..3).map(|_| payer("10.0.0.1")).collect();
        let mut admitted = 0;
        for _ in 0..20 {
            for tab in &mut tabs {
                if c.admit(tab, "u_1", 1).is_ok() {
                    admitted += 1;
                }
            }
        }
        // Three tabs of 20 each would be 60; the user has 30.
        assert_eq!(admitted, 30);
        let mut other = payer("10.0.0.1");
        assert_eq!(
            c.admit(&mut other, "u_2", 1),
            Ok(()),
            "another user is not limited"
        );
        let refused = c.admit(&mut tabs[0], "u_1", 1).unwrap_err();
        assert_eq!(refused.bucket, Limited::User);
        // One unit back at 1/s: within a second.
        assert!(refused.wait > Duration::ZERO && refused.wait <= Duration::from_secs(1));
    }

    #[test]
    fn many_users_of_one_address_are_limited_by_the_address_bucket_and_a_refusal_takes_nothing() {
        let c = costs(
            Rate {
                per_sec: 1000,
                burst: 1000,
            },
            Rate {
                per_sec: 1,
                burst: 25,
            },
        );
        let mut admitted = 0;
        for i in 0..10 {
            let mut p = payer("2001:db8::1");
            while c.admit(&mut p, &format!("u_{i}"), 1).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 25);
        // Another host of another /64 is not limited.
        let mut elsewhere = payer("2001:db8:0:1::1");
        assert_eq!(c.admit(&mut elsewhere, "u_x", 1), Ok(()));
        // A refused frame took nothing from the connection's bucket.
        let mut fresh = payer("2001:db8::2");
        assert_eq!(
            c.admit(&mut fresh, "u_y", 1).map_err(|r| r.bucket),
            Err(Limited::Address)
        );
        assert!(fresh.bucket.is_full(Instant::now()));
    }

    #[test]
    fn shared_buckets_are_forgotten_once_full_again() {
        let c = costs(RATE, RATE);
        let t0 = Instant::now();
        for i in 0..1000 {
            let mut p = payer(&format!("10.0.{}.{}", i / 256, i % 256));
            c.pay(&mut p, &format!("u_{i}"), 1, t0, false).unwrap();
        }
        assert_eq!(c.shared_keys(), (1000, 1000));
        // Past the sweep period every one of them is full again.
        let mut p = payer("10.9.9.9");
        c.pay(
            &mut p,
            "u_last",
            1,
            t0 + SWEEP_EVERY + Duration::from_secs(1),
            false,
        )
        .unwrap();
        assert_eq!(c.shared_keys(), (1, 1));
    }

    #[test]
    fn frame_costs_parse_over_the_defaults_and_refuse_what_has_no_cost() {
        let c = FrameCosts::parse("join=5, rooms=0", 4096).unwrap();
        assert_eq!((c.join, c.rooms, c.send, c.ping), (5, 0, 1, 1));
        assert_eq!(c.of_reply(4095), 0);
        assert_eq!(c.of_reply(3 * 4096 + 1), 3);
        assert!(FrameCosts::parse("hello=1", 1).is_err());
        assert!(FrameCosts::parse("join", 1).is_err());
        assert!(FrameCosts::parse("join=-1", 1).is_err());
    }
}
