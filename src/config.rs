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
//! // Every problem at once, each naming its key.
//! let err = herald::Config::from_toml("cluster = \"shop\"\n[udp]\nbindd = \"x\"\n[ring]\ncapacity = 2048\n")
//!     .unwrap_err();
//! let keys: Vec<&str> = err.iter().map(|e| e.key.as_str()).collect();
//! assert_eq!(keys, ["udp.bindd", "ring.capacity", "udp.bind"]);
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::router::RouterBuilder;
use crate::router::settings;

use crate::error::{ConfigError, ConfigErrors};

mod address;
mod parse;
mod rules;
mod service;
#[cfg(test)]
mod tests;

pub use address::{Address, AddressError};

mod nats;
pub use nats::NatsSection;
pub use service::ServiceSection;

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
    /// How data frames are protected: `"sign"` (HMAC-SHA256, readable; the default) or
    /// `"encrypt"` (sealed with AES-256-GCM). The same on every node; see docs/security.md.
    #[serde(default)]
    pub security: crate::auth::Security,
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
    /// Recovery of lost frames and flow control.
    #[serde(default)]
    pub recovery: RecoverySection,
    /// Prometheus metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSection>,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// `[control]`: the local socket through which `herald raise`, `tail`, `status` and
    /// `members` reach the node running with this file.
    #[serde(default)]
    pub control: ControlSection,
    /// The subscription service (Redis protocol) for outside programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSection>,
    /// Elastic membership: find the other nodes from seeds or DNS (needs `[udp]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipSection>,
}

/// `[membership]`: how the node finds and watches the cluster's other nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipSection {
    /// Addresses to ask to join; one reachable seed is enough (`udp.peers` count as seeds).
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    /// A `host:port` name whose addresses are seeds, such as a Kubernetes headless Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// How often `dns` is resolved again, in seconds. Default 30.
    #[serde(default = "default_dns_refresh_s")]
    pub dns_refresh_s: u64,
    /// How often each node probes one member, in milliseconds. Default 200.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// Suspicion timeout multiplier (Lifeguard): a suspect has at least
    /// `suspicion_mult × max(1, log10(members)) × probe_interval` to refute. Default 4.
    #[serde(default = "default_suspicion_mult")]
    pub suspicion_mult: u32,
    /// How often a node exchanges its whole member list with one random member, in seconds
    /// (0: never). This is what heals a partition that outlasted the memory of failed
    /// members. Default 30.
    #[serde(default = "default_sync_interval_s")]
    pub sync_interval_s: u64,
}

fn default_dns_refresh_s() -> u64 {
    30
}

fn default_probe_interval_ms() -> u64 {
    200
}

fn default_suspicion_mult() -> u32 {
    4
}

fn default_sync_interval_s() -> u64 {
    30
}

pub(super) fn redacted<S: serde::Serializer>(
    value: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("(redacted)"),
        None => s.serialize_none(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `[udp]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpSection {
    /// Address to receive on, such as `"0.0.0.0:7700"` or `"node-1.internal:7700"`.
    /// Default for multicast: `0.0.0.0` and the group's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<Address>,
    /// Unicast peers (`IP:port` or `host:port`): every frame is sent to each.
    #[serde(default)]
    pub peers: Vec<Address>,
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
    /// Address to accept peers' connections on (`IP:port` or `host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Address>,
    /// Peers to connect to (`IP:port` or `host:port`).
    #[serde(default)]
    pub peers: Vec<Address>,
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

/// `[recovery]`: how lost frames are asked for and sent again, and how far a sender may run
/// ahead of its slowest receiver (docs/architecture.md, "Recovery and flow control").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySection {
    /// Ask for lost frames and send them again (default true). Off: a gap is reported
    /// after `timing.reorder_ms`, and no window holds a sender back.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Bytes of recent signed frames a sender keeps to send again. Default 16777216 (16 MiB).
    #[serde(default = "default_retention_bytes")]
    pub retention_bytes: usize,
    /// Event ids a sender keeps of frames it no longer holds, so a receiver that lost them
    /// learns which events it lost. Default 1048576 (16 MiB).
    #[serde(default = "default_retained_ids")]
    pub retained_ids: usize,
    /// How many data frames a sender may run ahead of its slowest live receiver. Default
    /// 1024 (capped so the frames fit `retention_bytes`).
    #[serde(default = "default_window_frames")]
    pub window_frames: u64,
    /// The longest random delay, in microseconds, before a receiver first asks for a gap.
    /// Default 0: at the end of the turn that found it (at least 3000 on multicast).
    #[serde(default = "default_nak_delay_us")]
    pub nak_delay_us: u64,
    /// How often a receiver asks again for a gap still open, in ms. Default 2.
    #[serde(default = "default_nak_interval_ms")]
    pub nak_interval_ms: u64,
    /// How long a gap may stay open while it is asked for before it is reported, in ms.
    /// Default 500.
    #[serde(default = "default_give_up_ms")]
    pub give_up_ms: u64,
    /// How often a receiver tells a sender that sends data how far it has consumed, in ms.
    /// Default 10.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// How long a receiver may stay silent before it no longer holds a sender back, in ms.
    /// Default 500.
    #[serde(default = "default_receiver_timeout_ms")]
    pub receiver_timeout_ms: u64,
    /// How long a stopping node waits for its receivers to acknowledge its last frames, in
    /// ms. Default 1000.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
}

impl Default for RecoverySection {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_bytes: default_retention_bytes(),
            retained_ids: default_retained_ids(),
            window_frames: default_window_frames(),
            nak_delay_us: default_nak_delay_us(),
            nak_interval_ms: default_nak_interval_ms(),
            give_up_ms: default_give_up_ms(),
            status_interval_ms: default_status_interval_ms(),
            receiver_timeout_ms: default_receiver_timeout_ms(),
            linger_ms: default_linger_ms(),
        }
    }
}

impl RecoverySection {
    /// The library's settings these stand for.
    pub fn to_recovery(&self) -> crate::RecoveryConfig {
        crate::RecoveryConfig {
            enabled: self.enabled,
            retention_bytes: self.retention_bytes,
            retained_ids: self.retained_ids,
            window_frames: self.window_frames,
            nak_delay: Duration::from_micros(self.nak_delay_us),
            nak_interval: Duration::from_millis(self.nak_interval_ms),
            give_up: Duration::from_millis(self.give_up_ms),
            status_interval: Duration::from_millis(self.status_interval_ms),
            receiver_timeout: Duration::from_millis(self.receiver_timeout_ms),
            shared_channel: false,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_retention_bytes() -> usize {
    crate::RecoveryConfig::default().retention_bytes
}

fn default_retained_ids() -> usize {
    crate::RecoveryConfig::default().retained_ids
}

fn default_window_frames() -> u64 {
    crate::RecoveryConfig::default().window_frames
}

fn default_nak_delay_us() -> u64 {
    u64::try_from(crate::RecoveryConfig::default().nak_delay.as_micros()).unwrap_or(0)
}

fn default_nak_interval_ms() -> u64 {
    u64::try_from(crate::RecoveryConfig::default().nak_interval.as_millis()).unwrap_or(2)
}

fn default_give_up_ms() -> u64 {
    u64::try_from(crate::RecoveryConfig::default().give_up.as_millis()).unwrap_or(500)
}

fn default_status_interval_ms() -> u64 {
    u64::try_from(crate::RecoveryConfig::default().status_interval.as_millis()).unwrap_or(10)
}

fn default_receiver_timeout_ms() -> u64 {
    u64::try_from(
        crate::RecoveryConfig::default()
            .receiver_timeout
            .as_millis(),
    )
    .unwrap_or(500)
}

fn default_linger_ms() -> u64 {
    1000
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

/// `[control]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Whether `herald node` opens the socket (Unix only; default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Its path, relative to the config file's directory; default: the config file's name
    /// with `.sock` for `.toml` (`herald.toml` → `herald.sock`), beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
        }
    }
}

impl ControlSection {
    /// Where the socket of the node running with the config file `file` is.
    pub fn path(&self, file: &Path) -> PathBuf {
        let dir = file.parent().unwrap_or_else(|| Path::new(""));
        match &self.socket {
            Some(p) => dir.join(p),
            None => file.with_extension("sock"),
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
// The defaults are the router's own (src/router/settings.rs), in the config's units.
fn default_ring_capacity() -> usize {
    settings::RING_CAPACITY
}
fn default_heartbeat_ms() -> u64 {
    millis(settings::HEARTBEAT)
}
fn default_dead_peer_ms() -> u64 {
    millis(settings::DEAD_PEER)
}
fn default_clock_skew_ms() -> u64 {
    millis(settings::CLOCK_SKEW)
}
fn default_reorder_ms() -> u64 {
    millis(settings::REORDER)
}

impl Config {
    /// Parses and checks a configuration: TOML syntax (an error names its line and column),
    /// unknown keys, types, and every rule that needs no lookup. Addresses are checked when
    /// [`router_builder`](Self::router_builder) resolves them.
    ///
    /// # Errors
    ///
    /// [`ConfigErrors`]: every problem found, each naming its key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let (config, schema) = parse::parse::<Self>(text);
        // The rules run over what could be read, so one pass reports both kinds.
        let rules = config.as_ref().map(Self::problems).unwrap_or_default();
        let errors = parse::merge(schema, rules);
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors::new(errors)),
        }
    }

    /// Reads and checks a configuration file.
    ///
    /// # Errors
    ///
    /// [`ConfigErrors`] naming the file: it cannot be read, or every problem in it.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::from(ConfigError {
                key: "config".into(),
                problem: format!("cannot read the config file: {e}"),
            })
        });
        let mut config = text
            .and_then(|t| Self::from_toml(&t))
            .map_err(|e| e.in_file(path))?;
        if let Some(nats) = &mut config.nats {
            nats.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        }
        Ok(config)
    }

    /// The secret file's path, resolved against the config file's directory.
    pub fn secret_path(&self, config_dir: &Path) -> PathBuf {
        config_dir.join(&self.secret_file)
    }

    /// The configuration as TOML, with every default filled in. The secret itself is never
    /// in the config (only the file's path), so there is nothing to redact here.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}

fn default_true() -> bool {
    true
}
