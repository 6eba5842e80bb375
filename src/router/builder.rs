//! [`RouterBuilder`]: a router's settings, checked (see `settings.rs` for the rules and
//! defaults), and the assembly of a node from them: transports bound, ring and endpoint made,
//! and the driver started.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;

use super::members::MembershipSettings;
use super::{Inner, Router, settings};
use crate::auth::{Keyring, SecretFile};
use crate::driver::Parts;
use crate::endpoint::{
    Endpoint, EndpointConfig, Now, RecoveryConfig, default_node_id, new_incarnation, random_u64,
};
use crate::error::{BuildError, ConfigError, ConfigErrors};
use crate::metrics::Shared;
use crate::ringbuf::ring;
use crate::subscription::Registry;
use crate::sync::plain::Arc;
use crate::transport::{
    FaultInjection, TcpConfig, TcpTransport, Transport, UdpConfig, UdpTransport,
};
use crate::wire::{ClusterId, DEFAULT_UDP_FRAME_LEN, MAX_FRAME_LEN, max_payload};
#[cfg(doc)]
use crate::{Event, Message, Missed};

/// Settings for a [`Router`]; [`Router::builder`] makes one with the defaults.
pub struct RouterBuilder {
    pub(super) cluster: Option<String>,
    pub(super) node: Option<u64>,
    pub(super) keyring: Option<Keyring>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) udp_bind: Option<SocketAddr>,
    pub(super) udp_peers: Vec<SocketAddr>,
    pub(super) multicast: Option<(SocketAddrV4, Ipv4Addr)>,
    pub(super) tcp_listen: Option<SocketAddr>,
    pub(super) tcp_peers: Vec<SocketAddr>,
    pub(super) udp_faults: Option<FaultInjection>,
    pub(super) dispatch_queue: usize,
    pub(super) transports: Vec<Box<dyn Transport>>,
    pub(super) ring_capacity: usize,
    pub(super) max_frame_len: usize,
    pub(super) heartbeat_interval: Duration,
    pub(super) dead_timeout: Duration,
    pub(super) clock_skew: Duration,
    pub(super) reorder_window: Duration,
    pub(super) trust_authenticated: bool,
    pub(super) security: crate::auth::Security,
    pub(super) channel_capacity: usize,
    pub(super) send_on_raise: bool,
    pub(super) dispatch_on_driver: bool,
    pub(super) busy_poll: Duration,
    pub(super) recovery: RecoveryConfig,
    pub(super) linger: Duration,
    pub(super) membership: Option<MembershipSettings>,
    /// The UDP transport's index and bind address, for membership.
    pub(super) membership_udp: Option<(usize, SocketAddr)>,
    #[cfg(feature = "nats")]
    pub(super) nats: Option<crate::transport::NatsConfig>,
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("udp_bind", &self.udp_bind)
            .field("udp_peers", &self.udp_peers)
            .field("multicast", &self.multicast)
            .field("ring_capacity", &self.ring_capacity)
            .field("max_frame_len", &self.max_frame_len)
            .finish_non_exhaustive()
    }
}

/// The least random delay before a first request on a shared channel (multicast).
const SHARED_NAK_DELAY: Duration = Duration::from_millis(3);

impl RouterBuilder {
    /// A builder with the defaults ([`Router::builder`]).
    pub(super) fn new() -> Self {
        Self {
            cluster: None,
            node: None,
            keyring: None,
            secret_file: None,
            udp_bind: None,
            udp_peers: Vec::new(),
            multicast: None,
            tcp_listen: None,
            tcp_peers: Vec::new(),
            udp_faults: None,
            dispatch_queue: settings::DISPATCH_QUEUE,
            transports: Vec::new(),
            ring_capacity: settings::RING_CAPACITY,
            max_frame_len: DEFAULT_UDP_FRAME_LEN,
            heartbeat_interval: settings::HEARTBEAT,
            dead_timeout: settings::DEAD_PEER,
            clock_skew: settings::CLOCK_SKEW,
            reorder_window: settings::REORDER,
            trust_authenticated: false,
            security: crate::auth::Security::Sign,
            channel_capacity: settings::CHANNEL_CAPACITY,
            send_on_raise: false,
            dispatch_on_driver: false,
            busy_poll: Duration::ZERO,
            recovery: RecoveryConfig::default(),
            linger: Duration::from_secs(1),
            membership: None,
            membership_udp: None,
            #[cfg(feature = "nats")]
            nats: None,
        }
    }

    /// How data frames are protected: [`Security::Sign`](crate::auth::Security::Sign)
    /// (HMAC-SHA256, the default) or [`Security::Encrypt`](crate::auth::Security::Encrypt)
    /// (sealed with AES-256-GCM, see `docs/security.md`). Every node of a cluster must use
    /// the same mode: data frames of the other mode are dropped (`security_mode_mismatch`).
    pub fn security(mut self, security: crate::auth::Security) -> Self {
        self.security = security;
        self
    }

    /// The cluster's name (required). Nodes of different clusters ignore each other.
    pub fn cluster(mut self, name: &str) -> Self {
        self.cluster = Some(name.to_owned());
        self
    }

    /// This node's id, unique in the cluster. Default: derived from the host name and process
    /// id, which is unique per process on a host.
    pub fn node_id(mut self, id: u64) -> Self {
        self.node = Some(id);
        self
    }

    /// The keyring to sign and verify with.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// A secret file to load the keyring from (see [`SecretFile`]).
    pub fn secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secret_file = Some(path.into());
        self
    }

    /// Receive UDP on this address.
    pub fn udp_bind(mut self, addr: SocketAddr) -> Self {
        self.udp_bind = Some(addr);
        self
    }

    /// Send every frame to this UDP peer too.
    pub fn udp_peer(mut self, addr: SocketAddr) -> Self {
        self.udp_peers.push(addr);
        self
    }

    /// Join a multicast group (and send to it) on the interface with this address.
    pub fn udp_multicast(mut self, group: SocketAddrV4, interface: Ipv4Addr) -> Self {
        self.multicast = Some((group, interface));
        self
    }

    /// Injects seeded faults (loss, bursts, duplication, reordering) into what the UDP
    /// transport receives. For tests of what your application does with [`Missed`].
    pub fn udp_fault_injection(mut self, faults: FaultInjection) -> Self {
        self.udp_faults = Some(faults);
        self
    }

    /// How many received frames may wait for the dispatcher thread. Default 4096. When
    /// subscribers fall further behind, frames are dropped (never the sockets slowed down)
    /// and reported as [`MissedReason::LocalOverflow`](crate::MissedReason::LocalOverflow).
    pub fn dispatch_queue(mut self, frames: usize) -> Self {
        self.dispatch_queue = frames;
        self
    }

    /// Accept peers' TCP connections on this address (their frames arrive there).
    pub fn tcp_listen(mut self, addr: SocketAddr) -> Self {
        self.tcp_listen = Some(addr);
        self
    }

    /// Connect to this TCP peer and send it every frame (reconnecting with backoff).
    pub fn tcp_peer(mut self, addr: SocketAddr) -> Self {
        self.tcp_peers.push(addr);
        self
    }

    /// Carry frames over NATS too (feature `nats`; see
    /// [`NatsTransport`](crate::transport::NatsTransport)): the router connects when it is
    /// built, and fails to build if no server takes its credentials.
    #[cfg(feature = "nats")]
    pub fn nats(mut self, config: crate::transport::NatsConfig) -> Self {
        self.nats = Some(config);
        self
    }

    /// The counters of the NATS transport [`nats`](Self::nats) set up, if any (for metrics).
    #[cfg(feature = "nats")]
    pub fn nats_stats(&self) -> Option<crate::transport::NatsStats> {
        self.nats.as_ref().map(crate::transport::NatsConfig::stats)
    }

    /// Add a transport of your own (see [`Transport`]).
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transports.push(Box::new(transport));
        self
    }

    /// The ring's size in bytes, a power of two. Default 1 MiB.
    pub fn ring_capacity(mut self, bytes: usize) -> Self {
        self.ring_capacity = bytes;
        self
    }

    /// The largest frame, in bytes. Default 1472 (one Ethernet datagram).
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// How often an idle node sends a heartbeat. Default 100 ms.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }

    /// How long a peer may be silent before it is reported. Default 1 s.
    pub fn dead_peer_timeout(mut self, d: Duration) -> Self {
        self.dead_timeout = d;
        self
    }

    /// How far a frame's timestamp may be from this node's clock. Default 5 s.
    pub fn clock_skew(mut self, d: Duration) -> Self {
        self.clock_skew = d;
        self
    }

    /// How long a gap waits for a late frame before it is reported. Default 20 ms.
    pub fn reorder_window(mut self, d: Duration) -> Self {
        self.reorder_window = d;
        self
    }

    /// Skips the MAC check on frames from transports that declare their channel already
    /// authenticated ([`Transport::authenticated`]). Off by default; when on, a warning is
    /// logged for each such transport at start. Frames from other transports are still
    /// checked. Frames are still signed when sent.
    pub fn trust_authenticated_transports(mut self, trust: bool) -> Self {
        self.trust_authenticated = trust;
        self
    }

    /// How many messages each channel subscriber ([`Event::receiver`],
    /// [`Router::receiver_all`]) may have waiting (default 65,536). Past that, events for it
    /// are dropped, so a receiver nobody reads cannot grow without bound or slow anyone, and
    /// the next message it gets counts them in [`Message::lost_before`]. Callback
    /// subscribers are not affected.
    pub fn channel_capacity(mut self, messages: usize) -> Self {
        self.channel_capacity = messages;
        self
    }

    /// When the driver is asleep (the bus idle), a raise signs and sends its frame itself, on
    /// the raising thread, instead of waking the driver to do it: one thread wake-up fewer
    /// between a raise and the wire. The price is paid by the raise: while the bus is idle,
    /// each one costs a system call and an HMAC (microseconds rather than tens of
    /// nanoseconds). Under load the driver is awake and raises only append to the ring, as
    /// without this setting. Off by default; see docs/architecture.md, "Latency".
    pub fn send_on_raise(mut self, on: bool) -> Self {
        self.send_on_raise = on;
        self
    }

    /// Calls subscribers of remote events and of [`Missed`] on the driver thread, as soon as
    /// each frame verifies, instead of handing them to the dispatcher thread: one thread
    /// wake-up fewer between the wire and a subscriber. Only for subscribers that return
    /// quickly (a cache eviction, a channel send): while one runs, this node neither sends nor
    /// receives, so a slow one delays every event and can make the kernel drop datagrams
    /// (reported as Missed). [`dispatch_queue`](Self::dispatch_queue) has no effect then.
    /// Off by default; see docs/architecture.md, "Latency".
    pub fn dispatch_on_driver(mut self, on: bool) -> Self {
        self.dispatch_on_driver = on;
        self
    }

    /// Keeps the driver awake for `spin` after the bus goes idle: instead of sleeping until a
    /// socket or a raise wakes it, it goes on reading its sockets and looking at the ring,
    /// turn after turn, and sleeps only once nothing has come or gone for that long. This
    /// removes the kernel's wake-up from the path of every event that arrives within `spin`
    /// of the previous one, which is most of what is left of herald's latency once the other
    /// two settings are on (about 21 µs p50 down to 7–8 µs here; docs/architecture.md,
    /// "Latency").
    ///
    /// The price is a whole CPU core for each node while traffic flows: with `spin` longer
    /// than the gap between events, the driver never sleeps. Only for nodes with a core to
    /// spare; with more busy threads than cores it makes latency far worse, not better. While
    /// the driver spins, [`send_on_raise`](Self::send_on_raise) has nothing to do: the driver
    /// is awake and sends within a turn. Default zero (sleep as soon as there is nothing to
    /// do).
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.busy_poll = spin;
        self
    }

    /// How lost frames are recovered and how far this node may run ahead of its receivers
    /// (see [`RecoveryConfig`] for each setting and its default). The window is capped so
    /// that the frames it spans fit the retention.
    pub fn recovery(mut self, recovery: RecoveryConfig) -> Self {
        self.recovery = recovery;
        self
    }

    /// How long a stopping node waits for its live receivers to acknowledge its last frames,
    /// sending again what they lack (default 1 s; zero: not at all).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    pub(super) fn invalid(field: &str, problem: impl Into<String>) -> BuildError {
        BuildError::Invalid(ConfigErrors::new(vec![ConfigError {
            key: field.to_owned(),
            problem: problem.into(),
        }]))
    }

    /// Checks every setting, binds the sockets and starts the driver and dispatcher threads.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the setting at fault.
    pub fn build(mut self) -> Result<Router, BuildError> {
        self.check()?;
        let cluster = self.cluster.clone().unwrap_or_default();
        let keyring = match (self.keyring.take(), &self.secret_file) {
            (Some(k), None) => k,
            (None, Some(path)) => SecretFile::load(path)?.keyring(),
            (Some(_), Some(_)) => {
                return Err(Self::invalid(
                    "secret_file",
                    "give either a keyring or a secret file, not both",
                ));
            }
            (None, None) => {
                return Err(Self::invalid(
                    "secret_file",
                    "missing: give a secret file (create one with `herald keygen`) or a keyring",
                ));
            }
        };
        let mut transports = std::mem::take(&mut self.transports);
        if self.udp_bind.is_some() || self.multicast.is_some() {
            let bind = match (self.udp_bind, self.multicast) {
                (Some(b), _) => b,
                (None, Some((group, _))) => {
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port()))
                }
                (None, None) => unreachable!("one of the two is set"),
            };
            let config = UdpConfig {
                bind,
                peers: self.udp_peers.clone(),
                multicast: self.multicast,
                max_frame_len: self.max_frame_len,
                faults: self.udp_faults.clone(),
            };
            let udp = UdpTransport::bind(&config).map_err(|source| BuildError::Io {
                what: format!("udp bind {bind}"),
                source,
            })?;
            let bound = udp.local_addr().unwrap_or(bind);
            self.membership_udp = Some((transports.len(), bound));
            transports.push(Box::new(udp));
        }
        if self.tcp_listen.is_some() || !self.tcp_peers.is_empty() {
            let mut config = TcpConfig::new(self.max_frame_len);
            config.listen = self.tcp_listen;
            config.peers = self.tcp_peers.clone();
            config.member_port_offset = self.tcp_member_port_offset();
            let tcp = TcpTransport::bind(config).map_err(|source| BuildError::Io {
                what: format!(
                    "tcp listen {}",
                    self.tcp_listen
                        .map_or_else(|| "-".to_owned(), |a| a.to_string())
                ),
                source,
            })?;
            transports.push(Box::new(tcp));
        }
        let node = self.node.unwrap_or_else(default_node_id);
        #[cfg(feature = "nats")]
        if let Some(config) = &self.nats {
            if let Err((field, problem)) = config.check(&cluster) {
                return Err(Self::invalid(field, problem));
            }
            let nats = crate::transport::NatsTransport::connect(config, &cluster, node).map_err(
                |source| BuildError::Io {
                    what: "nats".to_owned(),
                    source,
                },
            )?;
            transports.push(Box::new(nats));
        }
        if transports.is_empty() {
            tracing::warn!("router built without a transport: events stay on this node");
        }
        self.start(cluster, node, keyring, transports)
    }

    fn start(
        mut self,
        cluster: String,
        node: u64,
        keyring: Keyring,
        transports: Vec<Box<dyn Transport>>,
    ) -> Result<Router, BuildError> {
        let max_record = ring_record_len(self.max_frame_len);
        let (producer, consumer) = ring(self.ring_capacity, max_record)
            .map_err(|e| Self::invalid("ring_capacity", e.to_string()))?;
        let now = Now::system();
        let random = random_u64();
        let mut config = EndpointConfig::new(
            ClusterId::from_name(&cluster),
            node,
            new_incarnation(now.unix_ns, random),
        );
        config.heartbeat_interval = self.heartbeat_interval;
        config.dead_timeout = self.dead_timeout;
        config.clock_skew = self.clock_skew;
        config.reorder_window = self.reorder_window;
        config.recovery = self.recovery.clone();
        config.security = self.security;
        config.max_frame_len = self.max_frame_len;
        // A window no larger than what the sender keeps, so any frame of it can be sent again.
        let held = u64::try_from(self.recovery.retention_bytes / self.max_frame_len).unwrap_or(1);
        config.recovery.window_frames = config.recovery.window_frames.min(held).max(1);
        config.recovery.shared_channel |= self.multicast.is_some();
        if config.recovery.shared_channel {
            // Receivers that lost the same frame should hear each other's request before
            // sending their own: the driver's timers tick in milliseconds, so a delay spread
            // over less than that would fire everywhere at once.
            config.recovery.nak_delay = config.recovery.nak_delay.max(SHARED_NAK_DELAY);
        }
        if self.membership.is_some() && self.membership_udp.is_none() {
            return Err(Self::invalid(
                "membership",
                "needs UDP: set udp.bind or a udp.multicast group (membership messages travel over UDP)",
            ));
        }
        let membership = self.membership_udp.and_then(|(udp, bind)| {
            self.make_membership(node, config.incarnation, udp, bind, now.instant)
        });
        let members_view = membership.as_ref().map(|m| Arc::clone(&m.view));
        let mut endpoint = Endpoint::new(config, keyring, now);
        if membership.is_some() {
            endpoint.enable_membership();
        }
        let metrics = Arc::new(Shared::new());
        let registry = Arc::new(Registry::default());
        let running = crate::driver::start(Parts {
            endpoint,
            ring: consumer,
            transports,
            trust_authenticated: self.trust_authenticated,
            registry: Arc::clone(&registry),
            metrics: Arc::clone(&metrics),
            max_frame_len: self.max_frame_len,
            linger: self.linger,
            membership,
            dispatch_on_driver: self.dispatch_on_driver,
            dispatch_queue: self.dispatch_queue,
            busy_poll: self.busy_poll,
        })?;
        Ok(Router {
            inner: Arc::new(Inner {
                producer,
                registry,
                signals: running.signals,
                metrics,
                node,
                max_payload: max_payload(self.max_frame_len),
                threads: Mutex::new(Some(running.threads)),
                send_on_raise: self.send_on_raise.then(|| Arc::clone(&running.core)),
                core: running.core,
                channel_capacity: self.channel_capacity,
                members: members_view,
            }),
        })
    }
}

/// The longest ring record a router needs: the one that carries the largest payload a frame
/// of `max_frame_len` bytes does.
pub(super) fn ring_record_len(max_frame_len: usize) -> usize {
    // That payload is under 64 KiB, so the length is always there.
    crate::ringbuf::record_len(max_payload(max_frame_len)).unwrap_or(MAX_FRAME_LEN)
}
