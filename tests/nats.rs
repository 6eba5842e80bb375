//! herald over NATS, against real `nats-server` processes on 127.0.0.1: routers on one server
//! and on a cluster of two exchange every event once; wrong credentials fail the build
//! clearly; a frame forged and published straight to the subject is dropped and counted.
#![cfg(feature = "nats")]
#![allow(clippy::disallowed_types)]

mod util;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use herald::transport::{NatsAuth, NatsConfig};
use herald::{BuildError, EventId, Router};
use util::nats::{NatsServer, nats_server_available};
use util::{counting_node, exchange_and_check, wait_connected};

fn nats_node(cluster: &str, id: u64, url: &str) -> Router {
    counting_node(cluster, id)
        .nats(NatsConfig::new([url]))
        .build()
        .expect("router builds on nats")
}

#[test]
fn three_routers_on_one_server_get_every_event_once() {
    if !nats_server_available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let routers: Vec<Router> = (1..=3)
        .map(|id| nats_node("nats3", id, &server.url()))
        .collect();
    wait_connected(&routers);
    exchange_and_check(&routers, 20_000);
    for r in &routers {
        assert_eq!(r.metrics().drops_total(), 0, "{:?}", r.metrics());
    }
}

#[test]
fn routers_on_two_clustered_servers_exchange_events() {
    if !nats_server_available() {
        return;
    }
    let routes = util::free_tcp_addrs(2);
    let route = |i: usize| format!("nats://127.0.0.1:{}", routes[i].port());
    let a = NatsServer::start(&["--cluster", &route(0), "--routes", &route(1)]);
    let b = NatsServer::start(&["--cluster", &route(1), "--routes", &route(0)]);
    // Two routers on one server, one on the other: frames cross the route both ways.
    let routers = vec![
        nats_node("natsroute", 1, &a.url()),
        nats_node("natsroute", 2, &b.url()),
        nats_node("natsroute", 3, &a.url()),
    ];
    // Until the servers have exchanged subscriptions frames stop at the route; probes wait
    // for that.
    wait_connected(&routers);
    exchange_and_check(&routers, 10_000);
}

#[test]
fn wrong_credentials_fail_the_build_with_a_clear_error() {
    if !nats_server_available() {
        return;
    }
    let server = NatsServer::start(&["--user", "u", "--pass", "p"]);
    let build = |auth: NatsAuth| {
        let mut config = NatsConfig::new([server.url()]);
        config.auth = auth;
        counting_node("natsauth", 1).nats(config).build()
    };
    let err = build(NatsAuth::UserPassword {
        user: "u".into(),
        password: "wrong".into(),
    })
    .expect_err("the server refuses a wrong password");
    let text = err.to_string();
    assert!(
        matches!(err, BuildError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
        "{text}"
    );
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(text.contains("nats.password"), "names the setting: {text}");
    let err = build(NatsAuth::None).expect_err("and no credentials at all");
    assert!(err.to_string().contains("refused the credentials"), "{err}");
    let router = build(NatsAuth::UserPassword {
        user: "u".into(),
        password: "p".into(),
    })
    .expect("the right password connects");
    router.shutdown();
}

#[test]
fn no_server_fails_the_build_naming_the_servers() {
    let port = util::free_tcp_addrs(1)[0].port();
    let mut config = NatsConfig::new([format!("nats://127.0.0.1:{port}")]);
    config.connect_timeout = Duration::from_secs(2);
    let err = counting_node("natsnone", 1)
        .nats(config)
        .build()
        .expect_err("nothing listens there");
    let text = err.to_string();
    assert!(
        text.contains(&port.to_string()) && text.contains("nats.servers"),
        "{text}"
    );
    let err = counting_node("bad.name", 1)
        .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
        .build()
        .expect_err("a dot in the cluster name would change the subject");
    assert!(err.to_string().starts_with("cluster:"), "{err}");
}

#[test]
fn a_forged_frame_published_to_the_subject_is_dropped_and_counted() {
    if !nats_server_available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let sender = nats_node("natsforge", 1, &server.url());
    let receiver = nats_node("natsforge", 2, &server.url());
    wait_connected(&[sender.clone(), receiver.clone()]);
    let event = EventId::from_name("price.changed");
    let (_sub, got) = receiver.event(event).receiver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("raw client");
        let mut frames = client
            .subscribe("herald.natsforge.frames")
            .await
            .expect("subscribe");
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sender.event(event).raise(b"42.00").unwrap();
        // The sender's data frame (heartbeats go by too: take the one carrying the payload).
        let frame = loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), frames.next())
                .await
                .expect("the frame is published")
                .expect("subscription open");
            if msg.payload.windows(5).any(|w| w == b"42.00") {
                break msg.payload;
            }
        };
        // The same frame with the price changed: what an attacker on the bus would try.
        let mut forged = frame.to_vec();
        let at = forged.windows(5).position(|w| w == b"42.00").unwrap();
        forged[at..at + 5].copy_from_slice(b"00.01");
        client
            .publish("herald.natsforge.frames", forged.into())
            .await
            .unwrap();
        // And garbage.
        client
            .publish("herald.natsforge.frames", vec![7u8; 100].into())
            .await
            .unwrap();
        client.flush().await.unwrap();
    });
    let first = got
        .recv_timeout(Duration::from_secs(5))
        .expect("the real event");
    assert_eq!(&first.payload[..], b"42.00");
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.metrics().drops_for("bad_tag") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = receiver.metrics();
    assert_eq!(m.drops_for("bad_tag"), 1, "{m:?}");
    assert!(m.drops_total() >= 2, "the garbage is dropped too: {m:?}");
    assert!(
        got.recv_timeout(Duration::from_millis(300)).is_err(),
        "the forged price never reaches a subscriber"
    );
}
