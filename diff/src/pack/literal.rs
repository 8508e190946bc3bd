//! The literal stream: the chunks a pack sends as they are, concatenated and
//! compressed as one zstd frame, written a chunk at a time and read back a chunk at a
//! time (the stream may be far larger than memory allows to hold; only zstd's window is).

use shoal_protocol::recipe::{CHUNK_MAX, ChunkRef};
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};

use super::error::PackError;
use crate::delta::MakeError;

/// Largest window the literal stream is compressed with, as a log: 128 MiB. Matches
/// reach that far back; a receiver's decoder holds that much (less for shorter streams).
pub const WINDOW_LOG_MAX: u32 = 27;
/// zstd's smallest window log.
const WINDOW_LOG_MIN: u32 = 10;
/// zstd's frame magic.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The window log for a stream of `len` bytes: the smallest power of two covering it,
/// within zstd's bounds and [`WINDOW_LOG_MAX`].
pub(crate) fn window_log(len: u64) -> u32 {
    let len = len.max(1);
    let log = u64::BITS - (len - 1).leading_zeros();
    log.clamp(WINDOW_LOG_MIN, WINDOW_LOG_MAX)
}

fn zstd_err(code: zstd_safe::ErrorCode) -> String {
    zstd_safe::get_error_name(code).to_owned()
}

/// Compresses the literal stream as it is pushed, chunk by chunk.
pub(crate) struct Encoder {
    cctx: CCtx<'static>,
    out: Vec<u8>,
}

impl Encoder {
    /// An encoder for a stream of exactly `len` bytes at `level`, with long-distance
    /// matching and a window covering the stream, up to `1 << window_log_max` bytes
    /// (and [`WINDOW_LOG_MAX`]).
    pub(crate) fn new(level: i32, len: u64, window_log_max: u32) -> Result<Self, MakeError> {
        let fail = |e| MakeError::Zstd(zstd_err(e));
        let mut cctx = CCtx::try_create()
            .ok_or_else(|| MakeError::Zstd("cannot allocate a compression context".into()))?;
        for p in [
            CParameter::CompressionLevel(level),
            CParameter::WindowLog(window_log(len).min(window_log_max.max(WINDOW_LOG_MIN))),
            CParameter::EnableLongDistanceMatching(true),
            // Every chunk's BLAKE3 is checked as it comes out.
            CParameter::ChecksumFlag(false),
        ] {
            cctx.set_parameter(p).map_err(fail)?;
        }
        cctx.set_pledged_src_size(Some(len)).map_err(fail)?;
        Ok(Encoder {
            cctx,
            out: Vec::new(),
        })
    }

    /// Compresses the next bytes of the stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), MakeError> {
        let mut input = InBuffer::around(bytes);
        while input.pos() < bytes.len() {
            self.step(&mut input, ZSTD_EndDirective::ZSTD_e_continue)?;
        }
        Ok(())
    }

    /// Ends the frame and returns it.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, MakeError> {
        let mut input = InBuffer::around(&[]);
        while self.step(&mut input, ZSTD_EndDirective::ZSTD_e_end)? != 0 {}
        Ok(self.out)
    }

    fn step(
        &mut self,
        input: &mut InBuffer<'_>,
        end: ZSTD_EndDirective,
    ) -> Result<usize, MakeError> {
        self.out.reserve(CCtx::out_size());
        let at = self.out.len();
        let mut output = OutBuffer::around_pos(&mut self.out, at);
        self.cctx
            .compress_stream2(&mut output, input, end)
            .map_err(|e| MakeError::Zstd(zstd_err(e)))
    }
}

/// The window a zstd frame's header declares: its window descriptor, or for a
/// single-segment frame its content size. `None` if `frame` does not start with a
/// whole zstd frame header.
fn declared_window(frame: &[u8]) -> Option<u64> {
    if frame.get(..4)? != ZSTD_MAGIC {
        return None;
    }
    let descriptor = *frame.get(4)?;
    if descriptor & 0x20 == 0 {
        let w = *frame.get(5)?;
        let base = 1u64 << (10 + u32::from(w >> 3));
        return Some(base + base / 8 * u64::from(w & 7));
    }
    let dict_id_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let at = 5 + dict_id_len;
    let field = frame.get(at..at + size_len)?;
    let mut le = [0u8; 8];
    le[..size_len].copy_from_slice(field);
    let size = u64::from_le_bytes(le);
    Some(if size_len == 2 { size + 256 } else { size })
}

/// What [`decode`] hands each chunk to, with its index in the stream.
pub(crate) type EachChunk<'a> = dyn FnMut(usize, &ChunkRef, &[u8]) -> Result<(), PackError> + 'a;

/// Decodes the literal stream `frame`, which must give exactly the bytes of `chunks`
/// in order, handing each chunk's bytes to `each` (with its index) as soon as they are
/// complete. Holds zstd's window (at most `1 << window_log_max` bytes, and no more than
/// the stream) and one chunk.
pub(crate) fn decode(
    frame: &[u8],
    chunks: &[ChunkRef],
    window_log_max: u32,
    each: &mut EachChunk<'_>,
) -> Result<(), PackError> {
    let corrupt = |detail: String| PackError::Corrupt {
        what: "literal stream",
        detail,
    };
    let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    if total == 0 {
        // The caller checked that an empty stream has no frame.
        return Ok(());
    }
    let window_log_max = window_log_max.clamp(WINDOW_LOG_MIN, 31);
    let window = declared_window(frame)
        .ok_or_else(|| corrupt("no zstd frame header at its start".into()))?;
    let limit = (1u64 << window_log_max).min(1u64 << window_log(total));
    if window > limit {
        return Err(PackError::TooLarge {
            what: "literal stream window",
            len: window,
            limit,
        });
    }
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(window_log_max))
        .map_err(|e| corrupt(zstd_err(e)))?;
    let mut input = InBuffer::around(frame);
    let mut out: Vec<u8> = Vec::with_capacity(DCtx::out_size());
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_MAX as usize);
    let mut next = 0;
    let mut ended = false;
    while !ended {
        out.clear();
        let read = input.pos();
        let mut output = OutBuffer::around(&mut out);
        let hint = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(|e| corrupt(zstd_err(e)))?;
        let produced = output.pos();
        ended = hint == 0;
        // zstd moves on whenever it can: no input taken and no output given means the
        // frame is cut short.
        if !ended && produced == 0 && input.pos() == read {
            return Err(corrupt("the frame is cut short".into()));
        }
        let mut bytes = &out[..produced];
        while !bytes.is_empty() {
            let Some(c) = chunks.get(next) else {
                return Err(corrupt(format!("it gives more than the {total} bytes due")));
            };
            let take = (c.len as usize - chunk.len()).min(bytes.len());
            chunk.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if chunk.len() == c.len as usize {
                each(next, c, &chunk)?;
                chunk.clear();
                next += 1;
            }
        }
    }
    if next != chunks.len() || input.pos() != frame.len() {
        return Err(corrupt(format!(
            "the frame ends after {next} of {} chunks, at byte {} of {}",
            chunks.len(),
            input.pos(),
            frame.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::recipe::ChunkId;

    fn encode(level: i32, parts: &[&[u8]]) -> Vec<u8> {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        let mut enc = Encoder::new(level, len, WINDOW_LOG_MAX).unwrap();
        for p in parts {
            enc.push(p).unwrap();
        }
        enc.finish().unwrap()
    }

    fn refs(parts: &[&[u8]]) -> Vec<ChunkRef> {
        parts
            .iter()
            .map(|p| ChunkRef {
                id: ChunkId::of(p),
                len: p.len() as u32,
            })
            .collect()
    }

    #[test]
    fn chunks_come_back_whole_and_in_order() {
        let a = vec![7u8; 300_000 % CHUNK_MAX as usize];
        let b: Vec<u8> = (0..CHUNK_MAX).map(|i| (i * 31 % 251) as u8).collect();
        let parts: [&[u8]; 3] = [&a, &b, b"tail"];
        let frame = encode(3, &parts);
        let mut got = Vec::new();
        decode(&frame, &refs(&parts), WINDOW_LOG_MAX, &mut |i, c, bytes| {
            assert!(c.id.matches(bytes));
            got.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn the_declared_window_is_read_from_either_header_form() {
        // A short stream is a single segment: its window is its content size.
        let frame = encode(3, &[b"hello"]);
        assert_eq!(declared_window(&frame), Some(5));
        // A long one declares the window of its length's power of two.
        let big = vec![1u8; (1 << 20) + 5];
        let frame = encode(1, &[&big]);
        let w = declared_window(&frame).unwrap();
        assert!(w >= big.len() as u64 && w <= 1 << 21, "window {w}");
        assert_eq!(declared_window(b"\x28\xb5\x2f"), None);
    }

    #[test]
    fn a_stream_giving_more_or_less_than_due_is_refused() {
        let frame = encode(3, &[b"abcdef"]);
        let short = refs(&[b"abc"]);
        assert!(matches!(
            decode(&frame, &short, WINDOW_LOG_MAX, &mut |_, _, _| Ok(())),
            Err(PackError::Corrupt { .. })
        ));
        let long = refs(&[b"abcdef", b"g"]);
        assert!(matches!(
            decode(&frame, &long, WINDOW_LOG_MAX, &mut |_, _, _| Ok(())),
            Err(PackError::Corrupt { .. })
        ));
        let cut = &frame[..frame.len() - 1];
        assert!(
            decode(cut, &refs(&[b"abcdef"]), WINDOW_LOG_MAX, &mut |_, _, _| Ok(
                ()
            ))
            .is_err()
        );
    }

    #[test]
    fn a_window_over_the_limit_is_refused_before_decoding() {
        let big = vec![1u8; 3 << 20];
        let frame = encode(1, &[&big]);
        let r = refs(&[&big[..CHUNK_MAX as usize]]);
        assert!(matches!(
            decode(&frame, &r, 20, &mut |_, _, _| Ok(())),
            Err(PackError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_maker_may_keep_the_window_smaller_than_the_stream() {
        let parts: Vec<Vec<u8>> = (0..12u32)
            .map(|k| {
                (0..CHUNK_MAX)
                    .map(|i| ((i * 7 + k * 13) % 253) as u8)
                    .collect()
            })
            .collect();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let len = slices.iter().map(|p| p.len() as u64).sum();
        let mut enc = Encoder::new(3, len, 20).unwrap();
        for p in &slices {
            enc.push(p).unwrap();
        }
        let frame = enc.finish().unwrap();
        assert!(len > 1 << 20);
        assert!(declared_window(&frame).unwrap() <= 1 << 20);
        // A receiver whose limit is that window takes it.
        let mut n = 0;
        decode(&frame, &refs(&slices), 20, &mut |_, c, bytes| {
            assert!(c.id.matches(bytes));
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, slices.len());
    }
}
