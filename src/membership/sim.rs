//! A deterministic simulation of many [`Membership`] nodes on an in-memory network with a
//! fake clock, random latency and loss, killed and paused nodes. Every message goes through
//! the wire format (written and signed, parsed back) so sizes are real.
//!
//! ```
//! use std::time::Duration;
//! use herald::membership::sim::MemberSim;
//! let mut sim = MemberSim::new(5, 1);
//! sim.run_until(Duration::from_secs(10), |s| s.converged());
//! assert!(sim.converged());
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{MemberEvent, MemberEventKind, MemberState, Membership, MembershipConfig, Message};
use crate::auth::{Key, Keyring};
use crate::wire::{
    ClusterId, Flags, Frame, FrameKind, HeaderFields, MAX_FRAME_LEN, write_membership,
};

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its membership state machine.
    pub membership: Membership,
    /// Its address.
    pub addr: SocketAddr,
    /// Killed: receives and sends nothing.
    pub dead: bool,
    /// Paused until then: runs no timer, and what it is sent waits.
    pub paused_until: Option<Instant>,
    /// Messages this node sent.
    pub sent: u64,
    /// Bytes this node sent.
    pub bytes_sent: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    to: usize,
    from: usize,
    bytes: Vec<u8>,
}

/// The simulation; see the [module documentation](self).
#[derive(Debug)]
pub struct MemberSim {
    /// The nodes; node `i` has node id `i + 1` and port `10_000 + i`.
    pub nodes: Vec<SimNode>,
    /// Every event of every node: (time since start, observer index, event).
    pub events: Vec<(Duration, usize, MemberEvent)>,
    /// The share of messages lost, from 0 to 1.
    pub loss: f64,
    /// A partition: nodes below this index and the others cannot reach each other (what is
    /// in flight across it when it starts is lost too). `None`: one network.
    pub partition: Option<usize>,
    start: Instant,
    now: Instant,
    tick: Duration,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    rng: u64,
    keyring: Keyring,
    buf: Vec<u8>,
    template: MembershipConfig,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        10_000 + u16::try_from(i).unwrap_or(0),
    )
}

impl MemberSim {
    /// `n` nodes, each with node 0 as its only seed, with default settings.
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_config(n, seed, MembershipConfig::new(0, 0))
    }

    /// `n` nodes with the timing settings of `template` (its node, incarnation, seeds and
    /// address are replaced).
    pub fn with_config(n: usize, seed: u64, template: MembershipConfig) -> Self {
        let start = Instant::now();
        let keyring = Keyring::new(1, Key::from_bytes([7; 32]))
            .unwrap_or_else(|_| unreachable!("key id 1 is valid"));
        let mut sim = Self {
            nodes: Vec::with_capacity(n),
            events: Vec::new(),
            loss: 0.0,
            partition: None,
            start,
            now: start,
            tick: Duration::from_millis(2),
            queue: BinaryHeap::new(),
            order: 0,
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            keyring,
            buf: vec![0; MAX_FRAME_LEN],
            template,
        };
        for i in 0..n {
            let m = sim.make(i, 1);
            sim.nodes.push(SimNode {
                membership: m,
                addr: addr_of(i),
                dead: false,
                paused_until: None,
                sent: 0,
                bytes_sent: 0,
            });
        }
        sim
    }

    fn make(&self, i: usize, run: u64) -> Membership {
        let node = i as u64 + 1;
        let mut c = self.template.clone();
        c.node = node;
        c.incarnation = (run << 32) | node;
        c.advertise = Some(addr_of(i));
        c.seeds = vec![addr_of(0)];
        c.rng_seed = self.rng ^ node.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ run;
        Membership::new(c, self.now)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Kills node `i`: it sends and receives nothing from now on.
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.dead = true;
        }
    }

    /// Starts node `i` again, as a new incarnation.
    pub fn restart(&mut self, i: usize, run: u64) {
        let m = self.make(i, run);
        if let Some(n) = self.nodes.get_mut(i) {
            n.membership = m;
            n.dead = false;
        }
    }

    /// Node `i` leaves gracefully (and is dead after).
    pub fn leave(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.membership.leave();
        }
        self.flush(i);
        self.kill(i);
    }

    /// Pauses node `i` for `d` (a stop-the-world pause, an overloaded host).
    pub fn pause(&mut self, i: usize, d: Duration) {
        let until = self.now + d;
        if let Some(n) = self.nodes.get_mut(i) {
            n.paused_until = Some(until);
        }
    }

    /// Whether every live node sees exactly the live nodes as alive members.
    pub fn converged(&self) -> bool {
        let live = self.nodes.iter().filter(|n| !n.dead).count();
        self.nodes
            .iter()
            .filter(|n| !n.dead)
            .all(|n| n.membership.counts() == (live, 0))
    }

    /// Whether every live node holds node `i` as `state`.
    pub fn all_see(&self, i: usize, state: MemberState) -> bool {
        let node = i as u64 + 1;
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, n)| *j != i && !n.dead)
            .all(|(_, n)| n.membership.state_of(node) == Some(state))
    }

    /// The number of `kind` events, seen by any node, about nodes for which `about` holds.
    pub fn count_events(&self, kind: MemberEventKind, about: impl Fn(usize) -> bool) -> usize {
        self.events
            .iter()
            .filter(|(_, _, e)| e.kind == kind && about((e.node - 1) as usize))
            .count()
    }

    /// Runs until `done` holds (checked every 10 ms) or `limit` more time has passed.
    /// Returns the time it took, or `None` at the limit.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let from = self.now;
        let mut steps = 0u32;
        while self.now - from < limit {
            self.step();
            steps += 1;
            if steps.is_multiple_of(5) && done(self) {
                return Some(self.now - from);
            }
        }
        None
    }

    /// Runs for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let _ = self.run_until(d, |_| false);
    }

    /// Messages and bytes sent per live node per second over the next `d`.
    pub fn traffic(&mut self, d: Duration) -> (f64, f64) {
        let before: (u64, u64) = self.totals();
        self.run_for(d);
        let after = self.totals();
        let live = self.nodes.iter().filter(|n| !n.dead).count().max(1) as f64;
        let secs = d.as_secs_f64();
        (
            (after.0 - before.0) as f64 / live / secs,
            (after.1 - before.1) as f64 / live / secs,
        )
    }

    fn totals(&self) -> (u64, u64) {
        self.nodes
            .iter()
            .fold((0, 0), |(m, b), n| (m + n.sent, b + n.bytes_sent))
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One tick: deliveries due, then each node's timers and output.
    pub fn step(&mut self) {
        self.now += self.tick;
        let now = self.now;
        for n in &mut self.nodes {
            if n.paused_until.is_some_and(|t| t <= now) {
                n.paused_until = None;
            }
        }
        while let Some(Reverse(f)) = self.queue.peek() {
            if f.at > now {
                break;
            }
            let Some(Reverse(f)) = self.queue.pop() else {
                break;
            };
            self.deliver(f);
        }
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if n.dead || n.paused_until.is_some() {
                continue;
            }
            if n.membership.poll_timeout().is_some_and(|t| t <= now) {
                n.membership.handle_timeout(now);
            }
            self.flush(i);
        }
    }

    /// Whether a partition separates nodes `a` and `b`.
    fn cut(&self, a: usize, b: usize) -> bool {
        self.partition.is_some_and(|k| (a < k) != (b < k))
    }

    fn deliver(&mut self, f: InFlight) {
        if self.cut(f.from, f.to) {
            return;
        }
        let Some(n) = self.nodes.get_mut(f.to) else {
            return;
        };
        if n.dead {
            return;
        }
        if let Some(until) = n.paused_until {
            // Waits in the socket's buffer.
            self.queue.push(Reverse(InFlight { at: until, ..f }));
            return;
        }
        let Ok(frame) = Frame::parse(&f.bytes) else {
            return;
        };
        let Some(gossip) = frame.membership() else {
            return;
        };
        let msg = Message::from_gossip(&gossip);
        let from = addr_of(f.from);
        n.membership
            .handle_message(self.now, from, (frame.node(), frame.incarnation()), &msg);
        self.flush(f.to);
    }

    /// Sends what node `i` has to send and records its events.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let elapsed = self.elapsed();
        loop {
            let Some(n) = self.nodes.get_mut(i) else {
                return;
            };
            if let Some(e) = n.membership.poll_event() {
                self.events.push((elapsed, i, e));
                continue;
            }
            let Some((to, msg)) = n.membership.poll_message() else {
                return;
            };
            let me = *n.membership.me();
            let fields = HeaderFields {
                kind: FrameKind::Membership,
                flags: Flags::EMPTY,
                key_id: 1,
                cluster: ClusterId::from_raw(1),
                node: me.node,
                incarnation: me.incarnation,
                sequence: 0,
                timestamp_ns: 0,
            };
            let Ok(bytes) = write_membership(&mut self.buf, &fields, &msg.as_wire(), &self.keyring)
            else {
                continue;
            };
            let bytes = bytes.to_vec();
            let n = &mut self.nodes[i];
            n.sent += 1;
            n.bytes_sent += bytes.len() as u64;
            let Some(to) = self.nodes.iter().position(|n| n.addr == to) else {
                continue;
            };
            if self.cut(i, to) {
                continue;
            }
            let r = self.random();
            if (r % 10_000) as f64 / 10_000.0 < self.loss {
                continue;
            }
            let latency = Duration::from_micros(500 + self.random() % 4_500);
            self.order += 1;
            self.queue.push(Reverse(InFlight {
                at: now + latency,
                order: self.order,
                to,
                from: i,
                bytes,
            }));
        }
    }
}
