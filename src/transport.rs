//! Providers: what carries frames between nodes. herald's UDP transport implements the same
//! public [`Transport`] trait a user implements to plug in their own.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::Interest;
use mio::net::UdpSocket;
/// mio's registry and token, as [`Transport::register`] takes them (so a provider does not
/// need its own dependency on mio unless it registers sockets).
pub use mio::{Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// A way to move frames between nodes.
///
/// The driver thread owns every transport. It calls [`register`](Self::register) once, then,
/// in each turn, [`send`](Self::send) for each frame to send and [`recv`](Self::recv) for every
/// transport. A transport that learns of frames on another thread (a broker client, say) keeps
/// the [`DriverWaker`] it is given at registration and calls [`DriverWaker::wake`] so the driver
/// does not sleep until its next timer.
///
/// Frames are opaque bytes to a transport: herald signs and checks them. A transport whose
/// channel is already authenticated may say so with [`authenticated`](Self::authenticated),
/// which is what lets a router be built with MAC checking turned off for it.
pub trait Transport: Send + fmt::Debug + 'static {
    /// A short name for logs and errors, such as `"udp"`.
    fn name(&self) -> &str;

    /// Registers the transport's event sources (if it has any) under `token`; `waker` wakes
    /// the driver from another thread.
    ///
    /// # Errors
    ///
    /// The registration's I/O error; the router fails to build.
    fn register(&mut self, registry: &Registry, token: Token, waker: DriverWaker)
    -> io::Result<()>;

    /// Sends one frame to every peer. It must not block: a peer that cannot take the frame
    /// now loses it (receivers will report it as missed) and the error is counted.
    ///
    /// # Errors
    ///
    /// How many destinations failed, with the last error.
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError>;

    /// Hands every frame received since the last call to `deliver`, without blocking.
    ///
    /// # Errors
    ///
    /// An I/O error other than `WouldBlock`; it is logged and the transport is polled again.
    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes)) -> io::Result<()>;

    /// Whether the channel already authenticates every frame (default: no).
    fn authenticated(&self) -> bool {
        false
    }

    /// When the transport next needs [`recv`](Self::recv) called even if nothing woke the
    /// driver, such as a reconnection attempt (default: never).
    fn next_timeout(&self) -> Option<Instant> {
        None
    }
}

mod tcp;

pub use tcp::{TcpConfig, TcpTransport};

/// Wakes a router's driver thread (a cheap clone of one handle; mio allows one waker per poll).
#[derive(Clone, Debug)]
pub struct DriverWaker(pub(crate) crate::sync::plain::Arc<mio::Waker>);

impl DriverWaker {
    /// Wakes the driver, which then calls [`Transport::recv`] on every transport.
    pub fn wake(&self) {
        let _ = self.0.wake();
    }
}

/// Why a [`Transport::send`] reached fewer than all of its peers.
#[derive(Debug, thiserror::Error)]
#[error("{failed} destination(s) did not take the frame: {last}")]
pub struct SendError {
    /// How many destinations failed.
    pub failed: usize,
    /// The last error seen.
    pub last: io::Error,
}

/// Faults a [`UdpTransport`] injects into what it receives, from a seeded generator: for
/// testing what herald promises under loss, bursts, duplication and reordering without root
/// or kernel rules. Probabilities are per datagram, from 0.0 to 1.0.
#[derive(Clone, Debug, Default)]
pub struct FaultInjection {
    /// Seed of the generator: the same seed drops the same datagrams.
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a loss starts a burst of `burst_len` more lost datagrams.
    pub burst: f64,
    /// Length of a loss burst.
    pub burst_len: u32,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back for up to `reorder_delay`, so that later
    /// ones overtake it.
    pub reorder: f64,
    /// The longest a datagram is held back.
    pub reorder_delay: Duration,
}

#[derive(Debug)]
struct Faults {
    config: FaultInjection,
    rng: crate::testing::SimRng,
    burst_left: u32,
    held: VecDeque<(Instant, Bytes)>,
}

impl Faults {
    /// Passes `bytes` through the faults: zero, one or two deliveries, now or later.
    fn apply(&mut self, bytes: Bytes, deliver: &mut dyn FnMut(Bytes)) {
        if self.burst_left > 0 {
            self.burst_left -= 1;
            return;
        }
        if self.rng.chance(self.config.loss) {
            if self.rng.chance(self.config.burst) {
                self.burst_left = self.config.burst_len;
            }
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.chance(self.config.reorder) {
                let max = u64::try_from(self.config.reorder_delay.as_nanos()).unwrap_or(1);
                let delay = Duration::from_nanos(self.rng.next_u64() % max.max(1));
                self.held.push_back((Instant::now() + delay, bytes.clone()));
            } else {
                deliver(bytes.clone());
            }
        }
    }

    /// Delivers the held-back datagrams whose time has come.
    fn release(&mut self, deliver: &mut dyn FnMut(Bytes)) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 <= now {
                if let Some((_, bytes)) = self.held.remove(i) {
                    deliver(bytes);
                }
            } else {
                i += 1;
            }
        }
    }

    fn next_release(&self) -> Option<Instant> {
        self.held.iter().map(|(t, _)| *t).min()
    }
}

/// UDP settings for [`UdpTransport`].
#[derive(Clone, Debug)]
pub struct UdpConfig {
    /// The address to bind (for multicast: the group's port on `0.0.0.0` or the interface).
    pub bind: SocketAddr,
    /// Unicast peers every frame goes to.
    pub peers: Vec<SocketAddr>,
    /// A multicast group to join and send to, and the interface to use for it.
    pub multicast: Option<(SocketAddrV4, Ipv4Addr)>,
    /// The largest frame, which sizes the receive buffers.
    pub max_frame_len: usize,
    /// Faults to inject into received datagrams (tests only).
    pub faults: Option<FaultInjection>,
}

/// herald's UDP transport: unicast to a peer list, multicast to a group, or both.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    destinations: Vec<SocketAddr>,
    buf: BytesMut,
    max_frame_len: usize,
    faults: Option<Faults>,
}

/// Receive buffers are carved out of blocks of this many bytes.
const RECV_BLOCK: usize = 256 * 1024;

impl UdpTransport {
    /// Binds the socket (and joins the multicast group).
    ///
    /// # Errors
    ///
    /// The socket's I/O error, such as the address in use.
    pub fn bind(config: &UdpConfig) -> io::Result<Self> {
        let domain = Domain::for_address(config.bind);
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if config.multicast.is_some() {
            // Several nodes on one host share the group's port.
            socket.set_reuse_address(true)?;
        }
        // Room for bursts: a few hundred full frames.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        socket.set_nonblocking(true)?;
        socket.bind(&config.bind.into())?;
        let mut destinations = config.peers.clone();
        if let Some((group, interface)) = config.multicast {
            socket.join_multicast_v4(group.ip(), &interface)?;
            // Send through the configured interface only: never out by a default route.
            socket.set_multicast_if_v4(&interface)?;
            // Other nodes on this host listen too; this node's own frames come back and are
            // dropped by node id.
            socket.set_multicast_loop_v4(true)?;
            socket.set_multicast_ttl_v4(1)?;
            destinations.push(SocketAddr::V4(group));
        }
        let socket = UdpSocket::from_std(socket.into());
        Ok(Self {
            socket,
            destinations,
            buf: BytesMut::with_capacity(RECV_BLOCK),
            max_frame_len: config.max_frame_len,
            faults: config.faults.clone().map(|f| Faults {
                rng: crate::testing::SimRng::new(f.seed),
                config: f,
                burst_left: 0,
                held: VecDeque::new(),
            }),
        })
    }

    /// The bound address (useful after binding port 0).
    ///
    /// # Errors
    ///
    /// The socket's I/O error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Transport for UdpTransport {
    fn name(&self) -> &str {
        "udp"
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.faults.as_ref().and_then(Faults::next_release)
    }

    fn register(&mut self, registry: &Registry, token: Token, _: DriverWaker) -> io::Result<()> {
        registry.register(&mut self.socket, token, Interest::READABLE)
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let mut failed = 0;
        let mut last = None;
        for dest in &self.destinations {
            let mut tries = 0;
            loop {
                match self.socket.send_to(frame, *dest) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The socket buffer is full: give the kernel a moment, a few times, then
                    // let the frame go (the receiver reports it missed).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 64 => {
                        tries += 1;
                        std::thread::yield_now();
                    }
                    Err(e) => {
                        failed += 1;
                        last = Some(e);
                        break;
                    }
                }
            }
        }
        match last {
            None => Ok(()),
            Some(last) => Err(SendError { failed, last }),
        }
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes)) -> io::Result<()> {
        if let Some(faults) = &mut self.faults {
            faults.release(deliver);
        }
        loop {
            if self.buf.capacity() < self.max_frame_len + 1 {
                self.buf = BytesMut::with_capacity(RECV_BLOCK.max(self.max_frame_len + 1));
            }
            // One byte more than the largest frame, so an oversized datagram shows as such
            // (the parser refuses it) instead of being cut to a plausible length.
            self.buf.resize(self.max_frame_len + 1, 0);
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, _from)) => {
                    self.buf.truncate(n);
                    let bytes = self.buf.split().freeze();
                    match &mut self.faults {
                        Some(faults) => faults.apply(bytes, deliver),
                        None => deliver(bytes),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.buf.clear();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
    }
}
