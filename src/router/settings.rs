//! One home for the router's settings: their defaults and their rules.
//!
//! [`RouterBuilder::build`] runs these rules, and [`Config`](crate::Config) runs the very same
//! ones under its own key names (the table [`config_key`] maps them), so `herald check` refuses
//! exactly what `herald node` refuses. A rule is written once, here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::RouterBuilder;
use super::builder::ring_record_len;
use crate::error::{ConfigError, ConfigErrors};
use crate::wire::{FRAME_OVERHEAD, MAX_FRAME_LEN};

/// Default ring size, 1 MiB.
pub(crate) const RING_CAPACITY: usize = 1 << 20;
/// Default heartbeat interval.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(100);
/// Default time a silent peer is reported after.
pub(crate) const DEAD_PEER: Duration = Duration::from_secs(1);
/// Default tolerated clock difference.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Default wait for a late frame before a gap is reported.
pub(crate) const REORDER: Duration = Duration::from_millis(20);
/// Default messages a channel subscriber may have waiting.
pub(crate) const CHANNEL_CAPACITY: usize = 65_536;
/// Default frames waiting for the dispatcher thread.
pub(crate) const DISPATCH_QUEUE: usize = 4096;
/// The smallest frame: the header, the tag and room for a small event.
pub(crate) const MIN_FRAME_LEN: usize = FRAME_OVERHEAD + 128;
/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers): a larger frame
/// cannot travel in one datagram.
pub(crate) const MAX_UDP_FRAME_LEN: usize = 65_507;

/// Each builder setting and the config key that sets it. Keys of list entries carry their
/// index (`udp_peer[2]` is `udp.peers[2]`).
const KEYS: [(&str, &str); 23] = [
    ("cluster", "cluster"),
    ("node_id", "node_id"),
    ("secret_file", "secret_file"),
    ("max_frame_len", "max_frame_len"),
    ("ring_capacity", "ring.capacity"),
    ("heartbeat_interval", "timing.heartbeat_ms"),
    ("dead_peer_timeout", "timing.dead_peer_ms"),
    ("clock_skew", "timing.clock_skew_ms"),
    ("reorder_window", "timing.reorder_ms"),
    ("udp_bind", "udp.bind"),
    ("udp_peer", "udp.peers"),
    ("udp_multicast", "udp.multicast.group"),
    ("udp_multicast.interface", "udp.multicast.interface"),
    ("tcp_listen", "tcp.listen"),
    ("tcp_peer", "tcp.peers"),
    ("recovery.nak_interval", "recovery.nak_interval_ms"),
    ("recovery.give_up", "recovery.give_up_ms"),
    ("recovery.status_interval", "recovery.status_interval_ms"),
    ("recovery.receiver_timeout", "recovery.receiver_timeout_ms"),
    ("recovery.window_frames", "recovery.window_frames"),
    ("recovery.retention_bytes", "recovery.retention_bytes"),
    ("recovery.nak_delay", "recovery.nak_delay_us"),
    ("linger", "recovery.linger_ms"),
];

/// The config key of a builder setting's name (`ring_capacity` is `ring.capacity`).
pub(crate) fn config_key(builder_key: &str) -> String {
    let (stem, index) = builder_key
        .find('[')
        .map_or((builder_key, ""), |i| builder_key.split_at(i));
    let key = KEYS
        .iter()
        .find(|(b, _)| *b == stem)
        .map_or(stem, |(_, c)| c);
    format!("{key}{index}")
}

impl RouterBuilder {
    /// Checks every setting without binding, reading or starting anything: what
    /// [`build`](Self::build) would refuse, all of it at once. Keyring and secret file are
    /// not checked here (`build` loads them).
    ///
    /// ```
    /// let err = herald::Router::builder()
    ///     .cluster("shop")
    ///     .ring_capacity(1000)
    ///     .max_frame_len(10)
    ///     .check()
    ///     .unwrap_err();
    /// assert_eq!(err.len(), 2);
    /// assert_eq!(err.iter().next().unwrap().key, "max_frame_len");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigErrors`], each naming the builder method at fault and the fix.
    pub fn check(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, problem: String| {
            errors.push(ConfigError {
                key: key.to_owned(),
                problem,
            });
        };
        if self.cluster.as_deref().is_none_or(|c| c.trim().is_empty()) {
            bad(
                "cluster",
                "missing or empty: give the cluster's name, the same on every node".into(),
            );
        }
        let frame_ok = (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&self.max_frame_len);
        if !frame_ok {
            bad(
                "max_frame_len",
                format!(
                    "{} is out of range: use {MIN_FRAME_LEN} to {MAX_FRAME_LEN} (1472 for UDP on Ethernet)",
                    self.max_frame_len
                ),
            );
        }
        let uses_udp = self.udp_bind.is_some() || self.multicast.is_some();
        if frame_ok && uses_udp && self.max_frame_len > MAX_UDP_FRAME_LEN {
            bad(
                "max_frame_len",
                format!(
                    "{} does not fit a UDP datagram: use at most {MAX_UDP_FRAME_LEN} with UDP (or TCP only)",
                    self.max_frame_len
                ),
            );
        }
        let least =
            (2 * ring_record_len(self.max_frame_len.min(MAX_FRAME_LEN))).next_power_of_two();
        if !self.ring_capacity.is_power_of_two() || self.ring_capacity < least {
            bad(
                "ring_capacity",
                format!(
                    "{} must be a power of two of at least {least} bytes (twice the largest record for this max_frame_len; default {RING_CAPACITY})",
                    self.ring_capacity
                ),
            );
        }
        for (key, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("dead_peer_timeout", self.dead_timeout),
            ("clock_skew", self.clock_skew),
            ("reorder_window", self.reorder_window),
        ] {
            if d.is_zero() {
                bad(key, "must be more than zero".into());
            }
        }
        if !self.heartbeat_interval.is_zero() && self.dead_timeout < self.heartbeat_interval * 2 {
            bad(
                "dead_peer_timeout",
                format!(
                    "{} ms is less than two heartbeats ({} ms): live peers would look dead",
                    self.dead_timeout.as_millis(),
                    2 * self.heartbeat_interval.as_millis()
                ),
            );
        }
        if self.channel_capacity == 0 {
            bad(
                "channel_capacity",
                format!("must be at least 1 message (default {CHANNEL_CAPACITY})"),
            );
        }
        if self.dispatch_queue == 0 {
            bad(
                "dispatch_queue",
                format!("must be at least 1 frame (default {DISPATCH_QUEUE})"),
            );
        }
        if !uses_udp && !self.udp_peers.is_empty() {
            bad(
                "udp_bind",
                "UDP peers are set but no UDP bind address: set the address to receive on".into(),
            );
        }
        if let Some((group, interface)) = self.multicast {
            if !group.ip().is_multicast() {
                bad(
                    "udp_multicast",
                    format!(
                        "{} is not a multicast address: use one in 224.0.0.0/4 (239.0.0.0/8 for a private group)",
                        group.ip()
                    ),
                );
            }
            if interface.is_multicast() || interface.is_unspecified() {
                bad(
                    "udp_multicast.interface",
                    format!(
                        "{interface} is not an interface's address: give the IPv4 address of the network interface to use (so no datagram leaves by a default route)"
                    ),
                );
            }
        }
        let r = &self.recovery;
        if r.enabled {
            for (key, d) in [
                ("recovery.nak_interval", r.nak_interval),
                ("recovery.give_up", r.give_up),
                ("recovery.status_interval", r.status_interval),
                ("recovery.receiver_timeout", r.receiver_timeout),
            ] {
                if d.is_zero() {
                    bad(key, "must be more than zero".into());
                }
            }
            if r.give_up < r.nak_interval {
                bad(
                    "recovery.give_up",
                    "must be at least one request interval (recovery.nak_interval), or gaps are \
                     given up before they are asked for"
                        .into(),
                );
            }
            if r.window_frames == 0 {
                bad(
                    "recovery.window_frames",
                    "must be at least one frame".into(),
                );
            }
            if r.receiver_timeout <= r.status_interval {
                bad(
                    "recovery.receiver_timeout",
                    "must be longer than recovery.status_interval, or live receivers drop out \
                     of the window"
                        .into(),
                );
            }
            if r.retention_bytes < self.max_frame_len {
                bad(
                    "recovery.retention_bytes",
                    format!(
                        "{} cannot hold one frame of max_frame_len {}: keep at least that (default 16 MiB)",
                        r.retention_bytes, self.max_frame_len
                    ),
                );
            }
        }
        peer_problems("udp_peer", self.udp_bind, &self.udp_peers, &mut bad);
        peer_problems("tcp_peer", self.tcp_listen, &self.tcp_peers, &mut bad);
        if let Err(crate::BuildError::Invalid(e)) = self.check_membership() {
            errors.extend(e.iter().cloned());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors::new(errors))
        }
    }
}

/// Peers that are this node itself (`own`, where it receives) or listed twice.
fn peer_problems(
    key: &str,
    own: Option<SocketAddr>,
    peers: &[SocketAddr],
    bad: &mut impl FnMut(&str, String),
) {
    for (i, peer) in peers.iter().enumerate() {
        let key = format!("{key}[{i}]");
        if own.is_some_and(|own| is_self(own, *peer)) {
            bad(
                &key,
                format!(
                    "{peer} is this node's own address: list only the other nodes (the same list on every node is fine without this one)"
                ),
            );
        } else if let Some(first) = peers[..i].iter().position(|p| p == peer) {
            bad(
                &key,
                format!("{peer} is listed twice (also entry {first}): remove one"),
            );
        }
    }
}

/// Whether sending to `peer` reaches a socket bound to `own`: the same address, or the
/// same port on loopback when bound to every interface.
fn is_self(own: SocketAddr, peer: SocketAddr) -> bool {
    if own.port() != peer.port() {
        return false;
    }
    own.ip() == peer.ip()
        || (own.ip().is_unspecified() && (peer.ip().is_loopback() || peer.ip().is_unspecified()))
        || (peer.ip().is_unspecified() && own.ip().is_loopback())
        || matches!((own.ip(), peer.ip()), (IpAddr::V4(a), IpAddr::V6(b)) | (IpAddr::V6(b), IpAddr::V4(a))
            if b.to_ipv4_mapped() == Some(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Router;

    fn keys(b: RouterBuilder) -> Vec<String> {
        b.check()
            .map_or_else(|e| e.iter().map(|e| e.key.clone()).collect(), |()| vec![])
    }

    #[test]
    fn every_builder_key_has_a_config_key() {
        assert_eq!(config_key("ring_capacity"), "ring.capacity");
        assert_eq!(config_key("udp_peer[3]"), "udp.peers[3]");
        assert_eq!(config_key("heartbeat_interval"), "timing.heartbeat_ms");
        assert_eq!(
            config_key("udp_multicast.interface"),
            "udp.multicast.interface"
        );
        // Settings the config does not have keep their name.
        assert_eq!(config_key("dispatch_queue"), "dispatch_queue");
    }

    #[test]
    fn the_defaults_pass_and_every_problem_is_reported() {
        let ok = Router::builder().cluster("c");
        assert_eq!(keys(ok), Vec::<String>::new());
        let a: SocketAddr = "127.0.0.1:7700".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7701".parse().unwrap();
        let bad = Router::builder()
            .ring_capacity(2048)
            .heartbeat_interval(Duration::from_millis(100))
            .dead_peer_timeout(Duration::from_millis(150))
            .reorder_window(Duration::ZERO)
            .udp_bind(a)
            .udp_peer(b)
            .udp_peer(a)
            .udp_peer(b)
            .udp_multicast("10.0.0.1:7700".parse().unwrap(), "0.0.0.0".parse().unwrap());
        assert_eq!(
            keys(bad),
            [
                "cluster",
                "ring_capacity",
                "reorder_window",
                "dead_peer_timeout",
                "udp_multicast",
                "udp_multicast.interface",
                "udp_peer[1]",
                "udp_peer[2]",
            ]
        );
    }

    #[test]
    fn own_address_covers_wildcard_binds() {
        let any: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        assert!(is_self(any, "127.0.0.1:7700".parse().unwrap()));
        assert!(!is_self(any, "10.1.2.3:7700".parse().unwrap()));
        assert!(!is_self(any, "127.0.0.1:7701".parse().unwrap()));
        assert!(is_self(
            "127.0.0.1:7700".parse().unwrap(),
            "[::ffff:127.0.0.1]:7700".parse().unwrap()
        ));
    }

    #[test]
    fn frames_too_large_for_udp_are_refused_only_with_udp() {
        let tcp = Router::builder()
            .cluster("c")
            .max_frame_len(65_536)
            .ring_capacity(1 << 20)
            .tcp_listen("127.0.0.1:1".parse().unwrap());
        assert_eq!(
            keys(tcp.udp_bind("127.0.0.1:2".parse().unwrap())),
            ["max_frame_len"]
        );
        let tcp = Router::builder()
            .cluster("c")
            .max_frame_len(65_536)
            .tcp_listen("127.0.0.1:1".parse().unwrap());
        assert_eq!(keys(tcp), Vec::<String>::new());
    }
}
