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
const READ_CHUNK: usize = 64 * 1024;
/// Reads one connection gets per [`Transport::recv`], so that a peer writing faster than this
/// node reads cannot keep the driver from sending and from its timers (1 MiB a turn).
const READS_PER_RECV: usize = 16;
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

/// One connection's received bytes: `block[start..filled]` arrived and is not yet handed out
/// (at most the front of one frame, between reads).
pub(crate) struct InBuf {
    block: Box<[u8]>,
    start: usize,
    filled: usize,
}

impl InBuf {
    fn new(pool: &BlockPool) -> Self {
        Self {
            block: pool.take(),
            start: 0,
            filled: 0,
        }
    }
}

impl std::fmt::Debug for InBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InBuf")
            .field("block_len", &self.block.len())
            .field("start", &self.start)
            .field("filled", &self.filled)
            .finish()
    }
}

/// Receive blocks for a connection: two reads' worth or two of the largest frames, whichever
/// is more, so that after the front of an unfinished frame is moved to the start of its
/// block, a whole read still fits behind it.
fn block_len(max_frame_len: usize) -> usize {
    READ_CHUNK.max(4 + max_frame_len) * 2
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

/// Reads what `stream` has (up to the read budget) into `buf` and hands out each whole frame,
/// as `Bytes` over the receive block where that block was mostly filled (see [`BlockPool`]).
/// `None` when the connection must close (end of stream, an error, or a length prefix over
/// `max`).
fn read_frames(
    stream: &mut impl Read,
    buf: &mut InBuf,
    pool: &BlockPool,
    max: usize,
    deliver: &mut dyn FnMut(Bytes),
) -> Option<RecvStatus> {
    let mut reads = 0;
    loop {
        if reads == READS_PER_RECV {
            return Some(RecvStatus::MoreWaiting);
        }
        reads += 1;
        if buf.block.len() - buf.filled < buf.block.len() / 2 {
            // Move the unfinished frame (less than half a block) to the front.
            buf.block.copy_within(buf.start..buf.filled, 0);
            buf.filled -= buf.start;
            buf.start = 0;
        }
        let room = buf.filled..(buf.filled + READ_CHUNK).min(buf.block.len());
        let n = match stream.read(&mut buf.block[room]) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Some(RecvStatus::Drained);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        buf.filled += n;
        let (whole, trusted) = whole_frames(&buf.block[buf.start..buf.filled], max);
        let whole = buf.start + whole;
        if whole > buf.start {
            let (frames, lent) = pool.share(&mut buf.block, buf.start..whole, whole..buf.filled);
            if lent {
                buf.filled -= whole;
                buf.start = 0;
            } else {
                buf.start = whole;
            }
            deframe(&frames, deliver);
        }
        if !trusted {
            return None;
        }
        if buf.start == buf.filled {
            (buf.start, buf.filled) = (0, 0);
        }
    }
}

/// The 4-byte little-endian length that goes before `frame` on the stream.
fn length_prefix(frame: &[u8]) -> [u8; 4] {
    u32::try_from(frame.len()).unwrap_or(u32::MAX).to_le_bytes()
}

/// The length in the prefix at `at` in `data`, if a whole prefix is there.
fn prefixed_len(data: &[u8], at: usize) -> Option<usize> {
    let prefix: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(prefix)).ok()
}

/// The length of the whole length-prefixed frames at the front of `data`, and false if the
/// next length prefix is over `max` (the stream cannot be trusted past it).
fn whole_frames(data: &[u8], max: usize) -> (usize, bool) {
    let mut at = 0;
    while let Some(len) = prefixed_len(data, at) {
        if len > max {
            return (at, false);
        }
        if data.len() - at - 4 < len {
            break;
        }
        at += 4 + len;
    }
    (at, true)
}

/// Hands out each frame of `frames`, whole length-prefixed frames as [`whole_frames`] found
/// them, as a slice of it.
fn deframe(frames: &Bytes, deliver: &mut dyn FnMut(Bytes)) {
    let mut at = 0;
    while let Some(len) = prefixed_len(frames, at) {
        let end = (at + 4 + len).min(frames.len());
        deliver(frames.slice(at + 4..end));
        at = end;
    }
}

/// Frames one vectored write carries at most (two buffers each: prefix and frame).
const WRITE_FRAMES: usize = 32;

/// Writes `frames`, each after its length prefix, with one vectored write; how many bytes of
/// that framed stream the socket took (0 when it is full or still connecting). Only an error
/// that ends the connection is an error.
fn write_framed(stream: &mut impl Write, frames: &[&[u8]]) -> io::Result<usize> {
    // At most WRITE_FRAMES (the caller's chunk); more would simply stay unwritten.
    let frames = &frames[..frames.len().min(WRITE_FRAMES)];
    let mut prefixes = [[0u8; 4]; WRITE_FRAMES];
    for (p, f) in prefixes.iter_mut().zip(frames) {
        *p = length_prefix(f);
    }
    let mut slices = [io::IoSlice::new(&[]); 2 * WRITE_FRAMES];
    for (pair, (p, f)) in slices.chunks_exact_mut(2).zip(prefixes.iter().zip(frames)) {
        pair[0] = io::IoSlice::new(p);
        pair[1] = io::IoSlice::new(f);
    }
    let slices = &slices[..2 * frames.len()];
    loop {
        return match stream.write_vectored(slices) {
            Ok(0) if !slices.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                ) =>
            {
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// After a write that took the first `written` bytes of `frames` (each after its length
/// prefix): queues the rest of the frame the write ended inside, if any, since the stream is
/// now mid-frame and it must follow whatever the queue's limit. Returns how many frames are
/// dealt with (written whole, or finished in the queue), and whether that is all of them.
fn queue_partial(queue: &mut BytesMut, frames: &[&[u8]], mut written: usize) -> (usize, bool) {
    for (i, frame) in frames.iter().enumerate() {
        let prefix = length_prefix(frame);
        if written >= prefix.len() + frame.len() {
            written -= prefix.len() + frame.len();
            continue;
        }
        if written == 0 {
            return (i, false);
        }
        for part in [&prefix[..], frame] {
            if written >= part.len() {
                written -= part.len();
            } else {
                queue.extend_from_slice(&part[written..]);
                written = 0;
            }
        }
        return (i + 1, i + 1 == frames.len());
    }
    (frames.len(), true)
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

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&(f.len() as u32).to_le_bytes());
            v.extend_from_slice(f);
        }
        v
    }

    /// A stream that returns `data` in reads of the sizes in `reads` (in turn, each at most
    /// what the caller's buffer holds; 0 means one "would block"), then would block.
    struct Chunky {
        data: Vec<u8>,
        at: usize,
        reads: Vec<usize>,
        turn: usize,
    }

    impl Chunky {
        fn new(data: Vec<u8>, reads: Vec<usize>) -> Self {
            Self {
                data,
                at: 0,
                reads,
                turn: 0,
            }
        }

        fn done(&self) -> bool {
            self.at == self.data.len()
        }
    }

    impl Read for Chunky {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let size = self.reads.get(self.turn % self.reads.len().max(1)).copied();
            self.turn += 1;
            let n = size
                .unwrap_or(usize::MAX)
                .min(out.len())
                .min(self.data.len() - self.at);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Reads `stream` to its end through one connection's buffer, keeping every frame
    /// delivered (so any block reused while a frame still points into it would show).
    fn read_all(stream: &mut Chunky, max: usize) -> Vec<Bytes> {
        let pool = BlockPool::new(block_len(max), 2);
        let mut buf = InBuf::new(&pool);
        let mut got = Vec::new();
        for _ in 0..1_000_000 {
            let outcome = read_frames(stream, &mut buf, &pool, max, &mut |b| got.push(b));
            assert!(outcome.is_some(), "closed");
            if stream.done() && outcome == Some(RecvStatus::Drained) {
                break;
            }
        }
        assert!(stream.done());
        assert_eq!(buf.start, buf.filled, "nothing left over");
        got
    }

    #[test]
    fn deframes_a_stream_split_at_every_byte() {
        let data = framed(&[b"first", b"", b"third frame"]);
        for cut in 0..=data.len() {
            let mut stream = Chunky::new(data.clone(), vec![cut, 0, usize::MAX, 0]);
            let got = read_all(&mut stream, 100);
            assert_eq!(got, [&b"first"[..], b"", b"third frame"], "cut at {cut}");
        }
    }

    proptest::proptest! {
        /// Frames of any size up to the maximum, read in pieces of any size: every frame
        /// arrives once, whole and in order, whether it was copied out of a block or lent
        /// with it, and stays intact while later reads reuse the pool.
        #[test]
        fn any_frames_in_any_reads_arrive_intact(
            lens in proptest::collection::vec(0usize..=70_000, 1..40),
            reads in proptest::collection::vec(0usize..=140_000, 1..20),
        ) {
            let frames: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| (0..len).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let mut stream = Chunky::new(framed(&refs), reads);
            let got = read_all(&mut stream, 70_000);
            proptest::prop_assert_eq!(got.len(), frames.len());
            for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
                proptest::prop_assert!(g[..] == f[..], "frame {} differs", i);
            }
        }
    }

    /// A peer that has written more than one call's read budget is read over several calls,
    /// each but the last saying more is waiting, with every frame delivered once, in order.
    #[test]
    fn a_stream_over_the_read_budget_is_read_over_several_calls() {
        let frames: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| {
                let mut f = vec![0u8; 1000];
                f[..4].copy_from_slice(&i.to_le_bytes());
                f
            })
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let mut flood = Chunky::new(framed(&refs), Vec::new());
        let pool = BlockPool::new(block_len(2048), 4);
        let mut buf = InBuf::new(&pool);
        let mut got: Vec<u32> = Vec::new();
        let mut statuses = Vec::new();
        loop {
            let outcome = read_frames(&mut flood, &mut buf, &pool, 2048, &mut |b| {
                got.push(u32::from_le_bytes(b[..4].try_into().unwrap()));
            });
            statuses.push(outcome);
            if outcome != Some(RecvStatus::MoreWaiting) {
                break;
            }
        }
        // Reads of at most 64 KiB (half a block): 3000 frames of 1004 bytes take 46 of
        // them, two full budgets and a rest.
        assert_eq!(
            statuses,
            [
                Some(RecvStatus::MoreWaiting),
                Some(RecvStatus::MoreWaiting),
                Some(RecvStatus::Drained)
            ]
        );
        assert!(
            got.iter().copied().eq(0..3000),
            "every frame once, in order"
        );
        assert_eq!(buf.start, buf.filled);
    }

    /// A length prefix over the maximum closes the connection; the frames before it in the
    /// same read are still delivered.
    #[test]
    fn a_length_over_the_maximum_closes_the_stream() {
        let pool = BlockPool::new(block_len(100), 2);
        let mut data = framed(&[b"good"]);
        data.extend_from_slice(&framed(&[&[0u8; 101]]));
        let mut buf = InBuf::new(&pool);
        let mut got = Vec::new();
        let outcome = read_frames(
            &mut Chunky::new(data, Vec::new()),
            &mut buf,
            &pool,
            100,
            &mut |b| got.push(b),
        );
        assert_eq!(outcome, None);
        assert_eq!(got, [&b"good"[..]]);
        let mut buf = InBuf::new(&pool);
        let outcome = read_frames(
            &mut Chunky::new(u32::MAX.to_le_bytes().to_vec(), Vec::new()),
            &mut buf,
            &pool,
            1 << 16,
            &mut |_| panic!("nothing delivered"),
        );
        assert_eq!(outcome, None);
    }

    /// A socket that takes `room` bytes (in writes of at most `per_write`), then is full.
    struct Tight {
        took: Vec<u8>,
        room: usize,
        per_write: usize,
    }

    impl Write for Tight {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let n = data.len().min(self.room).min(self.per_write);
            if n == 0 && !data.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.took.extend_from_slice(&data[..n]);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Whatever part of a vectored write the socket takes, what it took, then the rest of
    /// the frame it ended inside (queued), then the frames not dealt with (left for the
    /// queue's limit) is exactly the framed stream; and only a partial frame is queued.
    #[test]
    fn a_partial_direct_write_queues_only_the_frame_it_cut() {
        let frames: [&[u8]; 3] = [b"first", b"", b"third frame"];
        let whole = framed(&frames);
        for room in 0..=whole.len() + 1 {
            for per_write in [1, 3, usize::MAX] {
                let mut socket = Tight {
                    took: Vec::new(),
                    room,
                    per_write,
                };
                let written = write_framed(&mut socket, &frames).unwrap();
                assert_eq!(written, socket.took.len());
                let mut queue = BytesMut::new();
                let (done, all) = queue_partial(&mut queue, &frames, written);
                assert_eq!(all, done == frames.len());
                assert!(
                    queue.len() < 4 + 11,
                    "at most the rest of one frame: {queue:?}"
                );
                socket.took.extend_from_slice(&queue);
                socket.took.extend_from_slice(&framed(&frames[done..]));
                assert_eq!(socket.took, whole, "room {room}, {per_write} per write");
            }
        }
    }

    #[test]
    fn a_failed_direct_write_is_an_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = write_framed(&mut Broken, &[b"x"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

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
