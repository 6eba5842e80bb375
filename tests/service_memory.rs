//! The service keeps what clients name only within bounds, and gives it back: huge channel
//! names are refused with an error (the connection stays), names within the limit are
//! bounded by a service-wide budget, and once the clients leave every table is empty again.
#![allow(clippy::disallowed_types)]

mod util;

use herald::service::ServiceMetrics;
use util::service::{Raw, eventually, lone_router, service};

/// The tests of this file one at a time: one of them measures the process's resident memory,
/// which the other's allocations would blur.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Resident set size of this test process, in pages (Linux `/proc/self/statm`).
fn rss_pages() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn tables_empty(m: &ServiceMetrics) -> bool {
    m.name_bytes == 0 && m.names_known == 0 && m.subscribed_events == 0 && m.patterns == 0
}

/// One attacker: PUBLISHes and SUBSCRIBEs to 1 MiB names, each refused with an error while
/// the connection stays usable; then a pattern subscriber and many names just within the
/// limit, which the service holds until the client leaves. The client is returned still
/// connected.
fn attack(addr: std::net::SocketAddr) -> Raw {
    let mut raw = Raw::connect(addr);
    for i in 0..24u8 {
        let mut name = vec![b'n'; 1 << 20];
        name[0] = i;
        raw.command(&[b"PUBLISH", &name, b"x"]);
        let reply = raw.line();
        assert!(
            reply.starts_with(
                "-ERR channel name is 1048576 bytes, longer than service.max_name_len (1024)"
            ),
            "{reply}"
        );
        raw.command(&[b"PSUBSCRIBE", &name]);
        assert!(raw.line().starts_with("-ERR pattern is 1048576 bytes"));
    }
    raw.command(&[b"PING"]);
    assert_eq!(raw.line(), "+PONG", "the connection stays open");
    // RESP3, so the client may publish while subscribed.
    raw.command(&[b"HELLO", b"3"]);
    let header = raw.line();
    assert_eq!(header, "%7");
    for _ in 0..25 {
        raw.line();
    }
    raw.command(&[b"PSUBSCRIBE", b"*"]);
    for _ in 0..6 {
        raw.line();
    }
    for i in 0..64u32 {
        let mut name = vec![b'n'; 1 << 20];
        name[..4].copy_from_slice(&i.to_be_bytes());
        raw.command(&[b"SUBSCRIBE", &name]);
        assert!(raw.line().starts_with("-ERR channel name is 1048576 bytes"));
    }
    // Names within the limit: held while subscribed (and remembered from PUBLISH while a
    // pattern exists), within the budget.
    for i in 0..200u32 {
        let name = format!("{i:06}.{}", "x".repeat(1000));
        raw.command(&[b"SUBSCRIBE", name.as_bytes()]);
        for _ in 0..6 {
            raw.line();
        }
    }
    for i in 0..200u32 {
        let name = format!("p{i:06}.{}", "y".repeat(1000));
        raw.command(&[b"PUBLISH", name.as_bytes(), b"x"]);
        // The reply, and the pattern push of the event (in either order).
        let mut saw_reply = false;
        while !saw_reply {
            let line = raw.line();
            saw_reply = line == ":1";
            if line.starts_with('>') {
                for _ in 0..8 {
                    raw.line();
                }
            }
        }
    }
    raw
}

#[test]
fn huge_names_are_refused_and_tables_empty_when_clients_leave() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let router = lone_router();
    let svc = service(&router, |c| c.name_memory_limit = 1 << 20);
    let addr = svc.local_addr();

    // Warm-up rounds, so that the allocator's caches (glibc raises its mmap threshold after
    // the first 1 MiB buffers are freed) are part of the starting point.
    for _ in 0..2 {
        drop(attack(addr));
        eventually("the tables to empty after the warm-up", || {
            tables_empty(&svc.metrics())
        });
    }
    let start = rss_pages();

    for _ in 0..3 {
        let attacker = attack(addr);
        let m = svc.metrics();
        // 200 names of about 1 KiB, each held twice by the session and once by the index,
        // the names of 200 publishes remembered for the pattern, and the pattern.
        assert!(m.name_bytes > 200 * 1000, "{m:?}");
        assert!(m.name_bytes <= 2 << 20, "{m:?}");
        drop(attacker);
        eventually("the tables to empty", || tables_empty(&svc.metrics()));
    }
    let m = svc.metrics();
    assert!(m.names_refused >= 3 * (48 + 64), "{m:?}");
    assert_eq!(m.disconnects_for("protocol_error"), 0, "{m:?}");

    if let (Some(start), Some(end)) = (start, rss_pages()) {
        eprintln!("RSS after the warm-up {start} pages, after three rounds {end} pages");
        assert!(
            end <= start + start / 10,
            "RSS grew from {start} to {end} pages over three attack rounds"
        );
    }
}

#[test]
fn the_name_budget_refuses_subscriptions_past_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let router = lone_router();
    let svc = service(&router, |c| {
        c.max_name_len = 100;
        c.name_memory_limit = 10_000;
    });
    let mut raw = Raw::connect(svc.local_addr());
    raw.command(&[b"SUBSCRIBE", &[b'a'; 101]]);
    assert!(
        raw.line()
            .starts_with("-ERR channel name is 101 bytes, longer than service.max_name_len (100)")
    );
    let mut refused = 0;
    for i in 0..100 {
        let name = format!("{i:03}{}", "z".repeat(97));
        raw.command(&[b"SUBSCRIBE", name.as_bytes()]);
        let line = raw.line();
        if line.starts_with("-ERR the service holds") {
            assert!(
                line.contains("service.name_memory_limit is 10000"),
                "{line}"
            );
            refused += 1;
        } else {
            assert_eq!(line, "*3");
            for _ in 0..5 {
                raw.line();
            }
        }
    }
    // Three copies of 100 bytes per subscription: 33 fit in 10,000 bytes.
    assert_eq!(refused, 100 - 33);
    let m = svc.metrics();
    assert!(m.name_bytes <= 10_000, "{m:?}");
    assert_eq!(m.subscribed_events, 33);
    raw.command(&[b"UNSUBSCRIBE"]);
    eventually("the tables to empty", || tables_empty(&svc.metrics()));
}
