//! A flood of validly signed frames from made-up node ids (a secret holder gone rogue, or a
//! bug) cannot lock real members out: with membership, a node that joins during the flood
//! delivers its events to the flooded node; without it, the same flood fills the sender
//! table and genuine new senders are refused.
#![allow(clippy::disallowed_types)]

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald::endpoint::{Now, new_incarnation};
use herald::wire::{ClusterId, Flags, FrameKind, FrameWriter, HeaderFields};
use herald::{EventId, MembershipSettings, Router};

const CLUSTER: &str = "member-flood";
/// More made-up senders than the sender table holds (1024).
const FAKES: std::ops::Range<u64> = 10_000..11_100;

/// Sends `target`, until stopped, rounds of one data frame from each of [`FAKES`], each
/// validly signed with the cluster's key and in sequence.
fn flood(target: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let keyring = util::test_keyring();
        let event = EventId::from_name("flood.fake");
        // Made-up nodes that started after the flooded one: a new session for one of them,
        // after it was made to make way, starts with a gap.
        let start = Now::system().unix_ns;
        let mut buf = [0u8; 256];
        let mut sent = 0;
        let mut sequence = 0;
        while !stop.load(Ordering::Relaxed) {
            sequence += 1;
            for node in FAKES {
                let fields = HeaderFields {
                    kind: FrameKind::Data,
                    flags: Flags::EMPTY,
                    key_id: 1,
                    cluster: ClusterId::from_name(CLUSTER),
                    node,
                    incarnation: new_incarnation(start, node),
                    sequence,
                    timestamp_ns: Now::system().unix_ns,
                };
                let mut w = FrameWriter::new(&mut buf, &fields).unwrap();
                w.push(&event, b"fake").unwrap();
                let frame = w.finish(&keyring);
                if socket.send_to(frame, target).is_ok() {
                    sent += 1;
                }
            }
            // The table is what is attacked, not the node's CPU: a burst of every made-up
            // sender a few times a second keeps it full (a flood beyond what a node can
            // read is a different attack, which no sender table answers).
            std::thread::sleep(Duration::from_millis(250));
        }
        sent
    })
}

fn builder(id: u64, addr: SocketAddr) -> herald::RouterBuilder {
    Router::builder()
        .cluster(CLUSTER)
        .node_id(id)
        .keyring(util::test_keyring())
        .udp_bind(addr)
}

fn member(id: u64, addr: SocketAddr, seed: SocketAddr) -> Router {
    builder(id, addr)
        .membership(MembershipSettings {
            seeds: vec![seed],
            ..MembershipSettings::default()
        })
        .build()
        .expect("router builds")
}

fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_node_joining_during_a_flood_of_made_up_senders_delivers() {
    let addrs = util::free_udp_addrs(3);
    let flooded = member(1, addrs[0], addrs[0]);
    let other = member(2, addrs[1], addrs[0]);
    assert!(wait(Duration::from_secs(5), || flooded.members().len() == 2));
    let real = EventId::from_name("cart.changed");
    let (_sub, rx) = flooded.event(real).receiver();

    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(addrs[0], Arc::clone(&stop));
    // Let the flood fill what it can of the table first.
    std::thread::sleep(Duration::from_millis(800));

    // A node joins through the flooded node while the flood goes on, and its events are
    // delivered there, as are those of the member that was already there.
    let joined_at = Instant::now();
    let joiner = member(3, addrs[2], addrs[0]);
    assert!(
        wait(Duration::from_secs(10), || flooded.members().len() == 3),
        "the joiner is let in during the flood: {:?} {:?}",
        flooded.members(),
        flooded.metrics()
    );
    for (i, r) in [&joiner, &other].iter().enumerate() {
        r.event(real).raise(&[i as u8]).unwrap();
    }
    let mut got: Vec<u8> = (0..2)
        .map(|_| match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(m) => m.payload[0],
            Err(e) => panic!(
                "real members' events are delivered during the flood: {e}; {:?}",
                flooded.metrics()
            ),
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1]);
    println!(
        "joined and delivered {:?} after starting, under the flood",
        joined_at.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let m = flooded.metrics();
    println!("{sent} flood frames sent; {m:?}");
    assert!(sent >= 2 * (FAKES.end - FAKES.start), "the flood ran");
    assert_eq!(m.drops_for("too_many_senders"), 0, "{m:?}");
    // While they churn the table, senders the cluster does not know are not answered
    // (statuses, requests for what they lost): the flood costs reading and checking, little
    // more (the first burst, before any had to make way, was answered). Requests for lost
    // frames ride on statuses, so this bounds them too.
    assert!(m.recovery("statuses_sent") < sent / 4, "{m:?}");

    // The same flood against a node without membership fills its sender table: it refuses
    // senders (which is what locked a genuine new sender out for 10 s before membership).
    let plain_addr = util::free_udp_addrs(1)[0];
    let plain = builder(4, plain_addr).build().expect("router builds");
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(plain_addr, Arc::clone(&stop));
    let refused = wait(Duration::from_secs(5), || {
        plain.metrics().drops_for("too_many_senders") > 0
    });
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    assert!(refused, "without membership the flood fills the table");
}
