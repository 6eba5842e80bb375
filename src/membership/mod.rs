//! Elastic membership: a sans-IO SWIM state machine with Lifeguard's refinements.
//!
//! A [`Membership`] knows this node's own record and every member it has heard of, each a
//! (node id, incarnation, address) with a state ([`MemberState`]). It is fed the messages of
//! verified [`FrameKind::Membership`](crate::wire::FrameKind::Membership) frames and the
//! time, and is asked for messages to send and for membership changes. The caller (the driver,
//! or a simulation) calls, in each turn:
//!
//! 1. [`handle_message`](Membership::handle_message) for each membership message received
//!    (only after its frame passed the endpoint's checks: tag, cluster, replay);
//! 2. [`handle_timeout`](Membership::handle_timeout) once [`poll_timeout`](Membership::poll_timeout)
//!    has passed (probes, suspicion deadlines, join retries);
//! 3. [`poll_message`](Membership::poll_message) until `None`, sending each message to its
//!    address, and [`poll_event`](Membership::poll_event) until `None`.
//!
//! # The protocol
//!
//! Every probe interval (200 ms by default) a node pings the next member of a shuffled
//! round-robin list. No answer within the probe timeout: it asks `k` (3) other members to
//! ping it on its behalf. No answer, direct or relayed, by the end of the interval: the node
//! suspects the member and gossips the suspicion. A suspected member that hears of it
//! refutes by raising its counter and gossiping that it is alive; one not refuted by the end
//! of the suspicion timeout is declared failed. Updates travel piggybacked on probes and
//! answers, at most [`MembershipConfig::max_piggyback`] per message, each sent
//! `retransmit_mult × ⌈log10(n + 1)⌉` times, so the traffic of a node per interval does not
//! grow with the cluster.
//!
//! From Lifeguard: a node whose probes keep failing (its own fault, perhaps: overloaded or
//! paused) raises a local health score that stretches its probe interval and timeout; the
//! suspicion timeout starts at `suspicion_max_mult ×` its minimum and shrinks towards the
//! minimum (`suspicion_mult × log10(n) × interval`) as other members confirm the suspicion.
//!
//! Updates are ordered by (incarnation, counter): the incarnation is herald's, new at each
//! start of the node, so a restarted node overrides what is known of its previous run; the
//! counter is raised by the node itself to refute a suspicion.
//!
//! A joining node sends [`GossipKind::Join`] to its seeds (static addresses, or a DNS name's
//! addresses) until one answers with the member list; one reachable seed is enough.

mod probe;
mod resolve;
pub mod sim;
mod state;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[cfg(feature = "nats")]
pub(crate) use resolve::spawn_lookup;
pub use resolve::{DnsSeeds, Resolver, SystemResolver};

use crate::wire::{Gossip, GossipMessage, MAX_ENTRIES};
pub use crate::wire::{GossipKind, MemberRecord, MemberState};

/// The membership settings. [`MembershipConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's id.
    pub node: u64,
    /// This node's incarnation (herald's, new at each start).
    pub incarnation: u64,
    /// The address other nodes reach this node at, if known; otherwise they use the source
    /// address of its messages.
    pub advertise: Option<SocketAddr>,
    /// Where to ask to join: static seeds (and today's `udp.peers`).
    pub seeds: Vec<SocketAddr>,
    /// A multicast group every node listens on, where the network has one: asked to join,
    /// like a seed, while this node knows no live member, so nodes find each other with no
    /// seed at all. (Not asked in the periodic exchange: every member would answer.)
    pub group: Option<SocketAddr>,
    /// How often a member is probed. Default 200 ms.
    pub probe_interval: Duration,
    /// How long a direct probe waits for its answer before asking others. Default 100 ms.
    pub probe_timeout: Duration,
    /// How many members are asked to probe on this node's behalf. Default 3.
    pub indirect_probes: usize,
    /// The minimum suspicion timeout is `suspicion_mult × max(1, log10(n)) × probe_interval`.
    /// Default 4.
    pub suspicion_mult: u32,
    /// A suspicion with no confirmation lasts this many times the minimum. Default 3.
    pub suspicion_max_mult: u32,
    /// Each update is sent `retransmit_mult × ⌈log10(n + 1)⌉` times. Default 6.
    pub retransmit_mult: u32,
    /// The most updates piggybacked on one message. Default 24.
    pub max_piggyback: usize,
    /// The highest local health score (Lifeguard); intervals stretch up to `1 + this` times.
    /// Default 8.
    pub max_awareness: u32,
    /// How often a node with no live member asks its seeds again. Default 1 s.
    pub join_retry: Duration,
    /// How long failed and departed members are remembered (so stale gossip cannot revive
    /// them). Default 60 s.
    pub tombstone: Duration,
    /// The most members (live or remembered) tracked. Default 4096.
    pub max_members: usize,
    /// How often (give or take a quarter) a node asks one live member, and one seed that is
    /// not a live member, for their whole member list, so that updates gossip lost and
    /// partitions longer than `tombstone` still converge. Zero turns it off. Default 30 s.
    pub sync_interval: Duration,
    /// Seed of the random choices (probe order, intermediaries).
    pub rng_seed: u64,
}

impl MembershipConfig {
    /// The defaults for a node.
    pub fn new(node: u64, incarnation: u64) -> Self {
        Self {
            node,
            incarnation,
            advertise: None,
            seeds: Vec::new(),
            group: None,
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            indirect_probes: 3,
            suspicion_mult: 4,
            suspicion_max_mult: 3,
            retransmit_mult: 6,
            max_piggyback: 24,
            max_awareness: 8,
            join_retry: Duration::from_secs(1),
            tombstone: Duration::from_secs(60),
            max_members: 4096,
            sync_interval: Duration::from_secs(30),
            rng_seed: node ^ incarnation.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// A membership message: what [`poll_message`](Membership::poll_message) gives to send and
/// [`handle_message`](Membership::handle_message) takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What it is.
    pub kind: GossipKind,
    /// Probe number.
    pub seq: u32,
    /// The node it is about (0: unknown).
    pub target_node: u64,
    /// That node's incarnation (0: unknown).
    pub target_incarnation: u64,
    /// That node's address.
    pub target_addr: Option<SocketAddr>,
    /// Updates (at most [`MAX_ENTRIES`]).
    pub entries: Vec<MemberRecord>,
}

impl Message {
    /// The message of a checked membership frame body.
    pub fn from_gossip(g: &Gossip<'_>) -> Self {
        Self {
            kind: g.kind(),
            seq: g.seq(),
            target_node: g.target_node(),
            target_incarnation: g.target_incarnation(),
            target_addr: g.target_addr(),
            entries: g.entries().collect(),
        }
    }

    /// The message as the frame writer takes it.
    pub fn as_wire(&self) -> GossipMessage<'_> {
        let n = self.entries.len().min(MAX_ENTRIES);
        GossipMessage {
            kind: self.kind,
            seq: self.seq,
            target_node: self.target_node,
            target_incarnation: self.target_incarnation,
            target_addr: self.target_addr,
            entries: &self.entries[..n],
        }
    }

    fn new(kind: GossipKind, seq: u32, target: Option<&MemberRecord>) -> Self {
        Self {
            kind,
            seq,
            target_node: target.map_or(0, |t| t.node),
            target_incarnation: target.map_or(0, |t| t.incarnation),
            target_addr: target.and_then(|t| t.addr),
            entries: Vec::new(),
        }
    }
}

/// What changed in the membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberEventKind {
    /// A node joined (or rejoined with a new incarnation).
    Joined,
    /// A node left gracefully.
    Left,
    /// A node was declared failed.
    Failed,
    /// A node is suspected (it may still refute).
    Suspect,
    /// A suspected node refuted the suspicion.
    Alive,
}

/// A membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberEvent {
    /// What happened.
    pub kind: MemberEventKind,
    /// The member's node id.
    pub node: u64,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its address, if known.
    pub addr: Option<SocketAddr>,
}

/// Counters kept by a [`Membership`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Members that joined (or rejoined).
    pub joins: u64,
    /// Members that left gracefully.
    pub leaves: u64,
    /// Members declared failed (by this node or by gossip it accepted).
    pub failures: u64,
    /// Suspicions of other members refuted before they were declared failed.
    pub refuted: u64,
    /// Suspicions of this node that it refuted.
    pub self_refutations: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Updates sent piggybacked or in member lists.
    pub entries_sent: u64,
    /// Messages received.
    pub messages_received: u64,
}

#[derive(Clone, Debug)]
struct Member {
    record: MemberRecord,
    /// When the state last changed.
    since: Instant,
    suspicion: Option<state::Suspicion>,
}

/// An update waiting to be gossiped.
#[derive(Clone, Copy, Debug)]
struct Broadcast {
    record: MemberRecord,
    sent: u32,
}

/// The sans-IO membership state machine; see the [module documentation](self).
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    me: MemberRecord,
    members: BTreeMap<u64, Member>,
    broadcasts: Vec<Broadcast>,
    out: VecDeque<(SocketAddr, Message)>,
    events: VecDeque<MemberEvent>,
    probe: probe::Prober,
    stats: MembershipStats,
    /// Extra seed addresses (from DNS), replaced at each resolution.
    discovered: Vec<SocketAddr>,
    next_join: Option<Instant>,
    /// When a node that just joined asks one more member for its list (once): the seed's
    /// answer lacks whoever joined at the same time.
    resync_at: Option<Instant>,
    /// Whether this node has had a member list answer yet.
    synced: bool,
    /// When a member remembered as failed is next asked to join (healing a partition: both
    /// sides may have declared the other failed, and nobody probes a failed member).
    next_reconnect: Instant,
    /// When the next full-state exchange is due (see `sync.rs`).
    next_sync: Instant,
    leaving: bool,
    rng: u64,
}

impl Membership {
    /// A node that starts at `now`, not yet joined: its first [`handle_timeout`](Self::handle_timeout)
    /// asks the seeds.
    pub fn new(config: MembershipConfig, now: Instant) -> Self {
        let me = MemberRecord {
            node: config.node,
            incarnation: config.incarnation,
            counter: 0,
            state: MemberState::Alive,
            addr: config.advertise,
        };
        let rng = config.rng_seed | 1;
        let mut m = Self {
            probe: probe::Prober::new(now),
            me,
            members: BTreeMap::new(),
            broadcasts: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: MembershipStats::default(),
            discovered: Vec::new(),
            next_join: Some(now),
            resync_at: None,
            synced: false,
            next_reconnect: now,
            next_sync: now,
            leaving: false,
            rng,
            config,
        };
        m.next_sync = m.next_sync_after(now, true);
        m
    }

    /// The settings.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// This node's own record.
    pub fn me(&self) -> &MemberRecord {
        &self.me
    }

    /// The counters.
    pub fn stats(&self) -> &MembershipStats {
        &self.stats
    }

    /// The members this node considers alive or suspect, itself included, by node id.
    pub fn members(&self) -> Vec<MemberRecord> {
        let mut all: Vec<MemberRecord> = std::iter::once(self.me)
            .chain(
                self.members
                    .values()
                    .map(|m| m.record)
                    .filter(|r| is_live(r.state)),
            )
            .collect();
        all.sort_by_key(|r| r.node);
        all
    }

    /// Every member known, live or remembered as failed or departed (not this node).
    pub fn known(&self) -> impl Iterator<Item = &MemberRecord> + '_ {
        self.members.values().map(|m| &m.record)
    }

    /// The state of one member, if known.
    pub fn state_of(&self, node: u64) -> Option<MemberState> {
        if node == self.me.node {
            return Some(self.me.state);
        }
        self.members.get(&node).map(|m| m.record.state)
    }

    /// Whether `node` is a live (alive or suspect) member.
    pub fn is_member(&self, node: u64) -> bool {
        self.members
            .get(&node)
            .is_some_and(|m| is_live(m.record.state))
    }

    /// The addresses of the live members other than this node, sorted: the peers the
    /// transports send to.
    pub fn live_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| is_live(m.record.state))
            .filter_map(|m| m.record.addr)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        addrs
    }

    /// Counts of alive and suspect members (this node included in alive).
    pub fn counts(&self) -> (usize, usize) {
        let suspect = self
            .members
            .values()
            .filter(|m| m.record.state == MemberState::Suspect)
            .count();
        let alive = self
            .members
            .values()
            .filter(|m| m.record.state == MemberState::Alive)
            .count();
        (alive + 1, suspect)
    }

    /// Replaces the addresses found by discovery (a DNS name's addresses). New ones that are
    /// not a known member's are asked to join at once.
    pub fn set_discovered(&mut self, now: Instant, addrs: Vec<SocketAddr>) {
        let known: Vec<SocketAddr> = self
            .members
            .values()
            .filter_map(|m| m.record.addr)
            .collect();
        for addr in &addrs {
            if !self.discovered.contains(addr)
                && !known.contains(addr)
                && Some(*addr) != self.me.addr
            {
                self.send_join(*addr);
            }
        }
        self.discovered = addrs;
        if self.live_count() == 0 {
            self.next_join = Some(now);
        }
    }

    /// The next membership change.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// The next message to send, and where.
    #[must_use]
    pub fn poll_message(&mut self) -> Option<(SocketAddr, Message)> {
        let (addr, msg) = self.out.pop_front()?;
        self.stats.messages_sent += 1;
        self.stats.entries_sent += msg.entries.len() as u64;
        Some((addr, msg))
    }

    /// Leaves the cluster gracefully: every live member is told at once. Later calls to
    /// [`handle_timeout`](Self::handle_timeout) probe no more.
    pub fn leave(&mut self) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.me.state = MemberState::Left;
        self.me.counter = self.me.counter.saturating_add(1);
        let addrs = self.live_addrs();
        for addr in addrs {
            let mut msg = Message::new(GossipKind::Notify, 0, None);
            msg.entries.push(self.me);
            self.out.push_back((addr, msg));
        }
    }

    /// Whether [`leave`](Self::leave) was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    fn live_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| is_live(m.record.state))
            .count()
    }

    /// A uniform random number below `n` (`n > 0`), from an xorshift generator.
    fn random(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        usize::try_from(self.rng % (n.max(1) as u64)).unwrap_or(0)
    }

    fn send_join(&mut self, addr: SocketAddr) {
        let mut msg = Message::new(GossipKind::Join, 0, None);
        msg.entries.push(self.me);
        self.out.push_back((addr, msg));
    }

    /// Queues `msg` to `addr`, with piggybacked updates.
    fn send(&mut self, addr: SocketAddr, mut msg: Message) {
        self.piggyback(&mut msg);
        self.out.push_back((addr, msg));
    }

    /// The number of times each update is sent.
    fn retransmit_limit(&self) -> u32 {
        let n = self.live_count() + 1;
        let log = (n as f64 + 1.0).log10().ceil().max(1.0);
        self.config.retransmit_mult.saturating_mul(log as u32)
    }

    fn piggyback(&mut self, msg: &mut Message) {
        let room = self
            .config
            .max_piggyback
            .min(MAX_ENTRIES.saturating_sub(msg.entries.len()));
        if room == 0 || self.broadcasts.is_empty() {
            return;
        }
        // The least sent first: new updates spread fastest.
        self.broadcasts.sort_by_key(|b| b.sent);
        let limit = self.retransmit_limit();
        for b in self.broadcasts.iter_mut().take(room) {
            msg.entries.push(b.record);
            b.sent += 1;
        }
        self.broadcasts.retain(|b| b.sent < limit);
    }

    /// Queues an update for gossip, replacing an older one about the same node.
    fn broadcast(&mut self, record: MemberRecord) {
        self.broadcasts.retain(|b| b.record.node != record.node);
        self.broadcasts.push(Broadcast { record, sent: 0 });
    }

    fn event(&mut self, kind: MemberEventKind, r: &MemberRecord) {
        match kind {
            MemberEventKind::Joined => self.stats.joins += 1,
            MemberEventKind::Left => self.stats.leaves += 1,
            MemberEventKind::Failed => self.stats.failures += 1,
            MemberEventKind::Alive => self.stats.refuted += 1,
            MemberEventKind::Suspect => {}
        }
        self.events.push_back(MemberEvent {
            kind,
            node: r.node,
            incarnation: r.incarnation,
            addr: r.addr,
        });
    }
}

fn is_live(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}
