//! One frame: a target of at most [`MAX_FRAME`](super::MAX_FRAME) bytes encoded against
//! one base (a whole base, or a window of it) by a plain method, and decoded back.
//!
//! Decoding is one-shot: the output buffer is allocated at the length the caller has
//! already checked, and zstd writes straight into it. So no zstd window buffer is ever
//! allocated from a frame header (the decoder's `window_log_max` never comes into play),
//! and a frame that would give more bytes than declared fails with "destination buffer
//! too small" instead of growing anything.

use std::io::{Cursor, Read};

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, ResetDirective};

use super::Method;
use super::error::{DeltaError, MakeError};

/// zstd's smallest and largest window logs (64-bit builds).
const WINDOW_LOG_MIN: u32 = 10;
const WINDOW_LOG_MAX: u32 = 31;

/// Longest bsdiff stream accepted for a target of `len` bytes. A stream holds every
/// target byte once (as a difference or as new data) plus three varints per control;
/// bidiff emits a control per match of more than 8 bytes, so real streams stay within
/// 1% over the target (measured: +0.16% on a rebuilt 11 MB binary). A stream over the
/// bound is not used when making, and refused when applying.
pub(crate) fn bsdiff_bound(len: u64) -> u64 {
    len + len / 4 + 4096
}

/// The window log that lets every byte of the target refer back to the start of the
/// prefix: the smallest power of two covering both.
fn window_log(span: usize) -> u32 {
    let span = span.max(1) as u64;
    let log = u64::BITS - (span - 1).leading_zeros();
    log.clamp(WINDOW_LOG_MIN, WINDOW_LOG_MAX)
}

fn zstd_err(code: zstd_safe::ErrorCode) -> String {
    zstd_safe::get_error_name(code).to_owned()
}

/// Compresses frames, reusing one zstd context (its tables) across them.
pub(crate) struct Encoder<'a> {
    cctx: CCtx<'a>,
    level: i32,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(level: i32) -> Result<Self, MakeError> {
        let cctx = CCtx::try_create()
            .ok_or_else(|| MakeError::Zstd("cannot allocate a compression context".into()))?;
        Ok(Encoder { cctx, level })
    }

    /// Bytes the zstd context holds now (its tables after the last frame).
    pub(crate) fn context_size(&self) -> usize {
        self.cctx.sizeof()
    }

    /// One zstd frame of `target`, with `prefix` (if any) as a raw-content dictionary
    /// that matches may reach anywhere into: the window covers prefix and target, and
    /// long-distance matching finds repeats far back (zstd's `--patch-from`).
    pub(crate) fn zstd(
        &mut self,
        prefix: Option<&'a [u8]>,
        target: &[u8],
    ) -> Result<Vec<u8>, MakeError> {
        // zstd drops the part of a prefix that the input overlaps in memory (it takes
        // the input for newer bytes of the same window), so a target that shares memory
        // with its base, the very same slice included, would find nothing in it.
        let copy;
        let target = match prefix {
            Some(p) if overlap(p, target) => {
                copy = target.to_vec();
                &copy[..]
            }
            _ => target,
        };
        let c = &mut self.cctx;
        let set =
            |c: &mut CCtx<'a>, p| c.set_parameter(p).map_err(|e| MakeError::Zstd(zstd_err(e)));
        c.reset(ResetDirective::SessionAndParameters)
            .map_err(|e| MakeError::Zstd(zstd_err(e)))?;
        set(c, CParameter::CompressionLevel(self.level))?;
        // The whole target's BLAKE3 is checked after decoding; zstd's own checksum
        // would add nothing.
        set(c, CParameter::ChecksumFlag(false))?;
        if let Some(prefix) = prefix {
            set(
                c,
                CParameter::WindowLog(window_log(prefix.len() + target.len())),
            )?;
            set(c, CParameter::EnableLongDistanceMatching(true))?;
            c.ref_prefix(prefix)
                .map_err(|e| MakeError::Zstd(zstd_err(e)))?;
        }
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(target.len()));
        c.compress2(&mut out, target)
            .map_err(|e| MakeError::Zstd(zstd_err(e)))?;
        Ok(out)
    }

    /// A zstd-compressed bsdiff stream from `base` to `target` (both non-empty), or
    /// `None` if the stream is over [`bsdiff_bound`].
    pub(crate) fn bsdiff(
        &mut self,
        base: &[u8],
        target: &[u8],
    ) -> Result<Option<Vec<u8>>, MakeError> {
        debug_assert!(!base.is_empty(), "bidiff panics on an empty base");
        let stream = bsdiff_stream(base, target);
        if stream.len() as u64 > bsdiff_bound(target.len() as u64) {
            return Ok(None);
        }
        self.zstd(None, &stream).map(Some)
    }
}

/// Whether two slices share any byte of memory.
fn overlap(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (a.as_ptr_range(), b.as_ptr_range());
    a.start < b.end && b.start < a.end
}

/// bidiff's stream from `base` to `target`, in bipatch's format.
fn bsdiff_stream(base: &[u8], target: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(target.len() + target.len() / 64 + 64);
    // Writing to a Vec cannot fail, here and below.
    let mut w = bidiff::enc::Writer::new(out).expect("writes to a Vec");
    let mut tr = bidiff::Translator::new(base, target, |c| w.write(c));
    bidiff::diff(base, target, &bidiff::DiffParams::default(), |m| {
        tr.translate(m)
    })
    .expect("writes to a Vec");
    tr.close().expect("writes to a Vec");
    w.into_inner()
}

/// Decodes frames, reusing one zstd context across them (a segmented delta may hold
/// many small segments).
pub(crate) struct Decoder<'a> {
    dctx: DCtx<'a>,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new() -> Self {
        // Like any Rust allocation, a failure to allocate the context aborts.
        Decoder {
            dctx: DCtx::create(),
        }
    }

    /// Decodes a frame of `method` giving `len` bytes (at most
    /// [`MAX_FRAME`](super::MAX_FRAME), checked by the caller) against `base`.
    pub(crate) fn decode(
        &mut self,
        method: Method,
        base: &'a [u8],
        frame: &[u8],
        len: u64,
    ) -> Result<Vec<u8>, DeltaError> {
        match method {
            Method::Literal => self.unzstd(None, frame, len, true),
            Method::Zstd => self.unzstd(Some(base), frame, len, true),
            Method::Bsdiff => self.unbsdiff(base, frame, len),
            Method::Segmented => Err(DeltaError::Method(method.byte())),
        }
    }

    /// Decodes one zstd frame that must be all of `frame` and give exactly `len` bytes
    /// (at most `len` if `exact` is false), with `prefix` as its dictionary.
    fn unzstd(
        &mut self,
        prefix: Option<&'a [u8]>,
        frame: &[u8],
        len: u64,
        exact: bool,
    ) -> Result<Vec<u8>, DeltaError> {
        let corrupt = |what: &str, code| DeltaError::Corrupt(format!("{what}: {}", zstd_err(code)));
        let size =
            zstd_safe::find_frame_compressed_size(frame).map_err(|e| corrupt("zstd frame", e))?;
        if size != frame.len() {
            return Err(DeltaError::Corrupt(format!(
                "{} bytes follow a zstd frame of {size}",
                frame.len() - size
            )));
        }
        let d = &mut self.dctx;
        // No prefix or parameter of an earlier frame carries over.
        d.reset(ResetDirective::SessionAndParameters)
            .map_err(|e| corrupt("zstd reset", e))?;
        d.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(|e| corrupt("zstd parameters", e))?;
        if let Some(prefix) = prefix {
            d.ref_prefix(prefix)
                .map_err(|e| corrupt("zstd prefix", e))?;
        }
        // The caller bounded `len` (at most MAX_FRAME, or the bsdiff bound of that).
        let mut out = Vec::with_capacity(len as usize);
        d.decompress(&mut out, frame)
            .map_err(|e| corrupt("zstd frame", e))?;
        if exact && out.len() as u64 != len {
            return Err(DeltaError::Corrupt(format!(
                "a frame gives {} bytes, {len} declared",
                out.len()
            )));
        }
        Ok(out)
    }

    fn unbsdiff(&mut self, base: &[u8], frame: &[u8], len: u64) -> Result<Vec<u8>, DeltaError> {
        let stream = self.unzstd(None, frame, bsdiff_bound(len), false)?;
        let corrupt =
            |e: &dyn std::fmt::Display| DeltaError::Corrupt(format!("bsdiff stream: {e}"));
        let mut reader = bipatch::Reader::new(Cursor::new(&stream[..]), Cursor::new(base))
            .map_err(|e| corrupt(&e))?;
        // `len` is bounded by the caller; the reader never reads more than asked for.
        let mut out = vec![0; len as usize];
        reader.read_exact(&mut out).map_err(|e| corrupt(&e))?;
        match reader.read(&mut [0]) {
            Ok(0) => Ok(out),
            Ok(_) => Err(DeltaError::Corrupt(format!(
                "bsdiff stream gives more than the {len} bytes declared"
            ))),
            Err(e) => Err(corrupt(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// bidiff and bipatch on any small pair (the rule in `make` keeps tiny files
        /// from bidiff, so this is where they meet it): a round trip within the bound.
        #[test]
        fn bsdiff_frames_round_trip(
            base in proptest::collection::vec(any::<u8>(), 1..600),
            target in proptest::collection::vec(any::<u8>(), 0..600),
            repeat in any::<bool>(),
        ) {
            // Half the time, a target made of the base's own bytes.
            let target = if repeat { [&base[..], &target[..], &base[..]].concat() } else { target };
            let mut enc = Encoder::new(3).unwrap();
            let frame = enc.bsdiff(&base, &target).unwrap().expect("within the bound");
            let got = Decoder::new().decode(Method::Bsdiff, &base, &frame, target.len() as u64).unwrap();
            prop_assert_eq!(got, target);
        }

        /// zstd frames, with and without the prefix, on any small pair.
        #[test]
        fn zstd_frames_round_trip(
            base in proptest::collection::vec(any::<u8>(), 0..600),
            target in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut enc = Encoder::new(3).unwrap();
            let literal = enc.zstd(None, &target).unwrap();
            let mut dec = Decoder::new();
            prop_assert_eq!(&dec.decode(Method::Literal, &base, &literal, target.len() as u64).unwrap(), &target);
            let prefixed = enc.zstd(Some(&base), &target).unwrap();
            prop_assert_eq!(&dec.decode(Method::Zstd, &base, &prefixed, target.len() as u64).unwrap(), &target);
        }
    }

    #[test]
    fn window_logs_span_prefix_and_target() {
        assert_eq!(window_log(0), WINDOW_LOG_MIN);
        assert_eq!(window_log(1 << 20), 20);
        assert_eq!(window_log((1 << 20) + 1), 21);
        assert_eq!(window_log(usize::MAX), WINDOW_LOG_MAX);
    }

    #[test]
    fn a_segmented_method_is_no_frame() {
        assert!(matches!(
            Decoder::new().decode(Method::Segmented, &[], &[], 0),
            Err(DeltaError::Method(3))
        ));
    }
}
