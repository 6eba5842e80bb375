//! Periodic full-state exchange (memberlist's push-pull): now and then a node asks one live
//! member for its whole member list, and one seed that is not a live member (if there is
//! one) too. Gossip is epidemic and its tail can miss a node: an update whose piggybacked
//! copies were all lost stops spreading, and two nodes that never heard of each other stay
//! that way. And a partition that outlasts the memory of failed members (`tombstone`) leaves
//! each side with no trace of the other, so nothing would ever reconnect them but the seeds,
//! which a node otherwise asks only while it is alone. The exchange is a `join`: the asked
//! node learns (or refreshes) the asker, answers with its list, and each side of a healed
//! partition tells the other what it missed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Membership;

impl Membership {
    /// When the next exchange is due: `sync_interval` from `now`, give or take a quarter
    /// (so that nodes started together do not all ask at once). The first one takes its
    /// jitter from the seed, not from the generator, which the probe order draws on.
    pub(super) fn next_sync_after(&mut self, now: Instant, first: bool) -> Instant {
        let interval = self.config.sync_interval;
        let span_ms = u64::try_from((interval / 2).as_millis()).unwrap_or(u64::MAX);
        let draw = if first {
            self.config.rng_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16
        } else {
            self.random(usize::MAX) as u64
        };
        let jitter = draw % span_ms.saturating_add(1);
        now + interval.saturating_sub(interval / 4) + Duration::from_millis(jitter)
    }

    /// Runs the exchange when due (from `handle_timeout`).
    pub(super) fn push_pull(&mut self, now: Instant) {
        if self.config.sync_interval.is_zero() || now < self.next_sync || self.leaving {
            return;
        }
        self.next_sync = self.next_sync_after(now, false);
        let live = self.live_addrs();
        if !live.is_empty() {
            let i = self.random(live.len());
            self.send_join(live[i]);
        }
        let mut lost: Vec<SocketAddr> = self
            .config
            .seeds
            .iter()
            .chain(&self.discovered)
            .copied()
            .filter(|s| Some(*s) != self.me.addr && !live.contains(s))
            .collect();
        lost.sort_unstable();
        lost.dedup();
        if !lost.is_empty() {
            let i = self.random(lost.len());
            self.send_join(lost[i]);
        }
    }
}
