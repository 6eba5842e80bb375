//! The subscription service: outside programs subscribe to events and get them pushed, and
//! raise events, over the publish/subscribe part of the Redis protocol (RESP2, and RESP3 after
//! `HELLO 3`), so `redis-cli` and Redis client libraries work unchanged.
//!
//! A channel is an event name (`product.changed`, hashed by [`EventId::from_name`]) or an
//! event id written as a UUID. `PUBLISH channel payload` raises the event cluster-wide;
//! `SUBSCRIBE channel` gets every raise of it, local and remote, pushed with the channel name
//! the client used; `PSUBSCRIBE product.*` gets every event whose name matches the Redis
//! glob pattern (`*` every event); the reserved channel `herald:missed`
//! gets every [`Missed`](crate::Missed) as a JSON object. docs/service.md has the details and
//! a session transcript.
//!
//! The service runs on a thread of its own with its own `mio::Poll`. The router hands it
//! events through a bounded queue and a waker, so a slow client never slows the router: each
//! client has a bounded output buffer, and one that falls further behind is disconnected and
//! counted.
//!
//! ```no_run
//! use herald::service::{Service, ServiceConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let router = herald::Router::builder().cluster("shop").secret_file("herald.secret").build()?;
//! let mut config = ServiceConfig::new("127.0.0.1:6380".parse()?);
//! config.password = Some("s3cret".into());
//! let service = Service::start(&router, config)?;
//! // redis-cli -p 6380 --pass s3cret SUBSCRIBE product.changed
//! service.shutdown();
//! # Ok(()) }
//! ```

mod commands;
mod conn;
mod glob;
mod index;
mod introspect;
mod metrics;
mod push;
mod resp;
mod server;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{ConfigError, ConfigErrors};
use crate::event::EventId;
use crate::router::Router;
use crate::sync::plain::{Arc, Ordering};

pub use metrics::ServiceMetrics;
pub use tls::ServiceTls;

/// The reserved channel on which [`Missed`](crate::Missed) notices are pushed, as JSON.
pub const MISSED_CHANNEL: &str = "herald:missed";

/// Settings of a [`Service`]. [`ServiceConfig::new`] fills in the defaults.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The address to accept clients on (config `service.listen`).
    pub listen: SocketAddr,
    /// When set, a client must `AUTH` (or `HELLO 3 AUTH default <password>`) before any
    /// other command (config `service.password` or `service.password_file`).
    pub password: Option<String>,
    /// A client without subscriptions that sends nothing (no command, not even `PING`) for
    /// this long is disconnected; `None` never. A subscribed client is never closed for
    /// silence (TCP keepalive finds dead ones). Default 120 s (config
    /// `service.idle_timeout_ms`).
    pub idle_timeout: Option<Duration>,
    /// The most bytes of replies and pushes a client may have waiting; a client that falls
    /// further behind is disconnected and counted. Default 8 MiB
    /// (config `service.output_buffer_limit`).
    pub output_buffer_limit: usize,
    /// The most clients at once; one more is answered with an error and closed. Default 10000
    /// (config `service.max_connections`).
    pub max_connections: usize,
    /// The most channels and patterns one client may subscribe to. Default 10000
    /// (config `service.max_subscriptions_per_client`).
    pub max_subscriptions_per_client: usize,
    /// Events that may wait between the router and the service thread. Default 65536. Past
    /// it events are dropped and `herald:missed` subscribers get a `local_overflow` notice.
    pub delivery_queue: usize,
    /// The longest channel name or pattern in bytes; a longer one is answered with an error
    /// (the connection stays open). Default 1024 (config `service.max_name_len`).
    pub max_name_len: usize,
    /// The most bytes of channel names and patterns all clients together may hold; a
    /// `SUBSCRIBE`/`PSUBSCRIBE` past it is answered with an error. Default 64 MiB
    /// (config `service.name_memory_limit`).
    pub name_memory_limit: usize,
    /// A TLS listener beside the plain one (config `service.tls_listen`, `tls_cert`,
    /// `tls_key`, `tls_client_ca`). Default none.
    pub tls: Option<ServiceTls>,
    /// Event names the service knows from the start, so that pattern subscribers get events
    /// raised anywhere in the cluster under their names (the wire carries only ids). Default
    /// none (config `service.event_names`).
    pub event_names: Vec<String>,
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("listen", &self.listen)
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .field("idle_timeout", &self.idle_timeout)
            .field("output_buffer_limit", &self.output_buffer_limit)
            .field("max_connections", &self.max_connections)
            .field(
                "max_subscriptions_per_client",
                &self.max_subscriptions_per_client,
            )
            .field("delivery_queue", &self.delivery_queue)
            .field("max_name_len", &self.max_name_len)
            .field("name_memory_limit", &self.name_memory_limit)
            .field("tls", &self.tls)
            .field("event_names", &self.event_names.len())
            .finish()
    }
}

/// The default idle timeout, 120 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default output buffer limit, 8 MiB.
pub const DEFAULT_OUTPUT_BUFFER_LIMIT: usize = 8 << 20;
/// The default most clients at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default most channels and patterns per client.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 10_000;
/// The default events waiting between the router and the service thread.
pub const DEFAULT_DELIVERY_QUEUE: usize = 65_536;
/// The default longest channel name or pattern, 1 KiB.
pub const DEFAULT_MAX_NAME_LEN: usize = 1024;
/// The default bound on the bytes of names all clients hold, 64 MiB.
pub const DEFAULT_NAME_MEMORY_LIMIT: usize = 64 << 20;

/// The smallest output buffer limit accepted: one largest argument and its framing.
pub const MIN_OUTPUT_BUFFER_LIMIT: usize = 64 << 10;

impl ServiceError {
    /// One invalid setting, as a [`ServiceError::Invalid`].
    pub(crate) fn invalid(key: &str, problem: String) -> Self {
        Self::Invalid(ConfigErrors::new(vec![ConfigError {
            key: key.to_owned(),
            problem,
        }]))
    }
}

impl ServiceConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            password: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            output_buffer_limit: DEFAULT_OUTPUT_BUFFER_LIMIT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions_per_client: DEFAULT_MAX_SUBSCRIPTIONS,
            delivery_queue: DEFAULT_DELIVERY_QUEUE,
            max_name_len: DEFAULT_MAX_NAME_LEN,
            name_memory_limit: DEFAULT_NAME_MEMORY_LIMIT,
            tls: None,
            event_names: Vec::new(),
        }
    }

    /// Every setting out of range, each naming its config key (`service.…`); empty when
    /// [`Service::start`] would accept them. `Config` runs this too, so `herald check` and
    /// `herald node` apply the same rules.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, problem: String| {
            errors.push(ConfigError {
                key: key.to_owned(),
                problem,
            });
        };
        if self.password.as_deref() == Some("") {
            bad(
                "service.password",
                "is empty: set a password, or leave the key out for no password".into(),
            );
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            bad(
                "service.idle_timeout_ms",
                format!(
                    "must be more than 0 (leave it out for the default, {})",
                    DEFAULT_IDLE_TIMEOUT.as_millis()
                ),
            );
        }
        if self.output_buffer_limit < MIN_OUTPUT_BUFFER_LIMIT {
            bad(
                "service.output_buffer_limit",
                format!(
                    "{} is too small: use at least {MIN_OUTPUT_BUFFER_LIMIT} bytes (default {DEFAULT_OUTPUT_BUFFER_LIMIT})",
                    self.output_buffer_limit
                ),
            );
        }
        for (key, v) in [
            ("service.max_connections", self.max_connections),
            (
                "service.max_subscriptions_per_client",
                self.max_subscriptions_per_client,
            ),
            ("service.delivery_queue", self.delivery_queue),
            ("service.max_name_len", self.max_name_len),
        ] {
            if v == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if self.max_name_len > resp::MAX_BULK {
            bad(
                "service.max_name_len",
                format!(
                    "{} is more than the longest argument the service reads ({}): use at most that (default {DEFAULT_MAX_NAME_LEN})",
                    self.max_name_len,
                    resp::MAX_BULK
                ),
            );
        }
        if self.name_memory_limit < self.max_name_len {
            bad(
                "service.name_memory_limit",
                format!(
                    "{} is less than service.max_name_len ({}): no name would fit (default {DEFAULT_NAME_MEMORY_LIMIT})",
                    self.name_memory_limit, self.max_name_len
                ),
            );
        }
        if let Some(name) = self
            .event_names
            .iter()
            .find(|n| n.len() > self.max_name_len)
        {
            bad(
                "service.event_names",
                format!(
                    "{:?}… is {} bytes, longer than service.max_name_len ({})",
                    name.chars().take(32).collect::<String>(),
                    name.len(),
                    self.max_name_len
                ),
            );
        }
        errors
    }

    fn check(&self) -> Result<(), ServiceError> {
        let errors = self.problems();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(ConfigErrors::new(errors)))
        }
    }

    /// Checks the settings without starting anything: ranges, and for TLS that the PEM files
    /// load and the key goes with the certificate (what `herald check` reports).
    ///
    /// # Errors
    ///
    /// [`ServiceError::Invalid`] naming the setting at fault.
    pub fn validate(&self) -> Result<(), ServiceError> {
        self.check()?;
        if let Some(settings) = &self.tls {
            tls::server_config(settings)?;
        }
        Ok(())
    }
}

/// Why [`Service::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Settings are out of range: each names its config key, such as
    /// `service.output_buffer_limit`.
    #[error(transparent)]
    Invalid(ConfigErrors),
    /// The listening socket, the poller or the thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up, such as `service.listen 127.0.0.1:6380`.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
}

/// A running subscription service. Dropping it (or [`shutdown`](Self::shutdown)) closes
/// every client and stops its thread; the router keeps running.
pub struct Service {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shared: Arc<server::Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("local_addr", &self.local_addr)
            .field("tls_addr", &self.tls_addr)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Binds `config.listen` and starts the service thread for `router`.
    ///
    /// # Errors
    ///
    /// [`ServiceError`] naming the setting at fault, or the address that could not be bound.
    pub fn start(router: &Router, config: ServiceConfig) -> Result<Self, ServiceError> {
        config.check()?;
        let spawned = server::spawn(router, config)?;
        Ok(Self {
            local_addr: spawned.local_addr,
            tls_addr: spawned.tls_addr,
            shared: spawned.shared,
            thread: Mutex::new(Some(spawned.thread)),
        })
    }

    /// The address clients connect to (the bound port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address TLS clients connect to, when [`ServiceConfig::tls`] is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// A snapshot of the service's counters.
    pub fn metrics(&self) -> ServiceMetrics {
        self.shared.metrics.snapshot()
    }

    /// Closes every client and stops the service thread.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(thread) = self.thread.lock().take() {
            // The service thread itself may end up here (it briefly holds the router while it
            // raises an event); it stops at its next turn, and cannot wait for itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The RESP parser, for the `resp_parse` fuzz target only.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// The most arguments one command may have.
    pub const MAX_ARGS: usize = super::resp::MAX_ARGS;

    /// [`super::resp::parse_command`], with the error as its reason.
    pub fn parse_command(
        buf: &[u8],
        args: &mut Vec<std::ops::Range<usize>>,
    ) -> Result<Option<usize>, &'static str> {
        super::resp::parse_command(buf, args).map_err(|e| e.0)
    }
}

/// The event a channel names: a UUID (`8-4-4-4-12` hex digits, either case) is the id itself,
/// anything else is an event name. `None` for a channel that is not UTF-8.
///
/// ```
/// use herald::EventId;
/// use herald::service::channel_event;
/// let id = EventId::from_name("product.changed");
/// assert_eq!(channel_event(b"product.changed"), Some(id));
/// assert_eq!(channel_event(id.to_string().as_bytes()), Some(id));
/// assert_eq!(channel_event(b"\xff"), None);
/// ```
pub fn channel_event(channel: &[u8]) -> Option<EventId> {
    let text = std::str::from_utf8(channel).ok()?;
    Some(parse_uuid(text).unwrap_or_else(|| EventId::from_name(text)))
}

fn parse_uuid(text: &str) -> Option<EventId> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut digits = b.iter().filter(|&&c| c != b'-');
    for out in &mut bytes {
        let hi = char::from(*digits.next()?).to_digit(16)?;
        let lo = char::from(*digits.next()?).to_digit(16)?;
        *out = (hi * 16 + lo) as u8;
    }
    digits
        .next()
        .is_none()
        .then_some(EventId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_and_near_misses_are_names() {
        let id = EventId::from_name("x");
        assert_eq!(parse_uuid(&id.to_string()), Some(id));
        assert_eq!(parse_uuid(&id.to_string().to_uppercase()), Some(id));
        let mut s = id.to_string();
        s.replace_range(0..1, "g");
        assert_eq!(parse_uuid(&s), None);
        assert_eq!(parse_uuid("0000000000000000000000000000000000-0"), None);
        assert_eq!(parse_uuid("00000000-0000-0000-0000-00000000000-"), None);
        assert_eq!(parse_uuid("é"), None);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let mut c = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
        c.output_buffer_limit = 10;
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .starts_with("service.output_buffer_limit:")
        );
        let mut c = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
        c.password = Some(String::new());
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .starts_with("service.password:")
        );
        let mut c = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
        c.max_connections = 0;
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .starts_with("service.max_connections:")
        );
        let mut c = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
        c.max_name_len = 4;
        c.event_names = vec!["toolong".into()];
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .starts_with("service.event_names:")
        );
        let mut c = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
        c.max_name_len = (1 << 20) + 1;
        assert!(c.validate().is_err());
        let c = ServiceConfig::new("127.0.0.1:0".parse().unwrap());
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
