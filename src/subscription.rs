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
use crate::sync::plain::{Arc, AtomicBool, AtomicU64, Ordering, Weak};

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
    /// For a remote event: the frame it came in and where in it the payload starts.
    shared: Option<(&'a Bytes, usize)>,
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

    /// A remote event whose payload is `frame[offset..offset + payload.len()]`.
    pub(crate) fn remote(
        event: EventId,
        (node, incarnation, sequence): (u64, u64, u64),
        frame: &'a Bytes,
        (offset, payload): (usize, &'a [u8]),
    ) -> Self {
        Self {
            event,
            node,
            incarnation,
            sequence,
            local: false,
            payload,
            shared: Some((frame, offset)),
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
    /// one (whose payload belongs to the caller of `raise`). A remote payload shares the
    /// block it was received into (64 KiB or more, with other frames in it) and keeps all of
    /// it alive, so a subscriber that stores payloads for long should copy them
    /// (`Bytes::copy_from_slice(d.payload())`).
    pub fn to_bytes(&self) -> Bytes {
        match self.shared {
            Some((frame, offset)) => frame.slice(offset..offset + self.payload.len()),
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
    /// Bumped after each change, so a [`Snapshot`] held across a frame's records notices it.
    changes: AtomicU64,
    /// Whether any event subscriber exists: a raise with none (a node that only sends) skips
    /// loading the tables.
    has_event_sinks: AtomicBool,
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
        let has_event_sinks = !t.by_event.is_empty() || !t.all.is_empty();
        self.tables.store(Arc::new(t));
        self.has_event_sinks
            .store(has_event_sinks, Ordering::Release);
        self.changes.fetch_add(1, Ordering::Release);
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
        if !self.has_event_sinks.load(Ordering::Acquire) {
            return 0;
        }
        dispatch_in(&self.tables.load(), delivery, |f| f(delivery))
    }

    /// The subscribers, for dispatching a run of deliveries (a frame's records) without
    /// loading them for each one. A change (subscribe, unsubscribe) still takes effect from
    /// the next delivery on, as with [`dispatch`](Self::dispatch).
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        let changes = self.changes.load(Ordering::Acquire);
        Snapshot {
            registry: self,
            tables: self.tables.load(),
            changes,
        }
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

/// A [`Registry`]'s subscribers, loaded once for many deliveries ([`Registry::snapshot`]).
pub(crate) struct Snapshot<'r> {
    registry: &'r Registry,
    tables: arc_swap::Guard<Arc<Tables>>,
    /// The registry's change count when `tables` was loaded (read before it).
    changes: u64,
}

impl Snapshot<'_> {
    /// As [`Registry::dispatch`], for herald's own threads: a callback that panics is reported
    /// to `panicked` and the others still run. Reloads the subscribers first if they changed
    /// (a subscriber that unsubscribed itself, or was unsubscribed from another thread, is
    /// not called for the rest of the frame).
    pub(crate) fn dispatch_isolated(
        &mut self,
        delivery: &Delivery<'_>,
        panicked: &mut dyn FnMut(Box<dyn std::any::Any + Send>),
    ) -> usize {
        let changes = self.registry.changes.load(Ordering::Acquire);
        if changes != self.changes {
            self.changes = changes;
            self.tables = self.registry.tables.load();
        }
        dispatch_in(&self.tables, delivery, |f| {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(delivery))) {
                panicked(panic);
            }
        })
    }
}

/// Hands `delivery` to `t`'s subscribers of its event and of all events, callbacks through
/// `call`; returns how many there were.
fn dispatch_in(t: &Tables, delivery: &Delivery<'_>, mut call: impl FnMut(&Callback)) -> usize {
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

    /// A remote delivery borrows its payload; an owned one (for a channel, or a subscriber
    /// that keeps it) is a slice of the received frame, not a copy.
    #[test]
    fn a_remote_payload_becomes_bytes_by_slicing_its_frame() {
        let frame = Bytes::from_static(b"head:PAYLOAD:tail");
        let event = EventId::from_name("e");
        let d = Delivery::remote(event, (7, 8, 9), &frame, (5, &frame[5..12]));
        assert_eq!(d.payload(), b"PAYLOAD");
        assert_eq!((d.node(), d.frame(), d.is_local()), (7, (8, 9), false));
        let owned = d.to_bytes();
        assert_eq!(&owned[..], b"PAYLOAD");
        assert_eq!(owned.as_ptr(), frame[5..].as_ptr(), "a slice of the frame");
        let message = d.to_message();
        assert_eq!(&message.payload[..], b"PAYLOAD");
        assert_eq!(message.payload.as_ptr(), frame[5..].as_ptr());
    }

    /// The shortcut for a registry with no event subscriber follows every change: one for
    /// this event, one for every event, and their removal.
    #[test]
    fn dispatch_finds_subscribers_as_they_come_and_go() {
        let registry = Registry::default();
        let event = EventId::from_name("e");
        let d = Delivery::local(event, 1, b"x");
        let missed = registry.add_missed_callback(Arc::new(|_: &Missed| {}));
        assert_eq!(
            registry.dispatch(&d),
            0,
            "a Missed subscriber takes no events"
        );
        let (topic, id) = registry.add_callback(Some(event), Arc::new(|_: &Delivery<'_>| {}));
        assert_eq!(registry.dispatch(&d), 1);
        let (all, all_id) = registry.add_callback(None, Arc::new(|_: &Delivery<'_>| {}));
        assert_eq!(registry.dispatch(&d), 2);
        registry.remove(topic, id);
        assert_eq!(
            registry.dispatch(&d),
            1,
            "the every-event subscriber remains"
        );
        registry.remove(all, all_id);
        assert_eq!(registry.dispatch(&d), 0);
        registry.remove(missed.0, missed.1);
        assert_eq!(registry.dispatch(&d), 0);
    }

    /// A frame's records share one snapshot of the subscribers, yet a subscriber removed
    /// while the frame is being dispatched (here, by itself, on its first call) is not called
    /// for the records after that; one added meanwhile is called for them.
    #[test]
    fn a_snapshot_notices_changes_between_deliveries() {
        let registry = Arc::new(Registry::default());
        let event = EventId::from_name("e");
        let once = Arc::new(AtomicU64::new(0));
        let late = Arc::new(AtomicU64::new(0));
        let me = Arc::new(Mutex::new(None));
        let (r, o, l, m) = (
            Arc::clone(&registry),
            Arc::clone(&once),
            Arc::clone(&late),
            Arc::clone(&me),
        );
        let added = Mutex::new(false);
        let key = registry.add_callback(
            Some(event),
            Arc::new(move |_: &Delivery<'_>| {
                o.fetch_add(1, Ordering::Relaxed);
                if let Some((topic, id)) = m.lock().take() {
                    r.remove(topic, id);
                }
                let mut added = added.lock();
                if !*added {
                    *added = true;
                    let l = Arc::clone(&l);
                    let _ = r.add_callback(
                        Some(event),
                        Arc::new(move |_: &Delivery<'_>| {
                            l.fetch_add(1, Ordering::Relaxed);
                        }),
                    );
                }
            }),
        );
        *me.lock() = Some(key);
        let delivery = Delivery::local(event, 1, b"x");
        let mut snapshot = registry.snapshot();
        for _ in 0..5 {
            snapshot.dispatch_isolated(&delivery, &mut |_| panic!("no panic expected"));
        }
        assert_eq!(
            once.load(Ordering::Relaxed),
            1,
            "removed after its first call"
        );
        assert_eq!(
            late.load(Ordering::Relaxed),
            4,
            "added during the first call"
        );
    }
}
