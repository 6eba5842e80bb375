//! An endpoint's settings: [`EndpointConfig`], and [`RecoveryConfig`] for recovery and flow
//! control.

use std::time::Duration;

use crate::auth::Security;
use crate::wire::ClusterId;

/// How lost frames are recovered and how far a sender may run ahead of its receivers.
/// [`RecoveryConfig::default`] gives the defaults.
#[derive(Clone, Debug)]
pub struct RecoveryConfig {
    /// Whether gaps are asked for at all (default true). Without it a gap is reported after
    /// the reorder window, nothing is kept for sending again, and no window applies.
    pub enabled: bool,
    /// Bytes of recent signed frames a sender keeps to send again. Default 16 MiB.
    pub retention_bytes: usize,
    /// Event ids a sender keeps of frames it no longer holds, so that a receiver that lost
    /// them learns which events it lost. Default 1,048,576 (16 MiB).
    pub retained_ids: usize,
    /// How many data frames a sender may run ahead of its slowest live receiver. Default 1024.
    pub window_frames: u64,
    /// The longest random delay before a receiver first asks for a gap. Default 0: it asks at
    /// the end of the turn that found the gap (any frame that arrived in that turn has filled
    /// its hole by then; reordering on a LAN is rare, and a needless request costs one
    /// duplicate frame). A router on multicast makes it at least 3 ms, so that receivers that
    /// lost the same frame hear one another's request before they send their own.
    pub nak_delay: Duration,
    /// How often a receiver asks again for a gap still open. Default 2 ms (a loopback or LAN
    /// round trip is a fraction of that; raise it for long paths).
    pub nak_interval: Duration,
    /// How long a gap may stay open while it is asked for before it is reported as missed.
    /// Default 500 ms.
    pub give_up: Duration,
    /// How often a receiver tells a sender that sends data how far it has consumed. Default
    /// 10 ms (and at once after each quarter of a window).
    pub status_interval: Duration,
    /// How long a receiver may stay silent before it no longer holds a sender back. Default
    /// 500 ms.
    pub receiver_timeout: Duration,
    /// Whether every peer hears what one is sent (multicast): then one resend answers every
    /// receiver that asked for a frame within a short time, and a receiver that hears another
    /// ask for its gap holds its own request back. Default false.
    pub shared_channel: bool,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_bytes: 16 << 20,
            retained_ids: 1 << 20,
            window_frames: 1024,
            nak_delay: Duration::ZERO,
            nak_interval: Duration::from_millis(2),
            give_up: Duration::from_millis(500),
            status_interval: Duration::from_millis(10),
            receiver_timeout: Duration::from_millis(500),
            shared_channel: false,
        }
    }
}

/// The endpoint's settings. [`EndpointConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// The cluster this node belongs to; frames of other clusters are dropped.
    pub cluster: ClusterId,
    /// This node's id, unique in the cluster.
    pub node: u64,
    /// This run of the node, different at each start so peers tell a restart from a replay:
    /// [`new_incarnation`](super::new_incarnation) makes one from the start time and random bits.
    pub incarnation: u64,
    /// Without recovery: how long a gap in a sender's sequence may wait for a late (reordered)
    /// frame before it is reported as [`Missed`](crate::Missed). Default 20 ms. With recovery (the default),
    /// [`RecoveryConfig::give_up`] takes its place.
    pub reorder_window: Duration,
    /// How often a node that sends nothing else sends a heartbeat. Default 100 ms.
    pub heartbeat_interval: Duration,
    /// How long a sender may stay silent before it is reported ([`MissedReason::PeerSilent`](crate::MissedReason::PeerSilent)).
    /// Default 1 s (ten heartbeats).
    pub dead_timeout: Duration,
    /// How far a frame's timestamp may be from this node's clock. Default 5 s.
    pub clock_skew: Duration,
    /// The most senders tracked at once. Default 1024.
    pub max_senders: usize,
    /// Recovery of lost frames and flow control.
    pub recovery: RecoveryConfig,
    /// Whether data frames are signed or sealed (`security`); data frames of the other mode
    /// are dropped as `security_mode_mismatch`. Default [`Security::Sign`].
    pub security: Security,
    /// The longest frame accepted, in bytes; longer ones are dropped as `oversized`, even
    /// when signed. A router sets its `max_frame_len` here: the one limit bounds what a node
    /// sends and what it takes. Default (and at most) [`MAX_FRAME_LEN`](crate::wire::MAX_FRAME_LEN).
    pub max_frame_len: usize,
}

impl EndpointConfig {
    /// The defaults for a node.
    pub fn new(cluster: ClusterId, node: u64, incarnation: u64) -> Self {
        Self {
            cluster,
            node,
            incarnation,
            reorder_window: Duration::from_millis(20),
            heartbeat_interval: Duration::from_millis(100),
            dead_timeout: Duration::from_secs(1),
            clock_skew: Duration::from_secs(5),
            max_senders: 1024,
            recovery: RecoveryConfig::default(),
            security: Security::Sign,
            max_frame_len: crate::wire::MAX_FRAME_LEN,
        }
    }
}
