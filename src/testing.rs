//! A simulated network of [`Endpoint`]s with a fake clock and seeded faults: loss (uniform or
//! in bursts), duplication, reordering and delay. No sockets, no threads, no sleeping:
//! a minute of simulated traffic runs in milliseconds, and a seed replays a run exactly.
//!
//! herald's own tests check its promise with it (every event delivered exactly once, in each
//! sender's order, or covered by a [`Missed`]); applications can use it to test what their
//! caches do with a `Missed`.
//!
//! ```
//! use std::time::Duration;
//! use herald::EventId;
//! use herald::testing::{Faults, SimNetwork};
//!
//! let mut net = SimNetwork::new(3, Faults { loss: 0.05, ..Faults::default() }, 7);
//! let event = EventId::from_name("product.changed");
//! for i in 0..1000u32 {
//!     net.raise(0, &event, &i.to_le_bytes());
//!     net.run_for(Duration::from_micros(100));
//! }
//! net.run_for(Duration::from_secs(1)); // heartbeats reveal any lost tail
//! let report = net.audit(0, 1);
//! assert_eq!(report.delivered + report.missed, 1000);
//! assert_eq!(report.duplicates, 0);
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{Key, Keyring};
use crate::endpoint::{Endpoint, EndpointConfig, Now, Received, new_incarnation};
use crate::event::{EventId, Missed};
use crate::ringbuf::{ClaimError, Consumer, Producer, ring};
use crate::wire::{ClusterId, DEFAULT_UDP_FRAME_LEN, SharedFrame};

pub use crate::faults::{Faults, SimRng};

/// One simulated node: an endpoint, its ring, and what it received.
#[derive(Debug)]
pub struct SimNode {
    /// The node's endpoint.
    pub endpoint: Endpoint,
    producer: Producer,
    consumer: Consumer,
    /// Everything the endpoint handed out, in order.
    pub received: Vec<Received>,
    /// Sequence numbers of the data frames this node sent, with their event counts.
    pub sent_frames: BTreeMap<u64, usize>,
    /// Sequence numbers of the data frames this node sent, with the distinct ids of their
    /// events (as their event tables list them).
    pub sent_events: BTreeMap<u64, Vec<EventId>>,
    /// Raises refused because the ring was full.
    pub refused: u64,
    bursts: HashMap<usize, u32>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    to: usize,
    bytes: Bytes,
}

/// A network of simulated nodes; see the [module documentation](self).
#[derive(Debug)]
pub struct SimNetwork {
    /// The nodes, by index; node `i` has node id `i + 1`.
    pub nodes: Vec<SimNode>,
    now: Now,
    faults: Faults,
    rng: SimRng,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    buf: Vec<u8>,
}

/// What [`SimNetwork::audit`] found for one sender and one receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Events the sender put on the wire.
    pub sent: usize,
    /// Events the receiver delivered.
    pub delivered: usize,
    /// Events covered by the receiver's Missed notices (by sequence range).
    pub missed: usize,
    /// Frames delivered more than once, or both delivered and reported missed.
    pub duplicates: usize,
    /// Frames delivered out of the sender's order.
    pub out_of_order: usize,
    /// Sent frames neither delivered nor covered by a Missed: silent losses.
    pub silent: usize,
    /// The receiver's Missed notices about the sender.
    pub notices: Vec<Missed>,
}

impl SimNetwork {
    /// `n` nodes of one cluster sharing a fresh key, with default endpoint settings.
    pub fn new(n: usize, faults: Faults, seed: u64) -> Self {
        Self::with_config(n, faults, seed, |_| {})
    }

    /// Like [`new`](Self::new), with `tweak` applied to each node's endpoint settings.
    pub fn with_config(
        n: usize,
        faults: Faults,
        seed: u64,
        tweak: impl Fn(&mut EndpointConfig),
    ) -> Self {
        let mut rng = SimRng::new(seed);
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let now = Now {
            instant: Instant::now(),
            unix_ns: 1_700_000_000_000_000_000,
        };
        let cluster = ClusterId::from_name("sim");
        let nodes = (0..n)
            .map(|i| {
                let incarnation = new_incarnation(now.unix_ns, rng.next_u64());
                let mut config = EndpointConfig::new(cluster, i as u64 + 1, incarnation);
                tweak(&mut config);
                let keyring = Keyring::new(1, Key::from_bytes(key))
                    .unwrap_or_else(|_| unreachable!("key id 1 is valid"));
                let (producer, consumer) =
                    ring(1 << 16, 1 << 12).unwrap_or_else(|_| unreachable!("valid ring sizes"));
                SimNode {
                    endpoint: Endpoint::new(config, keyring, now),
                    producer,
                    consumer,
                    received: Vec::new(),
                    sent_frames: BTreeMap::new(),
                    sent_events: BTreeMap::new(),
                    refused: 0,
                    bursts: HashMap::new(),
                }
            })
            .collect();
        Self {
            nodes,
            now,
            faults,
            rng,
            in_flight: BinaryHeap::new(),
            order: 0,
            buf: vec![0; DEFAULT_UDP_FRAME_LEN],
        }
    }

    /// The simulated time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Changes the faults from now on (ending any loss burst under way).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        for node in &mut self.nodes {
            node.bursts.clear();
        }
    }

    /// Raises an event on node `from` (it is sent on the next step). Returns false if the
    /// ring was full (the endpoint is told, as the router does).
    pub fn raise(&mut self, from: usize, event: &EventId, payload: &[u8]) -> bool {
        let node = &mut self.nodes[from];
        match node.producer.push(event, payload) {
            Ok(()) => true,
            Err(ClaimError::Full) => {
                node.refused += 1;
                node.endpoint.note_overflow(self.now.instant);
                false
            }
            Err(e) => panic!("simulated raise refused: {e}"),
        }
    }

    /// Injects raw bytes as a datagram to node `to`, now; returns what the endpoint said.
    pub fn inject(&mut self, to: usize, bytes: Bytes) -> Result<(), crate::Reject> {
        let now = self.now;
        let node = &mut self.nodes[to];
        let result = node.endpoint.handle_datagram(now, bytes);
        while let Some(out) = node.endpoint.poll_output() {
            node.received.push(out);
        }
        result
    }

    /// Replaces node `i` by a fresh incarnation of it (a crash and restart): its ring and
    /// whatever it held are lost.
    pub fn restart(&mut self, i: usize) {
        let config = {
            let mut c = self.nodes[i].endpoint.config().clone();
            c.incarnation = new_incarnation(self.now.unix_ns, self.rng.next_u64());
            c
        };
        let keyring = self.nodes[i].endpoint.keyring().clone();
        let (producer, consumer) =
            ring(1 << 16, 1 << 12).unwrap_or_else(|_| unreachable!("valid ring sizes"));
        let node = &mut self.nodes[i];
        node.endpoint = Endpoint::new(config, keyring, self.now);
        node.producer = producer;
        node.consumer = consumer;
        node.sent_frames.clear();
        node.sent_events.clear();
    }

    /// Runs the network for `d` of simulated time: nodes send what their rings hold and their
    /// heartbeats, datagrams arrive (or not), timers fire.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now.instant + d;
        loop {
            self.send_all();
            let next_arrival = self.in_flight.peek().map(|Reverse(f)| f.at);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.endpoint.poll_timeout())
                .min();
            let next = [next_arrival, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    let t = t.max(self.now.instant);
                    self.advance_to(t);
                    self.deliver_due();
                    self.fire_timers();
                }
                _ => {
                    self.advance_to(end);
                    return;
                }
            }
        }
    }

    fn advance_to(&mut self, t: Instant) {
        let d = t.saturating_duration_since(self.now.instant);
        self.now = self.now.after(d);
    }

    fn send_all(&mut self) {
        let now = self.now;
        for from in 0..self.nodes.len() {
            loop {
                let node = &mut self.nodes[from];
                let len =
                    match node
                        .endpoint
                        .encode_from_ring(now, &mut node.consumer, &mut self.buf)
                    {
                        Some(len) => {
                            let seq = node.endpoint.last_sequence();
                            let frame =
                                SharedFrame::parse(Bytes::copy_from_slice(&self.buf[..len]))
                                    .unwrap_or_else(|e| panic!("own frame does not parse: {e}"));
                            node.sent_frames
                                .insert(seq, usize::from(frame.record_count()));
                            let mut ids: Vec<EventId> = frame.events().collect();
                            ids.sort_unstable();
                            ids.dedup();
                            node.sent_events.insert(seq, ids);
                            len
                        }
                        None => match node.endpoint.poll_heartbeat(now, &mut self.buf) {
                            Some(len) => len,
                            None => break,
                        },
                    };
                let bytes = Bytes::copy_from_slice(&self.buf[..len]);
                self.broadcast(from, &bytes);
            }
            // Frames for one peer: statuses, requests, frames sent again.
            let shared = self.nodes[from].endpoint.config().recovery.shared_channel;
            while let Some(t) = self.nodes[from].endpoint.poll_transmit(now, &mut self.buf) {
                let bytes = Bytes::copy_from_slice(&self.buf[..t.len]);
                let to = usize::try_from(t.to).unwrap_or(usize::MAX).wrapping_sub(1);
                if shared || to >= self.nodes.len() {
                    self.broadcast(from, &bytes);
                } else {
                    self.send(from, to, &bytes);
                }
            }
        }
    }

    /// Sends `bytes` from node `from` to every other node, through the faults.
    fn broadcast(&mut self, from: usize, bytes: &Bytes) {
        for to in 0..self.nodes.len() {
            if to != from {
                self.send(from, to, bytes);
            }
        }
    }

    /// Sends `bytes` from node `from` to node `to`, through the faults.
    fn send(&mut self, from: usize, to: usize, bytes: &Bytes) {
        let burst = self.nodes[from].bursts.entry(to).or_insert(0);
        let fate = self.faults.odds().fate(&mut self.rng, burst);
        for hold in fate.copies() {
            self.order += 1;
            self.in_flight.push(Reverse(InFlight {
                at: self.now.instant + self.faults.latency + *hold,
                order: self.order,
                to,
                bytes: bytes.clone(),
            }));
        }
    }

    fn deliver_due(&mut self) {
        while let Some(Reverse(f)) = self.in_flight.peek() {
            if f.at > self.now.instant {
                break;
            }
            let Some(Reverse(f)) = self.in_flight.pop() else {
                break;
            };
            // Drops are counted by the endpoint; the audit looks at what was delivered.
            let _ = self.inject(f.to, f.bytes);
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now.instant;
        for node in &mut self.nodes {
            if node.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                node.endpoint.handle_timeout(now);
                while let Some(out) = node.endpoint.poll_output() {
                    node.received.push(out);
                }
            }
        }
    }

    /// Checks what node `receiver` got from node `sender` against what `sender` sent (its
    /// current incarnation).
    pub fn audit(&self, sender: usize, receiver: usize) -> Audit {
        let s = &self.nodes[sender];
        let node_id = s.endpoint.config().node;
        let incarnation = s.endpoint.config().incarnation;
        let mut audit = Audit {
            sent: s.sent_frames.values().sum(),
            ..Audit::default()
        };
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        let mut last = 0;
        for out in &self.nodes[receiver].received {
            match out {
                Received::Frame(f) => {
                    let h = f.header_fields();
                    if h.node != node_id || h.incarnation != incarnation {
                        continue;
                    }
                    audit.delivered += usize::from(f.record_count());
                    if h.sequence <= last {
                        audit.out_of_order += 1;
                    }
                    last = h.sequence;
                    *seen.entry(h.sequence).or_default() += 1;
                }
                Received::Missed(m) => {
                    if m.node != node_id || m.incarnation != incarnation {
                        continue;
                    }
                    audit.notices.push(m.clone());
                    if let Some((a, b)) = m.range {
                        for seq in a..=b {
                            audit.missed += s.sent_frames.get(&seq).copied().unwrap_or(0);
                            *seen.entry(seq).or_default() += 1;
                        }
                    }
                }
            }
        }
        audit.duplicates = seen.values().filter(|&&n| n > 1).count();
        audit.silent = s
            .sent_frames
            .keys()
            .filter(|seq| !seen.contains_key(seq))
            .count();
        audit
    }
}
