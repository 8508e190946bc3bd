//! `shoal inspect IMAGE`: what the node holds of an image, layer by layer: files,
//! chunks, and how much content each layer shares with other stored layers.

use serde::{Deserialize, Serialize};
use shoal_protocol::manifest::{Manifest, ManifestKind};
use shoal_protocol::recipe::{self, EntryKind};
use shoal_protocol::{Digest, Reference, RepoName};

use crate::config::NodeConfig;
use crate::store::images::ImageKey;
use crate::store::{PieceReadError, Store, StoreError, read_piece};

/// The wire form of `shoal inspect --json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImageReport {
    /// The image as asked for.
    pub image: String,
    /// The manifest (or index) digest it resolved to.
    pub manifest: String,
    /// Its media type.
    pub media_type: String,
    /// The images it holds: one, or one per platform of an index held by the node.
    pub images: Vec<PlatformReport>,
}

/// One platform's image.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlatformReport {
    /// Its manifest digest.
    pub manifest: String,
    /// `os/arch[/variant]` for index entries.
    pub platform: Option<String>,
    /// Whether the node holds this manifest (an index may list platforms never pulled).
    pub held: bool,
    /// Its layers, base first.
    pub layers: Vec<LayerReport>,
}

/// One layer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LayerReport {
    /// Layer blob digest.
    pub digest: String,
    /// Compressed size from the manifest.
    pub size: u64,
    /// Whether the node holds the blob.
    pub held: bool,
    /// Whether it has a recipe (the rest is zero without one).
    pub recipe: bool,
    /// sha256 of the uncompressed tar.
    pub diff_id: Option<String>,
    /// Uncompressed tar bytes.
    pub tar_bytes: u64,
    /// Tar entries.
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Distinct content chunks.
    pub chunks: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    /// Bytes of its distinct chunks that other stored layers use too.
    pub shared_bytes: u64,
}

/// Why an image cannot be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The reference does not parse.
    #[error("{0:?} is not an image reference ([registry/]repository[:tag|@digest])")]
    BadReference(String),
    /// The node has never resolved it.
    #[error("the node holds no manifest for {0} (pull it through the node first)")]
    Unknown(String),
    /// A stored record is unusable.
    #[error("stored data for {what} is unusable: {detail}")]
    Damaged {
        /// Which record.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A piece is damaged.
    #[error(transparent)]
    Piece(#[from] PieceReadError),
}

/// An image reference: registry host (if named), repository, and tag or digest.
pub type ImageRef = (Option<String>, RepoName, Reference);

/// A stored blob's bytes and media type.
type StoredBlob = (Vec<u8>, Option<String>);

/// `[registry/]repo[:tag|@digest]` → (registry host or None, repo, tag or digest). A
/// missing tag means `latest`.
pub fn parse_image(image: &str) -> Result<ImageRef, InspectError> {
    let bad = || InspectError::BadReference(image.chars().take(200).collect());
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| bad())?)),
        None => (image, None),
    };
    let (host, path) = match rest.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first.to_owned()), path)
        }
        _ => (None, rest),
    };
    let (path, tag) = match path.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, t),
        _ => (path, "latest"),
    };
    let repo = RepoName::parse(path).map_err(|_| bad())?;
    let reference = match digest {
        Some(d) => Reference::Digest(d),
        None => Reference::parse(tag).map_err(|_| bad())?,
    };
    Ok((host, repo, reference))
}

/// The image `image` names, as the node holds it: its upstream and repository, and
/// the manifest digest (a tag is looked up in what the node last resolved).
pub fn resolve(
    store: &dyn Store,
    config: &NodeConfig,
    image: &str,
) -> Result<ImageKey, InspectError> {
    let (host, repo, reference) = parse_image(image)?;
    let upstream = config
        .upstream(host.as_deref())
        .map_err(|e| InspectError::BadReference(format!("{image}: {e:#}")))?;
    let digest = match reference {
        Reference::Digest(d) => d,
        Reference::Tag(tag) => {
            store
                .tag(&upstream.host, &repo, &tag)?
                .ok_or_else(|| InspectError::Unknown(image.to_owned()))?
                .digest
        }
    };
    Ok(ImageKey {
        upstream: upstream.host,
        repo,
        digest,
    })
}

fn read_blob(store: &dyn Store, digest: &Digest) -> Result<Option<StoredBlob>, InspectError> {
    let Some(record) = store.blob(digest)? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(record.size as usize);
    for id in &record.pieces {
        bytes.extend_from_slice(&read_piece(store, id)?);
    }
    Ok(Some((bytes, record.media_type)))
}

/// Builds the report for `image` from what the store holds.
pub fn inspect(
    store: &dyn Store,
    config: &NodeConfig,
    image: &str,
) -> Result<ImageReport, InspectError> {
    let digest = resolve(store, config, image)?.digest;
    let (bytes, media_type) =
        read_blob(store, &digest)?.ok_or_else(|| InspectError::Unknown(image.to_owned()))?;
    let manifest =
        Manifest::parse(&bytes, media_type.as_deref()).map_err(|e| InspectError::Damaged {
            what: digest.to_string(),
            detail: e.to_string(),
        })?;
    let images = match &manifest.kind {
        ManifestKind::Image { .. } => vec![platform(store, &digest, None)?],
        ManifestKind::Index { manifests } => manifests
            .iter()
            .map(|m| platform(store, &m.digest, m.platform.clone()))
            .collect::<Result<_, _>>()?,
    };
    Ok(ImageReport {
        image: image.to_owned(),
        manifest: digest.to_string(),
        media_type: manifest.media_type,
        images,
    })
}

fn platform(
    store: &dyn Store,
    digest: &Digest,
    platform: Option<String>,
) -> Result<PlatformReport, InspectError> {
    let mut report = PlatformReport {
        manifest: digest.to_string(),
        platform,
        held: false,
        layers: Vec::new(),
    };
    let Some((bytes, media_type)) = read_blob(store, digest)? else {
        return Ok(report);
    };
    report.held = true;
    let manifest =
        Manifest::parse(&bytes, media_type.as_deref()).map_err(|e| InspectError::Damaged {
            what: digest.to_string(),
            detail: e.to_string(),
        })?;
    if let ManifestKind::Image { layers, .. } = manifest.kind {
        for layer in layers {
            report
                .layers
                .push(layer_report(store, &layer.digest, layer.size)?);
        }
    }
    Ok(report)
}

fn layer_report(
    store: &dyn Store,
    digest: &Digest,
    size: u64,
) -> Result<LayerReport, InspectError> {
    let mut r = LayerReport {
        digest: digest.to_string(),
        size,
        held: store.blob(digest)?.is_some(),
        ..Default::default()
    };
    let Some(record) = store.recipe(digest)? else {
        return Ok(r);
    };
    let recipe = recipe::decode(&record.encoded).map_err(|e| InspectError::Damaged {
        what: format!("recipe of {digest}"),
        detail: e.to_string(),
    })?;
    r.recipe = true;
    r.diff_id = Some(recipe.diff_id.to_string());
    r.tar_bytes = recipe.tar_size;
    r.entries = recipe.entries.len() as u64;
    r.files = recipe
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .count() as u64;
    r.content_bytes = recipe.content_bytes();
    let mut seen = std::collections::HashSet::new();
    for chunk in recipe.entries.iter().flat_map(|e| &e.chunks) {
        if seen.insert(chunk.id) {
            r.chunks += 1;
            if store.chunk_users(&chunk.id)? > 1 {
                r.shared_bytes += u64::from(chunk.len);
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let (h, r, t) = parse_image("127.0.0.1:5000/app/x:v1").unwrap();
        assert_eq!(
            (h.as_deref(), r.as_str(), t),
            (Some("127.0.0.1:5000"), "app/x", Reference::Tag("v1".into()))
        );
        let (h, r, t) = parse_image("library/debian").unwrap();
        assert_eq!(
            (h, r.as_str(), t),
            (None, "library/debian", Reference::Tag("latest".into()))
        );
        let d = Digest::of(b"m");
        let (_, _, t) = parse_image(&format!("docker.io/app@{d}")).unwrap();
        assert_eq!(t, Reference::Digest(d));
        assert!(parse_image("Bad Name").is_err());
        assert!(parse_image("app@sha256:zz").is_err());
    }
}
