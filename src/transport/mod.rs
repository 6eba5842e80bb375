//! Providers: what carries frames between nodes. herald's own transports (UDP in `udp.rs`,
//! TCP in `tcp/`, NATS in `nats/`) implement the same public [`Transport`] trait a user
//! implements to plug in their own; this file holds the trait and what every transport
//! shares. Fault injection for tests lives in one place for the UDP hook and the simulated
//! network alike (`src/faults.rs`; [`FaultInjection`] here).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
/// mio's registry and token, as [`Transport::register`] takes them (so a provider does not
/// need its own dependency on mio unless it registers sockets).
pub use mio::{Registry, Token};

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
mod udp;

#[cfg(feature = "nats")]
pub use nats::{NatsAuth, NatsClient, NatsConfig, NatsStats, NatsTransport};

pub use tcp::{TcpConfig, TcpTransport};
pub use udp::{UdpConfig, UdpTransport};

pub use crate::faults::FaultInjection;

/// The TCP deframer over byte chunks, for the `tcp_deframe` fuzz target only.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    #[cfg(feature = "nats")]
    pub use super::nats::fuzzing::*;
    pub use super::tcp::fuzzing::*;
}

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
