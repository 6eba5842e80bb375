//! The service as Redis client libraries see it: their ready checks (`INFO`, `COMMAND`),
//! subscribers that only listen for a long time, and glob patterns. Driven by the `redis`
//! crate and by `redis-cli`.
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald::EventId;
use util::service::{Raw, eventually, lone_router, redis_cli, service, url};

fn cli_output(cli: &std::path::Path, port: u16, args: &[&str]) -> String {
    let out = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ready_checks_info_and_command_are_answered() {
    let router = lone_router();
    let svc = service(&router, |_| {});
    let client = redis::Client::open(url(svc.local_addr())).unwrap();
    let mut con = client.get_connection().unwrap();

    // ioredis reads `loading` from INFO before it calls a connection ready.
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    let port_line = format!("tcp_port:{}\r\n", svc.local_addr().port());
    for needle in [
        "# Server\r\n",
        "redis_version:",
        "herald_version:",
        "redis_mode:standalone",
        &port_line,
        "# Clients\r\n",
        "connected_clients:1\r\n",
        "# Stats\r\n",
        "total_connections_received:1\r\n",
        "loading:0\r\n",
        "role:master\r\n",
    ] {
        assert!(info.contains(needle), "{needle:?} missing in {info}");
    }
    let server: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    assert!(server.starts_with("# Server\r\n"), "{server}");
    assert!(!server.contains("# Stats"), "{server}");
    let two: String = redis::cmd("INFO")
        .arg("STATS")
        .arg("clients")
        .query(&mut con)
        .unwrap();
    assert!(two.contains("# Stats") && two.contains("# Clients") && !two.contains("# Server"));
    let none: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert_eq!(none, "");

    // go-redis and redis-py read COMMAND; Jedis and redis-cli ask COUNT and DOCS.
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    let all: Vec<redis::Value> = redis::cmd("COMMAND").query(&mut con).unwrap();
    assert_eq!(all.len() as i64, count);
    assert!(count >= 13, "{count}");
    for entry in &all {
        let redis::Value::Array(fields) = entry else {
            panic!("not an array: {entry:?}")
        };
        assert_eq!(fields.len(), 10, "{fields:?}");
    }
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("subscribe")
        .arg("flushall")
        .query(&mut con)
        .unwrap();
    assert_eq!(info.len(), 2);
    let redis::Value::Array(sub) = &info[0] else {
        panic!("{info:?}")
    };
    assert_eq!(sub[0], redis::Value::BulkString(b"subscribe".to_vec()));
    assert_eq!(sub[1], redis::Value::Int(-2));
    assert_eq!(info[1], redis::Value::Nil);
    let docs: redis::Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("publish")
        .query(&mut con)
        .unwrap();
    assert!(format!("{docs:?}").contains("Raises an event"), "{docs:?}");

    let ok: String = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("ready-check")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, "ready-check");
    let _: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    let ok: String = redis::cmd("CLIENT")
        .arg("SETINFO")
        .arg("LIB-NAME")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");

    // A client whose URL names database 0 selects it; no other database exists.
    let mut db0 = redis::Client::open(format!("redis://{}/0", svc.local_addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut db0).unwrap();
    assert_eq!(pong, "PONG");
    let ok: String = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let err = redis::cmd("SELECT")
        .arg(1)
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().contains("DB index is out of range"),
        "{err}"
    );
    assert!(
        redis::Client::open(format!("redis://{}/3", svc.local_addr()))
            .unwrap()
            .get_connection()
            .is_err()
    );

    let Some(cli) = redis_cli() else { return };
    let port = svc.local_addr().port();
    let out = cli_output(&cli, port, &["INFO", "server"]);
    assert!(out.contains("redis_version:"), "{out}");
    assert_eq!(
        cli_output(&cli, port, &["COMMAND", "COUNT"]).trim(),
        count.to_string()
    );
    let out = cli_output(&cli, port, &["COMMAND", "INFO", "psubscribe"]);
    assert!(out.contains("psubscribe") && out.contains("-2"), "{out}");
}

#[test]
fn a_subscribed_idle_client_outlives_three_idle_timeouts() {
    let idle = Duration::from_millis(300);
    let router = lone_router();
    let svc = service(&router, |c| c.idle_timeout = Some(idle));
    let client = redis::Client::open(url(svc.local_addr())).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut pubsub = con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub.subscribe("product.changed").unwrap();
    let mut pattern_con = client.get_connection().unwrap();
    let mut patterned = pattern_con.as_pubsub();
    patterned
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    patterned.psubscribe("product.*").unwrap();
    let cli = redis_cli();
    let mut cli_sub = cli.as_ref().map(|cli| {
        let mut child = Command::new(cli)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &svc.local_addr().port().to_string(),
            ])
            .args(["SUBSCRIBE", "product.changed"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start redis-cli");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for expected in ["subscribe", "product.changed", "1"] {
            assert_eq!(lines.next().unwrap().unwrap(), expected);
        }
        (child, lines)
    });
    // A client that subscribed to nothing still times out.
    let mut unsubscribed = Raw::connect(svc.local_addr());
    unsubscribed.command(&[b"PING"]);
    assert_eq!(unsubscribed.line(), "+PONG");

    std::thread::sleep(idle * 3 + idle / 2);
    unsubscribed.expect_closed();
    let m = svc.metrics();
    assert_eq!(m.disconnects_for("idle_timeout"), 1, "{m:?}");

    router
        .event(EventId::from_name("product.changed"))
        .raise(b"still here")
        .unwrap();
    let msg = pubsub.get_message().expect("the subscriber is connected");
    assert_eq!(msg.get_payload_bytes(), b"still here");
    let msg = patterned.get_message().expect("the pattern subscriber too");
    assert_eq!(msg.get_pattern::<String>().unwrap(), "product.*");
    assert_eq!(msg.get_channel_name(), "product.changed");
    if let Some((mut child, mut lines)) = cli_sub.take() {
        for expected in ["message", "product.changed", "still here"] {
            assert_eq!(lines.next().unwrap().unwrap(), expected);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn psubscribe_matches_redis_globs_on_event_names() {
    let router = lone_router();
    let svc = service(&router, |_| {});
    let client = redis::Client::open(url(svc.local_addr())).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut pubsub = con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub.psubscribe("product.*").unwrap();
    pubsub.psubscribe("cache.[ab]*").unwrap();
    pubsub.psubscribe("h?llo\\*").unwrap();

    let mut publisher = client.get_connection().unwrap();
    let mut publish = |channel: &str, payload: &str| -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut publisher)
            .unwrap()
    };
    assert_eq!(publish("order.created", "no"), 0);
    assert_eq!(publish("product.changed", "1"), 1);
    assert_eq!(publish("cache.c1", "no"), 0);
    assert_eq!(publish("cache.a1", "2"), 1);
    assert_eq!(publish("hallo*", "3"), 1);
    assert_eq!(publish("hallo!", "no"), 0);
    assert_eq!(publish("cache.b.end", "4"), 1);
    let mut got = Vec::new();
    for _ in 0..4 {
        let msg = pubsub.get_message().expect("a pattern message");
        got.push((
            msg.get_pattern::<String>().unwrap(),
            msg.get_channel_name().to_owned(),
            String::from_utf8_lossy(msg.get_payload_bytes()).into_owned(),
        ));
    }
    let expected = [
        ("product.*", "product.changed", "1"),
        ("cache.[ab]*", "cache.a1", "2"),
        ("h?llo\\*", "hallo*", "3"),
        ("cache.[ab]*", "cache.b.end", "4"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, expected);

    pubsub.punsubscribe("product.*").unwrap();
    assert_eq!(publish("product.changed", "no"), 0);
    assert_eq!(svc.metrics().patterns, 2);

    // redis-cli, a second pattern subscriber.
    let Some(cli) = redis_cli() else { return };
    let mut child = Command::new(&cli)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &svc.local_addr().port().to_string(),
        ])
        .args(["PSUBSCRIBE", "product.*"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start redis-cli");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for expected in ["psubscribe", "product.*", "1"] {
        assert_eq!(lines.next().unwrap().unwrap(), expected);
    }
    eventually("redis-cli's pattern counted", || {
        svc.metrics().patterns == 3
    });
    let port = svc.local_addr().port();
    assert_eq!(
        cli_output(&cli, port, &["PUBLISH", "order.created", "no"]).trim(),
        "0"
    );
    assert_eq!(
        cli_output(&cli, port, &["PUBLISH", "product.deleted", "5"]).trim(),
        "1"
    );
    for expected in ["pmessage", "product.*", "product.deleted", "5"] {
        assert_eq!(lines.next().unwrap().unwrap(), expected);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_pattern_matches_events_raised_on_another_node_by_their_configured_names() {
    let (a, b) = util::service::two_routers();
    let svc = service(&a, |c| c.event_names = vec!["product.changed".into()]);
    let client = redis::Client::open(url(svc.local_addr())).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut pubsub = con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub.psubscribe("product.*").unwrap();
    pubsub.psubscribe("order.*").unwrap();
    // Raised by the library on B: A's service knows one name from its configuration, and
    // the other only by id, so `order.*` cannot match it.
    b.event(EventId::from_name("order.created"))
        .raise(b"unnamed")
        .unwrap();
    b.event(EventId::from_name("product.changed"))
        .raise(b"named")
        .unwrap();
    let msg = pubsub.get_message().expect("a pattern message");
    assert_eq!(msg.get_pattern::<String>().unwrap(), "product.*");
    assert_eq!(msg.get_channel_name(), "product.changed");
    assert_eq!(msg.get_payload_bytes(), b"named");
    assert_eq!(
        svc.metrics().names_known,
        0,
        "configured names are not a client table"
    );
}

/// The `redis` crate's async client, as services written with tokio use it: its pub/sub
/// connection subscribes by channel and by pattern, stays connected through three idle
/// timeouts, and gets what another async connection publishes.
#[test]
fn the_async_client_subscribes_and_stays_connected_while_idle() {
    use futures_util::StreamExt;
    let idle = Duration::from_millis(300);
    let router = lone_router();
    let svc = service(&router, |c| c.idle_timeout = Some(idle));
    let client = redis::Client::open(url(svc.local_addr())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let within = |f| rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), f).await });
    let mut pubsub = within(Box::pin(async {
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("product.changed").await.unwrap();
        pubsub.psubscribe("cache.[ab]*").await.unwrap();
        // The ready check of an async client, on a connection without subscriptions.
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO").query_async(&mut con).await.unwrap();
        assert!(info.contains("loading:0\r\n"), "{info}");
        pubsub
    }))
    .expect("subscribed within 10 s");

    std::thread::sleep(idle * 3 + idle / 2);
    let m = svc.metrics();
    assert_eq!(
        m.disconnects_for("idle_timeout"),
        1,
        "the INFO connection: {m:?}"
    );

    let got = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let mut con = client.get_multiplexed_async_connection().await.unwrap();
                for (channel, expected) in
                    [("cache.c1", 0), ("cache.b1", 1), ("product.changed", 1)]
                {
                    let n: i64 = redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(channel)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    assert_eq!(n, expected, "{channel}");
                }
                let mut stream = pubsub.on_message();
                let mut got = Vec::new();
                for _ in 0..2 {
                    let msg = stream.next().await.expect("a message");
                    got.push((
                        msg.get_pattern::<Option<String>>().unwrap(),
                        msg.get_channel_name().to_owned(),
                    ));
                }
                got
            })
            .await
        })
        .expect("messages within 10 s");
    assert_eq!(
        got,
        [
            (Some("cache.[ab]*".to_owned()), "cache.b1".to_owned()),
            (None, "product.changed".to_owned()),
        ]
    );
}

/// A subscriber that only listens is watched by TCP keepalive instead of the idle timeout:
/// `ss` shows the keepalive timer on the service's side of its connection.
#[test]
fn a_subscribed_connection_is_watched_by_tcp_keepalive() {
    let router = lone_router();
    let svc = service(&router, |_| {});
    let mut raw = Raw::connect(svc.local_addr());
    raw.command(&[b"SUBSCRIBE", b"product.changed"]);
    assert_eq!(raw.line(), "*3");
    let client_port = raw.reader.get_ref().local_addr().unwrap().port();
    let Ok(out) = Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!(
            "( sport = :{} and dport = :{client_port} )",
            svc.local_addr().port()
        ))
        .output()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ss is missing (apt-get install iproute2)"
        );
        eprintln!("SKIPPED: ss not installed (apt-get install iproute2)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("timer:(keepalive,"), "{text}");
}
