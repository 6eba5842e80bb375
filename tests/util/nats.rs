//! `nats-server` child processes for the NATS tests, on free ports of 127.0.0.1, killed when
//! dropped. The server comes from the Debian package `nats-server`.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_tcp_addrs;

/// Whether `nats-server` can run here. Without it the tests skip loudly on a workstation and
/// fail in CI (`CI` set), where a skipped test would pass for a checked one.
pub(crate) fn nats_server_available() -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let msg = "nats-server is not installed: `apt-get install nats-server` (Debian) to run \
                   the NATS tests";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// A running `nats-server`.
pub(crate) struct NatsServer {
    pub(crate) port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with extra command-line `args`.
    pub(crate) fn start(args: &[&str]) -> Self {
        let port = free_tcp_addrs(1)[0].port();
        Self::start_on(port, args)
    }

    /// Starts a server on `port` with extra command-line `args`.
    pub(crate) fn start_on(port: u16, args: &[&str]) -> Self {
        let mut server = Self {
            port,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    /// The client URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (its clients see the connection drop).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same arguments.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
