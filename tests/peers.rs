//! Whom a node hears: a peer with the cluster's secret is alive, a peer signing with another
//! secret is shown as rejected with the reason and the hint, and the `herald_peers` gauges
//! count both.
#![allow(clippy::disallowed_types)]

mod util;

use std::time::{Duration, Instant};

use herald::auth::{Key, Keyring};
use herald::transport::PeerAddr;
use herald::{EventId, PeerState, Router};

#[test]
fn a_peer_with_another_secret_is_rejected_with_a_hint_and_a_good_one_is_alive() {
    let addrs = util::free_udp_addrs(3);
    let receiver = util::counting_node("peers", 1)
        .udp_bind(addrs[0])
        .build()
        .unwrap();
    let good = util::counting_node("peers", 2)
        .udp_bind(addrs[1])
        .udp_peer(addrs[0])
        .build()
        .unwrap();
    let stranger = Router::builder()
        .cluster("peers")
        .node_id(3)
        .keyring(Keyring::new(1, Key::from_bytes([0x77; 32])).unwrap())
        .udp_bind(addrs[2])
        .udp_peer(addrs[0])
        .build()
        .unwrap();
    let event = EventId::from_name("product.changed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (good_peer, bad_peer) = loop {
        good.event(event).raise(b"1").unwrap();
        stranger.event(event).raise(b"2").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let peers = receiver.peers();
        let find = |a| {
            peers
                .iter()
                .find(|p| p.addr == PeerAddr::Socket(a))
                .cloned()
        };
        if let (Some(g), Some(b)) = (find(addrs[1]), find(addrs[2]))
            && g.accepted > 0
            && !b.drops.is_empty()
        {
            break (g, b);
        }
        assert!(Instant::now() < deadline, "never heard both: {peers:?}");
    };
    assert_eq!(good_peer.state, PeerState::Alive);
    assert_eq!(good_peer.node, Some(2));
    assert_eq!(good_peer.transport, "udp");
    assert_eq!(good_peer.hint, None);
    assert_eq!(bad_peer.state, PeerState::Rejected, "{bad_peer:?}");
    assert_eq!(bad_peer.node, None, "nothing from it was accepted");
    assert_eq!(bad_peer.accepted, 0);
    assert_eq!(bad_peer.drops[0].0, "bad_tag", "{bad_peer:?}");
    assert!(
        bad_peer.hint.is_some_and(|h| h.contains("another secret")),
        "{bad_peer:?}"
    );
    // The gauges are recounted once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = receiver.metrics().to_prometheus();
        if text.contains("herald_peers{state=\"alive\"} 1")
            && text.contains("herald_peers{state=\"rejected\"} 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges never counted both:\n{text}"
        );
        good.event(event).raise(b"1").unwrap();
        stranger.event(event).raise(b"2").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    for r in [good, stranger, receiver] {
        r.shutdown();
    }
}
