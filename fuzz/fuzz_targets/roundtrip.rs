//! Arbitrary events, encoded into frames signed with the test key, parsed and verified: exactly
//! the events come back, in order, with the header values.
#![no_main]

use arbitrary::Arbitrary;
use herald::wire::Frame;
use herald_fuzz::{ArbHeader, encode_all, frame_len, test_keyring};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    header: ArbHeader,
    frame_len: u16,
    events: Vec<([u8; 16], Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let keyring = test_keyring();
    let mut header = input.header;
    header.heartbeat = false;
    let fields = header.fields();
    let len = frame_len(input.frame_len);
    let (frames, skipped) = encode_all(&fields, len, &input.events, &keyring);

    let mut got = Vec::new();
    for bytes in &frames {
        assert!(bytes.len() <= len);
        let frame = Frame::parse(bytes).expect("our own frame parses");
        assert_eq!(frame.header_fields(), fields);
        let verified = keyring.verify(frame).expect("our own frame verifies");
        got.extend(
            verified
                .frame()
                .records()
                .map(|r| (*r.event().as_bytes(), r.payload().to_vec())),
        );
    }
    let expected: Vec<_> = input
        .events
        .iter()
        .enumerate()
        .filter(|(i, (_, payload))| {
            let too_big = skipped.contains(i);
            // A lone record needs its header, its payload and its event's id.
            let fits = herald::wire::record_len(payload.len()).is_some_and(|n| {
                n + herald::wire::EVENT_ID_LEN <= len - herald::wire::FRAME_OVERHEAD
            });
            assert_eq!(too_big, !fits);
            !too_big
        })
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(got, expected);
});
