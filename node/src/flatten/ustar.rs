//! ustar headers written the one way shoal writes them, for flat layers
//! (`export.rs`) and archives (`archive.rs`): zero-padded octal fields ending in NUL,
//! empty user and group names, the name split into `prefix` and `name` where it fits,
//! and a PAX extended header (`././@PaxHeader`, its own header all zeros) only for
//! what ustar cannot carry, its records in a fixed order: `path`, `linkpath`, `size`,
//! `uid`, `gid`, `mtime`, then `SCHILY.xattr.*` in the order given (sorted by the
//! caller).

/// Size of a tar block.
const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (7 digits).
const MAX_OCTAL_7: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (11 digits).
const MAX_OCTAL_11: u64 = 0o77_777_777_777;
/// Name of every PAX extended header.
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// The header fields of one entry.
#[derive(Clone, Debug)]
pub(crate) struct EntryHeader<'a> {
    /// The name as written (directories end in `/`).
    pub(crate) path: &'a [u8],
    /// The type byte (`b'0'`, `b'5'`, ...).
    pub(crate) kind: u8,
    /// Permission bits.
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u64,
    /// Group.
    pub(crate) gid: u64,
    /// Bytes of data after the header.
    pub(crate) size: u64,
    /// Seconds and nanoseconds since the epoch.
    pub(crate) mtime: (i64, u32),
    /// Link target (hardlinks and symlinks), else empty.
    pub(crate) link: &'a [u8],
    /// Device numbers (devices only).
    pub(crate) dev: (u64, u64),
    /// Extended attributes, sorted by name.
    pub(crate) xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Writes an octal number as zero-padded digits filling all but the last byte of
/// `field`, which is NUL. `false` if it does not fit.
fn octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

/// Splits a name into ustar `prefix` and `name` fields, if it fits them.
fn split_name(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    let lo = path.len().saturating_sub(101);
    (lo.max(1)..path.len().saturating_sub(1).min(156))
        .find(|&i| path[i] == b'/')
        .map(|i| (&path[..i], &path[i + 1..]))
}

/// A PAX time: seconds with the fraction (trailing zeros cut), negative times as the
/// signed decimal they are.
pub(crate) fn pax_time(secs: i64, nanos: u32) -> String {
    let (sign, whole, frac) = if secs < 0 && nanos > 0 {
        ("-", -(secs + 1), 1_000_000_000 - nanos)
    } else if secs < 0 {
        ("-", -secs, 0)
    } else {
        ("", secs, nanos)
    };
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Appends one PAX record (`LEN KEY=VALUE\n`, LEN counting itself).
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One ustar header block. Fields that do not fit are written as zero (the caller puts
/// them in a PAX header).
fn ustar_block(
    name: &[u8],
    prefix: &[u8],
    h: &EntryHeader<'_>,
    kind: u8,
    size: u64,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    if !octal(&mut b[108..116], h.uid) {
        octal(&mut b[108..116], 0);
    }
    if !octal(&mut b[116..124], h.gid) {
        octal(&mut b[116..124], 0);
    }
    if !octal(&mut b[124..136], size) {
        octal(&mut b[124..136], 0);
    }
    let secs = u64::try_from(h.mtime.0).unwrap_or(0);
    if !octal(&mut b[136..148], secs) {
        octal(&mut b[136..148], 0);
    }
    b[156] = kind;
    if h.link.len() <= 100 {
        b[157..157 + h.link.len()].copy_from_slice(h.link);
    }
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // Checked by the caller: device numbers fit.
    octal(&mut b[329..337], h.dev.0);
    octal(&mut b[337..345], h.dev.1);
    b[345..345 + prefix.len().min(155)].copy_from_slice(&prefix[..prefix.len().min(155)]);
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let text = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(text.as_bytes());
    b
}

/// The header block(s) of an entry: a PAX extended header first if needed.
pub(crate) fn header_bytes(h: &EntryHeader<'_>) -> Result<Vec<u8>, &'static str> {
    if h.dev.0 > MAX_OCTAL_7 || h.dev.1 > MAX_OCTAL_7 {
        return Err("a device number this large");
    }
    let mut pax = Vec::new();
    let (prefix, name) = match split_name(h.path) {
        Some(split) => split,
        None => {
            pax_record(&mut pax, b"path", h.path);
            (&[][..], &h.path[..h.path.len().min(100)])
        }
    };
    if h.link.len() > 100 {
        pax_record(&mut pax, b"linkpath", h.link);
    }
    if h.size > MAX_OCTAL_11 {
        pax_record(&mut pax, b"size", h.size.to_string().as_bytes());
    }
    if h.uid > MAX_OCTAL_7 {
        pax_record(&mut pax, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid > MAX_OCTAL_7 {
        pax_record(&mut pax, b"gid", h.gid.to_string().as_bytes());
    }
    let (secs, nanos) = h.mtime;
    if nanos != 0 || secs < 0 || secs as u64 > MAX_OCTAL_11 {
        pax_record(&mut pax, b"mtime", pax_time(secs, nanos).as_bytes());
    }
    for (key, value) in h.xattrs {
        pax_record(&mut pax, &[b"SCHILY.xattr.", &key[..]].concat(), value);
    }
    let mut out = Vec::with_capacity(BLOCK * 2 + pax.len());
    if !pax.is_empty() {
        let pax_header = EntryHeader {
            path: PAX_NAME,
            kind: b'x',
            mode: 0,
            uid: 0,
            gid: 0,
            size: pax.len() as u64,
            mtime: (0, 0),
            link: &[],
            dev: (0, 0),
            xattrs: &[],
        };
        out.extend_from_slice(&ustar_block(
            PAX_NAME,
            &[],
            &pax_header,
            b'x',
            pax.len() as u64,
        ));
        out.extend_from_slice(&pax);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.extend_from_slice(&ustar_block(name, prefix, h, h.kind, h.size));
    Ok(out)
}

/// Zero bytes that pad `size` bytes of data to a whole block.
pub(crate) fn padding(size: u64) -> &'static [u8] {
    const ZEROS: [u8; BLOCK] = [0; BLOCK];
    &ZEROS[..(size.next_multiple_of(BLOCK as u64) - size) as usize]
}

/// The two zero blocks that end an archive.
pub(crate) const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];
