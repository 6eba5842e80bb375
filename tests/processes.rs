//! herald nodes as separate processes (the built `herald` binary): events both ways between
//! two processes, a sender killed with SIGKILL and restarted, a TCP peer frozen with SIGSTOP.
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A directory with a shared secret and one config per node.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new(HERALD)
            .arg("keygen")
            .arg(dir.path().join("herald.secret"))
            .stdout(Stdio::null())
            .status()
            .expect("keygen runs");
        assert!(status.success());
        Self { dir }
    }

    fn config(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("cluster = \"proc\"\n{body}")).expect("write config");
        path
    }
}

/// A `herald tail --json` process and the lines it prints, read on a thread.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: tempfile::NamedTempFile,
}

impl Tail {
    fn start(config: &Path) -> Self {
        let stderr = tempfile::NamedTempFile::new().expect("temp file");
        let mut child = Command::new(HERALD)
            .args(["tail", "--json", "--event", "test.counter", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen"))
            .spawn()
            .expect("tail starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    /// What the tail wrote on stderr (for failure messages).
    fn log(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Lines until `done` (shown each new line) says stop, or nothing arrives for `quiet`.
    fn collect(&self, quiet: Duration, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            let stop = done(&line);
            got.push(line);
            if stop {
                break;
            }
        }
        got
    }
}

/// Waits until a node process has bound UDP `addr` (binding it here then fails), so a test
/// does not race a slow start on a loaded machine; panics after 20 s.
fn wait_udp_bound(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::UdpSocket::bind(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "nothing bound {addr} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a node process accepts TCP connections on `addr`; panics after 20 s.
fn wait_tcp_listening(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The counter a `raise --count` put at the end of the payload.
fn counter(line: &str) -> u64 {
    let hex = field(line, "payload_hex").expect("binary payload");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().unwrap())
}

fn raise(config: &Path, count: u64, extra: &[&str]) -> Child {
    Command::new(HERALD)
        .args(["raise", "--event", "test.counter", "--payload", "n"])
        .arg("--count")
        .arg(count.to_string())
        .args(extra)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("raise starts")
}

fn events(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| field(l, "type") == Some("event"))
        .collect()
}

#[test]
fn two_processes_exchange_events_both_ways() {
    const N: u64 = 100_000;
    let c = Cluster::new();
    let [a, b] = util::free_udp_addrs(2)[..] else {
        unreachable!()
    };
    let ca = c.config(
        "a",
        &format!(
            "node_id = 1\n[udp]\nbind = \"{a}\"\npeers = [\"{b}\"]\n[ring]\ncapacity = 8388608\n"
        ),
    );
    let cb = c.config(
        "b",
        &format!(
            "node_id = 2\n[udp]\nbind = \"{b}\"\npeers = [\"{a}\"]\n[ring]\ncapacity = 8388608\n"
        ),
    );
    let tail_a = Tail::start(&ca);
    let tail_b = Tail::start(&cb);
    wait_udp_bound(a);
    wait_udp_bound(b);
    std::thread::sleep(Duration::from_millis(200));
    // Each raiser sends to the other side's node.
    // Paced, so a loaded machine does not turn this into a test of socket buffers.
    let mut ra = raise(&ca, N, &["--rate", "200000"]);
    let mut rb = raise(&cb, N, &["--rate", "200000"]);
    assert!(ra.wait().unwrap().success() && rb.wait().unwrap().success());
    for (name, tail) in [("a", &tail_a), ("b", &tail_b)] {
        let mut seen = 0;
        let lines = tail.collect(Duration::from_secs(5), |_| {
            seen += 1;
            seen >= N
        });
        let events = events(&lines);
        assert!(
            lines.iter().all(|l| field(l, "type") != Some("missed")),
            "{name}: no Missed on loopback"
        );
        let counters: Vec<u64> = events.iter().map(|l| counter(l)).collect();
        assert_eq!(counters.len() as u64, N, "{name}: every event once");
        assert!(
            counters.windows(2).all(|w| w[1] == w[0] + 1),
            "{name}: in order"
        );
    }
}

#[test]
fn a_sender_killed_and_restarted_is_reported_and_accepted() {
    let c = Cluster::new();
    let [a, b] = util::free_udp_addrs(2)[..] else {
        unreachable!()
    };
    let ca = c.config("a", &format!("[udp]\nbind = \"{a}\"\npeers = [\"{b}\"]\n"));
    let cb = c.config(
        "b",
        &format!("node_id = 2\n[udp]\nbind = \"{b}\"\npeers = [\"{a}\"]\n"),
    );
    let tail = Tail::start(&cb);
    wait_udp_bound(b);
    std::thread::sleep(Duration::from_millis(200));
    // Node 7 raises far more than it can send before we kill it.
    let mut first = raise(&ca, 50_000_000, &["--node-id", "7", "--rate", "100000"]);
    let mut seen = 0;
    let lines = tail.collect(Duration::from_secs(5), |_| {
        seen += 1;
        seen >= 1000
    });
    assert!(
        lines.len() >= 1000,
        "the first incarnation got through; tail's log:\n{}",
        tail.log()
    );
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let killed_at = Instant::now();
    // The same node comes back.
    let mut second = raise(&ca, 1000, &["--node-id", "7"]);
    assert!(second.wait().unwrap().success());
    // Until the second incarnation's last event (or 3 s of quiet).
    let mut restarted = false;
    let rest = tail.collect(Duration::from_secs(3), |l| {
        restarted |= field(l, "reason") == Some("sender_restarted");
        restarted && field(l, "type") == Some("event") && counter(l) == 999
    });
    eprintln!("restart noticed within {:?}", killed_at.elapsed());
    let all: Vec<String> = lines.into_iter().chain(rest).collect();
    let restarts: Vec<&String> = all
        .iter()
        .filter(|l| field(l, "reason") == Some("sender_restarted"))
        .collect();
    assert_eq!(restarts.len(), 1, "one SenderRestarted: {restarts:?}");
    assert_eq!(field(restarts[0], "node"), Some("7"));
    // Each incarnation's events in order, none twice; the second one complete.
    let mut by_incarnation: Vec<(String, Vec<u64>)> = Vec::new();
    for l in events(&all) {
        let inc = field(l, "incarnation").unwrap().to_owned();
        match by_incarnation.last_mut() {
            Some((i, v)) if *i == inc => v.push(counter(l)),
            _ => by_incarnation.push((inc, vec![counter(l)])),
        }
    }
    assert_eq!(
        by_incarnation.len(),
        2,
        "two incarnations, one after the other"
    );
    for (_, v) in &by_incarnation {
        assert!(
            v.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, none twice"
        );
    }
    assert_eq!(by_incarnation[1].1, (0..1000).collect::<Vec<_>>());
    // The restart notice comes between the incarnations.
    let restart_at = all
        .iter()
        .position(|l| field(l, "reason") == Some("sender_restarted"));
    let second_at = all
        .iter()
        .position(|l| field(l, "incarnation") == Some(by_incarnation[1].0.as_str()));
    assert!(restart_at < second_at);
}

#[test]
fn a_frozen_tcp_peer_is_reported_and_delays_no_one() {
    const N: u64 = 200_000;
    let c = Cluster::new();
    let [a, b] = util::free_tcp_addrs(2)[..] else {
        unreachable!()
    };
    // Frozen node A and live node B listen; each connects to the other; a raiser sends to both.
    let ca = c.config(
        "a",
        &format!("node_id = 1\n[tcp]\nlisten = \"{a}\"\npeers = [\"{b}\"]\n"),
    );
    let cb = c.config(
        "b",
        &format!("node_id = 2\n[tcp]\nlisten = \"{b}\"\npeers = [\"{a}\"]\n"),
    );
    let cr = c.config(
        "r",
        &format!("[tcp]\npeers = [\"{a}\", \"{b}\"]\n[ring]\ncapacity = 8388608\n"),
    );
    let mut frozen = Tail::start(&ca);
    let live = Tail::start(&cb);
    wait_tcp_listening(a);
    wait_tcp_listening(b);
    std::thread::sleep(Duration::from_millis(300));
    let pid = frozen.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped_at = Instant::now();
    let started = Instant::now();
    let mut r = raise(&cr, N, &["--rate", "200000"]);
    assert!(r.wait().unwrap().success());
    let raise_took = started.elapsed();
    let (mut n, mut silent) = (0u64, false);
    let lines = live.collect(Duration::from_secs(5), |l| {
        n += u64::from(field(l, "type") == Some("event"));
        silent |= field(l, "reason") == Some("peer_silent");
        n >= N && silent
    });
    let silent = lines
        .iter()
        .find(|l| field(l, "reason") == Some("peer_silent") && field(l, "node") == Some("1"));
    assert!(silent.is_some(), "B reports the frozen A as silent");
    eprintln!(
        "raise of {N} took {raise_took:?}; A reported silent within {:?} of SIGSTOP",
        stopped_at.elapsed()
    );
    let counters: Vec<u64> = events(&lines).iter().map(|l| counter(l)).collect();
    assert_eq!(
        counters,
        (0..N).collect::<Vec<_>>(),
        "B got everything, in order"
    );
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = frozen.child.kill();
}
