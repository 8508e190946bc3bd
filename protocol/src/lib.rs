//! shoal's content model and wire formats.
//!
//! # Goals
//! - Name every piece of content that moves between an origin registry, shoal nodes and
//!   container engines, and say how it is checked: registry digests (sha256) are the
//!   root of trust, BLAKE3 piece ids let untrusted peers hand over parts of a blob.
//! - Decode everything that comes from outside (manifests, references, ranges, peer
//!   messages) with bounded sizes and typed errors, so that every decoder can be fuzzed.
//! - Specify the peer-to-peer protocol ([`wire`]): framing, messages and the fleet
//!   handshake, as functions and a state machine that a node drives over its streams.
//!
//! # Non-goals
//! - No I/O of any kind: no sockets, files, clocks or async runtimes. Callers bring
//!   bytes and get values back. `cargo tree -p shoal-protocol` holds no tokio or rocksdb
//!   (a test in `node/` checks this).
//! - No policy: which source to use, when to retry, what to keep. That is the node's.

#![forbid(unsafe_code)]

pub mod auth;
pub mod digest;
pub mod manifest;
pub mod piece;
pub mod range;
pub mod recipe;
pub mod reference;
pub mod wire;

pub use digest::{Digest, DigestError};
pub use piece::{PIECE_SIZE, PieceId, PieceLayout};
pub use reference::{Reference, ReferenceError, RepoName};
