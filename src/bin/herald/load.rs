//! What `bench` and `demo` share: a load generator on the sending node, and a recorder of
//! latency, deliveries and losses on a receiving node, in this process or in a child.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald::{EventId, RaiseError, Router, Subscription};
use parking_lot::Mutex;

/// The event the load is raised as.
pub(crate) const LOAD_EVENT: &str = "herald.load";

/// Nanoseconds of one clock for the whole machine, not per process, so a sender can put this
/// value in a payload and a receiver in another process can subtract it from its own reading:
/// that is how latency is measured across processes.
///
/// On Unix that is `CLOCK_MONOTONIC`. Elsewhere (Windows) std does not expose the machine's
/// monotonic counter as a number, so it is the system clock since the Unix epoch: the same
/// for every process too, but a clock step during a run shows as a latency outlier.
pub(crate) fn mono_ns() -> u64 {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    }
    #[cfg(not(unix))]
    {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Flat out, one event in this many carries its send time and the others carry 0, and the
/// generator looks at the clock only that often: a clock read costs about as much as a raise,
/// and the load should measure herald, not the clock. At a set rate every event is stamped.
pub(crate) const SAMPLE_EVERY: u64 = 64;

/// What to raise: payload size, producer threads, how long, how fast.
#[derive(Clone, Debug)]
pub(crate) struct Load {
    /// Bytes per event; the first 8 carry the send time (or 0, see [`SAMPLE_EVERY`]).
    pub(crate) payload: usize,
    /// Threads raising.
    pub(crate) producers: usize,
    /// How long.
    pub(crate) duration: Duration,
    /// Events per second over all producers; `None` is as fast as the ring takes them.
    pub(crate) rate: Option<u64>,
}

impl Load {
    /// The load as one line of the child protocol: `load PAYLOAD PRODUCERS SECONDS RATE`.
    pub(crate) fn to_line(&self) -> String {
        format!(
            "load {} {} {} {}",
            self.payload,
            self.producers,
            self.duration.as_secs_f64(),
            self.rate.unwrap_or(0)
        )
    }

    /// Parses the words after `load`.
    pub(crate) fn parse(words: &[&str]) -> Option<Self> {
        let [payload, producers, seconds, rate] = words else {
            return None;
        };
        let seconds: f64 = seconds.parse().ok()?;
        Some(Self {
            payload: payload.parse().ok().filter(|&p| p >= 8)?,
            producers: producers.parse().ok().filter(|&p| p > 0)?,
            duration: Duration::try_from_secs_f64(seconds).ok()?,
            rate: rate.parse().ok().filter(|&r| r > 0),
        })
    }
}

/// What the producers did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Generated {
    /// Events raised into the ring.
    pub(crate) sent: u64,
    /// Raises the full ring refused (each was tried again until it was taken).
    pub(crate) refused: u64,
    /// How long the load ran.
    pub(crate) elapsed: Duration,
}

/// How long a producer waits when the ring is full: a sliver of what the bench's ring holds
/// (16 MiB, milliseconds of events), so the ring never runs dry meanwhile.
const FULL_BACKOFF: Duration = Duration::from_micros(50);

/// Raises `load` on `router` from `load.producers` threads until the time is up or `stop` is
/// set; calls `tick` with the count sent so far about every 100 ms. A full ring is waited out
/// (the raise is retried), so `sent` counts events that are on their way.
pub(crate) fn generate(
    router: &Router,
    load: &Load,
    stop: &AtomicBool,
    mut tick: impl FnMut(u64),
) -> Generated {
    let sent = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let event = EventId::from_name(LOAD_EVENT);
    let start = Instant::now();
    let running = || start.elapsed() < load.duration && !stop.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        for _ in 0..load.producers {
            let (sent, refused, running) = (&sent, &refused, &running);
            s.spawn(move || {
                let e = router.event(event);
                let mut payload = vec![0u8; load.payload];
                let per_thread = load.rate.map(|r| r as f64 / load.producers as f64);
                let mut i = 0u64;
                let mut attempt = 0u64;
                loop {
                    let sample = per_thread.is_some() || attempt.is_multiple_of(SAMPLE_EVERY);
                    attempt += 1;
                    if sample && !running() {
                        break;
                    }
                    if let Some(r) = per_thread {
                        let due = start + Duration::from_secs_f64(i as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let stamp = if sample { mono_ns() } else { 0 };
                    payload[..8].copy_from_slice(&stamp.to_le_bytes());
                    match e.raise(&payload) {
                        Ok(()) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                        // The ring is full: give the cores to the driver that empties it
                        // (yielding would keep this thread runnable, competing with it).
                        Err(RaiseError::Full) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(FULL_BACKOFF);
                        }
                        Err(_) => return,
                    }
                }
            });
        }
        while running() {
            std::thread::sleep(Duration::from_millis(100));
            tick(sent.load(Ordering::Relaxed));
        }
    });
    Generated {
        sent: sent.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

/// Counts what a receiving node got of the load: deliveries with their latency, Missed
/// notices and the frames they cover.
#[derive(Debug)]
pub(crate) struct Recorder {
    delivered: AtomicU64,
    missed: AtomicU64,
    missed_frames: AtomicU64,
    overflow_notices: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

/// A receiving node's figures: the receiver's part of `bench --json` (docs/bench.md) and
/// the child's `stats` line. A field added here shows in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Report {
    /// Load events delivered to the subscriber.
    pub(crate) delivered: u64,
    /// Missed notices for events that were sent and lost (every reason but
    /// `sender_overflowed`).
    pub(crate) missed: u64,
    /// `sender_overflowed` notices: the sender's full ring refused raises (counted as
    /// `refused`), so those events never reached the wire; nothing sent was lost.
    pub(crate) missed_overflow: u64,
    /// Frames the Missed notices cover (when they say).
    pub(crate) missed_frames: u64,
    /// Frames refused or not dispatched (every reason).
    pub(crate) dropped: u64,
    /// Latency percentiles in microseconds.
    pub(crate) p50_us: u64,
    /// 99th percentile.
    pub(crate) p99_us: u64,
    /// 99.9th percentile.
    pub(crate) p999_us: u64,
}

impl Recorder {
    /// An empty recorder.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            delivered: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            missed_frames: AtomicU64::new(0),
            overflow_notices: AtomicU64::new(0),
            // 1 µs to 60 s, three significant digits: bounds that are always valid.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ),
        })
    }

    /// Subscribes to the load event and to Missed on `router`; keep the handles.
    pub(crate) fn attach(self: &Arc<Self>, router: &Router) -> [Subscription; 2] {
        let me = Arc::clone(self);
        let events = router
            .event(EventId::from_name(LOAD_EVENT))
            .subscribe(move |d| {
                if d.is_local() {
                    return;
                }
                // 0: an event the generator did not stamp (see `SAMPLE_EVERY`).
                if let Some(sent) = d.payload().first_chunk::<8>()
                    && let sent = u64::from_le_bytes(*sent)
                    && sent != 0
                {
                    let us = mono_ns().saturating_sub(sent) / 1000;
                    let _ = me.latency.lock().record(us.max(1));
                }
                me.delivered.fetch_add(1, Ordering::Relaxed);
            });
        let me = Arc::clone(self);
        let missed = router.on_missed(move |m| {
            if m.reason == herald::MissedReason::SenderOverflowed {
                me.overflow_notices.fetch_add(1, Ordering::Relaxed);
                return;
            }
            me.missed.fetch_add(1, Ordering::Relaxed);
            if let Some((a, b)) = m.range {
                me.missed_frames
                    .fetch_add(b.saturating_sub(a) + 1, Ordering::Relaxed);
            }
        });
        [events, missed]
    }

    /// Adds this recorder's latency samples to `into` (the fan-out bench merges its
    /// receivers').
    pub(crate) fn merge_latency_into(&self, into: &mut Histogram<u64>) {
        let _ = into.add(&*self.latency.lock());
    }

    /// Load events delivered so far.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits up to 3 s for deliveries to reach `sent`, and returns once they stop coming.
    pub(crate) fn settle(&self, sent: u64) {
        let start = Instant::now();
        let mut last = self.delivered();
        while start.elapsed() < Duration::from_secs(3) && last < sent {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.delivered();
            if now == last && start.elapsed() > Duration::from_millis(500) {
                break;
            }
            last = now;
        }
    }

    /// The figures so far, with `router`'s dropped frames.
    pub(crate) fn report(&self, router: &Router) -> Report {
        let m = router.metrics();
        let h = self.latency.lock();
        Report {
            delivered: self.delivered(),
            missed: self.missed.load(Ordering::Relaxed),
            missed_overflow: self.overflow_notices.load(Ordering::Relaxed),
            missed_frames: self.missed_frames.load(Ordering::Relaxed),
            dropped: m.drops_total() + m.dispatch_dropped,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
        }
    }
}

impl Report {
    /// One line of the child protocol: `stats` and the report as JSON.
    pub(crate) fn to_line(self) -> String {
        format!("stats {}", crate::json::line(&self))
    }

    /// Parses a `stats` line.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.strip_prefix("stats ")?).ok()
    }
}
