//! Bit-exact re-creation of gzip layer blobs from their uncompressed tars.
//!
//! A node that re-creates a layer's tar from a recipe and deltas must hand engines
//! the blob the origin holds, whose sha256 is the layer's digest. The tar alone does
//! not fix the blob: the encoder, its version and its settings do. This module
//! re-implements the encoders that write nearly every registry layer, so a blob's
//! [`Profile`] — its gzip header and the name and settings of its encoder, a few
//! dozen bytes — is all a receiver needs besides the tar.
//!
//! # Encoders
//!
//! | producer | library | [`Encoder`] |
//! | --- | --- | --- |
//! | `podman push`, `buildah push`, `skopeo copy` (containers/image 5.23, Debian 12) | pgzip 1.2.5 over klauspost/compress 1.15.12, level 5 | `Pgzip` |
//! | `docker push` (dockerd 20.10, Debian 12) | Go 1.19 `compress/gzip`, level 6 | `GoStdlib` |
//! | Python `gzip`/`zlib`, C programs linking zlib | zlib 1.2, levels 1 to 9 | `Zlib` (feature `zlib`) |
//! | `skopeo copy --dest-compress-level N` | pgzip as above, levels 1 to 9 | `Pgzip` |
//! | programs using klauspost's `gzip` package | klauspost/compress 1.15.12, levels 1 to 9 | `Klauspost` |
//!
//! Go's encoders differ from zlib's in how they match and in how they build Huffman
//! codes (a lone symbol gets a one-bit code of its own, which preflate-rs cannot
//! parse); re-implementing them reproduces their output exactly instead of
//! describing the differences. Each was checked byte for byte against the real
//! libraries: whole layers pushed by podman and docker, skopeo at levels 1 and 9,
//! and every level of each library. They are deterministic: pgzip's parallel blocks
//! depend only on their input (see `kp/mod.rs`), and none of these encoders depends on
//! how the producer sliced its writes.
//!
//! Not covered: GNU gzip (`tar czf`; its deflate differs from zlib's at every level),
//! pigz, and versions of these libraries whose output differs (a new version is a new
//! [`Encoder`]). [`profile`] finds no encoder for them; the blob travels as pieces.
//! Go on arm64 may fuse the float multiply-adds of klauspost's table-reuse estimate,
//! which can change its choices; these are amd64's.
//!
//! # Using it
//!
//! - Where a blob is ingested, [`profile`] guesses its profile from the header, the
//!   first 4 MiB of content and the last bytes ([`profile_parts`] reads only those),
//!   and [`recreates`] proves it against the whole blob (as fast as the encoder runs:
//!   the guess alone is not proof). A profile that matched goes with the recipe;
//!   [`Profile::encode`] is its wire form.
//! - Where a blob is wanted, [`recompress`] writes it from the tar with bounded memory
//!   (a few MiB: windows, hash tables, one read slice), and the receiver checks the
//!   sha256 as always, falling back to pieces when it differs.
//!
//! This module is pure: it reads and writes through the caller's `Read` and `Write`.

mod bits;
mod gostd;
mod huffman;
mod kp;
mod member;
mod profile;
mod token;
#[cfg(feature = "zlib")]
mod zlib;

use std::io::{self, Read, Write};

pub use profile::{
    DecodeError, Encoder, MAX_BLOCK, MAX_HEADER, MIN_BLOCK, PGZIP_BLOCK, Profile, VERSION,
};

/// A deflate stream being written by one of the encoders.
enum Stream {
    Go(Box<gostd::Deflate>),
    Kp(Box<kp::Deflate>),
    Pgzip(Box<kp::Pgzip>),
    #[cfg(feature = "zlib")]
    Zlib(Box<zlib::Deflate>),
}

impl Stream {
    /// The stream `encoder` writes; `None` for one this build cannot run.
    fn new(encoder: Encoder) -> Option<Self> {
        if !encoder.supported() {
            return None;
        }
        Some(match encoder {
            Encoder::GoStdlib { level } => Stream::Go(Box::new(gostd::Deflate::new(level))),
            Encoder::Klauspost { level } => Stream::Kp(Box::new(kp::Deflate::new(level))),
            Encoder::Pgzip { level, block_size } => {
                Stream::Pgzip(Box::new(kp::Pgzip::new(level, block_size as usize)))
            }
            #[cfg(feature = "zlib")]
            Encoder::Zlib { level } => Stream::Zlib(Box::new(zlib::Deflate::new(level))),
            #[cfg(not(feature = "zlib"))]
            Encoder::Zlib { .. } => return None,
        })
    }

    fn write(&mut self, data: &[u8]) {
        match self {
            Stream::Go(d) => d.write(data),
            Stream::Kp(d) => d.write(data),
            Stream::Pgzip(d) => d.write(data),
            #[cfg(feature = "zlib")]
            Stream::Zlib(d) => d.write(data),
        }
    }

    fn finish(&mut self) {
        match self {
            Stream::Go(d) => d.finish(),
            Stream::Kp(d) => d.close(),
            Stream::Pgzip(d) => d.finish(),
            #[cfg(feature = "zlib")]
            Stream::Zlib(d) => d.finish(),
        }
    }

    /// The bytes written so far and not yet taken.
    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Stream::Go(d) => d.output(),
            Stream::Kp(d) => d.output(),
            Stream::Pgzip(d) => d.output(),
            #[cfg(feature = "zlib")]
            Stream::Zlib(d) => d.output(),
        }
    }
}

/// Why [`recompress`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecompressError {
    /// Reading the uncompressed content failed.
    #[error("reading the layer's tar: {0}")]
    Read(#[source] io::Error),
    /// Writing the blob failed.
    #[error("writing the re-created blob: {0}")]
    Write(#[source] io::Error),
    /// Reading the blob to compare with ([`recreates`]) failed.
    #[error("reading the blob to compare: {0}")]
    Blob(#[source] io::Error),
}

/// Input is read in slices of this size.
const READ_SLICE: usize = 256 << 10;

/// Writes the gzip blob `profile` describes for the uncompressed content `tar`:
/// header, deflate stream, CRC-32 and length. Returns the bytes written.
///
/// Memory stays bounded whatever the content's size: the encoder's window, hash
/// tables and tokens, and one read slice, under 3 MiB. Output is written as it is
/// made.
pub fn recompress(
    profile: &Profile,
    mut tar: impl Read,
    mut out: impl Write,
) -> Result<u64, RecompressError> {
    // A Profile only exists for an encoder this build supports.
    let mut stream = Stream::new(profile.encoder()).expect("profile of a supported encoder");
    let mut crc = flate2::Crc::new();
    let mut written = profile.header().len() as u64;
    out.write_all(profile.header())
        .map_err(RecompressError::Write)?;
    let mut buf = vec![0u8; READ_SLICE];
    loop {
        let n = match tar.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RecompressError::Read(e)),
        };
        crc.update(&buf[..n]);
        stream.write(&buf[..n]);
        written += drain(stream.output(), &mut out)?;
    }
    stream.finish();
    written += drain(stream.output(), &mut out)?;
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.sum().to_le_bytes());
    trailer[4..].copy_from_slice(&crc.amount().to_le_bytes());
    out.write_all(&trailer).map_err(RecompressError::Write)?;
    Ok(written + 8)
}

fn drain(bytes: &mut Vec<u8>, out: &mut impl Write) -> Result<u64, RecompressError> {
    out.write_all(bytes).map_err(RecompressError::Write)?;
    let n = bytes.len() as u64;
    bytes.clear();
    Ok(n)
}

/// Whether [`recompress`] of `tar` under `profile` gives exactly the blob `gz` reads.
/// Stops at the first differing byte; reads the blob as it goes (it may come piece
/// by piece from a store).
pub fn recreates(
    profile: &Profile,
    tar: impl Read,
    gz: impl Read,
) -> Result<bool, RecompressError> {
    let mut cmp = Compare {
        blob: gz,
        buf: Vec::new(),
        differs: false,
        failed: None,
    };
    let result = recompress(profile, tar, &mut cmp);
    if let Some(e) = cmp.failed.take() {
        return Err(RecompressError::Blob(e));
    }
    match result {
        Ok(_) => {
            // The blob must end where the re-created bytes do.
            let mut one = [0u8; 1];
            loop {
                match cmp.blob.read(&mut one) {
                    Ok(0) => return Ok(true),
                    Ok(_) => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(RecompressError::Blob(e)),
                }
            }
        }
        Err(RecompressError::Write(_)) if cmp.differs => Ok(false),
        Err(e) => Err(e),
    }
}

/// A writer that checks what it is given against the bytes a reader gives.
struct Compare<R> {
    blob: R,
    buf: Vec<u8>,
    differs: bool,
    failed: Option<io::Error>,
}

impl<R: Read> Write for Compare<R> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.resize(b.len(), 0);
        match self.blob.read_exact(&mut self.buf) {
            Ok(()) if self.buf == b => Ok(b.len()),
            Ok(()) => {
                self.differs = true;
                Err(io::Error::other("re-created bytes differ"))
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.differs = true;
                Err(io::Error::other("the blob is shorter"))
            }
            Err(e) => {
                let kind = e.kind();
                self.failed = Some(e);
                Err(io::Error::from(kind))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why [`profile`] found no profile for a blob.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The blob is not a gzip stream.
    #[error("not a gzip blob: {0}")]
    NotGzip(&'static str),
    /// Its deflate stream does not decode.
    #[error("the blob's deflate stream is corrupt: {0}")]
    Corrupt(String),
    /// None of the encoders tried writes this stream.
    #[error("no known encoder re-creates this blob ({tried} tried)")]
    Unknown {
        /// How many encoder settings were tried.
        tried: usize,
    },
}

/// Content compressed to try each candidate, in growing prefixes so most wrong
/// candidates cost little; the last confirms one: four pgzip blocks, hundreds of Go's.
const PROBES: [usize; 3] = [32 << 10, 256 << 10, PROBE];
const PROBE: usize = 4 << 20;
/// Compressed bytes a prefix trial must reproduce to count as evidence.
const MIN_EVIDENCE: usize = 1024;

/// Finds the encoder that wrote the gzip blob `gz` (the whole blob), by its header,
/// by compressing the first 4 MiB of its content under each candidate in turn (those
/// its header allows, likeliest first) until one reproduces the blob's first bytes
/// exactly, and by how the blob ends. See [`profile_parts`] to read less of it.
///
/// The result is a guess as good as 4 MiB of identical output and the last bytes:
/// confirm it with [`recreates`] over the whole blob before relying on it. A blob of
/// several gzip members, or with bytes after its member, never [`recreates`].
pub fn profile(gz: &[u8]) -> Result<Profile, ProfileError> {
    profile_parts(gz, &gz[gz.len().saturating_sub(TAIL)..])
}

/// Bytes at the end of a blob [`profile_parts`] looks at.
pub const TAIL: usize = 16;

/// [`profile`] from the start of a blob and its last [`TAIL`] bytes (or all of it,
/// if shorter). `head` needs only the compressed bytes of the first 4 MiB of content
/// (it may be the whole blob); a blob whose content is shorter is compared whole.
pub fn profile_parts(head: &[u8], tail: &[u8]) -> Result<Profile, ProfileError> {
    let header = member::parse(head).map_err(|e| ProfileError::NotGzip(e.as_str()))?;
    if header.len > MAX_HEADER {
        return Err(ProfileError::NotGzip(
            "its header is longer than a profile carries",
        ));
    }
    let deflate = &head[header.len..];
    let (content, whole) = inflate_prefix(deflate, PROBE)?;
    let candidates = candidates(&header);
    let mut weak = None;
    for &encoder in &candidates {
        let Some(evidence) = trial(encoder, &content, whole, deflate) else {
            continue;
        };
        // A whole stream was compared exactly; a prefix counts when it was long
        // enough and the blob ends the way the encoder ends a stream.
        if whole.is_some() || (evidence >= MIN_EVIDENCE && ends_like(encoder, tail)) {
            return Ok(profile_of(head, &header, encoder));
        }
        weak.get_or_insert(encoder);
    }
    match weak {
        Some(encoder) => Ok(profile_of(head, &header, encoder)),
        None => Err(ProfileError::Unknown {
            tried: candidates.len(),
        }),
    }
}

/// Whether a blob whose last bytes are `tail` ends the way `encoder` ends a stream
/// (the bytes before the 8-byte trailer). Go's standard library closes with an empty
/// stored block (`00 00 ff ff`); pgzip flushes then closes with an empty fixed block
/// (`00 00 ff ff 03 00`); klauspost's close cannot end in `ff`. Streams that agree
/// for 4 MiB can still differ here: Go's and klauspost's level 0 do.
fn ends_like(encoder: Encoder, tail: &[u8]) -> bool {
    let end = &tail[..tail.len().saturating_sub(8)];
    match encoder {
        Encoder::GoStdlib { .. } => end.ends_with(&[0, 0, 0xff, 0xff]),
        Encoder::Pgzip { .. } => end.ends_with(&[0, 0, 0xff, 0xff, 3, 0]),
        Encoder::Klauspost { .. } => end.last() != Some(&0xff),
        Encoder::Zlib { .. } => true,
    }
}

fn profile_of(gz: &[u8], header: &member::Header, encoder: Encoder) -> Profile {
    // The header parsed, fits MAX_HEADER, and the encoder is a supported candidate.
    Profile::new(&gz[..header.len], encoder).expect("candidate profile is valid")
}

/// Decodes up to `limit` bytes of the raw deflate stream `deflate`, which may be cut
/// short. Returns them and, when the stream ended within them, its length.
fn inflate_prefix(deflate: &[u8], limit: usize) -> Result<(Vec<u8>, Option<usize>), ProfileError> {
    let mut d = flate2::Decompress::new(false);
    let mut out = vec![0u8; limit];
    loop {
        let (read, wrote) = (d.total_in() as usize, d.total_out() as usize);
        let status = d
            .decompress(
                &deflate[read..],
                &mut out[wrote..],
                flate2::FlushDecompress::None,
            )
            .map_err(|e| ProfileError::Corrupt(e.to_string()))?;
        let filled = d.total_out() as usize;
        let ended = status == flate2::Status::StreamEnd;
        let stuck = filled == wrote && d.total_in() as usize == read;
        if ended || filled == limit || stuck {
            if stuck && filled == 0 {
                return Err(ProfileError::Corrupt("no content before the end".into()));
            }
            out.truncate(filled);
            return Ok((out, ended.then_some(d.total_in() as usize)));
        }
    }
}

/// Compresses content under `encoder` and compares with the blob's deflate stream.
/// With `whole` (the stream's length) the content is all of it and must give the
/// stream exactly; otherwise a prefix must give a prefix of the stream. Returns the
/// compressed bytes that agreed, or `None` on a difference.
fn trial(encoder: Encoder, content: &[u8], whole: Option<usize>, deflate: &[u8]) -> Option<usize> {
    for probe in PROBES {
        let mut stream = Stream::new(encoder)?;
        let done = probe >= content.len() && whole.is_some();
        stream.write(&content[..probe.min(content.len())]);
        if done {
            stream.finish();
        }
        let out = stream.output();
        let agrees = match whole {
            Some(len) if done => *out == deflate[..len],
            _ => deflate.get(..out.len()) == Some(&out[..]),
        };
        if !agrees {
            return None;
        }
        if done || probe == PROBE {
            return Some(out.len());
        }
    }
    None
}

/// Encoder settings to try for a blob with `header`, likeliest first: those whose
/// writer fills the header's fields the way this header has them. Every library here
/// sets XFL from its level alone (2 for level 9, 4 for level 1, else 0), and the Go
/// ones write OS 255 with mtime 0 (Go) or year 1 (pgzip).
fn candidates(header: &member::Header) -> Vec<Encoder> {
    let go_levels: &[i8] = match header.xfl {
        2 => &[9],
        4 => &[1],
        _ => &[-1, 2, 3, 4, 5, 7, 8, 0, -2],
    };
    let zlib_levels: &[i8] = match header.xfl {
        2 => &[9],
        4 => &[1],
        _ => &[6, 2, 3, 4, 5, 7, 8],
    };
    // klauspost's -1 is its 5.
    let kp_levels: &[i8] = match header.xfl {
        2 => &[9],
        4 => &[1],
        _ => &[-1, 6, 4, 3, 2, 7, 8, 0, -2],
    };
    let pgzip = kp_levels.iter().map(|&level| Encoder::Pgzip {
        level,
        block_size: PGZIP_BLOCK,
    });
    let klauspost = kp_levels.iter().map(|&level| Encoder::Klauspost { level });
    let go = go_levels.iter().map(|&level| Encoder::GoStdlib { level });
    let zlib = zlib_levels.iter().map(|&level| Encoder::Zlib { level });

    let mut out: Vec<Encoder> = Vec::new();
    let go_made = header.os == member::OS_UNKNOWN;
    if go_made && header.mtime == member::PGZIP_ZERO_MTIME {
        out.extend(pgzip.clone());
    }
    if go_made && header.mtime == 0 {
        out.extend(go.clone());
        out.extend(klauspost.clone());
    }
    out.extend(zlib);
    out.extend(pgzip);
    out.extend(go);
    out.extend(klauspost);
    let mut seen = Vec::new();
    out.retain(|e| {
        e.supported() && !seen.contains(e) && {
            seen.push(*e);
            true
        }
    });
    out
}
