//! Parsing: the one checked entry point for bytes from the network.

use bytes::Bytes;
use zerocopy::FromBytes;

use super::{
    ClusterId, Control, EVENT_ID_LEN, FRAME_OVERHEAD, Flags, FrameHeader, FrameKind, HEADER_LEN,
    HeaderFields, MAGIC, MAX_FRAME_LEN, ParseError, RECORD_HEADER_LEN, RecordHeader, TAG_LEN,
    VERSION,
};
use crate::EventId;

/// A frame whose every field and length has been checked, borrowed from the bytes it was
/// parsed from. Not yet authenticated: see [`crate::auth::Keyring::verify`].
///
/// ```
/// use herald::wire::{Frame, ParseError};
/// assert_eq!(Frame::parse(b"HRLD").unwrap_err(), ParseError::Truncated { len: 4 });
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    header: &'a FrameHeader,
    body: &'a [u8],
    /// The body's records, without the event table.
    records: &'a [u8],
    /// The event table: `event_count` ids of 16 bytes.
    events: &'a [u8],
    /// A control frame's header and ranges (empty for other kinds).
    control: &'a [u8],
    signed: &'a [u8],
    tag: &'a [u8; TAG_LEN],
    kind: FrameKind,
    flags: Flags,
    /// Sealed and not opened: the body is ciphertext, so no records or events are shown.
    sealed: bool,
}

impl<'a> Frame<'a> {
    /// Checks `bytes` as one whole frame.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] naming the first check that failed: length, magic, version, kind, flag
    /// and reserved bits, body length, event table and record counts, each record's length
    /// and event index, and trailing bytes. The tag is not checked here.
    ///
    /// A frame with the [`Flags::SEALED`] flag is checked for its lengths only (event table
    /// and record headers fit the body, the trailer's last 16 bytes are zero): its body is
    /// ciphertext until [`crate::auth::Keyring::open`] opens it, and until then it shows no
    /// records and no events.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_checked(bytes, false)
    }

    /// Like [`parse`](Self::parse); `opened` says that a sealed frame's body is plaintext
    /// now, to be checked in full.
    pub(crate) fn parse_checked(bytes: &'a [u8], opened: bool) -> Result<Self, ParseError> {
        let len = bytes.len();
        if len > MAX_FRAME_LEN {
            return Err(ParseError::Oversized { len });
        }
        let truncated = ParseError::Truncated { len };
        if len < FRAME_OVERHEAD {
            return Err(truncated);
        }
        let (signed, tag) = bytes.split_at_checked(len - TAG_LEN).ok_or(truncated)?;
        let tag = <&[u8; TAG_LEN]>::try_from(tag).map_err(|_| truncated)?;
        let (header, body) = FrameHeader::ref_from_prefix(signed).map_err(|_| truncated)?;

        if header.magic != MAGIC {
            return Err(ParseError::BadMagic);
        }
        if header.version != VERSION {
            return Err(ParseError::UnsupportedVersion(header.version));
        }
        let kind = FrameKind::from_byte(header.kind).ok_or(ParseError::UnknownKind(header.kind))?;
        let flags = Flags::from_bits(header.flags.get())
            .ok_or(ParseError::UnknownFlags(header.flags.get()))?;
        let is_sealed = flags.contains(Flags::SEALED);
        if is_sealed && kind != FrameKind::Data {
            return Err(ParseError::UnknownFlags(header.flags.get()));
        }
        if is_sealed && tag[super::SEAL_TAG_LEN..].iter().any(|&b| b != 0) {
            return Err(ParseError::ReservedSet);
        }
        let sealed = is_sealed && !opened;
        if header.reserved1.get() != 0 {
            return Err(ParseError::ReservedSet);
        }
        let claimed = header.body_len.get();
        if usize::try_from(claimed).ok() != Some(body.len()) {
            return Err(ParseError::LengthMismatch {
                claimed,
                actual: body.len(),
            });
        }
        let count = header.record_count.get();
        let event_count = header.event_count.get();
        if kind == FrameKind::Heartbeat && (count != 0 || event_count != 0 || !body.is_empty()) {
            return Err(ParseError::HeartbeatWithRecords);
        }
        if kind == FrameKind::Membership {
            super::gossip::parse_gossip(body, count, event_count)?;
            return Ok(Self {
                header,
                body,
                records: &[],
                events: &[],
                control: &[],
                signed,
                tag,
                kind,
                flags,
                sealed: false,
            });
        }
        if matches!(kind, FrameKind::Status | FrameKind::Evicted) {
            let (control, events) = super::control::parse_control(body, kind, count, event_count)?;
            return Ok(Self {
                header,
                body,
                records: &[],
                events,
                control,
                signed,
                tag,
                kind,
                flags,
                sealed: false,
            });
        }
        // Both checked before walking, so huge counts cost nothing. They are u16s, so the
        // products cannot overflow.
        let (records, events) = body
            .len()
            .checked_sub(usize::from(event_count) * EVENT_ID_LEN)
            .map(|at| body.split_at(at))
            .ok_or(ParseError::TooManyEvents(event_count))?;
        if usize::from(count) * RECORD_HEADER_LEN > records.len() {
            return Err(ParseError::TooManyRecords(count));
        }
        if sealed {
            return Ok(Self {
                header,
                body,
                records: &[],
                events: &[],
                control: &[],
                signed,
                tag,
                kind,
                flags,
                sealed,
            });
        }
        validate_records(records, count, event_count)?;

        Ok(Self {
            header,
            body,
            records,
            events,
            control: &[],
            signed,
            tag,
            kind,
            flags,
            sealed,
        })
    }

    /// The frame kind.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// Whether the frame is sealed and not opened: its body is ciphertext, and it shows no
    /// records and no events.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// The flag bits.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// The id of the key that signed the frame (as the frame claims).
    pub fn key_id(&self) -> u32 {
        self.header.key_id.get()
    }

    /// The sender's cluster.
    pub fn cluster(&self) -> ClusterId {
        ClusterId::from_raw(self.header.cluster.get())
    }

    /// The sender's node id.
    pub fn node(&self) -> u64 {
        self.header.node.get()
    }

    /// The sender's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.header.incarnation.get()
    }

    /// The sequence number (for a heartbeat: the last data sequence sent).
    pub fn sequence(&self) -> u64 {
        self.header.sequence.get()
    }

    /// The sender's timestamp, in nanoseconds since the Unix epoch.
    pub fn timestamp_ns(&self) -> u64 {
        self.header.timestamp_ns.get()
    }

    /// The number of records (of a control frame: of ranges).
    pub fn record_count(&self) -> u16 {
        self.header.record_count.get()
    }

    /// The body of a status or evicted frame; `None` for other kinds.
    pub fn control(&self) -> Option<Control<'a>> {
        if self.control.is_empty() {
            return None;
        }
        super::control::view(self.control)
    }

    /// The number of ids in the event table.
    pub fn event_count(&self) -> u16 {
        self.header.event_count.get()
    }

    /// The body of a membership frame; `None` for other kinds.
    pub fn membership(&self) -> Option<super::Gossip<'a>> {
        if self.kind != FrameKind::Membership {
            return None;
        }
        super::gossip::view(self.body)
    }

    /// The event table: the ids the records name, in index order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = EventId> + 'a {
        self.events.chunks_exact(EVENT_ID_LEN).map(event_id)
    }

    /// All header values.
    pub fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            kind: self.kind,
            flags: self.flags,
            key_id: self.key_id(),
            cluster: self.cluster(),
            node: self.node(),
            incarnation: self.incarnation(),
            sequence: self.sequence(),
            timestamp_ns: self.timestamp_ns(),
        }
    }

    /// The records, in order, borrowing their payloads from the frame.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.records,
            events: self.events,
            // A control frame's count is of ranges, not records; a sealed one shows none.
            remaining: if self.kind == FrameKind::Data && !self.sealed {
                self.record_count()
            } else {
                0
            },
            offset: HEADER_LEN,
        }
    }

    /// The bytes the tag covers: header and records.
    pub fn signed_bytes(&self) -> &'a [u8] {
        self.signed
    }

    /// The tag.
    pub fn tag(&self) -> &'a [u8; TAG_LEN] {
        self.tag
    }

    /// The body: the encoded records, then the event table; without header or tag.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// The raw event table of a frame this node wrote (empty if the bytes are not a frame): the
/// sender keeps it when it lets the frame itself go.
pub fn event_table(frame: &[u8]) -> &[u8] {
    let Ok((header, _)) = FrameHeader::ref_from_prefix(frame) else {
        return &[];
    };
    let end = frame.len().saturating_sub(TAG_LEN);
    let start = end.saturating_sub(usize::from(header.event_count.get()) * EVENT_ID_LEN);
    frame.get(start.max(HEADER_LEN)..end).unwrap_or_default()
}

/// An event id from 16 bytes of the table (`chunks_exact` and the checked parse make every
/// chunk 16 bytes; anything else would read as the zero id rather than panic).
#[inline]
fn event_id(bytes: &[u8]) -> EventId {
    EventId::from_bytes(<[u8; EVENT_ID_LEN]>::try_from(bytes).unwrap_or_default())
}

/// Walks every record the header counts. Runs once, in [`Frame::parse`]; the iterators rely on
/// it and only repeat cheap, non-panicking bounds checks.
fn validate_records(records: &[u8], count: u16, event_count: u16) -> Result<(), ParseError> {
    let mut rest = records;
    for _ in 0..count {
        let (header, after) =
            RecordHeader::ref_from_prefix(rest).map_err(|_| ParseError::RecordTruncated)?;
        if header.event.get() >= event_count {
            return Err(ParseError::BadEventIndex {
                index: header.event.get(),
                count: event_count,
            });
        }
        let (_, next) = after
            .split_at_checked(usize::from(header.payload_len.get()))
            .ok_or(ParseError::RecordTruncated)?;
        rest = next;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(ParseError::TrailingBytes)
    }
}

/// One record of a parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    event: EventId,
    payload: &'a [u8],
    payload_offset: usize,
}

impl<'a> Record<'a> {
    /// The event id.
    pub fn event(&self) -> EventId {
        self.event
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Where the payload starts, in bytes from the start of the frame.
    pub fn payload_offset(&self) -> usize {
        self.payload_offset
    }
}

/// Iterator over the records of a [`Frame`].
#[derive(Clone, Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
    /// The frame's event table.
    events: &'a [u8],
    remaining: u16,
    /// Offset of `rest` from the start of the frame.
    offset: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        // Every step was validated by `Frame::parse`; the checks below only keep the
        // iterator panic-free should that ever be wrong, ending it instead.
        self.remaining = self.remaining.checked_sub(1)?;
        let (header, after) = RecordHeader::ref_from_prefix(self.rest).ok()?;
        let len = usize::from(header.payload_len.get());
        let (payload, next) = after.split_at_checked(len)?;
        let at = header.event_index() * EVENT_ID_LEN;
        let record = Record {
            event: event_id(self.events.get(at..at + EVENT_ID_LEN)?),
            payload,
            payload_offset: self.offset + RECORD_HEADER_LEN,
        };
        self.offset += RECORD_HEADER_LEN + len;
        self.rest = next;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Records<'_> {}

/// A checked frame that owns its bytes, whose records hand out payloads as [`Bytes`] slices of
/// the received buffer, without copying.
///
/// ```
/// # use herald::auth::{Key, Keyring};
/// # use herald::wire::{ClusterId, FrameKind, FrameWriter, HeaderFields, Flags, SharedFrame};
/// # use herald::EventId;
/// # let keyring = Keyring::new(1, Key::from_bytes([7; 32])).unwrap();
/// # let fields = HeaderFields { kind: FrameKind::Data, flags: Flags::EMPTY, key_id: 1,
/// #     cluster: ClusterId::from_name("c"), node: 1, incarnation: 2, sequence: 1, timestamp_ns: 0 };
/// # let mut buf = vec![0u8; 1472];
/// # let mut w = FrameWriter::new(&mut buf, &fields).unwrap();
/// # w.push(&EventId::from_name("e"), b"payload").unwrap();
/// # let n = w.finish(&keyring).len();
/// # buf.truncate(n);
/// let received = bytes::Bytes::from(buf);
/// let frame = SharedFrame::parse(received.clone()).unwrap();
/// let record = frame.records().next().unwrap();
/// assert_eq!(&record.payload[..], b"payload");
/// // The payload points into the received buffer: no copy was made.
/// assert!(received.as_ptr_range().contains(&record.payload.as_ptr()));
/// ```
#[derive(Clone, Debug)]
pub struct SharedFrame {
    bytes: Bytes,
    fields: HeaderFields,
    record_count: u16,
    event_count: u16,
    sealed: bool,
}

impl SharedFrame {
    /// Checks `bytes` as one whole frame, like [`Frame::parse`], and keeps them.
    ///
    /// # Errors
    ///
    /// As [`Frame::parse`].
    pub fn parse(bytes: Bytes) -> Result<Self, ParseError> {
        Self::parse_checked(bytes, false)
    }

    /// A sealed frame's opened bytes (plaintext body), checked in full.
    pub(crate) fn parse_opened(bytes: Bytes) -> Result<Self, ParseError> {
        Self::parse_checked(bytes, true)
    }

    fn parse_checked(bytes: Bytes, opened: bool) -> Result<Self, ParseError> {
        let frame = Frame::parse_checked(&bytes, opened)?;
        let fields = frame.header_fields();
        let record_count = u16::try_from(frame.records().len()).unwrap_or(0);
        let sealed = frame.is_sealed();
        let event_count = if sealed { 0 } else { frame.event_count() };
        Ok(Self {
            bytes,
            fields,
            record_count,
            event_count,
            sealed,
        })
    }

    /// Whether the frame is sealed and not opened (see [`Frame::is_sealed`]).
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// The header values.
    pub fn header_fields(&self) -> &HeaderFields {
        &self.fields
    }

    /// The number of records.
    pub fn record_count(&self) -> u16 {
        self.record_count
    }

    /// The body of a status or evicted frame; `None` for other kinds.
    pub fn control(&self) -> Option<Control<'_>> {
        Frame::parse(&self.bytes).ok()?.control()
    }

    /// The body of a membership frame; `None` for other kinds.
    pub fn membership(&self) -> Option<super::Gossip<'_>> {
        Frame::parse(&self.bytes).ok()?.membership()
    }

    /// The event table (of an evicted answer: the ids of the events it gives up on).
    pub fn events(&self) -> impl Iterator<Item = EventId> + '_ {
        let end = self.bytes.len().saturating_sub(TAG_LEN);
        let table = usize::from(self.event_count) * EVENT_ID_LEN;
        let start = end.saturating_sub(table);
        self.bytes
            .get(start..end)
            .unwrap_or_default()
            .chunks_exact(EVENT_ID_LEN)
            .map(event_id)
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The bytes the tag covers.
    pub fn signed_bytes(&self) -> &[u8] {
        let end = self.bytes.len().saturating_sub(TAG_LEN);
        self.bytes.get(..end).unwrap_or_default()
    }

    /// The tag.
    pub fn tag(&self) -> &[u8] {
        let start = self.bytes.len().saturating_sub(TAG_LEN);
        self.bytes.get(start..).unwrap_or_default()
    }

    /// The records, in order, each payload a [`Bytes`] slice of the frame.
    pub fn records(&self) -> SharedRecords<'_> {
        SharedRecords {
            bytes: &self.bytes,
            inner: self.borrowed_records(),
        }
    }

    /// The records, in order, borrowing their payloads from the frame: no reference count
    /// changes hands per record. [`Record::payload_offset`] and [`as_bytes`](Self::as_bytes)
    /// make a [`Bytes`] of one when it is wanted.
    pub fn borrowed_records(&self) -> Records<'_> {
        let end = self.bytes.len().saturating_sub(TAG_LEN);
        let body = self.bytes.get(HEADER_LEN..end).unwrap_or_default();
        let table = usize::from(self.event_count) * EVENT_ID_LEN;
        let (rest, events) = body.split_at(body.len().saturating_sub(table));
        Records {
            rest,
            events,
            remaining: self.record_count,
            offset: HEADER_LEN,
        }
    }
}

/// One record of a [`SharedFrame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRecord {
    /// The event id.
    pub event: EventId,
    /// The payload: a slice of the received buffer.
    pub payload: Bytes,
}

/// Iterator over the records of a [`SharedFrame`].
#[derive(Clone, Debug)]
pub struct SharedRecords<'a> {
    bytes: &'a Bytes,
    inner: Records<'a>,
}

impl Iterator for SharedRecords<'_> {
    type Item = SharedRecord;

    fn next(&mut self) -> Option<SharedRecord> {
        let record = self.inner.next()?;
        let start = record.payload_offset;
        let end = start + record.payload.len();
        // `Records` only yields payloads that lie inside `bytes`, at the offset it reports.
        debug_assert!(end <= self.bytes.len());
        if end > self.bytes.len() {
            return None;
        }
        Some(SharedRecord {
            event: record.event,
            payload: self.bytes.slice(start..end),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for SharedRecords<'_> {}
