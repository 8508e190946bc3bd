//! The planner's rules, one fixture each.

use std::time::Duration;

use shoal_protocol::manifest::{OCI_INDEX, OCI_MANIFEST};
use shoal_protocol::{Digest, PieceId, RepoName};

use super::*;

const NOW: u64 = 100_000_000;
const DAY: u64 = 24 * 3600;

/// A model built image by image; each blob is one piece of its own unless shared.
#[derive(Default)]
struct Fixture {
    model: Model,
}

fn key(repo: &str, name: &str) -> ImageKey {
    ImageKey {
        upstream: "reg:5000".into(),
        repo: RepoName::parse(repo).unwrap(),
        digest: Digest::of(name.as_bytes()),
    }
}

impl Fixture {
    /// Holds blob `name` of `size` bytes as one piece (shared if held twice).
    fn blob(&mut self, name: &str, size: u64) -> Digest {
        let d = Digest::of(name.as_bytes());
        let piece = PieceId::of(name.as_bytes());
        self.model.pieces.insert(piece, size);
        self.model.blobs.insert(
            d,
            HeldBlob {
                size,
                pieces: vec![piece],
            },
        );
        d
    }

    /// An image manifest `name` in `repo` with blobs `refs`, last used at `last_used`.
    fn image(&mut self, repo: &str, name: &str, refs: &[Digest], last_used: u64) -> ImageKey {
        let k = key(repo, name);
        self.blob(name, 1);
        self.model.images.push((
            k.clone(),
            ImageRecord {
                media_type: OCI_MANIFEST.into(),
                refs: refs.to_vec(),
                first_seen: 0,
                last_used,
            },
        ));
        k
    }

    fn plan(&self, policy: &Policy) -> Plan {
        plan(&self.model, policy, NOW, &Request::Policy).unwrap()
    }
}

fn no_rules() -> Policy {
    Policy::no_rules()
}

fn names(plan: &Plan) -> Vec<(Digest, Reason)> {
    plan.keys
        .iter()
        .zip(&plan.images)
        .map(|(k, i)| (k.digest, i.reason))
        .collect()
}

#[test]
fn keep_versions_removes_the_least_recently_used_and_frees_only_unshared_bytes() {
    let mut f = Fixture::default();
    let base = f.blob("base", 1000);
    let (a, b, c) = (f.blob("a", 10), f.blob("b", 20), f.blob("c", 30));
    let v1 = f.image("app", "v1", &[base, a], NOW - 3 * DAY);
    f.image("app", "v2", &[base, b], NOW - 2 * DAY);
    f.image("app", "v3", &[base, c], NOW - DAY);
    f.image("other", "o1", &[base], NOW - 9 * DAY);
    let plan = f.plan(&Policy {
        keep_versions: Some(2),
        ..no_rules()
    });
    assert_eq!(names(&plan), vec![(v1.digest, Reason::Versions)]);
    // v1's manifest (1 byte) and layer a (10 bytes); base is still used.
    assert_eq!(plan.freed, 11);
    let mut blobs = plan.blobs.clone();
    blobs.sort();
    let mut expected = vec![v1.digest, a];
    expected.sort();
    assert_eq!(blobs, expected);
    assert!(plan.budget_met);
}

#[test]
fn max_age_removes_idle_images_but_never_pinned_or_in_use_ones() {
    let mut f = Fixture::default();
    let l = f.blob("l", 5);
    let old = f.image("app", "old", &[l], NOW - 40 * DAY);
    let pinned = f.image("pinned", "p", &[l], NOW - 40 * DAY);
    f.model.pins.insert(pinned.clone(), vec!["operator".into()]);
    f.image("busy", "b", &[], NOW - 60);
    let plan = f.plan(&Policy {
        max_age: Some(Duration::from_secs(30 * DAY)),
        ..no_rules()
    });
    assert_eq!(names(&plan), vec![(old.digest, Reason::Age)]);
    assert_eq!(plan.protected, 2, "the pinned image and the one just used");
    assert_eq!(plan.freed, 1, "the layer is shared with the pinned image");
}

#[test]
fn a_budget_removes_least_recently_used_images_down_to_the_low_water_mark() {
    let mut f = Fixture::default();
    let mut keys = Vec::new();
    for i in 0..5u64 {
        let layer = f.blob(&format!("layer{i}"), 99);
        keys.push(f.image("app", &format!("v{i}"), &[layer], NOW - (10 - i) * DAY));
    }
    assert_eq!(f.model.usage(), 500);
    // High water 90% of 450 = 405 < 500: remove until <= 80% = 360, i.e. two images.
    let plan = f.plan(&Policy {
        budget: Some(450),
        ..no_rules()
    });
    assert_eq!(
        names(&plan),
        vec![
            (keys[0].digest, Reason::Budget),
            (keys[1].digest, Reason::Budget)
        ]
    );
    assert_eq!(plan.freed, 200);
    assert!(plan.budget_met);
    // Under the high-water mark nothing goes.
    let plan = f.plan(&Policy {
        budget: Some(560),
        ..no_rules()
    });
    assert!(plan.images.is_empty());
}

#[test]
fn a_budget_that_only_protected_images_exceed_is_reported_unmet() {
    let mut f = Fixture::default();
    let l = f.blob("big", 1000);
    let k = f.image("app", "v1", &[l], NOW - 5 * DAY);
    f.model.pins.insert(k, vec!["seed".into()]);
    let plan = f.plan(&Policy {
        budget: Some(100),
        ..no_rules()
    });
    assert!(plan.images.is_empty());
    assert!(!plan.budget_met);
}

#[test]
fn blobs_partials_and_recipes_no_image_reaches_are_swept() {
    let mut f = Fixture::default();
    let kept = f.blob("kept", 7);
    f.image("app", "v1", &[kept], NOW - DAY);
    let orphan = f.blob("orphan", 50);
    // A partial sharing the kept blob's piece frees nothing of it.
    let partial = Digest::of(b"partial");
    f.model
        .partials
        .insert(partial, vec![PieceId::of(b"kept"), PieceId::of(b"p2")]);
    f.model.pieces.insert(PieceId::of(b"p2"), 3);
    // A recipe for the orphan, with one chunk of its own and one shared with kept's.
    let (own, shared) = (ChunkId([1; 32]), ChunkId([2; 32]));
    f.model.chunks.insert(own, 100);
    f.model.chunks.insert(shared, 1000);
    f.model.recipes.insert(orphan);
    f.model.recipes.insert(kept);
    f.model.layer_chunks.insert(orphan, vec![own, shared]);
    f.model.layer_chunks.insert(kept, vec![shared]);
    let plan = f.plan(&no_rules());
    assert!(plan.images.is_empty());
    assert_eq!(plan.blobs, vec![orphan]);
    assert_eq!(plan.partials, vec![partial]);
    assert_eq!(plan.recipes, vec![orphan]);
    assert_eq!(plan.freed, 50 + 3 + 100);
}

#[test]
fn an_index_and_its_manifests_go_and_stay_together() {
    let mut f = Fixture::default();
    let layer = f.blob("layer", 10);
    let child = f.image("app", "amd64", &[layer], NOW - 40 * DAY);
    let other_platform = Digest::of(b"arm64");
    let index = f.image(
        "app",
        "index",
        &[child.digest, other_platform],
        NOW - 40 * DAY,
    );
    f.model.images[1].1.media_type = OCI_INDEX.into();
    let policy = Policy {
        max_age: Some(Duration::from_secs(30 * DAY)),
        ..no_rules()
    };
    let plan = f.plan(&policy);
    assert_eq!(
        names(&plan),
        vec![
            (index.digest, Reason::Age),
            (child.digest, Reason::WithIndex)
        ]
    );
    assert_eq!(plan.freed, 12);
    assert_eq!(plan.images[0].size, 12, "index, manifest and layer");

    // A pin on the platform manifest keeps the index too.
    f.model.pins.insert(child.clone(), vec!["mount:/m".into()]);
    assert!(f.plan(&policy).images.is_empty());
    // So does a recent use of the platform manifest alone.
    f.model.pins.clear();
    f.model.images[0].1.last_used = NOW - 5;
    assert!(f.plan(&policy).images.is_empty());

    let listed = list(&f.model);
    assert_eq!(
        listed.len(),
        1,
        "the platform manifest is part of the index"
    );
    assert!(
        listed[0].complete,
        "an index needs only the platforms pulled"
    );
}

#[test]
fn removing_one_image_refuses_pinned_in_use_and_unknown_images() {
    let mut f = Fixture::default();
    let l = f.blob("l", 10);
    let idle = f.image("app", "idle", &[l], NOW - DAY);
    let busy = f.image("app", "busy", &[l], NOW - 1);
    let pinned = f.image("app", "pinned", &[], NOW - DAY);
    f.model.pins.insert(pinned.clone(), vec!["operator".into()]);
    let policy = no_rules();
    let rm = |k: &ImageKey| plan(&f.model, &policy, NOW, &Request::Remove(k.clone()));
    let plan = rm(&idle).unwrap();
    assert_eq!(names(&plan), vec![(idle.digest, Reason::Requested)]);
    assert_eq!(plan.freed, 1, "the layer is shared with another image");
    assert!(matches!(rm(&busy), Err(PlanError::InUse { .. })));
    assert!(matches!(rm(&pinned), Err(PlanError::Pinned { .. })));
    assert!(matches!(
        rm(&key("app", "nope")),
        Err(PlanError::Unknown(_))
    ));
}

#[test]
fn listing_reports_size_shared_bytes_and_completeness() {
    let mut f = Fixture::default();
    let base = f.blob("base", 100);
    let own = f.blob("own", 10);
    f.image("app", "v1", &[base, own], NOW - DAY);
    f.image("app", "v2", &[base, Digest::of(b"missing")], NOW);
    let listed = list(&f.model);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].tags, Vec::<String>::new());
    assert_eq!((listed[0].size, listed[0].shared), (101, 100));
    assert!(!listed[0].complete);
    assert_eq!((listed[1].size, listed[1].shared), (111, 100));
    assert!(listed[1].complete);
}
