//! The local control channel: a Unix socket beside the config file (mode 0600), through which
//! `herald raise`, `tail`, `status` and `members` reach the node running with that file,
//! instead of starting a second node on the same ports.
//!
//! One request per connection, a line of JSON; the answer is one line of JSON, or for `tail`
//! a line per event until the client goes away. The socket's mode is the access control:
//! whoever may open it may raise events as this node.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[cfg(not(unix))]
use crate::CliError;

/// What a tool asks of the node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// The node, its counters and every source of frames it hears.
    Status,
    /// The members as membership sees them (as `/members` on the HTTP side).
    Members,
    /// Raise events as this node and report how far they got.
    Raise(RaiseRequest),
    /// Stream events, Missed notices and membership changes, as `herald tail` prints them.
    Tail {
        /// Only these events (names); empty: all.
        events: Vec<String>,
        /// JSON lines instead of text.
        json: bool,
    },
}

/// `herald raise` through the node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RaiseRequest {
    pub(crate) event: String,
    pub(crate) payload_hex: String,
    pub(crate) count: u64,
    pub(crate) rate: Option<u64>,
    /// How long to wait for the receivers' acknowledgements, in milliseconds.
    pub(crate) wait_ms: u64,
    /// Whether to wait for at least one receiver (the config names peers): a first raise
    /// reaches peers that have not acknowledged anything yet.
    #[serde(default)]
    pub(crate) want_ack: bool,
}

/// The node's answer to a raise: what the ring took, and who acknowledged it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RaiseReply {
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    /// Set when the request itself was wrong (payload too long, bad hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) flushed: FlushReport,
}

/// [`herald::Flushed`] for the wire and for `--json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct FlushReport {
    /// Whether every accepted event left the ring in a frame.
    pub(crate) sent: bool,
    /// The last data frame's sequence number.
    pub(crate) sequence: u64,
    pub(crate) acknowledged: Vec<Receiver>,
    pub(crate) behind: Vec<Receiver>,
}

/// A receiver of this node's frames.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Receiver {
    /// Its node id (a string: ids go above 2^53).
    pub(crate) node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<String>,
}

impl FlushReport {
    pub(crate) fn from(f: &herald::Flushed) -> Self {
        let list = |v: &[(u64, Option<herald::transport::PeerAddr>)]| {
            v.iter()
                .map(|(n, a)| Receiver {
                    node: n.to_string(),
                    addr: a.map(|a| peer_addr_text(&a)),
                })
                .collect()
        };
        Self {
            sent: f.sent,
            sequence: f.sequence,
            acknowledged: list(&f.acknowledged),
            behind: list(&f.behind),
        }
    }
}

/// Waits, at most `wait`, until everything raised has been sent and acknowledged by every
/// receiver, and with `want_ack` by at least one (a peer that has never acknowledged is not
/// yet known as a receiver: it has a moment to become one).
pub(crate) fn flush_for_report(
    router: &herald::Router,
    wait: std::time::Duration,
    want_ack: bool,
) -> herald::Flushed {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let f = router.flush(left);
        let complete = f.sent && f.behind.is_empty();
        if (complete && (!want_ack || !f.acknowledged.is_empty())) || left.is_zero() {
            return f;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// An address as a person reads it.
pub(crate) fn peer_addr_text(a: &herald::transport::PeerAddr) -> String {
    use herald::transport::PeerAddr;
    match a {
        PeerAddr::Socket(s) => s.to_string(),
        PeerAddr::Channel(n) => format!("connection {n}"),
        _ => "unknown".to_owned(),
    }
}

/// Where the node running with the config file `file` listens for tools.
pub(crate) fn socket_path(config: &herald::Config, file: &Path) -> PathBuf {
    config.control.path(file)
}

#[cfg(unix)]
pub(crate) use unix::{Client, Server, ServerContext};

#[cfg(unix)]
mod unix {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use herald::Router;

    use super::{FlushReport, RaiseReply, RaiseRequest, Request};
    use crate::CliError;
    use crate::status::{self, StatusReply};
    use crate::tail::{self, Names};

    /// The most tools connected at once; more are told to come back later.
    const MAX_CLIENTS: usize = 32;
    /// The longest request line.
    const MAX_REQUEST: u64 = 64 << 10;
    /// How long a raise may find the ring full, without progress, before it gives up.
    const FULL_GIVE_UP: Duration = Duration::from_secs(5);

    /// What the server answers from.
    pub(crate) struct ServerContext {
        pub(crate) router: Router,
        /// Event names this node has learned (from raises and tails through this socket).
        pub(crate) names: Names,
        /// The status without its live parts, filled in per request.
        pub(crate) status: Box<dyn Fn() -> StatusReply + Send + Sync>,
    }

    /// The socket's listening thread.
    pub(crate) struct Server {
        path: PathBuf,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        /// Opens the socket at `path` (mode 0600), refusing if a node already answers there,
        /// and serves it on a thread of its own.
        pub(crate) fn start(path: &Path, context: ServerContext) -> Result<Self, String> {
            if path.exists() {
                if UnixStream::connect(path).is_ok() {
                    return Err(format!(
                        "another node already runs with this config: its control socket {} \
                         answers; stop it first, or give this node another [control] socket",
                        path.display()
                    ));
                }
                // Left behind by a node that did not stop cleanly.
                std::fs::remove_file(path).map_err(|e| {
                    format!("cannot remove the stale socket {}: {e}", path.display())
                })?;
            }
            let listener = UnixListener::bind(path).map_err(|e| {
                format!(
                    "cannot open the control socket {}: {e}; set [control] socket to a \
                     writable path (at most 100 bytes long), or [control] enabled = false",
                    path.display()
                )
            })?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot restrict {} to its owner: {e}", path.display()))?;
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let context = Arc::new(context);
            let thread = std::thread::Builder::new()
                .name("herald-control".into())
                .spawn(move || accept_loop(&listener, &flag, &context))
                .map_err(|e| format!("cannot start the control thread: {e}"))?;
            Ok(Self {
                path: path.to_owned(),
                stop,
                thread: Some(thread),
            })
        }

        pub(crate) fn path(&self) -> &Path {
            &self.path
        }

        /// Stops accepting, ends the tails, and removes the socket.
        pub(crate) fn stop(mut self) {
            self.stop.store(true, Ordering::Release);
            let _ = UnixStream::connect(&self.path); // wakes the accepting thread
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn accept_loop(listener: &UnixListener, stop: &Arc<AtomicBool>, context: &Arc<ServerContext>) {
        let clients = Arc::new(AtomicUsize::new(0));
        for stream in listener.incoming() {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let Ok(mut stream) = stream else { continue };
            if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                clients.fetch_sub(1, Ordering::AcqRel);
                let _ = writeln!(
                    stream,
                    "{{\"error\":\"too many tools connected; try again\"}}"
                );
                continue;
            }
            let (context, stop, clients) =
                (Arc::clone(context), Arc::clone(stop), Arc::clone(&clients));
            let spawned = std::thread::Builder::new()
                .name("herald-control-client".into())
                .spawn(move || {
                    if let Err(e) = serve(stream, &context, &stop) {
                        tracing::debug!(error = %e, "control client");
                    }
                    clients.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                tracing::warn!("cannot start a thread for a control client");
            }
        }
    }

    fn serve(
        stream: UnixStream,
        context: &ServerContext,
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut line = String::new();
        BufReader::new(std::io::Read::take(&stream, MAX_REQUEST)).read_line(&mut line)?;
        let mut out = std::io::BufWriter::new(&stream);
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let reply = serde_json::json!({ "error": format!("bad request: {e}") });
                writeln!(out, "{reply}")?;
                return out.flush();
            }
        };
        match request {
            Request::Status => {
                let mut reply = (context.status)();
                status::fill(&mut reply, &context.router);
                writeln!(out, "{}", crate::json::line(&reply))?;
            }
            Request::Members => {
                let body = crate::members::members_json(&context.router)
                    .unwrap_or_else(|| "{\"error\":\"this node runs no [membership]\"}\n".into());
                write!(out, "{body}")?;
            }
            Request::Raise(r) => {
                let reply = raise(&context.router, &context.names, &r);
                writeln!(out, "{}", crate::json::line(&reply))?;
            }
            Request::Tail { events, json } => {
                drop(out);
                context.names.learn(&events);
                let mut writer = std::io::BufWriter::new(&stream);
                // A tool that goes away ends the tail at its next line, or within 200 ms
                // when nothing is streamed: a read then sees the end of its stream.
                stream.set_read_timeout(Some(Duration::from_millis(1)))?;
                let checked = std::cell::Cell::new(Instant::now());
                let alive = || {
                    if stop.load(Ordering::Acquire) {
                        return false;
                    }
                    if checked.get().elapsed() < Duration::from_millis(200) {
                        return true;
                    }
                    checked.set(Instant::now());
                    !matches!(std::io::Read::read(&mut &stream, &mut [0u8; 64]), Ok(0))
                };
                tail::stream(
                    &context.router,
                    &context.names,
                    &events,
                    json,
                    &mut |line| {
                        writeln!(writer, "{line}")
                            .and_then(|()| writer.flush())
                            .is_ok()
                    },
                    &alive,
                );
                return Ok(());
            }
        }
        out.flush()
    }

    fn raise(router: &Router, names: &Names, r: &RaiseRequest) -> RaiseReply {
        let fail = |error: String| RaiseReply {
            error: Some(error),
            ..RaiseReply::default()
        };
        let payload = match crate::raise::parse_hex(&r.payload_hex) {
            Ok(p) => p,
            Err(e) => return fail(e.to_string()),
        };
        let extra = if r.count > 1 { 8 } else { 0 };
        if payload.len() + extra > router.max_payload() {
            return fail(format!(
                "the payload may be at most {} bytes (raise max_frame_len in the node's config \
                 for more)",
                router.max_payload().saturating_sub(extra)
            ));
        }
        names.learn(std::slice::from_ref(&r.event));
        let event = router.event(herald::EventId::from_name(&r.event));
        let mut buf = payload.clone();
        let started = Instant::now();
        let mut reply = RaiseReply::default();
        let mut full_since: Option<Instant> = None;
        let mut i = 0;
        while i < r.count {
            if let Some(rate) = r.rate.filter(|r| *r > 0) {
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            if r.count > 1 {
                buf.truncate(payload.len());
                buf.extend_from_slice(&i.to_le_bytes());
            }
            match event.raise(&buf) {
                Ok(()) => {
                    reply.accepted += 1;
                    full_since = None;
                    i += 1;
                }
                Err(herald::RaiseError::Full) => {
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= FULL_GIVE_UP {
                        reply.refused = r.count - i;
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => {
                    reply.refused = r.count - i;
                    reply.error = Some(e.to_string());
                    break;
                }
            }
        }
        let flushed = super::flush_for_report(router, Duration::from_millis(r.wait_ms), r.want_ack);
        reply.flushed = FlushReport::from(&flushed);
        reply
    }

    /// A tool's end of the socket.
    pub(crate) struct Client {
        stream: UnixStream,
    }

    impl Client {
        /// Connects to the node running with the config whose socket is `path`; `None` when
        /// no node runs there (no socket, or one left behind).
        pub(crate) fn connect(path: &Path) -> Result<Option<Self>, CliError> {
            match UnixStream::connect(path) {
                Ok(stream) => Ok(Some(Self { stream })),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    Ok(None)
                }
                Err(e) => Err(CliError::usage(format!(
                    "cannot open the node's control socket {}: {e}; run this as the user the \
                     node runs as",
                    path.display()
                ))),
            }
        }

        /// Sends `request`; returns the reader of the answer's lines.
        pub(crate) fn ask(self, request: &Request) -> Result<BufReader<UnixStream>, CliError> {
            let mut stream = self.stream;
            let line = crate::json::line(request);
            writeln!(stream, "{line}")
                .map_err(|e| CliError::usage(format!("the node's control socket: {e}")))?;
            Ok(BufReader::new(stream))
        }

        /// Sends `request` and reads the one-line answer.
        pub(crate) fn call(self, request: &Request) -> Result<String, CliError> {
            let mut reader = self.ask(request)?;
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .map_err(|e| CliError::usage(format!("the node's control socket: {e}")))?;
            if line.is_empty() {
                return Err(CliError::usage(
                    "the node closed its control socket without answering",
                ));
            }
            if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&line)
                && let Some(serde_json::Value::String(e)) = o.get("error")
                && o.len() == 1
            {
                return Err(CliError::usage(format!("the node says: {e}")));
            }
            Ok(line)
        }
    }
}

/// On Windows there is no control socket: tools run as nodes of their own.
#[cfg(not(unix))]
pub(crate) struct Client;

#[cfg(not(unix))]
impl Client {
    pub(crate) fn connect(_path: &Path) -> Result<Option<Self>, CliError> {
        Ok(None)
    }

    pub(crate) fn call(self, _request: &Request) -> Result<String, CliError> {
        Err(CliError::usage("no control socket on this platform"))
    }
}
