//! Properties: chunk boundaries survive edits elsewhere in a file, and the recipe does
//! not depend on how the tar was sliced.

mod common;

use std::collections::HashSet;

use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Bytes inserted near the start of a large file change the chunks around the
    /// insertion only: FastCDC finds the same cut points again soon after, so most of
    /// the new version's chunks are the old version's.
    #[test]
    fn chunks_after_an_insertion_are_shared_with_the_original(
        seed in any::<u64>(),
        at in 0usize..100_000,
        inserted in proptest::collection::vec(any::<u8>(), 1..2000),
    ) {
        let old = random(4 << 20, seed);
        let mut new = old.clone();
        new.splice(at..at, inserted.iter().copied());
        let old_r = build(&tar_of(&[("f".into(), old)])).unwrap().recipe;
        let new_r = build(&tar_of(&[("f".into(), new)])).unwrap().recipe;
        let old_ids: HashSet<_> = old_r.entries[0].chunks.iter().map(|c| c.id).collect();
        let new_chunks = &new_r.entries[0].chunks;
        let fresh = new_chunks.iter().filter(|c| !old_ids.contains(&c.id)).count();
        // 4 MiB is 45 to 65 chunks. An edit in the first 100 KB changes the chunk that
        // holds it, and now and then the next few until FastCDC finds an old cut point
        // again (1,500 trials: one new chunk in 97%, never more than five).
        prop_assert!(fresh >= 1, "the edited chunk cannot be shared");
        prop_assert!(fresh <= 10, "{fresh} of {} chunks are new", new_chunks.len());
        // The chunks that differ are one run around the edit; the rest are shared.
        let fresh_at: Vec<usize> = (0..new_chunks.len()).filter(|&i| !old_ids.contains(&new_chunks[i].id)).collect();
        if let (Some(first), Some(last)) = (fresh_at.first(), fresh_at.last()) {
            prop_assert_eq!(last - first + 1, fresh_at.len());
            let start: u64 = new_chunks[..*first].iter().map(|c| u64::from(c.len)).sum();
            prop_assert!(start <= at as u64, "a chunk before the edit changed");
        }
    }

    /// The same tar pushed in any slices gives the same recipe and the same chunks in
    /// the same order.
    #[test]
    fn the_recipe_does_not_depend_on_the_slices(
        sizes in proptest::collection::vec(prop_oneof![0usize..600, 0usize..20_000, 0usize..400_000], 1..12),
        seed in any::<u64>(),
        slices in proptest::collection::vec(1usize..300_000, 1..20),
    ) {
        let files: Vec<(String, Vec<u8>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("dir/file-{i}"), random(n, seed ^ i as u64)))
            .collect();
        let tar = tar_of(&files);
        let whole = build(&tar).unwrap();
        let sliced = build_sliced(&tar, &slices).unwrap();
        prop_assert_eq!(&sliced.recipe, &whole.recipe);
        prop_assert_eq!(&sliced.emitted, &whole.emitted);
        let one_byte_at_a_time_for_a_while = build_sliced(&tar, &[1, 1, 1, 3, 511, 1 << 20]).unwrap();
        prop_assert_eq!(&one_byte_at_a_time_for_a_while.recipe, &whole.recipe);
    }
}
