//! Sizes and encodings of the ring: no atomics, no `unsafe`, only arithmetic.

use super::RingError;
use crate::wire::{RECORD_ALIGN, RECORD_HEADER_LEN};

/// The smallest capacity [`super::ring`] accepts: two of the shortest records, rounded up to
/// a power of two.
pub(super) const MIN_CAPACITY: usize = 64;
/// The largest capacity [`super::ring`] accepts. Record lengths are kept in `u32` state words,
/// and a record is at most half the capacity, so this keeps every length within `u32`.
pub(super) const MAX_CAPACITY: usize = 1 << 31;

/// State word bit that marks a padding record (wrap-around filler or an aborted claim).
///
/// Record lengths are multiples of [`RECORD_ALIGN`], so the low three bits of a length are
/// free to carry flags.
pub(super) const PADDING: u32 = 1;

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
        crate::wire::record_len(payload_len).filter(|&len| len <= self.max_record_len)
    }

    /// The number of 8-byte slots, which is also the number of state words.
    pub(super) const fn slots(&self) -> usize {
        self.capacity / RECORD_ALIGN
    }
}

/// The 24-byte wire record header for an event record: event id, payload length, kind
/// [`crate::wire::RECORD_KIND_EVENT`], then zero flags and reserved bytes.
#[inline]
pub(super) fn record_header(event: &[u8; 16], payload_len: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[..16].copy_from_slice(event);
    header[16..20].copy_from_slice(&payload_len.to_le_bytes());
    header[20] = crate::wire::RECORD_KIND_EVENT;
    header
}

/// The payload length written in the record header at the start of `record`.
///
/// Only for records the ring wrote itself; bytes from elsewhere go through `wire`'s parser.
#[inline]
pub(super) fn header_payload_len(record: &[u8]) -> usize {
    let mut len = [0u8; 4];
    len.copy_from_slice(&record[16..20]);
    u32::from_le_bytes(len) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn header_layout() {
        let h = record_header(&[7; 16], 0x0102_0304);
        assert_eq!(&h[..16], &[7; 16]);
        assert_eq!(&h[16..20], &[4, 3, 2, 1]);
        assert_eq!(&h[20..], &[1, 0, 0, 0]);
        assert_eq!(header_payload_len(&h), 0x0102_0304);
    }
}
