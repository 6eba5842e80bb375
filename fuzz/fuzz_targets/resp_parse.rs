//! Arbitrary bytes from a service client: `parse_command` never panics and never allocates
//! (no declared length is allocated up front); a command it finds lies within the bytes it
//! says it took, parses the same from exactly those bytes, and re-encoded as a RESP array
//! parses back to the same arguments.
#![no_main]

use herald::service::fuzzing::{MAX_ARGS, parse_command};
use herald_fuzz::CountingAllocator;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fuzz_target!(|data: &[u8]| {
    let mut args = Vec::with_capacity(MAX_ARGS);
    let before = CountingAllocator::allocations();
    let parsed = parse_command(data, &mut args);
    assert_eq!(
        CountingAllocator::allocations(),
        before,
        "parsing allocated"
    );
    let Ok(Some(n)) = parsed else {
        return;
    };
    assert!(n > 0 && n <= data.len());
    let mut end = 0;
    for r in &args {
        assert!(
            r.start >= end && r.end >= r.start && r.end <= n,
            "{r:?} within 0..{n}"
        );
        end = r.end;
    }
    let found: Vec<Vec<u8>> = args.iter().map(|r| data[r.clone()].to_vec()).collect();

    let mut again = Vec::new();
    assert_eq!(parse_command(&data[..n], &mut again), Ok(Some(n)));
    assert_eq!(again, args);

    if found.is_empty() {
        return;
    }
    let mut encoded = format!("*{}\r\n", found.len()).into_bytes();
    for a in &found {
        encoded.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        encoded.extend_from_slice(a);
        encoded.extend_from_slice(b"\r\n");
    }
    let mut round = Vec::new();
    assert_eq!(parse_command(&encoded, &mut round), Ok(Some(encoded.len())));
    let back: Vec<&[u8]> = round.iter().map(|r| &encoded[r.clone()]).collect();
    assert!(back.into_iter().eq(found.iter().map(Vec::as_slice)));
});
