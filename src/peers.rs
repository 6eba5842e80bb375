//! Whom a node hears, per source address: when it last heard, the frames it accepted and the
//! frames it dropped by reason. This is what tells an operator that a node is alive but signs
//! with another secret, rather than a bare drop counter; `herald status` and the
//! `herald_peers` gauges read it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::Reject;
use crate::transport::PeerAddr;

/// How a source of frames looks from this node (see [`Router::peers`](crate::Router::peers)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerState {
    /// A frame from it was accepted within the dead timeout.
    Alive,
    /// Frames from it were dropped within the dead timeout and none accepted: it is there,
    /// but something is wrong (the drop reasons and [`PeerInfo::hint`] say what).
    Rejected,
    /// Nothing from it within the dead timeout.
    Silent,
}

impl PeerState {
    /// The state's short name, the `state` label of `herald_peers`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Rejected => "rejected",
            Self::Silent => "silent",
        }
    }

    /// Every state, in the order of [`name`](Self::name)'s labels in the metrics.
    pub const ALL: [Self; 3] = [Self::Alive, Self::Rejected, Self::Silent];
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One source of frames as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The transport the frames came over (`"udp"`, `"tcp"`, `"nats"`, ...).
    pub transport: String,
    /// Where they came from, as the transport tells it.
    pub addr: PeerAddr,
    /// The node id of the last frame accepted from there, if any was.
    pub node: Option<u64>,
    /// Alive, rejected or silent, judged against the dead timeout.
    pub state: PeerState,
    /// How long ago anything (accepted or dropped) came from there.
    pub last_heard: Duration,
    /// How long ago a frame from there was last accepted, if ever.
    pub last_accepted: Option<Duration>,
    /// Frames accepted from there (data, heartbeats, control and membership).
    pub accepted: u64,
    /// Frames dropped, by reason's short name, only reasons that occurred.
    pub drops: Vec<(&'static str, u64)>,
    /// What an operator can do, when the drops point to a configuration mistake (another
    /// secret, key or cluster name, clock skew).
    pub hint: Option<&'static str>,
}

/// What the driver remembers of one source.
#[derive(Debug)]
struct Heard {
    last: Instant,
    last_accepted: Option<Instant>,
    last_dropped: Option<Instant>,
    node: Option<u64>,
    accepted: u64,
    /// (reason index, count), only reasons seen: a source rarely shows more than two.
    drops: Vec<(u16, u64)>,
}

/// The table the driver keeps, bounded: past [`PeerTable::MAX`] sources (a flood of forged
/// source addresses), the half heard least recently is forgotten.
#[derive(Debug)]
pub(crate) struct PeerTable {
    map: HashMap<(usize, PeerAddr), Heard>,
    census_at: Option<Instant>,
}

impl PeerTable {
    /// The most sources remembered.
    pub(crate) const MAX: usize = 1024;
    /// How often the driver recounts the states for the gauges.
    pub(crate) const CENSUS_EVERY: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Self {
            map: HashMap::new(),
            census_at: None,
        }
    }

    fn entry(&mut self, transport: usize, from: PeerAddr, now: Instant) -> &mut Heard {
        if self.map.len() >= Self::MAX && !self.map.contains_key(&(transport, from)) {
            self.forget_oldest_half();
        }
        let heard = self.map.entry((transport, from)).or_insert(Heard {
            last: now,
            last_accepted: None,
            last_dropped: None,
            node: None,
            accepted: 0,
            drops: Vec::new(),
        });
        heard.last = now;
        heard
    }

    fn forget_oldest_half(&mut self) {
        let mut times: Vec<Instant> = self.map.values().map(|h| h.last).collect();
        times.sort_unstable();
        let cut = times[times.len() / 2];
        self.map.retain(|_, h| h.last > cut);
    }

    /// A frame from `from` over transport `transport` was accepted, sent by `node`.
    pub(crate) fn accepted(&mut self, transport: usize, from: PeerAddr, node: u64, now: Instant) {
        let heard = self.entry(transport, from, now);
        heard.accepted += 1;
        heard.last_accepted = Some(now);
        heard.node = Some(node);
    }

    /// A frame from `from` was dropped for `reject`.
    pub(crate) fn dropped(
        &mut self,
        transport: usize,
        from: PeerAddr,
        reject: Reject,
        now: Instant,
    ) {
        if matches!(reject, Reject::OwnFrame) {
            return; // this node's own multicast, looped back: not a peer
        }
        let index = u16::try_from(reject.index()).unwrap_or(u16::MAX);
        let heard = self.entry(transport, from, now);
        heard.last_dropped = Some(now);
        match heard.drops.iter_mut().find(|(i, _)| *i == index) {
            Some((_, n)) => *n += 1,
            None => heard.drops.push((index, 1)),
        }
    }

    /// Whether the gauges are due for a recount; if so, notes that they are being recounted.
    pub(crate) fn census_due(&mut self, now: Instant) -> bool {
        match self.census_at {
            Some(at) if now.saturating_duration_since(at) < Self::CENSUS_EVERY => false,
            _ => {
                self.census_at = Some(now);
                true
            }
        }
    }

    /// How many sources are in each state, in the order of [`PeerState::ALL`].
    pub(crate) fn census(&self, now: Instant, dead: Duration) -> [u64; 3] {
        let mut counts = [0; 3];
        for heard in self.map.values() {
            let i = PeerState::ALL
                .iter()
                .position(|s| *s == heard.state(now, dead))
                .unwrap_or(2);
            counts[i] += 1;
        }
        counts
    }

    /// Every source, most recently heard first; `names` are the transports' names.
    pub(crate) fn list(&self, now: Instant, dead: Duration, names: &[String]) -> Vec<PeerInfo> {
        let mut list: Vec<(&(usize, PeerAddr), &Heard)> = self.map.iter().collect();
        list.sort_by_key(|(_, h)| std::cmp::Reverse(h.last));
        list.into_iter()
            .map(|(&(transport, addr), h)| {
                let drops: Vec<(&'static str, u64)> = h
                    .drops
                    .iter()
                    .filter_map(|&(i, n)| Reject::names().nth(usize::from(i)).map(|name| (name, n)))
                    .collect();
                let state = h.state(now, dead);
                PeerInfo {
                    transport: names.get(transport).cloned().unwrap_or_default(),
                    addr,
                    node: h.node,
                    state,
                    last_heard: now.saturating_duration_since(h.last),
                    last_accepted: h.last_accepted.map(|t| now.saturating_duration_since(t)),
                    accepted: h.accepted,
                    hint: drops
                        .iter()
                        .filter(|(name, _)| hint(name).is_some())
                        .max_by_key(|(_, n)| *n)
                        .and_then(|(name, _)| hint(name)),
                    drops,
                }
            })
            .collect()
    }
}

impl Heard {
    fn state(&self, now: Instant, dead: Duration) -> PeerState {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < dead);
        if recent(self.last_accepted) {
            PeerState::Alive
        } else if recent(self.last_dropped) {
            PeerState::Rejected
        } else {
            PeerState::Silent
        }
    }
}

/// What an operator can do about frames dropped for the reason named `reason`, where it
/// points to a configuration mistake rather than to the network.
pub(crate) fn hint(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "bad_tag" => {
            "the sender signs with another secret: copy the cluster's secret file to it, and \
             compare `herald keygen --fingerprint` on both nodes"
        }
        "unknown_key" => {
            "the sender signs with a key id this node does not have: copy the newest secret \
             file to every node (key rotation)"
        }
        "foreign_cluster" => {
            "the sender belongs to another cluster name: check `cluster` in both configs"
        }
        "oversized" => {
            "the sender's max_frame_len is larger than this node's: set the same max_frame_len \
             on every node"
        }
        "clock_skew" => "the clocks of the two nodes differ (or this is a replay): check NTP",
        "security_mode_mismatch" => {
            "the sender runs the other security mode (sign or encrypt): set the same `security` \
             on every node (docs/security.md says how to switch a running cluster)"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::VerifyError;

    fn addr(port: u16) -> PeerAddr {
        PeerAddr::Socket(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    const DEAD: Duration = Duration::from_secs(3);

    #[test]
    fn a_source_with_another_secret_is_rejected_with_the_secret_hint() {
        let mut table = PeerTable::new();
        let t0 = Instant::now();
        table.accepted(0, addr(1), 11, t0);
        for _ in 0..5 {
            table.dropped(0, addr(2), Reject::Auth(VerifyError::BadTag), t0);
        }
        table.dropped(0, addr(9), Reject::OwnFrame, t0);
        let list = table.list(t0, DEAD, &["udp".to_owned()]);
        assert_eq!(list.len(), 2, "own frames are not a peer: {list:?}");
        let good = list.iter().find(|p| p.addr == addr(1)).unwrap();
        assert_eq!(
            (good.state, good.node, good.accepted),
            (PeerState::Alive, Some(11), 1)
        );
        assert_eq!(good.hint, None);
        let bad = list.iter().find(|p| p.addr == addr(2)).unwrap();
        assert_eq!(bad.state, PeerState::Rejected);
        assert_eq!(bad.drops, vec![("bad_tag", 5)]);
        assert!(bad.hint.unwrap().contains("another secret"));
        assert_eq!(bad.transport, "udp");
        assert_eq!(table.census(t0, DEAD), [1, 1, 0]);
        // Later, nothing more came: both are silent.
        let later = t0 + DEAD * 2;
        assert_eq!(table.census(later, DEAD), [0, 0, 2]);
        let list = table.list(later, DEAD, &[]);
        assert!(list.iter().all(|p| p.last_heard >= DEAD * 2));
    }

    #[test]
    fn a_flood_of_sources_is_bounded_and_keeps_the_recent_ones() {
        let mut table = PeerTable::new();
        let t0 = Instant::now();
        for i in 0..(PeerTable::MAX as u16 * 3) {
            let now = t0 + Duration::from_micros(u64::from(i));
            table.dropped(0, addr(i), Reject::Auth(VerifyError::BadTag), now);
        }
        let now = t0 + Duration::from_secs(1);
        table.accepted(0, addr(60_000), 5, now);
        assert!(table.map.len() <= PeerTable::MAX);
        let list = table.list(now, DEAD, &[]);
        assert_eq!(list[0].addr, addr(60_000), "most recent first");
        assert!(
            list.iter()
                .any(|p| p.addr == addr(PeerTable::MAX as u16 * 3 - 1))
        );
    }

    #[test]
    fn the_census_is_due_once_a_second() {
        let mut table = PeerTable::new();
        let t0 = Instant::now();
        assert!(table.census_due(t0));
        assert!(!table.census_due(t0 + Duration::from_millis(500)));
        assert!(table.census_due(t0 + Duration::from_secs(1)));
    }
}
