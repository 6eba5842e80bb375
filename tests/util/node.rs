//! `herald node` processes for tests: a directory with a secret and configs, a node started
//! and waited for, and plain HTTP GETs of its HTTP side.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

pub(crate) const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A directory with a secret file (`herald.secret`, key id 1) and the configs of a test.
pub(crate) struct Dir {
    pub(crate) dir: tempfile::TempDir,
}

impl Dir {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let this = Self { dir };
        this.herald(&["keygen", "herald.secret"]);
        this
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a short `herald` command in the directory; panics unless it succeeds.
    pub(crate) fn herald(&self, args: &[&str]) -> String {
        let out = Command::new(HERALD)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("herald runs");
        assert!(
            out.status.success(),
            "herald {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn config(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, format!("cluster = \"ops\"\n{body}")).expect("write config");
        path
    }
}

/// A `herald node` process, stopped with SIGKILL if the test did not stop it.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    pub(crate) http: SocketAddr,
}

impl Node {
    /// Starts a node and waits until its HTTP side answers `/healthz` and it logged that it
    /// runs.
    pub(crate) fn start(dir: &Dir, config: &Path, http: SocketAddr) -> Self {
        let log = config.with_extension("log");
        let child = Command::new(HERALD)
            .args(["node", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .current_dir(dir.dir.path())
            .spawn()
            .expect("node starts");
        let node = Self { child, log, http };
        let deadline = Instant::now() + Duration::from_secs(20);
        // The HTTP side answers just before the start-up line is logged: wait for both.
        while get(http, "/healthz").map(|r| r.0) != Some(200)
            || !node.log().contains("node running")
        {
            assert!(
                Instant::now() < deadline,
                "node not up within 20 s: {}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the node's log holds `text`; panics after 20 s.
    pub(crate) fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{text:?} not logged within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid")).expect("pid");
        kill_process(pid, signal).expect("signal the node");
    }

    /// `GET path` until `done` says the reply is the awaited one; panics after 20 s.
    pub(crate) fn wait_for(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(u16, &str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((status, body)) = get(self.http, path)
                && done(status, &body)
            {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 20 s; last {path}: {:?}\nlog:\n{}",
                get(self.http, path),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of a metric line (name with labels, exactly as printed).
    pub(crate) fn metric(&self, line: &str) -> u64 {
        let (_, body) = get(self.http, "/metrics").expect("metrics answer");
        body.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{body}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over a fresh connection: the status and the body, or `None` if the
/// connection failed.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.split(' ').nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

pub(crate) fn free_tcp() -> SocketAddr {
    super::free_tcp_addrs(1)[0]
}

pub(crate) fn free_udp() -> SocketAddr {
    super::free_udp_addrs(1)[0]
}

/// The `[metrics] listen` address of a test config written by the tests.
pub(crate) fn config_http(config: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(config).expect("read config");
    let value: toml::Value = toml::from_str(&text).expect("config is TOML");
    value["metrics"]["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("[metrics] listen")
}
