//! Probing: the round-robin order, direct and indirect probes, relays for other nodes'
//! indirect probes, and Lifeguard's local health score.

use std::net::SocketAddr;
use std::time::Instant;

use super::{GossipKind, Membership, Message, is_live};

/// A probe of one member in flight.
#[derive(Clone, Copy, Debug)]
struct Probe {
    target: u64,
    seq: u32,
    /// When the direct probe gives up and others are asked; `None` once they were.
    direct_until: Option<Instant>,
    /// When the probe fails.
    until: Instant,
}

/// A ping this node sends on another node's behalf.
#[derive(Clone, Copy, Debug)]
struct Relay {
    seq: u32,
    target: u64,
    origin: SocketAddr,
    origin_seq: u32,
    until: Instant,
}

/// The probing state of a [`Membership`].
#[derive(Debug)]
pub(super) struct Prober {
    order: Vec<u64>,
    index: usize,
    next: Instant,
    current: Option<Probe>,
    relays: Vec<Relay>,
    seq: u32,
    /// Lifeguard's local health: 0 is healthy; each failed probe adds one, each answered
    /// one takes one away. Intervals and timeouts are stretched by `1 + awareness`.
    awareness: u32,
    last: Instant,
}

impl Prober {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            order: Vec::new(),
            index: 0,
            next: now,
            current: None,
            relays: Vec::new(),
            seq: 0,
            awareness: 0,
            last: now,
        }
    }

    pub(super) fn add(&mut self, node: u64) {
        if !self.order.contains(&node) {
            self.order.push(node);
        }
    }

    pub(super) fn remove(&mut self, node: u64) {
        self.order.retain(|&n| n != node);
        if self.current.is_some_and(|p| p.target == node) {
            self.current = None;
        }
    }

    pub(super) fn last_turn(&self) -> Instant {
        self.last
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }
}

impl Membership {
    /// The local health score (Lifeguard): 0 when this node's probes are answered.
    pub fn awareness(&self) -> u32 {
        self.probe.awareness
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = &self.probe;
        let probe = match p.current {
            Some(c) => c.direct_until.unwrap_or(c.until),
            None => p.next,
        };
        [
            Some(probe),
            Some(self.next_reconnect),
            (!self.config.sync_interval.is_zero()).then_some(self.next_sync),
            self.next_join,
            self.resync_at,
            self.next_suspicion_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers: join retries, the probe of the round, indirect probes, suspicion
    /// deadlines. [`poll_message`](Self::poll_message) and [`poll_event`](Self::poll_event)
    /// give what came of it.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.probe.last = now;
        self.expire(now);
        self.probe.relays.retain(|r| r.until > now);
        self.join_if_alone(now);
        if self.leaving {
            return;
        }
        self.push_pull(now);
        if now >= self.next_reconnect {
            self.next_reconnect = now + self.config.join_retry;
            let failed: Vec<SocketAddr> = self
                .members
                .values()
                .filter(|m| m.record.state == super::MemberState::Failed)
                .filter_map(|m| m.record.addr)
                .collect();
            if !failed.is_empty() {
                let i = self.random(failed.len());
                self.send_join(failed[i]);
            }
        }
        if self.resync_at.is_some_and(|t| now >= t) {
            self.resync_at = None;
            let addrs = self.live_addrs();
            if !addrs.is_empty() {
                let i = self.random(addrs.len());
                self.send_join(addrs[i]);
            }
        }
        let stretch = self.probe.awareness + 1;
        let timeout = self.config.probe_timeout * stretch;
        if let Some(mut p) = self.probe.current {
            if let Some(direct) = p.direct_until
                && now >= direct
            {
                p.direct_until = None;
                // A late turn (a paused process) still gives the others time to answer.
                p.until = p.until.max(now + timeout);
                self.probe.current = Some(p);
                self.ask_others(now, p);
            } else if p.direct_until.is_none() && now >= p.until {
                self.probe.current = None;
                self.probe.awareness = (self.probe.awareness + 1).min(self.config.max_awareness);
                self.suspect(now, p.target);
            }
        }
        if self.probe.current.is_none() && now >= self.probe.next {
            self.probe.next = now + self.config.probe_interval * stretch;
            if let Some(target) = self.next_target() {
                let seq = self.probe.next_seq();
                let record = self.members.get(&target).map(|m| m.record);
                if let Some(record) = record
                    && let Some(addr) = record.addr
                {
                    self.probe.current = Some(Probe {
                        target,
                        seq,
                        direct_until: Some(now + timeout),
                        until: self.probe.next,
                    });
                    self.send(addr, Message::new(GossipKind::Ping, seq, Some(&record)));
                }
            }
        }
    }

    /// While no member is live, asks the seeds (static and discovered) and the multicast
    /// group to join, every
    /// `join_retry`.
    fn join_if_alone(&mut self, now: Instant) {
        let Some(at) = self.next_join else {
            return;
        };
        if now < at || self.leaving {
            return;
        }
        self.next_join = Some(now + self.config.join_retry);
        if self.live_count() > 0 {
            return;
        }
        let mut seeds = self.config.seeds.clone();
        seeds.extend(self.discovered.iter().copied());
        seeds.extend(self.config.group);
        seeds.sort_unstable();
        seeds.dedup();
        for seed in seeds {
            if Some(seed) != self.me.addr {
                self.send_join(seed);
            }
        }
    }

    /// The next live member in a shuffled round-robin order (every member is probed once
    /// per round; each round has a new order).
    fn next_target(&mut self) -> Option<u64> {
        let members = &self.members;
        self.probe
            .order
            .retain(|n| members.get(n).is_some_and(|m| is_live(m.record.state)));
        let n = self.probe.order.len();
        if n == 0 {
            return None;
        }
        if self.probe.index >= n {
            self.probe.index = 0;
            for i in (1..n).rev() {
                let j = self.random(i + 1);
                self.probe.order.swap(i, j);
            }
        }
        let target = self.probe.order.get(self.probe.index).copied();
        self.probe.index += 1;
        target
    }

    /// Asks up to `indirect_probes` other live members to probe `p.target`.
    fn ask_others(&mut self, _now: Instant, p: Probe) {
        let Some(record) = self.members.get(&p.target).map(|m| m.record) else {
            return;
        };
        let mut helpers: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.record.node != p.target && m.record.state == super::MemberState::Alive)
            .filter_map(|m| m.record.addr)
            .collect();
        helpers.sort_unstable();
        for _ in 0..self.config.indirect_probes.min(helpers.len()) {
            let i = self.random(helpers.len());
            let helper = helpers.swap_remove(i);
            self.send(
                helper,
                Message::new(GossipKind::PingReq, p.seq, Some(&record)),
            );
        }
    }

    /// Pings `target` for the node at `origin`, which asked in `msg`.
    pub(super) fn relay(
        &mut self,
        now: Instant,
        msg: &Message,
        target: SocketAddr,
        origin: SocketAddr,
    ) {
        if self.probe.relays.len() >= 64 {
            return;
        }
        let seq = self.probe.next_seq();
        self.probe.relays.push(Relay {
            seq,
            target: msg.target_node,
            origin,
            origin_seq: msg.seq,
            until: now + self.config.probe_interval,
        });
        let mut ping = Message::new(GossipKind::Ping, seq, None);
        ping.target_node = msg.target_node;
        ping.target_incarnation = msg.target_incarnation;
        ping.target_addr = Some(target);
        self.send(target, ping);
    }

    /// An answer: to this node's probe (the target is fine) or to a relayed one (passed on).
    pub(super) fn handle_ack(&mut self, _now: Instant, seq: u32, target: u64) {
        if let Some(p) = self.probe.current
            && p.seq == seq
            && p.target == target
        {
            self.probe.current = None;
            self.probe.awareness = self.probe.awareness.saturating_sub(1);
            return;
        }
        if let Some(i) = self
            .probe
            .relays
            .iter()
            .position(|r| r.seq == seq && r.target == target)
        {
            let r = self.probe.relays.swap_remove(i);
            let mut ack = Message::new(GossipKind::Ack, r.origin_seq, None);
            ack.target_node = target;
            self.send(r.origin, ack);
        }
    }
}
