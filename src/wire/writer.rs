//! Encoding: frames written into a buffer the caller owns.

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use super::control::{ControlHeader, RangeBytes};
use super::{
    CONTROL_HEADER_LEN, EVENT_ID_LEN, EncodeError, FRAME_OVERHEAD, FrameHeader, FrameKind,
    FrameSigner, HEADER_LEN, HeaderFields, MAX_FRAME_LEN, MAX_RANGES, RANGE_LEN, RECORD_HEADER_LEN,
    RecordHeader, SEAL_TAG_LEN, TAG_LEN, max_payload, record_len,
};
use crate::EventId;

/// Slots of the writer's index from event id to table position (a direct-mapped cache: a
/// collision only costs a second copy of an id in the table).
const SLOTS: usize = 64;

/// Writes one frame into a caller-owned buffer, whose length is the maximum frame length.
/// Never allocates.
///
/// Push records with [`push`](Self::push) until one returns [`EncodeError::FrameFull`], then
/// [`finish`](Self::finish) appends the event table, signs the frame and returns its bytes.
/// Each event's id goes in the table the first time a record names it; later records of the
/// same event cost only their 4-byte header and payload.
///
/// ```
/// use herald::auth::{Key, Keyring};
/// use herald::wire::{ClusterId, EncodeError, Flags, Frame, FrameKind, FrameWriter, HeaderFields};
/// use herald::EventId;
///
/// let keyring = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
/// let fields = HeaderFields {
///     kind: FrameKind::Data, flags: Flags::EMPTY, key_id: 1,
///     cluster: ClusterId::from_name("shop"), node: 7, incarnation: 99,
///     sequence: 1, timestamp_ns: 1_700_000_000_000_000_000,
/// };
/// let mut buf = [0u8; 256];
/// let mut writer = FrameWriter::new(&mut buf, &fields).unwrap();
/// let id = EventId::from_name("price.changed");
/// writer.push(&id, b"sku-1").unwrap();
/// writer.push(&id, b"sku-2").unwrap();
/// // 256 - 96 bytes of overhead - 2 x 9-byte records - one 16-byte id leaves 126 bytes:
/// // no room for a 110-byte payload of a new event (4 + 110 + 16 bytes).
/// let other = EventId::from_name("stock.changed");
/// assert!(matches!(writer.push(&other, &[0; 110]), Err(EncodeError::FrameFull { .. })));
/// writer.push(&id, &[0; 110]).unwrap(); // 4 + 110 bytes: the id is in the table already
/// let frame = writer.finish(&keyring);
/// let frame = Frame::parse(frame).unwrap();
/// assert_eq!((frame.record_count(), frame.event_count()), (3, 1));
/// ```
#[derive(Debug)]
pub struct FrameWriter<'b> {
    /// The whole buffer; `buf.len()` is the maximum frame length.
    buf: &'b mut [u8],
    /// Bytes of header and records so far. Invariant:
    /// `HEADER_LEN <= len <= buf.len() - TAG_LEN - EVENT_ID_LEN * events`.
    len: usize,
    count: u16,
    /// Ids in the table. While the frame is written, id `i` lies at `table_slot(i)`, counting
    /// down from the tag; `finish` moves the table behind the records.
    events: usize,
    /// `slots[hash(id)]` is 1 + the table index of the last id with that hash, or 0.
    slots: [u16; SLOTS],
    header: FrameHeader,
}

impl<'b> FrameWriter<'b> {
    /// Starts a frame with the given header values in `buf`. The frame will be no longer than
    /// `buf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::BadBufferLen`] if `buf` is shorter than [`FRAME_OVERHEAD`] or longer than
    /// [`MAX_FRAME_LEN`].
    pub fn new(buf: &'b mut [u8], fields: &HeaderFields) -> Result<Self, EncodeError> {
        if !(FRAME_OVERHEAD..=MAX_FRAME_LEN).contains(&buf.len()) {
            return Err(EncodeError::BadBufferLen(buf.len()));
        }
        let header = FrameHeader::new(fields, fields.key_id, (0, 0), 0);
        Ok(Self {
            buf,
            len: HEADER_LEN,
            count: 0,
            events: 0,
            slots: [0; SLOTS],
            header,
        })
    }

    /// Bytes left for records (and for the ids of events new to this frame).
    pub fn remaining(&self) -> usize {
        self.buf.len() - TAG_LEN - EVENT_ID_LEN * self.events - self.len
    }

    /// The largest payload a single record can carry in a frame of this size.
    pub fn max_payload(&self) -> usize {
        max_payload(self.buf.len())
    }

    /// Records written so far.
    pub fn record_count(&self) -> u16 {
        self.count
    }

    /// Whether no record has been written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Length of the frame as it would be finished now, event table and tag included.
    pub fn frame_len(&self) -> usize {
        self.len + EVENT_ID_LEN * self.events + TAG_LEN
    }

    /// Where table entry `i` waits until `finish`.
    #[inline]
    fn table_slot(&self, i: usize) -> usize {
        self.buf.len() - TAG_LEN - EVENT_ID_LEN * (i + 1)
    }

    /// The cache slot of an id: a multiplicative hash of its first 8 bytes (ids made by
    /// [`EventId::from_name`] are uniform already; this also spreads hand-made ones such as
    /// `[n; 16]`).
    #[inline]
    fn slot_of(event: &EventId) -> usize {
        let mut first = [0u8; 8];
        first.copy_from_slice(&event.as_bytes()[..8]);
        let h = u64::from_le_bytes(first).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The top bits of the product depend on every bit of the input.
        (h >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// The table index of `event`, if this frame lists it (as far as the cache remembers).
    #[inline]
    fn find(&self, event: &EventId) -> Option<u16> {
        let index = self.slots[Self::slot_of(event)].checked_sub(1)?;
        let at = self.table_slot(usize::from(index));
        (self.buf[at..at + EVENT_ID_LEN] == event.as_bytes()[..]).then_some(index)
    }

    /// Appends one event record.
    ///
    /// # Errors
    ///
    /// [`EncodeError::PayloadTooLarge`] if no frame of this size could carry `payload`;
    /// [`EncodeError::FrameFull`] if this one has no room left for it;
    /// [`EncodeError::HeartbeatWithRecords`] on a heartbeat frame;
    /// [`EncodeError::TooManyRecords`] past `u16::MAX` records.
    #[inline]
    pub fn push(&mut self, event: &EventId, payload: &[u8]) -> Result<(), EncodeError> {
        let max = self.max_payload();
        let record = record_len(payload.len()).unwrap_or(usize::MAX);
        // The second test catches frames under 116 bytes, where no record fits at all (and
        // `max` is 0 although an empty payload does not fit either).
        if payload.len() > max
            || record.saturating_add(EVENT_ID_LEN) > self.buf.len() - FRAME_OVERHEAD
        {
            return Err(EncodeError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        if self.header.kind == FrameKind::Heartbeat.to_byte() {
            return Err(EncodeError::HeartbeatWithRecords);
        }
        if self.count == u16::MAX {
            return Err(EncodeError::TooManyRecords);
        }
        let found = self.find(event);
        let needed = record + if found.is_some() { 0 } else { EVENT_ID_LEN };
        let left = self.remaining();
        if needed > left {
            return Err(EncodeError::FrameFull { needed, left });
        }
        let index = match found {
            Some(index) => index,
            None => {
                // At most one id per record, and records are at most u16::MAX.
                let index = u16::try_from(self.events).unwrap_or(u16::MAX);
                let at = self.table_slot(self.events);
                self.buf[at..at + EVENT_ID_LEN].copy_from_slice(event.as_bytes());
                self.slots[Self::slot_of(event)] = index + 1;
                self.events += 1;
                index
            }
        };
        let header = RecordHeader {
            // At most `max_payload`, which fits 16 bits.
            payload_len: U16::new(u16::try_from(payload.len()).unwrap_or(u16::MAX)),
            event: U16::new(index),
        };
        let bytes = &mut self.buf[self.len..self.len + record];
        let (head, body) = bytes.split_at_mut(RECORD_HEADER_LEN);
        head.copy_from_slice(header.as_bytes());
        body.copy_from_slice(payload);
        self.len += record;
        self.count += 1;
        Ok(())
    }

    /// Completes the frame: appends the event table behind the records, sets the counts and
    /// body length, sets the key id to `keyring`'s signing key, appends the HMAC-SHA256 tag,
    /// and returns the frame's bytes.
    pub fn finish(mut self, keyring: &impl FrameSigner) -> &'b [u8] {
        let end = self.lay_out(keyring);
        let buf = self.buf;
        buf[..HEADER_LEN].copy_from_slice(self.header.as_bytes());
        let (signed, rest) = buf.split_at_mut(end);
        let tag = keyring.sign(signed);
        rest[..TAG_LEN].copy_from_slice(&tag);
        &buf[..end + TAG_LEN]
    }

    /// Like [`finish`](Self::finish), but a data frame is sealed instead of signed
    /// (`security = "encrypt"`): the [`Flags::SEALED`](super::Flags::SEALED) flag is set, the
    /// body (records and event table) is encrypted with AES-256-GCM under the signing key's
    /// subkey for this sender, the header is authenticated as associated data, and the
    /// trailer holds the 16-byte tag and 16 zero bytes, so the frame keeps its length. Other
    /// kinds are signed as by `finish`.
    pub fn finish_sealed(self, keyring: &impl FrameSigner) -> &'b [u8] {
        self.finish_sealed_keeping(keyring, |_| {})
    }

    /// [`finish_sealed`](Self::finish_sealed), handing `keep` the event table while it is
    /// still plaintext (a sender remembers the ids of the frames it sent).
    pub(crate) fn finish_sealed_keeping(
        mut self,
        keyring: &impl FrameSigner,
        keep: impl FnOnce(&[u8]),
    ) -> &'b [u8] {
        if self.header.kind != FrameKind::Data.to_byte() {
            return self.finish(keyring);
        }
        let sealed = self.header.flags.get() | super::Flags::SEALED.bits();
        self.header.flags = U16::new(sealed);
        let end = self.lay_out(keyring);
        keep(&self.buf[end - EVENT_ID_LEN * self.events..end]);
        let fields = HeaderFields {
            kind: FrameKind::Data,
            flags: super::Flags::EMPTY,
            key_id: self.header.key_id.get(),
            cluster: super::ClusterId::from_raw(self.header.cluster.get()),
            node: self.header.node.get(),
            incarnation: self.header.incarnation.get(),
            sequence: self.header.sequence.get(),
            timestamp_ns: self.header.timestamp_ns.get(),
        };
        let buf = self.buf;
        let (frame, rest) = buf.split_at_mut(end);
        let (header, body) = frame.split_at_mut(HEADER_LEN);
        header.copy_from_slice(self.header.as_bytes());
        let tag = keyring.seal_data(&fields, header, body);
        let (tag_bytes, zeros) = rest[..TAG_LEN].split_at_mut(SEAL_TAG_LEN);
        tag_bytes.copy_from_slice(&tag);
        zeros.fill(0);
        &buf[..end + TAG_LEN]
    }

    /// Moves the event table behind the records and fills in the header's counts, lengths and
    /// key id; returns where the body ends.
    fn lay_out(&mut self, keyring: &impl FrameSigner) -> usize {
        let events = self.events;
        let table = EVENT_ID_LEN * events;
        let waiting = self.buf.len() - TAG_LEN - table;
        // The ids wait last-first below the tag; the frame lists them first-first.
        self.buf.copy_within(waiting..waiting + table, self.len);
        let (listed, _) = self.buf[self.len..self.len + table].as_chunks_mut::<EVENT_ID_LEN>();
        listed.reverse();
        let end = self.len + table;
        self.header.record_count = U16::new(self.count);
        self.header.event_count = U16::new(u16::try_from(events).unwrap_or(u16::MAX));
        // `end <= MAX_FRAME_LEN`, which fits a u32.
        self.header.body_len = U32::new(u32::try_from(end - HEADER_LEN).unwrap_or(u32::MAX));
        self.header.key_id = U32::new(keyring.signing_key_id());
        end
    }
}

/// What a control frame ([`FrameKind::Status`] or [`FrameKind::Evicted`]) says.
#[derive(Clone, Copy, Debug)]
pub struct ControlFrame<'a> {
    /// The node the frame is for.
    pub target_node: u64,
    /// The incarnation of that node it is about.
    pub target_incarnation: u64,
    /// A status's consumed position (0 on an evicted answer).
    pub consumed: u64,
    /// Sequence ranges, ascending and apart, both ends included (at most [`MAX_RANGES`]).
    pub ranges: &'a [(u64, u64)],
    /// Event ids (evicted answers only).
    pub ids: &'a [EventId],
}

/// Writes and signs a control frame into `buf` and returns its bytes. `fields.kind` must be
/// [`FrameKind::Status`] or [`FrameKind::Evicted`].
///
/// # Errors
///
/// [`EncodeError::BadBufferLen`] if the frame does not fit `buf` (or `buf` is not a valid
/// frame buffer), [`EncodeError::TooManyRecords`] for more than [`MAX_RANGES`] ranges or
/// more ids than a table holds.
pub fn write_control<'b>(
    buf: &'b mut [u8],
    fields: &HeaderFields,
    control: &ControlFrame<'_>,
    keyring: &impl FrameSigner,
) -> Result<&'b [u8], EncodeError> {
    if control.ranges.len() > MAX_RANGES || control.ids.len() > usize::from(u16::MAX) {
        return Err(EncodeError::TooManyRecords);
    }
    let body =
        CONTROL_HEADER_LEN + RANGE_LEN * control.ranges.len() + EVENT_ID_LEN * control.ids.len();
    let len = HEADER_LEN + body + TAG_LEN;
    if len > buf.len() || buf.len() > MAX_FRAME_LEN {
        return Err(EncodeError::BadBufferLen(buf.len()));
    }
    let header = FrameHeader::new(
        fields,
        keyring.signing_key_id(),
        (control.ranges.len(), control.ids.len()),
        body,
    );
    let ctrl = ControlHeader {
        target_node: U64::new(control.target_node),
        target_incarnation: U64::new(control.target_incarnation),
        consumed: U64::new(control.consumed),
    };
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(header.as_bytes());
    put(ctrl.as_bytes());
    for &(first, last) in control.ranges {
        put(RangeBytes {
            first: U64::new(first),
            last: U64::new(last),
        }
        .as_bytes());
    }
    for id in control.ids {
        put(id.as_bytes());
    }
    let signed_len = at;
    let (signed, rest) = buf.split_at_mut(signed_len);
    let tag = keyring.sign(signed);
    rest[..TAG_LEN].copy_from_slice(&tag);
    Ok(&buf[..len])
}
