//! The ring's unsafe core: the byte storage, and the claim / commit / read / release protocol
//! that makes sharing it between threads sound. This is the only module of the crate allowed
//! to use `unsafe`; everything it exports is safe to call.
//!
//! # The header word
//!
//! A record's first 8 bytes, its payload length and kind (see `layout::RecordHeader`),
//! are its **header word**. Only atomic 8-byte accesses touch it while the record is live: the
//! producer stores it last, with `Release`, and that store commits the record; the consumer
//! loads it with `Acquire`, and a nonzero word means the record is complete. The commit flag
//! therefore travels in the cache line that carries the record itself, instead of in a
//! separate array of state words whose lines would cross between cores as well. A padding
//! record (the rest of a lap, or an aborted claim) has a header word of kind [`PAD_KIND`] whose
//! low 32 bits are its whole length; it never reaches the wire.
//!
//! # Ownership of a byte range
//!
//! Every byte of the storage is, at any moment, in one of five states, and the `unsafe`
//! blocks below rely only on these transitions:
//!
//! 1. **free**: position `>= tail` (or `< published` in the previous lap). Its value is 0
//!    (invariant **Z**) and nobody writes it.
//! 2. **claimed**: inside `[start, start + len)` of a record whose producer won the tail CAS.
//!    That producer, through its [`RawClaim`], is the only thread that writes these bytes,
//!    and never the header word except by the committing atomic store. The header word is
//!    still 0, so the consumer, which may load it at any time, stops before the record.
//! 3. **committed**: the producer stored the header word with `Release` and gave up its
//!    access. From here only the consumer reads the bytes, after loading the word with
//!    `Acquire`.
//! 4. **consumed**: the consumer has passed the record (its private `head`), but has not yet
//!    handed the space back.
//! 5. **released**: the consumer zeroed the consumed bytes and then stored a `head` past them
//!    with `Release`. A producer may claim them again only once it has loaded that head (or a
//!    later one) with `Acquire`, directly or through `head_cache`; so the consumer's reads and
//!    zeroing happen before the next lap's writes, and the space is free (and 0) again.
//!
//! Because free space is all zeros, whatever position the consumer looks at next holds either
//! 0 (free, or claimed and not committed) or the header word of a committed record; never a
//! stale byte of an earlier lap that could pass for one.

#![allow(unsafe_code)]

use std::ptr::NonNull;

use crossbeam_utils::CachePadded;

use super::ClaimError;
use super::layout::{EVENT_OFFSET, Geometry, HeaderWord, RECORD_ALIGN, RECORD_HEADER_LEN};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};

mod cursor;

pub(super) use cursor::{Cursor, RawRun};

/// How far ahead of the record it reads the consumer asks for lines: 8 cache lines, about six
/// records of 64-byte events.
const PREFETCH_AHEAD: u64 = 512;

/// The storage and the positions shared by all producers and the consumer.
pub(super) struct Shared {
    /// Position one past the last claimed byte. Monotonic, never masked (64 bits of bytes do
    /// not wrap in practice, so positions are free of ABA). Written only by the producers'
    /// CAS.
    tail: CachePadded<AtomicU64>,
    /// A recent value of `head`, so that producers do not all read the line the consumer
    /// writes. Never ahead of `head`; may lag behind it (then a producer reloads `head`).
    head_cache: CachePadded<AtomicU64>,
    /// Position of the first byte not yet released. Written only by the consumer.
    head: CachePadded<AtomicU64>,
    /// Set by a producer that found the ring full; the consumer then hands back what it has
    /// consumed at its next read that finds nothing (see [`Cursor::read`]). A hint: no data
    /// passes through it, space passes through `head`.
    wanted: CachePadded<AtomicBool>,
    /// The record bytes, exactly as they go on the wire (padding records aside).
    bytes: Storage,
    /// Under loom, the header words live here, one per 8-byte slot, since loom cannot lay an
    /// atomic over plain bytes. The protocol is the same: they are zeroed with the bytes.
    #[cfg(loom)]
    words: Box<[AtomicU64]>,
    /// Shadow cells, one per slot, so that loom checks every access to the bytes.
    #[cfg(loom)]
    shadow: Shadow,
    geometry: Geometry,
}

impl Shared {
    /// The sizes this ring was made with.
    pub(super) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// How much the consumer consumes before it hands space back (see `Cursor::publish`).
    #[inline]
    fn publish_batch(&self) -> u64 {
        // Under loom the ring holds two or three records: a larger batch makes the models
        // go through deferred publishing (a release that hands nothing back yet) as well.
        let divisor = if cfg!(loom) { 2 } else { 8 };
        (self.geometry.capacity / divisor) as u64
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.geometry.capacity as u64 - 1
    }

    /// Asks the CPU to start loading the cache line at ring position `position`, which the
    /// consumer will read soon. Records are found one after the other (each header gives
    /// the next one's place), so without this every line a producer wrote on another core
    /// is a miss the read waits for, in turn.
    #[inline]
    fn prefetch(&self, position: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        {
            let index = (position & self.mask()) as usize;
            let line = self.bytes.ptr.as_ptr().wrapping_add(index);
            // SAFETY: a prefetch is only a hint: it cannot fault, does not read into the
            // program and needs no valid pointer (`wrapping_add` keeps the arithmetic
            // defined; the index is inside the block anyway). SSE, which it needs, is part
            // of every x86_64 CPU.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    line.cast(),
                );
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = position;
    }

    /// The header word of a record that starts at `position`.
    #[inline]
    fn word(&self, position: u64) -> &AtomicU64 {
        self.word_at((position & self.mask()) as usize)
    }

    #[inline]
    fn word_at(&self, index: usize) -> &AtomicU64 {
        assert!(
            index.is_multiple_of(RECORD_ALIGN) && index < self.geometry.capacity,
            "records start on 8-byte slots inside the ring"
        );
        #[cfg(not(loom))]
        {
            // SAFETY: in bounds and on an 8-byte slot (asserted above). Every access to a
            // header word while its record is live is atomic and 8 bytes wide: producers
            // store it only through this reference, the consumer loads it only through this
            // reference, and the plain accesses (the consumer reading a committed run, and
            // zeroing released space) are ordered after the last atomic store to the word by
            // the Acquire load that found it committed, and before the next one by `head`
            // (module doc, states 3 to 5).
            unsafe { self.bytes.word(index) }
        }
        #[cfg(loom)]
        {
            &self.words[index / RECORD_ALIGN]
        }
    }

    /// Claims space for a record carrying `payload_len` bytes and writes its header.
    ///
    /// Never blocks, never waits for another thread: it fails with [`ClaimError::Full`] as
    /// soon as a consistent look at `head` and `tail` shows no room. The loop only repeats
    /// when the CAS on `tail` lost to another producer, which then made progress (lock-free,
    /// as in Agrona's `claimCapacity`).
    #[inline]
    pub(super) fn claim(
        &self,
        event: &[u8; 16],
        payload_len: usize,
    ) -> Result<RawClaim<'_>, ClaimError> {
        let Some(len) = self.geometry.record_len(payload_len) else {
            return Err(ClaimError::TooLarge {
                max_payload: self.geometry.max_payload(),
            });
        };
        let capacity = self.geometry.capacity as u64;
        let required = len as u64;
        // Acquire: pairs with the Release store below by another producer, which had itself
        // loaded this head from the consumer with Acquire. Through that chain the consumer's
        // reads of the space up to `head` happen before our writes into it.
        let mut head = self.head_cache.load(Ordering::Acquire);
        let (start, padding) = loop {
            // Relaxed: `tail` only divides space between producers; nothing a producer
            // touches is handed over through it (the bytes come free through `head`). It is
            // loaded after `head_cache`, so by coherence it is at least that head.
            let tail = self.tail.load(Ordering::Relaxed);
            let to_end = capacity - (tail & self.mask());
            // A record never straddles the end: if it does not fit before it, the rest of
            // the lap becomes a padding record and the record starts at offset 0.
            let padding = if required > to_end { to_end } else { 0 };
            let needed = required + padding;
            if !fits(tail, head, needed, capacity) {
                // Acquire: pairs with the consumer's Release store of `head` in `release`
                // and `skip_padding`, so its reads of the freed space happen before ours.
                head = self.head.load(Ordering::Acquire);
                if !fits(tail, head, needed, capacity) {
                    if head <= tail {
                        // Relaxed: a hint (see `wanted`). Stored only if not set yet, so
                        // producers retrying on a full ring do not keep writing its line.
                        if !self.wanted.load(Ordering::Relaxed) {
                            self.wanted.store(true, Ordering::Relaxed);
                        }
                        return Err(ClaimError::Full);
                    }
                    // The consumer has released past the `tail` we read: it is stale.
                    continue;
                }
                // Release: passes the Acquire above on to the producers that read the cache.
                self.head_cache.store(head, Ordering::Release);
            }
            // Relaxed: see the load of `tail`. Success makes [tail, tail + needed) ours.
            match self.tail.compare_exchange_weak(
                tail,
                tail + needed,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break (tail, padding),
                Err(_) => continue,
            }
        };
        let mut start = start;
        if padding != 0 {
            // The padding record is ours and holds nothing: publish it at once. Release, as
            // for any commit, so the consumer's Acquire orders it after the claim.
            let word = HeaderWord::padding(padding as u32).get();
            self.word(start).store(word, Ordering::Release);
            start += padding;
        }
        let index = (start & self.mask()) as usize;
        debug_assert!(
            index + len <= self.geometry.capacity,
            "a record never wraps"
        );
        debug_assert_eq!(self.word(start).load(Ordering::Relaxed), 0, "invariant Z");

        let mut claim = RawClaim {
            shared: self,
            index,
            len,
            payload_len,
            published: false,
            #[cfg(loom)]
            _access: self.shadow.write(index, len),
        };
        // Only the event id: the space is zero (invariant Z), so the padding after the payload
        // already is, and the header word is stored at commit.
        claim.event_mut().copy_from_slice(event);
        Ok(claim)
    }

    /// Bytes claimed by producers and not yet released by the consumer, as far as a racy
    /// look can tell. For diagnostics only.
    fn claimed_bytes(&self, head: u64) -> u64 {
        // Relaxed: a diagnostic snapshot; it hands nothing over.
        self.tail.load(Ordering::Relaxed).saturating_sub(head)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("capacity", &self.geometry.capacity)
            .field("max_record_len", &self.geometry.max_record_len)
            .field("tail", &self.tail.load(Ordering::Relaxed))
            .field("head", &self.head.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Whether `needed` more bytes fit after `tail` when the consumer has released up to `head`.
/// False as well if `head` is ahead of a stale `tail`.
#[inline]
fn fits(tail: u64, head: u64, needed: u64, capacity: u64) -> bool {
    tail >= head && tail - head + needed <= capacity
}

/// Makes the ring: the shared part, and the consumer's cursor (there is exactly one).
pub(super) fn new(geometry: Geometry) -> (Arc<Shared>, Cursor) {
    let shared = Arc::new(Shared {
        tail: CachePadded::new(AtomicU64::new(0)),
        head_cache: CachePadded::new(AtomicU64::new(0)),
        head: CachePadded::new(AtomicU64::new(0)),
        wanted: CachePadded::new(AtomicBool::new(false)),
        bytes: Storage::new(geometry.capacity),
        #[cfg(loom)]
        words: (0..geometry.slots()).map(|_| AtomicU64::new(0)).collect(),
        #[cfg(loom)]
        shadow: Shadow::new(geometry.slots()),
        geometry,
    });
    let cursor = Cursor {
        shared: shared.clone(),
        head: 0,
        published: 0,
        stall_position: 0,
        stall_polls: 0,
    };
    (shared, cursor)
}

/// A record a producer has claimed and not yet committed or aborted.
///
/// Holding one means owning the bytes `[index, index + len)` of the storage (state 2 in the
/// module doc); the type is neither `Clone` nor constructible outside [`Shared::claim`].
pub(super) struct RawClaim<'a> {
    shared: &'a Shared,
    index: usize,
    len: usize,
    payload_len: usize,
    published: bool,
    #[cfg(loom)]
    _access: Vec<loom::cell::MutPtr<()>>,
}

impl RawClaim<'_> {
    /// The payload length the record was claimed for.
    pub(super) fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// `len` bytes of the claim from `offset`, never the header word.
    #[inline]
    fn bytes_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(offset >= EVENT_OFFSET && offset + len <= self.len);
        debug_assert!(self.index + self.len <= self.shared.geometry.capacity);
        // SAFETY: [index + offset, index + offset + len) lies inside the record (asserted
        // above), which lies inside the storage (a record never wraps). This claim owns those
        // bytes exclusively until it is published: the tail CAS gave them to no other
        // producer, and the header word is still 0 so the consumer stops before the record.
        // The range leaves out the header word, which the consumer may load at any time. The
        // borrow of `self` is unique, so at most one such slice exists at a time.
        unsafe { self.shared.bytes.slice_mut(self.index + offset, len) }
    }

    /// The event id in the record header.
    #[inline]
    fn event_mut(&mut self) -> &mut [u8] {
        self.bytes_mut(EVENT_OFFSET, RECORD_HEADER_LEN - EVENT_OFFSET)
    }

    /// The payload bytes, for the caller to fill in. They start out zero.
    #[inline]
    pub(super) fn payload_mut(&mut self) -> &mut [u8] {
        self.bytes_mut(RECORD_HEADER_LEN, self.payload_len)
    }

    /// Publishes the record for the consumer.
    #[inline]
    pub(super) fn commit(mut self) {
        let word = HeaderWord::event(self.payload_len as u32);
        self.publish(word);
    }

    /// Gives up access and stores the record's header word.
    #[inline]
    fn publish(&mut self, word: HeaderWord) {
        debug_assert!(!self.published);
        self.published = true;
        #[cfg(loom)]
        {
            // Under loom the word lives apart; put its bytes in place too, so the run the
            // consumer reads is the same as without loom.
            self.bytes_mut_with_word()[..EVENT_OFFSET].copy_from_slice(&word.get().to_le_bytes());
            // End the loom access before the consumer can begin its own.
            self._access.clear();
        }
        let header = self.shared.word_at(self.index);
        debug_assert_eq!(header.load(Ordering::Relaxed), 0, "invariant Z");
        // Release: the event id and payload writes happen before the consumer's Acquire load
        // of this word, after which it reads them.
        header.store(word.get(), Ordering::Release);
    }

    /// Under loom only, the header word's bytes in the storage (see `publish`).
    #[cfg(loom)]
    fn bytes_mut_with_word(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes_mut`; under loom the consumer loads the word from `words`,
        // never from these bytes, so the claim owns them as well until it publishes.
        unsafe { self.shared.bytes.slice_mut(self.index, EVENT_OFFSET) }
    }
}

impl Drop for RawClaim<'_> {
    /// An unpublished claim aborts: the record becomes padding, which the consumer skips.
    #[inline]
    fn drop(&mut self) {
        if !self.published {
            self.publish(HeaderWord::padding(self.len as u32));
        }
    }
}

/// The record bytes: one heap block of `capacity` bytes, 8-byte aligned.
///
/// Accessed only through raw pointers derived from `ptr`, never through references to the
/// whole block, so one thread's slice never overlaps another's borrow.
struct Storage {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Storage` owns its block like a `Box<[u8]>` does; moving it to another thread is fine.
unsafe impl Send for Storage {}
// SAFETY: shared access goes only through `slice` and `slice_mut`, whose callers (in this
// module) guarantee that no two threads access the same byte at once without ordering, by
// the ownership protocol in the module doc.
unsafe impl Sync for Storage {}

impl Storage {
    fn new(len: usize) -> Self {
        debug_assert_eq!(len % 8, 0);
        let block: Box<[u64]> = vec![0u64; len / 8].into_boxed_slice();
        let ptr = NonNull::from(Box::leak(block)).cast::<u8>();
        Self { ptr, len }
    }

    /// # Safety
    ///
    /// `offset + len <= self.len`, and for the slice's lifetime no thread writes these bytes.
    #[inline]
    unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds of the block (caller), no concurrent writer (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }

    /// # Safety
    ///
    /// `offset + len <= self.len`, and for the slice's lifetime no other thread or slice
    /// reads or writes these bytes.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    unsafe fn slice_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds of the block (caller), exclusive access (caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) }
    }
}

impl Storage {
    /// The 8 bytes at `offset` as an atomic word.
    ///
    /// # Safety
    ///
    /// `offset` is a multiple of 8 and `offset + 8 <= self.len`, and while the reference is
    /// used, no other thread accesses these bytes other than through such a reference, unless
    /// ordered with this use by a happens-before edge (the memory model's rule for
    /// [`AtomicU64::from_ptr`]).
    #[cfg(not(loom))]
    #[inline]
    unsafe fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: in bounds (caller), 8-aligned since the block is a `[u64]` and `offset` a
        // multiple of 8 (caller), valid for the lifetime of `&self` (the block lives as long
        // as `self`), and accessed only atomically while shared (caller).
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast::<u64>()) }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let block =
            std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr().cast::<u64>(), self.len / 8);
        // SAFETY: `ptr` came from `Box::leak` of a `Box<[u64]>` of `len / 8` words in `new`,
        // and `drop` runs once, after every borrow of the storage has ended.
        drop(unsafe { Box::from_raw(block) });
    }
}

/// One loom cell per 8-byte slot, accessed whenever the matching bytes are, so loom's
/// causality checks cover the plain byte storage.
#[cfg(loom)]
struct Shadow(Box<[crate::sync::UnsafeCell<()>]>);

// SAFETY: the cells hold `()`, which is never read or written; they only report accesses to
// loom, which checks them itself.
#[cfg(loom)]
unsafe impl Sync for Shadow {}

#[cfg(loom)]
impl Shadow {
    fn new(slots: usize) -> Self {
        Self(
            (0..slots)
                .map(|_| crate::sync::UnsafeCell::new(()))
                .collect(),
        )
    }

    fn write(&self, index: usize, len: usize) -> Vec<loom::cell::MutPtr<()>> {
        self.slots(index, len).iter().map(|c| c.get_mut()).collect()
    }

    fn read(&self, index: usize, len: usize) -> Vec<loom::cell::ConstPtr<()>> {
        self.slots(index, len).iter().map(|c| c.get()).collect()
    }

    fn slots(&self, index: usize, len: usize) -> &[crate::sync::UnsafeCell<()>] {
        &self.0[index / RECORD_ALIGN..(index + len) / RECORD_ALIGN]
    }
}
