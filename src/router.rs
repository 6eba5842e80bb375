//! [`Router`]: what an application embeds. Raise events, subscribe to them, hear about
//! [`Missed`] ones.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded, unbounded};
use mio::{Poll, Token};
use parking_lot::Mutex;

use crate::auth::{Keyring, SecretFile, SecretFileError};
use crate::config::{ConfigError, ConfigErrors};
use crate::driver::{Core, Driver, DropLog, Output, Routes, Signals, ToDispatcher, WAKER};
use crate::endpoint::{Endpoint, EndpointConfig, Now, RecoveryConfig, new_incarnation};
use crate::event::{EventId, Missed};
use crate::metrics::{Metrics, Shared};
use crate::ringbuf::{ClaimError, Producer, ring};
use crate::subscription::{Delivery, Message, Registry, Subscription};
use crate::sync::plain::{Arc, Ordering, Weak};
use crate::transport::{
    DriverWaker, FaultInjection, TcpConfig, TcpTransport, Transport, UdpConfig, UdpTransport,
};
use crate::wire::{ClusterId, DEFAULT_UDP_FRAME_LEN, MAX_FRAME_LEN, max_payload};

mod members;
mod ops;
pub(crate) mod settings;

pub use members::MembershipSettings;

/// Why [`RouterBuilder::build`] failed. Each names the setting at fault and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Settings are missing or out of range: every one at fault, each naming the builder
    /// method (see [`RouterBuilder::check`]).
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
    /// The secret file could not be used.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// A socket or the poller could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up, such as `udp bind 127.0.0.1:7700`.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
}

/// Why [`Event::raise`] refused an event. Nothing was sent, and local subscribers were not
/// called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaiseError {
    /// The payload does not fit in one frame.
    #[error("payload of {len} bytes exceeds the {max}-byte maximum for this router's frame size")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload.
        max: usize,
    },
    /// The ring is full: the driver cannot keep up (or the network is down). Peers are told
    /// (they raise [`Missed`]).
    #[error("ring full: event refused (peers will be told)")]
    Full,
    /// The router was shut down.
    #[error("router shut down")]
    ShutDown,
}

/// Settings for a [`Router`]; [`Router::builder`] makes one with the defaults.
pub struct RouterBuilder {
    cluster: Option<String>,
    node: Option<u64>,
    keyring: Option<Keyring>,
    secret_file: Option<PathBuf>,
    udp_bind: Option<SocketAddr>,
    udp_peers: Vec<SocketAddr>,
    multicast: Option<(SocketAddrV4, Ipv4Addr)>,
    tcp_listen: Option<SocketAddr>,
    tcp_peers: Vec<SocketAddr>,
    udp_faults: Option<FaultInjection>,
    dispatch_queue: usize,
    transports: Vec<Box<dyn Transport>>,
    ring_capacity: usize,
    max_frame_len: usize,
    heartbeat_interval: Duration,
    dead_timeout: Duration,
    clock_skew: Duration,
    reorder_window: Duration,
    trust_authenticated: bool,
    security: crate::auth::Security,
    service: Option<crate::service::ServiceConfig>,
    channel_capacity: usize,
    send_on_raise: bool,
    dispatch_on_driver: bool,
    busy_poll: Duration,
    recovery: RecoveryConfig,
    linger: Duration,
    membership: Option<MembershipSettings>,
    /// The UDP transport's index and bind address, for membership.
    membership_udp: Option<(usize, SocketAddr)>,
    #[cfg(feature = "nats")]
    nats: Option<crate::transport::NatsConfig>,
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

    /// Runs the subscription service (outside programs subscribe and raise over the Redis
    /// protocol; see [`crate::service`]) as part of this router: it starts with
    /// [`build`](Self::build) and stops with [`Router::shutdown`] or the last handle's drop.
    /// [`Router::service_addr`] gives its address.
    ///
    /// ```no_run
    /// use herald::Router;
    /// use herald::service::ServiceConfig;
    ///
    /// let router = Router::builder()
    ///     .cluster("shop")
    ///     .secret_file("herald.secret")
    ///     .service(ServiceConfig::new("127.0.0.1:6380".parse().unwrap()))
    ///     .build()?;
    /// println!("redis-cli -p {} SUBSCRIBE product.changed", router.service_addr().unwrap().port());
    /// # Ok::<(), herald::BuildError>(())
    /// ```
    pub fn service(mut self, config: crate::service::ServiceConfig) -> Self {
        self.service = Some(config);
        self
    }

    fn invalid(field: &str, problem: impl Into<String>) -> BuildError {
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
        mut transports: Vec<Box<dyn Transport>>,
    ) -> Result<Router, BuildError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| BuildError::Io { what, source }
        };
        let poll = Poll::new().map_err(io("poller"))?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(io("waker"))?);
        for (i, t) in transports.iter_mut().enumerate() {
            let name = t.name().to_owned();
            t.register(
                poll.registry(),
                Token(i + 1),
                DriverWaker(Arc::clone(&waker)),
            )
            .map_err(io(&format!("register transport {name}")))?;
        }
        let skip_mac: Vec<bool> = transports
            .iter()
            .map(|t| {
                let skip = self.trust_authenticated && t.authenticated();
                if skip {
                    tracing::warn!(
                        transport = t.name(),
                        "MAC checking is OFF for this transport: it declares its channel \
                         authenticated, and the router was built to trust that"
                    );
                }
                skip
            })
            .collect();
        let max_record = ring_record_len(self.max_frame_len);
        let (producer, consumer) = ring(self.ring_capacity, max_record)
            .map_err(|e| Self::invalid("ring_capacity", e.to_string()))?;
        let now = Now::system();
        let random = ring_random_u64();
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
                "needs UDP: set udp.bind (membership messages travel over UDP unicast)",
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
        let signals = Arc::new(Signals {
            parked: Default::default(),
            overflowed: Default::default(),
            shutdown: Default::default(),
            waker,
        });
        let metrics = Arc::new(Shared::new());
        let registry = Arc::new(Registry::default());
        let (output, dispatch_rx) = if self.dispatch_on_driver {
            (Output::Inline(Arc::clone(&registry)), None)
        } else {
            let (tx, rx) = bounded(self.dispatch_queue);
            (Output::Dispatcher(ToDispatcher::new(tx)), Some(rx))
        };
        let core = Arc::new(Mutex::new(Core {
            endpoint,
            ring: consumer,
            transports,
            skip_mac,
            signals: Arc::clone(&signals),
            metrics: Arc::clone(&metrics),
            output,
            frame_buf: vec![0; self.max_frame_len],
            batch_buf: vec![0; self.max_frame_len * crate::driver::BATCH_FRAMES],
            batch_lens: Vec::with_capacity(crate::driver::BATCH_FRAMES),
            drop_log: DropLog::default(),
            backlog_since: None,
            routes: Routes::default(),
            linger: self.linger,
            membership,
        }));
        let driver = Driver {
            poll,
            core: Arc::clone(&core),
            signals: Arc::clone(&signals),
            busy_poll: self.busy_poll,
        };
        let driver_signals = Arc::clone(&signals);
        let driver_core = Arc::clone(&core);
        let driver = std::thread::Builder::new()
            .name("herald-driver".into())
            .spawn(move || {
                // A panic here is a bug in herald; the router must not go on looking alive.
                let run = std::panic::AssertUnwindSafe(|| driver.run());
                if std::panic::catch_unwind(run).is_err() {
                    driver_signals.shutdown.store(true, Ordering::Release);
                    // parking_lot's mutex is released, not poisoned, by the unwinding.
                    driver_core.lock().close();
                    tracing::error!(
                        "the router's driver thread panicked: it no longer sends or receives, \
                         and raise() returns ShutDown"
                    );
                }
            })
            .map_err(io("driver thread"))?;
        let dispatcher = match dispatch_rx {
            None => None,
            Some(rx) => {
                let registry = Arc::clone(&registry);
                let metrics = Arc::clone(&metrics);
                let thread = std::thread::Builder::new()
                    .name("herald-dispatch".into())
                    .spawn(move || {
                        for received in &rx {
                            crate::driver::dispatch(received, &registry, &metrics);
                        }
                    })
                    .map_err(io("dispatcher thread"))?;
                Some(thread)
            }
        };
        let router = Router {
            inner: Arc::new(Inner {
                producer,
                registry,
                signals,
                metrics,
                node,
                max_payload: max_payload(self.max_frame_len),
                threads: Mutex::new(Some((driver, dispatcher))),
                send_on_raise: self.send_on_raise.then(|| Arc::clone(&core)),
                core,
                service: Mutex::new(None),
                channel_capacity: self.channel_capacity,
                members: members_view,
            }),
        };
        if let Some(config) = self.service.take() {
            // On an error the router just built is dropped, which stops its threads.
            let service = crate::service::Service::start(&router, config).map_err(|e| match e {
                crate::service::ServiceError::Io { what, source } => {
                    BuildError::Io { what, source }
                }
                crate::service::ServiceError::Invalid(errors) => BuildError::Invalid(errors),
            })?;
            *router.inner.service.lock() = Some(service);
        }
        Ok(router)
    }
}

fn ring_random_u64() -> u64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    // If the system's generator fails, the start time alone still separates incarnations.
    let _ = SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// A node id from the host name and the process id: unique per process on a host, and stable
/// for nothing (set one in the config to keep it across restarts).
fn default_node_id() -> u64 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}:{}", host.trim(), std::process::id()).as_bytes(),
    );
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(b)
}

/// A router's threads: the driver, and the dispatcher (none with `dispatch_on_driver`).
type Threads = (JoinHandle<()>, Option<JoinHandle<()>>);

struct Inner {
    producer: Producer,
    registry: Arc<Registry>,
    signals: Arc<Signals>,
    metrics: Arc<Shared>,
    node: u64,
    max_payload: usize,
    /// Joined at shutdown.
    threads: Mutex<Option<Threads>>,
    /// The driver's core, for raises to send from when the router sends on raise.
    send_on_raise: Option<Arc<Mutex<Core>>>,
    /// The driver's core, for the operator's calls ([`Router::set_keyring`]) between turns.
    core: Arc<Mutex<Core>>,
    /// The subscription service the builder started, if any; stopped first at shutdown.
    service: Mutex<Option<crate::service::Service>>,
    /// Capacity of each channel subscriber's channel.
    channel_capacity: usize,
    /// Membership's member list and change subscribers, when the router runs membership.
    members: Option<Arc<crate::driver::MemberView>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        stop(self);
    }
}

fn stop(inner: &Inner) {
    // The service first: it raises events into this router.
    if let Some(service) = inner.service.lock().take() {
        service.shutdown();
    }
    inner.signals.shutdown.store(true, Ordering::Release);
    let _ = inner.signals.waker.wake();
    if let Some((driver, dispatcher)) = inner.threads.lock().take() {
        join_unless_current(driver);
        // The driver's end of the channel is gone now, so the dispatcher ends.
        if let Some(dispatcher) = dispatcher {
            join_unless_current(dispatcher);
        }
    }
}

/// Joins `thread`, unless this is that thread (the last handle on a router may be dropped by
/// one of its own subscribers): it is shutting down and ends when it returns.
fn join_unless_current(thread: JoinHandle<()>) {
    if thread.thread().id() != std::thread::current().id() {
        let _ = thread.join();
    }
}

/// A router that does not keep its node alive: for parts the router itself owns, such as the
/// subscription service.
#[derive(Clone, Debug)]
pub(crate) struct WeakRouter(Weak<Inner>);

impl WeakRouter {
    /// The router, if any handle on it is still alive.
    pub(crate) fn upgrade(&self) -> Option<Router> {
        self.0.upgrade().map(|inner| Router { inner })
    }
}

/// A node of a herald cluster. `Send + Sync`; clones share the node.
///
/// ```no_run
/// use herald::{EventId, Router};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let router = Router::builder()
///     .cluster("shop")
///     .secret_file("herald.secret")
///     .udp_bind("127.0.0.1:7701".parse()?)
///     .udp_peer("127.0.0.1:7702".parse()?)
///     .build()?;
/// let changed = router.event(EventId::from_name("product.changed"));
/// let _sub = changed.subscribe(|d| println!("product {:?} changed", d.payload()));
/// changed.raise(b"42")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A builder with the defaults.
    pub fn builder() -> RouterBuilder {
        RouterBuilder {
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
            service: None,
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

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.node
    }

    /// The largest payload an event may carry.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// A handle to raise and subscribe to one event.
    pub fn event(&self, id: EventId) -> Event {
        Event {
            router: self.clone(),
            id,
        }
    }

    /// Subscribes to every event (as `herald tail` does).
    pub fn subscribe_all(&self, f: impl Fn(&Delivery<'_>) + Send + Sync + 'static) -> Subscription {
        let key = self.inner.registry.add_callback(None, Arc::new(f));
        Subscription::new(Arc::downgrade(&self.inner.registry), key)
    }

    /// Every event, as owned messages on a channel of
    /// [`RouterBuilder::channel_capacity`] messages (see [`Message::lost_before`]).
    pub fn receiver_all(&self) -> (Subscription, Receiver<Message>) {
        let (tx, rx) = unbounded();
        let key = self
            .inner
            .registry
            .add_channel(None, tx, self.inner.channel_capacity);
        (
            Subscription::new(Arc::downgrade(&self.inner.registry), key),
            rx,
        )
    }

    /// Calls `f` for each [`Missed`] notice, on the dispatcher thread (the driver thread with
    /// [`RouterBuilder::dispatch_on_driver`]).
    pub fn on_missed(&self, f: impl Fn(&Missed) + Send + Sync + 'static) -> Subscription {
        let key = self.inner.registry.add_missed_callback(Arc::new(f));
        Subscription::new(Arc::downgrade(&self.inner.registry), key)
    }

    /// [`Missed`] notices on a channel.
    pub fn missed_receiver(&self) -> (Subscription, Receiver<Missed>) {
        let (tx, rx) = unbounded();
        let key = self.inner.registry.add_missed_channel(tx);
        (
            Subscription::new(Arc::downgrade(&self.inner.registry), key),
            rx,
        )
    }

    /// Capacity of each channel subscriber's channel (and, by default, of an event stream).
    #[cfg_attr(not(feature = "stream"), allow(dead_code))]
    pub(crate) fn channel_capacity(&self) -> usize {
        self.inner.channel_capacity
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.metrics.snapshot()
    }

    /// Sends what the ring holds, says goodbye to the peers (so they report nothing), and
    /// stops the threads. Raises fail with [`RaiseError::ShutDown`] afterwards. Dropping the
    /// last clone does the same.
    pub fn shutdown(&self) {
        stop(&self.inner);
    }

    /// A handle that does not keep the node alive.
    pub(crate) fn downgrade(&self) -> WeakRouter {
        WeakRouter(Arc::downgrade(&self.inner))
    }

    /// The address of the subscription service started by
    /// [`RouterBuilder::service`], if there is one (the bound port when it asked for port 0).
    pub fn service_addr(&self) -> Option<SocketAddr> {
        self.inner.service.lock().as_ref().map(|s| s.local_addr())
    }

    /// The counters of the subscription service started by [`RouterBuilder::service`].
    pub fn service_metrics(&self) -> Option<crate::service::ServiceMetrics> {
        self.inner.service.lock().as_ref().map(|s| s.metrics())
    }

    fn raise(&self, id: &EventId, payload: &[u8]) -> Result<(), RaiseError> {
        let inner = &*self.inner;
        if inner.signals.shutdown.load(Ordering::Relaxed) {
            return Err(RaiseError::ShutDown);
        }
        if payload.len() > inner.max_payload {
            return Err(RaiseError::TooLarge {
                len: payload.len(),
                max: inner.max_payload,
            });
        }
        match inner.producer.push(id, payload) {
            Ok(()) => {}
            Err(ClaimError::Full) => {
                inner.metrics.raise_full.fetch_add(1, Ordering::Relaxed);
                inner.signals.overflowed.store(true, Ordering::Release);
                inner.signals.wake();
                return Err(RaiseError::Full);
            }
            Err(_) => {
                return Err(RaiseError::TooLarge {
                    len: payload.len(),
                    max: inner.max_payload,
                });
            }
        }
        match &inner.send_on_raise {
            Some(core) => inner.signals.send_or_wake(core),
            None => inner.signals.wake(),
        }
        // Building a delivery costs nothing, and with no event subscriber at all this is one
        // load of a flag.
        inner
            .registry
            .dispatch(&Delivery::local(*id, inner.node, payload));
        Ok(())
    }
}

/// The longest ring record a router needs: the one that carries the largest payload a frame
/// of `max_frame_len` bytes does.
fn ring_record_len(max_frame_len: usize) -> usize {
    // That payload is under 64 KiB, so the length is always there.
    crate::ringbuf::record_len(max_payload(max_frame_len)).unwrap_or(MAX_FRAME_LEN)
}

/// One event of a [`Router`]: raise it, subscribe to it.
#[derive(Clone, Debug)]
pub struct Event {
    router: Router,
    id: EventId,
}

impl Event {
    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// Raises the event: local subscribers run now, on this thread; the event is queued for
    /// every peer. Never blocks and never allocates (channel subscribers of this node get a
    /// copy of the payload, which allocates). With [`RouterBuilder::send_on_raise`], a raise
    /// that finds the node idle also signs and sends the frame itself: a system call, still
    /// without waiting for anyone.
    ///
    /// # Errors
    ///
    /// [`RaiseError`]: too large, ring full, or shut down. Then nothing happened, locally
    /// or remotely.
    pub fn raise(&self, payload: &[u8]) -> Result<(), RaiseError> {
        self.router.raise(&self.id, payload)
    }

    /// Calls `f` for each raise of this event: local ones on the raising thread, remote ones
    /// on the dispatcher thread (the driver thread with
    /// [`RouterBuilder::dispatch_on_driver`]). Dropping the [`Subscription`] unsubscribes.
    pub fn subscribe(&self, f: impl Fn(&Delivery<'_>) + Send + Sync + 'static) -> Subscription {
        let registry = &self.router.inner.registry;
        let key = registry.add_callback(Some(self.id), Arc::new(f));
        Subscription::new(Arc::downgrade(registry), key)
    }

    /// This event's raises as owned messages on a channel of
    /// [`RouterBuilder::channel_capacity`] messages: when the receiver falls that far behind,
    /// events for it are dropped, never waited for, and the next message it gets counts them
    /// in [`Message::lost_before`].
    pub fn receiver(&self) -> (Subscription, Receiver<Message>) {
        let registry = &self.router.inner.registry;
        let (tx, rx) = unbounded();
        let key = registry.add_channel(Some(self.id), tx, self.router.inner.channel_capacity);
        (Subscription::new(Arc::downgrade(registry), key), rx)
    }
}
