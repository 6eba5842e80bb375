//! The wire format: frames of records, signed with HMAC-SHA256.
//!
//! A frame is a 64-byte [`FrameHeader`], a body of records followed by the event table, and a
//! 32-byte tag:
//!
//! ```text
//! +-------------------+---------------------------------------+----------------+
//! | header (64 bytes) | records | event table (body_len bytes) | tag (32 bytes) |
//! +-------------------+---------------------------------------+----------------+
//!  <---------------- signed: HMAC-SHA256(key[key_id], …) ------->
//! ```
//!
//! With `security = "encrypt"` a data frame is sealed instead ([`Flags::SEALED`]): the body is
//! AES-256-GCM ciphertext with the header as associated data, and the trailer holds the
//! 16-byte AEAD tag and 16 zero bytes.
//!
//! A record is a 4-byte [`RecordHeader`] (payload length, index of its event in the table)
//! and the payload, with nothing between records. The event table lists
//! the 16-byte ids of the frame's events, so each id travels once per frame, not once per
//! record. All integers are little-endian. The byte-exact tables, the versioning rule and an
//! example frame are in `docs/wire-format.md`.
//!
//! # The panic contract
//!
//! [`Frame::parse`] (and [`SharedFrame::parse`]) is the only entry point for bytes from the
//! network. It checks every field and every length before it returns, so once it succeeds no
//! accessor, iterator or conversion on the frame can panic, whatever the bytes were. Parsing
//! never allocates, and never in proportion to a length or count the frame claims.
//!
//! Parsing does **not** authenticate: pass the frame to [`crate::auth::Keyring::verify`]
//! before trusting anything in it.

mod control;
mod gossip;
mod layout;
mod parse;
mod signer;
mod writer;

use std::fmt;

pub use control::{CONTROL_HEADER_LEN, Control, ControlHeader, MAX_RANGES, RANGE_LEN};
pub use gossip::{
    ENTRY_LEN, GOSSIP_HEADER_LEN, Gossip, GossipKind, GossipMessage, MAX_ENTRIES, MemberRecord,
    MemberState, gossip_frame_len, write_membership,
};
pub use layout::{FrameHeader, MAGIC, RecordHeader};
pub use parse::{Frame, Record, Records, SharedFrame, SharedRecord, SharedRecords, event_table};
pub use signer::FrameSigner;
pub(crate) use signer::sealed::Sealed as SignerSealed;
pub use writer::{ControlFrame, FrameWriter, write_control};

/// The wire format version this build speaks.
pub const VERSION: u8 = 3;
/// Length of the frame header.
pub const HEADER_LEN: usize = 64;
/// Length of the HMAC-SHA256 tag that ends every frame.
pub const TAG_LEN: usize = 32;
/// Length of the AES-256-GCM tag of a sealed frame: the first half of its 32-byte trailer,
/// whose second half is zero.
pub const SEAL_TAG_LEN: usize = 16;
/// Header plus tag: the length of a frame with no records, and the shortest valid frame.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 4;
/// Length of an event id in the event table.
pub const EVENT_ID_LEN: usize = 16;
/// The most event ids one frame's table holds (the record's index is 16 bits).
pub const MAX_EVENTS: usize = u16::MAX as usize + 1;
/// The largest frame this format allows, on any transport. Transports set lower limits
/// (1472 bytes keeps a UDP datagram within a 1500-byte Ethernet MTU).
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// The default maximum frame length for UDP: a 1500-byte MTU less IPv4 and UDP headers.
pub const DEFAULT_UDP_FRAME_LEN: usize = 1472;

/// Length of the record that carries a payload of `payload_len` bytes: header and payload.
/// `None` if that overflows `usize`.
#[inline]
pub const fn record_len(payload_len: usize) -> Option<usize> {
    RECORD_HEADER_LEN.checked_add(payload_len)
}

/// The largest payload one record can carry in a frame of `max_frame_len` bytes: the body
/// holds the record and its event's id in the table.
///
/// A frame shorter than 116 bytes (overhead, one record header and one event id) carries no
/// record at all: this returns 0 for it, and [`FrameWriter::push`] refuses even an empty
/// payload. Payload lengths are 16 bits, which no frame of at most [`MAX_FRAME_LEN`] bytes
/// reaches.
///
/// ```
/// assert_eq!(herald::wire::max_payload(1472), 1472 - 96 - 4 - 16);
/// ```
pub const fn max_payload(max_frame_len: usize) -> usize {
    max_frame_len
        .saturating_sub(FRAME_OVERHEAD)
        .saturating_sub(RECORD_HEADER_LEN + EVENT_ID_LEN)
}

const _: () = assert!(max_payload(MAX_FRAME_LEN) <= u16::MAX as usize);

/// What a frame carries. Values not listed here are refused by [`Frame::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// Event records. Each data frame takes the next sequence number of its sender.
    Data,
    /// No records. `sequence` is the last sequence number the sender used for data, so that
    /// receivers notice a lost tail.
    Heartbeat,
    /// From a receiver to one sender (named in the body): how far it has consumed the
    /// sender's frames (flow control) and which ranges it lacks (a negative acknowledgement,
    /// which the sender answers by sending those frames again). See [`Control`].
    Status,
    /// From a sender to one receiver: ranges it was asked for and no longer holds, with the
    /// ids of the events they carried in the event table (as far as it remembers them).
    Evicted,
    /// Membership (SWIM) messages: probes, answers, joins, member lists and piggybacked
    /// updates. See [`Gossip`].
    Membership,
}

impl FrameKind {
    /// The byte that encodes this kind.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Data => 1,
            Self::Heartbeat => 2,
            Self::Status => 3,
            Self::Evicted => 4,
            Self::Membership => 5,
        }
    }

    /// The kind a byte encodes, if this version knows it.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Data),
            2 => Some(Self::Heartbeat),
            3 => Some(Self::Status),
            4 => Some(Self::Evicted),
            5 => Some(Self::Membership),
            _ => None,
        }
    }
}

/// Frame flag bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    /// No flags.
    pub const EMPTY: Self = Self(0);
    /// The sender's ring overflowed since its previous data frame: it refused events that
    /// therefore never reached the wire. Receivers raise Missed.
    pub const OVERFLOWED: Self = Self(1);
    /// On a heartbeat: the sender is shutting down cleanly. Every data frame it sent is
    /// accounted for by the heartbeat's `sequence`, so receivers report nothing when it goes
    /// silent or comes back as a new incarnation.
    pub const CLOSING: Self = Self(2);
    /// On an evicted answer: the event table does not list every event of the ranges (the
    /// sender forgot some, or they did not fit), so receivers cannot scope the loss.
    pub const IDS_INCOMPLETE: Self = Self(4);
    /// On a data frame only: the body (records and event table) is encrypted with
    /// AES-256-GCM and the trailer holds the 16-byte AEAD tag and 16 zero bytes instead of
    /// an HMAC tag (`security = "encrypt"`; see [`crate::auth::Keyring::open`]).
    pub const SEALED: Self = Self(8);
    /// Every bit this version defines. Frames with other bits set are refused.
    pub const KNOWN: Self = Self(15);

    /// The flags from their bits, if this version knows every bit set.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !Self::KNOWN.0 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of flags.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The identity of a cluster: 8 bytes derived from its name, carried in every frame so that
/// two clusters sharing a network (or a multicast group) ignore each other.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClusterId(u64);

impl ClusterId {
    /// The id of a named cluster: the first 8 bytes (little-endian) of SHA-256 over
    /// `herald.cluster:` and the name.
    pub fn from_name(name: &str) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"herald.cluster:");
        ctx.update(name.as_bytes());
        let digest = ctx.finish();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest.as_ref()[..8]);
        Self(u64::from_le_bytes(bytes))
    }

    /// The id with this raw value.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({:016x})", self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The values of a frame header, as a writer takes them and a parsed frame gives them back.
///
/// `record_count` and `body_len` are not here: the writer computes them, and the parser has
/// checked them against the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeaderFields {
    /// What the frame carries.
    pub kind: FrameKind,
    /// Flag bits.
    pub flags: Flags,
    /// The key that signs the frame. [`FrameWriter::finish`] overwrites it with the signing
    /// key of the keyring it is given.
    pub key_id: u32,
    /// The sender's cluster.
    pub cluster: ClusterId,
    /// The sender's node id.
    pub node: u64,
    /// The sender's incarnation: random at each start of the node.
    pub incarnation: u64,
    /// Data frames: the frame's sequence number within the incarnation, from 1.
    /// Heartbeats and control frames: the last sequence number used for data (0 if none yet).
    pub sequence: u64,
    /// When the sender wrote the frame, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
}

/// Why [`Frame::parse`] refused a frame. Each reason has a stable short [`name`](Self::name)
/// that metrics and logs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than a header and a tag.
    #[error("frame truncated: {len} bytes, at least {FRAME_OVERHEAD} needed")]
    Truncated {
        /// The length received.
        len: usize,
    },
    /// Longer than [`MAX_FRAME_LEN`], or than the receiving node's `max_frame_len`.
    #[error("frame of {len} bytes exceeds the maximum frame length")]
    Oversized {
        /// The length received.
        len: usize,
    },
    /// Does not start with [`MAGIC`].
    #[error("bad magic: not a herald frame")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// A frame kind this version does not define.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flag bits this version does not define.
    #[error("unknown flag bits {0:#06x}")]
    UnknownFlags(u16),
    /// A reserved header field is not zero.
    #[error("reserved field is not zero")]
    ReservedSet,
    /// The header's body length disagrees with the frame's length (a truncated frame, trailing
    /// bytes, or two frames in one datagram).
    #[error("body length {claimed} disagrees with the {actual} bytes received")]
    LengthMismatch {
        /// Body length the header claims.
        claimed: u32,
        /// Body length the frame has.
        actual: usize,
    },
    /// The header claims a longer event table than the body holds.
    #[error("an event table of {0} ids cannot fit the body")]
    TooManyEvents(u16),
    /// The header claims more records than the body can hold.
    #[error("{0} records cannot fit the body")]
    TooManyRecords(u16),
    /// A record's header or payload runs past the end of the body.
    #[error("record runs past the end of the frame")]
    RecordTruncated,
    /// A record names an event past the end of the frame's event table.
    #[error("record names event {index} of a table of {count}")]
    BadEventIndex {
        /// The index the record names.
        index: u16,
        /// The number of ids in the table.
        count: u16,
    },
    /// Bytes follow the last record the header counts.
    #[error("bytes after the last record")]
    TrailingBytes,
    /// A heartbeat carries records.
    #[error("heartbeat frame carries records")]
    HeartbeatWithRecords,
    /// A control frame's body does not match its counts (or a status lists event ids).
    #[error("control frame body disagrees with its counts")]
    BadControl,
    /// A control frame's ranges are empty, start at 0, or are not ascending and apart.
    #[error("control frame range out of order")]
    BadRange,
    /// A membership frame's body disagrees with its count, or holds an unknown message kind,
    /// member state or address family, or an entry for node 0.
    #[error("membership frame body is malformed")]
    BadMembership,
}

impl ParseError {
    /// Every short name, in declaration order: the label values of the drop counters.
    pub const NAMES: &'static [&'static str] = &[
        "truncated",
        "oversized",
        "bad_magic",
        "unsupported_version",
        "unknown_kind",
        "unknown_flags",
        "reserved_set",
        "length_mismatch",
        "too_many_events",
        "too_many_records",
        "record_truncated",
        "bad_event_index",
        "trailing_bytes",
        "heartbeat_with_records",
        "bad_control",
        "bad_range",
        "bad_membership",
    ];

    /// The reason's stable short name, e.g. `"bad_magic"`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::Oversized { .. } => "oversized",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::UnknownKind(_) => "unknown_kind",
            Self::UnknownFlags(_) => "unknown_flags",
            Self::ReservedSet => "reserved_set",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::TooManyEvents(_) => "too_many_events",
            Self::TooManyRecords(_) => "too_many_records",
            Self::RecordTruncated => "record_truncated",
            Self::BadEventIndex { .. } => "bad_event_index",
            Self::TrailingBytes => "trailing_bytes",
            Self::HeartbeatWithRecords => "heartbeat_with_records",
            Self::BadControl => "bad_control",
            Self::BadRange => "bad_range",
            Self::BadMembership => "bad_membership",
        }
    }
}

/// Why a [`FrameWriter`] refused a call. These are caller mistakes or a full frame, never
/// caused by bytes from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer given to [`FrameWriter::new`] is shorter than [`FRAME_OVERHEAD`] or longer
    /// than [`MAX_FRAME_LEN`].
    #[error("frame buffer of {0} bytes; it must hold {FRAME_OVERHEAD} to {MAX_FRAME_LEN} bytes")]
    BadBufferLen(usize),
    /// The record does not fit in what is left of the frame. Finish this frame and start another.
    #[error("record of {needed} bytes does not fit the {left} bytes left in the frame")]
    FrameFull {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left before the tag.
        left: usize,
    },
    /// The payload is larger than any frame of this size can carry.
    #[error("payload of {len} bytes exceeds the {max}-byte maximum for this frame size")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload a frame of this size carries.
        max: usize,
    },
    /// Records were pushed into a heartbeat.
    #[error("heartbeat frames carry no records")]
    HeartbeatWithRecords,
    /// The frame already holds `u16::MAX` records.
    #[error("frame already holds the maximum number of records")]
    TooManyRecords,
    /// A data frame was asked for with no records (it would use up a sequence number for
    /// nothing).
    #[error("a data frame needs at least one record")]
    Empty,
}

#[cfg(test)]
mod sealed_tests;
#[cfg(test)]
mod tests;
