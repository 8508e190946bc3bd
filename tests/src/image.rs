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

/// One layer: files (path, content) and directories, as a tar.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    entries: Vec<(String, Option<Vec<u8>>)>,
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

    /// The uncompressed tar.
    pub fn tar(&self) -> anyhow::Result<Vec<u8>> {
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

/// An OCI image layout directory being filled.
pub struct Layout {
    /// Its directory.
    pub dir: PathBuf,
    index: Vec<serde_json::Value>,
}

impl Layout {
    /// A new empty layout in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Layout {
            dir: dir.to_owned(),
            index: Vec::new(),
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
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut blobs = Vec::new();
        for layer in layers {
            let tar = layer.tar()?;
            diff_ids.push(Digest::of(&tar).to_string());
            let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
            gz.write_all(&tar)?;
            let gz = gz.finish()?;
            let d = self.put(&gz)?;
            blobs.push(d);
            layer_descs.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d.to_string(),
                "size": gz.len(),
            }));
        }
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
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
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--storage-driver=vfs")
            .arg("--root")
            .arg(work.join("podman-push-storage"))
            .arg("--runroot")
            .arg(work.join("podman-push-run"))
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
