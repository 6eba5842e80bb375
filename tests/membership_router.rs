//! Routers on loopback that know only one seed: they find each other, events reach every
//! member, and a graceful leave is seen at once with no Missed.
#![allow(clippy::disallowed_types)]

mod util;

use std::time::{Duration, Instant};

use herald::membership::MemberEventKind;
use herald::{EventId, MembershipSettings, Router};

fn node(id: u64, addr: std::net::SocketAddr, seed: std::net::SocketAddr) -> Router {
    Router::builder()
        .cluster("member-test")
        .node_id(id)
        .keyring(util::test_keyring())
        .udp_bind(addr)
        .membership(MembershipSettings {
            seeds: vec![seed],
            ..MembershipSettings::default()
        })
        .build()
        .expect("router builds")
}

fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn routers_join_through_one_seed_deliver_and_leave_gracefully() {
    let addrs = util::free_udp_addrs(4);
    let routers: Vec<Router> = addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| node(i as u64 + 1, a, addrs[0]))
        .collect();
    let took = wait(Duration::from_secs(5), || {
        routers.iter().all(|r| r.members().len() == 4)
    })
    .expect("every router sees 4 members");
    println!("4 routers joined through one seed in {took:?}");
    let ids: Vec<u64> = routers[1].members().iter().map(|m| m.node).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(routers[2].metrics().membership("members_alive"), 4);

    // An event raised on the last reaches the subscribers of all the others.
    let id = EventId::from_name("product.changed");
    let subs: Vec<_> = routers[..3]
        .iter()
        .map(|r| r.event(id).receiver())
        .collect();
    let missed: Vec<_> = routers[..3].iter().map(Router::missed_receiver).collect();
    let events: Vec<_> = routers[..3].iter().map(Router::member_events).collect();
    routers[3].event(id).raise(b"42").unwrap();
    for (_sub, rx) in &subs {
        let m = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("event arrives");
        assert_eq!(&m.payload[..], b"42");
    }

    // A graceful leave: seen at once (well before any failure detection), and no Missed.
    routers[3].shutdown();
    for rx in &events {
        let left = std::iter::from_fn(|| rx.recv_timeout(Duration::from_millis(500)).ok())
            .find(|e| e.node == 4)
            .expect("a change about node 4");
        assert_eq!(left.kind, MemberEventKind::Left);
    }
    for r in &routers[..3] {
        assert_eq!(r.members().len(), 3);
        assert_eq!(r.metrics().membership("member_leaves"), 1);
        assert_eq!(r.metrics().membership("member_failures"), 0);
    }
    std::thread::sleep(Duration::from_millis(1500));
    for (_sub, rx) in &missed {
        assert!(rx.try_recv().is_err(), "no Missed after a graceful leave");
    }
}

/// A resolver that answers one name with fixed addresses (no network, no hosts file).
struct Names(String, Vec<std::net::SocketAddr>);

impl herald::membership::Resolver for Names {
    fn resolve(&mut self, name: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
        if name == self.0 {
            Ok(self.1.clone())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                name.to_owned(),
            ))
        }
    }
}

#[test]
fn a_node_joins_through_a_dns_name_with_several_addresses() {
    let addrs = util::free_udp_addrs(4);
    // Three nodes that know each other through the first.
    let routers: Vec<Router> = addrs[..3]
        .iter()
        .enumerate()
        .map(|(i, &a)| node(i as u64 + 1, a, addrs[0]))
        .collect();
    // The fourth knows only a name, which resolves to the three (the first of them twice).
    let name = "herald.shop.test:7700".to_owned();
    let answers = vec![addrs[2], addrs[1], addrs[0], addrs[0]];
    let late = Router::builder()
        .cluster("member-test")
        .node_id(4)
        .keyring(util::test_keyring())
        .udp_bind(addrs[3])
        .membership(MembershipSettings {
            dns: Some(name.clone()),
            dns_refresh: Duration::from_secs(1),
            resolver: Some(Box::new(Names(name, answers))),
            ..MembershipSettings::default()
        })
        .build()
        .unwrap();
    wait(Duration::from_secs(5), || {
        late.members().len() == 4 && routers.iter().all(|r| r.members().len() == 4)
    })
    .expect("the node found through DNS joins, and everyone sees 4 members");
    let id = EventId::from_name("dns.joined");
    let (_sub, rx) = routers[0].event(id).receiver();
    late.event(id).raise(b"hi").unwrap();
    assert_eq!(
        &rx.recv_timeout(Duration::from_secs(2)).unwrap().payload[..],
        b"hi"
    );
}

/// A DNS server that does not answer: each lookup takes `0` before it fails.
struct Silent(Duration);

impl herald::membership::Resolver for Silent {
    fn resolve(&mut self, name: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
        std::thread::sleep(self.0);
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{name}: no answer"),
        ))
    }
}

/// `getaddrinfo` may wait seconds for a DNS server that does not answer; the node meanwhile
/// joins through its seed, gossips and carries events as if it had no DNS name at all (a
/// driver that waited for the lookup would join late and, later, be declared dead).
#[test]
fn a_dns_server_that_does_not_answer_does_not_stall_the_node() {
    let addrs = util::free_udp_addrs(2);
    let first = node(1, addrs[0], addrs[0]);
    let second = Router::builder()
        .cluster("member-test")
        .node_id(2)
        .keyring(util::test_keyring())
        .udp_bind(addrs[1])
        .membership(MembershipSettings {
            seeds: vec![addrs[0]],
            dns: Some("herald.unanswered.test:7700".into()),
            resolver: Some(Box::new(Silent(Duration::from_secs(6)))),
            ..MembershipSettings::default()
        })
        .build()
        .unwrap();
    wait(Duration::from_secs(3), || {
        first.members().len() == 2 && second.members().len() == 2
    })
    .expect("joined through the seed while the lookup hangs");
    let id = EventId::from_name("dns.stalled");
    let (_sub, rx) = first.event(id).receiver();
    second.event(id).raise(b"on time").unwrap();
    assert_eq!(
        &rx.recv_timeout(Duration::from_secs(1))
            .expect("delivered while the lookup still hangs")
            .payload[..],
        b"on time"
    );
}

#[test]
fn the_system_resolver_finds_a_node_by_localhost_name() {
    let addrs = util::free_udp_addrs(2);
    let first = node(1, addrs[0], addrs[0]);
    let second = Router::builder()
        .cluster("member-test")
        .node_id(2)
        .keyring(util::test_keyring())
        .udp_bind(addrs[1])
        .membership(MembershipSettings {
            dns: Some(format!("localhost:{}", addrs[0].port())),
            ..MembershipSettings::default()
        })
        .build()
        .unwrap();
    wait(Duration::from_secs(5), || {
        first.members().len() == 2 && second.members().len() == 2
    })
    .expect("localhost:PORT resolves to the first node");
}

#[test]
fn membership_without_udp_is_refused_with_the_fix() {
    let err = Router::builder()
        .cluster("member-test")
        .keyring(util::test_keyring())
        .membership(MembershipSettings::default())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().starts_with("membership: needs UDP"),
        "{err}"
    );
}

#[test]
fn a_subscriber_on_the_driver_thread_may_ask_for_the_members() {
    let addrs = util::free_udp_addrs(2);
    let build = |id: u64, addr| {
        Router::builder()
            .cluster("member-test")
            .node_id(id)
            .keyring(util::test_keyring())
            .udp_bind(addr)
            .dispatch_on_driver(true)
            .membership(MembershipSettings {
                seeds: vec![addrs[0]],
                ..MembershipSettings::default()
            })
            .build()
            .unwrap()
    };
    let (a, b) = (build(1, addrs[0]), build(2, addrs[1]));
    wait(Duration::from_secs(5), || {
        a.members().len() == 2 && b.members().len() == 2
    })
    .expect("joined");
    let id = EventId::from_name("ask.members");
    let (tx, rx) = crossbeam_channel::unbounded();
    let me = a.clone();
    let _sub = a.event(id).subscribe(move |_| {
        let _ = tx.send(me.members().len());
    });
    b.event(id).raise(b"?").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(2)), Ok(2));
}
