//! Routers over real UDP sockets on loopback.
// The loom switch is the library's business; tests use std directly.
#![allow(clippy::disallowed_types)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald::{EventId, RaiseError, Router, RouterBuilder};

fn cluster(n: usize) -> (Vec<Router>, Vec<std::net::SocketAddr>) {
    let addrs = util::free_udp_addrs(n);
    let node = |i: usize, addr| util::counting_node("udp-test", i as u64 + 1).udp_bind(addr);
    let routers = util::mesh(&addrs, node, RouterBuilder::udp_peer);
    (routers, addrs)
}

#[test]
fn three_routers_exchange_every_event_exactly_once_in_order() {
    let (routers, _) = cluster(3);
    util::exchange_and_check(&routers, 100_000);
}

#[test]
fn local_subscribers_run_on_the_raising_thread() {
    let router = Router::builder()
        .cluster("local")
        .keyring(util::test_keyring())
        .build()
        .expect("a router without transports builds");
    let event = router.event(EventId::from_name("local"));
    let me = std::thread::current().id();
    let hits = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hits);
    let _sub = event.subscribe(move |d| {
        assert!(d.is_local());
        assert_eq!(std::thread::current().id(), me);
        assert_eq!(d.payload(), b"hello");
        h.fetch_add(1, Ordering::Relaxed);
    });
    event.raise(b"hello").unwrap();
    assert_eq!(hits.load(Ordering::Relaxed), 1, "ran before raise returned");
    drop(_sub);
    event.raise(b"hello").unwrap();
    assert_eq!(
        hits.load(Ordering::Relaxed),
        1,
        "dropping the subscription unsubscribes"
    );
    let too_big = vec![0u8; router.max_payload() + 1];
    assert!(matches!(
        event.raise(&too_big),
        Err(RaiseError::TooLarge { .. })
    ));
    router.shutdown();
    assert_eq!(event.raise(b"late"), Err(RaiseError::ShutDown));
    // Raises are counted as the driver takes them from the ring: after shutdown, every
    // accepted one (the refused ones are not).
    assert_eq!(router.metrics().raised, 2);
}

/// A callback may subscribe and unsubscribe (itself included) while it runs, on the raising
/// thread: the registry is copied on write, so nothing is locked while subscribers run.
#[test]
fn callbacks_may_subscribe_and_unsubscribe_while_they_run() {
    let router = Router::builder()
        .cluster("reentrant")
        .keyring(util::test_keyring())
        .build()
        .expect("a router without transports builds");
    let event = router.event(EventId::from_name("reentrant"));
    let later_hits = Arc::new(AtomicU64::new(0));
    // The first raise subscribes a second callback from inside the first one, and the first
    // one drops its own subscription.
    let own: Arc<parking_lot::Mutex<Option<herald::Subscription>>> = Arc::default();
    let added: Arc<parking_lot::Mutex<Vec<herald::Subscription>>> = Arc::default();
    let first_hits = Arc::new(AtomicU64::new(0));
    let sub = {
        let (event2, own, added) = (event.clone(), Arc::clone(&own), Arc::clone(&added));
        let (first_hits, later_hits) = (Arc::clone(&first_hits), Arc::clone(&later_hits));
        event.subscribe(move |_| {
            first_hits.fetch_add(1, Ordering::Relaxed);
            let later_hits = Arc::clone(&later_hits);
            added.lock().push(event2.subscribe(move |_| {
                later_hits.fetch_add(1, Ordering::Relaxed);
            }));
            drop(own.lock().take());
        })
    };
    *own.lock() = Some(sub);
    event.raise(b"one").unwrap();
    event.raise(b"two").unwrap();
    assert_eq!(
        first_hits.load(Ordering::Relaxed),
        1,
        "it unsubscribed itself"
    );
    assert_eq!(
        later_hits.load(Ordering::Relaxed),
        1,
        "the callback it added runs from the next raise on"
    );
    router.shutdown();
}

/// A channel subscriber that stops reading holds at most its channel's capacity, never slows
/// the raiser, and is told how many events it lost by the next message it gets.
#[test]
fn a_channel_nobody_reads_is_bounded_and_counts_what_it_lost() {
    let router = Router::builder()
        .cluster("bounded")
        .keyring(util::test_keyring())
        .channel_capacity(8)
        .build()
        .expect("a router without transports builds");
    let event = router.event(EventId::from_name("bounded"));
    let (_sub, rx) = event.receiver();
    for i in 0..20u8 {
        event.raise(&[i]).unwrap();
    }
    assert_eq!(rx.len(), 8, "the channel holds its capacity and no more");
    let first: Vec<u8> = rx.try_iter().map(|m| m.payload[0]).collect();
    assert_eq!(first, (0..8).collect::<Vec<_>>());
    event.raise(b"x").unwrap();
    let next = rx.try_recv().unwrap();
    assert_eq!((next.payload.as_ref(), next.lost_before), (&b"x"[..], 12));
    event.raise(b"y").unwrap();
    assert_eq!(rx.try_recv().unwrap().lost_before, 0, "counted once");
    router.shutdown();
}

#[test]
fn bad_settings_name_the_field() {
    let err = |b: RouterBuilder| b.build().expect_err("refused").to_string();
    let base = || Router::builder().cluster("c").keyring(util::test_keyring());
    assert!(err(Router::builder()).starts_with("cluster:"));
    assert!(err(base().ring_capacity(1000)).starts_with("ring_capacity:"));
    assert!(err(base().max_frame_len(10)).starts_with("max_frame_len:"));
    assert!(err(base().channel_capacity(0)).starts_with("channel_capacity:"));
    assert!(
        err(base().dead_peer_timeout(Duration::from_millis(10))).starts_with("dead_peer_timeout:")
    );
    assert!(err(Router::builder().cluster("c")).starts_with("secret_file:"));
    let taken = util::free_udp_addrs(1)[0];
    let _hold = std::net::UdpSocket::bind(taken).unwrap();
    let e = err(base().udp_bind(taken));
    assert!(e.starts_with(&format!("udp bind {taken}:")), "{e}");
}

#[test]
fn hostile_datagrams_are_dropped_and_counted_while_traffic_goes_on() {
    let (routers, addrs) = cluster(2);
    let event = EventId::from_name("test.hostile");
    let (_sub, rx) = routers[1].event(event).receiver();
    let addr = addrs[1];
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let forged_key = herald::auth::Keyring::new(1, herald::auth::Key::from_bytes([1; 32])).unwrap();
    let mut buf = [0u8; 256];
    let fields = herald::wire::HeaderFields {
        kind: herald::wire::FrameKind::Data,
        flags: herald::wire::Flags::EMPTY,
        key_id: 1,
        cluster: herald::wire::ClusterId::from_name("udp-test"),
        node: 1,
        incarnation: 1,
        sequence: 1 << 40,
        timestamp_ns: 0,
    };
    let mut w = herald::wire::FrameWriter::new(&mut buf, &fields).unwrap();
    w.push(&event, b"forged").unwrap();
    let forged = w.finish(&forged_key).to_vec();
    for _ in 0..100 {
        attacker.send_to(&[0xab; 200], addr).unwrap();
        attacker.send_to(&forged, addr).unwrap();
        attacker.send_to(&forged[..40], addr).unwrap();
    }
    for i in 0..1000u64 {
        routers[0].event(event).raise(&i.to_le_bytes()).unwrap();
    }
    let mut got = 0;
    while got < 1000 {
        let m = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("traffic goes on");
        assert_ne!(&m.payload[..], b"forged");
        got += 1;
    }
    // Give the driver a moment to publish its counters.
    std::thread::sleep(Duration::from_millis(300));
    let m = routers[1].metrics();
    assert_eq!(m.drops_for("bad_magic"), 100, "{m:?}");
    assert_eq!(m.drops_for("bad_tag"), 100, "{m:?}");
    assert_eq!(m.drops_for("truncated"), 100, "{m:?}");
}

#[test]
fn a_slow_subscriber_costs_bounded_memory_and_is_told_what_it_missed() {
    let addrs = util::free_udp_addrs(2);
    let make = |i: usize, queue: usize| {
        Router::builder()
            .cluster("slow")
            .node_id(i as u64 + 1)
            .keyring(util::test_keyring())
            .ring_capacity(8 << 20)
            .dispatch_queue(queue)
            .udp_bind(addrs[i])
            .udp_peer(addrs[1 - i])
            .build()
            .unwrap()
    };
    let (a, b) = (make(0, 4096), make(1, 8));
    let event = EventId::from_name("test.slow");
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<(u64, u64)>::new()));
    let missed = Arc::new(parking_lot::Mutex::new(Vec::<herald::Missed>::new()));
    let s = Arc::clone(&seen);
    let _sub = b.event(event).subscribe(move |d| {
        let mut s = s.lock();
        if s.is_empty() {
            // The first delivery stalls the dispatcher, as a subscriber stuck on a lock would.
            std::thread::sleep(Duration::from_millis(300));
        }
        let c = u64::from_le_bytes(d.payload()[..8].try_into().unwrap());
        s.push((c, d.frame().1));
    });
    let m = Arc::clone(&missed);
    let _missed = b.on_missed(move |x| m.lock().push(x.clone()));
    const N: u64 = 20_000;
    util::raise_all(&a, event, N);
    std::thread::sleep(Duration::from_millis(1200));
    let (am, bm) = (a.metrics(), b.metrics());
    assert!(
        bm.dispatch_dropped > 0,
        "the queue of 8 frames overflowed: {bm:?}"
    );
    assert_eq!(
        bm.frames_accepted, am.frames_sent,
        "the sockets kept up: every frame reached the endpoint"
    );
    let seen = seen.lock();
    let missed = missed.lock();
    let local: Vec<(u64, u64)> = missed
        .iter()
        .filter(|m| m.reason == herald::MissedReason::LocalOverflow)
        .filter_map(|m| m.range)
        .collect();
    assert!(!local.is_empty());
    assert!(
        missed
            .iter()
            .all(|m| m.reason == herald::MissedReason::LocalOverflow)
    );
    // Delivered events are in order, and every missing one lies in a reported frame.
    assert!(seen.windows(2).all(|w| w[1].0 > w[0].0));
    let covered = |seq: u64| local.iter().any(|(x, y)| (*x..=*y).contains(&seq));
    for w in seen.windows(2) {
        if w[1].0 > w[0].0 + 1 {
            for seq in w[0].1 + 1..w[1].1 {
                assert!(covered(seq), "frame {seq} lost silently");
            }
        }
    }
    let last = seen.last().unwrap();
    if last.0 < N - 1 {
        for seq in last.1 + 1..=am.frames_sent {
            assert!(covered(seq), "tail frame {seq} lost silently");
        }
    }
    assert_eq!(
        bm.missed
            .iter()
            .find(|(n, _)| *n == "local_overflow")
            .map(|(_, c)| *c),
        Some(local.len() as u64)
    );
}
