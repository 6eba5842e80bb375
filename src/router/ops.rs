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
