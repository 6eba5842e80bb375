//! herald carries events between the instances of a load-balanced application: the thing that
//! makes "I changed product 42, drop it from your cache" reach every other server in
//! microseconds, signed, and never silently lost.
//!
//! # What exists today
//!
//! This crate is being built bottom up. The application-facing part:
//!
//! - [`Router`]: raise events ([`Event::raise`]), subscribe to them ([`Event::subscribe`],
//!   [`Event::receiver`]), hear about lost ones ([`Router::on_missed`]), read counters
//!   ([`Router::metrics`]). Frames travel over UDP (unicast or multicast) or over a
//!   [`transport::Transport`] of your own.
//! - [`service::Service`]: the subscription service, so outside programs (`redis-cli`, any
//!   Redis client library) subscribe to events, get them pushed, and raise them over the
//!   Redis protocol.
//! - [`testing::SimNetwork`]: a simulated lossy network of nodes with a fake clock, to test
//!   what your caches do with a [`Missed`].
//!
//! Underneath, the sans-IO core:
//!
//! - [`wire`]: the frame format. [`wire::FrameWriter`] encodes events into a buffer the caller
//!   owns, without allocating; [`wire::Frame::parse`] is the one checked entry point for bytes
//!   from the network, and after it succeeds no accessor can panic.
//! - [`auth`]: the cluster keyring. HMAC-SHA256 tags, constant-time verification, and the
//!   [`auth::Verified`] type that only a successful verification can make.
//! - [`ringbuf`]: the lock-free many-producer, one-consumer byte ring that `raise()` will write
//!   into.
//!
//! - [`endpoint`]: the node without sockets or clocks: frames in, deliveries and [`Missed`]
//!   out, sequence windows per sender incarnation.
//!
//! See the README for what runs today.
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
pub mod membership;
mod metrics;
mod platform;
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
    Address, AddressError, Config, ConfigError, ConfigErrors, LatencySection, LogFormat,
    LogSection, MembershipSection, MetricsSection, MulticastSection, NatsSection, RingSection,
    ServiceSection, TcpSection, TimingSection, UdpSection,
};
pub use endpoint::RecoveryConfig;
pub use error::Reject;
pub use event::{EventId, Missed, MissedReason};
pub use metrics::Metrics;
pub use router::{BuildError, Event, MembershipSettings, RaiseError, Router, RouterBuilder};
pub use subscription::{Delivery, Message, Subscription};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
