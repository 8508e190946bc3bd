//! Node configuration: the TOML file, the flags that override it, and the validated
//! [`NodeConfig`] the rest of the node reads. Raw input is turned into a config in one
//! place ([`NodeConfig::load`]); nothing else parses flags or files.
//!
//! Every key is optional. With no file and no flags, `shoal node` keeps its data in
//! `./shoal-data`, serves the mirror on 127.0.0.1:5050 and pulls from Docker Hub.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use shoal_protocol::RepoName;
use shoal_protocol::reference::parse_registry_host;
use shoal_protocol::wire::is_node_name;
use url::Url;

use crate::gc::plan::Policy;
use crate::ingest::IngestLimits;
use crate::p2p::config::{P2pConfig, P2pFlags, P2pSection};

/// Where Docker Hub's registry API really lives; engines call it `docker.io`.
pub const DOCKER_HUB_HOST: &str = "docker.io";
const DOCKER_HUB_URL: &str = "https://registry-1.docker.io";

/// The documented example config, printed by `shoal node --print-config`.
pub const EXAMPLE: &str = include_str!("../shoal.example.toml");

/// The TOML file as written (wire form: every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upstream: Option<String>,
    open_registries: Option<bool>,
    max_blob_size: Option<u64>,
    sync_writes: Option<bool>,
    log_format: Option<LogFormat>,
    flat_repositories: Option<Vec<String>>,
    #[serde(default)]
    origin: OriginSection,
    #[serde(default)]
    ingest: IngestSection,
    #[serde(default)]
    gc: GcSection,
    #[serde(default)]
    upstreams: Vec<UpstreamSection>,
    #[serde(default)]
    p2p: P2pSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcSection {
    budget: Option<String>,
    high_water: Option<f64>,
    low_water: Option<f64>,
    max_age: Option<String>,
    keep_versions: Option<usize>,
    in_use: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginSection {
    connect_timeout_secs: Option<u64>,
    stall_timeout_secs: Option<u64>,
    manifest_timeout_secs: Option<u64>,
    serve_stale_tags: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestSection {
    max_tar_size: Option<u64>,
    max_ratio: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSection {
    host: Option<String>,
    url: String,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    client_auth: ClientAuth,
}

/// Whether clients must prove their own access to the node's private repositories.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A repository the origin does not serve anonymously is served only to clients
    /// whose basic credentials the origin accepts for it (the default).
    #[default]
    Origin,
    /// Every client that reaches the mirror gets what the node's credentials can get
    /// (for an upstream whose credentials only lift rate limits, on a trusted host).
    None,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `shoal node` that override the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct NodeFlags {
    /// TOML config file (see `shoal node --print-config` for every key and its default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name in its fleet, which `shoal seed --nodes` takes and `shoal
    /// peers` shows: ASCII letters, digits, '.', '_' and '-' [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Directory for the store and the node's state [default: ./shoal-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the mirror listens on [default: 127.0.0.1:5050].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The default upstream registry, for requests that name none
    /// [default: https://registry-1.docker.io].
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// A registry as engines name it, and where the node reaches it: HOST=URL.
    /// Repeatable. Example: --registry registry.internal:5000=http://10.0.0.5:5000
    #[arg(long = "registry", value_name = "HOST=URL")]
    pub registries: Vec<String>,
    /// A repository the mirror serves as a flat image (one layer, shoal's own), as
    /// `[REGISTRY/]REPOSITORY`, ending in `/*` for every repository under a path.
    /// Repeatable; adds to the file's `flat_repositories`.
    #[arg(long = "flat-repository", value_name = "REPO")]
    pub flat_repositories: Vec<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// fsync every store write (survives power loss, not only a killed process).
    #[arg(long)]
    pub sync_writes: bool,
    /// When the origin is down, answer tags with what they last resolved to (marked
    /// stale in a header and the log) instead of failing.
    #[arg(long)]
    pub serve_stale_tags: bool,
    /// Most bytes the store may hold before GC removes least recently used images,
    /// e.g. 20GiB; "none" for no limit [default: none].
    #[arg(long, value_name = "SIZE")]
    pub gc_budget: Option<String>,
    /// Print the documented example config and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Peer-to-peer flags.
    #[command(flatten)]
    pub p2p: P2pFlags,
}

/// Credentials the node presents to an upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// One upstream registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The registry as engines name it (`host[:port]`), the key requests use.
    pub host: String,
    /// Where the node reaches its API (scheme, host, port; `/v2/` is appended).
    pub url: Url,
    /// Credentials for it, if any.
    pub credentials: Option<Credentials>,
    /// Extra CA certificate (PEM) to trust for it.
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate. Must be asked for by name.
    pub insecure_skip_verify: bool,
    /// Whether clients must prove access to private repositories.
    pub client_auth: ClientAuth,
}

impl Upstream {
    /// An upstream reached at `https://host` with no credentials (Docker Hub's real
    /// address for `docker.io`).
    pub fn implicit(host: &str) -> anyhow::Result<Self> {
        let host = parse_registry_host(host)?;
        let url = if host == DOCKER_HUB_HOST || host == "index.docker.io" {
            DOCKER_HUB_URL.to_owned()
        } else {
            format!("https://{host}")
        };
        Ok(Upstream {
            url: Url::parse(&url).with_context(|| format!("registry {host} gives no valid URL"))?,
            host,
            credentials: None,
            ca_file: None,
            insecure_skip_verify: false,
            client_auth: ClientAuth::Origin,
        })
    }
}

/// Timeouts for talking to upstreams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginConfig {
    /// Time to establish a connection [default: 10 s].
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a blob before the fetch counts as stalled
    /// [default: 60 s].
    pub stall_timeout: Duration,
    /// Whole-request limit for manifests and token requests [default: 60 s].
    pub manifest_timeout: Duration,
    /// When the origin is down (unreachable, or 5xx), answer a tag with what it last
    /// resolved to, saying so in a log line and an `X-Shoal-Stale-Tag` header
    /// [default: false: tags are always resolved at the origin].
    pub serve_stale_tags: bool,
}

/// The validated configuration of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's name in its fleet [default: the host name, or `node` if that is not
    /// a valid name].
    pub name: String,
    /// Where the store and state live [default: ./shoal-data].
    pub data_dir: PathBuf,
    /// The mirror's address [default: 127.0.0.1:5050].
    pub listen: SocketAddr,
    /// Host key of the upstream used when a request names no registry.
    pub default_upstream: String,
    /// Configured upstreams by host.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Whether a request may name a registry that is not configured, reached over
    /// verified HTTPS [default: true].
    pub open_registries: bool,
    /// Largest blob the node will fetch [default: 64 GiB].
    pub max_blob_size: u64,
    /// fsync every store write [default: false; a killed process loses nothing either way].
    pub sync_writes: bool,
    /// Log format [default: text].
    pub log_format: LogFormat,
    /// Repositories the mirror serves as flat images [default: none].
    pub flat_repositories: Vec<FlatRepository>,
    /// Upstream timeouts.
    pub origin: OriginConfig,
    /// Bounds on layer ingest.
    pub ingest: IngestLimits,
    /// What garbage collection removes, and when.
    pub gc: Policy,
    /// The fleet this node belongs to; `None` without a fleet key (no peers).
    pub p2p: Option<P2pConfig>,
}

impl NodeConfig {
    /// Reads the file named by `flags` (if any) and applies the flags over it.
    pub fn load(flags: &NodeFlags) -> anyhow::Result<Self> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::build(file, flags)
    }

    fn build(file: FileConfig, flags: &NodeFlags) -> anyhow::Result<Self> {
        let mut upstreams = BTreeMap::new();
        for section in file.upstreams {
            let up = upstream_from_section(section)?;
            upstreams.insert(up.host.clone(), up);
        }
        for spec in &flags.registries {
            let (host, url) = spec
                .split_once('=')
                .with_context(|| format!("--registry {spec:?} is not HOST=URL"))?;
            let up = upstream_from_url(Some(host), url)?;
            upstreams.insert(up.host.clone(), up);
        }
        let default_url = flags.upstream.clone().or(file.upstream);
        let default_upstream = match default_url {
            Some(url) => {
                let up = upstream_from_url(None, &url)?;
                let host = up.host.clone();
                // A configured upstream of the same host keeps its credentials and TLS
                // settings; the flag only says which one is the default.
                upstreams.entry(host.clone()).or_insert(up);
                host
            }
            None => DOCKER_HUB_HOST.to_owned(),
        };
        let secs = |v: Option<u64>, d: u64| Duration::from_secs(v.unwrap_or(d));
        let name = match flags.name.clone().or(file.name) {
            Some(name) => {
                if !is_node_name(&name) {
                    bail!(
                        "node name {name:?} is not valid: use 1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
                    );
                }
                name
            }
            None => host_name(),
        };
        Ok(NodeConfig {
            p2p: P2pConfig::build(file.p2p, &flags.p2p, &name)?,
            name,
            data_dir: flags
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("shoal-data")),
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5050))),
            default_upstream,
            upstreams,
            open_registries: file.open_registries.unwrap_or(true),
            max_blob_size: file.max_blob_size.unwrap_or(64 << 30),
            sync_writes: flags.sync_writes || file.sync_writes.unwrap_or(false),
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            flat_repositories: file
                .flat_repositories
                .unwrap_or_default()
                .iter()
                .chain(&flags.flat_repositories)
                .map(|p| FlatRepository::parse(p))
                .collect::<anyhow::Result<_>>()?,
            origin: OriginConfig {
                connect_timeout: secs(file.origin.connect_timeout_secs, 10),
                stall_timeout: secs(file.origin.stall_timeout_secs, 60),
                manifest_timeout: secs(file.origin.manifest_timeout_secs, 60),
                serve_stale_tags: flags.serve_stale_tags
                    || file.origin.serve_stale_tags.unwrap_or(false),
            },
            ingest: {
                let d = IngestLimits::default();
                IngestLimits {
                    max_tar_size: file.ingest.max_tar_size.unwrap_or(d.max_tar_size),
                    max_ratio: file.ingest.max_ratio.unwrap_or(d.max_ratio),
                }
            },
            gc: gc_policy(file.gc, flags.gc_budget.as_deref())?,
        })
    }

    /// The upstream for requests that name `host`, or the default one for `None`.
    pub fn upstream(&self, host: Option<&str>) -> anyhow::Result<Upstream> {
        let host = match host {
            None => self.default_upstream.as_str(),
            Some(h) => h,
        };
        let key = parse_registry_host(host)?;
        let key = if key == "index.docker.io" {
            DOCKER_HUB_HOST.to_owned()
        } else {
            key
        };
        if let Some(up) = self.upstreams.get(&key) {
            return Ok(up.clone());
        }
        if key == self.default_upstream || self.open_registries {
            return Upstream::implicit(&key);
        }
        bail!("registry {key} is not configured on this node (open_registries = false)")
    }
}

impl NodeConfig {
    /// Whether the mirror serves `repo` of registry `host` as a flat image.
    pub fn serves_flat(&self, host: &str, repo: &RepoName) -> bool {
        self.flat_repositories.iter().any(|f| f.matches(host, repo))
    }
}

/// A `flat_repositories` entry: `[REGISTRY/]REPOSITORY`, or a path ending in `/*`.
/// The first component names a registry when it has a `.` or `:` or is `localhost`,
/// as engines read image names; without one, the entry matches in every registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatRepository {
    /// The registry (`host[:port]`), if named.
    pub host: Option<String>,
    /// The repository, or the path before `/*`.
    pub repo: String,
    /// Whether every repository under `repo` matches (the entry ended in `/*`; `*`
    /// alone matches every repository).
    pub under: bool,
}

impl FlatRepository {
    /// Parses an entry.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bad = || format!("flat repository {text:?} is not [REGISTRY/]REPOSITORY[/*]");
        let (host, rest) = match text.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(parse_registry_host(first).with_context(bad)?), rest)
            }
            _ => (None, text),
        };
        let (repo, under) = if rest == "*" {
            (String::new(), true)
        } else if let Some(path) = rest.strip_suffix("/*") {
            (path.to_owned(), true)
        } else {
            (rest.to_owned(), false)
        };
        if !repo.is_empty() {
            RepoName::parse(&repo).with_context(bad)?;
        } else if !under {
            bail!(bad());
        }
        Ok(FlatRepository { host, repo, under })
    }

    /// Whether it names `repo` of registry `host`.
    pub fn matches(&self, host: &str, repo: &RepoName) -> bool {
        if self.host.as_deref().is_some_and(|h| h != host) {
            return false;
        }
        let name = repo.as_str();
        if !self.under {
            return name == self.repo;
        }
        self.repo.is_empty()
            || name
                .strip_prefix(self.repo.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The host's name as the node's default name, or `node` if it is not a valid one.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| is_node_name(h))
        .unwrap_or_else(|| "node".to_owned())
}

fn gc_policy(s: GcSection, budget_flag: Option<&str>) -> anyhow::Result<Policy> {
    let d = Policy::default();
    let budget = match budget_flag.or(s.budget.as_deref()) {
        None => d.budget,
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) => Some(parse_size(v).with_context(|| format!("gc budget {v:?}"))?),
    };
    let off_or = |v: Option<&str>, default: Option<Duration>, what: &str| match v {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("off") || v == "0" => Ok(None),
        Some(v) => parse_duration(v)
            .map(Some)
            .with_context(|| format!("gc {what} {v:?}")),
    };
    let policy = Policy {
        budget,
        high_water: s.high_water.unwrap_or(d.high_water),
        low_water: s.low_water.unwrap_or(d.low_water),
        max_age: off_or(s.max_age.as_deref(), d.max_age, "max_age")?,
        keep_versions: match s.keep_versions {
            None => d.keep_versions,
            Some(0) => None,
            Some(n) => Some(n),
        },
        in_use: off_or(s.in_use.as_deref(), Some(d.in_use), "in_use")?.unwrap_or_default(),
        interval: off_or(s.interval.as_deref(), Some(d.interval), "interval")?
            .context("gc interval cannot be off; set a long one instead")?,
    };
    if !(0.0 < policy.low_water
        && policy.low_water <= policy.high_water
        && policy.high_water <= 1.0)
    {
        bail!(
            "gc water marks must satisfy 0 < low_water <= high_water <= 1 (got {} and {})",
            policy.low_water,
            policy.high_water
        );
    }
    Ok(policy)
}

/// `20GiB`, `512MB`, `1048576`: a byte count with an optional binary (KiB, MiB, GiB,
/// TiB) or decimal (KB, MB, GB, TB) unit.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("{text:?} does not start with a number"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => bail!("unknown size unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"),
    };
    Ok((number * scale as f64) as u64)
}

/// `90s`, `15m`, `2h`, `30d`, `1w`: a duration in one unit.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} does not start with a whole number"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        "w" => 7 * 24 * 3600,
        other => bail!("unknown duration unit {other:?} (use s, m, h, d or w)"),
    };
    Ok(Duration::from_secs(number.saturating_mul(secs)))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
}

fn upstream_from_url(host: Option<&str>, url: &str) -> anyhow::Result<Upstream> {
    let parsed = Url::parse(url).with_context(|| format!("upstream URL {url:?} is invalid"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("upstream URL {url:?} must be http:// or https:// with a host");
    }
    let host = match host {
        Some(h) => parse_registry_host(h)?,
        None => match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_owned(),
        },
    };
    let host = if host == "registry-1.docker.io" {
        DOCKER_HUB_HOST.to_owned()
    } else {
        host
    };
    Ok(Upstream {
        host,
        url: parsed,
        credentials: None,
        ca_file: None,
        insecure_skip_verify: false,
        client_auth: ClientAuth::Origin,
    })
}

fn upstream_from_section(s: UpstreamSection) -> anyhow::Result<Upstream> {
    let mut up = upstream_from_url(s.host.as_deref(), &s.url)?;
    let password = match (s.password, s.password_file) {
        (Some(_), Some(_)) => bail!(
            "upstream {}: give password or password_file, not both",
            up.host
        ),
        (Some(p), None) => Some(p),
        (None, Some(f)) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("upstream {}: cannot read {}", up.host, f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        (None, None) => None,
    };
    up.credentials = match (s.username, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => None,
        _ => bail!("upstream {}: username and password go together", up.host),
    };
    up.ca_file = s.ca_file;
    up.insecure_skip_verify = s.insecure_skip_verify;
    up.client_auth = s.client_auth;
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(toml_text: &str, flags: NodeFlags) -> anyhow::Result<NodeConfig> {
        NodeConfig::build(toml::from_str(toml_text)?, &flags)
    }

    #[test]
    fn defaults_need_nothing() {
        let c = build("", NodeFlags::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:5050");
        assert_eq!(c.data_dir, PathBuf::from("shoal-data"));
        assert_eq!(c.default_upstream, "docker.io");
        assert_eq!(
            c.upstream(None).unwrap().url.as_str(),
            "https://registry-1.docker.io/"
        );
    }

    #[test]
    fn a_node_has_a_valid_name_by_default_and_refuses_a_bad_one() {
        let c = build("", NodeFlags::default()).unwrap();
        assert!(is_node_name(&c.name), "{:?}", c.name);
        let c = build("name = \"web-1\"", NodeFlags::default()).unwrap();
        assert_eq!(c.name, "web-1");
        let flags = NodeFlags {
            name: Some("web 1".into()),
            ..Default::default()
        };
        let e = build("", flags).unwrap_err();
        assert!(e.to_string().contains("\"web 1\" is not valid"), "{e}");
    }

    #[test]
    fn the_example_config_is_valid() {
        build(EXAMPLE, NodeFlags::default()).unwrap();
    }

    #[test]
    fn flags_override_the_file() {
        let flags = NodeFlags {
            listen: Some("127.0.0.1:6000".parse().unwrap()),
            upstream: Some("http://127.0.0.1:5000".into()),
            registries: vec!["127.0.0.1:5999=http://127.0.0.1:5000".into()],
            ..Default::default()
        };
        let c = build("listen = \"0.0.0.0:1\"\nopen_registries = false", flags).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:6000");
        assert_eq!(c.default_upstream, "127.0.0.1:5000");
        assert_eq!(
            c.upstream(None).unwrap().url.as_str(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(
            c.upstream(Some("127.0.0.1:5999")).unwrap().url.as_str(),
            "http://127.0.0.1:5000/"
        );
        assert!(c.upstream(Some("elsewhere.example")).is_err());
    }

    #[test]
    fn upstream_sections_carry_credentials() {
        let c = build(
            "[[upstreams]]\nhost = \"reg.example:443\"\nurl = \"https://reg.example\"\nusername = \"u\"\npassword = \"p\"",
            NodeFlags::default(),
        )
        .unwrap();
        let up = c.upstream(Some("reg.example:443")).unwrap();
        assert_eq!(up.credentials.unwrap().username, "u");
        assert!(
            build(
                "[[upstreams]]\nurl = \"https://x\"\nusername = \"u\"",
                NodeFlags::default()
            )
            .is_err()
        );
        assert!(build("bogus = 1", NodeFlags::default()).is_err());
        assert!(build("[[upstreams]]\nurl = \"ftp://x\"", NodeFlags::default()).is_err());
    }

    #[test]
    fn gc_settings_parse_with_units_and_can_be_turned_off() {
        let c = build(
            "[gc]\nbudget = \"2GiB\"\nmax_age = \"off\"\nkeep_versions = 0\ninterval = \"15m\"",
            NodeFlags::default(),
        )
        .unwrap();
        assert_eq!(c.gc.budget, Some(2 << 30));
        assert_eq!(c.gc.max_age, None);
        assert_eq!(c.gc.keep_versions, None);
        assert_eq!(c.gc.interval, Duration::from_secs(900));
        let flags = NodeFlags {
            gc_budget: Some("500MB".into()),
            ..Default::default()
        };
        assert_eq!(build("", flags).unwrap().gc.budget, Some(500_000_000));
        assert_eq!(
            build("", NodeFlags::default()).unwrap().gc,
            Policy::default()
        );
        assert!(build("[gc]\nbudget = \"lots\"", NodeFlags::default()).is_err());
        assert!(
            build(
                "[gc]\nhigh_water = 0.5\nlow_water = 0.9",
                NodeFlags::default()
            )
            .is_err()
        );
        assert!(build("[gc]\ninterval = \"off\"", NodeFlags::default()).is_err());
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn flat_repositories_match_by_registry_name_and_path() {
        let flags = NodeFlags {
            flat_repositories: vec!["apps/*".into()],
            ..Default::default()
        };
        let c = build(
            "flat_repositories = [\"reg.internal:5000/web\", \"library/debian\"]",
            flags,
        )
        .unwrap();
        let repo = |r: &str| RepoName::parse(r).unwrap();
        assert!(c.serves_flat("reg.internal:5000", &repo("web")));
        assert!(
            !c.serves_flat("docker.io", &repo("web")),
            "another registry"
        );
        assert!(c.serves_flat("docker.io", &repo("library/debian")));
        assert!(c.serves_flat("anywhere:5000", &repo("library/debian")));
        assert!(!c.serves_flat("docker.io", &repo("library/debian-slim")));
        assert!(c.serves_flat("docker.io", &repo("apps/api")));
        assert!(c.serves_flat("docker.io", &repo("apps/team/api")));
        assert!(!c.serves_flat("docker.io", &repo("apps")), "only under it");
        assert!(!c.serves_flat("docker.io", &repo("appsx/api")));
        let every = FlatRepository::parse("localhost/*").unwrap();
        assert!(every.matches("localhost", &repo("any/thing")));
        assert!(!every.matches("docker.io", &repo("any")));
        for bad in ["", "reg.internal:5000/", "Apps", "web/**", "reg:x/web"] {
            assert!(FlatRepository::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            build("", NodeFlags::default())
                .unwrap()
                .flat_repositories
                .is_empty()
        );
    }
}
