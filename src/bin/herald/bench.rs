//! `herald bench`: a load generator between two nodes in this process, over loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald::auth::{Key, Keyring};
use herald::{EventId, RaiseError, Router};
use parking_lot::Mutex;

use crate::CliError;

/// Arguments of `herald bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Transport between the two nodes.
    #[arg(long, value_enum, default_value = "udp")]
    transport: Transport,
    /// Payload bytes per event (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Producer threads raising on the sending node.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Events per second to aim for, over all producers (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Largest frame in bytes (1472 for an Ethernet datagram; up to 65536).
    #[arg(long, default_value_t = 1472)]
    frame: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Transport {
    Udp,
    Tcp,
}

fn pair(args: &BenchArgs) -> Result<(Router, Router), CliError> {
    let key = Key::generate().map_err(|e| CliError::usage(format!("no randomness: {e}")))?;
    let keyring = Keyring::new(1, key).map_err(CliError::usage)?;
    let addr = |tcp: bool| -> Result<std::net::SocketAddr, CliError> {
        let a = if tcp {
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())
        } else {
            std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
        };
        a.map_err(|e| CliError::usage(format!("no free loopback port: {e}")))
    };
    let tcp = matches!(args.transport, Transport::Tcp);
    let (a, b) = (addr(tcp)?, addr(tcp)?);
    let base = |id: u64| {
        Router::builder()
            .cluster("herald-bench")
            .node_id(id)
            .keyring(keyring.clone())
            .max_frame_len(args.frame)
            .ring_capacity(16 << 20)
            .dispatch_queue(1 << 16)
    };
    let (sender, receiver) = if tcp {
        (base(1).tcp_peer(b), base(2).tcp_listen(b))
    } else {
        (base(1).udp_bind(a).udp_peer(b), base(2).udp_bind(b))
    };
    let receiver = receiver
        .build()
        .map_err(|e| CliError::usage(format!("--frame / receiver: {e}")))?;
    let sender = sender
        .build()
        .map_err(|e| CliError::usage(format!("--frame / sender: {e}")))?;
    Ok((sender, receiver))
}

pub(crate) fn run(args: &BenchArgs) -> Result<(), CliError> {
    if args.payload < 8 {
        return Err(CliError::usage(
            "--payload: at least 8 bytes (the send time travels in it)",
        ));
    }
    if args.producers == 0 || args.seconds <= 0.0 {
        return Err(CliError::usage(
            "--producers and --seconds must be more than 0",
        ));
    }
    let (sender, receiver) = pair(args)?;
    if args.payload > sender.max_payload() {
        return Err(CliError::usage(format!(
            "--payload {} does not fit a {}-byte frame (at most {}); raise --frame",
            args.payload,
            args.frame,
            sender.max_payload()
        )));
    }
    let event = EventId::from_name("herald.bench");
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| CliError::usage(e.to_string()))?,
    ));
    let (d, l) = (Arc::clone(&delivered), Arc::clone(&latency));
    let _sub = receiver.event(event).subscribe(move |del| {
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&del.payload()[..8]);
        let now = base.elapsed().as_nanos() as u64;
        let us = now.saturating_sub(u64::from_le_bytes(sent)) / 1000;
        let _ = l.lock().record(us.max(1));
        d.fetch_add(1, Ordering::Relaxed);
    });
    let missed = Arc::new(AtomicU64::new(0));
    let m = Arc::clone(&missed);
    let _missed = receiver.on_missed(move |_| {
        m.fetch_add(1, Ordering::Relaxed);
    });
    std::thread::sleep(Duration::from_millis(200)); // TCP connects; heartbeats meet
    let duration = Duration::from_secs_f64(args.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let progress = (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new((args.seconds * 10.0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.producers {
            let (sender, sent) = (&sender, &sent);
            s.spawn(move || {
                let e = sender.event(event);
                let mut payload = vec![0u8; args.payload];
                let per_thread = args.rate.map(|r| r as f64 / args.producers as f64);
                let mut i = 0u64;
                while start.elapsed() < duration {
                    if let Some(r) = per_thread {
                        let due = start + Duration::from_secs_f64(i as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    payload[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
                    match e.raise(&payload) {
                        Ok(()) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                        Err(RaiseError::Full) => std::thread::yield_now(),
                        Err(_) => return,
                    }
                }
            });
        }
        if let Some(bar) = &progress {
            while start.elapsed() < duration {
                std::thread::sleep(Duration::from_millis(100));
                bar.inc(1);
                bar.set_message(format!(
                    "{} sent, {} delivered",
                    sent.load(Ordering::Relaxed),
                    delivered.load(Ordering::Relaxed)
                ));
            }
            bar.finish_and_clear();
        }
    });
    let elapsed = start.elapsed();
    // Let the tail arrive (or be reported).
    let settle = Instant::now();
    let mut last = delivered.load(Ordering::Relaxed);
    while settle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        let now = delivered.load(Ordering::Relaxed);
        if now == last && now >= sent.load(Ordering::Relaxed) {
            break;
        }
        if now == last && settle.elapsed() > Duration::from_millis(500) {
            break;
        }
        last = now;
    }
    let sent = sent.load(Ordering::Relaxed);
    let delivered = delivered.load(Ordering::Relaxed);
    let rm = receiver.metrics();
    let h = latency.lock();
    let secs = elapsed.as_secs_f64();
    let eps = delivered as f64 / secs;
    let mbps = eps * args.payload as f64 / 1e6;
    let dropped = rm.drops_total() + rm.dispatch_dropped;
    let missed = missed.load(Ordering::Relaxed);
    let (p50, p99, p999) = (
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
    );
    if args.json {
        say!(
            "{{\"transport\":\"{:?}\",\"payload\":{},\"producers\":{},\"frame\":{},\"seconds\":{secs:.3},\"events_per_sec\":{eps:.0},\"mb_per_sec\":{mbps:.2},\"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999},\"sent\":{sent},\"delivered\":{delivered},\"missed\":{missed},\"dropped\":{dropped}}}",
            args.transport,
            args.payload,
            args.producers,
            args.frame
        );
    } else {
        say!(
            "herald bench: {:?} on loopback, {}-byte payloads, {} producer(s), {}-byte frames, {secs:.1} s",
            args.transport,
            args.payload,
            args.producers,
            args.frame
        );
        say!("  events/s     {eps:>12.0}");
        say!("  MB/s         {mbps:>12.2}");
        say!("  latency p50  {p50:>9} µs");
        say!("  latency p99  {p99:>9} µs");
        say!("  latency p999 {p999:>9} µs");
        say!("  sent         {sent:>12}");
        say!("  delivered    {delivered:>12}");
        say!("  missed       {missed:>12}   (notices; each covers one or more frames)");
        say!("  dropped      {dropped:>12}   (frames refused or not dispatched)");
    }
    sender.shutdown();
    receiver.shutdown();
    Ok(())
}
