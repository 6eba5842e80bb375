//! loom models of the ring. The capacity is shrunk to 64 bytes (two or three records), so a
//! few records reach wrap-around and a full ring.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --lib ringbuf
//! ```
//!
//! Every access to the ring's bytes is reported to loom through shadow cells (see `raw`), so
//! a read of a record not ordered after its writes, or a producer writing space the consumer
//! has not released, fails the model.

use loom::thread;

use super::*;
use crate::EventId;

const CAPACITY: usize = 64;
const MAX_RECORD: usize = 32;

fn id(n: u8) -> EventId {
    EventId::from_bytes([n; 16])
}

/// Reads until `n` records arrived, yielding while there are none; returns `(event, payload)`.
fn read_n(consumer: &mut Consumer, n: usize) -> Vec<(u8, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < n {
        match consumer.read(CAPACITY) {
            Some(run) => {
                for (event, payload) in run.records() {
                    let e = event.as_bytes();
                    assert!(e.iter().all(|b| *b == e[0]), "torn event id {e:?}");
                    got.push((e[0], payload.to_vec()));
                }
                run.release();
            }
            None => thread::yield_now(),
        }
    }
    got
}

/// Pushes, yielding while the ring is full.
fn push_retry(producer: &Producer, n: u8, payload: &[u8]) {
    loop {
        match producer.push(&id(n), payload) {
            Ok(()) => return,
            Err(ClaimError::Full) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Moves head and tail to `offset` by pushing and consuming one record there, and hands
/// the space back.
fn advance(producer: &Producer, consumer: &mut Consumer, payload_len: usize) {
    producer.push(&id(0), &vec![0; payload_len]).unwrap();
    consumer.read(CAPACITY).unwrap().release();
    assert!(consumer.read(CAPACITY).is_none());
    consumer.hand_back();
}

#[test]
fn two_producers_across_wrap() {
    loom::model(|| {
        let (producer, mut consumer) = ring(CAPACITY, MAX_RECORD).unwrap();
        // Head at 24: the first 24-byte record takes 24..48, the second pads 48..64 and
        // wraps to 0..24.
        advance(&producer, &mut consumer, 0);
        let threads: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|n| {
                let producer = producer.clone();
                thread::spawn(move || producer.push(&id(n), &[]).unwrap())
            })
            .collect();
        let mut got = read_n(&mut consumer, 2);
        for t in threads {
            t.join().unwrap();
        }
        got.sort();
        assert_eq!(got, vec![(1, vec![]), (2, vec![])]);
        assert!(consumer.read(CAPACITY).is_none());
        assert_eq!(consumer.claimed_bytes(), 0);
    });
}

#[test]
fn full_then_drain_then_claim() {
    loom::model(|| {
        let (producer, mut consumer) = ring(CAPACITY, MAX_RECORD).unwrap();
        producer.push(&id(1), &[1; 8]).unwrap();
        producer.push(&id(2), &[2; 8]).unwrap();
        assert_eq!(producer.push(&id(3), &[]), Err(ClaimError::Full));
        let drain = thread::spawn(move || {
            let got = read_n(&mut consumer, 2);
            (consumer, got)
        });
        let (mut consumer, got) = drain.join().unwrap();
        assert_eq!(got, vec![(1, vec![1; 8]), (2, vec![2; 8])]);
        // The second lap, written by another thread while this one reads.
        let fill = {
            let producer = producer.clone();
            thread::spawn(move || {
                producer.push(&id(3), &[3; 8]).unwrap();
                producer.push(&id(4), &[4; 8]).unwrap();
            })
        };
        let got = read_n(&mut consumer, 2);
        fill.join().unwrap();
        assert_eq!(got, vec![(3, vec![3; 8]), (4, vec![4; 8])]);
    });
}

#[test]
fn release_makes_room_for_a_producer_that_found_the_ring_full() {
    loom::model(|| {
        let (producer, mut consumer) = ring(CAPACITY, MAX_RECORD).unwrap();
        producer.push(&id(1), &[1; 8]).unwrap();
        producer.push(&id(2), &[2; 8]).unwrap();
        let reader = thread::spawn(move || read_n(&mut consumer, 3));
        // Full until the reader releases; then the record goes where 1 was.
        push_retry(&producer, 3, &[3; 8]);
        let got = reader.join().unwrap();
        assert_eq!(got, vec![(1, vec![1; 8]), (2, vec![2; 8]), (3, vec![3; 8])]);
    });
}

#[test]
fn claimed_first_committed_last() {
    loom::model(|| {
        let (producer, mut consumer) = ring(CAPACITY, MAX_RECORD).unwrap();
        let mut first = producer.claim(&id(1), 8).unwrap();
        let second = {
            let producer = producer.clone();
            thread::spawn(move || producer.push(&id(2), &[2; 8]).unwrap())
        };
        // The consumer must not read 2 before 1 is committed, nor 1 before it is complete.
        let reader = thread::spawn(move || read_n(&mut consumer, 2));
        first.payload_mut().copy_from_slice(&[1; 8]);
        first.commit();
        second.join().unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got, vec![(1, vec![1; 8]), (2, vec![2; 8])]);
    });
}

#[test]
fn aborted_claim_is_skipped() {
    loom::model(|| {
        let (producer, mut consumer) = ring(CAPACITY, MAX_RECORD).unwrap();
        // Head at 24, so whichever claim comes second pads to the end and wraps.
        advance(&producer, &mut consumer, 0);
        let aborter = {
            let producer = producer.clone();
            thread::spawn(move || {
                let mut claim = producer.claim(&id(1), 0).unwrap();
                claim.payload_mut().fill(1);
                drop(claim);
            })
        };
        let pusher = {
            let producer = producer.clone();
            thread::spawn(move || producer.push(&id(2), &[]).unwrap())
        };
        let got = read_n(&mut consumer, 1);
        assert_eq!(got, vec![(2, vec![])]);
        aborter.join().unwrap();
        pusher.join().unwrap();
        assert!(consumer.read(CAPACITY).is_none());
        assert_eq!(consumer.claimed_bytes(), 0);
        // The space of the aborted claim is usable again.
        producer.push(&id(3), &[3; 8]).unwrap();
        assert_eq!(read_n(&mut consumer, 1), vec![(3, vec![3; 8])]);
    });
}

#[test]
fn full_producer_gets_space_the_consumer_has_not_handed_back_yet() {
    loom::model(|| {
        use loom::sync::Arc;
        use loom::sync::atomic::{AtomicBool, Ordering};

        let (producer, mut consumer) = ring(CAPACITY, MAX_RECORD).unwrap();
        // 1 takes 0..24, 2 takes 24..56. A third 24-byte record needs 1's space (padding
        // 56..64, then 0..24), and consuming 1 alone is less than a publishing batch.
        producer.push(&id(1), &[]).unwrap();
        producer.push(&id(2), &[2; 8]).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                // Reads of at most 24 bytes: record 1, then nothing (2 is longer), so only
                // a read that finds nothing can hand 1's space back.
                let first = loop {
                    if let Some(run) = consumer.read(24) {
                        let got: Vec<_> = run.records().map(|(e, _)| e.as_bytes()[0]).collect();
                        run.release();
                        break got;
                    }
                    thread::yield_now();
                };
                while !done.load(Ordering::Acquire) {
                    assert!(consumer.read(24).is_none());
                    thread::yield_now();
                }
                (consumer, first)
            })
        };
        push_retry(&producer, 3, &[]);
        done.store(true, Ordering::Release);
        let (mut consumer, first) = reader.join().unwrap();
        assert_eq!(first, vec![1]);
        assert_eq!(read_n(&mut consumer, 2), vec![(2, vec![2; 8]), (3, vec![])]);
    });
}
