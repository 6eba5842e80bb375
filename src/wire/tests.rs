//! Unit tests of the wire format: a test per refusal reason, round trips, and the example
//! frame of docs/wire-format.md.

use proptest::prelude::*;
use zerocopy::FromBytes;
use zerocopy::little_endian::{U16, U32};

use super::*;
use crate::EventId;
use crate::auth::{Key, Keyring};

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

/// A signed data frame holding `events`.
fn encode(events: &[(EventId, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
    for (id, payload) in events {
        w.push(id, payload).unwrap();
    }
    let n = w.finish(&keyring()).len();
    buf.truncate(n);
    buf
}

fn sample() -> Vec<u8> {
    encode(&[
        (EventId::from_name("a"), b"hello"),
        (EventId::from_name("b"), b""),
    ])
}

/// Applies `edit` to the header of `frame`.
fn edit_header(frame: &mut [u8], edit: impl FnOnce(&mut FrameHeader)) {
    let (header, _) = FrameHeader::mut_from_prefix(frame).unwrap();
    edit(header);
}

/// Applies `edit` to the first record header of `frame`.
fn edit_record(frame: &mut [u8], edit: impl FnOnce(&mut RecordHeader)) {
    let (record, _) = RecordHeader::mut_from_prefix(&mut frame[HEADER_LEN..]).unwrap();
    edit(record);
}

fn parse_err(frame: &[u8]) -> ParseError {
    Frame::parse(frame).unwrap_err()
}

#[test]
fn round_trip() {
    let frame = sample();
    let parsed = Frame::parse(&frame).unwrap();
    assert_eq!(parsed.header_fields(), fields(FrameKind::Data));
    let records: Vec<_> = parsed
        .records()
        .map(|r| (r.event(), r.payload().to_vec()))
        .collect();
    assert_eq!(
        records,
        [
            (EventId::from_name("a"), b"hello".to_vec()),
            (EventId::from_name("b"), vec![])
        ]
    );
    assert_eq!(parsed.records().len(), 2);
    // Two 4-byte headers, "hello", two ids.
    assert_eq!(frame.len(), FRAME_OVERHEAD + 2 * 4 + 5 + 2 * 16);
}

#[test]
fn heartbeat_round_trip() {
    let mut buf = [0u8; 200];
    let w = FrameWriter::new(&mut buf, &fields(FrameKind::Heartbeat)).unwrap();
    let frame = w.finish(&keyring());
    assert_eq!(frame.len(), FRAME_OVERHEAD);
    let parsed = Frame::parse(frame).unwrap();
    assert_eq!(parsed.kind(), FrameKind::Heartbeat);
    assert_eq!(parsed.records().count(), 0);
}

#[test]
fn refuses_truncated() {
    assert_eq!(parse_err(&[]), ParseError::Truncated { len: 0 });
    assert_eq!(
        parse_err(&[0; FRAME_OVERHEAD - 1]),
        ParseError::Truncated { len: 95 }
    );
}

#[test]
fn refuses_every_truncation_and_extension() {
    let frame = sample();
    for cut in 0..frame.len() {
        let err = parse_err(&frame[..cut]);
        assert!(
            matches!(
                err,
                ParseError::Truncated { .. } | ParseError::LengthMismatch { .. }
            ),
            "prefix of {cut} bytes gave {err:?}"
        );
    }
    let mut longer = frame.clone();
    longer.push(0);
    assert!(matches!(
        parse_err(&longer),
        ParseError::LengthMismatch { .. }
    ));
    // Two frames in one datagram are refused too, not half-read.
    let two = [frame.clone(), frame].concat();
    assert!(matches!(parse_err(&two), ParseError::LengthMismatch { .. }));
}

#[test]
fn refuses_oversized() {
    let big = vec![0u8; MAX_FRAME_LEN + 1];
    assert_eq!(
        parse_err(&big),
        ParseError::Oversized {
            len: MAX_FRAME_LEN + 1
        }
    );
}

#[test]
fn refuses_bad_magic() {
    let mut f = sample();
    f[0] = b'X';
    assert_eq!(parse_err(&f), ParseError::BadMagic);
}

#[test]
fn refuses_unsupported_version() {
    let mut f = sample();
    edit_header(&mut f, |h| h.version = 1);
    assert_eq!(parse_err(&f), ParseError::UnsupportedVersion(1));
    edit_header(&mut f, |h| h.version = 2);
    assert_eq!(parse_err(&f), ParseError::UnsupportedVersion(2));
    edit_header(&mut f, |h| h.version = 4);
    assert_eq!(parse_err(&f), ParseError::UnsupportedVersion(4));
    edit_header(&mut f, |h| h.version = 0);
    assert_eq!(parse_err(&f), ParseError::UnsupportedVersion(0));
}

#[test]
fn refuses_unknown_kind() {
    let mut f = sample();
    for kind in [0, 6, 255] {
        edit_header(&mut f, |h| h.kind = kind);
        assert_eq!(parse_err(&f), ParseError::UnknownKind(kind));
    }
}

#[test]
fn refuses_unknown_flags() {
    let mut f = sample();
    edit_header(&mut f, |h| h.flags = U16::new(0x8000));
    assert_eq!(parse_err(&f), ParseError::UnknownFlags(0x8000));
    edit_header(&mut f, |h| h.flags = U16::new(Flags::OVERFLOWED.bits()));
    assert!(
        Frame::parse(&f)
            .unwrap()
            .flags()
            .contains(Flags::OVERFLOWED)
    );
}

#[test]
fn refuses_reserved_bits() {
    for edit in [
        (|h: &mut FrameHeader| h.reserved1 = U32::new(1 << 31)) as fn(&mut FrameHeader),
        |h| h.reserved1 = U32::new(1),
    ] {
        let mut f = sample();
        edit_header(&mut f, edit);
        assert_eq!(parse_err(&f), ParseError::ReservedSet);
    }
}

#[test]
fn refuses_length_mismatch() {
    let mut f = sample();
    edit_header(&mut f, |h| h.body_len = U32::new(h.body_len.get() + 8));
    assert!(matches!(parse_err(&f), ParseError::LengthMismatch { .. }));
    edit_header(&mut f, |h| h.body_len = U32::new(u32::MAX));
    assert!(matches!(
        parse_err(&f),
        ParseError::LengthMismatch {
            claimed: u32::MAX,
            ..
        }
    ));
}

#[test]
fn refuses_a_body_that_no_record_or_id_accounts_for() {
    // A frame whose body is 4 bytes, with no records and no event table.
    let mut f = vec![0u8; FRAME_OVERHEAD + 4];
    f[..HEADER_LEN].copy_from_slice(&sample()[..HEADER_LEN]);
    edit_header(&mut f, |h| {
        h.body_len = U32::new(4);
        h.record_count = U16::ZERO;
        h.event_count = U16::ZERO;
    });
    assert_eq!(parse_err(&f), ParseError::TrailingBytes);
}

#[test]
fn refuses_too_many_records() {
    let mut f = sample();
    // u16::MAX records would claim 1.5 MiB: refused before any walk or allocation.
    edit_header(&mut f, |h| h.record_count = U16::new(u16::MAX));
    assert_eq!(parse_err(&f), ParseError::TooManyRecords(u16::MAX));
    // A count the record area could hold by size (3 x 4 <= 68) but that the records do not
    // fill.
    let mut f = encode(&[(EventId::from_name("a"), &[7; 64])]);
    edit_header(&mut f, |h| h.record_count = U16::new(3));
    assert_eq!(parse_err(&f), ParseError::RecordTruncated);
}

#[test]
fn refuses_record_past_the_end() {
    // "hello" has 5 bytes; the second record's header follows it, then the event table,
    // which a payload must not run into.
    for len in [u16::MAX, u16::MAX - 6, 1000, 10] {
        let mut f = sample();
        edit_record(&mut f, |r| r.payload_len = U16::new(len));
        assert_eq!(
            parse_err(&f),
            ParseError::RecordTruncated,
            "payload_len {len}"
        );
    }
}

#[test]
fn refuses_trailing_bytes() {
    let mut f = sample();
    edit_header(&mut f, |h| h.record_count = U16::new(1));
    assert_eq!(parse_err(&f), ParseError::TrailingBytes);
}

#[test]
fn refuses_heartbeat_with_records() {
    let mut f = sample();
    edit_header(&mut f, |h| h.kind = FrameKind::Heartbeat.to_byte());
    assert_eq!(parse_err(&f), ParseError::HeartbeatWithRecords);
}

#[test]
fn zero_length_and_max_length_payloads() {
    let mut buf = vec![0u8; 1472];
    let max = max_payload(buf.len());
    let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
    assert_eq!(w.max_payload(), max);
    let payload = vec![0xee; max];
    w.push(&EventId::from_name("big"), &payload).unwrap();
    assert_eq!(
        w.remaining(),
        1472 - FRAME_OVERHEAD - record_len(max).unwrap() - EVENT_ID_LEN
    );
    // Nothing is left: even an empty payload of a new event (4 + 16 bytes) is refused.
    assert!(matches!(
        w.push(&EventId::from_name("x"), b""),
        Err(EncodeError::FrameFull { .. })
    ));
    let frame = w.finish(&keyring());
    let parsed = Frame::parse(frame).unwrap();
    assert_eq!(parsed.records().next().unwrap().payload(), &payload[..]);
}

#[test]
fn writer_refusals() {
    let mut small = [0u8; FRAME_OVERHEAD - 1];
    assert_eq!(
        FrameWriter::new(&mut small, &fields(FrameKind::Data)).unwrap_err(),
        EncodeError::BadBufferLen(95)
    );
    let mut huge = vec![0u8; MAX_FRAME_LEN + 1];
    assert!(FrameWriter::new(&mut huge, &fields(FrameKind::Data)).is_err());

    let mut buf = [0u8; 256];
    let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
    let too_big = vec![0u8; w.max_payload() + 1];
    assert!(matches!(
        w.push(&EventId::default(), &too_big),
        Err(EncodeError::PayloadTooLarge { .. })
    ));
    assert!(w.is_empty(), "a refused push leaves the frame as it was");

    // Under 120 bytes no record fits, not even an empty one: refused as too large (a
    // FrameFull here would make a "start a new frame" loop spin for ever).
    for len in [
        FRAME_OVERHEAD,
        FRAME_OVERHEAD + RECORD_HEADER_LEN + EVENT_ID_LEN - 1,
    ] {
        let mut tiny = vec![0u8; len];
        let mut w = FrameWriter::new(&mut tiny, &fields(FrameKind::Data)).unwrap();
        assert!(matches!(
            w.push(&EventId::default(), b""),
            Err(EncodeError::PayloadTooLarge { .. })
        ));
    }
    let mut exact = [0u8; FRAME_OVERHEAD + RECORD_HEADER_LEN + EVENT_ID_LEN];
    let mut w = FrameWriter::new(&mut exact, &fields(FrameKind::Data)).unwrap();
    w.push(&EventId::default(), b"").unwrap();

    let mut buf = [0u8; 256];
    let mut hb = FrameWriter::new(&mut buf, &fields(FrameKind::Heartbeat)).unwrap();
    assert_eq!(
        hb.push(&EventId::default(), b"x"),
        Err(EncodeError::HeartbeatWithRecords)
    );
}

#[test]
fn a_frame_written_over_stale_bytes_parses() {
    let mut buf = [0xffu8; 512];
    let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
    w.push(&EventId::default(), b"abc").unwrap();
    let frame = w.finish(&keyring()).to_vec();
    Frame::parse(&frame).unwrap();
}

#[test]
fn each_event_id_travels_once_per_frame() {
    let (a, b) = (EventId::from_name("a"), EventId::from_name("b"));
    let f = encode(&[(a, b"1"), (b, b"22"), (a, b"333"), (a, b""), (b, b"4")]);
    let frame = Frame::parse(&f).unwrap();
    assert_eq!(frame.event_count(), 2);
    assert_eq!(frame.events().collect::<Vec<_>>(), [a, b]);
    // Five 4-byte headers, 7 bytes of payload, then two ids.
    assert_eq!(frame.body().len(), 5 * 4 + 7 + 2 * 16);
    let got: Vec<_> = frame
        .records()
        .map(|r| (r.event(), r.payload().to_vec()))
        .collect();
    let want: Vec<(EventId, Vec<u8>)> = vec![
        (a, b"1".to_vec()),
        (b, b"22".to_vec()),
        (a, b"333".to_vec()),
        (a, vec![]),
        (b, b"4".to_vec()),
    ];
    assert_eq!(got, want);
}

#[test]
fn many_events_in_one_frame_come_back_in_order() {
    // More distinct ids than the writer's cache has slots, some colliding in it (a collision
    // may list an id twice; records still name the right one).
    let ids: Vec<EventId> = (0..200u8).map(|i| EventId::from_bytes([i; 16])).collect();
    let mut buf = vec![0u8; 32 << 10];
    let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
    let mut sent = Vec::new();
    for round in 0..3u8 {
        for (i, id) in ids.iter().enumerate() {
            let payload = [round, i as u8];
            w.push(id, &payload).unwrap();
            sent.push((*id, payload.to_vec()));
        }
    }
    let len = w.finish(&keyring()).len();
    let frame = Frame::parse(&buf[..len]).unwrap();
    assert!(frame.event_count() >= 200);
    let got: Vec<_> = frame
        .records()
        .map(|r| (r.event(), r.payload().to_vec()))
        .collect();
    assert_eq!(got, sent);
}

#[test]
fn a_new_event_needs_room_for_its_id() {
    let (a, b) = (EventId::from_name("a"), EventId::from_name("b"));
    // 96 overhead + 5-byte record + 16-byte id for `a`, leaving 5 bytes.
    let mut buf = [0u8; 96 + 21 + 5];
    let mut w = FrameWriter::new(&mut buf, &fields(FrameKind::Data)).unwrap();
    w.push(&a, b"x").unwrap();
    assert_eq!(w.remaining(), 5);
    assert_eq!(
        w.push(&b, b"y"),
        Err(EncodeError::FrameFull {
            needed: 21,
            left: 5
        })
    );
    w.push(&a, b"z").unwrap();
    assert_eq!(w.remaining(), 0);
    let len = w.finish(&keyring()).len();
    assert_eq!(len, buf.len());
    assert_eq!(Frame::parse(&buf).unwrap().record_count(), 2);
}

#[test]
fn refuses_an_event_table_longer_than_the_body() {
    let mut f = sample();
    edit_header(&mut f, |h| h.event_count = U16::new(u16::MAX));
    assert_eq!(parse_err(&f), ParseError::TooManyEvents(u16::MAX));
}

#[test]
fn refuses_a_record_naming_an_event_past_the_table() {
    let mut f = sample();
    edit_record(&mut f, |r| r.event = U16::new(2));
    assert_eq!(
        parse_err(&f),
        ParseError::BadEventIndex { index: 2, count: 2 }
    );
    // Shrinking the table (its bytes then read as a trailing record area) is caught too.
    let mut f = sample();
    edit_header(&mut f, |h| h.event_count = U16::new(0));
    assert!(matches!(
        parse_err(&f),
        ParseError::BadEventIndex { .. } | ParseError::TrailingBytes
    ));
}

#[test]
fn refuses_a_heartbeat_with_an_event_table() {
    let mut buf = [0u8; 256];
    let len = FrameWriter::new(&mut buf, &fields(FrameKind::Heartbeat))
        .unwrap()
        .finish(&keyring())
        .len();
    let mut f = buf[..len].to_vec();
    edit_header(&mut f, |h| h.event_count = U16::new(1));
    assert_eq!(parse_err(&f), ParseError::HeartbeatWithRecords);
}

#[test]
fn shared_frame_slices_without_copying() {
    let bytes = bytes::Bytes::from(sample());
    let frame = SharedFrame::parse(bytes.clone()).unwrap();
    let records: Vec<_> = frame.records().collect();
    assert_eq!(records.len(), 2);
    assert_eq!(&records[0].payload[..], b"hello");
    assert!(bytes.as_ptr_range().contains(&records[0].payload.as_ptr()));
    assert_eq!(frame.signed_bytes(), &bytes[..bytes.len() - TAG_LEN]);
    assert!(SharedFrame::parse(bytes.slice(1..)).is_err());
}

#[test]
fn error_names_are_unique_and_listed() {
    let all = [
        ParseError::Truncated { len: 0 },
        ParseError::Oversized { len: 0 },
        ParseError::BadMagic,
        ParseError::UnsupportedVersion(0),
        ParseError::UnknownKind(0),
        ParseError::UnknownFlags(0),
        ParseError::ReservedSet,
        ParseError::LengthMismatch {
            claimed: 0,
            actual: 0,
        },
        ParseError::TooManyEvents(0),
        ParseError::TooManyRecords(0),
        ParseError::RecordTruncated,
        ParseError::BadEventIndex { index: 0, count: 0 },
        ParseError::TrailingBytes,
        ParseError::HeartbeatWithRecords,
        ParseError::BadControl,
        ParseError::BadRange,
        ParseError::BadMembership,
    ];
    let names: Vec<_> = all.iter().map(ParseError::name).collect();
    assert_eq!(names, ParseError::NAMES);
    let mut all_rejects: Vec<_> = crate::Reject::names().collect();
    let n = all_rejects.len();
    all_rejects.sort_unstable();
    all_rejects.dedup();
    assert_eq!(all_rejects.len(), n, "reject names must be unique");
    for name in all_rejects {
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
    }
}

/// Extracts the hex dump between the markers in docs/wire-format.md.
fn documented_example() -> Vec<u8> {
    let doc = include_str!("../../docs/wire-format.md");
    let start = doc
        .find("<!-- example-frame:start -->")
        .expect("start marker");
    let end = doc.find("<!-- example-frame:end -->").expect("end marker");
    let mut bytes = Vec::new();
    for line in doc[start..end].lines().filter(|l| l.starts_with("0x")) {
        // `0x0000  48 52 4c 44 …  |HRLD…|`: offset, then hex pairs up to the ASCII column.
        let hex = line.split('|').next().unwrap();
        for pair in hex.split_whitespace().skip(1) {
            bytes.push(u8::from_str_radix(pair, 16).expect("hex byte"));
        }
    }
    bytes
}

/// The frame docs/wire-format.md describes, built with the writer.
pub(crate) fn example_frame() -> Vec<u8> {
    let keyring = Keyring::new(1, Key::from_bytes(core::array::from_fn(|i| i as u8))).unwrap();
    let fields = HeaderFields {
        kind: FrameKind::Data,
        flags: Flags::EMPTY,
        key_id: 1,
        cluster: ClusterId::from_name("shop"),
        node: 0x0102_0304_0506_0708,
        incarnation: 0x1111_2222_3333_4444,
        sequence: 42,
        timestamp_ns: 1_767_225_600_000_000_000,
    };
    let mut buf = vec![0u8; 1472];
    let mut w = FrameWriter::new(&mut buf, &fields).unwrap();
    w.push(&EventId::from_name("product.changed"), b"sku-42")
        .unwrap();
    let n = w.finish(&keyring).len();
    buf.truncate(n);
    buf
}

#[test]
fn documented_example_frame_is_byte_exact() {
    let built = example_frame();
    let documented = documented_example();
    assert_eq!(
        documented, built,
        "docs/wire-format.md's example frame differs from what the writer builds; \
         regenerate it with `cargo test print_example_frame -- --ignored --nocapture`"
    );
    let frame = Frame::parse(&documented).unwrap();
    let keyring = Keyring::new(1, Key::from_bytes(core::array::from_fn(|i| i as u8))).unwrap();
    keyring.verify(frame).unwrap();
}

/// Prints the example frame in the dump format of docs/wire-format.md.
#[test]
#[ignore = "prints the example frame for docs/wire-format.md"]
fn print_example_frame() {
    for (i, chunk) in example_frame().chunks(16).enumerate() {
        let hex: Vec<_> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        println!("0x{:04x}  {:<47}  |{ascii}|", i * 16, hex.join(" "));
    }
}

fn arb_events() -> impl Strategy<Value = Vec<([u8; 16], Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<[u8; 16]>(),
            prop::collection::vec(any::<u8>(), 0..300),
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, ..ProptestConfig::default() })]

    /// Whatever is pushed comes back, in order, across as many frames as it takes.
    #[test]
    fn prop_round_trip(events in arb_events(), frame_len in FRAME_OVERHEAD + 512..=4096usize,
                       seq in any::<u64>(), node in any::<u64>(), overflowed in any::<bool>()) {
        let keyring = keyring();
        let mut f = fields(FrameKind::Data);
        f.sequence = seq;
        f.node = node;
        f.flags = if overflowed { Flags::OVERFLOWED } else { Flags::EMPTY };
        let mut buf = vec![0u8; frame_len];
        let mut got = Vec::new();
        let mut pending = events.iter().peekable();
        while pending.peek().is_some() {
            let mut w = FrameWriter::new(&mut buf, &f).unwrap();
            while let Some((id, payload)) = pending.peek() {
                match w.push(&EventId::from_bytes(*id), payload) {
                    Ok(()) => { pending.next(); }
                    Err(EncodeError::FrameFull { .. }) => break,
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
            prop_assert!(!w.is_empty(), "every payload here fits an empty frame");
            let frame = w.finish(&keyring).to_vec();
            let parsed = Frame::parse(&frame).unwrap();
            prop_assert_eq!(parsed.header_fields(), f);
            let verified = keyring.verify(parsed).unwrap();
            got.extend(verified.frame().records().map(|r| (*r.event().as_bytes(), r.payload().to_vec())));
        }
        prop_assert_eq!(got, events);
    }

    /// Arbitrary bytes never panic the parser, and anything it accepts re-encodes to the
    /// same signed bytes.
    #[test]
    fn prop_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(frame) = Frame::parse(&bytes) {
            let mut buf = vec![0u8; bytes.len()];
            let mut w = FrameWriter::new(&mut buf, &frame.header_fields()).unwrap();
            for r in frame.records() {
                w.push(&r.event(), r.payload()).unwrap();
            }
            let ring = Keyring::new(frame.key_id(), Key::from_bytes([0; 32])).unwrap();
            let out = w.finish(&ring);
            prop_assert_eq!(&out[..out.len() - TAG_LEN], frame.signed_bytes());
        }
    }

    /// Corrupting a parseable header field by field: the result parses or is refused, never
    /// panics.
    #[test]
    fn prop_mutated_frames_never_panic(index in 0usize..200, value in any::<u8>()) {
        let mut f = sample();
        let i = index % f.len();
        f[i] = value;
        let _ = Frame::parse(&f);
        let _ = SharedFrame::parse(bytes::Bytes::from(f));
    }
}

mod gossip {
    use std::net::SocketAddr;

    use super::super::*;
    use crate::auth::{Key, Keyring};

    fn fields() -> HeaderFields {
        HeaderFields {
            kind: FrameKind::Membership,
            flags: Flags::EMPTY,
            key_id: 1,
            cluster: ClusterId::from_raw(9),
            node: 4,
            incarnation: 77,
            sequence: 0,
            timestamp_ns: 5,
        }
    }

    fn record(node: u64, state: MemberState, addr: &str) -> MemberRecord {
        MemberRecord {
            node,
            incarnation: 10 + node,
            counter: 3,
            state,
            addr: Some(addr.parse::<SocketAddr>().unwrap()),
        }
    }

    fn write(entries: &[MemberRecord]) -> Vec<u8> {
        let keyring = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
        let mut buf = vec![0; DEFAULT_UDP_FRAME_LEN];
        let msg = GossipMessage {
            kind: GossipKind::PingReq,
            seq: 99,
            target_node: 7,
            target_incarnation: 8,
            target_addr: Some("[::1]:7700".parse().unwrap()),
            entries,
        };
        write_membership(&mut buf, &fields(), &msg, &keyring)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn round_trips_every_field() {
        let entries = [
            record(1, MemberState::Alive, "127.0.0.1:7700"),
            record(2, MemberState::Suspect, "[fe80::1]:1"),
            record(3, MemberState::Failed, "10.1.2.3:65535"),
            MemberRecord {
                addr: None,
                ..record(4, MemberState::Left, "1.1.1.1:1")
            },
        ];
        let bytes = write(&entries);
        assert_eq!(bytes.len(), gossip_frame_len(4));
        let frame = Frame::parse(&bytes).unwrap();
        assert_eq!(frame.kind(), FrameKind::Membership);
        assert_eq!(frame.records().len(), 0);
        let g = frame.membership().unwrap();
        assert_eq!(g.kind(), GossipKind::PingReq);
        assert_eq!(
            (g.seq(), g.target_node(), g.target_incarnation()),
            (99, 7, 8)
        );
        assert_eq!(g.target_addr(), Some("[::1]:7700".parse().unwrap()));
        assert_eq!(g.entries().collect::<Vec<_>>(), entries);
        assert!(
            Frame::parse(&write(&[]))
                .unwrap()
                .membership()
                .unwrap()
                .entry_count()
                == 0
        );
    }

    #[test]
    fn the_largest_fits_a_udp_datagram_and_more_is_refused() {
        let entries = vec![record(1, MemberState::Alive, "127.0.0.1:1"); MAX_ENTRIES + 1];
        let bytes = write(&entries[..MAX_ENTRIES]);
        assert!(bytes.len() <= DEFAULT_UDP_FRAME_LEN);
        let keyring = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
        let msg = GossipMessage {
            kind: GossipKind::Sync,
            seq: 0,
            target_node: 0,
            target_incarnation: 0,
            target_addr: None,
            entries: &entries,
        };
        let mut buf = vec![0; MAX_FRAME_LEN];
        assert_eq!(
            write_membership(&mut buf, &fields(), &msg, &keyring).unwrap_err(),
            EncodeError::TooManyRecords
        );
    }

    #[test]
    fn refuses_malformed_bodies_without_panicking() {
        let good = write(&[record(1, MemberState::Alive, "127.0.0.1:1")]);
        let body = HEADER_LEN;
        let entry = HEADER_LEN + GOSSIP_HEADER_LEN;
        // (offset, byte): message kind, address family, entry node, state, family, v4 padding.
        for (at, byte) in [
            (body, 0u8),
            (body, 7),
            (body + 1, 5),
            (entry, 0),
            (entry + 20, 0),
            (entry + 20, 9),
            (entry + 21, 3),
            (entry + 30, 1),
        ] {
            let mut bad = good.clone();
            if at == entry {
                bad[at..at + 8].fill(0);
            } else {
                bad[at] = byte;
            }
            assert_eq!(
                Frame::parse(&bad).unwrap_err(),
                ParseError::BadMembership,
                "byte {at} = {byte}"
            );
        }
        // A count that disagrees with the body, and an event table on a membership frame.
        let mut bad = good.clone();
        bad[12] = 2;
        assert_eq!(Frame::parse(&bad).unwrap_err(), ParseError::BadMembership);
        let mut bad = good;
        bad[14] = 1;
        assert_eq!(Frame::parse(&bad).unwrap_err(), ParseError::BadMembership);
        // Every truncation and every single-byte value in the body: never a panic.
        let frame = write(&[record(2, MemberState::Suspect, "[::1]:2")]);
        for len in 0..frame.len() {
            let _ = Frame::parse(&frame[..len]);
        }
        for at in HEADER_LEN..frame.len() - TAG_LEN {
            for byte in [0u8, 1, 4, 6, 0xff] {
                let mut f = frame.clone();
                f[at] = byte;
                if let Ok(parsed) = Frame::parse(&f) {
                    let g = parsed.membership().unwrap();
                    let _ = (g.kind(), g.target_addr(), g.entries().count());
                }
            }
        }
    }
}
