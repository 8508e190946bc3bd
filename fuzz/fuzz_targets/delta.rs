#![no_main]
//! `delta::apply` over an untrusted delta: the first byte picks a base length (so the
//! base, taken from the input's front, varies), the rest is the delta. It never panics,
//! never returns more than the limit it was given, and whatever it returns hashes to
//! the target id the delta's header names and was made from a base whose id matches.

use libfuzzer_sys::fuzz_target;
use shoal_diff::delta::{apply_limited, read_header};
use shoal_protocol::recipe::ChunkId;

/// The most a fuzzed delta may produce: small, so that allocation bounds are tested.
const LIMIT: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let base_len = (pick as usize * 7).min(rest.len());
    let (base, delta) = rest.split_at(base_len);
    let Ok(target) = apply_limited(base, delta, LIMIT) else {
        return;
    };
    assert!(target.len() as u64 <= LIMIT, "apply exceeded its limit");
    let header = read_header(delta).expect("an applied delta has a header");
    assert_eq!(header.target_len, target.len() as u64);
    assert_eq!(
        ChunkId::of(&target),
        header.target,
        "apply returned bytes that do not match the target id"
    );
    assert_eq!(ChunkId::of(base), header.base);
});
