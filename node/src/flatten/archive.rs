//! `shoal export --flat`: a flattened tree as a single-layer OCI image, and that image
//! as one archive that `podman load`, `skopeo copy oci-archive:` and `ctr images
//! import` take.
//!
//! # Same bytes on every node
//! The layer is the tree's deterministic tar (`export.rs`) compressed by gzip at a fixed
//! level with a fixed header (no name, mtime 0, OS 255), so its digest depends only on
//! the tree and on the compressor's version. The tar reaches the compressor in fixed
//! blocks ([`crate::packs::FlatGzip`]), so the blob depends on the tar alone and any
//! node re-creates it from the layer's content. The config and manifest are JSON with keys
//! sorted (serde_json's map) and only values taken from the source image. Changing
//! [`GZIP_LEVEL`], the block size or the tar format changes every flat image's digest.
//!
//! # The archive
//! An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) plus Docker's
//! `manifest.json`, in one tar written in a fixed order. The image's name, when it has
//! one, is in `index.json` (`org.opencontainers.image.ref.name` and
//! `io.containerd.image.name`) and in `manifest.json`'s `RepoTags`.

use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use shoal_protocol::Digest;
use shoal_protocol::digest::DigestHasher;
use shoal_protocol::manifest::{OCI_INDEX, OCI_MANIFEST};

use super::export::{ExportError, TarStats, write_tree_tar};
use super::ustar::{END, EntryHeader, header_bytes, padding};

/// gzip level of flat layers: part of what makes their digest.
pub const GZIP_LEVEL: u32 = 6;
/// Media type of the flat layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of the flat image's config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The `config` keys carried over from the source image (the runtime settings).
const CARRIED: [&str; 9] = [
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
];
/// Top-level config keys carried over (platform and creation time).
const CARRIED_TOP: [&str; 6] = [
    "architecture",
    "os",
    "variant",
    "os.version",
    "os.features",
    "created",
];

/// The flat layer blob: its digest and size, and its tar's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the gzip stream.
    pub digest: Digest,
    /// Bytes of the gzip stream.
    pub size: u64,
    /// sha256 of the tar (the diff_id).
    pub diff_id: Digest,
    /// What the tar holds.
    pub stats: TarStats,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: DigestHasher,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the tree at `root`, whose image hardlinks the paths of each of `links`
/// together, as the flat layer blob (gzip of its deterministic tar) to `out`.
/// `progress` sees the tar bytes written so far.
pub fn write_layer(
    root: &Path,
    links: &[Vec<PathBuf>],
    out: &mut dyn Write,
    max_depth: usize,
    progress: &mut dyn FnMut(u64) -> ControlFlow<()>,
) -> Result<LayerBlob, ExportError> {
    let blob = Hashing {
        inner: out,
        hasher: DigestHasher::new(),
        bytes: 0,
    };
    let gz = crate::packs::FlatGzip::new(blob);
    let mut tar = Hashing {
        inner: gz,
        hasher: DigestHasher::new(),
        bytes: 0,
    };
    let stats = write_tree_tar(root, links, &mut tar, max_depth, progress)?;
    let diff_id = tar.hasher.finish();
    let blob = tar.inner.finish().map_err(ExportError::Write)?;
    Ok(LayerBlob {
        digest: blob.hasher.finish(),
        size: blob.bytes,
        diff_id,
        stats,
    })
}

/// Why a flat image's config could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the source image's config is unusable: {0}")]
pub struct ConfigError(String);

/// The flat image's config: the source's platform, creation time and runtime settings,
/// one layer, and one history entry naming the source manifest.
pub fn flat_config(
    source: &[u8],
    diff_id: &Digest,
    source_manifest: &Digest,
) -> Result<Vec<u8>, ConfigError> {
    let source: Value = serde_json::from_slice(source).map_err(|e| ConfigError(e.to_string()))?;
    let top = source
        .as_object()
        .ok_or_else(|| ConfigError("it is not a JSON object".into()))?;
    let mut out = Map::new();
    for key in CARRIED_TOP {
        if let Some(v) = top.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    let mut runtime = Map::new();
    if let Some(Value::Object(config)) = top.get("config") {
        for key in CARRIED {
            match config.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    runtime.insert(key.to_owned(), v.clone());
                }
            }
        }
    }
    out.insert("config".into(), Value::Object(runtime));
    out.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": [diff_id.to_string()]}),
    );
    let mut history = Map::new();
    if let Some(created) = top.get("created") {
        history.insert("created".into(), created.clone());
    }
    history.insert(
        "created_by".into(),
        Value::String(format!("shoal export --flat {source_manifest}")),
    );
    history.insert(
        "comment".into(),
        Value::String("every layer of the source image flattened into one".into()),
    );
    out.insert("history".into(), Value::Array(vec![Value::Object(history)]));
    serde_json::to_vec(&Value::Object(out)).map_err(|e| ConfigError(e.to_string()))
}

/// The flat image's OCI manifest.
pub fn flat_manifest(config: &[u8], layer: &LayerBlob) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        }],
    });
    // A tree of plain values: serialising it cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// What an archive holds besides the layer's bytes.
#[derive(Clone, Debug)]
pub struct ArchiveParts {
    /// The config JSON.
    pub config: Vec<u8>,
    /// The manifest JSON.
    pub manifest: Vec<u8>,
    /// The layer blob's digest.
    pub layer: Digest,
    /// Its size.
    pub layer_size: u64,
}

/// One member of the archive.
enum Member {
    Dir,
    Bytes(Vec<u8>),
    Layer(u64),
}

/// The archive's members in order. `name` is the image's full name
/// (`registry/repository:tag`), if it has one.
fn members(parts: &ArchiveParts, name: Option<&str>) -> Vec<(String, Member)> {
    let config = Digest::of(&parts.config);
    let manifest = Digest::of(&parts.manifest);
    let mut descriptor = json!({
        "mediaType": OCI_MANIFEST,
        "digest": manifest.to_string(),
        "size": parts.manifest.len(),
    });
    if let Some(name) = name {
        descriptor["annotations"] = json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name,
        });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor],
    });
    let docker = json!([{
        "Config": format!("blobs/sha256/{}", config.hex()),
        "RepoTags": name.into_iter().collect::<Vec<_>>(),
        "Layers": [format!("blobs/sha256/{}", parts.layer.hex())],
    }]);
    // Trees of plain values: serialising them cannot fail.
    let to_vec = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let mut blobs = vec![
        (config.hex(), Member::Bytes(parts.config.clone())),
        (manifest.hex(), Member::Bytes(parts.manifest.clone())),
        (parts.layer.hex(), Member::Layer(parts.layer_size)),
    ];
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = vec![
        ("blobs/".to_owned(), Member::Dir),
        ("blobs/sha256/".to_owned(), Member::Dir),
    ];
    out.extend(
        blobs
            .into_iter()
            .map(|(hex, m)| (format!("blobs/sha256/{hex}"), m)),
    );
    out.push(("index.json".into(), Member::Bytes(to_vec(&index))));
    out.push(("manifest.json".into(), Member::Bytes(to_vec(&docker))));
    out.push((
        "oci-layout".into(),
        Member::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ));
    out
}

/// The header of an archive member.
fn member_header(path: &str, member: &Member) -> Vec<u8> {
    let (kind, mode, size) = match member {
        Member::Dir => (b'5', 0o755, 0),
        Member::Bytes(b) => (b'0', 0o644, b.len() as u64),
        Member::Layer(size) => (b'0', 0o644, *size),
    };
    let header = EntryHeader {
        path: path.as_bytes(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        size,
        mtime: (0, 0),
        link: &[],
        dev: (0, 0),
        xattrs: &[],
    };
    // Short ASCII names and small numbers: every field fits.
    header_bytes(&header).unwrap_or_default()
}

/// Bytes of the archive [`write_archive`] writes.
pub fn archive_size(parts: &ArchiveParts, name: Option<&str>) -> u64 {
    let mut total = END.len() as u64;
    for (path, member) in members(parts, name) {
        total += member_header(&path, &member).len() as u64;
        let size = match &member {
            Member::Dir => 0,
            Member::Bytes(b) => b.len() as u64,
            Member::Layer(size) => *size,
        };
        total += size + padding(size).len() as u64;
    }
    total
}

/// Writes the archive, taking the layer's bytes from `layer`, which must give exactly
/// `parts.layer_size` bytes.
pub fn write_archive(
    parts: &ArchiveParts,
    name: Option<&str>,
    layer: &mut dyn Read,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let mut total = 0u64;
    for (path, member) in members(parts, name) {
        let header = member_header(&path, &member);
        out.write_all(&header)?;
        total += header.len() as u64;
        let size = match member {
            Member::Dir => 0,
            Member::Bytes(bytes) => {
                out.write_all(&bytes)?;
                bytes.len() as u64
            }
            Member::Layer(size) => {
                let copied = io::copy(&mut layer.take(size), out)?;
                if copied != size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the layer ended after {copied} of {size} bytes"),
                    ));
                }
                size
            }
        };
        out.write_all(padding(size))?;
        total += size + padding(size).len() as u64;
    }
    out.write_all(&END)?;
    Ok(total + END.len() as u64)
}
