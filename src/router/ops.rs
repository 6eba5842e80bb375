//! What an operator's tooling asks of a running router: swap its keys, see whom it hears.

use crate::auth::Keyring;
use crate::sync::plain::Ordering;

use super::Router;

impl Router {
    /// Replaces the keyring while the node runs (key rotation without a restart): frames
    /// are signed with its signing key, and verified with any of its keys, from the driver's
    /// next turn on. Waits for the turn in progress, if any, to end.
    ///
    /// ```
    /// use herald::auth::{Key, Keyring};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let router = herald::Router::builder()
    ///     .cluster("shop")
    ///     .keyring(Keyring::new(1, Key::from_bytes([7; 32]))?)
    ///     .udp_bind("127.0.0.1:0".parse()?)
    ///     .build()?;
    /// let mut next = Keyring::new(1, Key::from_bytes([7; 32]))?;
    /// next.add(2, Key::from_bytes([8; 32]))?;
    /// next.set_signing(2)?;
    /// router.set_keyring(next);
    /// # Ok(()) }
    /// ```
    pub fn set_keyring(&self, keyring: Keyring) {
        self.inner.core.lock().endpoint.set_keyring(keyring);
    }

    /// The number of other nodes this one has heard from (a verified frame) and still keeps
    /// a session for, silent ones included.
    pub fn senders_heard(&self) -> usize {
        self.inner.core.lock().endpoint.sender_count()
    }

    /// Every source of frames this node has heard (up to 1024, most recent first): its
    /// address and transport, the node id it sent as, whether it is alive, rejected (its
    /// frames are dropped: another secret, key or cluster name, with a
    /// [`hint`](crate::PeerInfo::hint)) or silent, and its frames accepted and dropped by
    /// reason. What `herald status` shows.
    ///
    /// ```
    /// use herald::auth::{Key, Keyring};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let router = herald::Router::builder()
    ///     .cluster("shop")
    ///     .keyring(Keyring::new(1, Key::from_bytes([7; 32]))?)
    ///     .udp_bind("127.0.0.1:0".parse()?)
    ///     .build()?;
    /// assert!(router.peers().is_empty(), "nobody has sent anything yet");
    /// # Ok(()) }
    /// ```
    pub fn peers(&self) -> Vec<crate::PeerInfo> {
        let core = self.inner.core.lock();
        let names: Vec<String> = core
            .transports
            .iter()
            .map(|t| t.name().to_owned())
            .collect();
        let dead = core.endpoint.config().dead_timeout;
        core.peers.list(std::time::Instant::now(), dead, &names)
    }

    /// Waits, at most `timeout`, until every event raised on this node so far has left the
    /// ring in a frame and every live receiver has acknowledged that frame; says how far it
    /// got. For a tool that raises and exits (`herald raise`), or a deploy step that must
    /// know the cluster heard something before it goes on.
    ///
    /// Only receivers that acknowledge (recovery on, the default) count; a peer that never
    /// answered is in neither list, so "no receiver" with peers configured means none of
    /// them is listening.
    ///
    /// ```
    /// use std::time::Duration;
    /// use herald::auth::{Key, Keyring};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let router = herald::Router::builder()
    ///     .cluster("shop")
    ///     .keyring(Keyring::new(1, Key::from_bytes([7; 32]))?)
    ///     .udp_bind("127.0.0.1:0".parse()?)
    ///     .build()?;
    /// router.event(herald::EventId::from_name("product.changed")).raise(b"42")?;
    /// let flushed = router.flush(Duration::from_secs(1));
    /// assert!(flushed.sent && flushed.behind.is_empty());
    /// assert!(flushed.acknowledged.is_empty(), "no peer here to acknowledge");
    /// # Ok(()) }
    /// ```
    pub fn flush(&self, timeout: std::time::Duration) -> Flushed {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.inner.signals.wake();
            let report = {
                let core = self.inner.core.lock();
                let sent = core.ring.claimed_bytes() == 0;
                let sequence = core.endpoint.last_sequence();
                let (done, behind) = core
                    .endpoint
                    .acknowledgements(sequence, std::time::Instant::now());
                let addr = |node: u64| core.routes.get(node).map(|(_, a)| a);
                Flushed {
                    sent,
                    sequence,
                    acknowledged: done.into_iter().map(|n| (n, addr(n))).collect(),
                    behind: behind.into_iter().map(|n| (n, addr(n))).collect(),
                }
            };
            let done = report.sent && report.behind.is_empty();
            if done || std::time::Instant::now() >= deadline || !self.is_running() {
                return report;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Whether the node still sends and receives: false after
    /// [`shutdown`](Self::shutdown), and if its driver thread stopped on a bug (a panic,
    /// which is logged). A liveness probe should fail then, so the process is restarted.
    ///
    /// ```
    /// use herald::auth::{Key, Keyring};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let router = herald::Router::builder()
    ///     .cluster("shop")
    ///     .keyring(Keyring::new(1, Key::from_bytes([7; 32]))?)
    ///     .udp_bind("127.0.0.1:0".parse()?)
    ///     .build()?;
    /// assert!(router.is_running());
    /// router.shutdown();
    /// assert!(!router.is_running());
    /// # Ok(()) }
    /// ```
    pub fn is_running(&self) -> bool {
        !self.inner.signals.shutdown.load(Ordering::Acquire)
    }
}

/// How far [`Router::flush`] got.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flushed {
    /// Whether every event raised before the call left the ring in a frame.
    pub sent: bool,
    /// The sequence number of the last data frame this node sent.
    pub sequence: u64,
    /// Live receivers (node id, and where their frames come from if known) that have
    /// acknowledged every frame up to [`sequence`](Self::sequence).
    pub acknowledged: Vec<(u64, Option<crate::transport::PeerAddr>)>,
    /// Live receivers that had not when the wait ended.
    pub behind: Vec<(u64, Option<crate::transport::PeerAddr>)>,
}
