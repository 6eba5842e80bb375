//! Public error types: why a frame was dropped ([`Reject`]), why a setting was refused
//! ([`ConfigError`], [`ConfigErrors`]), why a router did not start ([`BuildError`]) and why a
//! raise was refused ([`RaiseError`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::auth::{OpenError, SecretFileError, VerifyError};
use crate::wire::ParseError;
#[cfg(doc)]
use crate::{Config, Event, Missed, RouterBuilder};

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

impl From<OpenError> for Reject {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Verify(e) => e.into(),
            OpenError::Parse(e) => e.into(),
        }
    }
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

/// Why [`RouterBuilder::build`] failed. Each names the setting at fault and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Settings are missing or out of range: every one at fault, each naming the builder
    /// method (see [`RouterBuilder::check`]).
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
    /// The secret file could not be used.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// A socket or the poller could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up, such as `udp bind 127.0.0.1:7700`.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
}

/// Why [`Event::raise`] refused an event. Nothing was sent, and local subscribers were not
/// called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaiseError {
    /// The payload does not fit in one frame.
    #[error("payload of {len} bytes exceeds the {max}-byte maximum for this router's frame size")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload.
        max: usize,
    },
    /// The ring is full: the driver cannot keep up (or the network is down). Peers are told
    /// (they raise [`Missed`]).
    #[error("ring full: event refused (peers will be told)")]
    Full,
    /// The router was shut down.
    #[error("router shut down")]
    ShutDown,
}

/// A setting that cannot be used: the key at fault (`udp.bind`, `ring.capacity`; for the
/// builder its method's name) and what is wrong with it. Every refusal of a setting, by the
/// config, the router's builder or the service, is one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The key's path, such as `udp.peers[1]`; `config` for the file as a whole (TOML
    /// syntax, with the line and column in the problem).
    pub key: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration (never empty), in the order of the checks; shown
/// one per line, after the file's name when it came from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    file: Option<PathBuf>,
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn new(errors: Vec<ConfigError>) -> Self {
        debug_assert!(!errors.is_empty());
        Self { file: None, errors }
    }

    /// The problems.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// How many problems.
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// The file they were found in, when they came from [`Config::load`].
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The same problems, said to be in `file`.
    #[must_use]
    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self::new(vec![e])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if let Some(file) = &self.file {
                write!(f, "{}: ", file.display())?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
