#![no_main]
//! `Range` and `WWW-Authenticate` header values. Input: 8 bytes of blob size (little
//! endian), then the header as UTF-8.

use libfuzzer_sys::fuzz_target;
use shoal_protocol::auth::{MAX_CHALLENGE_LEN, parse_challenge};
use shoal_protocol::range::{RangeRequest, parse_range};

fuzz_target!(|data: &[u8]| {
    let (size, text) = if data.len() >= 8 {
        let (n, rest) = data.split_at(8);
        // Keep small sizes common so that ranges near the end are hit.
        let n = u64::from_le_bytes(n.try_into().unwrap());
        (if n & 1 == 0 { n >> 1 } else { (n >> 1) % 4096 }, rest)
    } else {
        (data.len() as u64, data)
    };
    let Ok(s) = std::str::from_utf8(text) else {
        return;
    };

    match parse_range(Some(s), size) {
        RangeRequest::Partial(r) => {
            assert!(r.start < r.end, "empty range {r:?} for {s:?} of {size}");
            assert!(r.end <= size, "range {r:?} past {size} for {s:?}");
        }
        RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
    }
    assert_eq!(parse_range(None, size), RangeRequest::Whole);

    let challenge = parse_challenge(s);
    if challenge.is_some() {
        assert!(s.len() <= MAX_CHALLENGE_LEN);
    }
    assert_eq!(parse_challenge(s), challenge);
});
