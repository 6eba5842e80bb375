//! Writes the committed seed corpus: valid frames of several shapes and a few broken ones, so
//! the fuzzer starts past the magic bytes and the tag. Reproducible: run
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --bin gen-seeds` from the repository root.

use std::fs;
use std::path::Path;

use herald::EventId;
use herald::wire::{
    ControlFrame, Flags, FrameKind, FrameWriter, GossipKind, GossipMessage, MAX_ENTRIES,
    MAX_FRAME_LEN, MemberRecord, MemberState, write_control, write_membership,
};
use herald_fuzz::{ArbHeader, encode_all, test_keyring};

fn main() {
    let keyring = test_keyring();
    let header = ArbHeader {
        heartbeat: false,
        overflowed: false,
        cluster: 0x1234_5678_9abc_def0,
        node: 7,
        incarnation: 0xdead_beef,
        sequence: 42,
        timestamp_ns: 1_767_225_600_000_000_000,
    };
    let event = |n: u8, len: usize| ([n; 16], vec![n; len]);
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    let one = |events: &[([u8; 16], Vec<u8>)], header: ArbHeader, len: usize| {
        encode_all(&header.fields(), len, events, &keyring)
            .0
            .remove(0)
    };
    let mut buf = vec![0u8; 1472];
    seeds.push((
        "empty-data",
        FrameWriter::new(&mut buf, &header.fields())
            .unwrap()
            .finish(&keyring)
            .to_vec(),
    ));
    let heartbeat = ArbHeader {
        heartbeat: true,
        ..header
    };
    seeds.push((
        "heartbeat",
        FrameWriter::new(&mut buf, &heartbeat.fields())
            .unwrap()
            .finish(&keyring)
            .to_vec(),
    ));
    seeds.push(("one-record", one(&[event(1, 6)], header, 1472)));
    seeds.push(("zero-length-payload", one(&[event(2, 0)], header, 1472)));
    seeds.push((
        "many-records",
        one(
            &(0..15).map(|i| event(i, 64)).collect::<Vec<_>>(),
            header,
            1472,
        ),
    ));
    seeds.push(("max-payload-1472", one(&[event(3, 1356)], header, 1472)));
    seeds.push((
        "few-events-many-records",
        one(
            &(0..40).map(|i| event(i % 3, 16)).collect::<Vec<_>>(),
            header,
            1472,
        ),
    ));
    seeds.push(("big-frame", one(&[event(4, 8000)], header, MAX_FRAME_LEN)));
    let overflowed = ArbHeader {
        overflowed: true,
        ..header
    };
    seeds.push(("overflowed", one(&[event(5, 17)], overflowed, 1472)));
    let valid = one(&[event(6, 5), event(7, 0)], header, 1472);
    // The first record's event index (bytes 2-3 of its header) past the 2-id table.
    let mut bad_index = valid.clone();
    bad_index[64 + 2] = 7;
    seeds.push(("broken-event-index", bad_index));
    seeds.push(("broken-truncated", valid[..valid.len() - 7].to_vec()));
    let mut bad_count = valid.clone();
    bad_count[12] = 0xff;
    bad_count[13] = 0xff;
    seeds.push(("broken-count", bad_count));
    let mut bad_tag = valid;
    bad_tag[100] ^= 0x80;
    seeds.push(("broken-tag", bad_tag));

    // Control frames: a status asking for two ranges, an evicted answer naming two events,
    // one that does not know them all, and a status whose ranges are out of order.
    let control = |kind: FrameKind, flags: Flags, ranges: &[(u64, u64)], ids: &[EventId]| {
        let mut fields = header.fields();
        fields.kind = kind;
        fields.flags = flags;
        let mut buf = vec![0u8; 1472];
        let c = ControlFrame {
            target_node: 9,
            target_incarnation: 0xfeed,
            consumed: if kind == FrameKind::Status { 40 } else { 0 },
            ranges,
            ids,
        };
        write_control(&mut buf, &fields, &c, &keyring)
            .unwrap()
            .to_vec()
    };
    let ids = [EventId::from_bytes([1; 16]), EventId::from_bytes([2; 16])];
    seeds.push((
        "status",
        control(FrameKind::Status, Flags::EMPTY, &[(41, 41), (43, 50)], &[]),
    ));
    seeds.push((
        "evicted",
        control(FrameKind::Evicted, Flags::EMPTY, &[(3, 9)], &ids),
    ));
    seeds.push((
        "evicted-incomplete",
        control(FrameKind::Evicted, Flags::IDS_INCOMPLETE, &[(3, 9)], &[]),
    ));
    let mut disordered = control(FrameKind::Status, Flags::EMPTY, &[(41, 41), (43, 50)], &[]);
    // The second range's first sequence (body offset 24 + 16) before the first range.
    disordered[64 + 40] = 1;
    seeds.push(("broken-range-order", disordered));

    // Membership frames (kind 5): a ping, a full member-list page, and a broken entry.
    let member = |node: u64, state: MemberState, addr: &str| MemberRecord {
        node,
        incarnation: node << 20,
        counter: 1,
        state,
        addr: addr.parse().ok(),
    };
    let mut member_fields = header.fields();
    member_fields.kind = FrameKind::Membership;
    let mut gossip = |kind: GossipKind, entries: &[MemberRecord]| {
        let msg = GossipMessage {
            kind,
            seq: 9,
            target_node: 3,
            target_incarnation: 3 << 20,
            target_addr: "127.0.0.1:7700".parse().ok(),
            entries,
        };
        write_membership(&mut buf, &member_fields, &msg, &keyring)
            .unwrap()
            .to_vec()
    };
    seeds.push(("membership-ping", gossip(GossipKind::Ping, &[])));
    let page: Vec<MemberRecord> = (1..=MAX_ENTRIES as u64)
        .map(|n| {
            let state = [
                MemberState::Alive,
                MemberState::Suspect,
                MemberState::Failed,
                MemberState::Left,
            ][(n % 4) as usize];
            member(
                n,
                state,
                if n % 2 == 0 {
                    "10.0.0.1:7700"
                } else {
                    "[::1]:7700"
                },
            )
        })
        .collect();
    seeds.push(("membership-sync-full", gossip(GossipKind::Sync, &page)));
    let mut broken = gossip(GossipKind::Notify, &page[..2]);
    // The first entry's state byte (body offset 40 + 20) set to an unknown state.
    broken[64 + 40 + 20] = 9;
    seeds.push(("broken-membership-state", broken));

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["frame_parse", "roundtrip", "tamper", "control"] {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    println!(
        "wrote {} seeds for each target under {}",
        seeds.len(),
        root.display()
    );
}
