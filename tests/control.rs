//! The CLI beside a running node: `herald raise`, `tail` and `status` with the node's own
//! config reach that node through its control socket instead of starting a second node on
//! its ports; and a node with another secret is diagnosed by address and hint.
#![cfg(unix)]
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::node::{Dir, HERALD, Node, free_tcp, free_udp};

fn udp_config(
    dir: &Dir,
    name: &str,
    bind: SocketAddr,
    peers: &[SocketAddr],
    http: SocketAddr,
) -> std::path::PathBuf {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    dir.config(
        name,
        &format!(
            "secret_file = \"herald.secret\"\n[udp]\nbind = \"{bind}\"\npeers = [{}]\n\
             [metrics]\nlisten = \"{http}\"\n",
            peers.join(", ")
        ),
    )
}

/// Runs `herald args` in the test's directory: exit success, stdout, stderr.
fn run(dir: &Dir, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(HERALD)
        .args(args)
        .current_dir(dir.dir.path())
        .output()
        .expect("herald runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `herald status --json` of the node running with `config`.
fn status(dir: &Dir, config: &Path) -> serde_json::Value {
    let (ok, out, err) = run(
        dir,
        &["status", "--json", "--config", &config.to_string_lossy()],
    );
    assert!(ok, "status: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON: {e}: {out}"))
}

/// Waits until the status of the node running with `config` satisfies `done`.
fn wait_status(
    dir: &Dir,
    config: &Path,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(dir, config);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `herald tail` process whose lines arrive on a channel.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(dir: &Dir, config: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(HERALD)
            .args(["tail", "--config"])
            .arg(config)
            .args(extra)
            .current_dir(dir.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tail starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn raise_tail_and_status_work_beside_running_nodes() {
    let dir = Dir::new();
    let (a1, a2) = (free_udp(), free_udp());
    let c1 = udp_config(&dir, "n1", a1, &[a2], free_tcp());
    let c2 = udp_config(&dir, "n2", a2, &[a1], free_tcp());
    let h1 = util::node::config_http(&c1);
    let _n1 = Node::start(&dir, &c1, h1);
    let _n2 = Node::start(&dir, &c2, util::node::config_http(&c2));
    let s = wait_status(&dir, &c1, "node 1 hears node 2", |s| {
        s["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["state"] == "alive"))
    });
    assert_eq!(s["cluster"], "ops");
    assert!(s["node"].is_string(), "ids are strings: {s}");

    // A second node with the same config is refused, naming the socket.
    let (ok, _, err) = run(&dir, &["node", "--config", &c1.to_string_lossy()]);
    assert!(!ok && err.contains("another node already runs"), "{err}");

    let mut t1 = Tail::start(&dir, &c1, &["--json", "--event", "product.changed"]);
    let mut t2 = Tail::start(&dir, &c2, &["--json", "--event", "product.changed"]);
    // Raise through node 1 until both tails (node 1's own subscriber, node 2's) show it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut seen1, mut seen2) = (None, None);
    let mut raised = 0;
    while seen1.is_none() || seen2.is_none() {
        assert!(
            Instant::now() < deadline,
            "tails saw {seen1:?} {seen2:?}; tail stderr: {} / {}",
            t1.stderr(),
            t2.stderr()
        );
        let (ok, out, err) = run(
            &dir,
            &[
                "raise",
                "--config",
                &c1.to_string_lossy(),
                "--event",
                "product.changed",
                "--payload",
                "42",
            ],
        );
        assert!(ok, "raise: {out} {err}");
        assert!(out.contains("through the running node"), "{out}");
        assert!(out.contains("acknowledged by node"), "{out}");
        raised += 1;
        for (tail, seen) in [(&t1, &mut seen1), (&t2, &mut seen2)] {
            while let Ok(line) = tail.lines.recv_timeout(Duration::from_millis(200)) {
                seen.get_or_insert(line);
            }
        }
    }
    for line in [seen1.unwrap(), seen2.unwrap()] {
        let v: serde_json::Value = serde_json::from_str(&line).expect("tail JSON");
        assert_eq!(v["event"], "product.changed", "{line}");
        assert_eq!(v["payload"], "42", "{line}");
        assert!(v["node"].is_string(), "{line}");
    }
    // The raises were node 1's own: it counted them, and no other process took its ports.
    let s = status(&dir, &c1);
    assert!(s["events_raised"].as_u64().unwrap() >= raised, "{s}");
}

#[test]
fn a_node_with_another_secret_is_shown_rejected_with_its_address_and_a_hint() {
    let dir = Dir::new();
    let (a1, a3) = (free_udp(), free_udp());
    let c1 = udp_config(&dir, "n1", a1, &[], free_tcp());
    let n1 = Node::start(&dir, &c1, util::node::config_http(&c1));
    // Node 3 made its own secret: the classic mistake.
    let other = tempfile::tempdir().expect("temp dir");
    let c3 = other.path().join("n3.toml");
    std::fs::write(
        &c3,
        format!("cluster = \"ops\"\n[udp]\nbind = \"{a3}\"\npeers = [\"{a1}\"]\n[metrics]\nlisten = \"{}\"\n", free_tcp()),
    )
    .expect("config");
    let _n3 = Node::start(&dir, &c3, util::node::config_http(&c3));
    let s = wait_status(&dir, &c1, "node 3 shown rejected", |s| {
        s["peers"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["addr"] == a3.to_string() && p["state"] == "rejected")
        })
    });
    let peer = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == a3.to_string())
        .unwrap()
        .clone();
    assert!(peer["drops"]["bad_tag"].as_u64().unwrap() > 0, "{peer}");
    assert!(
        peer["hint"].as_str().unwrap().contains("another secret"),
        "{peer}"
    );
    // The text form says it too, and the log names the address with the hint.
    let (ok, out, _) = run(&dir, &["status", "--config", &c1.to_string_lossy()]);
    assert!(ok);
    assert!(
        out.contains(&a3.to_string()) && out.contains("rejected") && out.contains("hint:"),
        "{out}"
    );
    n1.wait_log(&format!("from={a3}"));
    assert!(n1.log().contains("another secret"), "{}", n1.log());
}

#[test]
fn raise_without_a_listening_peer_fails_and_says_so() {
    let dir = Dir::new();
    let (a1, nobody) = (free_udp(), free_udp());
    let c1 = udp_config(&dir, "n1", a1, &[nobody], free_tcp());
    let (ok, out, err) = run(
        &dir,
        &[
            "raise",
            "--config",
            &c1.to_string_lossy(),
            "--event",
            "x",
            "--wait-ms",
            "300",
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("as a sender of its own"), "{out}");
    assert!(err.contains("no receiver acknowledged"), "{err}");
    // `status` without a node says how to start one.
    let (ok, _, err) = run(&dir, &["status", "--config", &c1.to_string_lossy()]);
    assert!(
        !ok && err.contains("no node answers") && err.contains("herald node --config"),
        "{err}"
    );
}
