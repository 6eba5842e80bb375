//! The connection's life: the first connection (on a poll of its own), the handshake
//! (`INFO`, then `CONNECT` and the subscriptions, then the server's `PONG`), keep-alive
//! pings, the server's errors, and reconnection with backoff when the connection is lost.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use mio::{Interest, Poll};

use super::super::client::reconnect_delay;
use super::super::proto::{self, Connect, Info};
use super::auth::host_port;
use super::{Credentials, Direct, Fatal, MAX_PAYLOAD, PING_INTERVAL, Phase, SID_CLUSTER, SID_NODE};
use crate::membership::spawn_lookup;
use crate::sync::plain::Ordering;
use crate::transport::Token;
use crate::transport::nats::NatsConfig;

/// While a server's name is looked up, how often the driver looks for the answer.
const LOOKUP_CHECK: Duration = Duration::from_millis(5);

impl Direct {
    /// Drives the connection on a poll of its own until the server has taken the
    /// credentials, trying each server in turn until the connect timeout.
    pub(super) fn first_connection(&mut self, config: &NatsConfig) -> io::Result<()> {
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
                    Fatal::NoTrust(why) => io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("nats connect to {servers}: the server requires TLS: {why}"),
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

    pub(super) fn server_error(&mut self, text: String) {
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
        self.error_log.log(&self.server, &text);
    }

    /// The server's `INFO`: at the start it opens the handshake; later it announces servers.
    pub(super) fn info(&mut self, info: Info) {
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
        if let Some(config) = &self.tls {
            if !(info.tls_required || info.tls_available) {
                self.lost(
                    "the server does not offer TLS, which this client uses (nats.tls_ca_file, \
                     a tls:// server, or a server that required it)",
                );
                return;
            }
            match super::tls::session(config, &self.host) {
                Ok(session) => self.session = Some(session),
                Err(reason) => {
                    self.lost(&reason);
                    return;
                }
            }
        } else if info.tls_required {
            // Not asked for, but required: the system's certificate authorities, as a
            // browser would.
            let started = super::tls::system_config()
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    let session = super::tls::session(&config, &self.host)?;
                    self.tls = Some(config);
                    Ok(session)
                });
            match started {
                Ok(session) => self.session = Some(session),
                Err(reason) => {
                    self.fatal = Some(Fatal::NoTrust(reason.clone()));
                    self.lost(&reason);
                    return;
                }
            }
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

    pub(super) fn ready(&mut self) {
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
    pub(super) fn service(&mut self, now: Instant) {
        match self.phase {
            Phase::Down { retry_at } if now >= retry_at => self.dial(now),
            Phase::Resolving { deadline, check } if now >= check || now >= deadline => {
                self.resolved(now, deadline);
            }
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
    pub(super) fn dial(&mut self, now: Instant) {
        let count = self.servers.len().max(1);
        // `check` refuses an empty list, so there is always a server to try.
        let Some(target) = self.servers.get(self.next_server % count).cloned() else {
            self.last_failure = "no server configured".into();
            return;
        };
        self.next_server = (self.next_server + 1) % count;
        self.attempts += 1;
        if let Ok(addr) = target.parse::<SocketAddr>() {
            self.connect_to(now, &target, addr);
            return;
        }
        // A host name: `getaddrinfo` may wait seconds for a DNS server that does not
        // answer, and this is the driver's thread, which carries every transport's frames.
        // The name is looked up on a thread of its own while the driver goes on.
        let deadline = now + self.connect_timeout.min(Duration::from_secs(5));
        match spawn_lookup(target.clone(), |name| Ok(name.to_socket_addrs()?.collect())) {
            Ok(answer) => {
                self.lookup = Some((target, answer));
                self.phase = Phase::Resolving {
                    deadline,
                    check: now + LOOKUP_CHECK,
                };
            }
            Err(e) => self.not_resolved(now, &target, &format!("no thread for the lookup: {e}")),
        }
    }

    /// Looks for the answer of the name lookup: connects to one of the addresses it gave
    /// (a different one on each attempt), or gives up on this attempt.
    fn resolved(&mut self, now: Instant, deadline: Instant) {
        let Some((target, answer)) = self.lookup.take() else {
            self.not_resolved(now, "?", "no lookup running");
            return;
        };
        match answer.try_recv() {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                let addr = addrs[self.attempts % addrs.len()];
                self.connect_to(now, &target, addr);
            }
            Ok(Ok(_)) => self.not_resolved(now, &target, "no address"),
            Ok(Err(e)) => self.not_resolved(now, &target, &e.to_string()),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                self.not_resolved(now, &target, "the lookup thread died");
            }
            Err(crossbeam_channel::TryRecvError::Empty) if now >= deadline => {
                // The thread finishes on its own; its answer is dropped.
                self.not_resolved(now, &target, "no answer from DNS in time");
            }
            Err(crossbeam_channel::TryRecvError::Empty) => {
                self.lookup = Some((target, answer));
                self.phase = Phase::Resolving {
                    deadline,
                    check: now + LOOKUP_CHECK,
                };
            }
        }
    }

    fn not_resolved(&mut self, now: Instant, target: &str, why: &str) {
        tracing::debug!(server = %target, %why, "nats server name does not resolve");
        self.last_failure = format!("{target} does not resolve: {why}");
        self.phase = Phase::Down {
            retry_at: now + reconnect_delay(self.attempts),
        };
    }

    /// Opens the connection to `addr`, the address of `target` (`host:port`).
    fn connect_to(&mut self, now: Instant, target: &str, addr: SocketAddr) {
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
                target
                    .rsplit_once(':')
                    .map_or(target, |(host, _)| host)
                    .clone_into(&mut self.host);
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
    pub(super) fn lost(&mut self, reason: &str) {
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

    pub(super) fn drop_connection(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            if let Some((registry, _)) = &self.registry {
                let _ = registry.deregister(&mut stream);
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.session = None;
        self.inbuf.clear();
    }
}
