//! The fleet handshake as a state machine the node drives: it hands over what to send
//! and takes what arrived, and never touches a stream.
//!
//! ```text
//! dialer                                   listener
//!   FleetChallenge(n_d, v_d)  ─────────▶
//!                             ◀─────────   FleetChallenge(n_l, v_l)
//!   FleetProof(prove(l, d, n_l)) ──────▶   verifies, else WrongFleet
//!                             ◀─────────   FleetProof(prove(d, l, n_d))
//!   verifies, else WrongFleet
//! ```
//!
//! (`prove(challenger, prover, nonce)`.) Both challenges go out at once; the dialer
//! proves first, and the listener answers only a dialer that proved, so a stranger
//! that connects to a node's open port gets no proof to grind a weak passphrase
//! against. The dialer chose whom to dial. One round trip for the listener, one and a
//! half for the dialer, once per connection.

use super::VERSION;
use super::error::WireError;
use super::fleet::FleetKey;
use super::message::{Kind, Message};

/// Which side of the connection this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection (or the stream the handshake runs on); proves first.
    Dialer,
    /// Accepted it; proves only once the dialer has.
    Listener,
}

/// A handshake in progress. Consumed by each step, so a finished or failed handshake
/// cannot be fed again.
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    key: FleetKey,
    local_id: Vec<u8>,
    remote_id: Vec<u8>,
    nonce: [u8; 32],
    state: State,
}

#[derive(Debug)]
enum State {
    /// Waiting for the peer's challenge.
    AwaitChallenge,
    /// Waiting for the peer's proof of our nonce.
    AwaitProof {
        /// The peer's nonce, which the listener answers once the dialer has proved.
        remote_nonce: [u8; 32],
        /// The highest version the peer reads.
        remote_version: u8,
    },
}

/// What a handshake step asks of the node.
// The `Continue` variant carries the handshake itself; boxing it would cost an
// allocation per step of an exchange that runs once per connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// Send `send` if there is one, then feed the peer's next message to `next`.
    Continue {
        /// The handshake, one step further.
        next: Handshake,
        /// A message for the peer.
        send: Option<Message>,
    },
    /// The peer holds the fleet key. Send `send` if there is one (the listener's own
    /// proof); then the connection may carry requests.
    Verified {
        /// What was agreed.
        peer: Verified,
        /// A message for the peer.
        send: Option<Message>,
    },
}

/// The outcome of a handshake that succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The highest wire version the peer reads.
    pub peer_version: u8,
    /// The version both read, `min(VERSION, peer_version)`: never send the peer a frame
    /// of a higher version.
    pub version: u8,
}

impl Handshake {
    /// Starts a handshake with the peer `remote_id` (the transport's authenticated peer
    /// id) as `local_id`. `nonce` must be 32 fresh bytes from a CSPRNG, never reused.
    /// Returns the handshake and the challenge to send now.
    pub fn new(
        role: Role,
        key: &FleetKey,
        local_id: &[u8],
        remote_id: &[u8],
        nonce: [u8; 32],
    ) -> (Handshake, Message) {
        let handshake = Handshake {
            role,
            key: key.clone(),
            local_id: local_id.to_vec(),
            remote_id: remote_id.to_vec(),
            nonce,
            state: State::AwaitChallenge,
        };
        let challenge = Message::FleetChallenge {
            nonce,
            proto_version: VERSION,
        };
        (handshake, challenge)
    }

    /// The kind of message the handshake waits for.
    pub fn expecting(&self) -> Kind {
        match self.state {
            State::AwaitChallenge => Kind::FleetChallenge,
            State::AwaitProof { .. } => Kind::FleetProof,
        }
    }

    /// Takes the peer's next message (decoded, so already validated).
    pub fn on_message(self, message: Message) -> Result<Step, WireError> {
        match (self.state, message) {
            (
                State::AwaitChallenge,
                Message::FleetChallenge {
                    nonce,
                    proto_version,
                },
            ) => {
                let send = match self.role {
                    Role::Dialer => Some(Message::FleetProof {
                        mac: self.key.prove(&self.remote_id, &self.local_id, &nonce),
                    }),
                    Role::Listener => None,
                };
                let next = Handshake {
                    state: State::AwaitProof {
                        remote_nonce: nonce,
                        remote_version: proto_version,
                    },
                    ..self
                };
                Ok(Step::Continue { next, send })
            }
            (
                State::AwaitProof {
                    remote_nonce,
                    remote_version,
                },
                Message::FleetProof { mac },
            ) => {
                if !self
                    .key
                    .verify(&self.local_id, &self.remote_id, &self.nonce, &mac)
                {
                    return Err(WireError::WrongFleet);
                }
                let send = match self.role {
                    Role::Dialer => None,
                    Role::Listener => Some(Message::FleetProof {
                        mac: self
                            .key
                            .prove(&self.remote_id, &self.local_id, &remote_nonce),
                    }),
                };
                let peer = Verified {
                    peer_version: remote_version,
                    version: remote_version.min(VERSION),
                };
                Ok(Step::Verified { peer, send })
            }
            (_, Message::Error { code, message }) => Err(WireError::Remote { code, message }),
            (state, other) => Err(WireError::Unexpected {
                expected: match state {
                    State::AwaitChallenge => Kind::FleetChallenge,
                    State::AwaitProof { .. } => Kind::FleetProof,
                },
                got: other.kind(),
            }),
        }
    }
}
