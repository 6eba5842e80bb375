//! The driver thread: moves bytes between the ring, the endpoint and the transports, on one
//! `mio::Poll`. The only code that touches sockets.
//!
//! Everything but the poller lives in a [`Core`] behind a mutex that the driver holds for
//! each turn and lets go of while it sleeps. Nobody else takes it unless the router was built
//! with [`send_on_raise`](crate::RouterBuilder::send_on_raise): then a raise that finds the
//! driver asleep takes it (without waiting) and sends the ring's records itself.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use parking_lot::Mutex;

use crate::endpoint::{Endpoint, Now};
use crate::metrics::Shared;
use crate::peers::PeerTable;
use crate::ringbuf::Consumer;
use crate::subscription::Registry;
use crate::sync::plain::{Arc, AtomicBool, Ordering, fence};
use crate::transport::{FrameBatch, PeerAddr, RecvStatus, Transport};

mod dispatch;
mod drops;
mod member;
mod start;

pub(crate) use dispatch::{ToDispatcher, dispatch};
pub(crate) use drops::DropLog;
use drops::log_drop;
pub(crate) use member::{MemberGlue, MemberView};
pub(crate) use start::{Parts, Threads, start};

/// The waker's token; transports get 1, 2, …
pub(crate) const WAKER: Token = Token(0);

/// What the driver shares with the application threads.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Set by the driver just before it sleeps in `poll`; a raise that sees it wakes it.
    pub(crate) parked: AtomicBool,
    /// Set by `raise` when the ring refused an event.
    pub(crate) overflowed: AtomicBool,
    /// Set by `shutdown`.
    pub(crate) shutdown: AtomicBool,
    pub(crate) waker: Arc<mio::Waker>,
}

impl Signals {
    /// Wakes the driver if it sleeps. Called after every successful raise: costs one load
    /// when the driver is busy, and one system call per batch when it is idle.
    #[inline]
    pub(crate) fn wake(&self) {
        // Pairs with the fence in `Driver::park`: either the driver sees the committed record,
        // or this load sees `parked`.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) {
            self.unpark();
        }
    }

    /// Wakes the parked driver, unless someone else already did.
    fn unpark(&self) {
        if self.parked.swap(false, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// What a raise does after its record is committed when the router sends on raise: if the
    /// driver sleeps and nobody holds the core, sends the ring's records from this thread (the
    /// driver sleeps on); otherwise wakes the driver, as [`wake`](Self::wake) does.
    #[inline]
    pub(crate) fn send_or_wake(&self, core: &Mutex<Core>) {
        // The same fence as in `wake`: either the driver sees the record, or `parked` is seen.
        fence(Ordering::SeqCst);
        if !self.parked.load(Ordering::Relaxed) {
            return;
        }
        if let Some(mut core) = core.try_lock() {
            let sent_all = core.send_ring(Hold::WhileBehind).all;
            // As when the driver parks: no ring space stays held while nobody is sending.
            core.ring.hand_back();
            // The driver may sleep for a while yet: the counters should not wait for it.
            core.metrics.publish(core.endpoint.stats());
            if sent_all {
                return;
            }
        }
        // Someone else holds the core (the driver getting up, or another raise that may have
        // read the ring before this record was in it), or a flood is waiting: the driver sends.
        self.unpark();
    }
}

/// The driver thread's own part: the poller, which only it waits on.
pub(crate) struct Driver {
    pub(crate) poll: Poll,
    pub(crate) core: Arc<Mutex<Core>>,
    pub(crate) signals: Arc<Signals>,
    /// How long the bus must have been idle before the driver sleeps
    /// ([`busy_poll`](crate::RouterBuilder::busy_poll)).
    pub(crate) busy_poll: Duration,
}

/// Where the endpoint's output (verified frames, Missed notices) goes.
pub(crate) enum Output {
    /// To the dispatcher thread (the default).
    Dispatcher(ToDispatcher),
    /// To the subscribers, called on the driver thread itself
    /// ([`dispatch_on_driver`](crate::RouterBuilder::dispatch_on_driver)).
    Inline(Arc<Registry>),
    /// Nowhere: the driver has stopped (which ends the dispatcher thread).
    Closed,
}

/// The state a turn works on: see the module's doc for who holds it.
pub(crate) struct Core {
    pub(crate) endpoint: Endpoint,
    pub(crate) ring: Consumer,
    pub(crate) transports: Vec<Box<dyn Transport>>,
    /// Per transport: whether its frames skip the tag check (authenticated channel, trusted
    /// explicitly by the builder).
    pub(crate) skip_mac: Vec<bool>,
    pub(crate) signals: Arc<Signals>,
    pub(crate) metrics: Arc<Shared>,
    /// Where verified frames and Missed notices go.
    pub(crate) output: Output,
    pub(crate) frame_buf: Vec<u8>,
    /// Frames encoded this turn, end to end, sent together (see [`FrameBatch`]).
    pub(crate) batch_buf: Vec<u8>,
    pub(crate) batch_lens: Vec<usize>,
    pub(crate) drop_log: DropLog,
    /// Since when every turn's receive stopped at a transport's budget, if the last one did.
    pub(crate) backlog_since: Option<Instant>,
    /// Where each sender's frames last came from (transport and address): frames for that
    /// node go back there.
    pub(crate) routes: Routes,
    /// How long a stopping node waits for its live receivers to acknowledge its last frame.
    pub(crate) linger: Duration,
    /// Membership, when the router runs it.
    pub(crate) membership: Option<MemberGlue>,
    /// Whom this node hears, per source address (for `Router::peers` and the gauges).
    pub(crate) peers: PeerTable,
}

/// Where frames for each node go: the transport and address its frames last came from.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    map: HashMap<u64, (usize, PeerAddr)>,
}

impl Routes {
    /// The most routes kept: as many as the endpoint tracks senders, and a margin.
    const MAX: usize = 4096;

    /// Where frames for `node` go: its transport's index and address, if it was heard.
    pub(crate) fn get(&self, node: u64) -> Option<(usize, PeerAddr)> {
        self.map.get(&node).copied()
    }

    fn note(&mut self, node: u64, transport: usize, from: PeerAddr) {
        if self.map.get(&node) == Some(&(transport, from)) {
            return;
        }
        if self.map.len() >= Self::MAX && !self.map.contains_key(&node) {
            self.map.clear(); // forgotten routes fall back to sending to every peer
        }
        self.map.insert(node, (transport, from));
    }
}

/// The most frames one turn sends before it looks at the sockets again.
const SEND_BUDGET: usize = 256;
/// The most frames for single peers (statuses, frames sent again) one turn sends.
const TRANSMIT_BUDGET: usize = 1024;
/// How often a lingering node repeats its goodbye.
const GOODBYE_REPEAT: Duration = Duration::from_millis(20);
/// The most frames handed to the transports at once: 64 KiB of 1472-byte frames and a bit.
pub(crate) const BATCH_FRAMES: usize = 48;

impl Driver {
    /// Runs until shutdown: then flushes the ring and says goodbye.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut idle_since: Option<Instant> = None;
        loop {
            let mut core = self.core.lock();
            let shutting_down = self.signals.shutdown.load(Ordering::Acquire);
            let sent = core.send_ring(Hold::WhileBehind);
            // The timers run on a clock read before the sockets are: a gap is given up at
            // `now` only once everything that had arrived by `now` was looked at (each frame
            // is stamped when it is looked at, never before it arrived), so a late frame
            // that made it in time is not reported missed because the driver lost its core
            // while reading. A transport that stopped at its budget may still hold such a
            // frame: then gaps wait, for at most one more reorder window.
            let now = Now::system();
            let received = core.receive(now.instant);
            core.timers(now);
            core.transmit(now);
            core.metrics.publish(core.endpoint.stats());
            if shutting_down && sent.all {
                break;
            }
            if sent.frames > 0 || received {
                idle_since = None;
            }
            // Sleep only once a turn found nothing to do: a transport may stop receiving at
            // its budget with datagrams still waiting, and readiness will not say so again.
            if sent.all && !received {
                // With busy polling, go on turning (each turn looks at the ring and reads
                // every socket) until the bus has been idle that long.
                let idle = *idle_since.get_or_insert(now.instant);
                if now.instant.saturating_duration_since(idle) < self.busy_poll {
                    drop(core);
                    std::hint::spin_loop();
                    continue;
                }
                let timeout = core.before_park();
                drop(core);
                if let Err(e) = self.poll.poll(&mut events, timeout)
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    tracing::error!(error = %e, "poll failed");
                }
                self.signals.parked.store(false, Ordering::Relaxed);
                idle_since = None;
            }
        }
        let mut guard = self.core.lock();
        let core = &mut *guard;
        core.send_ring(Hold::Never);
        core.linger(&mut self.poll, &mut events);
        core.metrics.publish(core.endpoint.stats());
        core.close();
    }
}

/// What [`Core::send_ring`] did.
struct Sent {
    /// Frames sent.
    frames: usize,
    /// Whether the ring is empty, or held (false: the budget ran out first).
    all: bool,
}

/// Whether [`Core::send_ring`] leaves records in the ring while the transports push back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// While every transport says it is behind ([`Transport::backpressure`]).
    WhileBehind,
    /// Never: shutdown's last flush.
    Never,
}

impl Core {
    /// Closes the sockets and the dispatcher's channel, when the driver stops. The core
    /// outlives the driver thread when raises may send from it (the router holds it too):
    /// this must not wait for the last handle's drop, or shutdown would wait for the
    /// dispatcher forever.
    pub(crate) fn close(&mut self) {
        self.transports.clear();
        self.output = Output::Closed;
    }

    /// Whether every transport pushes back, or the window to the slowest live receiver is
    /// closed: then records wait in the ring, and raises fail once it is full, rather than
    /// frames being signed only to be dropped.
    fn held(&self) -> bool {
        !self.endpoint.window_open()
            || (!self.transports.is_empty() && self.transports.iter().all(|t| t.backpressure()))
    }

    /// Sends what the endpoint has for single peers (statuses, requests, frames sent again),
    /// each where that peer's frames came from, or to every peer when that is not known.
    fn transmit(&mut self, now: Now) {
        if let Some(m) = &mut self.membership {
            m.flush(&mut self.endpoint, &mut self.transports, &self.metrics, now);
        }
        let mut budget = TRANSMIT_BUDGET;
        while budget > 0 {
            let Some(t) = self.endpoint.poll_transmit(now, &mut self.frame_buf) else {
                return;
            };
            budget -= 1;
            let frame = &self.frame_buf[..t.len];
            let result = match self.routes.map.get(&t.to) {
                Some(&(i, peer)) => match self.transports.get_mut(i) {
                    Some(transport) => transport.send_to(&peer, frame),
                    None => Ok(()),
                },
                None => {
                    let lens = [t.len];
                    if let Some(batch) = FrameBatch::new(frame, &lens) {
                        send_to_all(&mut self.transports, &self.metrics, &batch);
                    }
                    Ok(())
                }
            };
            if let Err(e) = result {
                self.metrics
                    .send_errors
                    .fetch_add(e.failed as u64, Ordering::Relaxed);
            }
        }
    }

    /// A stopping node's last duty: says goodbye (a heartbeat that accounts for every frame),
    /// then, for at most the linger time, answers its live receivers' requests until each
    /// has acknowledged the last frame, saying goodbye again now and then in case it was lost.
    fn linger(&mut self, poll: &mut Poll, events: &mut Events) {
        // A graceful leave: every live member hears of it at once.
        if let Some(m) = &mut self.membership {
            m.membership.leave();
            m.flush(
                &mut self.endpoint,
                &mut self.transports,
                &self.metrics,
                Now::system(),
            );
        }
        let deadline = Instant::now() + self.linger;
        let mut goodbye_at = Instant::now();
        loop {
            let now = Now::system();
            if now.instant >= goodbye_at {
                if let Some(len) = self.endpoint.encode_closing(now, &mut self.frame_buf) {
                    self.send_frame(len);
                }
                goodbye_at = now.instant + GOODBYE_REPEAT;
            }
            if !self.endpoint.unacknowledged() || now.instant >= deadline {
                return;
            }
            self.receive(now.instant);
            self.endpoint.handle_timeout(now.instant);
            self.output.forward(&mut self.endpoint, &self.metrics);
            self.transmit(now);
            let wait = goodbye_at
                .min(deadline)
                .saturating_duration_since(Instant::now());
            if let Err(e) = poll.poll(events, Some(wait.min(Duration::from_millis(5))))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "poll failed");
            }
        }
    }

    /// Drains the ring into frames (as full as the ring allows, no waiting), up to a budget,
    /// and sends them in batches; with [`Hold::WhileBehind`], stops while the transports
    /// push back.
    fn send_ring(&mut self, hold: Hold) -> Sent {
        if self.signals.overflowed.swap(false, Ordering::AcqRel) {
            self.endpoint.note_overflow(Instant::now());
        }
        let max_frame = self.frame_buf.len();
        let mut sent = 0;
        while sent < SEND_BUDGET {
            if hold == Hold::WhileBehind && self.held() {
                return Sent {
                    frames: sent,
                    all: true,
                };
            }
            let now = Now::system();
            let mut used = 0;
            self.batch_lens.clear();
            while self.batch_lens.len() < BATCH_FRAMES {
                let buf = &mut self.batch_buf[used..used + max_frame];
                let Some(len) = self.endpoint.encode_from_ring(now, &mut self.ring, buf) else {
                    break;
                };
                self.batch_lens.push(len);
                used += len;
            }
            if self.batch_lens.is_empty() {
                return Sent {
                    frames: sent,
                    all: true,
                };
            }
            sent += self.batch_lens.len();
            let full = self.batch_lens.len() == BATCH_FRAMES;
            self.send_batch(used);
            if !full {
                return Sent {
                    frames: sent,
                    all: true,
                };
            }
        }
        Sent {
            frames: sent,
            all: false,
        }
    }

    /// Sends the first `used` bytes of the batch buffer, frames of `batch_lens`.
    fn send_batch(&mut self, used: usize) {
        match FrameBatch::new(&self.batch_buf[..used], &self.batch_lens) {
            Some(batch) => send_to_all(&mut self.transports, &self.metrics, &batch),
            None => debug_assert!(false, "batch lengths add up by construction"),
        }
    }

    /// Sends the first `len` bytes of the frame buffer (a heartbeat or the goodbye).
    fn send_frame(&mut self, len: usize) {
        let lens = [len];
        if let Some(batch) = FrameBatch::new(&self.frame_buf[..len], &lens) {
            send_to_all(&mut self.transports, &self.metrics, &batch);
        }
    }

    /// Hands what the transports received to the endpoint; returns whether anything came.
    /// Notes (from `turn`, this turn's clock) whether a transport stopped at its budget.
    fn receive(&mut self, turn: Instant) -> bool {
        let endpoint = &mut self.endpoint;
        let drop_log = &mut self.drop_log;
        let output = &mut self.output;
        let routes = &mut self.routes;
        let membership = &mut self.membership;
        let peers = &mut self.peers;
        let metrics = &*self.metrics;
        let mut received = false;
        let mut backlog = false;
        for (i, (t, &skip_mac)) in self.transports.iter_mut().zip(&self.skip_mac).enumerate() {
            let name = t.name().to_owned();
            let result = t.recv(&mut |bytes, from| {
                received = true;
                // Stamped now, after it arrived: its arrival starts reorder windows.
                let now = Now::system();
                let result = if skip_mac {
                    endpoint.handle_authenticated_datagram(now, bytes)
                } else {
                    endpoint.handle_datagram(now, bytes)
                };
                match result {
                    // Handed on at once, not after the transport's next read (which would
                    // block): that read costs a system call that need not come first.
                    Ok(()) => {
                        let node = endpoint.last_accepted_sender();
                        routes.note(node, i, from);
                        peers.accepted(i, from, node, now.instant);
                        if let Some(m) = membership.as_mut() {
                            m.take_frames(endpoint, from, now.instant);
                        }
                        output.forward(endpoint, metrics);
                    }
                    Err(reject) => {
                        peers.dropped(i, from, reject, now.instant);
                        log_drop(drop_log, now.instant, &name, from, reject);
                    }
                }
            });
            match result {
                Ok(RecvStatus::Drained) => {}
                Ok(RecvStatus::MoreWaiting) => backlog = true,
                Err(e) => tracing::warn!(transport = %name, error = %e, "receive failed"),
            }
        }
        self.output.forward(&mut self.endpoint, &self.metrics);
        self.backlog_since = backlog.then(|| self.backlog_since.unwrap_or(turn));
        received
    }

    /// Gives up on old gaps and silent peers (unless a late frame may still be unread behind
    /// a receive budget, for at most one reorder window), and sends a heartbeat when one is due.
    fn timers(&mut self, now: Now) {
        let defer = self.backlog_since.is_some_and(|since| {
            now.instant.saturating_duration_since(since) < self.endpoint.config().reorder_window
        });
        if !defer
            && self
                .endpoint
                .poll_timeout()
                .is_some_and(|t| t <= now.instant)
        {
            self.endpoint.handle_timeout(now.instant);
            self.output.forward(&mut self.endpoint, &self.metrics);
        }
        if let Some(len) = self.endpoint.poll_heartbeat(now, &mut self.frame_buf) {
            self.send_frame(len);
        }
        if let Some(m) = &mut self.membership {
            m.timers(now.instant);
        }
        if self.peers.census_due(now.instant) {
            let dead = self.endpoint.config().dead_timeout;
            self.metrics
                .publish_peers(self.peers.census(now.instant, dead));
        }
    }

    /// Gets ready to sleep: hands ring space back, says the driver is parked, and returns how
    /// long it may sleep (until the next timer, or not at all if work came in meanwhile).
    fn before_park(&mut self) -> Option<Duration> {
        // No ring space stays held while the driver sleeps.
        self.ring.hand_back();
        // While the transports push back, raises need not wake the driver: a transport
        // catching up does.
        let held = self.held();
        if !held {
            self.signals.parked.store(true, Ordering::Relaxed);
        }
        // Pairs with the fence in `Signals::wake` (see there).
        fence(Ordering::SeqCst);
        let work_waiting = (!held && self.ring.read(usize::MAX).is_some())
            || self.output.has_backlog()
            || self.signals.shutdown.load(Ordering::Acquire)
            || self.signals.overflowed.load(Ordering::Acquire);
        if work_waiting {
            return Some(Duration::ZERO);
        }
        let transports = self.transports.iter().filter_map(|t| t.next_timeout());
        let membership = self.membership.as_ref().and_then(MemberGlue::next_timeout);
        self.endpoint
            .poll_timeout()
            .into_iter()
            .chain(membership)
            .chain(transports)
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()))
    }
}

/// Hands `batch` to every transport, counting the deliveries that failed.
fn send_to_all(transports: &mut [Box<dyn Transport>], metrics: &Shared, batch: &FrameBatch<'_>) {
    for t in transports {
        if let Err(e) = t.send_batch(batch) {
            metrics
                .send_errors
                .fetch_add(e.failed as u64, Ordering::Relaxed);
            tracing::debug!(transport = t.name(), error = %e.last, "send failed");
        }
    }
}
