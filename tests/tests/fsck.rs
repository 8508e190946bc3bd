//! `shoal fsck` finds a piece damaged on disk, drops its blob, and the next pull fetches
//! it again from the origin, byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_protocol::{PIECE_SIZE, PieceId};
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Layer, Layout, noise};
use shoal_tests::node::shoal_binary;
use shoal_tests::process::run_unchecked;

/// `shoal fsck --json` against the node: its exit code and report.
fn fsck(m: &Mirror) -> anyhow::Result<(Option<i32>, serde_json::Value)> {
    let out = run_unchecked(
        Command::new(shoal_binary()?).args(["fsck", "--json", "--node", &m.node.url()]),
        Duration::from_secs(120),
    )?;
    let report = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "shoal fsck printed no report ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code(), report))
}

/// Every file under `dir`.
fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// Flips one byte of every copy of `needle` in the database's data files (BlobDB blob
/// files and SSTs); returns the files changed. Copies in a write-ahead log are left:
/// a damaged log record is dropped whole at recovery, which is loss, not damage.
fn damage(db: &Path, needle: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut changed = Vec::new();
    for path in files(db)? {
        let name = path.display().to_string();
        if !(name.ends_with(".blob") || name.ends_with(".sst")) {
            continue;
        }
        let mut bytes = std::fs::read(&path)?;
        let hits: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
            continue;
        }
        for at in hits {
            bytes[at + needle.len() / 2] ^= 0x40;
        }
        std::fs::write(&path, &bytes)?;
        changed.push(name);
    }
    Ok(changed)
}

#[test]
fn fsck_finds_a_piece_damaged_on_disk_and_the_next_pull_fetches_it_again() -> anyhow::Result<()> {
    let mut m = Mirror::start(&[])?;
    let conf = m.registries_conf()?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(
        &[Layer::new()
            .file("data/a", noise(3 << 20, 31))
            .file("data/b", "small\n")],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/fsck:v1", m.registry.addr), false, false)?;
    let image = format!("{}/fsck:v1", m.alias);
    let layer = built.blobs[1];
    let origin = std::fs::read(m.registry.blob_path(&layer))?;
    assert!(
        origin.len() as u64 > 2 * PIECE_SIZE,
        "the layer spans 3 pieces"
    );

    skopeo_copy(&conf, &image, &m.path("out-1"), &[])?;
    m.node.wait_ingested(1)?;
    let (code, report) = fsck(&m)?;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["clean"], true, "{report}");
    assert!(report["pieces_checked"].as_u64().unwrap() >= 5, "{report}");
    assert!(report["chunks_checked"].as_u64().unwrap() >= 2, "{report}");
    assert!(
        report["bytes_checked"].as_u64().unwrap() > origin.len() as u64,
        "{report}"
    );

    // A restart replays the write-ahead log into data files, where a disk would rot.
    m.node.restart()?;
    m.node.kill9();
    let piece = &origin[PIECE_SIZE as usize..2 * PIECE_SIZE as usize];
    let needle = &piece[4096..4096 + 64];
    let db = m.node.data_dir.join("store");
    let changed = damage(&db, needle)?;
    assert!(
        !changed.is_empty(),
        "no data file under {} holds the layer's second piece: {:?}",
        db.display(),
        files(&db)?
    );
    m.node.restart()?;

    let (code, report) = fsck(&m)?;
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["clean"], false, "{report}");
    assert_eq!(
        report["damaged_pieces"],
        serde_json::json!([PieceId::of(piece).to_string()]),
        "{report}"
    );
    assert_eq!(
        report["blobs_dropped"],
        serde_json::json!([layer.to_string()]),
        "{report}"
    );
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");

    let before = m.node.stat("bytes_from_origin")?;
    let pulled = skopeo_copy(&conf, &image, &m.path("out-2"), &[])?;
    assert!(pulled.blobs.contains(&layer));
    assert!(
        std::fs::read(m.path("out-2").join(layer.hex()))? == origin,
        "the pull after fsck differs from the origin's layer"
    );
    let fetched = m.node.stat("bytes_from_origin")? - before;
    assert!(
        fetched >= origin.len() as u64,
        "the dropped layer was fetched again: {fetched} bytes from the origin"
    );

    let (code, report) = fsck(&m)?;
    assert_eq!(
        (code, &report["clean"]),
        (Some(0), &serde_json::json!(true)),
        "{report}"
    );
    let human = run_unchecked(
        Command::new(shoal_binary()?).args(["fsck", "--node", &m.node.url()]),
        Duration::from_secs(120),
    )?;
    assert!(human.status.success());
    assert!(String::from_utf8(human.stdout)?.contains("the store is clean"));
    Ok(())
}
