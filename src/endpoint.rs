//! The sans-IO node: everything a router does with frames, without sockets, threads or clocks.
//!
//! An [`Endpoint`] is fed datagrams and the time, and is asked for what to send and what to
//! deliver. The driver (or a test's in-memory network) owns the sockets and the clock and calls,
//! in each turn:
//!
//! 1. [`handle_datagram`](Endpoint::handle_datagram) for each received frame, then
//!    [`poll_output`](Endpoint::poll_output) until it returns `None` (frames to deliver and
//!    [`Missed`] notices, in the order subscribers must see them);
//! 2. [`encode_from_ring`](Endpoint::encode_from_ring) (or [`encode_data`](Endpoint::encode_data))
//!    until it returns `None`, for the frames to send, and
//!    [`poll_heartbeat`](Endpoint::poll_heartbeat) to learn whether a heartbeat is due;
//! 3. [`handle_timeout`](Endpoint::handle_timeout) once [`poll_timeout`](Endpoint::poll_timeout)
//!    has passed (gaps given up, silent peers, receivers dropped from the window), then
//!    `poll_output` again;
//! 4. [`poll_transmit`](Endpoint::poll_transmit) until it returns `None`: frames for one peer
//!    each (statuses and requests for lost frames, frames sent again, "no longer held"
//!    answers), which the driver sends to where that peer's frames came from.
//!
//! # Recovery and flow control
//!
//! A sender keeps its recent signed frames (up to [`RecoveryConfig::retention_bytes`]) and
//! the event ids of older ones. A receiver that finds a gap asks for it in a status frame,
//! at once (on multicast after a short random delay), and again every
//! [`RecoveryConfig::nak_interval`]; the sender
//! sends the frames again as they were signed, or answers that it no longer holds them, and
//! only then (or after [`RecoveryConfig::give_up`]) does the receiver report [`Missed`],
//! naming the lost events when the sender still knows them. Statuses also carry how far each
//! receiver has consumed: a sender runs at most [`RecoveryConfig::window_frames`] frames ahead
//! of its slowest live receiver ([`window_open`](Endpoint::window_open)); a receiver silent
//! for [`RecoveryConfig::receiver_timeout`] stops counting.
//!
//! # What a received frame goes through
//!
//! [`SharedFrame::parse`] (shape), the cluster id, the tag ([`Keyring::verify`]), the
//! sender's node id (a node's own frames are dropped), the clock-skew window, the sender's
//! incarnation (a retired one is dropped, a newer one retires the old session) and finally the
//! session's sequence window (duplicates dropped, gaps reported). No state exists for a sender
//! before one of its frames has verified, and the number of senders is bounded.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::auth::{Keyring, Security};
use crate::error::Reject;
use crate::event::{EventId, Missed};
use crate::session::{Output, Recovery, Session, StatusTiming};
use crate::wire::{EncodeError, FRAME_OVERHEAD, Flags, FrameKind, HeaderFields, SharedFrame};

mod config;
mod encode;
mod identity;
mod membership;
mod outbound;
mod transmit;

pub use config::{EndpointConfig, RecoveryConfig};
pub(crate) use identity::{default_node_id, random_u64};
pub use identity::{incarnation_start_ms, new_incarnation};
use outbound::{Outbound, OutboundConfig};

/// Sequence numbers from here on are refused: no sender reaches them, so a frame that claims
/// one is hostile, and refusing it keeps every later `+ 1` from overflowing.
const MAX_SEQUENCE: u64 = 1 << 62;

/// How many retired incarnations of a node are remembered, to refuse their replays at once.
const RETIRED_PER_NODE: usize = 4;

/// The time, as the endpoint needs it: a monotonic instant for timers and the wall clock for
/// frame timestamps (which are compared across nodes, within the clock-skew window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub instant: Instant,
    /// Nanoseconds since the Unix epoch, for frame timestamps.
    pub unix_ns: u64,
}

impl Now {
    /// The system's clocks.
    pub fn system() -> Self {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            instant: Instant::now(),
            unix_ns,
        }
    }

    /// This time plus `d` on both clocks (for tests and simulations).
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        Self {
            instant: self.instant + d,
            unix_ns: self
                .unix_ns
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

/// What the endpoint hands to the dispatcher, in the order subscribers must see it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Received {
    /// A verified data frame, in its sender's order; its records are the events.
    Frame(SharedFrame),
    /// Events that will never be delivered.
    Missed(Missed),
}

/// Counters kept by an [`Endpoint`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Data frames sent.
    pub frames_sent: u64,
    /// Events sent in data frames (each once, whatever the number of peers).
    pub events_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Datagrams handed to the endpoint.
    pub frames_received: u64,
    /// Data frames accepted (delivered or pending).
    pub frames_accepted: u64,
    /// Heartbeats accepted.
    pub heartbeats_accepted: u64,
    /// Dropped frames, indexed like [`Reject::names`].
    pub drops: Vec<u64>,
    /// Missed notices, indexed like [`MissedReason::NAMES`](crate::MissedReason::NAMES).
    pub missed: [u64; 5],
    /// Times this node's ring overflowed (raises refused with `Full`), as told by the caller.
    pub overflows: u64,
    /// Status frames sent (each tells a sender how far this node has consumed).
    pub statuses_sent: u64,
    /// Requests for lost frames sent (statuses that name missing ranges).
    pub naks_sent: u64,
    /// Requests for lost frames received from receivers.
    pub naks_received: u64,
    /// Ranges left out of requests because another receiver had just asked for them
    /// (multicast).
    pub naks_suppressed: u64,
    /// Data frames sent again.
    pub frames_resent: u64,
    /// "No longer held" answers sent.
    pub evicted_sent: u64,
    /// Times the window to the slowest live receiver closed and data waited in the ring.
    pub window_stalls: u64,
    /// Receivers dropped from the window for not acknowledging in time while behind.
    pub receivers_dropped: u64,
    /// Receivers counted in the window now.
    pub live_receivers: u64,
    /// Membership frames accepted (verified, not replayed) and handed to membership.
    pub membership_accepted: u64,
    /// Senders unknown to the cluster forgotten to make room for another sender.
    pub unknown_evicted: u64,
}

impl EndpointStats {
    /// The number of frames dropped for the reason with this short name.
    pub fn drops_by_name(&self, name: &str) -> u64 {
        Reject::names()
            .position(|n| n == name)
            .and_then(|i| self.drops.get(i).copied())
            .unwrap_or(0)
    }

    /// All dropped frames.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[derive(Debug)]
struct NodeState {
    session: Session,
    retired: VecDeque<u64>,
}

/// A frame [`Endpoint::poll_transmit`] wrote, for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The node it is for: send it where that node's frames come from.
    pub to: u64,
    /// Its length at the start of the buffer.
    pub len: usize,
}

/// The sans-IO core of a router; see the [module documentation](self).
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    keyring: Keyring,
    started: Instant,
    started_ms: u64,
    nodes: HashMap<u64, NodeState>,
    out: VecDeque<Output>,
    /// The sequence number of the last data frame sent (0: none yet).
    last_seq: u64,
    last_sent: Option<Instant>,
    /// Set until a frame has carried the OVERFLOWED flag for a full heartbeat interval.
    overflow_until: Option<Instant>,
    stats: EndpointStats,
    recovery: Recovery,
    timing: StatusTiming,
    outbound: Outbound,
    /// Senders to whom a status is due, found by one scan per round of `poll_transmit`.
    due: Vec<u64>,
    scanned: bool,
    /// The timestamp of this node's last control frame (they must rise strictly).
    control_ts: u64,
    /// Whether the window held the last data frame back.
    stalled: bool,
    ranges: Vec<(u64, u64)>,
    ids: Vec<EventId>,
    /// The plaintext event table of the data frame being finished (scratch).
    table: Vec<u8>,
    /// The time of the last call that had one, for timers that depend on it.
    last_turn: Instant,
    /// The sender of the last frame accepted.
    last_accepted: u64,
    /// Verified membership frames for [`crate::membership`], oldest first.
    membership_in: VecDeque<SharedFrame>,
    /// The cluster's members, once membership runs.
    members: Option<std::collections::HashSet<u64>>,
    /// When a sender the cluster does not know last made way for another (membership): a
    /// flood of unknown senders, during which only members are answered.
    unknown_churn_at: Option<Instant>,
}

impl Endpoint {
    /// An endpoint that starts at `now`.
    pub fn new(config: EndpointConfig, keyring: Keyring, now: Now) -> Self {
        let r = &config.recovery;
        let recovery = Recovery {
            enabled: r.enabled,
            max_pending: usize::try_from(r.window_frames)
                .unwrap_or(usize::MAX)
                .saturating_mul(2)
                .max(256),
            max_gap: u64::try_from(r.retention_bytes / FRAME_OVERHEAD)
                .unwrap_or(u64::MAX)
                .max(r.window_frames.saturating_mul(4))
                .max(1024),
            give_up: r.give_up,
            nak_delay: r.nak_delay,
            nak_interval: r.nak_interval,
        };
        let timing = StatusTiming {
            keepalive: r.status_interval,
            active_for: r.receiver_timeout,
        };
        let outbound = Outbound::new(OutboundConfig {
            retention_bytes: if r.enabled { r.retention_bytes } else { 0 },
            retained_ids: if r.enabled { r.retained_ids } else { 0 },
            window_frames: if r.enabled { r.window_frames } else { u64::MAX },
            receiver_timeout: r.receiver_timeout,
            resend_holdoff: r.nak_interval / 2,
            shared_channel: r.shared_channel,
            max_receivers: config.max_senders,
        });
        Self {
            recovery,
            timing,
            outbound,
            due: Vec::new(),
            scanned: false,
            control_ts: 0,
            stalled: false,
            ranges: Vec::new(),
            ids: Vec::new(),
            table: Vec::new(),
            last_turn: now.instant,
            last_accepted: 0,
            membership_in: VecDeque::new(),
            members: None,
            unknown_churn_at: None,
            config,
            keyring,
            started: now.instant,
            started_ms: now.unix_ns / 1_000_000,
            nodes: HashMap::new(),
            out: VecDeque::new(),
            last_seq: 0,
            last_sent: None,
            overflow_until: None,
            stats: EndpointStats {
                drops: vec![0; Reject::names().count()],
                ..EndpointStats::default()
            },
        }
    }

    /// The settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The keyring frames are signed and verified with.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Replaces the keyring (key rotation); frames are signed with its signing key from now on.
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = keyring;
    }

    /// The counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// The node id of the sender of the last frame accepted (0 before any): where a frame for
    /// that node can be sent is where this one came from.
    pub fn last_accepted_sender(&self) -> u64 {
        self.last_accepted
    }

    /// The number of senders tracked.
    pub fn sender_count(&self) -> usize {
        self.nodes.len()
    }

    /// The sequence number of the last data frame this node sent.
    pub fn last_sequence(&self) -> u64 {
        self.last_seq
    }

    /// Takes one received datagram.
    ///
    /// # Errors
    ///
    /// The reason the frame was dropped. It is also counted in [`stats`](Self::stats); the
    /// endpoint keeps no state from a dropped frame (beyond the count).
    pub fn handle_datagram(&mut self, now: Now, bytes: Bytes) -> Result<(), Reject> {
        self.handle(now, bytes, true)
    }

    /// Like [`handle_datagram`](Self::handle_datagram), without checking the frame's tag: for
    /// frames from a transport whose channel already authenticates every frame. Everything
    /// else (shape, cluster, replay, sessions) is checked as usual.
    ///
    /// # Errors
    ///
    /// As [`handle_datagram`](Self::handle_datagram), except that no authentication error is
    /// returned.
    pub fn handle_authenticated_datagram(&mut self, now: Now, bytes: Bytes) -> Result<(), Reject> {
        self.handle(now, bytes, false)
    }

    fn handle(&mut self, now: Now, bytes: Bytes, check_tag: bool) -> Result<(), Reject> {
        self.stats.frames_received += 1;
        self.last_turn = now.instant;
        let result = self.accept(now, bytes, check_tag);
        if let Err(reject) = &result
            && let Some(count) = self.stats.drops.get_mut(reject.index())
        {
            *count += 1;
        }
        result
    }

    fn accept(&mut self, now: Now, bytes: Bytes, check_tag: bool) -> Result<(), Reject> {
        if bytes.len() > self.config.max_frame_len {
            let len = bytes.len();
            return Err(crate::wire::ParseError::Oversized { len }.into());
        }
        let frame = SharedFrame::parse(bytes)?;
        if frame.header_fields().cluster != self.config.cluster {
            return Err(Reject::ForeignCluster);
        }
        // Sealed frames are opened (which authenticates them) even from an authenticated
        // transport: their records are ciphertext until then.
        let sealed = frame.is_sealed();
        let frame = match (self.config.security, sealed) {
            (Security::Encrypt, true) => self.keyring.open(&frame)?,
            (Security::Sign, true) => {
                return Err(crate::auth::VerifyError::ModeMismatch { sealed }.into());
            }
            (Security::Encrypt, false) if frame.header_fields().kind == FrameKind::Data => {
                return Err(crate::auth::VerifyError::ModeMismatch { sealed }.into());
            }
            _ if check_tag => self.keyring.verify(frame)?,
            _ => crate::auth::assume_verified(frame),
        };
        let fields = *frame.frame().header_fields();
        if fields.node == self.config.node {
            return Err(Reject::OwnFrame);
        }
        let skew = u64::try_from(self.config.clock_skew.as_nanos()).unwrap_or(u64::MAX);
        if fields.timestamp_ns.abs_diff(now.unix_ns) > skew {
            return Err(Reject::ClockSkew);
        }
        if fields.sequence >= MAX_SEQUENCE {
            return Err(Reject::ImplausibleSequence);
        }
        // The session and the output queue are both fields of `self`.
        let mut out = std::mem::take(&mut self.out);
        let result = self
            .session_for(now.instant, &fields, &mut out)
            .and_then(|session| match fields.kind {
                FrameKind::Heartbeat => session.handle_heartbeat(now.instant, &frame, &mut out),
                // Membership frames follow the replay rule of control frames.
                FrameKind::Status | FrameKind::Evicted | FrameKind::Membership => {
                    session.accept_control(now.instant, fields.timestamp_ns)
                }
                _ => session.handle_data(now.instant, frame.clone(), &mut out),
            });
        self.out = out;
        if result.is_ok() {
            self.last_accepted = fields.node;
            match fields.kind {
                FrameKind::Heartbeat => self.stats.heartbeats_accepted += 1,
                FrameKind::Status | FrameKind::Evicted => {
                    self.handle_control(now.instant, &fields, frame.frame());
                }
                FrameKind::Membership => self.queue_membership(frame.frame()),
                _ => self.stats.frames_accepted += 1,
            }
        }
        result
    }

    /// The session for a verified frame's (node, incarnation): the current one, a new one
    /// (a new sender, or a restart that retires the old incarnation), or a refusal.
    fn session_for(
        &mut self,
        now: Instant,
        fields: &HeaderFields,
        out: &mut VecDeque<Output>,
    ) -> Result<&mut Session, Reject> {
        // A sender that started after this node (or less than a dead-peer timeout before it,
        // as when a cluster starts together) sent every frame to it: a lost first frame is
        // reported, at worst a false alarm at boot, when caches are cold anyway. One that
        // started earlier may have sent its first frames before this node listened, so its
        // session starts at the first frame heard. (Left open: if that first frame heard
        // is data, frames just before it that were sent after this node started and lost
        // go unreported. Heartbeats make that window about one heartbeat long.)
        let grace_ms = u64::try_from(self.config.dead_timeout.as_millis()).unwrap_or(u64::MAX);
        let joined_late =
            incarnation_start_ms(fields.incarnation).saturating_add(grace_ms) >= self.started_ms;
        let first_next = |joined_late: bool| match (joined_late, fields.kind) {
            (true, _) => 1,
            (false, FrameKind::Data) => fields.sequence,
            // Heartbeats and control frames carry the last sequence sent, not a new one.
            (false, _) => fields.sequence.saturating_add(1),
        };
        if !self.nodes.contains_key(&fields.node) {
            self.make_room(now, fields.node)?;
        }
        match self.nodes.entry(fields.node) {
            Entry::Vacant(v) => {
                let session = Session::new(
                    fields.node,
                    fields.incarnation,
                    first_next(joined_late),
                    now,
                    self.recovery,
                );
                Ok(&mut v
                    .insert(NodeState {
                        session,
                        retired: VecDeque::new(),
                    })
                    .session)
            }
            Entry::Occupied(o) => {
                let state = o.into_mut();
                if state.session.incarnation() == fields.incarnation {
                    return Ok(&mut state.session);
                }
                // A restart shows itself by a new incarnation whose clock runs past everything
                // the old one sent; anything else is a replay of an incarnation gone by.
                if state.retired.contains(&fields.incarnation)
                    || fields.timestamp_ns <= state.session.newest_ts()
                {
                    return Err(Reject::StaleIncarnation);
                }
                let new = Session::new(fields.node, fields.incarnation, 1, now, self.recovery);
                let old = std::mem::replace(&mut state.session, new);
                if state.retired.len() == RETIRED_PER_NODE {
                    state.retired.pop_front();
                }
                state.retired.push_back(old.incarnation());
                old.retire(out);
                Ok(&mut state.session)
            }
        }
    }

    /// Makes room for one sender by forgetting one silent for long enough that no frame of
    /// it can pass the clock-skew check any more (so forgetting it cannot let a replay in).
    fn evict_one(&mut self, now: Instant) -> Result<(), Reject> {
        let quiet = self.config.clock_skew * 2 + self.config.dead_timeout;
        let victim = self
            .nodes
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.session.last_heard()) > quiet)
            .min_by_key(|(_, s)| s.session.last_heard())
            .map(|(&node, _)| node);
        match victim {
            Some(node) => {
                self.nodes.remove(&node);
                Ok(())
            }
            None => Err(Reject::TooManySenders),
        }
    }

    /// The next frame to deliver or Missed notice, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Received> {
        let output = self.out.pop_front()?;
        Some(match output {
            Output::Deliver(frame) => Received::Frame(frame),
            Output::Missed(missed) => {
                if let Some(count) = self.stats.missed.get_mut(missed.reason.index()) {
                    *count += 1;
                }
                Received::Missed(missed)
            }
        })
    }

    /// Reports gaps whose reorder window has passed and senders silent past the dead-peer
    /// timeout; [`poll_output`](Self::poll_output) hands them out.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_turn = now;
        let (reorder, dead) = (self.config.reorder_window, self.config.dead_timeout);
        for state in self.nodes.values_mut() {
            state
                .session
                .handle_timeout(now, reorder, dead, &mut self.out);
        }
        let dropped = self.outbound.counts.receivers_dropped;
        self.outbound.handle_timeout(now, self.last_seq);
        self.stats.receivers_dropped += self.outbound.counts.receivers_dropped - dropped;
        self.stats.live_receivers = self.outbound.live_receivers() as u64;
    }

    /// When [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_heartbeat`](Self::poll_heartbeat) next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (reorder, dead) = (self.config.reorder_window, self.config.dead_timeout);
        let heartbeat = self.next_heartbeat();
        let now = self.last_turn;
        self.nodes
            .values()
            .flat_map(|s| {
                [
                    s.session.next_timeout(reorder, dead),
                    s.session.nak_at(),
                    s.session.status_deadline(now, self.timing),
                ]
            })
            .flatten()
            .chain(self.outbound.next_timeout())
            .chain(std::iter::once(heartbeat))
            .min()
    }

    fn next_heartbeat(&self) -> Instant {
        self.last_sent
            .map_or(self.started, |t| t + self.config.heartbeat_interval)
    }
}

#[cfg(test)]
mod tests;
