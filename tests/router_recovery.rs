//! Recovery over real UDP sockets: a receiver that loses datagrams asks for them and gets
//! them again, so every event arrives exactly once, in order, with no `Missed`; and a sender
//! that stops waits until its receivers have everything, even when its last frames and its
//! goodbye are lost.
#![allow(clippy::disallowed_types)]

mod util;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald::transport::{
    DriverWaker, FaultInjection, FrameBatch, PeerAddr, RecvStatus, Registry, SendError, Token,
    Transport, UdpConfig, UdpTransport,
};
use herald::wire::{Flags, Frame, FrameKind};
use herald::{EventId, Router};
use parking_lot::Mutex;

/// What a receiver saw of one sender's counters.
#[derive(Default)]
struct Got {
    next: u64,
    out_of_order: u64,
    missed: u64,
}

fn watch(receiver: &Router) -> (Arc<Mutex<Got>>, Vec<herald::Subscription>) {
    let got = Arc::new(Mutex::new(Got::default()));
    let g = Arc::clone(&got);
    let sub = receiver
        .event(EventId::from_name("counter"))
        .subscribe(move |d| {
            let n = u64::from_le_bytes(d.payload()[..8].try_into().unwrap());
            let mut g = g.lock();
            if n != g.next {
                g.out_of_order += 1;
            }
            g.next = n + 1;
        });
    let g = Arc::clone(&got);
    let missed = receiver.on_missed(move |m| {
        eprintln!("missed: {m:?}");
        g.lock().missed += 1;
    });
    (got, vec![sub, missed])
}

fn wait_for(got: &Mutex<Got>, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().next < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn datagrams_lost_at_the_receiver_are_asked_for_and_recovered() {
    for loss in [0.05, 0.2] {
        let addrs = util::free_udp_addrs(2);
        let sender = util::counting_node("recovery", 1)
            .udp_bind(addrs[0])
            .udp_peer(addrs[1])
            .build()
            .unwrap();
        let receiver = util::counting_node("recovery", 2)
            .udp_bind(addrs[1])
            .udp_peer(addrs[0])
            .udp_fault_injection(FaultInjection {
                seed: 11,
                loss,
                duplicate: 0.02,
                reorder: 0.02,
                reorder_delay: Duration::from_millis(2),
                ..FaultInjection::default()
            })
            .build()
            .unwrap();
        let (got, _subs) = watch(&receiver);
        const N: u64 = 50_000;
        util::raise_all(&sender, EventId::from_name("counter"), N);
        wait_for(&got, N);
        let g = got.lock();
        assert_eq!(g.next, N, "loss {loss}: every event arrived");
        assert_eq!(g.out_of_order, 0, "loss {loss}: once each, in order");
        assert_eq!(g.missed, 0, "loss {loss}: nothing reported missed");
        let (r, s) = (receiver.metrics(), sender.metrics());
        assert!(r.recovery("naks_sent") > 0, "{r:?}");
        assert!(s.recovery("frames_resent") > 0, "{s:?}");
        assert_eq!(r.events_delivered, N);
    }
}

/// A UDP transport that, once `cut` is set, drops every data frame it is to send to all
/// peers, and the first goodbye: the tail of the stream and the news that it ended. Frames
/// for one peer (answers to requests) go through.
#[derive(Debug)]
struct CutTail {
    inner: UdpTransport,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    goodbye_dropped: bool,
}

impl Transport for CutTail {
    fn name(&self) -> &str {
        "cut-tail"
    }

    fn register(&mut self, r: &Registry, t: Token, w: DriverWaker) -> io::Result<()> {
        self.inner.register(r, t, w)
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let lens = [frame.len()];
        match FrameBatch::new(frame, &lens) {
            Some(batch) => self.send_batch(&batch),
            None => Ok(()),
        }
    }

    fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        for frame in batch.iter() {
            let parsed = Frame::parse(frame).expect("own frame");
            let drop = match parsed.kind() {
                FrameKind::Data => self.cut.load(Ordering::Relaxed),
                FrameKind::Heartbeat if parsed.flags().contains(Flags::CLOSING) => {
                    !std::mem::replace(&mut self.goodbye_dropped, true)
                }
                _ => false,
            };
            if drop {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                self.inner.send(frame)?;
            }
        }
        Ok(())
    }

    fn send_to(&mut self, peer: &PeerAddr, frame: &[u8]) -> Result<(), SendError> {
        self.inner.send_to(peer, frame)
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        self.inner.recv(deliver)
    }
}

#[test]
fn a_stopping_sender_waits_until_its_receivers_have_everything() {
    let addrs: Vec<SocketAddr> = util::free_udp_addrs(2);
    let cut = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let udp = UdpTransport::bind(&UdpConfig {
        bind: addrs[0],
        peers: vec![addrs[1]],
        multicast: None,
        max_frame_len: 1472,
        faults: None,
    })
    .unwrap();
    let sender = util::counting_node("linger", 1)
        .transport(CutTail {
            inner: udp,
            cut: Arc::clone(&cut),
            dropped: Arc::clone(&dropped),
            goodbye_dropped: false,
        })
        .linger(Duration::from_secs(3))
        .build()
        .unwrap();
    let receiver = util::counting_node("linger", 2)
        .udp_bind(addrs[1])
        .udp_peer(addrs[0])
        .build()
        .unwrap();
    let (got, _subs) = watch(&receiver);
    let event = sender.event(EventId::from_name("counter"));
    for i in 0..1000u64 {
        event.raise(&i.to_le_bytes()).unwrap();
    }
    wait_for(&got, 1000);
    // Let the receiver's statuses reach the sender: it counts the receiver from then on.
    std::thread::sleep(Duration::from_millis(100));
    cut.store(true, Ordering::Relaxed);
    for i in 1000..1100u64 {
        event.raise(&i.to_le_bytes()).unwrap();
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let started = Instant::now();
    sender.shutdown();
    eprintln!(
        "stopped in {:?}; {} datagrams cut",
        started.elapsed(),
        dropped.load(Ordering::Relaxed)
    );
    assert!(
        dropped.load(Ordering::Relaxed) > 1,
        "the tail and the goodbye were cut"
    );
    wait_for(&got, 1100);
    let g = got.lock();
    assert_eq!(g.next, 1100, "the tail arrived");
    assert_eq!((g.out_of_order, g.missed), (0, 0));
}
