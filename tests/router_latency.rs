//! The latency settings, `send_on_raise`, `dispatch_on_driver` and `busy_poll`: what they
//! change (which thread sends, which thread calls subscribers, when the driver sleeps) and
//! what they must not (every event once, in order; no record left in the ring; shutdown ends).
// The loom switch is the library's business; tests use std directly.
#![allow(clippy::disallowed_types)]

mod util;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald::transport::{
    DriverWaker, FaultInjection, PeerAddr, RecvStatus, Registry, SendError, Token, Transport,
};
use herald::{Event, EventId, Router, RouterBuilder};
use parking_lot::Mutex;

/// A node's builder with both settings as given, heartbeats so rare that no timer wakes a
/// driver during a test (an event left in a ring stays there), and room for every event.
fn builder(id: u64, send_on_raise: bool, dispatch_on_driver: bool) -> RouterBuilder {
    util::counting_node("latency-test", id)
        .heartbeat_interval(Duration::from_secs(3600))
        .dead_peer_timeout(Duration::from_secs(7200))
        .send_on_raise(send_on_raise)
        .dispatch_on_driver(dispatch_on_driver)
}

/// `n` routers on UDP loopback, each a peer of all others.
fn cluster(n: usize, send_on_raise: bool, dispatch_on_driver: bool) -> Vec<Router> {
    let node =
        |i: usize, addr| builder(i as u64 + 1, send_on_raise, dispatch_on_driver).udp_bind(addr);
    util::mesh(&util::free_udp_addrs(n), node, RouterBuilder::udp_peer)
}

#[test]
fn with_both_settings_three_routers_exchange_every_event_exactly_once_in_order() {
    let routers = cluster(3, true, true);
    util::exchange_and_check(&routers, 100_000);
}

/// Busy-polling drivers (which never sleep during the exchange) read and send everything too,
/// with more spinning threads than this machine has cores.
#[test]
fn with_busy_polling_three_routers_exchange_every_event_exactly_once_in_order() {
    let node = |i: usize, addr| {
        builder(i as u64 + 1, true, true)
            .busy_poll(Duration::from_millis(5))
            .udp_bind(addr)
    };
    let routers = util::mesh(&util::free_udp_addrs(3), node, RouterBuilder::udp_peer);
    util::exchange_and_check(&routers, 100_000);
}

/// Over TCP a raise's write may be partial: the rest waits in the peer's queue for the socket
/// to be writable, which wakes the sleeping driver.
#[test]
fn with_both_settings_three_routers_exchange_every_event_over_tcp() {
    let node = |i: usize, addr| {
        builder(i as u64 + 1, true, true)
            .max_frame_len(8192)
            .tcp_listen(addr)
    };
    let routers = util::mesh(&util::free_tcp_addrs(3), node, RouterBuilder::tcp_peer);
    // Peers connect in the background; wait until each has heard from each.
    util::wait_connected(&routers);
    util::exchange_and_check(&routers, 100_000);
}

/// A raise that sends from its own thread must never leave a record behind for a driver that
/// is not coming: with no timer to wake them, drivers only send what a raise wakes them for,
/// so a lost wake-up shows as an event that never arrives. Four threads raise at the same
/// moment, round after round, so that raises race each other for the driver's core while it
/// sleeps (one sends, the others find it taken).
#[test]
fn send_on_raise_leaves_nothing_in_the_ring_when_raises_race() {
    let routers = cluster(2, true, false);
    let (sender, receiver) = (&routers[0], &routers[1]);
    let event = EventId::from_name("latency.count");
    const THREADS: usize = 4;
    const ROUNDS: u64 = 500;
    let next = Arc::new(Mutex::new(vec![0u64; THREADS]));
    let disorder = Arc::new(AtomicU64::new(0));
    let (n, d) = (Arc::clone(&next), Arc::clone(&disorder));
    let _sub = receiver.event(event).subscribe(move |delivery| {
        let p = delivery.payload();
        let thread = u64::from_le_bytes(p[..8].try_into().unwrap()) as usize;
        let i = u64::from_le_bytes(p[8..16].try_into().unwrap());
        let mut next = n.lock();
        if next[thread] != i {
            d.fetch_add(1, Ordering::Relaxed);
        }
        next[thread] = i + 1;
    });
    let start = std::sync::Barrier::new(THREADS + 1);
    let done = std::sync::Barrier::new(THREADS + 1);
    let mut stuck = None;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (start, done) = (&start, &done);
            s.spawn(move || {
                let e = sender.event(event);
                for i in 0..ROUNDS {
                    let mut payload = [0u8; 16];
                    payload[..8].copy_from_slice(&(t as u64).to_le_bytes());
                    payload[8..].copy_from_slice(&i.to_le_bytes());
                    start.wait();
                    e.raise(&payload).expect("the ring has room");
                    done.wait();
                }
            });
        }
        // A failure is noted, not asserted, here: the raising threads wait at the barriers,
        // and the scope would wait for them forever.
        for round in 0..ROUNDS {
            start.wait();
            done.wait();
            if stuck.is_some() {
                continue;
            }
            // Every raise of the round has returned: its event must arrive without any
            // further raise or timer to push it out.
            let deadline = Instant::now() + Duration::from_secs(10);
            while next.lock().iter().any(|&n| n <= round) {
                if Instant::now() > deadline {
                    stuck = Some((round, next.lock().clone()));
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    });
    assert_eq!(
        stuck, None,
        "(round, events arrived per thread) when one stayed behind"
    );
    let m = receiver.metrics();
    assert_eq!(
        disorder.load(Ordering::Relaxed),
        0,
        "each thread's order kept"
    );
    assert_eq!(m.missed_total(), 0, "nothing reported missed ({m:?})");
    assert_eq!(m.drops_total(), 0, "nothing dropped ({m:?})");
}

/// A transport that remembers which thread sent each data frame it was given.
#[derive(Debug)]
struct Recording {
    senders: Arc<Mutex<Vec<String>>>,
}

/// The payload the recorded events carry, which marks their frames.
const MARKER: &[u8] = b"which-thread-sends-this";

impl Transport for Recording {
    fn name(&self) -> &str {
        "recording"
    }

    fn register(&mut self, _: &Registry, _: Token, _: DriverWaker) -> io::Result<()> {
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        if frame.windows(MARKER.len()).any(|w| w == MARKER) {
            let thread = std::thread::current();
            self.senders
                .lock()
                .push(thread.name().unwrap_or("(unnamed)").to_owned());
        }
        Ok(())
    }

    fn recv(&mut self, _: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        Ok(RecvStatus::Drained)
    }
}

/// A router whose only transport is a [`Recording`].
struct Recorded {
    router: Router,
    event: Event,
    senders: Arc<Mutex<Vec<String>>>,
}

impl Recorded {
    fn new(builder: RouterBuilder) -> Self {
        let senders = Arc::new(Mutex::new(Vec::new()));
        let router = builder
            .transport(Recording {
                senders: Arc::clone(&senders),
            })
            .build()
            .expect("router builds");
        let event = router.event(EventId::from_name("latency.which"));
        Self {
            router,
            event,
            senders,
        }
    }

    /// Raises one marked event and waits until its frame was sent; returns the thread that
    /// sent it.
    fn raise_and_wait(&self) -> String {
        let n = self.senders.lock().len() + 1;
        self.event.raise(MARKER).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.senders.lock().len() < n {
            assert!(Instant::now() < deadline, "marked frame {n} was never sent");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.senders.lock()[n - 1].clone()
    }
}

/// Raises `count` marked events on a router with a recording transport, one at a time, each
/// once the previous one was sent; returns the names of the threads that sent them.
fn senders_of(send_on_raise: bool, count: usize) -> Vec<String> {
    let recorded = Recorded::new(builder(1, send_on_raise, false));
    // The driver sleeps once its first turns are done; until then it may send a raise's frame
    // itself. Raise until one frame went out from this thread, or give up after 50 raises.
    if send_on_raise {
        for _ in 0..50 {
            if recorded.raise_and_wait() != "herald-driver" {
                break;
            }
        }
    }
    let before = recorded.router.metrics().frames_sent;
    let senders: Vec<String> = (0..count).map(|_| recorded.raise_and_wait()).collect();
    // The counters include frames a raise sent, with no driver turn since.
    assert_eq!(recorded.router.metrics().frames_sent, before + count as u64);
    recorded.router.shutdown();
    senders
}

#[test]
fn send_on_raise_sends_from_the_raising_thread_while_the_driver_sleeps() {
    std::thread::Builder::new()
        .name("app-thread".into())
        .spawn(|| {
            // Nothing wakes the driver once it sleeps (no timer is due, nothing arrives), so
            // every raise after the first one sent from here finds it asleep.
            assert_eq!(senders_of(true, 20), vec!["app-thread"; 20]);
            // Without the setting the driver sends everything.
            assert_eq!(senders_of(false, 20), vec!["herald-driver"; 20]);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Which thread sent a raise's frame shows whether the driver was asleep (with
/// `send_on_raise`, a raise sends only while it sleeps). Busy polling keeps it awake for its
/// window after the last event, then lets it sleep.
#[test]
fn busy_poll_keeps_the_driver_awake_for_its_window_then_lets_it_sleep() {
    let window = Duration::from_secs(1);
    let recorded = Recorded::new(builder(1, true, false).busy_poll(window));
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("app-thread".into())
            .spawn_scoped(scope, || {
                // Each raise comes well within the window of the one before: the driver
                // never sleeps, so it sends them all.
                let mut senders = Vec::new();
                for _ in 0..5 {
                    senders.push(recorded.raise_and_wait());
                    std::thread::sleep(window / 10);
                }
                assert_eq!(senders, vec!["herald-driver"; 5]);
                // Idle for longer than the window, the driver sleeps and the raise sends.
                std::thread::sleep(window + window / 2);
                assert_eq!(recorded.raise_and_wait(), "app-thread");
            })
            .unwrap();
    });
    recorded.router.shutdown();
}

/// Names of the threads that called a remote event's subscriber and a Missed subscriber.
fn subscriber_threads(dispatch_on_driver: bool) -> (String, String) {
    let addrs = util::free_udp_addrs(2);
    let sender = builder(1, false, false)
        .udp_bind(addrs[0])
        .udp_peer(addrs[1])
        .build()
        .expect("sender builds");
    // The receiver loses a third of what arrives and does not ask for it again, so gaps (and
    // Missed notices) come.
    let receiver = builder(2, false, dispatch_on_driver)
        .recovery(herald::RecoveryConfig {
            enabled: false,
            ..herald::RecoveryConfig::default()
        })
        .udp_bind(addrs[1])
        .udp_fault_injection(FaultInjection {
            seed: 7,
            loss: 0.3,
            ..FaultInjection::default()
        })
        .build()
        .expect("receiver builds");
    let event = EventId::from_name("latency.where");
    let here = || std::thread::current().name().unwrap_or_default().to_owned();
    let (tx, rx) = crossbeam_channel::unbounded();
    let _sub = receiver.event(event).subscribe(move |_| {
        let _ = tx.send(here());
    });
    let (missed_tx, missed_rx) = crossbeam_channel::unbounded();
    let _missed = receiver.on_missed(move |_| {
        let _ = missed_tx.send(here());
    });
    // One frame per event, spaced out.
    for _ in 0..40 {
        sender.event(event).raise(b"where am I").unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let delivered = rx.recv_timeout(Duration::from_secs(10)).expect("delivered");
    let missed = missed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a gap reported");
    (delivered, missed)
}

#[test]
fn dispatch_on_driver_calls_subscribers_on_the_driver_thread() {
    let driver = "herald-driver".to_owned();
    let dispatcher = "herald-dispatch".to_owned();
    assert_eq!(subscriber_threads(true), (driver.clone(), driver));
    assert_eq!(subscriber_threads(false), (dispatcher.clone(), dispatcher));
}

#[test]
fn shutdown_ends_with_either_setting_and_when_a_subscriber_drops_the_last_handle() {
    let spinning = Duration::from_secs(3600);
    for (send_on_raise, dispatch_on_driver, busy_poll) in [
        (true, false, Duration::ZERO),
        (false, true, Duration::ZERO),
        (true, true, Duration::ZERO),
        (true, true, spinning),
    ] {
        let node = |i: usize, addr| {
            builder(i as u64 + 1, send_on_raise, dispatch_on_driver)
                .busy_poll(busy_poll)
                .udp_bind(addr)
        };
        let routers = util::mesh(&util::free_udp_addrs(2), node, RouterBuilder::udp_peer);
        let mut routers = routers.into_iter();
        let (sender, receiver) = (routers.next().unwrap(), routers.next().unwrap());
        let event = EventId::from_name("latency.bye");
        // The receiver's last handle lives in its own subscriber's reach, which drops it.
        let holder = Arc::new(Mutex::new(Some(receiver.clone())));
        let dropped = Arc::new(AtomicBool::new(false));
        let (h, d) = (Arc::clone(&holder), Arc::clone(&dropped));
        let sub = receiver.event(event).subscribe(move |_| {
            if let Some(last) = h.lock().take() {
                drop(last);
                d.store(true, Ordering::Release);
            }
        });
        drop(receiver);
        sender.event(event).raise(b"bye").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dropped.load(Ordering::Acquire) {
            assert!(
                Instant::now() < deadline,
                "send_on_raise {send_on_raise}, dispatch_on_driver {dispatch_on_driver}, \
                 busy_poll {busy_poll:?}: the subscriber never ran or its drop of the last handle never returned"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(sub);
        // And an explicit shutdown of the sender returns (its threads join).
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            sender.shutdown();
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "send_on_raise {send_on_raise}, dispatch_on_driver {dispatch_on_driver}, \
             busy_poll {busy_poll:?}: shutdown did not return"
        );
    }
}

/// A subscriber that panics misses that delivery, and nothing else does: the other
/// subscribers get it, it gets the next ones, and the node goes on (which matters most when
/// subscribers run on the driver thread).
#[test]
fn a_panicking_subscriber_stops_neither_the_others_nor_the_node() {
    for dispatch_on_driver in [false, true] {
        let routers = cluster(2, false, dispatch_on_driver);
        let event = EventId::from_name("latency.panic");
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        let _panicky = routers[1].event(event).subscribe(move |d| {
            c.fetch_add(1, Ordering::Relaxed);
            assert_ne!(d.payload(), b"boom", "this subscriber cannot take a boom");
        });
        let (_counted, rx) = routers[1].event(event).receiver();
        for payload in [&b"ok"[..], b"boom", b"ok", b"boom", b"ok"] {
            routers[0].event(event).raise(payload).unwrap();
        }
        let got: Vec<Bytes> = (0..5)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("the other subscriber gets every event")
                    .payload
            })
            .collect();
        assert_eq!(
            got,
            ["ok", "boom", "ok", "boom", "ok"].map(|p| Bytes::from_static(p.as_bytes()))
        );
        assert_eq!(
            calls.load(Ordering::Relaxed),
            5,
            "called for each, booms included"
        );
        assert_eq!(routers[1].metrics().subscriber_panics, 2);
        // The node still sends and receives.
        let (_back, back_rx) = routers[0].event(event).receiver();
        routers[1].event(event).raise(b"still here").unwrap();
        let m = back_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the node that ran the panicking subscriber still sends");
        assert_eq!(&m.payload[..], b"still here");
    }
}
