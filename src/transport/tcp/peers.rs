//! The TCP transport follows membership: a connection to every live member, at its
//! membership address moved by [`TcpConfig::member_port_offset`](super::TcpConfig), and none
//! to members that failed or left (their queues are dropped, their sockets closed, and no
//! reconnection is tried: they stop costing send work).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

use super::{BACKOFF_MIN, Outbound, TcpTransport};

/// The TCP address of a member at membership address `addr`, or `None` if the offset takes
/// the port out of range.
fn tcp_addr(addr: SocketAddr, offset: i32) -> Option<SocketAddr> {
    let port = u16::try_from(i32::from(addr.port()).checked_add(offset)?).ok()?;
    (port != 0).then(|| SocketAddr::new(addr.ip(), port))
}

impl TcpTransport {
    /// Connects to the members of `members` (membership addresses) not connected yet, and
    /// lets go of the peers membership added that are no longer among them. Static peers
    /// (`TcpConfig::peers`) stay whatever membership says. Without a member port offset,
    /// does nothing.
    pub(super) fn follow_members(&mut self, members: &[SocketAddr]) {
        let Some(offset) = self.config.member_port_offset else {
            return;
        };
        let own = self.local_addr();
        let wanted: Vec<SocketAddr> = members
            .iter()
            .filter_map(|&a| tcp_addr(a, offset))
            .filter(|a| Some(*a) != own)
            .collect();
        let registry = self.registry.as_ref();
        self.outbound.retain_mut(|peer| {
            let keep = !peer.member || wanted.contains(&peer.addr);
            if !keep {
                if let Some(mut stream) = peer.stream.take()
                    && let Some(r) = registry
                {
                    let _ = r.deregister(&mut stream);
                }
                tracing::debug!(peer = %peer.addr, "tcp peer no longer a member; closed");
            }
            keep
        });
        let now = Instant::now();
        for addr in wanted {
            if self.outbound.iter().any(|p| p.addr == addr) {
                continue;
            }
            tracing::debug!(peer = %addr, "tcp peer joined; connecting");
            self.outbound.push(Outbound {
                addr,
                stream: None,
                queue: BytesMut::new(),
                retry_at: now,
                backoff: BACKOFF_MIN,
                dropped: 0,
                progress: now,
                member: true,
            });
        }
        // Connect now rather than at the next receive: the first frames for a new member
        // wait in its queue only while the connection is made.
        self.service_outbound();
    }

    /// The addresses this transport sends to, static peers first (for tests and logs).
    #[cfg(test)]
    pub(crate) fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.outbound.iter().map(|p| p.addr).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_types)]

    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::transport::{TcpConfig, Transport};

    /// Gives the transport's connections time to connect and flush their queues.
    fn pump(t: &mut TcpTransport) {
        for _ in 0..20 {
            let _ = t.recv(&mut |_, _| {});
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_offset_moves_the_port_and_refuses_to_leave_its_range() {
        let a: SocketAddr = "10.0.0.2:7700".parse().unwrap();
        assert_eq!(tcp_addr(a, 100), "10.0.0.2:7800".parse().ok());
        assert_eq!(tcp_addr(a, 0), Some(a));
        assert_eq!(tcp_addr(a, -7700), None);
        assert_eq!(tcp_addr(a, 60_000), None);
        assert_eq!(tcp_addr(a, i32::MAX), None);
    }

    /// Members that join are connected to and get frames; members that go are let go of
    /// (their connection closed, no reconnection), and static peers stay.
    #[test]
    fn members_are_connected_to_while_they_are_members() {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let at: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut config = TcpConfig::new(1024);
        config.peers = vec![at[0]];
        config.member_port_offset = Some(0);
        let mut t = TcpTransport::bind(config).unwrap();
        t.set_peers(&[at[1], at[2]]);
        assert_eq!(t.peer_addrs(), at);
        t.send(b"hello").unwrap();
        pump(&mut t);
        let mut conns: Vec<_> = listeners.iter().map(|l| l.accept().unwrap().0).collect();
        for c in &mut conns {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = [0u8; 9];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"\x05\0\0\0hello");
        }
        // Member 2 is gone: its connection is closed; the static peer stays even though
        // membership does not list it.
        t.set_peers(&[at[1]]);
        assert_eq!(t.peer_addrs(), &at[..2]);
        let mut rest = Vec::new();
        assert_eq!(conns[2].read_to_end(&mut rest).unwrap(), 0, "closed");
        t.send(b"again").unwrap();
        pump(&mut t);
        let mut got = [0u8; 9];
        conns[0].read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x05\0\0\0again");
        conns[1].read_exact(&mut got).unwrap();
        // And never reconnected to.
        listeners[2].set_nonblocking(true).unwrap();
        pump(&mut t);
        assert!(
            listeners[2].accept().is_err(),
            "a departed member is not reconnected"
        );
        // Without an offset, membership changes nothing.
        let mut fixed = TcpTransport::bind(TcpConfig::new(1024)).unwrap();
        fixed.set_peers(&[at[1]]);
        assert!(fixed.peer_addrs().is_empty());
    }
}
