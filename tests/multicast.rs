//! UDP multicast between three routers, inside a network namespace of the test's own (made
//! with `unshare -n`), so no datagram can leave the machine: the namespace has only its own
//! loopback, with the multicast route on it, and the routers set the multicast interface to
//! 127.0.0.1.
//!
//! The outer test re-runs this binary's `multicast_inside_namespace` inside the namespace.
//! It needs root (CI runs as root); elsewhere it says why it skipped.
#![allow(clippy::disallowed_types)]

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};

use herald::Router;

#[test]
fn multicast_exchange_in_a_network_namespace() {
    if !util::netns::is_root_or_skip() {
        return;
    }
    util::netns::run_inside(
        "ip link set lo up && ip route add 224.0.0.0/4 dev lo",
        "multicast_inside_namespace --exact",
        1,
    );
}

#[test]
#[ignore = "run by multicast_exchange_in_a_network_namespace inside a namespace"]
fn multicast_inside_namespace() {
    util::netns::assert_inside();
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 42, 1), 47_001);
    let routers: Vec<Router> = (0..3)
        .map(|i| {
            Router::builder()
                .cluster("multicast")
                .node_id(i + 1)
                .keyring(util::test_keyring())
                .ring_capacity(8 << 20)
                // These tests count every event: let subscribers queue far behind.
                .dispatch_queue(1 << 16)
                .udp_multicast(group, Ipv4Addr::LOCALHOST)
                .build()
                .expect("router builds")
        })
        .collect();
    util::exchange_and_check(&routers, 100_000);
    // Each router hears its own frames back (multicast loopback) and drops them by node id.
    for r in &routers {
        assert!(r.metrics().drops_for("own_frame") > 0);
    }
}

#[test]
fn multicast_recovery_in_a_network_namespace() {
    if !util::netns::is_root_or_skip() {
        return;
    }
    util::netns::run_inside(
        "ip link set lo up && ip route add 224.0.0.0/4 dev lo",
        "multicast_recovery_inside_namespace --exact",
        1,
    );
}

/// One sender and three receivers on a group; two receivers lose 10% of what arrives (each
/// its own losses), one loses nothing. Every receiver gets every event once, in order, with
/// no Missed; requests and resends go to the group, so a receiver that sees another ask for a
/// frame it lacks too holds its own request back, and the clean receiver asks for nothing.
#[test]
#[ignore = "run by multicast_recovery_in_a_network_namespace inside a namespace"]
fn multicast_recovery_inside_namespace() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use herald::EventId;
    use herald::transport::FaultInjection;

    util::netns::assert_inside();
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 42, 2), 47_002);
    let build = |id: u64, loss: f64| {
        let b =
            util::counting_node("multicast-recovery", id).udp_multicast(group, Ipv4Addr::LOCALHOST);
        let b = if loss > 0.0 {
            b.udp_fault_injection(FaultInjection {
                seed: id,
                loss,
                ..FaultInjection::default()
            })
        } else {
            b
        };
        b.build().expect("router builds")
    };
    let sender = build(1, 0.0);
    let receivers = [build(2, 0.1), build(3, 0.1), build(4, 0.0)];
    let event = EventId::from_name("counter");
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let disorder = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for (r, count) in receivers.iter().zip(&counts) {
        let (count, disorder) = (Arc::clone(count), Arc::clone(&disorder));
        subs.push(r.event(event).subscribe(move |d| {
            let i = u64::from_le_bytes(d.payload()[..8].try_into().unwrap());
            let before = count.swap(i + 1, Ordering::Relaxed);
            if before != i {
                eprintln!("out of order: {i} after {before}, frame {:?}", d.frame());
                disorder.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let missed = Arc::clone(&missed);
        subs.push(r.on_missed(move |m| {
            eprintln!("missed: {m:?}");
            missed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    const N: u64 = 100_000;
    util::raise_all(&sender, event, N);
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.iter().any(|c| c.load(Ordering::Relaxed) < N) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, (r, c)) in receivers.iter().zip(&counts).enumerate() {
        eprintln!("receiver {i}: {:?}", r.metrics());
        assert_eq!(c.load(Ordering::Relaxed), N, "receiver {i} got every event");
    }
    let s = sender.metrics();
    eprintln!("sender: {s:?}");
    assert_eq!(missed.load(Ordering::Relaxed), 0, "nothing reported missed");
    assert_eq!(disorder.load(Ordering::Relaxed), 0, "once each, in order");
    for (i, r) in receivers.iter().enumerate() {
        assert_eq!(
            r.metrics().events_delivered,
            N,
            "receiver {i}: each event once"
        );
    }
    let suppressed: u64 = receivers
        .iter()
        .map(|r| r.metrics().recovery("naks_suppressed"))
        .sum();
    assert!(suppressed > 0, "no request was held back for another's");
    assert_eq!(
        receivers[2].metrics().recovery("naks_sent"),
        0,
        "the clean receiver asks for nothing"
    );
    assert!(s.recovery("frames_resent") > 0);
    drop(subs);
}

#[test]
fn multicast_membership_in_a_network_namespace() {
    if !util::netns::is_root_or_skip() {
        return;
    }
    util::netns::run_inside(
        "ip link set lo up && ip route add 224.0.0.0/4 dev lo",
        "multicast_membership_inside_namespace --exact",
        1,
    );
}

/// Membership with a multicast group and no seed at all: the nodes find each other through
/// the group, deliver to each other, and a node that starts later joins the same way.
#[test]
#[ignore = "run by multicast_membership_in_a_network_namespace inside a namespace"]
fn multicast_membership_inside_namespace() {
    use std::time::{Duration, Instant};

    use herald::{EventId, MembershipSettings};

    util::netns::assert_inside();
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 42, 3), 47_003);
    let build = |id: u64| {
        Router::builder()
            .cluster("multicast-members")
            .node_id(id)
            .keyring(util::test_keyring())
            .udp_multicast(group, Ipv4Addr::LOCALHOST)
            .membership(MembershipSettings::default())
            .build()
            .expect("router builds")
    };
    let wait = |routers: &[&Router], n: usize| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if routers.iter().all(|r| r.members().len() == n) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    };
    let routers: Vec<Router> = (1..=3).map(build).collect();
    let all: Vec<&Router> = routers.iter().collect();
    let took = wait(&all, 3).expect("three nodes find each other through the group");
    eprintln!("3 nodes, no seed: all see 3 members after {took:?}");
    let late = build(4);
    let all: Vec<&Router> = routers.iter().chain([&late]).collect();
    let took = wait(&all, 4).expect("a later node joins through the group");
    eprintln!("a fourth node joined through the group after {took:?}");
    let ids: Vec<u64> = late.members().iter().map(|m| m.node).collect();
    assert_eq!(ids, [1, 2, 3, 4]);

    let id = EventId::from_name("multicast.members");
    let (_sub, rx) = late.event(id).receiver();
    routers[0].event(id).raise(b"found").unwrap();
    let m = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("the event arrives");
    assert_eq!(&m.payload[..], b"found");
    // Nobody was declared failed on the way (one host: every member has the same address).
    for r in &all {
        assert_eq!(r.metrics().membership("member_failures"), 0);
    }
}
