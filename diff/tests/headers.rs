//! Headers read as readers read them, on tars made by hand: PAX overrides, global
//! headers, GNU long names and base-256 sizes, header-only types, unknown types.

mod common;

use common::*;
use shoal_diff::TarError;
use shoal_protocol::recipe::EntryKind;
use tar::EntryType;

/// The tar of these blocks and contents, with end blocks.
fn tar(parts: &[&[u8]]) -> Vec<u8> {
    let mut out: Vec<u8> = parts.concat();
    out.extend([0; 1024]);
    out
}

#[test]
fn pax_size_and_path_override_the_header() {
    let records = pax_record("path", "from/pax/record") + &pax_record("size", "3000");
    let content = random(3000, 1);
    let t = tar(&[
        &header(EntryType::XHeader, "PaxHeaders/x", records.len() as u64),
        &padded(records.as_bytes()),
        // The header's own size says 0, as writers do for files over 8 GiB.
        &header(EntryType::Regular, "short-name", 0),
        &padded(&content),
    ]);
    let r = assert_round_trip(&t).recipe;
    assert_eq!(r.entries.len(), 1);
    let e = &r.entries[0];
    assert_eq!((e.path.as_str(), e.size), ("from/pax/record", 3000));
    assert_eq!(e.header.len(), 3 * 512);
    assert_agrees_with_tar_crate(&t, &r);
}

#[test]
fn a_second_pax_header_replaces_the_first_and_gnu_long_names_beat_pax_paths() {
    let first = pax_record("path", "first") + &pax_record("size", "5");
    let second = pax_record("path", "second");
    let long = "l".repeat(300) + "\0";
    let t = tar(&[
        &header(EntryType::XHeader, "x1", first.len() as u64),
        &padded(first.as_bytes()),
        &header(EntryType::XHeader, "x2", second.len() as u64),
        &padded(second.as_bytes()),
        &header(EntryType::Regular, "name", 7),
        &padded(b"1234567"),
        &header(EntryType::XHeader, "x3", first.len() as u64),
        &padded(first.as_bytes()),
        &header(EntryType::GNULongName, "././@LongLink", long.len() as u64),
        &padded(long.as_bytes()),
        &header(EntryType::Regular, "name", 9),
        &padded(b"12345"),
    ]);
    let r = assert_round_trip(&t).recipe;
    // The first file's size is its header's: the `size` record was replaced.
    assert_eq!(
        (r.entries[0].path.as_str(), r.entries[0].size),
        ("second", 7)
    );
    // The second: PAX size 5 applies, the GNU long name wins over PAX path.
    assert_eq!(r.entries[1].path, "l".repeat(300));
    assert_eq!(r.entries[1].size, 5);
}

#[test]
fn a_pax_global_header_is_an_entry_of_its_own_and_applies_to_nothing() {
    // As `git archive` writes: a global header with the commit, then the files.
    let global = pax_record("comment", "0123abcd") + &pax_record("path", "ignored");
    let t = tar(&[
        &header(
            EntryType::XGlobalHeader,
            "pax_global_header",
            global.len() as u64,
        ),
        &padded(global.as_bytes()),
        &header(EntryType::Regular, "file", 4),
        &padded(b"data"),
    ]);
    let r = assert_round_trip(&t).recipe;
    assert_eq!(r.entries.len(), 2);
    let g = &r.entries[0];
    assert_eq!(g.kind, EntryKind::Other(b'g'));
    assert_eq!((g.size, g.header.len()), (0, 1024));
    // Go names the global entry by its own records' path.
    assert_eq!(g.path, "ignored");
    assert_eq!((r.entries[1].path.as_str(), r.entries[1].size), ("file", 4));
}

#[test]
fn a_gnu_base_256_size_is_read() {
    let mut h = header(EntryType::Regular, "big-field", 0);
    h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b, 0xb8]);
    fix_checksum(&mut h);
    let content = random(3000, 3);
    let r = assert_round_trip(&tar(&[&h, &padded(&content)])).recipe;
    assert_eq!(r.entries[0].size, 3000);
}

#[test]
fn header_only_types_have_no_content_whatever_their_size_says() {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for (kind, name) in [
        (EntryType::Link, "hard"),
        (EntryType::Symlink, "sym"),
        (EntryType::Char, "char"),
        (EntryType::Block, "block"),
        (EntryType::Directory, "dir/"),
        (EntryType::Fifo, "fifo"),
    ] {
        parts.push(header(kind, name, 100_000).to_vec());
    }
    // Type NUL with a trailing slash is a directory to Go, so it has no content either.
    let mut old_dir = header(EntryType::Regular, "old-dir/", 4096);
    old_dir[156] = 0;
    fix_checksum(&mut old_dir);
    parts.push(old_dir.to_vec());
    let mut old_file = header(EntryType::Regular, "old-file", 3);
    old_file[156] = 0;
    fix_checksum(&mut old_file);
    parts.push(old_file.to_vec());
    parts.push(padded(b"abc"));
    let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
    let r = assert_round_trip(&tar(&refs)).recipe;
    let kinds: Vec<(EntryKind, u64)> = r.entries.iter().map(|e| (e.kind, e.size)).collect();
    assert_eq!(
        kinds,
        [
            (EntryKind::Hardlink, 0),
            (EntryKind::Symlink, 0),
            (EntryKind::Char, 0),
            (EntryKind::Block, 0),
            (EntryKind::Dir, 0),
            (EntryKind::Fifo, 0),
            (EntryKind::Dir, 0),
            (EntryKind::File, 3),
        ]
    );
}

#[test]
fn unknown_types_and_contiguous_files_carry_their_content() {
    let content = random(70_000, 4);
    let mut odd = header(EntryType::Regular, "odd", content.len() as u64);
    odd[156] = b'Z';
    fix_checksum(&mut odd);
    let contiguous = header(EntryType::Continuous, "contiguous", 10);
    let r = assert_round_trip(&tar(&[
        &odd,
        &padded(&content),
        &contiguous,
        &padded(b"0123456789"),
    ]))
    .recipe;
    assert_eq!(
        (r.entries[0].kind, r.entries[0].size),
        (EntryKind::Other(b'Z'), 70_000)
    );
    assert_eq!(
        (r.entries[1].kind, r.entries[1].size),
        (EntryKind::File, 10)
    );
}

#[test]
fn a_lone_zero_block_before_more_headers_is_refused() {
    let file = [&header(EntryType::Regular, "a", 1)[..], &padded(b"a")].concat();
    let mut t = file.clone();
    t.extend([0; 512]);
    t.extend(&file);
    let err = build(&t).err().expect("refused");
    assert_eq!(err, TarError::LoneZeroBlock { offset: 1024 });
}

#[test]
fn the_ustar_prefix_joins_the_name_and_star_and_v7_headers_read_too() {
    // star: ustar magic, `tar\0` in the last four bytes, a shorter prefix.
    let mut star = tar::Header::new_ustar();
    star.set_path(format!("{}/{}", "s".repeat(120), "name"))
        .unwrap();
    star.set_size(0);
    let mut star = *star.as_bytes();
    star[508..512].copy_from_slice(b"tar\0");
    fix_checksum(&mut star);
    let r = assert_round_trip(&tar(&[&star])).recipe;
    assert_eq!(r.entries[0].path, format!("{}/name", "s".repeat(120)));

    let mut h = tar::Header::new_ustar();
    h.set_path(format!("{}/{}", "p".repeat(120), "name"))
        .unwrap();
    h.set_size(0);
    h.set_cksum();
    let mut v7 = tar::Header::new_old();
    v7.set_path("v7-file").unwrap();
    v7.set_size(2);
    v7.set_cksum();
    let r = assert_round_trip(&tar(&[h.as_bytes(), v7.as_bytes(), &padded(b"hi")])).recipe;
    assert_eq!(r.entries[0].path, format!("{}/name", "p".repeat(120)));
    assert_eq!(
        (r.entries[1].path.as_str(), r.entries[1].size),
        ("v7-file", 2)
    );
}

#[test]
fn signed_checksums_from_old_tars_are_accepted() {
    let mut h = header(EntryType::Regular, "caf\u{e9}", 1);
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    let r = assert_round_trip(&tar(&[&h, &padded(b"x")])).recipe;
    assert_eq!(r.entries[0].path, "caf\u{e9}");
}
