//! The messages, their kind bytes and the rules each must follow.

use std::fmt;

use bytes::Bytes;

use super::error::InvalidMessage;
use super::payload::PIECE_PREFIX;
use super::{
    MAX_GROUPS, MAX_HAVE, MAX_IMAGE_LEN, MAX_MAP_PIECES, MAX_MEDIA_TYPE_LEN, MAX_NAME_LEN,
    MAX_NODE_NAME_LEN, MAX_PACK_BASES, MAX_PEER_ID_LEN, MAX_REQUEST_PIECES, MAX_TAG_LEN,
    MAX_TEXT_LEN,
};
use crate::digest::Digest;
use crate::piece::{PIECE_SIZE, PieceId, PieceLayout};

/// Which message a frame holds: the byte after the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`Message::FleetChallenge`].
    FleetChallenge = 0x01,
    /// [`Message::FleetProof`].
    FleetProof = 0x02,
    /// [`Message::BlobMapRequest`].
    BlobMapRequest = 0x10,
    /// [`Message::BlobMap`].
    BlobMap = 0x11,
    /// [`Message::PieceRequest`].
    PieceRequest = 0x12,
    /// [`Message::Piece`].
    Piece = 0x13,
    /// [`Message::PieceUnavailable`].
    PieceUnavailable = 0x14,
    /// [`Message::Have`].
    Have = 0x15,
    /// [`Message::Fetch`].
    Fetch = 0x16,
    /// [`Message::TagRequest`].
    TagRequest = 0x17,
    /// [`Message::Tag`].
    Tag = 0x18,
    /// [`Message::NodeInfo`].
    NodeInfo = 0x19,
    /// [`Message::PackRequest`].
    PackRequest = 0x1a,
    /// [`Message::Pack`].
    Pack = 0x1b,
    /// [`Message::SeedOrder`].
    SeedOrder = 0x20,
    /// [`Message::SeedStatus`].
    SeedStatus = 0x21,
    /// [`Message::Error`].
    Error = 0x30,
    /// [`Message::Bye`].
    Bye = 0x31,
}

impl Kind {
    /// Every kind of wire version 1.
    pub const ALL: [Kind; 18] = [
        Kind::FleetChallenge,
        Kind::FleetProof,
        Kind::BlobMapRequest,
        Kind::BlobMap,
        Kind::PieceRequest,
        Kind::Piece,
        Kind::PieceUnavailable,
        Kind::Have,
        Kind::Fetch,
        Kind::TagRequest,
        Kind::Tag,
        Kind::NodeInfo,
        Kind::PackRequest,
        Kind::Pack,
        Kind::SeedOrder,
        Kind::SeedStatus,
        Kind::Error,
        Kind::Bye,
    ];

    /// The kind a byte names, if any.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == byte)
    }

    /// The message's name, as in [`Message`].
    pub fn name(self) -> &'static str {
        match self {
            Kind::FleetChallenge => "FleetChallenge",
            Kind::FleetProof => "FleetProof",
            Kind::BlobMapRequest => "BlobMapRequest",
            Kind::BlobMap => "BlobMap",
            Kind::PieceRequest => "PieceRequest",
            Kind::Piece => "Piece",
            Kind::PieceUnavailable => "PieceUnavailable",
            Kind::Have => "Have",
            Kind::Fetch => "Fetch",
            Kind::TagRequest => "TagRequest",
            Kind::Tag => "Tag",
            Kind::NodeInfo => "NodeInfo",
            Kind::PackRequest => "PackRequest",
            Kind::Pack => "Pack",
            Kind::SeedOrder => "SeedOrder",
            Kind::SeedStatus => "SeedStatus",
            Kind::Error => "Error",
            Kind::Bye => "Bye",
        }
    }

    /// The largest payload (body after version and kind) a frame of this kind may hold.
    /// The decoder refuses a longer frame as soon as its 6-byte header is in.
    pub fn max_payload(self) -> usize {
        match self {
            Kind::Piece => PIECE_PREFIX + PIECE_SIZE as usize,
            // Digest, size, start, length, then 33 bytes per entry, then `complete`.
            Kind::BlobMap => 64 + MAX_MAP_PIECES * 33,
            // Everything else is far below (the largest, a full `Have`, is ~32 KiB).
            _ => 64 * 1024,
        }
    }
}

/// Why a piece cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unavailable {
    /// The responder knows the blob but does not hold this piece (yet).
    NotHeld,
    /// The responder holds nothing of this blob.
    UnknownBlob,
    /// The responder is serving too much right now; ask another peer or later.
    Busy,
}

/// Where a seeding order stands on the node that carries it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeedState {
    /// Accepted, not started.
    Queued,
    /// Fetching the image's blobs.
    Fetching,
    /// Every blob is held, verified and pinned.
    Complete,
    /// Given up; `detail` says why.
    Failed,
}

/// What went wrong, in an [`Message::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The receiver could not decode a message, or it broke a rule.
    BadMessage,
    /// The receiver does not read the frame's version or kind.
    Unsupported,
    /// The fleet handshake failed: the receiver will talk no further.
    WrongFleet,
    /// The receiver is overloaded; try later or elsewhere.
    Busy,
    /// The receiver failed on its side (store, disk); not the sender's fault.
    Internal,
}

/// Maps an enumeration to its one-byte wire code and back. Codes start at 1, so a
/// zeroed payload is never a valid code.
macro_rules! wire_codes {
    ($ty:ident, $field:literal, $($variant:ident = $code:literal),+ $(,)?) => {
        impl $ty {
            /// The code on the wire.
            pub fn code(self) -> u8 {
                match self { $($ty::$variant => $code),+ }
            }

            pub(crate) fn from_code(code: u8) -> Result<Self, InvalidMessage> {
                match code {
                    $($code => Ok($ty::$variant),)+
                    _ => Err(InvalidMessage::UnknownCode { field: $field, code }),
                }
            }
        }
    };
}

wire_codes!(
    Unavailable,
    "reason",
    NotHeld = 1,
    UnknownBlob = 2,
    Busy = 3
);
wire_codes!(
    SeedState,
    "state",
    Queued = 1,
    Fetching = 2,
    Complete = 3,
    Failed = 4
);
wire_codes!(
    ErrorCode,
    "code",
    BadMessage = 1,
    Unsupported = 2,
    WrongFleet = 3,
    Busy = 4,
    Internal = 5
);

/// What a tag resolved to, in a [`Message::Tag`]: a wire type, not the node's record of
/// it (which the node builds from this after its own checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagResolution {
    /// The manifest (or index) the tag named.
    pub digest: Digest,
    /// The manifest's media type as the registry served it (1 to `MAX_MEDIA_TYPE_LEN`
    /// bytes).
    pub media_type: String,
    /// When the responder resolved it, in seconds since the Unix epoch (its own clock).
    pub resolved_at: u64,
}

/// One message of the peer-to-peer protocol. See the [module docs](super) for the
/// exchanges they make up and the layout of each.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// Opens the fleet handshake: answer with a proof over `nonce`; `proto_version` is
    /// the highest wire version the sender reads.
    FleetChallenge {
        /// 32 fresh random bytes from the sender.
        nonce: [u8; 32],
        /// The highest wire version the sender reads (at least 1).
        proto_version: u8,
    },
    /// Answers the peer's challenge: [`FleetKey::prove`](super::FleetKey::prove).
    FleetProof {
        /// The keyed BLAKE3 of the transcript.
        mac: [u8; 32],
    },
    /// Asks which pieces of a blob the peer holds, from piece `start` on.
    BlobMapRequest {
        /// The blob.
        digest: Digest,
        /// The first piece to describe (0, or where the previous page ended).
        start: u32,
    },
    /// Describes pieces `start..start + pieces.len()` of a blob: the id of each the
    /// sender holds, `None` for each it lacks.
    BlobMap {
        /// The blob.
        digest: Digest,
        /// The blob's size in bytes, which fixes its piece count.
        size: u64,
        /// The index of `pieces[0]`.
        start: u32,
        /// One entry per piece, exactly `min(count - start, MAX_MAP_PIECES)` of them.
        pieces: Vec<Option<PieceId>>,
        /// The sender holds every piece and has checked the blob's sha256.
        complete: bool,
    },
    /// Asks for pieces of a blob; answered by one `Piece` or `PieceUnavailable` per
    /// index, in the order asked.
    PieceRequest {
        /// The blob.
        digest: Digest,
        /// The pieces wanted (1 to `MAX_REQUEST_PIECES`), in the order wanted.
        indices: Vec<u32>,
    },
    /// One piece's bytes, carried raw after a fixed header.
    Piece {
        /// The blob.
        digest: Digest,
        /// The piece's index in the blob.
        index: u32,
        /// The piece's bytes (1 to `PIECE_SIZE`); unverified until checked against
        /// the piece's id.
        bytes: Bytes,
    },
    /// Answers a requested piece (or a whole blob-map request) that cannot be served.
    PieceUnavailable {
        /// The blob.
        digest: Digest,
        /// The piece asked for (for a blob-map request, its `start`).
        index: u32,
        /// Why not.
        reason: Unavailable,
    },
    /// Announces blobs the sender now holds complete and verified.
    Have {
        /// The blobs (1 to `MAX_HAVE`).
        digests: Vec<Digest>,
    },
    /// Names the receiver the fleet's fetcher for a blob: it fetches the blob from the
    /// origin unless it holds it, and serves its pieces as they land. Answered by a
    /// `BlobMap` page at start 0 once the receiver knows the blob's size, or a
    /// `PieceUnavailable` at index 0.
    Fetch {
        /// The blob.
        digest: Digest,
        /// The size the asker expects, from the manifest's descriptor (0: unknown).
        size: u64,
        /// The registry host as nodes name it, e.g. `127.0.0.1:5000` or `docker.io` (1
        /// to `MAX_NAME_LEN` bytes).
        upstream: String,
        /// The repository the blob belongs to in that registry (1 to `MAX_NAME_LEN`
        /// bytes).
        repo: String,
    },
    /// Asks what a tag last resolved to on the receiver; answered by a `Tag`.
    TagRequest {
        /// The registry host (1 to `MAX_NAME_LEN` bytes).
        upstream: String,
        /// The repository (1 to `MAX_NAME_LEN` bytes).
        repo: String,
        /// The tag (1 to `MAX_TAG_LEN` bytes).
        tag: String,
    },
    /// Answers a `TagRequest`: the question echoed, and what the tag resolved to.
    Tag {
        /// The registry host, as asked.
        upstream: String,
        /// The repository, as asked.
        repo: String,
        /// The tag, as asked.
        tag: String,
        /// The sender's last resolution of the tag, or `None` if it never resolved it.
        resolved: Option<TagResolution>,
    },
    /// Tells a verified peer how operators call the sender: its node name and the
    /// groups it belongs to, which `shoal seed` selects nodes by. One-way, sent once
    /// per connection after the handshake.
    NodeInfo {
        /// The node's name ([`is_node_name`]).
        name: String,
        /// The groups it is in (0 to `MAX_GROUPS`, each [`is_node_name`]).
        groups: Vec<String>,
    },
    /// Asks for a layer as a pack (`shoal_diff::pack`): what the asker needs to rebuild
    /// the layer from layers of the same repository it holds. Answered by a `Pack`, or
    /// by a `PieceUnavailable` for `layer` at index 0 when the receiver will not make
    /// one (it lacks the layer's recipe, or a pack would not be clearly smaller).
    PackRequest {
        /// The layer wanted (its blob digest).
        layer: Digest,
        /// Layers of the same repository the asker holds with their recipes, most
        /// recently used first (0 to `MAX_PACK_BASES`).
        held: Vec<Digest>,
    },
    /// Answers a `PackRequest`: the pack is a blob of its own on the sender, fetched
    /// with `BlobMapRequest` and `PieceRequest` like any other, checked by its digest.
    Pack {
        /// The layer, as asked.
        layer: Digest,
        /// The pack's sha256.
        pack: Digest,
        /// The pack's size in bytes.
        size: u64,
        /// The layer blob's size in bytes, which the asker re-creates from the pack.
        blob_size: u64,
    },
    /// Orders the receiver to fetch and pin an image (fleet seeding).
    SeedOrder {
        /// The order's id, chosen by the issuing node, echoed in every status.
        id: u64,
        /// The image reference as the operator wrote it (1 to `MAX_IMAGE_LEN` bytes);
        /// the receiver parses it against its own registry configuration.
        image: String,
        /// How long to keep the image pinned once held, in seconds (0: do not pin).
        pin_ttl_secs: u64,
        /// The peer id of the node that issued the order (1 to `MAX_PEER_ID_LEN`
        /// bytes), where statuses go.
        origin_node: Vec<u8>,
    },
    /// Reports how a seeding order is going.
    SeedStatus {
        /// The order's id.
        id: u64,
        /// Where it stands.
        state: SeedState,
        /// Bytes of the image held so far.
        bytes_done: u64,
        /// Bytes of the image in all (0 while the manifests are not yet fetched).
        bytes_total: u64,
        /// Bytes fetched from the origin registry for this order.
        from_origin: u64,
        /// Bytes fetched from peers for this order.
        from_peers: u64,
        /// Why it failed, or empty (at most `MAX_TEXT_LEN` bytes).
        detail: String,
    },
    /// Says what went wrong; the sender closes the stream after it.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A human-readable explanation (at most `MAX_TEXT_LEN` bytes), for logs only.
        message: String,
    },
    /// The sender will send nothing more on this stream.
    Bye,
}

impl Message {
    /// Which kind of message this is.
    pub fn kind(&self) -> Kind {
        match self {
            Message::FleetChallenge { .. } => Kind::FleetChallenge,
            Message::FleetProof { .. } => Kind::FleetProof,
            Message::BlobMapRequest { .. } => Kind::BlobMapRequest,
            Message::BlobMap { .. } => Kind::BlobMap,
            Message::PieceRequest { .. } => Kind::PieceRequest,
            Message::Piece { .. } => Kind::Piece,
            Message::PieceUnavailable { .. } => Kind::PieceUnavailable,
            Message::Have { .. } => Kind::Have,
            Message::Fetch { .. } => Kind::Fetch,
            Message::TagRequest { .. } => Kind::TagRequest,
            Message::Tag { .. } => Kind::Tag,
            Message::NodeInfo { .. } => Kind::NodeInfo,
            Message::PackRequest { .. } => Kind::PackRequest,
            Message::Pack { .. } => Kind::Pack,
            Message::SeedOrder { .. } => Kind::SeedOrder,
            Message::SeedStatus { .. } => Kind::SeedStatus,
            Message::Error { .. } => Kind::Error,
            Message::Bye => Kind::Bye,
        }
    }

    /// Checks the message against the protocol's rules: what [`decode`](super::decode)
    /// checks before it returns a message, and [`encode`](super::encode) before it
    /// writes one.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        match self {
            Message::FleetChallenge { proto_version, .. } => {
                if *proto_version == 0 {
                    return Err(InvalidMessage::ZeroVersion);
                }
            }
            Message::BlobMap {
                size,
                start,
                pieces,
                complete,
                ..
            } => {
                let count = PieceLayout::new(*size).count();
                if count > 1 << 32 {
                    return Err(InvalidMessage::BlobTooLarge { size: *size });
                }
                let start = *start;
                if u64::from(start) > count {
                    return Err(InvalidMessage::MapStart { start, count });
                }
                let expected = (count - u64::from(start)).min(MAX_MAP_PIECES as u64);
                if pieces.len() as u64 != expected {
                    return Err(InvalidMessage::MapLength {
                        len: pieces.len(),
                        expected,
                    });
                }
                if *complete && let Some(i) = pieces.iter().position(Option::is_none) {
                    return Err(InvalidMessage::IncompleteMap {
                        index: u64::from(start) + i as u64,
                    });
                }
            }
            Message::PieceRequest { indices, .. } => {
                length("indices", indices.len(), 1, MAX_REQUEST_PIECES)?;
            }
            Message::Piece { bytes, .. } => {
                if bytes.is_empty() || bytes.len() as u64 > PIECE_SIZE {
                    return Err(InvalidMessage::PieceSize {
                        len: bytes.len() as u64,
                    });
                }
            }
            Message::Have { digests } => length("digests", digests.len(), 1, MAX_HAVE)?,
            Message::Fetch { upstream, repo, .. } => names(upstream, repo)?,
            Message::TagRequest {
                upstream,
                repo,
                tag,
            } => {
                names(upstream, repo)?;
                length("tag", tag.len(), 1, MAX_TAG_LEN)?;
            }
            Message::Tag {
                upstream,
                repo,
                tag,
                resolved,
            } => {
                names(upstream, repo)?;
                length("tag", tag.len(), 1, MAX_TAG_LEN)?;
                if let Some(r) = resolved {
                    length("media_type", r.media_type.len(), 1, MAX_MEDIA_TYPE_LEN)?;
                }
            }
            Message::NodeInfo { name, groups } => {
                node_name("name", name)?;
                length("groups", groups.len(), 0, MAX_GROUPS)?;
                for group in groups {
                    node_name("groups", group)?;
                }
            }
            Message::PackRequest { held, .. } => length("held", held.len(), 0, MAX_PACK_BASES)?,
            Message::SeedOrder {
                image, origin_node, ..
            } => {
                length("image", image.len(), 1, MAX_IMAGE_LEN)?;
                length("origin_node", origin_node.len(), 1, MAX_PEER_ID_LEN)?;
            }
            Message::SeedStatus {
                bytes_done,
                bytes_total,
                detail,
                ..
            } => {
                if bytes_done > bytes_total {
                    return Err(InvalidMessage::SeedProgress {
                        done: *bytes_done,
                        total: *bytes_total,
                    });
                }
                length("detail", detail.len(), 0, MAX_TEXT_LEN)?;
            }
            Message::Error { message, .. } => length("message", message.len(), 0, MAX_TEXT_LEN)?,
            Message::FleetProof { .. }
            | Message::BlobMapRequest { .. }
            | Message::PieceUnavailable { .. }
            | Message::Pack { .. }
            | Message::Bye => {}
        }
        Ok(())
    }
}

/// The registry host and repository of a `Fetch`, `TagRequest` or `Tag`.
fn names(upstream: &str, repo: &str) -> Result<(), InvalidMessage> {
    length("upstream", upstream.len(), 1, MAX_NAME_LEN)?;
    length("repo", repo.len(), 1, MAX_NAME_LEN)
}

/// Whether `name` may name a node or a group: 1 to `MAX_NODE_NAME_LEN` bytes of ASCII
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit. Such names are
/// safe to print, to put in a comma-separated list and to compare byte for byte.
pub fn is_node_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NODE_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A node or group name: its length first, then its characters.
fn node_name(field: &'static str, name: &str) -> Result<(), InvalidMessage> {
    length(field, name.len(), 1, MAX_NODE_NAME_LEN)?;
    if is_node_name(name) {
        Ok(())
    } else {
        Err(InvalidMessage::NodeName { field })
    }
}

fn length(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), InvalidMessage> {
    if (min..=max).contains(&len) {
        Ok(())
    } else {
        Err(InvalidMessage::Length {
            field,
            len,
            min,
            max,
        })
    }
}

/// Short for pieces: a derived `Debug` would print a megabyte of payload.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Piece {
                digest,
                index,
                bytes,
            } => f
                .debug_struct("Piece")
                .field("digest", digest)
                .field("index", index)
                .field("len", &bytes.len())
                .field("id", &PieceId::of(bytes))
                .finish(),
            Message::FleetChallenge {
                nonce,
                proto_version,
            } => f
                .debug_struct("FleetChallenge")
                .field("nonce", &hex::encode(nonce))
                .field("proto_version", proto_version)
                .finish(),
            Message::FleetProof { mac } => f
                .debug_struct("FleetProof")
                .field("mac", &hex::encode(mac))
                .finish(),
            other => fmt::Debug::fmt(&DebugView(other), f),
        }
    }
}

/// The derived-style `Debug` of the variants whose fields are all short or useful.
struct DebugView<'a>(&'a Message);

impl fmt::Debug for DebugView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.kind().name();
        let mut s = f.debug_struct(name);
        match self.0 {
            Message::BlobMapRequest { digest, start } => {
                s.field("digest", digest).field("start", start)
            }
            Message::BlobMap {
                digest,
                size,
                start,
                pieces,
                complete,
            } => s
                .field("digest", digest)
                .field("size", size)
                .field("start", start)
                .field("pieces", pieces)
                .field("complete", complete),
            Message::PieceRequest { digest, indices } => {
                s.field("digest", digest).field("indices", indices)
            }
            Message::PieceUnavailable {
                digest,
                index,
                reason,
            } => s
                .field("digest", digest)
                .field("index", index)
                .field("reason", reason),
            Message::Have { digests } => s.field("digests", digests),
            Message::Fetch {
                digest,
                size,
                upstream,
                repo,
            } => s
                .field("digest", digest)
                .field("size", size)
                .field("upstream", upstream)
                .field("repo", repo),
            Message::TagRequest {
                upstream,
                repo,
                tag,
            } => s
                .field("upstream", upstream)
                .field("repo", repo)
                .field("tag", tag),
            Message::Tag {
                upstream,
                repo,
                tag,
                resolved,
            } => s
                .field("upstream", upstream)
                .field("repo", repo)
                .field("tag", tag)
                .field("resolved", resolved),
            Message::NodeInfo { name, groups } => s.field("name", name).field("groups", groups),
            Message::PackRequest { layer, held } => s.field("layer", layer).field("held", held),
            Message::Pack {
                layer,
                pack,
                size,
                blob_size,
            } => s
                .field("layer", layer)
                .field("pack", pack)
                .field("size", size)
                .field("blob_size", blob_size),
            Message::SeedOrder {
                id,
                image,
                pin_ttl_secs,
                origin_node,
            } => s
                .field("id", id)
                .field("image", image)
                .field("pin_ttl_secs", pin_ttl_secs)
                .field("origin_node", &hex::encode(origin_node)),
            Message::SeedStatus {
                id,
                state,
                bytes_done,
                bytes_total,
                from_origin,
                from_peers,
                detail,
            } => s
                .field("id", id)
                .field("state", state)
                .field("bytes_done", bytes_done)
                .field("bytes_total", bytes_total)
                .field("from_origin", from_origin)
                .field("from_peers", from_peers)
                .field("detail", detail),
            Message::Error { code, message } => s.field("code", code).field("message", message),
            Message::Bye
            | Message::Piece { .. }
            | Message::FleetChallenge { .. }
            | Message::FleetProof { .. } => &mut s,
        };
        s.finish()
    }
}
