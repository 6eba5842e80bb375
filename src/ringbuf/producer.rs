//! The producers' side: [`Producer`] and [`Claim`].

use std::fmt;

use super::ClaimError;
use super::raw::{RawClaim, Shared};
use crate::EventId;
use crate::sync::Arc;

/// A handle for writing records into the ring. Cheap to clone; `Send` and `Sync`, so any
/// number of threads may claim at once.
///
/// Claiming never blocks, never allocates, takes no lock and never waits for another thread:
/// when there is no room it fails at once with [`ClaimError::Full`].
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Claims space for one event record with a payload of `payload_len` bytes.
    ///
    /// The ring writes the record header (payload length, kind "event", zero flags, event id;
    /// the length and kind only at commit) and the payload and padding start out zero; fill
    /// in the payload with [`Claim::payload_mut`], then [`Claim::commit`]. Dropping the claim
    /// instead aborts it.
    ///
    /// Until the claim is committed or dropped, the consumer cannot read past it: keep it
    /// for as short a time as possible (see [`super::Consumer::stall`]).
    ///
    /// # Errors
    ///
    /// [`ClaimError::TooLarge`] if `payload_len` exceeds [`Producer::max_payload`];
    /// [`ClaimError::Full`] if the ring has no room for the record now.
    ///
    /// ```
    /// use herald::EventId;
    /// use herald::ringbuf::{ClaimError, ring};
    ///
    /// let (producer, mut consumer) = ring(1024, 128).unwrap();
    /// let mut claim = producer.claim(&EventId::from_bytes([1; 16]), 3).unwrap();
    /// claim.payload_mut().copy_from_slice(b"abc");
    /// claim.commit();
    /// assert!(matches!(
    ///     producer.claim(&EventId::from_bytes([1; 16]), 1000),
    ///     Err(ClaimError::TooLarge { max_payload: 104 })
    /// ));
    ///
    /// let run = consumer.read(1024).unwrap();
    /// assert_eq!(run.bytes().len(), 32); // 24-byte header, 3-byte payload, 5 bytes padding
    /// run.release();
    /// ```
    #[inline]
    pub fn claim(&self, event: &EventId, payload_len: usize) -> Result<Claim<'_>, ClaimError> {
        self.shared
            .claim(event.as_bytes(), payload_len)
            .map(|raw| Claim { raw })
    }

    /// Claims, copies `payload` in and commits: one event record in one call.
    ///
    /// # Errors
    ///
    /// As [`Producer::claim`].
    ///
    /// ```
    /// use herald::EventId;
    /// use herald::ringbuf::ring;
    ///
    /// let (producer, mut consumer) = ring(1024, 128).unwrap();
    /// producer.push(&EventId::from_bytes([1; 16]), b"hello").unwrap();
    /// let run = consumer.read(1024).unwrap();
    /// assert_eq!(run.records().next().unwrap().1, b"hello");
    /// ```
    #[inline]
    pub fn push(&self, event: &EventId, payload: &[u8]) -> Result<(), ClaimError> {
        let mut claim = self.claim(event, payload.len())?;
        claim.payload_mut().copy_from_slice(payload);
        claim.commit();
        Ok(())
    }

    /// The largest payload one record may carry in this ring.
    ///
    /// ```
    /// let (producer, _consumer) = herald::ringbuf::ring(4096, 1472 - 96).unwrap();
    /// assert_eq!(producer.max_payload(), 1472 - 96 - 24);
    /// ```
    pub fn max_payload(&self) -> usize {
        self.shared.geometry().max_payload()
    }

    /// The ring's capacity in bytes.
    ///
    /// ```
    /// let (producer, _consumer) = herald::ringbuf::ring(4096, 512).unwrap();
    /// assert_eq!(producer.capacity(), 4096);
    /// ```
    pub fn capacity(&self) -> usize {
        self.shared.geometry().capacity
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("ring", &*self.shared)
            .finish()
    }
}

/// A record claimed in the ring, its header written, its payload to be filled in.
///
/// [`Claim::commit`] publishes it to the consumer. Dropping it without committing (including
/// by a panic while it is held) aborts it: the space becomes a padding record that the
/// consumer skips. Leaking it with [`std::mem::forget`] stalls the consumer for good at this
/// record; [`super::Consumer::stall`] makes that visible.
#[must_use = "a claim that is dropped is aborted; call `commit`"]
pub struct Claim<'a> {
    raw: RawClaim<'a>,
}

impl Claim<'_> {
    /// The payload, `payload_len` bytes, zero until written (the consumer zeroes all space
    /// it hands back, so nothing of an earlier record shows through).
    ///
    /// ```
    /// # use herald::{EventId, ringbuf::ring};
    /// # let (producer, _consumer) = ring(1024, 128).unwrap();
    /// let mut claim = producer.claim(&EventId::from_bytes([1; 16]), 4).unwrap();
    /// claim.payload_mut().copy_from_slice(&7u32.to_le_bytes());
    /// claim.commit();
    /// ```
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.raw.payload_mut()
    }

    /// The payload length this claim was made for.
    pub fn payload_len(&self) -> usize {
        self.raw.payload_len()
    }

    /// Publishes the record: the consumer reads it once every record claimed before it is
    /// committed or aborted.
    #[inline]
    pub fn commit(self) {
        self.raw.commit();
    }

    /// Aborts the claim, as dropping it does: the space becomes padding.
    ///
    /// ```
    /// # use herald::{EventId, ringbuf::ring};
    /// let (producer, mut consumer) = ring(1024, 128).unwrap();
    /// producer.claim(&EventId::from_bytes([1; 16]), 4).unwrap().abort();
    /// assert!(consumer.read(1024).is_none());
    /// ```
    pub fn abort(self) {
        drop(self);
    }
}

impl fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("payload_len", &self.raw.payload_len())
            .finish_non_exhaustive()
    }
}
