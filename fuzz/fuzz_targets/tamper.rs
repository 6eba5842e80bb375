//! A valid signed frame with one byte changed (at an index and by a non-zero XOR the fuzzer
//! picks) never both parses and verifies.
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
    index: u32,
    xor: u8,
}

fuzz_target!(|input: Input| {
    let keyring = test_keyring();
    let fields = input.header.fields();
    let len = frame_len(input.frame_len);
    let mut frame = if input.header.heartbeat {
        encode_all(&fields, len, &[], &keyring).0.pop()
    } else {
        encode_all(&fields, len, &input.events, &keyring).0.pop()
    };
    if frame.is_none() {
        // No events (or a heartbeat): tamper with an empty frame.
        let mut buf = vec![0u8; len];
        let w = herald::wire::FrameWriter::new(&mut buf, &fields).expect("frame buffer");
        frame = Some(w.finish(&keyring).to_vec());
    }
    let mut frame = frame.expect("a frame");
    let parsed = Frame::parse(&frame).expect("our own frame parses");
    keyring.verify(parsed).expect("our own frame verifies");

    let xor = if input.xor == 0 { 1 } else { input.xor };
    let i = input.index as usize % frame.len();
    frame[i] ^= xor;
    if let Ok(parsed) = Frame::parse(&frame) {
        assert!(
            keyring.verify(parsed).is_err(),
            "byte {i} ^ {xor:#04x} still verified"
        );
    }
});
