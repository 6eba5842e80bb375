//! The endpoint's side of membership: membership frames handed on, the sender table's room
//! for members and for senders the cluster does not know, and membership frames signed.

use std::time::{Duration, Instant};

use std::collections::HashSet;

use super::{EncodeError, Endpoint, Flags, FrameKind, Now, Reject, SharedFrame};

impl Endpoint {
    /// Makes room for a new sender. Without membership: forgets one silent long enough (see
    /// [`evict_one`](Self::evict_one)) when the table is full. With membership
    /// ([`set_members`](Self::set_members)), members are always admitted, and senders the
    /// cluster does not know share at most a quarter of the table, where the one heard
    /// least recently makes way for a newcomer: a flood of made-up node ids churns that
    /// share and never locks members, or a node about to join, out.
    pub(super) fn make_room(&mut self, now: Instant, node: u64) -> Result<(), Reject> {
        let max = self.config.max_senders;
        let Some(members) = &self.members else {
            if self.nodes.len() >= max {
                self.evict_one(now)?;
            }
            return Ok(());
        };
        let unknown = || {
            self.nodes
                .iter()
                .filter(|(n, _)| !members.contains(n))
                .min_by_key(|(_, s)| s.session.last_heard())
                .map(|(&n, _)| n)
        };
        let victim = if members.contains(&node) {
            if self.nodes.len() < max {
                return Ok(());
            }
            unknown()
        } else {
            let share = (max / 4).max(1);
            let count = self.nodes.keys().filter(|n| !members.contains(n)).count();
            if count < share && self.nodes.len() < max {
                return Ok(());
            }
            unknown()
        };
        match victim {
            Some(n) => {
                self.nodes.remove(&n);
                self.stats.unknown_evicted += 1;
                self.unknown_churn_at = Some(now);
                Ok(())
            }
            None => self.evict_one(now),
        }
    }

    /// Turns membership on: verified membership frames are kept for
    /// [`poll_membership`](Self::poll_membership) (without it they are counted and dropped),
    /// and the sender table keeps room for the members given by
    /// [`set_members`](Self::set_members) (none yet): members are always admitted, senders
    /// the cluster does not know share at most a quarter of the table, where the one heard
    /// least recently makes way for a newcomer.
    pub fn enable_membership(&mut self) {
        self.members.get_or_insert_with(Default::default);
    }

    /// Tells the endpoint which nodes are members of the cluster (from membership), and turns
    /// membership on (see [`enable_membership`](Self::enable_membership)): members are always
    /// admitted to the sender table.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = u64>) {
        self.members = Some(members.into_iter().collect());
    }

    /// Writes and signs a membership frame for [`crate::membership`] into `buf` and returns
    /// its length. Its timestamp rises strictly with this node's control frames, as
    /// receivers require.
    ///
    /// # Errors
    ///
    /// As [`write_membership`](crate::wire::write_membership).
    pub fn encode_membership(
        &mut self,
        now: Now,
        message: &crate::wire::GossipMessage<'_>,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let fields = self.control_fields(now, FrameKind::Membership, Flags::EMPTY);
        Ok(crate::wire::write_membership(buf, &fields, message, &self.keyring)?.len())
    }

    /// Keeps a verified membership frame for [`poll_membership`](Self::poll_membership);
    /// the oldest is dropped beyond a bound, as a lost datagram would be.
    pub(super) fn queue_membership(&mut self, frame: &SharedFrame) {
        const MAX_QUEUED: usize = 256;
        self.stats.membership_accepted += 1;
        // Without membership nobody polls them: keeping them would pin receive buffers.
        if self.members.is_none() {
            return;
        }
        if self.membership_in.len() == MAX_QUEUED {
            self.membership_in.pop_front();
        }
        self.membership_in.push_back(frame.clone());
    }

    /// The next verified membership frame (its tag, cluster and replay rule checked), for
    /// [`Membership::handle_message`](crate::membership::Membership::handle_message).
    #[must_use]
    pub fn poll_membership(&mut self) -> Option<SharedFrame> {
        self.membership_in.pop_front()
    }
}

/// How long after a sender the cluster does not know last had to make way for another
/// only members are answered.
const FLOOD_CALM: Duration = Duration::from_secs(10);

impl Endpoint {
    /// Whether senders the cluster does not know are answered now: without membership, or
    /// while no flood of them churns the sender table.
    pub(super) fn answers_unknown(&self, now: Instant) -> bool {
        self.members.is_none()
            || self
                .unknown_churn_at
                .is_none_or(|t| now.saturating_duration_since(t) >= FLOOD_CALM)
    }
}

/// Whether `node` is sent statuses and requests for lost frames: every sender, except
/// while a flood of senders the cluster does not know churns the sender table
/// (`answer_unknown` false); then members only. Answering every made-up sender would cost a
/// status and a request per fake, enough to starve the node; a real node about to join is a
/// member within a probe interval, and its gaps are asked for from then on.
pub(super) fn acknowledged(
    members: Option<&HashSet<u64>>,
    answer_unknown: bool,
    node: u64,
) -> bool {
    answer_unknown || members.is_none_or(|m| m.contains(&node))
}
