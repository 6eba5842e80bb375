//! Subscriptions as an async [`Stream`] (feature `stream`): [`Router::events`].
//!
//! The stream is runtime-neutral: it implements `futures_core::Stream` and wakes its task
//! through the standard [`Waker`], so it works on tokio, async-std, smol or a hand-written
//! executor alike. It is fed by the same subscriber callbacks as [`crate::Event::subscribe`]
//! and [`Router::on_missed`]: remote events and Missed notices come from one thread (the
//! dispatcher) in the library's order, local events from the raising thread as it raises.
//!
//! # Bounded, never silently lossy
//!
//! The stream buffers at most `capacity` items. When the consumer does not keep up, the
//! events that do not fit are dropped, and the consumer is told: before the next event that
//! gets through, the stream yields [`Missed`] notices with reason
//! [`MissedReason::LocalOverflow`], one per sender (node and incarnation) whose events were
//! dropped, naming the dropped events' ids (up to [`MAX_NAMED_EVENTS`] distinct ids, else
//! `None`: then everything is suspect) and, for remote senders, the frames they came in. Once
//! full, the stream takes events again when its buffer is half empty, so that a consumer
//! that lags gets a few notices covering many events, not one notice per event.
//!
//! The library's own Missed notices (gaps, silent peers, ...) are never dropped; when the
//! buffer is full, one that continues the notice before it (same sender, same reason) is
//! merged into it, so they cannot grow the buffer without bound either.

use bytes::Bytes;
use futures_core::Stream;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::event::{EventId, Missed, MissedReason};
use crate::router::Router;
use crate::subscription::{Delivery, Message, Subscription};
use crate::sync::plain::Arc;

/// The most distinct event ids a local-overflow [`Missed`] names; past that its
/// [`events`](Missed::events) is `None`.
pub const MAX_NAMED_EVENTS: usize = 64;

/// Which events an [`EventStream`] carries.
///
/// ```
/// use herald::stream::Filter;
/// use herald::EventId;
/// let changed = EventId::from_name("product.changed");
/// assert!(Filter::all().matches(&changed));
/// assert!(Filter::only([changed]).matches(&changed));
/// assert!(!Filter::from(EventId::from_name("product.deleted")).matches(&changed));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter(Option<Vec<EventId>>);

impl Filter {
    /// Every event.
    pub fn all() -> Self {
        Self(None)
    }

    /// Only these events (each once, however often it is listed).
    pub fn only(events: impl IntoIterator<Item = EventId>) -> Self {
        let mut ids: Vec<EventId> = events.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        Self(Some(ids))
    }

    /// Whether the filter lets `event` through.
    pub fn matches(&self, event: &EventId) -> bool {
        self.0
            .as_ref()
            .is_none_or(|ids| ids.binary_search(event).is_ok())
    }

    /// Whether a [`Missed`] notice concerns this filter: always, unless it names the lost
    /// events and none of them passes the filter.
    fn concerns(&self, missed: &Missed) -> bool {
        match (&self.0, &missed.events) {
            (Some(_), Some(lost)) => lost.iter().any(|e| self.matches(e)),
            _ => true,
        }
    }
}

impl From<EventId> for Filter {
    fn from(event: EventId) -> Self {
        Self::only([event])
    }
}

/// One item of an [`EventStream`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Item {
    /// An event: its id ([`Message::event`]), payload ([`Message::payload`], a `Bytes`) and
    /// sender ([`Message::node`]). [`Message::lost_before`] is always 0 here: losses come as
    /// [`Item::Missed`].
    Event(Message),
    /// Events may have been lost: from a sender (the library's reasons), or because this
    /// stream's consumer fell behind ([`MissedReason::LocalOverflow`]).
    Missed(Missed),
}

/// Events dropped from one sender (node, incarnation) since the stream last had room.
struct Lost {
    node: u64,
    incarnation: u64,
    /// First and last frame sequence, for remote events.
    frames: Option<(u64, u64)>,
    /// Distinct ids, or `None` past [`MAX_NAMED_EVENTS`].
    events: Option<Vec<EventId>>,
}

impl Lost {
    fn missed(self) -> Missed {
        Missed {
            node: self.node,
            incarnation: self.incarnation,
            reason: MissedReason::LocalOverflow,
            range: self.frames,
            events: self.events,
        }
    }
}

struct State {
    queue: VecDeque<Item>,
    capacity: usize,
    /// Set while events are being dropped; cleared when the queue is half empty again.
    overflowing: bool,
    lost: Vec<Lost>,
    waker: Option<Waker>,
    /// The router is gone: nothing more will come.
    closed: bool,
}

impl State {
    /// Queues `message`, or records it as lost.
    fn push_event(&mut self, message: Message) {
        let len = self.queue.len();
        if self.overflowing && len <= self.capacity / 2 {
            self.overflowing = false;
        }
        if !self.overflowing && len + self.lost.len() < self.capacity {
            self.flush_lost();
            self.queue.push_back(Item::Event(message));
            return;
        }
        self.overflowing = true;
        let (incarnation, sequence) = message.frame;
        let i = match self
            .lost
            .iter()
            .position(|l| l.node == message.node && l.incarnation == incarnation)
        {
            Some(i) => i,
            None => {
                self.lost.push(Lost {
                    node: message.node,
                    incarnation,
                    frames: None,
                    events: Some(Vec::new()),
                });
                self.lost.len() - 1
            }
        };
        let lost = &mut self.lost[i];
        if !message.local {
            lost.frames = Some(match lost.frames {
                Some((first, last)) => (first.min(sequence), last.max(sequence)),
                None => (sequence, sequence),
            });
        }
        if let Some(events) = &mut lost.events
            && !events.contains(&message.event)
        {
            if events.len() == MAX_NAMED_EVENTS {
                lost.events = None;
            } else {
                events.push(message.event);
            }
        }
    }

    /// Queues a Missed notice from the library, after the losses before it.
    fn push_missed(&mut self, missed: Missed) {
        self.flush_lost();
        if self.queue.len() >= self.capacity
            && let Some(Item::Missed(last)) = self.queue.back_mut()
            && merge(last, &missed)
        {
            return;
        }
        self.queue.push_back(Item::Missed(missed));
    }

    fn flush_lost(&mut self) {
        for lost in self.lost.drain(..) {
            self.queue.push_back(Item::Missed(lost.missed()));
        }
    }
}

/// Widens `into` to cover `more` as well, if both are about the same sender and reason.
fn merge(into: &mut Missed, more: &Missed) -> bool {
    if (into.node, into.incarnation, into.reason) != (more.node, more.incarnation, more.reason) {
        return false;
    }
    into.range = match (into.range, more.range) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        _ => None,
    };
    into.events = match (into.events.take(), &more.events) {
        (Some(mut a), Some(b)) => {
            for e in b {
                if !a.contains(e) {
                    a.push(*e);
                }
            }
            (a.len() <= MAX_NAMED_EVENTS).then_some(a)
        }
        _ => None,
    };
    true
}

/// The half of the stream the subscriber callbacks hold. When the router drops its
/// subscribers (the last handle on it is gone), this drops and the stream ends.
struct Feed(Arc<Mutex<State>>);

impl Feed {
    fn with(&self, f: impl FnOnce(&mut State)) {
        let waker = {
            let mut state = self.0.lock();
            f(&mut state);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.with(|state| state.closed = true);
    }
}

/// An async stream of a router's events and [`Missed`] notices: see [`Router::events`] and
/// the [module documentation](self) for its buffering.
///
/// Dropping it unsubscribes. It ends (yields `None`) once the router is dropped.
#[must_use = "streams do nothing unless polled, and dropping one unsubscribes"]
pub struct EventStream {
    state: Arc<Mutex<State>>,
    _subscriptions: Vec<Subscription>,
}

impl EventStream {
    /// How many items are buffered now.
    pub fn queued(&self) -> usize {
        self.state.lock().queue.len()
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("EventStream")
            .field("buffered", &state.queue.len())
            .field("capacity", &state.capacity)
            .field("overflowing", &state.overflowing)
            .finish()
    }
}

impl Stream for EventStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut state = self.state.lock();
        if let Some(item) = state.queue.pop_front() {
            return Poll::Ready(Some(item));
        }
        if !state.lost.is_empty() {
            // Only reachable after losses with nothing queued: say so now.
            state.flush_lost();
            return Poll::Ready(state.queue.pop_front());
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.state.lock().queue.len(), None)
    }
}

impl futures_core::FusedStream for EventStream {
    fn is_terminated(&self) -> bool {
        let state = self.state.lock();
        state.closed && state.queue.is_empty() && state.lost.is_empty()
    }
}

impl Router {
    /// The events that pass `filter`, and every [`Missed`] notice that may concern them, as an
    /// async [`Stream`] buffering up to [`RouterBuilder::channel_capacity`] items (see
    /// [`events_with_capacity`](Self::events_with_capacity)).
    ///
    /// [`RouterBuilder::channel_capacity`]: crate::RouterBuilder::channel_capacity
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use herald::auth::{Key, Keyring};
    /// use herald::stream::{Filter, Item};
    /// use herald::{EventId, Router};
    ///
    /// let router = Router::builder()
    ///     .cluster("shop")
    ///     .keyring(Keyring::new(1, Key::from_bytes([7; 32])).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let changed = EventId::from_name("product.changed");
    /// let mut events = router.events(Filter::only([changed]));
    /// router.event(changed).raise(b"42").unwrap();
    /// router.event(EventId::from_name("other")).raise(b"not for us").unwrap();
    ///
    /// // Any executor will do; a web service `.await`s this in its own runtime.
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let first = runtime.block_on(events.next());
    /// match first {
    ///     Some(Item::Event(m)) => assert_eq!((m.event, &m.payload[..]), (changed, &b"42"[..])),
    ///     Some(Item::Missed(missed)) => panic!("nothing was lost, yet: {missed:?}"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// assert_eq!(events.queued(), 0);
    /// router.shutdown();
    /// ```
    pub fn events(&self, filter: impl Into<Filter>) -> EventStream {
        self.events_with_capacity(filter, self.channel_capacity())
    }

    /// As [`events`](Self::events), buffering up to `capacity` items (at least 1).
    pub fn events_with_capacity(&self, filter: impl Into<Filter>, capacity: usize) -> EventStream {
        let filter = filter.into();
        let state = Arc::new(Mutex::new(State {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            overflowing: false,
            lost: Vec::new(),
            waker: None,
            closed: false,
        }));
        let feed = Arc::new(Feed(Arc::clone(&state)));
        let on_event = {
            let feed = Arc::clone(&feed);
            move |d: &Delivery<'_>| feed.with(|s| s.push_event(d.to_message()))
        };
        let mut subscriptions = match &filter.0 {
            None => vec![self.subscribe_all(on_event)],
            Some(ids) => {
                let on_event = Arc::new(on_event);
                ids.iter()
                    .map(|id| {
                        let f = Arc::clone(&on_event);
                        self.event(*id).subscribe(move |d| f(d))
                    })
                    .collect()
            }
        };
        subscriptions.push(self.on_missed(move |m| {
            if filter.concerns(m) {
                feed.with(|s| s.push_missed(m.clone()));
            }
        }));
        EventStream {
            state,
            _subscriptions: subscriptions,
        }
    }
}

impl Item {
    /// The event's payload, if this is an event.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Self::Event(m) => Some(&m.payload),
            Self::Missed(_) => None,
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
