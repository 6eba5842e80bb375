//! A transport of your own: two routers joined by an in-memory "bus" instead of sockets.
//!
//! A provider implements `herald::transport::Transport`. This one has no file descriptor: it
//! keeps the `DriverWaker` it gets at registration, and peers wake its driver when they hand it
//! a frame, the same pattern a broker-backed provider would use from its client thread.
//!
//! `cargo run --example custom_provider`
#![allow(clippy::disallowed_types)]

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, unbounded};
use herald::auth::{Key, Keyring};
use herald::transport::{DriverWaker, PeerAddr, RecvStatus, Registry, SendError, Token, Transport};
use herald::{EventId, Router};

/// One node's end of the bus.
#[derive(Debug)]
struct BusTransport {
    inbox: Receiver<Bytes>,
    /// Each peer's inbox and the waker of its driver (set when that peer registers).
    peers: Vec<(Sender<Bytes>, Arc<OnceLock<DriverWaker>>)>,
    my_waker: Arc<OnceLock<DriverWaker>>,
}

impl Transport for BusTransport {
    fn name(&self) -> &str {
        "bus"
    }

    fn register(
        &mut self,
        _registry: &Registry,
        _token: Token,
        waker: DriverWaker,
    ) -> io::Result<()> {
        self.my_waker
            .set(waker)
            .map_err(|_| io::Error::other("registered twice"))
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let frame = Bytes::copy_from_slice(frame);
        for (inbox, waker) in &self.peers {
            let _ = inbox.send(frame.clone());
            if let Some(w) = waker.get() {
                w.wake();
            }
        }
        Ok(())
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        // A budget, so that a busy peer cannot keep the driver from sending and from its
        // timers; saying more is waiting brings the driver back before it sleeps.
        for _ in 0..1024 {
            match self.inbox.try_recv() {
                // One inbox per peer pair: answers to a peer go out through `send` to all,
                // which the default `send_to` does.
                Ok(frame) => deliver(frame, PeerAddr::Unknown),
                Err(_) => return Ok(RecvStatus::Drained),
            }
        }
        Ok(RecvStatus::MoreWaiting)
    }
}

/// Two transports wired to each other.
fn bus_pair() -> (BusTransport, BusTransport) {
    let (tx_a, rx_a) = unbounded();
    let (tx_b, rx_b) = unbounded();
    let (w_a, w_b) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let a = BusTransport {
        inbox: rx_a,
        peers: vec![(tx_b, Arc::clone(&w_b))],
        my_waker: Arc::clone(&w_a),
    };
    let b = BusTransport {
        inbox: rx_b,
        peers: vec![(tx_a, w_a)],
        my_waker: w_b,
    };
    (a, b)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (ta, tb) = bus_pair();
    let router = |id: u64, t: BusTransport| {
        Router::builder()
            .cluster("example")
            .node_id(id)
            .keyring(Keyring::new(1, Key::from_bytes([9; 32])).expect("key"))
            .transport(t)
            .build()
    };
    let (a, b) = (router(1, ta)?, router(2, tb)?);
    let event = EventId::from_name("product.changed");
    let (_sub, rx) = b.event(event).receiver();
    a.event(event).raise(b"product 42")?;
    let m = rx.recv_timeout(Duration::from_secs(5))?;
    println!(
        "node {} got {:?} from node {} over the bus",
        b.node_id(),
        String::from_utf8_lossy(&m.payload),
        m.node
    );
    assert_eq!(&m.payload[..], b"product 42");
    a.shutdown();
    b.shutdown();
    Ok(())
}
