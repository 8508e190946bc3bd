//! The two versions of the image a fleet pulls, built by the bench and pushed into the
//! origin's storage before the origin starts in its namespace.
//!
//! Layers are gzipped by skopeo on the push (klauspost's pgzip, as podman and skopeo
//! compress), so nodes can re-create them from packs.
//!
//! - `debian`: v1 is a Debian root made by `debootstrap --variant=minbase` as one gzip
//!   layer, v2 the same root with packages added, packed whole again (what a rebuild
//!   from scratch gives: no layer in common with v1, most file content in common). The
//!   roots are built once and kept, as `shoal-bench recipes` keeps them.
//! - `synthetic:SIZE`: one gzip layer of eight files of random content, SIZE in all;
//!   v2 changes two of the eight. Quick to build, for tests and small runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use shoal_tests::Registry;
use shoal_tests::image::{Layer, LayerCompression, Layout, noise};

/// The repository both versions are pushed to.
pub const REPO: &str = "bench/fleet";

/// What the image is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSpec {
    /// Debian minbase roots (v2 with packages added).
    Debian,
    /// Random content of this many bytes.
    Synthetic(u64),
}

impl std::str::FromStr for ImageSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<ImageSpec> {
        if s == "debian" {
            return Ok(ImageSpec::Debian);
        }
        let Some(size) = s.strip_prefix("synthetic:") else {
            bail!("{s:?}: the image is `debian` or `synthetic:SIZE` (like synthetic:32MiB)");
        };
        let split = size
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(size.len());
        let (num, unit) = size.split_at(split);
        let num: u64 = num
            .parse()
            .with_context(|| format!("{s:?}: no size in bytes"))?;
        let scale = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => bail!("{s:?}: the size's unit is KiB, MiB or GiB"),
        };
        let bytes = num * scale;
        if bytes < 8 << 10 {
            bail!("{s:?}: a synthetic image has at least 8KiB");
        }
        Ok(ImageSpec::Synthetic(bytes))
    }
}

impl std::fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSpec::Debian => write!(f, "debian"),
            ImageSpec::Synthetic(b) if b % (1 << 20) == 0 => write!(f, "synthetic:{}MiB", b >> 20),
            ImageSpec::Synthetic(b) => write!(f, "synthetic:{b}"),
        }
    }
}

/// One version as pushed.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// Its tag in [`REPO`].
    pub tag: String,
    /// The manifest's digest.
    pub manifest: String,
    /// The manifest's size.
    pub manifest_bytes: u64,
    /// Config and layers: digest and size.
    pub blobs: Vec<(String, u64)>,
    /// Uncompressed size of its layers.
    pub tar_bytes: u64,
}

impl Version {
    /// Everything a pull of it transfers: manifest, config and layers.
    pub fn bytes(&self) -> u64 {
        self.manifest_bytes + self.blobs.iter().map(|b| b.1).sum::<u64>()
    }

    /// What a pull of it transfers on a host that holds `had`: the manifest and the
    /// blobs `had` lacks.
    pub fn bytes_after(&self, had: &Version) -> u64 {
        self.manifest_bytes
            + self
                .blobs
                .iter()
                .filter(|b| !had.blobs.iter().any(|h| h.0 == b.0))
                .map(|b| b.1)
                .sum::<u64>()
    }
}

/// Both versions, and the registry storage holding them.
#[derive(Debug)]
pub struct Images {
    /// How they were made, in words.
    pub description: String,
    /// The first version.
    pub v1: Version,
    /// The second.
    pub v2: Version,
    /// A docker-registry root holding both.
    pub storage: PathBuf,
}

/// Where the Debian roots are kept and what v2 adds.
pub struct Roots<'a> {
    /// The directory holding `v1/` and `v2/`.
    pub dir: &'a Path,
    /// Packages v2 adds, comma-separated.
    pub v2_packages: &'a str,
}

/// Builds both versions and pushes them to a registry storing under `work/push`.
pub fn build(spec: &ImageSpec, roots: &Roots, work: &Path) -> anyhow::Result<Images> {
    let mut layout = Layout::new(&work.join("layout"))?;
    layout.compression = LayerCompression::None;
    let (description, layers) = match spec {
        ImageSpec::Debian => {
            let v1 = crate::recipes::debootstrap(&roots.dir.join("v1"), None)?;
            let v2 = crate::recipes::debootstrap(&roots.dir.join("v2"), Some(roots.v2_packages))?;
            eprintln!("packing the Debian roots as layers...");
            (
                format!(
                    "Debian bookworm minbase root in one gzip layer; v2 adds {} and is packed whole again",
                    roots.v2_packages
                ),
                [tar_of(&v1)?, tar_of(&v2)?],
            )
        }
        ImageSpec::Synthetic(bytes) => {
            let file = (*bytes / 8) as usize;
            let layer = |changed_seed: u64| {
                (0..8u64).fold(Layer::new(), |l, k| {
                    let seed = if k >= 6 { changed_seed + k } else { k + 1 };
                    l.file(&format!("data/f{k}"), noise(file, seed))
                })
            };
            (
                format!(
                    "{spec}: one gzip layer of 8 files of random content; v2 changes 2 of them"
                ),
                [layer(100).tar()?, layer(200).tar()?],
            )
        }
    };
    let push_dir = work.join("push");
    std::fs::create_dir_all(&push_dir)?;
    let registry = Registry::start(&push_dir)?;
    let mut versions = Vec::new();
    for (tag, tar) in ["v1", "v2"].into_iter().zip(layers) {
        let tar_bytes = tar.len() as u64;
        // The layout holds the plain tar; skopeo gzips it on the push, with the
        // encoder podman and skopeo use (klauspost's pgzip), as most images on a
        // registry were compressed, and which nodes re-create from packs.
        layout.image(&[Layer::raw_tar(tar)], "amd64", Some(tag))?;
        let dest = format!("{}/{REPO}:{tag}", registry.addr);
        layout.push(tag, &dest, false, false)?;
        versions.push(pushed(&dest, tag, tar_bytes)?);
    }
    let storage = registry.root.clone();
    drop(registry);
    // The layout's copies are not needed once pushed.
    let _ = std::fs::remove_dir_all(work.join("layout"));
    let v2 = versions.pop().context("two versions")?;
    let v1 = versions.pop().context("two versions")?;
    Ok(Images {
        description,
        v1,
        v2,
        storage,
    })
}

/// What the registry holds for `dest` (`host:port/repo:tag`), as skopeo pushed it.
fn pushed(dest: &str, tag: &str, tar_bytes: u64) -> anyhow::Result<Version> {
    let out = shoal_tests::run(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{dest}")),
        Duration::from_secs(60),
    )?;
    let raw = out.stdout;
    let manifest: serde_json::Value =
        serde_json::from_slice(&raw).with_context(|| format!("the manifest of {dest}"))?;
    let descriptor = |d: &serde_json::Value| -> anyhow::Result<(String, u64)> {
        Ok((
            d["digest"]
                .as_str()
                .context("a descriptor's digest")?
                .to_owned(),
            d["size"].as_u64().context("a descriptor's size")?,
        ))
    };
    let mut blobs = vec![descriptor(&manifest["config"])?];
    for layer in manifest["layers"]
        .as_array()
        .context("the manifest's layers")?
    {
        blobs.push(descriptor(layer)?);
    }
    Ok(Version {
        tag: tag.to_owned(),
        manifest: shoal_protocol::Digest::of(&raw).to_string(),
        manifest_bytes: raw.len() as u64,
        blobs,
        tar_bytes,
    })
}

/// A tar of `root` the way image builders write one.
fn tar_of(root: &Path) -> anyhow::Result<Vec<u8>> {
    let out = shoal_tests::run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--sort=name", "-C"])
            .arg(root)
            .args(["-cf", "-", "."]),
        Duration::from_secs(300),
    )?;
    Ok(out.stdout)
}
