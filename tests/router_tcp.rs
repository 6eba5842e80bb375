//! Routers over real TCP connections on loopback.
#![allow(clippy::disallowed_types)]

mod util;

use std::time::{Duration, Instant};

use herald::{EventId, Router, RouterBuilder};

fn tcp_cluster(n: usize) -> (Vec<Router>, Vec<std::net::SocketAddr>) {
    let addrs = util::free_tcp_addrs(n);
    let node = |i: usize, addr| {
        util::counting_node("tcp-test", i as u64 + 1)
            .max_frame_len(8192)
            .tcp_listen(addr)
    };
    let routers = util::mesh(&addrs, node, RouterBuilder::tcp_peer);
    (routers, addrs)
}

#[test]
fn three_routers_exchange_every_event_exactly_once_in_order_over_tcp() {
    let (routers, _) = tcp_cluster(3);
    util::wait_connected(&routers);
    // Probes lost before the connections came up are reported as missed; start counting now.
    std::thread::sleep(Duration::from_millis(100));
    util::exchange_and_check(&routers, 100_000);
}

/// A "frozen" peer: it accepts a connection and never reads from it, for `hold`.
fn frozen_peer(hold: Duration) -> std::net::SocketAddr {
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = frozen.local_addr().unwrap();
    std::thread::spawn(move || {
        let conn = frozen.accept();
        std::thread::sleep(hold);
        drop(conn);
    });
    addr
}

#[test]
fn a_peer_that_stops_reading_delays_no_one() {
    let frozen_addr = frozen_peer(Duration::from_secs(30));
    let addrs = util::free_tcp_addrs(1);
    // The test reads B's channel only once everything is raised: let it hold all of it.
    let b = Router::builder()
        .channel_capacity(1 << 20)
        .cluster("tcp-frozen")
        .node_id(2)
        .keyring(util::test_keyring())
        .dispatch_queue(1 << 16)
        .tcp_listen(addrs[0])
        .build()
        .unwrap();
    let a = Router::builder()
        .cluster("tcp-frozen")
        .node_id(1)
        .keyring(util::test_keyring())
        .ring_capacity(8 << 20)
        .tcp_peer(frozen_addr)
        .tcp_peer(addrs[0])
        .build()
        .unwrap();
    util::wait_heard(&a, &b);
    std::thread::sleep(Duration::from_millis(100));
    let event = EventId::from_name("test.frozen");
    let (_sub, rx) = b.event(event).receiver();
    let (_missed, missed_rx) = b.missed_receiver();
    // Far more than the frozen peer's socket buffers and its 4 MiB queue hold, at a pace the
    // live peer can take even on a loaded machine.
    const N: u64 = 400_000;
    let started = Instant::now();
    let e = a.event(event);
    // 32-byte payloads (40 bytes of frame each): 16 MB in all.
    let mut payload = [0u8; 32];
    for i in 0..N {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        while e.raise(&payload).is_err() {
            std::thread::sleep(Duration::from_micros(50));
        }
        if i % 2000 == 1999 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let raise_took = started.elapsed();
    let mut got = Vec::new();
    while let Ok(m) = rx.recv_timeout(Duration::from_secs(3)) {
        got.push(u64::from_le_bytes(m.payload[..8].try_into().unwrap()));
        if got.len() as u64 == N {
            break;
        }
    }
    let missed: Vec<herald::Missed> = missed_rx.try_iter().collect();
    eprintln!(
        "{} of {N} events to the live peer ({} Missed) while the other was frozen; raising took {raise_took:?}",
        got.len(),
        missed.len()
    );
    assert!(got.windows(2).all(|w| w[1] > w[0]), "in order, none twice");
    // The frozen peer held no one up: the live one got (nearly) everything, and anything it
    // did not get was reported to it.
    assert!(
        got.len() as u64 > N * 9 / 10,
        "the live peer was not starved"
    );
    if (got.len() as u64) < N {
        assert!(!missed.is_empty(), "losses at the live peer are reported");
    }
    let m = a.metrics();
    assert!(
        m.send_errors > 0,
        "frames to the frozen peer were dropped and counted: {m:?}"
    );
}

/// Reads length-prefixed frames from `conn` at about `bytes_per_ms`, until `records` event
/// records have arrived or no data frame came for 3 s (heartbeats go on); returns the data
/// frames' sequence numbers and the records counted.
fn read_slowly(
    mut conn: std::net::TcpStream,
    bytes_per_ms: usize,
    records: u64,
) -> (Vec<u64>, u64) {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut stream = Vec::new();
    let mut at = 0;
    let mut chunk = vec![0u8; bytes_per_ms];
    let (mut sequences, mut got) = (Vec::new(), 0u64);
    let mut last_data = Instant::now();
    while got < records && last_data.elapsed() < Duration::from_secs(3) {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        stream.extend_from_slice(&chunk[..n]);
        while let Some(prefix) = stream.get(at..at + 4) {
            let len = u32::from_le_bytes(prefix.try_into().unwrap()) as usize;
            let Some(bytes) = stream.get(at + 4..at + 4 + len) else {
                break;
            };
            let frame = herald::wire::Frame::parse(bytes).expect("a well-formed frame");
            if frame.kind() == herald::wire::FrameKind::Data {
                sequences.push(frame.sequence());
                got += u64::from(frame.record_count());
                last_data = Instant::now();
            }
            at += 4 + len;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (sequences, got)
}

#[test]
fn a_slow_lone_peer_slows_the_sender_instead_of_losing_frames() {
    // A peer that reads, but slower than the sender raises: after the socket buffers and half
    // the 4 MiB queue fill, the driver leaves events in the ring, raises fail with `Full`,
    // and not one frame is dropped.
    const N: u64 = 400_000;
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (conn, _) = slow.accept().unwrap();
        read_slowly(conn, 64 << 10, N)
    });
    let a = Router::builder()
        .cluster("tcp-slow")
        .node_id(1)
        .keyring(util::test_keyring())
        .max_frame_len(8192)
        .tcp_peer(slow_addr)
        .build()
        .unwrap();
    let e = a.event(EventId::from_name("test.slow"));
    let mut refused = 0u64;
    let started = Instant::now();
    for i in 0..N {
        while e.raise(&[i as u8; 64]).is_err() {
            refused += 1;
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the sender is stuck"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let (sequences, records) = reader.join().unwrap();
    let m = a.metrics();
    eprintln!(
        "{records} records in {} frames; {refused} raises refused while the peer caught up; {m:?}",
        sequences.len()
    );
    assert!(refused > 0, "the slow peer pushed back on the raises");
    assert_eq!(m.send_errors, 0, "no frame was dropped for the slow peer");
    assert!(
        sequences.iter().zip(1..).all(|(&s, i)| s == i),
        "every frame arrived, in order"
    );
    assert_eq!(records, N, "every raised event reached the peer");
}

#[test]
fn a_frozen_lone_peer_does_not_hold_the_sender() {
    // A peer that accepts and never reads takes nothing: it does not hold back the sender
    // for good; frames for it are dropped and counted, and raising goes on. (How long it
    // holds, 100 ms, is the unit test's in src/transport/tcp.rs: here `TCP_USER_TIMEOUT`,
    // 2 s, would end a longer hold too.)
    let frozen_addr = frozen_peer(Duration::from_secs(60));
    let a = Router::builder()
        .cluster("tcp-frozen-lone")
        .node_id(1)
        .keyring(util::test_keyring())
        .max_frame_len(8192)
        .tcp_peer(frozen_addr)
        .build()
        .unwrap();
    let e = a.event(EventId::from_name("test.frozen"));
    let started = Instant::now();
    // Several times what the socket buffers and the queue hold.
    for i in 0..1_000_000u64 {
        while e.raise(&i.to_le_bytes()).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(50),
                "the frozen peer holds the sender"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    eprintln!("raised 1,000,000 in {:?}", started.elapsed());
    // The last raises may still be in the ring, on their way to the queue the peer does not
    // empty: the drops are counted once the driver gets there.
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.metrics().send_errors == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = a.metrics();
    eprintln!("{m:?}");
    assert!(
        m.send_errors > 0,
        "frames for the frozen peer were dropped and counted"
    );
}
