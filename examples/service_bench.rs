//! One publisher and N subscribed clients over the Redis protocol: events/s delivered by
//! herald's subscription service, and by `redis-server` doing the same job in the same run.
//!
//! ```sh
//! cargo run --release --example service_bench -- [SECONDS] [RUNS] [SUBSCRIBERS]
//! ```
//!
//! Defaults: 5 seconds, 3 runs (alternating herald and redis-server), 100 subscribers. Both
//! servers get the same clients: the publisher pipelines `PUBLISH bench.event <64 bytes>`
//! and keeps at most 1000 events per subscriber in flight (so neither server's output buffer
//! limit is reached: this measures sustained delivery, not buffering); one thread reads all
//! subscriber sockets through mio and counts whole messages (every message has the same
//! bytes, so the count is bytes / message length). herald runs a router without transports:
//! the job is the service's fan-out. `redis-server` must be installed (Debian's
//! redis-server); without it only herald is measured.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::Router;
use herald::auth::{Key, Keyring};
use herald::service::{Service, ServiceConfig};

const CHANNEL: &str = "bench.event";
const PAYLOAD: usize = 64;
const WINDOW_PER_SUBSCRIBER: u64 = 1000;
const PIPELINE: usize = 64;

fn message_len() -> usize {
    format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{CHANNEL}\r\n${PAYLOAD}\r\n",
        CHANNEL.len()
    )
    .len()
        + PAYLOAD
        + 2
}

/// Runs one publisher and `subs` subscribers against `addr` for `seconds`; events/s delivered.
fn run(addr: SocketAddr, subs: usize, seconds: f64) -> f64 {
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (delivered, stop) = (Arc::clone(&delivered), Arc::clone(&stop));
        let mut streams = Vec::new();
        for _ in 0..subs {
            let mut s = TcpStream::connect(addr).expect("connect a subscriber");
            s.write_all(
                format!(
                    "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{CHANNEL}\r\n",
                    CHANNEL.len()
                )
                .as_bytes(),
            )
            .unwrap();
            // The confirmation: `*3 $9 subscribe $11 bench.event :1`.
            let confirm = format!(
                "*3\r\n$9\r\nsubscribe\r\n${}\r\n{CHANNEL}\r\n:1\r\n",
                CHANNEL.len()
            );
            let mut buf = vec![0u8; confirm.len()];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, confirm.as_bytes(), "subscription confirmed");
            s.set_nonblocking(true).unwrap();
            streams.push(mio::net::TcpStream::from_std(s));
        }
        std::thread::spawn(move || read_all(streams, &delivered, &stop))
    };
    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher.set_nodelay(true).unwrap();
    let payload = vec![b'x'; PAYLOAD];
    let mut command = format!(
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{CHANNEL}\r\n${PAYLOAD}\r\n",
        CHANNEL.len()
    )
    .into_bytes();
    command.extend_from_slice(&payload);
    command.extend_from_slice(b"\r\n");
    let batch: Vec<u8> = command.repeat(PIPELINE);
    let reply = format!(":{subs}\r\n");
    let mut replies = vec![0u8; reply.len() * PIPELINE];
    let subs64 = subs as u64;
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        while published * subs64
            > delivered.load(Ordering::Relaxed) + WINDOW_PER_SUBSCRIBER * subs64
        {
            std::thread::yield_now();
        }
        publisher.write_all(&batch).unwrap();
        publisher.read_exact(&mut replies).unwrap();
        assert!(
            replies.starts_with(reply.as_bytes()),
            "PUBLISH reached every subscriber"
        );
        published += PIPELINE as u64;
    }
    let want = published * subs64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let got = delivered.load(Ordering::Relaxed);
    assert_eq!(got, want, "every published event reached every subscriber");
    got as f64 / elapsed
}

fn read_all(mut streams: Vec<mio::net::TcpStream>, delivered: &AtomicU64, stop: &AtomicBool) {
    let mut poll = mio::Poll::new().unwrap();
    for (i, s) in streams.iter_mut().enumerate() {
        poll.registry()
            .register(s, mio::Token(i), mio::Interest::READABLE)
            .unwrap();
    }
    let len = message_len();
    let mut bytes = vec![0u64; streams.len()];
    let mut events = mio::Events::with_capacity(256);
    let mut buf = vec![0u8; 256 << 10];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for e in &events {
            let i = e.token().0;
            loop {
                match streams[i].read(&mut buf) {
                    Ok(0) => panic!("subscriber {i} disconnected"),
                    Ok(n) => {
                        let before = bytes[i] / len as u64;
                        bytes[i] += n as u64;
                        delivered.fetch_add(bytes[i] / len as u64 - before, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("subscriber {i}: {e}"),
                }
            }
        }
    }
}

fn start_redis_server() -> Option<(Child, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, addr))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = args.first().map_or(5.0, |s| s.parse().expect("SECONDS"));
    let runs: usize = args.get(1).map_or(3, |s| s.parse().expect("RUNS"));
    let subs: usize = args.get(2).map_or(100, |s| s.parse().expect("SUBSCRIBERS"));
    let router = Router::builder()
        .cluster("bench")
        .keyring(Keyring::new(1, Key::from_bytes([1; 32])).unwrap())
        .build()
        .unwrap();
    let service = Service::start(&router, ServiceConfig::new("127.0.0.1:0".parse().unwrap()))
        .expect("service");
    let mut redis = start_redis_server();
    if redis.is_none() {
        eprintln!("redis-server not found: measuring herald only");
    }
    let (mut herald_runs, mut redis_runs) = (Vec::new(), Vec::new());
    for r in 1..=runs {
        let h = run(service.local_addr(), subs, seconds);
        println!("run {r}: herald       {h:>12.0} events/s delivered");
        herald_runs.push(h);
        if let Some((_, addr)) = &redis {
            let x = run(*addr, subs, seconds);
            println!("run {r}: redis-server {x:>12.0} events/s delivered");
            redis_runs.push(x);
        }
    }
    println!(
        "median of {runs}: herald {:.0} events/s; {subs} subscribers, {PAYLOAD}-byte payloads",
        median(herald_runs)
    );
    if !redis_runs.is_empty() {
        println!(
            "median of {runs}: redis-server {:.0} events/s",
            median(redis_runs)
        );
    }
    if let Some((child, _)) = &mut redis {
        let _ = child.kill();
        let _ = child.wait();
    }
    service.shutdown();
    router.shutdown();
}
