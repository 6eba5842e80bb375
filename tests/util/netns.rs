//! Running a test's inner half inside a network namespace of its own (`unshare -n`), so it
//! may set routes and kernel rules that touch nothing outside the test.

use std::process::Command;

/// Whether this process runs as root (needed for a network namespace). Prints a skip line
/// when it does not.
pub(crate) fn is_root_or_skip() -> bool {
    let uid = Command::new("id").arg("-u").output().map(|o| o.stdout).ok();
    let root = uid.as_deref() == Some(b"0\n".as_slice());
    if !root {
        eprintln!("SKIPPED: needs root for a network namespace (CI runs it as root)");
    }
    root
}

/// Runs this test binary again inside a new network namespace: `setup` (shell commands such
/// as `ip link set lo up`) first, then the ignored tests whose names match `filter` with
/// `HERALD_IN_NETNS=1` set. Panics unless they pass and `expect_passed` of them ran.
pub(crate) fn run_inside(setup: &str, filter: &str, expect_passed: usize) {
    let exe = std::env::current_exe().expect("test binary path");
    let script = format!(
        "{setup} && HERALD_IN_NETNS=1 exec {} {filter} --ignored --nocapture --test-threads=1",
        exe.display()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "a test inside the namespace failed");
    assert!(
        stdout.contains(&format!("{expect_passed} passed")),
        "the inner tests did not all run"
    );
}

/// Panics unless this runs inside a namespace made by [`run_inside`].
pub(crate) fn assert_inside() {
    assert_eq!(
        std::env::var("HERALD_IN_NETNS").as_deref(),
        Ok("1"),
        "only inside the test's own namespace"
    );
}
