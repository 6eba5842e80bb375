//! Who a node is: its node id, and the incarnation that tells one run of it from the next.
//!
//! [`new_incarnation`] and [`incarnation_start_ms`] are pure; [`default_node_id`] and
//! [`random_u64`] ask the system (host name, process id, random generator) and are called by
//! the router when it builds a node, never by the endpoint itself.

/// Bits of an incarnation below the start time.
const INCARNATION_RANDOM_BITS: u32 = 20;

/// An incarnation for a node starting at `unix_ns`: the start time in milliseconds in the high
/// 44 bits, `random` in the low 20. Receivers read the start time to tell whether a sender
/// started after them (then every frame it sent was meant for them, and a lost first frame is
/// reported) or before (then its earlier frames predate them).
pub fn new_incarnation(unix_ns: u64, random: u64) -> u64 {
    let ms = unix_ns / 1_000_000;
    (ms << INCARNATION_RANDOM_BITS) | (random & ((1 << INCARNATION_RANDOM_BITS) - 1))
}

/// The start time, in milliseconds since the Unix epoch, that an incarnation carries.
pub fn incarnation_start_ms(incarnation: u64) -> u64 {
    incarnation >> INCARNATION_RANDOM_BITS
}

/// 64 random bits from the system's generator, for an incarnation's low bits.
pub(crate) fn random_u64() -> u64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    // If the system's generator fails, the start time alone still separates incarnations.
    let _ = SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// A node id from the host name and the process id: unique per process on a host, and stable
/// for nothing (set one in the config to keep it across restarts).
pub(crate) fn default_node_id() -> u64 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}:{}", host.trim(), std::process::id()).as_bytes(),
    );
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(b)
}
