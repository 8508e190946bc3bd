//! A full disk: the node's store on a small tmpfs the test mounts. A pull that does not
//! fit fails with a clear error and leaves the store consistent; once the filesystem
//! grows, the same pull succeeds byte-exact, without restarting the node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_tests::image::{Layer, Layout, http_get, noise};
use shoal_tests::process::run;
use shoal_tests::{Node, Registry};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size_mib}M"), "tmpfs"])
                .arg(at),
            Duration::from_secs(20),
        )?;
        Ok(Tmpfs(at.to_owned()))
    }

    fn resize(&self, size_mib: u64) -> anyhow::Result<()> {
        run(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size_mib}M")])
                .arg(&self.0),
            Duration::from_secs(20),
        )?;
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_pull_clearly_keeps_the_store_sound_and_recovers_when_space_returns()
-> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
    let registry = Registry::start(dir.path())?;
    let mut layout = Layout::new(&dir.path().join("layout"))?;
    let small = layout.image(
        &[Layer::new().file("a", noise(2 << 20, 1))],
        "amd64",
        Some("small"),
    )?;
    layout.push(
        "small",
        &format!("{}/disk:small", registry.addr),
        false,
        false,
    )?;
    let big = layout.image(
        &[Layer::new().file("b", noise(200 << 20, 2))],
        "amd64",
        Some("big"),
    )?;
    layout.push("big", &format!("{}/disk:big", registry.addr), false, false)?;

    // The node's data directory is the tmpfs; its log is outside it.
    // 256 MiB, of which the node keeps 160 MiB free (RocksDB's own room).
    let tmpfs = Tmpfs::mount(&dir.path().join("node"), 256)?;
    let node = Node::start(dir.path(), &registry.url(), &[])?;
    let blob_url = |d: &shoal_protocol::Digest| format!("{}/v2/disk/blobs/{d}", node.url());
    let small_layer = small.blobs[1];
    let reply = http_get(&blob_url(&small_layer), &[])?;
    assert_eq!(reply.status, 200);

    // 200 MiB of layer does not fit: the response fails (an error status, or a body
    // cut short of its length) and the log says why; the node keeps running.
    let big_layer = big.blobs[1];
    let origin = std::fs::read(registry.blob_path(&big_layer))?;
    let reply = http_get(&blob_url(&big_layer), &[]);
    let failed = match &reply {
        Ok(r) => r.status != 200 || r.body != origin,
        Err(_) => true,
    };
    assert!(
        failed,
        "a 200 MiB blob was served from a 256 MiB filesystem"
    );
    let log = node.log();
    assert!(
        log.contains("the store's disk is full"),
        "the log does not say the disk is full:\n{}",
        node.log_tail()
    );

    // What was held is still served, and the store checks clean.
    let reply = http_get(&blob_url(&small_layer), &[])?;
    assert_eq!(reply.status, 200, "{}", node.log_tail());
    let fsck = node.cli(&["fsck", "--json"])?;
    assert!(
        fsck.status.success(),
        "fsck after a full disk: {}\n{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );

    // Space returns: the same pull now succeeds, byte for byte, with no restart.
    tmpfs.resize(1024)?;
    let reply = http_get(&blob_url(&big_layer), &[])?;
    assert_eq!(reply.status, 200, "{}", node.log_tail());
    assert!(reply.body == origin, "the blob differs from the origin's");
    let fsck = node.cli(&["fsck", "--json"])?;
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    drop(node);
    Ok(())
}
