//! A running `herald node` as an operator sees it: its HTTP side (`/metrics`, `/healthz`,
//! `/readyz`) under idle connections, SIGTERM, and keys rotated without a restart.
// Signals, file modes and processes: Unix only.
#![cfg(unix)]
#![allow(clippy::disallowed_types)]

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use util::node::{Dir, HERALD, Node, free_tcp, free_udp, get};

#[test]
fn a_scrape_answers_while_200_connections_sit_idle() {
    let dir = Dir::new();
    let http = free_tcp();
    let config = dir.config(
        "n1",
        &format!(
            "[udp]\nbind = \"{}\"\n[metrics]\nlisten = \"{http}\"\n",
            free_udp()
        ),
    );
    let node = Node::start(&dir, &config, http);
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(http).expect("idle connection"))
        .collect();
    // And a few that send half a request and stop.
    for _ in 0..10 {
        let mut s = TcpStream::connect(http).expect("half-sent connection");
        s.write_all(b"GET /metr").expect("half a request");
        idle.push(s);
    }
    let started = Instant::now();
    let (status, body) = get(http, "/metrics").expect("the scrape answers");
    let took = started.elapsed();
    eprintln!("scrape with 210 idle connections open: {took:?}");
    assert_eq!(status, 200);
    assert!(body.contains("herald_build_info{version=\""), "{body}");
    assert!(body.contains("herald_sender_sessions 0"), "{body}");
    assert!(body.contains("herald_peers{state=\"alive\"} 0"), "{body}");
    // Prometheus refuses a scrape that declares one metric family twice.
    let mut families: Vec<&str> = body.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let declared = families.len();
    families.sort_unstable();
    families.dedup();
    assert_eq!(
        families.len(),
        declared,
        "a metric family declared twice:\n{body}"
    );
    assert!(
        took < Duration::from_secs(1),
        "the scrape waited {took:?} behind idle connections"
    );
    drop(idle);
    drop(node);
}

#[test]
fn healthz_is_up_and_readyz_waits_for_a_peer() {
    let dir = Dir::new();
    let (a, b) = (free_udp(), free_udp());
    let (http_a, http_b) = (free_tcp(), free_tcp());
    let config_a = dir.config(
        "a",
        &format!("[udp]\nbind = \"{a}\"\npeers = [\"{b}\"]\n[metrics]\nlisten = \"{http_a}\"\n"),
    );
    let config_b = dir.config(
        "b",
        &format!("[udp]\nbind = \"{b}\"\npeers = [\"{a}\"]\n[metrics]\nlisten = \"{http_b}\"\n"),
    );
    let node_a = Node::start(&dir, &config_a, http_a);
    assert_eq!(get(http_a, "/healthz").map(|r| r.0), Some(200));
    let (status, body) = get(http_a, "/readyz").expect("readyz answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no peer heard yet"), "{body}");
    assert_eq!(get(http_a, "/nothing").map(|r| r.0), Some(404));

    let _node_b = Node::start(&dir, &config_b, http_b);
    let body = node_a.wait_for("/readyz", "A ready once B is heard", |s, _| s == 200);
    assert!(body.contains("peers: 1 heard"), "{body}");
    assert!(body.contains("keys: ok (ids 1, signing with 1)"), "{body}");
    assert_eq!(node_a.metric("herald_sender_sessions"), 1);
    assert_eq!(node_a.metric("herald_peers_configured"), 1);
}

#[test]
fn sigterm_stops_a_busy_node_quickly_and_says_where_it_listened() {
    let dir = Dir::new();
    let (a, service, http) = (free_udp(), free_tcp(), free_tcp());
    let config = dir.config(
        "a",
        &format!(
            "[udp]\nbind = \"{a}\"\npeers = [\"{}\"]\n[service]\nlisten = \"{service}\"\n\
             [metrics]\nlisten = \"{http}\"\n",
            free_udp()
        ),
    );
    let mut node = Node::start(&dir, &config, http);
    // Clients on both listeners, one of them idle on the HTTP side.
    let _service_client = TcpStream::connect(service).expect("service client");
    let _idle_http = TcpStream::connect(http).expect("idle http client");
    let log = node.log();
    for part in [
        "node running",
        "cluster=ops",
        "keys=1",
        &format!("udp {a}"),
        &format!("service {service}"),
        &format!("http {http}"),
        "peers=udp 127.0.0.1:",
    ] {
        assert!(log.contains(part), "start-up log lacks {part:?}:\n{log}");
    }
    let started = Instant::now();
    node.signal(Signal::TERM);
    let status = node.child.wait().expect("the node exits");
    let took = started.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(status.success(), "{status:?}\n{}", node.log());
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
}

#[test]
fn keygen_add_key_then_sighup_makes_the_new_key_usable() {
    let dir = Dir::new();
    let (a, http) = (free_udp(), free_tcp());
    let config = dir.config(
        "a",
        &format!("[udp]\nbind = \"{a}\"\n[metrics]\nlisten = \"{http}\"\n"),
    );
    let node = Node::start(&dir, &config, http);
    // The operator adds key 2 and tells the node.
    let out = dir.herald(&["keygen", "--add-key", "herald.secret"]);
    assert!(out.contains("added key id 2"), "{out}");
    node.signal(Signal::HUP);
    node.wait_for("/readyz", "key 2 loaded", |s, b| {
        s == 200 && b.contains("ids 1, 2, signing with 1")
    });
    // The file watch may reload first; the SIGHUP reload is logged too.
    node.wait_log("reason=\"SIGHUP\" keys=1, 2");

    // Another process signs with key 2: the node takes its frames.
    let raiser_secret = dir.path("raiser.secret");
    std::fs::copy(dir.path("herald.secret"), &raiser_secret).expect("copy the secret");
    dir.herald(&["keygen", "--sign", "2", "raiser.secret"]);
    let raiser = dir.config(
        "raiser",
        &format!(
            "secret_file = \"raiser.secret\"\n[udp]\nbind = \"{}\"\npeers = [\"{a}\"]\n",
            free_udp()
        ),
    );
    let raise = |config: &Path| {
        dir.herald(&[
            "raise",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--event",
            "product.changed",
            "--payload",
            "42",
        ])
    };
    raise(&raiser);
    node.wait_for("/metrics", "a frame signed with key 2 accepted", |_, b| {
        !b.contains("herald_frames_accepted_total 0\n")
    });
    assert_eq!(
        node.metric("herald_frames_dropped_total{reason=\"unknown_key\"}"),
        0
    );

    // A key the node was never given is still refused (the acceptance above is key 2's).
    std::fs::copy(dir.path("raiser.secret"), dir.path("other.secret")).expect("copy");
    dir.herald(&["keygen", "--rotate", "other.secret"]);
    let other = dir.config(
        "other",
        &format!(
            "secret_file = \"other.secret\"\n[udp]\nbind = \"{}\"\npeers = [\"{a}\"]\n",
            free_udp()
        ),
    );
    // Its raise reaches the node but nobody takes it: the command says so and fails.
    let out = Command::new(HERALD)
        .args(["raise", "--config"])
        .arg(&other)
        .args(["--event", "product.changed", "--payload", "42"])
        .current_dir(dir.dir.path())
        .output()
        .expect("herald runs");
    assert!(!out.status.success(), "an unheard raise must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no receiver acknowledged"), "{stderr}");
    node.wait_for("/metrics", "a frame signed with key 3 refused", |_, b| {
        b.contains("herald_frames_dropped_total{reason=\"unknown_key\"} ")
            && !b.contains("herald_frames_dropped_total{reason=\"unknown_key\"} 0\n")
    });
}

#[test]
fn readyz_is_503_while_the_secret_file_cannot_be_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Dir::new();
    let http = free_tcp();
    let config = dir.config(
        "a",
        &format!(
            "[udp]\nbind = \"{}\"\n[metrics]\nlisten = \"{http}\"\n",
            free_udp()
        ),
    );
    let node = Node::start(&dir, &config, http);
    assert_eq!(get(http, "/readyz").map(|r| r.0), Some(200));
    let secret = dir.path("herald.secret");
    let chmod = |mode| {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    // A secret others can read is refused: the node keeps its keys but is not ready.
    chmod(0o644);
    node.signal(Signal::HUP);
    let body = node.wait_for("/readyz", "not ready with an open secret", |s, _| s == 503);
    assert!(body.contains("keys: not ready"), "{body}");
    assert!(body.contains("chmod 600"), "{body}");
    assert_eq!(node.metric("herald_secret_file_ok"), 0);
    // Fixed, without a signal: the node notices the file changed.
    chmod(0o600);
    node.wait_for("/readyz", "ready again once fixed", |s, _| s == 200);
    assert_eq!(node.metric("herald_secret_file_ok"), 1);
}

#[test]
fn keygen_fingerprints_match_across_copies_and_the_node_logs_them() {
    let dir = Dir::new();
    std::fs::copy(dir.path("herald.secret"), dir.path("copy.secret")).expect("copy");
    dir.herald(&["keygen", "other.secret"]);
    let prints = |file: &str| -> Vec<(String, String)> {
        dir.herald(&["keygen", "--fingerprint", file])
            .lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                assert!(
                    matches!(words[..], ["key", "id", _, "fingerprint", _, ..]),
                    "{l}"
                );
                (words[2].to_owned(), words[4].to_owned())
            })
            .collect()
    };
    let original = prints("herald.secret");
    assert_eq!(original.len(), 1);
    assert_eq!(original[0].0, "1");
    assert_eq!(original[0].1.len(), 8);
    assert_eq!(
        prints("copy.secret"),
        original,
        "a copy has the same fingerprint"
    );
    assert_ne!(
        prints("other.secret")[0].1,
        original[0].1,
        "another secret differs"
    );
    dir.herald(&["keygen", "--add-key", "copy.secret"]);
    let grown = prints("copy.secret");
    assert_eq!(grown.len(), 2);
    assert_eq!(
        grown[0], original[0],
        "adding a key leaves key 1's fingerprint"
    );
    let out = dir.herald(&["keygen", "--fingerprint", "herald.secret"]);
    assert!(out.contains("(signs)"), "{out}");

    let http = free_tcp();
    let config = dir.config(
        "a",
        &format!(
            "[udp]\nbind = \"{}\"\n[metrics]\nlisten = \"{http}\"\n",
            free_udp()
        ),
    );
    let node = Node::start(&dir, &config, http);
    let logged = format!("1:{}", original[0].1);
    assert!(
        node.log().contains(&logged),
        "{logged} not in\n{}",
        node.log()
    );
}
