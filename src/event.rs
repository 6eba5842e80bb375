//! Event identities.

use std::fmt;

/// The identity of an event kind: 16 bytes, carried once per frame in the frame's event table.
///
/// Applications usually name events (`"product.changed"`) and let [`EventId::from_name`] hash
/// the name, so every node derives the same id without coordination. An id can also be given
/// as raw bytes, for instance a UUID the application already has.
///
/// ```
/// use herald::EventId;
/// let a = EventId::from_name("product.changed");
/// assert_eq!(a, EventId::from_name("product.changed"));
/// assert_ne!(a, EventId::from_name("product.deleted"));
/// assert_eq!(a.to_string().len(), 36); // UUID-style text
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId([u8; 16]);

impl EventId {
    /// The id with the given bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id of a named event: the first 16 bytes of SHA-256 over `herald.event:` and the name.
    ///
    /// The domain prefix keeps event ids apart from any other use of the same hash.
    pub fn from_name(name: &str) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"herald.event:");
        ctx.update(name.as_bytes());
        let digest = ctx.finish();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        Self(bytes)
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl From<[u8; 16]> for EventId {
    fn from(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for EventId {
    /// UUID-style lowercase hex: `8-4-4-4-12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missed_reason_has_its_name_at_its_index() {
        for r in [
            MissedReason::Gap,
            MissedReason::SenderOverflowed,
            MissedReason::SenderRestarted,
            MissedReason::PeerSilent,
            MissedReason::LocalOverflow,
        ] {
            assert_eq!(MissedReason::NAMES[r.index()], r.name());
        }
        assert_eq!(MissedReason::NAMES.len(), 5);
    }

    #[test]
    fn names_hash_stably() {
        // Pinned (and checked against Python's hashlib in docs/wire-format.md) so that a change
        // of hash, which would split a cluster running mixed versions, cannot slip in.
        assert_eq!(
            EventId::from_name("product.changed").to_string(),
            "cb918d67-5860-2941-6c73-b7a3fe87a404"
        );
        assert_ne!(EventId::from_name(""), EventId::from_name(" "));
    }

    #[test]
    fn display_is_uuid_shaped() {
        let id = EventId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "abababab-abab-abab-abab-abababababab");
    }
}

/// Notice that events from a sender may have been lost: whoever caches data derived from that
/// sender's events should drop it (or the part the range covers, if it can tell).
///
/// herald's promise is that every event raised on a live peer is delivered exactly once *or*
/// covered by a `Missed`; this is the second half of that promise.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Missed {
    /// The sender's node id.
    pub node: u64,
    /// The sender's incarnation (random per start of the sender) the loss belongs to.
    pub incarnation: u64,
    /// Why events were missed.
    pub reason: MissedReason,
    /// The data-frame sequence numbers of the sender that were lost, both ends included, when
    /// they are known. A frame holds one or more events.
    pub range: Option<(u64, u64)>,
    /// The ids of the events the lost frames carried, each once, when the sender still knew
    /// them (it keeps the event tables of frames it no longer holds for much longer than the
    /// frames): an application that caches per event needs to drop only those caches.
    /// `None` when they are not known: then whatever came from the sender is suspect.
    pub events: Option<Vec<EventId>>,
}

/// Why a [`Missed`] was raised. Each reason has a stable short [`name`](Self::name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MissedReason {
    /// Frames of the sender never arrived and could not be recovered: the sender no longer
    /// held them when asked (then [`Missed::events`] usually names their events), or asking
    /// did not bring them back within the recovery time.
    Gap,
    /// The sender's ring was full: it refused events, which therefore never reached the wire.
    SenderOverflowed,
    /// The sender restarted (a new incarnation appeared) without a clean shutdown: events it
    /// raised just before, and frames still unaccounted for, are lost.
    SenderRestarted,
    /// Nothing, not even a heartbeat, has come from the sender for the dead-peer timeout.
    PeerSilent,
    /// This node's subscribers fell behind: the queue to the dispatcher thread was full, and
    /// frames that arrived intact were dropped before dispatch.
    LocalOverflow,
}

impl MissedReason {
    /// Every short name, in declaration order.
    pub const NAMES: &'static [&'static str] = &[
        "gap",
        "sender_overflowed",
        "sender_restarted",
        "peer_silent",
        "local_overflow",
    ];

    /// The reason's stable short name (a metrics label).
    ///
    /// ```
    /// assert_eq!(herald::MissedReason::Gap.name(), "gap");
    /// ```
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Gap => "gap",
            Self::SenderOverflowed => "sender_overflowed",
            Self::SenderRestarted => "sender_restarted",
            Self::PeerSilent => "peer_silent",
            Self::LocalOverflow => "local_overflow",
        }
    }

    /// The position of the reason in [`NAMES`](Self::NAMES).
    pub(crate) const fn index(&self) -> usize {
        match self {
            Self::Gap => 0,
            Self::SenderOverflowed => 1,
            Self::SenderRestarted => 2,
            Self::PeerSilent => 3,
            Self::LocalOverflow => 4,
        }
    }
}

impl fmt::Display for MissedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
