//! The consumer's half of the ring's protocol: reading committed records in place, skipping
//! padding, and handing consumed space back to producers (zeroed, then `head` published).
//! Every `unsafe` block here relies on the byte-range ownership states of the parent
//! module's doc (`raw`), and on nothing else.

use super::{PREFETCH_AHEAD, Shared};
use crate::ringbuf::layout::{HeaderWord, RECORD_ALIGN};
use crate::sync::Arc;
use crate::sync::atomic::Ordering;

/// The consumer's side: its own copy of `head`, and what it knows of a stalled producer.
pub(in crate::ringbuf) struct Cursor {
    pub(super) shared: Arc<Shared>,
    /// Position of the first byte not yet consumed. `shared.head` trails it: consumed space
    /// is handed back to producers in batches (see [`Cursor::publish`]).
    pub(super) head: u64,
    /// The last value stored into `shared.head`. Between it and `head` lie consumed records,
    /// not yet zeroed (invariant Z holds again once they are published).
    pub(super) published: u64,
    /// The position at which `stall_polls` consecutive reads found a claimed record that
    /// was not committed.
    pub(super) stall_position: u64,
    pub(super) stall_polls: u64,
}

/// What the consumer sees of a producer that has claimed and not yet committed.
#[derive(Clone, Copy, Debug)]
pub(in crate::ringbuf) struct StallInfo {
    pub(in crate::ringbuf) position: u64,
    pub(in crate::ringbuf) polls: u64,
    pub(in crate::ringbuf) claimed_bytes: u64,
}

impl Cursor {
    /// The ring this cursor reads.
    pub(in crate::ringbuf) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Releases padding records at the head, then finds the longest run of committed
    /// records after it that is contiguous and no longer than `max_bytes`.
    #[inline]
    pub(in crate::ringbuf) fn read(&mut self, max_bytes: usize) -> Option<RawRun<'_>> {
        self.skip_padding();
        let start = self.head;
        let mut end = start;
        let mut count = 0;
        loop {
            if end != start && end & self.shared.mask() == 0 {
                // The next record is at offset 0: not contiguous with this run.
                break;
            }
            if end - self.published >= self.shared.geometry.capacity as u64 {
                // Producers cannot have claimed this far yet (they stop a lap past the
                // published head), and the bytes there may still be a consumed record's of
                // the previous lap, not yet zeroed.
                break;
            }
            // Acquire: pairs with the producer's Release in `publish`; the record's bytes
            // are complete once we see a nonzero word.
            let word = HeaderWord(self.shared.word(end).load(Ordering::Acquire));
            let Some(len) = word.record_len() else {
                break; // not committed yet, or padding (skipped at the next read)
            };
            let len = len as u64;
            if end - start + len > max_bytes as u64 {
                break;
            }
            end += len;
            count += 1;
            self.shared.prefetch(end + PREFETCH_AHEAD);
        }
        if count == 0 {
            // Nothing to read. If a producer found the ring full, hand back everything
            // consumed so it can go on. Not otherwise: the last record just consumed shares a
            // cache line with the one a producer is writing now, and zeroing it on every
            // empty read (the consumer is often ahead of the producers) would make that line
            // bounce between cores on every record.
            // Relaxed: a hint; a producer that sets it after this load retries, finds the
            // ring full again and sets it again, and the next empty read sees it.
            if self.shared.wanted.load(Ordering::Relaxed) {
                self.shared.wanted.store(false, Ordering::Relaxed);
                self.publish();
            }
            self.note_empty_read();
            return None;
        }
        self.stall_polls = 0;
        let index = (start & self.shared.mask()) as usize;
        let len = (end - start) as usize;
        Some(RawRun {
            #[cfg(loom)]
            _access: self.shared.shadow.read(index, len),
            cursor: self,
            index,
            len,
            count,
        })
    }

    /// Consumes every padding record at the head (publishing happens with the records).
    #[inline]
    fn skip_padding(&mut self) {
        loop {
            // Acquire: pairs with the Release store of the padding word.
            let word = HeaderWord(self.shared.word(self.head).load(Ordering::Acquire));
            let Some(len) = word.padding_len() else {
                return;
            };
            let len = len as u64;
            debug_assert!(len > 0 && len.is_multiple_of(RECORD_ALIGN as u64));
            self.head += len;
            self.publish_if_due();
        }
    }

    /// Publishes once an eighth of the ring is consumed and unpublished. Called after every
    /// advance of `head`, each by at most half the ring, so `head - published` stays below
    /// the capacity: the bytes at `head` then belong to this lap or were zeroed by an earlier
    /// publish, never to a consumed record of the previous lap (invariant Z as the consumer
    /// sees it).
    #[inline]
    fn publish_if_due(&mut self) {
        if self.head - self.published >= self.shared.publish_batch() {
            self.publish();
        }
    }

    /// Hands consumed space back to producers: zeroes every byte consumed since the last
    /// publish, then stores `head`.
    ///
    /// Doing this in batches (an eighth of the ring; at a read that finds nothing once a
    /// producer found the ring full; or when the consumer says it goes idle) keeps the
    /// consumer's writes away from the lines producers are committing into right now, and
    /// makes the zeroing one long `memset` over lines the consumer has just read.
    pub(in crate::ringbuf) fn publish(&mut self) {
        if self.published == self.head {
            return;
        }
        let capacity = self.shared.geometry.capacity;
        let from = (self.published & self.shared.mask()) as usize;
        let len = (self.head - self.published) as usize;
        debug_assert!(len <= capacity);
        let first = len.min(capacity - from);
        self.zero(from, first);
        self.zero(0, len - first);
        self.published = self.head;
        // Release: our reads of the consumed records and the zeroing happen before any
        // producer's writes into this space (it loads `head` with Acquire).
        self.shared.head.store(self.head, Ordering::Release);
    }

    /// Zeroes `[index, index + len)`, consumed space the consumer has not handed back.
    #[inline]
    fn zero(&mut self, index: usize, len: usize) {
        if len == 0 {
            return;
        }
        assert!(index + len <= self.shared.geometry.capacity);
        #[cfg(loom)]
        let _access = self.shared.shadow.write(index, len);
        #[cfg(loom)]
        for word in &self.shared.words[index / RECORD_ALIGN..(index + len) / RECORD_ALIGN] {
            // Relaxed: ordered before the Release store of `head` in `publish`.
            word.store(0, Ordering::Relaxed);
        }
        // SAFETY: in bounds (asserted). The range is consumed and not yet handed back: every
        // producer that wrote it has published (the consumer read its header word with
        // Acquire), no producer can claim it before `publish` stores a `head` past it, and
        // the consumer's own run borrows ended with `release`. So nothing else accesses
        // these bytes, atomically or not.
        unsafe { self.shared.bytes.slice_mut(index, len) }.fill(0);
    }

    /// Counts consecutive reads that found nothing at the head. It does not look at `tail`:
    /// an idle consumer polling an empty ring must not pull the line every producer's claim
    /// writes. Whether anything is claimed is asked only by [`stall`](Self::stall).
    #[inline]
    fn note_empty_read(&mut self) {
        if self.stall_polls > 0 && self.stall_position == self.head {
            self.stall_polls += 1;
        } else {
            self.stall_position = self.head;
            self.stall_polls = 1;
        }
    }

    /// The stall the last reads ran into: `Some` if the last read found nothing while space
    /// is claimed (so the record at the head is claimed and not committed). `polls` counts
    /// the consecutive empty reads at that position, the first of which may predate the
    /// claim.
    pub(in crate::ringbuf) fn stall(&self) -> Option<StallInfo> {
        let claimed_bytes = self.shared.claimed_bytes(self.head);
        (self.stall_polls > 0 && claimed_bytes > 0).then_some(StallInfo {
            position: self.stall_position,
            polls: self.stall_polls,
            claimed_bytes,
        })
    }

    /// Bytes claimed and not yet released.
    pub(in crate::ringbuf) fn claimed_bytes(&self) -> u64 {
        self.shared.claimed_bytes(self.head)
    }
}

/// A run of committed records, contiguous in the storage, lent to the consumer.
pub(in crate::ringbuf) struct RawRun<'a> {
    cursor: &'a mut Cursor,
    index: usize,
    len: usize,
    count: usize,
    #[cfg(loom)]
    _access: Vec<loom::cell::ConstPtr<()>>,
}

impl RawRun<'_> {
    /// The records, as wire bytes.
    #[inline]
    pub(in crate::ringbuf) fn bytes(&self) -> &[u8] {
        debug_assert!(self.index + self.len <= self.cursor.shared.geometry.capacity);
        // SAFETY: [index, index + len) is inside the storage (asserted: a run never wraps)
        // and holds committed records: `read` loaded each header word with Acquire and saw a
        // length, so their producers finished writing (the word last) and gave up access.
        // No producer can claim them again before `head` passes them, which only `release`
        // does, and it consumes the run; the slice borrows the run, so it cannot outlive
        // that. The consumer zeroes them only in `publish`, after the run is released.
        unsafe { self.cursor.shared.bytes.slice(self.index, self.len) }
    }

    /// The number of records in the run.
    #[inline]
    pub(in crate::ringbuf) fn count(&self) -> usize {
        self.count
    }

    /// Marks the run consumed. Its space goes back to producers at the next publish: once an
    /// eighth of the ring has been consumed since the last one, or when a read finds nothing.
    #[inline]
    pub(in crate::ringbuf) fn release(self) {
        let RawRun {
            cursor,
            len,
            #[cfg(loom)]
            _access,
            ..
        } = self;
        // End the loom access before producers can begin theirs.
        #[cfg(loom)]
        drop(_access);
        cursor.head += len as u64;
        cursor.publish_if_due();
    }
}
