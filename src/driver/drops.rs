//! Dropped frames in the log: one line per reason and per second at most, with a hint where
//! the reason points to an operator's mistake.

use std::time::{Duration, Instant};

use crate::error::Reject;
use crate::transport::PeerAddr;

/// Rate limit for drop logs: at most one line per reason and per second, with the count since.
#[derive(Debug, Default)]
pub(crate) struct DropLog {
    last: Option<Instant>,
    suppressed: u64,
}

/// Logs a dropped frame, rate-limited by `log`.
pub(super) fn log_drop(
    log: &mut DropLog,
    now: Instant,
    transport: &str,
    from: PeerAddr,
    reject: Reject,
) {
    if matches!(reject, Reject::OwnFrame) {
        return; // multicast loopback: expected, counted, not worth a line
    }
    match log.last {
        Some(last) if now.saturating_duration_since(last) < Duration::from_secs(1) => {
            log.suppressed += 1;
        }
        _ => {
            let from = match from {
                PeerAddr::Socket(addr) => addr.to_string(),
                PeerAddr::Channel(n) => format!("channel {n}"),
                _ => "unknown".to_owned(),
            };
            tracing::warn!(
                transport,
                from = %from,
                reason = reject.name(),
                hint = drop_hint(reject),
                suppressed = log.suppressed,
                "dropped a frame"
            );
            log.last = Some(now);
            log.suppressed = 0;
        }
    }
}

/// What an operator can do about a dropped frame, where the reason points to a mistake.
fn drop_hint(reject: Reject) -> &'static str {
    match reject.name() {
        "bad_tag" => {
            "the sender signs with another secret: copy the cluster's secret file to it, and \
             compare `herald keygen --fingerprint` on both nodes"
        }
        "unknown_key" => {
            "the sender signs with a key id this node does not have: copy the newest secret \
             file to every node (key rotation)"
        }
        "foreign_cluster" => {
            "the sender belongs to another cluster name: check `cluster` in both configs"
        }
        "clock_skew" => "the clocks of the two nodes differ (or this is a replay): check NTP",
        "security_mode_mismatch" => {
            "the sender runs the other security mode (sign or encrypt): set the same `security` \
             on every node (docs/security.md says how to switch a running cluster)"
        }
        _ => "",
    }
}
