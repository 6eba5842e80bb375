//! Files that only their owner may read (the cluster's secret file, the service's password
//! file): the one place that knows how each platform says so.
//!
//! On Unix a file is private when group and others have no permission bits (mode 0600 or
//! stricter), and new files are created with mode 0600. Windows has no such bits: a file's
//! access is its ACL, which herald neither reads nor sets. There a new file inherits the ACL
//! of its directory, nothing is refused as too open, and herald logs a warning once saying
//! that the permissions were not checked (docs/security.md, "Windows").

use std::fs;
use std::io;
use std::path::Path;

/// The permission bits of a file that group or others may access; `None` when only its
/// owner can, or when the platform cannot tell (Windows: see the module doc).
pub(crate) fn too_open(meta: &fs::Metadata, path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = path;
        let mode = meta.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        warn_unchecked(path);
        None
    }
}

/// Creates a new file at `path` that only its owner may read (mode 0600 on Unix); fails if
/// one exists.
pub(crate) fn create_new(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(not(unix))]
fn warn_unchecked(path: &Path) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            path = %path.display(),
            "file permissions are not checked on this platform: make sure only the account \
             running herald can read the secret and password files (see docs/security.md)"
        );
    });
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn new_files_are_private_and_open_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        drop(create_new(&path).unwrap());
        assert!(create_new(&path).is_err(), "never overwrites");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(too_open(&meta, &path), None);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(too_open(&fs::metadata(&path).unwrap(), &path), Some(0o640));
    }
}
