//! The origin: Debian's `docker-registry` (distribution 2.8) on loopback, with its
//! storage in a directory the test owns, so tests can also damage it on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use shoal_protocol::Digest;

use crate::process::{Daemon, free_port, wait_for_port};

/// How the registry authenticates clients.
#[derive(Clone, Debug, Default)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// HTTP basic with one user (bcrypt htpasswd written by the harness).
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// The token flow: clients get a JWT from `realm` (see
    /// [`crate::token_server::TokenServer`]) and send it as `Bearer`.
    Token {
        /// The token server's URL, sent to clients in the challenge.
        realm: String,
        /// The service name (the tokens' audience).
        service: String,
        /// The issuer the tokens must name.
        issuer: String,
        /// PEM certificates whose keys may sign tokens.
        rootcertbundle: PathBuf,
    },
}

/// Everything a registry can be started with.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// How it authenticates clients.
    pub auth: RegistryAuth,
    /// Serve HTTPS with this certificate and key (PEM files) instead of plain HTTP.
    pub tls: Option<crate::tls::KeyPair>,
}

/// A running docker-registry.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its storage root.
    pub root: PathBuf,
    tls: bool,
    daemon: Daemon,
}

impl Registry {
    /// Starts an anonymous registry storing under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, RegistryAuth::None)
    }

    /// Starts a registry with `auth`, storing under `dir`.
    pub fn start_with(dir: &Path, auth: RegistryAuth) -> anyhow::Result<Self> {
        Self::start_opts(
            dir,
            RegistryOptions {
                auth,
                ..Default::default()
            },
        )
    }

    /// Starts a registry with `options`, storing under `dir`.
    pub fn start_opts(dir: &Path, options: RegistryOptions) -> anyhow::Result<Self> {
        let RegistryOptions { auth, tls } = options;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let root = dir.join("registry-data");
        std::fs::create_dir_all(&root)?;
        let auth_section = match &auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Basic { user, password } => {
                let htpasswd = dir.join("htpasswd");
                write_htpasswd(&htpasswd, user, password)?;
                format!(
                    "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                rootcertbundle,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                rootcertbundle.display()
            ),
        };
        let tls_section = match &tls {
            None => String::new(),
            Some(pair) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                pair.cert.display(),
                pair.key.display()
            ),
        };
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls_section}{auth_section}",
                root.display()
            ),
        )?;
        let mut daemon = Daemon::spawn(
            "docker-registry",
            Command::new("docker-registry").arg("serve").arg(&config),
            &dir.join("registry.log"),
        )?;
        wait_for_port(&mut daemon, &addr, Duration::from_secs(20))?;
        Ok(Registry {
            addr,
            root,
            tls: tls.is_some(),
            daemon,
        })
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a registry started with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Where the registry keeps blob `digest`'s bytes (to damage them in tests).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }

    /// Points `repo:tag` at the manifest stored as blob `digest` (written with
    /// [`Registry::plant_blob`]), bypassing the registry's validation.
    pub fn plant_tag(&self, repo: &str, tag: &str, digest: &Digest) -> anyhow::Result<()> {
        let repo_dir = self
            .root
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests");
        let link = format!("{digest}");
        let tag_dir = repo_dir.join("tags").join(tag);
        for dir in [
            tag_dir.join("current"),
            tag_dir.join("index/sha256").join(digest.hex()),
        ] {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("link"), &link)?;
        }
        let rev = repo_dir.join("revisions/sha256").join(digest.hex());
        std::fs::create_dir_all(&rev)?;
        std::fs::write(rev.join("link"), &link)?;
        Ok(())
    }

    /// Writes `bytes` into the registry's blob storage under their own digest.
    pub fn plant_blob(&self, bytes: &[u8]) -> anyhow::Result<Digest> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        std::fs::create_dir_all(path.parent().context("blob path has a parent")?)?;
        std::fs::write(&path, bytes)?;
        Ok(digest)
    }

    /// The last lines of the registry's log.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }

    /// Kills it: the origin goes down.
    pub fn stop(&mut self) {
        self.daemon.kill();
    }
}

fn write_htpasswd(path: &Path, user: &str, password: &str) -> anyhow::Result<()> {
    // htpasswd from apache2-utils writes bcrypt entries, the only kind distribution reads.
    crate::process::run(
        Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(path)
            .args([user, password]),
        Duration::from_secs(20),
    )?;
    Ok(())
}
