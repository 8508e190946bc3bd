//! Real engines as clients, each configured the way `shoal configure` says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_protocol::Digest;

use crate::process::run;

/// What a pull left on disk, for comparing with the origin.
#[derive(Debug, PartialEq, Eq)]
pub struct Pulled {
    /// Digest of the manifest the engine got.
    pub manifest: Digest,
    /// Digests of every blob it got, each checked against its bytes.
    pub blobs: Vec<Digest>,
}

/// `skopeo copy docker://IMAGE dir:DEST` with `registries_conf`; checks every file
/// against its digest and returns what arrived.
pub fn skopeo_copy(
    registries_conf: &Path,
    image: &str,
    dest: &Path,
    extra: &[&str],
) -> anyhow::Result<Pulled> {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--registries-conf")
        .arg(registries_conf)
        .args(["copy", "-q", "--src-tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", dest.display()));
    run(&mut cmd, Duration::from_secs(180)).with_context(|| format!("skopeo copy {image}"))?;
    let manifest = std::fs::read(dest.join("manifest.json"))?;
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(dest)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let d: Digest = format!("sha256:{name}").parse()?;
            let bytes = std::fs::read(entry.path())?;
            if Digest::of(&bytes) != d {
                bail!(
                    "skopeo wrote {name} whose bytes hash to {}",
                    Digest::of(&bytes)
                );
            }
            blobs.push(d);
        }
    }
    blobs.sort();
    Ok(Pulled {
        manifest: Digest::of(&manifest),
        blobs,
    })
}

/// podman with its own vfs storage under a test directory.
pub struct Podman {
    root: PathBuf,
    runroot: tempfile::TempDir,
    registries_conf: PathBuf,
}

impl Podman {
    /// podman storing under `work`, reading `registries_conf`.
    pub fn new(work: &Path, registries_conf: &Path) -> Self {
        Podman {
            root: work.join("podman-storage"),
            // podman refuses a runroot path over 50 characters.
            runroot: tempfile::Builder::new()
                .prefix("shoal-pr")
                .tempdir_in("/tmp")
                .expect("a temporary directory in /tmp"),
            registries_conf: registries_conf.to_owned(),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .arg("--storage-driver=vfs")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(self.runroot.path());
        cmd
    }

    /// A shell function named `podman` that runs this podman (for README steps).
    pub fn shell_function(&self) -> String {
        format!(
            "podman() {{ CONTAINERS_REGISTRIES_CONF='{}' command podman --storage-driver=vfs --root '{}' --runroot '{}' \"$@\"; }}",
            self.registries_conf.display(),
            self.root.display(),
            self.runroot.path().display()
        )
    }

    /// `podman pull IMAGE`.
    pub fn pull(&self, image: &str) -> anyhow::Result<()> {
        run(
            self.cmd().args(["pull", "-q", image]),
            Duration::from_secs(180),
        )
        .with_context(|| format!("podman pull {image}"))?;
        Ok(())
    }

    /// The manifest digest podman recorded for `image`.
    pub fn digest(&self, image: &str) -> anyhow::Result<Digest> {
        let out = run(
            self.cmd()
                .args(["image", "inspect", "--format", "{{.Digest}}", image]),
            Duration::from_secs(60),
        )?;
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs layers are plain directories, but podman may leave mounts in runroot.
        let _ = Command::new("podman")
            .arg("--storage-driver=vfs")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(self.runroot.path())
            .args(["system", "reset", "--force"])
            .output();
    }
}
