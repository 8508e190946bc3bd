#![no_main]
//! `pack::read_header` and `pack::apply` over an untrusted pack, with a fixed small
//! base layer (`diff/tests/common/pack_fixture.rs`, whose targets' packs are the
//! seeds) and tight limits. It never panics; every chunk handed to the sink matches its
//! id and comes once; and an applied pack has a header, a valid recipe with the
//! header's diff_id and size, and every chunk of that recipe either held by the base
//! it names or handed to the sink.

use std::collections::HashSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal_diff::pack::{Limits, apply, read_header};

#[allow(dead_code)] // the fuzz target uses the base, not the targets
#[path = "../../diff/tests/common/pack_fixture.rs"]
mod pack_fixture;

static BASE: OnceLock<pack_fixture::Fixture> = OnceLock::new();

/// Small limits, so that allocation bounds are tested.
const LIMITS: Limits = Limits {
    max_recipe: 1 << 20,
    max_file: 1 << 20,
    max_tar: 64 << 20,
    window_log_max: 20,
};

fuzz_target!(|data: &[u8]| {
    let base = BASE.get_or_init(pack_fixture::base);
    let header = read_header(data);
    let mut seen = HashSet::new();
    let result = apply(
        data,
        &[base.base()],
        &base.chunks,
        &mut |c, bytes| {
            assert!(
                c.id.matches(bytes),
                "the sink got bytes that are not {}",
                c.id
            );
            assert_eq!(c.len as usize, bytes.len());
            assert!(seen.insert(c.id), "chunk {} came twice", c.id);
            Ok(())
        },
        &LIMITS,
    );
    let Ok(applied) = result else {
        return;
    };
    let header = header.expect("an applied pack has a header");
    applied
        .recipe
        .validate()
        .expect("an applied recipe validates");
    assert_eq!(applied.recipe.diff_id, header.diff_id);
    assert_eq!(applied.recipe.tar_size, header.tar_size);
    let held = if header.bases.contains(&base.layer) {
        base.recipe.chunk_ids()
    } else {
        Default::default()
    };
    for id in applied.recipe.chunk_ids() {
        assert!(
            held.contains(&id) || seen.contains(&id),
            "chunk {id} of the recipe was neither held nor received"
        );
    }
});
