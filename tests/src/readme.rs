//! README.md's engine steps, run as written: each ```` ```sh NAME ```` block is a
//! shell script. [`Steps::run`] runs one with `sh -eu` after moving `/etc` under a test
//! directory and replacing the README's example names with the test's, and with shell
//! functions standing in for the commands that reach system daemons (`systemctl`, and
//! whatever engine the test runs privately).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

/// The README's example registry, which the tests replace with their alias.
pub const EXAMPLE_REGISTRY: &str = "registry.internal:5000";
/// The README's node address.
pub const EXAMPLE_NODE: &str = "127.0.0.1:5050";

/// Every named shell block of README.md.
pub fn blocks() -> anyhow::Result<Vec<(String, String)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut current {
            None => {
                if let Some(name) = line.strip_prefix("```sh ") {
                    current = Some((name.trim().to_owned(), String::new()));
                }
            }
            Some((_, body)) if line.trim_end() != "```" => {
                body.push_str(line);
                body.push('\n');
            }
            Some(_) => out.extend(current.take()),
        }
    }
    Ok(out)
}

/// How a test runs README steps.
pub struct Steps {
    /// Stands in for `/`: `/etc/...` becomes `ROOT/etc/...`.
    pub root: PathBuf,
    /// (README text, replacement) pairs, applied in order.
    pub replace: Vec<(String, String)>,
    /// Shell defined before the block (functions for engines and `systemctl`).
    pub preamble: String,
}

impl Steps {
    /// Steps under `root`, with `shoal` the binary being tested and `systemctl` a no-op
    /// (the test restarts its private daemons itself).
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        let shoal = crate::node::shoal_binary()?;
        Ok(Steps {
            root: root.to_owned(),
            replace: Vec::new(),
            preamble: format!(
                "shoal() {{ '{}' \"$@\"; }}\nsystemctl() {{ :; }}\n",
                shoal.display()
            ),
        })
    }

    /// Replaces `from` with `to` in every block run.
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        self.replace.push((from.to_owned(), to.to_owned()));
        self
    }

    /// Adds shell to the preamble.
    pub fn define(mut self, shell: &str) -> Self {
        self.preamble.push_str(shell);
        self.preamble.push('\n');
        self
    }

    /// The block `name` as it will run.
    pub fn script(&self, name: &str) -> anyhow::Result<String> {
        let (_, body) = blocks()?
            .into_iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("README.md has no ```sh {name} block"))?;
        let mut body = body.replace("/etc/", &format!("{}/etc/", self.root.display()));
        for (from, to) in &self.replace {
            body = body.replace(from.as_str(), to);
        }
        Ok(format!("{}{body}", self.preamble))
    }

    /// Runs the block `name`; its stdout.
    pub fn run(&self, name: &str) -> anyhow::Result<String> {
        let script = self.script(name)?;
        for dir in ["etc/containers", "etc/containerd", "etc/docker"] {
            std::fs::create_dir_all(self.root.join(dir))?;
        }
        let out = crate::process::run(
            Command::new("sh").args(["-eu", "-c", &script]),
            Duration::from_secs(300),
        )
        .with_context(|| format!("README step {name}:\n{script}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
