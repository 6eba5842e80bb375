//! herald's TCP transport: frames with a 4-byte little-endian length prefix over one outbound
//! connection per peer (this node's frames) and the connections peers open to it (theirs).
//!
//! Nothing here blocks. Each peer has its own bounded send buffer: a peer that stops reading
//! (frozen, or a black hole) fills its own buffer and loses frames (its receivers report them
//! missed), and never delays the others. `TCP_USER_TIMEOUT` makes the kernel give up on a
//! peer that does not acknowledge data, and the connection is retried with backoff.
//!
//! With membership, the transport also connects to every live member and lets go of those
//! gone ([`TcpConfig::member_port_offset`], in `tcp/peers.rs`).

mod peers;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use socket2::SockRef;

use super::blocks::BlockPool;
use super::{DriverWaker, FrameBatch, PeerAddr, RecvStatus, SendError, Transport};

mod deframe;
mod enframe;

#[cfg(fuzzing)]
#[allow(unreachable_pub)] // re-exported as `herald::transport::fuzzing`
pub use deframe::fuzzing;
use deframe::{InBuf, block_len, length_prefix, read_frames};
use enframe::{WRITE_FRAMES, queue_partial, write_framed};

/// TCP settings for [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Where to accept peers' connections (their frames arrive there), if anywhere.
    pub listen: Option<SocketAddr>,
    /// Peers to connect to (this node's frames go there).
    pub peers: Vec<SocketAddr>,
    /// The largest frame; a longer length prefix closes the connection.
    pub max_frame_len: usize,
    /// How long unacknowledged data may wait before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`). Default 2 s.
    pub user_timeout: Duration,
    /// The most bytes queued for one peer; frames beyond are dropped for that peer. Default
    /// 4 MiB. While every connected peer has half of this queued and still takes bytes, the
    /// transport pushes back ([`Transport::backpressure`]).
    pub max_queued: usize,
    /// With membership: where members listen for TCP, as an offset from their membership
    /// (UDP) port; the transport connects to every live member there, besides `peers`, and
    /// closes the connections of members that failed or left. `None` (the default): only
    /// `peers`. A router sets it to its own `tcp.listen` port minus its `udp.bind` port, so
    /// every node is expected to keep the same distance between the two (the same port for
    /// both, or 7700 and 7800 everywhere, say).
    pub member_port_offset: Option<i32>,
}

impl TcpConfig {
    /// The defaults, with no listener and no peers.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            listen: None,
            peers: Vec::new(),
            max_frame_len,
            user_timeout: Duration::from_secs(2),
            max_queued: 4 << 20,
            member_port_offset: None,
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A peer that took no bytes for this long no longer holds back the sender
/// ([`Transport::backpressure`]): it is frozen or dead, not slow, and frames for it are
/// dropped until `TCP_USER_TIMEOUT` gives it up.
const HOLD_WITHOUT_PROGRESS: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Outbound {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Bytes (length prefixes and frames) not yet written.
    queue: BytesMut,
    retry_at: Instant,
    backoff: Duration,
    /// Frames dropped because the queue was full or the peer was down.
    dropped: u64,
    /// When the socket last took bytes (or connected).
    progress: Instant,
    /// Whether membership added this peer (and so removes it when the member is gone).
    member: bool,
}

#[derive(Debug)]
struct Inbound {
    stream: TcpStream,
    buf: InBuf,
}

/// Bytes of returned receive blocks the transport keeps for reuse.
const POOL_BYTES: usize = 8 << 20;

/// herald's TCP transport: length-prefixed frames, one bounded queue per peer, reconnection
/// with backoff, and `TCP_USER_TIMEOUT` so a peer that stops acknowledging is given up.
#[derive(Debug)]
pub struct TcpTransport {
    config: TcpConfig,
    listener: Option<TcpListener>,
    outbound: Vec<Outbound>,
    inbound: Vec<Inbound>,
    registry: Option<Registry>,
    token: Token,
    blocks: BlockPool,
}

impl TcpTransport {
    /// Binds the listener (connections to peers are made by the driver, with retries).
    ///
    /// # Errors
    ///
    /// The listener's I/O error, such as the address in use.
    pub fn bind(config: TcpConfig) -> io::Result<Self> {
        let listener = config.listen.map(TcpListener::bind).transpose()?;
        let now = Instant::now();
        let outbound = config
            .peers
            .iter()
            .map(|&addr| Outbound {
                addr,
                stream: None,
                queue: BytesMut::new(),
                retry_at: now,
                backoff: BACKOFF_MIN,
                dropped: 0,
                progress: now,
                member: false,
            })
            .collect();
        let len = block_len(config.max_frame_len);
        Ok(Self {
            config,
            listener,
            outbound,
            inbound: Vec::new(),
            registry: None,
            token: Token(0),
            blocks: BlockPool::new(len, (POOL_BYTES / len).max(4)),
        })
    }

    /// The listener's address (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    fn tune(&self, stream: &TcpStream) {
        let sock = SockRef::from(stream);
        let _ = sock.set_tcp_nodelay(true);
        crate::platform::set_tcp_user_timeout(&sock, self.config.user_timeout);
        let _ = sock.set_keepalive(true);
    }

    fn register_stream(&self, stream: &mut TcpStream, interest: Interest) {
        if let Some(registry) = &self.registry {
            let _ = registry.register(stream, self.token, interest);
        }
    }

    /// Connects peers whose retry time has come; flushes every queue.
    fn service_outbound(&mut self) {
        let now = Instant::now();
        for i in 0..self.outbound.len() {
            if self.outbound[i].stream.is_none() && now >= self.outbound[i].retry_at {
                match TcpStream::connect(self.outbound[i].addr) {
                    Ok(mut stream) => {
                        self.tune(&stream);
                        self.register_stream(&mut stream, Interest::WRITABLE | Interest::READABLE);
                        self.outbound[i].stream = Some(stream);
                        self.outbound[i].progress = now;
                    }
                    Err(e) => self.fail(i, &e),
                }
            }
            self.flush(i);
        }
    }

    /// Writes what peer `i`'s queue holds, as far as the socket takes it.
    fn flush(&mut self, i: usize) {
        let peer = &mut self.outbound[i];
        let Some(stream) = peer.stream.as_mut() else {
            return;
        };
        let mut error = None;
        while !peer.queue.is_empty() {
            match stream.write(&peer.queue) {
                Ok(0) => {
                    error = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => {
                    peer.queue.advance(n);
                    peer.backoff = BACKOFF_MIN;
                    peer.progress = Instant::now();
                }
                // Full, or still connecting: the rest waits for the socket to be writable.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.fail(i, &e);
        }
    }

    /// Drops peer `i`'s connection and what it had queued (a partial frame must not be
    /// continued on a new connection; those frames are reported missed by the peer), and
    /// schedules a retry.
    fn fail(&mut self, i: usize, error: &io::Error) {
        let peer = &mut self.outbound[i];
        if let Some(mut stream) = peer.stream.take() {
            if let Some(registry) = &self.registry {
                let _ = registry.deregister(&mut stream);
            }
            tracing::warn!(peer = %peer.addr, error = %error, "tcp peer down; retrying");
        }
        if !peer.queue.is_empty() {
            peer.dropped += 1;
        }
        peer.queue.clear();
        peer.retry_at = Instant::now() + peer.backoff;
        peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    self.tune(&stream);
                    self.register_stream(&mut stream, Interest::READABLE);
                    self.inbound.push(Inbound {
                        stream,
                        buf: InBuf::new(&self.blocks),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    return;
                }
            }
        }
    }
}

impl Transport for TcpTransport {
    fn name(&self) -> &str {
        "tcp"
    }

    fn register(&mut self, registry: &Registry, token: Token, _: DriverWaker) -> io::Result<()> {
        if let Some(listener) = &mut self.listener {
            registry.register(listener, token, Interest::READABLE)?;
        }
        self.registry = Some(registry.try_clone()?);
        self.token = token;
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let lens = [frame.len()];
        match FrameBatch::new(frame, &lens) {
            Some(batch) => self.send_batch(&batch),
            None => Ok(()), // unreachable: one frame's length adds up to itself
        }
    }

    /// Queues every frame of the batch for each peer, then writes once per peer.
    fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        let mut failed = 0;
        let max_queued = self.config.max_queued;
        for i in 0..self.outbound.len() {
            let peer = &mut self.outbound[i];
            let mut frames = batch.iter();
            // While nothing waits before them, frames go straight from the batch to the
            // socket, not through the queue (a copy of every byte sent), a chunk at a time.
            // `chunk[left]` are frames of the last chunk neither written nor queued.
            let mut chunk: [&[u8]; WRITE_FRAMES] = [&[]; WRITE_FRAMES];
            let mut left = 0..0;
            let mut error = None;
            while peer.queue.is_empty() {
                let Some(stream) = peer.stream.as_mut() else {
                    break;
                };
                let n = chunk
                    .iter_mut()
                    .zip(frames.by_ref())
                    .map(|(c, f)| *c = f)
                    .count();
                if n == 0 {
                    break;
                }
                match write_framed(stream, &chunk[..n]) {
                    Ok(written) => {
                        peer.backoff = BACKOFF_MIN;
                        if written > 0 {
                            peer.progress = Instant::now();
                        }
                        let (done, all) = queue_partial(&mut peer.queue, &chunk[..n], written);
                        if !all {
                            left = done..n;
                            break; // the socket is full
                        }
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = error {
                // As when a queued write fails: the connection and this batch's frames for
                // it are gone (the peer reports them missed), and a reconnection is due.
                self.fail(i, &e);
                self.outbound[i].dropped += 1;
                continue;
            }
            for frame in chunk[left].iter().copied().chain(frames) {
                // Frames wait in the queue while the peer connects (the first connection, or
                // a reconnection under way) or while its socket is full; a full queue drops
                // the frame for this peer only.
                if peer.queue.len() + 4 + frame.len() > max_queued {
                    peer.dropped += 1;
                    failed += 1;
                    continue;
                }
                peer.queue.extend_from_slice(&length_prefix(frame));
                peer.queue.extend_from_slice(frame);
            }
            self.flush(i);
        }
        if failed == 0 {
            Ok(())
        } else {
            Err(SendError {
                failed,
                last: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "tcp peer not reading: queue full",
                ),
            })
        }
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        self.accept();
        self.service_outbound();
        let max = self.config.max_frame_len;
        let registry = self.registry.as_ref();
        let mut status = RecvStatus::Drained;
        self.inbound.retain_mut(|conn| {
            let outcome = read_frames(
                &mut conn.stream,
                &mut conn.buf,
                &self.blocks,
                max,
                &mut |frame| deliver(frame, PeerAddr::Unknown),
            );
            if outcome == Some(RecvStatus::MoreWaiting) {
                status = RecvStatus::MoreWaiting;
            }
            let keep = outcome.is_some();
            if !keep && let Some(r) = registry {
                let _ = r.deregister(&mut conn.stream);
            }
            keep
        });
        // Outbound connections carry nothing inbound; read them only to notice a close.
        for i in 0..self.outbound.len() {
            let mut sink = [0u8; 64];
            let closed = match self.outbound[i].stream.as_mut().map(|s| s.read(&mut sink)) {
                Some(Ok(0)) => Some(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Some(Err(e))
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::NotConnected
                    ) =>
                {
                    Some(e)
                }
                _ => None,
            };
            if let Some(e) = closed {
                self.fail(i, &e);
            }
        }
        Ok(status)
    }

    fn set_peers(&mut self, peers: &[SocketAddr]) {
        self.follow_members(peers);
    }

    fn backpressure(&self) -> bool {
        let half = self.config.max_queued / 2;
        let mut connected = self
            .outbound
            .iter()
            .filter(|p| p.stream.is_some())
            .peekable();
        if connected.peek().is_none() {
            return false;
        }
        let mut now = None;
        connected.all(|p| {
            p.queue.len() >= half
                && now
                    .get_or_insert_with(Instant::now)
                    .saturating_duration_since(p.progress)
                    < HOLD_WITHOUT_PROGRESS
        })
    }

    fn next_timeout(&self) -> Option<Instant> {
        let retry = self
            .outbound
            .iter()
            .filter(|p| p.stream.is_none())
            .map(|p| p.retry_at)
            .min();
        // Pending writes are flushed when the socket is writable (it is registered for it);
        // poll again soon anyway in case an edge was consumed.
        let flush = self
            .outbound
            .iter()
            .any(|p| p.stream.is_some() && !p.queue.is_empty())
            .then(|| Instant::now() + Duration::from_millis(1));
        retry.into_iter().chain(flush).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected peer pushes back while half its queue is full and it took bytes in the
    /// last 100 ms; one that took nothing for longer, or is not connected, does not.
    #[test]
    fn backpressure_lasts_while_every_connected_peer_is_behind_but_alive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = TcpConfig::new(1024);
        config.peers = vec![listener.local_addr().unwrap()];
        config.max_queued = 1000;
        let mut t = TcpTransport::bind(config).unwrap();
        assert!(!t.backpressure(), "not connected: nothing to wait for");
        t.service_outbound();
        let _accepted = listener.accept().unwrap();
        assert!(t.outbound[0].stream.is_some());
        assert!(!t.backpressure(), "an empty queue");
        t.outbound[0].queue.extend_from_slice(&[0; 499]);
        assert!(!t.backpressure(), "under half the queue");
        t.outbound[0].queue.extend_from_slice(&[0; 1]);
        t.outbound[0].progress = Instant::now();
        assert!(t.backpressure(), "half the queue, and taking bytes");
        t.outbound[0].progress = Instant::now() - HOLD_WITHOUT_PROGRESS;
        assert!(
            !t.backpressure(),
            "took nothing for too long: frozen, not slow"
        );
    }
}
