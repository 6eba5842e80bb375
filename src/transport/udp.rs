//! [`UdpTransport`]: unicast to a peer list, multicast to a group, or both, with GSO/GRO
//! batching where the kernel offers it.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use bytes::Bytes;
use mio::Interest;
use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

use super::blocks::BlockPool;
use super::{DriverWaker, FrameBatch, PeerAddr, RecvStatus, Registry, SendError, Token, Transport};
use crate::faults::{FaultInjection, Injector};

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
    faults: Option<Injector<(Bytes, PeerAddr)>>,
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
            faults: config.faults.as_ref().map(Injector::new),
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
        self.faults.as_ref().and_then(Injector::next_release)
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
            faults.release(&mut |(datagram, from)| deliver(datagram, from));
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
                                Some(faults) => {
                                    faults.apply((datagram, from), &mut |(d, f)| deliver(d, f))
                                }
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
    use std::time::Duration;

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
