//! `herald bench`: a load generator between two nodes over loopback, both in this process or
//! the sender in a child process of the same binary.
//!
//! Latency is measured from the send time each payload carries (`CLOCK_MONOTONIC`, one clock
//! for the whole machine, so it also works across the two processes) to the receiving
//! subscriber. Ctrl-C stops the run; in two-process mode the child is stopped and its
//! temporary directory removed, and the command exits 0 without figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald::auth::{Key, Keyring, SecretFile};
use herald::{Router, RouterBuilder};

use crate::CliError;
use crate::children::{Children, Halt, free_port};
use crate::common;
use crate::json;
use crate::load::{self, Generated, Load, Recorder, Report};
use crate::nats_server::LocalNats;

#[path = "bench_fanout.rs"]
mod fanout;

/// Arguments of `herald bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Where the sending node runs: beside the receiver in this process, or in a child process.
    #[arg(long, value_enum, default_value = "in-process")]
    mode: Mode,
    /// Transport between the two nodes. `nats` starts a nats-server (unless --nats-url is
    /// given); `nats-raw` measures plain async-nats publishing of the same payloads, one
    /// message per event, for comparison (one producer).
    #[arg(long, value_enum, default_value = "udp")]
    transport: Transport,
    /// The NATS server for `--transport nats` or `nats-raw` (default: start `nats-server` on
    /// a free port of 127.0.0.1).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// The NATS client for `--transport nats` (the `nats.client` setting): herald's own on
    /// the driver's poll, or async-nats on a thread of its own.
    #[arg(long, value_enum, default_value = "auto")]
    nats_client: NatsClientArg,
    /// Payload bytes per event (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Producer threads raising on the sending node.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Events per second to aim for, over all producers (default: as fast as possible). At a
    /// set rate every event's latency is measured; flat out, one event's in 64.
    #[arg(long)]
    rate: Option<u64>,
    /// Largest frame in bytes (1472 for an Ethernet datagram; up to 65536).
    #[arg(long, default_value_t = 1472)]
    frame: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// The sender's raises send their frame themselves when its driver sleeps, instead of
    /// waking it (the `[latency] send_on_raise` setting).
    #[arg(long)]
    send_on_raise: bool,
    /// The receiver calls its subscriber on its driver thread, not the dispatcher thread
    /// (the `[latency] dispatch_on_driver` setting).
    #[arg(long)]
    dispatch_on_driver: bool,
    /// The driver polls for this many microseconds after the bus goes idle before it sleeps
    /// (the `[latency] busy_poll_us` setting; a core per node), on the nodes --busy-poll-on
    /// names.
    #[arg(long, default_value_t = 0, value_name = "US")]
    busy_poll_us: u64,
    /// Which nodes busy-poll: the receiver only (as if each node had a core to spare: on a
    /// 2-core machine, two spinning nodes and the producer compete for the cores), or both.
    #[arg(long, value_enum, default_value = "receiver")]
    busy_poll_on: BusyPollOn,
    /// Drop this percentage of the datagrams the receiving node gets, at random (UDP; a
    /// fault hook in its transport), to watch recovery at work.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT")]
    loss: f64,
    /// Frames the sender may run ahead of the receiver (the `[recovery] window_frames`
    /// setting; default the library's).
    #[arg(long, value_name = "FRAMES")]
    window_frames: Option<u64>,
    /// Turn recovery and flow control off on both nodes (`[recovery] enabled = false`):
    /// the behaviour before them, for comparison.
    #[arg(long)]
    no_recovery: bool,
    /// How both nodes protect data frames (the `security` setting): `sign` (HMAC-SHA256) or
    /// `encrypt` (sealed with AES-256-GCM). Run both to compare.
    #[arg(long, value_enum, default_value = "sign")]
    security: SecurityArg,
    #[command(flatten)]
    fanout: fanout::FanoutArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SecurityArg {
    Sign,
    Encrypt,
}

impl SecurityArg {
    fn mode(self) -> herald::auth::Security {
        match self {
            Self::Sign => herald::auth::Security::Sign,
            Self::Encrypt => herald::auth::Security::Encrypt,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BusyPollOn {
    Receiver,
    Both,
}

impl BenchArgs {
    /// The busy-poll window of the receiving node (`receiver`) or the sending one.
    fn busy_poll(&self, receiver: bool) -> Duration {
        if receiver || self.busy_poll_on == BusyPollOn::Both {
            Duration::from_micros(self.busy_poll_us)
        } else {
            Duration::ZERO
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    InProcess,
    TwoProcess,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Udp,
    Tcp,
    Nats,
    NatsRaw,
}

const RING: usize = 16 << 20;
/// Node ids.
const SENDER: u64 = 1;
const RECEIVER: u64 = 2;

fn base(args: &BenchArgs, id: u64, keyring: Keyring) -> RouterBuilder {
    Router::builder()
        .cluster("herald-bench")
        .node_id(id)
        .keyring(keyring)
        .security(args.security.mode())
        .max_frame_len(args.frame)
        .ring_capacity(RING)
        .dispatch_queue(1 << 16)
        .send_on_raise(args.send_on_raise)
        .dispatch_on_driver(args.dispatch_on_driver)
        .busy_poll(args.busy_poll(id == RECEIVER))
        .recovery(herald::RecoveryConfig {
            enabled: !args.no_recovery,
            window_frames: args
                .window_frames
                .unwrap_or(herald::RecoveryConfig::default().window_frames),
            ..herald::RecoveryConfig::default()
        })
}

/// `--nats-client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NatsClientArg {
    Auto,
    Driver,
    AsyncNats,
}

/// Adds the NATS transport on `url` (`None`: not a NATS run).
fn with_nats(b: RouterBuilder, url: Option<&str>, client: NatsClientArg) -> RouterBuilder {
    match url {
        #[cfg(feature = "nats")]
        Some(url) => {
            use herald::transport::nats::NatsClient;
            let mut config = herald::transport::NatsConfig::new([url]);
            config.client = match client {
                NatsClientArg::Auto => NatsClient::Auto,
                NatsClientArg::Driver => NatsClient::Driver,
                NatsClientArg::AsyncNats => NatsClient::AsyncNats,
            };
            b.nats(config)
        }
        _ => {
            let _ = client;
            b
        }
    }
}

/// What the receiving node's NATS client saw in a NATS run: drops of a slow consumer (the
/// client's or the server's) and lost connections, each of which herald must cover.
#[derive(Debug, serde::Serialize)]
struct NatsSeen {
    slow_consumer: u64,
    inbound_dropped: u64,
    disconnects: u64,
}

/// Reads the receiving node's [`NatsSeen`] when the run ends (`None`: not a NATS run).
type NatsProbe = Option<Box<dyn Fn() -> NatsSeen>>;

#[cfg(feature = "nats")]
fn nats_probe(b: &RouterBuilder) -> NatsProbe {
    let stats = b.nats_stats()?;
    Some(Box::new(move || NatsSeen {
        slow_consumer: stats.slow_consumer(),
        inbound_dropped: stats.inbound_dropped(),
        disconnects: stats.disconnects(),
    }))
}

#[cfg(not(feature = "nats"))]
fn nats_probe(_: &RouterBuilder) -> NatsProbe {
    None
}

/// The receiving node, listening on `at` (or on NATS at `nats`), and its NATS probe.
fn receiver(
    args: &BenchArgs,
    keyring: Keyring,
    at: SocketAddr,
    nats: Option<&str>,
) -> Result<(Router, NatsProbe), CliError> {
    let b = base(args, RECEIVER, keyring);
    let b = match args.transport {
        Transport::Tcp => b.tcp_listen(at),
        Transport::Udp => b.udp_bind(at),
        Transport::Nats | Transport::NatsRaw => with_nats(b, nats, args.nats_client),
    };
    let b = if args.loss > 0.0 {
        b.udp_fault_injection(herald::transport::FaultInjection {
            seed: 1,
            loss: args.loss / 100.0,
            ..Default::default()
        })
    } else {
        b
    };
    let probe = nats_probe(&b);
    let r = b
        .build()
        .map_err(|e| CliError::usage(format!("--frame / receiver: {e}")))?;
    if args.payload > r.max_payload() {
        return Err(CliError::usage(format!(
            "--payload {} does not fit a {}-byte frame (at most {}); raise --frame",
            args.payload,
            args.frame,
            r.max_payload()
        )));
    }
    Ok((r, probe))
}

fn check(args: &BenchArgs) -> Result<Load, CliError> {
    if args.payload < 8 {
        return Err(CliError::usage(
            "--payload: at least 8 bytes (the send time travels in it)",
        ));
    }
    if args.producers == 0 || !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(CliError::usage(
            "--producers must be more than 0 and --seconds between 0 and 3600",
        ));
    }
    Ok(Load {
        payload: args.payload,
        producers: args.producers,
        duration: Duration::from_secs_f64(args.seconds),
        rate: args.rate.filter(|&r| r > 0),
    })
}

fn progress_bar(args: &BenchArgs) -> Option<indicatif::ProgressBar> {
    (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new((args.seconds * 10.0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}

pub(crate) fn run(args: &BenchArgs) -> Result<(), CliError> {
    let load = check(args)?;
    let stop = common::stop_flag()?;
    if let Some(n) = args.fanout.receivers {
        return fanout::run(args, n, &load, &stop);
    }
    let nats = match args.transport {
        Transport::Nats | Transport::NatsRaw if cfg!(not(feature = "nats")) => {
            return Err(CliError::usage(
                "--transport: this herald was built without the `nats` feature",
            ));
        }
        Transport::Nats | Transport::NatsRaw => {
            Some(LocalNats::use_or_start(args.nats_url.as_deref())?)
        }
        _ => None,
    };
    let url = nats.as_ref().map(|n| n.url.as_str());
    #[cfg(feature = "nats")]
    if let (Transport::NatsRaw, Some(url)) = (args.transport, url) {
        let report = crate::bench_nats::raw(url, &load, &stop)?;
        crate::bench_nats::print(&report, args.payload, args.json);
        return Ok(());
    }
    let outcome = match args.mode {
        Mode::InProcess => in_process(args, &load, &stop, url),
        Mode::TwoProcess => two_process(args, &load, &stop, url),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(Halt::Interrupted) => {
            eprintln!("herald: bench interrupted; everything it started has stopped");
            Ok(())
        }
        Err(Halt::Failed(e)) => Err(e),
    }
}

fn in_process(
    args: &BenchArgs,
    load: &Load,
    stop: &AtomicBool,
    nats: Option<&str>,
) -> Result<(), Halt> {
    let key = Key::generate().map_err(|e| CliError::usage(format!("no randomness: {e}")))?;
    let keyring = Keyring::new(1, key).map_err(CliError::usage)?;
    let tcp = args.transport == Transport::Tcp;
    let (a, b) = (free_port(tcp)?, free_port(tcp)?);
    let (receiver, probe) = receiver(args, keyring.clone(), b, nats)?;
    let sender = base(args, SENDER, keyring);
    let sender = match args.transport {
        Transport::Tcp => sender.tcp_peer(b),
        Transport::Udp => sender.udp_bind(a).udp_peer(b),
        Transport::Nats | Transport::NatsRaw => with_nats(sender, nats, args.nats_client),
    };
    let sender = sender
        .build()
        .map_err(|e| CliError::usage(format!("--frame / sender: {e}")))?;
    let recorder = Recorder::new();
    let _subs = recorder.attach(&receiver);
    std::thread::sleep(Duration::from_millis(200)); // TCP connects; heartbeats meet
    let bar = progress_bar(args);
    let done = load::generate(&sender, load, stop, |sent| {
        if let Some(bar) = &bar {
            bar.inc(1);
            bar.set_message(format!("{sent} sent, {} delivered", recorder.delivered()));
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if stop.load(Ordering::Relaxed) {
        return Err(Halt::Interrupted);
    }
    recorder.settle(done.sent);
    let nats = probe.map(|p| p());
    print(args, done, &recorder, &receiver, Some(&sender), nats);
    sender.shutdown();
    receiver.shutdown();
    Ok(())
}

fn two_process(
    args: &BenchArgs,
    load: &Load,
    stop: &Arc<AtomicBool>,
    nats: Option<&str>,
) -> Result<(), Halt> {
    let mut children = Children::new("herald-bench-", Arc::clone(stop))?;
    let secret = SecretFile::load(&children.secret()).map_err(CliError::from)?;
    let tcp = args.transport == Transport::Tcp;
    let (a, b) = (free_port(tcp)?, free_port(tcp)?);
    let (receiver, probe) = receiver(args, secret.keyring(), b, nats)?;
    let recorder = Recorder::new();
    let _subs = recorder.attach(&receiver);
    let transport = if let Some(url) = nats {
        format!("[nats]\nservers = [\"{url}\"]\n")
    } else if tcp {
        format!("[tcp]\npeers = [\"{b}\"]\n")
    } else {
        format!("[udp]\nbind = \"{a}\"\npeers = [\"{b}\"]\n")
    };
    let sender = children.spawn(&format!(
        "cluster = \"herald-bench\"\nnode_id = {SENDER}\nsecurity = \"{}\"\nmax_frame_len = {}\n[ring]\ncapacity = {RING}\n\
         [latency]\nsend_on_raise = {}\nbusy_poll_us = {}\n{transport}",
        args.security.mode(),
        args.frame,
        args.send_on_raise,
        args.busy_poll(false).as_micros()
    ))?;
    std::thread::sleep(Duration::from_millis(200)); // TCP connects; heartbeats meet
    children.send(sender, &load.to_line())?;
    let bar = progress_bar(args);
    let limit = load.duration + Duration::from_secs(10);
    let start = std::time::Instant::now();
    let loaded = loop {
        let line = match children.next(Duration::from_millis(200)) {
            Ok(line) => line,
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Err(e);
            }
        };
        match line {
            Some((_, l)) if l.starts_with("progress ") => {
                if let Some(bar) = &bar {
                    bar.inc(1);
                    bar.set_message(format!(
                        "{} sent, {} delivered",
                        &l[9..],
                        recorder.delivered()
                    ));
                }
            }
            Some((_, l)) if l.starts_with("loaded ") => break l,
            _ if start.elapsed() > limit => {
                return Err(CliError::usage("the sending child did not finish in time").into());
            }
            _ => {}
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut numbers = loaded
        .split(' ')
        .skip(1)
        .map(|w| w.parse::<u64>().unwrap_or(0));
    let done = Generated {
        sent: numbers.next().unwrap_or(0),
        elapsed: Duration::from_micros(numbers.next().unwrap_or(0)),
        refused: numbers.next().unwrap_or(0),
    };
    recorder.settle(done.sent);
    let nats = probe.map(|p| p());
    print(args, done, &recorder, &receiver, None, nats);
    drop(children);
    receiver.shutdown();
    Ok(())
}

/// `herald bench --json`: one object, documented in docs/bench.md. The receiver's figures
/// are [`Report`]'s fields, flattened in: a field added there appears here too.
#[derive(Debug, serde::Serialize)]
struct BenchJson {
    /// `in-process` or `two-process`.
    mode: &'static str,
    /// `udp` or `tcp`.
    transport: &'static str,
    /// `sign` or `encrypt`.
    security: &'static str,
    /// Bytes per event.
    payload: usize,
    /// Threads raising.
    producers: usize,
    /// Largest frame, bytes.
    frame: usize,
    send_on_raise: bool,
    dispatch_on_driver: bool,
    busy_poll_us_receiver: u64,
    busy_poll_us_sender: u64,
    /// How long the load ran, seconds (to the millisecond).
    seconds: f64,
    /// Events delivered per second (whole events).
    events_per_sec: f64,
    /// Payload megabytes (10^6) delivered per second (to 0.01).
    mb_per_sec: f64,
    /// Raise attempts: events taken into the sender's ring, and raises its full ring refused
    /// (the bench raises those again until they are taken).
    raised: u64,
    /// Raises the full ring refused. `delivered == raised - refused` when nothing is lost.
    refused: u64,
    /// Events the sender raised into its ring.
    sent: u64,
    /// Frames the sender sent again because the receiver asked (`null` when the sender runs
    /// in another process).
    resent: Option<u64>,
    /// Requests for lost frames the receiver sent.
    naks: u64,
    /// Times the sender's flow-control window closed (it waited for the receiver), `null`
    /// when the sender runs in another process.
    window_stalls: Option<u64>,
    /// The share of datagrams the receiver dropped on purpose (`--loss`), percent.
    loss_percent: f64,
    /// The receiving node's NATS client (a NATS run only).
    #[serde(skip_serializing_if = "Option::is_none")]
    nats: Option<NatsSeen>,
    #[serde(flatten)]
    receiver: Report,
}

/// `x` rounded to `decimals` places, so the JSON shows the precision the figure has.
fn rounded(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

fn print(
    args: &BenchArgs,
    done: Generated,
    recorder: &Recorder,
    receiver: &Router,
    sender: Option<&Router>,
    nats: Option<NatsSeen>,
) {
    let r = recorder.report(receiver);
    let (refused, raised) = (done.refused, done.sent + done.refused);
    let naks = receiver.metrics().recovery("naks_sent");
    // The sender's own counters are at hand only when it runs in this process.
    let resent = sender.map(|s| s.metrics().recovery("frames_resent"));
    let window_stalls = sender.map(|s| s.metrics().recovery("window_stalls"));
    let secs = done.elapsed.as_secs_f64().max(1e-9);
    let eps = r.delivered as f64 / secs;
    let mbps = eps * args.payload as f64 / 1e6;
    let (sent, delivered, missed, dropped) = (done.sent, r.delivered, r.missed, r.dropped);
    let (p50, p99, p999) = (r.p50_us, r.p99_us, r.p999_us);
    let mode = match args.mode {
        Mode::InProcess => "in-process",
        Mode::TwoProcess => "two-process",
    };
    let (inline_send, inline_dispatch) = (args.send_on_raise, args.dispatch_on_driver);
    let (busy_rx, busy_tx) = (
        args.busy_poll(true).as_micros(),
        args.busy_poll(false).as_micros(),
    );
    if args.json {
        json::print(&BenchJson {
            mode,
            transport: match args.transport {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp",
                Transport::Nats => "nats",
                Transport::NatsRaw => "nats-raw",
            },
            security: args.security.mode().name(),
            payload: args.payload,
            producers: args.producers,
            frame: args.frame,
            send_on_raise: inline_send,
            dispatch_on_driver: inline_dispatch,
            busy_poll_us_receiver: u64::try_from(busy_rx).unwrap_or(u64::MAX),
            busy_poll_us_sender: u64::try_from(busy_tx).unwrap_or(u64::MAX),
            seconds: rounded(secs, 3),
            events_per_sec: rounded(eps, 0),
            mb_per_sec: rounded(mbps, 2),
            raised,
            refused,
            sent,
            resent,
            naks,
            window_stalls,
            loss_percent: args.loss,
            nats,
            receiver: r,
        });
    } else {
        say!(
            "herald bench: {:?} on loopback, {mode}, {}, {}-byte payloads, {} producer(s), {}-byte frames, {secs:.1} s",
            args.transport,
            args.security.mode(),
            args.payload,
            args.producers,
            args.frame
        );
        if inline_send || inline_dispatch || busy_rx > 0 {
            say!(
                "  latency settings: send_on_raise {inline_send}, dispatch_on_driver \
                 {inline_dispatch}, busy_poll_us {busy_rx} (receiver) / {busy_tx} (sender)"
            );
        }
        say!("  events/s     {eps:>12.0}");
        say!("  MB/s         {mbps:>12.2}");
        say!("  latency p50  {p50:>9} µs");
        say!("  latency p99  {p99:>9} µs");
        say!("  latency p999 {p999:>9} µs");
        say!("  raised       {raised:>12}   ({refused} refused by a full ring and raised again)");
        say!("  sent         {sent:>12}");
        say!("  delivered    {delivered:>12}");
        say!(
            "  missed       {missed:>12}   (notices of events lost, covering {} frames; {} more of raises refused)",
            r.missed_frames,
            r.missed_overflow
        );
        say!("  dropped      {dropped:>12}   (frames refused or not dispatched)");
        let resent = resent.map_or_else(|| "(sender elsewhere)".to_owned(), |n| n.to_string());
        say!("  recovery     {naks:>12}   requests for lost frames, {resent} frames sent again");
        if let Some(n) = nats {
            say!(
                "  nats         {:>12}   slow-consumer events ({} frames dropped for the receiver), {} disconnections",
                n.slow_consumer,
                n.inbound_dropped,
                n.disconnects
            );
        }
    }
}
