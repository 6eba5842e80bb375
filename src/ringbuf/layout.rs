//! Sizes and encodings of the ring: no atomics, no `unsafe`, only arithmetic.

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::RingError;

/// Ring records start and end on multiples of this many bytes, so that each header word is
/// an aligned 8-byte atomic.
pub(super) const RECORD_ALIGN: usize = 8;
/// Record kind of an event record in the ring.
pub(super) const KIND_EVENT: u8 = 1;

/// A record header in the ring: 24 bytes.
///
/// Length and kind come first, in the record's first 8-byte word, which is also the
/// record's commit flag ([`HeaderWord`]), nonzero once the record is complete, so no separate
/// state has to travel between cores with each record. The event id follows whole: the
/// driver turns it into an index in the frame's event table as it encodes the frame.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RecordHeader {
    pub(super) payload_len: U32,
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) reserved: U16,
    pub(super) event: [u8; 16],
}

impl RecordHeader {
    /// The payload length the header states.
    #[inline]
    pub(super) fn payload_len(&self) -> usize {
        self.payload_len.get() as usize
    }

    /// The event id.
    #[inline]
    pub(super) fn event(&self) -> crate::EventId {
        crate::EventId::from_bytes(self.event)
    }
}

/// Length of a record header in the ring.
pub(super) const RECORD_HEADER_LEN: usize = 24;
/// Where the event id starts in a ring record: after the header word.
pub(super) const EVENT_OFFSET: usize = core::mem::offset_of!(RecordHeader, event);
const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_LEN && EVENT_OFFSET == 8);

/// Length of the ring record that carries a payload of `payload_len` bytes: the 24-byte
/// header, the payload and padding to 8 bytes; what [`ring`](super::ring)'s `max_record_len`
/// must be for that payload. `None` if that overflows `usize`.
///
/// ```
/// assert_eq!(herald::ringbuf::record_len(64), Some(88));
/// assert_eq!(herald::ringbuf::record_len(65), Some(96));
/// ```
#[inline]
pub const fn record_len(payload_len: usize) -> Option<usize> {
    match RECORD_HEADER_LEN.checked_add(payload_len) {
        Some(n) => match n.checked_add(RECORD_ALIGN - 1) {
            Some(n) => Some(n & !(RECORD_ALIGN - 1)),
            None => None,
        },
        None => None,
    }
}

/// The smallest capacity [`super::ring`] accepts: two of the shortest records, rounded up to
/// a power of two.
pub(super) const MIN_CAPACITY: usize = 64;
/// The largest capacity [`super::ring`] accepts. Lengths are kept in the 32-bit length field of
/// the header word, and a record is at most half the capacity, so this keeps every length
/// within `u32`.
pub(super) const MAX_CAPACITY: usize = 1 << 31;

/// Record kind of a padding record (wrap-around filler or an aborted claim). Padding never
/// leaves the ring, and no wire version defines this kind, so a receiver would refuse it.
pub(super) const PAD_KIND: u8 = 0xff;

/// A record's first 8 bytes read as one little-endian word: payload length in the low 32
/// bits, kind in the next 8, flags and reserved (always 0 here) above. Nonzero exactly when
/// the record is committed, because every kind is nonzero. For a padding record the low 32
/// bits are the whole padding length instead, since padding may be shorter than a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeaderWord(pub(super) u64);

impl HeaderWord {
    /// The word of an event record carrying `payload_len` bytes.
    #[inline]
    pub(super) const fn event(payload_len: u32) -> Self {
        Self(payload_len as u64 | (KIND_EVENT as u64) << 32)
    }

    /// The word of a padding record `len` bytes long.
    #[inline]
    pub(super) const fn padding(len: u32) -> Self {
        Self(len as u64 | (PAD_KIND as u64) << 32)
    }

    /// The raw word.
    #[inline]
    pub(super) const fn get(self) -> u64 {
        self.0
    }

    #[inline]
    const fn kind(self) -> u8 {
        (self.0 >> 32) as u8
    }

    #[inline]
    const fn low(self) -> usize {
        self.0 as u32 as usize
    }

    /// The length of the committed event record this word starts; `None` for 0 (nothing
    /// committed here yet) or padding.
    #[inline]
    pub(super) fn record_len(self) -> Option<usize> {
        if self.0 == 0 || self.kind() == PAD_KIND {
            return None;
        }
        debug_assert_eq!(self.kind(), KIND_EVENT);
        record_len(self.low())
    }

    /// The length of the padding record this word starts; `None` if it is not padding.
    #[inline]
    pub(super) fn padding_len(self) -> Option<usize> {
        (self.kind() == PAD_KIND).then(|| {
            debug_assert!(self.low() > 0 && self.low().is_multiple_of(RECORD_ALIGN));
            self.low()
        })
    }
}

/// The checked geometry of one ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Bytes of record storage; a power of two.
    pub(super) capacity: usize,
    /// The longest record a producer may claim, header and padding included; a multiple of
    /// [`RECORD_ALIGN`], at least [`RECORD_HEADER_LEN`] and at most `capacity / 2`.
    pub(super) max_record_len: usize,
}

impl Geometry {
    /// Checks the sizes given to [`super::ring`]. `max_record_len` is rounded down to a
    /// multiple of [`RECORD_ALIGN`] first.
    pub(super) fn new(capacity: usize, max_record_len: usize) -> Result<Self, RingError> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(RingError::Capacity { capacity });
        }
        let rounded = max_record_len & !(RECORD_ALIGN - 1);
        if !(RECORD_HEADER_LEN..=capacity / 2).contains(&rounded) {
            return Err(RingError::MaxRecordLen {
                max_record_len,
                capacity,
            });
        }
        Ok(Self {
            capacity,
            max_record_len: rounded,
        })
    }

    /// The largest payload a record of at most `max_record_len` bytes can carry.
    pub(super) const fn max_payload(&self) -> usize {
        self.max_record_len - RECORD_HEADER_LEN
    }

    /// The length of the record carrying `payload_len` bytes, if the ring accepts it.
    #[inline]
    pub(super) fn record_len(&self, payload_len: usize) -> Option<usize> {
        record_len(payload_len).filter(|&len| len <= self.max_record_len)
    }

    /// The number of 8-byte slots (under loom, the number of separate header words).
    #[cfg(any(loom, test))]
    pub(super) const fn slots(&self) -> usize {
        self.capacity / RECORD_ALIGN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn geometry_checks_sizes() {
        assert!(Geometry::new(63, 24).is_err());
        assert!(Geometry::new(32, 24).is_err());
        assert!(Geometry::new(96, 24).is_err());
        assert!(Geometry::new(64, 23).is_err());
        assert!(Geometry::new(64, 40).is_err());
        assert!(Geometry::new(MAX_CAPACITY * 2, 24).is_err());
        let g = Geometry::new(64, 39).unwrap();
        assert_eq!(g.max_record_len, 32);
        assert_eq!(g.max_payload(), 8);
        assert_eq!(g.record_len(8), Some(32));
        assert_eq!(g.record_len(9), None);
        assert_eq!(g.record_len(usize::MAX), None);
        assert_eq!(g.slots(), 8);
    }

    #[test]
    fn header_word_is_the_wire_record_header_start() {
        let word = HeaderWord::event(0x0102_0304);
        assert_eq!(word.get().to_le_bytes(), [4, 3, 2, 1, 1, 0, 0, 0]);
        let mut record = [0u8; RECORD_HEADER_LEN];
        record[..8].copy_from_slice(&word.get().to_le_bytes());
        let (header, _) = RecordHeader::ref_from_prefix(&record[..]).unwrap();
        assert_eq!(header.payload_len(), 0x0102_0304);
        assert_eq!(HeaderWord::event(5).record_len(), Some(32));
        assert_eq!(HeaderWord::event(0).record_len(), Some(24));
        assert_eq!(HeaderWord::event(5).padding_len(), None);
        // An empty payload still makes a nonzero word: the kind is never 0.
        assert_ne!(HeaderWord::event(0).get(), 0);
        assert_eq!(HeaderWord(0).record_len(), None);
        assert_eq!(HeaderWord(0).padding_len(), None);
        let pad = HeaderWord::padding(16);
        assert_eq!(pad.record_len(), None);
        assert_eq!(pad.padding_len(), Some(16));
    }
}
