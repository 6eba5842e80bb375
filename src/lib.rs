//! herald carries events between the instances of a load-balanced application: the thing that
//! makes "I changed product 42, drop it from your cache" reach every other server in
//! microseconds, signed, and never silently lost. Every event raised on a node reaches each
//! live peer's subscribers exactly once, or those subscribers are told it was [`Missed`];
//! a malformed, forged or replayed frame never panics a node and is counted by reason
//! ([`Reject`]).
//!
//! # What an application uses
//!
//! - [`Router`] (made by [`RouterBuilder`], or from a [`Config`] file): raise events
//!   ([`Event::raise`]), subscribe to them ([`Event::subscribe`], [`Event::receiver`]),
//!   hear about lost ones ([`Router::on_missed`]), read counters ([`Router::metrics`]).
//!   Frames travel over UDP (unicast or multicast), TCP, NATS (feature `nats`) or a
//!   [`transport::Transport`] of your own; [`membership`] finds the peers when asked to.
//! - [`service::Service`]: the subscription service, started beside a router, so outside
//!   programs (`redis-cli`, any Redis client library) subscribe to events, get them pushed,
//!   and raise them over the Redis protocol. It holds the router through a [`WeakRouter`].
//! - [`testing::SimNetwork`]: a simulated lossy network of nodes with a fake clock, to test
//!   what your caches do with a [`Missed`].
//!
//! # The data path
//!
//! ```text
//!  raise()                     Event::raise                          (router)
//!    │ local subscribers run on the raising thread
//!    ▼
//!  ring        lock-free many-producer byte ring, records in wire layout  (ringbuf)
//!    │ the driver thread drains committed records
//!    ▼
//!  frame       FrameWriter packs records into a frame                     (wire)
//!    ▼
//!  sign        HMAC-SHA256 tag, or AES-256-GCM seal                       (auth)
//!    ▼
//!  transport   UDP / TCP / NATS / yours, moved by the mio loop             (transport, driver)
//!  ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ network ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─
//!  transport   bytes in, as Bytes over pooled receive blocks               (transport, driver)
//!    ▼
//!  verify      Frame::parse (the one door for untrusted bytes), then
//!              Keyring::verify / open, the only makers of a Verified       (wire, auth)
//!    ▼
//!  session     per sender incarnation: sequence window, replay, gaps
//!              recovered or reported as Missed                              (endpoint, session)
//!    ▼
//!  dispatch    subscribers get each payload as a slice of the received
//!              buffer, on the dispatcher thread                             (driver, subscription)
//! ```
//!
//! The core ([`wire`], [`auth`], the ring, the session and [`endpoint`]) has no sockets,
//! threads or clock: [`endpoint::Endpoint`] is the whole node without I/O, time is an
//! argument, and output goes into buffers the caller passes. Only the driver touches sockets,
//! and only the ring's raw storage holds `unsafe`. docs/architecture.md maps every module.
//!
//! # Example: raise and subscribe
//!
//! ```
//! use herald::auth::{Key, Keyring};
//! use herald::{EventId, Router};
//!
//! // A router with no transport keeps events on this node; add `.udp_bind(..)` and
//! // `.udp_peer(..)` (or `.udp_multicast(..)`) to reach the others.
//! let router = Router::builder()
//!     .cluster("shop")
//!     .keyring(Keyring::new(1, Key::from_bytes([7; 32])).unwrap())
//!     .build()
//!     .unwrap();
//! let changed = router.event(EventId::from_name("product.changed"));
//! let (_subscription, rx) = changed.receiver();
//! changed.raise(b"42").unwrap();
//! assert_eq!(&rx.try_recv().unwrap().payload[..], b"42");
//! router.shutdown();
//! ```
//!
//! # Example: sign a frame and read it back
//!
//! ```
//! use herald::auth::{Key, Keyring};
//! use herald::wire::{ClusterId, Flags, Frame, FrameKind, FrameWriter, HeaderFields};
//! use herald::EventId;
//!
//! let keyring = Keyring::new(1, Key::from_bytes([7; 32])).unwrap();
//! let cluster = ClusterId::from_name("shop");
//! let fields = HeaderFields {
//!     kind: FrameKind::Data, flags: Flags::EMPTY, key_id: keyring.signing_key_id(), cluster,
//!     node: 1, incarnation: 0xfeed, sequence: 1, timestamp_ns: 0,
//! };
//!
//! let mut buf = [0u8; 1472];
//! let mut writer = FrameWriter::new(&mut buf, &fields).unwrap();
//! writer.push(&EventId::from_name("product.changed"), b"42").unwrap();
//! let frame_len = writer.finish(&keyring).len();
//!
//! let frame = Frame::parse(&buf[..frame_len]).unwrap();
//! let verified = keyring.verify(frame).unwrap();
//! let record = verified.frame().records().next().unwrap();
//! assert_eq!(record.payload(), b"42");
//! ```
#![deny(unsafe_code)]

pub mod auth;
mod config;
mod driver;
pub mod endpoint;
mod error;
mod event;
mod faults;
pub mod membership;
mod metrics;
mod peers;
mod platform;
// The ring is an internal of the router; it stays public (hidden) for the ring benchmark,
// the stress test and the loom and Miri runs over it.
#[doc(hidden)]
pub mod ringbuf;
mod router;
pub mod service;
mod session;
#[cfg(feature = "stream")]
pub mod stream;
mod subscription;
mod sync;
pub mod testing;
pub mod transport;
pub mod wire;

pub use config::{
    Address, AddressError, Config, ControlSection, LatencySection, LogFormat, LogSection,
    MembershipSection, MetricsSection, MulticastSection, NatsSection, RingSection, ServiceSection,
    TcpSection, TimingSection, UdpSection,
};
pub use endpoint::RecoveryConfig;
pub use error::{BuildError, ConfigError, ConfigErrors, RaiseError, Reject};
pub use event::{EventId, Missed, MissedReason};
pub use metrics::Metrics;
pub use peers::{PeerInfo, PeerState};
pub use router::{Event, Flushed, MembershipSettings, Router, RouterBuilder, WeakRouter};
pub use subscription::{Delivery, Message, Subscription};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
