#![no_main]
//! `Manifest::parse` over arbitrary bytes, served with one of the four manifest media
//! types or none (chosen by the first byte).

use libfuzzer_sys::fuzz_target;
use shoal_protocol::manifest::{MANIFEST_TYPES, Manifest, ManifestKind};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = MANIFEST_TYPES.get(usize::from(pick % 5)).copied();
    let Ok(m) = Manifest::parse(body, content_type) else {
        return;
    };
    // An accepted manifest has one of the four types, the one it was served as if any.
    assert!(
        MANIFEST_TYPES.contains(&m.media_type.as_str()),
        "{}",
        m.media_type
    );
    if let Some(ct) = content_type {
        assert_eq!(m.media_type, ct);
    }
    let refs = m.references();
    match &m.kind {
        ManifestKind::Image { layers, .. } => assert_eq!(refs.len(), layers.len() + 1),
        ManifestKind::Index { manifests } => assert_eq!(refs.len(), manifests.len()),
    }
    // Parsing is deterministic.
    assert_eq!(Manifest::parse(body, content_type).unwrap(), m);
});
