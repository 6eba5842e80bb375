//! The receiving half of TCP framing: a byte stream in, whole frames out. Pure: no sockets,
//! only [`Read`] (the transport passes its `TcpStream`; tests and the `tcp_deframe` fuzz
//! target pass byte chunks).
//!
//! # The contract
//!
//! On the stream every frame is a 4-byte little-endian length `n`, then `n` bytes
//! ([`length_prefix`] writes it). For one connection, [`read_frames`] over an [`InBuf`]:
//!
//! - hands out each whole frame exactly once, in stream order, as `Bytes` holding exactly
//!   the frame's `n` bytes (prefix excluded), however the stream was cut into reads (a
//!   frame split at any byte, many frames in one read, empty frames);
//! - keeps the front of an unfinished frame, and nothing else, between calls;
//! - returns `None` (close the connection) at the end of the stream, on a read error, or on
//!   a length over `max`, after handing out the whole frames before that length; it never
//!   allocates by a length it read (a claimed length only decides when a frame is whole), so
//!   a hostile prefix costs nothing;
//! - reads at most [`READS_PER_RECV`] times a call and says [`RecvStatus::MoreWaiting`] then,
//!   so one fast peer cannot hold the driver;
//! - never panics, whatever the bytes.
//!
//! Frames are not parsed here: [`Frame::parse`](crate::wire::Frame::parse) stays the one door
//! for their contents.

use std::io::{self, Read};

use bytes::Bytes;

use super::super::RecvStatus;
use super::super::blocks::BlockPool;

/// The most one read asks for.
const READ_CHUNK: usize = 64 * 1024;
/// Reads one connection gets per [`Transport::recv`], so that a peer writing faster than this
/// node reads cannot keep the driver from sending and from its timers (1 MiB a turn).
pub(super) const READS_PER_RECV: usize = 16;

/// One connection's received bytes: `block[start..filled]` arrived and is not yet handed out
/// (at most the front of one frame, between reads).
pub(super) struct InBuf {
    block: Box<[u8]>,
    start: usize,
    filled: usize,
}

impl InBuf {
    pub(super) fn new(pool: &BlockPool) -> Self {
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
pub(super) fn block_len(max_frame_len: usize) -> usize {
    READ_CHUNK.max(4 + max_frame_len) * 2
}

/// Reads what `stream` has (up to the read budget) into `buf` and hands out each whole frame,
/// as `Bytes` over the receive block where that block was mostly filled (see [`BlockPool`]).
/// `None` when the connection must close (end of stream, an error, or a length prefix over
/// `max`).
pub(super) fn read_frames(
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
pub(super) fn length_prefix(frame: &[u8]) -> [u8; 4] {
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

/// A stream that returns `data` in reads of the sizes in `reads` (in turn, each at most
/// what the caller's buffer holds; 0 means one "would block"), then would block.
#[cfg(any(test, fuzzing))]
struct Chunky<'a> {
    data: &'a [u8],
    at: usize,
    reads: &'a [usize],
    turn: usize,
}

#[cfg(any(test, fuzzing))]
impl<'a> Chunky<'a> {
    fn new(data: &'a [u8], reads: &'a [usize]) -> Self {
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

#[cfg(any(test, fuzzing))]
impl Read for Chunky<'_> {
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

/// The deframer driven over byte chunks, for the `tcp_deframe` fuzz target.
#[cfg(fuzzing)]
#[doc(hidden)]
#[allow(unreachable_pub)] // re-exported as `herald::transport::fuzzing`
pub mod fuzzing {
    use bytes::Bytes;

    use super::{BlockPool, Chunky, InBuf, block_len, length_prefix, read_frames};
    use crate::transport::RecvStatus;

    /// What one connection's deframer made of a stream.
    #[derive(Debug)]
    pub struct Deframed {
        /// The frames handed out, in order.
        pub frames: Vec<Bytes>,
        /// Whether it closed the connection before the stream's end (a length over `max`).
        pub closed: bool,
        /// Bytes kept at the end: the front of an unfinished frame.
        pub leftover: usize,
    }

    /// `frames`, each after its length prefix: a well-formed stream.
    pub fn encode(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&length_prefix(f));
            v.extend_from_slice(f);
        }
        v
    }

    /// Feeds `data` to a fresh connection's deframer in reads of the sizes in `reads` (in
    /// turn, cycled; 0 is one "would block"), with frames of at most `max` bytes, calling it
    /// again as the driver would until the stream is consumed or the connection closed.
    pub fn deframe(data: &[u8], reads: &[usize], max: usize) -> Deframed {
        // Reads that never move would spin: then one read takes what there is.
        let reads = if reads.iter().any(|&r| r > 0) {
            reads
        } else {
            &[]
        };
        let pool = BlockPool::new(block_len(max), 2);
        let mut buf = InBuf::new(&pool);
        let mut stream = Chunky::new(data, reads);
        let mut frames = Vec::new();
        loop {
            match read_frames(&mut stream, &mut buf, &pool, max, &mut |b| frames.push(b)) {
                None => {
                    return Deframed {
                        frames,
                        closed: true,
                        leftover: buf.filled - buf.start,
                    };
                }
                Some(RecvStatus::Drained) if stream.done() => {
                    return Deframed {
                        frames,
                        closed: false,
                        leftover: buf.filled - buf.start,
                    };
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&length_prefix(f));
            v.extend_from_slice(f);
        }
        v
    }

    /// Reads `stream` to its end through one connection's buffer, keeping every frame
    /// delivered (so any block reused while a frame still points into it would show).
    fn read_all(stream: &mut Chunky<'_>, max: usize) -> Vec<Bytes> {
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
            let reads = [cut, 0, usize::MAX, 0];
            let mut stream = Chunky::new(&data, &reads);
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
            let data = framed(&refs);
            let mut stream = Chunky::new(&data, &reads);
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
        let data = framed(&refs);
        let mut flood = Chunky::new(&data, &[]);
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
            &mut Chunky::new(&data, &[]),
            &mut buf,
            &pool,
            100,
            &mut |b| got.push(b),
        );
        assert_eq!(outcome, None);
        assert_eq!(got, [&b"good"[..]]);
        let mut buf = InBuf::new(&pool);
        let outcome = read_frames(
            &mut Chunky::new(&u32::MAX.to_le_bytes(), &[]),
            &mut buf,
            &pool,
            1 << 16,
            &mut |_| panic!("nothing delivered"),
        );
        assert_eq!(outcome, None);
    }
}
