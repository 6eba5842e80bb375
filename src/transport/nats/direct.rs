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
//! cluster announces. TLS is left to the `async-nats` client (`NatsClient::AsyncNats`),
//! which `NatsClient::Auto` picks when TLS is asked for or a server requires it.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::{Interest, Poll};

use super::client::reconnect_delay;
use super::proto::{self, Connect, Info, ServerOp};
use super::{NatsAuth, NatsConfig, NatsStats};
use crate::sync::plain::Ordering;
use crate::transport::{FrameBatch, PeerAddr, RecvStatus, Registry, SendError, Token};

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

/// Credentials, read once when the transport is built.
enum Credentials {
    None,
    User(String, String),
    Token(String),
    /// An NKey, and the user JWT that goes with it (from a `.creds` file).
    Nkey(Box<nkeys::KeyPair>, Option<String>),
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection; the next attempt is due at this time.
    Down { retry_at: Instant },
    /// Connecting, or waiting for the server's `INFO`, until the deadline.
    Greeting { deadline: Instant },
    /// `CONNECT` sent: the server's `PONG` says the credentials were taken.
    Authenticating { deadline: Instant },
    /// Frames flow.
    Ready,
}

/// Why a connection could not be used (the first connection turns these into errors).
#[derive(Debug)]
enum Fatal {
    Refused(String),
    TlsRequired,
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
    server: Option<SocketAddr>,
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
    /// Set by a fault the first connection must report (credentials refused, TLS required).
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
    /// Credentials that cannot be read or that the server refuses, a server that requires
    /// TLS ([`io::ErrorKind::Unsupported`]: the caller may try the `async-nats` client), or
    /// no server reachable in time.
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
            server: None,
            registry: None,
            out: Vec::with_capacity(64 * 1024),
            written: 0,
            out_limit: config.queue_frames.saturating_mul(1536).max(1 << 20),
            inbuf: BytesMut::with_capacity(2 * READ_CHUNK),
            max_payload: MAX_PAYLOAD,
            pings_out: 0,
            next_ping: now + PING_INTERVAL,
            fatal: None,
            stats: config.stats(),
        };
        me.first_connection(config)?;
        Ok(me)
    }

    /// Drives the connection on a poll of its own until the server has taken the
    /// credentials, trying each server in turn until the connect timeout.
    fn first_connection(&mut self, config: &NatsConfig) -> io::Result<()> {
        let servers = config.servers.join(", ");
        let deadline = Instant::now() + self.connect_timeout;
        let mut poll = Poll::new()?;
        let mut events = mio::Events::with_capacity(8);
        self.registry = Some((poll.registry().try_clone()?, Token(0)));
        loop {
            let now = Instant::now();
            self.service(now);
            if let Some(fatal) = self.fatal.take() {
                self.drop_connection();
                return Err(match fatal {
                    Fatal::Refused(text) => io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "nats connect to {servers}: {text}: the server refused the \
                             credentials: check nats.user and nats.password, nats.token, \
                             nats.creds_file or nats.nkey_seed_file"
                        ),
                    ),
                    Fatal::TlsRequired => io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("nats connect to {servers}: the server requires TLS"),
                    ),
                });
            }
            if self.phase == Phase::Ready {
                break;
            }
            if now >= deadline {
                self.drop_connection();
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "nats connect to {servers}: {}: no server could be reached: \
                         check nats.servers and that they run",
                        self.last_failure
                    ),
                ));
            }
            let wait = self
                .next_timeout()
                .map_or(deadline, |t| t.min(deadline))
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            poll.poll(&mut events, Some(wait))?;
        }
        // The driver's poll takes the socket over in `register`.
        if let Some(stream) = &mut self.stream {
            poll.registry().deregister(stream)?;
        }
        self.registry = None;
        Ok(())
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

    fn server_error(&mut self, text: String) {
        let c = &self.stats.0;
        c.server_errors.fetch_add(1, Ordering::Relaxed);
        let lower = text.to_lowercase();
        if lower.contains("slow consumer") {
            c.slow_consumer.fetch_add(1, Ordering::Relaxed);
        }
        let refused = lower.contains("authorization") || lower.contains("authentication");
        if refused && self.phase != Phase::Ready {
            self.fatal = Some(Fatal::Refused(text.clone()));
        }
        tracing::warn!(server = ?self.server, error = %text, "nats server error");
    }

    /// The server's `INFO`: at the start it opens the handshake; later it announces servers.
    fn info(&mut self, info: Info) {
        for url in &info.connect_urls {
            if let Ok((host, port)) = host_port(url) {
                let s = format!("{host}:{port}");
                if !self.servers.contains(&s) {
                    tracing::debug!(server = %s, "nats server announced");
                    self.servers.push(s);
                }
            }
        }
        if info.max_payload > 0 {
            self.max_payload = info.max_payload.min(MAX_PAYLOAD);
        }
        if info.ldm {
            tracing::info!(server = ?self.server, "nats server entering lame duck mode");
        }
        let Phase::Greeting { deadline } = self.phase else {
            return;
        };
        if info.tls_required {
            self.fatal = Some(Fatal::TlsRequired);
            tracing::warn!(
                server = ?self.server,
                "nats server requires TLS, which herald's own client does not speak: set \
                 nats.tls_ca_file or nats.client = \"async-nats\""
            );
            self.lost("the server requires TLS");
            return;
        }
        let mut hello = Vec::with_capacity(512);
        let signature;
        let mut connect = Connect {
            name: &self.name,
            lang: "rust-herald",
            version: env!("CARGO_PKG_VERSION"),
            protocol: 1,
            ..Connect::default()
        };
        let public;
        match &self.credentials {
            Credentials::None => {}
            Credentials::User(user, pass) => {
                connect.user = Some(user);
                connect.pass = Some(pass);
            }
            Credentials::Token(token) => connect.auth_token = Some(token),
            Credentials::Nkey(key, jwt) => {
                use base64::Engine as _;
                let nonce = info.nonce.as_deref().unwrap_or_default();
                signature = key
                    .sign(nonce.as_bytes())
                    .map(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s))
                    .unwrap_or_default();
                connect.sig = Some(&signature);
                match jwt {
                    Some(jwt) => connect.jwt = Some(jwt),
                    None => {
                        public = key.public_key();
                        connect.nkey = Some(&public);
                    }
                }
            }
        }
        proto::write_connect(&mut hello, &connect);
        hello.extend_from_slice(b"PING\r\n");
        proto::write_sub(&mut hello, &self.subjects[0], SID_CLUSTER);
        proto::write_sub(&mut hello, &self.subjects[1], SID_NODE);
        // What was queued while there was no connection follows the handshake.
        hello.extend_from_slice(&self.out[self.written..]);
        self.out = hello;
        self.written = 0;
        self.phase = Phase::Authenticating { deadline };
    }

    fn ready(&mut self) {
        self.phase = Phase::Ready;
        self.attempts = 0;
        self.pings_out = 0;
        self.next_ping = Instant::now() + PING_INTERVAL;
        let c = &self.stats.0;
        c.connected.store(true, Ordering::Relaxed);
        if c.connects.fetch_add(1, Ordering::Relaxed) > 0 {
            tracing::info!(server = ?self.server, "nats reconnected");
        }
    }

    /// Timers and the handshake: called at the start of every `recv`.
    fn service(&mut self, now: Instant) {
        match self.phase {
            Phase::Down { retry_at } if now >= retry_at => self.dial(now),
            Phase::Greeting { deadline } | Phase::Authenticating { deadline } => {
                if now >= deadline {
                    self.lost("no answer from the server in time");
                    return;
                }
                // Until the server is Ready, `recv` reads only here.
                loop {
                    match self.next_op() {
                        Ok(Some(_)) if self.phase == Phase::Ready => return,
                        Ok(Some(_)) => {}
                        Ok(None) => match self.read() {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(reason) => {
                                self.lost(&reason);
                                return;
                            }
                        },
                        Err(e) => {
                            self.lost(&format!("the server sent what is not the protocol: {e}"));
                            return;
                        }
                    }
                    if self.fatal.is_some()
                        || !matches!(
                            self.phase,
                            Phase::Greeting { .. } | Phase::Authenticating { .. }
                        )
                    {
                        break;
                    }
                }
                self.flush();
            }
            Phase::Ready if now >= self.next_ping => {
                if self.pings_out >= 2 {
                    self.lost("the server stopped answering pings");
                    return;
                }
                self.pings_out += 1;
                self.out.extend_from_slice(b"PING\r\n");
                self.next_ping = now + PING_INTERVAL;
                self.flush();
            }
            _ => {}
        }
    }

    /// Starts connecting to the next server.
    fn dial(&mut self, now: Instant) {
        let count = self.servers.len().max(1);
        let target = self.servers[self.next_server % count].clone();
        self.next_server = (self.next_server + 1) % count;
        self.attempts += 1;
        let addr = match target.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => addr,
            Ok(None) | Err(_) => {
                tracing::debug!(server = %target, "nats server name does not resolve");
                self.last_failure = format!("{target} does not resolve");
                self.phase = Phase::Down {
                    retry_at: now + reconnect_delay(self.attempts),
                };
                return;
            }
        };
        match mio::net::TcpStream::connect(addr) {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                if let Some((registry, token)) = &self.registry
                    && let Err(e) = registry.register(
                        &mut stream,
                        *token,
                        Interest::READABLE | Interest::WRITABLE,
                    )
                {
                    tracing::warn!(error = %e, "nats: cannot register the connection");
                }
                self.stream = Some(stream);
                self.server = Some(addr);
                self.inbuf.clear();
                self.phase = Phase::Greeting {
                    deadline: now + self.connect_timeout.min(Duration::from_secs(5)),
                };
            }
            Err(e) => {
                tracing::debug!(server = %addr, error = %e, "nats connect failed");
                self.last_failure = e.to_string();
                self.phase = Phase::Down {
                    retry_at: now + reconnect_delay(self.attempts),
                };
            }
        }
    }

    /// The connection is gone: count it, drop what was in flight, and retry with backoff.
    fn lost(&mut self, reason: &str) {
        let was_ready = self.phase == Phase::Ready;
        reason.clone_into(&mut self.last_failure);
        self.drop_connection();
        // A command may have been cut in the middle: what was queued is dropped (receivers
        // recover those frames or report them), so the next connection starts clean.
        self.out.clear();
        self.written = 0;
        let now = Instant::now();
        self.phase = Phase::Down {
            retry_at: now + reconnect_delay(self.attempts),
        };
        if was_ready {
            let c = &self.stats.0;
            c.connected.store(false, Ordering::Relaxed);
            c.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(server = ?self.server, %reason, "nats connection lost; reconnecting with backoff");
        } else {
            tracing::debug!(server = ?self.server, %reason, attempts = self.attempts, "nats connection attempt failed");
        }
    }

    fn drop_connection(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            if let Some((registry, _)) = &self.registry {
                let _ = registry.deregister(&mut stream);
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.inbuf.clear();
    }

    /// Writes what is queued, as far as the socket takes it. Before the handshake nothing
    /// is written (the `CONNECT` must come first).
    fn flush(&mut self) {
        if matches!(self.phase, Phase::Down { .. } | Phase::Greeting { .. }) {
            return;
        }
        let Some(stream) = &mut self.stream else {
            return;
        };
        while self.written < self.out.len() {
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

/// `nats://host:port`, `host:port` or `host` (port 4222) as host and port.
fn host_port(server: &str) -> Result<(String, u16), String> {
    let rest = match server.split_once("://") {
        Some(("nats", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{server:?}: herald's own NATS client speaks nats://, not {scheme}://"
            ));
        }
        None => server,
    };
    // Credentials in the URL are not supported here: the [nats] keys hold them.
    if rest.contains('@') {
        return Err(format!(
            "{server:?}: put credentials in nats.user / nats.password or nats.token, not in \
             the URL"
        ));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            match port.parse::<u16>() {
                Ok(port) => (host, port),
                Err(_) => return Err(format!("{server:?}: the port is not a number")),
            }
        }
        _ => (rest, 4222),
    };
    if host.is_empty() {
        return Err(format!("{server:?} names no host"));
    }
    Ok((host.to_owned(), port))
}

/// Reads the credentials the config names.
fn credentials(auth: &NatsAuth) -> io::Result<Credentials> {
    let invalid = |key: &str, e: &dyn fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{key}: {e}"))
    };
    Ok(match auth {
        NatsAuth::None => Credentials::None,
        NatsAuth::UserPassword { user, password } => {
            Credentials::User(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => Credentials::Token(token.clone()),
        NatsAuth::NkeySeed(seed) => Credentials::Nkey(
            Box::new(
                nkeys::KeyPair::from_seed(seed.trim())
                    .map_err(|e| invalid("nats.nkey_seed", &e))?,
            ),
            None,
        ),
        NatsAuth::NkeySeedFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("nats.nkey_seed_file: cannot read {}: {e}", path.display()),
                )
            })?;
            let seed = text.lines().next().unwrap_or_default().trim();
            Credentials::Nkey(
                Box::new(
                    nkeys::KeyPair::from_seed(seed)
                        .map_err(|e| invalid("nats.nkey_seed_file", &e))?,
                ),
                None,
            )
        }
        NatsAuth::CredsFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("nats.creds_file: cannot use {}: {e}", path.display()),
                )
            })?;
            let (jwt, seed) = parse_creds(&text).ok_or_else(|| {
                invalid(
                    "nats.creds_file",
                    &format!(
                        "{} holds no user JWT and NKey seed (as `nsc` writes them)",
                        path.display()
                    ),
                )
            })?;
            Credentials::Nkey(
                Box::new(
                    nkeys::KeyPair::from_seed(&seed).map_err(|e| invalid("nats.creds_file", &e))?,
                ),
                Some(jwt),
            )
        }
    })
}

/// The user JWT and the NKey seed of a `.creds` file: the first line of text after the
/// `BEGIN NATS USER JWT` marker and after the `BEGIN USER NKEY SEED` marker.
fn parse_creds(text: &str) -> Option<(String, String)> {
    let after = |marker: &str| {
        let mut lines = text.lines().skip_while(|l| !l.contains(marker));
        lines.next()?;
        lines
            .map(str::trim)
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with('-'))
            .map(str::to_owned)
    };
    Some((
        after("BEGIN NATS USER JWT")?,
        after("BEGIN USER NKEY SEED")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse_with_a_default_port() {
        assert_eq!(
            host_port("nats://10.0.0.5:4223"),
            Ok(("10.0.0.5".into(), 4223))
        );
        assert_eq!(host_port("localhost"), Ok(("localhost".into(), 4222)));
        assert_eq!(host_port("nats://[::1]:5000"), Ok(("[::1]".into(), 5000)));
        assert!(host_port("tls://x:1").unwrap_err().contains("tls://"));
        assert!(
            host_port("nats://u:p@x:1")
                .unwrap_err()
                .contains("nats.user")
        );
        assert!(host_port("nats://x:port").is_err());
        assert!(host_port("nats://:1").is_err());
    }

    #[test]
    fn a_creds_file_gives_its_jwt_and_seed() {
        let text = "-----BEGIN NATS USER JWT-----\neyJ0eXAi.abc.def\n------END NATS USER JWT------\n\n\
                    ************************* IMPORTANT *************************\n\
                    NKEY Seed printed below can be used to sign and prove identity.\n\n\
                    -----BEGIN USER NKEY SEED-----\nSUAEXAMPLE\n------END USER NKEY SEED------\n";
        assert_eq!(
            parse_creds(text),
            Some(("eyJ0eXAi.abc.def".into(), "SUAEXAMPLE".into()))
        );
        assert_eq!(parse_creds("nothing here"), None);
        assert_eq!(
            parse_creds("-----BEGIN NATS USER JWT-----\n------END NATS USER JWT------\n"),
            None
        );
    }

    #[test]
    fn node_subjects_are_written_in_decimal() {
        assert_eq!(node_digits(0).as_slice(), b"0");
        assert_eq!(node_digits(u64::MAX).as_slice(), b"18446744073709551615");
        assert_eq!(node_digits(42).as_slice(), b"42");
    }
}
