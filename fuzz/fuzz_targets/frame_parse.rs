//! Arbitrary bytes: `Frame::parse` never panics and never allocates; what parses re-encodes to
//! the same records (and to the same signed bytes when the event tables agree);
//! `SharedFrame::parse` agrees with it, and so do its borrowed records and their offsets.
#![no_main]

use herald::auth::{Key, Keyring};
use herald::wire::{EncodeError, Frame, FrameWriter, MAX_FRAME_LEN, SharedFrame, TAG_LEN};
use herald_fuzz::CountingAllocator;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fuzz_target!(|data: &[u8]| {
    let before = CountingAllocator::allocations();
    let parsed = Frame::parse(data);
    let walked = parsed
        .as_ref()
        .map(|f| f.records().map(|r| r.payload().len()).sum::<usize>());
    assert_eq!(
        CountingAllocator::allocations(),
        before,
        "parsing allocated"
    );

    let shared = SharedFrame::parse(bytes::Bytes::copy_from_slice(data));
    assert_eq!(parsed.as_ref().err(), shared.as_ref().err());
    let (Ok(frame), Ok(shared), Ok(_)) = (parsed, shared, walked) else {
        return;
    };
    assert!(
        frame.records().map(|r| (r.event(), r.payload())).eq(shared
            .records()
            .map(|r| (r.event, r.payload))
            .collect::<Vec<_>>()
            .iter()
            .map(|(e, p)| (*e, &p[..])))
    );
    // The borrowed records (what dispatch walks) point at the same bytes, by offset too.
    let whole = shared.as_bytes();
    assert!(shared.borrowed_records().eq(frame.records()));
    for r in shared.borrowed_records() {
        let at = r.payload_offset();
        assert_eq!(whole.get(at..at + r.payload().len()), Some(r.payload()));
    }

    // A membership frame re-encodes byte for byte from its parsed values (its encoding is
    // canonical: the parser refuses every byte the writer would not write).
    if let Some(g) = frame.membership() {
        let entries: Vec<_> = g.entries().collect();
        assert_eq!(entries.len(), g.entry_count());
        if frame.flags().bits() == 0 {
            let keyring = Keyring::new(frame.key_id(), Key::from_bytes([0; 32])).expect("keyring");
            let msg = herald::wire::GossipMessage {
                kind: g.kind(),
                seq: g.seq(),
                target_node: g.target_node(),
                target_incarnation: g.target_incarnation(),
                target_addr: g.target_addr(),
                entries: &entries,
            };
            let mut buf = vec![0u8; MAX_FRAME_LEN];
            let out =
                herald::wire::write_membership(&mut buf, &frame.header_fields(), &msg, &keyring)
                    .expect("a parsed membership frame re-encodes");
            assert_eq!(&out[..out.len() - TAG_LEN], frame.signed_bytes());
        }
        return;
    }

    // Re-encode: same header, same records, a key with the frame's id. A parsed frame's event
    // table may list ids the writer would not (twice, unused, in another order), and the
    // writer itself lists an id twice when its small cache forgets it, so the new frames
    // (as many as it takes) must carry the same records; and where the tables agree, the
    // frame must come out byte for byte.
    let keyring = Keyring::new(frame.key_id(), Key::from_bytes([0; 32])).expect("keyring");
    // A control frame is written back byte for byte from what parsing made of it.
    if let Some(c) = frame.control() {
        let ranges: Vec<(u64, u64)> = c.ranges().collect();
        let ids: Vec<herald::EventId> = frame.events().collect();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let out = herald::wire::write_control(
            &mut buf,
            &frame.header_fields(),
            &herald::wire::ControlFrame {
                target_node: c.target_node(),
                target_incarnation: c.target_incarnation(),
                consumed: c.consumed(),
                ranges: &ranges,
                ids: &ids,
            },
            &keyring,
        )
        .expect("a parsed control frame fits");
        assert_eq!(&out[..out.len() - TAG_LEN], frame.signed_bytes());
        return;
    }
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut records = frame.records().peekable();
    let mut again = Vec::new();
    while records.peek().is_some() {
        let mut w = FrameWriter::new(&mut buf, &frame.header_fields()).expect("length was valid");
        while let Some(r) = records.peek() {
            match w.push(&r.event(), r.payload()) {
                Ok(()) => {
                    records.next();
                }
                Err(EncodeError::FrameFull { .. }) if !w.is_empty() => break,
                Err(e) => panic!("a record of a valid frame is refused: {e}"),
            }
        }
        let out = w.finish(&keyring).to_vec();
        let re = Frame::parse(&out).expect("the writer's frame parses");
        assert_eq!(re.header_fields(), frame.header_fields());
        if out.len() == data.len() && re.events().eq(frame.events()) {
            assert_eq!(&out[..out.len() - TAG_LEN], frame.signed_bytes());
        }
        again.extend(re.records().map(|r| (r.event(), r.payload().to_vec())));
    }
    assert!(
        frame
            .records()
            .map(|r| (r.event(), r.payload().to_vec()))
            .eq(again)
    );
});
