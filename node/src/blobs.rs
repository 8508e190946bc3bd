//! Blobs: served from the store when held, otherwise fetched from the origin once, with
//! every client of the blob reading pieces as they land.
//!
//! # How a fetch goes
//! One task per blob digest fetches it ("single flight"); requests that arrive while it
//! runs subscribe to its progress. Each full piece is stored as it arrives, in one
//! atomic write with the partial-blob record, so a killed node resumes from the last
//! stored piece with a `Range` request. The sha256 of the whole blob is checked at the
//! end: a match makes it complete, a mismatch drops every piece of it.
//!
//! # What a client can be sent
//! Clients stream the pieces before the whole blob is verified (they must not wait for
//! a large layer), but the blob's **last piece is held back until the sha256 matched**.
//! So no client ever receives all the bytes of a blob that turned out wrong: on a
//! mismatch the response is cut short of its `Content-Length`, which every engine
//! treats as a failed download.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use shoal_protocol::digest::DigestHasher;
use shoal_protocol::range::ByteRange;
use shoal_protocol::{Digest, PIECE_SIZE, PieceId, PieceLayout, RepoName};
use tokio::sync::{mpsc, watch};

use crate::config::Upstream;
use crate::gc::leases::{Lease, Leases};
use crate::origin::{Origin, OriginError};
use crate::p2p::P2p;
use crate::p2p::packs::PackMiss;
use crate::stats::Stats;
use crate::store::{BlobRecord, PieceReadError, Store, StoreError, read_piece};

/// Where a blob is fetched from when the node lacks it.
#[derive(Clone, Debug)]
pub struct Source {
    /// The upstream registry.
    pub upstream: Upstream,
    /// The repository the client asked through.
    pub repo: RepoName,
}

/// Why a blob could not be served.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The origin failed or refused.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The origin's bytes do not hash to the digest asked for.
    #[error(
        "origin {origin} sent bytes for {expected} that hash to {actual}; nothing of them was kept"
    )]
    DigestMismatch {
        /// Which upstream.
        origin: String,
        /// The digest asked for.
        expected: Digest,
        /// What the bytes hashed to.
        actual: Digest,
    },
    /// The origin sent more bytes than the size it announced.
    #[error(
        "origin {origin} sent more than the {size} bytes it announced for {digest}; nothing of them was kept"
    )]
    Overlong {
        /// Which upstream.
        origin: String,
        /// The blob.
        digest: Digest,
        /// The size it announced.
        size: u64,
    },
    /// The origin's response ended early or stalled; what arrived is kept to resume.
    #[error(
        "origin {origin} stopped sending {digest} after {got} of {size} bytes ({why}); the next request resumes there"
    )]
    Interrupted {
        /// Which upstream.
        origin: String,
        /// The blob.
        digest: Digest,
        /// Bytes stored so far.
        got: u64,
        /// Bytes announced.
        size: u64,
        /// What happened.
        why: String,
    },
    /// The blob is larger than this node accepts.
    #[error("blob {digest} is {size} bytes, over this node's max_blob_size of {limit}")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored piece was missing or damaged; the blob was dropped to be fetched again.
    #[error("{0}; the blob was dropped and will be fetched again")]
    Damaged(#[from] PieceReadError),
    /// A blocking task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a fetch is going, as its subscribers see it.
#[derive(Clone, Debug)]
pub struct FetchState {
    /// The blob's size, once the origin (or a peer) said.
    pub size: Option<u64>,
    /// One entry per piece once the size is known: the id of each piece stored so
    /// far. Pieces from the origin arrive in order, pieces from peers in any order.
    pub pieces: Vec<Option<PieceId>>,
    /// Whether it is over.
    pub outcome: Outcome,
}

/// The end of a fetch.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Verified and complete in the store.
    Complete,
    /// Failed; nothing unverified remains but a resumable partial.
    Failed(Arc<BlobError>),
}

/// Bounds on a blob fetch from the origin.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    /// Largest blob fetched (`max_blob_size`).
    pub max_blob_size: u64,
    /// Longest wait for the origin's next bytes (`[origin] stall_timeout_secs`).
    pub stall_timeout: Duration,
}

/// What the node holds of a blob, for peers that ask.
#[derive(Debug)]
pub enum Holding {
    /// All of it, verified.
    Complete(BlobRecord),
    /// A fetch is running and knows the size: the pieces stored so far.
    Fetching {
        /// The blob's size.
        size: u64,
        /// One entry per piece.
        pieces: Vec<Option<PieceId>>,
    },
    /// Nothing it can describe.
    Nothing,
}

/// The blob service: store plus single-flight fetches from peers or the origin.
pub struct Blobs {
    store: Arc<dyn Store>,
    origin: Arc<Origin>,
    stats: Arc<Stats>,
    max_blob_size: u64,
    stall_timeout: std::time::Duration,
    // std Mutex: held for a map operation and, when a blob is not in flight, one store
    // lookup; never across an await. Holding it over the lookup is what keeps a second
    // fetch from starting between a fetch's completion and its removal from the map.
    inflight: Mutex<HashMap<Digest, watch::Receiver<FetchState>>>,
    /// Blobs whose origin bytes failed verification lately, with the error: a retry
    /// within [`FAILURE_MEMORY`] gets the clear error at once instead of a second cut
    /// stream, and the origin is not asked again for bytes known to be bad.
    // std Mutex: map operations only.
    failures: Mutex<HashMap<Digest, (Instant, Arc<BlobError>)>>,
    /// What each origin (by registry host) delivered lately, in bytes per second: peers
    /// much slower than this lose a blob to the origin.
    // std Mutex: map operations only.
    origin_rates: Mutex<HashMap<String, u64>>,
    /// Told the digest of every blob whose fetch completed (the ingest service listens).
    completed: Option<mpsc::UnboundedSender<Digest>>,
    /// Every open blob and running fetch holds a lease, so GC leaves it alone.
    leases: Arc<Leases>,
    /// The fleet, asked before the origin (absent without a fleet key).
    p2p: Option<Arc<P2p>>,
}

/// Pieces read ahead of the client while streaming a blob.
const READ_AHEAD: usize = 4;

/// How long a verification failure is remembered.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(30);

/// A blob ready to be read: held, or on its way.
pub struct OpenBlob {
    digest: Digest,
    size: u64,
    source: OpenSource,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    /// Held while the blob is read: GC does not remove a blob being read.
    _lease: Lease,
    /// Whether the bytes read count as served to a client.
    served: bool,
}

enum OpenSource {
    Stored(BlobRecord),
    Fetching(watch::Receiver<FetchState>),
}

impl Blobs {
    /// The service over `store`, fetching from `origin`; `completed` is told every
    /// blob whose fetch completes.
    pub fn new(
        store: Arc<dyn Store>,
        origin: Arc<Origin>,
        stats: Arc<Stats>,
        limits: FetchLimits,
        completed: Option<mpsc::UnboundedSender<Digest>>,
        leases: Arc<Leases>,
        p2p: Option<Arc<P2p>>,
    ) -> Self {
        Blobs {
            store,
            origin,
            stats,
            max_blob_size: limits.max_blob_size,
            stall_timeout: limits.stall_timeout,
            inflight: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            origin_rates: Mutex::new(HashMap::new()),
            completed,
            leases,
            p2p,
        }
    }

    /// What the node holds of `digest`: complete, being fetched (with the size known),
    /// or nothing to describe.
    pub fn holding(&self, digest: &Digest) -> Result<Holding, BlobError> {
        {
            let inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(rx) = inflight.get(digest) {
                let s = rx.borrow();
                if let Some(size) = s.size {
                    if matches!(s.outcome, Outcome::Running) {
                        return Ok(Holding::Fetching {
                            size,
                            pieces: s.pieces.clone(),
                        });
                    }
                } else {
                    return Ok(Holding::Nothing);
                }
            }
        }
        Ok(match self.store.blob(digest)? {
            Some(record) => Holding::Complete(record),
            None => Holding::Nothing,
        })
    }

    /// Whether a fetch of `digest` is running on this node.
    pub fn in_flight(&self, digest: &Digest) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(digest)
    }

    /// The lease table its readers use (shared with ingest and GC).
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// The size of blob `digest` if the node holds it or is fetching it.
    pub fn known_size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        if let Some(rx) = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            && let Some(size) = rx.borrow().size
        {
            return Ok(Some(size));
        }
        Ok(self.store.blob(digest)?.map(|r| r.size))
    }

    /// Opens blob `digest` for reading, starting a fetch from `source` if the node
    /// lacks it. Returns once the blob's size is known.
    pub async fn open(
        self: &Arc<Self>,
        source: &Source,
        digest: Digest,
    ) -> Result<OpenBlob, BlobError> {
        if let Some(e) = self.recent_failure(&digest) {
            return Err(clone_err(&e));
        }
        // Leased before the store is asked: GC either removed the blob already (and
        // this fetches it) or sees the lease and keeps it.
        let lease = self.leases.take(digest);
        let mut rx = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(rx) = inflight.get(&digest) {
                Stats::add(&self.stats.blob_cache_misses, 1);
                rx.clone()
            } else if let Some(record) = self.store.blob(&digest)? {
                Stats::add(&self.stats.blob_cache_hits, 1);
                return Ok(self.opened(digest, record.size, OpenSource::Stored(record), lease));
            } else {
                Stats::add(&self.stats.blob_cache_misses, 1);
                let (tx, rx) = watch::channel(FetchState {
                    size: None,
                    pieces: Vec::new(),
                    outcome: Outcome::Running,
                });
                inflight.insert(digest, rx.clone());
                let fetch_lease = self.leases.take(digest);
                tokio::spawn(Arc::clone(self).fetch(source.clone(), digest, tx, fetch_lease));
                rx
            }
        };
        let state = wait_for(&mut rx, |s| s.size.is_some()).await;
        match (state.size, state.outcome) {
            (_, Outcome::Failed(e)) => Err(clone_err(&e)),
            (Some(size), Outcome::Running) if size <= PIECE_SIZE => {
                // A blob of one piece (configs, small layers) would be held back whole
                // anyway; waiting for the verdict lets a bad one get a clean error
                // status instead of a cut response.
                match wait_for(&mut rx, |_| false).await.outcome {
                    Outcome::Failed(e) => Err(clone_err(&e)),
                    _ => Ok(self.opened(digest, size, OpenSource::Fetching(rx), lease)),
                }
            }
            (Some(size), _) => Ok(self.opened(digest, size, OpenSource::Fetching(rx), lease)),
            (None, _) => {
                // The fetch finished before saying a size: it completed (an empty
                // fetch cannot fail silently), so the store has it.
                let record = self.store.blob(&digest)?.ok_or_else(|| {
                    BlobError::Internal(format!(
                        "fetch of {digest} ended without a size or an error"
                    ))
                })?;
                Ok(self.opened(digest, record.size, OpenSource::Stored(record), lease))
            }
        }
    }

    fn recent_failure(&self, digest: &Digest) -> Option<Arc<BlobError>> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
        failures.get(digest).map(|(_, e)| Arc::clone(e))
    }

    fn opened(&self, digest: Digest, size: u64, source: OpenSource, lease: Lease) -> OpenBlob {
        OpenBlob {
            digest,
            size,
            source,
            store: Arc::clone(&self.store),
            stats: Arc::clone(&self.stats),
            _lease: lease,
            served: true,
        }
    }

    /// Fetches `digest` into the store, holding `_lease` (taken before the fetch was
    /// announced) until the fetch is over.
    async fn fetch(
        self: Arc<Self>,
        source: Source,
        digest: Digest,
        tx: watch::Sender<FetchState>,
        _lease: Lease,
    ) {
        let result = self.fetch_from_fleet_or_origin(&source, &digest, &tx).await;
        match &result {
            Ok(()) => {
                tracing::info!(%digest, repo = %source.repo, upstream = %source.upstream.host, "blob fetched and verified")
            }
            Err(e) => {
                tracing::warn!(%digest, repo = %source.repo, upstream = %source.upstream.host, "blob fetch failed: {e}")
            }
        }
        let outcome = match result {
            Ok(()) => {
                if let Some(tx) = &self.completed {
                    // The listener may be gone at shutdown; nothing to do then.
                    let _ = tx.send(digest);
                }
                Outcome::Complete
            }
            Err(e) => {
                let e = Arc::new(e);
                if matches!(
                    *e,
                    BlobError::DigestMismatch { .. } | BlobError::Overlong { .. }
                ) {
                    let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                    failures.insert(digest, (Instant::now(), Arc::clone(&e)));
                }
                Outcome::Failed(e)
            }
        };
        // Leave the map only once the store or the failure memory holds the result: a
        // request that arrives after this finds the complete blob, or the recorded
        // verification failure, or (after an interruption) starts a fresh fetch.
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest);
        tx.send_modify(|s| s.outcome = outcome);
    }

    /// Asks the fleet first (when there is one), then the origin for whatever the
    /// fleet did not deliver. Peers left for the origin (too slow, stalled) are taken
    /// back, at any pace, if the origin turns out to be down: they are all there is.
    async fn fetch_from_fleet_or_origin(
        &self,
        source: &Source,
        digest: &Digest,
        tx: &watch::Sender<FetchState>,
    ) -> Result<(), BlobError> {
        let mut left_peers = None;
        if let Some(p2p) = &self.p2p {
            if self.fetch_by_pack(p2p, source, digest).await? {
                p2p.provide(*digest);
                return Ok(());
            }
            let origin_rate = self.origin_rate(&source.upstream.host);
            match p2p.fetch(source, *digest, tx, origin_rate).await {
                Ok(()) => {
                    p2p.provide(*digest);
                    return Ok(());
                }
                Err(crate::p2p::fetch::PeerFetchError::NoPeers(_)) => {}
                Err(e) => {
                    tracing::warn!(%digest, "fetching the rest from the origin: {e}");
                    left_peers = Some(p2p);
                }
            }
        }
        Stats::add(&self.stats.origin_fetches, 1);
        match (self.fetch_inner(source, digest, tx).await, left_peers) {
            (Ok(()), _) => {}
            (Err(e), Some(p2p)) if origin_down(&e) => {
                tracing::warn!(%digest, "the origin is down ({e}); taking the rest from peers at their pace");
                if let Err(again) = p2p.fetch_at_any_pace(source, *digest, tx).await {
                    tracing::warn!(%digest, "peers did not deliver the rest either: {again}");
                    return Err(e);
                }
            }
            (Err(e), _) => return Err(e),
        }
        if let Some(p2p) = &self.p2p {
            p2p.provide(*digest);
        }
        Ok(())
    }

    /// Tries to get layer `digest` as a pack from a peer that holds it, when this node
    /// holds other layers of its repository (see [`crate::packs`]); returns whether
    /// the blob is now complete. A pack that came and failed leaves nothing behind,
    /// and the blob is fetched as pieces (`layers_fetched_whole`).
    async fn fetch_by_pack(
        &self,
        p2p: &Arc<P2p>,
        source: &Source,
        digest: &Digest,
    ) -> Result<bool, BlobError> {
        if !p2p.config.packs {
            return Ok(false);
        }
        let (d, host, repo) = (*digest, source.upstream.host.clone(), source.repo.clone());
        let held = self
            .blocking(move |s| {
                // A partial (a fetch that was cut) resumes as pieces.
                if s.partial(&d)?.is_some() {
                    return Ok(Vec::new());
                }
                crate::packs::held_layers(s, &host, &repo, &d)
            })
            .await?;
        if held.is_empty() {
            return Ok(false);
        }
        // The layers the pack builds on stay while it is applied.
        let _leases: Vec<Lease> = held.iter().map(|d| self.leases.take(*d)).collect();
        match p2p.fetch_by_pack(source, *digest, held).await {
            Ok(rebuilt) => {
                Stats::add(&self.stats.layers_recreated, 1);
                Stats::add(
                    &self.stats.bytes_chunks_reused,
                    rebuilt.summary.reused_bytes,
                );
                tracing::info!(
                    %digest,
                    pack_bytes = rebuilt.summary.pack_bytes,
                    reused_bytes = rebuilt.summary.reused_bytes,
                    tar_bytes = rebuilt.tar_size,
                    "layer re-created from a pack"
                );
                Ok(true)
            }
            Err(PackMiss::NotOffered) => Ok(false),
            Err(e) => {
                Stats::add(&self.stats.layers_fetched_whole, 1);
                tracing::warn!(%digest, "fetching the layer as pieces instead of a pack: {e}");
                Ok(false)
            }
        }
    }

    async fn fetch_inner(
        &self,
        source: &Source,
        digest: &Digest,
        tx: &watch::Sender<FetchState>,
    ) -> Result<(), BlobError> {
        let origin = source.upstream.host.clone();
        let (mut hasher, mut pieces, mut have) = self.resume(digest).await?;
        let reply = self
            .origin
            .blob(&source.upstream, &source.repo, digest, have)
            .await?;
        if reply.start != have {
            // The origin ignored the range: start over.
            self.blocking({
                let d = *digest;
                move |s| s.discard_partial(&d)
            })
            .await?;
            (hasher, pieces, have) = (DigestHasher::new(), Vec::new(), 0);
        }
        let size = reply.total;
        let (began, resumed_at) = (Instant::now(), have);
        if size > self.max_blob_size {
            return Err(BlobError::TooLarge {
                digest: *digest,
                size,
                limit: self.max_blob_size,
            });
        }
        if have > size {
            self.discard(digest).await?;
            return Err(BlobError::Overlong {
                origin,
                digest: *digest,
                size,
            });
        }
        tx.send_modify(|s| {
            s.size = Some(size);
            let mut all = vec![None; PieceLayout::new(size).count() as usize];
            for (slot, id) in all.iter_mut().zip(&pieces) {
                *slot = Some(*id);
            }
            s.pieces = all;
        });
        let mut body = reply.response.bytes_stream();
        let mut buf = BytesMut::with_capacity(PIECE_SIZE as usize);
        let interrupted = |got: u64, why: String| BlobError::Interrupted {
            origin: origin.clone(),
            digest: *digest,
            got,
            size,
            why,
        };
        loop {
            let next = match tokio::time::timeout(self.stall_timeout, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(interrupted(
                        have,
                        format!("nothing for {} s", crate::origin::secs(self.stall_timeout)),
                    ));
                }
            };
            let chunk = match next {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    return Err(interrupted(
                        have,
                        crate::origin::unreachable(&origin, &e).to_string(),
                    ));
                }
            };
            Stats::add(&self.stats.bytes_from_origin, chunk.len() as u64);
            if have + (buf.len() + chunk.len()) as u64 > size {
                self.discard(digest).await?;
                return Err(BlobError::Overlong {
                    origin,
                    digest: *digest,
                    size,
                });
            }
            buf.extend_from_slice(&chunk);
            while buf.len() >= PIECE_SIZE as usize {
                let piece = buf.split_to(PIECE_SIZE as usize).freeze();
                have += self
                    .store_piece(digest, size, &mut hasher, &mut pieces, piece, tx)
                    .await?;
            }
        }
        if have + (buf.len() as u64) < size {
            return Err(interrupted(have, "the response ended early".into()));
        }
        if !buf.is_empty() {
            have += self
                .store_piece(digest, size, &mut hasher, &mut pieces, buf.freeze(), tx)
                .await?;
        }
        let actual = hasher.finish();
        if actual != *digest {
            Stats::add(&self.stats.digest_mismatches, 1);
            self.discard(digest).await?;
            return Err(BlobError::DigestMismatch {
                origin,
                expected: *digest,
                actual,
            });
        }
        let d = *digest;
        self.blocking(move |s| s.complete(&d, have, None)).await?;
        self.origin_delivered(&source.upstream.host, have - resumed_at, began.elapsed());
        Ok(())
    }

    /// The rate `origin` delivered blobs at lately, once a large enough one was timed.
    fn origin_rate(&self, origin: &str) -> Option<u64> {
        let rates = self.origin_rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.get(origin).copied()
    }

    /// Notes that `origin` delivered `bytes` in `took`: blobs under 4 MiB are not timed
    /// (their time is mostly latency), and each new rate counts half.
    fn origin_delivered(&self, origin: &str, bytes: u64, took: Duration) {
        if bytes < 4 << 20 || took.is_zero() {
            return;
        }
        let rate = (bytes as f64 / took.as_secs_f64()) as u64;
        let mut rates = self.origin_rates.lock().unwrap_or_else(|e| e.into_inner());
        rates
            .entry(origin.to_owned())
            .and_modify(|r| *r = (*r + rate) / 2)
            .or_insert(rate);
    }

    /// Picks up a partial blob a previous fetch (or process) left: re-reads its pieces
    /// to rebuild the sha256 state. A damaged partial is dropped.
    async fn resume(
        &self,
        digest: &Digest,
    ) -> Result<(DigestHasher, Vec<PieceId>, u64), BlobError> {
        let d = *digest;
        let store = Arc::clone(&self.store);
        let resumed = tokio::task::spawn_blocking(move || -> Result<_, BlobError> {
            let Some(partial) = store.partial(&d)? else {
                return Ok(None);
            };
            let mut hasher = DigestHasher::new();
            for id in &partial.pieces {
                match read_piece(store.as_ref(), id) {
                    Ok(bytes) => hasher.update(&bytes),
                    Err(PieceReadError::Store(e)) => return Err(e.into()),
                    Err(damage) => {
                        tracing::warn!(digest = %d, "dropping partial blob: {damage}");
                        store.discard_partial(&d)?;
                        return Ok(None);
                    }
                }
            }
            if !partial.open() {
                // A short last piece means every byte arrived, but the fetch died
                // before checking them: start over rather than guess.
                store.discard_partial(&d)?;
                return Ok(None);
            }
            Ok(Some((hasher, partial.pieces, partial.bytes)))
        })
        .await
        .map_err(|e| BlobError::Internal(e.to_string()))??;
        if let Some((_, _, bytes)) = &resumed {
            tracing::info!(%digest, bytes, "resuming a partial blob");
        }
        Ok(resumed.unwrap_or_else(|| (DigestHasher::new(), Vec::new(), 0)))
    }

    async fn store_piece(
        &self,
        digest: &Digest,
        size: u64,
        hasher: &mut DigestHasher,
        pieces: &mut Vec<PieceId>,
        piece: Bytes,
        tx: &watch::Sender<FetchState>,
    ) -> Result<u64, BlobError> {
        hasher.update(&piece);
        let (d, index, len) = (*digest, pieces.len() as u64, piece.len() as u64);
        let id = self
            // `put_piece`, not `append_piece`: peers may have stored pieces further on,
            // which this one joins (the same bytes, or the store refuses the conflict).
            .blocking(move |s| s.put_piece(&d, size, index, &piece))
            .await?;
        pieces.push(id);
        tx.send_modify(|s| {
            if let Some(slot) = s.pieces.get_mut(index as usize) {
                *slot = Some(id);
            }
        });
        Ok(len)
    }

    async fn discard(&self, digest: &Digest) -> Result<(), BlobError> {
        let d = *digest;
        self.blocking(move |s| s.discard_partial(&d)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, BlobError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| BlobError::Internal(e.to_string()))?
            .map_err(BlobError::from)
    }
}

/// Whether an origin's failure says it is down (no connection, or a 5xx answer) rather
/// than that it refused or broke the protocol.
fn origin_down(e: &BlobError) -> bool {
    match e {
        BlobError::Origin(OriginError::Unreachable { .. }) => true,
        BlobError::Origin(OriginError::Status { status, .. }) => status.is_server_error(),
        _ => false,
    }
}

fn clone_err(e: &BlobError) -> BlobError {
    // Subscribers each need an owned error; keep the variant where it matters to the
    // HTTP status, and the message always.
    match e {
        BlobError::DigestMismatch {
            origin,
            expected,
            actual,
        } => BlobError::DigestMismatch {
            origin: origin.clone(),
            expected: *expected,
            actual: *actual,
        },
        BlobError::Origin(o) => BlobError::Origin(o.clone()),
        BlobError::TooLarge {
            digest,
            size,
            limit,
        } => BlobError::TooLarge {
            digest: *digest,
            size: *size,
            limit: *limit,
        },
        BlobError::Overlong {
            origin,
            digest,
            size,
        } => BlobError::Overlong {
            origin: origin.clone(),
            digest: *digest,
            size: *size,
        },
        other => BlobError::Internal(other.to_string()),
    }
}

/// Waits until piece `index` of a blob being fetched may be sent: it is stored, and if
/// it is the last piece, the whole blob verified.
async fn piece_id_when_ready(
    mut rx: watch::Receiver<FetchState>,
    index: u64,
    count: u64,
) -> Result<PieceId, BlobError> {
    let is_last = index + 1 == count;
    loop {
        {
            let s = rx.borrow_and_update();
            match &s.outcome {
                Outcome::Failed(e) => return Err(clone_err(e)),
                Outcome::Complete => {
                    return s
                        .pieces
                        .get(index as usize)
                        .copied()
                        .flatten()
                        .ok_or_else(|| {
                            BlobError::Internal(format!("fetch completed without piece {index}"))
                        });
                }
                Outcome::Running if !is_last => {
                    if let Some(Some(id)) = s.pieces.get(index as usize) {
                        return Ok(*id);
                    }
                }
                Outcome::Running => {}
            }
        }
        if rx.changed().await.is_err() {
            let s = rx.borrow();
            if !matches!(s.outcome, Outcome::Running) {
                continue;
            }
            return Err(BlobError::Internal(
                "the fetch ended without an outcome".into(),
            ));
        }
    }
}

/// Waits until `ready` holds or the fetch is over; returns the state then.
async fn wait_for(
    rx: &mut watch::Receiver<FetchState>,
    ready: impl Fn(&FetchState) -> bool,
) -> FetchState {
    loop {
        {
            let s = rx.borrow_and_update();
            if ready(&s) || !matches!(s.outcome, Outcome::Running) {
                return s.clone();
            }
        }
        if rx.changed().await.is_err() {
            // The fetch task is gone; its last word is final.
            return rx.borrow().clone();
        }
    }
}

impl OpenBlob {
    /// The same blob, read by the node for itself (ingest, `shoal pull`): its bytes
    /// do not count as served.
    pub fn unserved(mut self) -> Self {
        self.served = false;
        self
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes in `range`, piece by piece. For a blob still being fetched, the last
    /// piece comes only after the blob's sha256 matched (see the module docs); any
    /// failure ends the stream with an error, which cuts the response short.
    pub fn stream(
        self,
        range: ByteRange,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let layout = PieceLayout::new(self.size);
        let indices = if range.start < range.end {
            layout.index_of(range.start)..layout.index_of(range.end - 1) + 1
        } else {
            0..0
        };
        let blob = Arc::new(self);
        let reads = indices.map({
            let blob = Arc::clone(&blob);
            move |index| {
                let blob = Arc::clone(&blob);
                async move {
                    let bytes = blob.piece(index, layout.count()).await?;
                    let r = layout.range(index);
                    let from = range.start.max(r.start) - r.start;
                    let to = range.end.min(r.end) - r.start;
                    Ok::<_, BlobError>(bytes.slice(from as usize..to as usize))
                }
            }
        });
        // Pieces are read ahead of the socket, in order, so that disk reads and BLAKE3
        // checks overlap with sending.
        futures_util::stream::iter(reads)
            .buffered(READ_AHEAD)
            .scan(false, move |failed, result| {
                let item = match result {
                    _ if *failed => None,
                    Ok(bytes) => {
                        if blob.served {
                            Stats::add(&blob.stats.bytes_served, bytes.len() as u64);
                        }
                        Some(Ok(bytes))
                    }
                    Err(e) => {
                        tracing::warn!(digest = %blob.digest, "cutting a response short: {e}");
                        *failed = true;
                        Some(Err(io::Error::other(e.to_string())))
                    }
                };
                std::future::ready(item)
            })
    }

    async fn piece(&self, index: u64, count: u64) -> Result<Bytes, BlobError> {
        let id = match &self.source {
            OpenSource::Stored(record) => *record.pieces.get(index as usize).ok_or_else(|| {
                BlobError::Internal(format!("{} has no piece {index}", self.digest))
            })?,
            OpenSource::Fetching(rx) => piece_id_when_ready(rx.clone(), index, count).await?,
        };
        let store = Arc::clone(&self.store);
        let digest = self.digest;
        let read = tokio::task::spawn_blocking(move || {
            read_piece(store.as_ref(), &id).map_err(|e| {
                if !matches!(e, PieceReadError::Store(_)) {
                    // Drop the blob so that the next request fetches it again.
                    if let Err(drop_err) = store.remove_blob(&digest) {
                        tracing::error!(%digest, "cannot drop damaged blob: {drop_err}");
                    }
                }
                e
            })
        })
        .await
        .map_err(|e| BlobError::Internal(e.to_string()))??;
        Ok(read)
    }
}
