//! Secret files: the cluster's keys on disk, readable by their owner only.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use ring::hmac;
use serde::Deserialize;
use zeroize::Zeroize as _;

use super::{KEY_LEN, Key, KeyGenError, Keyring, KeyringError, remove_key, signing_id};

/// The keys of a secret file, as read from or written to disk.
#[derive(Clone)]
pub struct SecretFile {
    signing: u32,
    pub(super) keys: Vec<(u32, Key)>,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFile")
            .field("signing_key", &self.signing)
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a secret file could not be created, read or written. Every message names the file and,
/// where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// Reading, creating or renaming the file failed.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file exists and creating it would overwrite it.
    #[error(
        "secret file {path} already exists; remove it first if you really mean to replace the cluster's keys"
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Group or others have some access to the file.
    #[error(
        "secret file {path} is accessible to group or others (mode {mode:03o}); fix it with: chmod 600 {path}"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The file is not a regular file.
    #[error("secret file {path} is not a regular file")]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The file's contents are not a valid secret file.
    #[error("secret file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The system random number generator failed.
    #[error(transparent)]
    KeyGen(#[from] KeyGenError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    signing_key: u32,
    #[serde(rename = "key", default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: u32,
    secret: String,
}

impl SecretFile {
    /// A new secret with one fresh random key, id 1, which signs.
    ///
    /// # Errors
    ///
    /// If the system random number generator fails.
    pub fn generate() -> Result<Self, KeyGenError> {
        Ok(Self {
            signing: 1,
            keys: vec![(1, Key::generate()?)],
        })
    }

    /// Creates a secret file at `path` with one fresh random key, readable by its owner only
    /// (mode 0600). Never overwrites an existing file.
    ///
    /// # Errors
    ///
    /// [`SecretFileError::Exists`] if there is a file at `path`, [`SecretFileError::Io`] if it
    /// cannot be written.
    pub fn create(path: &Path) -> Result<Self, SecretFileError> {
        let secret = Self::generate()?;
        secret.write_new(path)?;
        Ok(secret)
    }

    /// Reads a secret file, refusing one that group or others can access.
    ///
    /// # Errors
    ///
    /// [`SecretFileError::TooOpen`] (fix: `chmod 600 <path>`), [`SecretFileError::NotAFile`],
    /// [`SecretFileError::Io`], or [`SecretFileError::Invalid`] naming the bad field.
    pub fn load(path: &Path) -> Result<Self, SecretFileError> {
        let io = |source| SecretFileError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(SecretFileError::NotAFile {
                path: path.to_owned(),
            });
        }
        if let Some(mode) = super::private_file::too_open(&meta, path) {
            return Err(SecretFileError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = fs::read_to_string(path).map_err(io)?;
        let parsed = Self::parse(&text).map_err(|reason| SecretFileError::Invalid {
            path: path.to_owned(),
            reason,
        });
        text.zeroize();
        parsed
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut format: FileFormat = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut keys: Vec<(u32, Key)> = Vec::with_capacity(format.keys.len());
        for entry in &mut format.keys {
            let key = Key::from_hex(entry.secret.trim()).ok_or_else(|| {
                format!(
                    "key {}: `secret` must be {} hex digits (generate one with `herald keygen`)",
                    entry.id,
                    KEY_LEN * 2
                )
            })?;
            entry.secret.zeroize();
            if keys.iter().any(|(id, _)| *id == entry.id) {
                return Err(format!(
                    "key id {} appears twice; key ids must be unique",
                    entry.id
                ));
            }
            keys.push((entry.id, key));
        }
        if keys.is_empty() {
            return Err("no [[key]] entries; a secret file holds at least one key".into());
        }
        if !keys.iter().any(|(id, _)| *id == format.signing_key) {
            return Err(format!(
                "signing_key = {} names no [[key]] in the file; set it to one of the key ids",
                format.signing_key
            ));
        }
        Ok(Self {
            signing: format.signing_key,
            keys,
        })
    }

    /// The file's text.
    fn render(&self) -> String {
        let mut s = String::from(
            "# herald cluster secret: whoever can read this file can sign events for the cluster.\n\
             # Keep it readable by its owner only (chmod 600). Format: docs/wire-format.md.\n",
        );
        s.push_str(&format!("signing_key = {}\n", self.signing));
        for (id, key) in &self.keys {
            s.push_str(&format!(
                "\n[[key]]\nid = {id}\nsecret = \"{}\"\n",
                key.to_hex()
            ));
        }
        s
    }

    fn write_new(&self, path: &Path) -> Result<(), SecretFileError> {
        let mut file = super::private_file::create_new(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                SecretFileError::Exists {
                    path: path.to_owned(),
                }
            } else {
                SecretFileError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut text = self.render();
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        text.zeroize();
        written.map_err(|source| SecretFileError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Replaces the file at `path` with this secret, atomically (a new 0600 file renamed over
    /// the old one), so a reader never sees half a file.
    ///
    /// # Errors
    ///
    /// [`SecretFileError::Io`] if the file cannot be written or renamed.
    pub fn save(&self, path: &Path) -> Result<(), SecretFileError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        self.write_new(&tmp)?;
        fs::rename(&tmp, path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            SecretFileError::Io {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Adds a fresh random key with the next free id and returns the id. It verifies at once;
    /// pass `sign = true` to make it the signing key too.
    ///
    /// # Errors
    ///
    /// If the system random number generator fails.
    pub fn add_generated(&mut self, sign: bool) -> Result<u32, KeyGenError> {
        let id = self
            .keys
            .iter()
            .map(|(id, _)| *id)
            .max()
            .unwrap_or(0)
            .wrapping_add(1);
        self.keys.push((id, Key::generate()?));
        if sign {
            self.signing = id;
        }
        Ok(id)
    }

    /// Makes the key `id` the signing key.
    ///
    /// # Errors
    ///
    /// [`KeyringError::UnknownId`] if the file has no such key.
    pub fn set_signing(&mut self, id: u32) -> Result<(), KeyringError> {
        self.signing = signing_id(&self.keys, id)?;
        Ok(())
    }

    /// Removes the key `id`: frames signed with it will no longer verify.
    ///
    /// # Errors
    ///
    /// [`KeyringError::UnknownId`] if there is no such key;
    /// [`KeyringError::RemovingSigningKey`] if it is the signing key.
    pub fn retire(&mut self, id: u32) -> Result<(), KeyringError> {
        remove_key(&mut self.keys, self.signing, id)
    }

    /// The id of the signing key.
    pub fn signing_key_id(&self) -> u32 {
        self.signing
    }

    /// The key ids in the file.
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    /// A short fingerprint of each key, as (key id, 8 hex digits), in the file's order: the
    /// first 4 bytes of SHA-256 over a herald-specific label and the key. Two nodes with the
    /// same fingerprint for an id hold the same key; the fingerprint tells nothing about the
    /// key itself, so it may be logged and compared in the open.
    ///
    /// ```
    /// let secret = herald::auth::SecretFile::generate()?;
    /// let prints: Vec<(u32, String)> = secret.fingerprints().collect();
    /// assert_eq!(prints[0].0, 1);
    /// assert_eq!(prints[0].1.len(), 8);
    /// # Ok::<(), herald::auth::KeyGenError>(())
    /// ```
    pub fn fingerprints(&self) -> impl Iterator<Item = (u32, String)> + '_ {
        self.keys
            .iter()
            .map(|(id, key)| (*id, fingerprint(key.as_bytes())))
    }

    /// The keyring these keys make.
    pub fn keyring(&self) -> Keyring {
        Keyring {
            keys: self
                .keys
                .iter()
                .map(|(id, key)| (*id, hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes())))
                .collect(),
            seal: self
                .keys
                .iter()
                .map(|(id, key)| (*id, super::seal::SealRoot::new(key.as_bytes())))
                .collect(),
            cache: super::seal::SubkeyCache::default(),
            signing: self.signing,
        }
    }
}

/// The label that keeps a fingerprint from being the hash of anything else herald computes.
const FINGERPRINT_LABEL: &[u8] = b"herald key fingerprint v1\0";

fn fingerprint(key: &[u8; KEY_LEN]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(FINGERPRINT_LABEL);
    ctx.update(key);
    let digest = ctx.finish();
    digest
        .as_ref()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn a_fingerprint_follows_the_key_and_only_the_key() {
        let a = SecretFile {
            signing: 1,
            keys: vec![
                (1, Key::from_bytes([1; KEY_LEN])),
                (2, Key::from_bytes([2; KEY_LEN])),
            ],
        };
        let b = SecretFile {
            signing: 7,
            keys: vec![(7, Key::from_bytes([1; KEY_LEN]))],
        };
        let fa: Vec<_> = a.fingerprints().collect();
        let fb: Vec<_> = b.fingerprints().collect();
        assert_eq!(fa.len(), 2);
        assert_eq!(fa[0].1, fb[0].1, "same key, same fingerprint");
        assert_ne!(fa[0].1, fa[1].1, "different keys differ");
        assert!(
            fa.iter()
                .all(|(_, f)| f.len() == 8 && f.bytes().all(|c| c.is_ascii_hexdigit()))
        );
        // Not a plain hash of the key: the label separates it.
        let plain = ring::digest::digest(&ring::digest::SHA256, &[1; KEY_LEN]);
        let plain: String = plain.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(fa[0].1, plain);
    }
}
