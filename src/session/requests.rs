//! What a session asks of its sender: requests for the frames of open gaps (scheduled,
//! repeated, held back when another receiver on a shared channel just asked), and statuses
//! saying how far this node has consumed.

use std::time::{Duration, Instant};

use super::{Session, StatusTiming};
use crate::wire::MAX_RANGES;

impl Session {
    /// When the open gaps are next to be asked for.
    pub(crate) fn nak_at(&self) -> Option<Instant> {
        self.nak_at
    }

    /// Whether a request for the open gaps is due at `now`.
    pub(crate) fn nak_due(&self, now: Instant) -> bool {
        self.nak_at.is_some_and(|t| t <= now)
    }

    /// Notes another receiver's request to this session's sender (on a shared channel: the
    /// resends it brings reach this node too). For a request interval, this node leaves the
    /// ranges it covers out of its own requests.
    pub(crate) fn heard_request(&mut self, now: Instant, ranges: &[(u64, u64)]) {
        self.heard.clear();
        self.heard.extend_from_slice(ranges);
        self.heard_until = Some(now + self.recovery.nak_interval);
    }

    /// The missing ranges, ascending (at most [`MAX_RANGES`]), for a request, less those
    /// another receiver just asked for; schedules the next request. Returns how many ranges
    /// were left out for that reason.
    pub(crate) fn take_nak(&mut self, now: Instant, ranges: &mut Vec<(u64, u64)>) -> u64 {
        ranges.clear();
        let mut from = self.next;
        for &seq in self.pending.keys() {
            if ranges.len() == MAX_RANGES {
                break;
            }
            if seq > from {
                ranges.push((from, seq - 1));
            }
            from = seq + 1;
        }
        if ranges.len() < MAX_RANGES && from <= self.known_high {
            ranges.push((from, self.known_high));
        }
        self.nak_at = (!ranges.is_empty()).then(|| now + self.recovery.nak_interval);
        let mut held_back = 0;
        if self.heard_until.is_some_and(|until| now < until) {
            let heard = &self.heard;
            ranges.retain(|&(first, last)| {
                let covered = heard.iter().any(|&(a, b)| a <= first && last <= b);
                held_back += u64::from(covered);
                !covered
            });
        }
        if ranges.first().is_some_and(|&(first, _)| first == self.next) {
            if self.asked_head != self.next {
                self.asked_head = self.next;
                self.asked = 0;
            }
            self.asked = self.asked.saturating_add(1);
        }
        held_back
    }

    /// Whether this node should tell the sender how far it has consumed: it made progress
    /// worth a message (a quarter of `window` frames), or `keepalive` has passed since the
    /// last status while there is progress to report or the sender sends data (the sender
    /// counts a receiver in its window only while it hears from it).
    pub(crate) fn status_due(&self, now: Instant, window: u64, timing: StatusTiming) -> bool {
        if self.silent || self.closed_cleanly() {
            return false;
        }
        let since = self
            .reported_at
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let progress = self.consumed().saturating_sub(self.reported);
        progress >= (window / 4).max(1)
            || (since >= timing.keepalive && (progress > 0 || self.sending(now, timing.active_for)))
    }

    /// When a status is next due for the keepalive (or progress not yet reported).
    pub(crate) fn status_deadline(&self, now: Instant, timing: StatusTiming) -> Option<Instant> {
        if self.silent || self.closed_cleanly() {
            return None;
        }
        let at = self.reported_at?;
        (self.consumed() > self.reported || self.sending(now, timing.active_for))
            .then_some(at + timing.keepalive)
    }

    /// Whether the sender sent data within `active_for`.
    fn sending(&self, now: Instant, active_for: Duration) -> bool {
        self.last_data
            .is_some_and(|t| now.saturating_duration_since(t) < active_for)
    }

    /// Notes that a status with the consumed position went out.
    pub(crate) fn status_sent(&mut self, now: Instant) {
        self.reported = self.consumed();
        self.reported_at = Some(now);
    }
}
