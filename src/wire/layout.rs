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
    pub(super) event_count: U16,
    pub(super) cluster: U64,
    pub(super) node: U64,
    pub(super) incarnation: U64,
    pub(super) sequence: U64,
    pub(super) timestamp_ns: U64,
    pub(super) body_len: U32,
    pub(super) reserved1: U32,
}

impl FrameHeader {
    /// The header of a frame with `fields`, signed with key `key_id`, with `counts` (records
    /// or ranges, event ids) and a body of `body_len` bytes.
    pub(super) fn new(
        fields: &super::HeaderFields,
        key_id: u32,
        (records, events): (usize, usize),
        body_len: usize,
    ) -> Self {
        Self {
            magic: MAGIC,
            version: super::VERSION,
            kind: fields.kind.to_byte(),
            flags: U16::new(fields.flags.bits()),
            key_id: U32::new(key_id),
            record_count: U16::new(u16::try_from(records).unwrap_or(u16::MAX)),
            event_count: U16::new(u16::try_from(events).unwrap_or(u16::MAX)),
            cluster: U64::new(fields.cluster.raw()),
            node: U64::new(fields.node),
            incarnation: U64::new(fields.incarnation),
            sequence: U64::new(fields.sequence),
            timestamp_ns: U64::new(fields.timestamp_ns),
            // At most MAX_FRAME_LEN, which fits a u32.
            body_len: U32::new(u32::try_from(body_len).unwrap_or(u32::MAX)),
            reserved1: U32::ZERO,
        }
    }
}

/// The record header: the first 4 bytes of every record.
///
/// The event is an index into the frame's event table (the 16-byte ids at the end of the
/// body), so a frame of many events of a few kinds carries each id once.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    pub(super) payload_len: U16,
    pub(super) event: U16,
}

impl RecordHeader {
    /// The index of the record's event in the frame's event table (not checked).
    #[inline]
    pub(crate) fn event_index(&self) -> usize {
        usize::from(self.event.get())
    }
}

const _: () = assert!(size_of::<FrameHeader>() == 64);
const _: () = assert!(size_of::<RecordHeader>() == 4);
const _: () = assert!(align_of::<FrameHeader>() == 1 && align_of::<RecordHeader>() == 1);
