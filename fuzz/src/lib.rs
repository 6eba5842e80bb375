//! Shared helpers of herald's fuzz targets: the fixed test key, frames built from
//! `arbitrary` input, and an allocator that counts.

use arbitrary::Arbitrary;
use herald::EventId;
use herald::auth::{Key, Keyring};
use herald::wire::{
    ClusterId, EncodeError, FRAME_OVERHEAD, Flags, FrameKind, FrameWriter, HeaderFields,
    MAX_FRAME_LEN,
};

/// The keyring every signing target uses: key id 1, a fixed key. Fuzzing with a known key lets
/// the fuzzer reach what lies behind the tag check without any bypass in it.
pub fn test_keyring() -> Keyring {
    Keyring::new(1, Key::from_bytes(*b"herald fuzzing key, not secret!!")).expect("keyring")
}

/// Header values chosen by the fuzzer.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ArbHeader {
    pub heartbeat: bool,
    pub overflowed: bool,
    pub cluster: u64,
    pub node: u64,
    pub incarnation: u64,
    pub sequence: u64,
    pub timestamp_ns: u64,
}

impl ArbHeader {
    pub fn fields(&self) -> HeaderFields {
        HeaderFields {
            kind: if self.heartbeat {
                FrameKind::Heartbeat
            } else {
                FrameKind::Data
            },
            flags: if self.overflowed {
                Flags::OVERFLOWED
            } else {
                Flags::EMPTY
            },
            key_id: 1,
            cluster: ClusterId::from_raw(self.cluster),
            node: self.node,
            incarnation: self.incarnation,
            sequence: self.sequence,
            timestamp_ns: self.timestamp_ns,
        }
    }
}

/// Frame sizes worth trying: the UDP default, small ones that fill fast, and the maximum.
pub fn frame_len(choice: u16) -> usize {
    match choice % 4 {
        0 => 1472,
        1 => 8192,
        2 => MAX_FRAME_LEN,
        _ => FRAME_OVERHEAD + usize::from(choice) % 2048,
    }
}

/// Encodes `events` into as many signed frames as they need, in order. Events too large for
/// any frame of this size are skipped and returned apart.
pub fn encode_all(
    header: &HeaderFields,
    len: usize,
    events: &[([u8; 16], Vec<u8>)],
    keyring: &Keyring,
) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut frames = Vec::new();
    let mut skipped = Vec::new();
    let mut buf = vec![0u8; len];
    let mut i = 0;
    while i < events.len() {
        let mut w = FrameWriter::new(&mut buf, header).expect("frame buffer in range");
        while let Some((id, payload)) = events.get(i) {
            match w.push(&EventId::from_bytes(*id), payload) {
                Ok(()) => i += 1,
                Err(EncodeError::FrameFull { .. }) => break,
                Err(EncodeError::PayloadTooLarge { .. }) => {
                    skipped.push(i);
                    i += 1;
                }
                Err(e) => panic!("unexpected encode error: {e}"),
            }
        }
        if !w.is_empty() {
            frames.push(w.finish(keyring).to_vec());
        }
    }
    (frames, skipped)
}

/// A global allocator that counts allocations, so a target can assert that parsing makes
/// none. A target installs it with
/// `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator;`.
pub struct CountingAllocator;

static ALLOCATIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl CountingAllocator {
    /// Allocations made so far by the whole process.
    pub fn allocations() -> usize {
        ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}
