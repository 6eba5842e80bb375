//! The node's secret file while it runs: reloaded on SIGHUP and when the file changes, the
//! new keyring handed to the router, and the outcome kept for `/readyz`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use herald::Router;
use herald::auth::SecretFile;

/// What `/readyz` and the logs say about the keys.
#[derive(Clone, Debug)]
pub(crate) struct KeyStatus {
    /// The key ids in use (from the last file that loaded).
    pub(crate) ids: Vec<u32>,
    /// The signing key in use.
    pub(crate) signing: u32,
    /// Each key's fingerprint, as `id:hex` (`herald keygen --fingerprint` prints the same).
    pub(crate) fingerprints: String,
    /// Why the file on disk cannot be used, if its last load failed (the keys above still
    /// sign and verify, but they are not what the file says any more).
    pub(crate) error: Option<String>,
}

impl KeyStatus {
    fn of(secret: &SecretFile) -> Self {
        Self {
            ids: secret.key_ids().collect(),
            signing: secret.signing_key_id(),
            fingerprints: secret
                .fingerprints()
                .map(|(id, print)| format!("{id}:{print}"))
                .collect::<Vec<_>>()
                .join(", "),
            error: None,
        }
    }

    /// The key ids as `1, 2`.
    pub(crate) fn ids_text(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(u32::to_string).collect();
        ids.join(", ")
    }
}

/// The key status, shared with the HTTP side.
pub(crate) type SharedKeyStatus = Arc<Mutex<KeyStatus>>;

/// Reads the shared status (a panic elsewhere does not hide it).
pub(crate) fn read(status: &SharedKeyStatus) -> KeyStatus {
    status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// What identifies one version of the file: a rename over it (what `herald keygen` and
/// most deploy tools do) changes the inode, an edit in place the mtime or size, `chmod` the
/// ctime and mode.
/// What tells one version of the file from another: on Unix its inode, times, length and
/// mode (a file copied over in the same second still differs by inode or ctime); elsewhere
/// its modification time and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    unix: (u64, u64, (i64, i64), u32),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        unix: {
            use std::os::unix::fs::MetadataExt as _;
            (m.dev(), m.ino(), (m.ctime(), m.ctime_nsec()), m.mode())
        },
    })
}

/// Watches the secret file of a running node.
#[derive(Debug)]
pub(crate) struct KeyWatch {
    path: PathBuf,
    last: Option<Stamp>,
    status: SharedKeyStatus,
}

impl KeyWatch {
    /// A watch on `path`, whose contents `secret` were loaded into the router at start.
    pub(crate) fn new(path: PathBuf, secret: &SecretFile) -> Self {
        Self {
            last: stamp(&path),
            path,
            status: Arc::new(Mutex::new(KeyStatus::of(secret))),
        }
    }

    /// The status, to share with the HTTP side.
    pub(crate) fn status(&self) -> SharedKeyStatus {
        Arc::clone(&self.status)
    }

    /// Reloads the file if it changed since it was last looked at (called about once a
    /// second).
    pub(crate) fn poll(&mut self, router: &Router) {
        if stamp(&self.path) != self.last {
            self.reload(router, "the file changed");
        }
    }

    /// Loads the file and hands its keys to the router; if it cannot be used, the router
    /// keeps its keys and the status records why.
    pub(crate) fn reload(&mut self, router: &Router, why: &str) {
        self.last = stamp(&self.path);
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match SecretFile::load(&self.path) {
            Ok(secret) => {
                router.set_keyring(secret.keyring());
                *status = KeyStatus::of(&secret);
                tracing::info!(
                    path = %self.path.display(),
                    reason = why,
                    keys = %status.ids_text(),
                    signing_key = status.signing,
                    fingerprints = %status.fingerprints,
                    "reloaded the cluster secret"
                );
            }
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    reason = why,
                    error = %e,
                    keys = %status.ids_text(),
                    signing_key = status.signing,
                    "cannot reload the cluster secret: keeping the keys loaded before, and \
                     /readyz answers 503 until the file loads (fix it; the node retries when \
                     it changes or on SIGHUP)"
                );
                status.error = Some(e.to_string());
            }
        }
    }
}
