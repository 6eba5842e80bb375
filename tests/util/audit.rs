//! The loss audit shared by the fault tests (in-process hook and kernel rules): each router
//! raises counters, every receiver logs what it got and each Missed, and the audit checks
//! herald's promise against the logs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald::{EventId, Missed, Router};
use parking_lot::Mutex;

/// What one receiver saw, in order.
enum Seen {
    Event { node: u64, counter: u64, seq: u64 },
    Missed(Missed, Instant),
}

/// The figures of one audited run.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Remote events delivered, over all receivers.
    pub(crate) delivered: usize,
    /// Remote events raised, over all receivers (each event counts once per peer).
    pub(crate) expected: u64,
    /// Frames reported missed, over all receivers.
    pub(crate) lost_frames: usize,
    /// From the raise of a lost frame's first event to the Missed that covered it.
    pub(crate) latencies: Vec<Duration>,
    /// Duplicate frames the routers dropped.
    pub(crate) duplicates_dropped: u64,
}

impl Outcome {
    /// A detection-latency quantile.
    pub(crate) fn latency(&self, p: f64) -> Option<Duration> {
        self.latencies
            .get(((self.latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
    }
}

/// Whether each router has delivered, or been told it missed, every data frame each other
/// router has sent so far.
fn all_heard_of(routers: &[Router], logs: &[Arc<Mutex<Vec<Seen>>>]) -> bool {
    routers.iter().zip(logs).all(|(receiver, log)| {
        let log = log.lock();
        routers
            .iter()
            .filter(|s| s.node_id() != receiver.node_id())
            .all(|sender| {
                let highest = log
                    .iter()
                    .filter_map(|seen| match seen {
                        Seen::Event { node, seq, .. } if *node == sender.node_id() => Some(*seq),
                        Seen::Missed(m, _) if m.node == sender.node_id() => {
                            m.range.map(|(_, end)| end)
                        }
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                highest >= sender.metrics().frames_sent
            })
    })
}

/// Each router raises `n` counters (in small bursts, so the events spread over many frames)
/// while `disturb` runs on a thread of its own until the raising is done (its flag is then
/// set); then, after time for heartbeats to reveal lost tails, checks for every sender and
/// receiver:
/// - no event delivered twice or out of order;
/// - no frame covered by two Missed, and no delivered frame covered by one;
/// - every event not delivered lies in a frame some Missed covers (no silent loss).
///
/// Prints the counts and the detection latency under `label`.
pub(crate) fn raise_and_audit(
    routers: &[Router],
    n: u64,
    label: &str,
    disturb: impl FnOnce(&AtomicBool) + Send,
) -> Outcome {
    let event = EventId::from_name("test.faults");
    let logs: Vec<Arc<Mutex<Vec<Seen>>>> = routers.iter().map(|_| Arc::default()).collect();
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
    let raised: Vec<Arc<Mutex<Vec<Instant>>>> = routers.iter().map(|_| Arc::default()).collect();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let done = &done;
        s.spawn(move || disturb(done));
        let raisers: Vec<_> = routers
            .iter()
            .zip(&raised)
            .map(|(r, times)| {
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
                })
            })
            .collect();
        for r in raisers {
            r.join().expect("raiser");
        }
        done.store(true, Ordering::Relaxed);
    });
    // Heartbeats reveal lost tails; reordered frames arrive or time out. 1.5 s is plenty on
    // an idle machine; on a loaded one, wait on (up to 20 s) until every receiver has heard
    // of every data frame each sender has sent, delivered or reported, so the audit below
    // checks herald and not how busy the machine is. Waiting longer never hides a fault: a
    // frame reported twice or delivered and reported stays so.
    std::thread::sleep(Duration::from_millis(1500));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !all_heard_of(routers, &logs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent_frames: HashMap<u64, u64> = routers
        .iter()
        .map(|r| (r.node_id(), r.metrics().frames_sent))
        .collect();
    let index: HashMap<u64, usize> = routers
        .iter()
        .enumerate()
        .map(|(i, r)| (r.node_id(), i))
        .collect();
    let mut latencies = Vec::new();
    let mut delivered = 0;
    let mut lost_frames = 0;
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
                        let raised_at = raised[index[&sender]].lock()[first_missing as usize];
                        latencies.push(at.saturating_duration_since(raised_at));
                    }
                }
            }
            delivered += events.len();
            lost_frames += covered.len();
        }
    }
    latencies.sort();
    let peers = routers.len() as u64 - 1;
    let outcome = Outcome {
        delivered,
        expected: routers.len() as u64 * peers * n,
        lost_frames,
        latencies,
        duplicates_dropped: routers
            .iter()
            .map(|r| r.metrics().drops_for("duplicate"))
            .sum(),
    };
    eprintln!(
        "{label}: {} of {} events delivered, {} frames reported missed, {} duplicates dropped; \
         detection latency p50 {:?} p99 {:?} max {:?}",
        outcome.delivered,
        outcome.expected,
        outcome.lost_frames,
        outcome.duplicates_dropped,
        outcome.latency(0.5),
        outcome.latency(0.99),
        outcome.latencies.last()
    );
    drop(subs);
    outcome
}
