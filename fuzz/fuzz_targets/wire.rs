#![no_main]
//! The peer-to-peer wire protocol over untrusted bytes. The first byte picks the
//! handshake's role (bit 0) and a slice size (the rest); the remaining bytes are a
//! stream of frames. Frames decode one after another until the stream ends or one is
//! refused, without panicking; every decoded message re-encodes to a frame that decodes
//! to it again; `decode_bytes`, fed the same stream in slices, returns the same
//! messages and the same error; and the messages, fed to a fleet handshake, verify it
//! only if the peer's proof is the honest one.

use libfuzzer_sys::fuzz_target;
use shoal_protocol::wire::{
    BytesMut, Decoded, FleetKey, HEADER_LEN, Handshake, MAX_FRAME, Message, Role, Step, VERSION,
    decode, decode_bytes, encode,
};

/// The handshake's fixed parameters; `corpus/wire/` holds honest handshakes for them.
const SECRET: [u8; 32] = [7; 32];
const DIALER: &[u8] = b"fuzz-dialer";
const LISTENER: &[u8] = b"fuzz-listener";
const DIALER_NONCE: [u8; 32] = [1; 32];
const LISTENER_NONCE: [u8; 32] = [2; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };

    // The stream, decoded frame by frame from one buffer.
    let mut messages = Vec::new();
    let mut rest = stream;
    let end = loop {
        match decode(rest) {
            Ok(Decoded::NeedMore(n)) => {
                assert!(n > 0 && rest.len() + n <= MAX_FRAME, "NeedMore({n})");
                break None;
            }
            Ok(Decoded::Frame { message, consumed }) => {
                assert!((HEADER_LEN..=rest.len()).contains(&consumed));
                let mut again = Vec::new();
                encode(&message, &mut again).expect("a decoded message re-encodes");
                match decode(&again) {
                    Ok(Decoded::Frame {
                        message: same,
                        consumed,
                    }) => {
                        assert_eq!(same, message);
                        assert_eq!(consumed, again.len());
                    }
                    other => panic!("{message:?} re-encoded decodes as {other:?}"),
                }
                rest = &rest[consumed..];
                messages.push(message);
            }
            Err(e) => {
                if let Some(reply) = e.reply() {
                    reply
                        .validate()
                        .expect("an error's reply is a valid message");
                }
                break Some(e);
            }
        }
    };

    // The same stream arriving in slices, through the zero-copy decoder.
    let slice = 1 + usize::from(mode >> 1) * 41;
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut error = None;
    'feed: for part in stream.chunks(slice) {
        buf.extend_from_slice(part);
        loop {
            match decode_bytes(&mut buf) {
                Ok(Some(message)) => got.push(message),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, messages);
    assert_eq!(error, end);

    // The messages as a peer's side of the fleet handshake.
    let key = FleetKey::from_secret(&SECRET);
    let (role, local, remote, nonce) = if mode & 1 == 0 {
        (Role::Dialer, DIALER, LISTENER, DIALER_NONCE)
    } else {
        (Role::Listener, LISTENER, DIALER, LISTENER_NONCE)
    };
    let honest = key.prove(local, remote, &nonce);
    let (mut handshake, _challenge) = Handshake::new(role, &key, local, remote, nonce);
    for message in messages {
        let proof = match &message {
            Message::FleetProof { mac } => Some(*mac),
            _ => None,
        };
        match handshake.on_message(message) {
            Ok(Step::Continue { next, send }) => {
                // Only the dialer answers a challenge, and only with its proof.
                match (role, &send) {
                    (Role::Dialer, Some(Message::FleetProof { .. })) | (Role::Listener, None) => {}
                    _ => panic!("{role:?} sent {send:?} before verifying"),
                }
                handshake = next;
            }
            Ok(Step::Verified { peer, send }) => {
                assert_eq!(proof, Some(honest), "verified without the honest proof");
                assert!(peer.version >= 1 && peer.version <= VERSION);
                assert_eq!(send.is_some(), role == Role::Listener);
                break;
            }
            Err(_) => break,
        }
    }
});
