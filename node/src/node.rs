//! A running node: its config, store, origin client and services, and the server loop.

use std::sync::Arc;

use anyhow::Context;

use crate::blobs::Blobs;
use crate::config::NodeConfig;
use crate::flatten::Flat;
use crate::gc::Gc;
use crate::gc::leases::Leases;
use crate::ingest::Ingest;
use crate::manifests::Manifests;
use crate::metrics::RequestMetrics;
use crate::origin::Origin;
use crate::p2p::P2p;
use crate::seed::Seeds;
use crate::stats::{Stats, StatsSnapshot};
use crate::store::content::ContentStore;
use crate::store::rocks::{RocksEngine, db_dir};
use crate::store::{Store, StoreError};

/// Everything a request handler can reach.
pub struct Node {
    /// The validated config.
    pub config: NodeConfig,
    /// The content store.
    pub store: Arc<dyn Store>,
    /// The upstream client.
    pub origin: Arc<Origin>,
    /// Blob service.
    pub blobs: Arc<Blobs>,
    /// Manifest service.
    pub manifests: Manifests,
    /// Traffic counters.
    pub stats: Arc<Stats>,
    /// Layer ingest (recipes).
    pub ingest: Arc<Ingest>,
    /// Garbage collection.
    pub gc: Arc<Gc>,
    /// Who may pull private repositories.
    pub access: crate::access::Access,
    /// Request latencies for `/metrics`.
    pub requests: RequestMetrics,
    /// Flat trees, exports and mounts (`data_dir/flat`).
    pub flat: Flat,
    /// The fleet (absent without a fleet key).
    pub p2p: Option<Arc<P2p>>,
    /// Seed orders this node carries out.
    pub seeds: Arc<Seeds>,
}

impl Node {
    /// Opens the node's store under `config.data_dir` and, with a fleet key, starts
    /// its peer-to-peer endpoint (so it runs inside the tokio runtime).
    pub fn open(config: NodeConfig) -> anyhow::Result<Arc<Node>> {
        let dir = db_dir(&config.data_dir);
        let engine = RocksEngine::open(&dir, config.sync_writes)?;
        let store: Arc<dyn Store> = Arc::new(ContentStore::new(engine)?);
        // A recipe half built when the last process died is released, not resumed: it
        // is rebuilt when its image is next served.
        for layer in store.partial_recipes()? {
            store.discard_partial_recipe(&layer)?;
        }
        let flat = Flat::open(&config.data_dir)
            .context("cannot open the flat directory (flat trees, exports and mounts)")?;
        let origin = Arc::new(Origin::new(config.origin.clone()));
        let leases = Leases::new();
        let (completed_tx, completed_rx) = tokio::sync::mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let p2p = match &config.p2p {
            Some(p2p_config) => Some(
                P2p::start(
                    p2p_config.clone(),
                    &config.data_dir,
                    Arc::clone(&store),
                    Arc::clone(&stats),
                )
                .context("cannot start the peer-to-peer endpoint")?,
            ),
            None => {
                tracing::info!("peer-to-peer exchange off: no fleet key (--fleet-key FILE)");
                None
            }
        };
        let blobs = Arc::new(Blobs::new(
            Arc::clone(&store),
            Arc::clone(&origin),
            Arc::clone(&stats),
            crate::blobs::FetchLimits {
                max_blob_size: config.max_blob_size,
                stall_timeout: config.origin.stall_timeout,
            },
            Some(completed_tx),
            Arc::clone(&leases),
            p2p.clone(),
        ));
        let seeds = Seeds::new();
        if let Some(p2p) = &p2p {
            p2p.attach(&blobs, Arc::new(config.clone()));
            p2p.attach_seeds(Arc::clone(&seeds));
        }
        let ingest = Ingest::start(
            Arc::clone(&store),
            Arc::clone(&blobs),
            Arc::clone(&stats),
            config.ingest,
            completed_rx,
        );
        let manifests = Manifests::new(
            Arc::clone(&store),
            Arc::clone(&origin),
            Arc::clone(&stats),
            Arc::clone(&leases),
            config.origin.serve_stale_tags,
            p2p.clone(),
        );
        let gc = Gc::new(
            Arc::clone(&store),
            leases,
            config.gc.clone(),
            Arc::clone(&stats),
        );
        let node = Arc::new(Node {
            config,
            store,
            origin,
            blobs,
            manifests,
            stats,
            ingest,
            gc,
            access: crate::access::Access::default(),
            requests: RequestMetrics::default(),
            flat,
            p2p,
            seeds,
        });
        node.seeds.bind(&node);
        Ok(node)
    }

    /// The figures `shoal stats` prints.
    pub async fn stats_snapshot(&self) -> Result<StatsSnapshot, StoreError> {
        let store = Arc::clone(&self.store);
        let totals = tokio::task::spawn_blocking(move || store.totals())
            .await
            .map_err(|e| StoreError::Db(e.to_string()))??;
        Ok(self.stats.snapshot(&totals, self.ingest.pending()))
    }
}

/// Runs `shoal node` until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    let node = Node::open(config)
        .with_context(|| format!("cannot open the node's store in {}", data_dir.display()))?;
    let totals = node.store.totals()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (is another node running? use --listen)")
        })?;
    let bound = listener.local_addr()?;
    node.gc.spawn_scheduler();
    spawn_flat_pruner(Arc::clone(&node));
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "the mirror listens on {bound}, which is not loopback: any host that reaches it can pull through this node"
        );
    }
    if !node.config.flat_repositories.is_empty() {
        let repos: Vec<String> = node
            .config
            .flat_repositories
            .iter()
            .map(|f| {
                let path = if f.under {
                    format!("{}/*", f.repo)
                } else {
                    f.repo.clone()
                };
                let path = path.trim_start_matches('/').to_owned();
                f.host
                    .as_ref()
                    .map_or(path.clone(), |h| format!("{h}/{path}"))
            })
            .collect();
        tracing::info!(repositories = %repos.join(", "), "these repositories are served as flat images (one layer, made by this node)");
    }
    tracing::info!(
        listen = %bound,
        data_dir = %data_dir.display(),
        default_upstream = %node.config.default_upstream,
        blobs = totals.blobs,
        blob_bytes = totals.blob_bytes,
        partial_blobs = totals.partial_blobs,
        gc_budget = ?node.config.gc.budget,
        "shoal node ready"
    );
    // The peer address lets the flat endpoints check who is asking (`mirror/peer.rs`).
    let app =
        crate::mirror::router(node).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the mirror server failed")?;
    tracing::info!("shoal node stopped");
    Ok(())
}

/// Prunes the flat directory (`flatten/prune.rs`) now and every hour: trees of images
/// GC removed, and objects nothing links.
fn spawn_flat_pruner(node: Arc<Node>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let n = Arc::clone(&node);
            match tokio::task::spawn_blocking(move || n.flat.prune(n.store.as_ref())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("cannot prune the flat directory: {e}"),
                Err(e) => tracing::warn!("the flat prune died: {e}"),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
