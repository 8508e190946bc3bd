//! Reading tar header blocks the way readers do: checksums, octal and base-256
//! numbers, ustar/GNU names, PAX records.
//!
//! Only what decides where an entry's content starts and ends, and the path a reader
//! sees, is parsed here; every other field (mode, owner, times, link target) stays in
//! the verbatim header bytes of the recipe and is left to whoever reads the recipe.
//! Where readers differ, Go's `archive/tar` decides: it is what containerd, dockerd,
//! podman and most image tooling use to apply layers.

/// Length of one tar block.
pub(crate) const BLOCK_LEN: usize = 512;

/// Offset of the old GNU sparse header's "more sparse blocks follow" flag.
const GNU_SPARSE_EXTENDED: usize = 482;
/// Offset of the same flag in a GNU sparse extension block.
const GNU_SPARSE_EXT_EXTENDED: usize = 504;

/// The tar header formats that place fields differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Pre-POSIX tar: no magic, no prefix.
    V7,
    /// POSIX ustar (and PAX): magic `ustar\0`, version `00`, a 155-byte name prefix.
    Ustar,
    /// Jörg Schilling's star: ustar magic, a 131-byte prefix, `tar\0` at the end.
    Star,
    /// GNU tar: magic `ustar ` and version ` \0`; no prefix (atime/ctime live there).
    Gnu,
}

/// What a header block with a valid checksum says.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    /// The type flag byte.
    pub typeflag: u8,
    /// The size field: bytes of content that follow (before PAX `size` and the rule for
    /// header-only types).
    pub size: u64,
    /// The name as the block gives it (prefix and name joined for ustar).
    pub name: Vec<u8>,
    /// An old GNU sparse header whose sparse map continues in extension blocks.
    pub sparse_extended: bool,
}

/// Why a non-zero header block is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The checksum field does not match the block (or is not a number).
    Checksum { stored: String, computed: u64 },
    /// The size field is not an octal or base-256 number, or is negative.
    Size,
}

/// Whether a block is all zeros (an end-of-archive block).
pub(crate) fn is_zero(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Parses one 512-byte header block that is not all zeros.
pub(crate) fn parse(block: &[u8; BLOCK_LEN]) -> Result<Header, Fault> {
    check_checksum(block)?;
    let format = match (&block[257..263], &block[263..265]) {
        (b"ustar\0", b"00") if &block[508..512] == b"tar\0" => Format::Star,
        (b"ustar\0", b"00") => Format::Ustar,
        (b"ustar ", b" \0") => Format::Gnu,
        _ => Format::V7,
    };
    let size = parse_numeric(&block[124..136])
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(Fault::Size)?;
    let name = c_string(&block[0..100]);
    let prefix = match format {
        Format::Ustar => c_string(&block[345..500]),
        Format::Star => c_string(&block[345..476]),
        Format::V7 | Format::Gnu => &[],
    };
    let name = if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    };
    let typeflag = block[156];
    Ok(Header {
        typeflag,
        size,
        name,
        sparse_extended: typeflag == b'S'
            && format == Format::Gnu
            && block[GNU_SPARSE_EXTENDED] != 0,
    })
}

/// Whether a GNU sparse extension block says another one follows.
pub(crate) fn sparse_block_extended(block: &[u8]) -> bool {
    block.get(GNU_SPARSE_EXT_EXTENDED).is_some_and(|&b| b != 0)
}

/// Checks the header checksum: the sum of the block's bytes with the checksum field
/// read as spaces. Like Go and GNU tar, the sum over signed bytes (written by some old
/// Sun tars) is accepted too.
fn check_checksum(block: &[u8; BLOCK_LEN]) -> Result<(), Fault> {
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    let field = &block[148..156];
    match parse_octal(field) {
        Some(stored) if stored == unsigned || i64::try_from(stored).ok() == Some(signed) => Ok(()),
        _ => Err(Fault::Checksum {
            stored: String::from_utf8_lossy(field)
                .trim_matches(['\0', ' '])
                .to_string(),
            computed: unsigned,
        }),
    }
}

/// The bytes before the first NUL (all of them if there is none).
pub(crate) fn c_string(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |n| &field[..n])
}

/// A numeric field: GNU base-256 (high bit of the first byte set; two's complement,
/// big-endian) or octal. `None` if it is neither or overflows an `i64`.
pub(crate) fn parse_numeric(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first() else {
        return Some(0);
    };
    if first & 0x80 == 0 {
        return parse_octal(field).and_then(|n| i64::try_from(n).ok());
    }
    let invert = if first & 0x40 != 0 { 0xff } else { 0x00 };
    let mut x: u64 = 0;
    for (i, &b) in field.iter().enumerate() {
        let mut b = b ^ invert;
        if i == 0 {
            b &= 0x7f;
        }
        if x >> 56 != 0 {
            return None;
        }
        x = (x << 8) | u64::from(b);
    }
    let x = i64::try_from(x).ok()?;
    Some(if invert == 0xff { !x } else { x })
}

/// An octal field, padded with spaces or NULs on either side (as Go reads it: trim
/// spaces and NULs, stop at a NUL, then octal digits only).
fn parse_octal(field: &[u8]) -> Option<u64> {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !pad(b)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !pad(b))
        .map_or(start, |last| last + 1);
    let digits = c_string(&field[start..end]);
    digits.iter().try_fold(0u64, |acc, &b| {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        acc.checked_mul(8)?.checked_add(u64::from(b - b'0'))
    })
}

/// The PAX records this crate acts on, from one extended header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pax {
    /// `path`.
    pub path: Option<Vec<u8>>,
    /// `size`.
    pub size: Option<u64>,
    /// `GNU.sparse.name`, where Go applies it (the record set names a sparse format
    /// it knows: 0.0, 0.1 or 1.0).
    pub sparse_name: Option<Vec<u8>>,
}

/// Parses the records of a PAX extended header (`x` or `g`): `"<len> <key>=<value>\n"`,
/// where `len` counts the whole record. Refuses what Go refuses: a bad length, a
/// missing newline or `=`, an empty key, a NUL in a key or in a path-like value, and a
/// `size` that is not a non-negative decimal.
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    let (mut major, mut minor, mut has_map, mut has_sparse_size) = (false, false, false, false);
    let mut sparse_name = None;
    let mut sparse_major_minor = (Vec::new(), Vec::new());
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a record has no length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n| n >= 5 && n <= data.len() && n > space + 1)
            .ok_or_else(|| format!("a record has a bad length {:?}", lossy(&data[..space])))?;
        let record = &data[space + 1..len];
        data = &data[len..];
        let Some((&b'\n', record)) = record.split_last() else {
            return Err("a record does not end in a newline".into());
        };
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("record {:?} has no '='", lossy(record)))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        if key.is_empty() {
            return Err("a record has an empty key".into());
        }
        let path_like = matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if (path_like && value.contains(&0)) || key.contains(&0) {
            return Err(format!("record {:?} holds a NUL", lossy(key)));
        }
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| format!("size {:?} is not a size", lossy(value)))?;
                pax.size = Some(size);
            }
            b"GNU.sparse.name" => sparse_name = Some(value.to_vec()),
            b"GNU.sparse.major" => (major, sparse_major_minor.0) = (true, value.to_vec()),
            b"GNU.sparse.minor" => (minor, sparse_major_minor.1) = (true, value.to_vec()),
            b"GNU.sparse.map" | b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => has_map = true,
            b"GNU.sparse.size" => has_sparse_size = true,
            _ => {}
        }
    }
    // Go's rule for which GNU sparse format applies, and so whether the name counts.
    let known = if major && minor {
        matches!(
            (&sparse_major_minor.0[..], &sparse_major_minor.1[..]),
            (b"0", b"0") | (b"0", b"1") | (b"1", b"0")
        )
    } else {
        (sparse_name.is_some() && has_map) || has_sparse_size
    };
    if known {
        pax.sparse_name = sparse_name.filter(|n| !n.is_empty());
    }
    Ok(pax)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_go_reads_them() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0\0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"        "), Some(0));
        assert_eq!(parse_numeric(b"00000000017\0"), Some(0o17));
        assert_eq!(parse_numeric(b"64 4"), None);
        assert_eq!(parse_numeric(b"0009"), None);
        // GNU base-256: 0x80 marker, then big-endian.
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[8..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_numeric(&f), Some(0xffff_ffff));
        f[7] = 1;
        assert_eq!(parse_numeric(&f), Some((1 << 32) + 0xffff_ffff));
        // Negative (0xff marker) parses, and overflow is refused.
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        let mut big = [0xffu8; 12];
        big[0] = 0x80;
        assert_eq!(parse_numeric(&big), None);
    }

    #[test]
    fn pax_records_parse_and_bad_ones_are_refused() {
        let pax = parse_pax(b"14 path=a/b/c\n11 size=42\n13 mtime=1.5\n").unwrap();
        assert_eq!(pax.path.as_deref(), Some(&b"a/b/c"[..]));
        assert_eq!(pax.size, Some(42));
        assert!(parse_pax(b"").unwrap() == Pax::default());
        for bad in [
            &b"14 path=a/b/c"[..],
            b"13 path=a/b/c\n",
            b"99 path=a\n",
            b"x path=a\n",
            b"10 =value\n",
            b"11 noequal\n",
            b"12 size=-1\n",
            b"12 size=1x\n",
            b"12 path=a\0b\n",
            b"3 a\n",
            b"path=a\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn gnu_sparse_name_counts_only_with_a_known_format() {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            while body.len() + n.to_string().len() != n {
                n = body.len() + n.to_string().len();
            }
            format!("{n}{body}")
        };
        let named = rec("GNU.sparse.name", "real");
        let pax = parse_pax(named.as_bytes()).unwrap();
        assert_eq!(pax.sparse_name, None);
        let with_format = format!(
            "{named}{}{}",
            rec("GNU.sparse.major", "1"),
            rec("GNU.sparse.minor", "0")
        );
        let pax = parse_pax(with_format.as_bytes()).unwrap();
        assert_eq!(pax.sparse_name.as_deref(), Some(&b"real"[..]));
    }
}
