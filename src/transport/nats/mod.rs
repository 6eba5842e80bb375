//! herald over NATS (feature `nats`): frames travel unchanged as NATS core messages.
//!
//! Every frame for the whole cluster is one message on `<prefix>.<cluster>.frames`; a frame
//! for one node (a status, a request for lost frames, a frame sent again) is one message on
//! that node's subject `<prefix>.<cluster>.node.<id>`. NATS core pub/sub delivers at most
//! once; herald's signing, sequencing, gap detection and recovery do the rest, exactly as
//! over UDP. A frame's sender is read from its header only to address the answer: herald
//! verifies every frame afterwards, so a forged sender id earns nothing but a dropped frame.
//!
//! The official `async-nats` client runs on a runtime thread of its own; the driver hands it
//! frames through a bounded queue, and takes received frames straight from the client's
//! subscription queues, which wake the driver with the [`DriverWaker`] when a frame arrives
//! while it sleeps.

mod client;
mod stats;

pub use stats::NatsStats;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use std::task::Poll;

use bytes::Bytes;
use futures_util::Stream as _;

use super::{DriverWaker, FrameBatch, PeerAddr, RecvStatus, Registry, SendError, Token, Transport};
use crate::sync::plain::{Arc, AtomicBool, Ordering};

/// The subject prefix when none is set.
pub const DEFAULT_SUBJECT_PREFIX: &str = "herald";

/// How long closing waits for queued frames to be published.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Frames one [`Transport::recv`] hands over at most before it lets the driver send.
const RECV_BUDGET: usize = 1024;

/// How a node proves who it is to the NATS servers.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes them.
    CredsFile(PathBuf),
    /// An NKey seed (`SU...`).
    NkeySeed(String),
    /// A file holding an NKey seed on its first line, read at connection time.
    NkeySeedFile(PathBuf),
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, <redacted>)"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
            Self::NkeySeed(_) => f.write_str("NkeySeed(<redacted>)"),
            Self::NkeySeedFile(path) => write!(f, "NkeySeedFile({})", path.display()),
        }
    }
}

/// Settings for a [`NatsTransport`].
///
/// ```
/// use herald::transport::nats::{NatsAuth, NatsConfig};
///
/// let mut config = NatsConfig::new(["nats://127.0.0.1:4222"]);
/// config.auth = NatsAuth::Token("s3cret".into());
/// let stats = config.stats(); // read it once the router runs
/// assert!(!stats.connected());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Servers to connect to (`nats://host:port`, `tls://host:port`, or `host:port`); the
    /// client fails over between them and to servers the cluster announces.
    pub servers: Vec<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// A PEM file of certificate authorities to trust; setting it requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// The first tokens of every subject. Default `herald`.
    pub subject_prefix: String,
    /// How long the first connection may take before the router fails to build.
    pub connect_timeout: Duration,
    /// Frames waiting to be published before the transport reports backpressure (at half)
    /// and then refuses frames (full). Default 8192.
    pub queue_frames: usize,
    /// Received frames waiting for the driver, per subscription (the cluster's and the
    /// node's); beyond that the client drops them and counts a slow consumer (they become
    /// gaps that herald recovers or reports). Default 65536.
    pub inbound_frames: usize,
    stats: NatsStats,
}

impl NatsConfig {
    /// Settings with the defaults and these servers.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            auth: NatsAuth::None,
            tls_ca_file: None,
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(5),
            queue_frames: 8192,
            inbound_frames: 65_536,
            stats: NatsStats::default(),
        }
    }

    /// The counters of the transports built from this config (clones share them): keep a
    /// handle before giving the config to [`RouterBuilder::nats`](crate::RouterBuilder::nats).
    pub fn stats(&self) -> NatsStats {
        self.stats.clone()
    }

    /// The subject every frame for the whole cluster goes to.
    pub fn cluster_subject(&self, cluster: &str) -> String {
        format!("{}.{cluster}.frames", self.subject_prefix)
    }

    /// The subject of one node's frames.
    pub fn node_subject(&self, cluster: &str, node: u64) -> String {
        format!("{}.{cluster}.node.{node}", self.subject_prefix)
    }

    /// Checks what can be checked without a server, naming the setting at fault.
    ///
    /// # Errors
    ///
    /// `(setting, problem)`: no servers, a prefix or cluster name that is not a subject.
    pub fn check(&self, cluster: &str) -> Result<(), (&'static str, String)> {
        if self.servers.is_empty() {
            return Err((
                "nats.servers",
                "is empty: list at least one server, such as \"nats://127.0.0.1:4222\"".into(),
            ));
        }
        if let Some(s) = self.servers.iter().find(|s| s.trim().is_empty()) {
            return Err(("nats.servers", format!("{s:?} is not a server address")));
        }
        if !self.subject_prefix.split('.').all(subject_token) {
            return Err((
                "nats.subject_prefix",
                format!(
                    "{:?} is not a NATS subject: use dot-separated tokens without spaces, \
                     `*` or `>` (default \"herald\")",
                    self.subject_prefix
                ),
            ));
        }
        if !subject_token(cluster) {
            return Err((
                "cluster",
                format!(
                    "{cluster:?} cannot be a NATS subject token: over NATS the cluster name \
                     must not contain dots, spaces, `*` or `>`"
                ),
            ));
        }
        if self.queue_frames < 2 {
            return Err(("nats.queue_frames", "must be at least 2".into()));
        }
        if self.inbound_frames == 0 {
            return Err(("nats.inbound_frames", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Whether `token` can be one token of a NATS subject.
fn subject_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>'))
}

/// What the runtime thread and the driver share.
#[derive(Debug)]
struct Shared {
    stats: NatsStats,
    waker: std::sync::OnceLock<DriverWaker>,
    /// The driver was told of backpressure: wake it when the publish queue drains.
    held: AtomicBool,
    /// Tells the client thread to stop publishing at once (closing without a server).
    abandon: tokio::sync::Notify,
}

/// Wakes the driver when a subscription queue gets a frame while the driver waits for one:
/// the queue keeps this waker from the `recv` that found it empty and calls it once.
#[derive(Debug)]
struct WakeDriver(DriverWaker);

impl std::task::Wake for WakeDriver {
    fn wake(self: Arc<Self>) {
        self.0.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake();
    }
}

/// One frame for the publisher: the subject (`None`: the cluster's) and the bytes.
type Outbound = (Option<async_nats::Subject>, Bytes);

/// herald's NATS transport. Build it with [`NatsTransport::connect`] and add it with
/// [`RouterBuilder::transport`](crate::RouterBuilder::transport), or let the builder do both
/// with [`RouterBuilder::nats`](crate::RouterBuilder::nats).
pub struct NatsTransport {
    shared: Arc<Shared>,
    outbound: Option<tokio::sync::mpsc::Sender<Outbound>>,
    /// The cluster's subscription and this node's, read by the driver itself.
    inbound: [async_nats::Subscriber; 2],
    /// Which subscription `recv` reads first (they take turns, so neither starves the other).
    first: usize,
    /// Rings the driver; `None` until [`Transport::register`].
    waker: Option<std::task::Waker>,
    queue_frames: usize,
    cluster: String,
    prefix: String,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("stats", &self.shared.stats)
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    /// Connects to one of `config.servers`, subscribes to the cluster's subject and to node
    /// `node`'s, and starts the client's thread. Later losses of the connection are repaired
    /// in the background (reconnection with backoff, failover across the servers).
    ///
    /// # Errors
    ///
    /// An invalid setting ([`io::ErrorKind::InvalidInput`], naming it), credentials the
    /// server refuses ([`io::ErrorKind::PermissionDenied`]), or no server reachable within
    /// [`connect_timeout`](NatsConfig::connect_timeout).
    pub fn connect(config: &NatsConfig, cluster: &str, node: u64) -> io::Result<Self> {
        config.check(cluster).map_err(|(key, problem)| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{key}: {problem}"))
        })?;
        let shared = Arc::new(Shared {
            stats: config.stats(),
            waker: std::sync::OnceLock::new(),
            held: AtomicBool::new(false),
            abandon: tokio::sync::Notify::new(),
        });
        let (outbound, inbound, thread) = client::start(config, cluster, node, &shared)?;
        Ok(Self {
            shared,
            outbound: Some(outbound),
            inbound,
            first: 0,
            waker: None,
            queue_frames: config.queue_frames,
            cluster: cluster.to_owned(),
            prefix: config.subject_prefix.clone(),
            thread: Some(thread),
        })
    }

    /// This transport's counters.
    pub fn stats(&self) -> NatsStats {
        self.shared.stats.clone()
    }

    fn queue(&self, subject: Option<async_nats::Subject>, frame: Bytes) -> Result<(), io::Error> {
        let Some(tx) = &self.outbound else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "nats transport closed",
            ));
        };
        tx.try_send((subject, frame)).map_err(|e| {
            self.shared
                .stats
                .0
                .publish_errors
                .fetch_add(1, Ordering::Relaxed);
            match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "nats publish queue full: no server connected, or the server is slow",
                ),
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    io::Error::new(io::ErrorKind::NotConnected, "nats client thread ended")
                }
            }
        })
    }
}

/// The sender's node id of a frame (header bytes 24..32), if it is long enough to have one.
fn sender_node(frame: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = frame.get(24..32)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

impl Transport for NatsTransport {
    fn name(&self) -> &str {
        "nats"
    }

    fn register(&mut self, _: &Registry, _: Token, waker: DriverWaker) -> io::Result<()> {
        self.waker = Some(std::task::Waker::from(Arc::new(WakeDriver(waker.clone()))));
        // Frames may have arrived before there was a waker to call.
        waker.wake();
        let _ = self.shared.waker.set(waker);
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.queue(None, Bytes::copy_from_slice(frame))
            .map_err(|last| SendError { failed: 1, last })
    }

    fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        // One NATS message per frame; the client thread flushes once per batch it takes.
        // One copy of the whole batch, which the frames' messages share.
        let bytes = Bytes::copy_from_slice(batch.as_bytes());
        let mut failed = 0;
        let mut last = None;
        let mut start = 0;
        for &len in batch.lens() {
            let frame = bytes.slice(start..start + len);
            start += len;
            if let Err(e) = self.queue(None, frame) {
                failed += 1;
                last = Some(e);
            }
        }
        match last {
            None => Ok(()),
            Some(last) => Err(SendError { failed, last }),
        }
    }

    fn send_to(&mut self, peer: &PeerAddr, frame: &[u8]) -> Result<(), SendError> {
        let subject = match peer {
            PeerAddr::Channel(node) => Some(async_nats::Subject::from(format!(
                "{}.{}.node.{node}",
                self.prefix, self.cluster
            ))),
            _ => None,
        };
        self.queue(subject, Bytes::copy_from_slice(frame))
            .map_err(|last| SendError { failed: 1, last })
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        let Some(waker) = &self.waker else {
            return Ok(RecvStatus::Drained);
        };
        // Polled on the driver thread: a queue found empty keeps the waker and calls it for
        // the next frame, so the client thread hands a frame over with one wake of the driver
        // and no task of its own in between.
        let mut cx = std::task::Context::from_waker(waker);
        let c = &self.shared.stats.0;
        let mut taken = 0;
        let mut empty = [false; 2];
        let mut i = self.first;
        while taken < RECV_BUDGET && !(empty[0] && empty[1]) {
            if !empty[i] {
                match std::pin::Pin::new(&mut self.inbound[i]).poll_next(&mut cx) {
                    Poll::Ready(Some(msg)) => {
                        taken += 1;
                        c.received.fetch_add(1, Ordering::Relaxed);
                        c.bytes_in
                            .fetch_add(msg.payload.len() as u64, Ordering::Relaxed);
                        let from =
                            sender_node(&msg.payload).map_or(PeerAddr::Unknown, PeerAddr::Channel);
                        deliver(msg.payload, from);
                    }
                    // Pending: the waker is kept. Ended: the client is closing.
                    Poll::Ready(None) | Poll::Pending => empty[i] = true,
                }
            }
            i = 1 - i;
        }
        self.first = 1 - self.first;
        Ok(if empty[0] && empty[1] {
            RecvStatus::Drained
        } else {
            RecvStatus::MoreWaiting
        })
    }

    fn backpressure(&self) -> bool {
        let Some(tx) = &self.outbound else {
            return false;
        };
        // Half the queue waiting: the server is gone or slow. The client thread wakes the
        // driver once the queue has drained to a quarter.
        let held = tx.capacity() < self.queue_frames / 2;
        if held {
            self.shared.held.store(true, Ordering::Release);
        }
        held
    }
}

impl Drop for NatsTransport {
    fn drop(&mut self) {
        // Closing the queue ends the client thread once it has published what is queued
        // (bounded by a flush timeout when no server is reachable).
        self.outbound = None;
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + CLOSE_WAIT;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !thread.is_finished() {
                tracing::warn!(
                    "nats: frames still queued at shutdown were not published (no server)"
                );
                self.shared.abandon.notify_one();
            }
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_id_comes_from_header_bytes_24_to_32() {
        let mut frame = vec![0u8; 64];
        frame[24..32].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(sender_node(&frame), Some(0x0102_0304_0506_0708));
        assert_eq!(
            sender_node(&frame[..31]),
            None,
            "too short to name a sender"
        );
        assert_eq!(sender_node(&[]), None);
    }

    #[test]
    fn settings_that_cannot_be_subjects_are_refused_by_name() {
        let ok = NatsConfig::new(["nats://127.0.0.1:4222"]);
        assert_eq!(ok.check("shop"), Ok(()));
        assert_eq!(ok.cluster_subject("shop"), "herald.shop.frames");
        assert_eq!(ok.node_subject("shop", 7), "herald.shop.node.7");
        assert_eq!(ok.check("a.b").unwrap_err().0, "cluster");
        assert_eq!(ok.check("a b").unwrap_err().0, "cluster");
        assert_eq!(ok.check("a>").unwrap_err().0, "cluster");
        let mut c = ok.clone();
        c.subject_prefix = "acme.herald".into();
        assert_eq!(c.check("shop"), Ok(()), "a prefix may have several tokens");
        for bad in ["", "a..b", "a.*", ">", "a b", "x."] {
            c.subject_prefix = bad.into();
            assert_eq!(
                c.check("shop").unwrap_err().0,
                "nats.subject_prefix",
                "{bad:?}"
            );
        }
        let none = NatsConfig::new(Vec::<String>::new());
        assert_eq!(none.check("shop").unwrap_err().0, "nats.servers");
    }

    #[test]
    fn secrets_never_print() {
        let text = format!(
            "{:?} {:?} {:?}",
            NatsAuth::UserPassword {
                user: "u".into(),
                password: "hunter2".into()
            },
            NatsAuth::Token("tok3n".into()),
            NatsAuth::NkeySeed("SUAseed".into())
        );
        assert!(!text.contains("hunter2") && !text.contains("tok3n") && !text.contains("SUAseed"));
        assert!(text.contains("UserPassword(u,"));
    }
}
