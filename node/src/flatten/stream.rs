//! A bounded reader of one layer's tar stream: header blocks, PAX extended headers and
//! GNU long names in, one [`RawEntry`] at a time out, with the entry's data read through
//! [`TarStream::read_data`].
//!
//! The `tar` crate decodes the fields of a header block, but the framing is done here
//! for three reasons: its PAX parser splits records at newlines, so a binary xattr
//! value holding a `\n` byte (a `security.capability` can) is lost or, worse, read as
//! further records; it reads extended headers into memory with no bound; and it takes
//! an early end of the stream at a block boundary for the end of the archive. Here every
//! PAX record is parsed by its length prefix, the extended headers of one entry are
//! bounded, every byte counts against the total, and a stream that stops short of its
//! end-of-archive block is an error.

use std::io::{self, Read};

use tar::{EntryType, Header};

use super::error::{Fail, Problem};

/// Size of a tar block.
const BLOCK: usize = 512;
/// Offset and length of the checksum field in a header block.
const CKSUM: std::ops::Range<usize> = 148..156;
/// Offset of the type byte in a header block.
const TYPE_AT: usize = 156;
/// Prefix of the PAX records carrying extended attributes.
const XATTR_KEY: &[u8] = b"SCHILY.xattr.";
/// Prefix of the PAX records of GNU sparse files (not supported).
const SPARSE_KEY: &[u8] = b"GNU.sparse.";

/// What one entry's PAX extended header said, raw.
#[derive(Debug, Default)]
pub(crate) struct Pax {
    /// `path`.
    pub(crate) path: Option<Vec<u8>>,
    /// `linkpath`.
    pub(crate) linkpath: Option<Vec<u8>>,
    /// `size`.
    pub(crate) size: Option<u64>,
    /// `uid`.
    pub(crate) uid: Option<u64>,
    /// `gid`.
    pub(crate) gid: Option<u64>,
    /// `mtime`, undecoded (decimal seconds with an optional fraction).
    pub(crate) mtime: Option<Vec<u8>>,
    /// `SCHILY.xattr.NAME` records in order: (name, value).
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether any `GNU.sparse.*` record was present.
    pub(crate) sparse: bool,
}

/// One entry of a layer, its extended headers folded in.
#[derive(Debug)]
pub(crate) struct RawEntry {
    /// The header block.
    pub(crate) header: Header,
    /// The entry type (`0`, NUL and `7` are all [`EntryType::Regular`]).
    pub(crate) kind: EntryType,
    /// The name: PAX `path`, else a GNU long name, else the header's.
    pub(crate) path: Vec<u8>,
    /// The link target: PAX `linkpath`, else a GNU long link, else the header's.
    pub(crate) link: Option<Vec<u8>>,
    /// Bytes of data that follow: PAX `size`, else the header's.
    pub(crate) size: u64,
    /// The PAX records.
    pub(crate) pax: Pax,
}

/// Bounds the stream reader enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    /// Most bytes read over all layers.
    pub(crate) max_total: u64,
    /// Most bytes of extended headers for one entry.
    pub(crate) max_header_bytes: u64,
}

/// Reads one layer's tar stream.
pub(crate) struct TarStream<'r> {
    inner: &'r mut dyn Read,
    limits: StreamLimits,
    /// Bytes read so far over all layers (this one included).
    total: u64,
    /// The current entry's data size.
    size: u64,
    /// Its data bytes not read yet.
    remaining: u64,
    /// Padding after its data.
    padding: u64,
}

impl<'r> TarStream<'r> {
    /// Starts reading a layer; `total` is what earlier layers read.
    pub(crate) fn new(inner: &'r mut dyn Read, total: u64, limits: StreamLimits) -> Self {
        TarStream {
            inner,
            limits,
            total,
            size: 0,
            remaining: 0,
            padding: 0,
        }
    }

    /// Bytes read over all layers so far.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The next entry, or `None` at the end-of-archive block. Whatever is left of the
    /// previous entry's data is skipped first.
    pub(crate) fn next_entry(&mut self) -> Result<Option<RawEntry>, Fail> {
        let mut scratch = [0u8; 8192];
        while self.read_data(&mut scratch)? > 0 {}
        let padding = self.padding;
        self.skip(padding)?;
        self.padding = 0;

        let mut ext_bytes = 0u64;
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let mut header = Header::new_old();
            if !self.read_header(header.as_mut_bytes())? {
                return Err(Problem::MissingEnd.into());
            }
            if header.as_bytes().iter().all(|&b| b == 0) {
                return Ok(None);
            }
            check_checksum(header.as_bytes())?;
            let type_byte = header.as_bytes()[TYPE_AT];
            let header_size = header
                .entry_size()
                .map_err(|_| Problem::BadField { field: "size" })?;
            if matches!(type_byte, b'x' | b'g' | b'L' | b'K') {
                ext_bytes = ext_bytes.saturating_add(header_size.saturating_add(BLOCK as u64));
                if ext_bytes > self.limits.max_header_bytes {
                    return Err(Problem::HeadersTooLarge {
                        limit: self.limits.max_header_bytes,
                    }
                    .into());
                }
                let data = self.read_extension(header_size)?;
                match type_byte {
                    b'x' => {
                        if pax.is_some() {
                            return Err(Problem::BadPax {
                                detail: "two PAX headers for one entry",
                            }
                            .into());
                        }
                        pax = Some(parse_pax(&data)?);
                    }
                    b'L' => long_name = Some(cut_at_nul(data)),
                    b'K' => long_link = Some(cut_at_nul(data)),
                    // A global PAX header: nothing in a layer needs one, so it is
                    // skipped rather than applied to every entry after it.
                    _ => {}
                }
                continue;
            }
            let pax = pax.unwrap_or_default();
            let path = match (&pax.path, long_name) {
                (Some(path), _) => path.clone(),
                (None, Some(name)) => name,
                (None, None) => header.path_bytes().into_owned(),
            };
            let link = match (&pax.linkpath, long_link) {
                (Some(link), _) => Some(link.clone()),
                (None, Some(link)) => Some(link),
                (None, None) => header.link_name_bytes().map(|l| l.into_owned()),
            };
            let kind = match type_byte {
                b'0' | b'7' => EntryType::Regular,
                // Pre-POSIX archives mark directories by a trailing slash alone.
                0 if path.ends_with(b"/") => EntryType::Directory,
                0 => EntryType::Regular,
                b'1' => EntryType::Link,
                b'2' => EntryType::Symlink,
                b'3' => EntryType::Char,
                b'4' => EntryType::Block,
                b'5' => EntryType::Directory,
                b'6' => EntryType::Fifo,
                // Refused when applied, where the entry's name is known.
                other => EntryType::new(other),
            };
            // A PAX-format sparse file is refused like a GNU one.
            let kind = if pax.sparse {
                EntryType::GNUSparse
            } else {
                kind
            };
            let size = pax.size.unwrap_or(header_size);
            self.size = size;
            self.remaining = size;
            self.padding = padding_after(size);
            return Ok(Some(RawEntry {
                header,
                kind,
                path,
                link,
                size,
                pax,
            }));
        }
    }

    /// Reads the current entry's data; `Ok(0)` once all of it is read. A stream that
    /// ends before is [`Problem::Truncated`].
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, Fail> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.read_raw(&mut buf[..want])?;
        if n == 0 {
            return Err(Problem::Truncated {
                expected: self.size,
                got: self.size - self.remaining,
            }
            .into());
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads a header block; `false` if the stream ended before its first byte.
    fn read_header(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, Fail> {
        let mut got = 0;
        while got < BLOCK {
            let n = self.read_raw(&mut block[got..])?;
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                return Err(Problem::Truncated {
                    expected: BLOCK as u64,
                    got: got as u64,
                }
                .into());
            }
            got += n;
        }
        Ok(true)
    }

    /// Reads an extended header's data (already bounded by the caller) and its padding.
    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>, Fail> {
        // The caller bounded `size` by max_header_bytes, a usize-sized limit in practice.
        let len = usize::try_from(size).map_err(|_| Problem::BadField { field: "size" })?;
        let mut data = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = self.read_raw(&mut data[got..])?;
            if n == 0 {
                return Err(Problem::Truncated {
                    expected: size,
                    got: got as u64,
                }
                .into());
            }
            got += n;
        }
        self.skip(padding_after(size))?;
        Ok(data)
    }

    /// Skips `amount` bytes of padding or data.
    fn skip(&mut self, mut amount: u64) -> Result<(), Fail> {
        let mut scratch = [0u8; BLOCK];
        let expected = amount;
        while amount > 0 {
            let want = scratch
                .len()
                .min(usize::try_from(amount).unwrap_or(usize::MAX));
            let n = self.read_raw(&mut scratch[..want])?;
            if n == 0 {
                return Err(Problem::Truncated {
                    expected,
                    got: expected - amount,
                }
                .into());
            }
            amount -= n as u64;
        }
        Ok(())
    }

    /// Reads from the layer, counting against the total.
    fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize, Fail> {
        let left = self.limits.max_total.saturating_sub(self.total);
        if left == 0 {
            return Err(Problem::TarTooLarge {
                limit: self.limits.max_total,
            }
            .into());
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => {
                    self.total += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Fail::Read(e)),
            }
        }
    }
}

/// Bytes of padding after `size` bytes of data.
fn padding_after(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A GNU long name or link is NUL-terminated.
fn cut_at_nul(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(at) = data.iter().position(|&b| b == 0) {
        data.truncate(at);
    }
    data
}

/// Checks a header block's checksum, taken unsigned or (as some old writers did) signed.
fn check_checksum(block: &[u8; BLOCK]) -> Result<(), Problem> {
    let field = &block[CKSUM];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| (b'0'..=b'7').contains(&b))
        .collect();
    if digits.is_empty() {
        return Err(Problem::BadChecksum);
    }
    let mut stored = 0u64;
    for d in digits {
        stored = stored
            .checked_mul(8)
            .and_then(|s| s.checked_add(u64::from(d - b'0')))
            .ok_or(Problem::BadChecksum)?;
    }
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (at, &b) in block.iter().enumerate() {
        let b = if CKSUM.contains(&at) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored) == Ok(signed) {
        Ok(())
    } else {
        Err(Problem::BadChecksum)
    }
}

/// Parses PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record) by their
/// length prefixes, so values may hold any byte.
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Pax, Problem> {
    let bad = |detail| Problem::BadPax { detail };
    let mut pax = Pax::default();
    while !data.is_empty() {
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or(bad("no length"))?;
        let len = parse_decimal(&data[..space]).ok_or(bad("bad length"))?;
        let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
        if len <= space + 1 || len > data.len() {
            return Err(bad("length out of range"));
        }
        let record = &data[space + 1..len];
        let Some((b'\n', body)) = record.split_last() else {
            return Err(bad("record does not end in a newline"));
        };
        let eq = body.iter().position(|&b| b == b'=').ok_or(bad("no '='"))?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        // An empty value unsets the field (POSIX), except for xattrs, where it is a value.
        let set = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        let number = |v: &[u8], what| {
            if v.is_empty() {
                return Ok(None);
            }
            parse_decimal(v).map(Some).ok_or(bad(what))
        };
        match key {
            b"path" => pax.path = set(value),
            b"linkpath" => pax.linkpath = set(value),
            b"size" => pax.size = number(value, "bad size")?,
            b"uid" => pax.uid = number(value, "bad uid")?,
            b"gid" => pax.gid = number(value, "bad gid")?,
            b"mtime" => pax.mtime = set(value),
            _ => {
                if let Some(name) = key.strip_prefix(XATTR_KEY) {
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                } else if key.starts_with(SPARSE_KEY) {
                    pax.sparse = true;
                }
            }
        }
        data = &data[len..];
    }
    Ok(pax)
}

/// A non-empty run of ASCII digits as a `u64`.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}
