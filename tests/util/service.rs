//! Helpers for the subscription service tests: two routers with a service each, raw RESP
//! sockets, and `redis-cli`.
#![allow(dead_code, clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use herald::Router;
use herald::service::{Service, ServiceConfig};

/// Two routers on UDP loopback, peers of each other.
pub(crate) fn two_routers() -> (Router, Router) {
    let addrs = super::free_udp_addrs(2);
    let build = |i: usize| {
        Router::builder()
            .cluster("service-test")
            .node_id(i as u64 + 1)
            .keyring(super::test_keyring())
            .udp_bind(addrs[i])
            .udp_peer(addrs[1 - i])
            .build()
            .expect("router builds")
    };
    (build(0), build(1))
}

/// A router without transports (events stay on this node).
pub(crate) fn lone_router() -> Router {
    Router::builder()
        .cluster("service-test")
        .keyring(super::test_keyring())
        .build()
        .expect("router builds")
}

/// A service on an ephemeral loopback port, with `tweak` applied to the defaults.
pub(crate) fn service(router: &Router, tweak: impl FnOnce(&mut ServiceConfig)) -> Service {
    let mut config = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
    tweak(&mut config);
    Service::start(router, config).expect("service starts")
}

/// `redis://` URL of a service.
pub(crate) fn url(addr: SocketAddr) -> String {
    format!("redis://{addr}/")
}

/// `redis-cli`, or `None` (with a message) when it is not installed outside CI. Under
/// `CI=true` its absence fails the test: `.ci/run` installs it.
pub(crate) fn redis_cli() -> Option<PathBuf> {
    let ok = Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(PathBuf::from("redis-cli"));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "redis-cli is missing (apt-get install redis-tools; .ci/run installs it)"
    );
    eprintln!("SKIPPED: redis-cli not installed (apt-get install redis-tools)");
    None
}

/// A raw RESP connection, for what client libraries never send.
pub(crate) struct Raw {
    pub(crate) reader: BufReader<TcpStream>,
}

impl Raw {
    pub(crate) fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect to the service");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self {
            reader: BufReader::new(s),
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// One command as a RESP array.
    pub(crate) fn command(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.send(&out);
    }

    /// One line of the reply, without its CRLF.
    pub(crate) fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a reply line");
        line.trim_end_matches("\r\n").to_owned()
    }

    /// Reads until the service closes the connection (EOF or reset); panics after 20 s.
    pub(crate) fn expect_closed(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 65536];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // Any other error is a reset: closed too.
                Err(_) => return,
            }
            assert!(Instant::now() < deadline, "not closed within 20 s");
        }
    }
}

/// Polls `f` until it is true; panics with `what` after 20 s.
pub(crate) fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The next pushed message: channel and payload.
pub(crate) fn pubsub_message(pubsub: &mut redis::PubSub<'_>) -> (String, Vec<u8>) {
    let msg = pubsub
        .get_message()
        .expect("a pushed message within the read timeout");
    (
        msg.get_channel_name().to_owned(),
        msg.get_payload_bytes().to_vec(),
    )
}
