//! herald's TCP transport: frames with a 4-byte little-endian length prefix over one outbound
//! connection per peer (this node's frames) and the connections peers open to it (theirs).
//!
//! Nothing here blocks. Each peer has its own bounded send buffer: a peer that stops reading
//! (frozen, or a black hole) fills its own buffer and loses frames (its receivers report them
//! missed), and never delays the others. `TCP_USER_TIMEOUT` makes the kernel give up on a
//! peer that does not acknowledge data, and the connection is retried with backoff.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use socket2::SockRef;

use super::{DriverWaker, FrameBatch, RecvStatus, SendError, Transport};

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
    /// 4 MiB.
    pub max_queued: usize,
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
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 64 * 1024;
/// Reads one connection gets per [`Transport::recv`], so that a peer writing faster than this
/// node reads cannot keep the driver from sending and from its timers (1 MiB a turn).
const READS_PER_RECV: usize = 16;

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
}

#[derive(Debug)]
struct Inbound {
    stream: TcpStream,
    buf: BytesMut,
}

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
            })
            .collect();
        Ok(Self {
            config,
            listener,
            outbound,
            inbound: Vec::new(),
            registry: None,
            token: Token(0),
        })
    }

    /// The listener's address (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    fn tune(&self, stream: &TcpStream) {
        let sock = SockRef::from(stream);
        let _ = sock.set_tcp_nodelay(true);
        let _ = sock.set_tcp_user_timeout(Some(self.config.user_timeout));
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
                        buf: BytesMut::new(),
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

/// Reads what `stream` has (up to the read budget) into `buf` and hands out each whole frame.
/// `None` when the connection must close (end of stream, an error, or a length prefix over
/// `max`).
fn read_frames(
    stream: &mut impl Read,
    buf: &mut BytesMut,
    max: usize,
    deliver: &mut dyn FnMut(Bytes),
) -> Option<RecvStatus> {
    let mut reads = 0;
    loop {
        if reads == READS_PER_RECV {
            return Some(RecvStatus::MoreWaiting);
        }
        reads += 1;
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let read = stream.read(&mut buf[start..]);
        let n = match read {
            Ok(0) => {
                buf.truncate(start);
                return None;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(start);
                return Some(RecvStatus::Drained);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(start);
                continue;
            }
            Err(_) => return None,
        };
        buf.truncate(start + n);
        if !deframe(buf, max, deliver) {
            return None;
        }
    }
}

/// Hands out every whole length-prefixed frame at the front of `buf`. Returns false if a
/// length prefix is over `max` (the stream cannot be trusted past it).
pub(crate) fn deframe(buf: &mut BytesMut, max: usize, deliver: &mut dyn FnMut(Bytes)) -> bool {
    loop {
        let Some(prefix) = buf.get(..4) else {
            return true;
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(prefix);
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return false;
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return true;
        }
        buf.advance(4);
        deliver(buf.split_to(len).freeze());
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
        for i in 0..self.outbound.len() {
            let peer = &mut self.outbound[i];
            for frame in batch.iter() {
                // Frames wait in the queue while the peer connects (the first connection, or
                // a reconnection under way); a full queue drops the frame for this peer only.
                if peer.queue.len() + 4 + frame.len() > self.config.max_queued {
                    peer.dropped += 1;
                    failed += 1;
                    continue;
                }
                let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                peer.queue.extend_from_slice(&len.to_le_bytes());
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

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes)) -> io::Result<RecvStatus> {
        self.accept();
        self.service_outbound();
        let max = self.config.max_frame_len;
        let registry = self.registry.as_ref();
        let mut status = RecvStatus::Drained;
        self.inbound.retain_mut(|conn| {
            let outcome = read_frames(&mut conn.stream, &mut conn.buf, max, deliver);
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

    #[test]
    fn deframes_a_stream_split_at_every_byte() {
        let stream = framed(&[b"first", b"", b"third frame"]);
        for cut in 0..=stream.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            buf.extend_from_slice(&stream[..cut]);
            assert!(deframe(&mut buf, 100, &mut |b| got.push(b)));
            buf.extend_from_slice(&stream[cut..]);
            assert!(deframe(&mut buf, 100, &mut |b| got.push(b)));
            assert_eq!(got, [&b"first"[..], b"", b"third frame"], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    /// A stream that fills every read from `data` until its end, then would block, like a
    /// socket whose peer keeps writing.
    struct Flood {
        data: Vec<u8>,
        at: usize,
    }

    impl Read for Flood {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.data.len() - self.at);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
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
        let data = framed(&refs);
        let mut flood = Flood { data, at: 0 };
        let mut buf = BytesMut::new();
        let mut got: Vec<u32> = Vec::new();
        let mut statuses = Vec::new();
        loop {
            let outcome = read_frames(&mut flood, &mut buf, 2048, &mut |b| {
                got.push(u32::from_le_bytes(b[..4].try_into().unwrap()));
            });
            statuses.push(outcome);
            if outcome != Some(RecvStatus::MoreWaiting) {
                break;
            }
        }
        // 3000 frames of 1004 bytes are 46 chunks of 64 KiB: two full budgets and a rest.
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
        assert!(buf.is_empty());
    }

    #[test]
    fn a_length_over_the_maximum_closes_the_stream() {
        let mut buf = BytesMut::from(&framed(&[&[0u8; 101]])[..]);
        assert!(!deframe(&mut buf, 100, &mut |_| panic!(
            "nothing delivered"
        )));
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert!(!deframe(&mut buf, 1 << 16, &mut |_| panic!(
            "nothing delivered"
        )));
    }
}
