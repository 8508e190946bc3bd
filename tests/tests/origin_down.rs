//! The origin down or failing: what the node holds still serves by digest, tags fail
//! with a clear error (or, when configured, answer from their last resolution and say
//! so), and an origin answering 5xx gets its status through to the client.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::{ACCEPT_ALL, Mirror};
use shoal_tests::image::{Layer, Layout, http_get, noise};
use shoal_tests::{Node, free_port};

fn message(body: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    doc["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn with_the_origin_down_held_images_pull_by_digest_and_tags_fail_clearly_or_serve_stale()
-> anyhow::Result<()> {
    let mut m = Mirror::start(&[])?;
    // A second node on the same origin that may answer tags from their last resolution.
    let stale_node = Node::start_named(
        m.dir.path(),
        "stale",
        &m.registry.url(),
        &[
            "--registry",
            &format!("{}={}", m.alias, m.registry.url()),
            "--serve-stale-tags",
        ],
    )?;
    let conf = m.registries_conf()?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(
        &[Layer::new().file("app", noise(3 << 20, 9))],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/down:v1", m.registry.addr), false, false)?;
    let image = format!("{}/down:v1", m.alias);
    skopeo_copy(&conf, &image, &m.path("warm"), &[])?;
    let tag_url = |node: &Node| format!("{}/v2/down/manifests/v1?ns={}", node.url(), m.alias);
    let warm = http_get(&tag_url(&stale_node), &[&format!("Accept: {ACCEPT_ALL}")])?;
    assert_eq!(warm.status, 200);

    m.registry.stop();

    // By digest, everything held is served with no origin at all.
    let by_digest = format!("{}/down@{}", m.alias, built.manifest);
    let pulled = skopeo_copy(&conf, &by_digest, &m.path("cold-digest"), &[])?;
    assert_eq!(pulled.manifest, built.manifest);

    // By tag, the default node says the origin is unreachable.
    let reply = http_get(&tag_url(&m.node), &[&format!("Accept: {ACCEPT_ALL}")])?;
    assert!(reply.status >= 500, "{}", reply.status);
    let text = message(&reply.body);
    assert!(text.contains("unreachable"), "{text}");

    // The node configured for it answers with the last resolution, and says so.
    let reply = http_get(&tag_url(&stale_node), &[&format!("Accept: {ACCEPT_ALL}")])?;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(built.manifest.to_string().as_str())
    );
    assert!(
        reply
            .header("x-shoal-stale-tag")
            .is_some_and(|v| v.starts_with("resolved-at=")),
        "no stale marker"
    );
    assert!(
        stale_node
            .log()
            .contains("answering the tag with its last resolution"),
        "{}",
        stale_node.log_tail()
    );
    // A tag it never resolved still fails.
    let reply = http_get(
        &format!("{}/v2/down/manifests/v2?ns={}", stale_node.url(), m.alias),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    assert!(reply.status >= 500);
    Ok(())
}

/// A registry that answers every request with 503 and a distribution error document.
struct Failing {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Failing {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Ok(Failing { addr, stop })
    }
}

impl Drop for Failing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_origin_answering_503_gets_its_status_and_message_through() -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let failing = Failing::start()?;
    let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
    let alias = format!("127.0.0.1:{}", free_port());
    let node = Node::start(
        dir.path(),
        &format!("http://{}", failing.addr),
        &["--registry", &format!("{alias}=http://{}", failing.addr)],
    )?;
    for path in [
        "down/manifests/v1".to_owned(),
        format!("down/blobs/{}", shoal_protocol::Digest::of(b"x")),
    ] {
        let reply = http_get(
            &format!("{}/v2/{path}?ns={alias}", node.url()),
            &[&format!("Accept: {ACCEPT_ALL}")],
        )?;
        assert_eq!(reply.status, 503, "{path}");
        assert!(
            String::from_utf8_lossy(&reply.body).contains("maintenance"),
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    // Nothing was kept.
    assert_eq!(node.stat("blobs")?, 0);
    Ok(())
}
