//! TCP follows membership: routers that know one seed connect over TCP to every member that
//! joins, frames reach it from then on, and a member that dies stops being connected to.
#![allow(clippy::disallowed_types)]

mod util;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald::endpoint::{Endpoint, EndpointConfig, Now, new_incarnation};
use herald::membership::{Membership, MembershipConfig, Message};
use herald::wire::{ClusterId, Frame, FrameKind};
use herald::{EventId, MembershipSettings, Router};

const CLUSTER: &str = "member-tcp";

/// A router whose UDP (membership) and TCP listener share one port number.
fn node(id: u64, addr: SocketAddr, seed: SocketAddr) -> Router {
    Router::builder()
        .cluster(CLUSTER)
        .node_id(id)
        .keyring(util::test_keyring())
        .udp_bind(addr)
        .tcp_listen(addr)
        .membership(MembershipSettings {
            seeds: vec![seed],
            ..MembershipSettings::default()
        })
        .build()
        .expect("router builds")
}

fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A member run by the test itself: herald's endpoint and membership state machine over a
/// UDP socket (so it joins and answers probes like any node), and a bare TCP listener on
/// the same port that shows who connects to it. Stopping it is a kill: it falls silent.
struct Observer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    listener: TcpListener,
}

impl Observer {
    fn start(id: u64, addr: SocketAddr, seed: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).expect("observer's tcp port");
        let socket = UdpSocket::bind(addr).expect("observer's udp port");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let now = Now::system();
            let incarnation = new_incarnation(now.unix_ns, id);
            let config = EndpointConfig::new(ClusterId::from_name(CLUSTER), id, incarnation);
            let mut endpoint = Endpoint::new(config, util::test_keyring(), now);
            endpoint.enable_membership();
            let mut mc = MembershipConfig::new(id, incarnation);
            mc.advertise = Some(addr);
            mc.seeds = vec![seed];
            let mut membership = Membership::new(mc, now.instant);
            let mut buf = vec![0u8; 2048];
            let mut out = vec![0u8; 1472];
            while !stopped.load(Ordering::Relaxed) {
                let now = Now::system();
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = endpoint.handle_datagram(now, Bytes::copy_from_slice(&buf[..n]));
                    while let Some(frame) = endpoint.poll_membership() {
                        let Some(gossip) = frame.membership() else {
                            continue;
                        };
                        let h = frame.header_fields();
                        let msg = Message::from_gossip(&gossip);
                        membership.handle_message(now.instant, from, (h.node, h.incarnation), &msg);
                    }
                }
                if membership.poll_timeout().is_some_and(|t| t <= now.instant) {
                    membership.handle_timeout(now.instant);
                }
                while let Some((to, msg)) = membership.poll_message() {
                    if let Ok(len) = endpoint.encode_membership(now, &msg.as_wire(), &mut out) {
                        let _ = socket.send_to(&out[..len], to);
                    }
                }
                while membership.poll_event().is_some() {}
            }
        });
        Self {
            stop,
            thread: Some(thread),
            listener,
        }
    }

    /// Kills it: no more answers to probes.
    fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("observer thread");
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The node whose frames arrive on `stream` (from its first frame).
fn first_sender(stream: &mut TcpStream) -> u64 {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("frames arrive over tcp");
    let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut frame).expect("a whole frame");
    Frame::parse(&frame).expect("a herald frame").node()
}

/// Reads length-prefixed frames from `stream` for up to 3 s, until one of `kind` from
/// `node` arrives.
fn read_frame_from(stream: &mut TcpStream, node: u64, kind: FrameKind) -> bool {
    let until = Instant::now() + Duration::from_secs(3);
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    while Instant::now() < until {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            break;
        }
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        if stream.read_exact(&mut frame).is_err() {
            break;
        }
        if let Ok(f) = Frame::parse(&frame) {
            *seen
                .entry((f.node(), format!("{:?}", f.kind())))
                .or_insert(0) += 1;
            if f.node() == node && f.kind() == kind {
                return true;
            }
        }
    }
    println!("frames seen: {seen:?}");
    false
}

#[test]
fn tcp_connects_to_members_that_join_and_lets_go_of_those_that_die() {
    let addrs = util::free_udp_addrs(5);
    let seed = addrs[0];
    let routers: Vec<Router> = (0..3).map(|i| node(i as u64 + 1, addrs[i], seed)).collect();
    wait(Duration::from_secs(10), || {
        routers.iter().all(|r| r.members().len() == 3)
    })
    .expect("three routers see each other");

    // The three exchange events.
    let id = EventId::from_name("cart.changed");
    let subs: Vec<_> = routers.iter().map(|r| r.event(id).receiver()).collect();
    for (i, r) in routers.iter().enumerate() {
        r.event(id).raise(&[i as u8]).unwrap();
    }
    for (i, (_s, rx)) in subs.iter().enumerate() {
        // Its own event (local subscribers hear it at once) and the two others'.
        let mut got: Vec<u8> = (0..3)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(3))
                    .expect("event")
                    .payload[0]
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2], "router {i}");
    }

    // A fourth router joins later and receives what is raised after it joined.
    let late = node(4, addrs[3], seed);
    wait(Duration::from_secs(10), || {
        late.members().len() == 4 && routers.iter().all(|r| r.members().len() == 4)
    })
    .expect("the fourth router joins");
    let (_late_sub, late_rx) = late.event(id).receiver();
    routers[1].event(id).raise(b"after join").unwrap();
    // (It may also be handed earlier events its senders still hold: harmless to a cold cache.)
    let got = std::iter::from_fn(|| late_rx.recv_timeout(Duration::from_secs(3)).ok())
        .any(|m| &m.payload[..] == b"after join");
    assert!(got, "the joiner receives an event raised after it joined");

    // A member with only a bare TCP listener: every router connects to it over TCP once it
    // joins, and sends its frames there.
    let mut observer = Observer::start(9, addrs[4], seed);
    wait(Duration::from_secs(10), || {
        routers
            .iter()
            .chain([&late])
            .all(|r| r.members().len() == 5)
    })
    .expect("the observer joins");
    let mut conns: Vec<TcpStream> = (0..4)
        .map(|_| observer.listener.accept().expect("a router connects").0)
        .collect();
    // Each connection carries one router's frames (heartbeats first of all): the one of
    // router 3 carries the event it raises now.
    let senders: Vec<u64> = conns.iter_mut().map(first_sender).collect();
    let mut sorted = senders.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3, 4], "one connection from each router");
    routers[2].event(id).raise(b"to everyone").unwrap();
    let three = senders.iter().position(|&n| n == 3).unwrap();
    assert!(
        read_frame_from(&mut conns[three], 3, FrameKind::Data),
        "router 3's event arrived on its connection"
    );

    // Killed: every router declares it failed and closes its connection to it, and nobody
    // connects again.
    observer.kill();
    let took = wait(Duration::from_secs(10), || {
        routers
            .iter()
            .chain([&late])
            .all(|r| r.members().len() == 4)
    })
    .expect("the dead member is declared failed");
    println!("dead member declared failed by all after {took:?}");
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut sink = [0u8; 4096];
        let closed = loop {
            match c.read(&mut sink) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        assert!(closed, "the connection to a failed member is closed");
    }
    observer.listener.set_nonblocking(true).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let again = observer.listener.accept();
    assert!(
        matches!(&again, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a failed member is not connected to again: {again:?}"
    );
}
