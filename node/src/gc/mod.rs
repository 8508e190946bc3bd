//! Garbage collection: the node keeps its store within a budget and forgets what
//! nobody uses, without ever removing what is in use.
//!
//! A run reads a [`plan::Model`] of the store, asks [`plan::plan`] what goes, and
//! carries it out in an order that is safe while pulls go on:
//! 1. Image records first, each only if it was not used since the plan looked at it
//!    and holds no pin ([`ImageStore::remove_image`] decides under the writer lock).
//! 2. Then the content the plan found unreachable, each digest only if no image
//!    record read *now* reaches it (a pull that began during the run protects its
//!    blobs) and no reader holds a lease on it ([`leases::Leases::remove_if_idle`]).
//!
//! A blob a client is streaming, a fetch is filling or ingest is reading is leased, so
//! it stays; anything removed a moment before a client asks for it is fetched again.
//! A pull through the node therefore never fails because of GC; at worst it refetches.
//! The store's usage (piece and chunk bytes) is what the budget limits; after a run
//! that freed bytes the store is compacted so the disk follows.

pub mod leases;
pub mod plan;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_protocol::Digest;

use crate::stats::Stats;
use crate::store::check::Scanned;
use crate::store::engine::Table;
use crate::store::images::ImageKey;
use crate::store::{Store, StoreError, unix_now};
use leases::Leases;
use plan::{HeldBlob, Model, Plan, PlanError, Policy, Request};

/// Why a collection could not run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request cannot be planned (an unknown, pinned or busy image).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Another run is going on.
    #[error("a garbage collection is already running on this node; wait for it to finish")]
    Busy,
    /// The client that asked went away before removals began.
    #[error("cancelled")]
    Cancelled,
}

/// How far a run is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcProgress {
    /// Removals done (images, blobs, partials, recipes).
    pub done: u64,
    /// Removals planned.
    pub total: u64,
    /// Bytes freed so far (from the store's totals).
    pub freed: u64,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Whether it only planned.
    pub dry_run: bool,
    /// What it planned (for a dry run, what a run would do now).
    pub plan: Plan,
    /// Images removed.
    pub images_removed: u64,
    /// Images the plan chose that were used or pinned meanwhile, and kept.
    pub images_kept: Vec<String>,
    /// Complete blobs removed.
    pub blobs_removed: u64,
    /// Partial blobs removed.
    pub partials_removed: u64,
    /// Recipes removed.
    pub recipes_removed: u64,
    /// Blobs, partials or recipes skipped because they were in use (leased, or
    /// reached by an image that appeared during the run).
    pub skipped_in_use: u64,
    /// Store usage (piece and chunk bytes) before the run.
    pub usage_before: u64,
    /// ... and after it.
    pub usage_after: u64,
    /// `usage_before - usage_after` (for a dry run, what the plan would free).
    pub freed: u64,
    /// The budget, if any.
    pub budget: Option<u64>,
    /// Milliseconds the run took.
    pub millis: u64,
}

/// The collector.
pub struct Gc {
    store: Arc<dyn Store>,
    leases: Arc<Leases>,
    policy: Policy,
    stats: Arc<Stats>,
    /// One run at a time: two would only race for the same removals.
    running: AtomicBool,
    /// When the full policy last ran (the scheduler's clock).
    // std Mutex: read and set, never held across an await.
    last_full_run: Mutex<Option<Instant>>,
}

/// Clears [`Gc::running`] when a run ends, also by a panic.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How often the scheduler compares usage with the budget.
const BUDGET_CHECK_EVERY: Duration = Duration::from_secs(30);

impl Gc {
    /// The collector over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        leases: Arc<Leases>,
        policy: Policy,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        Arc::new(Gc {
            store,
            leases,
            policy,
            stats,
            running: AtomicBool::new(false),
            // The first scheduled run comes one interval after start, not at start: a
            // restart (after a crash, say) must not sweep what it is about to resume.
            last_full_run: Mutex::new(Some(Instant::now())),
        })
    }

    /// The policy it applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Reads the model of the store the planner needs. Blocking.
    pub fn model(&self) -> Result<Model, StoreError> {
        let store = self.store.as_ref();
        let now = unix_now();
        let mut model = Model {
            images: store.images()?,
            ..Model::default()
        };
        for (key, name, pin) in store.pins()? {
            if pin.holds(now) {
                model.pins.entry(key).or_default().push(name);
            }
        }
        for (upstream, repo, tag, record) in store.tags()? {
            let key = ImageKey {
                upstream,
                repo,
                digest: record.digest,
            };
            model.tags.entry(key).or_default().push(tag);
        }
        let tables = [
            Table::Blobs,
            Table::Partials,
            Table::PieceRefs,
            Table::Recipes,
            Table::LayerChunks,
            Table::ChunkRefs,
        ];
        store.scan(&tables, &mut |item| {
            match item {
                Scanned::Blob(d, r) => {
                    model.blobs.insert(
                        d,
                        HeldBlob {
                            size: r.size,
                            pieces: r.pieces,
                        },
                    );
                }
                Scanned::Partial(d, p) => {
                    // Every use, prefix and beyond, so counts and bytes freed are exact.
                    model.partials.insert(d, p.piece_ids().copied().collect());
                }
                Scanned::PieceRef(id, _, size) => {
                    model.pieces.insert(id, size);
                }
                Scanned::Recipe(d, _) => {
                    model.recipes.insert(d);
                }
                Scanned::LayerChunk(layer, chunk) => {
                    model.layer_chunks.entry(layer).or_default().push(chunk);
                }
                Scanned::ChunkRef(id, _, size) => {
                    model.chunks.insert(id, size);
                }
                // Unreadable records are fsck's to report; the planner leaves them.
                _ => {}
            }
            ControlFlow::Continue(())
        })?;
        Ok(model)
    }

    /// Plans `request` now. Blocking.
    pub fn plan(&self, request: &Request) -> Result<Plan, GcError> {
        let model = self.model()?;
        Ok(plan::plan(&model, &self.policy, unix_now(), request)?)
    }

    /// Plans `request` and, unless `dry_run`, carries it out, calling `progress` as it
    /// goes (a break before removals begin cancels the run). Blocking.
    pub fn run(
        &self,
        request: &Request,
        dry_run: bool,
        progress: &mut dyn FnMut(GcProgress) -> ControlFlow<()>,
    ) -> Result<GcReport, GcError> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(GcError::Busy);
        }
        let _running = Running(&self.running);
        let started = Instant::now();
        let usage = |s: &dyn Store| -> Result<u64, StoreError> {
            let t = s.totals()?;
            Ok(t.piece_bytes + t.chunk_bytes)
        };
        let usage_before = usage(self.store.as_ref())?;
        let plan = self.plan(request)?;
        let mut report = GcReport {
            dry_run,
            plan: plan.clone(),
            usage_before,
            budget: plan.budget,
            ..GcReport::default()
        };
        if dry_run {
            report.usage_after = usage_before.saturating_sub(plan.freed);
            report.freed = plan.freed;
            report.millis = started.elapsed().as_millis() as u64;
            return Ok(report);
        }
        let total =
            (plan.images.len() + plan.blobs.len() + plan.partials.len() + plan.recipes.len())
                as u64;
        let mut step = GcProgress {
            done: 0,
            total,
            freed: 0,
        };
        if progress(step).is_break() {
            return Err(GcError::Cancelled);
        }
        let mut tick = |report: &GcReport, step: &mut GcProgress| -> Result<(), StoreError> {
            step.done += 1;
            if step.done.is_multiple_of(64) || step.done == step.total {
                step.freed = report
                    .usage_before
                    .saturating_sub(usage(self.store.as_ref())?);
                // Removals always finish once begun; a gone client only misses lines.
                let _ = progress(*step);
            }
            Ok(())
        };

        for (key, image) in plan.keys.iter().zip(&plan.images) {
            if self.store.remove_image(key, Some(image.last_used))? {
                report.images_removed += 1;
                tracing::info!(image = %key, reason = ?image.reason, "gc removed an image");
            } else {
                report.images_kept.push(image.image.clone());
            }
            tick(&report, &mut step)?;
        }
        // What image records reach now: a pull that began during the run, or an image
        // the plan chose but that was used meanwhile, keeps its content.
        let reached = reached_now(self.store.as_ref())?;
        let store = self.store.as_ref();
        let sweep = |d: &Digest, remove: &dyn Fn() -> Result<bool, StoreError>| {
            if reached.contains(d) {
                return Ok(false);
            }
            self.leases.remove_if_idle(d, remove).unwrap_or(Ok(false))
        };
        for d in &plan.blobs {
            if sweep(d, &|| store.remove_blob(d))? {
                report.blobs_removed += 1;
            } else {
                report.skipped_in_use += 1;
            }
            tick(&report, &mut step)?;
        }
        for d in &plan.partials {
            let removed = sweep(d, &|| {
                let held = store.partial(d)?.is_some();
                store.discard_partial(d)?;
                Ok(held)
            })?;
            if removed {
                report.partials_removed += 1;
            } else {
                report.skipped_in_use += 1;
            }
            tick(&report, &mut step)?;
        }
        for d in &plan.recipes {
            if sweep(d, &|| store.remove_recipe(d))? {
                report.recipes_removed += 1;
            } else {
                report.skipped_in_use += 1;
            }
            tick(&report, &mut step)?;
        }
        report.usage_after = usage(store)?;
        report.freed = usage_before.saturating_sub(report.usage_after);
        if report.freed > 0 {
            // Gives the disk back: RocksDB drops deleted pieces at compaction.
            store.compact()?;
        }
        report.millis = started.elapsed().as_millis() as u64;
        Stats::add(&self.stats.gc_runs, 1);
        Stats::add(&self.stats.gc_bytes_freed, report.freed);
        Stats::add(&self.stats.gc_images_removed, report.images_removed);
        tracing::info!(
            images = report.images_removed,
            blobs = report.blobs_removed,
            partials = report.partials_removed,
            recipes = report.recipes_removed,
            skipped_in_use = report.skipped_in_use,
            freed = report.freed,
            usage = report.usage_after,
            budget = ?report.budget,
            "gc finished"
        );
        if !plan.budget_met {
            tracing::warn!(
                usage = report.usage_after,
                budget = ?plan.budget,
                protected = plan.protected,
                "the store is over its budget and only pinned or in-use images are left to remove"
            );
        }
        Ok(report)
    }

    /// Runs the policy on a schedule: every `interval`, and whenever usage passes the
    /// budget's high-water mark (checked every 30 s).
    pub fn spawn_scheduler(self: &Arc<Self>) {
        let gc = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(BUDGET_CHECK_EVERY.min(gc.policy.interval));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let due = {
                    let last = gc.last_full_run.lock().unwrap_or_else(|e| e.into_inner());
                    last.is_none_or(|at| at.elapsed() >= gc.policy.interval)
                };
                let over = match (gc.policy.budget, gc.store.totals()) {
                    (Some(budget), Ok(t)) => {
                        (t.piece_bytes + t.chunk_bytes) as f64
                            > budget as f64 * gc.policy.high_water
                    }
                    _ => false,
                };
                if !due && !over {
                    continue;
                }
                let this = Arc::clone(&gc);
                let result = tokio::task::spawn_blocking(move || {
                    this.run(&Request::Policy, false, &mut |_| ControlFlow::Continue(()))
                })
                .await;
                match result {
                    Ok(Ok(_)) | Ok(Err(GcError::Busy)) => {}
                    Ok(Err(e)) => tracing::error!("scheduled gc failed: {e}"),
                    Err(e) => tracing::error!("scheduled gc panicked: {e}"),
                }
                *gc.last_full_run.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
        });
    }
}

/// Every digest an image record names or is, read now.
fn reached_now(store: &dyn Store) -> Result<HashSet<Digest>, StoreError> {
    let mut out = HashSet::new();
    for (key, record) in store.images()? {
        out.insert(key.digest);
        out.extend(record.refs);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
