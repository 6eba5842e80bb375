//! `herald node` with a `[nats]` section: it starts on NATS alone and reports the
//! connection's state and reconnections on `/metrics`.
#![cfg(feature = "nats")]
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::nats::{NatsServer, nats_server_available};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

fn metrics(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply.split_once("\r\n\r\n")?.1.to_owned())
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

#[test]
fn a_node_on_nats_reports_its_connection_and_reconnections() {
    if !nats_server_available() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new(HERALD)
        .args(["keygen", "herald.secret"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(ok.status.success());
    let http = util::free_tcp_addrs(1)[0];
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = \"natsnode\"\n[metrics]\nlisten = \"{http}\"\n[nats]\nservers = [\"{}\"]\n",
            server.url()
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
    let mut node = Command::new(HERALD)
        .args(["node", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_metric(http, "herald_nats_connected 1");
    server.kill();
    wait_metric(http, "herald_nats_connected 0");
    server.restart();
    wait_metric(http, "herald_nats_connected 1");
    wait_metric(http, "herald_nats_reconnects_total 1");
    let _ = node.kill();
    let _ = node.wait();
}
