//! Payload layouts: the postcard tuple of each kind, field by field, and the fixed
//! prefix of a piece.
//!
//! Payloads are postcard encodings of plain tuples written out here, not of a derived
//! `Serialize` on [`Message`]: the kind byte, not a Rust variant index, says which
//! message a frame holds, so reordering the enum cannot change the wire, and no domain
//! type gains a serde derive. Enumerations travel as their one-byte codes.

use bytes::Bytes;

use super::error::InvalidMessage;
use super::message::{ErrorCode, Kind, Message, SeedState, TagResolution, Unavailable};
use crate::digest::Digest;
use crate::piece::PieceId;

/// Bytes of a piece payload before its raw bytes: the digest and the index (u32 LE).
pub(crate) const PIECE_PREFIX: usize = 32 + 4;

/// Appends a message's payload: a piece's fixed prefix and raw bytes, or the postcard
/// tuple of any other kind. Does not validate.
pub(crate) fn encode_payload(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::FleetChallenge {
            nonce,
            proto_version,
        } => put(&(nonce, proto_version), out),
        Message::FleetProof { mac } => put(mac, out),
        Message::BlobMapRequest { digest, start } => put(&(digest, start), out),
        Message::BlobMap {
            digest,
            size,
            start,
            pieces,
            complete,
        } => {
            let ids: Vec<Option<&[u8; 32]>> =
                pieces.iter().map(|p| p.as_ref().map(|p| &p.0)).collect();
            put(&(digest, size, start, ids, complete), out)
        }
        Message::PieceRequest { digest, indices } => put(&(digest, indices), out),
        Message::Piece {
            digest,
            index,
            bytes,
        } => {
            put_piece_prefix(digest, *index, out);
            out.extend_from_slice(bytes);
        }
        Message::PieceUnavailable {
            digest,
            index,
            reason,
        } => put(&(digest, index, reason.code()), out),
        Message::Have { digests } => put(digests, out),
        Message::Fetch {
            digest,
            size,
            upstream,
            repo,
        } => put(&(digest, size, upstream, repo), out),
        Message::TagRequest {
            upstream,
            repo,
            tag,
        } => put(&(upstream, repo, tag), out),
        Message::Tag {
            upstream,
            repo,
            tag,
            resolved,
        } => {
            let resolved = resolved
                .as_ref()
                .map(|r| (&r.digest, &r.media_type, r.resolved_at));
            put(&(upstream, repo, tag, resolved), out)
        }
        Message::NodeInfo { name, groups } => put(&(name, groups), out),
        Message::PackRequest { layer, held } => put(&(layer, held), out),
        Message::Pack {
            layer,
            pack,
            size,
            blob_size,
        } => put(&(layer, pack, size, blob_size), out),
        Message::SeedOrder {
            id,
            image,
            pin_ttl_secs,
            origin_node,
        } => put(&(id, image, pin_ttl_secs, origin_node), out),
        Message::SeedStatus {
            id,
            state,
            bytes_done,
            bytes_total,
            from_origin,
            from_peers,
            detail,
        } => put(
            &(
                id,
                state.code(),
                bytes_done,
                bytes_total,
                from_origin,
                from_peers,
                detail,
            ),
            out,
        ),
        Message::Error { code, message } => put(&(code.code(), message), out),
        Message::Bye => {}
    }
}

/// A piece payload's prefix: the digest's 32 bytes, then the index as u32 LE.
pub(crate) fn put_piece_prefix(digest: &Digest, index: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(&index.to_le_bytes());
}

fn put<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // postcard cannot fail on tuples of integers, arrays, strings and sequences of
    // known length written to memory.
    postcard::to_extend(value, Append(out)).expect("postcard encodes plain tuples into a Vec");
}

/// `&mut Vec<u8>` as the `Extend<u8>` postcard writes to.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Parses the payload of a frame of `kind`; the whole payload must be used. A piece's
/// bytes come from `share`, given the payload's tail: a copy, or a zero-copy slice of
/// the frame's buffer. Does not validate.
pub(crate) fn decode_payload(
    kind: Kind,
    payload: &[u8],
    share: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Message, PayloadError> {
    let message = match kind {
        Kind::FleetChallenge => {
            let (nonce, proto_version) = take(payload)?;
            Message::FleetChallenge {
                nonce,
                proto_version,
            }
        }
        Kind::FleetProof => Message::FleetProof {
            mac: take(payload)?,
        },
        Kind::BlobMapRequest => {
            let (digest, start) = take(payload)?;
            Message::BlobMapRequest { digest, start }
        }
        Kind::BlobMap => {
            let (digest, size, start, ids, complete): (_, _, _, Vec<Option<[u8; 32]>>, _) =
                take(payload)?;
            Message::BlobMap {
                digest,
                size,
                start,
                pieces: ids.into_iter().map(|id| id.map(PieceId)).collect(),
                complete,
            }
        }
        Kind::PieceRequest => {
            let (digest, indices) = take(payload)?;
            Message::PieceRequest { digest, indices }
        }
        Kind::Piece => {
            let parsed = payload
                .split_first_chunk::<32>()
                .and_then(|(digest, rest)| Some((digest, rest.split_first_chunk::<4>()?)));
            let Some((digest, (index, bytes))) = parsed else {
                return Err(PayloadError::Malformed(format!(
                    "a piece header of {} bytes, not {PIECE_PREFIX}",
                    payload.len()
                )));
            };
            Message::Piece {
                digest: Digest::from_bytes(*digest),
                index: u32::from_le_bytes(*index),
                bytes: share(bytes),
            }
        }
        Kind::PieceUnavailable => {
            let (digest, index, reason) = take(payload)?;
            Message::PieceUnavailable {
                digest,
                index,
                reason: Unavailable::from_code(reason)?,
            }
        }
        Kind::Have => Message::Have {
            digests: take(payload)?,
        },
        Kind::Fetch => {
            let (digest, size, upstream, repo) = take(payload)?;
            Message::Fetch {
                digest,
                size,
                upstream,
                repo,
            }
        }
        Kind::TagRequest => {
            let (upstream, repo, tag) = take(payload)?;
            Message::TagRequest {
                upstream,
                repo,
                tag,
            }
        }
        Kind::Tag => {
            let (upstream, repo, tag, resolved): (_, _, _, Option<(_, _, _)>) = take(payload)?;
            Message::Tag {
                upstream,
                repo,
                tag,
                resolved: resolved.map(|(digest, media_type, resolved_at)| TagResolution {
                    digest,
                    media_type,
                    resolved_at,
                }),
            }
        }
        Kind::NodeInfo => {
            let (name, groups) = take(payload)?;
            Message::NodeInfo { name, groups }
        }
        Kind::PackRequest => {
            let (layer, held) = take(payload)?;
            Message::PackRequest { layer, held }
        }
        Kind::Pack => {
            let (layer, pack, size, blob_size) = take(payload)?;
            Message::Pack {
                layer,
                pack,
                size,
                blob_size,
            }
        }
        Kind::SeedOrder => {
            let (id, image, pin_ttl_secs, origin_node) = take(payload)?;
            Message::SeedOrder {
                id,
                image,
                pin_ttl_secs,
                origin_node,
            }
        }
        Kind::SeedStatus => {
            let (id, state, bytes_done, bytes_total, from_origin, from_peers, detail) =
                take(payload)?;
            Message::SeedStatus {
                id,
                state: SeedState::from_code(state)?,
                bytes_done,
                bytes_total,
                from_origin,
                from_peers,
                detail,
            }
        }
        Kind::Error => {
            let (code, message) = take(payload)?;
            Message::Error {
                code: ErrorCode::from_code(code)?,
                message,
            }
        }
        Kind::Bye => {
            if !payload.is_empty() {
                return Err(PayloadError::Malformed(format!(
                    "{} bytes after the message",
                    payload.len()
                )));
            }
            Message::Bye
        }
    };
    Ok(message)
}

/// Why a payload did not turn into a message.
pub(crate) enum PayloadError {
    /// It does not parse.
    Malformed(String),
    /// It parses, but an enumeration code is unknown.
    Invalid(InvalidMessage),
}

impl From<InvalidMessage> for PayloadError {
    fn from(e: InvalidMessage) -> Self {
        PayloadError::Invalid(e)
    }
}

/// Parses a `T` that must use up the whole payload.
fn take<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, PayloadError> {
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PayloadError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(value)
}
