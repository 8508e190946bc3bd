//! Why a frame, a message or a handshake is refused.
//!
//! [`WireError`] is everything a peer can get wrong on a stream: every variant means "drop
//! this stream (and, for the handshake ones, the connection)", and none is a local
//! failure. [`InvalidMessage`] names the rule a message breaks; it is the peer's fault
//! when it comes out of [`decode`](super::decode) (wrapped in [`WireError::Invalid`]) and
//! the caller's when [`encode`](super::encode) refuses a message the caller built.

use super::message::{ErrorCode, Kind, Message};

/// A frame or message a peer sent that this node will not act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix announces more bytes than any frame of this kind (or, before the
    /// kind is known, any frame at all) may hold; refused before the bytes are buffered.
    #[error(
        "peer announced a frame of {len} bytes{}, the limit is {max}",
        kind.map_or(String::new(), |k| format!(" for a {}", k.name()))
    )]
    FrameTooLarge {
        /// The frame's kind, when its header had arrived.
        kind: Option<Kind>,
        /// The announced body length.
        len: u64,
        /// The largest body allowed.
        max: usize,
    },
    /// The length prefix announces a body too short to hold a version and a kind.
    #[error("peer sent a frame of {len} bytes, too short for a version and a kind")]
    FrameTooShort {
        /// The announced body length.
        len: u32,
    },
    /// The frame's version is above this node's: the peer speaks a newer protocol and
    /// sent a message this node cannot read (upgrade this node, or the peer ignored the
    /// version negotiated in the handshake).
    #[error(
        "peer sent a wire version {version} frame; this node reads up to version {}",
        super::VERSION
    )]
    NewerVersion {
        /// The frame's version.
        version: u8,
    },
    /// The frame's version is one no shoal ever wrote (0): garbage, not a newer peer.
    #[error("peer sent a frame with version {version}, which no shoal writes")]
    BadVersion {
        /// The frame's version.
        version: u8,
    },
    /// The kind byte names no message of the frame's version: garbage, since every
    /// version defines its complete set of kinds.
    #[error("peer sent a frame of unknown kind {kind:#04x} (wire version {version})")]
    UnknownKind {
        /// The frame's version.
        version: u8,
        /// The kind byte.
        kind: u8,
    },
    /// The payload does not parse as its kind's layout (bad encoding, truncated, or
    /// trailing bytes).
    #[error("peer sent a malformed {}: {reason}", kind.name())]
    Malformed {
        /// The frame's kind.
        kind: Kind,
        /// What failed to parse.
        reason: String,
    },
    /// The message parses but breaks a rule of the protocol.
    #[error("peer sent an invalid {}: {reason}", kind.name())]
    Invalid {
        /// The message's kind.
        kind: Kind,
        /// The rule it breaks.
        #[source]
        reason: InvalidMessage,
    },
    /// The handshake got a message it does not expect at this step.
    #[error("peer sent {} during the fleet handshake, expected {}", got.name(), expected.name())]
    Unexpected {
        /// The kind the handshake waits for.
        expected: Kind,
        /// The kind that came.
        got: Kind,
    },
    /// The peer's fleet proof does not verify: it does not hold this fleet's key (or
    /// answered for other peer ids or another challenge).
    #[error("peer failed the fleet proof: it does not hold this fleet's key")]
    WrongFleet,
    /// The peer ended the handshake with an [`Message::Error`].
    #[error("peer refused the fleet handshake ({code:?}): {message}")]
    Remote {
        /// The peer's error code.
        code: ErrorCode,
        /// The peer's explanation (untrusted text, bounded).
        message: String,
    },
}

impl WireError {
    /// Whether the peer speaks a newer protocol (as opposed to sending garbage): worth a
    /// log line asking to upgrade rather than a mark against the peer.
    pub fn is_newer_protocol(&self) -> bool {
        matches!(self, WireError::NewerVersion { .. })
    }

    /// The [`Message::Error`] to send the peer before closing the stream, if any: it
    /// tells a well-meaning peer what it got wrong. `None` when the peer itself sent an
    /// error.
    pub fn reply(&self) -> Option<Message> {
        let code = match self {
            WireError::Remote { .. } => return None,
            WireError::NewerVersion { .. } => ErrorCode::Unsupported,
            WireError::WrongFleet => ErrorCode::WrongFleet,
            _ => ErrorCode::BadMessage,
        };
        let mut message = self.to_string();
        if message.len() > super::MAX_TEXT_LEN {
            let mut end = super::MAX_TEXT_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Some(Message::Error { code, message })
    }
}

/// A rule of the protocol that a message breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// A handshake challenge announcing protocol version 0.
    #[error("protocol version 0 does not exist")]
    ZeroVersion,
    /// A piece of no bytes or of more than [`PIECE_SIZE`](crate::PIECE_SIZE) bytes.
    #[error(
        "a piece of {len} bytes (pieces hold 1 to {} bytes)",
        crate::PIECE_SIZE
    )]
    PieceSize {
        /// The payload's length.
        len: u64,
    },
    /// A blob so large its pieces cannot be numbered by a `u32` index.
    #[error("a blob of {size} bytes has more than 2^32 pieces")]
    BlobTooLarge {
        /// The announced size.
        size: u64,
    },
    /// A blob map page starting past the blob's last piece.
    #[error("a blob map starting at piece {start} of a blob of {count} pieces")]
    MapStart {
        /// The page's first index.
        start: u32,
        /// Pieces in the blob.
        count: u64,
    },
    /// A blob map page that is not exactly `min(count - start, MAX_MAP_PIECES)` long.
    #[error("a blob map page of {len} pieces where {expected} are due")]
    MapLength {
        /// Entries in the page.
        len: usize,
        /// Entries the blob's size and the page's start call for.
        expected: u64,
    },
    /// A blob map that says `complete` but lacks a piece.
    #[error("a blob map says complete but lacks piece {index}")]
    IncompleteMap {
        /// The missing piece's index in the blob.
        index: u64,
    },
    /// A list, string or byte string shorter or longer than its field allows.
    #[error("{field} has length {len}, allowed {min}..={max}")]
    Length {
        /// Which field.
        field: &'static str,
        /// Its length (items for lists, bytes for strings).
        len: usize,
        /// The least allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// An enumeration code this version does not define.
    #[error("{field} has unknown code {code}")]
    UnknownCode {
        /// Which field.
        field: &'static str,
        /// The code.
        code: u8,
    },
    /// A node or group name with characters outside the allowed set.
    #[error(
        "{field} is not a node or group name (ASCII letters, digits, '.', '_' and '-', starting with a letter or digit)"
    )]
    NodeName {
        /// Which field.
        field: &'static str,
    },
    /// Seeding progress past its total.
    #[error("seed progress {done} of {total} bytes")]
    SeedProgress {
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
}
