//! The node's configuration file (TOML): what `herald node`, `raise`, `tail` and `check` read.
//! Every key, its default and what it allows are documented in `docs/operations.md` and in the
//! commented `examples/herald.toml`.
//!
//! ```
//! let config = herald::Config::from_toml(r#"
//!     cluster = "shop"
//!     [udp]
//!     bind = "127.0.0.1:7700"
//!     peers = ["127.0.0.1:7701"]
//! "#).unwrap();
//! assert_eq!(config.cluster, "shop");
//! assert_eq!(config.timing.heartbeat_ms, 100);
//!
//! let err = herald::Config::from_toml("cluster = \"shop\"\n[udp]\nbindd = \"x\"\n").unwrap_err();
//! assert!(err.to_string().starts_with("udp.bindd:"), "{err}");
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::router::{Router, RouterBuilder};

mod nats;
pub use nats::NatsSection;

/// A node's configuration. [`Config::from_toml`] and [`Config::load`] check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The cluster's name, the same on every node (required).
    pub cluster: String,
    /// This node's id, unique in the cluster. Default: derived from host name and process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// The secret file, relative to the config file's directory. Default `herald.secret`.
    /// `herald node` creates it (mode 0600) on first start if it does not exist.
    #[serde(default = "default_secret_file")]
    pub secret_file: PathBuf,
    /// The largest frame in bytes. Default 1472 (one Ethernet datagram); up to 65536.
    #[serde(default = "default_max_frame_len")]
    pub max_frame_len: usize,
    /// UDP transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpSection>,
    /// TCP transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSection>,
    /// NATS transport (feature `nats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSection>,
    /// The ring between `raise` and the driver.
    #[serde(default)]
    pub ring: RingSection,
    /// Heartbeats, timeouts and windows.
    #[serde(default)]
    pub timing: TimingSection,
    /// Which threads do the sending and the dispatching, traded for latency.
    #[serde(default)]
    pub latency: LatencySection,
    /// Prometheus metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSection>,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// The subscription service (Redis protocol) for outside programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSection>,
}

/// `[service]`: the subscription service (see docs/service.md).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Where Redis clients connect, such as `"127.0.0.1:6380"` (required in the section).
    pub listen: SocketAddr,
    /// A password clients must give with `AUTH` before anything else. Prefer
    /// `password_file`; `herald check` prints this one redacted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub password: Option<String>,
    /// A file holding the password (its first line), relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A client that sends nothing, not even `PING`, for this long is disconnected.
    /// Default 120000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// The most bytes of pushes and replies waiting for one client; past it the client is
    /// disconnected and counted. Default 8388608 (8 MiB).
    #[serde(default = "default_output_buffer_limit")]
    pub output_buffer_limit: usize,
    /// The most clients at once. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most channels and patterns per client. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_subscriptions_per_client: usize,
}

impl fmt::Debug for ServiceSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceSection")
            .field("listen", &self.listen)
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .field("password_file", &self.password_file)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("output_buffer_limit", &self.output_buffer_limit)
            .field("max_connections", &self.max_connections)
            .field(
                "max_subscriptions_per_client",
                &self.max_subscriptions_per_client,
            )
            .finish()
    }
}

fn redacted<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("(redacted)"),
        None => s.serialize_none(),
    }
}

fn default_idle_timeout_ms() -> u64 {
    120_000
}
fn default_output_buffer_limit() -> usize {
    crate::service::DEFAULT_OUTPUT_BUFFER_LIMIT
}
fn default_max_connections() -> usize {
    10_000
}

/// `[udp]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpSection {
    /// Address to receive on, such as `"0.0.0.0:7700"`. Default for multicast: `0.0.0.0` and
    /// the group's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// Unicast peers: every frame is sent to each.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// A multicast group to join and send to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast: Option<MulticastSection>,
}

/// `[udp.multicast]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MulticastSection {
    /// The group and port, such as `"239.255.42.1:7700"`.
    pub group: SocketAddrV4,
    /// The address of the interface to use (required: no datagram leaves by a default route).
    pub interface: Ipv4Addr,
}

/// `[tcp]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    /// Address to accept peers' connections on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Peers to connect to.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
}

/// `[ring]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingSection {
    /// Bytes, a power of two. Default 1048576 (1 MiB).
    #[serde(default = "default_ring_capacity")]
    pub capacity: usize,
}

impl Default for RingSection {
    fn default() -> Self {
        Self {
            capacity: default_ring_capacity(),
        }
    }
}

/// `[timing]`, all in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSection {
    /// How often an idle node sends a heartbeat. Default 100.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a peer may be silent before it is reported. Default 1000.
    #[serde(default = "default_dead_peer_ms")]
    pub dead_peer_ms: u64,
    /// How far a frame's timestamp may be from this node's clock. Default 5000.
    #[serde(default = "default_clock_skew_ms")]
    pub clock_skew_ms: u64,
    /// How long a gap waits for a late frame before it is reported. Default 20.
    #[serde(default = "default_reorder_ms")]
    pub reorder_ms: u64,
}

impl Default for TimingSection {
    fn default() -> Self {
        Self {
            heartbeat_ms: default_heartbeat_ms(),
            dead_peer_ms: default_dead_peer_ms(),
            clock_skew_ms: default_clock_skew_ms(),
            reorder_ms: default_reorder_ms(),
        }
    }
}

/// `[latency]`: two trades of work for latency, both off by default (docs/architecture.md,
/// "Latency", measures them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySection {
    /// A raise that finds the node idle sends its frame itself instead of waking the
    /// sending thread ([`RouterBuilder::send_on_raise`]). Default false.
    #[serde(default)]
    pub send_on_raise: bool,
    /// Subscribers run on the thread that receives, as soon as a frame verifies, instead of
    /// a thread of their own ([`RouterBuilder::dispatch_on_driver`]); only for subscribers
    /// that return quickly. Default false.
    #[serde(default)]
    pub dispatch_on_driver: bool,
    /// Microseconds the sending and receiving thread keeps polling after the bus goes idle
    /// before it sleeps ([`RouterBuilder::busy_poll`]); costs a CPU core per node while
    /// traffic flows. Default 0.
    #[serde(default)]
    pub busy_poll_us: u64,
}

/// `[metrics]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where to serve `GET /metrics` (Prometheus text format), such as `"127.0.0.1:9700"`.
    pub listen: SocketAddr,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `"text"` (default) or `"json"`; `--log-format` overrides it. Levels come from
    /// `RUST_LOG` (default `info`).
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_secret_file() -> PathBuf {
    PathBuf::from("herald.secret")
}
fn default_max_frame_len() -> usize {
    crate::wire::DEFAULT_UDP_FRAME_LEN
}
fn default_ring_capacity() -> usize {
    1 << 20
}
fn default_heartbeat_ms() -> u64 {
    100
}
fn default_dead_peer_ms() -> u64 {
    1000
}
fn default_clock_skew_ms() -> u64 {
    5000
}
fn default_reorder_ms() -> u64 {
    20
}

/// A configuration that cannot be used: the key at fault (`udp.bind`, or the file) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key's path, such as `udp.peers[1]`, or the file's path for I/O errors.
    pub key: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and checks a configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key: unknown keys, wrong types, values out of range.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            // toml's message names the line; keep its first line only.
            let message = inner
                .message()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            // A missing key is reported at its parent: name the key itself.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let key = match (key.as_str(), missing) {
                (".", Some(field)) => field.to_owned(),
                (_, Some(field)) => format!("{key}.{field}"),
                (".", None) => "config".to_owned(),
                _ => key,
            };
            let problem = if missing.is_some() {
                "missing: this key is required".to_owned()
            } else {
                message
            };
            ConfigError { key, problem }
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads and checks a configuration file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file if it cannot be read, or the key at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: path.display().to_string(),
            problem: format!("cannot read the config file: {e}"),
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| ConfigError {
            key: format!("{}: {}", path.display(), e.key),
            problem: e.problem,
        })?;
        if let Some(nats) = &mut config.nats {
            nats.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        }
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| {
            Err(ConfigError {
                key: key.to_owned(),
                problem,
            })
        };
        if self.cluster.trim().is_empty() {
            return bad("cluster", "must not be empty".into());
        }
        if !(128 + crate::wire::FRAME_OVERHEAD..=crate::wire::MAX_FRAME_LEN)
            .contains(&self.max_frame_len)
        {
            return bad(
                "max_frame_len",
                format!(
                    "{} is out of range: use {} to {} (1472 for UDP on Ethernet)",
                    self.max_frame_len,
                    128 + crate::wire::FRAME_OVERHEAD,
                    crate::wire::MAX_FRAME_LEN
                ),
            );
        }
        if !self.ring.capacity.is_power_of_two() {
            return bad(
                "ring.capacity",
                format!("{} is not a power of two (try 1048576)", self.ring.capacity),
            );
        }
        let t = &self.timing;
        for (key, v) in [
            ("timing.heartbeat_ms", t.heartbeat_ms),
            ("timing.dead_peer_ms", t.dead_peer_ms),
            ("timing.clock_skew_ms", t.clock_skew_ms),
            ("timing.reorder_ms", t.reorder_ms),
        ] {
            if v == 0 {
                return bad(key, "must be more than 0".into());
            }
        }
        if t.dead_peer_ms < 2 * t.heartbeat_ms {
            return bad(
                "timing.dead_peer_ms",
                format!(
                    "{} is less than two heartbeats ({} ms): live peers would look dead",
                    t.dead_peer_ms,
                    2 * t.heartbeat_ms
                ),
            );
        }
        if let Some(udp) = &self.udp
            && udp.bind.is_none()
            && udp.multicast.is_none()
        {
            return bad(
                "udp.bind",
                "missing: set the address to receive on (or a udp.multicast group)".into(),
            );
        }
        if let Some(svc) = &self.service {
            if svc.password.is_some() && svc.password_file.is_some() {
                return bad(
                    "service.password_file",
                    "give either service.password or service.password_file, not both".into(),
                );
            }
            if svc.password.as_deref() == Some("") {
                return bad(
                    "service.password",
                    "is empty: set a password, or leave the key out for no password".into(),
                );
            }
            if svc.idle_timeout_ms == 0 {
                return bad(
                    "service.idle_timeout_ms",
                    "must be more than 0 (default 120000)".into(),
                );
            }
            if svc.output_buffer_limit < crate::service::MIN_OUTPUT_BUFFER_LIMIT {
                return bad(
                    "service.output_buffer_limit",
                    format!(
                        "{} is too small: use at least {} bytes (default 8388608)",
                        svc.output_buffer_limit,
                        crate::service::MIN_OUTPUT_BUFFER_LIMIT
                    ),
                );
            }
            for (key, v) in [
                ("service.max_connections", svc.max_connections),
                (
                    "service.max_subscriptions_per_client",
                    svc.max_subscriptions_per_client,
                ),
            ] {
                if v == 0 {
                    return bad(key, "must be at least 1".into());
                }
            }
        }
        if let Some(nats) = &self.nats {
            nats.check(&self.cluster)?;
        }
        if self.udp.is_none() && self.tcp.is_none() && self.nats.is_none() {
            return bad(
                "udp",
                "no transport: add a [udp], [tcp] or [nats] section so the node can reach its \
                 peers"
                    .into(),
            );
        }
        Ok(())
    }

    /// The secret file's path, resolved against the config file's directory.
    pub fn secret_path(&self, config_dir: &Path) -> PathBuf {
        config_dir.join(&self.secret_file)
    }

    /// The subscription service's settings, if the config has a `[service]` section; reads
    /// `service.password_file` (relative to `config_dir`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `service.password_file` when it cannot be read, is empty, or
    /// group or others may access it.
    pub fn service_config(
        &self,
        config_dir: &Path,
    ) -> Result<Option<crate::service::ServiceConfig>, ConfigError> {
        let Some(svc) = &self.service else {
            return Ok(None);
        };
        let password = match &svc.password_file {
            Some(file) => {
                let path = config_dir.join(file);
                // The same rule as the cluster's secret file: a password others can read is
                // no password.
                if let Ok(meta) = std::fs::metadata(&path) {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = meta.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Err(ConfigError {
                            key: "service.password_file".into(),
                            problem: format!(
                                "{} has mode {mode:o}, so others may read it: run chmod 600 on it",
                                path.display()
                            ),
                        });
                    }
                }
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                    key: "service.password_file".into(),
                    problem: format!("cannot read {}: {e}", path.display()),
                })?;
                let first = text.lines().next().unwrap_or_default().to_owned();
                if first.is_empty() {
                    return Err(ConfigError {
                        key: "service.password_file".into(),
                        problem: format!(
                            "{} is empty: put the password on its first line",
                            path.display()
                        ),
                    });
                }
                Some(first)
            }
            None => svc.password.clone(),
        };
        let mut config = crate::service::ServiceConfig::new(svc.listen);
        config.password = password;
        config.idle_timeout = Some(Duration::from_millis(svc.idle_timeout_ms));
        config.output_buffer_limit = svc.output_buffer_limit;
        config.max_connections = svc.max_connections;
        config.max_subscriptions_per_client = svc.max_subscriptions_per_client;
        Ok(Some(config))
    }

    /// The configuration as TOML, with every default filled in. The secret itself is never
    /// in the config (only the file's path), so there is nothing to redact here.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }

    /// A router builder with these settings (keyring not included: give it the secret file
    /// or a keyring).
    pub fn router_builder(&self) -> RouterBuilder {
        let t = &self.timing;
        let mut b = Router::builder()
            .cluster(&self.cluster)
            .max_frame_len(self.max_frame_len)
            .ring_capacity(self.ring.capacity)
            .heartbeat_interval(Duration::from_millis(t.heartbeat_ms))
            .dead_peer_timeout(Duration::from_millis(t.dead_peer_ms))
            .clock_skew(Duration::from_millis(t.clock_skew_ms))
            .reorder_window(Duration::from_millis(t.reorder_ms))
            .send_on_raise(self.latency.send_on_raise)
            .busy_poll(Duration::from_micros(self.latency.busy_poll_us))
            .dispatch_on_driver(self.latency.dispatch_on_driver);
        if let Some(id) = self.node_id {
            b = b.node_id(id);
        }
        if let Some(udp) = &self.udp {
            if let Some(bind) = udp.bind {
                b = b.udp_bind(bind);
            }
            for p in &udp.peers {
                b = b.udp_peer(*p);
            }
            if let Some(m) = &udp.multicast {
                b = b.udp_multicast(m.group, m.interface);
            }
        }
        if let Some(tcp) = &self.tcp {
            if let Some(listen) = tcp.listen {
                b = b.tcp_listen(listen);
            }
            for p in &tcp.peers {
                b = b.tcp_peer(*p);
            }
        }
        #[cfg(feature = "nats")]
        if let Some(nats) = &self.nats {
            b = b.nats(nats.transport_config(Path::new("")));
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_in() {
        let c = Config::from_toml("cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.secret_file, PathBuf::from("herald.secret"));
        assert_eq!(c.max_frame_len, 1472);
        assert_eq!(c.ring.capacity, 1 << 20);
        assert_eq!(c.timing, TimingSection::default());
        assert_eq!(c.log.format, LogFormat::Text);
        // What `check` prints parses back to the same config.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn the_commented_example_is_valid() {
        let c = Config::from_toml(include_str!("../examples/herald.toml")).unwrap();
        assert_eq!(c.cluster, "shop");
        assert_eq!(c.timing, TimingSection::default());
        assert_eq!(c.ring, RingSection::default());
        assert_eq!(c.latency, LatencySection::default());
    }

    #[test]
    fn errors_name_the_key() {
        let base = "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:1\"\n";
        assert!(err("[udp]\nbind = \"127.0.0.1:1\"\n").starts_with("cluster:"));
        assert!(err(&format!("{base}colour = 1\n")).starts_with("udp.colour:"));
        assert!(err(&format!("{base}peers = [\"nope\"]\n")).starts_with("udp.peers[0]:"));
        assert!(err(&format!("{base}[ring]\ncapacity = 1000\n")).starts_with("ring.capacity:"));
        assert!(
            err(&format!("{base}[latency]\nbusy_poll_us = -5\n"))
                .starts_with("latency.busy_poll_us:")
        );
        assert!(
            err(&format!("{base}[timing]\ndead_peer_ms = 50\n"))
                .starts_with("timing.dead_peer_ms:")
        );
        assert!(err(&format!("{base}[log]\nformat = \"xml\"\n")).starts_with("log.format:"));
        assert!(err("cluster = \"c\"\n").starts_with("udp:"));
        assert!(err("cluster = \"c\"\n[udp]\npeers = []\n").starts_with("udp.bind:"));
        assert!(err(&format!("max_frame_len = 10\n{base}")).starts_with("max_frame_len:"));
        assert!(err(&format!("{base}max_frame_len = 10\n")).starts_with("udp.max_frame_len:"));
        let svc = "[service]\nlisten = \"127.0.0.1:6380\"\n";
        assert!(err(&format!("{base}[service]\n")).starts_with("service.listen:"));
        assert!(err(&format!("{base}{svc}colour = 1\n")).starts_with("service.colour:"));
        for (line, key) in [
            ("idle_timeout_ms = 0", "service.idle_timeout_ms:"),
            ("output_buffer_limit = 100", "service.output_buffer_limit:"),
            ("max_connections = 0", "service.max_connections:"),
            (
                "max_subscriptions_per_client = 0",
                "service.max_subscriptions_per_client:",
            ),
            ("password = \"\"", "service.password:"),
            (
                "password = \"a\"\npassword_file = \"p\"",
                "service.password_file:",
            ),
        ] {
            assert!(
                err(&format!("{base}{svc}{line}\n")).starts_with(key),
                "{line}"
            );
        }
    }

    #[test]
    fn the_service_section_fills_in_defaults_and_never_prints_the_password() {
        let text = "cluster = \"c\"\n[tcp]\nlisten = \"127.0.0.1:1\"\n[service]\nlisten = \"127.0.0.1:6380\"\npassword = \"s3cret\"\n";
        let c = Config::from_toml(text).unwrap();
        let svc = c.service_config(Path::new(".")).unwrap().unwrap();
        assert_eq!(svc.password.as_deref(), Some("s3cret"));
        assert_eq!(svc.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(svc.output_buffer_limit, 8 << 20);
        assert!(!c.to_toml().contains("s3cret"), "{}", c.to_toml());
        assert!(!format!("{c:?}").contains("s3cret"));

        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let text = text.replace("password = \"s3cret\"", "password_file = \"pw\"");
        let c = Config::from_toml(&text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = c.service_config(dir.path()).unwrap_err();
        assert_eq!(err.key, "service.password_file");
        assert!(err.problem.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let svc = c.service_config(dir.path()).unwrap().unwrap();
        assert_eq!(svc.password.as_deref(), Some("from-file"));
        let err = c.service_config(Path::new("/nonexistent")).unwrap_err();
        assert_eq!(err.key, "service.password_file");
    }
}
