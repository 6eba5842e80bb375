//! `Router::events`: subscriptions as an async stream, over real UDP sockets on loopback.
#![cfg(feature = "stream")]
#![allow(clippy::disallowed_types)]

mod util;

use std::time::Duration;

use futures_util::StreamExt;
use herald::stream::{EventStream, Filter, Item};
use herald::{EventId, MissedReason, Router, RouterBuilder};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// The next item, or a panic after 10 s (a test that waits forever tells nobody anything).
async fn next(stream: &mut EventStream) -> Item {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item within 10 s")
        .expect("the stream goes on while the router lives")
}

/// A consumer that does not keep up loses the events that do not fit, and is told so on the
/// stream: a `local_overflow` notice naming the event, before the events that fit again.
#[test]
fn a_consumer_that_falls_behind_gets_missed_local_overflow() {
    let router = Router::builder()
        .cluster("stream-overflow")
        .keyring(util::test_keyring())
        .build()
        .expect("a router without transports builds");
    let event = EventId::from_name("product.changed");
    let mut stream = router.events_with_capacity(event, 8);
    for i in 0u64..100 {
        router.event(event).raise(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(stream.queued(), 8, "the buffer is bounded");
    let rt = runtime();
    let mut payloads = Vec::new();
    let missed = rt.block_on(async {
        loop {
            match next(&mut stream).await {
                Item::Event(m) => {
                    payloads.push(u64::from_le_bytes(m.payload[..].try_into().unwrap()))
                }
                Item::Missed(missed) => break missed,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    assert_eq!(
        payloads,
        (0..8).collect::<Vec<_>>(),
        "the first events, in order"
    );
    assert_eq!(missed.reason, MissedReason::LocalOverflow);
    assert_eq!(missed.node, router.node_id());
    assert_eq!(missed.events, Some(vec![event]));
    // The stream carries on with what comes next.
    router.event(event).raise(b"after").unwrap();
    let after = rt.block_on(next(&mut stream));
    assert_eq!(after.payload().map(|p| &p[..]), Some(&b"after"[..]));
    router.shutdown();
}

/// Events raised on another router reach the stream over UDP, every one, once, in the order
/// they were raised; an event outside the filter does not.
#[test]
fn remote_events_arrive_on_the_stream_in_order() {
    let addrs = util::free_udp_addrs(2);
    let node = |i: usize, addr| util::counting_node("stream-udp", i as u64 + 1).udp_bind(addr);
    let routers = util::mesh(&addrs, node, RouterBuilder::udp_peer);
    let (sender, receiver) = (&routers[0], &routers[1]);
    util::wait_heard(sender, receiver);
    let (a, b, other) = (
        EventId::from_name("a"),
        EventId::from_name("b"),
        EventId::from_name("other"),
    );
    let mut stream = receiver.events(Filter::only([a, b]));
    const N: u64 = 3000;
    for i in 0..N {
        let event = [a, b, other][(i % 3) as usize];
        while let Err(e) = sender.event(event).raise(&i.to_le_bytes()) {
            assert_eq!(e, herald::RaiseError::Full, "raise");
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let expected: Vec<u64> = (0..N).filter(|i| i % 3 != 2).collect();
    let got = runtime().block_on(async {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match next(&mut stream).await {
                Item::Event(m) => {
                    assert_eq!(m.node, sender.node_id());
                    assert!(!m.local);
                    let i = u64::from_le_bytes(m.payload[..].try_into().unwrap());
                    assert_eq!(m.event, [a, b, other][(i % 3) as usize]);
                    got.push(i);
                }
                Item::Missed(missed) => panic!("nothing should be lost: {missed:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    });
    assert_eq!(got, expected);
    for r in &routers {
        r.shutdown();
    }
}

/// The stream hands over what it holds, then ends once the router is gone.
#[test]
fn the_stream_ends_when_the_router_is_dropped() {
    let router = Router::builder()
        .cluster("stream-end")
        .keyring(util::test_keyring())
        .build()
        .expect("a router without transports builds");
    let mut stream = router.events(Filter::all());
    router
        .event(EventId::from_name("last"))
        .raise(b"bye")
        .unwrap();
    drop(router);
    let rt = runtime();
    let last = rt.block_on(next(&mut stream));
    assert_eq!(last.payload().map(|p| &p[..]), Some(&b"bye"[..]));
    let end =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), stream.next()).await });
    assert_eq!(end.expect("the end within 10 s"), None);
}
