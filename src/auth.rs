//! Authentication: the cluster keyring, HMAC-SHA256 tags, and secret files.
//!
//! Every frame ends with a 32-byte HMAC-SHA256 tag over everything before it, computed with
//! one of the cluster's 256-bit keys, named by the key id in the header. A [`Keyring`] holds
//! the keys by id: one signs, any of them verifies, so a new key can be rolled out to every
//! node before it starts signing (see `docs/wire-format.md`, "Keys and rotation").
//!
//! [`Keyring::verify`] is the only way to make a [`Verified`] value, and the code that keeps
//! per-sender state takes only `Verified` frames, so skipping the check does not compile.
//!
//! # Secret files
//!
//! A secret file is a small TOML document that only its owner may read:
//!
//! ```toml
//! # herald cluster secret: whoever can read this file can sign events for the cluster.
//! signing_key = 2
//!
//! [[key]]
//! id = 1
//! secret = "6b1f…64 hex digits…"
//!
//! [[key]]
//! id = 2
//! secret = "0c3a…64 hex digits…"
//! ```
//!
//! [`SecretFile::create`] makes one with a fresh random key and mode 0600;
//! [`SecretFile::load`] refuses a file that group or others can access, with an error that
//! says how to fix it.

use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use std::fmt;
use zeroize::Zeroize as _;

use crate::wire::{Frame, SharedFrame, TAG_LEN};

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key. Its bytes are wiped when it is dropped and never printed.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// A key with the given bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the operating system's secure random number generator.
    ///
    /// # Errors
    ///
    /// If the system generator fails (it does not, on any supported Linux).
    pub fn generate() -> Result<Self, KeyGenError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyGenError)?;
        Ok(Self(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn to_hex(&self) -> String {
        let mut s = String::with_capacity(KEY_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != KEY_LEN * 2 {
            return None;
        }
        let mut bytes = [0u8; KEY_LEN];
        for (out, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *out = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(Self(bytes))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The system random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct KeyGenError;

/// The keys of a cluster, by key id: one signs, every one verifies.
///
/// ```
/// use herald::auth::{Key, Keyring};
/// let mut keyring = Keyring::new(1, Key::from_bytes([1; 32])).unwrap();
/// keyring.add(2, Key::from_bytes([2; 32])).unwrap(); // verify with key 2 everywhere first,
/// keyring.set_signing(2).unwrap();                   // then start signing with it,
/// keyring.remove(1).unwrap();                        // and retire key 1 at last.
/// assert_eq!(keyring.key_ids().collect::<Vec<_>>(), [2]);
/// ```
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(u32, hmac::Key)>,
    /// The sealing secrets, by key id, in the order of `keys`.
    seal: Vec<(u32, seal::SealRoot)>,
    cache: seal::SubkeyCache,
    signing: u32,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .field("signing", &self.signing)
            .finish()
    }
}

/// A caller's mistake in managing a [`Keyring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// The keyring already has a key with this id.
    #[error("key id {0} is already in the keyring")]
    DuplicateId(u32),
    /// The keyring has no key with this id.
    #[error("key id {0} is not in the keyring")]
    UnknownId(u32),
    /// The signing key cannot be removed; make another key the signing key first.
    #[error("key id {0} signs; make another key the signing key before removing it")]
    RemovingSigningKey(u32),
}

impl Keyring {
    /// A keyring holding one key, which signs.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for checks on the key.
    pub fn new(id: u32, key: Key) -> Result<Self, KeyringError> {
        Ok(Self {
            keys: vec![(id, hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()))],
            seal: vec![(id, seal::SealRoot::new(key.as_bytes()))],
            cache: seal::SubkeyCache::default(),
            signing: id,
        })
    }

    /// Adds a key that verifies (it does not sign until [`set_signing`](Self::set_signing)).
    ///
    /// # Errors
    ///
    /// [`KeyringError::DuplicateId`] if `id` is taken.
    pub fn add(&mut self, id: u32, key: Key) -> Result<(), KeyringError> {
        if self.get(id).is_some() {
            return Err(KeyringError::DuplicateId(id));
        }
        self.keys
            .push((id, hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes())));
        self.seal.push((id, seal::SealRoot::new(key.as_bytes())));
        Ok(())
    }

    /// Makes the key `id` the one that signs.
    ///
    /// # Errors
    ///
    /// [`KeyringError::UnknownId`] if there is no such key.
    pub fn set_signing(&mut self, id: u32) -> Result<(), KeyringError> {
        self.signing = signing_id(&self.keys, id)?;
        Ok(())
    }

    /// Retires the key `id`: frames signed with it no longer verify.
    ///
    /// # Errors
    ///
    /// [`KeyringError::UnknownId`] if there is no such key;
    /// [`KeyringError::RemovingSigningKey`] if it is the signing key.
    pub fn remove(&mut self, id: u32) -> Result<(), KeyringError> {
        remove_key(&mut self.keys, self.signing, id)?;
        self.seal.retain(|(k, _)| *k != id);
        // A later key under this id must not meet subkeys of the retired one.
        self.cache.clear();
        Ok(())
    }

    /// The id of the signing key.
    pub fn signing_key_id(&self) -> u32 {
        self.signing
    }

    /// The ids of every key, in the order they were added.
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    fn get(&self, id: u32) -> Option<&hmac::Key> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }

    /// The HMAC-SHA256 tag of `data` under the signing key.
    pub fn sign(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        if let Some(key) = self.get(self.signing) {
            tag.copy_from_slice(hmac::sign(key, data).as_ref());
        }
        tag
    }

    /// Checks `tag` against `data` under the key `key_id`, in constant time.
    ///
    /// # Errors
    ///
    /// [`VerifyError::UnknownKey`] if the keyring has no key `key_id`;
    /// [`VerifyError::BadTag`] if the tag is wrong (or not 32 bytes long).
    pub fn verify_tag(&self, key_id: u32, data: &[u8], tag: &[u8]) -> Result<(), VerifyError> {
        let key = self.get(key_id).ok_or(VerifyError::UnknownKey(key_id))?;
        hmac::verify(key, data, tag).map_err(|_| VerifyError::BadTag)
    }

    /// Authenticates a parsed frame: the key its header names must be in the keyring and its
    /// tag must match. Only this function makes a [`Verified`] value.
    ///
    /// # Errors
    ///
    /// As [`verify_tag`](Self::verify_tag).
    pub fn verify<F: Signed>(&self, frame: F) -> Result<Verified<F>, VerifyError> {
        if frame.sealed() {
            return Err(VerifyError::ModeMismatch { sealed: true });
        }
        self.verify_tag(frame.key_id(), frame.signed_bytes(), frame.tag())?;
        Ok(Verified { frame })
    }
}

/// Treats `frame` as verified without checking its tag. Only for a transport that declared its
/// channel authenticated *and* a router built to trust that (see
/// `RouterBuilder::trust_authenticated_transports`): the one place a `Verified` is made
/// without [`Keyring::verify`].
pub(crate) fn assume_verified<F: Signed>(frame: F) -> Verified<F> {
    Verified { frame }
}

/// `id`, if `keys` holds it: the rule for a new signing key, shared with secret files.
fn signing_id<T>(keys: &[(u32, T)], id: u32) -> Result<u32, KeyringError> {
    if keys.iter().any(|(k, _)| *k == id) {
        Ok(id)
    } else {
        Err(KeyringError::UnknownId(id))
    }
}

/// Removes key `id` from `keys` unless it signs: shared with secret files.
fn remove_key<T>(keys: &mut Vec<(u32, T)>, signing: u32, id: u32) -> Result<(), KeyringError> {
    if id == signing {
        return Err(KeyringError::RemovingSigningKey(id));
    }
    let before = keys.len();
    keys.retain(|(k, _)| *k != id);
    if keys.len() == before {
        Err(KeyringError::UnknownId(id))
    } else {
        Ok(())
    }
}

impl crate::wire::SignerSealed for Keyring {}

impl crate::wire::FrameSigner for Keyring {
    fn signing_key_id(&self) -> u32 {
        Self::signing_key_id(self)
    }

    fn sign(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        Self::sign(self, signed)
    }

    fn seal_data(
        &self,
        fields: &crate::wire::HeaderFields,
        header: &[u8],
        body: &mut [u8],
    ) -> [u8; crate::wire::SEAL_TAG_LEN] {
        Self::seal_data(self, fields, header, body)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::wire::Frame<'_> {}
    impl Sealed for crate::wire::SharedFrame {}
}

/// A parsed frame that carries a tag: [`Frame`] or [`SharedFrame`].
pub trait Signed: sealed::Sealed {
    /// The key id the header names.
    fn key_id(&self) -> u32;
    /// The bytes the tag covers.
    fn signed_bytes(&self) -> &[u8];
    /// The tag.
    fn tag(&self) -> &[u8];
    /// Whether the frame is sealed and not yet opened (see [`Keyring::open`]).
    fn sealed(&self) -> bool;
}

impl Signed for Frame<'_> {
    fn key_id(&self) -> u32 {
        Self::key_id(self)
    }
    fn signed_bytes(&self) -> &[u8] {
        Self::signed_bytes(self)
    }
    fn tag(&self) -> &[u8] {
        Self::tag(self)
    }
    fn sealed(&self) -> bool {
        Self::is_sealed(self)
    }
}

impl Signed for SharedFrame {
    fn key_id(&self) -> u32 {
        self.header_fields().key_id
    }
    fn signed_bytes(&self) -> &[u8] {
        Self::signed_bytes(self)
    }
    fn tag(&self) -> &[u8] {
        Self::tag(self)
    }
    fn sealed(&self) -> bool {
        Self::is_sealed(self)
    }
}

/// A frame whose tag has been verified. Only [`Keyring::verify`] makes one.
#[derive(Debug, Clone)]
pub struct Verified<F> {
    frame: F,
}

impl<F> Verified<F> {
    /// The verified frame.
    pub fn frame(&self) -> &F {
        &self.frame
    }

    /// The verified frame, by value.
    pub fn into_frame(self) -> F {
        self.frame
    }
}

/// Why a frame failed authentication. Each reason has a stable short [`name`](Self::name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The frame names a key id this keyring does not hold (unknown, retired or not yet
    /// rolled out).
    #[error("unknown key id {0}")]
    UnknownKey(u32),
    /// The tag does not match: the frame was altered or signed with another key.
    #[error("bad tag")]
    BadTag,
    /// A data frame of the other security mode: the cluster's nodes disagree on `security`
    /// (a sealed frame reached a `sign` node, or a signed data frame an `encrypt` node).
    #[error(
        "{} data frame dropped: this node and its sender disagree on the cluster's `security` setting (\"sign\" or \"encrypt\"); set it alike on every node",
        if *sealed { "sealed" } else { "unsealed" }
    )]
    ModeMismatch {
        /// Whether the dropped frame was sealed.
        sealed: bool,
    },
}

impl VerifyError {
    /// Every short name, in declaration order.
    pub const NAMES: &'static [&'static str] =
        &["unknown_key", "bad_tag", "security_mode_mismatch"];

    /// The reason's stable short name.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::UnknownKey(_) => "unknown_key",
            Self::BadTag => "bad_tag",
            Self::ModeMismatch { .. } => "security_mode_mismatch",
        }
    }
}

pub(crate) mod private_file;
mod seal;
mod sealing;
mod secret_file;

pub use seal::{Security, UnknownSecurity};
pub use sealing::OpenError;

pub(crate) use private_file::too_open;
pub use secret_file::{SecretFile, SecretFileError};

#[cfg(test)]
mod tests;
