//! Seeded fault injection, written once: what happens to a datagram under loss (uniform or in
//! bursts), duplication and reordering. Two places use it: the UDP transport's receive hook
//! ([`FaultInjection`], real time) and the simulated network ([`Faults`], a fake clock). Both
//! draw from a [`SimRng`] in the same order, so a seed replays the same fates.
//!
//! The public types are re-exported where their users look for them:
//! `herald::transport::FaultInjection`, `herald::testing::{Faults, SimRng}`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A small, seeded pseudo-random generator (SplitMix64): tests need repeatable runs, not
/// cryptographic randomness.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform float in [0, 1).
        #[allow(clippy::cast_precision_loss)]
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }
}

/// The probabilities both public fault settings share.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Odds {
    pub(crate) loss: f64,
    pub(crate) burst: f64,
    pub(crate) burst_len: u32,
    pub(crate) duplicate: f64,
    pub(crate) reorder: f64,
    pub(crate) reorder_delay: Duration,
}

/// What becomes of one datagram: how many copies arrive (0, 1 or 2), and how long each is
/// held back beyond the normal latency (zero: not reordered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fate {
    copies: usize,
    holds: [Duration; 2],
}

impl Fate {
    /// The extra hold of each copy that arrives.
    pub(crate) fn copies(&self) -> &[Duration] {
        &self.holds[..self.copies]
    }
}

impl Odds {
    /// Draws the fate of one datagram on a channel whose loss burst has `burst_left`
    /// datagrams to go (updated: a burst in progress takes this datagram, a new loss may
    /// start one).
    pub(crate) fn fate(&self, rng: &mut SimRng, burst_left: &mut u32) -> Fate {
        let mut fate = Fate {
            copies: 0,
            holds: [Duration::ZERO; 2],
        };
        if *burst_left > 0 {
            *burst_left -= 1;
            return fate;
        }
        if rng.chance(self.loss) {
            if rng.chance(self.burst) {
                *burst_left = self.burst_len;
            }
            return fate;
        }
        fate.copies = if rng.chance(self.duplicate) { 2 } else { 1 };
        for hold in &mut fate.holds[..fate.copies] {
            if rng.chance(self.reorder) {
                let max = u64::try_from(self.reorder_delay.as_nanos()).unwrap_or(1);
                *hold = Duration::from_nanos(rng.next_u64() % max.max(1));
            }
        }
        fate
    }
}

/// Faults a [`UdpTransport`](crate::transport::UdpTransport) injects into what it receives,
/// from a seeded generator: for testing what herald promises under loss, bursts, duplication
/// and reordering without root or kernel rules. Probabilities are per datagram, from 0.0 to
/// 1.0.
#[derive(Clone, Debug, Default)]
pub struct FaultInjection {
    /// Seed of the generator: the same seed drops the same datagrams.
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a loss starts a burst of `burst_len` more lost datagrams.
    pub burst: f64,
    /// Length of a loss burst.
    pub burst_len: u32,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back for up to `reorder_delay`, so that later
    /// ones overtake it.
    pub reorder: f64,
    /// The longest a datagram is held back.
    pub reorder_delay: Duration,
}

/// What the simulated network ([`SimNetwork`](crate::testing::SimNetwork)) does to
/// datagrams. Probabilities are per datagram and per receiver, from 0.0 to 1.0.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a loss starts a burst: the next `burst_len` datagrams to that receiver
    /// are lost too.
    pub burst: f64,
    /// Length of a loss burst, in datagrams.
    pub burst_len: u32,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to `reorder_delay`, so later ones pass it.
    pub reorder: f64,
    /// The longest a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// One-way latency of every datagram.
    pub latency: Duration,
}

impl Default for Faults {
    /// A perfect network with 50 µs of latency.
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst: 0.0,
            burst_len: 0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            latency: Duration::from_micros(50),
        }
    }
}

impl Faults {
    pub(crate) fn odds(&self) -> Odds {
        Odds {
            loss: self.loss,
            burst: self.burst,
            burst_len: self.burst_len,
            duplicate: self.duplicate,
            reorder: self.reorder,
            reorder_delay: self.reorder_delay,
        }
    }
}

/// [`FaultInjection`] at work on a real-time receive path: datagrams of type `T` pass through
/// [`apply`](Self::apply), and those held back come out of [`release`](Self::release) once
/// their time has come.
#[derive(Debug)]
pub(crate) struct Injector<T> {
    odds: Odds,
    rng: SimRng,
    burst_left: u32,
    held: VecDeque<(Instant, T)>,
}

impl<T: Clone> Injector<T> {
    pub(crate) fn new(config: &FaultInjection) -> Self {
        Self {
            odds: Odds {
                loss: config.loss,
                burst: config.burst,
                burst_len: config.burst_len,
                duplicate: config.duplicate,
                reorder: config.reorder,
                reorder_delay: config.reorder_delay,
            },
            rng: SimRng::new(config.seed),
            burst_left: 0,
            held: VecDeque::new(),
        }
    }

    /// Passes `datagram` through the faults: zero, one or two deliveries, now or later.
    pub(crate) fn apply(&mut self, datagram: T, deliver: &mut dyn FnMut(T)) {
        let fate = self.odds.fate(&mut self.rng, &mut self.burst_left);
        for hold in fate.copies() {
            if hold.is_zero() {
                deliver(datagram.clone());
            } else {
                self.held
                    .push_back((Instant::now() + *hold, datagram.clone()));
            }
        }
    }

    /// Delivers the held-back datagrams whose time has come.
    pub(crate) fn release(&mut self, deliver: &mut dyn FnMut(T)) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 <= now {
                if let Some((_, datagram)) = self.held.remove(i) {
                    deliver(datagram);
                }
            } else {
                i += 1;
            }
        }
    }

    /// When the next held-back datagram is due.
    pub(crate) fn next_release(&self) -> Option<Instant> {
        self.held.iter().map(|(t, _)| *t).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odds(loss: f64, burst: f64, duplicate: f64, reorder: f64) -> Odds {
        Odds {
            loss,
            burst,
            burst_len: 3,
            duplicate,
            reorder,
            reorder_delay: Duration::from_millis(5),
        }
    }

    #[test]
    fn a_perfect_channel_delivers_each_datagram_once_and_at_once() {
        let mut rng = SimRng::new(1);
        let mut burst = 0;
        for _ in 0..1000 {
            let fate = odds(0.0, 0.0, 0.0, 0.0).fate(&mut rng, &mut burst);
            assert_eq!(fate.copies(), &[Duration::ZERO]);
        }
    }

    #[test]
    fn a_loss_that_starts_a_burst_takes_the_next_datagrams_too() {
        let mut rng = SimRng::new(2);
        let mut burst = 0;
        assert!(
            odds(1.0, 1.0, 0.0, 0.0)
                .fate(&mut rng, &mut burst)
                .copies()
                .is_empty()
        );
        assert_eq!(burst, 3);
        for left in (0..3).rev() {
            let fate = odds(0.0, 0.0, 0.0, 0.0).fate(&mut rng, &mut burst);
            assert!(fate.copies().is_empty(), "the burst takes this one");
            assert_eq!(burst, left);
        }
        let fate = odds(0.0, 0.0, 0.0, 0.0).fate(&mut rng, &mut burst);
        assert_eq!(fate.copies().len(), 1, "the burst is over");
    }

    #[test]
    fn duplicates_come_twice_and_reordered_copies_are_held_within_the_delay() {
        let mut rng = SimRng::new(3);
        let mut burst = 0;
        let fate = odds(0.0, 0.0, 1.0, 1.0).fate(&mut rng, &mut burst);
        assert_eq!(fate.copies().len(), 2);
        assert!(fate.copies().iter().all(|h| *h < Duration::from_millis(5)));
    }

    #[test]
    fn the_injector_holds_back_reordered_datagrams_until_they_are_due() {
        let mut injector = Injector::new(&FaultInjection {
            seed: 4,
            reorder: 1.0,
            reorder_delay: Duration::from_millis(20),
            ..FaultInjection::default()
        });
        let mut got = Vec::new();
        for i in 0..10 {
            injector.apply(i, &mut |d| got.push(d));
        }
        let due = injector.next_release().expect("held datagrams wait");
        assert!(due <= Instant::now() + Duration::from_millis(20));
        while injector.next_release().is_some() {
            std::thread::sleep(Duration::from_millis(2));
            injector.release(&mut |d| got.push(d));
        }
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "each arrives once, late");
    }
}
