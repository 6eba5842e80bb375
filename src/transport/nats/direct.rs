//! herald's own NATS client, on the driver's mio poll: no thread, no runtime, no queue
//! between the driver and the socket. A frame is written to the server's socket in the
//! driver turn that signed it (or by the raising thread, with `send_on_raise`), and a frame
//! that arrives wakes the driver through the poll itself, so a frame crosses each node with
//! no thread hand-off. This is what makes the latency over NATS close to raw NATS's
//! (docs/architecture.md, "herald over NATS beside raw NATS").
//!
//! It speaks the plain-text client protocol (`proto.rs`) over TCP: `CONNECT` with user and
//! password, token, NKey or JWT credentials, two subscriptions, `PUB` per frame, `PING`
//! keep-alives, reconnection with backoff across the configured servers and those the
//! cluster announces, TLS (`tls.rs`) trusting `nats.tls_ca_file` or the system's
//! authorities. Host names are looked up on a thread of their own (`link.rs`), so a DNS
//! server that does not answer never holds up the driver.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::Interest;

use super::proto::{self, ServerOp};
use super::{NatsConfig, NatsStats};
use crate::sync::plain::Ordering;
use crate::transport::{FrameBatch, PeerAddr, RecvStatus, Registry, SendError, Token};

mod auth;
mod link;
pub(super) mod tls;

use auth::{Credentials, credentials, host_port};

/// Subscription ids: the cluster's subject and this node's.
const SID_CLUSTER: u64 = 1;
const SID_NODE: u64 = 2;

/// How often a quiet connection is asked whether it is alive; two unanswered asks end it.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Frames one `recv` hands over at most before it lets the driver send.
const RECV_BUDGET: usize = 1024;

/// How much one read asks the socket for.
const READ_CHUNK: usize = 64 * 1024;

/// A payload larger than this is refused whatever the server announces (herald's frames are
/// at most 64 KiB).
const MAX_PAYLOAD: usize = 8 << 20;

/// How long closing waits for queued frames to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection; the next attempt is due at this time.
    Down { retry_at: Instant },
    /// The server's name is being looked up on a thread of its own (`Direct::lookup`),
    /// until the deadline; its answer is looked for at `check`.
    Resolving { deadline: Instant, check: Instant },
    /// Connecting, or waiting for the server's `INFO`, until the deadline.
    Greeting { deadline: Instant },
    /// `CONNECT` sent: the server's `PONG` says the credentials were taken.
    Authenticating { deadline: Instant },
    /// Frames flow.
    Ready,
}

/// The answer of a name lookup running on a thread of its own.
type Lookup = crossbeam_channel::Receiver<io::Result<Vec<SocketAddr>>>;

/// Why a connection could not be used (the first connection turns these into errors).
#[derive(Debug)]
enum Fatal {
    Refused(String),
    /// TLS is required and nothing to trust could be loaded.
    NoTrust(String),
}

/// The driver's NATS connection.
pub(super) struct Direct {
    servers: Vec<String>,
    next_server: usize,
    attempts: usize,
    credentials: Credentials,
    name: String,
    connect_timeout: Duration,
    subjects: [String; 2],
    /// `<prefix>.<cluster>.frames`, as bytes for `PUB`.
    cluster_subject: Vec<u8>,
    /// `<prefix>.<cluster>.node.` (its first `node_prefix_len` bytes), to which a node id is
    /// appended.
    node_prefix: Vec<u8>,
    node_prefix_len: usize,
    /// Why the last connection or attempt ended (for the first connection's error).
    last_failure: String,
    phase: Phase,
    stream: Option<mio::net::TcpStream>,
    /// TLS settings (`nats.tls_ca_file`, or the system's authorities for `tls://` servers
    /// and servers that require TLS): every connection is then a TLS session.
    tls: Option<crate::sync::plain::Arc<rustls::ClientConfig>>,
    /// The TLS session of this connection, once the server's `INFO` has come.
    session: Option<rustls::ClientConnection>,
    /// The current server's host, as configured or announced (checked against its
    /// certificate).
    host: String,
    server: Option<SocketAddr>,
    /// The name being looked up (`host:port`), and where its answer comes.
    lookup: Option<(String, Lookup)>,
    registry: Option<(Registry, Token)>,
    /// Commands not yet written; `written` of them are.
    out: Vec<u8>,
    written: usize,
    /// Bytes of commands beyond which sending pushes back (at half) and then refuses.
    out_limit: usize,
    inbuf: BytesMut,
    max_payload: usize,
    pings_out: u32,
    next_ping: Instant,
    error_log: super::ErrorLog,
    /// Set by a fault the first connection must report (credentials refused, TLS required
    /// with nothing to trust).
    fatal: Option<Fatal>,
    stats: NatsStats,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct")
            .field("server", &self.server)
            .field("phase", &self.phase)
            .field("queued", &(self.out.len() - self.written))
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// Connects to one of the servers, within `config.connect_timeout`.
    ///
    /// # Errors
    ///
    /// Credentials that cannot be read or that the server refuses, TLS wanted or required
    /// with no certificate authority to trust, or no server reachable in time.
    pub(super) fn connect(config: &NatsConfig, cluster: &str, node: u64) -> io::Result<Self> {
        let credentials = credentials(&config.auth)?;
        let mut servers = Vec::new();
        for s in &config.servers {
            let (host, port) = host_port(s).map_err(|problem| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("nats.servers: {problem}"),
                )
            })?;
            servers.push(format!("{host}:{port}"));
        }
        let node_prefix = format!("{}.{cluster}.node.", config.subject_prefix).into_bytes();
        let now = Instant::now();
        let mut me = Self {
            servers,
            next_server: 0,
            attempts: 0,
            credentials,
            name: format!("herald {cluster} node {node}"),
            connect_timeout: config.connect_timeout,
            subjects: [
                config.cluster_subject(cluster),
                config.node_subject(cluster, node),
            ],
            cluster_subject: config.cluster_subject(cluster).into_bytes(),
            node_prefix_len: node_prefix.len(),
            node_prefix,
            last_failure: String::from("no answer"),
            phase: Phase::Down { retry_at: now },
            stream: None,
            tls: match &config.tls_ca_file {
                Some(ca) => Some(tls::client_config(ca)?),
                None if config.servers.iter().any(|s| s.starts_with("tls://")) => {
                    Some(tls::system_config()?)
                }
                // Plain text, unless a server requires TLS (then the system's authorities).
                None => None,
            },
            session: None,
            host: String::new(),
            server: None,
            lookup: None,
            registry: None,
            out: Vec::with_capacity(64 * 1024),
            written: 0,
            out_limit: config.queue_frames.saturating_mul(1536).max(1 << 20),
            inbuf: BytesMut::with_capacity(2 * READ_CHUNK),
            max_payload: MAX_PAYLOAD,
            pings_out: 0,
            next_ping: now + PING_INTERVAL,
            error_log: super::ErrorLog::default(),
            fatal: None,
            stats: config.stats(),
        };
        me.first_connection(config)?;
        Ok(me)
    }

    /// Registers with the driver's poll.
    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if let Some(stream) = &mut self.stream {
            registry.register(stream, token, Interest::READABLE | Interest::WRITABLE)?;
        }
        self.registry = Some((registry.try_clone()?, token));
        Ok(())
    }

    fn queued(&self) -> usize {
        self.out.len() - self.written
    }

    /// Queues one `PUB`, refusing it when the queue is full.
    fn queue(&mut self, subject: Subject, frame: &[u8]) -> Result<(), io::Error> {
        if self.queued() >= self.out_limit {
            self.stats.0.publish_errors.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "nats publish queue full: no server connected, or the server is slow",
            ));
        }
        match subject {
            Subject::Cluster => proto::write_pub(&mut self.out, &self.cluster_subject, frame),
            Subject::Node(node) => {
                // The node prefix with the id appended, in a buffer kept for it.
                self.node_prefix.truncate(self.node_prefix_len);
                self.node_prefix
                    .extend_from_slice(node_digits(node).as_slice());
                proto::write_pub(&mut self.out, &self.node_prefix, frame);
            }
        }
        let c = &self.stats.0;
        c.published.fetch_add(1, Ordering::Relaxed);
        c.bytes_out.fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let result = self.queue(Subject::Cluster, frame);
        self.flush();
        result.map_err(|last| SendError { failed: 1, last })
    }

    pub(super) fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        let mut failed = 0;
        let mut last = None;
        for frame in batch.iter() {
            if let Err(e) = self.queue(Subject::Cluster, frame) {
                failed += 1;
                last = Some(e);
            }
        }
        // One write for the whole batch.
        self.flush();
        match last {
            None => Ok(()),
            Some(last) => Err(SendError { failed, last }),
        }
    }

    pub(super) fn send_to(&mut self, peer: &PeerAddr, frame: &[u8]) -> Result<(), SendError> {
        let subject = match peer {
            PeerAddr::Channel(node) => Subject::Node(*node),
            _ => Subject::Cluster,
        };
        let result = self.queue(subject, frame);
        self.flush();
        result.map_err(|last| SendError { failed: 1, last })
    }

    pub(super) fn recv(
        &mut self,
        deliver: &mut dyn FnMut(Bytes, PeerAddr),
    ) -> io::Result<RecvStatus> {
        self.service(Instant::now());
        if self.phase != Phase::Ready {
            return Ok(RecvStatus::Drained);
        }
        let mut taken = 0;
        loop {
            // What is already buffered first.
            while taken < RECV_BUDGET {
                match self.next_op() {
                    Ok(Some(Incoming::Frame(frame))) => {
                        taken += 1;
                        let from =
                            super::sender_node(&frame).map_or(PeerAddr::Unknown, PeerAddr::Channel);
                        deliver(frame, from);
                    }
                    Ok(Some(Incoming::Handled)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        self.lost(&format!("the server sent what is not the protocol: {e}"));
                        return Ok(RecvStatus::Drained);
                    }
                }
            }
            if taken >= RECV_BUDGET {
                self.flush();
                return Ok(RecvStatus::MoreWaiting);
            }
            match self.read() {
                Ok(true) => {}
                Ok(false) => break,
                Err(reason) => {
                    self.lost(&reason);
                    break;
                }
            }
        }
        // Answers (PONG) go out now.
        self.flush();
        Ok(RecvStatus::Drained)
    }

    pub(super) fn backpressure(&self) -> bool {
        self.queued() > self.out_limit / 2
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Down { retry_at } => Some(retry_at),
            Phase::Resolving { deadline, check } => Some(deadline.min(check)),
            Phase::Greeting { deadline } | Phase::Authenticating { deadline } => Some(deadline),
            Phase::Ready => Some(self.next_ping),
        }
    }

    /// Reads what the socket has into the buffer: whether anything came, or why the
    /// connection is lost.
    fn read(&mut self) -> Result<bool, String> {
        let Some(stream) = &mut self.stream else {
            return Ok(false);
        };
        if let Some(session) = &mut self.session {
            return tls::read(session, stream, &mut self.inbuf);
        }
        let len = self.inbuf.len();
        self.inbuf.resize(len + READ_CHUNK, 0);
        let result = stream.read(&mut self.inbuf[len..]);
        let n = match &result {
            Ok(n) => *n,
            Err(_) => 0,
        };
        self.inbuf.truncate(len + n);
        match result {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Takes the next whole operation from the buffer and acts on it.
    fn next_op(&mut self) -> Result<Option<Incoming>, proto::ProtoError> {
        let Some((op, used)) = proto::parse(&self.inbuf, self.max_payload)? else {
            return Ok(None);
        };
        let chunk = self.inbuf.split_to(used);
        match op {
            ServerOp::Msg { sid, payload } => {
                if sid != SID_CLUSTER && sid != SID_NODE {
                    return Ok(Some(Incoming::Handled));
                }
                let frame = chunk.freeze().slice(payload);
                let c = &self.stats.0;
                c.received.fetch_add(1, Ordering::Relaxed);
                c.bytes_in.fetch_add(frame.len() as u64, Ordering::Relaxed);
                Ok(Some(Incoming::Frame(frame)))
            }
            ServerOp::Ping => {
                self.out.extend_from_slice(b"PONG\r\n");
                Ok(Some(Incoming::Handled))
            }
            ServerOp::Pong => {
                self.pings_out = 0;
                if let Phase::Authenticating { .. } = self.phase {
                    self.ready();
                }
                Ok(Some(Incoming::Handled))
            }
            ServerOp::Ok => Ok(Some(Incoming::Handled)),
            ServerOp::Err(text) => {
                self.server_error(text);
                Ok(Some(Incoming::Handled))
            }
            ServerOp::Info(info) => {
                self.info(info);
                Ok(Some(Incoming::Handled))
            }
        }
    }

    /// Writes what is queued, as far as the socket takes it. Before the handshake nothing
    /// is written (the `CONNECT` must come first).
    fn flush(&mut self) {
        if matches!(
            self.phase,
            Phase::Down { .. } | Phase::Resolving { .. } | Phase::Greeting { .. }
        ) {
            return;
        }
        let Some(stream) = &mut self.stream else {
            return;
        };
        if let Some(session) = &mut self.session {
            // The session takes what its buffer holds and writes what the socket takes;
            // the rest waits for the socket to be writable again.
            loop {
                match tls::write(session, stream, &self.out[self.written..]) {
                    Ok(0) => break,
                    Ok(n) => self.written += n,
                    Err(reason) => {
                        self.lost(&reason);
                        return;
                    }
                }
                if self.written == self.out.len() || session.wants_write() {
                    break;
                }
            }
        }
        while self.session.is_none() && self.written < self.out.len() {
            match stream.write(&self.out[self.written..]) {
                Ok(0) => {
                    self.lost("the connection takes no more bytes");
                    return;
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(&e.to_string());
                    return;
                }
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > 1 << 20 {
            self.out.drain(..self.written);
            self.written = 0;
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        // Publishes what is queued, for a bounded time when the server is slow or gone.
        let deadline = Instant::now() + CLOSE_WAIT;
        while self.queued() > 0 && self.phase == Phase::Ready && Instant::now() < deadline {
            self.flush();
            if self.queued() > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if self.queued() > 0 {
            tracing::warn!("nats: frames still queued at shutdown were not published (no server)");
        }
        self.drop_connection();
        self.stats.0.connected.store(false, Ordering::Relaxed);
    }
}

/// A subject a frame goes to.
enum Subject {
    Cluster,
    Node(u64),
}

/// What one buffered operation turned out to be.
enum Incoming {
    Frame(Bytes),
    Handled,
}

/// The decimal digits of `n`.
fn node_digits(mut n: u64) -> DigitBuf {
    let mut buf = DigitBuf([0; 20], 20);
    loop {
        buf.1 -= 1;
        buf.0[buf.1] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf
}

struct DigitBuf([u8; 20], usize);

impl DigitBuf {
    fn as_slice(&self) -> &[u8] {
        &self.0[self.1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_subjects_are_written_in_decimal() {
        assert_eq!(node_digits(0).as_slice(), b"0");
        assert_eq!(node_digits(u64::MAX).as_slice(), b"18446744073709551615");
        assert_eq!(node_digits(42).as_slice(), b"42");
    }
}
