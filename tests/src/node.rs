//! A `shoal node` process, built from this workspace and started with its own data
//! directory and port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::{Daemon, free_port, run, wait_for_port};

/// The `shoal` binary of this workspace, built (once per test process) in the profile
/// the tests run in, so a test never runs a stale binary.
pub fn shoal_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("shoal-node", "shoal")
}

/// Binary `bin` of workspace package `package`, built once per process like
/// [`shoal_binary`] (the bench is run this way by its test).
pub fn workspace_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    type Built = std::collections::HashMap<String, Arc<OnceLock<Result<PathBuf, String>>>>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let cell = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{package}/{bin}"))
        .or_default()
        .clone();
    cell.get_or_init(|| build(package, bin).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<test binary> (tests) or <target>/<profile>/<binary> (bench).
    let mut profile_dir = exe.parent().context("exe has a directory")?.to_owned();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let release = profile_dir.ends_with("release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args([
        "build",
        "-q",
        "-p",
        package,
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    // Cargo gives test processes its package variables; build scripts that watch them
    // (ring's watches CARGO_MANIFEST_DIR) would see a change from a build run outside a
    // test, and rebuild half the tree each time the two alternate.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "CARGO_MANIFEST_DIR"
            || name == "CARGO_MANIFEST_PATH"
            || name == "CARGO_CRATE_NAME"
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR"
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
        {
            cmd.env_remove(name.as_ref());
        }
    }
    // Build beside the running executable: the target directory it was built in,
    // unless cargo was told one (a binary run by hand would otherwise build the whole
    // workspace again in `./target`).
    if std::env::var_os("CARGO_TARGET_DIR").is_none()
        && let Some(target) = profile_dir.parent()
    {
        cmd.arg("--target-dir").arg(target);
    }
    let out = run(&mut cmd, Duration::from_secs(1800))
        .with_context(|| format!("building the {bin} binary"))?;
    // The executable cargo reports for this workspace, not `<target>/debug/<bin>`: the
    // target directory may be shared with other checkouts (CI clones), which all
    // uplift to that one path.
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo reported no {bin} executable"))?;
    if !exe.is_file() {
        bail!("cargo built {bin} but {} is not there", exe.display());
    }
    Ok(exe)
}

/// A running node.
pub struct Node {
    /// `IP:PORT` of its mirror (`127.0.0.1:PORT` unless started with [`Node::start_on`]).
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    daemon: Option<Daemon>,
}

impl Node {
    /// Starts a node with data under `dir/node` (or `dir/<name>`), upstream `upstream`,
    /// and `extra` flags.
    pub fn start(dir: &Path, upstream: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_named(dir, "node", upstream, extra)
    }

    /// Like [`Node::start`], with a name for its directory and log.
    pub fn start_named(
        dir: &Path,
        name: &str,
        upstream: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_on(
            dir,
            name,
            &format!("127.0.0.1:{}", free_port()),
            upstream,
            extra,
        )
    }

    /// Like [`Node::start_named`], listening on `listen` (`IP:PORT`), e.g. the host end
    /// of a veth pair that engines in a network namespace reach it through.
    pub fn start_on(
        dir: &Path,
        name: &str,
        listen: &str,
        upstream: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let addr = listen.to_owned();
        let data_dir = dir.join(name);
        let mut args: Vec<String> = vec![
            "node".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            addr.clone(),
            "--upstream".into(),
            upstream.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node {
            addr,
            data_dir,
            args,
            log: dir.join(format!("{name}.log")),
            daemon: None,
        };
        node.launch()?;
        Ok(node)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(shoal_binary()?);
        cmd.args(&self.args)
            .env("RUST_LOG", "info,shoal_node=debug,libp2p_stream=debug");
        let mut daemon = Daemon::spawn("shoal node", &mut cmd, &self.log)?;
        wait_for_port(&mut daemon, &self.addr, Duration::from_secs(30))?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// The node's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `shoal stats --json` against this node.
    pub fn stats(&self) -> anyhow::Result<serde_json::Value> {
        let out = run(
            Command::new(shoal_binary()?).args(["stats", "--json", "--node", &self.url()]),
            Duration::from_secs(20),
        )?;
        serde_json::from_slice(&out.stdout).context("shoal stats --json printed no JSON")
    }

    /// `shoal ARGS --node URL` against this node, whatever its exit status.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        crate::process::run_unchecked(
            Command::new(shoal_binary()?)
                .args(args)
                .args(["--node", &self.url()]),
            Duration::from_secs(300),
        )
    }

    /// `shoal ARGS --json --node URL`, which must succeed: what it printed.
    pub fn cli_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all)?;
        anyhow::ensure!(
            out.status.success(),
            "shoal {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "shoal {} printed no JSON: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// One counter from [`Node::stats`].
    pub fn stat(&self, name: &str) -> anyhow::Result<u64> {
        self.stats()?[name]
            .as_u64()
            .with_context(|| format!("shoal stats has no {name}"))
    }

    /// Waits until the node has no layer left to ingest and holds at least `recipes`
    /// recipes; returns its stats then.
    pub fn wait_ingested(&self, recipes: u64) -> anyhow::Result<serde_json::Value> {
        let mut last = serde_json::Value::Null;
        crate::process::wait_until(
            &format!("{recipes} recipes"),
            Duration::from_secs(120),
            || {
                last = self.stats()?;
                Ok(last["ingest_pending"].as_u64() == Some(0)
                    && last["recipes"].as_u64().unwrap_or(0) >= recipes)
            },
        )
        .with_context(|| format!("last stats: {last}\n{}", self.log_tail()))?;
        Ok(last)
    }

    /// `shoal configure ENGINE ...` with this node's upstream flags.
    pub fn configure(&self, engine: &str, extra: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(shoal_binary()?);
        cmd.args(["configure", engine, "--node", &self.url()]);
        // Pass the same upstream settings the node runs with.
        let mut it = self.args.iter().skip(1);
        while let Some(a) = it.next() {
            if a == "--upstream" || a == "--registry" || a == "--config" {
                cmd.arg(a).arg(it.next().context("flag value")?);
            }
        }
        cmd.args(extra);
        let out = run(&mut cmd, Duration::from_secs(20))?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// SIGKILL: the crash a store must survive.
    pub fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Starts the node again with the same flags and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.launch()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
