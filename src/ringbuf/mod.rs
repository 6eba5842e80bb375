//! The lock-free ring between `raise()` and the driver: many producers, one consumer, bytes.
//!
//! The algorithm is Agrona's `ManyToOneRingBuffer`
//! (<https://github.com/real-logic/agrona>, `ManyToOneRingBuffer.java`): producers claim space
//! with a CAS on a 64-bit monotonic tail, write their record in place, and commit it by
//! storing its length with `Release`; the consumer reads committed records in order, frees
//! them by zeroing what it consumed and storing the head with `Release`. A record that would
//! straddle the end of the storage is preceded by a padding record that fills the lap, and an
//! aborted claim becomes padding too.
//!
//! What differs from Agrona:
//!
//! - The records are event records: a 24-byte header (payload length and kind, laid out as in
//!   a wire record, then the 16-byte event id), the payload, zero padding to 8 bytes. The
//!   driver turns each into a wire record (`docs/wire-format.md`) as it encodes a frame.
//!   Padding records are never handed out: a run stops before one, and the next read
//!   releases it.
//! - There is no separate ring header: the commit flag is the record's first 8 bytes (payload
//!   length and kind), stored last and atomically. Padding records use a kind no wire version
//!   defines. The consumer zeroes all the space it hands back, so a claimed record starts out
//!   zero and its padding needs no writing.
//!
//! `docs/architecture.md` ("The ring buffer") explains the choices and the memory orderings;
//! the `raw` module holds the protocol and the only `unsafe` code of the crate.
//!
//! # A producer stalled between claim and commit
//!
//! The consumer reads in claim order, so a record that is claimed and not committed holds
//! back every record claimed after it. Claims never wait for it: once the ring fills they fail
//! with [`ClaimError::Full`], which `raise()` reports to its caller and to peers. The stall is
//! visible to the consumer through [`Consumer::stall`], with a count of reads that found it.
//! The ring cannot reclaim the space, because the stalled thread still owns a `&mut [u8]`
//! into it; a descheduled thread resumes and commits, a panicking one aborts (dropping the
//! [`Claim`] unwinds), and only a leaked claim (`mem::forget`) stalls the ring for good.
//!
//! # Example
//!
//! ```
//! use herald::EventId;
//! use herald::ringbuf::{ClaimError, ring};
//!
//! let (producer, mut consumer) = ring(256, 64).unwrap();
//! let event = EventId::from_bytes([9; 16]);
//! while producer.push(&event, b"payload").is_ok() {}
//! assert_eq!(producer.push(&event, b"payload"), Err(ClaimError::Full));
//!
//! let run = consumer.read(256).unwrap();
//! assert_eq!(run.record_count(), 8); // 8 records of 32 bytes
//! for (id, payload) in run.records() {
//!     assert_eq!((id, payload), (event, &b"payload"[..]));
//! }
//! run.release();
//! producer.push(&event, b"again").unwrap();
//! ```

mod consumer;
mod layout;
mod producer;
mod raw;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use consumer::{Consumer, Records, Run, Stall};
pub use layout::record_len;
pub use producer::{Claim, Producer};

/// Makes a ring of `capacity` bytes for records of up to `max_record_len` bytes.
///
/// `capacity` must be a power of two from 64 to 2^31. `max_record_len` counts the 24-byte
/// header and the padding; it is rounded down to a multiple of 8 and must then be between 24
/// and `capacity / 2`. That bound makes sure an empty ring always takes the longest record,
/// whatever the wrap-around; a `capacity` of at least 8 × `max_record_len` keeps the space
/// lost to wrap-around padding small (Agrona's limit).
///
/// # Errors
///
/// [`RingError::Capacity`] or [`RingError::MaxRecordLen`] for sizes out of range.
///
/// ```
/// use herald::ringbuf::{RingError, ring};
///
/// let (producer, _consumer) = ring(64 * 1024, 1472 - 96).unwrap();
/// assert_eq!(producer.max_payload(), 1472 - 96 - 24);
/// assert!(matches!(ring(1000, 64), Err(RingError::Capacity { capacity: 1000 })));
/// assert!(matches!(ring(1024, 1024), Err(RingError::MaxRecordLen { .. })));
/// ```
pub fn ring(capacity: usize, max_record_len: usize) -> Result<(Producer, Consumer), RingError> {
    let geometry = layout::Geometry::new(capacity, max_record_len)?;
    let (shared, cursor) = raw::new(geometry);
    Ok((Producer::new(shared), Consumer::new(cursor)))
}

/// Why a claim was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The ring has no room for the record now. Nothing was written.
    #[error("the ring is full")]
    Full,
    /// The payload is longer than this ring accepts.
    #[error("payload is larger than the ring's maximum of {max_payload} bytes")]
    TooLarge {
        /// The longest payload the ring accepts.
        max_payload: usize,
    },
}

/// Why [`ring()`] refused its sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The capacity is not a power of two from 64 to 2^31.
    #[error("ring capacity {capacity} is not a power of two from 64 to 2^31")]
    Capacity {
        /// The capacity given.
        capacity: usize,
    },
    /// The maximum record length is not between 24 and half the capacity.
    #[error(
        "maximum record length {max_record_len} is not between 24 and half the capacity {capacity}"
    )]
    MaxRecordLen {
        /// The maximum record length given.
        max_record_len: usize,
        /// The capacity given.
        capacity: usize,
    },
}
