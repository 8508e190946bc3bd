//! A private `containerd` daemon and `ctr` against it: its own config, root, state and
//! sockets under a test directory, in its own mount namespace, so it neither sees nor
//! disturbs a system containerd and every mount it makes dies with it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_protocol::Digest;

use crate::process::{Daemon, run, run_unchecked, wait_until};

/// The containerd namespace the tests' `ctr` commands use.
pub const CTR_NAMESPACE: &str = "shoal-test";

/// Environment variables that would send an engine's requests elsewhere.
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// A running private containerd.
pub struct Containerd {
    /// Its grpc socket.
    pub socket: PathBuf,
    /// Its directory (config, root, state, log).
    pub dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Containerd {
    /// Starts containerd with everything under `dir`, in a private mount namespace.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "containerd"]);
        Self::start_with(dir, cmd)
    }

    /// Starts containerd with everything under `dir`, inside network namespace
    /// `netns` (`ip netns exec` also gives it a mount namespace of its own).
    pub fn start_in_netns(dir: &Path, netns: &str) -> anyhow::Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "containerd"]);
        Self::start_with(dir, cmd)
    }

    fn start_with(dir: &Path, mut cmd: Command) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &socket))?;
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.arg("--config")
            .arg(&config)
            .args(["--log-level", "debug"]);
        let daemon = Daemon::spawn("containerd", &mut cmd, &dir.join("containerd.log"))?;
        let mut c = Containerd {
            socket,
            dir,
            daemon: Some(daemon),
        };
        c.wait_ready()?;
        Ok(c)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let socket = self.socket.clone();
        let daemon = self.daemon.as_mut().context("containerd is running")?;
        wait_until(
            "containerd to answer on its socket",
            Duration::from_secs(60),
            || {
                daemon.check_alive()?;
                if !socket.exists() {
                    return Ok(false);
                }
                let mut cmd = Command::new("ctr");
                cmd.arg("--address").arg(&socket).arg("version");
                Ok(run_unchecked(&mut cmd, Duration::from_secs(10))?
                    .status
                    .success())
            },
        )
        .with_context(|| format!("containerd log:\n{}", self.log_tail()))
    }

    /// `ctr --address SOCK --namespace shoal-test`, without proxy variables.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", CTR_NAMESPACE]);
        cmd
    }

    /// A shell function named `ctr` that drives this containerd (for README steps);
    /// `ctr images pull` unpacks with the native snapshotter.
    pub fn shell_function(&self) -> String {
        format!(
            "ctr() {{ if [ \"$1 $2\" = 'images pull' ]; then shift 2; set -- images pull --snapshotter native \"$@\"; fi; \
             env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY \
             ctr --address '{}' --namespace {CTR_NAMESPACE} \"$@\"; }}",
            self.socket.display()
        )
    }

    /// `ctr images pull --hosts-dir HOSTS_DIR --snapshotter native IMAGE` (the plain-http
    /// choice comes from hosts.toml, which names the node as `http://...`).
    pub fn pull(&self, hosts_dir: &Path, image: &str) -> anyhow::Result<()> {
        let mut cmd = self.ctr();
        cmd.args(["images", "pull", "--hosts-dir"])
            .arg(hosts_dir)
            .args(["--snapshotter", "native", image]);
        run(&mut cmd, Duration::from_secs(240)).with_context(|| {
            format!(
                "ctr images pull {image}\ncontainerd log:\n{}",
                self.log_tail()
            )
        })?;
        Ok(())
    }

    /// The target digest `ctr images ls` records for `image`.
    pub fn image_digest(&self, image: &str) -> anyhow::Result<Digest> {
        let out = run(self.ctr().args(["images", "ls"]), Duration::from_secs(30))?;
        let text = String::from_utf8(out.stdout)?;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&image) {
                return Ok(cols
                    .get(2)
                    .with_context(|| format!("no digest column in {line:?}"))?
                    .parse()?);
            }
        }
        bail!("ctr images ls has no {image}:\n{text}")
    }

    /// Every blob in the content store, each read back with `ctr content get` and
    /// checked against its digest; sorted.
    pub fn content(&self) -> anyhow::Result<Vec<Digest>> {
        let out = run(
            self.ctr().args(["content", "ls", "-q"]),
            Duration::from_secs(30),
        )?;
        let mut digests = Vec::new();
        for line in String::from_utf8(out.stdout)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let d: Digest = line.parse()?;
            let bytes = run(
                self.ctr().args(["content", "get", line]),
                Duration::from_secs(60),
            )?
            .stdout;
            if Digest::of(&bytes) != d {
                bail!(
                    "containerd holds {d} whose bytes hash to {}",
                    Digest::of(&bytes)
                );
            }
            digests.push(d);
        }
        digests.sort();
        Ok(digests)
    }

    /// The directories of the native snapshotter's snapshots (unpacked layers; the
    /// native snapshotter copies, so the top one holds the whole image).
    pub fn native_snapshots(&self) -> anyhow::Result<Vec<PathBuf>> {
        let dir = self
            .dir
            .join("root/io.containerd.snapshotter.v1.native/snapshots");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            out.push(e?.path());
        }
        out.sort();
        Ok(out)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.daemon
            .as_ref()
            .map(Daemon::log_tail)
            .unwrap_or_default()
    }

    /// SIGTERM (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut d) = self.daemon.take()
            && d.check_alive().is_ok()
        {
            d.terminate(grace);
        }
        unmount_under(&self.dir);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

fn config_toml(dir: &Path, socket: &Path) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        r#"# shoal tests: a private containerd; nothing outside {dir}.
version = 2
root = {root}
state = {state}
temp = {temp}
# No CRI (it would want CNI and stream ports); no snapshotters but native, so pulls
# make no overlay mounts and probe no kernel modules.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}
"#,
        dir = dir.display(),
        root = q(&dir.join("root")),
        state = q(&dir.join("state")),
        temp = q(&dir.join("tmp")),
        grpc = q(socket),
        ttrpc = q(&socket.with_extension("sock.ttrpc")),
        opt = q(&dir.join("opt")),
    )
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily unmounts everything at or below `dir` (a guard for mounts an engine left in
/// the test's own mount namespace; engines here run in namespaces of their own).
pub fn unmount_under(dir: &Path) {
    for p in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&p).output();
    }
}

fn unescape_mount_path(p: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
