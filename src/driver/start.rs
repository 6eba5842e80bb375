//! The driver's assembly: the poller and its waker, the transports registered with it, the
//! [`Core`] a turn works on, and the driver and dispatcher threads.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;
use mio::{Poll, Token};
use parking_lot::Mutex;

use super::{Core, Driver, DropLog, MemberGlue, Output, Routes, Signals, ToDispatcher, WAKER};
use crate::endpoint::Endpoint;
use crate::error::BuildError;
use crate::metrics::Shared;
use crate::ringbuf::Consumer;
use crate::subscription::Registry;
use crate::sync::plain::{Arc, Ordering};
use crate::transport::{DriverWaker, Transport};

/// What the driver is started with.
pub(crate) struct Parts {
    /// The sans-IO node.
    pub(crate) endpoint: Endpoint,
    /// The ring's consumer end: the driver reads what raises committed.
    pub(crate) ring: Consumer,
    /// Every transport, in token order (transport `i` gets token `i + 1`).
    pub(crate) transports: Vec<Box<dyn Transport>>,
    /// Whether frames from transports that declare their channel authenticated skip the tag
    /// check ([`trust_authenticated_transports`](crate::RouterBuilder::trust_authenticated_transports)).
    pub(crate) trust_authenticated: bool,
    /// The subscribers, which the dispatcher (or the driver) calls.
    pub(crate) registry: Arc<Registry>,
    /// The counters the driver publishes.
    pub(crate) metrics: Arc<Shared>,
    /// The largest frame, for the driver's buffers.
    pub(crate) max_frame_len: usize,
    /// How long a stopping node waits for its receivers' acknowledgements.
    pub(crate) linger: Duration,
    /// Membership, when the router runs it.
    pub(crate) membership: Option<MemberGlue>,
    /// Whether subscribers run on the driver thread (no dispatcher thread then).
    pub(crate) dispatch_on_driver: bool,
    /// How many received frames may wait for the dispatcher.
    pub(crate) dispatch_queue: usize,
    /// How long the bus must be idle before the driver sleeps.
    pub(crate) busy_poll: Duration,
}

/// A router's threads: the driver, and the dispatcher (none with `dispatch_on_driver`).
pub(crate) type Threads = (JoinHandle<()>, Option<JoinHandle<()>>);

/// A started driver: what the router keeps of it.
pub(crate) struct Running {
    /// The state a turn works on, shared with raises that send and the operator's calls.
    pub(crate) core: Arc<Mutex<Core>>,
    /// The flags and waker the application threads use.
    pub(crate) signals: Arc<Signals>,
    /// Joined at shutdown.
    pub(crate) threads: Threads,
}

/// Sets up the poller, registers the transports and starts the driver thread (and the
/// dispatcher thread, unless subscribers run on the driver).
///
/// # Errors
///
/// [`BuildError::Io`] naming what could not be set up: the poller, its waker, a transport's
/// registration, or a thread.
pub(crate) fn start(parts: Parts) -> Result<Running, BuildError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| BuildError::Io { what, source }
    };
    let Parts {
        endpoint,
        ring,
        mut transports,
        trust_authenticated,
        registry,
        metrics,
        max_frame_len,
        linger,
        membership,
        dispatch_on_driver,
        dispatch_queue,
        busy_poll,
    } = parts;
    let poll = Poll::new().map_err(io("poller"))?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(io("waker"))?);
    for (i, t) in transports.iter_mut().enumerate() {
        let name = t.name().to_owned();
        t.register(
            poll.registry(),
            Token(i + 1),
            DriverWaker(Arc::clone(&waker)),
        )
        .map_err(io(&format!("register transport {name}")))?;
    }
    let skip_mac: Vec<bool> = transports
        .iter()
        .map(|t| {
            let skip = trust_authenticated && t.authenticated();
            if skip {
                tracing::warn!(
                    transport = t.name(),
                    "MAC checking is OFF for this transport: it declares its channel \
                     authenticated, and the router was built to trust that"
                );
            }
            skip
        })
        .collect();
    let signals = Arc::new(Signals {
        parked: Default::default(),
        overflowed: Default::default(),
        shutdown: Default::default(),
        waker,
    });
    let (output, dispatch_rx) = if dispatch_on_driver {
        (Output::Inline(Arc::clone(&registry)), None)
    } else {
        let (tx, rx) = bounded(dispatch_queue);
        (Output::Dispatcher(ToDispatcher::new(tx)), Some(rx))
    };
    let core = Arc::new(Mutex::new(Core {
        endpoint,
        ring,
        transports,
        skip_mac,
        signals: Arc::clone(&signals),
        metrics: Arc::clone(&metrics),
        output,
        frame_buf: vec![0; max_frame_len],
        batch_buf: vec![0; max_frame_len * super::BATCH_FRAMES],
        batch_lens: Vec::with_capacity(super::BATCH_FRAMES),
        drop_log: DropLog::default(),
        backlog_since: None,
        routes: Routes::default(),
        peers: crate::peers::PeerTable::new(),
        linger,
        membership,
    }));
    let driver = Driver {
        poll,
        core: Arc::clone(&core),
        signals: Arc::clone(&signals),
        busy_poll,
    };
    let driver_signals = Arc::clone(&signals);
    let driver_core = Arc::clone(&core);
    let driver = std::thread::Builder::new()
        .name("herald-driver".into())
        .spawn(move || {
            // A panic here is a bug in herald; the router must not go on looking alive.
            let run = std::panic::AssertUnwindSafe(|| driver.run());
            if std::panic::catch_unwind(run).is_err() {
                driver_signals.shutdown.store(true, Ordering::Release);
                // parking_lot's mutex is released, not poisoned, by the unwinding.
                driver_core.lock().close();
                tracing::error!(
                    "the router's driver thread panicked: it no longer sends or receives, \
                     and raise() returns ShutDown"
                );
            }
        })
        .map_err(io("driver thread"))?;
    let dispatcher = match dispatch_rx {
        None => None,
        Some(rx) => {
            let thread = std::thread::Builder::new()
                .name("herald-dispatch".into())
                .spawn(move || {
                    for received in &rx {
                        super::dispatch(received, &registry, &metrics);
                    }
                })
                .map_err(io("dispatcher thread"))?;
            Some(thread)
        }
    };
    Ok(Running {
        core,
        signals,
        threads: (driver, dispatcher),
    })
}
