#![no_main]
//! `recipe::decode` over untrusted bytes: an accepted recipe is valid and survives
//! `encode` then `decode` unchanged.

use libfuzzer_sys::fuzz_target;
use shoal_protocol::recipe::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(recipe) = decode(data) else {
        return;
    };
    recipe
        .validate()
        .expect("decode returned an invalid recipe");
    let again = decode(&encode(&recipe)).expect("re-encoded recipe does not decode");
    assert_eq!(again, recipe);
});
