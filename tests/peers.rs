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

/// `max_frame_len` bounds what a node takes as well as what it sends: a signed frame longer
/// than the receiver's limit is dropped as `oversized`, counted, and shown with the fix,
/// while a node with the same limit takes it.
#[test]
fn frames_longer_than_the_receivers_max_frame_len_are_dropped_as_oversized() {
    let addrs = util::free_udp_addrs(3);
    let small = util::counting_node("peers", 1)
        .udp_bind(addrs[0])
        .build()
        .unwrap();
    let large = util::counting_node("peers", 2)
        .max_frame_len(8192)
        .udp_bind(addrs[1])
        .build()
        .unwrap();
    let sender = util::counting_node("peers", 3)
        .max_frame_len(8192)
        .udp_bind(addrs[2])
        .udp_peer(addrs[0])
        .udp_peer(addrs[1])
        .build()
        .unwrap();
    let event = EventId::from_name("big");
    let (_sub, got) = large.event(event).receiver();
    let payload = vec![7u8; 4000];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.try_recv().is_err() || small.metrics().drops_for("oversized") == 0 {
        assert!(Instant::now() < deadline, "{:?}", small.metrics().drops);
        sender.event(event).raise(&payload).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let peer = small
        .peers()
        .into_iter()
        .find(|p| p.addr == PeerAddr::Socket(addrs[2]))
        .expect("the sender is listed");
    assert!(
        peer.drops.iter().any(|(r, n)| *r == "oversized" && *n > 0),
        "{peer:?}"
    );
    assert!(
        peer.hint.is_some_and(|h| h.contains("max_frame_len")),
        "{peer:?}"
    );
    assert_eq!(
        small.metrics().events_delivered,
        0,
        "nothing oversized got through"
    );
    for r in [sender, small, large] {
        r.shutdown();
    }
}
