//! Criterion benchmarks of the wire format: encoding plus signing, and parsing plus verifying,
//! a full 1472-byte frame, against ring's HMAC-SHA256 alone over the same bytes (the physical
//! limit: the rest of the work should add little to it).
//!
//! `cargo bench --bench wire`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::EventId;
use herald::auth::{Key, Keyring};
use herald::wire::{
    ClusterId, DEFAULT_UDP_FRAME_LEN, EncodeError, Flags, Frame, FrameKind, FrameWriter,
    HeaderFields, TAG_LEN,
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
    let mut w = FrameWriter::new(buf, fields).expect("frame buffer");
    loop {
        match w.push(id, payload) {
            Ok(()) => {}
            Err(EncodeError::FrameFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    w.finish(keyring).len()
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
    criterion_group!(benches, wire);
}
criterion_main!(group::benches);
