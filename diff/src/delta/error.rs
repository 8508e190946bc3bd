//! Why a delta was not made or not applied.
//!
//! Deltas come from peers, so [`DeltaError`] keeps three kinds of failure apart, as
//! [`DeltaError::is_bad_delta`] and [`DeltaError::is_wrong_base`] tell: the delta's
//! bytes are wrong (mark the peer that sent it), the base given is not the one the
//! delta was made against (ask again with the right base, or fetch the chunks), or a
//! local limit or output refused it.

use shoal_protocol::recipe::ChunkId;

use super::format::VERSION;

/// Why [`apply`](super::apply) did not give the target.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The delta ends before its header, its segment table or a body it declares is complete.
    #[error("delta is truncated: {what} needs {need} bytes, {have} remain")]
    Truncated {
        /// The part that was cut short.
        what: &'static str,
        /// Bytes that part needs.
        need: u64,
        /// Bytes that were left.
        have: u64,
    },
    /// The version byte is not one this shoal reads.
    #[error("delta version {0} is not supported (this shoal reads version {VERSION})")]
    Version(u8),
    /// A method byte names no method (or names `Segmented` inside a segment).
    #[error("delta method {0} is unknown here")]
    Method(u8),
    /// The declared target length is over the limit the caller set.
    #[error("delta declares a target of {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// The length the header declares.
        len: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// The header or segment table does not add up (lengths, windows, sums, trailing bytes).
    #[error("delta is inconsistent: {0}")]
    Inconsistent(String),
    /// A body does not decode: a bad zstd frame or bsdiff stream, or one of the wrong length.
    #[error("delta body does not decode: {0}")]
    Corrupt(String),
    /// Everything decoded, but the result's BLAKE3 is not the header's target id.
    #[error("delta decodes to {got}, its header says the target is {expected}")]
    TargetMismatch {
        /// The header's target id.
        expected: ChunkId,
        /// BLAKE3 of what was decoded.
        got: ChunkId,
    },
    /// The base given is not the one the delta was made against.
    #[error("delta was made against base {expected}, the base given is {got}")]
    WrongBase {
        /// The header's base id.
        expected: ChunkId,
        /// BLAKE3 of the base given.
        got: ChunkId,
    },
    /// The output refused the target's bytes.
    #[error("writing the target failed: {0}")]
    Write(#[source] std::io::Error),
}

impl DeltaError {
    /// Whether the delta's own bytes are wrong: whoever sent it sent bad data.
    pub fn is_bad_delta(&self) -> bool {
        !matches!(
            self,
            DeltaError::WrongBase { .. } | DeltaError::TooLarge { .. } | DeltaError::Write(_)
        )
    }

    /// Whether the base given is not the delta's base (the delta itself may be fine).
    pub fn is_wrong_base(&self) -> bool {
        matches!(self, DeltaError::WrongBase { .. })
    }
}

/// Why [`make`](super::make) made no delta. Local failures only: every input is valid.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    /// zstd refused to compress (in practice, it could not allocate its context).
    #[error("zstd failed while making a delta: {0}")]
    Zstd(String),
}
