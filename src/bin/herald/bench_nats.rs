//! `herald bench --transport nats-raw`: the yardstick for herald over NATS. The same payloads
//! as the herald bench, published with the async-nats client one message per event, received
//! by a second client, with the same latency stamp (send time in the first 8 bytes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;

use crate::CliError;
use crate::load::{Load, SAMPLE_EVERY, mono_ns};

const SUBJECT: &str = "herald-bench.raw";

/// What a raw run measured.
#[derive(Debug)]
pub(crate) struct RawReport {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) elapsed: Duration,
    pub(crate) slow_consumer: u64,
    pub(crate) latency: Histogram<u64>,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::usage(format!("cannot start a runtime: {e}")))
}

async fn connect(
    url: &str,
    slow: Option<&'static AtomicU64>,
) -> Result<async_nats::Client, CliError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(slow) = slow {
        options = options.event_callback(move |e| async move {
            if matches!(e, async_nats::Event::SlowConsumer(_)) {
                slow.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    options
        .connect(url)
        .await
        .map_err(|e| CliError::usage(format!("--nats-url {url}: {e}")))
}

/// Publishes `load` (one producer: a client's publishes are ordered through one task) and
/// receives it on another client; each on a thread and runtime of its own.
pub(crate) fn raw(url: &str, load: &Load, stop: &AtomicBool) -> Result<RawReport, CliError> {
    static SLOW: AtomicU64 = AtomicU64::new(0);
    let delivered = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let publishing = AtomicBool::new(true);
    let rx_rt = runtime()?;
    let (client, mut sub) = rx_rt.block_on(async {
        let client = connect(url, Some(&SLOW)).await?;
        let sub = client
            .subscribe(SUBJECT)
            .await
            .map_err(|e| CliError::usage(format!("subscribe: {e}")))?;
        client
            .flush()
            .await
            .map_err(|e| CliError::usage(format!("flush: {e}")))?;
        Ok::<_, CliError>((client, sub))
    })?;
    let tx_rt = runtime()?;
    let publisher = tx_rt.block_on(connect(url, None))?;
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let start = Instant::now();
    let elapsed = std::thread::scope(|s| {
        let (sent, publishing) = (&sent, &publishing);
        let producer = s.spawn(move || {
            tx_rt.block_on(async {
                let mut payload = vec![0u8; load.payload];
                let mut i = 0u64;
                while start.elapsed() < load.duration && !stop.load(Ordering::Relaxed) {
                    if let Some(r) = load.rate {
                        let due = start + Duration::from_secs_f64(i as f64 / r as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let stamp = if load.rate.is_some() || i.is_multiple_of(SAMPLE_EVERY) {
                        mono_ns()
                    } else {
                        0
                    };
                    payload[..8].copy_from_slice(&stamp.to_le_bytes());
                    if publisher
                        .publish(SUBJECT, bytes::Bytes::copy_from_slice(&payload))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    i += 1;
                }
                let _ = publisher.flush().await;
                sent.store(i, Ordering::Relaxed);
                publishing.store(false, Ordering::Release);
                start.elapsed()
            })
        });
        rx_rt.block_on(async {
            let mut last = Instant::now();
            loop {
                let done = !publishing.load(Ordering::Acquire);
                if done && delivered.load(Ordering::Relaxed) >= sent.load(Ordering::Relaxed) {
                    break;
                }
                // Once the publisher is done, give stragglers a second, then stop.
                if done && last.elapsed() > Duration::from_secs(1) {
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                    Ok(Some(msg)) => {
                        last = Instant::now();
                        delivered.fetch_add(1, Ordering::Relaxed);
                        if let Some(stamp) = msg.payload.first_chunk::<8>()
                            && let stamp = u64::from_le_bytes(*stamp)
                            && stamp != 0
                        {
                            let us = mono_ns().saturating_sub(stamp) / 1000;
                            let _ = latency.record(us.max(1));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        });
        producer.join().unwrap_or(start.elapsed())
    });
    drop(client);
    Ok(RawReport {
        sent: sent.load(Ordering::Relaxed),
        delivered: delivered.load(Ordering::Relaxed),
        elapsed,
        slow_consumer: SLOW.load(Ordering::Relaxed),
        latency,
    })
}

/// `herald bench --transport nats-raw --json` (docs/bench.md).
#[derive(Debug, serde::Serialize)]
struct RawJson {
    transport: &'static str,
    payload: usize,
    seconds: f64,
    events_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    sent: u64,
    delivered: u64,
    lost: u64,
    slow_consumer: u64,
}

/// Prints a raw run like the herald bench prints its own.
pub(crate) fn print(r: &RawReport, payload: usize, json: bool) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let eps = r.delivered as f64 / secs;
    let (p50, p99, p999) = (
        r.latency.value_at_quantile(0.5),
        r.latency.value_at_quantile(0.99),
        r.latency.value_at_quantile(0.999),
    );
    let lost = r.sent.saturating_sub(r.delivered);
    if json {
        crate::json::print(&RawJson {
            transport: "nats-raw",
            payload,
            seconds: (secs * 1000.0).round() / 1000.0,
            events_per_sec: eps.round(),
            p50_us: p50,
            p99_us: p99,
            p999_us: p999,
            sent: r.sent,
            delivered: r.delivered,
            lost,
            slow_consumer: r.slow_consumer,
        });
    } else {
        say!(
            "raw NATS (async-nats, 1 message per event) on loopback, {payload}-byte payloads, {secs:.1} s"
        );
        say!("  events/s     {eps:>12.0}");
        say!("  latency p50  {p50:>9} µs");
        say!("  latency p99  {p99:>9} µs");
        say!("  latency p999 {p999:>9} µs");
        say!("  sent         {:>12}", r.sent);
        say!("  delivered    {:>12}", r.delivered);
        say!("  lost         {lost:>12}   (at-most-once: nothing reports it)");
        say!(
            "  slow consumer{:>12}   (events: the receiving client dropped messages)",
            r.slow_consumer
        );
    }
}

/// Publishes `frames` to `subject` with a client of its own, as a stranger on the bus would.
pub(crate) fn publish_raw(url: &str, subject: &str, frames: &[&[u8]]) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let client = connect(url, None).await?;
        for frame in frames {
            client
                .publish(subject.to_owned(), bytes::Bytes::copy_from_slice(frame))
                .await
                .map_err(|e| CliError::usage(format!("publish to {subject}: {e}")))?;
        }
        client
            .flush()
            .await
            .map_err(|e| CliError::usage(format!("flush: {e}")))
    })
}
