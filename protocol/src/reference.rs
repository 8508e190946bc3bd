//! Repository names, tags and registry hosts as they appear in distribution-spec URLs.
//!
//! Names follow the distribution spec's grammar; anything else is refused before it can
//! reach a store key, a log line or an upstream URL.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted (the distribution spec's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The repository name breaks the distribution spec's grammar.
    #[error(
        "repository name {0:?} is invalid (lowercase components of [a-z0-9] joined by . _ __ or -, separated by /)"
    )]
    BadName(String),
    /// The tag breaks the grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error("tag {0:?} is invalid")]
    BadTag(String),
    /// A reference that looks like a digest but is not one shoal accepts.
    #[error(transparent)]
    BadDigest(#[from] DigestError),
    /// A registry host that is neither a host name nor host:port.
    #[error("registry host {0:?} is invalid")]
    BadHost(String),
}

/// A validated repository name, such as `library/debian`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates `name` against the distribution spec's grammar.
    pub fn parse(name: &str) -> Result<Self, ReferenceError> {
        let bad = || ReferenceError::BadName(name.chars().take(80).collect());
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(bad());
        }
        if !name.split('/').all(valid_component) {
            return Err(bad());
        }
        Ok(RepoName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &c[start..i] {
            "." | "_" | "__" => {}
            sep if sep.bytes().all(|x| x == b'-') => {}
            _ => return false,
        }
    }
    true
}

/// What a manifest request names: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag, resolved at the origin.
    Tag(String),
    /// An immutable digest.
    Digest(Digest),
}

impl Reference {
    /// Parses the `<reference>` of `/v2/<name>/manifests/<reference>`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.contains(':') {
            return Ok(Reference::Digest(s.parse()?));
        }
        let b = s.as_bytes();
        let head_ok = b
            .first()
            .is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_');
        let rest_ok = b
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if !head_ok || !rest_ok || s.len() > MAX_TAG_LEN {
            return Err(ReferenceError::BadTag(s.chars().take(80).collect()));
        }
        Ok(Reference::Tag(s.to_owned()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => fmt::Display::fmt(d, f),
        }
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether the first component of a mirror request path names a registry rather than a
/// repository: engines that cannot pass a registry any other way (podman and CRI-O
/// `[[registry.mirror]]` locations) put it there. A component names a registry when it
/// has a dot, is `localhost`, or spells a port as `host_port` (a `:` is not allowed in a
/// repository path, so `127.0.0.1_5000` stands for `127.0.0.1:5000`). Returns the host
/// as `host[:port]`.
pub fn registry_in_path(component: &str) -> Option<String> {
    if let Some((host, port)) = component.rsplit_once('_')
        && !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && valid_host(host)
        && (host.contains('.') || host == "localhost")
    {
        return Some(format!("{host}:{port}"));
    }
    if (component.contains('.') || component == "localhost") && valid_host(component) {
        return Some(component.to_owned());
    }
    None
}

/// The path component that stands for `host[:port]` (see [`registry_in_path`]).
pub fn registry_path_component(host: &str) -> String {
    host.replace(':', "_")
}

/// Validates a registry host as an engine names it: `name[:port]` or `[v6]:port`.
pub fn parse_registry_host(s: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::BadHost(s.chars().take(80).collect());
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, Some(p)),
        _ => (s, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let v6 = host.starts_with('[') && host.ends_with(']');
    if !(v6 || valid_host(host)) {
        return Err(bad());
    }
    Ok(s.to_ascii_lowercase())
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_from_the_spec() {
        for ok in [
            "a",
            "library/debian",
            "a.b/c_d/e__f",
            "x-y--z/0",
            "127.0.0.1_5000/app",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a/../b", "a b",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_and_digests() {
        assert_eq!(
            Reference::parse("v1.0_rc-2").unwrap(),
            Reference::Tag("v1.0_rc-2".into())
        );
        assert!(Reference::parse(".hidden").is_err());
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse(&"t".repeat(129)).is_err());
        let d = Digest::of(b"x");
        assert_eq!(
            Reference::parse(&d.to_string()).unwrap(),
            Reference::Digest(d)
        );
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(ReferenceError::BadDigest(_))
        ));
    }

    #[test]
    fn registries_in_paths() {
        assert_eq!(registry_in_path("docker.io").as_deref(), Some("docker.io"));
        assert_eq!(
            registry_in_path("127.0.0.1_5000").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            registry_in_path("localhost_5000").as_deref(),
            Some("localhost:5000")
        );
        assert_eq!(registry_in_path("localhost").as_deref(), Some("localhost"));
        assert_eq!(registry_in_path("library"), None);
        assert_eq!(registry_in_path("my_app"), None);
        assert_eq!(registry_path_component("127.0.0.1:5000"), "127.0.0.1_5000");
    }

    #[test]
    fn registry_hosts() {
        assert!(parse_registry_host("127.0.0.1:5000").is_ok());
        assert!(parse_registry_host("Registry.Example.com").is_ok());
        assert!(parse_registry_host("[::1]:5000").is_ok());
        assert!(parse_registry_host("a b").is_err());
        assert!(parse_registry_host("host:").is_err());
        assert!(parse_registry_host("host:99999999").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,300}") {
            let _ = RepoName::parse(&s);
            let _ = Reference::parse(&s);
            let _ = registry_in_path(&s);
            let _ = parse_registry_host(&s);
        }
    }
}
