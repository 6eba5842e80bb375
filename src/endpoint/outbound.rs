//! The sender's half of recovery and flow control, sans-IO: the signed frames it keeps so it
//! can send them again byte for byte, the event ids of frames it has let go (kept far longer,
//! so that a receiver told "gone" learns which events it lost), and how far each receiver has
//! consumed, which bounds how far ahead of the slowest live receiver the sender may run.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::event::EventId;

/// The most frames one status can have sent again; a receiver asks again for the rest.
const MAX_RESEND_PER_STATUS: usize = 512;

/// Settings of the sender's side (see [`RecoveryConfig`](crate::endpoint::RecoveryConfig)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutboundConfig {
    pub(crate) retention_bytes: usize,
    pub(crate) retained_ids: usize,
    pub(crate) window_frames: u64,
    pub(crate) receiver_timeout: Duration,
    pub(crate) resend_holdoff: Duration,
    pub(crate) shared_channel: bool,
    pub(crate) max_receivers: usize,
}

/// A signed frame kept for sending again.
#[derive(Debug)]
struct Held {
    seq: u64,
    /// The frame as sent, then its event table in plaintext (a sealed frame's is not).
    bytes: Vec<u8>,
    /// Where the frame ends and its event table starts in `bytes`.
    table_at: usize,
    /// When it was last sent again, and to whom.
    resent: Option<(Instant, u64)>,
}

/// What the sender knows of one receiver.
#[derive(Debug)]
struct Receiver {
    incarnation: u64,
    consumed: u64,
    last_status: Instant,
    /// Whether it counts in the window: from its first status on, until it is silent for the
    /// receiver timeout; after that, once it is back within a window of the sender.
    live: bool,
}

/// Something to send to one receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A held frame, again, to receiver `to` (of `incarnation`).
    Resend { to: u64, incarnation: u64, seq: u64 },
    /// "No longer held": `first..=last`, for that receiver's incarnation.
    Evicted {
        to: u64,
        incarnation: u64,
        first: u64,
        last: u64,
    },
}

/// Counters of the sender's side.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OutboundCounts {
    pub(crate) naks_received: u64,
    pub(crate) receivers_dropped: u64,
}

#[derive(Debug)]
pub(crate) struct Outbound {
    config: OutboundConfig,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Buffers of frames let go, for the next frames to keep (no allocation once warm).
    spare: Vec<Vec<u8>>,
    /// Event ids of frames let go, frame after frame, and per frame its sequence and the
    /// absolute index of its first id.
    ids: VecDeque<EventId>,
    id_frames: VecDeque<(u64, u64)>,
    /// The absolute index of `ids[0]`.
    ids_base: u64,
    receivers: HashMap<u64, Receiver>,
    /// The highest sequence the window allows now (`u64::MAX`: no live receiver).
    limit: u64,
    pub(crate) replies: VecDeque<Reply>,
    pub(crate) counts: OutboundCounts,
}

impl Outbound {
    pub(crate) fn new(config: OutboundConfig) -> Self {
        Self {
            config,
            held: VecDeque::new(),
            held_bytes: 0,
            spare: Vec::new(),
            ids: VecDeque::new(),
            id_frames: VecDeque::new(),
            ids_base: 0,
            receivers: HashMap::new(),
            limit: u64::MAX,
            replies: VecDeque::new(),
            counts: OutboundCounts::default(),
        }
    }

    /// Keeps a copy of the data frame `seq` just sent, whose event table is `table`; lets the
    /// oldest frames go (keeping their ids) to stay within the retention.
    pub(crate) fn keep(&mut self, seq: u64, frame: &[u8], table: &[u8]) {
        if self.config.retention_bytes < frame.len() {
            self.remember_ids(seq, table);
            return;
        }
        while self.held_bytes + frame.len() > self.config.retention_bytes {
            let Some(old) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= old.table_at;
            let table = old.bytes.get(old.table_at..).unwrap_or_default();
            self.remember_ids(old.seq, table);
            self.spare.push(old.bytes);
        }
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(frame);
        bytes.extend_from_slice(table);
        self.held_bytes += frame.len();
        self.held.push_back(Held {
            seq,
            bytes,
            table_at: frame.len(),
            resent: None,
        });
    }

    /// Keeps the event ids of frame `seq` (a raw event table) after the frame itself is gone.
    fn remember_ids(&mut self, seq: u64, table: &[u8]) {
        let count = table.len() / crate::wire::EVENT_ID_LEN;
        if count > self.config.retained_ids {
            self.id_frames.clear();
            self.ids_base += self.ids.len() as u64;
            self.ids.clear();
            return;
        }
        while self.ids.len() + count > self.config.retained_ids {
            let Some((_, start)) = self.id_frames.pop_front() else {
                break;
            };
            let next = self
                .id_frames
                .front()
                .map_or(self.ids_base + self.ids.len() as u64, |&(_, s)| s);
            for _ in start..next {
                self.ids.pop_front();
            }
            self.ids_base = next;
        }
        // Frames are let go in order; a frame out of order would break the lookup by offset.
        if self
            .id_frames
            .back()
            .is_some_and(|&(last, _)| last + 1 != seq)
        {
            self.ids_base += self.ids.len() as u64;
            self.ids.clear();
            self.id_frames.clear();
        }
        self.id_frames
            .push_back((seq, self.ids_base + self.ids.len() as u64));
        for chunk in table.chunks_exact(crate::wire::EVENT_ID_LEN) {
            let mut id = [0u8; 16];
            id.copy_from_slice(chunk);
            self.ids.push_back(EventId::from_bytes(id));
        }
    }

    /// The held frame `seq`, if it is still held.
    pub(crate) fn frame(&self, seq: u64) -> Option<&[u8]> {
        let first = self.held.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.held
            .get(index)
            .map(|h| h.bytes.get(..h.table_at).unwrap_or_default())
    }

    /// The first sequence still held (`after_last` when none is).
    fn first_held(&self, after_last: u64) -> u64 {
        self.held.front().map_or(after_last, |h| h.seq)
    }

    /// Collects the distinct ids of the events of frames `first..=last` into `out` (at most
    /// `max`); returns whether that is all of them.
    pub(crate) fn ids_of(&self, first: u64, last: u64, max: usize, out: &mut Vec<EventId>) -> bool {
        out.clear();
        let Some(&(first_known, _)) = self.id_frames.front() else {
            return false;
        };
        let mut complete = first >= first_known;
        let from = first.max(first_known);
        let Ok(mut index) = usize::try_from(from - first_known) else {
            return false;
        };
        let end_abs = self.ids_base + self.ids.len() as u64;
        while let Some(&(seq, start)) = self.id_frames.get(index) {
            if seq > last {
                break;
            }
            let end = self.id_frames.get(index + 1).map_or(end_abs, |&(_, s)| s);
            for abs in start..end {
                if let Some(id) = usize::try_from(abs - self.ids_base)
                    .ok()
                    .and_then(|i| self.ids.get(i))
                {
                    out.push(*id);
                }
            }
            if out.len() > max * 4 {
                out.sort_unstable();
                out.dedup();
                if out.len() > max {
                    out.truncate(max);
                    return false;
                }
            }
            index += 1;
        }
        out.sort_unstable();
        out.dedup();
        if out.len() > max {
            out.truncate(max);
            complete = false;
        }
        complete
    }

    /// Takes a status from receiver `from` (incarnation `incarnation`): its consumed position
    /// and the ranges it lacks. `last_seq` is the last sequence this node sent.
    pub(crate) fn handle_status(
        &mut self,
        now: Instant,
        (from, incarnation): (u64, u64),
        consumed: u64,
        ranges: impl Iterator<Item = (u64, u64)>,
        last_seq: u64,
    ) {
        let consumed = consumed.min(last_seq);
        if !self.receivers.contains_key(&from) && self.receivers.len() >= self.config.max_receivers
        {
            self.forget_quietest();
        }
        let window = self.config.window_frames;
        // A new receiver counts at once, however far behind it is: holding the sender back
        // until it catches up is what the window is for.
        let receiver = self.receivers.entry(from).or_insert(Receiver {
            incarnation,
            consumed,
            last_status: now,
            live: true,
        });
        if receiver.incarnation != incarnation {
            receiver.incarnation = incarnation;
            receiver.consumed = consumed;
        }
        receiver.consumed = receiver.consumed.max(consumed);
        receiver.last_status = now;
        // One dropped for silence joins the window again only once it is within a window of
        // the sender, so that one that fell far behind does not stall it again.
        if !receiver.live && receiver.consumed.saturating_add(window) >= last_seq {
            receiver.live = true;
        }
        let mut asked = false;
        let mut resends = 0;
        let after_last = last_seq + 1;
        for (first, last) in ranges {
            asked = true;
            if first > last_seq {
                continue; // never sent: nothing to answer
            }
            let last = last.min(last_seq);
            let held_from = self.first_held(after_last);
            if first < held_from {
                self.replies.push_back(Reply::Evicted {
                    to: from,
                    incarnation,
                    first,
                    last: last.min(held_from - 1),
                });
            }
            let mut seq = first.max(held_from);
            while seq <= last && resends < MAX_RESEND_PER_STATUS {
                if self.mark_resent(now, seq, from) {
                    self.replies.push_back(Reply::Resend {
                        to: from,
                        incarnation,
                        seq,
                    });
                    resends += 1;
                }
                seq += 1;
            }
        }
        if asked {
            self.counts.naks_received += 1;
        }
        self.recompute_limit();
    }

    /// Notes that frame `seq` goes out again to `to`, unless it just did (to the same
    /// receiver, or to anyone on a shared channel, where every receiver gets the resend).
    fn mark_resent(&mut self, now: Instant, seq: u64, to: u64) -> bool {
        let Some(first) = self.held.front().map(|h| h.seq) else {
            return false;
        };
        let Some(held) = usize::try_from(seq - first)
            .ok()
            .and_then(|i| self.held.get_mut(i))
        else {
            return false;
        };
        if let Some((at, whom)) = held.resent
            && now.saturating_duration_since(at) < self.config.resend_holdoff
            && (self.config.shared_channel || whom == to)
        {
            return false;
        }
        held.resent = Some((now, to));
        true
    }

    fn forget_quietest(&mut self) {
        if let Some(node) = self
            .receivers
            .iter()
            .min_by_key(|(_, r)| r.last_status)
            .map(|(&n, _)| n)
        {
            self.receivers.remove(&node);
        }
    }

    fn recompute_limit(&mut self) {
        self.limit = self
            .receivers
            .values()
            .filter(|r| r.live)
            .map(|r| r.consumed.saturating_add(self.config.window_frames))
            .min()
            .unwrap_or(u64::MAX);
    }

    /// Whether the window lets data frame `seq` go out.
    pub(crate) fn allows(&self, seq: u64) -> bool {
        seq <= self.limit
    }

    /// Drops receivers silent past the receiver timeout from the window; a receiver that had
    /// everything is only idle, one that lacked frames is dropped (counted and logged).
    pub(crate) fn handle_timeout(&mut self, now: Instant, last_seq: u64) {
        let timeout = self.config.receiver_timeout;
        let mut changed = false;
        for (node, r) in &mut self.receivers {
            if r.live && now.saturating_duration_since(r.last_status) >= timeout {
                r.live = false;
                changed = true;
                if r.consumed < last_seq {
                    self.counts.receivers_dropped += 1;
                    tracing::warn!(
                        receiver = node,
                        behind = last_seq - r.consumed,
                        "a receiver stopped acknowledging: it no longer holds this sender back"
                    );
                }
            }
        }
        self.receivers
            .retain(|_, r| now.saturating_duration_since(r.last_status) < timeout * 20);
        if changed {
            self.recompute_limit();
        }
    }

    /// When a live receiver next times out.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.receivers
            .values()
            .filter(|r| r.live)
            .map(|r| r.last_status + self.config.receiver_timeout)
            .min()
    }

    /// Whether a live receiver has not yet consumed everything up to `last_seq`.
    pub(crate) fn unacknowledged(&self, last_seq: u64) -> bool {
        self.receivers
            .values()
            .any(|r| r.live && r.consumed < last_seq)
    }

    /// The receivers (node ids) that have consumed everything up to `seq`, and those that
    /// have not, each sorted: the live ones, and those idle or dropped from the window for
    /// which `heard` says their node is still heard from (they will acknowledge what they
    /// get, or they are stuck).
    pub(crate) fn acknowledgements(
        &self,
        seq: u64,
        heard: impl Fn(u64) -> bool,
    ) -> (Vec<u64>, Vec<u64>) {
        let (mut done, mut behind): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
        for (&node, r) in &self.receivers {
            if !(r.live || heard(node)) {
                continue;
            }
            if r.consumed >= seq {
                done.push(node);
            } else {
                behind.push(node);
            }
        }
        done.sort_unstable();
        behind.sort_unstable();
        (done, behind)
    }

    /// Whether `node` ever acknowledged (is a known receiver).
    pub(crate) fn knows_receiver(&self, node: u64) -> bool {
        self.receivers.contains_key(&node)
    }

    /// Live receivers and frames held, for metrics.
    pub(crate) fn live_receivers(&self) -> usize {
        self.receivers.values().filter(|r| r.live).count()
    }
}
