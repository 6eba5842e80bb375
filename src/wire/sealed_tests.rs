//! Sealed frames at the wire level: what parse checks before opening, and what open checks
//! after.

use bytes::Bytes;
use zerocopy::IntoBytes;
use zerocopy::little_endian::U16;

use super::*;
use crate::EventId;
use crate::auth::{Key, Keyring, OpenError, VerifyError};

fn keyring() -> Keyring {
    Keyring::new(1, Key::from_bytes([0x42; 32])).unwrap()
}

fn fields(kind: FrameKind) -> HeaderFields {
    HeaderFields {
        kind,
        flags: Flags::EMPTY,
        key_id: 1,
        cluster: ClusterId::from_name("test"),
        node: 7,
        incarnation: 0x1122_3344_5566_7788,
        sequence: 3,
        timestamp_ns: 1_000,
    }
}

fn sealed(keyring: &Keyring, payloads: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
    for (i, p) in payloads.iter().enumerate() {
        w.push(&EventId::from_name(&format!("e{i}")), p).unwrap();
    }
    let n = w.finish_sealed(keyring).len();
    buf.truncate(n);
    buf
}

/// Sets header field bytes `at..at + value.len()`.
fn patch(frame: &mut [u8], at: usize, value: &[u8]) {
    frame[at..at + value.len()].copy_from_slice(value);
}

#[test]
fn a_sealed_frame_parses_without_records_until_opened() {
    let keyring = keyring();
    let bytes = sealed(&keyring, &[b"alpha", b"beta"]);
    let frame = Frame::parse(&bytes).unwrap();
    assert!(frame.is_sealed() && frame.flags().contains(Flags::SEALED));
    assert_eq!(frame.records().count(), 0);
    assert_eq!(frame.events().count(), 0);
    assert_eq!(frame.record_count(), 2, "the header's counts are in clear");
    let shared = SharedFrame::parse(Bytes::from(bytes)).unwrap();
    assert_eq!(shared.records().count(), 0);
    assert!(matches!(
        keyring.verify(shared.clone()),
        Err(VerifyError::ModeMismatch { sealed: true })
    ));
    let opened = keyring.open(&shared).unwrap().into_frame();
    assert!(!opened.is_sealed());
    let payloads: Vec<_> = opened.records().map(|r| r.payload).collect();
    assert_eq!(payloads, [&b"alpha"[..], b"beta"]);
    assert_eq!(opened.events().count(), 2);
    // The received bytes were not touched: they are still ciphertext.
    assert!(shared.as_bytes().windows(5).all(|w| w != b"alpha"));
}

#[test]
fn parse_checks_a_sealed_frames_lengths_and_trailer() {
    let bytes = sealed(&keyring(), &[b"alpha"]);
    // Event table longer than the body.
    let mut f = bytes.clone();
    patch(&mut f, 14, U16::new(500).as_bytes());
    assert_eq!(
        Frame::parse(&f).unwrap_err(),
        ParseError::TooManyEvents(500)
    );
    // More record headers than the records' bytes hold.
    let mut f = bytes.clone();
    patch(&mut f, 12, U16::new(300).as_bytes());
    assert_eq!(
        Frame::parse(&f).unwrap_err(),
        ParseError::TooManyRecords(300)
    );
    // The trailer's second half must be zero.
    let mut f = bytes.clone();
    let last = f.len() - 1;
    f[last] = 1;
    assert_eq!(Frame::parse(&f).unwrap_err(), ParseError::ReservedSet);
    // Body length still checked.
    let mut f = bytes.clone();
    f.push(0);
    assert!(matches!(
        Frame::parse(&f).unwrap_err(),
        ParseError::LengthMismatch { .. }
    ));
}

#[test]
fn only_data_frames_may_be_sealed() {
    let keyring = keyring();
    let mut buf = vec![0u8; 256];
    let mut hb = fields(FrameKind::Heartbeat);
    hb.flags = Flags::SEALED;
    let n = FrameWriter::new(&mut buf, &hb)
        .unwrap()
        .finish(&keyring)
        .len();
    assert_eq!(
        Frame::parse(&buf[..n]).unwrap_err(),
        ParseError::UnknownFlags(Flags::SEALED.bits())
    );
    // finish_sealed signs a heartbeat instead of sealing it.
    let n = FrameWriter::new(&mut buf, &fields(FrameKind::Heartbeat))
        .unwrap()
        .finish_sealed(&keyring)
        .len();
    let frame = Frame::parse(&buf[..n]).unwrap();
    assert!(!frame.flags().contains(Flags::SEALED));
    keyring.verify(frame).unwrap();
}

#[test]
fn plaintext_records_are_checked_after_opening() {
    // A holder of the key seals records that do not hold together: open refuses them with
    // the reason a signed frame would get.
    let keyring = keyring();
    let mut frame = sealed(&keyring, &[b"alpha"]);
    let body_end = frame.len() - TAG_LEN;
    let shared = SharedFrame::parse(Bytes::from(frame.clone())).unwrap();
    let opened = keyring.open(&shared).unwrap().into_frame();
    // The plaintext, with the record claiming a 1000-byte payload, sealed again.
    frame[HEADER_LEN..body_end].copy_from_slice(&opened.as_bytes()[HEADER_LEN..body_end]);
    patch(&mut frame, HEADER_LEN, U16::new(1000).as_bytes());
    let (head, rest) = frame.split_at_mut(HEADER_LEN);
    let tag = keyring.seal_data(
        &fields(FrameKind::Data),
        head,
        &mut rest[..body_end - HEADER_LEN],
    );
    frame[body_end..body_end + SEAL_TAG_LEN].copy_from_slice(&tag);
    let shared = SharedFrame::parse(Bytes::from(frame)).unwrap();
    assert_eq!(
        keyring.open(&shared).unwrap_err(),
        OpenError::Parse(ParseError::RecordTruncated)
    );
}

#[test]
fn open_follows_key_rotation_and_refuses_other_keys() {
    let mut old = keyring();
    old.add(2, Key::from_bytes([0x77; 32])).unwrap();
    let mut new = old.clone();
    new.set_signing(2).unwrap();
    let frame = SharedFrame::parse(Bytes::from(sealed(&new, &[b"x"]))).unwrap();
    assert_eq!(frame.header_fields().key_id, 2);
    old.open(&frame).unwrap();
    old.remove(2).unwrap();
    assert_eq!(
        old.open(&frame).unwrap_err(),
        OpenError::Verify(VerifyError::UnknownKey(2))
    );
    // Key id 2 again, another secret: the retired key's subkeys are not used.
    old.add(2, Key::from_bytes([0x78; 32])).unwrap();
    assert_eq!(
        old.open(&frame).unwrap_err(),
        OpenError::Verify(VerifyError::BadTag)
    );
    let signed = SharedFrame::parse(Bytes::from({
        let mut buf = vec![0u8; 256];
        let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
        w.push(&EventId::from_name("e"), b"x").unwrap();
        let n = w.finish(&new).len();
        buf.truncate(n);
        buf
    }))
    .unwrap();
    assert_eq!(
        new.open(&signed).unwrap_err(),
        OpenError::Verify(VerifyError::ModeMismatch { sealed: false })
    );
}
