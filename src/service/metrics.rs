//! The service's counters and their snapshot [`ServiceMetrics`].

use super::index::Sizes;
use crate::sync::plain::{AtomicU64, Ordering};

/// Why a client's connection ended. Each has a stable short name (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disconnect {
    /// The client closed its side (or reset the connection).
    ClientClosed,
    /// The client sent `QUIT`.
    Quit,
    /// The client sent nothing for the idle timeout.
    IdleTimeout,
    /// The client's output buffer went past the limit: it did not read fast enough.
    OutputLimit,
    /// The client sent malformed RESP.
    ProtocolError,
    /// A socket error.
    IoError,
    /// A TLS handshake or record failed (a plain-text client on the TLS port, a client
    /// without an acceptable certificate).
    TlsError,
    /// The service shut down.
    Shutdown,
}

impl Disconnect {
    pub(crate) const ALL: [Self; 8] = [
        Self::ClientClosed,
        Self::Quit,
        Self::IdleTimeout,
        Self::OutputLimit,
        Self::ProtocolError,
        Self::IoError,
        Self::TlsError,
        Self::Shutdown,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Quit => "quit",
            Self::IdleTimeout => "idle_timeout",
            Self::OutputLimit => "output_limit",
            Self::ProtocolError => "protocol_error",
            Self::IoError => "io_error",
            Self::TlsError => "tls_error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// A snapshot of a [`Service`](super::Service)'s counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceMetrics {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections ended, by reason, as (short name, count), every reason listed:
    /// `client_closed`, `quit`, `idle_timeout`, `output_limit`, `protocol_error`, `io_error`,
    /// `tls_error`, `shutdown`.
    pub disconnects: Vec<(&'static str, u64)>,
    /// Commands executed (whatever their reply, errors included).
    pub commands: u64,
    /// Connections closed for malformed RESP.
    pub protocol_errors: u64,
    /// Commands herald does not know (answered with an error).
    pub unknown_commands: u64,
    /// `AUTH` (or `HELLO … AUTH`) attempts with a wrong password.
    pub auth_failures: u64,
    /// Messages pushed to clients (events and Missed notices).
    pub pushes: u64,
    /// Events dropped because the service thread fell behind the router (each run reported
    /// to `herald:missed` subscribers as `local_overflow`).
    pub queue_dropped: u64,
    /// Channel names and patterns refused: longer than `service.max_name_len`, or past
    /// `service.name_memory_limit`.
    pub names_refused: u64,
    /// Events some client subscribed to by channel, now.
    pub subscribed_events: u64,
    /// Patterns, over all clients, now.
    pub patterns: u64,
    /// Event names the service remembers (for pattern pushes), now.
    pub names_known: u64,
    /// Bytes of names the service holds now: clients' channel names and patterns and the
    /// names it remembers. Bounded by `service.name_memory_limit` plus 1 MiB of names
    /// learned from `PUBLISH`; back to 0 when no client subscribes to anything.
    pub name_bytes: u64,
}

impl ServiceMetrics {
    /// The disconnect count for a reason's short name (0 for an unknown name).
    pub fn disconnects_for(&self, name: &str) -> u64 {
        self.disconnects
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// The counters in Prometheus' text format, names starting `herald_service_`.
    ///
    /// ```
    /// let text = herald::service::ServiceMetrics::default().to_prometheus();
    /// assert!(text.contains("# TYPE herald_service_connections_open gauge"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        let c = "counter";
        metric(
            "herald_service_connections_accepted_total",
            c,
            "Service connections accepted.",
            self.connections_accepted,
        );
        metric(
            "herald_service_connections_refused_total",
            c,
            "Service connections refused at max_connections.",
            self.connections_refused,
        );
        metric(
            "herald_service_connections_open",
            "gauge",
            "Service connections open.",
            self.connections_open,
        );
        metric(
            "herald_service_commands_total",
            c,
            "Commands executed.",
            self.commands,
        );
        metric(
            "herald_service_protocol_errors_total",
            c,
            "Connections closed for malformed RESP.",
            self.protocol_errors,
        );
        metric(
            "herald_service_unknown_commands_total",
            c,
            "Unknown commands.",
            self.unknown_commands,
        );
        metric(
            "herald_service_auth_failures_total",
            c,
            "Wrong passwords.",
            self.auth_failures,
        );
        metric(
            "herald_service_pushes_total",
            c,
            "Messages pushed to clients.",
            self.pushes,
        );
        metric(
            "herald_service_queue_dropped_total",
            c,
            "Events dropped because the service thread fell behind.",
            self.queue_dropped,
        );
        metric(
            "herald_service_names_refused_total",
            c,
            "Channel names and patterns refused (too long, or over the name memory limit).",
            self.names_refused,
        );
        let g = "gauge";
        metric(
            "herald_service_subscribed_events",
            g,
            "Events some client subscribed to by channel.",
            self.subscribed_events,
        );
        metric(
            "herald_service_patterns",
            g,
            "Patterns, over all clients.",
            self.patterns,
        );
        metric(
            "herald_service_names_known",
            g,
            "Event names remembered for pattern pushes.",
            self.names_known,
        );
        metric(
            "herald_service_name_bytes",
            g,
            "Bytes of channel names, patterns and remembered names held.",
            self.name_bytes,
        );
        let name = "herald_service_disconnects_total";
        let _ = writeln!(out, "# HELP {name} Connections ended, by reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (reason, v) in &self.disconnects {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {v}");
        }
        out
    }
}

/// The live counters, written by the service thread (and `queue_dropped` by the router's).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) disconnects: [AtomicU64; Disconnect::ALL.len()],
    pub(crate) commands: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) unknown_commands: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) pushes: AtomicU64,
    pub(crate) queue_dropped: AtomicU64,
    pub(crate) names_refused: AtomicU64,
    pub(crate) subscribed_events: AtomicU64,
    pub(crate) patterns: AtomicU64,
    pub(crate) names_known: AtomicU64,
    pub(crate) name_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self, why: Disconnect) {
        if let Some(i) = Disconnect::ALL.iter().position(|d| *d == why) {
            Self::add(&self.disconnects[i], 1);
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records the sizes of the service's tables.
    pub(crate) fn set_sizes(&self, sizes: Sizes) {
        let set = |a: &AtomicU64, v: usize| a.store(v as u64, Ordering::Relaxed);
        set(&self.subscribed_events, sizes.events);
        set(&self.patterns, sizes.patterns);
        set(&self.names_known, sizes.names);
        set(&self.name_bytes, sizes.name_bytes);
    }

    pub(crate) fn snapshot(&self) -> ServiceMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServiceMetrics {
            connections_accepted: get(&self.accepted),
            connections_refused: get(&self.refused),
            connections_open: get(&self.open),
            disconnects: Disconnect::ALL
                .iter()
                .zip(&self.disconnects)
                .map(|(d, a)| (d.name(), get(a)))
                .collect(),
            commands: get(&self.commands),
            protocol_errors: get(&self.protocol_errors),
            unknown_commands: get(&self.unknown_commands),
            auth_failures: get(&self.auth_failures),
            pushes: get(&self.pushes),
            queue_dropped: get(&self.queue_dropped),
            names_refused: get(&self.names_refused),
            subscribed_events: get(&self.subscribed_events),
            patterns: get(&self.patterns),
            names_known: get(&self.names_known),
            name_bytes: get(&self.name_bytes),
        }
    }
}
