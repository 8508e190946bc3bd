//! The fleet handshake on a stream: [`shoal_protocol::wire::Handshake`] driven over a
//! libp2p stream (or any byte pipe), bounded in time.
//!
//! The handshake runs once per connection, on the public protocol
//! `/shoal/<fleet id>/hello/1`, before anything else is said. Until it succeeds the
//! node answers nothing and opens nothing else to the peer.

use std::time::Duration;

use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use shoal_protocol::wire::{ErrorCode, FleetKey, Handshake, Message, Role, Step, Verified};

use super::io::{FrameReader, FrameWriter, StreamError};

/// How long a peer has to prove it belongs to the fleet.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The peer does not hold the fleet key (or answered with garbage).
    #[error("the peer is not in this fleet: {0}")]
    WrongFleet(String),
    /// The peer said it refuses us.
    #[error("the peer refused the handshake: {0}")]
    Refused(String),
    /// The stream failed or closed first.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The peer took longer than the handshake's time limit.
    #[error("the peer did not complete the fleet handshake within {} s", HELLO_TIMEOUT.as_secs())]
    Timeout,
    /// The peer closed the stream before proving anything.
    #[error("the peer closed the stream during the fleet handshake")]
    Closed,
}

impl HelloError {
    /// Whether the peer showed it is not in the fleet (as opposed to a network fault).
    pub fn is_stranger(&self) -> bool {
        matches!(self, HelloError::WrongFleet(_) | HelloError::Refused(_))
    }
}

/// Runs the handshake as `role` between `local` and `remote` (the transport's
/// authenticated peer ids, as bytes) over `stream`.
pub async fn run<S>(
    stream: S,
    role: Role,
    key: &FleetKey,
    local: &[u8],
    remote: &[u8],
) -> Result<Verified, HelloError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(HELLO_TIMEOUT, exchange(stream, role, key, local, remote))
        .await
        .unwrap_or(Err(HelloError::Timeout))
}

async fn exchange<S>(
    stream: S,
    role: Role,
    key: &FleetKey,
    local: &[u8],
    remote: &[u8],
) -> Result<Verified, HelloError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, write) = stream.split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let (mut handshake, challenge) = Handshake::new(role, key, local, remote, nonce());
    writer.send(&challenge).await?;
    loop {
        let message = reader.recv().await?.ok_or(HelloError::Closed)?;
        if let Message::Error { code, message } = &message {
            return Err(HelloError::Refused(format!("{code:?}: {message:?}")));
        }
        match handshake.on_message(message) {
            Ok(Step::Continue { next, send }) => {
                if let Some(m) = send {
                    writer.send(&m).await?;
                }
                handshake = next;
            }
            Ok(Step::Verified { peer, send }) => {
                if let Some(m) = send {
                    writer.send(&m).await?;
                }
                return Ok(peer);
            }
            Err(e) => {
                let reply = e.reply().unwrap_or(Message::Error {
                    code: ErrorCode::WrongFleet,
                    message: String::new(),
                });
                // The peer may already be gone; the verdict stands either way.
                let _ = writer.send(&reply).await;
                let _ = writer.close().await;
                return Err(HelloError::WrongFleet(e.to_string()));
            }
        }
    }
}

/// 32 fresh random bytes for a challenge.
fn nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    // The OS random source failing is not something a node can carry on through: a
    // predictable nonce would let a recorded proof be replayed.
    getrandom::fill(&mut nonce).expect("the OS random source failed");
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    async fn pair(
        dialer_key: FleetKey,
        listener_key: FleetKey,
    ) -> (Result<Verified, HelloError>, Result<Verified, HelloError>) {
        let (a, b) = tokio::io::duplex(4096);
        let d = async move { run(a.compat(), Role::Dialer, &dialer_key, b"d", b"l").await };
        let l = async move { run(b.compat(), Role::Listener, &listener_key, b"l", b"d").await };
        tokio::join!(d, l)
    }

    #[tokio::test]
    async fn members_verify_each_other() {
        let key = FleetKey::from_secret(&[1; 32]);
        let (d, l) = pair(key.clone(), key).await;
        assert!(d.is_ok() && l.is_ok(), "{d:?} {l:?}");
    }

    #[tokio::test]
    async fn a_stranger_is_refused_on_both_sides() {
        let (d, l) = pair(
            FleetKey::from_secret(&[1; 32]),
            FleetKey::from_secret(&[2; 32]),
        )
        .await;
        assert!(d.as_ref().is_err_and(HelloError::is_stranger), "{d:?}");
        assert!(l.as_ref().is_err_and(HelloError::is_stranger), "{l:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (a, _b) = tokio::io::duplex(4096);
        let key = FleetKey::from_secret(&[1; 32]);
        let r = run(a.compat(), Role::Listener, &key, b"l", b"d").await;
        assert!(matches!(r, Err(HelloError::Timeout)), "{r:?}");
    }
}
