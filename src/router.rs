//! [`Router`]: what an application embeds. Raise events, subscribe to them, hear about
//! [`Missed`] ones.

use std::fmt;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, unbounded};
use parking_lot::Mutex;

use crate::driver::{Core, Signals, Threads};
use crate::error::RaiseError;
use crate::event::{EventId, Missed};
use crate::metrics::{Metrics, Shared};
use crate::ringbuf::{ClaimError, Producer};
use crate::subscription::{Delivery, Message, Registry, Subscription};
use crate::sync::plain::{Arc, Ordering, Weak};

mod builder;
mod members;
mod ops;
pub(crate) mod settings;

pub use builder::RouterBuilder;
pub use members::MembershipSettings;
pub use ops::Flushed;

struct Inner {
    producer: Producer,
    registry: Arc<Registry>,
    signals: Arc<Signals>,
    metrics: Arc<Shared>,
    node: u64,
    max_payload: usize,
    /// Joined at shutdown.
    threads: Mutex<Option<Threads>>,
    /// The driver's core, for raises to send from when the router sends on raise.
    send_on_raise: Option<Arc<Mutex<Core>>>,
    /// The driver's core, for the operator's calls ([`Router::set_keyring`]) between turns.
    core: Arc<Mutex<Core>>,
    /// Capacity of each channel subscriber's channel.
    channel_capacity: usize,
    /// Membership's member list and change subscribers, when the router runs membership.
    members: Option<Arc<crate::driver::MemberView>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        stop(self);
    }
}

fn stop(inner: &Inner) {
    inner.signals.shutdown.store(true, Ordering::Release);
    let _ = inner.signals.waker.wake();
    if let Some((driver, dispatcher)) = inner.threads.lock().take() {
        join_unless_current(driver);
        // The driver's end of the channel is gone now, so the dispatcher ends.
        if let Some(dispatcher) = dispatcher {
            join_unless_current(dispatcher);
        }
    }
}

/// Joins `thread`, unless this is that thread (the last handle on a router may be dropped by
/// one of its own subscribers): it is shutting down and ends when it returns.
fn join_unless_current(thread: JoinHandle<()>) {
    if thread.thread().id() != std::thread::current().id() {
        let _ = thread.join();
    }
}

/// A handle on a [`Router`] that does not keep its node alive, made by
/// [`Router::downgrade`]. For what runs beside a router and must not outlive its owner's
/// interest in it, such as the subscription service: the node
/// stops when the last [`Router`] handle is dropped, whoever holds a `WeakRouter`.
///
/// ```
/// use herald::auth::{Key, Keyring};
///
/// let router = herald::Router::builder()
///     .cluster("shop")
///     .keyring(Keyring::new(1, Key::from_bytes([7; 32])).unwrap())
///     .build()
///     .unwrap();
/// let weak = router.downgrade();
/// assert_eq!(weak.upgrade().map(|r| r.node_id()), Some(router.node_id()));
/// drop(router);
/// assert!(weak.upgrade().is_none(), "the node is gone with its last handle");
/// ```
#[derive(Clone, Debug)]
pub struct WeakRouter(Weak<Inner>);

impl WeakRouter {
    /// The router, if any [`Router`] handle on it is still alive.
    pub fn upgrade(&self) -> Option<Router> {
        self.0.upgrade().map(|inner| Router { inner })
    }
}

/// A node of a herald cluster. `Send + Sync`; clones share the node.
///
/// ```no_run
/// use herald::{EventId, Router};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let router = Router::builder()
///     .cluster("shop")
///     .secret_file("herald.secret")
///     .udp_bind("127.0.0.1:7701".parse()?)
///     .udp_peer("127.0.0.1:7702".parse()?)
///     .build()?;
/// let changed = router.event(EventId::from_name("product.changed"));
/// let _sub = changed.subscribe(|d| println!("product {:?} changed", d.payload()));
/// changed.raise(b"42")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A builder with the defaults.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::new()
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.node
    }

    /// The largest payload an event may carry.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// A handle to raise and subscribe to one event.
    pub fn event(&self, id: EventId) -> Event {
        Event {
            router: self.clone(),
            id,
        }
    }

    /// Subscribes to every event (as `herald tail` does).
    pub fn subscribe_all(&self, f: impl Fn(&Delivery<'_>) + Send + Sync + 'static) -> Subscription {
        let key = self.inner.registry.add_callback(None, Arc::new(f));
        Subscription::new(Arc::downgrade(&self.inner.registry), key)
    }

    /// Every event, as owned messages on a channel of
    /// [`RouterBuilder::channel_capacity`] messages (see [`Message::lost_before`]).
    pub fn receiver_all(&self) -> (Subscription, Receiver<Message>) {
        let (tx, rx) = unbounded();
        let key = self
            .inner
            .registry
            .add_channel(None, tx, self.inner.channel_capacity);
        (
            Subscription::new(Arc::downgrade(&self.inner.registry), key),
            rx,
        )
    }

    /// Calls `f` for each [`Missed`] notice, on the dispatcher thread (the driver thread with
    /// [`RouterBuilder::dispatch_on_driver`]).
    pub fn on_missed(&self, f: impl Fn(&Missed) + Send + Sync + 'static) -> Subscription {
        let key = self.inner.registry.add_missed_callback(Arc::new(f));
        Subscription::new(Arc::downgrade(&self.inner.registry), key)
    }

    /// [`Missed`] notices on a channel.
    pub fn missed_receiver(&self) -> (Subscription, Receiver<Missed>) {
        let (tx, rx) = unbounded();
        let key = self.inner.registry.add_missed_channel(tx);
        (
            Subscription::new(Arc::downgrade(&self.inner.registry), key),
            rx,
        )
    }

    /// Capacity of each channel subscriber's channel (and, by default, of an event stream).
    #[cfg_attr(not(feature = "stream"), allow(dead_code))]
    pub(crate) fn channel_capacity(&self) -> usize {
        self.inner.channel_capacity
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.metrics.snapshot()
    }

    /// Sends what the ring holds, says goodbye to the peers (so they report nothing), and
    /// stops the threads. Raises fail with [`RaiseError::ShutDown`] afterwards. Dropping the
    /// last clone does the same.
    pub fn shutdown(&self) {
        stop(&self.inner);
    }

    /// A handle that does not keep the node alive (see [`WeakRouter`]).
    pub fn downgrade(&self) -> WeakRouter {
        WeakRouter(Arc::downgrade(&self.inner))
    }

    fn raise(&self, id: &EventId, payload: &[u8]) -> Result<(), RaiseError> {
        let inner = &*self.inner;
        if inner.signals.shutdown.load(Ordering::Relaxed) {
            return Err(RaiseError::ShutDown);
        }
        if payload.len() > inner.max_payload {
            return Err(RaiseError::TooLarge {
                len: payload.len(),
                max: inner.max_payload,
            });
        }
        match inner.producer.push(id, payload) {
            Ok(()) => {}
            Err(ClaimError::Full) => {
                inner.metrics.raise_full.fetch_add(1, Ordering::Relaxed);
                inner.signals.overflowed.store(true, Ordering::Release);
                inner.signals.wake();
                return Err(RaiseError::Full);
            }
            Err(_) => {
                return Err(RaiseError::TooLarge {
                    len: payload.len(),
                    max: inner.max_payload,
                });
            }
        }
        match &inner.send_on_raise {
            Some(core) => inner.signals.send_or_wake(core),
            None => inner.signals.wake(),
        }
        // Building a delivery costs nothing, and with no event subscriber at all this is one
        // load of a flag.
        inner
            .registry
            .dispatch(&Delivery::local(*id, inner.node, payload));
        Ok(())
    }
}

/// One event of a [`Router`]: raise it, subscribe to it.
#[derive(Clone, Debug)]
pub struct Event {
    router: Router,
    id: EventId,
}

impl Event {
    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// Raises the event: local subscribers run now, on this thread; the event is queued for
    /// every peer. Never blocks and never allocates (channel subscribers of this node get a
    /// copy of the payload, which allocates). With [`RouterBuilder::send_on_raise`], a raise
    /// that finds the node idle also signs and sends the frame itself: a system call, still
    /// without waiting for anyone.
    ///
    /// # Errors
    ///
    /// [`RaiseError`]: too large, ring full, or shut down. Then nothing happened, locally
    /// or remotely.
    pub fn raise(&self, payload: &[u8]) -> Result<(), RaiseError> {
        self.router.raise(&self.id, payload)
    }

    /// Calls `f` for each raise of this event: local ones on the raising thread, remote ones
    /// on the dispatcher thread (the driver thread with
    /// [`RouterBuilder::dispatch_on_driver`]). Dropping the [`Subscription`] unsubscribes.
    pub fn subscribe(&self, f: impl Fn(&Delivery<'_>) + Send + Sync + 'static) -> Subscription {
        let registry = &self.router.inner.registry;
        let key = registry.add_callback(Some(self.id), Arc::new(f));
        Subscription::new(Arc::downgrade(registry), key)
    }

    /// This event's raises as owned messages on a channel of
    /// [`RouterBuilder::channel_capacity`] messages: when the receiver falls that far behind,
    /// events for it are dropped, never waited for, and the next message it gets counts them
    /// in [`Message::lost_before`].
    pub fn receiver(&self) -> (Subscription, Receiver<Message>) {
        let registry = &self.router.inner.registry;
        let (tx, rx) = unbounded();
        let key = registry.add_channel(Some(self.id), tx, self.router.inner.channel_capacity);
        (Subscription::new(Arc::downgrade(registry), key), rx)
    }
}
