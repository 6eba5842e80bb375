//! `security = "encrypt"` between routers over real UDP sockets on loopback.
// The loom switch is the library's business; tests use std directly.
#![allow(clippy::disallowed_types)]

mod util;

use std::time::{Duration, Instant};

use herald::auth::Security;
use herald::{EventId, RouterBuilder};

#[test]
fn three_encrypting_routers_exchange_every_event_exactly_once_in_order() {
    let addrs = util::free_udp_addrs(3);
    let node = |i: usize, addr| {
        util::counting_node("sealed-test", i as u64 + 1)
            .security(Security::Encrypt)
            .udp_bind(addr)
    };
    let routers = util::mesh(&addrs, node, RouterBuilder::udp_peer);
    util::exchange_and_check(&routers, 20_000);
    for r in &routers {
        assert_eq!(r.metrics().drops_for("security_mode_mismatch"), 0);
        assert_eq!(r.metrics().drops_for("bad_tag"), 0);
    }
}

#[test]
fn nodes_of_different_modes_drop_each_others_events_and_count_them() {
    let addrs = util::free_udp_addrs(2);
    let node = |i: usize, addr| {
        let security = if i == 0 {
            Security::Sign
        } else {
            Security::Encrypt
        };
        util::counting_node("mixed-test", i as u64 + 1)
            .security(security)
            .udp_bind(addr)
    };
    let routers = util::mesh(&addrs, node, RouterBuilder::udp_peer);
    let id = EventId::from_name("mixed");
    let (_subs, receivers): (Vec<_>, Vec<_>) =
        routers.iter().map(|r| r.event(id).receiver()).unzip();
    let deadline = Instant::now() + Duration::from_secs(10);
    while routers
        .iter()
        .any(|r| r.metrics().drops_for("security_mode_mismatch") == 0)
    {
        assert!(Instant::now() < deadline, "no mismatch was counted");
        for r in &routers {
            r.event(id).raise(b"secret").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (r, rx) in routers.iter().zip(&receivers) {
        // Each hears only its own raises (delivered locally), none of the other node's.
        assert!(rx.try_iter().all(|m| m.node == r.node_id()));
    }
    for r in routers {
        r.shutdown();
    }
}
