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
//! order. A hole before the first pending frame is a *gap*. Heartbeats carry the sender's last
//! data sequence, so a hole at the tail (the last frames lost, nothing after them) is noticed
//! by the next heartbeat.
//!
//! # Recovery
//!
//! When a gap appears the session schedules a request for it (a negative acknowledgement,
//! carried by a status frame) after a short random delay, so that on a shared channel one
//! receiver's request can stand for all (a receiver that sees another's request for its gap
//! holds its own back). The request is repeated every `nak_interval` while the gap stays open.
//! The gap becomes one [`Missed`] only when the sender answers that it no longer holds those
//! frames (with the ids of their events, when it still knows them), when the gap stays open
//! for the give-up time, or when it is larger than any sender holds. Without recovery, the
//! give-up time is the reorder window and nothing is asked for.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::auth::Verified;
use crate::error::Reject;
use crate::event::{EventId, Missed, MissedReason};
use crate::wire::{Flags, SharedFrame};

mod requests;

/// How a session recovers gaps; the same for every session of an endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recovery {
    /// Whether gaps are asked for at all.
    pub(crate) enabled: bool,
    /// How many out-of-order frames a session holds before it gives up on the oldest gap.
    pub(crate) max_pending: usize,
    /// A gap longer than this many frames is more than any sender holds: reported at once.
    pub(crate) max_gap: u64,
    /// How long a gap may stay open (with recovery: while it is asked for) before it is
    /// reported.
    pub(crate) give_up: Duration,
    /// The longest random delay before a new gap is first asked for.
    pub(crate) nak_delay: Duration,
    /// How often an open gap is asked for again.
    pub(crate) nak_interval: Duration,
}

/// When a receiver tells a sender how far it has consumed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusTiming {
    /// How often a status goes out anyway while the sender sends data.
    pub(crate) keepalive: Duration,
    /// How long after its last data frame a sender still counts as sending.
    pub(crate) active_for: Duration,
}

/// The most requests a head gap needs before it may be given up for time.
const MIN_REQUESTS: u32 = 10;

/// Ranges the sender said it no longer holds, remembered until the gap reaches them.
const MAX_EVICTED: usize = 16;

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
    /// The last time a data frame of this session was accepted.
    last_data: Option<Instant>,
    /// The newest sender timestamp accepted, for heartbeats, which repeat sequence numbers.
    newest_ts: u64,
    /// Whether the last frame seen carried OVERFLOWED (a Missed is raised on each rising edge).
    overflowed: bool,
    /// Whether the dead-peer timeout fired and nothing has been heard since.
    silent: bool,
    /// Whether the sender said it was shutting down, with every frame accounted for.
    closing: bool,
    recovery: Recovery,
    /// When the open gaps are next asked for, if there are any.
    nak_at: Option<Instant>,
    /// Ranges the sender no longer holds, ahead of `next`, with their events if known.
    evicted: VecDeque<(u64, u64, Option<Vec<EventId>>)>,
    /// The consumed position last reported to the sender, and when.
    reported: u64,
    reported_at: Option<Instant>,
    /// The newest timestamp of a control frame accepted from this node (control frames are
    /// not sequenced: each must be newer than the last).
    control_ts: u64,
    /// Requests sent while `next` was `asked_head`: a head gap is given up only once it was
    /// asked for often enough, not merely once enough time passed (a node starved of CPU
    /// would otherwise give up gaps it never got to ask for, and every gap behind them).
    asked: u32,
    asked_head: u64,
    /// Ranges another receiver just asked this session's sender for, and until when this
    /// node leaves them out of its own requests.
    heard: Vec<(u64, u64)>,
    heard_until: Option<Instant>,
    /// Spreads the first request for a gap over the request delay (seeded per session, so a
    /// simulation replays exactly).
    rng: crate::faults::SimRng,
}

impl Session {
    /// A session whose first frame to deliver is `next`.
    pub(crate) fn new(
        node: u64,
        incarnation: u64,
        next: u64,
        now: Instant,
        recovery: Recovery,
    ) -> Self {
        let next = next.max(1);
        Self {
            node,
            incarnation,
            next,
            known_high: next - 1,
            pending: BTreeMap::new(),
            tail_noticed: None,
            last_heard: now,
            last_data: None,
            newest_ts: 0,
            overflowed: false,
            silent: false,
            closing: false,
            recovery,
            nak_at: None,
            evicted: VecDeque::new(),
            reported: next - 1,
            reported_at: None,
            control_ts: 0,
            asked: 0,
            asked_head: 0,
            heard: Vec::new(),
            heard_until: None,
            rng: crate::faults::SimRng::new(node ^ incarnation.rotate_left(32)),
        }
    }

    /// The last sequence delivered in order or given up on: what this node has consumed.
    pub(crate) fn consumed(&self) -> u64 {
        self.next - 1
    }

    /// Accepts a control frame's timestamp if it is newer than every one before (a replayed
    /// or reordered older one is refused); a control frame also shows the node is alive.
    pub(crate) fn accept_control(&mut self, now: Instant, timestamp_ns: u64) -> Result<(), Reject> {
        if timestamp_ns <= self.control_ts {
            return Err(Reject::Duplicate);
        }
        self.control_ts = timestamp_ns;
        self.last_heard = now;
        self.silent = false;
        Ok(())
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
        self.last_data = Some(now);
        self.note_overflow(fields.flags, out);
        self.known_high = self.known_high.max(seq);
        let frame = frame.into_frame();
        if seq == self.next {
            self.next += 1;
            out.push_back(Output::Deliver(frame));
            self.drain_pending(out);
        } else {
            // More than any sender holds: nothing to ask for, and nothing to wait for.
            if seq - self.next > self.recovery.max_gap {
                self.give_up_through(seq - 1, out);
                self.next = seq + 1;
                out.push_back(Output::Deliver(frame));
                self.drain_pending(out);
            } else {
                self.pending.insert(seq, (now, frame));
                while self.pending.len() > self.recovery.max_pending {
                    self.give_up_head_gap(MissedReason::Gap, None, out);
                }
            }
        }
        self.settle_tail();
        self.after_change(now, out);
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
        self.note_last_sequence(now, fields.sequence, out);
        Ok(())
    }

    /// Takes the last data sequence a heartbeat (or a control frame) of the sender names.
    pub(crate) fn note_last_sequence(
        &mut self,
        now: Instant,
        sequence: u64,
        out: &mut VecDeque<Output>,
    ) {
        if sequence > self.known_high {
            self.known_high = sequence;
            if sequence - self.next >= self.recovery.max_gap {
                // A claim past anything a sender holds: reported at once, never asked for.
                self.give_up_through(sequence, out);
            } else {
                if self.tail_noticed.is_none() {
                    self.tail_noticed = Some(now);
                }
            }
        }
        self.settle_tail();
        self.after_change(now, out);
    }

    /// Takes the sender's answer that it no longer holds `first..=last`: the part of it that is
    /// still missing here becomes a [`Missed`] (now, or when delivery reaches it) with `ids`.
    pub(crate) fn handle_evicted(
        &mut self,
        now: Instant,
        (first, last): (u64, u64),
        ids: Option<Vec<EventId>>,
        out: &mut VecDeque<Output>,
    ) {
        if last < self.next || first > self.known_high {
            return; // nothing of it is missing (any more)
        }
        if self.evicted.len() == MAX_EVICTED {
            self.evicted.pop_front();
        }
        self.evicted.push_back((first, last, ids));
        self.apply_evicted(out);
        self.after_change(now, out);
    }

    /// Reports a head gap that the sender said it no longer holds, as often as one is at the
    /// head, and delivers what follows.
    fn apply_evicted(&mut self, out: &mut VecDeque<Output>) {
        loop {
            self.evicted.retain(|&(_, last, _)| last >= self.next);
            let Some(i) = self
                .evicted
                .iter()
                .position(|&(first, last, _)| first <= self.next && self.next <= last)
            else {
                return;
            };
            if self.next > self.known_high || self.pending.contains_key(&self.next) {
                return;
            }
            let ids = self.evicted.get(i).and_then(|e| e.2.clone());
            let last = self.evicted.get(i).map_or(self.next, |e| e.1);
            self.give_up_head_gap_to(last, MissedReason::Gap, ids, out);
        }
    }

    /// Gives up on gaps older than `reorder` and reports a sender silent for `dead`.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        reorder: Duration,
        dead: Duration,
        out: &mut VecDeque<Output>,
    ) {
        let give_up = if self.recovery.enabled {
            self.recovery.give_up
        } else {
            reorder
        };
        while let Some(noticed) = self.head_gap_noticed() {
            if now.saturating_duration_since(noticed) < give_up || !self.asked_enough() {
                break;
            }
            self.give_up_head_gap(MissedReason::Gap, None, out);
        }
        self.after_change(now, out);
        if !self.silent
            && !self.closed_cleanly()
            && now.saturating_duration_since(self.last_heard) >= dead
        {
            self.silent = true;
            out.push_back(Output::Missed(self.missed(
                MissedReason::PeerSilent,
                None,
                None,
            )));
        }
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) has something to do.
    pub(crate) fn next_timeout(&self, reorder: Duration, dead: Duration) -> Option<Instant> {
        let give_up = if self.recovery.enabled {
            self.recovery.give_up
        } else {
            reorder
        };
        let gap = self
            .head_gap_noticed()
            .filter(|_| self.asked_enough())
            .map(|t| t + give_up);
        let silent = (!self.silent && !self.closed_cleanly()).then(|| self.last_heard + dead);
        [gap, silent].into_iter().flatten().min()
    }

    /// Whether the head gap may be given up for time: without recovery always; with it, once
    /// it was asked for as many times as the give-up time holds request intervals (at most
    /// ten).
    fn asked_enough(&self) -> bool {
        if !self.recovery.enabled {
            return true;
        }
        let interval = self.recovery.nak_interval.as_nanos().max(1);
        let fit = u32::try_from(self.recovery.give_up.as_nanos() / interval).unwrap_or(u32::MAX);
        self.asked_head == self.next && self.asked >= fit.clamp(1, MIN_REQUESTS)
    }

    /// Schedules a request for a new gap (or forgets the schedule once no gap is open), and
    /// reports gaps the sender already said it no longer holds.
    fn after_change(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        if !self.evicted.is_empty() {
            self.apply_evicted(out);
        }
        let gap_open = self.next <= self.known_high;
        if !gap_open {
            self.nak_at = None;
        } else if self.nak_at.is_none() && self.recovery.enabled {
            // A random share of the delay, from the clock's low bits and the node: receivers
            // that lost the same frame on a shared channel ask at different times.
            let nanos = u64::try_from(self.recovery.nak_delay.as_nanos()).unwrap_or(u64::MAX);
            let delay = self.rng.next_u64() % nanos.max(1);
            self.nak_at = Some(now + Duration::from_nanos(delay));
        }
    }

    /// Ends the session because its sender restarted: delivers what is pending (reporting
    /// the holes between as gaps) and reports the tail that will never come, unless the
    /// sender shut down cleanly.
    pub(crate) fn retire(mut self, out: &mut VecDeque<Output>) {
        while !self.pending.is_empty() {
            self.give_up_head_gap(MissedReason::SenderRestarted, None, out);
        }
        if self.closed_cleanly() {
            return;
        }
        let range = (self.next <= self.known_high).then_some((self.next, self.known_high));
        out.push_back(Output::Missed(self.missed(
            MissedReason::SenderRestarted,
            range,
            None,
        )));
    }

    fn heard(&mut self, now: Instant, timestamp_ns: u64) {
        self.last_heard = now;
        self.newest_ts = self.newest_ts.max(timestamp_ns);
        self.silent = false;
    }

    fn note_overflow(&mut self, flags: Flags, out: &mut VecDeque<Output>) {
        let overflowed = flags.contains(Flags::OVERFLOWED);
        if overflowed && !self.overflowed {
            out.push_back(Output::Missed(self.missed(
                MissedReason::SenderOverflowed,
                None,
                None,
            )));
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
    fn give_up_head_gap(
        &mut self,
        reason: MissedReason,
        events: Option<Vec<EventId>>,
        out: &mut VecDeque<Output>,
    ) {
        self.give_up_head_gap_to(u64::MAX, reason, events, out);
    }

    /// Like [`give_up_head_gap`](Self::give_up_head_gap), for at most the frames up to `last`.
    fn give_up_head_gap_to(
        &mut self,
        last: u64,
        reason: MissedReason,
        events: Option<Vec<EventId>>,
        out: &mut VecDeque<Output>,
    ) {
        let end = match self.pending.first_key_value() {
            Some((&seq, _)) => seq - 1,
            None => self.known_high,
        }
        .min(last);
        self.give_up_before(end, reason, events, out);
        self.drain_pending(out);
        self.settle_tail();
    }

    /// Gives up on every gap up to `end` (delivering the frames between them): as many rounds
    /// as there are pending frames below `end`, whatever the length of the gaps.
    fn give_up_through(&mut self, end: u64, out: &mut VecDeque<Output>) {
        while self.next <= end {
            let before = self.next;
            self.give_up_head_gap_to(end, MissedReason::Gap, None, out);
            if self.next == before {
                break; // cannot happen: the head is a gap or pending; never spin
            }
        }
    }

    /// Reports `next..=end` as missed (if it is not empty) and moves past it.
    fn give_up_before(
        &mut self,
        end: u64,
        reason: MissedReason,
        events: Option<Vec<EventId>>,
        out: &mut VecDeque<Output>,
    ) {
        if end >= self.next {
            out.push_back(Output::Missed(self.missed(
                reason,
                Some((self.next, end)),
                events,
            )));
            // Sequences are below 2^63 (the endpoint refuses others), so this cannot overflow.
            self.next = end.saturating_add(1);
        }
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

    fn missed(
        &self,
        reason: MissedReason,
        range: Option<(u64, u64)>,
        events: Option<Vec<EventId>>,
    ) -> Missed {
        Missed {
            node: self.node,
            incarnation: self.incarnation,
            reason,
            range,
            events,
        }
    }
}
