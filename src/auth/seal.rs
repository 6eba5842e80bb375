//! Sealing data frames with AES-256-GCM (`security = "encrypt"`).
//!
//! Each cluster key yields, by HKDF-SHA256 (salt `herald.seal.v1`), a pseudo-random key for
//! sealing, separate from the HMAC key that signs. From it each sender (cluster, node,
//! incarnation) gets its own AES-256-GCM subkey, so the nonce can be the plain sequence
//! number of the data frame: a sender never seals two frames with one sequence number, and
//! no two senders (nor two runs of one node) share a subkey. The argument is in
//! `docs/security.md`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

pub(crate) use crate::wire::SEAL_TAG_LEN;

/// How a cluster protects its data frames: the `security` setting. Every node of a cluster
/// must use the same mode; a node drops data frames of the other mode
/// (`security_mode_mismatch`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Data frames are signed with HMAC-SHA256 and travel readable (the default).
    #[default]
    Sign,
    /// Data frames are sealed with AES-256-GCM: records and event table encrypted, header
    /// authenticated. Heartbeats and control frames stay signed.
    Encrypt,
}

impl Security {
    /// The setting's value in the configuration: `"sign"` or `"encrypt"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sign => "sign",
            Self::Encrypt => "encrypt",
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `security` value other than `sign` or `encrypt`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown security mode {0:?}: use \"sign\" (HMAC-signed frames) or \"encrypt\" (AES-256-GCM sealed frames)"
)]
pub struct UnknownSecurity(pub String);

impl FromStr for Security {
    type Err = UnknownSecurity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sign" => Ok(Self::Sign),
            "encrypt" => Ok(Self::Encrypt),
            other => Err(UnknownSecurity(other.to_owned())),
        }
    }
}

/// The sealing secret derived from one cluster key.
#[derive(Clone)]
pub(crate) struct SealRoot(hkdf::Prk);

impl SealRoot {
    pub(crate) fn new(key: &[u8]) -> Self {
        Self(hkdf::Salt::new(hkdf::HKDF_SHA256, b"herald.seal.v1").extract(key))
    }

    /// The AES-256-GCM key of one sender's run.
    fn subkey(&self, sender: &Sender) -> LessSafeKey {
        let cluster = sender.cluster.to_le_bytes();
        let node = sender.node.to_le_bytes();
        let incarnation = sender.incarnation.to_le_bytes();
        let info = [
            b"herald.seal.sender".as_slice(),
            &cluster,
            &node,
            &incarnation,
        ];
        // The output length (32 bytes) is far below HKDF's limit, so this cannot fail.
        let okm = self
            .0
            .expand(&info, &AES_256_GCM)
            .unwrap_or_else(|_| unreachable!("32 bytes of HKDF output"));
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// Who sealed a frame: the subkey's inputs besides the key id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Sender {
    pub(crate) key_id: u32,
    pub(crate) cluster: u64,
    pub(crate) node: u64,
    pub(crate) incarnation: u64,
}

/// The most subkeys kept; past it the cache starts over (each costs one HKDF to redo).
const CACHE_LIMIT: usize = 4096;

/// Subkeys by sender, so that HKDF and the AES key schedule run once per sender's run, not
/// once per frame. A clone starts empty: clones may come to hold other keys under an id.
#[derive(Default)]
pub(crate) struct SubkeyCache(Mutex<HashMap<Sender, LessSafeKey>>);

impl Clone for SubkeyCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl SubkeyCache {
    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn with<T>(&self, root: &SealRoot, sender: Sender, f: impl FnOnce(&LessSafeKey) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(&sender) && map.len() >= CACHE_LIMIT {
            map.clear();
        }
        let key = map.entry(sender).or_insert_with(|| root.subkey(&sender));
        f(key)
    }

    /// Encrypts `body` in place; returns the tag. `aad` is the frame header.
    pub(crate) fn seal(
        &self,
        root: &SealRoot,
        sender: Sender,
        sequence: u64,
        aad: &[u8],
        body: &mut [u8],
    ) -> [u8; SEAL_TAG_LEN] {
        self.with(root, sender, |key| {
            let mut tag = [0u8; SEAL_TAG_LEN];
            // Fails only for inputs longer than GCM allows (64 GiB), which no frame is.
            if let Ok(t) = key.seal_in_place_separate_tag(nonce(sequence), Aad::from(aad), body) {
                tag.copy_from_slice(t.as_ref());
            }
            tag
        })
    }

    /// Decrypts `body` in place if `tag` authenticates it and `aad`; `false` (and `body`
    /// garbled) otherwise.
    pub(crate) fn open(
        &self,
        root: &SealRoot,
        sender: Sender,
        sequence: u64,
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8],
    ) -> bool {
        let Ok(tag) = <[u8; SEAL_TAG_LEN]>::try_from(tag) else {
            return false;
        };
        self.with(root, sender, |key| {
            key.open_in_place_separate_tag(
                nonce(sequence),
                Aad::from(aad),
                ring::aead::Tag::from(tag),
                body,
                0..,
            )
            .is_ok()
        })
    }
}

/// The nonce of a data frame: its sequence number, big-endian, after four zero bytes.
pub(crate) fn nonce(sequence: u64) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[4..].copy_from_slice(&sequence.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

#[cfg(test)]
mod tests {
    use super::Security;
    use crate::config::Config;

    const BASE: &str = "cluster = \"c\"\n[udp]\nbind = \"127.0.0.1:1\"\n";

    #[test]
    fn the_security_key_sets_the_mode_and_names_itself_when_wrong() {
        assert_eq!(Config::from_toml(BASE).unwrap().security, Security::Sign);
        let c = Config::from_toml(&format!("security = \"encrypt\"\n{BASE}")).unwrap();
        assert_eq!(c.security, Security::Encrypt);
        c.router_builder().unwrap();
        let err = Config::from_toml(&format!("security = \"aes\"\n{BASE}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("security:"), "{err}");
        assert!(err.contains("encrypt") && err.contains("sign"), "{err}");
        assert_eq!("encrypt".parse::<Security>(), Ok(Security::Encrypt));
        assert!("Encrypt".parse::<Security>().is_err());
    }
}
