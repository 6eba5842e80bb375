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
                hint = crate::peers::hint(reject.name()).unwrap_or(""),
                suppressed = log.suppressed,
                "dropped a frame"
            );
            log.last = Some(now);
            log.suppressed = 0;
        }
    }
}
