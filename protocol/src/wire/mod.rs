//! The peer-to-peer wire protocol: the messages nodes of one fleet exchange, how they
//! are framed on a stream, and the handshake that proves fleet membership.
//!
//! Everything here is pure: bytes in, messages and decisions out. The node runs it over
//! libp2p streams on QUIC; tests and the fuzzer run it over memory.
//!
//! # Goals
//!
//! - **A closed fleet.** A peer proves it holds the fleet's pre-shared key before it is
//!   told or given anything ([`Handshake`]); the key itself never crosses the wire.
//! - **Pieces at line rate.** A [`Message::Piece`] frame is a fixed 42-byte header and
//!   then the piece's raw bytes, not a postcard byte string: a sender writes the header
//!   ([`encode_piece_header`]) and the bytes from where they lie, and a receiver takes
//!   them as a slice of its read buffer ([`decode_bytes`]), with no copy on either side.
//! - **Hostile input is routine.** Every frame is bounded before it is buffered,
//!   decoded incrementally, and validated before it is returned; every failure is a
//!   typed [`WireError`]; no input panics (property tests and the `wire` fuzz target).
//! - **Upgrades without a flag day.** A node reads every frame of every version up to
//!   its own and tells a newer peer's frame apart from garbage (see *Versioning*).
//!
//! # Non-goals
//!
//! - **Transport security and identity.** QUIC's TLS 1.3 (libp2p) encrypts the stream
//!   and authenticates the peer's id; this module takes ids as opaque bytes from there
//!   and binds the fleet proof to them, so a proof cannot be relayed to a third node.
//! - **Truth.** A message that decodes is well-formed, not honest. Pieces are checked
//!   against their [`PieceId`](crate::PieceId) and blobs against their sha256 by the
//!   node; the wire bounds sizes only.
//! - **Discovery and gossip.** mDNS, Kademlia provider records and gossipsub are
//!   libp2p's; [`Message::Have`] and [`Message::SeedOrder`] are payloads the node may
//!   carry on a stream or in gossip.
//! - **Policy.** Which peer to ask, how many requests in flight, timeouts and retries
//!   belong to the node. There is no clock here.
//!
//! # Framing
//!
//! A stream carries frames back to back:
//!
//! ```text
//! frame   = len:u32le  version:u8  kind:u8  payload      len = 2 + payload length
//! ```
//!
//! - `len` is a fixed 4 bytes rather than a varint: the header is always 6 bytes, a
//!   decoder knows the exact remainder from the fourth byte on, and a non-canonical
//!   length cannot exist. The 2 or 3 bytes a varint would save are nothing beside a
//!   32-byte digest.
//! - `len` is at most [`MAX_BODY`] (a full piece and its header, just over 1 MiB), and
//!   at most `2 + `[`Kind::max_payload`] for the frame's kind: 64 KiB for the small
//!   messages, ~530 KiB for a [`Message::BlobMap`]. A decoder refuses a larger length
//!   as soon as the prefix (or the kind byte) arrives, before buffering anything.
//! - `payload` is the postcard encoding of the message's fields in the order listed
//!   below (integers are varints, `[u8; 32]` is 32 raw bytes, sequences and strings
//!   are a varint count then the items, strings must be UTF-8, an `Option` is a byte 0
//!   or 1 then the value if 1), except for a piece, whose payload is
//!   `digest[32] index:u32le bytes`. A payload must be used up exactly; trailing bytes
//!   are an error, so a field cannot be added without a new version.
//!
//! # Messages
//!
//! | kind | message | payload fields | rules |
//! |---|---|---|---|
//! | `0x01` | [`FleetChallenge`](Message::FleetChallenge) | `nonce[32]`, `proto_version:u8` | version ≥ 1 |
//! | `0x02` | [`FleetProof`](Message::FleetProof) | `mac[32]` | verified by the handshake |
//! | `0x10` | [`BlobMapRequest`](Message::BlobMapRequest) | `digest[32]`, `start:u32` | |
//! | `0x11` | [`BlobMap`](Message::BlobMap) | `digest`, `size:u64`, `start:u32`, `pieces:[Option<[32]>]`, `complete:bool` | ≤ 2³² pieces; `start` ≤ count; exactly `min(count − start,` [`MAX_MAP_PIECES`]`)` entries; `complete` ⇒ no `None` |
//! | `0x12` | [`PieceRequest`](Message::PieceRequest) | `digest`, `indices:[u32]` | 1 to [`MAX_REQUEST_PIECES`] indices |
//! | `0x13` | [`Piece`](Message::Piece) | `digest[32]`, `index:u32le`, raw bytes (not postcard) | 1 to [`PIECE_SIZE`](crate::PIECE_SIZE) bytes |
//! | `0x14` | [`PieceUnavailable`](Message::PieceUnavailable) | `digest`, `index:u32`, `reason:u8` | known reason |
//! | `0x15` | [`Have`](Message::Have) | `digests:[[32]]` | 1 to [`MAX_HAVE`] digests |
//! | `0x16` | [`Fetch`](Message::Fetch) | `digest`, `size:u64`, `upstream:str`, `repo:str` | upstream and repo 1 to [`MAX_NAME_LEN`] bytes |
//! | `0x17` | [`TagRequest`](Message::TagRequest) | `upstream:str`, `repo:str`, `tag:str` | upstream and repo 1 to [`MAX_NAME_LEN`] bytes; tag 1 to [`MAX_TAG_LEN`] bytes |
//! | `0x18` | [`Tag`](Message::Tag) | `upstream`, `repo`, `tag`, `resolved:Option<(digest, media_type:str, resolved_at:u64)>` | as `TagRequest`; media type 1 to [`MAX_MEDIA_TYPE_LEN`] bytes |
//! | `0x19` | [`NodeInfo`](Message::NodeInfo) | `name:str`, `groups:[str]` | name and each group 1 to [`MAX_NODE_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, not starting with a symbol ([`is_node_name`]); at most [`MAX_GROUPS`] groups |
//! | `0x1a` | [`PackRequest`](Message::PackRequest) | `layer`, `held:[digest]` | 0 to [`MAX_PACK_BASES`] held layers |
//! | `0x1b` | [`Pack`](Message::Pack) | `layer`, `pack`, `size:u64`, `blob_size:u64` | |
//! | `0x20` | [`SeedOrder`](Message::SeedOrder) | `id:u64`, `image:str`, `pin_ttl_secs:u64`, `origin_node:bytes` | image 1 to [`MAX_IMAGE_LEN`] bytes; origin 1 to [`MAX_PEER_ID_LEN`] bytes |
//! | `0x21` | [`SeedStatus`](Message::SeedStatus) | `id:u64`, `state:u8`, `bytes_done`, `bytes_total`, `from_origin`, `from_peers:u64`, `detail:str` | known state; done ≤ total; detail ≤ [`MAX_TEXT_LEN`] |
//! | `0x30` | [`Error`](Message::Error) | `code:u8`, `message:str` | known code; message ≤ [`MAX_TEXT_LEN`] |
//! | `0x31` | [`Bye`](Message::Bye) | (none) | empty payload |
//!
//! Enumerations travel as one byte; codes start at 1, so a zeroed payload never holds
//! a valid one:
//!
//! - [`Unavailable`]: `NotHeld` 1, `UnknownBlob` 2, `Busy` 3;
//! - [`SeedState`]: `Queued` 1, `Fetching` 2, `Complete` 3, `Failed` 4;
//! - [`ErrorCode`]: `BadMessage` 1, `Unsupported` 2, `WrongFleet` 3, `Busy` 4,
//!   `Internal` 5.
//!
//! Piece indices are `u32`: with 1 MiB pieces that numbers blobs up to 4 PiB, and an
//! index that does not fit cannot be written at all.
//!
//! A blob map is a sparse bitmap with ids rather than a prefix: rarest-first swarming
//! leaves a downloading peer holding scattered pieces, and those are the ones worth
//! advertising. It is paged so that one frame stays bounded for any blob size: a page
//! covers exactly `min(count − start, MAX_MAP_PIECES)` pieces (16 GiB of blob), so the
//! asker knows whether another page follows (`start + len < count`) without a flag.
//!
//! # Exchanges
//!
//! 1. **Handshake**, once per connection on its first stream (see [`Handshake`]):
//!    both sides send a `FleetChallenge`; the dialer sends its `FleetProof`, the
//!    listener checks it and sends its own. Until its peer is verified a node sends
//!    nothing else and answers nothing; an `Error` ends the handshake.
//! 2. **Blob map**: `BlobMapRequest { digest, start }` → `BlobMap` for that page, or
//!    `PieceUnavailable { digest, index: start, reason: UnknownBlob | Busy }`.
//! 3. **Pieces**: `PieceRequest { digest, indices }` → one `Piece` or
//!    `PieceUnavailable` per index, in the order asked. The asker may send its next
//!    request before the answers end (pipelining); answers still come in order, so a
//!    stream needs no request ids.
//! 4. **Have**: one-way, after a blob is complete and verified; no answer.
//! 5. **Fetch**: `Fetch { digest, size, upstream, repo }` names the receiver the
//!    fleet's designated fetcher for a blob (which node that is, is the node's policy):
//!    it fetches the blob from `upstream`'s `repo` unless it holds it, and serves its
//!    pieces as they land. Once it knows the blob's size (from its store or the
//!    origin's response) it answers `BlobMap { digest, start: 0, .. }` with the pieces
//!    it holds by then, possibly none; or `PieceUnavailable { digest, index: 0, reason:
//!    UnknownBlob | Busy }` (`UnknownBlob`: it cannot fetch the blob, e.g. `upstream`
//!    is not configured there); or an `Error`. The asker then goes on as in exchanges 2
//!    and 3: it asks for pieces (one not landed yet is `PieceUnavailable` `NotHeld`,
//!    to ask again later) and for further or fresher map pages. The piece ids of these
//!    maps are hints like any map's, all the more since the fetcher serves pieces
//!    before it can check the blob's sha256: the asker checks each piece by BLAKE3
//!    against its id, and the assembled blob by sha256 against `digest`. `size` is a
//!    hint as well; the map carries the size the fetcher found, which the asker checks
//!    against its descriptor.
//! 6. **Tags**: `TagRequest { upstream, repo, tag }` → `Tag` with the same three
//!    fields and `resolved`: the digest and media type the tag last resolved to on the
//!    responder, and when, or `None` if it never resolved it. An answer is a hint
//!    (how old a resolution may be is the asker's policy); the manifest it names is
//!    still checked against its digest when fetched.
//! 7. **Introduction**: one-way, once per connection after the handshake: `NodeInfo`
//!    says how operators name the sender and which groups it is in; no answer.
//! 8. **Seeding**: `SeedOrder` → `SeedStatus` updates for that `id` on the same stream
//!    (the sender's policy says how often; the node sends one at least every 500 ms),
//!    ending with state `Complete` or `Failed`. The asker then closes the stream.
//!    An order whose `id` the receiver is already carrying out is not started twice:
//!    the second asker gets the first run's statuses.
//! 9. **Packs**: `PackRequest { layer, held }` → `Pack { layer, pack, size, blob_size }`
//!    or `PieceUnavailable { digest: layer, index: 0, reason }`. The pack is then a
//!    blob on the responder like any other, fetched with exchanges 2 and 3 and checked
//!    by sha256 against `pack`. Its content is the responder's word: the asker checks
//!    every chunk it yields by BLAKE3, the tar it rebuilds against the layer's
//!    diff_id, and the blob it re-creates against `layer`.
//! 10. **Ending**: `Bye` says the sender will send nothing more; `Error` says why it
//!     stops, and the sender then closes the stream.
//!
//! # What a receiver checks
//!
//! [`decode`] returns only messages whose frame and fields pass the rules above. The
//! node then checks what only it can know: that an answer is for a question it asked
//! (digest, index, the names a `Tag` echoes, order); that a piece's length is the one
//! its [`PieceLayout`](crate::PieceLayout) gives for that index and that its bytes
//! match the piece id before they are stored or passed on; that a map's `size` matches the
//! blob's descriptor; that piece ids learnt from a peer are only hints until the
//! assembled blob matches its sha256 (a peer that sent a bad piece or id is dropped);
//! that an `upstream`, `repo` or `tag` parses as a registry host, a repository name or
//! a tag (see [`reference`](crate::reference)) before it is used, and that the node is
//! configured for that upstream; that text fields are untrusted (log them quoted).
//!
//! # Versioning
//!
//! The version byte names the protocol revision that defined the frame's kind and
//! payload layout, not the newest revision the sender knows. A revision may add kinds
//! or change a layout, and either comes with a new version number; an existing
//! (version, kind) layout never changes, and neither does the framing (the length
//! prefix and [`MAX_BODY`]). Hence:
//!
//! - a node reads every frame of a version up to its own [`VERSION`];
//! - a frame of a higher version is [`WireError::NewerVersion`] ("upgrade"), distinct
//!   from [`WireError::BadVersion`] (version 0) and [`WireError::UnknownKind`] (a
//!   kind byte unknown *in a version this node reads*), which are garbage;
//! - `FleetChallenge.proto_version` tells each side the highest version the other
//!   reads, and [`Verified::version`] is the one both read: a node never sends a frame
//!   of a higher version. The challenge's own layout (version 1, kind 1) is frozen so
//!   that any two shoal versions can at least negotiate.
//!
//! Version 1 was extended with `Fetch`, `TagRequest` and `Tag` (`0x16` to `0x18`), and
//! then `NodeInfo` (`0x19`) and `PackRequest`/`Pack` (`0x1a`, `0x1b`), before its release, when no deployed node spoke it yet;
//! from its release on it is frozen.
//!
//! Encodings are not canonical (postcard accepts overlong varints): compare messages,
//! never frames' bytes, and never MAC a frame.

mod error;
mod fleet;
mod frame;
mod handshake;
mod message;
mod payload;

#[cfg(test)]
mod bound_tests;
#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;

/// The buffer types of [`Message::Piece`] and [`decode_bytes`], so that callers use
/// the same `bytes` version.
pub use bytes::{Bytes, BytesMut};
pub use error::{InvalidMessage, WireError};
pub use fleet::{FleetId, FleetKey, FleetKeyError, MAX_KEY_FILE_LEN, MIN_PASSPHRASE_LEN};
pub use frame::{Decoded, decode, decode_bytes, encode, encode_piece_header};
pub use handshake::{Handshake, Role, Step, Verified};
pub use message::{ErrorCode, Kind, Message, SeedState, TagResolution, Unavailable, is_node_name};

/// The newest wire version this node reads and writes.
pub const VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes before a frame's payload: the length prefix, the version and the kind.
pub const HEADER_LEN: usize = LEN_PREFIX + 2;
/// Bytes before a piece's raw bytes in a `Piece` frame: header, digest, index.
pub const PIECE_HEADER_LEN: usize = HEADER_LEN + payload::PIECE_PREFIX;
/// The largest `len` (version, kind and payload) of any frame: a full piece's.
pub const MAX_BODY: usize = PIECE_HEADER_LEN - LEN_PREFIX + crate::piece::PIECE_SIZE as usize;
/// The largest frame, prefix included.
pub const MAX_FRAME: usize = LEN_PREFIX + MAX_BODY;
/// Most entries in one `BlobMap` page (16 GiB of blob).
pub const MAX_MAP_PIECES: usize = 16 * 1024;
/// Most pieces in one `PieceRequest` (64 MiB of answers).
pub const MAX_REQUEST_PIECES: usize = 64;
/// Most digests in one `Have`.
pub const MAX_HAVE: usize = 1024;
/// Longest image reference in a `SeedOrder`, in bytes.
pub const MAX_IMAGE_LEN: usize = 512;
/// Longest peer id in a `SeedOrder`, in bytes (a libp2p `PeerId` is under 50).
pub const MAX_PEER_ID_LEN: usize = 128;
/// Longest node or group name in a `NodeInfo`, in bytes.
pub const MAX_NODE_NAME_LEN: usize = 64;
/// Most groups in a `NodeInfo`.
pub const MAX_GROUPS: usize = 32;
/// Longest text (`Error.message`, `SeedStatus.detail`), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most held layers a `PackRequest` names.
pub const MAX_PACK_BASES: usize = 32;
/// Longest registry host or repository in a `Fetch`, `TagRequest` or `Tag`, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag in a `TagRequest` or `Tag`, in bytes (the OCI distribution spec's limit).
pub const MAX_TAG_LEN: usize = 128;
/// Longest media type in a `Tag`'s resolution, in bytes (RFC 6838 allows 127 for each
/// of type and subtype).
pub const MAX_MEDIA_TYPE_LEN: usize = 255;

// Every repository name and tag a node accepts fits on the wire. A registry host that
// `reference::parse_registry_host` accepts can be longer (a 253-byte name and a port),
// and `encode` refuses a `Fetch` or `TagRequest` naming one; no real registry is near.
const _: () = assert!(
    MAX_NAME_LEN >= crate::reference::MAX_NAME_LEN && MAX_TAG_LEN >= crate::reference::MAX_TAG_LEN
);
