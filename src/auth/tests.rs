//! Tests of the keyring, verification and secret files.

use std::fs;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::EventId;
use crate::wire::{ClusterId, Flags, Frame, FrameKind, FrameWriter, HeaderFields, ParseError};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A key given as RFC 4231 gives it, as our 32-byte `Key`: HMAC pads a shorter key with zeros
/// to the block size and hashes a longer one, so both map onto 32 bytes without changing the
/// MAC.
fn rfc_key(raw: &[u8]) -> Key {
    let mut bytes = [0u8; KEY_LEN];
    if raw.len() <= KEY_LEN {
        bytes[..raw.len()].copy_from_slice(raw);
    } else {
        bytes.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, raw).as_ref());
    }
    Key::from_bytes(bytes)
}

#[test]
fn rfc4231_hmac_sha256_vectors() {
    let long = "This is a test using a larger than block-size key and a larger than block-size \
                data. The key needs to be hashed before being used by the HMAC algorithm.";
    let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            (1..=25).collect(),
            vec![0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            vec![0xaa; 131],
            long.as_bytes().to_vec(),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (i, (key, data, expected)) in cases.iter().enumerate() {
        let keyring = Keyring::new(9, rfc_key(key)).unwrap();
        let expected = hex(expected);
        assert_eq!(keyring.sign(data).to_vec(), expected, "case {i}");
        keyring.verify_tag(9, data, &expected).unwrap();
        let mut wrong = expected.clone();
        wrong[31] ^= 1;
        assert_eq!(
            keyring.verify_tag(9, data, &wrong),
            Err(VerifyError::BadTag),
            "case {i}"
        );
    }
    // Test case 5 gives only the first 128 bits: our tags are never truncated, so such a
    // tag must be refused even though it is a correct prefix.
    let keyring = Keyring::new(1, rfc_key(&[0x0c; 20])).unwrap();
    let truncated = hex("a3b6167473100ee06e0c796c2955552b");
    assert_eq!(keyring.sign(b"Test With Truncation")[..16], truncated[..]);
    assert_eq!(
        keyring.verify_tag(1, b"Test With Truncation", &truncated),
        Err(VerifyError::BadTag)
    );
}

fn signed_frame(keyring: &Keyring) -> Vec<u8> {
    let fields = HeaderFields {
        kind: FrameKind::Data,
        flags: Flags::EMPTY,
        key_id: 0,
        cluster: ClusterId::from_name("auth-test"),
        node: 3,
        incarnation: 4,
        sequence: 5,
        timestamp_ns: 6,
    };
    let mut buf = vec![0u8; 512];
    let mut w = FrameWriter::new(&mut buf, &fields).unwrap();
    w.push(&EventId::from_name("x"), b"payload!").unwrap();
    w.push(&EventId::from_name("y"), b"").unwrap();
    let n = w.finish(keyring).len();
    buf.truncate(n);
    buf
}

#[test]
fn verifies_own_frames_and_names_the_key() {
    let keyring = Keyring::new(5, Key::from_bytes([1; 32])).unwrap();
    let frame = signed_frame(&keyring);
    let parsed = Frame::parse(&frame).unwrap();
    assert_eq!(parsed.key_id(), 5, "finish() stamps the signing key id");
    let verified = keyring.verify(parsed).unwrap();
    assert_eq!(verified.frame().records().count(), 2);
}

#[test]
fn refuses_unknown_key_and_wrong_key() {
    let signer = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
    let frame = signed_frame(&signer);
    let other_id = Keyring::new(2, Key::from_bytes([1; 32])).unwrap();
    assert_eq!(
        other_id.verify(Frame::parse(&frame).unwrap()).unwrap_err(),
        VerifyError::UnknownKey(1)
    );
    let other_secret = Keyring::new(1, Key::from_bytes([2; 32])).unwrap();
    assert_eq!(
        other_secret
            .verify(Frame::parse(&frame).unwrap())
            .unwrap_err(),
        VerifyError::BadTag
    );
}

#[test]
fn all_zero_and_absent_tags_fail() {
    let keyring = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
    let mut frame = signed_frame(&keyring);
    let n = frame.len();
    frame[n - TAG_LEN..].fill(0);
    assert_eq!(
        keyring.verify(Frame::parse(&frame).unwrap()).unwrap_err(),
        VerifyError::BadTag
    );
    // Without its tag the frame no longer parses: its length disagrees with body_len.
    assert!(matches!(
        Frame::parse(&frame[..n - TAG_LEN]),
        Err(ParseError::LengthMismatch { .. })
    ));
}

/// Every single-bit flip anywhere in the frame (header, records, tag) is refused, by the parser
/// or by the tag check: every header field is covered by the MAC.
#[test]
fn every_bit_flip_is_refused() {
    let keyring = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
    let frame = signed_frame(&keyring);
    let mut by_parse = 0;
    let mut by_tag = 0;
    for byte in 0..frame.len() {
        for bit in 0..8 {
            let mut f = frame.clone();
            f[byte] ^= 1 << bit;
            match Frame::parse(&f) {
                Err(_) => by_parse += 1,
                Ok(parsed) => {
                    assert!(
                        keyring.verify(parsed).is_err(),
                        "flip of byte {byte} bit {bit}"
                    );
                    by_tag += 1;
                }
            }
        }
    }
    assert_eq!(by_parse + by_tag, frame.len() * 8);
    // Most header fields are only caught by the tag: that is what this test is about.
    assert!(by_tag > 64 * 8 / 2, "{by_tag} flips reached the tag check");
}

#[test]
fn rotation_keeps_old_frames_verifying_until_retired() {
    let mut keyring = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
    let old = signed_frame(&keyring);
    keyring.add(2, Key::from_bytes([2; 32])).unwrap();
    assert_eq!(
        keyring.add(2, Key::from_bytes([3; 32])),
        Err(KeyringError::DuplicateId(2))
    );
    keyring.set_signing(2).unwrap();
    let new = signed_frame(&keyring);
    assert_eq!(Frame::parse(&new).unwrap().key_id(), 2);
    keyring.verify(Frame::parse(&old).unwrap()).unwrap();
    keyring.verify(Frame::parse(&new).unwrap()).unwrap();
    assert_eq!(keyring.remove(2), Err(KeyringError::RemovingSigningKey(2)));
    keyring.remove(1).unwrap();
    assert_eq!(
        keyring.verify(Frame::parse(&old).unwrap()).unwrap_err(),
        VerifyError::UnknownKey(1)
    );
    assert_eq!(keyring.set_signing(1), Err(KeyringError::UnknownId(1)));
}

#[test]
fn keys_are_not_printed() {
    let key = Key::from_bytes([0xab; 32]);
    assert!(!format!("{key:?}").contains("ab"));
    let secret = SecretFile::generate().unwrap();
    let hexed = secret.keys[0].1.to_hex();
    assert!(!format!("{secret:?}").contains(&hexed));
}

#[test]
fn secret_file_is_created_private_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    let created = SecretFile::create(&path).unwrap();
    #[cfg(unix)]
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = SecretFile::load(&path).unwrap();
    assert_eq!(loaded.signing_key_id(), 1);
    // Same key: a frame signed by one verifies with the other.
    let frame = signed_frame(&created.keyring());
    loaded
        .keyring()
        .verify(Frame::parse(&frame).unwrap())
        .unwrap();
    // Two generated secrets differ.
    let other = SecretFile::generate().unwrap();
    assert!(
        other
            .keyring()
            .verify(Frame::parse(&frame).unwrap())
            .is_err()
    );
}

#[test]
fn secret_file_never_overwritten_by_create() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    SecretFile::create(&path).unwrap();
    let before = fs::read(&path).unwrap();
    assert!(matches!(
        SecretFile::create(&path),
        Err(SecretFileError::Exists { .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[cfg(unix)] // Windows: see auth::private_file
#[test]
fn secret_file_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    SecretFile::create(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = SecretFile::load(&path).unwrap_err();
        assert!(
            matches!(err, SecretFileError::TooOpen { .. }),
            "mode {mode:o}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
    }
    for mode in [0o600, 0o400] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        SecretFile::load(&path).unwrap();
    }
}

#[test]
fn secret_file_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    let write = |text: &str| {
        let _ = fs::remove_file(&path);
        fs::write(&path, text).unwrap();
        #[cfg(unix)]
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        SecretFile::load(&path).unwrap_err().to_string()
    };
    let good = "a".repeat(64);
    assert!(
        write(&format!(
            "signing_key = 1\n[[key]]\nid = 1\nsecret = \"zz{}\"\n",
            &good[2..]
        ))
        .contains("64 hex digits")
    );
    assert!(
        write(&format!(
            "signing_key = 1\n[[key]]\nid = 1\nsecret = \"{}\"\n",
            &good[1..]
        ))
        .contains("64 hex digits")
    );
    assert!(write(&format!(
        "signing_key = 1\n[[key]]\nid = 1\nsecret = \"{good}\"\n[[key]]\nid = 1\nsecret = \"{good}\"\n"
    ))
    .contains("appears twice"));
    assert!(
        write(&format!(
            "signing_key = 2\n[[key]]\nid = 1\nsecret = \"{good}\"\n"
        ))
        .contains("signing_key = 2")
    );
    assert!(write("signing_key = 1\n").contains("no [[key]]"));
    assert!(
        write(&format!(
            "signing_key = 1\nsigning = 3\n[[key]]\nid = 1\nsecret = \"{good}\"\n"
        ))
        .contains("signing")
    );
    assert!(write("this is not toml").contains(path.to_str().unwrap()));
    let missing = dir.path().join("missing.toml");
    assert!(matches!(
        SecretFile::load(&missing),
        Err(SecretFileError::Io { .. })
    ));
    assert!(matches!(
        SecretFile::load(dir.path()),
        Err(SecretFileError::NotAFile { .. })
    ));
}

#[test]
fn secret_file_rotation_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    let mut secret = SecretFile::create(&path).unwrap();
    let old_frame = signed_frame(&secret.keyring());
    let id = secret.add_generated(true).unwrap();
    assert_eq!(id, 2);
    secret.save(&path).unwrap();
    #[cfg(unix)]
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = SecretFile::load(&path).unwrap();
    assert_eq!(loaded.signing_key_id(), 2);
    assert_eq!(loaded.key_ids().collect::<Vec<_>>(), [1, 2]);
    let keyring = loaded.keyring();
    keyring.verify(Frame::parse(&old_frame).unwrap()).unwrap();
    let new_frame = signed_frame(&keyring);
    assert_eq!(Frame::parse(&new_frame).unwrap().key_id(), 2);
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}
