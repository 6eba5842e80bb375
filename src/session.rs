//! What a receiver knows about one incarnation of one sender: which data frames it delivered,
//! which are waiting for an earlier one, and which gaps it has given up on.
//!
//! A session is sans-IO: it is fed verified frames and the time, and it appends what happened
//! (frames to deliver, [`Missed`] notices) to an output queue. It never sees bytes that did
//! not pass [`Keyring::verify`](crate::auth::Keyring::verify): its inputs are
//! [`Verified`] frames, so a forged frame cannot move its window.
//!
//! # Sequence window
//!
//! Data frames carry sequence numbers 1, 2, 3, … per incarnation. `next` is the first
//! sequence not yet delivered or given up on; everything below it is done, so a frame below
//! it is a duplicate (or a replay) and is dropped. A frame above `next` waits in `pending`
//! (bounded) until the frames before it arrive, so subscribers see each sender's events in
//! order. A hole before the first pending frame is a *gap*: if it is still open after the
//! reorder window, counted from when it was first noticed, the session reports it as one
//! [`Missed`] covering the whole hole and moves on. Heartbeats carry the sender's last data
//! sequence, so a hole at the tail (the last frames lost, nothing after them) is noticed by
//! the next heartbeat.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::auth::Verified;
use crate::error::Reject;
use crate::event::{Missed, MissedReason};
use crate::wire::{Flags, SharedFrame};

/// How many out-of-order frames a session holds before it gives up on the oldest gap.
pub(crate) const MAX_PENDING: usize = 256;

/// What a session hands back, in the order subscribers must see it.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// A data frame to deliver.
    Deliver(SharedFrame),
    /// Events that will never be delivered.
    Missed(Missed),
}

/// The receive state of one (sender node, incarnation).
#[derive(Debug)]
pub(crate) struct Session {
    node: u64,
    incarnation: u64,
    /// The first sequence not yet delivered nor given up on.
    next: u64,
    /// The highest sequence known to exist, from data frames or heartbeats (`next - 1` when
    /// nothing is outstanding).
    known_high: u64,
    /// Frames above `next`, with the time each arrived.
    pending: BTreeMap<u64, (Instant, SharedFrame)>,
    /// When a heartbeat first told of frames past everything received, if it did.
    tail_noticed: Option<Instant>,
    /// The last time a frame of this session was accepted.
    last_heard: Instant,
    /// The newest sender timestamp accepted, for heartbeats, which repeat sequence numbers.
    newest_ts: u64,
    /// Whether the last frame seen carried OVERFLOWED (a Missed is raised on each rising edge).
    overflowed: bool,
    /// Whether the dead-peer timeout fired and nothing has been heard since.
    silent: bool,
    /// Whether the sender said it was shutting down, with every frame accounted for.
    closing: bool,
}

impl Session {
    /// A session whose first frame to deliver is `next`.
    pub(crate) fn new(node: u64, incarnation: u64, next: u64, now: Instant) -> Self {
        let next = next.max(1);
        Self {
            node,
            incarnation,
            next,
            known_high: next - 1,
            pending: BTreeMap::new(),
            tail_noticed: None,
            last_heard: now,
            newest_ts: 0,
            overflowed: false,
            silent: false,
            closing: false,
        }
    }

    /// The incarnation this session follows.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The newest sender timestamp this session accepted.
    pub(crate) fn newest_ts(&self) -> u64 {
        self.newest_ts
    }

    /// The last time a frame was accepted.
    pub(crate) fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Whether the sender shut down cleanly and nothing of it is outstanding.
    pub(crate) fn closed_cleanly(&self) -> bool {
        self.closing && self.next > self.known_high
    }

    /// Takes a verified data frame.
    ///
    /// # Errors
    ///
    /// [`Reject::Duplicate`] if the frame was delivered, given up on, or is already pending.
    pub(crate) fn handle_data(
        &mut self,
        now: Instant,
        frame: Verified<SharedFrame>,
        out: &mut VecDeque<Output>,
    ) -> Result<(), Reject> {
        let fields = *frame.frame().header_fields();
        let seq = fields.sequence;
        if seq < self.next || self.pending.contains_key(&seq) {
            return Err(Reject::Duplicate);
        }
        self.heard(now, fields.timestamp_ns);
        self.note_overflow(fields.flags, out);
        self.known_high = self.known_high.max(seq);
        let frame = frame.into_frame();
        if seq == self.next {
            self.next += 1;
            out.push_back(Output::Deliver(frame));
            self.drain_pending(out);
        } else {
            self.pending.insert(seq, (now, frame));
            while self.pending.len() > MAX_PENDING {
                self.give_up_head_gap(MissedReason::Gap, out);
            }
        }
        self.settle_tail();
        Ok(())
    }

    /// Takes a verified heartbeat: the sender is alive and its last data frame is `sequence`.
    ///
    /// # Errors
    ///
    /// [`Reject::Duplicate`] if the heartbeat is not newer than every frame already accepted
    /// (a replayed heartbeat must not keep a dead sender looking alive).
    pub(crate) fn handle_heartbeat(
        &mut self,
        now: Instant,
        frame: &Verified<SharedFrame>,
        out: &mut VecDeque<Output>,
    ) -> Result<(), Reject> {
        let fields = frame.frame().header_fields();
        if fields.timestamp_ns <= self.newest_ts {
            return Err(Reject::Duplicate);
        }
        self.heard(now, fields.timestamp_ns);
        self.note_overflow(fields.flags, out);
        if fields.flags.contains(Flags::CLOSING) {
            self.closing = true;
        }
        if fields.sequence > self.known_high {
            self.known_high = fields.sequence;
            if self.tail_noticed.is_none() {
                self.tail_noticed = Some(now);
            }
        }
        self.settle_tail();
        Ok(())
    }

    /// Gives up on gaps older than `reorder` and reports a sender silent for `dead`.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        reorder: Duration,
        dead: Duration,
        out: &mut VecDeque<Output>,
    ) {
        while let Some(noticed) = self.head_gap_noticed() {
            if now.saturating_duration_since(noticed) < reorder {
                break;
            }
            self.give_up_head_gap(MissedReason::Gap, out);
        }
        if !self.silent
            && !self.closed_cleanly()
            && now.saturating_duration_since(self.last_heard) >= dead
        {
            self.silent = true;
            out.push_back(Output::Missed(self.missed(MissedReason::PeerSilent, None)));
        }
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) has something to do.
    pub(crate) fn next_timeout(&self, reorder: Duration, dead: Duration) -> Option<Instant> {
        let gap = self.head_gap_noticed().map(|t| t + reorder);
        let silent = (!self.silent && !self.closed_cleanly()).then(|| self.last_heard + dead);
        match (gap, silent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the session because its sender restarted: delivers what is pending (reporting
    /// the holes between as gaps) and reports the tail that will never come, unless the
    /// sender shut down cleanly.
    pub(crate) fn retire(mut self, out: &mut VecDeque<Output>) {
        while !self.pending.is_empty() {
            self.give_up_head_gap(MissedReason::Gap, out);
        }
        if self.closed_cleanly() {
            return;
        }
        let range = (self.next <= self.known_high).then_some((self.next, self.known_high));
        out.push_back(Output::Missed(
            self.missed(MissedReason::SenderRestarted, range),
        ));
    }

    fn heard(&mut self, now: Instant, timestamp_ns: u64) {
        self.last_heard = now;
        self.newest_ts = self.newest_ts.max(timestamp_ns);
        self.silent = false;
    }

    fn note_overflow(&mut self, flags: Flags, out: &mut VecDeque<Output>) {
        let overflowed = flags.contains(Flags::OVERFLOWED);
        if overflowed && !self.overflowed {
            out.push_back(Output::Missed(
                self.missed(MissedReason::SenderOverflowed, None),
            ));
        }
        self.overflowed = overflowed;
    }

    /// When the hole before the first pending frame (or the tail hole a heartbeat told of)
    /// was first noticed, if there is one.
    fn head_gap_noticed(&self) -> Option<Instant> {
        if self.next > self.known_high {
            return None;
        }
        match self.pending.first_key_value() {
            Some((_, (arrived, _))) => Some(*arrived),
            None => self.tail_noticed,
        }
    }

    /// Reports the hole before the first pending frame (or the tail hole) as missed, and
    /// delivers what follows it.
    fn give_up_head_gap(&mut self, reason: MissedReason, out: &mut VecDeque<Output>) {
        let end = match self.pending.first_key_value() {
            Some((&seq, _)) => seq - 1,
            None => self.known_high,
        };
        if end >= self.next {
            out.push_back(Output::Missed(self.missed(reason, Some((self.next, end)))));
            self.next = end + 1;
        }
        self.drain_pending(out);
        self.settle_tail();
    }

    fn drain_pending(&mut self, out: &mut VecDeque<Output>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let (_, frame) = entry.remove();
            self.next += 1;
            out.push_back(Output::Deliver(frame));
        }
    }

    /// Forgets the tail-notice time once nothing past the received frames is outstanding.
    fn settle_tail(&mut self) {
        let received_high = self
            .pending
            .last_key_value()
            .map_or(self.next - 1, |(&seq, _)| seq);
        if received_high >= self.known_high {
            self.tail_noticed = None;
        }
    }

    fn missed(&self, reason: MissedReason, range: Option<(u64, u64)>) -> Missed {
        Missed {
            node: self.node,
            incarnation: self.incarnation,
            reason,
            range,
        }
    }
}
