//! Arbitrary bytes: `Frame::parse` never panics and never allocates; what parses re-encodes to
//! the same signed bytes; `SharedFrame::parse` agrees with it, and so do its borrowed records
//! and their offsets.
#![no_main]

use herald::auth::{Key, Keyring};
use herald::wire::{Frame, FrameWriter, SharedFrame, TAG_LEN};
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

    // Re-encode: same header, same records, a key with the frame's id.
    let mut buf = vec![0u8; data.len()];
    let mut w = FrameWriter::new(&mut buf, &frame.header_fields()).expect("length was valid");
    for r in frame.records() {
        w.push(&r.event(), r.payload())
            .expect("fits: it came from a frame this long");
    }
    let keyring = Keyring::new(frame.key_id(), Key::from_bytes([0; 32])).expect("keyring");
    let out = w.finish(&keyring);
    assert_eq!(out.len(), data.len());
    assert_eq!(&out[..out.len() - TAG_LEN], frame.signed_bytes());
});
