//! Sealed data frames (`security = "encrypt"`): opening arbitrary bytes marked sealed never
//! panics and never succeeds; a frame sealed from the input opens to exactly its events; the
//! same frame with one byte changed (index and non-zero XOR from the input) never opens.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use herald::EventId;
use herald::wire::{EncodeError, Flags, FrameWriter, SharedFrame};
use herald_fuzz::{ArbHeader, frame_len, test_keyring};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    header: ArbHeader,
    frame_len: u16,
    events: Vec<([u8; 16], Vec<u8>)>,
    index: u32,
    xor: u8,
    /// Bytes to open as they are, once made to look like a sealed data frame of version 3.
    raw: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let keyring = test_keyring();

    // Arbitrary bytes with a plausible header: parse checks lengths, open must refuse.
    let mut raw = input.raw;
    if raw.len() >= 8 {
        raw[..4].copy_from_slice(&herald::wire::MAGIC);
        raw[4] = herald::wire::VERSION;
        raw[5] = 1;
        let flags = u16::from_le_bytes([raw[6], raw[7]]) | Flags::SEALED.bits();
        raw[6..8].copy_from_slice(&flags.to_le_bytes());
    }
    if let Ok(frame) = SharedFrame::parse(Bytes::from(raw)) {
        assert_eq!(
            frame.records().count(),
            0,
            "a sealed frame shows ciphertext"
        );
        assert!(keyring.verify(frame.clone()).is_err());
        assert!(keyring.open(&frame).is_err(), "a made-up frame opened");
    }

    // A frame sealed from the input.
    let mut fields = input.header.fields();
    fields.kind = herald::wire::FrameKind::Data;
    let len = frame_len(input.frame_len);
    let mut buf = vec![0u8; len];
    let mut w = FrameWriter::new(&mut buf, &fields).expect("frame buffer in range");
    let mut pushed = Vec::new();
    for (id, payload) in &input.events {
        match w.push(&EventId::from_bytes(*id), payload) {
            Ok(()) => pushed.push((EventId::from_bytes(*id), payload.clone())),
            Err(EncodeError::FrameFull { .. }) => break,
            Err(EncodeError::PayloadTooLarge { .. }) => {}
            Err(e) => panic!("unexpected encode error: {e}"),
        }
    }
    if pushed.is_empty() {
        return;
    }
    let mut frame = w.finish_sealed(&keyring).to_vec();
    let parsed = SharedFrame::parse(Bytes::copy_from_slice(&frame)).expect("our frame parses");
    assert!(parsed.is_sealed());
    let opened = keyring.open(&parsed).expect("our frame opens").into_frame();
    assert!(
        opened
            .records()
            .map(|r| (r.event, r.payload.to_vec()))
            .eq(pushed)
    );

    let xor = if input.xor == 0 { 1 } else { input.xor };
    let i = input.index as usize % frame.len();
    frame[i] ^= xor;
    if let Ok(parsed) = SharedFrame::parse(Bytes::from(frame)) {
        assert!(
            keyring.open(&parsed).is_err(),
            "byte {i} ^ {xor:#04x} still opened"
        );
        assert!(keyring.verify(parsed).is_err());
    }
});
