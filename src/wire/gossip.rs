//! Membership frames ([`FrameKind::Membership`]): the SWIM messages of
//! [`crate::membership`], signed and replay-checked like every other frame.
//!
//! The body is a 40-byte gossip header (message kind, probe number, and the member the
//! message is about: the probed node of a ping, the acknowledged node of an ack, the node an
//! indirect probe asks for), then the header's `record_count` member entries of 40 bytes
//! ([`EntryBytes`]): the updates the message carries (piggybacked gossip, or a page of the
//! member list). The event table is empty. The header's `sequence` is, as on a heartbeat, the
//! last data sequence its sender used. Byte tables are in `docs/wire-format.md`.
//!
//! Addresses are a family byte (0: none, 4: IPv4 in the first 4 of the 16 address bytes, the
//! rest zero; 6: IPv6), a port and 16 address bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    EncodeError, FrameHeader, HEADER_LEN, HeaderFields, MAX_FRAME_LEN, ParseError, TAG_LEN,
};

/// Length of the gossip header that starts a membership frame's body.
pub const GOSSIP_HEADER_LEN: usize = 40;
/// Length of one member entry.
pub const ENTRY_LEN: usize = 40;
/// The most entries one membership frame carries: 32 keep a frame (1,416 bytes) within a
/// 1,472-byte UDP datagram.
pub const MAX_ENTRIES: usize = 32;
/// The length of a membership frame with `entries` entries.
pub const fn gossip_frame_len(entries: usize) -> usize {
    HEADER_LEN + GOSSIP_HEADER_LEN + entries * ENTRY_LEN + TAG_LEN
}

/// The first bytes of a membership frame's body.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct GossipHeader {
    pub(super) message: u8,
    pub(super) family: u8,
    pub(super) port: U16,
    pub(super) seq: U32,
    pub(super) target_node: U64,
    pub(super) target_incarnation: U64,
    pub(super) ip: [u8; 16],
}

/// One member entry: a node's state as the sender knows it.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct EntryBytes {
    pub(super) node: U64,
    pub(super) incarnation: U64,
    pub(super) counter: U32,
    pub(super) state: u8,
    pub(super) family: u8,
    pub(super) port: U16,
    pub(super) ip: [u8; 16],
}

const _: () = assert!(size_of::<GossipHeader>() == GOSSIP_HEADER_LEN);
const _: () = assert!(size_of::<EntryBytes>() == ENTRY_LEN);
const _: () = assert!(gossip_frame_len(MAX_ENTRIES) <= super::DEFAULT_UDP_FRAME_LEN);

/// What a membership message asks or says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GossipKind {
    /// A direct probe of the target (node 0: whoever listens at the address, as for a seed).
    Ping,
    /// The answer to a probe: the target answered (directly, or through an intermediary).
    Ack,
    /// Asks the receiver to probe the target on the sender's behalf (an indirect probe).
    PingReq,
    /// A joining node asks for the member list.
    Join,
    /// A page of the member list (the answer to a join).
    Sync,
    /// Updates only, expecting no answer (a graceful leave is sent this way).
    Notify,
}

impl GossipKind {
    const fn to_byte(self) -> u8 {
        match self {
            Self::Ping => 1,
            Self::Ack => 2,
            Self::PingReq => 3,
            Self::Join => 4,
            Self::Sync => 5,
            Self::Notify => 6,
        }
    }

    const fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Ping),
            2 => Some(Self::Ack),
            3 => Some(Self::PingReq),
            4 => Some(Self::Join),
            5 => Some(Self::Sync),
            6 => Some(Self::Notify),
            _ => None,
        }
    }
}

/// A member's state as gossip carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// A probe went unanswered; the member has until the suspicion timeout to refute.
    Suspect,
    /// Declared failed: suspected and not refuted in time.
    Failed,
    /// Left the cluster on purpose.
    Left,
}

impl MemberState {
    const fn to_byte(self) -> u8 {
        match self {
            Self::Alive => 1,
            Self::Suspect => 2,
            Self::Failed => 3,
            Self::Left => 4,
        }
    }

    const fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Alive),
            2 => Some(Self::Suspect),
            3 => Some(Self::Failed),
            4 => Some(Self::Left),
            _ => None,
        }
    }
}

/// One member's state: the values of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberRecord {
    /// The member's node id (never 0).
    pub node: u64,
    /// The member's incarnation (a new one at each start of the node).
    pub incarnation: u64,
    /// Raised by the member itself to refute a suspicion of the same incarnation.
    pub counter: u32,
    /// The state.
    pub state: MemberState,
    /// Where the member listens (`None` if the sender does not know).
    pub addr: Option<SocketAddr>,
}

/// A membership message, as a writer takes it.
#[derive(Clone, Copy, Debug)]
pub struct GossipMessage<'a> {
    /// What the message is.
    pub kind: GossipKind,
    /// The probe number (pings, acks, indirect probes), 0 otherwise.
    pub seq: u32,
    /// The node the message is about (0: unknown).
    pub target_node: u64,
    /// That node's incarnation, if known (0 otherwise).
    pub target_incarnation: u64,
    /// That node's address, if known.
    pub target_addr: Option<SocketAddr>,
    /// The entries (at most [`MAX_ENTRIES`]).
    pub entries: &'a [MemberRecord],
}

/// The body of a checked membership frame, borrowed from the frame.
#[derive(Clone, Copy, Debug)]
pub struct Gossip<'a> {
    header: &'a GossipHeader,
    entries: &'a [u8],
}

impl<'a> Gossip<'a> {
    /// What the message is.
    pub fn kind(&self) -> GossipKind {
        // Checked by the parser; Notify is never the answer for a checked body.
        GossipKind::from_byte(self.header.message).unwrap_or(GossipKind::Notify)
    }

    /// The probe number.
    pub fn seq(&self) -> u32 {
        self.header.seq.get()
    }

    /// The node the message is about (0: unknown).
    pub fn target_node(&self) -> u64 {
        self.header.target_node.get()
    }

    /// That node's incarnation (0: unknown).
    pub fn target_incarnation(&self) -> u64 {
        self.header.target_incarnation.get()
    }

    /// That node's address, if the message names one.
    pub fn target_addr(&self) -> Option<SocketAddr> {
        decode_addr(self.header.family, self.header.port.get(), &self.header.ip).flatten()
    }

    /// The entries.
    pub fn entries(&self) -> impl Iterator<Item = MemberRecord> + 'a {
        self.entries.chunks_exact(ENTRY_LEN).filter_map(|chunk| {
            let e = EntryBytes::ref_from_bytes(chunk).ok()?;
            Some(MemberRecord {
                node: e.node.get(),
                incarnation: e.incarnation.get(),
                counter: e.counter.get(),
                state: MemberState::from_byte(e.state)?,
                addr: decode_addr(e.family, e.port.get(), &e.ip).flatten(),
            })
        })
    }

    /// The number of entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len() / ENTRY_LEN
    }
}

/// `None`: an invalid encoding; `Some(None)`: no address.
fn decode_addr(family: u8, port: u16, ip: &[u8; 16]) -> Option<Option<SocketAddr>> {
    match family {
        0 if port == 0 && *ip == [0; 16] => Some(None),
        4 if ip[4..] == [0; 12] => {
            let v4 = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
            Some(Some(SocketAddr::new(IpAddr::V4(v4), port)))
        }
        6 => Some(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(*ip)), port))),
        _ => None,
    }
}

fn encode_addr(addr: Option<SocketAddr>) -> (u8, u16, [u8; 16]) {
    let mut ip = [0u8; 16];
    match addr {
        None => (0, 0, ip),
        Some(SocketAddr::V4(a)) => {
            ip[..4].copy_from_slice(&a.ip().octets());
            (4, a.port(), ip)
        }
        Some(SocketAddr::V6(a)) => (6, a.port(), a.ip().octets()),
    }
}

/// Checks a membership frame's body; `entries` is the header's record count, `ids` its
/// event count (which must be 0).
pub(super) fn parse_gossip(body: &[u8], entries: u16, ids: u16) -> Result<(), ParseError> {
    let n = usize::from(entries);
    if ids != 0 || n > MAX_ENTRIES || body.len() != GOSSIP_HEADER_LEN + n * ENTRY_LEN {
        return Err(ParseError::BadMembership);
    }
    let (header, rest) =
        GossipHeader::ref_from_prefix(body).map_err(|_| ParseError::BadMembership)?;
    if GossipKind::from_byte(header.message).is_none()
        || decode_addr(header.family, header.port.get(), &header.ip).is_none()
    {
        return Err(ParseError::BadMembership);
    }
    for chunk in rest.chunks_exact(ENTRY_LEN) {
        let e = EntryBytes::ref_from_bytes(chunk).map_err(|_| ParseError::BadMembership)?;
        if e.node.get() == 0
            || MemberState::from_byte(e.state).is_none()
            || decode_addr(e.family, e.port.get(), &e.ip).is_none()
        {
            return Err(ParseError::BadMembership);
        }
    }
    Ok(())
}

/// The membership view of a checked membership body.
pub(super) fn view(body: &[u8]) -> Option<Gossip<'_>> {
    let (header, entries) = GossipHeader::ref_from_prefix(body).ok()?;
    Some(Gossip { header, entries })
}

/// Writes and signs a membership frame into `buf` and returns its bytes. `fields.kind` is
/// ignored (the frame is always [`FrameKind::Membership`](super::FrameKind::Membership)),
/// and so is `fields.flags`.
///
/// # Errors
///
/// [`EncodeError::TooManyRecords`] for more than [`MAX_ENTRIES`] entries,
/// [`EncodeError::BadBufferLen`] if the frame does not fit `buf`.
pub fn write_membership<'b>(
    buf: &'b mut [u8],
    fields: &HeaderFields,
    message: &GossipMessage<'_>,
    keyring: &impl super::FrameSigner,
) -> Result<&'b [u8], EncodeError> {
    let n = message.entries.len();
    if n > MAX_ENTRIES {
        return Err(EncodeError::TooManyRecords);
    }
    let len = gossip_frame_len(n);
    if len > buf.len() || buf.len() > MAX_FRAME_LEN {
        return Err(EncodeError::BadBufferLen(buf.len()));
    }
    let body = len - HEADER_LEN - TAG_LEN;
    let membership = HeaderFields {
        kind: super::FrameKind::Membership,
        flags: super::Flags::EMPTY,
        ..*fields
    };
    let header = FrameHeader::new(&membership, keyring.signing_key_id(), (n, 0), body);
    let (family, port, ip) = encode_addr(message.target_addr);
    let gossip = GossipHeader {
        message: message.kind.to_byte(),
        family,
        port: U16::new(port),
        seq: U32::new(message.seq),
        target_node: U64::new(message.target_node),
        target_incarnation: U64::new(message.target_incarnation),
        ip,
    };
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(header.as_bytes());
    put(gossip.as_bytes());
    for e in message.entries {
        let (family, port, ip) = encode_addr(e.addr);
        put(EntryBytes {
            node: U64::new(e.node),
            incarnation: U64::new(e.incarnation),
            counter: U32::new(e.counter),
            state: e.state.to_byte(),
            family,
            port: U16::new(port),
            ip,
        }
        .as_bytes());
    }
    let (signed, rest) = buf.split_at_mut(at);
    let tag = keyring.sign(signed);
    rest[..TAG_LEN].copy_from_slice(&tag);
    Ok(&buf[..len])
}
