//! Test images: layers written as tars by the test, packed into an OCI image layout, and
//! pushed to the origin with skopeo (as OCI or as Docker schema 2, single images or a
//! multi-platform index). Also `podman import` images, whose layers Go compresses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use shoal_protocol::Digest;

use crate::process::run;

/// One layer: files (path, content) and directories, as a tar; or a tar given whole.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    entries: Vec<(String, Option<Vec<u8>>)>,
    raw: Option<Vec<u8>>,
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a regular file.
    pub fn file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.entries.push((path.to_owned(), Some(content.into())));
        self
    }

    /// Adds a directory.
    pub fn dir(mut self, path: &str) -> Self {
        self.entries.push((path.to_owned(), None));
        self
    }

    /// A layer of exactly these tar bytes (which need not be a valid tar).
    pub fn raw_tar(bytes: Vec<u8>) -> Self {
        Layer {
            entries: Vec::new(),
            raw: Some(bytes),
        }
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(raw) = &self.raw {
            return Ok(raw.clone());
        }
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            match content {
                Some(bytes) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, path, bytes.as_slice())?;
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, path, std::io::empty())?;
                }
            }
        }
        Ok(b.into_inner()?)
    }
}

/// Pseudo-random bytes that do not compress (a layer of a given size on the wire).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A built image inside a layout.
#[derive(Clone, Debug)]
pub struct Built {
    /// Manifest digest.
    pub manifest: Digest,
    /// Manifest size.
    pub manifest_size: u64,
    /// Config and layer digests.
    pub blobs: Vec<Digest>,
    /// Platform architecture.
    pub arch: String,
}

/// How layers are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip level 6 (flate2).
    #[default]
    Gzip,
    /// zstd level 3.
    Zstd,
    /// A plain tar.
    None,
}

/// An OCI image layout directory being filled.
pub struct Layout {
    /// Its directory.
    pub dir: PathBuf,
    index: Vec<serde_json::Value>,
    /// How the next images' layers are compressed.
    pub compression: LayerCompression,
    /// The next images' runtime settings (the config's `config` object); `None`: a
    /// PATH and `/bin/sh`.
    pub runtime_config: Option<serde_json::Value>,
}

impl Layout {
    /// A new empty layout in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Layout {
            dir: dir.to_owned(),
            index: Vec::new(),
            compression: LayerCompression::Gzip,
            runtime_config: None,
        })
    }

    fn put(&self, bytes: &[u8]) -> anyhow::Result<Digest> {
        let d = Digest::of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes)?;
        Ok(d)
    }

    /// Writes an image of `layers` for `arch`; tags it `tag` in the layout if given.
    pub fn image(
        &mut self,
        layers: &[Layer],
        arch: &str,
        tag: Option<&str>,
    ) -> anyhow::Result<Built> {
        self.image_with_diff_ids(layers, arch, tag, None)
    }

    /// Like [`Layout::image`], with the config's diff_ids given (`None`: the tars' own),
    /// to make an image whose config lies about its layers.
    pub fn image_with_diff_ids(
        &mut self,
        layers: &[Layer],
        arch: &str,
        tag: Option<&str>,
        diff_id_override: Option<Vec<Digest>>,
    ) -> anyhow::Result<Built> {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut blobs = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let tar = layer.tar()?;
            let diff_id = match &diff_id_override {
                Some(ids) => *ids.get(i).context("a diff_id per layer")?,
                None => Digest::of(&tar),
            };
            diff_ids.push(diff_id.to_string());
            let (blob, media_type) = match self.compression {
                LayerCompression::Gzip => {
                    let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
                    gz.write_all(&tar)?;
                    (gz.finish()?, "application/vnd.oci.image.layer.v1.tar+gzip")
                }
                LayerCompression::Zstd => (
                    zstd::bulk::compress(&tar, 3)?,
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
                LayerCompression::None => (tar, "application/vnd.oci.image.layer.v1.tar"),
            };
            let d = self.put(&blob)?;
            blobs.push(d);
            layer_descs.push(json!({
                "mediaType": media_type,
                "digest": d.to_string(),
                "size": blob.len(),
            }));
        }
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": self.runtime_config.clone().unwrap_or_else(
                || json!({"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]})
            ),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "shoal test harness"}],
        });
        let config = serde_json::to_vec(&config)?;
        let config_d = self.put(&config)?;
        blobs.insert(0, config_d);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_d.to_string(),
                "size": config.len(),
            },
            "layers": layer_descs,
        });
        let manifest = serde_json::to_vec(&manifest)?;
        let manifest_d = self.put(&manifest)?;
        let built = Built {
            manifest: manifest_d,
            manifest_size: manifest.len() as u64,
            blobs,
            arch: arch.to_owned(),
        };
        if let Some(tag) = tag {
            self.index.push(descriptor(
                &built,
                "application/vnd.oci.image.manifest.v1+json",
                Some(tag),
            ));
            self.write_index()?;
        }
        Ok(built)
    }

    /// Writes an index of `images` and tags it `tag`. Returns the index digest.
    pub fn index(&mut self, images: &[Built], tag: &str) -> anyhow::Result<Digest> {
        let manifests: Vec<_> = images
            .iter()
            .map(|b| descriptor(b, "application/vnd.oci.image.manifest.v1+json", None))
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))?;
        let d = self.put(&index)?;
        self.index.push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d.to_string(),
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index()?;
        Ok(d)
    }

    fn write_index(&self) -> anyhow::Result<()> {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }

    /// Pushes layout tag `tag` to `dest` (`host:port/repo:tag`) with skopeo. With
    /// `docker_format`, skopeo converts it to Docker schema 2 media types; with `all`,
    /// an index is pushed with every image in it.
    pub fn push(
        &self,
        tag: &str,
        dest: &str,
        docker_format: bool,
        all: bool,
    ) -> anyhow::Result<()> {
        self.push_with(
            tag,
            dest,
            &PushOptions {
                docker_format,
                all,
                ..Default::default()
            },
        )
    }

    /// Like [`Layout::push`], with credentials and TLS settings for the destination.
    pub fn push_with(&self, tag: &str, dest: &str, options: &PushOptions) -> anyhow::Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q"]);
        match &options.cert_dir {
            Some(dir) => {
                cmd.arg("--dest-tls-verify=true")
                    .arg("--dest-cert-dir")
                    .arg(dir);
            }
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
        }
        if let Some(creds) = &options.creds {
            cmd.args(["--dest-creds", creds]);
        }
        if options.docker_format {
            cmd.args(["--format", "v2s2"]);
        }
        if options.all {
            cmd.arg("--all");
        }
        cmd.arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{dest}"));
        run(&mut cmd, Duration::from_secs(120))
            .with_context(|| format!("pushing {tag} to {dest}"))?;
        Ok(())
    }

    /// The bytes of blob (or manifest) `digest` as written into the layout.
    pub fn blob(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        std::fs::read(&path).with_context(|| format!("read {}", path.display()))
    }
}

/// How [`Layout::push_with`] pushes.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Convert to Docker schema 2 media types.
    pub docker_format: bool,
    /// Push an index with every image in it.
    pub all: bool,
    /// `USER:PASSWORD` for the destination; skopeo answers basic and token
    /// challenges with them itself.
    pub creds: Option<String>,
    /// A directory of CA certificates (`*.crt`) to verify the destination's TLS with;
    /// without it TLS is not verified.
    pub cert_dir: Option<PathBuf>,
}

impl Layout {
    /// Pushes `built` to `registry` (`http://host:port`) as `repo:tag` through the
    /// distribution API itself (curl), byte for byte: skopeo would recompress an
    /// uncompressed layer on the way.
    pub fn push_exact(
        &self,
        built: &Built,
        registry: &str,
        repo: &str,
        tag: &str,
    ) -> anyhow::Result<()> {
        for d in &built.blobs {
            let start = curl(&[
                "-X",
                "POST",
                &format!("{registry}/v2/{repo}/blobs/uploads/"),
            ])?;
            let location = start
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Location: ")
                        .or_else(|| l.strip_prefix("location: "))
                })
                .context("the registry gave no upload location")?
                .trim()
                .to_owned();
            let sep = if location.contains('?') { '&' } else { '?' };
            let url = if location.starts_with("http") {
                location.clone()
            } else {
                format!("{registry}{location}")
            };
            let path = self.dir.join("blobs/sha256").join(d.hex());
            curl(&[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{}", path.display()),
                &format!("{url}{sep}digest={d}"),
            ])?;
        }
        let manifest = self.dir.join("blobs/sha256").join(built.manifest.hex());
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", manifest.display()),
            &format!("{registry}/v2/{repo}/manifests/{tag}"),
        ])?;
        Ok(())
    }
}

/// Runs curl with `args`, failing on an HTTP error; returns headers and body.
fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = run(
        Command::new("curl")
            .args(["-sS", "--fail-with-body", "--noproxy", "*", "-D", "-"])
            .args(args),
        Duration::from_secs(120),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn descriptor(b: &Built, media_type: &str, tag: Option<&str>) -> serde_json::Value {
    let mut d = json!({
        "mediaType": media_type,
        "digest": b.manifest.to_string(),
        "size": b.manifest_size,
        "platform": {"architecture": b.arch, "os": "linux"},
    });
    if let Some(tag) = tag {
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    }
    d
}

/// An HTTP answer, fetched with curl.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Header lines, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GET `url` with extra headers, using curl (a client independent of shoal's code).
pub fn http_get(url: &str, headers: &[&str]) -> anyhow::Result<HttpReply> {
    let dir = tempfile::tempdir()?;
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "120", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(url);
    let out = crate::process::run_unchecked(&mut cmd, Duration::from_secs(130))?;
    let head_text = std::fs::read_to_string(&head).unwrap_or_default();
    // With redirects or 100-continue there are several header blocks; keep the last.
    let block = head_text.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let mut lines = block.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "no HTTP answer from {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpReply {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    })
}

/// Builds an image with podman from a tar the test writes and pushes it to `dest`:
/// layers compressed by Go, as most registry images are.
pub fn podman_push(work: &Path, files: &[(&str, Vec<u8>)], dest: &str) -> anyhow::Result<()> {
    let root = work.join("podman-rootfs");
    std::fs::create_dir_all(&root)?;
    let mut layer = Layer::new();
    for (path, content) in files {
        layer = layer.file(path, content.clone());
    }
    let tar_path = work.join("podman-rootfs.tar");
    std::fs::write(&tar_path, layer.tar()?)?;
    // podman refuses a runroot path over 50 characters.
    let runroot = tempfile::Builder::new()
        .prefix("shoal-pr")
        .tempdir_in("/tmp")?;
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--storage-driver=vfs")
            .arg("--root")
            .arg(work.join("podman-push-storage"))
            .arg("--runroot")
            .arg(runroot.path())
            .args(args);
        cmd
    };
    let local = "localhost/shoal-test-import:latest";
    run(
        &mut podman(&["import", &tar_path.display().to_string(), local]),
        Duration::from_secs(120),
    )?;
    run(
        &mut podman(&[
            "push",
            "--tls-verify=false",
            local,
            &format!("docker://{dest}"),
        ]),
        Duration::from_secs(120),
    )?;
    Ok(())
}
