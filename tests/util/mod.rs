//! Helpers shared by the real-socket tests.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};

use herald::auth::{Key, Keyring};

/// `n` UDP ports on 127.0.0.1 that were free a moment ago.
pub(crate) fn free_udp_addrs(n: usize) -> Vec<SocketAddr> {
    let sockets: Vec<_> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local address"))
        .collect()
}

/// The keyring every node of a test cluster shares.
pub(crate) fn test_keyring() -> Keyring {
    Keyring::new(1, Key::from_bytes([0x5e; 32])).expect("key id 1")
}
