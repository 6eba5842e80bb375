//! `herald node` with a `[nats]` section: it starts on NATS alone, reports the connection's
//! state and reconnections on `/metrics`, is not ready while NATS is unreachable, and
//! reaches a TLS server by name trusting the system's certificate authorities.
#![cfg(feature = "nats")]
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::nats::{NatsServer, nats_server_available};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A `GET` of `path`: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn metrics(addr: SocketAddr) -> Option<String> {
    get(addr, "/metrics").map(|(_, body)| body)
}

/// Waits until `/readyz` answers `status`; returns its body.
fn wait_ready(addr: SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(addr, "/readyz");
        if let Some((s, body)) = &reply
            && *s == status
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer {status}: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped, so a failed assertion leaves no node running.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node on NATS alone with `/metrics` and `/readyz` on `http`, in `dir`.
fn start_node(dir: &std::path::Path, cluster: &str, nats_url: &str, http: SocketAddr) -> Node {
    start_node_with(dir, cluster, nats_url, http, &[])
}

/// As [`start_node`], with these variables in the node's environment.
fn start_node_with(
    dir: &std::path::Path,
    cluster: &str,
    nats_url: &str,
    http: SocketAddr,
    env: &[(&str, &std::path::Path)],
) -> Node {
    let ok = Command::new(HERALD)
        .args(["keygen", "herald.secret"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = \"{cluster}\"\n[metrics]\nlisten = \"{http}\"\n[nats]\nservers = [\"{nats_url}\"]\n"
        ),
    )
    .unwrap();
    let check = Command::new(HERALD)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "herald check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    Node(
        Command::new(HERALD)
            .args(["node", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn wait_metric(addr: SocketAddr, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = metrics(addr).unwrap_or_default();
        if body.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} in /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `tls://` server named by host name, with no `tls_ca_file`: the driver's client looks
/// the name up (off the driver thread) and checks the certificate against the system's
/// authorities, which `SSL_CERT_FILE` points at the test's CA here, as an operator's
/// environment may.
#[test]
fn a_node_reaches_a_tls_server_by_name_trusting_the_systems_authorities() {
    if !nats_server_available() {
        return;
    }
    let pki = util::pki::Pki::new();
    let path = |name: &str| pki.path(name).to_str().expect("utf-8 path").to_owned();
    let server = NatsServer::start(&[
        "--tls",
        "--tlscert",
        &path("server.pem"),
        "--tlskey",
        &path("server.key"),
    ]);
    let url = server.url().replace("nats://127.0.0.1", "tls://localhost");
    let dir = tempfile::tempdir().unwrap();
    let http = util::free_tcp_addrs(1)[0];
    let ca = pki.path("ca.pem");
    let _node = start_node_with(
        dir.path(),
        "natssystls",
        &url,
        http,
        &[("SSL_CERT_FILE", &ca)],
    );
    wait_metric(http, "herald_nats_connected 1");
}

#[test]
fn a_node_on_nats_reports_its_connection_and_reconnections() {
    if !nats_server_available() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let http = util::free_tcp_addrs(1)[0];
    let _node = start_node(dir.path(), "natsnode", &server.url(), http);
    wait_metric(http, "herald_nats_connected 1");
    server.kill();
    wait_metric(http, "herald_nats_connected 0");
    server.restart();
    wait_metric(http, "herald_nats_connected 1");
    wait_metric(http, "herald_nats_reconnects_total 1");
}

#[test]
fn a_node_on_nats_alone_is_not_ready_while_no_server_is_reachable() {
    if !nats_server_available() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let http = util::free_tcp_addrs(1)[0];
    let _node = start_node(dir.path(), "natsready", &server.url(), http);
    let body = wait_ready(http, 200);
    assert!(body.contains("nats: connected"), "{body}");
    server.kill();
    let body = wait_ready(http, 503);
    assert!(
        body.contains("nats: not ready") && body.contains("only transport"),
        "the reason names NATS: {body}"
    );
    // Everything else is still fine: the node is alive, only cut off.
    assert_eq!(get(http, "/healthz").map(|r| r.0), Some(200));
    server.restart();
    let body = wait_ready(http, 200);
    assert!(
        body.contains("nats: connected (reconnections so far: 1)"),
        "{body}"
    );
}

#[test]
fn bench_over_nats_reports_every_event_and_the_clients_slow_consumer_count() {
    if !nats_server_available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let out = Command::new(HERALD)
        .args(["bench", "--transport", "nats", "--nats-url"])
        .arg(server.url())
        .args(["--seconds", "0.5", "--rate", "2000", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!(json["transport"], "nats", "{text}");
    assert!(json["sent"].as_u64().unwrap() > 100, "{text}");
    assert_eq!(json["delivered"], json["sent"], "nothing lost: {text}");
    let nats = &json["nats"];
    for key in ["slow_consumer", "inbound_dropped", "disconnects"] {
        assert_eq!(nats[key], 0, "{key} in a clean run: {text}");
    }
}
