//! Public error types.

use crate::auth::VerifyError;
use crate::wire::ParseError;

/// Why a received frame was dropped. Every reason has a stable short [`name`](Self::name), the
/// label of the drop counters and the `reason` field of the (rate-limited) drop logs.
///
/// Hostile or broken input is reported with this type and never panics; a node that drops a
/// frame keeps no state from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The bytes are not a well-formed frame.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The frame comes from another cluster (checked before the tag, so that two clusters
    /// sharing a network are told apart from forgeries).
    #[error("frame from a foreign cluster")]
    ForeignCluster,
    /// The frame failed authentication.
    #[error(transparent)]
    Auth(#[from] VerifyError),
    /// The frame's timestamp is further from this node's clock than the skew window allows:
    /// a replay of an old frame, or a sender whose clock is wrong.
    #[error("frame timestamp outside the clock-skew window")]
    ClockSkew,
    /// The node already accepted this frame (a network duplicate or a replay), or a heartbeat
    /// no newer than one it has seen.
    #[error("duplicate or replayed frame")]
    Duplicate,
    /// The frame belongs to an earlier incarnation of its sender (a replay from before the
    /// sender restarted).
    #[error("frame from a retired incarnation of its sender")]
    StaleIncarnation,
    /// The frame carries this node's own node id: multicast loopback, or a peer list that
    /// names this node. Never delivered twice.
    #[error("frame sent by this node")]
    OwnFrame,
    /// The node tracks as many senders as it may and none of them can be let go yet.
    #[error("too many senders")]
    TooManySenders,
    /// The frame claims a sequence number no sender reaches (2^62 or more): a hostile claim
    /// by a holder of the secret, refused so that it cannot make a receiver track or report
    /// an absurd range.
    #[error("implausible sequence number")]
    ImplausibleSequence,
}

impl Reject {
    /// The reason's stable short name, such as `"bad_magic"`, `"foreign_cluster"` or
    /// `"bad_tag"`.
    ///
    /// ```
    /// use herald::Reject;
    /// use herald::wire::ParseError;
    /// assert_eq!(Reject::from(ParseError::BadMagic).name(), "bad_magic");
    /// assert_eq!(Reject::ForeignCluster.name(), "foreign_cluster");
    /// ```
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Parse(e) => e.name(),
            Self::ForeignCluster => "foreign_cluster",
            Self::Auth(e) => e.name(),
            Self::ClockSkew => "clock_skew",
            Self::Duplicate => "duplicate",
            Self::StaleIncarnation => "stale_incarnation",
            Self::OwnFrame => "own_frame",
            Self::TooManySenders => "too_many_senders",
            Self::ImplausibleSequence => "implausible_sequence",
        }
    }

    /// The reasons that come after parsing and authentication, in declaration order.
    const SESSION_NAMES: &'static [&'static str] = &[
        "clock_skew",
        "duplicate",
        "stale_incarnation",
        "own_frame",
        "too_many_senders",
        "implausible_sequence",
    ];

    /// The position of this reason's name in [`names`](Self::names): an index for counters.
    pub(crate) fn index(&self) -> usize {
        let name = self.name();
        Self::names().position(|n| n == name).unwrap_or(0)
    }

    /// Every short name any reject can have.
    pub fn names() -> impl Iterator<Item = &'static str> {
        ParseError::NAMES
            .iter()
            .copied()
            .chain(std::iter::once("foreign_cluster"))
            .chain(VerifyError::NAMES.iter().copied())
            .chain(Self::SESSION_NAMES.iter().copied())
    }
}
