//! The collector's decisions, as a pure function of what the store holds.
//!
//! [`plan`] takes a [`Model`] (every image record, pin, blob, partial, recipe, and the
//! pieces and chunks they use, read from one snapshot), the [`Policy`] and the time,
//! and says which images go and why, which blobs, partials and recipes no remaining
//! image needs, and exactly how many bytes that frees: pieces and chunks are counted
//! like the store counts them, so a piece another blob still uses frees nothing.
//!
//! The rules, in order:
//! 1. Protected images never go: those with a live pin, and those used within the
//!    policy's `in_use` window (being pulled or run right now). An index and the
//!    manifests under it are one image: a pin or a use of either protects both.
//! 2. `keep_versions`: per repository, images beyond the N most recently used go.
//! 3. `max_age`: images not used for that long go.
//! 4. Whatever no remaining image reaches goes (blobs pulled without a manifest, the
//!    leftovers of removed images).
//! 5. `budget`: above the high-water mark, the least recently used images go until
//!    usage is at the low-water mark or only protected images are left.
//!
//! Usage is what the store holds: piece bytes (blobs as the origin sent them) plus
//! chunk bytes (the recipes' content).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_protocol::recipe::ChunkId;
use shoal_protocol::{Digest, PieceId};

use crate::store::images::{ImageKey, ImageRecord};

/// What the collector may remove, and when it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Bytes the store may hold; `None` for no limit.
    pub budget: Option<u64>,
    /// Collection for the budget starts above this fraction of it.
    pub high_water: f64,
    /// ...and removes images until usage is at or below this fraction.
    pub low_water: f64,
    /// Images not used for this long go; `None` keeps them.
    pub max_age: Option<Duration>,
    /// Versions kept per repository; `None` keeps all.
    pub keep_versions: Option<usize>,
    /// An image used within this window is in use and stays.
    pub in_use: Duration,
    /// How often the full policy runs (the budget is checked more often).
    pub interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            budget: None,
            high_water: 0.9,
            low_water: 0.8,
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            keep_versions: Some(5),
            in_use: Duration::from_secs(10 * 60),
            interval: Duration::from_secs(3600),
        }
    }
}

#[cfg(test)]
impl Policy {
    /// No budget, no age, no version limit: only unreachable content goes.
    pub(crate) fn no_rules() -> Self {
        Policy {
            budget: None,
            max_age: None,
            keep_versions: None,
            ..Policy::default()
        }
    }
}

/// A held blob, as the planner needs it.
#[derive(Clone, Debug)]
pub struct HeldBlob {
    /// Its size.
    pub size: u64,
    /// Its pieces, in order (a piece may repeat).
    pub pieces: Vec<PieceId>,
}

/// Everything the planner reads, from one snapshot of the store.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Every image record.
    pub images: Vec<(ImageKey, ImageRecord)>,
    /// Live pins, by image, with their names.
    pub pins: HashMap<ImageKey, Vec<String>>,
    /// Tags, by the image they point at.
    pub tags: HashMap<ImageKey, Vec<String>>,
    /// Complete blobs.
    pub blobs: HashMap<Digest, HeldBlob>,
    /// Partial blobs and every piece they hold (prefix and beyond), each use once.
    pub partials: HashMap<Digest, Vec<PieceId>>,
    /// Piece sizes.
    pub pieces: HashMap<PieceId, u64>,
    /// Layers with a complete recipe.
    pub recipes: HashSet<Digest>,
    /// Chunks each recipe (complete or being built) holds, once each.
    pub layer_chunks: HashMap<Digest, Vec<ChunkId>>,
    /// Chunk sizes.
    pub chunks: HashMap<ChunkId, u64>,
}

impl Model {
    /// Bytes held: pieces plus chunks.
    pub fn usage(&self) -> u64 {
        self.pieces.values().sum::<u64>() + self.chunks.values().sum::<u64>()
    }
}

/// What the planner is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Apply the policy.
    Policy,
    /// Remove this image (`shoal rm`), and what only it needs.
    Remove(ImageKey),
}

/// Why an image goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// More recent versions of its repository fill `keep_versions`.
    Versions,
    /// Not used within `max_age`.
    Age,
    /// Least recently used while the store was over its budget.
    Budget,
    /// The operator asked (`shoal rm`).
    Requested,
    /// A manifest under an index that goes.
    WithIndex,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Versions => "beyond keep_versions",
            Reason::Age => "older than max_age",
            Reason::Budget => "least recently used, over budget",
            Reason::Requested => "asked for",
            Reason::WithIndex => "with its index",
        })
    }
}

/// An image that goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedImage {
    /// Which image (`upstream/repo@digest`).
    pub image: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Why it goes.
    pub reason: Reason,
    /// When it was last used (seconds since the epoch); a removal skips it if it was
    /// used after this.
    pub last_used: u64,
    /// Bytes of blobs it reaches (its size as engines see it).
    pub size: u64,
}

/// The collector's decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Images that go, top-level ones first.
    pub images: Vec<PlannedImage>,
    /// Their keys, in the same order (for the removal; not part of the report).
    #[serde(skip)]
    pub keys: Vec<ImageKey>,
    /// Complete blobs no remaining image needs.
    pub blobs: Vec<Digest>,
    /// Partial blobs no remaining image needs.
    pub partials: Vec<Digest>,
    /// Recipes of layers no remaining image needs.
    pub recipes: Vec<Digest>,
    /// Bytes held before.
    pub usage: u64,
    /// Bytes the removals free.
    pub freed: u64,
    /// The budget, if any.
    pub budget: Option<u64>,
    /// Whether the budget's low-water mark is met afterwards (true with no budget).
    pub budget_met: bool,
    /// Images kept because they are pinned or in use.
    pub protected: usize,
}

/// Why a request cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `shoal rm` of an image the node does not hold.
    #[error("the node holds no image {0}")]
    Unknown(String),
    /// `shoal rm` of a pinned image.
    #[error("{image} is pinned ({pins}); remove the pin first (shoal pin --remove)")]
    Pinned {
        /// Which image.
        image: String,
        /// The pins' names.
        pins: String,
    },
    /// `shoal rm` of an image in use.
    #[error(
        "{image} was used {ago} s ago and may be being pulled or run; try again when it has been idle for {window} s"
    )]
    InUse {
        /// Which image.
        image: String,
        /// Seconds since its last use.
        ago: u64,
        /// The in-use window in seconds.
        window: u64,
    },
}

/// The images of the model as a graph: which records are the top of an image, and
/// what each top reaches.
struct Graph<'a> {
    model: &'a Model,
    /// Index of image records by key.
    index: HashMap<&'a ImageKey, &'a ImageRecord>,
    /// Top-level images (not listed by another record of their repository).
    tops: Vec<&'a ImageKey>,
    /// For each top: the records under it (itself first) and the digests it reaches.
    reach: HashMap<&'a ImageKey, (Vec<&'a ImageKey>, Vec<Digest>)>,
}

impl<'a> Graph<'a> {
    fn new(model: &'a Model) -> Self {
        let index: HashMap<&ImageKey, &ImageRecord> =
            model.images.iter().map(|(k, r)| (k, r)).collect();
        let sibling = |k: &ImageKey, d: Digest| ImageKey {
            upstream: k.upstream.clone(),
            repo: k.repo.clone(),
            digest: d,
        };
        let mut children = HashSet::new();
        for (k, r) in &model.images {
            for d in &r.refs {
                let child = sibling(k, *d);
                if child != *k && index.contains_key(&child) {
                    children.insert(child);
                }
            }
        }
        let tops: Vec<&ImageKey> = model
            .images
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !children.contains(*k))
            .collect();
        let mut reach = HashMap::new();
        for &top in &tops {
            let mut records = vec![top];
            let mut digests = vec![top.digest];
            let mut seen = HashSet::from([top.digest]);
            let mut i = 0;
            while i < records.len() {
                let key = records[i];
                i += 1;
                for d in &index[key].refs {
                    if !seen.insert(*d) {
                        continue;
                    }
                    digests.push(*d);
                    if let Some((k, _)) = index.get_key_value(&sibling(key, *d)) {
                        records.push(k);
                    }
                }
            }
            reach.insert(top, (records, digests));
        }
        Graph {
            model,
            index,
            tops,
            reach,
        }
    }

    /// The latest use of any record under `top`.
    fn last_used(&self, top: &ImageKey) -> u64 {
        self.reach[top]
            .0
            .iter()
            .map(|k| self.index[k].last_used)
            .max()
            .unwrap_or(0)
    }

    /// The live pins on any record under `top`.
    fn pins(&self, top: &ImageKey) -> Vec<String> {
        self.reach[top]
            .0
            .iter()
            .flat_map(|k| self.model.pins.get(*k).into_iter().flatten().cloned())
            .collect()
    }

    /// Bytes of the held blobs `top` reaches.
    fn size(&self, top: &ImageKey) -> u64 {
        self.reach[top]
            .1
            .iter()
            .filter_map(|d| self.model.blobs.get(d))
            .map(|b| b.size)
            .sum()
    }
}

/// How many users each piece and chunk has, and what dropping users frees.
struct Content<'a> {
    model: &'a Model,
    piece_users: HashMap<PieceId, usize>,
    chunk_users: HashMap<ChunkId, usize>,
    freed: u64,
}

impl<'a> Content<'a> {
    fn new(model: &'a Model) -> Self {
        let mut piece_users = HashMap::new();
        let blob_pieces = model.blobs.values().flat_map(|b| &b.pieces);
        for p in blob_pieces.chain(model.partials.values().flatten()) {
            *piece_users.entry(*p).or_insert(0) += 1;
        }
        let mut chunk_users = HashMap::new();
        for c in model.layer_chunks.values().flatten() {
            *chunk_users.entry(*c).or_insert(0) += 1;
        }
        Content {
            model,
            piece_users,
            chunk_users,
            freed: 0,
        }
    }

    fn drop_pieces(&mut self, pieces: &[PieceId]) {
        for p in pieces {
            if let Some(n) = self.piece_users.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.freed += self.model.pieces.get(p).copied().unwrap_or(0);
                }
            }
        }
    }

    /// Drops whatever is held under `digest`: a blob, a partial, a recipe.
    fn drop_digest(&mut self, plan: &mut Plan, d: &Digest) {
        if let Some(b) = self.model.blobs.get(d) {
            plan.blobs.push(*d);
            self.drop_pieces(&b.pieces);
        }
        if let Some(pieces) = self.model.partials.get(d) {
            plan.partials.push(*d);
            self.drop_pieces(pieces);
        }
        if self.model.recipes.contains(d) {
            plan.recipes.push(*d);
            for c in self.model.layer_chunks.get(d).into_iter().flatten() {
                if let Some(n) = self.chunk_users.get_mut(c) {
                    *n -= 1;
                    if *n == 0 {
                        self.freed += self.model.chunks.get(c).copied().unwrap_or(0);
                    }
                }
            }
        }
    }
}

/// Plans a collection (or one removal) over `model` at time `now` (seconds since the
/// epoch).
pub fn plan(
    model: &Model,
    policy: &Policy,
    now: u64,
    request: &Request,
) -> Result<Plan, PlanError> {
    let graph = Graph::new(model);
    let in_use_since = now.saturating_sub(policy.in_use.as_secs());
    let protected =
        |top: &ImageKey| !graph.pins(top).is_empty() || graph.last_used(top) >= in_use_since;
    let mut going: BTreeMap<&ImageKey, Reason> = BTreeMap::new();
    let mut plan = Plan {
        usage: model.usage(),
        budget: policy.budget,
        protected: graph.tops.iter().filter(|t| protected(t)).count(),
        ..Plan::default()
    };

    match request {
        Request::Remove(key) => {
            let top = graph
                .tops
                .iter()
                .find(|t| **t == key)
                .ok_or_else(|| PlanError::Unknown(key.to_string()))?;
            let pins = graph.pins(top);
            if !pins.is_empty() {
                return Err(PlanError::Pinned {
                    image: key.to_string(),
                    pins: pins.join(", "),
                });
            }
            let last = graph.last_used(top);
            if last >= in_use_since {
                return Err(PlanError::InUse {
                    image: key.to_string(),
                    ago: now.saturating_sub(last),
                    window: policy.in_use.as_secs(),
                });
            }
            going.insert(top, Reason::Requested);
        }
        Request::Policy => {
            let mut by_repo: BTreeMap<(&str, &str), Vec<&ImageKey>> = BTreeMap::new();
            for &top in &graph.tops {
                by_repo
                    .entry((&top.upstream, top.repo.as_str()))
                    .or_default()
                    .push(top);
            }
            if let Some(keep) = policy.keep_versions {
                for tops in by_repo.values_mut() {
                    // Most recently used first; of two used in the same second, the
                    // one first seen later is the newer version.
                    tops.sort_by_key(|t| {
                        std::cmp::Reverse((graph.last_used(t), graph.index[*t].first_seen))
                    });
                    for &top in tops.iter().skip(keep) {
                        if !protected(top) {
                            going.insert(top, Reason::Versions);
                        }
                    }
                }
            }
            if let Some(max_age) = policy.max_age {
                let cutoff = now.saturating_sub(max_age.as_secs());
                for &top in &graph.tops {
                    if graph.last_used(top) < cutoff && !protected(top) {
                        going.entry(top).or_insert(Reason::Age);
                    }
                }
            }
        }
    }

    // How many remaining tops reach each digest.
    let mut reached: HashMap<Digest, usize> = HashMap::new();
    for &top in &graph.tops {
        if !going.contains_key(top) {
            for d in &graph.reach[top].1 {
                *reached.entry(*d).or_insert(0) += 1;
            }
        }
    }
    let mut content = Content::new(model);
    let mut held: Vec<Digest> = model
        .blobs
        .keys()
        .chain(model.partials.keys())
        .chain(model.recipes.iter())
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    held.sort();
    for d in &held {
        if !reached.contains_key(d) {
            content.drop_digest(&mut plan, d);
        }
    }

    if let (Some(budget), Request::Policy) = (policy.budget, request) {
        let high = (budget as f64 * policy.high_water) as u64;
        let low = (budget as f64 * policy.low_water) as u64;
        if plan.usage.saturating_sub(content.freed) > high {
            let mut lru: Vec<&ImageKey> = graph
                .tops
                .iter()
                .copied()
                .filter(|t| !going.contains_key(t) && !protected(t))
                .collect();
            lru.sort_by_key(|t| (graph.last_used(t), *t));
            for top in lru {
                if plan.usage.saturating_sub(content.freed) <= low {
                    break;
                }
                going.insert(top, Reason::Budget);
                for d in &graph.reach[top].1 {
                    if let Some(n) = reached.get_mut(d) {
                        *n -= 1;
                        if *n == 0 {
                            reached.remove(d);
                            content.drop_digest(&mut plan, d);
                        }
                    }
                }
            }
        }
        plan.budget_met = plan.usage.saturating_sub(content.freed) <= low;
    } else {
        plan.budget_met = true;
    }
    plan.freed = content.freed;

    // The images, top-level ones in the order they were least recently used, then the
    // manifests under removed indexes that no remaining image lists.
    let mut tops: Vec<(&ImageKey, Reason)> = going.into_iter().collect();
    tops.sort_by_key(|(t, _)| (graph.last_used(t), *t));
    let describe = |key: &ImageKey, reason: Reason| PlannedImage {
        image: key.to_string(),
        tags: model.tags.get(key).cloned().unwrap_or_default(),
        reason,
        last_used: graph.index[key].last_used,
        size: if graph.reach.contains_key(key) {
            graph.size(key)
        } else {
            model.blobs.get(&key.digest).map_or(0, |b| b.size)
        },
    };
    let mut under: Vec<&ImageKey> = Vec::new();
    for &(top, reason) in &tops {
        plan.images.push(describe(top, reason));
        plan.keys.push(top.clone());
        for &child in graph.reach[top].0.iter().skip(1) {
            if !reached.contains_key(&child.digest) && !under.contains(&child) {
                under.push(child);
            }
        }
    }
    for child in under {
        plan.images.push(describe(child, Reason::WithIndex));
        plan.keys.push(child.clone());
    }
    Ok(plan)
}

/// An image as `shoal images` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageListing {
    /// `upstream/repo@digest`.
    pub image: String,
    /// The upstream registry.
    pub upstream: String,
    /// The repository.
    pub repo: String,
    /// The manifest digest.
    pub digest: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Bytes of the blobs it reaches that the node holds.
    pub size: u64,
    /// Of those, bytes of blobs other images reach too.
    pub shared: u64,
    /// Whether every blob it reaches is held.
    pub complete: bool,
    /// When it was last used (seconds since the epoch).
    pub last_used: u64,
    /// Its live pins.
    pub pins: Vec<String>,
}

fn is_index(media_type: &str) -> bool {
    use shoal_protocol::manifest::{DOCKER_LIST, OCI_INDEX};
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Every top-level image, most recently used first.
pub fn list(model: &Model) -> Vec<ImageListing> {
    let graph = Graph::new(model);
    let mut reached: HashMap<Digest, usize> = HashMap::new();
    for &top in &graph.tops {
        for d in &graph.reach[top].1 {
            *reached.entry(*d).or_insert(0) += 1;
        }
    }
    let mut out: Vec<ImageListing> = graph
        .tops
        .iter()
        .map(|&top| {
            let digests = &graph.reach[top].1;
            let (records, _) = &graph.reach[top];
            // Every manifest under it held, with all it names; an index may name
            // platforms nobody pulled, which it does not need.
            let complete = records.iter().all(|k| {
                let record = graph.index[k];
                model.blobs.contains_key(&k.digest)
                    && (is_index(&record.media_type)
                        || record.refs.iter().all(|d| model.blobs.contains_key(d)))
            });
            ImageListing {
                image: top.to_string(),
                upstream: top.upstream.clone(),
                repo: top.repo.to_string(),
                digest: top.digest.to_string(),
                tags: model.tags.get(top).cloned().unwrap_or_default(),
                size: graph.size(top),
                shared: digests
                    .iter()
                    .filter(|d| reached.get(d).is_some_and(|n| *n > 1))
                    .filter_map(|d| model.blobs.get(d))
                    .map(|b| b.size)
                    .sum(),
                complete,
                last_used: graph.last_used(top),
                pins: graph.pins(top),
            }
        })
        .collect();
    out.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.image.cmp(&b.image)));
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
