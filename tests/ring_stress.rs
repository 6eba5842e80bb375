//! Stress test of the ring: several producers push millions of records of varied lengths,
//! each carrying a checksum; one consumer checks that it sees every record exactly once, in
//! each producer's order, intact, with zero padding, through many full rings and wrap-arounds.
//!
//! `HERALD_RING_STRESS_RECORDS` sets the total number of records (default: 1,000,000 in a
//! debug build, 8,000,000 with `--release`, 2,000 under Miri).

use std::thread;
use std::time::{Duration, Instant};

use herald::EventId;
use herald::ringbuf::{ClaimError, Consumer, Producer, ring};

const PRODUCERS: u32 = 4;
const CAPACITY: usize = 16 * 1024;
const MAX_RECORD: usize = 256;
/// The consumer pauses this often, so the ring certainly fills and producers meet `Full`.
const PAUSE_EVERY: u64 = 100_000;

fn total_records() -> u64 {
    if let Ok(n) = std::env::var("HERALD_RING_STRESS_RECORDS") {
        return n.parse().expect("HERALD_RING_STRESS_RECORDS is a number");
    }
    if cfg!(miri) {
        2_000
    } else if cfg!(debug_assertions) {
        1_000_000
    } else {
        8_000_000
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a, 32 bits.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Payload length and contents of record `seq` of `producer`.
fn fill(producer: u32, seq: u64, payload: &mut [u8]) {
    let mut state = mix((u64::from(producer) << 40) ^ seq);
    for chunk in payload.chunks_mut(8) {
        state = mix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn payload_len(producer: u32, seq: u64, max: usize) -> usize {
    (mix(seq ^ u64::from(producer).rotate_left(32)) % (max as u64 + 1)) as usize
}

/// Event id: producer (4 bytes), sequence (8), checksum of the payload (4).
fn event_id(producer: u32, seq: u64, sum: u32) -> EventId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&producer.to_le_bytes());
    id[4..12].copy_from_slice(&seq.to_le_bytes());
    id[12..].copy_from_slice(&sum.to_le_bytes());
    EventId::from_bytes(id)
}

/// Pushes `count` records; returns how many claims found the ring full.
fn produce(ring: Producer, producer: u32, count: u64) -> u64 {
    let max = ring.max_payload();
    let mut fulls = 0;
    let mut scratch = vec![0u8; max];
    for seq in 0..count {
        let len = payload_len(producer, seq, max);
        let payload = &mut scratch[..len];
        fill(producer, seq, payload);
        let id = event_id(producer, seq, checksum(payload));
        let mut aborted = false;
        loop {
            match ring.claim(&id, len) {
                Ok(mut claim) => {
                    // Now and then write garbage and abort, then claim again.
                    // Once per such record: aborting on every retry would never end.
                    if seq % 97 == 13 && !aborted && claim.payload_len() > 0 {
                        aborted = true;
                        claim.payload_mut().fill(0xa5);
                        claim.abort();
                        continue;
                    }
                    claim.payload_mut().copy_from_slice(payload);
                    claim.commit();
                    break;
                }
                Err(ClaimError::Full) => {
                    fulls += 1;
                    thread::yield_now();
                }
                Err(e) => panic!("producer {producer}: {e}"),
            }
        }
    }
    fulls
}

/// Reads `total` records and checks each; returns the number of runs.
fn consume(mut consumer: Consumer, per_producer: u64, total: u64) -> u64 {
    let mut next = vec![0u64; PRODUCERS as usize];
    let limits = [MAX_RECORD, 1024, 4096, usize::MAX];
    let (mut seen, mut runs) = (0u64, 0u64);
    let mut idle: Option<Instant> = None;
    while seen < total {
        let max_bytes = limits[(runs % 4) as usize];
        let Some(run) = consumer.read(max_bytes) else {
            // A hang is a bug: fail with what the consumer sees instead of waiting for ever.
            let since = *idle.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "no progress for 10 s after {seen} of {total} records: {consumer:?}, stall {:?}",
                consumer.stall()
            );
            thread::yield_now();
            continue;
        };
        idle = None;
        runs += 1;
        let bytes = run.bytes();
        assert!(bytes.len() <= max_bytes && bytes.len() % 8 == 0);
        let mut offset = 0;
        let mut count = 0;
        for (id, payload) in run.records() {
            let id = id.as_bytes();
            let producer = u32::from_le_bytes(id[..4].try_into().unwrap());
            let seq = u64::from_le_bytes(id[4..12].try_into().unwrap());
            let sum = u32::from_le_bytes(id[12..].try_into().unwrap());
            let expected = &mut next[producer as usize];
            assert_eq!(seq, *expected, "producer {producer}: out of order or lost");
            *expected += 1;
            assert_eq!(payload.len(), payload_len(producer, seq, MAX_RECORD - 24));
            assert_eq!(
                checksum(payload),
                sum,
                "producer {producer} seq {seq}: corrupt"
            );
            // Header word: payload length, kind 1, flags and reserved 0; padding zero.
            let record_len = (24 + payload.len()).next_multiple_of(8);
            let record = &bytes[offset..offset + record_len];
            assert_eq!(&record[..4], &(payload.len() as u32).to_le_bytes());
            assert_eq!(&record[4..8], &[1, 0, 0, 0]);
            assert_eq!(&record[8..24], id);
            assert!(record[24 + payload.len()..].iter().all(|&b| b == 0));
            offset += record_len;
            count += 1;
        }
        assert_eq!((offset, count), (bytes.len(), run.record_count()));
        run.release();
        let before = seen;
        seen += count as u64;
        if before / PAUSE_EVERY != seen / PAUSE_EVERY {
            thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(next.iter().all(|&n| n == per_producer));
    assert!(consumer.read(usize::MAX).is_none());
    runs
}

#[test]
fn many_producers_one_consumer() {
    let per_producer = total_records() / u64::from(PRODUCERS);
    let total = per_producer * u64::from(PRODUCERS);
    let (producer, consumer) = ring(CAPACITY, MAX_RECORD).unwrap();
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let ring = producer.clone();
            thread::spawn(move || produce(ring, p, per_producer))
        })
        .collect();
    drop(producer);
    let runs = consume(consumer, per_producer, total);
    let fulls: u64 = producers.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "{total} records, {runs} runs, {fulls} full claims in {:?}",
        started.elapsed()
    );
    assert!(fulls > 0, "the ring never filled");
}
