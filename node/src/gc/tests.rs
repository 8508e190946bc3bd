//! Runs of the collector over a real content store (in memory): what the plan says is
//! what the store frees, and what is in use survives.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use shoal_protocol::manifest::OCI_MANIFEST;
use shoal_protocol::{Digest, RepoName};

use super::leases::Leases;
use super::plan::{Policy, Request};
use super::{Gc, GcReport};
use crate::stats::Stats;
use crate::store::content::ContentStore;
use crate::store::images::ImageKey;
use crate::store::memory::MemoryEngine;
use crate::store::{Store, unix_now};

const DAY: u64 = 24 * 3600;

fn store() -> Arc<dyn Store> {
    Arc::new(ContentStore::new(MemoryEngine::new()).unwrap())
}

/// Stores blob `seed` (its digest is made up from the seed; the store does not check).
fn put(store: &dyn Store, seed: u64, len: usize) -> Digest {
    let d = Digest::of(&seed.to_le_bytes());
    store
        .put_blob(&d, &crate::store::noise(seed, len), None)
        .unwrap();
    d
}

fn image(store: &dyn Store, repo: &str, name: &str, refs: &[Digest], last_used: u64) -> ImageKey {
    let key = ImageKey {
        upstream: "reg:5000".into(),
        repo: RepoName::parse(repo).unwrap(),
        digest: Digest::of(name.as_bytes()),
    };
    store
        .put_blob(&key.digest, name.as_bytes(), Some(OCI_MANIFEST))
        .unwrap();
    store
        .touch_image(&key, OCI_MANIFEST, refs, last_used)
        .unwrap();
    key
}

fn gc(store: &Arc<dyn Store>, policy: Policy) -> (Arc<Gc>, Arc<Leases>) {
    let leases = Leases::new();
    let gc = Gc::new(
        Arc::clone(store),
        Arc::clone(&leases),
        policy,
        Arc::new(Stats::default()),
    );
    (gc, leases)
}

fn run(gc: &Gc) -> GcReport {
    gc.run(&Request::Policy, false, &mut |_| ControlFlow::Continue(()))
        .unwrap()
}

fn no_rules() -> Policy {
    Policy::no_rules()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Images share layers at random; whatever the policy removes, the store frees
    /// exactly what the plan said, and every kept image keeps every blob it names.
    #[test]
    fn a_run_frees_what_its_plan_predicted_and_kept_images_stay_whole(
        shapes in proptest::collection::vec((proptest::collection::vec(0u64..8, 1..4), 0u64..40), 1..8),
        keep in 1usize..3,
        budget in proptest::option::of(1u64 << 20..12 << 20),
    ) {
        let store = store();
        let layers: Vec<Digest> = (0..8).map(|i| put(store.as_ref(), i, (i as usize + 1) * 300_000)).collect();
        let now = unix_now();
        let mut keys = Vec::new();
        for (i, (refs, age_days)) in shapes.iter().enumerate() {
            let refs: Vec<Digest> = refs.iter().map(|r| layers[*r as usize]).collect();
            let repo = if i % 2 == 0 { "even" } else { "odd" };
            keys.push((image(store.as_ref(), repo, &format!("img{i}"), &refs, now - 3600 - age_days * DAY), refs));
        }
        let (gc, _) = gc(&store, Policy {
            budget,
            max_age: Some(Duration::from_secs(30 * DAY)),
            keep_versions: Some(keep),
            ..Policy::default()
        });
        let predicted = gc.plan(&Request::Policy).unwrap();
        let report = run(&gc);
        prop_assert_eq!(report.freed, predicted.freed);
        prop_assert_eq!(report.usage_after, report.usage_before - predicted.freed);
        prop_assert_eq!(report.skipped_in_use, 0);
        for (key, refs) in &keys {
            if store.image(key).unwrap().is_some() {
                for d in refs {
                    prop_assert!(store.blob(d).unwrap().is_some(), "a kept image lost a layer");
                }
            }
        }
        if let Some(b) = budget
            && predicted.budget_met {
                prop_assert!(report.usage_after <= b);
            }
    }
}

#[test]
fn a_leased_blob_stays_until_its_lease_is_dropped() {
    let store = store();
    let orphan = put(store.as_ref(), 1, 2 << 20);
    let (gc, leases) = gc(&store, no_rules());
    let lease = leases.take(orphan);
    let report = run(&gc);
    assert_eq!((report.blobs_removed, report.skipped_in_use), (0, 1));
    assert!(store.blob(&orphan).unwrap().is_some());
    drop(lease);
    let report = run(&gc);
    assert_eq!(report.blobs_removed, 1);
    assert_eq!(report.usage_after, 0);
    assert!(store.blob(&orphan).unwrap().is_none());
}

#[test]
fn an_image_used_while_the_run_plans_keeps_its_record_and_content() {
    let store = store();
    let layer = put(store.as_ref(), 7, 100_000);
    let key = image(store.as_ref(), "app", "v1", &[layer], unix_now() - 90 * DAY);
    let (gc, _) = gc(
        &store,
        Policy {
            max_age: Some(Duration::from_secs(30 * DAY)),
            ..no_rules()
        },
    );
    // The first progress call comes after planning and before any removal: a pull
    // that starts then touches the image.
    let report = gc
        .run(&Request::Policy, false, &mut |p| {
            if p.done == 0 {
                store
                    .touch_image(&key, OCI_MANIFEST, &[layer], unix_now())
                    .unwrap();
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(report.images_removed, 0);
    assert_eq!(report.images_kept.len(), 1);
    assert_eq!(report.freed, 0);
    assert!(store.blob(&layer).unwrap().is_some());
    assert!(store.image(&key).unwrap().is_some());
}

#[test]
fn a_dry_run_changes_nothing() {
    let store = store();
    put(store.as_ref(), 3, 10);
    let (gc, _) = gc(&store, no_rules());
    let report = gc
        .run(&Request::Policy, true, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.freed, 10);
    assert_eq!(store.totals().unwrap().blobs, 1);
}

#[test]
fn a_partial_holding_pieces_out_of_order_frees_exactly_what_its_plan_said() {
    use shoal_protocol::PIECE_SIZE;
    let store = store();
    let layer = put(store.as_ref(), 1, 2 * PIECE_SIZE as usize);
    image(store.as_ref(), "app", "v1", &[layer], unix_now());
    let head = store.blob(&layer).unwrap().unwrap().pieces[0];
    let shared = crate::store::read_piece(store.as_ref(), &head).unwrap();
    // A partial no image reaches, holding beyond its prefix a piece of the kept layer
    // and a piece of its own at two indices.
    let partial = Digest::of(b"partial");
    let own = crate::store::noise(9, PIECE_SIZE as usize);
    let size = 6 * PIECE_SIZE;
    store.put_piece(&partial, size, 2, &shared).unwrap();
    store.put_piece(&partial, size, 3, &own).unwrap();
    store.put_piece(&partial, size, 5, &own).unwrap();
    let (gc, _) = gc(&store, no_rules());
    let predicted = gc.plan(&Request::Policy).unwrap();
    assert_eq!(predicted.partials, vec![partial]);
    assert_eq!(predicted.freed, PIECE_SIZE, "its own piece, once");
    let report = run(&gc);
    assert_eq!(
        (report.freed, report.partials_removed),
        (predicted.freed, 1)
    );
    crate::store::read_piece(store.as_ref(), &head).unwrap();
    let t = store.totals().unwrap();
    assert_eq!((t.partial_blobs, t.pieces), (0, 3));
}
