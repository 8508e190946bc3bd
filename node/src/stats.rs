//! Counters of what the node has done since it started, and the JSON `shoal stats`
//! prints. Store-wide figures (blobs, bytes held) come from the store's totals and
//! survive restarts; traffic counters are per process, as Prometheus counters are.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::store::Totals;

/// Traffic counters, updated as requests are served.
#[derive(Default)]
pub struct Stats {
    /// Blob and manifest bytes received from upstream registries.
    pub bytes_from_origin: AtomicU64,
    /// Blob and manifest bytes sent to clients.
    pub bytes_served: AtomicU64,
    /// Blob requests answered (GET with a body).
    pub blobs_served: AtomicU64,
    /// Manifest requests answered.
    pub manifests_served: AtomicU64,
    /// Blob fetches started at an origin.
    pub origin_fetches: AtomicU64,
    /// Blobs or manifests an origin sent whose digest did not match.
    pub digest_mismatches: AtomicU64,
    /// Layers given a recipe.
    pub layers_ingested: AtomicU64,
    /// Layers that could not be given a recipe (see the log for why).
    pub ingest_failures: AtomicU64,
    /// Blob opens the store answered complete, with no origin fetch.
    pub blob_cache_hits: AtomicU64,
    /// Blob opens the store could not answer: each started an origin fetch or joined
    /// one already running.
    pub blob_cache_misses: AtomicU64,
    /// Garbage collections run.
    pub gc_runs: AtomicU64,
    /// Bytes garbage collection freed.
    pub gc_bytes_freed: AtomicU64,
    /// Images garbage collection removed.
    pub gc_images_removed: AtomicU64,
    /// Piece bytes received from peers (verified).
    pub bytes_from_peers: AtomicU64,
    /// Piece bytes sent to peers.
    pub bytes_to_peers: AtomicU64,
    /// Blob fetches served by peers.
    pub peer_fetches: AtomicU64,
    /// Peers verified and connected now (a gauge).
    pub peers: AtomicU64,
    /// Pieces refused from peers (bad BLAKE3, wrong length, unrequested).
    pub bad_peer_pieces: AtomicU64,
    /// Layer blobs re-created from a pack (content from chunks held, deltas and new
    /// chunks, then compressed as the origin's blob was) and verified by digest.
    pub layers_recreated: AtomicU64,
    /// Layer blobs fetched as pieces after a pack was tried and could not re-create
    /// them (no encoder profile, or the re-created bytes differed).
    pub layers_fetched_whole: AtomicU64,
    /// Bytes of packs received from peers (a subset of `bytes_from_peers`).
    pub bytes_delta: AtomicU64,
    /// Content bytes of layers received as packs that the node already held as
    /// chunks, and so did not receive.
    pub bytes_chunks_reused: AtomicU64,
    /// Packs made for peers.
    pub packs_made: AtomicU64,
}

impl Stats {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets gauge `gauge` to `n`.
    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    /// Everything `shoal stats --json` prints.
    pub fn snapshot(&self, totals: &Totals, ingest_pending: u64) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            bytes_from_origin: get(&self.bytes_from_origin),
            bytes_served: get(&self.bytes_served),
            blobs_served: get(&self.blobs_served),
            manifests_served: get(&self.manifests_served),
            origin_fetches: get(&self.origin_fetches),
            digest_mismatches: get(&self.digest_mismatches),
            blobs: totals.blobs,
            blob_bytes: totals.blob_bytes,
            pieces: totals.pieces,
            piece_bytes: totals.piece_bytes,
            partial_blobs: totals.partial_blobs,
            recipes: totals.recipes,
            content_logical_bytes: totals.recipe_tar_bytes,
            content_stored_bytes: totals.chunk_bytes,
            chunks: totals.chunks,
            layers_ingested: get(&self.layers_ingested),
            ingest_failures: get(&self.ingest_failures),
            ingest_pending,
            blob_cache_hits: get(&self.blob_cache_hits),
            blob_cache_misses: get(&self.blob_cache_misses),
            gc_runs: get(&self.gc_runs),
            gc_bytes_freed: get(&self.gc_bytes_freed),
            gc_images_removed: get(&self.gc_images_removed),
            store_bytes: totals.piece_bytes + totals.chunk_bytes,
            bytes_from_peers: get(&self.bytes_from_peers),
            bytes_to_peers: get(&self.bytes_to_peers),
            peer_fetches: get(&self.peer_fetches),
            peers: get(&self.peers),
            bad_peer_pieces: get(&self.bad_peer_pieces),
            layers_recreated: get(&self.layers_recreated),
            layers_fetched_whole: get(&self.layers_fetched_whole),
            bytes_delta: get(&self.bytes_delta),
            bytes_chunks_reused: get(&self.bytes_chunks_reused),
            packs_made: get(&self.packs_made),
        }
    }
}

/// The wire form of `shoal stats --json`. Fields are only ever added.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Bytes received from upstream registries since the node started.
    pub bytes_from_origin: u64,
    /// Bytes sent to clients since the node started.
    pub bytes_served: u64,
    /// Blob responses sent since the node started.
    pub blobs_served: u64,
    /// Manifest responses sent since the node started.
    pub manifests_served: u64,
    /// Blob fetches started at an origin since the node started.
    pub origin_fetches: u64,
    /// Origin answers refused for a wrong digest since the node started.
    pub digest_mismatches: u64,
    /// Complete blobs in the store (layers, configs, manifests).
    pub blobs: u64,
    /// Their total size.
    pub blob_bytes: u64,
    /// Distinct pieces in the store.
    pub pieces: u64,
    /// Their total size: the bytes the store really holds.
    pub piece_bytes: u64,
    /// Blobs fetched in part, to be resumed.
    pub partial_blobs: u64,
    /// Layers with a recipe.
    pub recipes: u64,
    /// Uncompressed bytes of the layers with a recipe.
    pub content_logical_bytes: u64,
    /// Bytes of distinct content chunks stored: what those layers' files really cost.
    pub content_stored_bytes: u64,
    /// Distinct content chunks stored.
    pub chunks: u64,
    /// Layers given a recipe since the node started.
    pub layers_ingested: u64,
    /// Layers that could not be given one since the node started.
    pub ingest_failures: u64,
    /// Layers waiting to be ingested or being ingested now.
    pub ingest_pending: u64,
    /// Blob opens answered from the store since the node started (absent from older
    /// nodes, hence the default).
    #[serde(default)]
    pub blob_cache_hits: u64,
    /// Blob opens that started or joined an origin fetch since the node started.
    #[serde(default)]
    pub blob_cache_misses: u64,
    /// Garbage collections run since the node started.
    #[serde(default)]
    pub gc_runs: u64,
    /// Bytes they freed.
    #[serde(default)]
    pub gc_bytes_freed: u64,
    /// Images they removed.
    #[serde(default)]
    pub gc_images_removed: u64,
    /// What the store holds and the GC budget limits: piece plus chunk bytes.
    #[serde(default)]
    pub store_bytes: u64,
    /// Verified piece bytes received from peers since the node started.
    #[serde(default)]
    pub bytes_from_peers: u64,
    /// Piece bytes sent to peers since the node started.
    #[serde(default)]
    pub bytes_to_peers: u64,
    /// Blob fetches that peers served since the node started.
    #[serde(default)]
    pub peer_fetches: u64,
    /// Fleet peers connected and verified now.
    #[serde(default)]
    pub peers: u64,
    /// Pieces from peers refused since the node started (bad BLAKE3, wrong length).
    #[serde(default)]
    pub bad_peer_pieces: u64,
    /// Layer blobs re-created from packs and verified, since the node started.
    #[serde(default)]
    pub layers_recreated: u64,
    /// Layer blobs fetched as pieces because a pack could not re-create them.
    #[serde(default)]
    pub layers_fetched_whole: u64,
    /// Bytes of packs received from peers (also counted in `bytes_from_peers`).
    #[serde(default)]
    pub bytes_delta: u64,
    /// Content bytes of layers received as packs that were already held as chunks.
    #[serde(default)]
    pub bytes_chunks_reused: u64,
    /// Packs made for peers since the node started.
    #[serde(default)]
    pub packs_made: u64,
}
