//! The counters of a NATS transport, and their Prometheus text.

use crate::sync::plain::{Arc, AtomicBool, AtomicU64, Ordering};

/// Counters of a [`NatsTransport`](super::NatsTransport) (a cheap clone of one shared set).
#[derive(Clone, Debug, Default)]
pub struct NatsStats(pub(super) Arc<Counters>);

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicBool,
    pub(super) connects: AtomicU64,
    pub(super) disconnects: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) publish_errors: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) inbound_dropped: AtomicU64,
    pub(super) slow_consumer: AtomicU64,
    pub(super) server_errors: AtomicU64,
}

impl NatsStats {
    /// Whether the client is connected to a server now.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }
    /// Connections made after the first one (reconnections and failovers).
    pub fn reconnects(&self) -> u64 {
        self.0.connects.load(Ordering::Relaxed).saturating_sub(1)
    }
    /// Times the connection was lost.
    pub fn disconnects(&self) -> u64 {
        self.0.disconnects.load(Ordering::Relaxed)
    }
    /// Frames handed to the client to publish.
    pub fn published(&self) -> u64 {
        self.0.published.load(Ordering::Relaxed)
    }
    /// Bytes of frames published.
    pub fn bytes_out(&self) -> u64 {
        self.0.bytes_out.load(Ordering::Relaxed)
    }
    /// Frames that could not be published: the queue was full (no server, or one too slow)
    /// or the client refused them. Receivers recover them or report them missed.
    pub fn publish_errors(&self) -> u64 {
        self.0.publish_errors.load(Ordering::Relaxed)
    }
    /// Frames received.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }
    /// Bytes of frames received.
    pub fn bytes_in(&self) -> u64 {
        self.0.bytes_in.load(Ordering::Relaxed)
    }
    /// Received frames dropped because the driver fell behind (a subscription's queue of
    /// `inbound_frames` was full), as the client reports them: a lower bound, since the client
    /// drops its own reports when many come at once.
    pub fn inbound_dropped(&self) -> u64 {
        self.0.inbound_dropped.load(Ordering::Relaxed)
    }
    /// Slow-consumer events: the client's or the server's buffer for this node overflowed
    /// and NATS dropped messages (they become gaps herald recovers or reports).
    pub fn slow_consumer(&self) -> u64 {
        self.0.slow_consumer.load(Ordering::Relaxed)
    }
    /// Errors the server reported (authorization, slow consumer, ...).
    pub fn server_errors(&self) -> u64 {
        self.0.server_errors.load(Ordering::Relaxed)
    }

    /// The counters in Prometheus' text format, every name starting `herald_nats_`.
    ///
    /// ```
    /// let text = herald::transport::nats::NatsStats::default().to_prometheus();
    /// assert!(text.contains("herald_nats_connected 0"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP herald_nats_connected Whether the NATS client is connected.\n\
             # TYPE herald_nats_connected gauge\nherald_nats_connected {}",
            u8::from(self.connected())
        );
        for (name, help, value) in [
            (
                "reconnects",
                "NATS connections after the first.",
                self.reconnects(),
            ),
            ("published", "Frames published to NATS.", self.published()),
            ("bytes_out", "Bytes of frames published.", self.bytes_out()),
            (
                "publish_errors",
                "Frames that could not be published.",
                self.publish_errors(),
            ),
            ("received", "Frames received from NATS.", self.received()),
            ("bytes_in", "Bytes of frames received.", self.bytes_in()),
            (
                "inbound_dropped",
                "Received frames dropped: driver behind.",
                self.inbound_dropped(),
            ),
            (
                "slow_consumer",
                "Slow-consumer events.",
                self.slow_consumer(),
            ),
            (
                "server_errors",
                "Errors reported by the server.",
                self.server_errors(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP herald_nats_{name}_total {help}\n# TYPE herald_nats_{name}_total counter\n\
                 herald_nats_{name}_total {value}"
            );
        }
        out
    }
}
