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
