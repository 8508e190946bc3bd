//! The gzip member header (RFC 1952 §2.3), read only as far as needed to find where
//! the deflate stream starts and what the writer put in it.

/// Header flag bits.
const FTEXT: u8 = 1;
const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;

/// The fields of a gzip header that tell writers apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Bytes the header takes; the deflate stream starts here.
    pub len: usize,
    pub mtime: u32,
    pub xfl: u8,
    pub os: u8,
}

/// Why bytes are not a gzip header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadHeader {
    Magic,
    Method,
    Flags,
    Truncated,
}

impl BadHeader {
    pub fn as_str(self) -> &'static str {
        match self {
            BadHeader::Magic => "no gzip magic (1f 8b)",
            BadHeader::Method => "compression method is not deflate",
            BadHeader::Flags => "reserved header flags are set",
            BadHeader::Truncated => "the header is cut short",
        }
    }
}

/// Reads the header at the start of `b`.
pub(crate) fn parse(b: &[u8]) -> Result<Header, BadHeader> {
    if b.len() < 2 || b[0] != 0x1f || b[1] != 0x8b {
        return Err(BadHeader::Magic);
    }
    if b.len() < 10 {
        return Err(BadHeader::Truncated);
    }
    if b[2] != 8 {
        return Err(BadHeader::Method);
    }
    let flags = b[3];
    if flags & !(FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT) != 0 {
        return Err(BadHeader::Flags);
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let xlen = b.get(at..at + 2).ok_or(BadHeader::Truncated)?;
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = b.get(at..).ok_or(BadHeader::Truncated)?;
            let nul = rest
                .iter()
                .position(|&c| c == 0)
                .ok_or(BadHeader::Truncated)?;
            at += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > b.len() {
        return Err(BadHeader::Truncated);
    }
    Ok(Header {
        len: at,
        mtime: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        xfl: b[8],
        os: b[9],
    })
}

/// The modification time pgzip writes when none is set: `time.Time{}.Unix()`
/// (year 1, -62135596800 s) truncated to 32 bits. Go's `compress/gzip` writes 0.
pub(crate) const PGZIP_ZERO_MTIME: u32 = (-62_135_596_800i64).rem_euclid(1 << 32) as u32;

/// The OS byte Go and Python write ("unknown").
pub(crate) const OS_UNKNOWN: u8 = 255;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgzip_zero_mtime_is_go_zero_time() {
        assert_eq!(PGZIP_ZERO_MTIME.to_le_bytes(), [0x00, 0x09, 0x6e, 0x88]);
    }

    #[test]
    fn optional_fields_are_skipped() {
        let mut h = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            1,
            2,
            3,
            4,
            0,
            3,
        ];
        h.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        h.extend_from_slice(b"name\0comment\0");
        h.extend_from_slice(&[0xaa, 0xbb]);
        let parsed = parse(&h).unwrap();
        assert_eq!(parsed.len, h.len());
        assert_eq!(parsed.mtime, 0x0403_0201);
        assert_eq!(parsed.os, 3);
        assert_eq!(parse(&h[..h.len() - 1]), Err(BadHeader::Truncated));
        assert_eq!(parse(&h[..15]), Err(BadHeader::Truncated));
        assert_eq!(parse(b"\x1f\x8b\x07\0\0\0\0\0\0\0"), Err(BadHeader::Method));
        assert_eq!(
            parse(b"\x1f\x8b\x08\x20\0\0\0\0\0\0"),
            Err(BadHeader::Flags)
        );
        assert_eq!(parse(b"PK"), Err(BadHeader::Magic));
    }
}
