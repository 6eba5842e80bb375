//! `herald bench --receivers N`: one sender and N receiving nodes, each its own router in
//! this process, over UDP unicast (the sender sends every frame to each receiver), UDP
//! multicast (once, to a group on 127.0.0.1) or TCP (one connection per receiver).
//!
//! In-process on purpose: every router has its own driver and dispatcher threads whether it
//! lives in this process or another, so child processes would add N process start-ups and a
//! pipe protocol without changing what competes for the cores; and in one process the
//! sender's own threads (those that appear when it is built, before any receiver) can be told
//! apart and their CPU time read exactly (Linux: `/proc/self/task/TID/schedstat`, nanoseconds
//! on a CPU), which is the figure that shows what one more receiver costs the sender.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald::auth::{Key, Keyring};
use herald::{EventId, Router, RouterBuilder};

use super::{BenchArgs, SENDER, Transport, base, progress_bar, rounded};
use crate::CliError;
use crate::children::{Halt, free_port};
use crate::json;
use crate::load::{self, Generated, Load, Recorder, Report};

/// The fan-out flags of `herald bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    /// Fan-out: one sender and this many receiving nodes (1 to 256), each its own router in
    /// this process; reports what each receiver got, in total, and the sender's CPU per event.
    #[arg(long, value_name = "N")]
    pub(crate) receivers: Option<usize>,
    /// With --receivers and --transport udp: send to a multicast group (239.255.77.1, a free
    /// port, looped back on 127.0.0.1) instead of to each receiver.
    #[arg(long)]
    multicast: bool,
}

/// Most receivers a run may have: past this the machine measures its scheduler.
const MAX_RECEIVERS: usize = 256;
/// The multicast group (administratively scoped: it never leaves a site, and TTL 1 and the
/// loopback interface keep it on this host).
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 1);
/// The event the sender raises until every receiver has heard it.
const PROBE: &str = "herald.bench.probe";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unicast,
    Multicast,
    Tcp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Unicast => "udp",
            Self::Multicast => "multicast",
            Self::Tcp => "tcp",
        }
    }
}

fn check(args: &BenchArgs, n: usize) -> Result<Kind, CliError> {
    if !(1..=MAX_RECEIVERS).contains(&n) {
        return Err(CliError::usage(format!(
            "--receivers: between 1 and {MAX_RECEIVERS}"
        )));
    }
    if args.mode != super::Mode::InProcess {
        return Err(CliError::usage(
            "--receivers runs every node in this process: leave out --mode two-process",
        ));
    }
    if args.busy_poll_us > 0 || args.loss > 0.0 {
        return Err(CliError::usage(
            "--receivers: leave out --busy-poll-us and --loss (they apply to one receiver)",
        ));
    }
    match (args.transport, args.fanout.multicast) {
        (Transport::Udp, false) => Ok(Kind::Unicast),
        (Transport::Udp, true) => Ok(Kind::Multicast),
        (Transport::Tcp, false) => Ok(Kind::Tcp),
        (Transport::Tcp, true) => Err(CliError::usage("--multicast: only with --transport udp")),
        _ => Err(CliError::usage(
            "--receivers: only with --transport udp or tcp",
        )),
    }
}

/// The ids of this process's threads (`None` where there is no `/proc`).
fn threads() -> Option<HashSet<u64>> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let tid = |t: std::fs::DirEntry| t.file_name().to_str()?.parse().ok();
    Some(tasks.flatten().filter_map(tid).collect())
}

/// CPU time of some threads: nanoseconds on a CPU (`schedstat`), and the clock ticks spent in
/// user space and in the kernel (`stat`), for the kernel's share.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    ns: u64,
    user_ticks: u64,
    kernel_ticks: u64,
}

impl Cpu {
    /// The time these threads have run so far (`None` without `/proc`, or if one ended).
    fn of(tids: &HashSet<u64>) -> Option<Self> {
        let mut total = Self::default();
        for tid in tids {
            let read = |file| std::fs::read_to_string(format!("/proc/self/task/{tid}/{file}"));
            let sched = read("schedstat").ok()?;
            total.ns += sched.split_whitespace().next()?.parse::<u64>().ok()?;
            // After the command name (in parentheses, possibly with spaces): state is field
            // 3, utime 14 and stime 15.
            let stat = read("stat").ok()?;
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
            total.user_ticks += fields.next()?.parse::<u64>().ok()?;
            total.kernel_ticks += fields.next()?.parse::<u64>().ok()?;
        }
        Some(total)
    }

    fn since(self, before: Self) -> Self {
        Self {
            ns: self.ns.saturating_sub(before.ns),
            user_ticks: self.user_ticks.saturating_sub(before.user_ticks),
            kernel_ticks: self.kernel_ticks.saturating_sub(before.kernel_ticks),
        }
    }

    /// The share of the time spent in the kernel, 0 to 1 (to 0.01).
    fn kernel_share(self) -> Option<f64> {
        let ticks = self.user_ticks + self.kernel_ticks;
        (ticks > 0).then(|| rounded(self.kernel_ticks as f64 / ticks as f64, 2))
    }
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago: all held at once while they
/// are chosen, so the system cannot hand out one twice (it did, at 64).
fn free_ports(tcp: bool, n: usize) -> Result<Vec<SocketAddr>, CliError> {
    let no_port = |e: std::io::Error| CliError::usage(format!("no free port on 127.0.0.1: {e}"));
    if tcp {
        let held = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(no_port)?;
        held.iter()
            .map(|l| l.local_addr().map_err(no_port))
            .collect()
    } else {
        let held = (0..n)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(no_port)?;
        held.iter()
            .map(|s| s.local_addr().map_err(no_port))
            .collect()
    }
}

fn build(b: RouterBuilder, what: &str) -> Result<Router, CliError> {
    b.build()
        .map_err(|e| CliError::usage(format!("--frame / {what}: {e}")))
}

/// The sender, the receivers, and the sender's driver and dispatcher threads (`None` without
/// `/proc`).
type Nodes = (Router, Vec<Router>, Option<HashSet<u64>>);

fn nodes(args: &BenchArgs, kind: Kind, n: usize) -> Result<Nodes, CliError> {
    let key = Key::generate().map_err(|e| CliError::usage(format!("no randomness: {e}")))?;
    let keyring = Keyring::new(1, key).map_err(CliError::usage)?;
    let tcp = kind == Kind::Tcp;
    let at = free_ports(tcp, n)?;
    let group = SocketAddrV4::new(GROUP, free_port(false)?.port());
    let before = threads();
    let sender = base(args, SENDER, keyring.clone());
    let sender = match kind {
        Kind::Unicast => at
            .iter()
            .fold(sender.udp_bind(free_port(false)?), |b, a| b.udp_peer(*a)),
        Kind::Multicast => sender.udp_multicast(group, Ipv4Addr::LOCALHOST),
        Kind::Tcp => at.iter().fold(sender, |b, a| b.tcp_peer(*a)),
    };
    let sender = build(sender, "sender")?;
    // The threads that appeared with the sender (its driver and dispatcher) are its own: no
    // other router runs yet. Not found by name: a thread names itself once it runs.
    let threads = before
        .zip(threads())
        .map(|(before, after)| &after - &before);
    let receivers = at
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let b = base(args, SENDER + 1 + i as u64, keyring.clone());
            let b = match kind {
                Kind::Unicast => b.udp_bind(*a),
                Kind::Multicast => b.udp_multicast(group, Ipv4Addr::LOCALHOST),
                Kind::Tcp => b.tcp_listen(*a),
            };
            build(b, "receiver")
        })
        .collect::<Result<Vec<_>, _>>()?;
    if args.payload > sender.max_payload() {
        return Err(CliError::usage(format!(
            "--payload {} does not fit a {}-byte frame (at most {}); raise --frame",
            args.payload,
            args.frame,
            sender.max_payload()
        )));
    }
    Ok((sender, receivers, threads))
}

/// Raises the probe event until every receiver has heard it: TCP connections are up and
/// multicast works on this host.
fn wait_reachable(kind: Kind, sender: &Router, receivers: &[Router]) -> Result<(), Halt> {
    let probe = EventId::from_name(PROBE);
    let heard: Vec<Arc<AtomicBool>> = receivers.iter().map(|_| Arc::default()).collect();
    let _subs: Vec<_> = receivers
        .iter()
        .zip(&heard)
        .map(|(r, h)| {
            let h = Arc::clone(h);
            r.event(probe)
                .subscribe(move |_| h.store(true, Ordering::Relaxed))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while heard.iter().any(|h| !h.load(Ordering::Relaxed)) {
        if Instant::now() > deadline {
            let deaf = heard.iter().filter(|h| !h.load(Ordering::Relaxed)).count();
            let hint = match kind {
                Kind::Multicast => {
                    "; multicast needs a route for 224.0.0.0/4 on lo, or run the bench in \
                     a namespace: unshare -n sh -c 'ip link set lo up && ip route add \
                     224.0.0.0/4 dev lo && herald bench ...'"
                }
                _ => "",
            };
            return Err(CliError::usage(format!(
                "{deaf} of {} receivers heard nothing from the sender in 10 s{hint}",
                receivers.len()
            ))
            .into());
        }
        // A full ring refuses the probe: the next one gets through.
        let _ = sender.event(probe).raise(&[0; 8]);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs the fan-out bench with `n` receivers. Ctrl-C stops it without figures.
pub(super) fn run(
    args: &BenchArgs,
    n: usize,
    load: &Load,
    stop: &AtomicBool,
) -> Result<(), CliError> {
    match fan_out(args, n, load, stop) {
        Ok(()) => Ok(()),
        Err(Halt::Interrupted) => {
            eprintln!("herald: bench interrupted; everything it started has stopped");
            Ok(())
        }
        Err(Halt::Failed(e)) => Err(e),
    }
}

fn fan_out(args: &BenchArgs, n: usize, load: &Load, stop: &AtomicBool) -> Result<(), Halt> {
    let kind = check(args, n)?;
    let (sender, receivers, threads) = nodes(args, kind, n)?;
    wait_reachable(kind, &sender, &receivers)?;
    let recorders: Vec<Arc<Recorder>> = receivers.iter().map(|_| Recorder::new()).collect();
    let _subs: Vec<_> = recorders
        .iter()
        .zip(&receivers)
        .map(|(rec, r)| rec.attach(r))
        .collect();
    let cpu_before = threads.as_ref().and_then(Cpu::of);
    let bar = progress_bar(args);
    let delivered = || recorders.iter().map(|r| r.delivered()).sum::<u64>();
    let done = load::generate(&sender, load, stop, |sent| {
        if let Some(bar) = &bar {
            bar.inc(1);
            bar.set_message(format!("{sent} sent, {} delivered in all", delivered()));
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if stop.load(Ordering::Relaxed) {
        return Err(Halt::Interrupted);
    }
    for r in &recorders {
        r.settle(done.sent);
    }
    // After the receivers settled, so that the frames the sender's driver was still sending
    // when the load stopped are counted too.
    let cpu = threads.as_ref().and_then(Cpu::of).zip(cpu_before);
    let cpu = cpu.map(|(after, before)| after.since(before));
    print(args, kind, done, cpu, &recorders, &receivers, &sender);
    sender.shutdown();
    for r in &receivers {
        r.shutdown();
    }
    Ok(())
}

/// `herald bench --receivers N --json`: one object, documented in docs/bench.md.
#[derive(Debug, serde::Serialize)]
struct FanoutJson {
    /// Always `in-process`.
    mode: &'static str,
    /// `udp` (unicast), `multicast` or `tcp`.
    transport: &'static str,
    security: &'static str,
    /// Receiving nodes.
    receivers: usize,
    payload: usize,
    producers: usize,
    frame: usize,
    /// Events per second asked for (`null`: flat out).
    rate: Option<u64>,
    seconds: f64,
    raised: u64,
    refused: u64,
    sent: u64,
    /// Frames the sender sent (each once, whatever the number of receivers).
    frames_sent: u64,
    /// Events delivered per second, summed over the receivers.
    events_per_sec_total: f64,
    /// The slowest receiver's and the mean receiver's events per second.
    events_per_sec_min: f64,
    events_per_sec_mean: f64,
    /// CPU time of the sender's driver and dispatcher threads per event sent, nanoseconds
    /// (`null` without `/proc`). The producer's raise (a ring write) is not in it: it costs
    /// the same whatever the number of receivers.
    sender_cpu_ns_per_event: Option<f64>,
    /// The share of that CPU time spent in the kernel (sending, and on loopback the
    /// receiving sockets' delivery the kernel does in the sender's system call), 0 to 1.
    sender_cpu_kernel_share: Option<f64>,
    /// Latency over every receiver's samples.
    p50_us: u64,
    p99_us: u64,
    /// Each receiver's figures.
    per_receiver: Vec<ReceiverJson>,
}

#[derive(Debug, serde::Serialize)]
struct ReceiverJson {
    #[serde(serialize_with = "json::u64_string")]
    node: u64,
    events_per_sec: f64,
    #[serde(flatten)]
    report: Report,
}

fn print(
    args: &BenchArgs,
    kind: Kind,
    done: Generated,
    cpu: Option<Cpu>,
    recorders: &[Arc<Recorder>],
    receivers: &[Router],
    sender: &Router,
) {
    let secs = done.elapsed.as_secs_f64().max(1e-9);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    let per_receiver: Vec<ReceiverJson> = recorders
        .iter()
        .zip(receivers)
        .map(|(rec, r)| {
            if let Some(all) = &mut all {
                rec.merge_latency_into(all);
            }
            let report = rec.report(r);
            ReceiverJson {
                node: r.node_id(),
                events_per_sec: rounded(report.delivered as f64 / secs, 0),
                report,
            }
        })
        .collect();
    let rates = per_receiver.iter().map(|r| r.events_per_sec);
    let total: f64 = rates.clone().sum();
    let quantile = |q| all.as_ref().map_or(0, |h| h.value_at_quantile(q));
    let out = FanoutJson {
        mode: "in-process",
        transport: kind.name(),
        security: args.security.mode().name(),
        receivers: receivers.len(),
        payload: args.payload,
        producers: args.producers,
        frame: args.frame,
        rate: args.rate.filter(|&r| r > 0),
        seconds: rounded(secs, 3),
        raised: done.sent + done.refused,
        refused: done.refused,
        sent: done.sent,
        frames_sent: sender.metrics().frames_sent,
        events_per_sec_total: rounded(total, 0),
        events_per_sec_min: rates.fold(f64::INFINITY, f64::min),
        events_per_sec_mean: rounded(total / receivers.len().max(1) as f64, 0),
        sender_cpu_ns_per_event: cpu.map(|c| rounded(c.ns as f64 / done.sent.max(1) as f64, 1)),
        sender_cpu_kernel_share: cpu.and_then(Cpu::kernel_share),
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        per_receiver,
    };
    if args.json {
        json::print(&out);
        return;
    }
    say!(
        "herald bench: fan-out over {} to {} receivers (each a router in this process), {}, \
         {}-byte payloads, {}-byte frames, {secs:.1} s",
        out.transport,
        out.receivers,
        out.security,
        out.payload,
        out.frame
    );
    say!(
        "  raised {} ({} refused by a full ring and raised again), {} frames sent",
        out.raised,
        out.refused,
        out.frames_sent
    );
    let cpu = out
        .sender_cpu_ns_per_event
        .map_or_else(|| "unknown (no /proc)".to_owned(), |ns| format!("{ns} ns"));
    let kernel = out.sender_cpu_kernel_share.map_or_else(String::new, |k| {
        format!(", {:.0}% in the kernel", k * 100.0)
    });
    say!("  sender CPU per event   {cpu} (its driver and dispatcher threads{kernel})");
    say!(
        "  delivered events/s     {:>12.0} in total",
        out.events_per_sec_total
    );
    say!(
        "                         {:>12.0} per receiver (mean), {:.0} the slowest",
        out.events_per_sec_mean,
        out.events_per_sec_min
    );
    say!(
        "  latency p50 / p99      {} / {} µs (all receivers)",
        out.p50_us,
        out.p99_us
    );
    say!("  node   delivered   missed   dropped     events/s   p50 µs   p99 µs");
    for r in &out.per_receiver {
        let rep = &r.report;
        say!(
            "  {:<4} {:>11} {:>8} {:>9} {:>12.0} {:>8} {:>8}",
            r.node,
            rep.delivered,
            rep.missed,
            rep.dropped,
            r.events_per_sec,
            rep.p50_us,
            rep.p99_us
        );
    }
}
