//! Concurrent pulls of one blob fetch it from the origin once, and clients get bytes
//! while that fetch is still running.

use std::io::{Read, Write};
use std::time::Duration;

use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Layer, Layout, http_get, noise};
use shoal_tests::process::wait_until;
use shoal_tests::proxy::Faults;

#[test]
fn four_clients_share_one_origin_fetch_and_stream_before_it_ends() -> anyhow::Result<()> {
    let m = Mirror::start_behind_proxy(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(
        &[Layer::new().file("big", noise(12 << 20, 11))],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/sf:v1", m.registry.addr), false, false)?;
    let layer = built.blobs[1];
    let origin = std::fs::read(m.registry.blob_path(&layer))?;
    let size = origin.len() as u64;
    // 4 MB/s: the fetch takes about three seconds, long enough to watch it.
    m.proxy().set_faults(Faults {
        rate: Some(4_000_000),
        ..Default::default()
    });
    let before = m.proxy().bytes_down();

    // A raw client reads the first 2 MiB of body, then looks at the node: the blob is
    // still partial, so those bytes came before the fetch finished.
    let mut raw = std::net::TcpStream::connect(&m.node.addr)?;
    raw.set_read_timeout(Some(Duration::from_secs(60)))?;
    let path = m.node_blob_url("sf", &layer).replace(&m.node.url(), "");
    write!(
        raw,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        m.node.addr
    )?;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < (2 << 20) + 1024 {
        let n = raw.read(&mut buf)?;
        anyhow::ensure!(n > 0, "the node closed the stream early");
        got.extend_from_slice(&buf[..n]);
    }
    let s = m.node.stats()?;
    assert_eq!(s["partial_blobs"].as_u64(), Some(1), "still fetching: {s}");
    assert_eq!(s["blobs"].as_u64(), Some(0), "{s}");

    // Three more clients join the same fetch.
    let urls: Vec<String> = (0..3).map(|_| m.node_blob_url("sf", &layer)).collect();
    let handles: Vec<_> = urls
        .into_iter()
        .map(|u| std::thread::spawn(move || http_get(&u, &[])))
        .collect();
    for h in handles {
        let reply = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        assert_eq!(reply.status, 200);
        assert!(
            reply.body == origin,
            "a client got other bytes than the origin's"
        );
    }
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest)?;
    got.extend_from_slice(&rest);
    let body_at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(0);
    assert!(
        got[body_at..] == origin[..],
        "the streaming client got other bytes"
    );

    let moved = m.proxy().bytes_down() - before;
    assert!(
        moved < size + size / 10,
        "origin sent {moved} bytes for a {size}-byte blob and four clients"
    );
    assert_eq!(m.node.stat("origin_fetches")?, 1);
    wait_until("the blob to be complete", Duration::from_secs(30), || {
        Ok(m.node.stat("blobs")? == 1)
    })?;
    Ok(())
}
