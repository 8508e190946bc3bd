//! Framing: length-prefixed frames, encoded whole and decoded incrementally.
//!
//! Decoding checks, then parses (mini-redis `connection.rs`): [`check`] looks only at
//! the header and says how many more bytes the frame needs, or refuses the header; only
//! a frame that is all in the buffer is parsed. A partial frame is never an error, and a
//! bad header is refused as soon as the bytes that make it bad have arrived, so a peer
//! cannot make a node buffer more than the frame's kind allows.

use bytes::{Buf, Bytes, BytesMut};

use super::error::{InvalidMessage, WireError};
use super::message::{Kind, Message};
use super::payload::{self, PIECE_PREFIX, PayloadError};
use super::{HEADER_LEN, LEN_PREFIX, MAX_BODY, PIECE_HEADER_LEN, VERSION};
use crate::digest::Digest;
use crate::piece::PIECE_SIZE;

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer holds part of a frame; at least this many more bytes are needed (the
    /// exact remainder once the 4-byte length prefix is in).
    NeedMore(usize),
    /// The buffer starts with a whole, valid frame.
    Frame {
        /// The frame's message, validated.
        message: Message,
        /// The frame's length in bytes: drop them from the buffer before the next
        /// call.
        consumed: usize,
    },
}

/// A frame whose header passed and whose bytes are all in the buffer.
struct Ready {
    kind: Kind,
    /// Prefix, header and payload.
    total: usize,
}

/// Looks at the start of `buf` and says whether a whole frame is there, how many bytes
/// are missing, or why the header is refused.
fn check(buf: &[u8]) -> Result<Result<Ready, usize>, WireError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        // No frame is shorter than a header.
        return Ok(Err(HEADER_LEN - buf.len()));
    };
    let len = u32::from_le_bytes(*prefix);
    // u32 to usize is lossless on the 32- and 64-bit targets shoal runs on; the bound is
    // checked on the u64 anyway.
    if u64::from(len) > MAX_BODY as u64 {
        return Err(WireError::FrameTooLarge {
            kind: None,
            len: len.into(),
            max: MAX_BODY,
        });
    }
    if (len as usize) < HEADER_LEN - LEN_PREFIX {
        return Err(WireError::FrameTooShort { len });
    }
    let total = LEN_PREFIX + len as usize;
    let missing = total.saturating_sub(buf.len());
    let Some(&version) = buf.get(LEN_PREFIX) else {
        return Ok(Err(missing));
    };
    if version == 0 {
        return Err(WireError::BadVersion { version });
    }
    if version > VERSION {
        return Err(WireError::NewerVersion { version });
    }
    let Some(&kind_byte) = buf.get(LEN_PREFIX + 1) else {
        return Ok(Err(missing));
    };
    let kind = Kind::from_byte(kind_byte).ok_or(WireError::UnknownKind {
        version,
        kind: kind_byte,
    })?;
    let payload_len = total - HEADER_LEN;
    if payload_len > kind.max_payload() {
        return Err(WireError::FrameTooLarge {
            kind: Some(kind),
            len: len.into(),
            max: kind.max_payload() + (HEADER_LEN - LEN_PREFIX),
        });
    }
    if missing > 0 {
        return Ok(Err(missing));
    }
    Ok(Ok(Ready { kind, total }))
}

/// Parses and validates the payload of a checked frame.
fn parse(
    kind: Kind,
    payload: &[u8],
    share: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Message, WireError> {
    let message = payload::decode_payload(kind, payload, share).map_err(|e| match e {
        PayloadError::Malformed(reason) => WireError::Malformed { kind, reason },
        PayloadError::Invalid(reason) => WireError::Invalid { kind, reason },
    })?;
    message
        .validate()
        .map_err(|reason| WireError::Invalid { kind, reason })?;
    Ok(message)
}

/// Decodes the frame at the start of `buf`, if it is all there.
///
/// Returns [`Decoded::NeedMore`] for any prefix of a valid frame, and an error as soon
/// as the bytes present cannot start a valid frame. A piece's bytes are copied out of
/// `buf` once; [`decode_bytes`] avoids even that.
pub fn decode(buf: &[u8]) -> Result<Decoded, WireError> {
    match check(buf)? {
        Err(missing) => Ok(Decoded::NeedMore(missing)),
        Ok(Ready { kind, total }) => {
            let message = parse(kind, &buf[HEADER_LEN..total], Bytes::copy_from_slice)?;
            Ok(Decoded::Frame {
                message,
                consumed: total,
            })
        }
    }
}

/// Decodes the frame at the start of `buf` and removes it from `buf`, or returns `None`
/// and reserves room for the rest of the frame (what a `tokio_util::codec::Decoder`
/// does). A piece's bytes are a zero-copy slice of `buf`'s storage.
///
/// On an error `buf` is left as it was. Close the stream then: a peer that sent one bad
/// frame is not trusted with the next, and after a bad header the next frame's start
/// is unknown.
pub fn decode_bytes(buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
    match check(buf)? {
        Err(missing) => {
            buf.reserve(missing);
            Ok(None)
        }
        Ok(Ready { kind, total }) if kind == Kind::Piece && total > PIECE_HEADER_LEN => {
            // A piece frame with a non-empty payload that passed `check` (which bounds it
            // by PIECE_SIZE) always parses, so splitting it off first loses nothing.
            let frame = buf.split_to(total).freeze();
            parse(kind, &frame[HEADER_LEN..], |bytes| frame.slice_ref(bytes)).map(Some)
        }
        Ok(Ready { kind, total }) => {
            let message = parse(kind, &buf[HEADER_LEN..total], Bytes::copy_from_slice)?;
            buf.advance(total);
            Ok(Some(message))
        }
    }
}

/// Appends `message` as one frame to `out`.
///
/// Refuses (leaving `out` unchanged) a message that breaks the protocol's rules, which
/// the peer would refuse: that is a bug in the caller.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), InvalidMessage> {
    message.validate()?;
    encode_unchecked(message, out);
    Ok(())
}

/// Appends `message` as a frame without checking the rules: for tests that need frames a
/// peer could send but an honest node never does.
pub(crate) fn encode_unchecked(message: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(VERSION);
    out.push(message.kind() as u8);
    payload::encode_payload(message, out);
    let len = out.len() - start - LEN_PREFIX;
    // Validated messages fit (the tests encode the largest of each kind); an unchecked
    // one may not, and its frame then carries whatever length it has (truncated to u32),
    // which the peer refuses.
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
}

/// Appends the header of a `Piece` frame carrying `len` bytes: the caller writes those
/// bytes next, straight from where they are (a vectored write), without copying them
/// into the frame. The header is [`PIECE_HEADER_LEN`](super::PIECE_HEADER_LEN) bytes.
pub fn encode_piece_header(
    digest: &Digest,
    index: u32,
    len: usize,
    out: &mut Vec<u8>,
) -> Result<(), InvalidMessage> {
    if len == 0 || len as u64 > PIECE_SIZE {
        return Err(InvalidMessage::PieceSize { len: len as u64 });
    }
    let body = HEADER_LEN - LEN_PREFIX + PIECE_PREFIX + len;
    // At most MAX_BODY, which fits a u32.
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.push(VERSION);
    out.push(Kind::Piece as u8);
    payload::put_piece_prefix(digest, index, out);
    Ok(())
}
