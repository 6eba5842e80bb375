//! What the endpoint sends to one peer and what it does with control frames: statuses
//! (consumed position and requests for lost frames) to senders, frames sent again and
//! "no longer held" answers to receivers, and what the sender knows of its receivers'
//! acknowledgements. See the module documentation of the endpoint, "Recovery and flow
//! control".

use std::time::Instant;

use super::membership::acknowledged;
use super::outbound::Reply;
use super::{Endpoint, Now, Transmit};
use crate::wire::{ControlFrame, FRAME_OVERHEAD, Flags, FrameKind, HeaderFields, SharedFrame};

/// The sender's view of its receivers: the window, and who has acknowledged what.
impl Endpoint {
    /// Whether the window lets the next data frame go out: false while this node is a window
    /// ahead of its slowest live receiver. The driver then leaves events in the ring.
    pub fn window_open(&self) -> bool {
        self.outbound.allows(self.last_seq + 1)
    }

    /// Whether a live receiver still lacks some of the frames this node sent: a node that
    /// shuts down waits (for a bounded time) until it does not.
    pub fn unacknowledged(&self) -> bool {
        self.outbound.unacknowledged(self.last_seq)
    }

    /// The receivers (node ids) that have acknowledged every data frame up to `seq`, and
    /// those that have not yet, each sorted. Expected to acknowledge: every receiver in the
    /// window, and every node this one hears (a frame within the dead timeout at `now`, no
    /// goodbye), since nodes that send to this one receive from it too. A node with
    /// recovery off never acknowledges and stays in the second list.
    pub fn acknowledgements(&self, seq: u64, now: Instant) -> (Vec<u64>, Vec<u64>) {
        let dead = self.config.dead_timeout;
        let heard = |node: u64| {
            self.nodes.get(&node).is_some_and(|n| {
                !n.session.closed_cleanly()
                    && now.saturating_duration_since(n.session.last_heard()) < dead
            })
        };
        let (done, mut behind) = self.outbound.acknowledgements(seq, heard);
        if seq > 0 {
            behind.extend(
                self.nodes
                    .keys()
                    .copied()
                    .filter(|&n| heard(n) && !self.outbound.knows_receiver(n)),
            );
            behind.sort_unstable();
        }
        (done, behind)
    }
}

impl Endpoint {
    /// Acts on an accepted control frame: a status for this node (flow control, requests to
    /// answer), a status for another sender (hold back this node's own request for the same
    /// gap), or an answer that frames this node asked for are gone.
    pub(super) fn handle_control(
        &mut self,
        now: Instant,
        fields: &HeaderFields,
        frame: &SharedFrame,
    ) {
        let Some(control) = frame.control() else {
            return;
        };
        let for_me = control.target_node() == self.config.node;
        match fields.kind {
            FrameKind::Status if for_me => {
                // A status about an earlier incarnation of this node is of no use any more.
                if control.target_incarnation() != self.config.incarnation {
                    return;
                }
                let before = self.outbound.counts.naks_received;
                self.outbound.handle_status(
                    now,
                    (fields.node, fields.incarnation),
                    control.consumed(),
                    control.ranges(),
                    self.last_seq,
                );
                self.stats.naks_received += self.outbound.counts.naks_received - before;
            }
            FrameKind::Status => {
                self.ranges.clear();
                self.ranges.extend(control.ranges());
                if let Some(state) = self.nodes.get_mut(&control.target_node())
                    && state.session.incarnation() == control.target_incarnation()
                    && !self.ranges.is_empty()
                {
                    state.session.heard_request(now, &self.ranges);
                }
            }
            FrameKind::Evicted if for_me => {
                if control.target_incarnation() != self.config.incarnation {
                    return;
                }
                let ids = (!fields.flags.contains(Flags::IDS_INCOMPLETE))
                    .then(|| frame.events().collect::<Vec<_>>());
                let Some(state) = self.nodes.get_mut(&fields.node) else {
                    return;
                };
                for range in control.ranges() {
                    state
                        .session
                        .handle_evicted(now, range, ids.clone(), &mut self.out);
                }
            }
            _ => {}
        }
    }

    /// Writes the next frame for one peer into `buf` (which must hold a frame of the
    /// maximum length): an answer to a receiver's request (a frame sent again, byte for byte
    /// as first signed, or "no longer held" with the lost events' ids), or a status to a
    /// sender (how far this node has consumed, and the ranges it lacks). Call it until it
    /// returns `None` after handling what was received and the timers.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Now, buf: &mut [u8]) -> Option<Transmit> {
        self.last_turn = now.instant;
        loop {
            if let Some(reply) = self.outbound.replies.pop_front() {
                if let Some(t) = self.encode_reply(now, reply, buf) {
                    return Some(t);
                }
                continue;
            }
            if let Some(node) = self.due.pop() {
                if let Some(t) = self.encode_status(now, node, buf) {
                    return Some(t);
                }
                continue;
            }
            if self.scanned || !self.recovery.enabled {
                self.scanned = false;
                return None;
            }
            self.scanned = true;
            let (at, window, timing) = (now.instant, self.outbound_window(), self.timing);
            let answer_unknown = self.answers_unknown(at);
            let members = self.members.as_ref();
            self.due.extend(
                self.nodes
                    .iter()
                    .filter(|(node, _)| acknowledged(members, answer_unknown, **node))
                    .filter(|(_, s)| {
                        s.session.nak_due(at) || s.session.status_due(at, window, timing)
                    })
                    .map(|(&node, _)| node),
            );
            // Popped from the back: ascending node order, the same in every run.
            self.due.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    fn outbound_window(&self) -> u64 {
        self.config.recovery.window_frames
    }

    /// The header of a control frame: strictly rising timestamps (receivers refuse a control
    /// frame no newer than the last), and the last data sequence, as on a heartbeat.
    pub(super) fn control_fields(
        &mut self,
        now: Now,
        kind: FrameKind,
        flags: Flags,
    ) -> HeaderFields {
        let timestamp_ns = now.unix_ns.max(self.control_ts + 1);
        self.control_ts = timestamp_ns;
        HeaderFields {
            kind,
            flags,
            key_id: self.keyring.signing_key_id(),
            cluster: self.config.cluster,
            node: self.config.node,
            incarnation: self.config.incarnation,
            sequence: self.last_seq,
            timestamp_ns,
        }
    }

    fn encode_reply(&mut self, now: Now, reply: Reply, buf: &mut [u8]) -> Option<Transmit> {
        match reply {
            Reply::Resend {
                to,
                incarnation,
                seq,
            } => match self.outbound.frame(seq) {
                Some(frame) if frame.len() <= buf.len() => {
                    buf[..frame.len()].copy_from_slice(frame);
                    self.stats.frames_resent += 1;
                    Some(Transmit {
                        to,
                        len: frame.len(),
                    })
                }
                // Let go since it was asked for: say so instead.
                _ => self.encode_evicted(now, (to, incarnation), (seq, seq), buf),
            },
            Reply::Evicted {
                to,
                incarnation,
                first,
                last,
            } => self.encode_evicted(now, (to, incarnation), (first, last), buf),
        }
    }

    fn encode_evicted(
        &mut self,
        now: Now,
        (to, incarnation): (u64, u64),
        (first, last): (u64, u64),
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let room = buf.len().saturating_sub(
            FRAME_OVERHEAD + crate::wire::CONTROL_HEADER_LEN + crate::wire::RANGE_LEN,
        ) / crate::wire::EVENT_ID_LEN;
        let complete = self.outbound.ids_of(first, last, room, &mut self.ids);
        let flags = if complete {
            Flags::EMPTY
        } else {
            self.ids.clear();
            Flags::IDS_INCOMPLETE
        };
        let fields = self.control_fields(now, FrameKind::Evicted, flags);
        let control = ControlFrame {
            target_node: to,
            target_incarnation: incarnation,
            consumed: 0,
            ranges: &[(first, last)],
            ids: &self.ids,
        };
        let len = crate::wire::write_control(buf, &fields, &control, &self.keyring)
            .ok()?
            .len();
        self.stats.evicted_sent += 1;
        Some(Transmit { to, len })
    }

    fn encode_status(&mut self, now: Now, node: u64, buf: &mut [u8]) -> Option<Transmit> {
        if !self.nodes.contains_key(&node) {
            return None;
        }
        let fields = self.control_fields(now, FrameKind::Status, Flags::EMPTY);
        let state = self.nodes.get_mut(&node)?;
        let session = &mut state.session;
        if session.nak_due(now.instant) {
            self.stats.naks_suppressed += session.take_nak(now.instant, &mut self.ranges);
        } else {
            self.ranges.clear();
        }
        session.status_sent(now.instant);
        let control = ControlFrame {
            target_node: node,
            target_incarnation: session.incarnation(),
            consumed: session.consumed(),
            ranges: &self.ranges,
            ids: &[],
        };
        let len = crate::wire::write_control(buf, &fields, &control, &self.keyring)
            .ok()?
            .len();
        self.stats.statuses_sent += 1;
        if !self.ranges.is_empty() {
            self.stats.naks_sent += 1;
        }
        Some(Transmit { to: node, len })
    }
}
