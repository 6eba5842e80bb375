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

/// A NATS server killed and started again while events stream: both nodes reconnect, and
/// every event the receiver did not get is covered by a Missed from that sender, never
/// silence; events raised after the restart arrive.
#[test]
fn a_server_restart_mid_stream_is_recovered_or_reported_never_silent() {
    if !nats_server_available() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    let sender_config = NatsConfig::new([server.url()]);
    let stats = sender_config.stats();
    let sender = counting_node("natsrestart", 1)
        .nats(sender_config)
        .build()
        .expect("sender");
    let receiver = nats_node("natsrestart", 2, &server.url());
    wait_connected(&[sender.clone(), receiver.clone()]);
    let event = EventId::from_name("stock.changed");
    let (_sub, got) = receiver.event(event).receiver();
    let (_missed_sub, missed) = receiver.missed_receiver();
    let n: u64 = 6000;
    let e = sender.event(event);
    let raise = |i: u64| {
        // A full ring while the server is away is the backpressure the transport asks for:
        // wait, as an application would, rather than count it as lost.
        while let Err(err) = e.raise(&i.to_le_bytes()) {
            assert_eq!(err, herald::RaiseError::Full, "raise");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(300));
    };
    for i in 0..n / 3 {
        raise(i);
    }
    server.kill();
    for i in n / 3..n / 2 {
        raise(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    for i in n / 2..n {
        raise(i);
    }
    // Wait until everything arrived, or until nothing more arrives.
    let mut seen = vec![false; n as usize];
    let mut last_progress = Instant::now();
    while last_progress.elapsed() < Duration::from_secs(5) && seen.iter().any(|s| !s) {
        if let Ok(m) = got.recv_timeout(Duration::from_millis(50)) {
            let i = u64::from_le_bytes(m.payload[..8].try_into().unwrap());
            assert!(!seen[i as usize], "event {i} delivered twice");
            seen[i as usize] = true;
            last_progress = Instant::now();
        }
    }
    let delivered = seen.iter().filter(|s| **s).count();
    let notices: Vec<_> = missed.try_iter().filter(|m| m.node == 1).collect();
    eprintln!(
        "delivered {delivered} of {n}; Missed notices {notices:?}; sender nats: reconnects {} \
         disconnects {} publish errors {}; receiver {:?}",
        stats.reconnects(),
        stats.disconnects(),
        stats.publish_errors(),
        receiver.metrics()
    );
    assert!(
        stats.disconnects() >= 1 && stats.reconnects() >= 1,
        "the sender saw the restart"
    );
    assert!(stats.connected(), "and is connected again");
    assert!(
        seen[n as usize - 1],
        "events raised after the restart arrive"
    );
    if delivered < n as usize {
        assert!(
            !notices.is_empty(),
            "{} events lost without a Missed: silence",
            n as usize - delivered
        );
    }
}

/// The sender's server dies for good: its client fails over to the other server of its
/// list, and events flow again. (async-nats learns of a cluster's other servers only from
/// the server it connects to at that moment, so a config lists them all.)
#[test]
fn a_dead_server_fails_over_to_another_of_the_cluster() {
    if !nats_server_available() {
        return;
    }
    let routes = util::free_tcp_addrs(2);
    let route = |i: usize| format!("nats://127.0.0.1:{}", routes[i].port());
    let b_port = util::free_tcp_addrs(1)[0].port();
    let mut a = NatsServer::start(&["--cluster", &route(0), "--routes", &route(1)]);
    // Server b is not up yet: the sender can only connect to a.
    let config = NatsConfig::new([a.url(), format!("nats://127.0.0.1:{b_port}")]);
    let stats = config.stats();
    let sender = counting_node("natsfailover", 1)
        .nats(config)
        .build()
        .expect("sender");
    let b = NatsServer::start_on(b_port, &["--cluster", &route(1), "--routes", &route(0)]);
    let receiver = nats_node("natsfailover", 2, &b.url());
    wait_connected(&[sender.clone(), receiver.clone()]);
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    while stats.reconnects() == 0 {
        assert!(Instant::now() < deadline, "never failed over: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_connected(&[sender.clone(), receiver.clone()]);
    exchange_and_check(&[sender, receiver], 2000);
}

/// A router whose server has gone still shuts down (what it could not publish is dropped,
/// with a warning) instead of waiting for a server forever.
#[test]
fn shutdown_without_a_server_returns() {
    if !nats_server_available() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    let router = nats_node("natsgone", 1, &server.url());
    server.kill();
    let e = router.event(EventId::from_name("x"));
    for i in 0u64..5000 {
        let _ = e.raise(&i.to_le_bytes());
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        router.shutdown();
        drop(router);
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("shutdown returned although no server takes the frames");
}

/// One node on UDP and NATS at once: its events reach a UDP-only peer and a NATS-only peer.
#[test]
fn udp_and_nats_run_side_by_side() {
    if !nats_server_available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let udp = util::free_udp_addrs(2);
    let both = counting_node("natsboth", 1)
        .udp_bind(udp[0])
        .udp_peer(udp[1])
        .nats(NatsConfig::new([server.url()]))
        .build()
        .expect("udp and nats");
    let udp_only = counting_node("natsboth", 2)
        .udp_bind(udp[1])
        .udp_peer(udp[0])
        .build()
        .expect("udp");
    let nats_only = nats_node("natsboth", 3, &server.url());
    util::wait_heard(&both, &udp_only);
    util::wait_heard(&both, &nats_only);
    let event = EventId::from_name("cart.changed");
    let (_a, on_udp) = udp_only.event(event).receiver();
    let (_b, on_nats) = nats_only.event(event).receiver();
    for i in 0u64..100 {
        both.event(event).raise(&i.to_le_bytes()).unwrap();
    }
    for (name, rx) in [("udp", &on_udp), ("nats", &on_nats)] {
        for i in 0u64..100 {
            let m = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{name} peer missed event {i}"));
            assert_eq!(m.payload[..], i.to_le_bytes(), "{name}: in order, once");
        }
    }
}

/// Files the config names but that cannot be used fail the build naming the key.
#[test]
fn unusable_credential_and_ca_files_fail_the_build_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let build = |config: NatsConfig| {
        counting_node("natsfiles", 1)
            .nats(config)
            .build()
            .expect_err("the file cannot be used")
            .to_string()
    };
    let mut c = NatsConfig::new(["nats://127.0.0.1:1"]);
    c.tls_ca_file = Some(dir.path().join("missing-ca.pem"));
    let err = build(c);
    assert!(
        err.contains("nats.tls_ca_file") && err.contains("missing-ca.pem"),
        "{err}"
    );
    let mut c = NatsConfig::new(["nats://127.0.0.1:1"]);
    c.auth = NatsAuth::CredsFile(dir.path().join("missing.creds"));
    let err = build(c);
    assert!(
        err.contains("nats.creds_file") && err.contains("missing.creds"),
        "{err}"
    );
    let mut c = NatsConfig::new(["nats://127.0.0.1:1"]);
    c.auth = NatsAuth::NkeySeedFile(dir.path().join("missing.nk"));
    let err = build(c);
    assert!(err.contains("nats.nkey_seed_file"), "{err}");
}
