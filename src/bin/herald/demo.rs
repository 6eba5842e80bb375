//! `herald demo`: three herald nodes, each a process of its own, keep their caches of product
//! prices fresh; then a throughput run between them.
//!
//! The demo starts this same binary three times as `herald child` (see `child.rs`) on free UDP
//! ports of 127.0.0.1, with a fresh cluster secret (mode 0600) in a temporary directory, and
//! drives them over their standard input: price changes and the invalidations they cause,
//! then datagrams that must not be trusted (a flipped bit, a stranger's key, another cluster,
//! a truncated frame, an HTTP request) sent to node 3, which refuses each by reason. It stops
//! the nodes and removes the directory when it ends, fails, or is interrupted with Ctrl-C
//! (then it also exits 0: nothing is left to clean up by hand, and a demo stopped early is not
//! an error).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::EventId;
use herald::auth::{Key, Keyring, SecretFile};
use herald::wire::{
    ClusterId, DEFAULT_UDP_FRAME_LEN, Flags, FrameKind, FrameWriter, HEADER_LEN, HeaderFields,
    RECORD_HEADER_LEN,
};

use crate::CliError;
use crate::child::{PRICES, PRODUCT_CHANGED};
use crate::children::{Children, Halt, free_port};
use crate::common;
use crate::load::{Load, Report};
use crate::nats_server::LocalNats;

/// Arguments of `herald demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long the throughput run lasts, in seconds (0 skips it).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=60))]
    seconds: u64,
    /// Producer threads raising on node 1 in the throughput run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    producers: u16,
    /// Events per second node 1 aims for in the throughput run (default: as fast as its ring
    /// takes them, where latency includes the queue that builds up).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// What carries the frames between the nodes: UDP on loopback, or a NATS server (started
    /// as a child `nats-server` unless --nats-url is given).
    #[arg(long, value_enum, default_value = "udp")]
    transport: DemoTransport,
    /// The NATS server for `--transport nats` (default: start `nats-server` on a free port).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DemoTransport {
    Udp,
    Nats,
}

/// Where the untrusted frames of the demo go.
enum Target {
    Udp(SocketAddr),
    Nats(String),
}

const NODES: usize = 3;
const ANSWER: Duration = Duration::from_secs(5);

fn price(cents: &str) -> String {
    match cents.parse::<u32>() {
        Ok(c) => format!("${}.{:02}", c / 100, c % 100),
        Err(_) => "(not cached)".to_owned(),
    }
}

pub(crate) fn run(args: &DemoArgs) -> Result<(), CliError> {
    let stop = common::stop_flag()?;
    let nats = match args.transport {
        DemoTransport::Nats if cfg!(not(feature = "nats")) => {
            return Err(CliError::usage(
                "--transport nats: this herald was built without the `nats` feature",
            ));
        }
        DemoTransport::Nats => Some(LocalNats::use_or_start(args.nats_url.as_deref())?),
        DemoTransport::Udp => None,
    };
    let mut children = Children::new("herald-demo-", Arc::clone(&stop))?;
    let dir = children.dir().to_path_buf();
    let result = script(args, &mut children, nats.as_ref().map(|n| n.url.as_str()));
    drop(children); // stops the nodes, removes the directory
    match result {
        Ok(()) => {
            say!(
                "\nThe three nodes have stopped and {} is removed.",
                dir.display()
            );
            Ok(())
        }
        Err(Halt::Interrupted) => {
            say!(
                "\nInterrupted: the three nodes have stopped and {} is removed.",
                dir.display()
            );
            Ok(())
        }
        Err(Halt::Failed(e)) => Err(e),
    }
}

/// Waits (up to 10 s) until every child lists `n` members.
fn wait_for_members(children: &mut Children, n: usize) -> Result<(), Halt> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = format!("members {n}");
    for i in 0..n {
        loop {
            children.send(i, "members")?;
            let line = children.expect(i, "members", Duration::from_secs(2))?;
            if line == want {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(CliError::usage(format!(
                    "node {} sees {line} after 10 s, not {n}: membership did not converge",
                    i + 1
                ))
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn script(args: &DemoArgs, children: &mut Children, nats: Option<&str>) -> Result<(), Halt> {
    let addrs = (0..NODES)
        .map(|_| free_port(false))
        .collect::<Result<Vec<_>, _>>()?;
    say!("herald demo: three herald nodes, each a process of its own, on 127.0.0.1.");
    say!(
        "They share a fresh 256-bit secret, {} (mode 0600), removed at exit.",
        children.secret().display()
    );
    // On UDP, no peer lists: each node knows only the first as its seed, and membership
    // finds the rest.
    let seed = addrs[0];
    for (i, addr) in addrs.iter().enumerate() {
        let transport = match nats {
            Some(url) => format!("[nats]\nservers = [\"{url}\"]\n"),
            None => format!("[udp]\nbind = \"{addr}\"\n[membership]\nseeds = [\"{seed}\"]\n"),
        };
        let config = format!(
            "cluster = \"demo-shop\"\nnode_id = {}\n[ring]\ncapacity = {}\n{transport}",
            i + 1,
            8 << 20,
        );
        let n = children.spawn(&config)?;
        match nats {
            Some(url) => say!(
                "  node {} is pid {}, on NATS {url} (subject herald.demo-shop.frames)",
                n + 1,
                children.pid(n)
            ),
            None => say!("  node {} is pid {}, on UDP {addr}", n + 1, children.pid(n)),
        }
    }
    if nats.is_some() {
        // Each node learns of the others by their first frames.
        std::thread::sleep(Duration::from_millis(300));
    }
    if nats.is_none() {
        wait_for_members(children, addrs.len())?;
        say!("They found each other from one seed ({seed}): every node lists all three members.");
    }
    let all: Vec<String> = PRICES
        .iter()
        .map(|(sku, c)| format!("{sku} {}", price(&c.to_string())))
        .collect();
    say!("Each node caches product prices: {}\n", all.join(", "));

    for (from, sku, cents) in [(0, "sku-42", 450), (1, "sku-1", 899), (2, "sku-2", 2099)] {
        children.send(from, &format!("set {sku} {cents}"))?;
        let set = children.expect(from, &format!("set {sku} "), ANSWER)?;
        let old = set.split(' ').nth(2).unwrap_or("-");
        say!(
            "node {} changes the price of {sku}: {} -> {}, and raises product.changed \"{sku}\"",
            from + 1,
            price(old),
            price(&cents.to_string())
        );
        for to in (0..NODES).filter(|&j| j != from) {
            let line = children.expect(to, &format!("dropped {sku} "), ANSWER)?;
            let old = line.split(' ').nth(2).unwrap_or("-");
            say!(
                "  -> node {} drops {sku} ({}) from its cache",
                to + 1,
                price(old)
            );
        }
    }
    say!(
        "\nThe caches now (each node keeps only the prices it set itself or has not heard change):"
    );
    for i in 0..NODES {
        children.send(i, "cache")?;
        let line = children.expect(i, "cache", ANSWER)?;
        let items: Vec<String> = line
            .split(' ')
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| format!("{k} {}", price(v)))
            .collect();
        say!("  node {}: {}", i + 1, items.join(", "));
    }

    let target = match nats {
        Some(url) => Target::Nats(url.to_owned()),
        None => Target::Udp(addrs[2]),
    };
    refusals(children, &target)?;
    if args.seconds > 0 {
        throughput(args, children)?;
    }
    Ok(())
}

/// A data frame of one `product.changed` event, signed with `keyring`.
fn frame(keyring: &Keyring, cluster: &str, sku: &str) -> Result<Vec<u8>, CliError> {
    let unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let header = HeaderFields {
        kind: FrameKind::Data,
        flags: Flags::EMPTY,
        key_id: keyring.signing_key_id(),
        cluster: ClusterId::from_name(cluster),
        node: 1,
        incarnation: 7,
        sequence: 1,
        timestamp_ns: unix_ns,
    };
    let mut buf = vec![0u8; DEFAULT_UDP_FRAME_LEN];
    let mut writer = FrameWriter::new(&mut buf, &header).map_err(CliError::usage)?;
    writer
        .push(&EventId::from_name(PRODUCT_CHANGED), sku.as_bytes())
        .map_err(CliError::usage)?;
    Ok(writer.finish(keyring).to_vec())
}

/// Datagrams that must not be trusted, sent to node 3: it refuses each, counts it by reason,
/// and its cache does not change.
fn refusals(children: &mut Children, target: &Target) -> Result<(), Halt> {
    match target {
        Target::Udp(_) => {
            say!("\nDatagrams that must not be trusted, sent to node 3 from outside the cluster:")
        }
        Target::Nats(_) => say!(
            "\nFrames that must not be trusted, published straight to the cluster's subject by \
             a stranger on the bus (every node gets them; node 3 reports):"
        ),
    }
    let cluster = SecretFile::load(&children.secret())
        .map_err(CliError::from)?
        .keyring();
    let stranger = Keyring::new(
        9,
        Key::generate().map_err(|e| CliError::usage(format!("no randomness: {e}")))?,
    )
    .map_err(CliError::usage)?;
    let mut flipped = frame(&cluster, "demo-shop", "sku-1")?;
    if let Some(byte) = flipped.get_mut(HEADER_LEN + RECORD_HEADER_LEN) {
        *byte ^= 0x01; // one bit of the payload: "sku-1" becomes "rku-1"
    }
    let valid = frame(&cluster, "demo-shop", "sku-42")?;
    let mut garbage = b"GET /metrics HTTP/1.1\r\nHost: node-3\r\n\r\n".to_vec();
    garbage.resize(200, b' ');
    let cases: [(&str, Vec<u8>); 5] = [
        ("a price change with one bit flipped in transit", flipped),
        (
            "a price change signed with a key the cluster does not have",
            frame(&stranger, "demo-shop", "sku-1")?,
        ),
        (
            "a price change from another cluster, with the right key",
            frame(&cluster, "other-shop", "sku-1")?,
        ),
        (
            "a price change cut short",
            valid[..valid.len().saturating_sub(5)].to_vec(),
        ),
        ("an HTTP request", garbage),
    ];
    match target {
        Target::Udp(node3) => {
            let socket = UdpSocket::bind("127.0.0.1:0")
                .map_err(|e| CliError::usage(format!("no free port on 127.0.0.1: {e}")))?;
            for (_, bytes) in &cases {
                socket
                    .send_to(bytes, node3)
                    .map_err(|e| CliError::usage(format!("cannot send to node 3: {e}")))?;
            }
        }
        #[cfg(feature = "nats")]
        Target::Nats(url) => {
            let frames: Vec<&[u8]> = cases.iter().map(|(_, b)| b.as_slice()).collect();
            crate::bench_nats::publish_raw(url, "herald.demo-shop.frames", &frames)?;
        }
        #[cfg(not(feature = "nats"))]
        Target::Nats(url) => {
            // Unreachable: `run` refuses --transport nats without the feature.
            let _ = url;
        }
    }
    for (what, _) in &cases {
        say!("  {what}");
    }
    let mut line = String::new();
    for _ in 0..20 {
        children.send(2, "drops")?;
        line = children.expect(2, "drops", ANSWER)?;
        let total: u64 = line
            .split(' ')
            .filter_map(|kv| kv.split_once('=')?.1.parse::<u64>().ok())
            .sum();
        if total >= cases.len() as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reasons: Vec<String> = line
        .split(' ')
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    say!(
        "  -> node 3 refused them, counted by reason: {}",
        reasons.join(", ")
    );
    children.send(2, "cache")?;
    let cache = children.expect(2, "cache", ANSWER)?;
    let items: Vec<String> = cache
        .split(' ')
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("{k} {}", price(v)))
        .collect();
    say!("  -> node 3 still caches: {}", items.join(", "));
    Ok(())
}

/// Node 1 raises 64-byte events (paced, or as fast as its ring takes them); nodes 2 and 3
/// receive.
fn throughput(args: &DemoArgs, children: &mut Children) -> Result<(), Halt> {
    let load = Load {
        payload: 64,
        producers: usize::from(args.producers),
        duration: Duration::from_secs(args.seconds),
        rate: args.rate,
    };
    let pace = args.rate.map_or_else(
        || "as fast as its ring takes them".to_owned(),
        |r| format!("at {r} a second"),
    );
    say!(
        "\nThroughput: node 1 raises 64-byte events {pace}, from {} thread(s) for {} s; nodes 2 and 3 receive them.",
        args.producers,
        args.seconds
    );
    // Frames nodes 2 and 3 dropped before the run (node 3 refused the datagrams above) are
    // not the run's.
    let mut dropped_before = [0u64; 2];
    for (k, b) in dropped_before.iter_mut().enumerate() {
        children.send(k + 1, "stats")?;
        *b = Report::parse(&children.expect(k + 1, "stats ", ANSWER)?).map_or(0, |r| r.dropped);
    }
    children.send(0, &load.to_line())?;
    let bar = indicatif::ProgressBar::new(args.seconds * 10);
    bar.set_style(
        indicatif::ProgressStyle::with_template("  {bar:40} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let outcome = (|| {
        let limit = load.duration + Duration::from_secs(10);
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            match children.next(Duration::from_millis(200))? {
                Some((0, line)) if line.starts_with("progress ") => {
                    bar.inc(1);
                    bar.set_message(format!("{} events sent", &line[9..]));
                }
                Some((0, line)) if line.starts_with("loaded ") => return Ok(line),
                _ => {}
            }
        }
        Err(Halt::Failed(CliError::usage(
            "node 1 did not finish its load in time",
        )))
    })();
    bar.finish_and_clear();
    let loaded = outcome?;
    let mut numbers = loaded
        .split(' ')
        .skip(1)
        .map(|w| w.parse::<u64>().unwrap_or(0));
    let sent = numbers.next().unwrap_or(0);
    let secs = (numbers.next().unwrap_or(0) as f64 / 1e6).max(1e-6);

    // Let the tail arrive (or be reported Missed by the next heartbeat).
    let mut reports = [Report::default(); 2];
    for round in 0..15 {
        let before = reports;
        for (k, r) in reports.iter_mut().enumerate() {
            children.send(k + 1, "stats")?;
            let line = children.expect(k + 1, "stats ", ANSWER)?;
            *r = Report::parse(&line).unwrap_or_default();
            r.dropped = r.dropped.saturating_sub(dropped_before[k]);
        }
        if reports.iter().all(|r| r.delivered >= sent) || (round > 1 && reports == before) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    say!("  node 1 sent {sent} events in {secs:.1} s\n");
    say!(
        "  {:<8} {:>12} {:>8} {:>8} {:>12} {:>7} {:>8}",
        "",
        "events/s",
        "p50 µs",
        "p99 µs",
        "delivered",
        "drops",
        "Missed"
    );
    for (k, r) in reports.iter().enumerate() {
        say!(
            "  {:<8} {:>12.0} {:>8} {:>8} {:>12} {:>7} {:>8}",
            format!("node {}", k + 2),
            r.delivered as f64 / secs,
            r.p50_us,
            r.p99_us,
            r.delivered,
            r.dropped,
            r.missed
        );
    }
    say!();
    for (k, r) in reports.iter().enumerate() {
        let lost = sent.saturating_sub(r.delivered);
        if lost == 0 {
            say!("node {} got every event, once.", k + 2);
        } else if r.missed > 0 {
            say!(
                "node {} did not get {lost} events, and was told: {} Missed covering {} frames (a cache flushes what they cover).",
                k + 2,
                r.missed,
                r.missed_frames
            );
        } else {
            say!(
                "node {} did not get {lost} events and has no Missed for them yet.",
                k + 2
            );
        }
    }
    Ok(())
}
