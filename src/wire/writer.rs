//! Encoding: frames written into a buffer the caller owns.

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use super::{
    EncodeError, FRAME_OVERHEAD, FrameHeader, FrameKind, HEADER_LEN, HeaderFields, MAGIC,
    MAX_FRAME_LEN, RECORD_ALIGN, RECORD_HEADER_LEN, RECORD_KIND_EVENT, RecordHeader, TAG_LEN,
    VERSION, max_payload, record_len,
};
use crate::EventId;
use crate::auth::Keyring;

/// Writes one frame into a caller-owned buffer, whose length is the maximum frame length.
/// Never allocates.
///
/// Push records with [`push`](Self::push) (or pre-encoded ones with
/// [`push_encoded`](Self::push_encoded)) until one returns [`EncodeError::FrameFull`], then
/// [`finish`](Self::finish) signs the frame and returns its bytes.
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
/// // 256 - 96 bytes of overhead - 2 x 32-byte records leaves room for no 100-byte payload.
/// assert!(matches!(writer.push(&id, &[0; 100]), Err(EncodeError::FrameFull { .. })));
/// let frame = writer.finish(&keyring);
/// assert_eq!(Frame::parse(frame).unwrap().record_count(), 2);
/// ```
#[derive(Debug)]
pub struct FrameWriter<'b> {
    /// The whole buffer; `buf.len()` is the maximum frame length.
    buf: &'b mut [u8],
    /// Bytes written so far, header included. Invariant: `HEADER_LEN <= len <= buf.len() - TAG_LEN`.
    len: usize,
    count: u16,
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
        let header = FrameHeader {
            magic: MAGIC,
            version: VERSION,
            kind: fields.kind.to_byte(),
            flags: U16::new(fields.flags.bits()),
            key_id: U32::new(fields.key_id),
            record_count: U16::ZERO,
            reserved0: U16::ZERO,
            cluster: U64::new(fields.cluster.raw()),
            node: U64::new(fields.node),
            incarnation: U64::new(fields.incarnation),
            sequence: U64::new(fields.sequence),
            timestamp_ns: U64::new(fields.timestamp_ns),
            body_len: U32::ZERO,
            reserved1: U32::ZERO,
        };
        Ok(Self {
            buf,
            len: HEADER_LEN,
            count: 0,
            header,
        })
    }

    /// Bytes left for records.
    pub fn remaining(&self) -> usize {
        self.buf.len() - TAG_LEN - self.len
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

    /// Length of the frame as it would be finished now, tag included.
    pub fn frame_len(&self) -> usize {
        self.len + TAG_LEN
    }

    fn check_room(&self, needed: usize, records: usize) -> Result<(), EncodeError> {
        if self.header.kind == FrameKind::Heartbeat.to_byte() {
            return Err(EncodeError::HeartbeatWithRecords);
        }
        if usize::from(self.count) + records > usize::from(u16::MAX) {
            return Err(EncodeError::TooManyRecords);
        }
        let left = self.remaining();
        if needed > left {
            return Err(EncodeError::FrameFull { needed, left });
        }
        Ok(())
    }

    /// Appends one event record.
    ///
    /// # Errors
    ///
    /// [`EncodeError::PayloadTooLarge`] if no frame of this size could carry `payload`;
    /// [`EncodeError::FrameFull`] if this one has no room left for it;
    /// [`EncodeError::HeartbeatWithRecords`] on a heartbeat frame;
    /// [`EncodeError::TooManyRecords`] past `u16::MAX` records.
    pub fn push(&mut self, event: &EventId, payload: &[u8]) -> Result<(), EncodeError> {
        let max = self.max_payload();
        let needed = record_len(payload.len()).unwrap_or(usize::MAX);
        // The second test catches frames under 120 bytes, where no record fits at all (and
        // `max` is 0 although an empty payload does not fit either).
        if payload.len() > max || needed > self.buf.len() - FRAME_OVERHEAD {
            return Err(EncodeError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        self.check_room(needed, 1)?;
        let header = RecordHeader {
            event: *event.as_bytes(),
            payload_len: U32::new(u32::try_from(payload.len()).unwrap_or(u32::MAX)),
            kind: RECORD_KIND_EVENT,
            flags: 0,
            reserved: U16::ZERO,
        };
        let record = &mut self.buf[self.len..self.len + needed];
        let (head, rest) = record.split_at_mut(RECORD_HEADER_LEN);
        head.copy_from_slice(header.as_bytes());
        let (body, padding) = rest.split_at_mut(payload.len());
        body.copy_from_slice(payload);
        // The buffer may hold an earlier frame: padding must be written, not assumed zero.
        padding.fill(0);
        self.len += needed;
        self.count += 1;
        Ok(())
    }

    /// Appends `count` records that are already encoded, such as a run read from
    /// [`crate::ringbuf`]. The bytes are copied as they are: they must be well-formed records
    /// (a frame with malformed ones is refused by every receiver).
    ///
    /// # Errors
    ///
    /// [`EncodeError::FrameFull`] if they do not fit; [`EncodeError::HeartbeatWithRecords`]
    /// on a heartbeat; [`EncodeError::TooManyRecords`] past `u16::MAX` records.
    pub fn push_encoded(&mut self, records: &[u8], count: usize) -> Result<(), EncodeError> {
        debug_assert_eq!(
            records.len() % RECORD_ALIGN,
            0,
            "encoded records end on 8 bytes"
        );
        self.check_room(records.len(), count)?;
        self.buf[self.len..self.len + records.len()].copy_from_slice(records);
        self.len += records.len();
        // `check_room` bounded the sum by u16::MAX.
        self.count = u16::try_from(usize::from(self.count) + count).unwrap_or(u16::MAX);
        Ok(())
    }

    /// Completes the frame: sets the record count and body length, sets the key id to
    /// `keyring`'s signing key, appends the HMAC-SHA256 tag, and returns the frame's bytes.
    pub fn finish(mut self, keyring: &Keyring) -> &'b [u8] {
        self.header.record_count = U16::new(self.count);
        // `len <= MAX_FRAME_LEN`, which fits a u32.
        self.header.body_len = U32::new(u32::try_from(self.len - HEADER_LEN).unwrap_or(u32::MAX));
        self.header.key_id = U32::new(keyring.signing_key_id());
        let buf = self.buf;
        buf[..HEADER_LEN].copy_from_slice(self.header.as_bytes());
        let (signed, rest) = buf.split_at_mut(self.len);
        let tag = keyring.sign(signed);
        rest[..TAG_LEN].copy_from_slice(&tag);
        &buf[..self.len + TAG_LEN]
    }
}
