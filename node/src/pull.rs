//! `shoal pull`: the node fetches an image into its store, exactly as if an engine had
//! pulled it through the mirror (same manifests, same blob service, same checks), so
//! that a later pull on this host, or by a peer, is served from the store. Seeding
//! ([`crate::seed`]) fetches through [`fetch_image`] too.
//!
//! For an index, the platform asked for is fetched (by default the node's own,
//! `linux/<arch>`; `all` fetches every platform). While it runs, the image carries a
//! `pull` pin (lapsing after an hour, in case the node dies) so that GC leaves the
//! blobs already fetched alone; the pin goes when the pull ends.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_protocol::manifest::ManifestKind;
use shoal_protocol::range::ByteRange;
use shoal_protocol::{Digest, Reference};

use crate::blobs::Source;
use crate::jobs::JobSender;
use crate::node::Node;
use crate::store::images::{ImageKey, Pin};
use crate::store::unix_now;

/// Blobs fetched at once.
const PARALLEL: usize = 4;

/// How long the `pull` pin lasts if the pull never removes it.
const PIN_TTL: Duration = Duration::from_secs(3600);

/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// How far a pull is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    /// Blobs (configs and layers) held so far.
    pub blobs_done: u64,
    /// Blobs the image needs.
    pub blobs_total: u64,
    /// Bytes of those blobs held so far.
    pub bytes_done: u64,
    /// Bytes the image needs.
    pub bytes_total: u64,
}

/// What a pull did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    /// The image as asked for.
    pub image: String,
    /// The manifest digest it resolved to.
    pub digest: String,
    /// Platforms fetched (empty for a single-platform image).
    pub platforms: Vec<String>,
    /// Blobs (configs and layers).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes the node received from the origin during the pull (other pulls running
    /// at the same time count too).
    pub bytes_from_origin: u64,
    /// Bytes the node received from peers during the pull (likewise).
    #[serde(default)]
    pub bytes_from_peers: u64,
    /// Milliseconds it took.
    pub millis: u64,
}

/// Pulls `image` into the node's store, reporting to `job`.
pub async fn pull(
    node: Arc<Node>,
    image: String,
    platform: Option<String>,
    job: JobSender<PullProgress, PullReport>,
) {
    let result = fetch_image(
        &node,
        &image,
        platform.as_deref(),
        |p| job.progress(p),
        |_| Ok(()),
    )
    .await;
    match &result {
        Ok(r) => {
            tracing::info!(image = %r.image, digest = %r.digest, blobs = r.blobs, bytes = r.bytes, "pull finished")
        }
        Err(e) => tracing::warn!(%image, "pull failed: {e}"),
    }
    job.finish(result.map_err(|e| format!("{e:#}"))).await;
}

/// Fetches `image` into the store (for an index, the manifests of `platform`, by
/// default this host's), calling `progress` now and then; a `Break` from it stops the
/// pull with an error. Once every blob is held, and while the transient `pull` pin
/// still protects the image, `hold` is called with the image's key: a caller that
/// keeps the image pins it there.
pub(crate) async fn fetch_image(
    node: &Arc<Node>,
    image: &str,
    platform: Option<&str>,
    mut progress: impl FnMut(PullProgress) -> ControlFlow<()> + Send,
    hold: impl FnOnce(&ImageKey) -> anyhow::Result<()> + Send,
) -> anyhow::Result<PullReport> {
    let started = Instant::now();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let origin_before = count(&node.stats.bytes_from_origin);
    let peers_before = count(&node.stats.bytes_from_peers);
    let (host, repo, reference) = crate::inspect::parse_image(image)?;
    let upstream = node.config.upstream(host.as_deref())?;
    let source = Source {
        upstream,
        repo: repo.clone(),
    };
    let top = node.manifests.get(&source, &reference, None).await?;
    let key = ImageKey {
        upstream: source.upstream.host.clone(),
        repo,
        digest: top.digest,
    };
    let _pin = PullPin::set(node, key.clone())?;

    let mut images = Vec::new();
    let mut platforms = Vec::new();
    match &top.manifest.kind {
        ManifestKind::Image { .. } => images.push(top.manifest.clone()),
        ManifestKind::Index { manifests } => {
            let wanted =
                platform.map_or_else(crate::flatten::source::default_platform, str::to_owned);
            let chosen: Vec<_> = manifests
                .iter()
                .filter(|m| wanted == "all" || m.platform.as_deref() == Some(wanted.as_str()))
                .collect();
            if chosen.is_empty() {
                let offered: Vec<&str> = manifests
                    .iter()
                    .filter_map(|m| m.platform.as_deref())
                    .collect();
                anyhow::bail!(
                    "{image} has no manifest for platform {wanted} (it offers: {}); use --platform",
                    offered.join(", ")
                );
            }
            for m in chosen {
                let child = node
                    .manifests
                    .get(&source, &Reference::Digest(m.digest), None)
                    .await?;
                platforms.push(m.platform.clone().unwrap_or_default());
                images.push(child.manifest);
            }
        }
    }
    let mut blobs = BTreeSet::new();
    for m in &images {
        node.ingest.image_seen(&source, m);
        if let ManifestKind::Image { config, layers } = &m.kind {
            blobs.insert((config.digest, config.size));
            blobs.extend(layers.iter().map(|l| (l.digest, l.size)));
        }
    }
    let mut progress_now = PullProgress {
        blobs_total: blobs.len() as u64,
        bytes_total: blobs.iter().map(|(_, size)| size).sum(),
        ..PullProgress::default()
    };
    let _ = progress(progress_now);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let digests: Vec<Digest> = blobs.iter().map(|(d, _)| *d).collect();
    let fetches = futures_util::stream::iter(digests.into_iter().map(move |digest| {
        let (node, source, tx) = (Arc::clone(node), source.clone(), tx.clone());
        async move { fetch_blob(&node, &source, digest, &tx).await }
    }))
    .buffer_unordered(PARALLEL);
    let mut fetches = std::pin::pin!(fetches);
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            Some(n) = rx.recv() => progress_now.bytes_done += n,
            done = fetches.next() => match done {
                Some(result) => {
                    result?;
                    progress_now.blobs_done += 1;
                }
                None => break,
            },
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            if progress(progress_now).is_break() {
                anyhow::bail!("the client went away");
            }
        }
    }
    while let Ok(n) = rx.try_recv() {
        progress_now.bytes_done += n;
    }
    let _ = progress(progress_now);
    hold(&key)?;
    Ok(PullReport {
        image: image.to_owned(),
        digest: top.digest.to_string(),
        platforms,
        blobs: progress_now.blobs_total,
        bytes: progress_now.bytes_total,
        bytes_from_origin: count(&node.stats.bytes_from_origin).saturating_sub(origin_before),
        bytes_from_peers: count(&node.stats.bytes_from_peers).saturating_sub(peers_before),
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Reads blob `digest` through the blob service to its end (which fetches it if the
/// node lacks it), telling `tx` the bytes as they pass.
async fn fetch_blob(
    node: &Node,
    source: &Source,
    digest: Digest,
    tx: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> anyhow::Result<()> {
    // Read by the node itself: not bytes served to a client.
    let open = node.blobs.open(source, digest).await?.unserved();
    let size = open.size();
    let mut stream = std::pin::pin!(open.stream(ByteRange {
        start: 0,
        end: size
    }));
    let mut got = 0;
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| anyhow::anyhow!("blob {digest}: {e}"))?;
        got += part.len() as u64;
        let _ = tx.send(part.len() as u64);
    }
    anyhow::ensure!(
        got == size,
        "blob {digest} ended after {got} of {size} bytes"
    );
    Ok(())
}

/// The `pull` pin, removed when the pull ends.
struct PullPin {
    node: Arc<Node>,
    key: ImageKey,
}

impl PullPin {
    fn set(node: &Arc<Node>, key: ImageKey) -> anyhow::Result<Self> {
        let now = unix_now();
        node.store.set_pin(
            &key,
            "pull",
            &Pin {
                created: now,
                expires: Some(now + PIN_TTL.as_secs()),
            },
        )?;
        Ok(PullPin {
            node: Arc::clone(node),
            key,
        })
    }
}

impl Drop for PullPin {
    fn drop(&mut self) {
        if let Err(e) = self.node.store.remove_pin(&self.key, "pull") {
            tracing::warn!(image = %self.key, "cannot remove the pull pin (it lapses in an hour): {e}");
        }
    }
}
