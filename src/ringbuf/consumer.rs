//! The consumer's side: [`Consumer`], [`Run`] and [`Stall`].

use std::fmt;

use zerocopy::FromBytes;

use super::layout::{RECORD_HEADER_LEN, RecordHeader, record_len};
use super::raw::{Cursor, RawRun};
use crate::EventId;

/// The one reader of the ring. `Send`, not `Clone`: there is exactly one per ring.
pub struct Consumer {
    cursor: Cursor,
}

impl Consumer {
    pub(super) fn new(cursor: Cursor) -> Self {
        Self { cursor }
    }

    /// The longest run of committed records at the head of the ring, in claim order,
    /// contiguous in memory and at most `max_bytes` long; `None` if there is none.
    ///
    /// Padding records at the head (wrap-around filler and aborted claims) are released on
    /// the way; a run never contains one. A run stops before the first record that is claimed
    /// but not committed, before padding, at the end of the storage, and before a record that
    /// would take it past `max_bytes`. So a `max_bytes` of at least the ring's
    /// `max_record_len` always makes progress when a record is committed; a smaller one may
    /// return `None` while a longer record waits.
    ///
    /// Call [`Run::release`] to free the space; dropping the run instead leaves its records
    /// to be read again. A read that finds nothing hands every released byte back to the
    /// producers (see [`Run::release`]).
    ///
    /// ```
    /// use herald::EventId;
    /// use herald::ringbuf::ring;
    ///
    /// let (producer, mut consumer) = ring(1024, 128).unwrap();
    /// assert!(consumer.read(1024).is_none());
    /// for i in 0..3u8 {
    ///     producer.push(&EventId::from_bytes([i; 16]), &[i; 8]).unwrap();
    /// }
    /// let run = consumer.read(64).unwrap(); // two 32-byte records fit in 64 bytes
    /// assert_eq!(run.record_count(), 2);
    /// run.release();
    /// let run = consumer.read(64).unwrap();
    /// assert_eq!(run.records().next().unwrap().1, &[2; 8]);
    /// run.release();
    /// ```
    #[inline]
    pub fn read(&mut self, max_bytes: usize) -> Option<Run<'_>> {
        self.cursor.read(max_bytes).map(|raw| Run { raw })
    }

    /// Hands every consumed record's space back to the producers now.
    ///
    /// Released space goes back in batches (an eighth of the ring at a time) so that the
    /// consumer does not write the cache lines producers are committing into; a read that
    /// finds nothing hands everything back if a producer has found the ring full since. Call
    /// this before the consuming thread goes to sleep, so that no space stays held while it
    /// sleeps.
    ///
    /// ```
    /// use herald::EventId;
    /// use herald::ringbuf::ring;
    ///
    /// let (producer, mut consumer) = ring(64, 32).unwrap();
    /// let id = EventId::from_bytes([1; 16]);
    /// producer.push(&id, b"one").unwrap();
    /// consumer.read(64).unwrap().release();
    /// consumer.hand_back();
    /// producer.push(&id, b"two").unwrap();
    /// producer.push(&id, b"three").unwrap(); // in the space "one" had
    /// ```
    pub fn hand_back(&mut self) {
        self.cursor.publish();
    }

    /// A producer holding up the ring, as far as the last reads saw: `Some` when the last
    /// [`Consumer::read`] found nothing to return although space is claimed, which means the
    /// record at the head is claimed and not yet committed.
    ///
    /// That is normal for an instant (a producer is writing); [`Stall::polls`] counts how
    /// many consecutive reads found the same record pending, so the caller (which has a clock)
    /// decides when it has lasted too long to be anything but a producer descheduled or
    /// stuck between claim and commit. Records committed after it wait, and once the ring
    /// fills every claim fails with [`super::ClaimError::Full`]. The ring cannot take the
    /// space back: the claiming thread still holds a mutable slice of it.
    ///
    /// ```
    /// use herald::EventId;
    /// use herald::ringbuf::ring;
    ///
    /// let (producer, mut consumer) = ring(1024, 128).unwrap();
    /// let claim = producer.claim(&EventId::from_bytes([1; 16]), 8).unwrap();
    /// producer.push(&EventId::from_bytes([2; 16]), b"behind").unwrap();
    /// assert!(consumer.read(1024).is_none());
    /// assert!(consumer.read(1024).is_none());
    /// let stall = consumer.stall().unwrap();
    /// assert_eq!((stall.position(), stall.polls(), stall.claimed_bytes()), (0, 2, 64));
    /// claim.commit();
    /// assert_eq!(consumer.read(1024).unwrap().record_count(), 2);
    /// assert!(consumer.stall().is_none());
    /// ```
    pub fn stall(&self) -> Option<Stall> {
        self.cursor.stall().map(|info| Stall {
            position: info.position,
            polls: info.polls,
            claimed_bytes: info.claimed_bytes,
        })
    }

    /// Bytes that producers have claimed and the consumer has not yet released (committed,
    /// in progress, or padding). A racy snapshot, for metrics.
    ///
    /// ```
    /// # use herald::{EventId, ringbuf::ring};
    /// let (producer, consumer) = ring(1024, 128).unwrap();
    /// producer.push(&EventId::from_bytes([1; 16]), b"x").unwrap();
    /// assert_eq!(consumer.claimed_bytes(), 32);
    /// ```
    pub fn claimed_bytes(&self) -> u64 {
        self.cursor.claimed_bytes()
    }

    /// The longest record the ring accepts, in bytes; pass at least this to
    /// [`Consumer::read`].
    ///
    /// ```
    /// let (_producer, consumer) = herald::ringbuf::ring(1024, 131).unwrap();
    /// assert_eq!(consumer.max_record_len(), 128);
    /// ```
    pub fn max_record_len(&self) -> usize {
        self.cursor.shared().geometry().max_record_len
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("ring", self.cursor.shared())
            .finish()
    }
}

/// A producer that has held a claim at the head of the ring across consecutive reads.
/// See [`Consumer::stall`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    position: u64,
    polls: u64,
    claimed_bytes: u64,
}

impl Stall {
    /// Ring position (bytes since the ring was made) of the record not yet committed.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// How many consecutive reads found that record claimed and not committed.
    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Bytes claimed from that record on, which wait behind it.
    pub fn claimed_bytes(&self) -> u64 {
        self.claimed_bytes
    }
}

/// Committed records lent to the consumer: whole ring records (24-byte header with the event
/// id, payload, zero padding to 8 bytes), contiguous, in claim order.
///
/// [`Run::release`] frees their space; dropping the run without releasing leaves them to be
/// read again by the next [`Consumer::read`].
#[must_use = "records are freed only by `release`"]
pub struct Run<'a> {
    raw: RawRun<'a>,
}

impl<'a> Run<'a> {
    /// The records, in the ring's layout (see [`Run`]).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.raw.bytes()
    }

    /// The number of records in [`Run::bytes`].
    #[inline]
    pub fn record_count(&self) -> usize {
        self.raw.count()
    }

    /// The records one by one: event id and payload.
    #[inline]
    pub fn records(&self) -> Records<'_> {
        Records {
            rest: self.raw.bytes(),
        }
    }

    /// Frees the space of these records for producers.
    ///
    /// The space goes back to producers in batches, to keep the consumer's writes away from
    /// the lines producers are writing: once an eighth of the ring has been released since
    /// the last hand-back, or when a [`Consumer::read`] finds nothing. A consumer that reads
    /// until `None` (as the driver does) therefore hands everything back every time.
    #[inline]
    pub fn release(self) {
        self.raw.release();
    }
}

impl fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("bytes", &self.bytes().len())
            .field("record_count", &self.record_count())
            .finish()
    }
}

/// Iterator over the records of a [`Run`]: `(event id, payload)`.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = (EventId, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        // The ring wrote these headers itself, so the lengths are in bounds.
        let (header, _) = RecordHeader::ref_from_prefix(self.rest).ok()?;
        let payload_len = header.payload_len();
        let event = header.event();
        let (record, rest) = self.rest.split_at(record_len(payload_len)?);
        self.rest = rest;
        let payload = &record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len];
        Some((event, payload))
    }
}
