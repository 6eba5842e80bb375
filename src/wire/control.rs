//! Control frames: what a receiver tells a sender ([`FrameKind::Status`]: how far it has
//! consumed, which sequence ranges it lacks) and what a sender answers when it no longer holds
//! frames a receiver asked for ([`FrameKind::Evicted`]: the ranges, and the ids of the events
//! they carried).
//!
//! A control frame has the usual header and tag. Its body is a 24-byte [`ControlHeader`],
//! then `record_count` ranges of 16 bytes (first and last sequence, both included, ascending
//! and apart), then the usual event table of `event_count` ids. Control frames are addressed:
//! the body names the node (and incarnation) they are for. On a shared channel (multicast)
//! every node sees them; the others only learn from them (a receiver holds back its own
//! request for a range someone already asked for).
//!
//! The header's `sequence` is, as on a heartbeat, the last data sequence its sender used.

use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{EVENT_ID_LEN, FrameKind, ParseError};

/// The first bytes of a control frame's body.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ControlHeader {
    pub(super) target_node: U64,
    pub(super) target_incarnation: U64,
    pub(super) consumed: U64,
}

/// One range of sequence numbers, both ends included.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct RangeBytes {
    pub(super) first: U64,
    pub(super) last: U64,
}

/// Length of a [`ControlHeader`].
pub const CONTROL_HEADER_LEN: usize = 24;
/// Length of one range in a control frame.
pub const RANGE_LEN: usize = 16;
/// The most ranges one control frame carries.
pub const MAX_RANGES: usize = 64;

const _: () = assert!(size_of::<ControlHeader>() == CONTROL_HEADER_LEN);
const _: () = assert!(size_of::<RangeBytes>() == RANGE_LEN);

/// The body of a checked control frame, borrowed from the frame.
#[derive(Clone, Copy, Debug)]
pub struct Control<'a> {
    header: &'a ControlHeader,
    ranges: &'a [u8],
}

impl<'a> Control<'a> {
    /// The node the frame is for.
    pub fn target_node(&self) -> u64 {
        self.header.target_node.get()
    }

    /// The incarnation of that node the frame is about.
    pub fn target_incarnation(&self) -> u64 {
        self.header.target_incarnation.get()
    }

    /// On a status: the last sequence of the target the sender of the status has delivered
    /// in order (or given up on). On an evicted answer: 0.
    pub fn consumed(&self) -> u64 {
        self.header.consumed.get()
    }

    /// The ranges, ascending, each `(first, last)` with `first <= last`.
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = (u64, u64)> + 'a {
        self.ranges.chunks_exact(RANGE_LEN).map(|chunk| {
            RangeBytes::ref_from_bytes(chunk).map_or((0, 0), |r| (r.first.get(), r.last.get()))
        })
    }
}

/// Checks a control frame's body (everything before the event table) and returns its parts.
/// `ranges` is the header's record count, `ids` its event count.
pub(super) fn parse_control(
    body: &[u8],
    kind: FrameKind,
    ranges: u16,
    ids: u16,
) -> Result<(&[u8], &[u8]), ParseError> {
    let control_len = CONTROL_HEADER_LEN + usize::from(ranges) * RANGE_LEN;
    let expected = control_len + usize::from(ids) * EVENT_ID_LEN;
    if body.len() != expected || usize::from(ranges) > MAX_RANGES {
        return Err(ParseError::BadControl);
    }
    if kind == FrameKind::Status && ids != 0 {
        return Err(ParseError::BadControl);
    }
    let (control, events) = body.split_at(control_len);
    let mut previous: Option<u64> = None;
    for chunk in control[CONTROL_HEADER_LEN..].chunks_exact(RANGE_LEN) {
        let range = RangeBytes::ref_from_bytes(chunk).map_err(|_| ParseError::BadControl)?;
        let (first, last) = (range.first.get(), range.last.get());
        let after_previous = previous.is_none_or(|p| first > p.saturating_add(1));
        if first == 0 || first > last || !after_previous {
            return Err(ParseError::BadRange);
        }
        previous = Some(last);
    }
    Ok((control, events))
}

/// The control view of a checked control body (as returned by [`parse_control`]).
pub(super) fn view(control: &[u8]) -> Option<Control<'_>> {
    let (header, ranges) = ControlHeader::ref_from_prefix(control).ok()?;
    Some(Control { header, ranges })
}
