//! Criterion benchmarks of the multi-producer ring against crossbeam-channel, the queue most
//! Rust programs would reach for.
//!
//! - `mpsc/{herald,crossbeam}/{1,2,4}`: producer threads move 64-byte events to one consumer
//!   thread that reads each one. The ring and the channel get the same memory (1 MiB).
//!   herald's consumer reads what is committed and, when it finds nothing, waits [`IDLE`]
//!   before it looks again, as the driver does (it parks in epoll until a raise wakes it).
//!   crossbeam's consumer calls `recv`, the channel's own blocking receive.
//! - `mpsc/crossbeam-batched/{1,2,4}`: crossbeam-channel again, with herald's consumer
//!   strategy (`try_recv` until empty, then wait [`IDLE`]), so the two queues can also be
//!   compared with the consumer held equal.
//! - `raise/uncontended/64`: one claim + write + commit of a 64-byte event, while a consumer
//!   thread drains the ring the same way.
//! - `raise/router/{0,1}`: the whole `Event::raise` of a 64-byte event on a router without
//!   transports (its driver still drains, encodes and signs), with no local subscriber or
//!   with one callback: checks, ring, wake-up test, counters and the subscriber lookup.
//!
//! Why the consumer waits: a consumer that polls again at once keeps reading the cache line
//! the producer is writing the next record into, so that line crosses between the cores for
//! almost every record. Waiting a little lets records pile up and move as a stream.
//!
//! `cargo bench --bench ring`
// The loom switch (`crate::sync`) is the library's business; a bench uses std directly.
#![allow(clippy::disallowed_types)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_utils::Backoff;
use herald::auth::{Key, Keyring};
use herald::ringbuf::{ClaimError, Producer, ring};
use herald::{EventId, RaiseError, Router};

const RING_BYTES: usize = 1 << 20;
const MAX_RECORD: usize = 1472 - 96;
const EVENT: usize = 64;
/// Channel slots holding as many bytes as the ring.
const CHANNEL_SLOTS: usize = RING_BYTES / EVENT;
/// How long a consumer that found its queue empty waits before it looks again, standing in for
/// the driver's sleep in epoll until a raise wakes it.
const IDLE: Duration = Duration::from_micros(10);

/// Waits [`IDLE`] without touching the queue. It spins rather than yields: with four
/// producers on two cores, a consumer that yields loses its core for a whole time slice while
/// the ring fills, and the producers then spin on a full ring.
fn idle() {
    let start = Instant::now();
    while start.elapsed() < IDLE {
        std::hint::spin_loop();
    }
}

fn push_spin(producer: &Producer, id: &EventId, payload: &[u8]) {
    let backoff = Backoff::new();
    loop {
        match producer.push(id, payload) {
            Ok(()) => return,
            // The consumer is behind: spin a little, then yield the core to it (the same
            // backoff crossbeam-channel uses inside `send` before it parks).
            Err(ClaimError::Full) => backoff.snooze(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Moves `total` events from `producers` threads to one consumer through the ring.
fn herald_mpsc(producers: usize, total: u64) -> Duration {
    let (producer, mut consumer) = ring(RING_BYTES, MAX_RECORD).expect("ring");
    let per_producer = total / producers as u64;
    let expected = per_producer * producers as u64;
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..producers {
            let producer = producer.clone();
            s.spawn(move || {
                let id = EventId::from_bytes([p as u8; 16]);
                let payload = [p as u8; EVENT];
                for _ in 0..per_producer {
                    push_spin(&producer, &id, &payload);
                }
            });
        }
        let mut seen = 0u64;
        while seen < expected {
            match consumer.read(RING_BYTES) {
                Some(run) => {
                    for (_, payload) in run.records() {
                        black_box(payload[0]);
                        seen += 1;
                    }
                    run.release();
                }
                None => idle(),
            }
        }
    });
    start.elapsed()
}

/// How the crossbeam consumer waits for events.
#[derive(Clone, Copy)]
enum Receive {
    /// `recv`: the channel spins, then parks until a sender wakes it.
    Blocking,
    /// `try_recv` until empty, then [`idle`]: herald's consumer strategy.
    Batched,
}

/// The same through a bounded crossbeam channel carrying `[u8; 64]`.
fn crossbeam_mpsc(producers: usize, total: u64, receive: Receive) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<[u8; EVENT]>(CHANNEL_SLOTS);
    let per_producer = total / producers as u64;
    let expected = per_producer * producers as u64;
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                let payload = [p as u8; EVENT];
                for _ in 0..per_producer {
                    tx.send(payload).expect("consumer alive");
                }
            });
        }
        let mut seen = 0u64;
        while seen < expected {
            let event = match receive {
                Receive::Blocking => rx.recv().expect("producers alive"),
                Receive::Batched => match rx.try_recv() {
                    Ok(event) => event,
                    Err(crossbeam_channel::TryRecvError::Empty) => {
                        idle();
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                },
            };
            black_box(event[0]);
            seen += 1;
        }
    });
    start.elapsed()
}

fn mpsc(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpsc");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    for producers in [1usize, 2, 4] {
        group.bench_function(BenchmarkId::new("herald", producers), |b| {
            b.iter_custom(|iters| herald_mpsc(producers, iters.max(producers as u64)));
        });
        group.bench_function(BenchmarkId::new("crossbeam", producers), |b| {
            b.iter_custom(|iters| {
                crossbeam_mpsc(producers, iters.max(producers as u64), Receive::Blocking)
            });
        });
        group.bench_function(BenchmarkId::new("crossbeam-batched", producers), |b| {
            b.iter_custom(|iters| {
                crossbeam_mpsc(producers, iters.max(producers as u64), Receive::Batched)
            });
        });
    }
    group.finish();
}

fn raise(c: &mut Criterion) {
    let mut group = c.benchmark_group("raise");
    let (producer, mut consumer) = ring(RING_BYTES, MAX_RECORD).expect("ring");
    let stop = AtomicBool::new(false);
    let id = EventId::from_name("bench.event");
    let payload = [0x5au8; EVENT];
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match consumer.read(RING_BYTES) {
                    Some(run) => run.release(),
                    None => idle(),
                }
            }
        });
        group.bench_function(BenchmarkId::new("uncontended", EVENT), |b| {
            b.iter(|| push_spin(&producer, &id, black_box(&payload)));
        });
        stop.store(true, Ordering::Relaxed);
    });
    for subscribers in [0, 1] {
        let router = Router::builder()
            .cluster("bench")
            .keyring(Keyring::new(1, Key::from_bytes([7; 32])).expect("key"))
            .build()
            .expect("router");
        let event = router.event(id);
        let _sub = (subscribers == 1).then(|| {
            event.subscribe(|d| {
                black_box(d.payload());
            })
        });
        group.bench_function(BenchmarkId::new("router", subscribers), |b| {
            b.iter(|| {
                loop {
                    match event.raise(black_box(&payload)) {
                        Err(RaiseError::Full) => std::hint::spin_loop(),
                        other => break other,
                    }
                }
            });
        });
    }
    group.finish();
}

// criterion_group! makes an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, mpsc, raise);
}
criterion_main!(group::benches);
