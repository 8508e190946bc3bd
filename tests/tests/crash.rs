//! kill -9 at any moment leaves a store that opens, is consistent, and finishes the
//! pull without fetching again what it had verified.

use std::time::Duration;

use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Layer, Layout, http_get, noise};
use shoal_tests::process::wait_until;
use shoal_tests::proxy::Faults;

#[test]
fn a_node_killed_mid_fetch_resumes_and_refetches_only_the_rest() -> anyhow::Result<()> {
    let m = Mirror::start_behind_proxy(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(
        &[Layer::new().file("big", noise(16 << 20, 21))],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/crash:v1", m.registry.addr), false, false)?;
    let layer = built.blobs[1];
    let origin = std::fs::read(m.registry.blob_path(&layer))?;
    let size = origin.len() as u64;
    let mut node = m.node;

    // Kill the node twice at different depths of the same fetch.
    let mut stored_at_kill = 0;
    for depth in [3u64 << 20, 9 << 20] {
        m.proxy.as_ref().unwrap().set_faults(Faults {
            rate: Some(3_000_000),
            ..Default::default()
        });
        let url = format!("{}/v2/crash/blobs/{layer}?ns={}", node.url(), m.alias);
        let client = std::thread::spawn(move || http_get(&url, &[]));
        wait_until("the fetch to store pieces", Duration::from_secs(60), || {
            Ok(node.stat("piece_bytes").unwrap_or(0) >= depth)
        })?;
        node.kill9();
        let _ = client.join();
        node.restart()?;
        let s = node.stats()?;
        assert_eq!(s["blobs"].as_u64(), Some(0), "{s}");
        assert_eq!(
            s["partial_blobs"].as_u64(),
            Some(1),
            "the partial survives the kill: {s}"
        );
        stored_at_kill = s["piece_bytes"].as_u64().unwrap();
        assert!(stored_at_kill >= depth, "{s}");
    }

    m.proxy.as_ref().unwrap().set_faults(Faults::default());
    let before = m.proxy.as_ref().unwrap().bytes_down();
    let reply = http_get(
        &format!("{}/v2/crash/blobs/{layer}?ns={}", node.url(), m.alias),
        &[],
    )?;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == origin,
        "the resumed blob differs from the origin's"
    );
    let moved = m.proxy.as_ref().unwrap().bytes_down() - before;
    assert!(
        moved <= size - stored_at_kill + 16_384,
        "refetched {moved} bytes, {stored_at_kill} of {size} were stored"
    );
    let s = node.stats()?;
    assert_eq!(
        (s["blobs"].as_u64(), s["partial_blobs"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    assert_eq!(
        s["piece_bytes"].as_u64(),
        Some(size),
        "no orphan pieces: {s}"
    );

    // And once more after a kill with nothing in flight: the complete blob is served
    // from the store with no origin traffic.
    node.kill9();
    node.restart()?;
    let before = m.proxy.as_ref().unwrap().bytes_down();
    let reply = http_get(
        &format!("{}/v2/crash/blobs/{layer}?ns={}", node.url(), m.alias),
        &[],
    )?;
    assert!(reply.body == origin);
    assert_eq!(m.proxy.as_ref().unwrap().bytes_down(), before);
    Ok(())
}
