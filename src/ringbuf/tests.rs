//! Single-process tests of the ring: layout, capacity, wrap-around, abort, full and drain,
//! and the visibility of a stalled producer. The concurrent proofs are the loom models in
//! `loom_tests.rs`; the long randomized run is `tests/ring_stress.rs`.

use std::collections::VecDeque;
use std::sync::mpsc;

use super::*;
use crate::EventId;

fn id(n: u8) -> EventId {
    EventId::from_bytes([n; 16])
}

/// Reads everything committed now, releasing it, as `(event byte, payload)` pairs.
fn drain(consumer: &mut Consumer) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(run) = consumer.read(usize::MAX) {
        out.extend(run.records().map(|(e, p)| (e.as_bytes()[0], p.to_vec())));
        run.release();
    }
    out
}

#[test]
fn smoke() {
    let (producer, mut consumer) = ring(1024, 256).unwrap();
    assert!(consumer.read(1024).is_none());
    producer.push(&id(7), b"hello").unwrap();
    let run = consumer.read(1024).unwrap();
    assert_eq!(run.record_count(), 1);
    let mut expected = 5u32.to_le_bytes().to_vec();
    expected.extend_from_slice(&[1, 0, 0, 0]);
    expected.extend_from_slice(&[7u8; 16]);
    expected.extend_from_slice(b"hello\0\0\0");
    assert_eq!(run.bytes(), &expected[..]);
    run.release();
    assert!(consumer.read(1024).is_none());
    assert!(consumer.stall().is_none());
    assert_eq!(consumer.claimed_bytes(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "signs with ring's HMAC, foreign code Miri cannot run")]
fn a_run_encodes_into_a_frame_of_the_same_records() {
    let (producer, mut consumer) = ring(1024, 256).unwrap();
    for n in 0..10u8 {
        producer
            .push(&id(n % 3), &vec![n; usize::from(n) * 3])
            .unwrap();
    }
    let run = consumer.read(1024).unwrap();
    assert_eq!(run.record_count(), 10);
    let mut buf = [0u8; 2048];
    let fields = crate::wire::HeaderFields {
        kind: crate::wire::FrameKind::Data,
        flags: crate::wire::Flags::EMPTY,
        key_id: 1,
        cluster: crate::wire::ClusterId::from_raw(1),
        node: 1,
        incarnation: 1,
        sequence: 1,
        timestamp_ns: 0,
    };
    let mut writer = crate::wire::FrameWriter::new(&mut buf, &fields).unwrap();
    for (event, payload) in run.records() {
        writer.push(&event, payload).unwrap();
    }
    let keyring = crate::auth::Keyring::new(1, crate::auth::Key::from_bytes([0; 32])).unwrap();
    let frame_len = writer.finish(&keyring).len();
    // The frame is shorter than the run: 4-byte headers instead of 24-byte ones, no padding,
    // and each of the 3 ids once, not 10 times.
    let payloads: usize = (0..10).map(|n| n * 3).sum();
    assert_eq!(
        frame_len - crate::wire::FRAME_OVERHEAD,
        10 * 4 + payloads + 3 * 16
    );
    assert!(frame_len - crate::wire::FRAME_OVERHEAD < run.bytes().len());
    let frame = crate::wire::Frame::parse(&buf[..frame_len]).unwrap();
    let sent: Vec<_> = run.records().map(|(e, p)| (e, p.to_vec())).collect();
    let got: Vec<_> = frame
        .records()
        .map(|r| (r.event(), r.payload().to_vec()))
        .collect();
    assert_eq!(got, sent);
    run.release();
}

#[test]
fn capacity() {
    let (producer, mut consumer) = ring(256, 64).unwrap();
    assert_eq!(producer.capacity(), 256);
    assert_eq!(producer.max_payload(), 40);
    let mut n = 0;
    while producer.push(&id(1), &[1; 8]).is_ok() {
        n += 1;
    }
    assert_eq!(n, 256 / 32);
    assert_eq!(producer.push(&id(1), &[]), Err(ClaimError::Full));
    assert_eq!(
        producer.push(&id(1), &[0; 41]),
        Err(ClaimError::TooLarge { max_payload: 40 })
    );
    assert_eq!(drain(&mut consumer).len(), 8);
    // An empty ring takes the longest record wherever the head is.
    for offset in 0..8 {
        producer.push(&id(1), &vec![0; offset]).unwrap();
        drain(&mut consumer);
        producer.push(&id(2), &[2; 40]).unwrap();
        assert_eq!(drain(&mut consumer), vec![(2, vec![2; 40])]);
    }
}

#[test]
fn wrap_around_pads_and_splits_runs() {
    let (producer, mut consumer) = ring(128, 64).unwrap();
    // 40-byte records: 3 fit in the first lap (120 bytes), the 4th needs padding.
    for n in 0..3 {
        producer.push(&id(n), &[n; 16]).unwrap();
    }
    let run = consumer.read(128).unwrap();
    assert_eq!(run.record_count(), 3);
    run.release();
    producer.push(&id(3), &[3; 16]).unwrap(); // 8 bytes of padding, then offset 0
    producer.push(&id(4), &[4; 16]).unwrap();
    assert_eq!(consumer.claimed_bytes(), 8 + 80);
    let run = consumer.read(128).unwrap();
    assert_eq!(run.record_count(), 2);
    assert_eq!(run.bytes()[8..24], [3; 16]);
    run.release();
    // A run never crosses the end: records at 80..120 and 0..40.
    producer.push(&id(5), &[5; 16]).unwrap();
    producer.push(&id(6), &[6; 16]).unwrap();
    let run = consumer.read(128).unwrap();
    assert_eq!(run.record_count(), 1);
    run.release();
    assert_eq!(drain(&mut consumer), vec![(6, vec![6; 16])]);
}

#[test]
fn abort_becomes_padding() {
    let (producer, mut consumer) = ring(256, 64).unwrap();
    producer.push(&id(1), b"a").unwrap();
    let mut claim = producer.claim(&id(2), 10).unwrap();
    claim.payload_mut().fill(2);
    drop(claim);
    producer.claim(&id(3), 0).unwrap().abort();
    producer.push(&id(4), b"d").unwrap();
    // The first run stops at the padding; the next read skips it.
    let run = consumer.read(256).unwrap();
    assert_eq!(run.record_count(), 1);
    run.release();
    assert_eq!(drain(&mut consumer), vec![(4, b"d".to_vec())]);
    assert_eq!(consumer.claimed_bytes(), 0);
    // Only aborted claims: the space comes back all the same.
    for _ in 0..100 {
        producer.claim(&id(5), 40).unwrap().abort();
        assert!(consumer.read(256).is_none());
    }
    assert_eq!(consumer.claimed_bytes(), 0);
}

#[test]
fn full_then_drain_then_claim() {
    let (producer, mut consumer) = ring(128, 64).unwrap();
    for round in 0..20u8 {
        let mut pushed = 0;
        while producer.push(&id(round), &[round; 5]).is_ok() {
            pushed += 1;
        }
        assert!(pushed >= 3, "round {round}: {pushed}");
        let got = drain(&mut consumer);
        assert_eq!(got.len(), pushed);
        assert!(got.iter().all(|(e, p)| *e == round && p == &[round; 5]));
    }
}

#[test]
fn unreleased_run_is_read_again() {
    let (producer, mut consumer) = ring(256, 64).unwrap();
    producer.push(&id(1), b"x").unwrap();
    producer.push(&id(2), b"y").unwrap();
    let first = consumer.read(256).unwrap().bytes().to_vec();
    let run = consumer.read(256).unwrap();
    assert_eq!(run.bytes(), &first[..]);
    run.release();
    assert!(consumer.read(256).is_none());
}

#[test]
fn max_bytes_limits_runs() {
    let (producer, mut consumer) = ring(256, 64).unwrap();
    producer.push(&id(1), &[1; 40]).unwrap(); // 64 bytes
    producer.push(&id(2), &[2; 8]).unwrap(); // 32 bytes
    assert!(consumer.read(63).is_none(), "the first record is longer");
    let run = consumer.read(95).unwrap();
    assert_eq!(run.record_count(), 1);
    run.release();
    assert_eq!(consumer.read(32).unwrap().record_count(), 1);
}

#[test]
fn padding_bytes_are_zero_over_dirty_space() {
    let (producer, mut consumer) = ring(64, 32).unwrap();
    for round in 0..16 {
        producer.push(&id(0xff), &[0xff; 8]).unwrap();
        drain(&mut consumer);
        for len in 0..8 {
            let mut claim = producer.claim(&id(1), len).unwrap();
            claim.payload_mut().fill(0xee);
            claim.commit();
            let run = consumer.read(64).unwrap();
            let bytes = run.bytes();
            assert_eq!(bytes.len(), 24 + 8 * usize::from(len > 0), "round {round}");
            assert!(bytes[24 + len..].iter().all(|&b| b == 0), "len {len}");
            run.release();
        }
    }
}

#[test]
fn a_claim_starts_zeroed_over_space_an_aborted_claim_dirtied() {
    // 64 bytes: every lap reuses the same two 32-byte slots.
    let (producer, mut consumer) = ring(64, 32).unwrap();
    for round in 0..16u8 {
        let mut dirty = producer.claim(&id(0xdd), 8).unwrap();
        dirty.payload_mut().fill(0xdd);
        dirty.abort();
        producer.push(&id(round), &[0xee; 8]).unwrap();
        assert_eq!(drain(&mut consumer), vec![(round, vec![0xee; 8])]);
        consumer.hand_back();
        for _ in 0..2 {
            let mut claim = producer.claim(&id(1), 8).unwrap();
            assert_eq!(claim.payload_mut(), &[0; 8], "round {round}: stale bytes");
            claim.commit();
        }
        let run = consumer.read(64).unwrap();
        assert!(run.bytes()[24..32].iter().all(|&b| b == 0));
        run.release();
        drain(&mut consumer);
        consumer.hand_back();
    }
}

#[test]
fn stalled_producer_is_visible_and_recovers() {
    let (producer, mut consumer) = ring(256, 64).unwrap();
    let (claimed_tx, claimed_rx) = mpsc::channel();
    let (commit_tx, commit_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let stalled = producer.clone();
        s.spawn(move || {
            // Claim, then be "descheduled" until told to go on.
            let mut claim = stalled.claim(&id(1), 8).unwrap();
            claimed_tx.send(()).unwrap();
            commit_rx.recv().unwrap();
            claim.payload_mut().copy_from_slice(b"stalled!");
            claim.commit();
        });
        claimed_rx.recv().unwrap();
        // Other producers go on until the ring is full; claims fail at once, never block.
        let mut behind = 0;
        while producer.push(&id(2), &[2; 8]).is_ok() {
            behind += 1;
        }
        assert_eq!(behind, 7);
        for polls in 1..=3 {
            assert!(consumer.read(256).is_none());
            let stall = consumer.stall().unwrap();
            assert_eq!(stall.position(), 0);
            assert_eq!(stall.polls(), polls);
            assert_eq!(stall.claimed_bytes(), 256);
        }
        commit_tx.send(()).unwrap();
    });
    let got = drain(&mut consumer);
    assert_eq!(got.len(), 8);
    assert_eq!(got[0], (1, b"stalled!".to_vec()));
    assert!(consumer.stall().is_none());
    // A leaked claim stalls the ring for good, and stays visible.
    std::mem::forget(producer.claim(&id(3), 0).unwrap());
    producer.push(&id(4), b"").unwrap();
    for _ in 0..5 {
        assert!(consumer.read(256).is_none());
    }
    // The read that found the ring drained counts too: it was at the same position.
    assert_eq!(consumer.stall().unwrap().polls(), 6);
}

#[test]
fn matches_a_queue_model() {
    // Random pushes, aborts, partial reads and dropped runs against a VecDeque.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (producer, mut consumer) = ring(512, 128).unwrap();
    let mut model = VecDeque::new();
    let mut seq = 0u32;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    for _ in 0..steps {
        match next(4) {
            0 | 1 => {
                let len = next(105) as usize;
                seq += 1;
                let payload: Vec<u8> = (0..len).map(|i| (seq as usize + i) as u8).collect();
                match producer.claim(&EventId::from_bytes([seq as u8; 16]), len) {
                    Ok(mut claim) if next(5) == 0 => {
                        claim.payload_mut().copy_from_slice(&payload);
                        claim.abort();
                    }
                    Ok(mut claim) => {
                        claim.payload_mut().copy_from_slice(&payload);
                        claim.commit();
                        model.push_back((seq as u8, payload));
                    }
                    Err(ClaimError::Full) => assert!(!model.is_empty() || len > 0),
                    Err(e) => panic!("{e}"),
                }
            }
            _ => {
                let max = 24 + next(512) as usize;
                if let Some(run) = consumer.read(max) {
                    assert!(run.bytes().len() <= max);
                    for (i, (event, payload)) in run.records().enumerate() {
                        let (e, p) = &model[i];
                        assert_eq!((event.as_bytes()[0], payload), (*e, &p[..]));
                    }
                    // Either release the run, or drop it to read the same records again.
                    let count = run.record_count();
                    if next(4) == 0 {
                        drop(run);
                    } else {
                        run.release();
                        model.drain(..count);
                    }
                }
            }
        }
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Producer>();
    send::<Consumer>();
}

#[test]
fn released_space_comes_back_in_batches_or_when_the_ring_is_drained() {
    // 1024 bytes: 32 records of 32 bytes. Space goes back to producers once an eighth of the
    // ring (128 bytes, 4 records) is released, or when a read finds nothing.
    let (producer, mut consumer) = ring(1024, 128).unwrap();
    while producer.push(&id(1), &[1; 8]).is_ok() {}
    consumer.read(64).unwrap().release();
    assert_eq!(
        producer.push(&id(2), &[2; 8]),
        Err(ClaimError::Full),
        "64 bytes released: not handed back yet"
    );
    consumer.read(64).unwrap().release();
    producer.push(&id(2), &[2; 8]).unwrap();
    producer.push(&id(2), &[2; 8]).unwrap();
    producer.push(&id(2), &[2; 8]).unwrap();
    producer.push(&id(2), &[2; 8]).unwrap();
    assert_eq!(producer.push(&id(2), &[2; 8]), Err(ClaimError::Full));
    // Draining to empty hands everything back.
    let got = drain(&mut consumer);
    assert_eq!(got.len(), 32);
    for _ in 0..32 {
        producer.push(&id(3), &[3; 8]).unwrap();
    }
}
