//! herald over NATS (feature `nats`): frames travel unchanged as NATS core messages.
//!
//! Every frame for the whole cluster is one message on `<prefix>.<cluster>.frames`; a frame
//! for one node (a status, a request for lost frames, a frame sent again) is one message on
//! that node's subject `<prefix>.<cluster>.node.<id>`. NATS core pub/sub delivers at most
//! once; herald's signing, sequencing, gap detection and recovery do the rest, exactly as
//! over UDP. A frame's sender is read from its header only to address the answer: herald
//! verifies every frame afterwards, so a forged sender id earns nothing but a dropped frame.
//!
//! Two clients carry the frames ([`NatsClient`]): herald's own, on the driver's poll
//! (`direct.rs`, over the protocol of `proto.rs`), which hands no frame between threads;
//! and the official `async-nats` client on a runtime thread of its own (`threaded.rs`,
//! `client.rs`), which can also trust the system's certificate authorities.

mod client;
mod direct;
mod proto;
mod stats;
mod threaded;

pub use stats::NatsStats;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::{DriverWaker, FrameBatch, PeerAddr, RecvStatus, Registry, SendError, Token, Transport};

/// The subject prefix when none is set.
pub const DEFAULT_SUBJECT_PREFIX: &str = "herald";

/// How long closing waits for queued frames to be published.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Frames one [`Transport::recv`] hands over at most before it lets the driver send.
const RECV_BUDGET: usize = 1024;

/// Which client carries the frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsClient {
    /// herald's own client, [`Driver`](Self::Driver). The default; a name kept so that
    /// configurations saying `auto` follow the better client if that ever changes.
    #[default]
    Auto,
    /// herald's own client, on the driver's poll: a frame is written to the server's socket
    /// by the thread that signed it and read by the driver that checks it, with no thread
    /// hand-off on either side (the lower latency). TLS trusts the certificate authorities
    /// of [`NatsConfig::tls_ca_file`] or, without it, the system's.
    Driver,
    /// The official `async-nats` client on a runtime thread of its own, reached through
    /// queues (one thread hand-off each way).
    AsyncNats,
}

impl NatsClient {
    /// The config file's name for it (`nats.client`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Driver => "driver",
            Self::AsyncNats => "async-nats",
        }
    }
}

impl std::str::FromStr for NatsClient {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "driver" => Ok(Self::Driver),
            "async-nats" => Ok(Self::AsyncNats),
            other => Err(format!(
                "{other:?} is not a NATS client: use \"auto\" (the default), \"driver\" or \"async-nats\""
            )),
        }
    }
}

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
    /// Which client carries the frames. Default [`NatsClient::Auto`].
    pub client: NatsClient,
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
            client: NatsClient::Auto,
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

/// The NATS protocol reader, for the `nats_proto` fuzz target only.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    pub use super::proto::{StreamRead, read_stream};
}

/// herald's NATS transport. Build it with [`NatsTransport::connect`] and add it with
/// [`RouterBuilder::transport`](crate::RouterBuilder::transport), or let the builder do both
/// with [`RouterBuilder::nats`](crate::RouterBuilder::nats).
pub struct NatsTransport {
    client: Client,
    stats: NatsStats,
}

enum Client {
    Driver(Box<direct::Direct>),
    AsyncNats(Box<threaded::Threaded>),
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("NatsTransport");
        match &self.client {
            Client::Driver(c) => d.field("driver", c),
            Client::AsyncNats(c) => d.field("async_nats", c),
        };
        d.field("stats", &self.stats).finish()
    }
}

impl NatsTransport {
    /// Connects to one of `config.servers` with the client `config.client` picks, and
    /// subscribes to the cluster's subject and to node `node`'s. Later losses of the
    /// connection are repaired in the background (reconnection with backoff, failover
    /// across the servers and those the cluster announces).
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
        let client = match config.client {
            NatsClient::Auto | NatsClient::Driver => {
                Client::Driver(Box::new(direct::Direct::connect(config, cluster, node)?))
            }
            NatsClient::AsyncNats => Client::AsyncNats(Box::new(threaded::Threaded::connect(
                config, cluster, node,
            )?)),
        };
        let me = Self {
            client,
            stats: config.stats(),
        };
        tracing::info!(
            client = me.client().as_str(),
            servers = %config.servers.join(", "),
            subject = %config.cluster_subject(cluster),
            "nats connected"
        );
        Ok(me)
    }

    /// This transport's counters.
    pub fn stats(&self) -> NatsStats {
        self.stats.clone()
    }

    /// The client that carries the frames ([`NatsClient::Driver`] or
    /// [`NatsClient::AsyncNats`]; never `Auto`).
    pub fn client(&self) -> NatsClient {
        match self.client {
            Client::Driver(_) => NatsClient::Driver,
            Client::AsyncNats(_) => NatsClient::AsyncNats,
        }
    }
}

impl Transport for NatsTransport {
    fn name(&self) -> &str {
        "nats"
    }

    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        waker: DriverWaker,
    ) -> io::Result<()> {
        match &mut self.client {
            Client::Driver(c) => {
                c.register(registry, token)?;
                // What arrived with the handshake's last read waits in the buffer, where the
                // poll cannot see it.
                waker.wake();
                Ok(())
            }
            Client::AsyncNats(c) => c.register(registry, token, waker),
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        match &mut self.client {
            Client::Driver(c) => c.send(frame),
            Client::AsyncNats(c) => c.send(frame),
        }
    }

    fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        match &mut self.client {
            Client::Driver(c) => c.send_batch(batch),
            Client::AsyncNats(c) => c.send_batch(batch),
        }
    }

    fn send_to(&mut self, peer: &PeerAddr, frame: &[u8]) -> Result<(), SendError> {
        match &mut self.client {
            Client::Driver(c) => c.send_to(peer, frame),
            Client::AsyncNats(c) => c.send_to(peer, frame),
        }
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        match &mut self.client {
            Client::Driver(c) => c.recv(deliver),
            Client::AsyncNats(c) => c.recv(deliver),
        }
    }

    fn backpressure(&self) -> bool {
        match &self.client {
            Client::Driver(c) => c.backpressure(),
            Client::AsyncNats(c) => c.backpressure(),
        }
    }

    fn next_timeout(&self) -> Option<std::time::Instant> {
        match &self.client {
            Client::Driver(c) => c.next_timeout(),
            Client::AsyncNats(c) => c.next_timeout(),
        }
    }
}

/// Server errors in the log: one line a second at most, with the count of those left out
/// (a user without publish rights gets an error for every frame).
#[derive(Debug, Default)]
pub(super) struct ErrorLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl ErrorLog {
    pub(super) fn log(&mut self, server: &dyn fmt::Debug, text: &str) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        let hint = if text.to_lowercase().contains("permissions violation") {
            "the NATS user lacks publish or subscribe rights on <prefix>.<cluster>.>: grant \
             both (docs/operations.md, herald on NATS)"
        } else {
            ""
        };
        tracing::warn!(
            server = ?server,
            error = %text,
            hint,
            suppressed = self.suppressed,
            "nats server error"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The sender's node id of a frame (header bytes 24..32), if it is long enough to have one.
pub(super) fn sender_node(frame: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = frame.get(24..32)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
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
    fn server_errors_are_logged_once_a_second() {
        let mut log = ErrorLog::default();
        log.log(&"s", "Permissions Violation for Publish to herald.c.frames");
        log.log(&"s", "again");
        log.log(&"s", "and again");
        assert_eq!(log.suppressed, 2);
        log.last = log.last.map(|t| t - Duration::from_secs(2));
        log.log(&"s", "later");
        assert_eq!(
            log.suppressed, 0,
            "a second later a line again, with the count"
        );
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
