//! Received messages and the merge rules of member updates.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{
    GossipKind, Member, MemberEventKind, MemberRecord, MemberState, Membership, Message, is_live,
};
use crate::wire::MAX_ENTRIES;

/// A running suspicion of a member (Lifeguard's dynamic suspicion timeout).
#[derive(Clone, Debug)]
pub(super) struct Suspicion {
    started: Instant,
    /// Nodes whose messages carried the suspicion.
    confirmed: BTreeSet<u64>,
    /// Confirmations that bring the timeout down to its minimum.
    expected: u32,
    min: Duration,
    max: Duration,
}

impl Suspicion {
    /// When the member is declared failed unless it refutes: from `max` with no confirmation
    /// down to `min` with `expected` of them, on a logarithmic curve.
    pub(super) fn deadline(&self) -> Instant {
        let c = self.confirmed.len() as f64;
        let k = f64::from(self.expected.max(1));
        let frac = ((c + 1.0).ln() / (k + 1.0).ln()).min(1.0);
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let timeout = self.max.as_secs_f64() - span * frac;
        self.started + Duration::from_secs_f64(timeout.max(self.min.as_secs_f64()))
    }
}

/// The order of updates about one node: incarnation first (a restart overrides everything
/// of the run before), then the counter the node raises to refute.
fn key(r: &MemberRecord) -> (u64, u32) {
    (r.incarnation, r.counter)
}

impl Membership {
    /// Takes one membership message, sent by `sender` (node id and incarnation, from the
    /// verified frame header) from address `from`.
    ///
    /// The frame must have passed the endpoint's checks (tag, cluster, strictly rising
    /// timestamps per sender): nothing here authenticates.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: (u64, u64),
        msg: &Message,
    ) {
        self.stats.messages_received += 1;
        let (node, incarnation) = sender;
        if node == 0 || node == self.me.node {
            return;
        }
        // The sender's own entry, if it sent one; otherwise what the header says.
        let own = msg
            .entries
            .iter()
            .find(|e| e.node == node && e.incarnation == incarnation)
            .copied();
        let mut corrections = Message::new(GossipKind::Notify, 0, None);
        for entry in msg.entries.iter().take(MAX_ENTRIES) {
            if let Some(newer) = self.apply(now, entry, node, from) {
                corrections.entries.push(newer);
            }
        }
        if !corrections.entries.is_empty() && !self.leaving {
            // The sender gossips news older than what this node holds: its own copy of the
            // newer news may have stopped spreading (the tail of an epidemic), so it is told.
            self.out.push_back((from, corrections));
        }
        self.heard_from(now, node, incarnation, own, from);
        if self.leaving {
            return;
        }
        match msg.kind {
            GossipKind::Ping => {
                if msg.target_node != 0 && msg.target_node != self.me.node {
                    return;
                }
                let mut ack = Message::new(GossipKind::Ack, msg.seq, Some(&self.me));
                if msg.target_node == 0 {
                    // A seed pinged by address: tell the prober who answers.
                    ack.entries.push(self.me);
                }
                self.send(from, ack);
            }
            GossipKind::Ack => self.handle_ack(now, msg.seq, msg.target_node),
            GossipKind::PingReq => {
                let Some(target) = msg.target_addr else {
                    return;
                };
                self.relay(now, msg, target, from);
            }
            GossipKind::Join => self.answer_join(from),
            GossipKind::Sync if !self.synced => {
                self.synced = true;
                self.resync_at = Some(now + self.config.probe_interval * 5);
            }
            GossipKind::Sync | GossipKind::Notify => {}
        }
    }

    /// A message from a node is news of it: a node never heard of joins; a node remembered
    /// as failed in this incarnation is told so, so that it refutes.
    fn heard_from(
        &mut self,
        now: Instant,
        node: u64,
        incarnation: u64,
        own: Option<MemberRecord>,
        from: SocketAddr,
    ) {
        match self.members.get(&node).map(|m| m.record) {
            Some(known) if known.incarnation > incarnation => {}
            Some(known) if known.incarnation == incarnation => {
                if known.addr.is_none() {
                    let record = MemberRecord {
                        addr: Some(from),
                        ..known
                    };
                    self.set_record(node, record);
                }
                if known.state == MemberState::Failed && !self.leaving {
                    let mut notice = Message::new(GossipKind::Notify, 0, None);
                    notice.entries.push(known);
                    self.out.push_back((from, notice));
                }
            }
            _ => {
                // Unknown, or a newer incarnation than known: a (re)start.
                let record = own.unwrap_or(MemberRecord {
                    node,
                    incarnation,
                    counter: 0,
                    state: MemberState::Alive,
                    addr: Some(from),
                });
                if record.state == MemberState::Alive {
                    let record = MemberRecord {
                        addr: record.addr.or(Some(from)),
                        ..record
                    };
                    let _ = self.apply(now, &record, node, from);
                }
            }
        }
    }

    /// Sends the member list to a joining node, in pages of at most [`MAX_ENTRIES`].
    fn answer_join(&mut self, to: SocketAddr) {
        let mut page = Message::new(GossipKind::Sync, 0, None);
        page.entries.push(self.me);
        let live: Vec<MemberRecord> = self
            .members
            .values()
            .map(|m| m.record)
            .filter(|r| is_live(r.state))
            .collect();
        for r in live {
            if page.entries.len() == MAX_ENTRIES {
                let full = std::mem::replace(&mut page, Message::new(GossipKind::Sync, 0, None));
                self.out.push_back((to, full));
            }
            page.entries.push(r);
        }
        self.out.push_back((to, page));
    }

    /// Merges one update (carried by a message of `via`, from `from`). Returns this node's
    /// record when it is newer than the update and says something else (a correction).
    pub(super) fn apply(
        &mut self,
        now: Instant,
        r: &MemberRecord,
        via: u64,
        from: SocketAddr,
    ) -> Option<MemberRecord> {
        if r.node == self.me.node {
            if self.about_me(r) {
                // Answer the teller at once, besides gossiping: it may be the suspecter.
                let mut refute = Message::new(GossipKind::Notify, 0, None);
                refute.entries.push(self.me);
                self.out.push_back((from, refute));
            }
            return None;
        }
        let Some(m) = self.members.get(&r.node) else {
            if self.members.len() >= self.config.max_members {
                return None;
            }
            // A node never heard of: remember it even when failed or gone, so that older
            // gossip cannot bring it back.
            let addr = r.addr.or((via == r.node).then_some(from));
            let record = MemberRecord { addr, ..*r };
            self.members.insert(
                r.node,
                Member {
                    record,
                    since: now,
                    suspicion: None,
                },
            );
            if is_live(r.state) {
                self.event(MemberEventKind::Joined, &record);
                self.probe.add(r.node);
            }
            if r.state == MemberState::Suspect {
                self.start_suspicion(now, r.node, via);
            }
            self.broadcast(record);
            return None;
        };
        let old = m.record;
        let newer = key(r) > key(&old);
        let accept = match (r.state, old.state) {
            (MemberState::Alive, _) => newer,
            (MemberState::Suspect, MemberState::Alive) => key(r) >= key(&old),
            (MemberState::Suspect, MemberState::Suspect) => {
                if key(r) == key(&old) {
                    self.confirm(r.node, via);
                }
                newer
            }
            (MemberState::Suspect, _) => newer,
            (
                MemberState::Failed | MemberState::Left,
                MemberState::Alive | MemberState::Suspect,
            ) => key(r) >= key(&old),
            (MemberState::Failed | MemberState::Left, _) => newer,
        };
        if !accept {
            let stale = key(&old) > key(r) && old.state != r.state;
            return stale.then_some(old);
        }
        let record = MemberRecord {
            addr: r.addr.or(old.addr),
            ..*r
        };
        self.set_record(r.node, record);
        self.broadcast(record);
        let restarted = r.incarnation > old.incarnation;
        match r.state {
            MemberState::Alive if restarted || !is_live(old.state) => {
                self.probe.add(r.node);
                self.event(MemberEventKind::Joined, &record);
            }
            MemberState::Alive if old.state == MemberState::Suspect => {
                self.event(MemberEventKind::Alive, &record);
            }
            MemberState::Alive => {}
            MemberState::Suspect => {
                if restarted || !is_live(old.state) {
                    self.probe.add(r.node);
                    self.event(MemberEventKind::Joined, &record);
                }
                self.start_suspicion(now, r.node, via);
            }
            MemberState::Failed | MemberState::Left if is_live(old.state) => {
                let kind = if r.state == MemberState::Left {
                    MemberEventKind::Left
                } else {
                    MemberEventKind::Failed
                };
                self.probe.remove(r.node);
                self.event(kind, &record);
            }
            MemberState::Failed | MemberState::Left => {}
        }
        None
    }

    /// Gossip about this node: a suspicion or a failure verdict of this run is refuted.
    /// Returns whether the teller should hear this node's current record (it refuted, or the
    /// teller holds a verdict older than this node's last refutation).
    fn about_me(&mut self, r: &MemberRecord) -> bool {
        if r.incarnation != self.me.incarnation || r.state == MemberState::Alive || self.leaving {
            return false;
        }
        if key(r) < key(&self.me) {
            // A verdict on a counter already refuted: the teller (and maybe others) missed
            // the refutation, which has stopped spreading; spread it again.
            self.broadcast(self.me);
            return true;
        }
        self.me.counter = r.counter.saturating_add(1);
        self.stats.self_refutations += 1;
        self.broadcast(self.me);
        true
    }

    /// Replaces a member's record, keeping its suspicion only while it stays suspect.
    fn set_record(&mut self, node: u64, record: MemberRecord) {
        if let Some(m) = self.members.get_mut(&node) {
            if m.record.state != record.state {
                m.since = self.probe.last_turn();
            }
            // A suspicion holds for one (incarnation, counter): a newer one starts afresh.
            if record.state != MemberState::Suspect || key(&record) != key(&m.record) {
                m.suspicion = None;
            }
            m.record = record;
        }
    }

    /// Suspects a member this node could not reach (from its own probe).
    pub(super) fn suspect(&mut self, now: Instant, node: u64) {
        let Some(m) = self.members.get(&node) else {
            return;
        };
        if m.record.state != MemberState::Alive {
            return;
        }
        let record = MemberRecord {
            state: MemberState::Suspect,
            ..m.record
        };
        self.set_record(node, record);
        self.broadcast(record);
        self.start_suspicion(now, node, self.me.node);
        // Tell the suspect itself first (Lifeguard's buddy system): it refutes sooner.
        if let Some(addr) = record.addr {
            let mut notice = Message::new(GossipKind::Notify, 0, None);
            notice.entries.push(record);
            self.out.push_back((addr, notice));
        }
    }

    fn start_suspicion(&mut self, now: Instant, node: u64, via: u64) {
        let n = self.live_count() + 1;
        let interval = self.config.probe_interval;
        let scale = (n as f64).log10().max(1.0);
        let min = interval.mul_f64(f64::from(self.config.suspicion_mult) * scale);
        let max = min * self.config.suspicion_max_mult.max(1);
        let expected =
            u32::try_from(self.config.indirect_probes.min(n.saturating_sub(2))).unwrap_or(u32::MAX);
        let Some(m) = self.members.get_mut(&node) else {
            return;
        };
        if m.suspicion.is_none() {
            m.suspicion = Some(Suspicion {
                started: now,
                confirmed: BTreeSet::new(),
                expected,
                min,
                max,
            });
            let record = m.record;
            self.event(MemberEventKind::Suspect, &record);
        }
        self.confirm(node, via);
    }

    fn confirm(&mut self, node: u64, via: u64) {
        if via == self.me.node || via == node {
            return;
        }
        if let Some(s) = self
            .members
            .get_mut(&node)
            .and_then(|m| m.suspicion.as_mut())
            && s.confirmed.len() < 64
        {
            s.confirmed.insert(via);
        }
    }

    /// Declares failed every suspect whose deadline passed; forgets old tombstones.
    pub(super) fn expire(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.suspicion.as_ref().is_some_and(|s| s.deadline() <= now))
            .map(|(&n, _)| n)
            .collect();
        for node in due {
            if let Some(m) = self.members.get(&node) {
                let record = MemberRecord {
                    state: MemberState::Failed,
                    ..m.record
                };
                self.set_record(node, record);
                self.broadcast(record);
                self.probe.remove(node);
                self.event(MemberEventKind::Failed, &record);
            }
        }
        let keep = self.config.tombstone;
        self.members.retain(|_, m| {
            is_live(m.record.state) || now.saturating_duration_since(m.since) < keep
        });
    }

    /// The earliest suspicion deadline.
    pub(super) fn next_suspicion_deadline(&self) -> Option<Instant> {
        self.members
            .values()
            .filter_map(|m| m.suspicion.as_ref().map(Suspicion::deadline))
            .min()
    }
}
