//! Helpers shared by the real-socket tests.
#![allow(dead_code, clippy::disallowed_types)]

pub(crate) mod audit;
pub(crate) mod nats;
pub(crate) mod netns;
pub(crate) mod node;
pub(crate) mod pki;
pub(crate) mod service;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::auth::{Key, Keyring};
use herald::{EventId, RaiseError, Router, RouterBuilder};
use parking_lot::Mutex;

/// `n` UDP ports on 127.0.0.1 that were free a moment ago.
pub(crate) fn free_udp_addrs(n: usize) -> Vec<SocketAddr> {
    let sockets: Vec<_> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local address"))
        .collect()
}

/// The keyring every node of a test cluster shares.
pub(crate) fn test_keyring() -> Keyring {
    Keyring::new(1, Key::from_bytes([0x5e; 32])).expect("key id 1")
}

/// A node of a test cluster that counts every event: its cluster's keyring, room in the ring
/// for every event of a test (a full ring refuses raises, which peers hear about as
/// SenderOverflowed), and a dispatcher queue that lets subscribers fall far behind.
pub(crate) fn counting_node(cluster: &str, id: u64) -> RouterBuilder {
    Router::builder()
        .cluster(cluster)
        .node_id(id)
        .keyring(test_keyring())
        .ring_capacity(8 << 20)
        .dispatch_queue(1 << 16)
}

/// Per sender: the next counter expected, and whether anything came out of order.
#[derive(Default)]
pub(crate) struct Seen {
    next: std::collections::HashMap<u64, u64>,
    disorder: u64,
    count: u64,
}

pub(crate) fn raise_all(router: &Router, event: EventId, n: u64) {
    let e = router.event(event);
    for i in 0..n {
        loop {
            match e.raise(&i.to_le_bytes()) {
                Ok(()) => break,
                Err(RaiseError::Full) => std::thread::sleep(Duration::from_micros(50)),
                Err(other) => panic!("raise: {other}"),
            }
        }
    }
}

/// Events a sender may have in flight in `exchange_and_check` before it waits for its peers:
/// about 450 KB of frames, well inside a socket's receive buffer, so the test checks herald
/// and not how the kernel copes with a sender on a loaded machine outrunning a receiver.
const WINDOW: u64 = 5000;

/// Each router raises `n` counters (in windows its peers acknowledge by receiving them);
/// checks that every other router got them all, once, in order, with no Missed.
pub(crate) fn exchange_and_check(routers: &[Router], n: u64) {
    let event = EventId::from_name("test.counter");
    let missed = Arc::new(AtomicU64::new(0));
    let mut seen = Vec::new();
    let mut subs = Vec::new();
    for r in routers {
        let s = Arc::new(Mutex::new(Seen::default()));
        let s2 = Arc::clone(&s);
        subs.push(r.event(event).subscribe(move |d| {
            if d.is_local() {
                return;
            }
            let i = u64::from_le_bytes(d.payload()[..8].try_into().unwrap());
            let mut guard = s2.lock();
            let s = &mut *guard;
            let next = s.next.entry(d.node()).or_insert(0);
            if i != *next {
                s.disorder += 1;
            }
            *next = i + 1;
            s.count += 1;
        }));
        let m = Arc::clone(&missed);
        subs.push(r.on_missed(move |x| {
            eprintln!("missed: {x:?}");
            m.fetch_add(1, Ordering::Relaxed);
        }));
        seen.push(s);
    }
    let peers = routers.len() as u64 - 1;
    let start = Instant::now();
    std::thread::scope(|s| {
        for r in routers {
            let seen = &seen;
            s.spawn(move || {
                let e = r.event(event);
                let me = r.node_id();
                for i in 0..n {
                    if i % WINDOW == 0 && i > 0 {
                        // Wait until every peer has the previous window (or give up: the
                        // checks below then say what was lost).
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while Instant::now() < deadline
                            && seen.iter().enumerate().any(|(j, s)| {
                                routers[j].node_id() != me
                                    && s.lock().next.get(&me).copied().unwrap_or(0) < i
                            })
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    while let Err(err) = e.raise(&i.to_le_bytes()) {
                        assert_eq!(err, RaiseError::Full, "raise");
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.iter().any(|s| s.lock().count < peers * n) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    for (i, s) in seen.iter().enumerate() {
        let s = s.lock();
        eprintln!("router {i}: {} events, {:?}", s.count, routers[i].metrics());
        assert_eq!(s.count, peers * n, "router {i} got every remote event once");
        assert_eq!(s.disorder, 0, "router {i} saw each sender's order");
        for (node, next) in &s.next {
            assert_eq!(*next, n, "router {i}: all of node {node}");
        }
    }
    assert_eq!(
        missed.load(Ordering::Relaxed),
        0,
        "no Missed on a clean loopback"
    );
    eprintln!(
        "{} events delivered in {elapsed:?}",
        routers.len() as u64 * peers * n
    );
    drop(subs);
}

/// `n` TCP ports on 127.0.0.1 that were free a moment ago.
pub(crate) fn free_tcp_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address"))
        .collect()
}

/// One router per address, each a peer of all the others: `node(i, addr)` gives node `i`'s
/// builder listening on `addr`, and `peer(builder, addr)` adds a peer.
pub(crate) fn mesh(
    addrs: &[SocketAddr],
    node: impl Fn(usize, SocketAddr) -> RouterBuilder,
    peer: impl Fn(RouterBuilder, SocketAddr) -> RouterBuilder,
) -> Vec<Router> {
    (0..addrs.len())
        .map(|i| {
            let others = addrs.iter().enumerate().filter(|&(j, _)| j != i);
            others
                .fold(node(i, addrs[i]), |b, (_, a)| peer(b, *a))
                .build()
                .expect("router builds")
        })
        .collect()
}

/// Waits until frames from `from` reach `to`: TCP peers connect in the background, and frames
/// sent before that are lost (and reported as missed), which these tests do not want.
pub(crate) fn wait_heard(from: &Router, to: &Router) {
    let probe = EventId::from_name("test.probe");
    let (_sub, rx) = to.event(probe).receiver();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "peers never connected");
        from.event(probe).raise(b"probe").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        if rx.try_iter().any(|m| m.node == from.node_id()) {
            return;
        }
    }
}

/// [`wait_heard`] for every ordered pair of `routers`.
pub(crate) fn wait_connected(routers: &[Router]) {
    for a in routers {
        for b in routers {
            if a.node_id() != b.node_id() {
                wait_heard(a, b);
            }
        }
    }
}
