//! Fleet key and handshake tests: two in-memory peers talking through encoded frames,
//! honest or not.

use proptest::prelude::*;

use super::*;

/// One side of an in-memory connection.
struct Side {
    handshake: Option<Handshake>,
    result: Option<Result<Verified, WireError>>,
    /// Bytes the other side wrote, not yet decoded.
    inbox: Vec<u8>,
    /// Messages this side sent, in order.
    sent: Vec<Message>,
}

/// How each side sees the connection: its key, its own id, the peer's id, its nonce.
struct View<'a> {
    key: &'a FleetKey,
    local: &'a [u8],
    remote: &'a [u8],
    nonce: [u8; 32],
}

/// Runs a dialer and a listener against each other through encoded frames until
/// neither can move. Returns the dialer's side, then the listener's.
fn run(dialer: View<'_>, listener: View<'_>) -> [Side; 2] {
    let start = |role, v: View<'_>| {
        let (handshake, challenge) = Handshake::new(role, v.key, v.local, v.remote, v.nonce);
        Side {
            handshake: Some(handshake),
            result: None,
            inbox: Vec::new(),
            sent: vec![challenge],
        }
    };
    let mut sides = [start(Role::Dialer, dialer), start(Role::Listener, listener)];
    for i in 0..2 {
        let challenge = sides[i].sent[0].clone();
        encode(&challenge, &mut sides[1 - i].inbox).unwrap();
    }
    loop {
        let mut moved = false;
        for i in 0..2 {
            let side = &mut sides[i];
            let Some(handshake) = side.handshake.take() else {
                continue;
            };
            let (message, consumed) = match decode(&side.inbox).unwrap() {
                Decoded::Frame { message, consumed } => (message, consumed),
                Decoded::NeedMore(_) => {
                    side.handshake = Some(handshake);
                    continue;
                }
            };
            side.inbox.drain(..consumed);
            moved = true;
            let send = match handshake.on_message(message) {
                Ok(Step::Continue { next, send }) => {
                    side.handshake = Some(next);
                    send
                }
                Ok(Step::Verified { peer, send }) => {
                    side.result = Some(Ok(peer));
                    send
                }
                Err(e) => {
                    side.result = Some(Err(e));
                    None
                }
            };
            if let Some(m) = send {
                side.sent.push(m.clone());
                encode(&m, &mut sides[1 - i].inbox).unwrap();
            }
        }
        if !moved {
            return sides;
        }
    }
}

fn key(byte: u8) -> FleetKey {
    FleetKey::from_secret(&[byte; 32])
}

const D: &[u8] = b"12D3KooW-dialer";
const L: &[u8] = b"12D3KooW-listener";

fn honest<'a>(k: &'a FleetKey) -> (View<'a>, View<'a>) {
    (
        View {
            key: k,
            local: D,
            remote: L,
            nonce: [1; 32],
        },
        View {
            key: k,
            local: L,
            remote: D,
            nonce: [2; 32],
        },
    )
}

const V1: Verified = Verified {
    peer_version: 1,
    version: 1,
};

proptest! {
    #[test]
    fn honest_peers_verify_each_other(
        secret in any::<[u8; 32]>(),
        d in proptest::collection::vec(any::<u8>(), 0..80),
        l in proptest::collection::vec(any::<u8>(), 0..80),
        nd in any::<[u8; 32]>(),
        nl in any::<[u8; 32]>(),
    ) {
        let k = FleetKey::from_secret(&secret);
        let [dialer, listener] = run(
            View { key: &k, local: &d, remote: &l, nonce: nd },
            View { key: &k, local: &l, remote: &d, nonce: nl },
        );
        prop_assert_eq!(dialer.result, Some(Ok(V1)));
        prop_assert_eq!(listener.result, Some(Ok(V1)));
        prop_assert!(dialer.inbox.is_empty() && listener.inbox.is_empty());
    }

    #[test]
    fn any_other_proof_fails(secret in any::<[u8; 32]>(), nonce in any::<[u8; 32]>(), bit in 0usize..256) {
        let k = FleetKey::from_secret(&secret);
        let mut mac = k.prove(D, L, &nonce);
        prop_assert!(k.verify(D, L, &nonce, &mac));
        mac[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!k.verify(D, L, &nonce, &mac));
    }
}

#[test]
fn two_honest_peers_exchange_four_messages() {
    let k = key(7);
    let (d, l) = honest(&k);
    let [dialer, listener] = run(d, l);
    assert_eq!(dialer.result, Some(Ok(V1)));
    assert_eq!(listener.result, Some(Ok(V1)));
    let kinds = |s: &Side| s.sent.iter().map(Message::kind).collect::<Vec<_>>();
    assert_eq!(kinds(&dialer), [Kind::FleetChallenge, Kind::FleetProof]);
    assert_eq!(kinds(&listener), [Kind::FleetChallenge, Kind::FleetProof]);
}

#[test]
fn a_peer_with_the_wrong_key_fails_and_learns_nothing() {
    let (right, wrong) = (key(7), key(8));
    // An outsider dials: the listener refuses it and never sends a proof.
    let (mut d, l) = honest(&right);
    d.key = &wrong;
    let [dialer, listener] = run(d, l);
    assert_eq!(listener.result, Some(Err(WireError::WrongFleet)));
    assert_eq!(dialer.result, None, "the outsider is still waiting");
    assert_eq!(
        listener.sent.len(),
        1,
        "the listener sent its challenge only"
    );
    // A node dials an outsider: the outsider gets the dialer's proof (the dialer chose
    // whom to dial) but gives none that verifies.
    let (d, mut l) = honest(&right);
    l.key = &wrong;
    let [dialer, listener] = run(d, l);
    assert_eq!(listener.result, Some(Err(WireError::WrongFleet)));
    assert_eq!(dialer.result, None);
    // And the outsider cannot forge one.
    let (d, _) = honest(&right);
    let (hs, _) = Handshake::new(Role::Dialer, d.key, d.local, d.remote, d.nonce);
    let Step::Continue { next, .. } = hs.on_message(challenge([2; 32], 1)).unwrap() else {
        panic!("verified on a challenge");
    };
    let forged = wrong.prove(D, L, &[1; 32]);
    assert_eq!(
        next.on_message(Message::FleetProof { mac: forged })
            .unwrap_err(),
        WireError::WrongFleet
    );
}

fn challenge(nonce: [u8; 32], proto_version: u8) -> Message {
    Message::FleetChallenge {
        nonce,
        proto_version,
    }
}

/// A listener that got `challenge` from the dialer, waiting for its proof.
fn listener_awaiting_proof(k: &FleetKey, nonce: [u8; 32]) -> Handshake {
    let (hs, _) = Handshake::new(Role::Listener, k, L, D, nonce);
    match hs.on_message(challenge([1; 32], 1)).unwrap() {
        Step::Continue { next, send: None } => next,
        other => panic!("the listener answered a challenge with {other:?}"),
    }
}

#[test]
fn a_replayed_proof_fails() {
    let k = key(7);
    let (d, l) = honest(&k);
    let [dialer, listener] = run(d, l);
    assert_eq!(listener.result, Some(Ok(V1)));
    let recorded = dialer.sent[1].clone();
    // The same dialer's proof, replayed to a listener that sent another nonce.
    let hs = listener_awaiting_proof(&k, [3; 32]);
    assert_eq!(hs.on_message(recorded).unwrap_err(), WireError::WrongFleet);
    // The listener's proof, replayed to the dialer on a later connection.
    let later = Handshake::new(Role::Dialer, &k, D, L, [4; 32]).0;
    let Step::Continue { next, .. } = later.on_message(challenge([2; 32], 1)).unwrap() else {
        panic!("verified on a challenge");
    };
    assert_eq!(
        next.on_message(listener.sent[1].clone()).unwrap_err(),
        WireError::WrongFleet
    );
}

#[test]
fn swapped_peer_ids_fail() {
    let k = key(7);
    assert_ne!(k.prove(D, L, &[1; 32]), k.prove(L, D, &[1; 32]));
    // A dialer that has the ids the wrong way round.
    let (mut d, l) = honest(&k);
    (d.local, d.remote) = (L, D);
    let [_, listener] = run(d, l);
    assert_eq!(listener.result, Some(Err(WireError::WrongFleet)));
    // A proof for another peer: the dialer answers as itself, the listener thinks it
    // talks to someone else.
    let (d, mut l) = honest(&k);
    l.remote = b"12D3KooW-someone-else";
    let [_, listener] = run(d, l);
    assert_eq!(listener.result, Some(Err(WireError::WrongFleet)));
    // Length prefixes keep ids from sliding into each other.
    assert_ne!(
        k.prove(b"ab", b"c", &[0; 32]),
        k.prove(b"a", b"bc", &[0; 32])
    );
}

#[test]
fn a_reflected_challenge_gets_no_proof() {
    // An outsider dials and sends back the listener's own nonce as its challenge,
    // hoping for a proof it could return: the listener proves nothing until the dialer
    // has, and a dialer's proof is bound to the dialer as prover.
    let k = key(7);
    let (hs, _) = Handshake::new(Role::Listener, &k, L, D, [2; 32]);
    let Step::Continue { next, send } = hs.on_message(challenge([2; 32], 1)).unwrap() else {
        panic!("verified on a challenge");
    };
    assert_eq!(send, None);
    let reflected = k.prove(D, L, &[2; 32]); // what the listener would prove to D
    assert_eq!(
        next.on_message(Message::FleetProof { mac: reflected })
            .unwrap_err(),
        WireError::WrongFleet
    );
}

#[test]
fn messages_out_of_order_fail() {
    let k = key(7);
    let fresh = || Handshake::new(Role::Listener, &k, L, D, [2; 32]).0;
    let proof = Message::FleetProof { mac: [0; 32] };
    assert_eq!(fresh().expecting(), Kind::FleetChallenge);
    assert_eq!(
        fresh().on_message(proof.clone()).unwrap_err(),
        WireError::Unexpected {
            expected: Kind::FleetChallenge,
            got: Kind::FleetProof
        }
    );
    let waiting = listener_awaiting_proof(&k, [2; 32]);
    assert_eq!(waiting.expecting(), Kind::FleetProof);
    let request = Message::BlobMapRequest {
        digest: crate::Digest::of(b""),
        start: 0,
    };
    assert_eq!(
        waiting.on_message(request).unwrap_err(),
        WireError::Unexpected {
            expected: Kind::FleetProof,
            got: Kind::BlobMapRequest
        }
    );
    assert_eq!(
        listener_awaiting_proof(&k, [2; 32])
            .on_message(challenge([5; 32], 1))
            .unwrap_err(),
        WireError::Unexpected {
            expected: Kind::FleetProof,
            got: Kind::FleetChallenge
        }
    );
    assert!(matches!(
        fresh().on_message(Message::Bye),
        Err(WireError::Unexpected { got: Kind::Bye, .. })
    ));
    let refusal = Message::Error {
        code: ErrorCode::WrongFleet,
        message: "no".into(),
    };
    assert_eq!(
        fresh().on_message(refusal).unwrap_err(),
        WireError::Remote {
            code: ErrorCode::WrongFleet,
            message: "no".into()
        }
    );
}

#[test]
fn the_version_both_read_is_agreed() {
    let k = key(7);
    let (hs, _) = Handshake::new(Role::Dialer, &k, D, L, [1; 32]);
    let Step::Continue { next, send } = hs.on_message(challenge([2; 32], 9)).unwrap() else {
        panic!("verified on a challenge");
    };
    assert_eq!(
        send,
        Some(Message::FleetProof {
            mac: k.prove(L, D, &[2; 32])
        })
    );
    let mac = k.prove(D, L, &[1; 32]);
    let Step::Verified { peer, send: None } = next.on_message(Message::FleetProof { mac }).unwrap()
    else {
        panic!("not verified");
    };
    assert_eq!(
        peer,
        Verified {
            peer_version: 9,
            version: VERSION
        }
    );
}

#[test]
fn key_files_in_each_form() {
    let secret = [0x5a; 32];
    let raw = FleetKey::from_secret(&secret).fleet_id();
    let id = |bytes: &[u8]| FleetKey::from_file_bytes(bytes).map(|k| k.fleet_id());
    assert_eq!(id(&secret), Ok(raw));
    let hex = hex::encode(secret);
    assert_eq!(id(hex.as_bytes()), Ok(raw));
    assert_eq!(id(format!("{hex}\n").as_bytes()), Ok(raw));
    assert_eq!(
        id(format!("{}\r\n", hex.to_uppercase()).as_bytes()),
        Ok(raw)
    );
    // A 32-byte binary key is never trimmed, even if it ends in a newline byte.
    let mut nl = [0x5a; 32];
    nl[31] = b'\n';
    assert_eq!(id(&nl), Ok(FleetKey::from_secret(&nl).fleet_id()));
    // Passphrases: the editor's newline does not matter.
    let phrase = id(b"correct horse battery staple").unwrap();
    assert_eq!(id(b"correct horse battery staple\n"), Ok(phrase));
    assert_ne!(phrase, raw);
    let thirty_two = b"a passphrase of exactly 32 bytes";
    assert_eq!(id(thirty_two), id(&[&thirty_two[..], b"\n"].concat()));
    // Refused.
    assert_eq!(id(b""), Err(FleetKeyError::TooShort { len: 0 }));
    assert_eq!(id(b"short\n"), Err(FleetKeyError::TooShort { len: 5 }));
    assert_eq!(
        id(&[b'x'; MAX_KEY_FILE_LEN + 1]),
        Err(FleetKeyError::TooLong {
            len: MAX_KEY_FILE_LEN + 1
        })
    );
    assert!(id(&[b'x'; MAX_KEY_FILE_LEN]).is_ok());
}

#[test]
fn the_fleet_id_is_public_and_the_key_is_not() {
    let k = key(7);
    let id = k.fleet_id();
    assert_ne!(id, key(8).fleet_id());
    assert_ne!(id.0, [7; 32]);
    let debug = format!("{k:?}");
    assert!(!debug.contains(&hex::encode([7u8; 32])), "{debug}");
    assert!(
        !debug.contains(&hex::encode(k.prove(D, L, &[0; 32]))),
        "{debug}"
    );
    assert_eq!(
        id.protocol_name(),
        format!("/shoal/{}/wire/1", hex::encode(id.0))
    );
}

/// These values are the protocol; if this test has to change, so do the derivation
/// contexts and the proof's domain string. The proof is also rebuilt here from the
/// formula in `FleetKey::prove`'s docs, spelled out.
#[test]
fn known_answers() {
    let k = key(7);
    assert_eq!(
        k.fleet_id().to_string(),
        "e24de00bff00dbab670bc1b89eb16be53748315dfb8f136862f112bde1a233cc"
    );
    let mac = k.prove(D, L, &[1; 32]);
    assert_eq!(
        hex::encode(mac),
        "9471c430ddc96ab968cd82a6a993a80c94b47b1ad3e29b7c9b71b79d141ec185"
    );
    let mut transcript = b"shoal fleet proof v1".to_vec();
    transcript.extend((D.len() as u64).to_le_bytes());
    transcript.extend(D);
    transcript.extend((L.len() as u64).to_le_bytes());
    transcript.extend(L);
    transcript.extend([1; 32]);
    let proof_key = blake3::derive_key("shoal fleet proof key v1", &[7; 32]);
    assert_eq!(*blake3::keyed_hash(&proof_key, &transcript).as_bytes(), mac);
    assert_eq!(
        k.fleet_id().0,
        blake3::derive_key("shoal fleet id v1", &[7; 32])
    );
}
