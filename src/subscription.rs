//! Who listens to what: the registry of subscribers, [`Delivery`], [`Message`] and the
//! [`Subscription`] handle.

use arc_swap::ArcSwap;
use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::event::{EventId, Missed};
use crate::sync::plain::{Arc, AtomicU64, Ordering, Weak};

/// One event handed to a callback subscriber. Local events (raised on this node) borrow the
/// caller's payload; remote ones share the received datagram's buffer. Neither is a copy.
#[derive(Clone, Copy)]
pub struct Delivery<'a> {
    event: EventId,
    node: u64,
    incarnation: u64,
    sequence: u64,
    local: bool,
    payload: &'a [u8],
    shared: Option<&'a Bytes>,
}

impl<'a> Delivery<'a> {
    pub(crate) fn local(event: EventId, node: u64, payload: &'a [u8]) -> Self {
        Self {
            event,
            node,
            incarnation: 0,
            sequence: 0,
            local: true,
            payload,
            shared: None,
        }
    }

    pub(crate) fn remote(
        event: EventId,
        (node, incarnation, sequence): (u64, u64, u64),
        payload: &'a Bytes,
    ) -> Self {
        Self {
            event,
            node,
            incarnation,
            sequence,
            local: false,
            payload,
            shared: Some(payload),
        }
    }

    /// The event's id.
    pub fn event(&self) -> EventId {
        self.event
    }

    /// The node that raised it.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// For a remote event, the sender's incarnation and the sequence number of the frame that
    /// carried it (what [`Missed::range`] counts in); `(0, 0)` for a local one.
    pub fn frame(&self) -> (u64, u64) {
        (self.incarnation, self.sequence)
    }

    /// Whether it was raised on this node (delivered on the raising thread).
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The payload as [`Bytes`]: a shared reference for a remote event, a copy for a local
    /// one (whose payload belongs to the caller of `raise`).
    pub fn to_bytes(&self) -> Bytes {
        match self.shared {
            Some(b) => b.clone(),
            None => Bytes::copy_from_slice(self.payload),
        }
    }

    /// An owned copy of this delivery, for sending to another thread.
    pub fn to_message(&self) -> Message {
        Message {
            event: self.event,
            node: self.node,
            frame: self.frame(),
            local: self.local,
            payload: self.to_bytes(),
            lost_before: 0,
        }
    }
}

impl fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event)
            .field("node", &self.node)
            .field("local", &self.local)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// An owned event, as channel subscribers receive it.
///
/// A subscriber's channel is bounded (see [`crate::RouterBuilder::channel_capacity`]): when it
/// is full, events for it are dropped rather than queued without limit or waited for, and the
/// next message that gets through says how many with [`lost_before`](Self::lost_before).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The event's id.
    pub event: EventId,
    /// The node that raised it.
    pub node: u64,
    /// The sender's incarnation and the frame's sequence number (see [`Delivery::frame`]).
    pub frame: (u64, u64),
    /// Whether it was raised on this node.
    pub local: bool,
    /// The payload (for remote events, a slice of the received datagram).
    pub payload: Bytes,
    /// How many events for this subscription were dropped, just before this one, because its
    /// channel was full (0 normally). A cache treats a nonzero value as it treats a Missed
    /// notice: something it should have heard about may have changed.
    pub lost_before: u64,
}

type Callback = dyn Fn(&Delivery<'_>) + Send + Sync;
type MissedCallback = dyn Fn(&Missed) + Send + Sync;

#[derive(Clone)]
enum Sink {
    Callback(Arc<Callback>),
    /// A channel, the most messages it may hold, and how many it has dropped since the last
    /// one it took. The channel itself is unbounded, so its memory follows what it holds
    /// (a bounded crossbeam channel allocates every slot up front); the bound is checked
    /// before each send, and concurrent senders may overshoot it by one message each.
    Channel(Sender<Message>, usize, Arc<AtomicU64>),
}

#[derive(Clone)]
enum MissedSink {
    Callback(Arc<MissedCallback>),
    Channel(Sender<Missed>),
}

/// A hasher for event ids in the registry, which every delivery looks up.
///
/// SipHash (std's default) cost about 4 % of the dispatcher's time at 5 M events/s. Event ids
/// are 16 bytes, usually a SHA-256 prefix already, so a multiply-and-rotate fold of their
/// 8-byte halves spreads them well. It is not hardened against chosen collisions: the ids it
/// sees come from this node's own code and from frames whose MAC verified, that is from the
/// cluster's members, not from strangers.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&n.to_le_bytes());
    }
}

/// What a subscription listens to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    Event(EventId),
    All,
    Missed,
}

#[derive(Clone, Default)]
struct Tables {
    by_event: HashMap<EventId, Vec<(u64, Sink)>, BuildHasherDefault<IdHasher>>,
    all: Vec<(u64, Sink)>,
    missed: Vec<(u64, MissedSink)>,
}

/// The subscribers of one router, as an immutable snapshot that subscribe and unsubscribe
/// replace (copy on write).
///
/// Readers (every raise and every delivery) load the current snapshot without a lock and
/// without writing any shared memory, so raising threads do not contend, and a callback may
/// subscribe or unsubscribe, even itself, while it runs: it changes the next snapshot, not the
/// one being walked. Writers are serialised by `write`; they are rare and may allocate.
#[derive(Default)]
pub(crate) struct Registry {
    tables: ArcSwap<Tables>,
    write: Mutex<()>,
    next_id: AtomicU64,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tables.load();
        f.debug_struct("Registry")
            .field("events", &t.by_event.len())
            .field("all", &t.all.len())
            .field("missed", &t.missed.len())
            .finish()
    }
}

impl Registry {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add_callback(&self, topic: Option<EventId>, f: Arc<Callback>) -> (Topic, u64) {
        self.add(topic, Sink::Callback(f))
    }

    pub(crate) fn add_channel(
        &self,
        topic: Option<EventId>,
        tx: Sender<Message>,
        capacity: usize,
    ) -> (Topic, u64) {
        self.add(topic, Sink::Channel(tx, capacity, Arc::default()))
    }

    /// Replaces the snapshot with a changed copy of it.
    fn update<R>(&self, change: impl FnOnce(&mut Tables) -> R) -> R {
        let _writer = self.write.lock();
        let mut t = Tables::clone(&self.tables.load());
        let result = change(&mut t);
        self.tables.store(Arc::new(t));
        result
    }

    fn add(&self, topic: Option<EventId>, sink: Sink) -> (Topic, u64) {
        let id = self.id();
        self.update(|t| match topic {
            Some(event) => {
                t.by_event.entry(event).or_default().push((id, sink));
                (Topic::Event(event), id)
            }
            None => {
                t.all.push((id, sink));
                (Topic::All, id)
            }
        })
    }

    pub(crate) fn add_missed_callback(&self, f: Arc<MissedCallback>) -> (Topic, u64) {
        let id = self.id();
        self.update(|t| t.missed.push((id, MissedSink::Callback(f))));
        (Topic::Missed, id)
    }

    pub(crate) fn add_missed_channel(&self, tx: Sender<Missed>) -> (Topic, u64) {
        let id = self.id();
        self.update(|t| t.missed.push((id, MissedSink::Channel(tx))));
        (Topic::Missed, id)
    }

    pub(crate) fn remove(&self, topic: Topic, id: u64) {
        self.update(|t| Self::remove_from(t, topic, id));
    }

    fn remove_from(t: &mut Tables, topic: Topic, id: u64) {
        match topic {
            Topic::Event(event) => {
                if let Some(v) = t.by_event.get_mut(&event) {
                    v.retain(|(i, _)| *i != id);
                    if v.is_empty() {
                        t.by_event.remove(&event);
                    }
                }
            }
            Topic::All => t.all.retain(|(i, _)| *i != id),
            Topic::Missed => t.missed.retain(|(i, _)| *i != id),
        }
    }

    /// Hands `delivery` to every subscriber of its event and of all events; returns how many
    /// there were. Channel subscribers whose receiver is gone are skipped (and removed by
    /// their `Subscription`'s drop, or at the next subscribe).
    pub(crate) fn dispatch(&self, delivery: &Delivery<'_>) -> usize {
        self.dispatch_calling(delivery, |f| f(delivery))
    }

    /// As [`dispatch`](Self::dispatch), for herald's own threads: a callback that panics is
    /// reported to `panicked` and the others still run.
    pub(crate) fn dispatch_isolated(
        &self,
        delivery: &Delivery<'_>,
        panicked: &mut dyn FnMut(Box<dyn std::any::Any + Send>),
    ) -> usize {
        self.dispatch_calling(delivery, |f| {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(delivery))) {
                panicked(panic);
            }
        })
    }

    fn dispatch_calling(&self, delivery: &Delivery<'_>, mut call: impl FnMut(&Callback)) -> usize {
        let t = self.tables.load();
        let mut n = 0;
        let specific = t.by_event.get(&delivery.event).map(Vec::as_slice);
        for (_, sink) in specific.unwrap_or_default().iter().chain(t.all.iter()) {
            n += 1;
            match sink {
                Sink::Callback(f) => call(&**f),
                Sink::Channel(tx, capacity, lost) => {
                    if tx.len() >= *capacity {
                        lost.fetch_add(1, Ordering::AcqRel);
                        continue;
                    }
                    let mut message = delivery.to_message();
                    // Taken with a swap, so that two threads delivering at once never both
                    // report the same losses; put back (with this one) if the send fails.
                    message.lost_before = lost.swap(0, Ordering::AcqRel);
                    match tx.try_send(message) {
                        Ok(()) => {}
                        Err(TrySendError::Full(m)) => {
                            lost.fetch_add(m.lost_before + 1, Ordering::AcqRel);
                        }
                        // The receiver is gone; its Subscription's drop removes the sink.
                        Err(TrySendError::Disconnected(_)) => {}
                    }
                }
            }
        }
        n
    }

    /// Hands `missed` to every Missed subscriber; one that panics is reported to `panicked`
    /// and the others still run. Only herald's own threads call this.
    pub(crate) fn dispatch_missed(
        &self,
        missed: &Missed,
        panicked: &mut dyn FnMut(Box<dyn std::any::Any + Send>),
    ) -> usize {
        let t = self.tables.load();
        for (_, sink) in &t.missed {
            match sink {
                MissedSink::Callback(f) => {
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(missed))) {
                        panicked(panic);
                    }
                }
                MissedSink::Channel(tx) => {
                    let _ = tx.send(missed.clone());
                }
            }
        }
        t.missed.len()
    }
}

/// A live subscription. Dropping it unsubscribes (calls in progress on other threads finish).
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription {
    registry: Weak<Registry>,
    topic: Topic,
    id: u64,
}

impl Subscription {
    pub(crate) fn new(registry: Weak<Registry>, (topic, id): (Topic, u64)) -> Self {
        Self {
            registry,
            topic,
            id,
        }
    }

    /// Unsubscribes now (the same as dropping the handle).
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.remove(self.topic, self.id);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("id", &self.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sharing_a_half_are_still_told_apart() {
        let registry = Registry::default();
        let a = EventId::from_bytes([[1; 8], [2; 8]].concat().try_into().unwrap());
        let b = EventId::from_bytes([[1; 8], [3; 8]].concat().try_into().unwrap());
        let hits = Arc::new(AtomicU64::new(0));
        let h = Arc::clone(&hits);
        let _sub = registry.add_callback(
            Some(a),
            Arc::new(move |_: &Delivery<'_>| {
                h.fetch_add(1, Ordering::Relaxed);
            }),
        );
        assert_eq!(registry.dispatch(&Delivery::local(b, 1, b"")), 0);
        assert_eq!(registry.dispatch(&Delivery::local(a, 1, b"")), 1);
        assert_eq!(hits.load(Ordering::Relaxed), 1);
        let hash = |id: &EventId| {
            let mut hasher = IdHasher::default();
            std::hash::Hash::hash(id, &mut hasher);
            hasher.finish()
        };
        assert_ne!(hash(&a), hash(&b));
    }
}
