//! Manifests: resolved at the origin by tag, served from the store by digest, and
//! always checked before anything is kept or served: the bytes must hash to the digest
//! (the one asked for, or the one the origin announced) and parse as a manifest.

use std::sync::Arc;

use bytes::Bytes;
use shoal_protocol::manifest::{MANIFEST_TYPES, Manifest, ManifestError, ManifestKind};
use shoal_protocol::{Digest, Reference};

use crate::blobs::Source;
use crate::gc::leases::Leases;
use crate::origin::{Origin, OriginError};
use crate::p2p::P2p;
use crate::stats::Stats;
use crate::store::images::ImageKey;
use crate::store::{PieceReadError, Store, StoreError, TagRecord, read_piece, unix_now};

/// A manifest ready to serve.
#[derive(Clone, Debug)]
pub struct ServedManifest {
    /// Its digest (sha256 of `bytes`).
    pub digest: Digest,
    /// The origin's exact bytes.
    pub bytes: Bytes,
    /// The media type to serve it as.
    pub media_type: String,
    /// What it points at.
    pub manifest: Manifest,
    /// For a tag answered from its last resolution while the origin was down: when
    /// that resolution was (seconds since the epoch).
    pub stale_since: Option<u64>,
}

/// Why a manifest could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ManifestFetchError {
    /// The origin failed or refused.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The bytes do not hash to the digest they should have.
    #[error(
        "origin {origin} sent a manifest for {reference} whose bytes hash to {actual}, not {expected}; it was not kept"
    )]
    DigestMismatch {
        /// Which upstream.
        origin: String,
        /// What was asked for.
        reference: String,
        /// The digest expected.
        expected: String,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The bytes are not a manifest shoal serves.
    #[error("origin {origin} sent an invalid manifest for {reference}: {error}; it was not kept")]
    Invalid {
        /// Which upstream.
        origin: String,
        /// What was asked for.
        reference: String,
        /// What is wrong with it.
        error: ManifestError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored piece of the manifest is damaged; it was dropped.
    #[error("{0}; the manifest was dropped and will be fetched again")]
    Damaged(#[from] PieceReadError),
    /// A blocking task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The manifest service.
pub struct Manifests {
    store: Arc<dyn Store>,
    origin: Arc<Origin>,
    stats: Arc<Stats>,
    leases: Arc<Leases>,
    serve_stale_tags: bool,
    /// The fleet: manifests by digest come from peers when one holds them, and with
    /// `serve_stale_tags` a tag the origin cannot resolve may be answered from a
    /// peer's last resolution.
    p2p: Option<Arc<P2p>>,
}

impl Manifests {
    /// The service over `store`, fetching from `origin`; reads of stored manifests
    /// hold a lease from `leases`. With `serve_stale_tags`, a tag is answered from its
    /// last resolution when the origin is down.
    pub fn new(
        store: Arc<dyn Store>,
        origin: Arc<Origin>,
        stats: Arc<Stats>,
        leases: Arc<Leases>,
        serve_stale_tags: bool,
        p2p: Option<Arc<P2p>>,
    ) -> Self {
        Manifests {
            store,
            origin,
            stats,
            leases,
            serve_stale_tags,
            p2p,
        }
    }

    /// `tag` of `source` as the node last resolved it, if it still holds that manifest.
    async fn stale(
        &self,
        source: &Source,
        tag: &str,
        why: &OriginError,
    ) -> Result<Option<ServedManifest>, ManifestFetchError> {
        let (store, host, repo, t) = (
            Arc::clone(&self.store),
            source.upstream.host.clone(),
            source.repo.clone(),
            tag.to_owned(),
        );
        let record = tokio::task::spawn_blocking(move || store.tag(&host, &repo, &t))
            .await
            .map_err(|e| ManifestFetchError::Internal(e.to_string()))??;
        let Some(record) = record else {
            return Ok(None);
        };
        let Some(mut served) = self.stored(source, record.digest).await? else {
            return Ok(None);
        };
        tracing::warn!(
            repo = %source.repo,
            tag,
            upstream = %source.upstream.host,
            digest = %record.digest,
            resolved_at = record.resolved_at,
            "the origin is down ({why}); answering the tag with its last resolution (serve_stale_tags)"
        );
        served.stale_since = Some(record.resolved_at);
        Ok(Some(served))
    }

    /// The manifest `reference` names in `source`. Tags are always resolved at the
    /// origin (they move); digests are served from the store when held. Either way
    /// the image record of (`source`, digest) is created or marked used now, before
    /// the manifest is returned, so that GC sees the image in use before the client
    /// asks for its blobs.
    pub async fn get(
        &self,
        source: &Source,
        reference: &Reference,
        accept: Option<&str>,
    ) -> Result<ServedManifest, ManifestFetchError> {
        let served = self.resolve(source, reference, accept).await?;
        // The sizes it gives its blobs are what peers' maps must agree with.
        if let Some(p2p) = &self.p2p {
            p2p.note_sizes(served.manifest.references());
        }
        Ok(served)
    }

    /// [`Self::get`]'s work.
    async fn resolve(
        &self,
        source: &Source,
        reference: &Reference,
        accept: Option<&str>,
    ) -> Result<ServedManifest, ManifestFetchError> {
        if let Reference::Digest(d) = reference {
            if let Some(held) = self.stored(source, *d).await? {
                return Ok(held);
            }
            if let Some(from_peer) = self.fetch_from_peers(source, *d, None).await? {
                return Ok(from_peer);
            }
        }
        let accept = accept_header(accept);
        let fetched = match self
            .origin
            .manifest(&source.upstream, &source.repo, reference, &accept)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                if let (Reference::Tag(tag), true) = (reference, self.serve_stale_tags)
                    && origin_down(&e)
                {
                    if let Some(stale) = self.stale(source, tag, &e).await? {
                        return Ok(stale);
                    }
                    if let Some(stale) = self.stale_from_fleet(source, tag, &e).await? {
                        return Ok(stale);
                    }
                }
                return Err(e.into());
            }
        };
        Stats::add(&self.stats.bytes_from_origin, fetched.bytes.len() as u64);
        let origin = source.upstream.host.clone();
        let actual = Digest::of(&fetched.bytes);
        let expected = match reference {
            Reference::Digest(d) => Some(d.to_string()),
            Reference::Tag(_) => fetched.digest_header.clone(),
        };
        if let Some(expected) = expected
            && expected != actual.to_string()
        {
            Stats::add(&self.stats.digest_mismatches, 1);
            return Err(ManifestFetchError::DigestMismatch {
                origin,
                reference: format!("{}:{reference}", source.repo),
                expected,
                actual,
            });
        }
        let manifest =
            Manifest::parse(&fetched.bytes, fetched.content_type.as_deref()).map_err(|error| {
                ManifestFetchError::Invalid {
                    origin: origin.clone(),
                    reference: format!("{}:{reference}", source.repo),
                    error,
                }
            })?;
        let served = ServedManifest {
            digest: actual,
            bytes: fetched.bytes,
            media_type: manifest.media_type.clone(),
            manifest,
            stale_since: None,
        };
        let image = image_key(source, actual);
        let (store, keep) = (Arc::clone(&self.store), served.clone());
        let (repo, tag) = (
            source.repo.clone(),
            match reference {
                Reference::Tag(t) => Some(t.clone()),
                Reference::Digest(_) => None,
            },
        );
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            store.put_blob(&keep.digest, &keep.bytes, Some(&keep.media_type))?;
            // The image record before the tag: GC removes an image's tags with it, so
            // a tag never points at an image without a record.
            store.touch_image(&image, &keep.media_type, &refs(&keep.manifest), unix_now())?;
            if let Some(tag) = tag {
                let record = TagRecord {
                    digest: keep.digest,
                    media_type: keep.media_type,
                    resolved_at: unix_now(),
                };
                store.set_tag(&origin, &repo, &tag, &record)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ManifestFetchError::Internal(e.to_string()))??;
        if let Some(p2p) = &self.p2p {
            p2p.provide(served.digest);
        }
        Ok(served)
    }

    /// Manifest `digest` from a peer, checked (sha256 inside `fetch_small`, then parsed)
    /// and stored with its image record like one from the origin. `tag` is recorded
    /// as resolving to it when given (a tag learnt from the fleet).
    async fn fetch_from_peers(
        &self,
        source: &Source,
        digest: Digest,
        tag: Option<(String, u64)>,
    ) -> Result<Option<ServedManifest>, ManifestFetchError> {
        let Some(p2p) = &self.p2p else {
            return Ok(None);
        };
        let Some(bytes) = p2p.fetch_small(digest).await else {
            return Ok(None);
        };
        let Ok(manifest) = Manifest::parse(&bytes, None) else {
            tracing::warn!(%digest, "a peer's manifest does not parse; asking the origin");
            return Ok(None);
        };
        tracing::info!(%digest, repo = %source.repo, "manifest from a peer");
        let served = ServedManifest {
            digest,
            bytes,
            media_type: manifest.media_type.clone(),
            manifest,
            stale_since: tag.as_ref().map(|(_, at)| *at),
        };
        let image = image_key(source, digest);
        let (store, keep, host, repo) = (
            Arc::clone(&self.store),
            served.clone(),
            source.upstream.host.clone(),
            source.repo.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            store.put_blob(&keep.digest, &keep.bytes, Some(&keep.media_type))?;
            store.touch_image(&image, &keep.media_type, &refs(&keep.manifest), unix_now())?;
            if let Some((tag, resolved_at)) = tag {
                // Only if the node knows nothing newer of the tag.
                let newer = store
                    .tag(&host, &repo, &tag)?
                    .is_some_and(|t| t.resolved_at >= resolved_at);
                if !newer {
                    let record = TagRecord {
                        digest: keep.digest,
                        media_type: keep.media_type,
                        resolved_at,
                    };
                    store.set_tag(&host, &repo, &tag, &record)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ManifestFetchError::Internal(e.to_string()))??;
        p2p.provide(digest);
        Ok(Some(served))
    }

    /// `tag` as the fleet last resolved it (the newest resolution any peer holds),
    /// served from the store or from peers, for when the origin is down.
    async fn stale_from_fleet(
        &self,
        source: &Source,
        tag: &str,
        why: &OriginError,
    ) -> Result<Option<ServedManifest>, ManifestFetchError> {
        let Some(p2p) = &self.p2p else {
            return Ok(None);
        };
        let Some(record) = p2p
            .fleet_tag(&source.upstream.host, &source.repo, tag)
            .await
        else {
            return Ok(None);
        };
        let served = match self.stored(source, record.digest).await? {
            Some(mut held) => {
                held.stale_since = Some(record.resolved_at);
                Some(held)
            }
            None => {
                self.fetch_from_peers(
                    source,
                    record.digest,
                    Some((tag.to_owned(), record.resolved_at)),
                )
                .await?
            }
        };
        if served.is_some() {
            tracing::warn!(
                repo = %source.repo,
                tag,
                upstream = %source.upstream.host,
                digest = %record.digest,
                resolved_at = record.resolved_at,
                "the origin is down ({why}); answering the tag with the fleet's last resolution (serve_stale_tags)"
            );
        }
        Ok(served)
    }

    /// The manifest `digest` from the store, if held as a manifest, marked used.
    async fn stored(
        &self,
        source: &Source,
        digest: Digest,
    ) -> Result<Option<ServedManifest>, ManifestFetchError> {
        let store = Arc::clone(&self.store);
        let lease = self.leases.take(digest);
        let image = image_key(source, digest);
        tokio::task::spawn_blocking(move || -> Result<_, ManifestFetchError> {
            let _lease = lease;
            let Some(record) = store.blob(&digest)? else {
                return Ok(None);
            };
            // A blob fetched through the blob API has no media type; fetch it as a
            // manifest so that it gets one (and is checked as one).
            let Some(media_type) = record.media_type else {
                return Ok(None);
            };
            let mut bytes = Vec::with_capacity(record.size as usize);
            for id in &record.pieces {
                match read_piece(store.as_ref(), id) {
                    Ok(piece) => bytes.extend_from_slice(&piece),
                    Err(e) => {
                        store.remove_blob(&digest)?;
                        return Err(e.into());
                    }
                }
            }
            // It was checked when it was kept; one that no longer parses (a newer
            // shoal's record?) is fetched again.
            let Ok(manifest) = Manifest::parse(&bytes, Some(&media_type)) else {
                return Ok(None);
            };
            store.touch_image(&image, &media_type, &refs(&manifest), unix_now())?;
            Ok(Some(ServedManifest {
                digest,
                bytes: bytes.into(),
                media_type,
                manifest,
                stale_since: None,
            }))
        })
        .await
        .map_err(|e| ManifestFetchError::Internal(e.to_string()))?
    }
}

/// Whether `e` means the origin is down rather than that it refused or lied: no
/// connection, a timeout, or a 5xx.
fn origin_down(e: &OriginError) -> bool {
    match e {
        OriginError::Unreachable { .. } => true,
        OriginError::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// The image record's key for manifest `digest` served through `source`.
fn image_key(source: &Source, digest: Digest) -> ImageKey {
    ImageKey {
        upstream: source.upstream.host.clone(),
        repo: source.repo.clone(),
        digest,
    }
}

/// What a manifest points at, for its image record.
pub fn refs(manifest: &Manifest) -> Vec<Digest> {
    match &manifest.kind {
        ManifestKind::Image { config, layers } => std::iter::once(config.digest)
            .chain(layers.iter().map(|l| l.digest))
            .collect(),
        ManifestKind::Index { manifests } => manifests.iter().map(|m| m.digest).collect(),
    }
}

/// The `Accept` sent upstream: the client's when it names a manifest type, otherwise
/// every type shoal serves (a bare `*/*` makes some registries fall back to schema 1,
/// which no current engine wants).
fn accept_header(client: Option<&str>) -> String {
    match client.filter(|a| MANIFEST_TYPES.iter().any(|t| a.contains(t))) {
        Some(a) => a.to_owned(),
        None => MANIFEST_TYPES.join(", "),
    }
}
