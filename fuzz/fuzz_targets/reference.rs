#![no_main]
//! Repository names, references, registry hosts and digests over arbitrary UTF-8.

use libfuzzer_sys::fuzz_target;
use shoal_protocol::Digest;
use shoal_protocol::reference::{
    self, Reference, RepoName, parse_registry_host, registry_in_path, registry_path_component,
};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(name) = RepoName::parse(s) {
        assert_eq!(name.as_str(), s);
        assert_eq!(name.to_string(), s);
        assert!(s.len() <= reference::MAX_NAME_LEN);
    }

    if let Ok(r) = Reference::parse(s) {
        // Tags and digests are both kept exactly as written.
        assert_eq!(r.to_string(), s);
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }

    if let Some(host) = registry_in_path(s) {
        // What the path names is a host an engine could name, and writing it back as a
        // path component gives the same host.
        assert!(parse_registry_host(&host).is_ok(), "{host:?} from {s:?}");
        assert_eq!(
            registry_in_path(&registry_path_component(&host)).as_deref(),
            Some(host.as_str()),
            "path component round trip of {host:?}"
        );
    }

    if let Ok(host) = parse_registry_host(s) {
        assert_eq!(host, s.to_ascii_lowercase());
        assert_eq!(parse_registry_host(&host).as_deref(), Ok(host.as_str()));
    }

    if let Ok(d) = s.parse::<Digest>() {
        let text = d.to_string();
        assert_eq!(text, s);
        assert_eq!(text.parse::<Digest>().unwrap(), d);
    }
});
