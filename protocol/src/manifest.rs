//! Image manifests and indexes (OCI and Docker schema 2), parsed only to validate them
//! and to find what they point at.
//!
//! shoal never re-serialises a manifest: engines get the origin's exact bytes, whose
//! sha256 is the manifest digest. Parsing exists to refuse what is not a manifest before
//! it is stored or served, and to list the blobs an image needs.

use crate::digest::{Digest, DigestError};

/// Largest manifest accepted, in bytes (the distribution spec lets registries refuse
/// anything over 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type shoal serves, in the order it prefers them.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Why bytes are not a manifest shoal will serve.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST_SIZE`].
    #[error("manifest is {0} bytes, over the {MAX_MANIFEST_SIZE}-byte limit")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("manifest is not valid JSON of a known shape: {0}")]
    Json(#[from] serde_json::Error),
    /// `schemaVersion` is not 2.
    #[error("manifest schemaVersion is {0}, only 2 is supported")]
    SchemaVersion(u64),
    /// A media type shoal does not serve (such as Docker schema 1).
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    /// The body's `mediaType` and the response's `Content-Type` disagree.
    #[error("manifest says mediaType {body:?} but was served as {header:?}")]
    MediaTypeMismatch {
        /// From the JSON body.
        body: String,
        /// From the Content-Type header.
        header: String,
    },
    /// A descriptor's digest is unusable.
    #[error("manifest descriptor has a bad digest: {0}")]
    Digest(#[from] DigestError),
    /// An image manifest with an index's fields, or the reverse.
    #[error("manifest shape does not match its media type {0:?}")]
    Shape(String),
}

/// A pointer to content: what the spec calls a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type of the content pointed at.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// For index entries: `os/architecture[/variant]`, when given.
    pub platform: Option<String>,
}

/// What a manifest points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image: a config blob and layer blobs.
    Image {
        /// The image config.
        config: Descriptor,
        /// The layers, base first.
        layers: Vec<Descriptor>,
    },
    /// An index of manifests (multi-platform).
    Index {
        /// The manifests it lists.
        manifests: Vec<Descriptor>,
    },
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Its media type, from the body or the Content-Type it was served with.
    pub media_type: String,
    /// What it points at.
    pub kind: ManifestKind,
}

mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Manifest {
        pub schema_version: u64,
        pub media_type: Option<String>,
        pub config: Option<Descriptor>,
        pub layers: Option<Vec<Descriptor>>,
        pub manifests: Option<Vec<Descriptor>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Descriptor {
        pub media_type: String,
        pub digest: String,
        pub size: u64,
        pub platform: Option<Platform>,
    }

    #[derive(Deserialize)]
    pub struct Platform {
        pub os: String,
        pub architecture: String,
        pub variant: Option<String>,
    }
}

impl Manifest {
    /// Validates `bytes` as a manifest served with `content_type` (if any).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let raw: wire::Manifest = serde_json::from_slice(bytes)?;
        if raw.schema_version != 2 {
            return Err(ManifestError::SchemaVersion(raw.schema_version));
        }
        // Content-Type may carry parameters (`; charset=utf-8`).
        let header = content_type
            .map(|h| h.split(';').next().unwrap_or("").trim().to_owned())
            .filter(|h| MANIFEST_TYPES.contains(&h.as_str()));
        let media_type = match (raw.media_type, header) {
            (Some(body), Some(header)) if body != header => {
                return Err(ManifestError::MediaTypeMismatch { body, header });
            }
            (Some(body), _) => body,
            (None, Some(header)) => header,
            // An OCI manifest may omit mediaType; its shape tells which it is.
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        let kind = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => match (raw.config, raw.layers, raw.manifests) {
                (Some(config), Some(layers), None) => ManifestKind::Image {
                    config: descriptor(config)?,
                    layers: layers
                        .into_iter()
                        .map(descriptor)
                        .collect::<Result<_, _>>()?,
                },
                _ => return Err(ManifestError::Shape(media_type)),
            },
            OCI_INDEX | DOCKER_LIST => match (raw.manifests, raw.layers) {
                (Some(manifests), None) => ManifestKind::Index {
                    manifests: manifests
                        .into_iter()
                        .map(descriptor)
                        .collect::<Result<_, _>>()?,
                },
                _ => return Err(ManifestError::Shape(media_type)),
            },
            _ => return Err(ManifestError::UnsupportedMediaType(media_type)),
        };
        Ok(Manifest { media_type, kind })
    }

    /// Every blob and child manifest this manifest points at.
    pub fn references(&self) -> Vec<&Descriptor> {
        match &self.kind {
            ManifestKind::Image { config, layers } => {
                std::iter::once(config).chain(layers).collect()
            }
            ManifestKind::Index { manifests } => manifests.iter().collect(),
        }
    }
}

fn descriptor(d: wire::Descriptor) -> Result<Descriptor, ManifestError> {
    Ok(Descriptor {
        digest: d.digest.parse()?,
        media_type: d.media_type,
        size: d.size,
        platform: d.platform.map(|p| match p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        }),
    })
}

/// Whether `media_type` is one of the manifest types shoal serves.
pub fn is_manifest_type(media_type: &str) -> bool {
    MANIFEST_TYPES.contains(&media_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    #[test]
    fn image_manifest_lists_config_then_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":7}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":9}}]}}"#,
            d(1),
            d(2)
        );
        let m = Manifest::parse(body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        let refs: Vec<_> = m.references().iter().map(|r| r.size).collect();
        assert_eq!(refs, vec![7, 9]);
    }

    #[test]
    fn oci_index_without_media_type_is_recognised() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3,
            "platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d(3)
        );
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(
            m.references()[0].platform.as_deref(),
            Some("linux/arm64/v8")
        );
    }

    #[test]
    fn refuses_what_is_not_a_manifest() {
        assert!(matches!(
            Manifest::parse(b"{", None),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion(1))
        ));
        let mismatch = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(matches!(
            Manifest::parse(mismatch.as_bytes(), Some(DOCKER_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let shape = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","manifests":[]}}"#);
        assert!(matches!(
            Manifest::parse(shape.as_bytes(), None),
            Err(ManifestError::Shape(_))
        ));
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert!(matches!(
            Manifest::parse(&big, None),
            Err(ManifestError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::parse(&bytes, None);
        }
    }
}
