//! Routers over real UDP sockets with seeded faults injected in the socket layer: loss
//! (uniform and in bursts), duplication and reordering. What must hold: no event delivered
//! twice or out of order, and every event that is not delivered lies in a frame some `Missed`
//! covers, each lost frame covered once.
#![allow(clippy::disallowed_types)]

mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::transport::FaultInjection;
use herald::{EventId, Missed, Router};
use parking_lot::Mutex;

/// What one receiver saw, in order.
enum Seen {
    Event { node: u64, counter: u64, seq: u64 },
    Missed(Missed, Instant),
}

fn run(faults: &FaultInjection, n: u64) {
    let addrs = util::free_udp_addrs(3);
    let routers: Vec<Router> = (0..3)
        .map(|i| {
            let mut b = Router::builder()
                .cluster("faults")
                .node_id(i as u64 + 1)
                .keyring(util::test_keyring())
                .ring_capacity(8 << 20)
                .udp_bind(addrs[i])
                .udp_fault_injection(FaultInjection {
                    seed: faults.seed + i as u64,
                    ..faults.clone()
                });
            for (j, a) in addrs.iter().enumerate() {
                if j != i {
                    b = b.udp_peer(*a);
                }
            }
            b.build().expect("router builds")
        })
        .collect();
    let event = EventId::from_name("test.faults");
    let logs: Vec<Arc<Mutex<Vec<Seen>>>> = (0..3).map(|_| Arc::default()).collect();
    let mut subs = Vec::new();
    for (r, log) in routers.iter().zip(&logs) {
        let l = Arc::clone(log);
        subs.push(r.event(event).subscribe(move |d| {
            if !d.is_local() {
                let counter = u64::from_le_bytes(d.payload()[..8].try_into().unwrap());
                l.lock().push(Seen::Event {
                    node: d.node(),
                    counter,
                    seq: d.frame().1,
                });
            }
        }));
        let l = Arc::clone(log);
        subs.push(r.on_missed(move |m| l.lock().push(Seen::Missed(m.clone(), Instant::now()))));
    }
    // Raise, remembering when each counter was raised (for detection latency).
    let raised: Vec<Arc<Mutex<Vec<Instant>>>> = (0..3).map(|_| Arc::default()).collect();
    std::thread::scope(|s| {
        for (r, times) in routers.iter().zip(&raised) {
            s.spawn(move || {
                let e = r.event(event);
                for i in 0..n {
                    times.lock().push(Instant::now());
                    while e.raise(&i.to_le_bytes()).is_err() {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    if i % 64 == 0 {
                        // Spread the events over many frames, so losses hit something.
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            });
        }
    });
    // Heartbeats reveal lost tails; reordered frames arrive or time out.
    std::thread::sleep(Duration::from_millis(1500));
    let sent_frames: HashMap<u64, u64> = routers
        .iter()
        .map(|r| (r.node_id(), r.metrics().frames_sent))
        .collect();
    let mut latencies = Vec::new();
    let mut delivered_total = 0;
    let mut lost_frames_total = 0;
    for (ri, log) in logs.iter().enumerate() {
        let log = log.lock();
        for sender in routers.iter().map(Router::node_id) {
            if sender == routers[ri].node_id() {
                continue;
            }
            let events: Vec<(u64, u64)> = log
                .iter()
                .filter_map(|s| match s {
                    Seen::Event { node, counter, seq } if *node == sender => Some((*counter, *seq)),
                    _ => None,
                })
                .collect();
            let missed: Vec<(u64, u64, Instant)> = log
                .iter()
                .filter_map(|s| match s {
                    Seen::Missed(m, at) if m.node == sender => {
                        let (a, b) = m.range.unwrap_or_else(|| panic!("unexpected {m:?}"));
                        Some((a, b, *at))
                    }
                    _ => None,
                })
                .collect();
            // Each lost frame is covered once, and never a delivered one.
            let mut covered: HashMap<u64, u32> = HashMap::new();
            for (a, b, _) in &missed {
                for seq in *a..=*b {
                    *covered.entry(seq).or_default() += 1;
                }
            }
            assert!(covered.values().all(|&c| c == 1), "a frame reported twice");
            for (counter, seq) in &events {
                assert!(
                    !covered.contains_key(seq),
                    "event {counter} delivered and missed"
                );
            }
            // In order, exactly once.
            for w in events.windows(2) {
                assert!(
                    w[1].0 > w[0].0,
                    "{sender}->{ri}: {:?} after {:?}",
                    w[1],
                    w[0]
                );
            }
            // Every missing counter lies in covered frames.
            let mut bounds = vec![(None, 0u64)];
            bounds.extend(events.iter().map(|&(c, s)| (Some(c), s)));
            bounds.push((Some(n), sent_frames[&sender] + 1));
            for w in bounds.windows(2) {
                let ((c0, s0), (c1, s1)) = (w[0], w[1]);
                let first_missing = c0.map_or(0, |c| c + 1);
                if c1.unwrap_or(0) > first_missing {
                    // Frames strictly between the two delivered frames are all missed.
                    for seq in s0 + 1..s1 {
                        assert!(
                            covered.contains_key(&seq),
                            "{sender}->{ri}: frame {seq} lost silently (counters {first_missing}..{c1:?})"
                        );
                    }
                    if let Some((_, _, at)) = missed
                        .iter()
                        .find(|(a, b, _)| (*a..=*b).contains(&(s0 + 1)))
                    {
                        let raised_at =
                            raised[(sender - 1) as usize].lock()[first_missing as usize];
                        latencies.push(at.saturating_duration_since(raised_at));
                    }
                }
            }
            delivered_total += events.len();
            lost_frames_total += covered.len();
        }
    }
    latencies.sort();
    let q = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
    };
    eprintln!(
        "loss {:.0}% burst {} dup {:.0}% reorder {:.0}%: {delivered_total} of {} events delivered, \
         {lost_frames_total} frames reported missed; detection latency p50 {:?} p99 {:?} max {:?}",
        faults.loss * 100.0,
        faults.burst_len,
        faults.duplicate * 100.0,
        faults.reorder * 100.0,
        6 * n,
        q(0.5),
        q(0.99),
        latencies.last()
    );
    let dropped: u64 = routers
        .iter()
        .map(|r| r.metrics().drops_for("duplicate"))
        .sum();
    if faults.duplicate > 0.0 {
        assert!(dropped > 0, "duplicates were injected and must be counted");
    }
    drop(subs);
}

fn faults(seed: u64, loss: f64, burst: f64) -> FaultInjection {
    FaultInjection {
        seed,
        loss,
        burst,
        burst_len: 5,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(10),
    }
}

#[test]
fn one_percent_loss() {
    run(&faults(1, 0.01, 0.0), 20_000);
}

#[test]
fn five_percent_loss() {
    run(&faults(2, 0.05, 0.0), 20_000);
}

#[test]
fn twenty_percent_loss() {
    run(&faults(3, 0.20, 0.0), 20_000);
}

#[test]
fn loss_in_bursts() {
    run(&faults(4, 0.02, 0.5), 20_000);
}
