//! The subscription service's limits and defences, driven by the `redis` crate, `redis-cli`
//! and raw sockets: idle timeout, slow clients, passwords, malformed and random input.
#![allow(clippy::disallowed_types)]

mod util;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use herald::EventId;
use util::service::{Raw, eventually, lone_router, pubsub_message, redis_cli, service, url};

#[test]
fn an_idle_client_is_closed_and_a_pinging_one_is_not() {
    let router = lone_router();
    let svc = service(&router, |c| c.idle_timeout = Some(Duration::from_secs(1)));
    let mut idle = Raw::connect(svc.local_addr());
    let client = redis::Client::open(url(svc.local_addr())).unwrap();
    let mut con = client.get_connection().unwrap();
    // Pings every 100 ms for two and a half idle timeouts.
    for _ in 0..25 {
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        std::thread::sleep(Duration::from_millis(100));
    }
    idle.expect_closed();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "the pinging client is still connected");
    assert_eq!(svc.metrics().disconnects_for("idle_timeout"), 1);
}

#[test]
fn a_slow_client_is_disconnected_and_the_others_get_everything() {
    const EVENTS: u32 = 40_000;
    let router = lone_router();
    let svc = service(&router, |c| c.output_buffer_limit = 64 << 10);
    let mut slow = Raw::connect(svc.local_addr());
    slow.command(&[b"SUBSCRIBE", b"bulk"]);
    for expected in ["*3", "$9", "subscribe", "$4", "bulk", ":1"] {
        assert_eq!(slow.line(), expected);
    }
    let client = redis::Client::open(url(svc.local_addr())).unwrap();
    let mut con = client.get_connection().unwrap();
    let received = Arc::new(AtomicU32::new(0));
    let progress = Arc::clone(&received);
    let ready = Arc::new(AtomicBool::new(false));
    let ready_flag = Arc::clone(&ready);
    let reader = std::thread::spawn(move || {
        let mut pubsub = con.as_pubsub();
        pubsub
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        pubsub.subscribe("bulk").unwrap();
        ready_flag.store(true, Ordering::Release);
        let mut next = 0u32;
        while next < EVENTS {
            let (_, payload) = pubsub_message(&mut pubsub);
            let i = u32::from_le_bytes(payload[..4].try_into().unwrap());
            assert_eq!(i, next, "in order, none lost");
            next += 1;
            progress.store(next, Ordering::Relaxed);
        }
    });
    eventually("the fast client's subscription", || {
        ready.load(Ordering::Acquire)
    });
    // 40 MB of pushes: far past the slow client's 64 KiB limit plus the kernel's buffers.
    let event = router.event(EventId::from_name("bulk"));
    let mut payload = vec![0u8; 1000];
    for i in 0..EVENTS {
        payload[..4].copy_from_slice(&i.to_le_bytes());
        while event.raise(&payload).is_err() {
            std::thread::sleep(Duration::from_micros(100));
        }
        // The fast client is never more than 100 events behind (its socket buffers hold
        // that), however slowly a loaded machine runs it: it must never hit the limit.
        while received.load(Ordering::Relaxed) + 100 < i {
            assert!(!reader.is_finished(), "the fast client failed");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    reader
        .join()
        .expect("the fast client got every event in order");
    eventually("the slow client's disconnection", || {
        svc.metrics().disconnects_for("output_limit") == 1
    });
    slow.expect_closed();
    assert_eq!(svc.metrics().queue_dropped, 0);
}

#[test]
fn auth_is_refused_then_accepted() {
    let router = lone_router();
    let svc = service(&router, |c| c.password = Some("s3cret".into()));
    let addr = svc.local_addr();
    let mut raw = Raw::connect(addr);
    raw.command(&[b"PING"]);
    assert_eq!(raw.line(), "-NOAUTH Authentication required.");
    raw.command(&[b"SUBSCRIBE", b"x"]);
    assert_eq!(raw.line(), "-NOAUTH Authentication required.");
    raw.command(&[b"AUTH", b"wrong"]);
    assert!(raw.line().starts_with("-WRONGPASS"));
    raw.command(&[b"AUTH", b"default", b"s3cret"]);
    assert_eq!(raw.line(), "+OK");
    raw.command(&[b"PING"]);
    assert_eq!(raw.line(), "+PONG");

    let wrong = redis::Client::open(format!("redis://:nope@{addr}/")).unwrap();
    assert!(
        wrong.get_connection().is_err(),
        "a wrong password is refused"
    );
    let right = redis::Client::open(format!("redis://:s3cret@{addr}/")).unwrap();
    let mut con = right
        .get_connection()
        .expect("the right password is accepted");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(svc.metrics().auth_failures, 2);

    if let Some(cli) = redis_cli() {
        let out = Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["--no-auth-warning", "--pass", "s3cret", "PING"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    }
}

#[test]
fn bad_input_gets_an_error_reply_or_a_close_and_the_service_lives_on() {
    let router = lone_router();
    let svc = service(&router, |_| {});
    let addr = svc.local_addr();

    let mut raw = Raw::connect(addr);
    raw.command(&[b"NOSUCH", b"a\r\nb"]);
    assert_eq!(
        raw.line(),
        "-ERR unknown command 'NOSUCH', with args beginning with: 'a??b'"
    );
    raw.send(b"ping\r\n");
    assert_eq!(
        raw.line(),
        "+PONG",
        "still connected after an unknown command"
    );
    raw.command(&[b"SUBSCRIBE"]);
    assert_eq!(
        raw.line(),
        "-ERR wrong number of arguments for 'subscribe' command"
    );

    // A declared length of a gigabyte is refused, not allocated.
    raw.send(b"*1\r\n$1000000000\r\n");
    assert_eq!(raw.line(), "-ERR Protocol error: argument too long");
    raw.expect_closed();

    // Pipelined: the good command before the garbage is answered, then the error.
    let mut raw = Raw::connect(addr);
    raw.send(b"PING\r\n*2\r\n$4\r\nPING\r\n:garbage\r\n\x00\xff\xfe");
    assert_eq!(raw.line(), "+PONG");
    assert_eq!(
        raw.line(),
        "-ERR Protocol error: expected '$' before an argument"
    );
    raw.expect_closed();

    // Half-closed: the reply to what was sent still arrives, then the close.
    let mut raw = Raw::connect(addr);
    raw.send(b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\nPING\r\n");
    raw.reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert!(raw.line().starts_with("-ERR unknown command 'GET'"));
    assert_eq!(raw.line(), "+PONG");
    raw.expect_closed();

    // Cut off mid-command, and a truncated bulk: no reply, no harm.
    let mut raw = Raw::connect(addr);
    raw.send(b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nx\r\n$100\r\nshort");
    drop(raw);

    let m = svc.metrics();
    assert_eq!(m.protocol_errors, 2, "{m:?}");
    assert_eq!(m.unknown_commands, 2, "{m:?}");
    let client = redis::Client::open(url(addr)).unwrap();
    let mut con = client.get_connection().unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "the service lives on");
}

#[test]
fn random_bytes_on_many_connections_never_take_the_service_down() {
    let router = lone_router();
    let svc = service(&router, |_| {});
    let addr = svc.local_addr();
    // A seeded generator: the same bytes on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let fragments: [&[u8]; 8] = [
        b"*",
        b"$",
        b"\r\n",
        b"-1",
        b"99999999999",
        b"SUBSCRIBE",
        b"PUBLISH",
        b"\x00\xff",
    ];
    for _ in 0..200 {
        let mut bytes = Vec::new();
        for _ in 0..(next() % 40) {
            let r = next();
            if r % 3 == 0 {
                bytes.push(r as u8);
            } else {
                bytes.extend_from_slice(fragments[(r % 8) as usize]);
            }
        }
        let mut raw = Raw::connect(addr);
        raw.send(&bytes);
        // Half the time hang up at once, half the time after the service answered.
        if next() % 2 == 0 {
            raw.reader
                .get_ref()
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
            raw.expect_closed();
        }
    }
    let client = redis::Client::open(url(addr)).unwrap();
    let mut con = client.get_connection().unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    eventually("every garbage connection to be closed", || {
        svc.metrics().connections_open == 1
    });
}
