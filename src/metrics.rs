//! Counters a router keeps, and their snapshot [`Metrics`].

use crate::endpoint::EndpointStats;
use crate::error::Reject;
use crate::event::MissedReason;
use crate::sync::plain::{AtomicU64, Ordering};

/// A snapshot of a router's counters ([`Router::metrics`](crate::Router::metrics)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Events raised on this node and accepted into the ring, counted as the driver takes
    /// them out of it (a raise adds to no shared counter): a snapshot leaves out what still
    /// waits in the ring, and after [`Router::shutdown`](crate::Router::shutdown) every
    /// accepted raise is counted.
    pub raised: u64,
    /// Raises refused because the ring was full.
    pub raise_full: u64,
    /// Data frames sent (each once, whatever the number of peers).
    pub frames_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Datagrams (or TCP frames) received.
    pub frames_received: u64,
    /// Data frames accepted.
    pub frames_accepted: u64,
    /// Remote events handed to subscribers.
    pub events_delivered: u64,
    /// Datagrams that could not be sent (socket buffer full or an error), per destination.
    pub send_errors: u64,
    /// Frames dropped because this node's subscribers fell behind (reported as
    /// `local_overflow` Missed notices).
    pub dispatch_dropped: u64,
    /// Calls of remote-event and Missed subscribers that panicked (each is logged; the
    /// subscriber missed that one delivery).
    pub subscriber_panics: u64,
    /// Recovery and flow control: requests sent, received and held back, frames sent again,
    /// "no longer held" answers, window stalls, receivers dropped from the window, and the
    /// receivers the window counts now (a gauge), named as in [`RECOVERY_NAMES`](Self::RECOVERY_NAMES).
    pub recovery: [u64; 9],
    /// Dropped frames by reason, as (short name, count), every reason listed.
    pub drops: Vec<(&'static str, u64)>,
    /// Missed notices by reason, as (short name, count), every reason listed.
    pub missed: Vec<(&'static str, u64)>,
    /// Membership: members alive and suspect now (gauges; this node counts as alive), and
    /// joins, graceful leaves, failures and refuted suspicions seen (counters), named as in
    /// [`MEMBERSHIP_NAMES`](Self::MEMBERSHIP_NAMES). All 0 without membership.
    pub membership: [u64; 6],
    /// Sources of frames by state now (gauges): alive, rejected (frames dropped, none
    /// accepted, within the dead timeout: a configuration mistake), silent, in the order of
    /// [`PeerState::ALL`](crate::PeerState::ALL). See [`Router::peers`](crate::Router::peers).
    pub peers: [u64; 3],
}

impl Metrics {
    /// The drop count for a reason's short name (0 for an unknown name).
    pub fn drops_for(&self, name: &str) -> u64 {
        self.drops
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// All dropped frames.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(|(_, c)| c).sum()
    }

    /// The names of [`recovery`](Self::recovery)'s values, in order.
    pub const RECOVERY_NAMES: [&'static str; 9] = [
        "naks_sent",
        "naks_received",
        "naks_suppressed",
        "statuses_sent",
        "frames_resent",
        "evicted_sent",
        "window_stalls",
        "receivers_dropped",
        "window_receivers",
    ];

    /// One of the recovery values by name (see [`RECOVERY_NAMES`](Self::RECOVERY_NAMES)).
    pub fn recovery(&self, name: &str) -> u64 {
        Self::RECOVERY_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.recovery[i])
    }

    /// The names of [`membership`](Self::membership)'s values, in order.
    pub const MEMBERSHIP_NAMES: [&'static str; 6] = [
        "members_alive",
        "members_suspect",
        "member_joins",
        "member_leaves",
        "member_failures",
        "member_suspicions_refuted",
    ];

    /// One of the membership values by name (see [`MEMBERSHIP_NAMES`](Self::MEMBERSHIP_NAMES)).
    pub fn membership(&self, name: &str) -> u64 {
        Self::MEMBERSHIP_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.membership[i])
    }

    /// All Missed notices.
    pub fn missed_total(&self) -> u64 {
        self.missed.iter().map(|(_, c)| c).sum()
    }

    /// The counters in Prometheus' text exposition format, every name starting `herald_`,
    /// drops and Missed labelled by reason.
    ///
    /// ```
    /// let text = herald::Metrics::default().to_prometheus();
    /// assert!(text.contains("# TYPE herald_events_raised_total counter"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        };
        counter(
            "herald_events_raised_total",
            "Events raised on this node.",
            self.raised,
        );
        counter(
            "herald_raise_refused_total",
            "Raises refused because the ring was full.",
            self.raise_full,
        );
        counter(
            "herald_frames_sent_total",
            "Data frames sent.",
            self.frames_sent,
        );
        counter(
            "herald_heartbeats_sent_total",
            "Heartbeats sent.",
            self.heartbeats_sent,
        );
        counter(
            "herald_frames_received_total",
            "Frames received, before any check.",
            self.frames_received,
        );
        counter(
            "herald_frames_accepted_total",
            "Data frames accepted.",
            self.frames_accepted,
        );
        counter(
            "herald_events_delivered_total",
            "Remote events handed to subscribers.",
            self.events_delivered,
        );
        counter(
            "herald_send_errors_total",
            "Frames a destination did not take.",
            self.send_errors,
        );
        counter(
            "herald_dispatch_dropped_total",
            "Frames dropped because this node's subscribers fell behind.",
            self.dispatch_dropped,
        );
        counter(
            "herald_subscriber_panics_total",
            "Subscriber calls for remote events and Missed notices that panicked.",
            self.subscriber_panics,
        );
        let helps = [
            "Requests for lost frames sent to senders.",
            "Requests for lost frames received from receivers.",
            "Requests held back because another receiver asked for the same frames.",
            "Status frames (consumed position) sent to senders.",
            "Data frames sent again on request.",
            "Answers that requested frames are no longer held.",
            "Times the flow-control window closed and events waited in the ring.",
            "Receivers dropped from the window for not acknowledging while behind.",
        ];
        for ((name, help), value) in Self::RECOVERY_NAMES.iter().zip(helps).zip(self.recovery) {
            counter(&format!("herald_{name}_total"), help, value);
        }
        let _ = writeln!(
            out,
            "# HELP herald_window_receivers Receivers the flow-control window counts now.\n\
             # TYPE herald_window_receivers gauge\nherald_window_receivers {}",
            self.recovery[8]
        );
        for (i, name) in Self::MEMBERSHIP_NAMES.iter().enumerate() {
            let (kind, suffix, help) = match i {
                0 => (
                    "gauge",
                    "",
                    "Members this node sees alive, itself included.",
                ),
                1 => ("gauge", "", "Members this node suspects now."),
                2 => ("counter", "_total", "Members that joined or rejoined."),
                3 => ("counter", "_total", "Members that left gracefully."),
                4 => ("counter", "_total", "Members declared failed."),
                _ => (
                    "counter",
                    "_total",
                    "Suspicions of members refuted in time.",
                ),
            };
            let _ = writeln!(
                out,
                "# HELP herald_{name}{suffix} {help}\n# TYPE herald_{name}{suffix} {kind}\n\
                 herald_{name}{suffix} {}",
                self.membership[i]
            );
        }
        let _ = writeln!(
            out,
            "# HELP herald_peers Sources of frames by state: alive (a frame accepted within \
             the dead timeout), rejected (only drops: another secret, key or cluster), silent.\n\
             # TYPE herald_peers gauge"
        );
        for (state, n) in crate::PeerState::ALL.iter().zip(self.peers) {
            let _ = writeln!(out, "herald_peers{{state=\"{state}\"}} {n}");
        }
        let mut labelled = |name: &str, help: &str, values: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (reason, v) in values {
                let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {v}");
            }
        };
        labelled(
            "herald_frames_dropped_total",
            "Frames dropped, by reason.",
            &self.drops,
        );
        labelled(
            "herald_missed_total",
            "Missed notices raised, by reason.",
            &self.missed,
        );
        out
    }
}

/// The live counters: raise-side ones written by application threads, the rest published by
/// the driver after each turn.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) raise_full: AtomicU64,
    pub(crate) events_delivered: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) dispatch_dropped: AtomicU64,
    pub(crate) subscriber_panics: AtomicU64,
    /// Published from the endpoint's count of events sent, not written by raises.
    raised: AtomicU64,
    frames_sent: AtomicU64,
    heartbeats_sent: AtomicU64,
    frames_received: AtomicU64,
    frames_accepted: AtomicU64,
    drops: Vec<AtomicU64>,
    missed: Vec<AtomicU64>,
    recovery: [AtomicU64; 9],
    membership: [AtomicU64; 6],
    peers: [AtomicU64; 3],
}

impl Shared {
    pub(crate) fn new() -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self {
            raised: AtomicU64::new(0),
            raise_full: AtomicU64::new(0),
            events_delivered: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            dispatch_dropped: AtomicU64::new(0),
            subscriber_panics: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            heartbeats_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            frames_accepted: AtomicU64::new(0),
            drops: zeros(Reject::names().count()),
            missed: zeros(MissedReason::NAMES.len()),
            recovery: std::array::from_fn(|_| AtomicU64::new(0)),
            membership: std::array::from_fn(|_| AtomicU64::new(0)),
            peers: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Copies the endpoint's counters (the driver owns the endpoint).
    pub(crate) fn publish(&self, stats: &EndpointStats) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.frames_sent, stats.frames_sent);
        set(&self.raised, stats.events_sent);
        set(&self.heartbeats_sent, stats.heartbeats_sent);
        set(&self.frames_received, stats.frames_received);
        set(&self.frames_accepted, stats.frames_accepted);
        for (a, v) in self.drops.iter().zip(&stats.drops) {
            set(a, *v);
        }
        let recovery = [
            stats.naks_sent,
            stats.naks_received,
            stats.naks_suppressed,
            stats.statuses_sent,
            stats.frames_resent,
            stats.evicted_sent,
            stats.window_stalls,
            stats.receivers_dropped,
            stats.live_receivers,
        ];
        for (a, v) in self.recovery.iter().zip(recovery) {
            set(a, v);
        }
        for (i, (a, v)) in self.missed.iter().zip(&stats.missed).enumerate() {
            // The driver counts local overflows itself; the endpoint never sees them.
            if i != MissedReason::LocalOverflow.index() {
                set(a, *v);
            }
        }
    }

    /// Copies membership's gauges and counters.
    pub(crate) fn publish_membership(
        &self,
        alive: usize,
        suspect: usize,
        stats: &crate::membership::MembershipStats,
    ) {
        let values = [
            alive as u64,
            suspect as u64,
            stats.joins,
            stats.leaves,
            stats.failures,
            stats.refuted,
        ];
        for (a, v) in self.membership.iter().zip(values) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// Copies the driver's count of sources by state.
    pub(crate) fn publish_peers(&self, counts: [u64; 3]) {
        for (a, v) in self.peers.iter().zip(counts) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// Counts a Missed notice the driver made (not the endpoint).
    pub(crate) fn count_missed(&self, reason: MissedReason) {
        if let Some(a) = self.missed.get(reason.index()) {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Metrics {
            raised: get(&self.raised),
            raise_full: get(&self.raise_full),
            frames_sent: get(&self.frames_sent),
            heartbeats_sent: get(&self.heartbeats_sent),
            frames_received: get(&self.frames_received),
            frames_accepted: get(&self.frames_accepted),
            events_delivered: get(&self.events_delivered),
            send_errors: get(&self.send_errors),
            dispatch_dropped: get(&self.dispatch_dropped),
            subscriber_panics: get(&self.subscriber_panics),
            recovery: std::array::from_fn(|i| get(&self.recovery[i])),
            membership: std::array::from_fn(|i| get(&self.membership[i])),
            peers: std::array::from_fn(|i| get(&self.peers[i])),
            drops: Reject::names()
                .zip(&self.drops)
                .map(|(n, a)| (n, get(a)))
                .collect(),
            missed: MissedReason::NAMES
                .iter()
                .copied()
                .zip(&self.missed)
                .map(|(n, a)| (n, get(a)))
                .collect(),
        }
    }
}
