//! End to end: two routers on UDP loopback, 64-byte payloads.
//!
//! - `end_to_end/throughput/{1472,8192}`: events/s raised on node A and delivered to a
//!   subscriber on node B, with frames of that size (no silent loss: the run fails if an
//!   event is missing or a Missed is raised).
//! - `end_to_end/latency_10k/{herald,herald_inline,herald_busy,bare_udp,bare_udp_busy}`: one
//!   event every 100 µs (10,000/s), the sender spinning between events; criterion reports
//!   the mean time per event and the bench prints p50/p99/p99.9 one-way latency from raise
//!   to delivery. `herald` is two routers with the defaults; `herald_inline` the same with
//!   `send_on_raise` and `dispatch_on_driver` on; `herald_busy` with `busy_poll` (1 ms) on
//!   the receiving router as well. Only the receiver busy-polls, as if it had a core to
//!   spare: on a 2-core machine two spinning drivers and the sender leave none
//!   (`herald bench --busy-poll-on both` shows what that costs). `bare_udp` is the floor: a
//!   bare 64-byte datagram from a plain socket to a thread waiting in `mio::Poll`;
//!   `bare_udp_busy` the floor for `herald_busy`, its receiver reading in a loop instead.
//! - `end_to_end/latency_10k_sleeping/…`: the same five with a sender that sleeps between
//!   events, as an application thread between requests does (and as `herald bench --rate`).
//!
//! `cargo bench --bench end_to_end`
#![allow(clippy::disallowed_types)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::auth::{Key, Keyring};
use herald::{EventId, RaiseError, Router};

/// Which latency settings a pair of routers has.
#[derive(Clone, Copy, PartialEq)]
enum Settings {
    /// None.
    Defaults,
    /// `send_on_raise` and `dispatch_on_driver`.
    Inline,
    /// Those two and `busy_poll`.
    Busy,
}

impl Settings {
    fn id(self) -> &'static str {
        match self {
            Self::Defaults => "herald",
            Self::Inline => "herald_inline",
            Self::Busy => "herald_busy",
        }
    }
}

/// Two routers on UDP loopback with the given latency settings (with `Busy`, the second
/// one, the receiver in these benches, busy-polls).
fn pair(frame: usize, settings: Settings) -> (Router, Router) {
    let inline = settings != Settings::Defaults;
    let busy_poll = |i: usize| {
        if settings == Settings::Busy && i == 1 {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        }
    };
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
            .send_on_raise(inline)
            .dispatch_on_driver(inline)
            .busy_poll(busy_poll(i))
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
        let (a, b) = pair(frame, Settings::Defaults);
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
    for pacing in [Pacing::Spin, Pacing::Sleep] {
        let mut group = c.benchmark_group(pacing.group());
        for settings in [Settings::Defaults, Settings::Inline, Settings::Busy] {
            herald_latency(&mut group, pacing, settings);
        }
        bare_udp_latency(&mut group, pacing, false);
        bare_udp_latency(&mut group, pacing, true);
        group.finish();
    }
}

/// How the sending thread waits for each event's turn.
#[derive(Clone, Copy)]
enum Pacing {
    /// Spins: the sender keeps its core, so the receiver is woken on the other one.
    Spin,
    /// Sleeps, as an application thread between requests does.
    Sleep,
}

impl Pacing {
    fn group(self) -> &'static str {
        match self {
            Self::Spin => "end_to_end/latency_10k",
            Self::Sleep => "end_to_end/latency_10k_sleeping",
        }
    }

    /// Waits until event `i` of a run at 10,000/s that began at `start` is due.
    fn wait_turn(self, start: Instant, i: u64) {
        let due = start + Duration::from_micros(100 * i);
        match self {
            Self::Spin => {
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
            }
            Self::Sleep => {
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// Sends at 10,000/s with `send`, handing it a 64-byte payload that starts with the send
    /// time in nanoseconds since `base`.
    fn run(self, group: &mut Group<'_>, id: &str, base: Instant, mut send: impl FnMut(&[u8])) {
        group.bench_function(id, |bench| {
            bench.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    self.wait_turn(start, i);
                    let mut payload = [0u8; 64];
                    let now = base.elapsed().as_nanos() as u64;
                    payload[..8].copy_from_slice(&now.to_le_bytes());
                    send(&payload);
                }
                start.elapsed()
            });
        });
    }
}

/// The latency of `now` (nanoseconds since `base`) for a payload stamped by [`Pacing::run`].
fn since_stamp(base: Instant, payload: &[u8]) -> u64 {
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&payload[..8]);
    (base.elapsed().as_nanos() as u64).saturating_sub(u64::from_le_bytes(sent))
}

/// Prints p50, p99 and p99.9 of latencies in nanoseconds.
fn print_latency(group: &str, id: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    if !v.is_empty() {
        let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        eprintln!(
            "{group}/{id}: one-way latency over {} events: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
            v.len(),
            q(0.5),
            q(0.99),
            q(0.999)
        );
    }
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Raise on one router, a subscriber on the other.
fn herald_latency(group: &mut Group<'_>, pacing: Pacing, settings: Settings) {
    let id = settings.id();
    let event = EventId::from_name("bench.latency");
    let (a, b) = pair(1472, settings);
    let base = Instant::now();
    let samples = Arc::new(parking_lot::Mutex::new(Vec::<u64>::with_capacity(1 << 20)));
    let s = Arc::clone(&samples);
    let _sub = b
        .event(event)
        .subscribe(move |d| s.lock().push(since_stamp(base, d.payload())));
    let raise = a.event(event);
    pacing.run(group, id, base, |payload| {
        let _ = raise.raise(payload);
    });
    std::thread::sleep(Duration::from_millis(200));
    print_latency(pacing.group(), id, samples.lock().clone());
}

/// The floor: a bare datagram from a plain socket to a thread waiting in `mio::Poll`.
/// With `busy`, the receiving thread never sleeps: it reads the socket in a loop (the floor
/// for `herald_busy`).
fn bare_udp_latency(group: &mut Group<'_>, pacing: Pacing, busy: bool) {
    let id = if busy { "bare_udp_busy" } else { "bare_udp" };
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    rx.set_nonblocking(true).expect("nonblocking");
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rx = mio::net::UdpSocket::from_std(rx);
            let mut poll = mio::Poll::new().expect("poll");
            poll.registry()
                .register(&mut rx, mio::Token(0), mio::Interest::READABLE)
                .expect("register");
            let mut events = mio::Events::with_capacity(8);
            let mut v = Vec::with_capacity(1 << 20);
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if !busy {
                    let _ = poll.poll(&mut events, Some(Duration::from_millis(50)));
                }
                while let Ok(8..) = rx.recv(&mut buf) {
                    v.push(since_stamp(base, &buf));
                }
            }
            v
        })
    };
    pacing.run(group, id, base, |payload| {
        let _ = tx.send(payload);
    });
    stop.store(true, Ordering::Relaxed);
    print_latency(pacing.group(), id, receiver.join().expect("receiver"));
}

// criterion_group! makes an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, throughput, latency);
}
criterion_main!(group::benches);
