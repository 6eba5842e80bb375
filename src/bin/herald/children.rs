//! Child nodes for `demo` and `bench`: this same binary run as `herald child`, with its config
//! and the cluster's secret in a temporary directory, driven line by line (see `child.rs`).
//!
//! Dropping [`Children`] closes every child's standard input (a child exits when it closes),
//! waits for them, kills any that do not exit within a few seconds, and removes the directory.
//! A Ctrl-C or SIGTERM while waiting for a child is reported as [`Halt::Interrupted`], so the
//! caller unwinds through that drop instead of dying with children and files left behind.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use herald::auth::SecretFile;

use crate::CliError;

/// Why a run stopped early.
#[derive(Debug)]
pub(crate) enum Halt {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// Something failed.
    Failed(CliError),
}

impl From<CliError> for Halt {
    fn from(e: CliError) -> Self {
        Self::Failed(e)
    }
}

/// A line from child `i`, or `None` when its output closed.
type Line = (usize, Option<String>);

/// The running children, their directory, and what they printed that nobody read yet.
#[derive(Debug)]
pub(crate) struct Children {
    nodes: Vec<(Child, Option<ChildStdin>)>,
    tx: Sender<Line>,
    rx: Receiver<Line>,
    pending: VecDeque<Line>,
    stop: Arc<AtomicBool>,
    dir: tempfile::TempDir,
}

/// A UDP or TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port(tcp: bool) -> Result<SocketAddr, CliError> {
    let addr = if tcp {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())
    } else {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    addr.map_err(|e| CliError::usage(format!("no free port on 127.0.0.1: {e}")))
}

impl Children {
    /// A fresh directory (named `prefix…`) holding a new cluster secret, mode 0600.
    pub(crate) fn new(prefix: &str, stop: Arc<AtomicBool>) -> Result<Self, CliError> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| {
                CliError::usage(format!(
                    "cannot create a temporary directory: {e}; set TMPDIR to a writable directory"
                ))
            })?;
        SecretFile::create(&dir.path().join("cluster.secret"))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(Self {
            nodes: Vec::new(),
            tx,
            rx,
            pending: VecDeque::new(),
            stop,
            dir,
        })
    }

    /// The temporary directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The secret file, for a node of this process.
    pub(crate) fn secret(&self) -> PathBuf {
        self.dir.path().join("cluster.secret")
    }

    /// Starts a child with this config (cluster, secret and transport lines are the caller's;
    /// the secret file is `cluster.secret` beside it) and waits for its `ready` line.
    /// Returns its index.
    pub(crate) fn spawn(&mut self, config: &str) -> Result<usize, Halt> {
        let i = self.nodes.len();
        let path = self.dir.path().join(format!("node-{}.toml", i + 1));
        std::fs::write(&path, format!("secret_file = \"cluster.secret\"\n{config}"))
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        let exe = std::env::current_exe()
            .map_err(|e| CliError::usage(format!("cannot find herald's own binary: {e}")))?;
        let mut child = Command::new(exe)
            .arg("child")
            .arg("--config")
            .arg(&path)
            // Children log errors only, unless RUST_LOG says otherwise: what they lose is
            // reported by the parent (Missed counts), not as a warning per notice.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| CliError::usage(format!("cannot start a child node: {e}")))?;
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            let tx = self.tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send((i, Some(line)));
                }
                let _ = tx.send((i, None));
            });
        }
        self.nodes.push((child, stdin));
        self.expect(i, "ready", Duration::from_secs(10))?;
        Ok(i)
    }

    /// Child `i`'s process id.
    pub(crate) fn pid(&self, i: usize) -> u32 {
        self.nodes.get(i).map_or(0, |(c, _)| c.id())
    }

    /// Sends one command line to child `i`.
    pub(crate) fn send(&mut self, i: usize, line: &str) -> Result<(), Halt> {
        let stdin = self.nodes.get_mut(i).and_then(|(_, s)| s.as_mut());
        let sent = stdin.map(|s| writeln!(s, "{line}").and_then(|()| s.flush()));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(CliError::usage(format!("child node {} has gone away", i + 1)).into()),
        }
    }

    /// The next line from any child, waiting at most `timeout`; `Ok(None)` on timeout.
    pub(crate) fn next(&mut self, timeout: Duration) -> Result<Option<(usize, String)>, Halt> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = match self.pending.pop_front() {
                Some(l) => l,
                None => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(Halt::Interrupted);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    let wait = (deadline - now).min(Duration::from_millis(50));
                    match self.rx.recv_timeout(wait) {
                        Ok(l) => l,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return Ok(None),
                    }
                }
            };
            return match line {
                (i, Some(text)) if text.starts_with("error ") => {
                    Err(CliError::usage(format!("child node {}: {}", i + 1, &text[6..])).into())
                }
                (i, Some(text)) => Ok(Some((i, text))),
                (i, None) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(Halt::Interrupted);
                    }
                    Err(CliError::usage(format!(
                        "child node {} (pid {}) exited unexpectedly; its messages are above",
                        i + 1,
                        self.pid(i)
                    ))
                    .into())
                }
            };
        }
    }

    /// Waits for a line from child `i` that starts with `prefix` and returns it; lines from
    /// other children, or other lines, are kept for later.
    pub(crate) fn expect(
        &mut self,
        i: usize,
        prefix: &str,
        timeout: Duration,
    ) -> Result<String, Halt> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Ok(Some((j, text))) if j == i && text.starts_with(prefix) => break Ok(text),
                Ok(Some(other)) => skipped.push(other),
                Ok(None) => {
                    break Err(CliError::usage(format!(
                        "child node {} did not answer `{prefix}` within {timeout:?}",
                        i + 1
                    ))
                    .into());
                }
                Err(e) => break Err(e),
            }
        };
        for (j, text) in skipped.into_iter().rev() {
            self.pending.push_front((j, Some(text)));
        }
        result
    }

    /// Stops every child: closes its input, waits up to 3 s, then kills it.
    fn stop_all(&mut self) {
        for (_, stdin) in &mut self.nodes {
            drop(stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (child, _) in &mut self.nodes {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
        // `dir` is dropped after this, which removes the directory and everything in it.
    }
}
