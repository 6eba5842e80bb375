//! The subscription service, driven by clients herald did not write: the `redis` crate and
//! `redis-cli`, plus raw sockets for what no client library sends.
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald::EventId;
use herald::transport::FaultInjection;
use util::service::{
    Raw, eventually, lone_router, pubsub_message, redis_cli, service, two_routers, url,
};

#[test]
fn subscribe_on_a_raise_on_b_by_library_and_by_publish() {
    let (a, b) = two_routers();
    let service_a = service(&a, |_| {});
    let service_b = service(&b, |_| {});
    let client = redis::Client::open(url(service_a.local_addr())).unwrap();
    let mut con = client.get_connection().expect("connect to A's service");
    let mut pubsub = con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub.subscribe("product.changed").unwrap();
    let id = EventId::from_name("product.changed");
    pubsub.subscribe(id.to_string()).unwrap();

    // Raised by the library on B: pushed twice, once under each channel the client used.
    b.event(id).raise(b"42").unwrap();
    let mut got = [pubsub_message(&mut pubsub), pubsub_message(&mut pubsub)];
    got.sort();
    assert_eq!(got[0], (id.to_string(), b"42".to_vec()));
    assert_eq!(got[1], ("product.changed".to_owned(), b"42".to_vec()));

    // Published by a Redis client on B.
    let publisher = redis::Client::open(url(service_b.local_addr())).unwrap();
    let mut pcon = publisher.get_connection().unwrap();
    let local: i64 = redis::cmd("PUBLISH")
        .arg("product.changed")
        .arg(b"43 \x00\xff binary")
        .query(&mut pcon)
        .unwrap();
    assert_eq!(local, 0, "no client of B's service listens");
    let mut got = [pubsub_message(&mut pubsub), pubsub_message(&mut pubsub)];
    got.sort();
    assert_eq!(
        got[1],
        ("product.changed".into(), b"43 \x00\xff binary".to_vec())
    );

    // Unsubscribed: nothing more on those channels. A later event on another channel, from
    // the same sender (delivered in order), proves nothing was left in between.
    pubsub.unsubscribe("product.changed").unwrap();
    pubsub.unsubscribe(id.to_string()).unwrap();
    pubsub.subscribe("sentinel").unwrap();
    b.event(id).raise(b"44").unwrap();
    b.event(EventId::from_name("sentinel"))
        .raise(b"end")
        .unwrap();
    assert_eq!(
        pubsub_message(&mut pubsub),
        ("sentinel".into(), b"end".to_vec())
    );
    let m = service_a.metrics();
    assert_eq!(m.connections_open, 1);
    assert!(m.pushes >= 5, "{m:?}");
}

#[test]
fn redis_cli_subscribes_on_a_and_publishes_on_b() {
    let Some(cli) = redis_cli() else { return };
    let (a, b) = two_routers();
    let service_a = service(&a, |_| {});
    let service_b = service(&b, |_| {});
    let port = |s: &herald::service::Service| s.local_addr().port().to_string();
    let mut sub = Command::new(&cli)
        .args(["-h", "127.0.0.1", "-p", &port(&service_a)])
        .args(["SUBSCRIBE", "product.changed", "herald:missed"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start redis-cli");
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("redis-cli output").expect("a line");
    // Not a terminal: redis-cli prints one value a line.
    for expected in [
        "subscribe",
        "product.changed",
        "1",
        "subscribe",
        "herald:missed",
        "2",
    ] {
        assert_eq!(next(), expected);
    }
    let publish = Command::new(&cli)
        .args(["-h", "127.0.0.1", "-p", &port(&service_b)])
        .args(["PUBLISH", "product.changed", "42"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&publish.stdout).trim(), "0");
    for expected in ["message", "product.changed", "42"] {
        assert_eq!(next(), expected);
    }
    let _ = sub.kill();
    let _ = sub.wait();

    let run = |args: &[&str]| {
        let out = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &port(&service_a)])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(run(&["PING"]), "PONG");
    assert!(run(&["FLUSHALL"]).starts_with("ERR unknown command 'FLUSHALL'"));
    assert_eq!(
        run(&["-3", "HELLO", "3"]).lines().next(),
        Some("server herald")
    );
}

#[test]
fn herald_missed_gets_missed_notices_as_json() {
    let addrs = util::free_udp_addrs(2);
    let build = |i: usize, faults: Option<FaultInjection>| {
        let mut builder = herald::Router::builder()
            .cluster("service-test")
            .node_id(i as u64 + 1)
            .keyring(util::test_keyring())
            .udp_bind(addrs[i])
            .udp_peer(addrs[1 - i]);
        if let Some(f) = faults {
            // Nothing asked for again: the losses stay gaps.
            builder = builder
                .udp_fault_injection(f)
                .recovery(herald::RecoveryConfig {
                    enabled: false,
                    ..herald::RecoveryConfig::default()
                });
        }
        builder.build().unwrap()
    };
    // A loses a third of what it receives and does not ask for it again: gaps, reported as
    // Missed.
    let a = build(
        0,
        Some(FaultInjection {
            seed: 7,
            loss: 0.3,
            ..FaultInjection::default()
        }),
    );
    let b = build(1, None);
    let service_a = service(&a, |_| {});
    let client = redis::Client::open(url(service_a.local_addr())).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut pubsub = con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub.subscribe("herald:missed").unwrap();
    let event = b.event(EventId::from_name("x"));
    for i in 0..100u32 {
        event.raise(&i.to_le_bytes()).unwrap();
        // One frame per event.
        std::thread::sleep(Duration::from_millis(2));
    }
    let (channel, json) = pubsub_message(&mut pubsub);
    let json = String::from_utf8(json).unwrap();
    assert_eq!(channel, "herald:missed");
    assert!(json.starts_with("{\"node\":2,\"incarnation\":"), "{json}");
    assert!(json.contains("\"reason\":\"gap\""), "{json}");
    assert!(json.contains("\"range\":["), "{json}");
}

#[test]
fn resp3_pushes_patterns_and_limits() {
    let router = lone_router();
    let svc = service(&router, |c| {
        c.max_subscriptions_per_client = 2;
        c.max_connections = 2;
    });
    let addr = svc.local_addr();
    let mut raw = Raw::connect(addr);
    raw.command(&[b"HELLO", b"3", b"SETNAME", b"console"]);
    assert_eq!(raw.line(), "%7");
    // Seven keys (two lines each) and their values (11 lines).
    for _ in 0..25 {
        raw.line();
    }
    raw.command(&[b"PSUBSCRIBE", b"*"]);
    for expected in [">3", "$10", "psubscribe", "$1", "*", ":1"] {
        assert_eq!(raw.line(), expected);
    }
    raw.command(&[b"PSUBSCRIBE", b"product.*"]);
    for expected in [">3", "$10", "psubscribe", "$9", "product.*", ":2"] {
        assert_eq!(raw.line(), expected);
    }
    raw.command(&[b"PUNSUBSCRIBE", b"product.*"]);
    for expected in [">3", "$12", "punsubscribe", "$9", "product.*", ":1"] {
        assert_eq!(raw.line(), expected);
    }
    raw.command(&[b"SUBSCRIBE", b"known", b"one-too-many"]);
    for expected in [">3", "$9", "subscribe", "$5", "known", ":2"] {
        assert_eq!(raw.line(), expected);
    }
    assert!(
        raw.line()
            .starts_with("-ERR max_subscriptions_per_client (2)")
    );

    // A name a client used is pushed by name to `*`; an unknown one by its UUID.
    let unknown = EventId::from_name("never.named.here");
    router
        .event(EventId::from_name("known"))
        .raise(b"1")
        .unwrap();
    router.event(unknown).raise(b"2").unwrap();
    let mut pushes = Vec::new();
    for _ in 0..3 {
        let header = raw.line();
        let n: usize = header[1..].parse().unwrap();
        assert_eq!(&header[..1], ">");
        let mut fields = Vec::new();
        for _ in 0..n {
            raw.line();
            fields.push(raw.line());
        }
        pushes.push(fields);
    }
    for expected in [
        vec!["message", "known", "1"],
        vec!["pmessage", "*", "known", "1"],
        vec!["pmessage", "*", &unknown.to_string(), "2"],
    ] {
        assert!(
            pushes.contains(&expected.iter().map(|s| s.to_string()).collect()),
            "{pushes:?}"
        );
    }

    // PUBLISH counts this node's receiving subscriptions (channel and pattern, as Redis
    // does); RESP3 clients may publish while subscribed.
    raw.command(&[b"PUBLISH", b"known", b"3"]);
    let mut saw_count = false;
    for _ in 0..20 {
        if raw.line() == ":2" {
            saw_count = true;
            break;
        }
    }
    assert!(saw_count, "PUBLISH replied with the receiver count");

    let _second = Raw::connect(addr);
    let mut third = Raw::connect(addr);
    assert_eq!(
        third.line(),
        "-ERR max number of clients reached (service.max_connections)"
    );
    third.expect_closed();
    assert_eq!(svc.metrics().connections_refused, 1);
}

#[test]
fn herald_node_starts_the_service_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let udp = util::free_udp_addrs(1)[0];
    let [service_addr, metrics] = util::free_tcp_addrs(2)[..] else {
        unreachable!()
    };
    let pw = dir.path().join("service.pw");
    std::fs::write(&pw, "pw-from-file\n").unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("herald.toml");
    std::fs::write(
        &cfg,
        format!(
            "cluster = \"c\"\n[udp]\nbind = \"{udp}\"\n[metrics]\nlisten = \"{metrics}\"\n\
             [service]\nlisten = \"{service_addr}\"\npassword_file = \"service.pw\"\n"
        ),
    )
    .unwrap();
    let node = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["node", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = redis::Client::open(format!("redis://:pw-from-file@{service_addr}/")).unwrap();
    let mut con = None;
    eventually("the node's service to accept", || {
        con = client.get_connection().ok();
        con.is_some()
    });
    let mut con = con.unwrap();
    let n: i64 = redis::cmd("PUBLISH")
        .arg("product.changed")
        .arg("42")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
    // The metrics listener starts just after the service: wait for it as for the service.
    eventually("the node's metrics listener to accept", || {
        std::net::TcpStream::connect(metrics).is_ok()
    });
    let scrape = || {
        let mut http = std::net::TcpStream::connect(metrics).unwrap();
        std::io::Write::write_all(&mut http, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut http, &mut body).unwrap();
        body
    };
    let body = scrape();
    assert!(body.contains("herald_service_connections_open 1"), "{body}");
    // Raises are counted as the driver takes them from the ring, a moment after PUBLISH.
    eventually("the raise to be counted", || {
        scrape().contains("herald_events_raised_total 1")
    });
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success(), "exit 0 after SIGTERM");
}

#[test]
fn subscribed_mode_reset_client_name_and_quit() {
    let router = lone_router();
    let svc = service(&router, |c| c.password = Some("pw".into()));
    let mut raw = Raw::connect(svc.local_addr());
    raw.command(&[
        b"HELLO", b"2", b"AUTH", b"default", b"pw", b"SETNAME", b"probe",
    ]);
    assert_eq!(raw.line(), "*14");
    for _ in 0..25 {
        raw.line();
    }
    raw.command(&[b"CLIENT", b"GETNAME"]);
    assert_eq!((raw.line(), raw.line()), ("$5".into(), "probe".into()));
    raw.command(&[b"SUBSCRIBE", b"a"]);
    for _ in 0..6 {
        raw.line();
    }
    // A RESP2 client that is subscribed may only (un)subscribe, PING, QUIT and RESET.
    raw.command(&[b"PUBLISH", b"a", b"x"]);
    assert!(raw.line().starts_with("-ERR Can't execute 'PUBLISH'"));
    raw.command(&[b"PING"]);
    for expected in ["*2", "$4", "pong", "$0", ""] {
        assert_eq!(raw.line(), expected);
    }
    // RESET drops the subscription and the authentication.
    raw.command(&[b"RESET"]);
    assert_eq!(raw.line(), "+RESET");
    router
        .event(EventId::from_name("a"))
        .raise(b"after reset")
        .unwrap();
    raw.command(&[b"PING"]);
    assert_eq!(
        raw.line(),
        "-NOAUTH Authentication required.",
        "no push in between"
    );
    raw.command(&[b"QUIT"]);
    assert_eq!(raw.line(), "+OK");
    raw.expect_closed();
    eventually("the quit to be counted", || {
        svc.metrics().disconnects_for("quit") == 1
    });
}

#[test]
fn the_redis_crate_speaks_resp3_with_the_service() {
    let router = lone_router();
    let svc = service(&router, |_| {});
    let client =
        redis::Client::open(format!("redis://{}/?protocol=resp3", svc.local_addr())).unwrap();
    let mut con = client.get_connection().expect("HELLO 3 accepted");
    let (tx, rx) = std::sync::mpsc::channel();
    con.set_push_sender(tx);
    con.subscribe_resp3("product.changed").unwrap();
    // In RESP3 a subscribed connection may still run commands; its pushes never mix with
    // the replies.
    let n: i64 = redis::cmd("PUBLISH")
        .arg("product.changed")
        .arg("42")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let mut seen = Vec::new();
    eventually("the message push", || {
        // Pushes are read along with replies: ask for one.
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        seen.extend(rx.try_iter());
        seen.iter().any(|p| p.kind == redis::PushKind::Message)
    });
    let message = seen
        .iter()
        .find(|p| p.kind == redis::PushKind::Message)
        .unwrap();
    assert_eq!(
        message.data,
        [
            redis::Value::BulkString(b"product.changed".to_vec()),
            redis::Value::BulkString(b"42".to_vec())
        ]
    );
}

/// A service started beside a router serves PUBLISH and pushes, does not keep the router
/// alive (it holds it through a `WeakRouter`), refuses PUBLISH once the last router handle is
/// gone, and closes every client when it is dropped.
#[test]
fn a_service_beside_the_router_does_not_keep_it_alive_and_closes_its_clients_on_drop() {
    let router = herald::Router::builder()
        .cluster("service-test")
        .keyring(util::test_keyring())
        .build()
        .expect("router builds");
    let service = herald::service::Service::start(
        &router,
        herald::service::ServiceConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .expect("service starts");
    let addr = service.local_addr();
    let client = redis::Client::open(url(addr)).unwrap();
    let mut con = client.get_connection().expect("connect");
    let mut pubsub = con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub.subscribe("stock.changed").unwrap();
    router
        .event(EventId::from_name("stock.changed"))
        .raise(b"7")
        .unwrap();
    assert_eq!(
        pubsub_message(&mut pubsub),
        ("stock.changed".into(), b"7".to_vec())
    );
    assert_eq!(service.metrics().connections_open, 1);
    drop(pubsub);
    drop(con);

    let mut raw = Raw::connect(addr);
    let clone = router.clone();
    drop(router);
    raw.command(&[b"PUBLISH", b"stock.changed", b"8"]);
    assert_eq!(raw.line(), ":0", "a clone keeps the node");
    let weak = clone.downgrade();
    drop(clone);
    assert!(
        weak.upgrade().is_none(),
        "the service did not keep the node"
    );
    raw.command(&[b"PUBLISH", b"stock.changed", b"9"]);
    assert_eq!(raw.line(), "-ERR the node is shutting down");
    drop(service);
    raw.expect_closed();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens once the service is gone"
    );

    // A port in use is a start error naming the setting.
    let router = herald::Router::builder()
        .cluster("service-test")
        .keyring(util::test_keyring())
        .build()
        .expect("router builds");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = herald::service::Service::start(
        &router,
        herald::service::ServiceConfig::new(taken.local_addr().unwrap()),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("service.listen"), "{err}");
}
