//! The service thread: a mio loop over the listening socket, the clients, and a waker the
//! router's callbacks ring when they queue an event or a Missed.
//!
//! Each turn: accept, read and run commands, hand queued events to subscribers' output
//! buffers (in queue order, so each client sees events in the order the router delivered
//! them), close idle clients, write what can be written, close what must close. Nothing in
//! the turn waits on a client: writes go as far as the socket takes them, the rest waits in
//! the client's bounded output buffer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, TrySendError};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::commands::{self, Args, Ctx, LogLimit};
use super::conn::{Conn, Filled};
use super::index::Index;
use super::metrics::{Counters, Disconnect};
use super::push::Scratch;
use super::resp::{self, Writer};
use super::tls;
use super::{ServiceConfig, ServiceError};
use crate::event::{EventId, Missed};
use crate::router::{Router, WeakRouter};
use crate::subscription::Subscription;
use crate::sync::plain::{Arc, AtomicBool, AtomicU64, Ordering};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const TLS_LISTENER: Token = Token(2);

mod deliver;

/// What the service thread shares with the router's threads and the [`Service`](super::Service)
/// handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) metrics: Counters,
    /// Set by whoever rings the waker, cleared by the service thread before it drains the
    /// queue: an event queued after the clear rings again, one queued before is drained.
    pending: AtomicBool,
    /// Whether any client listens to anything; the router's callbacks skip all work if not.
    active: AtomicBool,
    /// Events dropped since the last `local_overflow` notice.
    unreported: AtomicU64,
    waker: Waker,
}

impl Shared {
    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    fn queue(&self, tx: &crossbeam_channel::Sender<Inbound>, item: Inbound) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(item) {
            Counters::add(&self.metrics.queue_dropped, 1);
            self.unreported.fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }
}

/// What the router hands the service thread.
enum Inbound {
    Event(EventId, Bytes),
    Missed(Missed),
}

/// Binds, subscribes to the router, and starts the thread.
pub(crate) fn spawn(router: &Router, config: ServiceConfig) -> Result<Spawned, ServiceError> {
    let io = |what: String| move |source| ServiceError::Io { what, source };
    let poll = Poll::new().map_err(io("service poller".into()))?;
    let mut listener = TcpListener::bind(config.listen)
        .map_err(io(format!("service.listen {}", config.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(io(format!("service.listen {}", config.listen)))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(io("service listener".into()))?;
    let tls = match &config.tls {
        Some(settings) => {
            let server_config = tls::server_config(settings)?;
            let what = format!("service.tls_listen {}", settings.listen);
            let mut tls_listener = TcpListener::bind(settings.listen).map_err(io(what.clone()))?;
            let addr = tls_listener.local_addr().map_err(io(what))?;
            poll.registry()
                .register(&mut tls_listener, TLS_LISTENER, Interest::READABLE)
                .map_err(io("service TLS listener".into()))?;
            Some((tls_listener, server_config, addr))
        }
        None => None,
    };
    let tls_addr = tls.as_ref().map(|t| t.2);
    let waker = Waker::new(poll.registry(), WAKER).map_err(io("service waker".into()))?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        metrics: Counters::default(),
        pending: AtomicBool::new(false),
        active: AtomicBool::new(false),
        unreported: AtomicU64::new(0),
        waker,
    });
    let (tx, rx) = crossbeam_channel::bounded(config.delivery_queue);
    let events = {
        let (shared, tx) = (Arc::clone(&shared), tx.clone());
        router.subscribe_all(move |d| {
            if shared.active.load(Ordering::Relaxed) {
                shared.queue(&tx, Inbound::Event(d.event(), d.to_bytes()));
            }
        })
    };
    let missed = {
        let shared = Arc::clone(&shared);
        router.on_missed(move |m| {
            if shared.active.load(Ordering::Relaxed) {
                shared.queue(&tx, Inbound::Missed(m.clone()));
            }
        })
    };
    let index = Index::with_names(config.event_names.iter().map(String::as_str));
    let server = Server {
        poll,
        listener,
        tls: tls.map(|(l, c, _)| (l, c)),
        shared: Arc::clone(&shared),
        rx,
        router: router.downgrade(),
        node: router.node_id(),
        config,
        index,
        conns: HashMap::new(),
        next_token: 3,
        next_id: 1,
        dirty: Vec::new(),
        doomed: Vec::new(),
        again: Vec::new(),
        args: Vec::new(),
        log: LogLimit::default(),
        last_sweep: Instant::now(),
        scratch: Scratch::default(),
        started: Instant::now(),
        port: local_addr.port(),
        _subscriptions: [events, missed],
    };
    let thread = std::thread::Builder::new()
        .name("herald-service".into())
        .spawn(move || server.run())
        .map_err(io("service thread".into()))?;
    match tls_addr {
        Some(tls) => {
            tracing::info!(listen = %local_addr, tls_listen = %tls, "subscription service listening");
        }
        None => tracing::info!(listen = %local_addr, "subscription service listening"),
    }
    Ok(Spawned {
        local_addr,
        tls_addr,
        shared,
        thread,
    })
}

/// What [`spawn`] started.
pub(crate) struct Spawned {
    pub(crate) local_addr: SocketAddr,
    pub(crate) tls_addr: Option<SocketAddr>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) thread: JoinHandle<()>,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    /// The TLS listener and its settings, when configured.
    tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    shared: Arc<Shared>,
    rx: Receiver<Inbound>,
    router: WeakRouter,
    node: u64,
    config: ServiceConfig,
    index: Index,
    conns: HashMap<usize, Conn>,
    next_token: usize,
    next_id: u64,
    /// Connections with output to write this turn.
    dirty: Vec<usize>,
    /// Connections to close at the end of this turn.
    doomed: Vec<usize>,
    /// Connections that had more to read when their read budget ran out.
    again: Vec<usize>,
    /// The argument ranges of the command being parsed (reused).
    args: Vec<Range<usize>>,
    log: LogLimit,
    last_sweep: Instant,
    scratch: Scratch,
    /// When the service started (`INFO`'s uptime).
    started: Instant,
    /// The plain listener's port (`INFO`'s `tcp_port`).
    port: u16,
    _subscriptions: [Subscription; 2],
}

/// How long a client's TCP peer may leave data or keepalive probes unacknowledged before
/// the kernel gives up on it (`TCP_USER_TIMEOUT`): the keepalive schedule's 60 + 3 × 10 s.
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keepalive for clients: first probe after 60 s of silence, then every 10 s; three
/// unanswered probes close the connection (the next read fails and it is counted as
/// `io_error`).
fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3)
}

/// Marks a connection to close at the end of the turn (the first reason wins).
fn doom(doomed: &mut Vec<usize>, token: usize, conn: &mut Conn, why: Disconnect) {
    if conn.closing.is_none() {
        conn.closing = Some(why);
        doomed.push(token);
    }
}

/// Past the limit, first writes what the socket takes (a burst of pushes may exceed the
/// limit within one turn for a client that keeps up); a client still over it is doomed.
fn check_limit(doomed: &mut Vec<usize>, token: usize, conn: &mut Conn, limit: usize) {
    if conn.pending() <= limit {
        return;
    }
    match conn.flush() {
        Ok(_) if conn.pending() <= limit => {}
        Ok(_) => doom(doomed, token, conn, Disconnect::OutputLimit),
        Err(_) => doom(doomed, token, conn, Disconnect::IoError),
    }
}

fn mark_dirty(dirty: &mut Vec<usize>, token: usize, conn: &mut Conn) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(token);
    }
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.rx.is_empty() && self.again.is_empty() {
                self.sweep_interval()
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "service poller failed: the service stops");
                break;
            }
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            self.shared.pending.store(false, Ordering::SeqCst);
            let now = Instant::now();
            for t in std::mem::take(&mut self.again) {
                self.read(t, now);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now, false),
                    TLS_LISTENER => self.accept(now, true),
                    WAKER => {}
                    Token(t) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(t, now);
                        }
                        if event.is_writable()
                            && let Some(conn) = self.conns.get_mut(&t)
                        {
                            mark_dirty(&mut self.dirty, t, conn);
                        }
                    }
                }
            }
            self.deliver();
            self.sweep(now);
            self.flush();
            self.close_doomed();
        }
        let tokens: Vec<usize> = self.conns.keys().copied().collect();
        for t in tokens {
            self.close(t, Disconnect::Shutdown);
        }
    }

    fn sweep_interval(&self) -> Duration {
        self.config
            .idle_timeout
            .map_or(Duration::from_secs(1), |d| {
                (d / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
            })
    }

    fn accept(&mut self, now: Instant, tls: bool) {
        loop {
            let accepted = match (&self.tls, tls) {
                (Some((listener, _)), true) => listener.accept(),
                _ => self.listener.accept(),
            };
            let (mut stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if let Some(suppressed) = self.log.allow(now) {
                        tracing::warn!(error = %e, suppressed, "service: accept failed");
                    }
                    return;
                }
            };
            if self.conns.len() >= self.config.max_connections {
                Counters::add(&self.shared.metrics.refused, 1);
                // Best effort: a fresh socket takes this much without blocking. A TLS client
                // could not read plain text: it just sees the close.
                if !tls {
                    let _ = std::io::Write::write(
                        &mut stream,
                        b"-ERR max number of clients reached (service.max_connections)\r\n",
                    );
                }
                if let Some(suppressed) = self.log.allow(now) {
                    tracing::warn!(%peer, suppressed, "service: max_connections reached, client refused");
                }
                continue;
            }
            let _ = stream.set_nodelay(true);
            // A subscriber may stay silent for days: keepalive probes find a peer that went
            // away without a word (host crash, cable, NAT state lost) within about 90 s, and
            // the user timeout bounds the same wait when pushes sit unacknowledged (where
            // keepalive does not probe).
            let socket = socket2::SockRef::from(&stream);
            let _ = socket.set_tcp_keepalive(&keepalive());
            crate::platform::set_tcp_user_timeout(&socket, DEAD_PEER_TIMEOUT);
            let session = match (&self.tls, tls) {
                (Some((_, config)), true) => {
                    match rustls::ServerConnection::new(Arc::clone(config)) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::warn!(error = %e, "service: cannot start a TLS session");
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let token = self.next_token;
            self.next_token += 1;
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(token), Interest::READABLE)
            {
                tracing::warn!(error = %e, "service: cannot register a client");
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let authed = self.config.password.is_none();
            self.conns
                .insert(token, Conn::new(stream, session, peer, id, authed, now));
            Counters::add(&self.shared.metrics.accepted, 1);
            Counters::add(&self.shared.metrics.open, 1);
            tracing::debug!(%peer, client = id, "service: client connected");
        }
    }

    /// Reads what the client sent (up to a budget) and runs every whole command in it.
    fn read(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let filled = conn.fill(now);
        self.run_commands(token, now);
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match filled {
            // More to read: come back next turn, after the other clients.
            Filled::More => self.again.push(token),
            Filled::Drained => {}
            Filled::Eof => doom(&mut self.doomed, token, conn, Disconnect::ClientClosed),
            Filled::Failed => doom(&mut self.doomed, token, conn, Disconnect::IoError),
            Filled::TlsFailed => {
                if let Some(suppressed) = self.log.allow(now) {
                    let error = conn.tls_error.as_ref().map(ToString::to_string);
                    tracing::warn!(peer = %conn.peer, error, suppressed, "service: TLS handshake or record failed, client closed");
                }
                // rustls queued an alert saying why: the flush below writes it.
                mark_dirty(&mut self.dirty, token, conn);
                doom(&mut self.doomed, token, conn, Disconnect::TlsError);
            }
        }
    }

    /// Runs the whole commands at the start of a client's input, stopping at the first
    /// protocol error or closing command.
    fn run_commands(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut consumed = 0;
        while conn.closing.is_none() {
            let input = conn.input.get(consumed..).unwrap_or_default();
            match resp::parse_command(input, &mut self.args) {
                Ok(Some(n)) => {
                    if !self.args.is_empty() {
                        let mut ctx = Ctx {
                            index: &mut self.index,
                            router: &self.router,
                            config: &self.config,
                            counters: &self.shared.metrics,
                            log: &mut self.log,
                            token,
                            conn_id: conn.id,
                            now,
                            started: self.started,
                            node: self.node,
                            port: self.port,
                        };
                        let args = Args {
                            buf: input,
                            ranges: &self.args,
                        };
                        if let Some(why) =
                            commands::execute(&mut ctx, &mut conn.session, &mut conn.out, args)
                        {
                            doom(&mut self.doomed, token, conn, why);
                        }
                    }
                    consumed += n;
                    let limit = self.config.output_buffer_limit;
                    check_limit(&mut self.doomed, token, conn, limit);
                }
                Ok(None) => break,
                Err(resp::ProtocolError(reason)) => {
                    Counters::add(&self.shared.metrics.protocol_errors, 1);
                    Writer {
                        out: &mut conn.out,
                        resp3: conn.session.resp3,
                    }
                    .error(&format!("ERR Protocol error: {reason}"));
                    if let Some(suppressed) = self.log.allow(now) {
                        tracing::warn!(peer = %conn.peer, reason, suppressed, "service: protocol error, client closed");
                    }
                    doom(&mut self.doomed, token, conn, Disconnect::ProtocolError);
                }
            }
        }
        conn.consume(consumed);
        mark_dirty(&mut self.dirty, token, conn);
        self.tables_changed();
    }

    /// Publishes whether anyone listens and the tables' sizes, after they may have changed.
    fn tables_changed(&self) {
        self.shared
            .active
            .store(!self.index.is_empty(), Ordering::Relaxed);
        self.shared.metrics.set_sizes(self.index.sizes());
    }

    /// Closes clients that have sent nothing for the idle timeout, unless they are
    /// subscribed: a subscriber only listens, as with Redis, and TCP keepalive finds the
    /// dead ones.
    fn sweep(&mut self, now: Instant) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        if now.duration_since(self.last_sweep) < self.sweep_interval() {
            return;
        }
        self.last_sweep = now;
        for (&t, conn) in &mut self.conns {
            if conn.session.count() == 0 && now.duration_since(conn.last_input) >= idle {
                doom(&mut self.doomed, t, conn, Disconnect::IdleTimeout);
            }
        }
    }

    /// Writes what each dirty client's socket takes; watches for writability where output
    /// is left over.
    fn flush(&mut self) {
        for t in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(&t) else {
                continue;
            };
            conn.dirty = false;
            if matches!(
                conn.closing,
                Some(Disconnect::OutputLimit | Disconnect::IoError | Disconnect::IdleTimeout)
            ) {
                continue;
            }
            let done = match conn.flush() {
                Ok(done) => done,
                Err(_) => {
                    doom(&mut self.doomed, t, conn, Disconnect::IoError);
                    continue;
                }
            };
            if done == conn.write_interest {
                let interest = if done {
                    Interest::READABLE
                } else {
                    Interest::READABLE | Interest::WRITABLE
                };
                if self
                    .poll
                    .registry()
                    .reregister(&mut conn.stream, Token(t), interest)
                    .is_err()
                {
                    doom(&mut self.doomed, t, conn, Disconnect::IoError);
                    continue;
                }
                conn.write_interest = !done;
            }
        }
    }

    fn close_doomed(&mut self) {
        for t in std::mem::take(&mut self.doomed) {
            let why = self
                .conns
                .get(&t)
                .and_then(|c| c.closing)
                .unwrap_or(Disconnect::IoError);
            self.close(t, why);
        }
    }

    fn close(&mut self, token: usize, why: Disconnect) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        super::index::shrink_map(&mut self.conns);
        commands::forget_subscriptions(&mut self.index, token, &conn.session);
        self.tables_changed();
        if !matches!(why, Disconnect::IoError | Disconnect::TlsError) {
            conn.close_tls();
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.shared.metrics.disconnected(why);
        if why == Disconnect::OutputLimit
            && let Some(suppressed) = self.log.allow(Instant::now())
        {
            tracing::warn!(
                suppressed,
                peer = %conn.peer,
                client = conn.id,
                pending = conn.pending(),
                "service: client too slow (output buffer over service.output_buffer_limit), disconnected"
            );
        } else {
            tracing::debug!(peer = %conn.peer, client = conn.id, reason = why.name(), "service: client disconnected");
        }
    }
}
