use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::auth::Key;
use crate::event::{EventId, MissedReason};
use crate::ringbuf::ring;
use crate::testing::{Faults, SimNetwork};
use crate::wire::ClusterId;

const KEY: [u8; 32] = [0x42; 32];

fn start() -> Now {
    Now {
        instant: Instant::now(),
        unix_ns: 1_800_000_000_000_000_000,
    }
}

/// A node started at `now`, without recovery (these tests look at one receiver's session
/// and its reorder window; `recovery_tests` cover recovery); `random` tells its incarnations
/// apart.
fn endpoint(node: u64, random: u64, now: Now) -> Endpoint {
    let incarnation = new_incarnation(now.unix_ns, random);
    let mut config = EndpointConfig::new(ClusterId::from_name("test"), node, incarnation);
    config.recovery.enabled = false;
    Endpoint::new(config, Keyring::new(1, Key::from_bytes(KEY)).unwrap(), now)
}

/// One data frame from `ep` carrying `payloads`, as bytes on the wire.
fn data(ep: &mut Endpoint, now: Now, payloads: &[&[u8]]) -> Bytes {
    let (producer, mut consumer) = ring(1 << 12, 1 << 10).unwrap();
    for p in payloads {
        producer.push(&EventId::from_name("e"), p).unwrap();
    }
    let mut buf = vec![0; 1472];
    let len = ep.encode_from_ring(now, &mut consumer, &mut buf).unwrap();
    Bytes::copy_from_slice(&buf[..len])
}

fn heartbeat(ep: &mut Endpoint, now: Now) -> Bytes {
    let mut buf = vec![0; 1472];
    let len = ep.encode_heartbeat(now, &mut buf, Flags::EMPTY).unwrap();
    Bytes::copy_from_slice(&buf[..len])
}

fn drain(ep: &mut Endpoint) -> Vec<Received> {
    std::iter::from_fn(|| ep.poll_output()).collect()
}

fn sequences(out: &[Received]) -> Vec<u64> {
    out.iter()
        .filter_map(|r| match r {
            Received::Frame(f) => Some(f.header_fields().sequence),
            Received::Missed(_) => None,
        })
        .collect()
}

fn missed(out: &[Received]) -> Vec<(MissedReason, Option<(u64, u64)>)> {
    out.iter()
        .filter_map(|r| match r {
            Received::Missed(m) => Some((m.reason, m.range)),
            Received::Frame(_) => None,
        })
        .collect()
}

#[test]
fn delivers_in_order_and_drops_duplicates() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    let f1 = data(&mut a, now, &[b"one"]);
    let f2 = data(&mut a, now, &[b"two", b"three"]);
    b.handle_datagram(now, f1.clone()).unwrap();
    b.handle_datagram(now, f2.clone()).unwrap();
    assert_eq!(b.handle_datagram(now, f1), Err(Reject::Duplicate));
    assert_eq!(b.handle_datagram(now, f2), Err(Reject::Duplicate));
    let out = drain(&mut b);
    assert_eq!(sequences(&out), [1, 2]);
    assert!(missed(&out).is_empty());
    assert_eq!(b.stats().drops_by_name("duplicate"), 2);
    let Received::Frame(f) = &out[1] else {
        panic!()
    };
    let payloads: Vec<_> = f.records().map(|r| r.payload).collect();
    assert_eq!(payloads, [&b"two"[..], &b"three"[..]]);
}

#[test]
fn reordered_frames_wait_for_the_gap() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    let frames: Vec<_> = (0..3).map(|_| data(&mut a, now, &[b"x"])).collect();
    b.handle_datagram(now, frames[0].clone()).unwrap();
    b.handle_datagram(now, frames[2].clone()).unwrap();
    assert_eq!(sequences(&drain(&mut b)), [1]);
    // Inside the reorder window nothing is given up.
    b.handle_timeout(now.instant + Duration::from_millis(5));
    assert!(drain(&mut b).is_empty());
    b.handle_datagram(now, frames[1].clone()).unwrap();
    let out = drain(&mut b);
    assert_eq!(sequences(&out), [2, 3]);
    assert!(missed(&out).is_empty());
}

#[test]
fn a_gap_becomes_one_missed_after_the_reorder_window() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    let frames: Vec<_> = (0..5).map(|_| data(&mut a, now, &[b"x"])).collect();
    b.handle_datagram(now, frames[0].clone()).unwrap();
    b.handle_datagram(now, frames[4].clone()).unwrap();
    let deadline = now.instant + b.config().reorder_window;
    b.handle_timeout(deadline - Duration::from_millis(1));
    let mut out = drain(&mut b);
    assert!(missed(&out).is_empty());
    b.handle_timeout(deadline);
    out.extend(drain(&mut b));
    assert_eq!(missed(&out), [(MissedReason::Gap, Some((2, 4)))]);
    assert_eq!(sequences(&out), [1, 5]);
    // A late frame of the gap is a duplicate now: it was reported missed.
    assert_eq!(
        b.handle_datagram(now, frames[2].clone()),
        Err(Reject::Duplicate)
    );
    assert_eq!(b.stats().missed[MissedReason::Gap.index()], 1);
}

#[test]
fn heartbeat_reveals_a_lost_tail() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    let first = data(&mut a, now, &[b"x"]);
    let _lost = data(&mut a, now, &[b"y"]);
    b.handle_datagram(now, first).unwrap();
    let later = now.after(Duration::from_millis(100));
    b.handle_datagram(later, heartbeat(&mut a, later)).unwrap();
    b.handle_timeout(later.instant + b.config().reorder_window);
    let out = drain(&mut b);
    assert_eq!(missed(&out), [(MissedReason::Gap, Some((2, 2)))]);
}

#[test]
fn refuses_foreign_forged_own_and_skewed_frames() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    // Another cluster.
    let mut foreign = Endpoint::new(
        EndpointConfig::new(ClusterId::from_name("other"), 1, 10),
        Keyring::new(1, Key::from_bytes(KEY)).unwrap(),
        now,
    );
    let f = data(&mut foreign, now, &[b"x"]);
    assert_eq!(b.handle_datagram(now, f), Err(Reject::ForeignCluster));
    // Another key: a forged frame with a high sequence must not move the window.
    let mut forger = Endpoint::new(
        EndpointConfig::new(ClusterId::from_name("test"), 1, 10),
        Keyring::new(1, Key::from_bytes([7; 32])).unwrap(),
        now,
    );
    forger.last_seq = 1 << 40;
    let f = data(&mut forger, now, &[b"x"]);
    assert_eq!(
        b.handle_datagram(now, f),
        Err(Reject::Auth(crate::auth::VerifyError::BadTag))
    );
    assert_eq!(b.sender_count(), 0, "nothing is kept for a forged frame");
    // The node's own frame.
    let f = data(&mut b, now, &[b"x"]);
    assert_eq!(b.handle_datagram(now, f), Err(Reject::OwnFrame));
    // A frame from too far in the past.
    let old = Now {
        unix_ns: now.unix_ns - 6_000_000_000,
        ..now
    };
    let f = data(&mut a, old, &[b"x"]);
    assert_eq!(b.handle_datagram(now, f), Err(Reject::ClockSkew));
    // Garbage.
    assert!(matches!(
        b.handle_datagram(now, Bytes::from_static(b"garbage")),
        Err(Reject::Parse(_))
    ));
    // The genuine sender still gets through, from sequence 2 (1 was skewed, and is reported
    // once the reorder window passes, since it was sent after b started).
    let f = data(&mut a, now, &[b"x"]);
    b.handle_datagram(now, f).unwrap();
    assert_eq!(b.stats().drops_total(), 5);
    for name in ["foreign_cluster", "bad_tag", "own_frame", "clock_skew"] {
        assert_eq!(b.stats().drops_by_name(name), 1, "{name}");
    }
}

#[test]
fn restart_retires_the_old_incarnation_and_reports_its_tail() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    let f1 = data(&mut a, now, &[b"x"]);
    b.handle_datagram(now, f1.clone()).unwrap();
    let _lost = data(&mut a, now, &[b"y"]);
    let t = now.after(Duration::from_millis(50));
    b.handle_datagram(t, heartbeat(&mut a, t)).unwrap();
    // a restarts: new incarnation, sequence from 1.
    let t = now.after(Duration::from_millis(60));
    let mut a2 = endpoint(1, 11, t);
    b.handle_datagram(t, data(&mut a2, t, &[b"z"])).unwrap();
    let out = drain(&mut b);
    let notices: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            Received::Missed(m) => Some(m.clone()),
            Received::Frame(_) => None,
        })
        .collect();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].reason, MissedReason::SenderRestarted);
    assert_eq!(notices[0].incarnation, a.config().incarnation);
    assert_eq!(notices[0].range, Some((2, 2)));
    assert_eq!(sequences(&out), [1, 1]);
    // Frames of the old incarnation are replays now, even new-looking ones.
    assert_eq!(b.handle_datagram(t, f1), Err(Reject::StaleIncarnation));
    let late = data(&mut a, t, &[b"w"]);
    assert_eq!(b.handle_datagram(t, late), Err(Reject::StaleIncarnation));
}

#[test]
fn a_clean_shutdown_reports_nothing() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    b.handle_datagram(now, data(&mut a, now, &[b"x"])).unwrap();
    let t = now.after(Duration::from_millis(1));
    let mut buf = vec![0; 1472];
    let len = a.encode_closing(t, &mut buf).unwrap();
    b.handle_datagram(t, Bytes::copy_from_slice(&buf[..len]))
        .unwrap();
    b.handle_timeout(t.instant + Duration::from_secs(10));
    let t = now.after(Duration::from_secs(11));
    let mut a2 = endpoint(1, 11, t);
    b.handle_datagram(t, data(&mut a2, t, &[b"y"])).unwrap();
    let out = drain(&mut b);
    assert!(missed(&out).is_empty(), "{out:?}");
    assert_eq!(sequences(&out), [1, 1]);
}

#[test]
fn silence_is_reported_once() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    b.handle_datagram(now, data(&mut a, now, &[b"x"])).unwrap();
    let dead = now.instant + b.config().dead_timeout;
    assert_eq!(b.poll_timeout(), Some(now.instant)); // b's own first heartbeat
    b.handle_timeout(dead);
    b.handle_timeout(dead + Duration::from_secs(5));
    let out = drain(&mut b);
    assert_eq!(missed(&out), [(MissedReason::PeerSilent, None)]);
    // Back again: no new notice unless frames are missing.
    let t = now.after(Duration::from_secs(7));
    b.handle_datagram(t, data(&mut a, t, &[b"y"])).unwrap();
    assert_eq!(sequences(&drain(&mut b)), [2]);
}

#[test]
fn overflow_flag_raises_missed_once_per_episode() {
    let now = start();
    let (mut a, mut b) = (endpoint(1, 10, now), endpoint(2, 20, now));
    a.note_overflow(now.instant);
    for _ in 0..3 {
        b.handle_datagram(now, data(&mut a, now, &[b"x"])).unwrap();
    }
    let t = now.after(Duration::from_millis(200));
    b.handle_datagram(t, data(&mut a, t, &[b"x"])).unwrap(); // last flagged frame
    b.handle_datagram(t, data(&mut a, t, &[b"x"])).unwrap(); // flag cleared
    let out = drain(&mut b);
    assert_eq!(missed(&out), [(MissedReason::SenderOverflowed, None)]);
    assert_eq!(sequences(&out), [1, 2, 3, 4, 5]);
}

#[test]
fn a_sender_that_started_later_is_audited_from_sequence_one() {
    let now = start();
    let before = Now {
        unix_ns: now.unix_ns - 2_000_000_000,
        ..now
    };
    let (mut a, mut b) = (endpoint(1, 10, before), endpoint(2, 20, now));
    // A sender that started before the receiver: its earlier frames may predate the
    // receiver, so the session starts at the first frame heard, with no notice.
    let _before = data(&mut a, before, &[b"x"]);
    b.handle_datagram(now, data(&mut a, now, &[b"x"])).unwrap();
    // A sender that started after it: every frame was meant for it, and a lost one counts.
    let t = now.after(Duration::from_secs(2));
    let mut c = endpoint(3, 30, t);
    let _lost = data(&mut c, t, &[b"x"]);
    b.handle_datagram(t, data(&mut c, t, &[b"x"])).unwrap();
    b.handle_timeout(t.instant + b.config().reorder_window);
    let out = drain(&mut b);
    let notices: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            Received::Missed(m) if m.reason == MissedReason::Gap => Some((m.node, m.range)),
            _ => None,
        })
        .collect();
    assert_eq!(notices, [(3, Some((1, 1)))]);
}

#[test]
fn the_number_of_senders_is_bounded() {
    let now = start();
    let mut config = EndpointConfig::new(ClusterId::from_name("test"), 100, 1);
    config.max_senders = 2;
    let mut b = Endpoint::new(config, Keyring::new(1, Key::from_bytes(KEY)).unwrap(), now);
    for node in 1..=3 {
        let mut a = endpoint(node, node, now);
        let result = b.handle_datagram(now, data(&mut a, now, &[b"x"]));
        assert_eq!(result.is_ok(), node <= 2, "node {node}");
    }
    assert_eq!(b.stats().drops_by_name("too_many_senders"), 1);
    // Once a sender has been quiet long enough, it makes room.
    let t = now.after(Duration::from_secs(20));
    let mut a = endpoint(3, 3, t);
    b.handle_datagram(t, data(&mut a, t, &[b"x"])).unwrap();
    assert_eq!(b.sender_count(), 2);
}

fn check_promise(net: &SimNetwork) {
    for s in 0..net.nodes.len() {
        for r in 0..net.nodes.len() {
            if s == r {
                continue;
            }
            let audit = net.audit(s, r);
            assert_eq!(audit.silent, 0, "silent loss {s}->{r}: {audit:?}");
            assert_eq!(audit.duplicates, 0, "{s}->{r}: {audit:?}");
            assert_eq!(audit.out_of_order, 0, "{s}->{r}: {audit:?}");
            assert_eq!(audit.delivered + audit.missed, audit.sent, "{s}->{r}");
        }
    }
}

fn traffic(net: &mut SimNetwork, events: u32) {
    let event = EventId::from_name("product.changed");
    for i in 0..events {
        for n in 0..net.nodes.len() {
            net.raise(n, &event, &i.to_le_bytes());
        }
        if i % 7 == 0 {
            net.run_for(Duration::from_micros(300));
        }
    }
    net.run_for(Duration::from_secs(2));
    // Heal the network: the first heartbeats after it reveal every lost tail, however long the
    // losses went on.
    net.set_faults(Faults::default());
    net.run_for(Duration::from_millis(500));
}

#[test]
fn perfect_network_delivers_everything_and_reports_nothing() {
    let mut net = SimNetwork::new(3, Faults::default(), 1);
    traffic(&mut net, 5000);
    check_promise(&net);
    for s in 0..3 {
        for r in 0..3 {
            if s != r {
                let audit = net.audit(s, r);
                assert_eq!(audit.delivered, 5000);
                assert!(audit.notices.is_empty(), "{:?}", audit.notices);
            }
        }
    }
}

#[test]
fn lossy_network_keeps_the_promise_without_recovery() {
    for (loss, burst) in [(0.01, 0.0), (0.05, 0.0), (0.2, 0.0), (0.02, 0.3)] {
        let faults = Faults {
            loss,
            burst,
            burst_len: 20,
            duplicate: 0.1,
            reorder: 0.1,
            ..Faults::default()
        };
        let mut net = SimNetwork::with_config(3, faults, 99, |c| c.recovery.enabled = false);
        traffic(&mut net, 3000);
        check_promise(&net);
        let audit = net.audit(0, 1);
        assert!(audit.missed > 0, "loss {loss} should lose something");
        assert!(audit.delivered > 0);
    }
}

#[test]
fn lossy_network_with_recovery_loses_nothing() {
    for (loss, burst) in [(0.01, 0.0), (0.05, 0.0), (0.2, 0.0), (0.02, 0.3)] {
        let faults = Faults {
            loss,
            burst,
            burst_len: 20,
            duplicate: 0.1,
            reorder: 0.1,
            ..Faults::default()
        };
        let mut net = SimNetwork::new(3, faults, 99);
        traffic(&mut net, 3000);
        check_promise(&net);
        for (s, r) in [(0, 1), (1, 2), (2, 0)] {
            let audit = net.audit(s, r);
            assert_eq!(audit.missed, 0, "loss {loss}: {:?}", audit.notices);
            assert_eq!(audit.delivered, audit.sent);
        }
        let resent: u64 = net
            .nodes
            .iter()
            .map(|n| n.endpoint.stats().frames_resent)
            .sum();
        assert!(resent > 0, "loss {loss}: nothing was sent again");
    }
}

#[test]
fn restart_in_the_middle_keeps_the_promise() {
    let mut net = SimNetwork::new(3, Faults::default(), 5);
    traffic(&mut net, 500);
    net.restart(0);
    traffic(&mut net, 500);
    check_promise(&net);
    let restarted = net.nodes[1]
        .received
        .iter()
        .filter(|r| matches!(r, Received::Missed(m) if m.reason == MissedReason::SenderRestarted))
        .count();
    assert_eq!(restarted, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 24 }))]

    #[test]
    fn any_fault_mix_keeps_the_promise(
        seed in any::<u64>(),
        loss in 0.0..0.3f64,
        burst in 0.0..0.5f64,
        burst_len in 0u32..50,
        duplicate in 0.0..0.3f64,
        reorder in 0.0..0.5f64,
        reorder_ms in 0u64..40,
    ) {
        let faults = Faults {
            loss,
            burst,
            burst_len,
            duplicate,
            reorder,
            reorder_delay: Duration::from_millis(reorder_ms),
            ..Faults::default()
        };
        let mut net = SimNetwork::new(3, faults.clone(), seed);
        traffic(&mut net, 400);
        check_promise(&net);
        let mut net = SimNetwork::with_config(3, faults, seed, |c| c.recovery.enabled = false);
        traffic(&mut net, 400);
        check_promise(&net);
    }
}

#[test]
fn an_authenticated_channel_may_skip_the_tag_but_nothing_else() {
    let now = start();
    let b_node = endpoint(2, 20, now);
    let mut b = b_node;
    let mut forger = Endpoint::new(
        EndpointConfig::new(
            ClusterId::from_name("test"),
            1,
            new_incarnation(now.unix_ns, 1),
        ),
        Keyring::new(1, Key::from_bytes([7; 32])).unwrap(),
        now,
    );
    let f = data(&mut forger, now, &[b"x"]);
    assert_eq!(
        b.handle_datagram(now, f.clone()),
        Err(Reject::Auth(crate::auth::VerifyError::BadTag))
    );
    b.handle_authenticated_datagram(now, f.clone()).unwrap();
    // Replays are still refused.
    assert_eq!(
        b.handle_authenticated_datagram(now, f),
        Err(Reject::Duplicate)
    );
    assert_eq!(sequences(&drain(&mut b)), [1]);
}

mod recovery;
mod sealed;
