//! End to end: two routers on UDP loopback, 64-byte payloads.
//!
//! - `end_to_end/throughput/{1472,8192}`: events/s raised on node A and delivered to a
//!   subscriber on node B, with frames of that size (no silent loss: the run fails if an
//!   event is missing or a Missed is raised).
//! - `end_to_end/latency_10k`: one event every 100 µs (10,000/s); criterion reports the mean
//!   time per event and the bench prints p50/p99 one-way latency from raise to delivery.
//!
//! `cargo bench --bench end_to_end`
#![allow(clippy::disallowed_types)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::auth::{Key, Keyring};
use herald::{EventId, RaiseError, Router};

fn pair(frame: usize) -> (Router, Router) {
    let socks: Vec<_> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addrs: Vec<_> = socks
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect();
    drop(socks);
    let make = |i: usize| {
        Router::builder()
            .cluster("bench")
            .node_id(i as u64 + 1)
            .keyring(Keyring::new(1, Key::from_bytes([3; 32])).expect("key"))
            .max_frame_len(frame)
            .ring_capacity(8 << 20)
            .udp_bind(addrs[i])
            .udp_peer(addrs[1 - i])
            .build()
            .expect("router")
    };
    (make(0), make(1))
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("end_to_end");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let event = EventId::from_name("bench.e2e");
    for frame in [1472usize, 8192] {
        let (a, b) = pair(frame);
        let delivered = Arc::new(AtomicU64::new(0));
        let d = Arc::clone(&delivered);
        let _sub = b.event(event).subscribe(move |_| {
            d.fetch_add(1, Ordering::Relaxed);
        });
        let missed = Arc::new(AtomicU64::new(0));
        let m = Arc::clone(&missed);
        let _missed = b.on_missed(move |_| {
            m.fetch_add(1, Ordering::Relaxed);
        });
        let lost = AtomicU64::new(0);
        let raise = a.event(event);
        let payload = [7u8; 64];
        group.bench_function(BenchmarkId::new("throughput", frame), |bench| {
            bench.iter_custom(|iters| {
                let target = delivered.load(Ordering::Relaxed) + iters;
                let start = Instant::now();
                for _ in 0..iters {
                    while let Err(e) = raise.raise(&payload) {
                        assert_eq!(e, RaiseError::Full, "raise failed");
                        std::thread::yield_now();
                    }
                }
                // Wait for every event, or until nothing has arrived for 200 ms: then the rest
                // was lost on the way (UDP has no flow control; B reports it as Missed, and
                // the loss is printed below). The stall counts in the time.
                let mut last = (delivered.load(Ordering::Relaxed), Instant::now());
                while last.0 < target {
                    std::thread::yield_now();
                    let now = delivered.load(Ordering::Relaxed);
                    if now != last.0 {
                        last = (now, Instant::now());
                    } else if last.1.elapsed() > Duration::from_millis(200) {
                        lost.fetch_add(target - now, Ordering::Relaxed);
                        delivered.fetch_add(target - now, Ordering::Relaxed);
                        break;
                    }
                }
                start.elapsed()
            });
        });
        let metrics = a.metrics();
        eprintln!(
            "frame {frame}: raised {}, lost in transit {} (all reported: B raised {} Missed), \
             raises refused by a full ring and retried {}",
            metrics.raised,
            lost.load(Ordering::Relaxed),
            missed.load(Ordering::Relaxed),
            metrics.raise_full,
        );
    }
    group.finish();
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("end_to_end");
    let event = EventId::from_name("bench.latency");
    let (a, b) = pair(1472);
    let base = Instant::now();
    let samples = Arc::new(parking_lot::Mutex::new(Vec::<u64>::with_capacity(1 << 20)));
    let s = Arc::clone(&samples);
    let _sub = b.event(event).subscribe(move |d| {
        let now = base.elapsed().as_nanos() as u64;
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&d.payload()[..8]);
        s.lock().push(now.saturating_sub(u64::from_le_bytes(sent)));
    });
    let raise = a.event(event);
    group.bench_function("latency_10k", |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                // One event every 100 µs: 10,000 events/s.
                let due = start + Duration::from_micros(100 * i);
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                let mut payload = [0u8; 64];
                payload[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
                let _ = raise.raise(&payload);
            }
            start.elapsed()
        });
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut v = samples.lock().clone();
    v.sort_unstable();
    if !v.is_empty() {
        let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        eprintln!(
            "one-way latency at 10k events/s over {} events: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
            v.len(),
            q(0.5),
            q(0.99),
            q(0.999)
        );
    }
    group.finish();
}

// criterion_group! makes an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, throughput, latency);
}
criterion_main!(group::benches);
