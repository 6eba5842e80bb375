//! `security = "encrypt"`: sealed data frames end to end, what they hide, what is refused,
//! and why no two frames share a key and nonce.

use super::*;
use crate::auth::VerifyError;

/// A node in `security` mode with key `key` under id `key_id`; `random` tells incarnations
/// apart, `recovery` turns recovery on.
fn sec_node(node: u64, random: u64, now: Now, security: Security, recovery: bool) -> Endpoint {
    keyed(node, random, now, security, recovery, (1, KEY))
}

fn keyed(
    node: u64,
    random: u64,
    now: Now,
    security: Security,
    recovery: bool,
    (key_id, key): (u32, [u8; 32]),
) -> Endpoint {
    let mut config = EndpointConfig::new(
        ClusterId::from_name("test"),
        node,
        new_incarnation(now.unix_ns, random),
    );
    config.recovery.enabled = recovery;
    config.security = security;
    Endpoint::new(
        config,
        Keyring::new(key_id, Key::from_bytes(key)).unwrap(),
        now,
    )
}

fn payloads(out: &[Received]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|r| match r {
            Received::Frame(f) => Some(f.records().map(|r| r.payload.to_vec()).collect::<Vec<_>>()),
            Received::Missed(_) => None,
        })
        .flatten()
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const SECRET: &[u8] = b"customer-4711@example.com";

#[test]
fn both_modes_deliver_the_same_events() {
    for security in [Security::Sign, Security::Encrypt] {
        let now = start();
        let mut a = sec_node(1, 10, now, security, false);
        let mut b = sec_node(2, 20, now, security, false);
        let f1 = data(&mut a, now, &[SECRET, b"two"]);
        let f2 = data(&mut a, now, &[b"three"]);
        let parsed = SharedFrame::parse(f1.clone()).unwrap();
        assert_eq!(parsed.is_sealed(), security == Security::Encrypt);
        b.handle_datagram(now, f1).unwrap();
        b.handle_datagram(now, f2).unwrap();
        let out = drain(&mut b);
        assert_eq!(sequences(&out), [1, 2], "{security}");
        assert_eq!(
            payloads(&out),
            [SECRET.to_vec(), b"two".to_vec(), b"three".to_vec()],
            "{security}"
        );
        let Received::Frame(first) = &out[0] else {
            panic!("a frame first")
        };
        assert_eq!(
            first.records().next().unwrap().event,
            EventId::from_name("e")
        );
        // Heartbeats are signed in both modes and accepted.
        let later = now.after(Duration::from_millis(1));
        b.handle_datagram(later, heartbeat(&mut a, later)).unwrap();
        assert_eq!(b.stats().drops_total(), 0, "{security}");
    }
}

#[test]
fn a_sealed_frame_shows_neither_payload_nor_event_id_in_clear() {
    let now = start();
    let id = EventId::from_name("e");
    let mut signer = sec_node(1, 10, now, Security::Sign, false);
    let signed = data(&mut signer, now, &[SECRET]);
    // The search finds both in a signed frame, so its failing to find them means something.
    assert!(contains(&signed, SECRET) && contains(&signed, id.as_bytes()));
    let mut sealer = sec_node(1, 10, now, Security::Encrypt, false);
    let sealed = data(&mut sealer, now, &[SECRET, SECRET]);
    assert!(!contains(&sealed, SECRET));
    assert!(!contains(&sealed, &SECRET[..8]));
    assert!(!contains(&sealed, id.as_bytes()));
    // Same length as the signed frame of the same records: the AEAD tag takes the HMAC's
    // place and the trailer's second half is zero.
    let mut signer2 = sec_node(1, 10, now, Security::Sign, false);
    assert_eq!(
        sealed.len(),
        data(&mut signer2, now, &[SECRET, SECRET]).len()
    );
    assert!(sealed[sealed.len() - 16..].iter().all(|&b| b == 0));
}

#[test]
fn every_altered_byte_of_a_sealed_frame_is_refused() {
    let now = start();
    let mut a = sec_node(1, 10, now, Security::Encrypt, false);
    let frame = data(&mut a, now, &[SECRET, b"more"]);
    let mut b = sec_node(2, 20, now, Security::Encrypt, false);
    for at in 0..frame.len() {
        let mut bytes = frame.to_vec();
        bytes[at] ^= 0x01;
        assert!(
            b.handle_datagram(now, Bytes::from(bytes)).is_err(),
            "flipping byte {at} went unnoticed"
        );
    }
    assert!(drain(&mut b).is_empty());
    assert!(b.stats().drops_by_name("bad_tag") > 0);
    // The original still goes through: nothing was kept from the refused ones.
    b.handle_datagram(now, frame).unwrap();
    assert_eq!(
        payloads(&drain(&mut b)),
        [SECRET.to_vec(), b"more".to_vec()]
    );
}

#[test]
fn replayed_forged_and_foreign_key_sealed_frames_are_refused() {
    let now = start();
    let mut a = sec_node(1, 10, now, Security::Encrypt, false);
    let mut b = sec_node(2, 20, now, Security::Encrypt, false);
    let frame = data(&mut a, now, &[SECRET]);
    b.handle_datagram(now, frame.clone()).unwrap();
    assert_eq!(
        b.handle_datagram(now, frame.clone()),
        Err(Reject::Duplicate)
    );

    // Another secret under the same key id: the tag fails.
    let mut stranger = keyed(3, 30, now, Security::Encrypt, false, (1, [9; 32]));
    let foreign = data(&mut stranger, now, &[SECRET]);
    assert_eq!(
        b.handle_datagram(now, foreign),
        Err(Reject::Auth(VerifyError::BadTag))
    );
    // A key id the receiver does not hold.
    let mut rotated = keyed(3, 30, now, Security::Encrypt, false, (7, KEY));
    let unknown = data(&mut rotated, now, &[SECRET]);
    assert_eq!(
        b.handle_datagram(now, unknown),
        Err(Reject::Auth(VerifyError::UnknownKey(7)))
    );
    // A forgery: a's frame claimed for another node (header is authenticated) and a
    // frame whose ciphertext and tag are made up.
    let mut other_node = frame.to_vec();
    other_node[24] ^= 0x04; // node id, bytes 24..32
    assert_eq!(
        b.handle_datagram(now, Bytes::from(other_node)),
        Err(Reject::Auth(VerifyError::BadTag))
    );
    let mut made_up = frame.to_vec();
    let end = made_up.len() - 16;
    for byte in &mut made_up[64..end] {
        *byte = 0x5a;
    }
    assert_eq!(
        b.handle_datagram(now, Bytes::from(made_up)),
        Err(Reject::Auth(VerifyError::BadTag))
    );
    assert_eq!(payloads(&drain(&mut b)), [SECRET.to_vec()]);
}

#[test]
fn frames_of_the_other_mode_are_dropped_and_counted() {
    let now = start();
    let mut signer = sec_node(1, 10, now, Security::Sign, false);
    let mut sealer = sec_node(2, 20, now, Security::Encrypt, false);
    let signed = data(&mut signer, now, &[b"x"]);
    let sealed = data(&mut sealer, now, &[b"y"]);
    assert_eq!(
        sealer.handle_datagram(now, signed),
        Err(Reject::Auth(VerifyError::ModeMismatch { sealed: false }))
    );
    assert_eq!(
        signer.handle_datagram(now, sealed),
        Err(Reject::Auth(VerifyError::ModeMismatch { sealed: true }))
    );
    for ep in [&signer, &sealer] {
        assert_eq!(ep.stats().drops_by_name("security_mode_mismatch"), 1);
        assert_eq!(ep.stats().frames_accepted, 0);
    }
    assert!(drain(&mut signer).is_empty() && drain(&mut sealer).is_empty());
    let reason = Reject::Auth(VerifyError::ModeMismatch { sealed: true });
    assert_eq!(reason.name(), "security_mode_mismatch");
    assert!(reason.to_string().contains("`security`"));
}

#[test]
fn a_sealed_frame_is_open_even_on_an_authenticated_channel() {
    let now = start();
    let mut a = sec_node(1, 10, now, Security::Encrypt, false);
    let mut b = sec_node(2, 20, now, Security::Encrypt, false);
    let frame = data(&mut a, now, &[SECRET]);
    let mut bytes = frame.to_vec();
    bytes[70] ^= 1;
    assert_eq!(
        b.handle_authenticated_datagram(now, Bytes::from(bytes)),
        Err(Reject::Auth(VerifyError::BadTag))
    );
    b.handle_authenticated_datagram(now, frame).unwrap();
    assert_eq!(payloads(&drain(&mut b)), [SECRET.to_vec()]);
}

/// The body (ciphertext) of a sealed frame.
fn body(frame: &Bytes) -> Vec<u8> {
    frame[64..frame.len() - 32].to_vec()
}

#[test]
fn two_runs_of_a_node_never_share_key_and_nonce() {
    // The same node restarts (a crash: no clean shutdown), in the same millisecond with
    // other random bits, and one millisecond later with the same random bits. Each run
    // seals the same events at the same sequence numbers. Were (key, nonce) ever shared,
    // equal plaintexts would give equal ciphertexts.
    let now = start();
    let runs = [
        (now, 10),
        (now, 11),
        (now.after(Duration::from_millis(1)), 10),
    ];
    let mut bodies: Vec<(u64, Vec<u8>)> = Vec::new();
    for (when, random) in runs {
        let mut run = sec_node(1, random, when, Security::Encrypt, false);
        for seq in 1..=20u64 {
            let frame = data(&mut run, when, &[SECRET]);
            assert_eq!(
                SharedFrame::parse(frame.clone())
                    .unwrap()
                    .header_fields()
                    .sequence,
                seq
            );
            bodies.push((seq, body(&frame)));
        }
    }
    let distinct: std::collections::HashSet<_> = bodies.iter().map(|(_, b)| b).collect();
    assert_eq!(distinct.len(), bodies.len(), "two frames share a keystream");
    // And a receiver opens frames of the newer run.
    let mut b = sec_node(2, 20, now, Security::Encrypt, false);
    let mut newer = sec_node(
        1,
        12,
        now.after(Duration::from_millis(2)),
        Security::Encrypt,
        false,
    );
    b.handle_datagram(now, data(&mut newer, now, &[SECRET]))
        .unwrap();
    assert_eq!(payloads(&drain(&mut b)), [SECRET.to_vec()]);
}

#[test]
fn a_lost_sealed_frame_is_sent_again_byte_for_byte() {
    let now = start();
    let mut a = sec_node(1, 10, now, Security::Encrypt, true);
    let mut b = sec_node(2, 20, now, Security::Encrypt, true);
    let frames: Vec<_> = (0..3).map(|_| data(&mut a, now, &[SECRET])).collect();
    b.handle_datagram(now, frames[0].clone()).unwrap();
    b.handle_datagram(now, frames[2].clone()).unwrap();
    let later = now.after(b.config().recovery.nak_delay);
    let mut buf = vec![0; 1472];
    let ask = b.poll_transmit(later, &mut buf).expect("a request");
    a.handle_datagram(later, Bytes::copy_from_slice(&buf[..ask.len]))
        .unwrap();
    let again = a.poll_transmit(later, &mut buf).expect("the frame again");
    assert_eq!(&buf[..again.len], &frames[1][..], "resent as first sealed");
    b.handle_datagram(later, frames[1].clone()).unwrap();
    assert_eq!(sequences(&drain(&mut b)), [1, 2, 3]);
}

#[test]
fn an_evicted_sealed_frame_is_reported_with_its_plaintext_event_ids() {
    let now = start();
    // The sender keeps one frame: older ones survive only as event ids.
    let mut config = EndpointConfig::new(
        ClusterId::from_name("test"),
        1,
        new_incarnation(now.unix_ns, 10),
    );
    config.security = Security::Encrypt;
    config.recovery.retention_bytes = 200;
    let mut a = Endpoint::new(config, Keyring::new(1, Key::from_bytes(KEY)).unwrap(), now);
    let mut b = sec_node(2, 20, now, Security::Encrypt, true);
    let frames: Vec<_> = (0..3).map(|_| data(&mut a, now, &[SECRET])).collect();
    b.handle_datagram(now, frames[0].clone()).unwrap();
    b.handle_datagram(now, frames[2].clone()).unwrap();
    let later = now.after(b.config().recovery.nak_delay);
    let mut buf = vec![0; 1472];
    let ask = b.poll_transmit(later, &mut buf).expect("a request");
    a.handle_datagram(later, Bytes::copy_from_slice(&buf[..ask.len]))
        .unwrap();
    let answer = a.poll_transmit(later, &mut buf).expect("an answer");
    let answer = Bytes::copy_from_slice(&buf[..answer.len]);
    let parsed = SharedFrame::parse(answer.clone()).unwrap();
    assert_eq!(parsed.header_fields().kind, FrameKind::Evicted);
    assert_eq!(
        parsed.events().collect::<Vec<_>>(),
        [EventId::from_name("e")]
    );
    b.handle_datagram(later, answer).unwrap();
    let out = drain(&mut b);
    assert_eq!(sequences(&out), [1, 3]);
    assert_eq!(missed(&out).len(), 1);
}
