//! Providers: what carries frames between nodes. herald's UDP transport implements the same
//! public [`Transport`] trait a user implements to plug in their own.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::Interest;
use mio::net::UdpSocket;
/// mio's registry and token, as [`Transport::register`] takes them (so a provider does not
/// need its own dependency on mio unless it registers sockets).
pub use mio::{Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use blocks::BlockPool;

/// A way to move frames between nodes.
///
/// The driver thread owns every transport. It calls [`register`](Self::register) once, then,
/// in each turn, [`send_batch`](Self::send_batch) for the frames to send to every peer,
/// [`recv`](Self::recv) for every transport, and [`send_to`](Self::send_to) for frames meant
/// for one peer (statuses, requests for lost frames, frames sent again), addressed to where
/// that peer's frames came from. When cluster membership changes, it calls
/// [`set_peers`](Self::set_peers) with the live members' addresses. A transport that learns of frames on another thread (a broker client, say) keeps
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
    /// Usually called on the driver thread; with
    /// [`send_on_raise`](crate::RouterBuilder::send_on_raise), also on a thread raising an
    /// event while the driver sleeps. Never two calls of a transport's methods at once.
    ///
    /// # Errors
    ///
    /// How many destinations failed, with the last error.
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError>;

    /// Sends several frames, in order, to every peer. The driver hands over what one turn
    /// encoded, so a transport can move the batch in fewer system calls (herald's UDP
    /// transport uses segmentation offload, its TCP transport one write per peer). The default
    /// calls [`send`](Self::send) for each frame.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send): how many frame deliveries failed, with the last error.
    fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        let mut failed = 0;
        let mut last = None;
        for frame in batch.iter() {
            if let Err(e) = self.send(frame) {
                failed += e.failed;
                last = Some(e.last);
            }
        }
        match last {
            None => Ok(()),
            Some(last) => Err(SendError { failed, last }),
        }
    }

    /// Sends one frame to one peer: the one whose frames arrived from `peer` (as
    /// [`recv`](Self::recv) said). The frame names the node it is for, so a transport that
    /// cannot address one peer may send it to every peer, which is what the default does;
    /// on a shared channel (multicast) herald's UDP transport sends it to the group, so that
    /// other receivers see requests and resends too.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    fn send_to(&mut self, peer: &PeerAddr, frame: &[u8]) -> Result<(), SendError> {
        let _ = peer;
        self.send(frame)
    }

    /// The addresses of the cluster's live members, whenever they change (membership): a
    /// transport that sends to a list of peers sends to these from now on (besides any fixed
    /// destination such as a multicast group). The default ignores them.
    fn set_peers(&mut self, peers: &[SocketAddr]) {
        let _ = peers;
    }

    /// Hands frames received since the last call to `deliver`, each with where it came from,
    /// without blocking.
    ///
    /// It may stop before its sources are drained (a budget, so that a flood cannot starve
    /// the driver's sending and timers) and then says so with [`RecvStatus::MoreWaiting`]:
    /// the driver calls again before it sleeps, and meanwhile holds back giving up on gaps
    /// (the late frame may be among what is waiting), for at most one reorder window.
    ///
    /// # Errors
    ///
    /// An I/O error other than `WouldBlock`; it is logged and the transport is polled again.
    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus>;

    /// Whether the channel already authenticates every frame (default: no).
    fn authenticated(&self) -> bool {
        false
    }

    /// Whether every destination is behind but still taking frames, so that more frames now
    /// would only be queued or dropped (default: never).
    ///
    /// While every transport of a router says so, the driver leaves events in the ring
    /// instead of signing frames that would be thrown away: once the ring fills, raises fail
    /// with [`RaiseError::Full`](crate::RaiseError::Full), the application learns of the
    /// overload where it can act on it, and receivers are told by the `OVERFLOWED` flag.
    /// A transport that says so must see to it that the driver wakes when it stops saying
    /// so (a registered socket becoming writable does, or [`next_timeout`](Self::next_timeout)).
    /// Shutdown's last flush ignores it. herald's TCP transport says so while every
    /// connected peer has half its queue full and has taken bytes in the last 100 ms: a slow
    /// peer slows the sender, a frozen one does not hold it for longer than that.
    fn backpressure(&self) -> bool {
        false
    }

    /// When the transport next needs [`recv`](Self::recv) called even if nothing woke the
    /// driver, such as a reconnection attempt (default: never).
    fn next_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Where a received frame came from, as its transport tells it; [`Transport::send_to`] takes
/// it back to answer that peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A socket address (herald's UDP transport).
    Socket(SocketAddr),
    /// A connection, subject or channel, numbered by the transport itself.
    Channel(u64),
    /// The transport cannot tell: answers go to every peer.
    Unknown,
}

/// Whether [`Transport::recv`] read everything its sources had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvStatus {
    /// Every source would have blocked: nothing that had arrived is left unread.
    Drained,
    /// The transport stopped at its budget; frames that have arrived may still be waiting.
    MoreWaiting,
}

mod blocks;
#[cfg(feature = "nats")]
pub mod nats;
mod tcp;

#[cfg(feature = "nats")]
pub use nats::{NatsAuth, NatsConfig, NatsStats, NatsTransport};

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

/// Frames laid end to end in one buffer, in the order they are to be sent.
///
/// ```
/// use herald::transport::FrameBatch;
///
/// let bytes = b"aaabbc";
/// let batch = FrameBatch::new(bytes, &[3, 2, 1]).unwrap();
/// let frames: Vec<&[u8]> = batch.iter().collect();
/// assert_eq!(frames, [&b"aaa"[..], b"bb", b"c"]);
/// assert_eq!(batch.as_bytes(), bytes);
/// assert!(FrameBatch::new(bytes, &[3, 4]).is_none()); // lengths must add up
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FrameBatch<'a> {
    bytes: &'a [u8],
    lens: &'a [usize],
}

impl<'a> FrameBatch<'a> {
    /// A batch of frames of `lens` bytes each, end to end in `bytes`; `None` unless the
    /// lengths add up to `bytes.len()`.
    pub fn new(bytes: &'a [u8], lens: &'a [usize]) -> Option<Self> {
        let total = lens.iter().try_fold(0usize, |acc, &l| acc.checked_add(l))?;
        (total == bytes.len()).then_some(Self { bytes, lens })
    }

    /// The frames, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let bytes = self.bytes;
        self.lens.iter().scan(0usize, move |start, &len| {
            let frame = &bytes[*start..*start + len];
            *start += len;
            Some(frame)
        })
    }

    /// The frames' lengths, in order.
    pub fn lens(&self) -> &'a [usize] {
        self.lens
    }

    /// All the frames' bytes, end to end.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The number of frames.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
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
    held: VecDeque<(Instant, Bytes, PeerAddr)>,
}

impl Faults {
    /// Passes `bytes` through the faults: zero, one or two deliveries, now or later.
    fn apply(&mut self, bytes: Bytes, from: PeerAddr, deliver: &mut dyn FnMut(Bytes, PeerAddr)) {
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
                self.held
                    .push_back((Instant::now() + delay, bytes.clone(), from));
            } else {
                deliver(bytes.clone(), from);
            }
        }
    }

    /// Delivers the held-back datagrams whose time has come.
    fn release(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 <= now {
                if let Some((_, bytes, from)) = self.held.remove(i) {
                    deliver(bytes, from);
                }
            } else {
                i += 1;
            }
        }
    }

    fn next_release(&self) -> Option<Instant> {
        self.held.iter().map(|(t, _, _)| *t).min()
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
///
/// Batches move with few system calls: a run of equal-length frames goes out as one
/// `sendmsg` with UDP segmentation offload (GSO), and receiving uses `recvmmsg` with generic
/// receive offload (GRO) where the kernel offers them (through `quinn-udp`, which falls back
/// to one datagram per call where it must). Frames stay separate datagrams on the wire.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    destinations: Vec<SocketAddr>,
    /// The multicast group, if the transport sends to one (then answers to one peer go to
    /// the group: every member listens on the group's port, and one host's members share it).
    group: Option<SocketAddr>,
    /// Where received datagrams go: the current block, and the pool it returns to.
    blocks: BlockPool,
    block: Box<[u8]>,
    /// Bytes one receive slot needs: a whole GRO batch, or one datagram and a byte more.
    slot_len: usize,
    /// Datagrams (or GRO batches) one `recvmmsg` may return.
    slots: usize,
    faults: Option<Faults>,
}

/// The receive buffer a UDP socket asks the kernel for.
const RECV_BUFFER: usize = 4 << 20;

/// Asks for a receive buffer of `wanted` bytes; returns what the kernel granted if that is
/// less (Linux caps it at `net.core.rmem_max` without an error).
fn recv_buffer_short(socket: &Socket, wanted: usize) -> Option<usize> {
    let _ = socket.set_recv_buffer_size(wanted);
    let reported = socket.recv_buffer_size().ok()?;
    // Linux reports twice what it grants: the other half is its own bookkeeping.
    let granted = if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    };
    (granted < wanted).then_some(granted)
}

/// Bytes of returned receive blocks a transport keeps for reuse (at least a few blocks).
const RECV_POOL_BYTES: usize = 8 << 20;
/// The most bytes one GSO send may carry (a UDP datagram's largest payload over IPv4).
const MAX_GSO_BYTES: usize = 65_507;
/// The most bytes one GRO batch holds: the kernel stops coalescing at the largest IP packet.
const MAX_GRO_BYTES: usize = 65_536;
/// Datagrams one `recvmmsg` asks for when the kernel cannot coalesce them.
const RECV_SLOTS: usize = 16;
/// System calls one [`Transport::recv`] makes at most.
const RECV_CALLS: usize = 32;

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
        if let Some(granted) = recv_buffer_short(&socket, RECV_BUFFER) {
            tracing::warn!(
                granted,
                asked = RECV_BUFFER,
                "udp receive buffer smaller than asked: bursts the driver cannot read at once \
                 are dropped by the kernel (and reported as Missed); raise the sysctl \
                 net.core.rmem_max to at least {RECV_BUFFER}"
            );
        }
        let _ = socket.set_send_buffer_size(4 << 20);
        socket.set_nonblocking(true)?;
        socket.bind(&config.bind.into())?;
        let mut destinations = config.peers.clone();
        let group = config.multicast.map(|(g, _)| SocketAddr::V4(g));
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
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        // One byte more than the largest frame, so an oversized datagram shows as such (the
        // parser refuses it) instead of being cut to a plausible length.
        let datagram = config.max_frame_len + 1;
        let (slot_len, slots) = if state.gro_segments() > 1 {
            (datagram.max(MAX_GRO_BYTES), 1)
        } else {
            (datagram, RECV_SLOTS)
        };
        let block_len = slot_len * slots;
        let blocks = BlockPool::new(block_len, (RECV_POOL_BYTES / block_len).max(4));
        Ok(Self {
            socket,
            state,
            destinations,
            group,
            block: blocks.take(),
            blocks,
            slot_len,
            slots,
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
        let lens = [frame.len()];
        match FrameBatch::new(frame, &lens) {
            Some(batch) => self.send_batch(&batch),
            None => Ok(()), // unreachable: one frame's length adds up to itself
        }
    }

    fn send_to(&mut self, peer: &PeerAddr, frame: &[u8]) -> Result<(), SendError> {
        let destination = match (self.group, peer) {
            (Some(group), _) => group,
            (None, PeerAddr::Socket(addr)) => *addr,
            (None, _) => return self.send(frame),
        };
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents: frame,
            segment_size: None,
            src_ip: None,
        };
        self.send_one(&transmit)
            .map_err(|last| SendError { failed: 1, last })
    }

    fn set_peers(&mut self, peers: &[SocketAddr]) {
        self.destinations.clear();
        self.destinations.extend_from_slice(peers);
        self.destinations.extend(self.group);
    }

    fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        let mut failed = 0;
        let mut last = None;
        let bytes = batch.as_bytes();
        let lens = batch.lens();
        let max_segments = self.state.max_gso_segments().max(1);
        let (mut first, mut start) = (0, 0);
        while first < lens.len() {
            let (count, total) = gso_group(&lens[first..], max_segments);
            let transmit_bytes = &bytes[start..start + total];
            for &destination in &self.destinations {
                let transmit = quinn_udp::Transmit {
                    destination,
                    ecn: None,
                    contents: transmit_bytes,
                    segment_size: (count > 1).then_some(lens[first]),
                    src_ip: None,
                };
                if let Err(e) = self.send_one(&transmit) {
                    failed += count;
                    last = Some(e);
                }
            }
            first += count;
            start += total;
        }
        match last {
            None => Ok(()),
            Some(last) => Err(SendError { failed, last }),
        }
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        if let Some(faults) = &mut self.faults {
            faults.release(deliver);
        }
        let mut meta = [quinn_udp::RecvMeta::default(); RECV_SLOTS];
        // A budget per call, so a flood on this socket cannot keep the driver from sending
        // and from its timers; the driver calls again before it sleeps.
        for _ in 0..RECV_CALLS {
            let received = {
                let mut chunks = self.block.chunks_mut(self.slot_len);
                let mut slices: [IoSliceMut<'_>; RECV_SLOTS] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                self.state.recv(
                    (&self.socket).into(),
                    &mut slices[..self.slots],
                    &mut meta[..self.slots],
                )
            };
            match received {
                Ok(count) => {
                    let count = count.min(self.slots);
                    let Some(last) = count.checked_sub(1) else {
                        return Ok(RecvStatus::Drained);
                    };
                    let used = last * self.slot_len + meta[last].len.min(self.slot_len);
                    let (block, _) = self.blocks.share(&mut self.block, 0..used, 0..0);
                    for (i, m) in meta[..count].iter().enumerate() {
                        let from = PeerAddr::Socket(m.addr);
                        let slot_start = i * self.slot_len;
                        let len = m.len.min(self.slot_len);
                        // With GRO one slot holds several datagrams of `stride` bytes (the
                        // last may be shorter); without, stride is the datagram's length.
                        let stride = if m.stride == 0 { len.max(1) } else { m.stride };
                        // An empty datagram is still one datagram (the parser refuses it).
                        let mut offset = 0;
                        loop {
                            let end = (offset + stride).min(len);
                            let datagram = block.slice(slot_start + offset..slot_start + end);
                            match &mut self.faults {
                                Some(faults) => faults.apply(datagram, from, deliver),
                                None => deliver(datagram, from),
                            }
                            offset = end;
                            if offset >= len {
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(RecvStatus::Drained);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(RecvStatus::MoreWaiting)
    }
}

impl UdpTransport {
    /// Sends one transmit (one datagram, or a GSO run of them) to one destination. When the
    /// socket buffer is full it gives the kernel a moment, a few times, then lets the
    /// frames go (receivers report them missed).
    fn send_one(&self, transmit: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        let mut tries = 0;
        loop {
            match self.state.try_send((&self.socket).into(), transmit) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 64 => {
                    tries += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// How many of `lens` (at least one) go out as one GSO send, and their total length: frames
/// of the first one's length, then at most one shorter frame (the kernel cuts a GSO buffer
/// into segments of one size, the last one possibly shorter), within the offload's limits.
fn gso_group(lens: &[usize], max_segments: usize) -> (usize, usize) {
    let segment = lens[0];
    let (mut count, mut total) = (1, segment);
    for &len in &lens[1..] {
        if count == max_segments || len > segment || total + len > MAX_GSO_BYTES {
            break;
        }
        count += 1;
        total += len;
        if len < segment {
            break;
        }
    }
    (count, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asking for more than the kernel allows is noticed (and so warned about at bind); what
    /// it allows is not. `net.core.rmem_max` is global and not ours to change, so the test
    /// asks for a size no kernel grants by default, and for one every kernel does.
    #[test]
    fn a_receive_buffer_smaller_than_asked_is_noticed() {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let granted = recv_buffer_short(&socket, 1 << 30).expect("1 GiB is over rmem_max");
        assert!(granted > 0 && granted < 1 << 30, "{granted}");
        assert_eq!(recv_buffer_short(&socket, 64 << 10), None);
        // Linux reports twice what it grants; between the cap and twice the cap is where
        // taking the report at its word would miss the shortfall.
        if let Ok(max) = std::fs::read_to_string("/proc/sys/net/core/rmem_max") {
            let max: usize = max.trim().parse().unwrap();
            assert_eq!(recv_buffer_short(&socket, max + max / 2), Some(max));
        }
    }

    /// A flood on the socket is read in budgeted turns, each saying whether more is waiting,
    /// and nothing that arrived is lost between them.
    #[test]
    fn udp_receive_stops_at_its_budget_and_says_more_is_waiting() {
        let mut t = UdpTransport::bind(&UdpConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: Vec::new(),
            multicast: None,
            max_frame_len: 1472,
            faults: None,
        })
        .expect("bind");
        let to = t.local_addr().expect("address");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        // More datagrams than one call may read; small ones, so the receive buffer holds them.
        let sent = RECV_CALLS * RECV_SLOTS * 2;
        for i in 0..sent {
            sender
                .send_to(&u32::try_from(i).unwrap().to_le_bytes(), to)
                .expect("send");
        }
        // Loopback hands datagrams over from a softirq backlog: give it time to queue them all.
        std::thread::sleep(Duration::from_millis(100));
        let mut got = Vec::new();
        let first = t.recv(&mut |b, _| got.push(b)).expect("receive");
        // One datagram per slot here: these small ones are not sent with GSO, so GRO has
        // nothing to coalesce.
        let budget = RECV_CALLS * t.slots;
        assert_eq!(got.len(), budget, "one call reads its budget and no more");
        assert_eq!(first, RecvStatus::MoreWaiting);
        let mut calls = 1;
        loop {
            let status = t.recv(&mut |b, _| got.push(b)).expect("receive");
            calls += 1;
            if status == RecvStatus::Drained {
                break;
            }
            assert!(calls < 100, "the socket never drained");
        }
        let seen: Vec<u32> = got
            .iter()
            .map(|b| u32::from_le_bytes(b[..4].try_into().unwrap()))
            .collect();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, once each");
        assert!(seen.len() > budget, "only {} arrived", seen.len());
    }

    #[test]
    fn gso_groups_equal_frames_and_one_shorter_tail() {
        assert_eq!(gso_group(&[100], 64), (1, 100));
        assert_eq!(gso_group(&[100, 100, 100, 50, 100], 64), (4, 350));
        assert_eq!(gso_group(&[100, 120], 64), (1, 100));
        assert_eq!(gso_group(&[100, 100, 100], 2), (2, 200));
        assert_eq!(gso_group(&[100, 100, 100], 1), (1, 100));
        // The byte limit of one datagram bounds a run of large frames.
        assert_eq!(gso_group(&[8192; 10], 64), (7, 7 * 8192));
    }
}
