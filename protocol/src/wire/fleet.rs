//! The fleet key: the pre-shared secret that closes a fleet, the public fleet id derived
//! from it, and the proofs a node gives of holding it.
//!
//! The secret never leaves the node and is never used directly: BLAKE3 `derive_key`
//! turns it into a proof key and a fleet id under distinct contexts, so neither reveals
//! the other or the secret.

use std::fmt;

/// Context for the key that proofs are keyed with.
const PROOF_KEY_CONTEXT: &str = "shoal fleet proof key v1";
/// Context for the public fleet id.
const FLEET_ID_CONTEXT: &str = "shoal fleet id v1";
/// Context that turns a passphrase into a secret.
const PASSPHRASE_CONTEXT: &str = "shoal fleet passphrase v1";
/// BLAKE3 context of the members-only protocol names.
const PRIVATE_NAMES_CONTEXT: &str = "shoal fleet private names v1";
/// The first bytes of every proof transcript.
const PROOF_DOMAIN: &[u8] = b"shoal fleet proof v1";

/// Shortest passphrase accepted, in bytes.
pub const MIN_PASSPHRASE_LEN: usize = 16;
/// Largest key file accepted: a longer file is probably not a key file.
pub const MAX_KEY_FILE_LEN: usize = 4096;

/// Why a key file's bytes are not a fleet key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetKeyError {
    /// Too short to be a key or a passphrase.
    #[error(
        "fleet key file holds {len} bytes: write 32 random bytes (head -c 32 /dev/urandom), \
         64 hex digits (openssl rand -hex 32) or a passphrase of at least {MIN_PASSPHRASE_LEN} bytes"
    )]
    TooShort {
        /// Bytes in the file, trailing whitespace dropped.
        len: usize,
    },
    /// Too long to be a key file.
    #[error(
        "fleet key file holds {len} bytes, more than {MAX_KEY_FILE_LEN}: is it the right file?"
    )]
    TooLong {
        /// Bytes in the file.
        len: usize,
    },
}

/// The fleet's pre-shared secret, in the form proofs use. Its `Debug` shows only the
/// fleet id.
#[derive(Clone)]
pub struct FleetKey {
    proof_key: [u8; 32],
    id: FleetId,
    /// Names the fleet's members-only protocols; derived from the secret, so it is as
    /// secret as the key (see [`FleetKey::private_protocol_name`]).
    names: [u8; 32],
}

impl FleetKey {
    /// The key for a 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> FleetKey {
        FleetKey {
            proof_key: blake3::derive_key(PROOF_KEY_CONTEXT, secret),
            id: FleetId(blake3::derive_key(FLEET_ID_CONTEXT, secret)),
            names: blake3::derive_key(PRIVATE_NAMES_CONTEXT, secret),
        }
    }

    /// The key in a key file's bytes, which hold the secret in one of three forms:
    ///
    /// 1. exactly 32 bytes, used as they are (a file of 32 bytes is never trimmed, so
    ///    a binary key may end in any byte);
    /// 2. 64 hex digits (either case), decoded;
    /// 3. anything else of [`MIN_PASSPHRASE_LEN`] bytes or more: a passphrase, turned
    ///    into a secret by BLAKE3 `derive_key`.
    ///
    /// Trailing ASCII whitespace (a newline an editor added) is dropped first unless
    /// the file is exactly 32 bytes, so nodes agree whatever their editors did; a
    /// passphrase that is then 32 bytes long counts as form 1, with or without its
    /// newline. A passphrase is only as strong as it is hard to guess: anyone who gets
    /// one proof (or the public fleet id) can try passphrases offline. Prefer random
    /// bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<FleetKey, FleetKeyError> {
        if bytes.len() > MAX_KEY_FILE_LEN {
            return Err(FleetKeyError::TooLong { len: bytes.len() });
        }
        let text = if bytes.len() == 32 {
            bytes
        } else {
            bytes.trim_ascii_end()
        };
        if let Ok(secret) = <&[u8; 32]>::try_from(text) {
            return Ok(FleetKey::from_secret(secret));
        }
        let mut secret = [0u8; 32];
        if text.len() == 64 && hex::decode_to_slice(text, &mut secret).is_ok() {
            return Ok(FleetKey::from_secret(&secret));
        }
        if text.len() < MIN_PASSPHRASE_LEN {
            return Err(FleetKeyError::TooShort { len: text.len() });
        }
        Ok(FleetKey::from_secret(&blake3::derive_key(
            PASSPHRASE_CONTEXT,
            text,
        )))
    }

    /// The fleet's public id.
    pub fn fleet_id(&self) -> FleetId {
        self.id
    }

    /// The libp2p protocol name of the members-only protocol `what` (such as `kad`):
    /// `/shoal/<16 bytes of derive_key("shoal fleet private names v1", secret), hex>/<what>/1`.
    ///
    /// Unlike [`FleetId::protocol_name`], which names the handshake and is public, this
    /// name can only be computed from the key. A node opens streams of such protocols
    /// only to peers that passed the handshake (inside QUIC's encryption), so a node
    /// outside the fleet never learns the name and cannot even negotiate the protocol:
    /// that closes protocols whose libp2p implementation answers any caller (Kademlia),
    /// which the node cannot otherwise gate per peer.
    pub fn private_protocol_name(&self, what: &str) -> String {
        format!("/shoal/{}/{what}/1", hex::encode(&self.names[..16]))
    }

    /// The proof that the holder of this key, as peer `prover`, answers the challenge
    /// `nonce` sent by peer `challenger`:
    ///
    /// `BLAKE3-keyed(derive_key("shoal fleet proof key v1", secret),
    ///   "shoal fleet proof v1" ‖ u64le(len c) ‖ c ‖ u64le(len p) ‖ p ‖ nonce)`
    ///
    /// Peer ids are the transport's authenticated ids (libp2p `PeerId` bytes), as
    /// opaque byte strings. Each is length-prefixed so no two (challenger, prover) pairs
    /// give the same transcript; the order of the two makes a proof useless in the
    /// other direction, so a challenge reflected back at its sender gets nothing.
    /// Nothing here goes on the wire, so ids need no bound.
    pub fn prove(&self, challenger: &[u8], prover: &[u8], nonce: &[u8; 32]) -> [u8; 32] {
        *self.transcript(challenger, prover, nonce).as_bytes()
    }

    /// Whether `mac` is the proof [`prove`](Self::prove) gives for these arguments,
    /// compared in constant time.
    pub fn verify(
        &self,
        challenger: &[u8],
        prover: &[u8],
        nonce: &[u8; 32],
        mac: &[u8; 32],
    ) -> bool {
        // blake3::Hash's equality is constant-time.
        self.transcript(challenger, prover, nonce) == blake3::Hash::from_bytes(*mac)
    }

    fn transcript(&self, challenger: &[u8], prover: &[u8], nonce: &[u8; 32]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.proof_key);
        h.update(PROOF_DOMAIN);
        for id in [challenger, prover] {
            h.update(&(id.len() as u64).to_le_bytes());
            h.update(id);
        }
        h.update(nonce);
        h.finalize()
    }
}

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetKey")
            .field("fleet_id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A fleet's public id, `derive_key("shoal fleet id v1", secret)`: not secret, so it can
/// name the fleet in logs, in protocol names and in discovery, and nodes of different
/// fleets never open a stream to each other by mistake. It reveals nothing of the
/// secret (short of guessing a weak passphrase).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FleetId(pub [u8; 32]);

impl FleetId {
    /// The libp2p stream protocol name for this fleet's wire protocol:
    /// `/shoal/<fleet id hex>/wire/1`. The final `1` is the framing's generation, which
    /// changes only if the framing itself does; message versions evolve inside it (see
    /// the module docs).
    pub fn protocol_name(&self) -> String {
        format!("/shoal/{self}/wire/1")
    }
}

impl fmt::Display for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetId({})", &hex::encode(self.0)[..16])
    }
}
