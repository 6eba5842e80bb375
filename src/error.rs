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
        }
    }

    /// Every short name any reject can have.
    pub fn names() -> impl Iterator<Item = &'static str> {
        ParseError::NAMES
            .iter()
            .copied()
            .chain(std::iter::once("foreign_cluster"))
            .chain(VerifyError::NAMES.iter().copied())
    }
}
