//! Membership frames pass the same gate as every frame: forged, replayed, foreign-cluster
//! and malformed ones are dropped and counted, and never reach the membership state machine,
//! so no unsigned message can declare a node failed.

use std::net::SocketAddr;

use bytes::Bytes;
use herald::Reject;
use herald::auth::{Key, Keyring};
use herald::endpoint::{Endpoint, EndpointConfig, Now};
use herald::membership::{MemberState, Membership, MembershipConfig, Message};
use herald::wire::{
    ClusterId, Flags, FrameKind, GossipKind, GossipMessage, HeaderFields, MemberRecord,
    write_membership,
};

const CLUSTER: &str = "shop";

fn keyring(byte: u8) -> Keyring {
    Keyring::new(1, Key::from_bytes([byte; 32])).unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A membership frame from node 2 saying node 3 failed.
fn verdict(now: Now, cluster: &str, key: &Keyring, ts_offset: u64) -> Bytes {
    verdict_from(2, now, cluster, key, ts_offset)
}

fn verdict_from(sender: u64, now: Now, cluster: &str, key: &Keyring, ts_offset: u64) -> Bytes {
    let fields = HeaderFields {
        kind: FrameKind::Membership,
        flags: Flags::EMPTY,
        key_id: 1,
        cluster: ClusterId::from_name(cluster),
        node: sender,
        incarnation: 20,
        sequence: 0,
        timestamp_ns: now.unix_ns + ts_offset,
    };
    let entries = [MemberRecord {
        node: 3,
        incarnation: 30,
        counter: 0,
        state: MemberState::Failed,
        addr: Some(addr(7003)),
    }];
    let msg = GossipMessage {
        kind: GossipKind::Notify,
        seq: 0,
        target_node: 0,
        target_incarnation: 0,
        target_addr: None,
        entries: &entries,
    };
    let mut buf = vec![0; 1472];
    Bytes::copy_from_slice(write_membership(&mut buf, &fields, &msg, key).unwrap())
}

/// Node 1: an endpoint and a membership that knows node 3 as alive.
fn node(now: Now) -> (Endpoint, Membership) {
    let config = EndpointConfig::new(ClusterId::from_name(CLUSTER), 1, 10);
    let mut endpoint = Endpoint::new(config, keyring(7), now);
    endpoint.enable_membership();
    let mut membership = Membership::new(MembershipConfig::new(1, 10), now.instant);
    let hello = Message {
        kind: GossipKind::Notify,
        seq: 0,
        target_node: 0,
        target_incarnation: 0,
        target_addr: None,
        entries: vec![MemberRecord {
            node: 3,
            incarnation: 30,
            counter: 0,
            state: MemberState::Alive,
            addr: Some(addr(7003)),
        }],
    };
    membership.handle_message(now.instant, addr(7003), (3, 30), &hello);
    (endpoint, membership)
}

/// What the driver does: every verified membership frame goes to the state machine.
fn forward(endpoint: &mut Endpoint, membership: &mut Membership, now: Now) -> usize {
    let mut n = 0;
    while let Some(frame) = endpoint.poll_membership() {
        let gossip = frame.membership().unwrap();
        let fields = frame.header_fields();
        let msg = Message::from_gossip(&gossip);
        membership.handle_message(
            now.instant,
            addr(7002),
            (fields.node, fields.incarnation),
            &msg,
        );
        n += 1;
    }
    n
}

#[test]
fn forged_replayed_foreign_and_malformed_verdicts_are_dropped_and_counted() {
    let now = Now::system();
    let (mut endpoint, mut membership) = node(now);

    // Signed with another key: a forgery.
    let forged = verdict(now, CLUSTER, &keyring(8), 0);
    let err = endpoint.handle_datagram(now, forged).unwrap_err();
    assert!(matches!(err, Reject::Auth(_)), "{err:?}");
    // Another cluster's frame.
    let foreign = verdict(now, "other", &keyring(7), 0);
    assert_eq!(
        endpoint.handle_datagram(now, foreign),
        Err(Reject::ForeignCluster)
    );
    // A body with an unknown member state, re-signed: malformed.
    let mut bad = verdict(now, CLUSTER, &keyring(7), 0).to_vec();
    bad[64 + 40 + 20] = 9;
    let err = endpoint.handle_datagram(now, Bytes::from(bad)).unwrap_err();
    assert_eq!(err.name(), "bad_membership");

    assert_eq!(forward(&mut endpoint, &mut membership, now), 0);
    assert_eq!(
        membership.state_of(3),
        Some(MemberState::Alive),
        "no unsigned verdict"
    );

    // The genuine frame is accepted once; the same bytes again, or an older timestamp, not.
    let genuine = verdict(now, CLUSTER, &keyring(7), 2);
    endpoint.handle_datagram(now, genuine.clone()).unwrap();
    assert_eq!(
        endpoint.handle_datagram(now, genuine),
        Err(Reject::Duplicate)
    );
    let older = verdict(now, CLUSTER, &keyring(7), 1);
    assert_eq!(endpoint.handle_datagram(now, older), Err(Reject::Duplicate));
    assert_eq!(forward(&mut endpoint, &mut membership, now), 1);
    assert_eq!(membership.state_of(3), Some(MemberState::Failed));

    let stats = endpoint.stats();
    assert_eq!(stats.membership_accepted, 1);
    assert_eq!(stats.drops_by_name("foreign_cluster"), 1);
    assert_eq!(stats.drops_by_name("bad_membership"), 1);
    assert_eq!(stats.drops_by_name("duplicate"), 2);
    assert_eq!(stats.drops_total(), 5);
}

#[test]
fn a_flood_of_made_up_senders_cannot_lock_members_or_joiners_out() {
    let now = Now::system();
    let flood = |endpoint: &mut Endpoint| {
        for fake in 10_000..11_100u64 {
            let _ = endpoint.handle_datagram(now, verdict_from(fake, now, CLUSTER, &keyring(7), 1));
        }
    };
    // Without membership, a full table refuses a genuine new sender.
    let config = EndpointConfig::new(ClusterId::from_name(CLUSTER), 1, 10);
    let mut before = Endpoint::new(config.clone(), keyring(7), now);
    flood(&mut before);
    let real = verdict_from(99, now, CLUSTER, &keyring(7), 2);
    assert_eq!(
        before.handle_datagram(now, real.clone()),
        Err(Reject::TooManySenders)
    );

    // With membership: members are admitted, unknown senders keep to a quarter of the table.
    let mut endpoint = Endpoint::new(config, keyring(7), now);
    endpoint.set_members([99]);
    flood(&mut endpoint);
    assert!(endpoint.sender_count() <= 1024 / 4);
    assert_eq!(endpoint.handle_datagram(now, real), Ok(()));
    // A node about to join (not a member yet) still gets its join through.
    let joiner = verdict_from(77, now, CLUSTER, &keyring(7), 3);
    assert_eq!(endpoint.handle_datagram(now, joiner), Ok(()));
    assert!(endpoint.stats().unknown_evicted > 0);
    assert_eq!(endpoint.stats().drops_by_name("too_many_senders"), 0);
}

/// A data frame from `sender` (a run that started long ago), validly signed.
fn data_from(sender: u64, now: Now, sequence: u64) -> Bytes {
    let fields = HeaderFields {
        kind: FrameKind::Data,
        flags: Flags::EMPTY,
        key_id: 1,
        cluster: ClusterId::from_name(CLUSTER),
        node: sender,
        incarnation: 20,
        sequence,
        timestamp_ns: now.unix_ns,
    };
    let mut buf = vec![0; 256];
    let mut w = herald::wire::FrameWriter::new(&mut buf, &fields).unwrap();
    w.push(&herald::EventId::from_name("e"), b"x").unwrap();
    Bytes::copy_from_slice(w.finish(&keyring(7)))
}

/// The nodes the endpoint sends statuses to now.
fn answered(endpoint: &mut Endpoint, now: Now) -> Vec<u64> {
    let mut buf = vec![0; 1472];
    std::iter::from_fn(|| endpoint.poll_transmit(now, &mut buf).map(|t| t.to)).collect()
}

#[test]
fn senders_the_cluster_does_not_know_go_unanswered_only_while_they_churn_the_table() {
    let mut now = Now::system();
    let config = EndpointConfig::new(ClusterId::from_name(CLUSTER), 1, 10);
    let mut endpoint = Endpoint::new(config, keyring(7), now);
    endpoint.set_members([99]);
    // Calm: a sender the cluster does not know (yet) is answered like a member.
    endpoint
        .handle_datagram(now, data_from(99, now, 1))
        .unwrap();
    endpoint
        .handle_datagram(now, data_from(77, now, 1))
        .unwrap();
    let to = answered(&mut endpoint, now);
    assert!(to.contains(&99) && to.contains(&77), "{to:?}");
    // A flood of made-up senders churns the unknown share: only members are answered.
    for fake in 10_000..11_100u64 {
        let _ = endpoint.handle_datagram(now, data_from(fake, now, 1));
    }
    assert!(endpoint.stats().unknown_evicted > 0);
    now.instant += std::time::Duration::from_secs(1);
    now.unix_ns += 1_000_000_000;
    endpoint
        .handle_datagram(now, data_from(99, now, 2))
        .unwrap();
    let to = answered(&mut endpoint, now);
    assert_eq!(to, [99], "members only during the flood");
    // Ten quiet seconds later, everyone is answered again.
    now.instant += std::time::Duration::from_secs(10);
    now.unix_ns += 10_000_000_000;
    endpoint
        .handle_datagram(now, data_from(99, now, 3))
        .unwrap();
    endpoint
        .handle_datagram(now, data_from(11_099, now, 2))
        .unwrap();
    let to = answered(&mut endpoint, now);
    assert!(to.contains(&99) && to.contains(&11_099), "{to:?}");
}
