//! Criterion benchmarks of the wire format: encoding plus signing, and parsing plus verifying,
//! a full 1472-byte frame, against ring's HMAC-SHA256 alone over the same bytes (the physical
//! limit: the rest of the work should add little to it).
//!
//! The `seal` group compares, for 1024- and 8192-byte frames of 64-byte events, signing
//! (`encode_sign`, `parse_verify`) with sealing (`seal_encode`, `open_parse`: AES-256-GCM,
//! opening includes the copy of the received frame into a fresh buffer), and the two AEADs
//! `ring` offers over the same bytes (`aes_256_gcm_only`, `chacha20_poly1305_only`).
//!
//! `cargo bench --bench wire`, or `cargo bench --bench wire -- seal`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::EventId;
use herald::auth::{Key, Keyring};
use herald::wire::{
    ClusterId, DEFAULT_UDP_FRAME_LEN, EncodeError, Flags, Frame, FrameKind, FrameWriter,
    HeaderFields, SharedFrame, TAG_LEN,
};

const PAYLOADS: [usize; 3] = [64, 256, 1024];

fn fields() -> HeaderFields {
    HeaderFields {
        kind: FrameKind::Data,
        flags: Flags::EMPTY,
        key_id: 1,
        cluster: ClusterId::from_name("bench"),
        node: 1,
        incarnation: 2,
        sequence: 3,
        timestamp_ns: 4,
    }
}

/// Fills a frame with as many events of `payload_len` bytes as fit; returns its length.
fn fill(
    buf: &mut [u8],
    fields: &HeaderFields,
    keyring: &Keyring,
    id: &EventId,
    payload: &[u8],
) -> usize {
    fill_with(buf, fields, keyring, id, payload, false)
}

/// [`fill`], sealing the frame if `seal`.
fn fill_with(
    buf: &mut [u8],
    fields: &HeaderFields,
    keyring: &Keyring,
    id: &EventId,
    payload: &[u8],
    seal: bool,
) -> usize {
    let mut w = FrameWriter::new(buf, fields).expect("frame buffer");
    loop {
        match w.push(id, payload) {
            Ok(()) => {}
            Err(EncodeError::FrameFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    if seal {
        w.finish_sealed(keyring).len()
    } else {
        w.finish(keyring).len()
    }
}

/// Signing against sealing, for two frame sizes.
fn seal(c: &mut Criterion) {
    use ring::aead;
    let keyring = Keyring::new(1, Key::from_bytes([7; 32])).expect("keyring");
    let mut group = c.benchmark_group("seal");
    let id = EventId::from_name("bench.event");
    let fields = fields();
    let payload = vec![0xa5u8; 64];
    for frame_len in [1024usize, 8192] {
        let mut buf = vec![0u8; frame_len];
        group.throughput(Throughput::Bytes(frame_len as u64));
        for (name, sealed) in [("encode_sign", false), ("seal_encode", true)] {
            group.bench_function(BenchmarkId::new(name, frame_len), |b| {
                b.iter(|| {
                    fill_with(
                        black_box(&mut buf),
                        &fields,
                        &keyring,
                        &id,
                        &payload,
                        sealed,
                    )
                });
            });
        }
        let len = fill_with(&mut buf, &fields, &keyring, &id, &payload, false);
        let signed = bytes::Bytes::copy_from_slice(&buf[..len]);
        group.bench_function(BenchmarkId::new("parse_verify", frame_len), |b| {
            b.iter(|| {
                let frame = SharedFrame::parse(black_box(signed.clone())).expect("valid");
                let verified = keyring.verify(frame).expect("verifies");
                verified.frame().borrowed_records().count()
            });
        });
        let len = fill_with(&mut buf, &fields, &keyring, &id, &payload, true);
        let sealed = bytes::Bytes::copy_from_slice(&buf[..len]);
        group.bench_function(BenchmarkId::new("open_parse", frame_len), |b| {
            b.iter(|| {
                let frame = SharedFrame::parse(black_box(sealed.clone())).expect("valid");
                let opened = keyring.open(&frame).expect("opens");
                opened.frame().borrowed_records().count()
            });
        });
        // The AEADs alone, sealing the body in place with the header as associated data.
        for (name, alg) in [
            ("aes_256_gcm_only", &aead::AES_256_GCM),
            ("chacha20_poly1305_only", &aead::CHACHA20_POLY1305),
        ] {
            let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &[7; 32]).expect("key"));
            let mut body = vec![0x5au8; frame_len - 64 - TAG_LEN];
            let header = [0u8; 64];
            group.bench_function(BenchmarkId::new(name, frame_len), |b| {
                b.iter(|| {
                    let nonce = aead::Nonce::assume_unique_for_key([0; 12]);
                    key.seal_in_place_separate_tag(
                        nonce,
                        aead::Aad::from(&header),
                        black_box(&mut body),
                    )
                    .expect("seals")
                });
            });
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]);
        let data = vec![0x5au8; frame_len - TAG_LEN];
        group.bench_function(BenchmarkId::new("hmac_only", frame_len), |b| {
            b.iter(|| ring::hmac::sign(&key, black_box(&data)));
        });
    }
    group.finish();
}

fn wire(c: &mut Criterion) {
    let keyring = Keyring::new(1, Key::from_bytes([7; 32])).expect("keyring");
    let mut group = c.benchmark_group("wire");
    let mut buf = vec![0u8; DEFAULT_UDP_FRAME_LEN];
    // Hashed once: naming an event or a cluster costs a SHA-256, which is not encoding.
    let id = EventId::from_name("bench.event");
    let fields = fields();

    for payload_len in PAYLOADS {
        let payload = vec![0xa5u8; payload_len];
        let len = fill(&mut buf, &fields, &keyring, &id, &payload);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(
            BenchmarkId::new("encode_sign", payload_len),
            &payload,
            |b, p| {
                b.iter(|| fill(black_box(&mut buf), &fields, &keyring, &id, black_box(p)));
            },
        );
        let frame = buf[..len].to_vec();
        group.bench_with_input(
            BenchmarkId::new("parse_verify", payload_len),
            &frame,
            |b, f| {
                b.iter(|| {
                    let parsed = Frame::parse(black_box(f)).expect("valid frame");
                    let verified = keyring.verify(parsed).expect("verifies");
                    verified
                        .frame()
                        .records()
                        .map(|r| r.payload().len())
                        .sum::<usize>()
                });
            },
        );
    }

    let data = vec![0x5au8; DEFAULT_UDP_FRAME_LEN - TAG_LEN];
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]);
    group.throughput(Throughput::Bytes(DEFAULT_UDP_FRAME_LEN as u64));
    group.bench_function(BenchmarkId::new("hmac_only", DEFAULT_UDP_FRAME_LEN), |b| {
        b.iter(|| ring::hmac::sign(&key, black_box(&data)));
    });
    group.finish();
}

// criterion_group! makes an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, wire, seal);
}
criterion_main!(group::benches);
