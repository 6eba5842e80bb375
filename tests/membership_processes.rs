//! Five `herald node` processes on loopback, each configured with only the first as its seed:
//! they find each other, carry an event from the last to all others, notice a SIGKILLed node,
//! take it back when it restarts, and see a SIGTERMed one leave with no Missed.
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const N: usize = 5;

struct Node {
    config: PathBuf,
    udp: SocketAddr,
    http: SocketAddr,
    service: SocketAddr,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::File::create(self.config.with_extension("log")).expect("log file");
        let child = Command::new(HERALD)
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("herald node starts");
        self.child = Some(child);
    }

    fn signal(&mut self, signal: &str) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args([signal, &pid]).status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// GET a path of the node's HTTP side: the body, if it answered 200.
    fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
    }

    /// The members this node lists: (node id, incarnation).
    fn members(&self) -> Vec<(u64, u64)> {
        let Some(body) = self.get("/members") else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["node"].as_u64().unwrap_or(0),
                            m["incarnation"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn ids(members: &[(u64, u64)]) -> Vec<u64> {
    members.iter().map(|m| m.0).collect()
}

/// A service client subscribed to `product.changed` and `herald:missed`.
fn subscribe(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("service connects");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s.write_all(b"SUBSCRIBE product.changed herald:missed\r\n")
        .unwrap();
    s
}

/// What arrived on a subscription within `wait`.
fn read_for(s: &mut TcpStream, wait: Duration) -> String {
    let mut got = Vec::new();
    let end = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn five_node_processes_find_each_other_from_one_seed() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(HERALD)
        .arg("keygen")
        .arg(dir.path().join("herald.secret"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let udp = util::free_udp_addrs(N);
    let tcp = util::free_tcp_addrs(2 * N);
    let mut nodes: Vec<Node> = (0..N)
        .map(|i| {
            let config = dir.path().join(format!("node{}.toml", i + 1));
            std::fs::write(
                &config,
                format!(
                    "cluster = \"members\"\nnode_id = {}\n[udp]\nbind = \"{}\"\n\
                     [metrics]\nlisten = \"{}\"\n[service]\nlisten = \"{}\"\n\
                     [membership]\nseeds = [\"{}\"]\n",
                    i + 1,
                    udp[i],
                    tcp[i],
                    tcp[N + i],
                    udp[0]
                ),
            )
            .unwrap();
            Node {
                config,
                udp: udp[i],
                http: tcp[i],
                service: tcp[N + i],
                child: None,
            }
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    for n in &nodes {
        wait_until(Duration::from_secs(20), || n.get("/healthz").is_some())
            .unwrap_or_else(|| panic!("{} did not start: {}", n.udp, n.log()));
    }
    let all: Vec<u64> = (1..=N as u64).collect();
    let joined = wait_until(Duration::from_secs(3), || {
        nodes.iter().all(|n| ids(&n.members()) == all)
    })
    .unwrap_or_else(|| {
        panic!(
            "not all 5 see 5 members within 3 s: {:?}",
            nodes[4].members()
        )
    });
    println!("5 processes see 5 members {joined:?} after all started");
    // `herald members` prints the same, as a table, from the node's config.
    let out = Command::new(HERALD)
        .args(["members", "--config"])
        .arg(&nodes[1].config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("5 members"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" alive ")).count(),
        5,
        "{table}"
    );
    assert!(table.contains("(this node)"), "{table}");

    // An event raised on the last reaches the subscribers of all the others.
    let mut subs: Vec<TcpStream> = nodes[..N - 1]
        .iter()
        .map(|n| subscribe(n.service))
        .collect();
    for s in &mut subs {
        assert!(read_for(s, Duration::from_millis(200)).contains("subscribe"));
    }
    let mut publisher = TcpStream::connect(nodes[N - 1].service).unwrap();
    publisher
        .write_all(b"PUBLISH product.changed hello-members\r\n")
        .unwrap();
    for (i, s) in subs.iter_mut().enumerate() {
        let got = read_for(s, Duration::from_secs(1));
        assert!(got.contains("hello-members"), "node {} got {got:?}", i + 1);
    }

    // SIGKILL node 3: every other node marks it failed within 3 s.
    let before = nodes[2].members().into_iter().find(|m| m.0 == 3).unwrap();
    nodes[2].signal("-KILL");
    let detected = wait_until(Duration::from_secs(3), || {
        [0, 1, 3, 4]
            .iter()
            .all(|&i| !ids(&nodes[i].members()).contains(&3))
    })
    .expect("the killed node is marked failed by all within 3 s");
    println!("SIGKILLed node marked failed by all others after {detected:?}");
    for i in [0, 1, 3, 4] {
        let metrics = nodes[i].get("/metrics").unwrap();
        assert!(
            metrics.contains("herald_member_failures_total 1"),
            "node {}",
            i + 1
        );
    }

    // Restarted, it rejoins with a new incarnation.
    nodes[2].start();
    wait_until(Duration::from_secs(5), || {
        nodes.iter().all(|n| ids(&n.members()) == all)
    })
    .expect("the restarted node rejoins");
    let after = nodes[0].members().into_iter().find(|m| m.0 == 3).unwrap();
    assert!(
        after.1 > before.1,
        "a new incarnation: {before:?} then {after:?}"
    );

    // SIGTERM node 4: a graceful leave, seen at once, and no Missed on any subscriber.
    for s in &mut subs {
        let _ = read_for(s, Duration::from_millis(50));
    }
    nodes[3].signal("-TERM");
    let left = wait_until(Duration::from_secs(1), || {
        [0, 1, 2, 4]
            .iter()
            .all(|&i| !ids(&nodes[i].members()).contains(&4))
    })
    .expect("the leave is seen at once");
    println!("SIGTERMed node seen leaving after {left:?}");
    for i in [0, 1, 4] {
        let metrics = nodes[i].get("/metrics").unwrap();
        assert!(
            metrics.contains("herald_member_leaves_total 1"),
            "node {}",
            i + 1
        );
        assert!(
            metrics.contains("herald_member_failures_total 1"),
            "node {}",
            i + 1
        );
    }
    for (i, s) in subs.iter_mut().enumerate().filter(|(i, _)| *i != 3) {
        let got = read_for(s, Duration::from_millis(1500));
        assert!(
            !got.contains("herald:missed\r\n$"),
            "node {} reported Missed: {got:?}",
            i + 1
        );
        assert!(!got.contains("message"), "node {}: {got:?}", i + 1);
    }
}

#[test]
fn tail_shows_membership_changes() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(HERALD)
        .arg("keygen")
        .arg(dir.path().join("herald.secret"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let udp = util::free_udp_addrs(2);
    let tcp = util::free_tcp_addrs(2);
    let write = |name: &str, id: u64, addr: SocketAddr| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "cluster = \"members\"\nnode_id = {id}\n[udp]\nbind = \"{addr}\"\n\
                 [membership]\nseeds = [\"{}\"]\n",
                udp[0]
            ),
        )
        .unwrap();
        path
    };
    let mut node = Node {
        config: write("node", 1, udp[0]),
        udp: udp[0],
        http: tcp[0],
        service: tcp[1],
        child: None,
    };
    node.start();
    let tail_config = write("tail", 2, udp[1]);
    let mut tail = Command::new(HERALD)
        .args(["tail", "--json", "--config"])
        .arg(&tail_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // Reads the tail's output until `done` holds or `limit` passes.
    let mut text = String::new();
    let mut read_until = |done: &dyn Fn(&str) -> bool, limit: Duration| {
        let end = Instant::now() + limit;
        while !done(&text) && Instant::now() < end {
            if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(50)) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        done(&text)
    };
    // Joined after the tail started, or already there when it subscribed.
    let joined = |t: &str| {
        t.contains("\"change\":\"joined\",\"node\":\"1\"")
            || t.contains("\"change\":\"present\",\"node\":\"1\"")
    };
    assert!(
        read_until(&joined, Duration::from_secs(10)),
        "the tail prints the node joining: {}",
        node.log()
    );
    node.signal("-TERM");
    let left = |t: &str| t.contains("\"change\":\"left\",\"node\":\"1\"");
    assert!(read_until(&left, Duration::from_secs(3)));
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn check_names_a_bad_membership_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        (
            "[udp]\nbind = \"127.0.0.1:1\"\n[membership]\nprobe_interval_ms = 1\n",
            "membership.probe_interval_ms",
        ),
        (
            "[udp]\nbind = \"127.0.0.1:1\"\n[membership]\nsuspicion_mult = 0\n",
            "membership.suspicion_mult",
        ),
        (
            "[tcp]\nlisten = \"127.0.0.1:1\"\n[membership]\nseeds = []\n",
            "membership: needs UDP",
        ),
        (
            "[udp]\nbind = \"127.0.0.1:1\"\n[membership]\nseed = []\n",
            "membership.seed",
        ),
    ];
    for (body, want) in bad {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("cluster = \"c\"\n{body}")).unwrap();
        let out = Command::new(HERALD)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{body}");
        assert!(stderr.contains(want), "{body}: {stderr}");
    }
    let path = dir.path().join("good.toml");
    std::fs::write(
        &path,
        "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:1\"\n[membership]\nseeds = [\"127.0.0.1:2\"]\n",
    )
    .unwrap();
    let out = Command::new(HERALD)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("probe_interval_ms = 200"), "{stdout}");
    assert!(stdout.contains("sync_interval_s = 30"), "{stdout}");
}
