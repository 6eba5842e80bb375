//! Byte layouts of the frame header and the record header.
//!
//! Both are `#[repr(C)]` structs of `zerocopy::byteorder` little-endian fields, so they have
//! alignment 1, no padding, and can be read from any byte slice without `unsafe`. The byte
//! tables are in `docs/wire-format.md`.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"HRLD";

/// The frame header: the first 64 bytes of every frame.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    pub(super) magic: [u8; 4],
    pub(super) version: u8,
    pub(super) kind: u8,
    pub(super) flags: U16,
    pub(super) key_id: U32,
    pub(super) record_count: U16,
    pub(super) reserved0: U16,
    pub(super) cluster: U64,
    pub(super) node: U64,
    pub(super) incarnation: U64,
    pub(super) sequence: U64,
    pub(super) timestamp_ns: U64,
    pub(super) body_len: U32,
    pub(super) reserved1: U32,
}

/// The record header: the first 24 bytes of every record.
///
/// Length and kind come first, in the record's first 8-byte word: in the multi-producer ring
/// (`crate::ringbuf`) that word is also the record's commit flag, nonzero once the record is
/// complete, so no separate state has to travel between cores with each record.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    pub(super) payload_len: U32,
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) reserved: U16,
    pub(super) event: [u8; 16],
}

impl RecordHeader {
    /// The payload length the header states (not checked against anything).
    #[inline]
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_len.get() as usize
    }

    /// The event id.
    #[inline]
    pub(crate) fn event(&self) -> crate::EventId {
        crate::EventId::from_bytes(self.event)
    }
}

/// Where the event id starts in a record: after the first 8 bytes (payload length, kind,
/// flags, reserved), which the ring stores last as the record's commit flag.
pub(crate) const RECORD_EVENT_OFFSET: usize = core::mem::offset_of!(RecordHeader, event);

const _: () = assert!(size_of::<FrameHeader>() == 64);
const _: () = assert!(size_of::<RecordHeader>() == 24);
const _: () = assert!(align_of::<FrameHeader>() == 1 && align_of::<RecordHeader>() == 1);
