//! The tree written back as a layer: a round trip (flatten, export, flatten the export)
//! keeps every entry; two exports of one image are the same bytes, also from trees
//! built apart; the format is what `export.rs` promises, read by the `tar` crate; and
//! the archive holds what engines look for.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use shoal_protocol::Digest;
use tar::EntryType;

use super::archive::{self, ArchiveParts};
use super::export::write_tree_tar;
use super::meta::parse_pax_time;
use super::testkit::{E, Fixture, lmeta, names, tar};
use super::ustar::pax_time;

/// Everything an entry of a tree is, for comparing trees.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut first_of: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for name in names(root) {
        let path = root.join(&name);
        let m = lmeta(&path);
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else if ft.is_file() {
            format!(
                "file {}",
                blake3::hash(&std::fs::read(&path).unwrap()).to_hex()
            )
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {}", m.rdev())
        } else {
            "fifo".to_owned()
        };
        let mut buf = vec![0u8; 65536];
        let n = rustix::fs::llistxattr(&path, &mut buf[..]).unwrap_or(0);
        let mut xattrs: Vec<String> = buf[..n]
            .split(|&b| b == 0)
            .filter(|x| !x.is_empty() && *x != b"security.selinux")
            .map(|x| {
                let mut v = vec![0u8; 65536];
                let len = rustix::fs::lgetxattr(&path, x, &mut v[..]).unwrap();
                format!("{}={:?}", String::from_utf8_lossy(x), &v[..len])
            })
            .collect();
        xattrs.sort();
        // Inodes shared within the tree, named by the first path that has them.
        let link = if !ft.is_dir() && m.nlink() > 1 {
            first_of
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| name.clone())
                .clone()
        } else {
            String::new()
        };
        let mtime = if ft.is_dir() {
            String::new()
        } else {
            format!("{}.{}", m.mtime(), m.mtime_nsec())
        };
        out.insert(
            name,
            format!(
                "{what} mode {:o} owner {}:{} mtime {mtime} xattrs {xattrs:?} inode {link}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ),
        );
    }
    out
}

/// The layer tar of the tree at `root`, with the hardlink groups `links`.
fn export(root: &Path, links: &[Vec<PathBuf>]) -> Vec<u8> {
    let mut out = Vec::new();
    write_tree_tar(root, links, &mut out, 256, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

/// `security.capability` (revision 2, effective, CAP_NET_BIND_SERVICE and two more);
/// its first value byte is `\n`.
const CAPABILITY: [u8; 20] = [
    1, 0, 0, 2, 0x0a, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Layers that use every kind of entry and every field that needs a PAX record.
fn rich_layers() -> Vec<Vec<u8>> {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
    let longer = format!("x/{}", "y".repeat(250));
    vec![
        tar(&[
            E::dir("etc"),
            E::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            E::file("etc/gone", b"removed by the next layer"),
            E::dir("opq"),
            E::file("opq/old", b"hidden by an opaque marker"),
            E::file("bin/su", b"\x7fELF su").mode(0o4755),
            E::file("bin/cap", b"\x7fELF cap")
                .mode(0o755)
                .pax(b"SCHILY.xattr.security.capability", &CAPABILITY),
            E::file("same-a", b"same bytes"),
            E::file("same-b", b"same bytes"),
            E::hardlink("bin/su-link", "bin/su"),
            E::symlink("bin/sh", "/bin/busybox"),
            E::symlink("far", &"t".repeat(100)).pax(b"linkpath", "t".repeat(150).as_bytes()),
            E::node("dev/null", EntryType::Char, 1, 3).mode(0o666),
            E::node("fifo", EntryType::Fifo, 0, 0),
            E::file("owners", b"o").owner(3_000_000, 70_000),
            E::file("precise", b"p").pax(b"mtime", b"1600000000.25"),
            E::file("old", b"o").pax(b"mtime", b"-100.5"),
            E::dir("x"),
            E::file(&long, b"long name"),
            E::file(&longer, b"longer name"),
            E::dir("tagged")
                .mode(0o2775)
                .pax(b"SCHILY.xattr.user.dir", b"1"),
        ]),
        tar(&[
            E::file("etc/.wh.gone", b""),
            E::file("opq/.wh..wh..opq", b""),
            E::file("opq/new", b"new"),
            E::file("etc/passwd", b"root:x:0:0::/root:/bin/ash\n"),
        ]),
    ]
}

#[test]
fn export_then_flatten_gives_the_same_tree() {
    let fx = Fixture::new();
    let (tree, first) = fx.run("tree", &rich_layers());
    let exported = export(&tree, &first.link_groups);
    let (again, report) = fx.run("again", &[exported]);
    assert_eq!(report.whiteouts, 0);
    assert_eq!(report.link_groups, first.link_groups);
    let (a, b) = (describe(&tree), describe(&again));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, what) in &a {
        assert_eq!(what, &b[name], "{name}");
    }
    assert!(!a.contains_key("etc/gone") && !a.contains_key("opq/old"));
    assert!(
        a["bin/su-link"].ends_with("inode bin/su"),
        "{}",
        a["bin/su-link"]
    );
}

#[test]
fn exports_are_the_same_bytes_also_from_trees_built_apart() {
    let (one, two) = (Fixture::new(), Fixture::new());
    let (t1, r1) = one.run("tree", &rich_layers());
    let (t2, r2) = two.run("elsewhere", &rich_layers());
    assert_eq!(r1.link_groups, r2.link_groups);
    let first = export(&t1, &r1.link_groups);
    assert_eq!(first, export(&t1, &r1.link_groups));
    assert_eq!(first, export(&t2, &r2.link_groups));
}

#[test]
fn the_tar_is_sorted_numeric_and_pax_only_where_needed() {
    let fx = Fixture::new();
    let (tree, report) = fx.run("tree", &rich_layers());
    let bytes = export(&tree, &report.link_groups);
    assert_eq!(bytes.len() % 512, 0);
    assert!(bytes.ends_with(&[0u8; 1024]));
    let pax_keys = pax_keys(&bytes);
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    let mut links = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let header = entry.header().clone();
        assert!(!path.starts_with("./") && !path.starts_with('/'), "{path}");
        assert_eq!(header.entry_type().is_dir(), path.ends_with('/'), "{path}");
        assert_eq!(header.username_bytes(), Some(&b""[..]), "{path}");
        if header.entry_type() == EntryType::Link {
            let target = entry.link_name_bytes().unwrap().into_owned();
            links.insert(path.clone(), String::from_utf8(target).unwrap());
        }
        let pax = pax_keys.get(&path).cloned().unwrap_or_default();
        let expect: &[&str] = match path.trim_end_matches('/') {
            "owners" => &["uid"],
            "precise" | "old" => &["mtime"],
            "bin/cap" => &["SCHILY.xattr.security.capability"],
            "tagged" => &["SCHILY.xattr.user.dir"],
            "far" => &["linkpath"],
            // A name of one long component has no `/` to split it at.
            p if p.starts_with("x/yy") || p == "d".repeat(120) => &["path"],
            _ => &[],
        };
        assert_eq!(pax, expect, "{path}");
        if path == "precise" {
            assert_eq!(entry.header().mtime().unwrap(), 1_600_000_000);
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        seen.push(path);
    }
    let mut sorted = seen.clone();
    // Pre-order with sorted children is the order of the paths with `/` sorting first.
    sorted.sort_by_key(|p| p.replace('/', "\0"));
    assert_eq!(seen, sorted);
    assert!(seen.contains(&format!("{}/", "d".repeat(120))));
    // The image's hardlink stays one, and is the only one: identical files share an
    // object in the tree, but are two files of the image.
    assert_eq!(
        links,
        BTreeMap::from([("bin/su-link".to_owned(), "bin/su".to_owned())])
    );
}

/// The PAX record keys each entry has, by the entry's full name. Read by hand: the
/// `tar` crate splits PAX records at newlines, which a binary capability holds.
fn pax_keys(tar: &[u8]) -> BTreeMap<String, Vec<String>> {
    let octal = |f: &[u8]| {
        let text = std::str::from_utf8(f).unwrap().trim_end_matches('\0');
        usize::from_str_radix(text, 8).unwrap()
    };
    let mut out = BTreeMap::new();
    let mut pending: Option<(Vec<String>, Option<String>)> = None;
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let h = &tar[at..at + 512];
        let size = octal(&h[124..135]);
        let data = &tar[at + 512..at + 512 + size];
        if h[156] == b'x' {
            let (mut keys, mut path) = (Vec::new(), None);
            let mut rest = data;
            while !rest.is_empty() {
                let space = rest.iter().position(|&b| b == b' ').unwrap();
                let len: usize = std::str::from_utf8(&rest[..space])
                    .unwrap()
                    .parse()
                    .unwrap();
                let record = &rest[space + 1..len - 1];
                let eq = record.iter().position(|&b| b == b'=').unwrap();
                let key = String::from_utf8(record[..eq].to_vec()).unwrap();
                if key == "path" {
                    path = Some(String::from_utf8(record[eq + 1..].to_vec()).unwrap());
                }
                keys.push(key);
                rest = &rest[len..];
            }
            pending = Some((keys, path));
        } else if let Some((keys, path)) = pending.take() {
            let name = path.unwrap_or_else(|| {
                let field = |r: std::ops::Range<usize>| {
                    let f = &h[r];
                    String::from_utf8(
                        f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec(),
                    )
                    .unwrap()
                };
                let (prefix, name) = (field(345..500), field(0..100));
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            });
            out.insert(name, keys);
        }
        at += 512 + size.next_multiple_of(512);
    }
    out
}

#[test]
fn pax_times_round_trip() {
    for (secs, nanos, text) in [
        (1_600_000_000, 250_000_000, "1600000000.25"),
        (5, 0, "5"),
        (-101, 500_000_000, "-100.5"),
        (-7, 0, "-7"),
        (0, 1, "0.000000001"),
    ] {
        assert_eq!(pax_time(secs, nanos), text);
        let back = parse_pax_time(text.as_bytes()).unwrap();
        assert_eq!((back.secs, back.nanos), (secs, nanos), "{text}");
    }
}

#[test]
fn the_layer_blob_is_a_fixed_gzip_of_the_tar() {
    let fx = Fixture::new();
    let (tree, report) = fx.run("tree", &rich_layers());
    let links = &report.link_groups;
    let mut blob = Vec::new();
    let layer = archive::write_layer(&tree, links, &mut blob, 256, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(layer.digest, Digest::of(&blob));
    assert_eq!(layer.size, blob.len() as u64);
    // gzip magic, deflate, no flags (no name), mtime 0, OS 255.
    assert_eq!(&blob[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    assert_eq!(blob[9], 255);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(tar_bytes, export(&tree, links));
    assert_eq!(layer.diff_id, Digest::of(&tar_bytes));
    assert_eq!(layer.stats.tar_bytes, tar_bytes.len() as u64);
    let mut again = Vec::new();
    archive::write_layer(&tree, links, &mut again, 256, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(blob, again);
    // The tar compressed again, in any slices, gives the blob: a node re-creates a flat
    // layer from its content alone (`packs`).
    for slice in [tar_bytes.len(), 512, 100_000] {
        let mut gz = crate::packs::FlatGzip::new(Vec::new());
        for part in tar_bytes.chunks(slice) {
            gz.write_all(part).unwrap();
        }
        assert_eq!(gz.finish().unwrap(), blob, "written in slices of {slice}");
    }
}

#[test]
fn the_config_keeps_runtime_settings_and_one_layer() {
    let source = br#"{
        "architecture": "arm64", "os": "linux", "variant": "v8",
        "created": "2024-01-02T03:04:05Z", "author": "someone",
        "config": {"Env": ["A=1"], "Entrypoint": ["/e"], "Cmd": ["c"], "WorkingDir": "/w",
                   "User": "1000:1000", "Labels": {"l": "v"}, "ExposedPorts": {"80/tcp": {}},
                   "Healthcheck": {"Test": ["NONE"]}, "Volumes": null},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:aa", "sha256:bb"]},
        "history": [{"created_by": "a"}, {"created_by": "b"}]
    }"#;
    let diff_id = Digest::of(b"tar");
    let manifest = Digest::of(b"manifest");
    let config = archive::flat_config(source, &diff_id, &manifest).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(v["architecture"], "arm64");
    assert_eq!(v["variant"], "v8");
    assert_eq!(v["created"], "2024-01-02T03:04:05Z");
    assert!(v.get("author").is_none());
    let c = &v["config"];
    assert_eq!(c["Env"][0], "A=1");
    assert_eq!(c["Entrypoint"][0], "/e");
    assert_eq!(c["Cmd"][0], "c");
    assert_eq!(c["WorkingDir"], "/w");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Labels"]["l"], "v");
    assert!(c["ExposedPorts"].get("80/tcp").is_some());
    assert!(c.get("Healthcheck").is_none() && c.get("Volumes").is_none());
    assert_eq!(
        v["rootfs"]["diff_ids"],
        serde_json::json!([diff_id.to_string()])
    );
    assert_eq!(v["history"].as_array().unwrap().len(), 1);
    assert_eq!(
        config,
        archive::flat_config(source, &diff_id, &manifest).unwrap()
    );
    assert!(archive::flat_config(b"[]", &diff_id, &manifest).is_err());
}

#[test]
fn the_archive_is_an_oci_layout_with_a_docker_manifest() {
    let layer_bytes = b"not really gzip, but bytes of a known size".to_vec();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let blob = archive::LayerBlob {
        digest: Digest::of(&layer_bytes),
        size: layer_bytes.len() as u64,
        diff_id: Digest::of(b"tar"),
        stats: Default::default(),
    };
    let manifest = archive::flat_manifest(&config, &blob);
    let parts = ArchiveParts {
        config: config.clone(),
        manifest: manifest.clone(),
        layer: blob.digest,
        layer_size: blob.size,
    };
    let name = Some("127.0.0.1:5000/app:v1");
    let mut out = Vec::new();
    let written = archive::write_archive(&parts, name, &mut &layer_bytes[..], &mut out).unwrap();
    assert_eq!(written, out.len() as u64);
    assert_eq!(archive::archive_size(&parts, name), written);
    let mut members = BTreeMap::new();
    for entry in tar::Archive::new(&out[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        members.insert(path, data);
    }
    let blob_path = |d: Digest| format!("blobs/sha256/{}", d.hex());
    assert_eq!(members[&blob_path(blob.digest)], layer_bytes);
    assert_eq!(members[&blob_path(Digest::of(&config))], config);
    assert_eq!(members[&blob_path(Digest::of(&manifest))], manifest);
    assert_eq!(members["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: serde_json::Value = serde_json::from_slice(&members["index.json"]).unwrap();
    let d = &index["manifests"][0];
    assert_eq!(d["digest"], Digest::of(&manifest).to_string());
    assert_eq!(
        d["annotations"]["org.opencontainers.image.ref.name"],
        "127.0.0.1:5000/app:v1"
    );
    let docker: serde_json::Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    assert_eq!(docker[0]["Config"], blob_path(Digest::of(&config)));
    assert_eq!(docker[0]["RepoTags"][0], "127.0.0.1:5000/app:v1");
    assert_eq!(docker[0]["Layers"][0], blob_path(blob.digest));
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["layers"][0]["size"], blob.size);
    // A short layer is an error, not a short archive.
    let mut short = Vec::new();
    assert!(archive::write_archive(&parts, None, &mut &layer_bytes[..5], &mut short).is_err());
}
