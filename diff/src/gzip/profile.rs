//! What re-creates a blob: the gzip header bytes and the encoder that wrote the
//! deflate stream, and their wire form.
//!
//! # Wire format, version 1
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | version, 1 |
//! | 1 | 1 | encoder: 1 Go `compress/flate`, 2 klauspost flate, 3 pgzip, 4 zlib |
//! | 2 | 1 | level, a signed byte (-2 Huffman only, -1 default, 0 stored, 1..9) |
//! | 3 | 4 | pgzip's block size in bytes, little-endian; 0 for the others |
//! | 7 | 2 | header length, little-endian |
//! | 9 | … | the gzip member header, verbatim |
//!
//! A decoder checks that the encoder and level are ones this build can run, that a
//! pgzip block size lies in [`MIN_BLOCK`]..=[`MAX_BLOCK`] (it bounds the memory
//! [`recompress`](super::recompress) takes), that the header is a gzip header of
//! exactly the given length (at most [`MAX_HEADER`]), and that nothing follows it.

use super::member;

/// Longest gzip header a profile carries. Go and zlib write 10 bytes; a file name or
/// comment makes it longer.
pub const MAX_HEADER: usize = 4096;
/// Smallest pgzip block size (pgzip refuses 16 KiB or less).
pub const MIN_BLOCK: u32 = 16 * 1024 + 1;
/// Largest pgzip block size accepted (pgzip's default is 1 MiB).
pub const MAX_BLOCK: u32 = 64 << 20;
/// pgzip's default block size.
pub const PGZIP_BLOCK: u32 = 1 << 20;
/// The profile format version this build writes and reads.
pub const VERSION: u8 = 1;

/// The encoder that wrote a deflate stream, with its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// Go's `compress/flate` as of Go 1.19, under `compress/gzip`: what `docker push`
    /// (dockerd 20.10) writes, at level -1 (6). Levels -2 to 9.
    GoStdlib {
        /// Go's level.
        level: i8,
    },
    /// klauspost/compress 1.15.12 flate as one stream (klauspost's `gzip` package).
    /// Levels -2 to 9 (-1 is 5).
    Klauspost {
        /// klauspost's level.
        level: i8,
    },
    /// pgzip 1.2.5 over klauspost/compress 1.15.12: what podman, buildah and skopeo
    /// (containers/image 5.23) write, at level -1 (5). Levels -2 to 9.
    Pgzip {
        /// klauspost's level.
        level: i8,
        /// Input bytes per independently compressed block.
        block_size: u32,
    },
    /// zlib 1.2 `deflate` with a 32 KiB window, memLevel 8 and the default strategy
    /// (Python's `zlib` and `gzip` modules, most C programs). Levels 1 to 9. Needs
    /// this crate's `zlib` feature.
    Zlib {
        /// zlib's level.
        level: i8,
    },
}

impl Encoder {
    fn kind(self) -> u8 {
        match self {
            Encoder::GoStdlib { .. } => 1,
            Encoder::Klauspost { .. } => 2,
            Encoder::Pgzip { .. } => 3,
            Encoder::Zlib { .. } => 4,
        }
    }

    /// The level, as the encoder's own API takes it.
    pub fn level(self) -> i8 {
        match self {
            Encoder::GoStdlib { level }
            | Encoder::Klauspost { level }
            | Encoder::Pgzip { level, .. }
            | Encoder::Zlib { level } => level,
        }
    }

    /// Whether this build can run the encoder at its settings.
    pub fn supported(self) -> bool {
        match self {
            Encoder::GoStdlib { level } => (-2..=9).contains(&level),
            Encoder::Klauspost { level } => super::kp::supported(level),
            Encoder::Pgzip { level, block_size } => {
                super::kp::supported(level) && (MIN_BLOCK..=MAX_BLOCK).contains(&block_size)
            }
            Encoder::Zlib { level } => cfg!(feature = "zlib") && (1..=9).contains(&level),
        }
    }
}

impl std::fmt::Display for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Encoder::GoStdlib { level } => write!(f, "go-compress/flate level {level}"),
            Encoder::Klauspost { level } => write!(f, "klauspost-flate level {level}"),
            Encoder::Pgzip { level, block_size } => {
                write!(f, "pgzip level {level} block {block_size}")
            }
            Encoder::Zlib { level } => write!(f, "zlib level {level}"),
        }
    }
}

/// How to re-create a gzip blob from its uncompressed content: a few dozen bytes,
/// made by [`profile`](super::profile) where the blob came from and used by
/// [`recompress`](super::recompress) wherever its content is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    header: Vec<u8>,
    encoder: Encoder,
}

/// Why bytes are not a profile this build can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The profile ends before its fields do.
    #[error("gzip profile is truncated")]
    Truncated,
    /// A format version this build does not know.
    #[error("gzip profile version {0} is not supported (this build reads {VERSION})")]
    Version(u8),
    /// An encoder code this build does not know.
    #[error("gzip profile names unknown encoder {0}")]
    UnknownEncoder(u8),
    /// An encoder or setting this build cannot run.
    #[error("this build cannot run the gzip profile's encoder ({0})")]
    Unsupported(Encoder),
    /// The header field is not one gzip header of the stated length.
    #[error("gzip profile's header is not a gzip header: {0}")]
    Header(&'static str),
    /// A block size on an encoder that has none.
    #[error("gzip profile gives block size {0} to an encoder without blocks")]
    BlockSize(u32),
    /// Bytes follow the header.
    #[error("gzip profile has {0} bytes after its header")]
    Trailing(usize),
}

impl Profile {
    /// A profile of `encoder` behind `header`, which must be one whole gzip header.
    pub fn new(header: &[u8], encoder: Encoder) -> Result<Self, DecodeError> {
        if header.len() > MAX_HEADER {
            return Err(DecodeError::Header("longer than a profile carries"));
        }
        let parsed = member::parse(header).map_err(|e| DecodeError::Header(e.as_str()))?;
        if parsed.len != header.len() {
            return Err(DecodeError::Header("its length disagrees with its fields"));
        }
        if !encoder.supported() {
            return Err(DecodeError::Unsupported(encoder));
        }
        Ok(Profile {
            header: header.to_vec(),
            encoder,
        })
    }

    /// The encoder and its settings.
    pub fn encoder(&self) -> Encoder {
        self.encoder
    }

    /// The gzip header written before the deflate stream.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The wire form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.header.len());
        out.push(VERSION);
        out.push(self.encoder.kind());
        out.push(self.encoder.level() as u8);
        let block = match self.encoder {
            Encoder::Pgzip { block_size, .. } => block_size,
            _ => 0,
        };
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&(self.header.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.header);
        out
    }

    /// Reads a profile from its wire form, which may come from a peer.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let fixed = b.get(..9).ok_or(DecodeError::Truncated)?;
        if fixed[0] != VERSION {
            return Err(DecodeError::Version(fixed[0]));
        }
        let level = fixed[2] as i8;
        let block_size = u32::from_le_bytes([fixed[3], fixed[4], fixed[5], fixed[6]]);
        let encoder = match fixed[1] {
            1 => Encoder::GoStdlib { level },
            2 => Encoder::Klauspost { level },
            3 => Encoder::Pgzip { level, block_size },
            4 => Encoder::Zlib { level },
            k => return Err(DecodeError::UnknownEncoder(k)),
        };
        if block_size != 0 && !matches!(encoder, Encoder::Pgzip { .. }) {
            return Err(DecodeError::BlockSize(block_size));
        }
        let header_len = usize::from(u16::from_le_bytes([fixed[7], fixed[8]]));
        let header = b.get(9..9 + header_len).ok_or(DecodeError::Truncated)?;
        if b.len() > 9 + header_len {
            return Err(DecodeError::Trailing(b.len() - 9 - header_len));
        }
        Profile::new(header, encoder)
    }
}
