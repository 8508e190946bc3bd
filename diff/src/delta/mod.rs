//! Binary deltas between two versions of a file: [`make`] on a node that holds both,
//! [`apply`] on a node that holds the base and receives the delta from a peer.
//!
//! # Goals
//!
//! - `apply(base, make(base, target)) == target`, always checked by BLAKE3.
//! - Small deltas on rebuilt binaries (bidiff's bsdiff-style patches) where the files
//!   are small enough for bidiff's memory and time; zstd with the base as a prefix
//!   dictionary (zstd's `--patch-from`) everywhere else: fast, and good enough.
//! - Bounded memory for any file size, making and applying: large files are cut into
//!   segments along content chunk boundaries, each encoded against a window of the base.
//! - Self-describing and safe to decode from an untrusted peer: the header names base
//!   and target by BLAKE3, every length is checked against the bytes present and a
//!   limit before anything is allocated, and no input makes the decoder panic.
//!
//! Non-goals: streaming the base (both sides hold it as one slice, which may be a
//! memory map), and deltas between more than two files (one delta, one base).
//!
//! # Format, version 1
//!
//! All integers little-endian.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | version, 1 |
//! | 1 | 1 | method: 0 `Literal`, 1 `Zstd`, 2 `Bsdiff`, 3 `Segmented` |
//! | 2 | 32 | BLAKE3 of the base (of zero bytes for an empty base) |
//! | 34 | 32 | BLAKE3 of the target |
//! | 66 | 8 | target length |
//! | 74 | … | body |
//!
//! The body of the plain methods is one zstd frame and nothing after it, giving at
//! most [`MAX_FRAME`] bytes:
//!
//! - `Literal`: the target compressed alone; the base is not used.
//! - `Zstd`: the target compressed with the whole base as a raw-content prefix
//!   dictionary (`ZSTD_CCtx_refPrefix`), window log large enough to span base and
//!   target, long-distance matching on.
//! - `Bsdiff`: a bsdiff stream in the `bipatch` crate's format (magic `0xB1DF`, version
//!   `0x1000`, then per control: varint add length, that many bytes to add to the base
//!   byte-wise, varint copy length, that many new bytes, zigzag varint seek in the
//!   base), compressed alone. The stream may be at most `n + n/4 + 4096` bytes for a
//!   target of `n` bytes.
//!
//! A `Segmented` body is a table, then the segments' bodies in order:
//!
//! | size | field |
//! | --- | --- |
//! | 4 | segment count |
//! | 33 × count | per segment: method (0, 1 or 2), base window start (8), base window length (8), target length (8), body length (8) |
//! | … | the bodies, each a plain method's body against `base[start .. start + length]` |
//!
//! Each segment gives 1 to [`MAX_FRAME`] bytes; the segments' targets, concatenated,
//! are the target (their lengths add up to the header's), and their bodies fill the
//! delta to its end exactly.
//!
//! A decoder checks, in this order: version and method; the target length against its
//! caller's limit, and an unsegmented one against [`MAX_FRAME`]; the segment table's
//! sums and windows against the base's length and the bytes present; BLAKE3 of the base
//! against the header ([`DeltaError::WrongBase`]); each frame's length as it decodes;
//! BLAKE3 of the result against the header.
//!
//! # Choosing a method
//!
//! [`make`] follows the rule documented on [`Budget`]. [`worth_sending`] says whether
//! the result should be sent at all.
//!
//! # Using it
//!
//! - A delta proves only that it turns *its* base into *its* target. A receiver that
//!   asked for target T against base B reads the header first ([`read_header`]) and
//!   drops a delta naming anything else, before applying it.
//! - [`apply`] returns the target in memory (at most [`MAX_TARGET`]); [`apply_into`]
//!   writes it out a frame at a time, for files of any size.
//! - [`make`] is CPU-bound for seconds (bidiff: up to about 7 s at the default limit;
//!   zstd: about 60 MB/s): run it off any async executor.

mod error;
mod format;
pub(crate) mod frame;
mod segment;

use std::io::Write;

use shoal_protocol::recipe::{CHUNK_MAX, ChunkId};

pub use error::{DeltaError, MakeError};
pub use format::{HEADER_LEN, Header, MAX_FRAME, Method, VERSION, read_header};

use format::{Reader, Segment};
use frame::{Decoder, Encoder};

/// Largest target [`apply`] accepts (1 GiB): it returns the target in memory. Use
/// [`apply_into`] with a limit of your own for larger files.
pub const MAX_TARGET: u64 = 1 << 30;

/// Working memory bidiff is granted per byte of base, and per byte of target. Measured
/// (peak RSS less the inputs, on rebuilt binaries of 2, 10 and 11 MiB): 4 bytes per
/// base byte (divsufsort's suffix array of `i32`) and 1 per target byte (the stream
/// before compression), plus the zstd context. The rule adds a byte to each for the
/// allocator's slack.
pub const BSDIFF_BYTES_PER_BASE_BYTE: u64 = 5;
/// See [`BSDIFF_BYTES_PER_BASE_BYTE`].
pub const BSDIFF_BYTES_PER_TARGET_BYTE: u64 = 2;

/// zstd's compression context at levels 1 to 19, in MiB: the largest
/// `ZSTD_sizeof_CCtx` seen after compressing with a prefix, long-distance matching and
/// window logs 20 to 31, over two pairs of 23 and 46 MiB. Levels 12 and up switch to
/// binary-tree and optimal-parser strategies, whose tables are larger.
const ZSTD_CONTEXT_MIB: [u64; 19] = [
    4, 4, 5, 5, 8, 11, 11, 11, 18, 24, 24, 48, 40, 56, 72, 48, 56, 60, 113,
];

/// How much a delta may cost to make. [`make`] chooses its method by this rule:
///
/// 1. A pair whose base and target together exceed [`segment_above`](Self::segment_above)
///    is `Segmented` (an empty target never is); each segment is then chosen by the
///    rules below against its base window.
/// 2. An empty base (or window) or an empty target gives `Literal`.
/// 3. Otherwise zstd with the base as prefix (`Zstd`) is made, and bidiff (`Bsdiff`) is
///    tried as well when all of these hold, keeping the smaller:
///    - base + target is at most [`bsdiff_max`](Self::bsdiff_max) (its time),
///    - `5 × base + 2 × target` plus the zstd context fits [`memory`](Self::memory),
///    - the `Zstd` delta is at most 1/16 of base + target: the files are similar. On
///      dissimilar input bidiff is slowest (each unmatched byte costs a suffix-array
///      search: 17 s for 4 MiB of random bytes) and gains nothing.
///
/// What the rule buys, measured on a real pair of builds (containerd-shim-runc v1 and
/// v2, 11 MiB each; README.md has the figures and the command): bidiff 755,647 bytes
/// in 4.9 s, zstd at level 9 1,287,360 bytes in 0.38 s, zstd at level 19 971,827 bytes
/// in 10.7 s (`zstd -19 --long=27 --patch-from`: 978,140 bytes in 11.3 s). Large pairs
/// are segmented and run at about 60 MB/s at level 9; the working memory stayed at
/// 21–26 MiB for generated pairs of 64 MiB to 1 GiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Working memory [`make`] may use besides its inputs and the delta it returns.
    /// It decides whether bidiff runs, and lowers the zstd level until its context
    /// fits (never below 1). Default 512 MiB.
    pub memory: u64,
    /// zstd compression level, 1 to 19 (others are clamped). Default 9: on the pair
    /// above, about 25 times as fast as level 19 for a delta a third larger; deltas are
    /// made on demand, while a peer waits.
    pub level: i32,
    /// Largest base + target handed to bidiff in one run. Default 32 MiB: bidiff runs
    /// at 2.4 to 8.5 MB/s of target on rebuilt binaries (the pair above, and the same
    /// binary with generated edits), so 2 to 7 s at the limit for similar files.
    pub bsdiff_max: u64,
    /// Pairs whose base + target exceed this are segmented. Default and most:
    /// [`MAX_FRAME`] (64 MiB).
    pub segment_above: u64,
    /// Target bytes per segment; a segment ends at the first chunk boundary past this,
    /// and is encoded against a base window of 1.5 times this. Default 16 MiB; clamped
    /// between 256 KiB and 31.9 MiB (so a segment never exceeds [`MAX_FRAME`]).
    pub segment: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            memory: 512 << 20,
            level: 9,
            bsdiff_max: 32 << 20,
            segment_above: MAX_FRAME,
            segment: 16 << 20,
        }
    }
}

impl Budget {
    /// The budget with every value within its bounds.
    fn validated(&self) -> Budget {
        let mut level = self.level.clamp(1, 19);
        while level > 1 && ZSTD_CONTEXT_MIB[level as usize - 1] << 20 > self.memory {
            level -= 1;
        }
        Budget {
            memory: self.memory,
            level,
            bsdiff_max: self.bsdiff_max.min(i32::MAX as u64),
            segment_above: self.segment_above.min(MAX_FRAME),
            segment: self
                .segment
                .clamp(u64::from(CHUNK_MAX), (MAX_FRAME - u64::from(CHUNK_MAX)) / 2),
        }
    }

    /// Bytes of base window each segment is encoded against.
    fn window(&self) -> usize {
        (self.segment + self.segment / 2) as usize
    }

    /// Whether bidiff may run on this pair, given the size of its `Zstd` delta.
    fn bsdiff_fits(&self, base: usize, target: usize, zstd_len: usize, zstd_ctx: usize) -> bool {
        let (base, target) = (base as u64, target as u64);
        let memory = base * BSDIFF_BYTES_PER_BASE_BYTE
            + target * BSDIFF_BYTES_PER_TARGET_BYTE
            + zstd_ctx as u64;
        base + target <= self.bsdiff_max
            && memory <= self.memory
            && zstd_len as u64 * 16 <= base + target
    }
}

/// A delta: its header and its encoded bytes (header included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    header: Header,
    bytes: Vec<u8>,
}

impl Delta {
    /// What the header says.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The encoded delta, as sent and cached.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded delta.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Length of the encoded delta.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a delta has at least a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Makes the delta that turns `base` into `target`, choosing the method by the rule on
/// [`Budget`].
pub fn make(base: &[u8], target: &[u8], budget: &Budget) -> Result<Delta, MakeError> {
    let budget = budget.validated();
    let mut enc = Encoder::new(budget.level)?;
    // The header goes in front once the method is known; bodies are appended to the
    // delta as they are made, so it is never copied whole.
    let mut bytes = vec![0; HEADER_LEN];
    let method = if !target.is_empty() && (base.len() + target.len()) as u64 > budget.segment_above
    {
        segmented(base, target, &budget, &mut enc, &mut bytes)?;
        Method::Segmented
    } else {
        let (method, body) = single(base, target, &budget, &mut enc)?;
        bytes.extend_from_slice(&body);
        method
    };
    let header = Header {
        method,
        base: ChunkId::of(base),
        target: ChunkId::of(target),
        target_len: target.len() as u64,
    };
    bytes[..HEADER_LEN].copy_from_slice(&header.encode());
    Ok(Delta { header, bytes })
}

/// One frame: the best plain method for this pair (rules 2 and 3 on [`Budget`]).
fn single<'a>(
    base: &'a [u8],
    target: &[u8],
    budget: &Budget,
    enc: &mut Encoder<'a>,
) -> Result<(Method, Vec<u8>), MakeError> {
    if base.is_empty() || target.is_empty() {
        return Ok((Method::Literal, enc.zstd(None, target)?));
    }
    let zstd = enc.zstd(Some(base), target)?;
    if budget.bsdiff_fits(base.len(), target.len(), zstd.len(), enc.context_size()) {
        match enc.bsdiff(base, target)? {
            Some(bsdiff) if bsdiff.len() < zstd.len() => return Ok((Method::Bsdiff, bsdiff)),
            _ => {}
        }
    }
    Ok((Method::Zstd, zstd))
}

/// Appends a segmented body to `out` (rule 1 on [`Budget`]): the table, filled in as
/// each segment's frame is made and appended.
fn segmented<'a>(
    base: &'a [u8],
    target: &[u8],
    budget: &Budget,
    enc: &mut Encoder<'a>,
    out: &mut Vec<u8>,
) -> Result<(), MakeError> {
    let pieces = segment::plan(base, target, budget.segment as usize, budget.window());
    // A segment is at least CHUNK_MAX bytes, so a target of any size has fewer than
    // u32::MAX of them.
    out.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
    let table = out.len();
    out.resize(table + pieces.len() * format::SEGMENT_ENTRY_LEN, 0);
    for (i, p) in pieces.into_iter().enumerate() {
        let window = &base[p.base_start..p.base_start + p.base_len];
        let seg = &target[p.target_start..p.target_start + p.target_len];
        let (method, body) = single(window, seg, budget, enc)?;
        let entry = Segment {
            method,
            base_start: p.base_start as u64,
            base_len: p.base_len as u64,
            target_len: p.target_len as u64,
            body_len: body.len() as u64,
        };
        let at = table + i * format::SEGMENT_ENTRY_LEN;
        out[at..at + format::SEGMENT_ENTRY_LEN].copy_from_slice(&entry.encode());
        out.extend_from_slice(&body);
    }
    Ok(())
}

/// Whether a delta of `delta_len` bytes is worth sending instead of the chunks of the
/// target the receiver lacks, which would take `missing_compressed` bytes as the zstd
/// stream the node sends new content in. It is when it takes less than three quarters
/// of that: a delta also costs the receiver a read and a hash of the base, and the
/// sender its making (once per fleet, as deltas are cached), so a near tie goes to the
/// chunks, which every node can serve and reuse.
pub fn worth_sending(delta_len: u64, missing_compressed: u64) -> bool {
    u128::from(delta_len) * 4 < u128::from(missing_compressed) * 3
}

/// Applies `delta` to `base`, returning the target. The target may be at most
/// [`MAX_TARGET`] bytes; see [`apply_into`] for the checks made.
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    apply_limited(base, delta, MAX_TARGET)
}

/// [`apply`] with a limit of the caller's on the target's length.
pub fn apply_limited(base: &[u8], delta: &[u8], max_target: u64) -> Result<Vec<u8>, DeltaError> {
    let (header, body) = check(base, delta, max_target)?;
    if header.method != Method::Segmented {
        let out = Decoder::new().decode(header.method, base, body, header.target_len)?;
        verify(&header, blake3::hash(&out))?;
        return Ok(out);
    }
    // A table of a few hundred bytes can declare a target of `max_target`: reserve no
    // more than one frame up front, and grow as frames decode.
    let mut out = Vec::with_capacity(header.target_len.min(MAX_FRAME) as usize);
    let hash = segments(base, &header, body, &mut |bytes| {
        out.extend_from_slice(bytes);
        Ok(())
    })?;
    verify(&header, hash)?;
    Ok(out)
}

/// Applies `delta` to `base`, writing the target to `out` as it is decoded (one frame
/// of at most [`MAX_FRAME`] bytes held at a time), and returns its length. The target
/// may be at most `max_target` bytes.
///
/// Checks, before decoding: the header's version and method, the target length against
/// `max_target`, the segment table, and that `base` hashes to the header's base id
/// ([`DeltaError::WrongBase`] if not). While decoding: each frame's length. After: the
/// BLAKE3 of all that was written against the header's target id. When an error comes
/// after some bytes were written, they are the caller's to discard.
pub fn apply_into(
    base: &[u8],
    delta: &[u8],
    max_target: u64,
    out: &mut dyn Write,
) -> Result<u64, DeltaError> {
    let (header, body) = check(base, delta, max_target)?;
    let hash = if header.method == Method::Segmented {
        segments(base, &header, body, &mut |bytes| {
            out.write_all(bytes).map_err(DeltaError::Write)
        })?
    } else {
        let bytes = Decoder::new().decode(header.method, base, body, header.target_len)?;
        out.write_all(&bytes).map_err(DeltaError::Write)?;
        blake3::hash(&bytes)
    };
    verify(&header, hash)?;
    Ok(header.target_len)
}

/// Checks a delta's header, limits and base; returns the header and the body.
fn check<'d>(
    base: &[u8],
    delta: &'d [u8],
    max_target: u64,
) -> Result<(Header, &'d [u8]), DeltaError> {
    let header = read_header(delta)?;
    if header.target_len > max_target {
        return Err(DeltaError::TooLarge {
            len: header.target_len,
            limit: max_target,
        });
    }
    if header.method != Method::Segmented && header.target_len > MAX_FRAME {
        return Err(DeltaError::Inconsistent(format!(
            "an unsegmented delta of {} bytes (at most {MAX_FRAME})",
            header.target_len
        )));
    }
    let body = &delta[HEADER_LEN..];
    if header.method == Method::Segmented {
        // Checked here, before hashing the base, and again as the segments are read.
        format::read_segments(body, base.len() as u64, header.target_len)?;
    }
    let got = ChunkId::of(base);
    if got != header.base {
        return Err(DeltaError::WrongBase {
            expected: header.base,
            got,
        });
    }
    Ok((header, body))
}

/// Decodes a segmented body, handing each segment's bytes to `sink`; returns the
/// BLAKE3 of them all.
fn segments(
    base: &[u8],
    header: &Header,
    body: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), DeltaError>,
) -> Result<blake3::Hash, DeltaError> {
    let (table, bodies) = format::read_segments(body, base.len() as u64, header.target_len)?;
    let mut bodies = Reader::new(bodies);
    let mut hasher = blake3::Hasher::new();
    let mut decoder = Decoder::new();
    for s in table {
        // The table was checked: windows lie inside the base, bodies fill the rest.
        let window = &base[s.base_start as usize..(s.base_start + s.base_len) as usize];
        let frame = bodies.take("segment body", s.body_len)?;
        let bytes = decoder.decode(s.method, window, frame, s.target_len)?;
        hasher.update(&bytes);
        sink(&bytes)?;
    }
    Ok(hasher.finalize())
}

fn verify(header: &Header, got: blake3::Hash) -> Result<(), DeltaError> {
    let got = ChunkId(*got.as_bytes());
    if got != header.target {
        return Err(DeltaError::TargetMismatch {
            expected: header.target,
            got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_clamped_so_no_frame_exceeds_max_frame() {
        let wild = Budget {
            memory: u64::MAX,
            level: 99,
            bsdiff_max: u64::MAX,
            segment_above: u64::MAX,
            segment: u64::MAX,
        }
        .validated();
        assert_eq!(wild.level, 19);
        assert_eq!(wild.segment_above, MAX_FRAME);
        assert!(2 * wild.segment + u64::from(CHUNK_MAX) <= MAX_FRAME);
        assert!(wild.bsdiff_max <= i32::MAX as u64);
        let tiny = Budget {
            level: -5,
            segment: 1,
            ..Budget::default()
        }
        .validated();
        assert_eq!((tiny.level, tiny.segment), (1, u64::from(CHUNK_MAX)));
        // A small memory budget lowers the level until zstd's context fits.
        let small = |memory: u64| {
            Budget {
                memory,
                level: 19,
                ..Budget::default()
            }
            .validated()
            .level
        };
        assert_eq!(small(512 << 20), 19);
        assert_eq!(small(64 << 20), 18);
        assert_eq!(small(20 << 20), 9);
        assert_eq!(small(0), 1);
    }

    #[test]
    fn bsdiff_runs_only_within_time_memory_and_similarity() {
        let b = Budget::default();
        let mib = 1 << 20;
        let ctx = 18 * mib;
        assert!(b.bsdiff_fits(10 * mib, 10 * mib, mib, ctx));
        // Over bsdiff_max.
        assert!(!b.bsdiff_fits(17 * mib, 16 * mib, mib, ctx));
        // Dissimilar: the zstd delta is over 1/16 of base + target.
        assert!(!b.bsdiff_fits(10 * mib, 10 * mib, 2 * mib, ctx));
        // Over the memory budget: 5 × 16 + 2 × 16 + 18 MiB is more than 100 MiB.
        let tight = Budget {
            memory: 100 << 20,
            ..Budget::default()
        };
        assert!(!tight.bsdiff_fits(16 * mib, 16 * mib, mib, ctx));
    }
}
