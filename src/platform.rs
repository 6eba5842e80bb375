//! What differs between platforms in the transports, in one place. (File permissions have
//! theirs in `auth::private_file`.)
//!
//! Linux keeps its fast paths: `TCP_USER_TIMEOUT` here, and GSO/GRO and `recvmmsg` through
//! quinn-udp, which picks them per platform itself.

use std::time::Duration;

use socket2::SockRef;

/// Bounds how long sent data may stay unacknowledged before the kernel drops the connection
/// (`TCP_USER_TIMEOUT`), so a blackholed peer is noticed in seconds, not many minutes.
/// Where the option does not exist (Windows, macOS), nothing is set: a silent peer is still
/// reported by the heartbeat's dead-peer timeout, and keepalive closes the connection later.
pub(crate) fn set_tcp_user_timeout(sock: &SockRef<'_>, timeout: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    {
        let _ = sock.set_tcp_user_timeout(Some(timeout));
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    {
        let _ = (sock, timeout);
    }
}
