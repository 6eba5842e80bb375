//! The frames an endpoint writes of its own: data frames (from a caller's events or straight
//! from the ring) and heartbeats, each signed or sealed, with the OVERFLOWED flag while the
//! ring has refused events.

use std::time::Instant;

use super::{Endpoint, Now};
use crate::auth::Security;
use crate::event::EventId;
use crate::ringbuf::Consumer;
use crate::wire::{EncodeError, Flags, FrameKind, FrameWriter, HeaderFields};

impl Endpoint {
    /// Tells the endpoint that the ring refused events (it was full). The next frames, data
    /// or heartbeat, carry the OVERFLOWED flag for a heartbeat interval, so peers raise
    /// [`Missed`](crate::Missed) even if some of those frames are lost.
    pub fn note_overflow(&mut self, now: Instant) {
        self.stats.overflows += 1;
        self.overflow_until = Some(now + self.config.heartbeat_interval);
    }

    pub(super) fn flags(&mut self, now: Instant) -> Flags {
        match self.overflow_until {
            Some(until) if now <= until => Flags::OVERFLOWED,
            Some(_) => {
                // Carry the flag on one more frame after the interval, then drop it.
                self.overflow_until = None;
                Flags::OVERFLOWED
            }
            None => Flags::EMPTY,
        }
    }

    pub(super) fn fields(
        &mut self,
        now: Now,
        kind: FrameKind,
        sequence: u64,
        extra: Flags,
    ) -> HeaderFields {
        HeaderFields {
            kind,
            flags: self.flags(now.instant).union(extra),
            key_id: self.keyring.signing_key_id(),
            cluster: self.config.cluster,
            node: self.config.node,
            incarnation: self.config.incarnation,
            sequence,
            timestamp_ns: now.unix_ns,
        }
    }

    /// Encodes and signs a data frame into `buf` holding `events` (event id and payload each)
    /// and returns its length. The frame takes the next sequence number only if it is
    /// encoded.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if `buf` cannot hold the events, or there are none.
    pub fn encode_data<'p>(
        &mut self,
        now: Now,
        buf: &mut [u8],
        events: impl IntoIterator<Item = (EventId, &'p [u8])>,
    ) -> Result<usize, EncodeError> {
        let fields = self.fields(now, FrameKind::Data, self.last_seq + 1, Flags::EMPTY);
        let mut writer = FrameWriter::new(buf, &fields)?;
        for (event, payload) in events {
            writer.push(&event, payload)?;
        }
        if writer.is_empty() {
            return Err(EncodeError::Empty);
        }
        Ok(self.finish_data(now, writer))
    }

    pub(super) fn finish_data(&mut self, now: Now, writer: FrameWriter<'_>) -> usize {
        self.stats.events_sent += u64::from(writer.record_count());
        // A frame kept for recovery is resent as it is: sealed once, so each nonce once.
        let mut table = std::mem::take(&mut self.table);
        table.clear();
        let frame = match self.config.security {
            Security::Sign => {
                let frame = writer.finish(&self.keyring);
                table.extend_from_slice(crate::wire::event_table(frame));
                frame
            }
            Security::Encrypt => {
                writer.finish_sealed_keeping(&self.keyring, |ids| table.extend_from_slice(ids))
            }
        };
        let len = frame.len();
        if self.recovery.enabled {
            self.outbound.keep(self.last_seq + 1, frame, &table);
        }
        self.table = table;
        self.last_seq += 1;
        self.last_sent = Some(now.instant);
        self.stats.frames_sent += 1;
        len
    }

    /// Reads runs of records from `ring` as long as the next one fits a frame of `buf.len()`
    /// bytes, encodes and signs them into `buf` as one data frame, frees the runs, and
    /// returns the frame's length; `None` when the ring holds no committed record.
    ///
    /// The driver calls it until it returns `None`: that is the smart batching, frames as full
    /// as the ring allows and no waiting for more.
    #[must_use]
    pub fn encode_from_ring(
        &mut self,
        now: Now,
        ring: &mut Consumer,
        buf: &mut [u8],
    ) -> Option<usize> {
        if !self.window_open() {
            if !self.stalled {
                self.stalled = true;
                self.stats.window_stalls += 1;
            }
            return None;
        }
        self.stalled = false;
        let fields = self.fields(now, FrameKind::Data, self.last_seq + 1, Flags::EMPTY);
        let mut writer = FrameWriter::new(buf, &fields).ok()?;
        // A run of ring records is never longer in a frame (a 24-byte ring header becomes a
        // 4-byte record header plus at most one 16-byte id in the table), so a run of at most
        // `remaining` ring bytes always fits what is left of the frame.
        while let Some(run) = ring.read(writer.remaining()) {
            for (event, payload) in run.records() {
                let pushed = writer.push(&event, payload);
                // Fits by construction; a failure would be a bug. The run is released
                // anyway, since the records before it are in the frame already.
                debug_assert!(pushed.is_ok(), "record did not fit: {pushed:?}");
            }
            run.release();
        }
        if writer.is_empty() {
            return None;
        }
        Some(self.finish_data(now, writer))
    }

    /// Encodes a heartbeat into `buf` if one is due (nothing sent for a heartbeat interval),
    /// and returns its length.
    #[must_use]
    pub fn poll_heartbeat(&mut self, now: Now, buf: &mut [u8]) -> Option<usize> {
        if now.instant < self.next_heartbeat() {
            return None;
        }
        self.encode_heartbeat(now, buf, Flags::EMPTY)
    }

    /// Encodes the last heartbeat of a clean shutdown: every data frame is accounted for, so
    /// peers report nothing when this node goes quiet or restarts.
    #[must_use]
    pub fn encode_closing(&mut self, now: Now, buf: &mut [u8]) -> Option<usize> {
        self.encode_heartbeat(now, buf, Flags::CLOSING)
    }

    pub(super) fn encode_heartbeat(
        &mut self,
        now: Now,
        buf: &mut [u8],
        extra: Flags,
    ) -> Option<usize> {
        let fields = self.fields(now, FrameKind::Heartbeat, self.last_seq, extra);
        let writer = FrameWriter::new(buf, &fields).ok()?;
        let len = writer.finish(&self.keyring).len();
        self.last_sent = Some(now.instant);
        self.stats.heartbeats_sent += 1;
        Some(len)
    }
}
