//! The driver's side of membership: verified membership frames go to the state machine, its
//! messages go out signed on the UDP transport, discovery runs on its timer, and every
//! transport learns the live members' addresses when they change.

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;

use crate::sync::plain::Arc;

use crate::endpoint::{Endpoint, Now};
use crate::membership::{
    DnsSeeds, MemberEvent, MemberEventKind, MemberRecord, Membership, Message,
};
use crate::metrics::Shared;
use crate::transport::{PeerAddr, Transport};

/// Membership as the application sees it ([`Router::members`](crate::Router::members),
/// [`Router::member_events`](crate::Router::member_events)), behind locks of its own so that
/// a subscriber running on the driver thread may ask too.
#[derive(Debug, Default)]
pub(crate) struct MemberView {
    /// The members as last published.
    pub(crate) members: Mutex<Vec<MemberRecord>>,
    /// Who hears of membership changes.
    pub(crate) subscribers: Mutex<Vec<Sender<MemberEvent>>>,
}

/// Membership as the driver runs it.
pub(crate) struct MemberGlue {
    pub(crate) membership: Membership,
    pub(crate) dns: Option<DnsSeeds>,
    /// The index of the UDP transport, which carries membership messages.
    pub(crate) udp: usize,
    /// The live members' addresses the transports were last given.
    peers: Vec<SocketAddr>,
    /// What the application reads, without the driver's lock.
    pub(crate) view: Arc<MemberView>,
    buf: Vec<u8>,
    membership_known: bool,
}

impl std::fmt::Debug for MemberGlue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberGlue")
            .field("membership", &self.membership)
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

impl MemberGlue {
    pub(crate) fn new(membership: Membership, dns: Option<DnsSeeds>, udp: usize) -> Self {
        Self {
            view: Arc::new(MemberView {
                members: Mutex::new(membership.members()),
                subscribers: Mutex::new(Vec::new()),
            }),
            membership,
            dns,
            udp,
            peers: Vec::new(),
            buf: vec![0; crate::wire::DEFAULT_UDP_FRAME_LEN],
            membership_known: false,
        }
    }

    /// Hands the endpoint's verified membership frames (just received from `from`) to the
    /// state machine.
    pub(crate) fn take_frames(&mut self, endpoint: &mut Endpoint, from: PeerAddr, now: Instant) {
        while let Some(frame) = endpoint.poll_membership() {
            // Membership runs over UDP: the source address is where to answer.
            let PeerAddr::Socket(from) = from else {
                continue;
            };
            let Some(gossip) = frame.membership() else {
                continue;
            };
            let fields = frame.header_fields();
            let msg = Message::from_gossip(&gossip);
            self.membership
                .handle_message(now, from, (fields.node, fields.incarnation), &msg);
        }
    }

    /// Runs discovery and the membership timers when due.
    pub(crate) fn timers(&mut self, now: Instant) {
        if let Some(dns) = &mut self.dns {
            if let Some(addrs) = dns.poll(now) {
                tracing::debug!(name = dns.name(), found = addrs.len(), "seeds resolved");
                self.membership.set_discovered(now, addrs);
            } else {
                let name = dns.name().to_owned();
                if let Some(e) = dns.take_failure() {
                    // Once per refresh at most; the seeds found before stay in use.
                    tracing::warn!(
                        name = %name,
                        error = e,
                        "membership.dns did not resolve; keeping the seeds found before"
                    );
                }
            }
        }
        if self.membership.poll_timeout().is_some_and(|t| t <= now) {
            self.membership.handle_timeout(now);
        }
    }

    /// When [`timers`](Self::timers) next has work.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let dns = self.dns.as_ref().map(DnsSeeds::next_refresh);
        [self.membership.poll_timeout(), dns]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends what membership has to send, tells subscribers and metrics of changes, and
    /// gives every transport the live members when they changed.
    pub(crate) fn flush(
        &mut self,
        endpoint: &mut Endpoint,
        transports: &mut [Box<dyn Transport>],
        metrics: &Shared,
        now: Now,
    ) {
        while let Some((to, msg)) = self.membership.poll_message() {
            let Ok(len) = endpoint.encode_membership(now, &msg.as_wire(), &mut self.buf) else {
                continue;
            };
            if let Some(udp) = transports.get_mut(self.udp)
                && let Err(e) = udp.send_to(&PeerAddr::Socket(to), &self.buf[..len])
            {
                metrics
                    .send_errors
                    .fetch_add(e.failed as u64, crate::sync::plain::Ordering::Relaxed);
            }
        }
        let mut changed = !self.membership_known;
        while let Some(event) = self.membership.poll_event() {
            changed = true;
            log_event(&event);
            self.view
                .subscribers
                .lock()
                .retain(|s| match s.try_send(event) {
                    Ok(()) | Err(TrySendError::Full(_)) => true,
                    Err(TrySendError::Disconnected(_)) => false,
                });
        }
        if !changed {
            return;
        }
        self.membership_known = true;
        *self.view.members.lock() = self.membership.members();
        endpoint.set_members(
            self.membership
                .known()
                .filter(|r| r.node != 0)
                .map(|r| r.node),
        );
        let (alive, suspect) = self.membership.counts();
        metrics.publish_membership(alive, suspect, self.membership.stats());
        let peers = self.membership.live_addrs();
        if peers != self.peers {
            for t in transports.iter_mut() {
                t.set_peers(&peers);
            }
            self.peers = peers;
        }
    }
}

fn log_event(e: &MemberEvent) {
    let addr = e.addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
    match e.kind {
        MemberEventKind::Joined => {
            tracing::info!(node = e.node, incarnation = e.incarnation, %addr, "member joined");
        }
        MemberEventKind::Left => tracing::info!(node = e.node, %addr, "member left"),
        MemberEventKind::Failed => tracing::warn!(node = e.node, %addr, "member failed"),
        MemberEventKind::Suspect => tracing::debug!(node = e.node, %addr, "member suspected"),
        MemberEventKind::Alive => {
            tracing::info!(node = e.node, %addr, "member refuted a suspicion");
        }
    }
}
