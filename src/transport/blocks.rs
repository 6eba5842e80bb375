//! Receive blocks: memory the kernel writes datagrams and stream bytes into, and that then
//! reaches the subscribers as `Bytes` without a copy.
//!
//! A block is zeroed once, when it is first allocated. A block mostly filled by one receive
//! is lent out whole: the `Bytes` made from it own it, and the last of them to be dropped
//! sends it back to the pool, still initialised, for the next receive. A receive that used
//! little of its block is copied out instead and the block kept, so a trickle of small frames
//! waiting in the dispatcher's queue cannot pin a large block each: memory held by frames in
//! flight stays within [`LEND_FRACTION`] times their size.
//!
//! Before this, each receive carved its bytes from a fresh zeroed megabyte (UDP) or zeroed
//! 64 KiB before every read (TCP); that zeroing and the page faults behind it were about 5%
//! of the CPU samples of `perf record -g target/release/herald bench --frame 8192`, all of
//! it on the receiving driver.

use std::ops::Range;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

/// A receive that fills at least 1/`LEND_FRACTION` of its block lends the block out; less is
/// copied.
pub(crate) const LEND_FRACTION: usize = 4;

/// A pool of equal-sized receive blocks, for one transport.
#[derive(Debug)]
pub(crate) struct BlockPool {
    len: usize,
    home: Sender<Box<[u8]>>,
    free: Receiver<Box<[u8]>>,
}

impl BlockPool {
    /// Blocks of `len` bytes; up to `keep` returned blocks wait for reuse, the rest are freed.
    pub(crate) fn new(len: usize, keep: usize) -> Self {
        let (home, free) = crossbeam_channel::bounded(keep.max(1));
        Self { len, home, free }
    }

    /// A block from the pool, or a new zeroed one when none is free.
    pub(crate) fn take(&self) -> Box<[u8]> {
        self.free
            .try_recv()
            .unwrap_or_else(|_| vec![0; self.len].into_boxed_slice())
    }

    /// `block[range]` as `Bytes`. When the range fills enough of the block, the block itself
    /// goes out (no copy) and `block` is replaced by one from the pool, with `block[carry]`
    /// copied to its front; the result's second half says whether that happened. Otherwise
    /// the range is copied and `block` is left as it was.
    pub(crate) fn share(
        &self,
        block: &mut Box<[u8]>,
        range: Range<usize>,
        carry: Range<usize>,
    ) -> (Bytes, bool) {
        if range.len() * LEND_FRACTION < block.len() {
            return (Bytes::copy_from_slice(&block[range]), false);
        }
        let mut fresh = self.take();
        fresh[..carry.len()].copy_from_slice(&block[carry]);
        let lent = Lent {
            block: std::mem::replace(block, fresh),
            home: self.home.clone(),
        };
        (Bytes::from_owner(lent).slice(range), true)
    }
}

/// A block lent to `Bytes`; dropping it (when the last `Bytes` over it goes) returns it.
struct Lent {
    block: Box<[u8]>,
    home: Sender<Box<[u8]>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.block
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // A full pool (or one whose transport is gone) frees the block instead.
        let _ = self.home.try_send(std::mem::take(&mut self.block));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mostly_used_block_is_lent_and_comes_back_when_the_last_bytes_drop() {
        let pool = BlockPool::new(1000, 4);
        let mut block = pool.take();
        block[..300].fill(7);
        block[300..310].fill(9);
        let first = block.as_ptr();
        let (bytes, lent) = pool.share(&mut block, 0..300, 300..310);
        assert!(lent);
        assert_eq!(bytes.as_ptr(), first, "no copy");
        assert_eq!(&bytes[..], &[7; 300][..]);
        assert_eq!(
            &block[..10],
            &[9; 10][..],
            "the carried bytes lead the new block"
        );
        assert_ne!(block.as_ptr(), first);
        let part = bytes.slice(10..20);
        drop(bytes);
        assert!(pool.free.is_empty(), "still referenced");
        assert_eq!(&part[..], &[7; 10][..]);
        drop(part);
        let again = pool.take();
        assert_eq!(again.as_ptr(), first, "the same block, back in the pool");
        assert_eq!(again[0], 7, "and not zeroed again");
    }

    #[test]
    fn a_little_used_block_is_copied_and_kept() {
        let pool = BlockPool::new(1000, 4);
        let mut block = pool.take();
        block[..249].fill(5);
        let first = block.as_ptr();
        let (bytes, lent) = pool.share(&mut block, 0..249, 0..0);
        assert!(!lent);
        assert_ne!(bytes.as_ptr(), first);
        assert_eq!(&bytes[..], &[5; 249][..]);
        assert_eq!(block.as_ptr(), first);
    }

    #[test]
    fn a_full_pool_frees_what_comes_back() {
        let pool = BlockPool::new(100, 1);
        let mut a = pool.take();
        let mut b = pool.take();
        let (x, _) = pool.share(&mut a, 0..100, 0..0);
        let (y, _) = pool.share(&mut b, 0..100, 0..0);
        drop((x, y));
        assert_eq!(pool.free.len(), 1);
    }
}
