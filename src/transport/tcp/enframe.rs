//! The sending half of TCP framing, pure like its receiving half (`deframe.rs`): frames
//! written each after its 4-byte little-endian length with one vectored write, and the rest
//! of a frame a short write cut queued so the stream never goes out mid-frame.

use std::io::{self, Write};

use bytes::BytesMut;

use super::deframe::length_prefix;

/// Frames one vectored write carries at most (two buffers each: prefix and frame).
pub(super) const WRITE_FRAMES: usize = 32;

/// Writes `frames`, each after its length prefix, with one vectored write; how many bytes of
/// that framed stream the socket took (0 when it is full or still connecting). Only an error
/// that ends the connection is an error.
pub(super) fn write_framed(stream: &mut impl Write, frames: &[&[u8]]) -> io::Result<usize> {
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
pub(super) fn queue_partial(
    queue: &mut BytesMut,
    frames: &[&[u8]],
    mut written: usize,
) -> (usize, bool) {
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
}
