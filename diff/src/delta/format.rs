//! The delta's bytes: header, segment table, and the checks that bound what a decoder
//! will do before it touches a body. The layout is specified in the [module
//! docs](super).

use shoal_protocol::recipe::ChunkId;

use super::error::DeltaError;

/// The format version this shoal writes and reads.
pub const VERSION: u8 = 1;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 1 + 1 + 32 + 32 + 8;

/// Most target bytes one frame may give: a whole unsegmented delta, or one segment.
/// It bounds what a decoder holds at once whatever the file's size.
pub const MAX_FRAME: u64 = 64 << 20;

/// Length of one segment table entry.
pub(crate) const SEGMENT_ENTRY_LEN: usize = 1 + 8 + 8 + 8 + 8;

/// How a target is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// The target compressed by zstd on its own; the base is not used.
    Literal,
    /// The target compressed by zstd with the base as a raw prefix dictionary.
    Zstd,
    /// A bsdiff patch (the bidiff crate's stream) compressed by zstd.
    Bsdiff,
    /// The target in segments, each encoded by one of the others against a window of the base.
    Segmented,
}

impl Method {
    /// The method's byte in the header and segment table.
    pub fn byte(self) -> u8 {
        match self {
            Method::Literal => 0,
            Method::Zstd => 1,
            Method::Bsdiff => 2,
            Method::Segmented => 3,
        }
    }

    /// The method a byte names, if any.
    pub fn from_byte(b: u8) -> Option<Method> {
        Some(match b {
            0 => Method::Literal,
            1 => Method::Zstd,
            2 => Method::Bsdiff,
            3 => Method::Segmented,
            _ => return None,
        })
    }
}

/// What a delta's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// How the body encodes the target.
    pub method: Method,
    /// BLAKE3 of the base the delta was made against.
    pub base: ChunkId,
    /// BLAKE3 of the target it gives.
    pub target: ChunkId,
    /// Length of the target.
    pub target_len: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0] = VERSION;
        out[1] = self.method.byte();
        out[2..34].copy_from_slice(&self.base.0);
        out[34..66].copy_from_slice(&self.target.0);
        out[66..].copy_from_slice(&self.target_len.to_le_bytes());
        out
    }
}

/// Reads a delta's header, checking only its own fields (not the body, nor any limit):
/// enough to see what a cached or received delta is for before applying it.
pub fn read_header(delta: &[u8]) -> Result<Header, DeltaError> {
    let mut r = Reader::new(delta);
    let version = r.u8("header")?;
    if version != VERSION {
        return Err(DeltaError::Version(version));
    }
    r.want("header", HEADER_LEN as u64 - 1)?;
    let method = r.u8("header")?;
    let method = Method::from_byte(method).ok_or(DeltaError::Method(method))?;
    Ok(Header {
        method,
        base: ChunkId(r.array("header")?),
        target: ChunkId(r.array("header")?),
        target_len: r.u64("header")?,
    })
}

/// One segment: `target_len` bytes of the target, encoded by `method` in `body_len`
/// bytes against `base[base_start .. base_start + base_len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub method: Method,
    pub base_start: u64,
    pub base_len: u64,
    pub target_len: u64,
    pub body_len: u64,
}

impl Segment {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_ENTRY_LEN] {
        let mut out = [0; SEGMENT_ENTRY_LEN];
        out[0] = self.method.byte();
        let fields = [
            self.base_start,
            self.base_len,
            self.target_len,
            self.body_len,
        ];
        for (i, v) in fields.into_iter().enumerate() {
            out[1 + 8 * i..9 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// Reads and checks a segmented body's table: every segment's method is a plain one,
/// its base window lies inside the base, its target is non-empty and at most
/// [`MAX_FRAME`], the targets add up to the header's length, and the bodies fill the
/// rest of the delta exactly. Returns the table and the bodies.
pub(crate) fn read_segments(
    body: &[u8],
    base_len: u64,
    target_len: u64,
) -> Result<(Vec<Segment>, &[u8]), DeltaError> {
    let mut r = Reader::new(body);
    let count = r.u32("segment count")?;
    // Checked against the bytes present before anything is allocated from it.
    let table = u64::from(count) * SEGMENT_ENTRY_LEN as u64;
    r.want("segment table", table)?;
    let bad = |s: String| Err(DeltaError::Inconsistent(s));
    let mut segments = Vec::with_capacity(count as usize);
    let (mut targets, mut bodies) = (0u64, 0u64);
    for i in 0..count {
        let method = r.u8("segment table")?;
        let method = match Method::from_byte(method) {
            Some(Method::Segmented) | None => return Err(DeltaError::Method(method)),
            Some(m) => m,
        };
        let s = Segment {
            method,
            base_start: r.u64("segment table")?,
            base_len: r.u64("segment table")?,
            target_len: r.u64("segment table")?,
            body_len: r.u64("segment table")?,
        };
        if s.base_start
            .checked_add(s.base_len)
            .is_none_or(|end| end > base_len)
        {
            return bad(format!(
                "segment {i} has base window {}+{} in a base of {base_len} bytes",
                s.base_start, s.base_len
            ));
        }
        if s.target_len == 0 || s.target_len > MAX_FRAME {
            return bad(format!("segment {i} has {} target bytes", s.target_len));
        }
        targets = targets.saturating_add(s.target_len);
        bodies = bodies.saturating_add(s.body_len);
        segments.push(s);
    }
    if targets != target_len {
        return bad(format!(
            "segments give {targets} bytes, the header says {target_len}"
        ));
    }
    let rest = r.rest();
    if bodies != rest.len() as u64 {
        return bad(format!(
            "segment bodies take {bodies} bytes, {} follow the table",
            rest.len()
        ));
    }
    Ok((segments, rest))
}

/// Reads little-endian fields from the front of a slice, refusing to read past its end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn want(&self, what: &'static str, need: u64) -> Result<(), DeltaError> {
        if (self.bytes.len() as u64) < need {
            return Err(DeltaError::Truncated {
                what,
                need,
                have: self.bytes.len() as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, what: &'static str, n: u64) -> Result<&'a [u8], DeltaError> {
        self.want(what, n)?;
        // `want` checked that n fits in the slice's length.
        let (head, rest) = self.bytes.split_at(n as usize);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DeltaError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(what, N as u64)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DeltaError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DeltaError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DeltaError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.bytes
    }
}
