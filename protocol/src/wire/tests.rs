//! Property tests of the framing: every message round-trips, every prefix of a frame
//! asks for more, streams of frames decode one by one in any slicing, and arbitrary or
//! corrupted bytes never panic. Also the strategies and helpers the table tests use.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::digest::Digest;
use crate::piece::{PIECE_SIZE, PieceId, PieceLayout};

pub(super) fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest::from_bytes)
}

pub(super) fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max_chars).prop_map(|c| c.into_iter().collect())
}

/// Non-empty strings of any characters, at most `max_bytes` long in UTF-8.
fn name(max_bytes: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 1..=max_bytes).prop_map(move |chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > max_bytes {
                break;
            }
            s.push(c);
        }
        s
    })
}

/// Registry hosts and repositories: realistic ones, and any characters up to the bound.
fn upstream_and_repo() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (
            "[a-z0-9.-]{1,40}(:[0-9]{1,5})?",
            "[a-z0-9]{1,20}(/[a-z0-9._-]{1,20}){0,3}"
        ),
        (name(MAX_NAME_LEN), name(MAX_NAME_LEN)),
    ]
}

/// Valid blob maps: small blobs, and blobs of up to 2^32 pieces described near their
/// end so that pages stay small.
fn blob_map() -> impl Strategy<Value = Message> {
    prop_oneof![0u64..40 * PIECE_SIZE, 0u64..=(1u64 << 32) * PIECE_SIZE]
        .prop_flat_map(|size| {
            let count = PieceLayout::new(size).count();
            let first = count - count.min(40);
            (
                Just(size),
                first..=count.min(u64::from(u32::MAX)),
                any::<bool>(),
                digest(),
            )
        })
        .prop_flat_map(|(size, start, complete, digest)| {
            let len = (PieceLayout::new(size).count() - start).min(MAX_MAP_PIECES as u64);
            let pieces = proptest::collection::vec(
                proptest::option::of(any::<[u8; 32]>().prop_map(PieceId)),
                len as usize,
            );
            (Just((size, start, complete, digest)), pieces)
        })
        .prop_map(|((size, start, complete, digest), mut pieces)| {
            if complete {
                for (i, p) in pieces.iter_mut().enumerate() {
                    p.get_or_insert(PieceId([i as u8; 32]));
                }
            }
            Message::BlobMap {
                digest,
                size,
                start: start as u32,
                pieces,
                complete,
            }
        })
}

/// Every kind of valid message.
pub(super) fn message() -> impl Strategy<Value = Message> {
    let reason = prop_oneof![
        Just(Unavailable::NotHeld),
        Just(Unavailable::UnknownBlob),
        Just(Unavailable::Busy)
    ];
    let state = prop_oneof![
        Just(SeedState::Queued),
        Just(SeedState::Fetching),
        Just(SeedState::Complete),
        Just(SeedState::Failed)
    ];
    let code = prop_oneof![
        Just(ErrorCode::BadMessage),
        Just(ErrorCode::Unsupported),
        Just(ErrorCode::WrongFleet),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Internal)
    ];
    prop_oneof![
        (any::<[u8; 32]>(), 1u8..).prop_map(|(nonce, proto_version)| Message::FleetChallenge {
            nonce,
            proto_version
        }),
        any::<[u8; 32]>().prop_map(|mac| Message::FleetProof { mac }),
        (digest(), any::<u32>())
            .prop_map(|(digest, start)| Message::BlobMapRequest { digest, start }),
        blob_map(),
        (
            digest(),
            proptest::collection::vec(any::<u32>(), 1..=MAX_REQUEST_PIECES)
        )
            .prop_map(|(digest, indices)| Message::PieceRequest { digest, indices }),
        (
            digest(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 1..2048)
        )
            .prop_map(|(digest, index, bytes)| Message::Piece {
                digest,
                index,
                bytes: bytes.into()
            }),
        (digest(), any::<u32>(), reason).prop_map(|(digest, index, reason)| {
            Message::PieceUnavailable {
                digest,
                index,
                reason,
            }
        }),
        proptest::collection::vec(digest(), 1..50).prop_map(|digests| Message::Have { digests }),
        (digest(), any::<u64>(), upstream_and_repo()).prop_map(
            |(digest, size, (upstream, repo))| Message::Fetch {
                digest,
                size,
                upstream,
                repo
            }
        ),
        (upstream_and_repo(), name(MAX_TAG_LEN)).prop_map(|((upstream, repo), tag)| {
            Message::TagRequest {
                upstream,
                repo,
                tag,
            }
        }),
        (
            upstream_and_repo(),
            name(MAX_TAG_LEN),
            proptest::option::of((digest(), name(MAX_MEDIA_TYPE_LEN), any::<u64>()))
        )
            .prop_map(|((upstream, repo), tag, resolved)| Message::Tag {
                upstream,
                repo,
                tag,
                resolved: resolved.map(|(digest, media_type, resolved_at)| TagResolution {
                    digest,
                    media_type,
                    resolved_at
                }),
            }),
        (
            "[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}",
            proptest::collection::vec("[a-z0-9][a-z0-9._-]{0,63}", 0..=MAX_GROUPS)
        )
            .prop_map(|(name, groups)| Message::NodeInfo { name, groups }),
        (
            digest(),
            proptest::collection::vec(digest(), 0..=MAX_PACK_BASES)
        )
            .prop_map(|(layer, held)| Message::PackRequest { layer, held }),
        (digest(), digest(), any::<u64>(), any::<u64>()).prop_map(
            |(layer, pack, size, blob_size)| Message::Pack {
                layer,
                pack,
                size,
                blob_size
            }
        ),
        (
            any::<u64>(),
            "[a-z0-9./:@-]{1,200}",
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 1..=MAX_PEER_ID_LEN)
        )
            .prop_map(
                |(id, image, pin_ttl_secs, origin_node)| Message::SeedOrder {
                    id,
                    image,
                    pin_ttl_secs,
                    origin_node
                }
            ),
        (
            any::<u64>(),
            state,
            any::<(u64, u64)>(),
            any::<(u64, u64)>(),
            text(200)
        )
            .prop_map(|(id, state, (a, b), (from_origin, from_peers), detail)| {
                Message::SeedStatus {
                    id,
                    state,
                    bytes_done: a.min(b),
                    bytes_total: a.max(b),
                    from_origin,
                    from_peers,
                    detail,
                }
            }),
        (code, text(200)).prop_map(|(code, message)| Message::Error { code, message }),
        Just(Message::Bye),
    ]
}

pub(super) fn frame(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(message, &mut out).unwrap();
    out
}

/// A frame of any version, kind and payload.
pub(super) fn raw_frame(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 2) as u32).to_le_bytes().to_vec();
    out.extend([version, kind]);
    out.extend(payload);
    out
}

pub(super) fn decoded(buf: &[u8]) -> Message {
    match decode(buf) {
        Ok(Decoded::Frame { message, consumed }) => {
            assert_eq!(consumed, buf.len());
            message
        }
        other => panic!("expected one whole frame, got {other:?}"),
    }
}

/// Decoding arbitrary bytes: whatever comes out re-encodes to a frame that decodes to
/// the same message, and any error has a valid reply.
fn check_arbitrary(bytes: &[u8]) {
    match decode(bytes) {
        Ok(Decoded::Frame { message, consumed }) => {
            assert!(consumed <= bytes.len() && consumed >= HEADER_LEN);
            assert_eq!(decoded(&frame(&message)), message);
        }
        Ok(Decoded::NeedMore(n)) => assert!(n > 0 && bytes.len() + n <= MAX_FRAME),
        Err(e) => {
            if let Some(reply) = e.reply() {
                reply.validate().unwrap();
            }
        }
    }
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let buf = frame(&m);
        prop_assert_eq!(decoded(&buf), m.clone());
        let mut bytes = BytesMut::from(&buf[..]);
        prop_assert_eq!(decode_bytes(&mut bytes).unwrap(), Some(m));
        prop_assert!(bytes.is_empty());
    }

    #[test]
    fn every_prefix_of_a_frame_needs_more(m in message()) {
        let buf = frame(&m);
        for k in 0..buf.len() {
            let Ok(Decoded::NeedMore(n)) = decode(&buf[..k]) else {
                panic!("prefix of {k} bytes of {m:?} did not ask for more");
            };
            prop_assert!(n > 0 && k + n <= buf.len());
            if k >= LEN_PREFIX {
                prop_assert_eq!(k + n, buf.len());
            }
            let mut bytes = BytesMut::from(&buf[..k]);
            prop_assert_eq!(decode_bytes(&mut bytes).unwrap(), None);
            prop_assert_eq!(&bytes[..], &buf[..k]);
            if k >= LEN_PREFIX {
                prop_assert!(bytes.capacity() >= buf.len(), "room for the whole frame");
            }
        }
    }

    #[test]
    fn concatenated_frames_decode_one_by_one(
        ms in proptest::collection::vec(message(), 1..8),
        cuts in proptest::collection::vec(1usize..3000, 1..40),
    ) {
        let mut stream = Vec::new();
        for m in &ms {
            encode(m, &mut stream).unwrap();
        }
        let mut rest = &stream[..];
        for m in &ms {
            let Decoded::Frame { message, consumed } = decode(rest).unwrap() else {
                panic!("frame cut short");
            };
            prop_assert_eq!(&message, m);
            rest = &rest[consumed..];
        }
        prop_assert!(rest.is_empty());

        // The same stream arriving in arbitrary slices, through decode_bytes.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        for cut in cuts.iter().cycle() {
            let end = (pos + cut).min(stream.len());
            buf.extend_from_slice(&stream[pos..end]);
            pos = end;
            while let Some(m) = decode_bytes(&mut buf).unwrap() {
                got.push(m);
            }
            if pos == stream.len() {
                break;
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, ms);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_arbitrary(&bytes);
    }

    #[test]
    fn random_payloads_under_a_valid_header_never_panic(
        kind in proptest::sample::select(Kind::ALL.to_vec()),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        check_arbitrary(&raw_frame(VERSION, kind as u8, &payload));
    }

    #[test]
    fn a_flipped_byte_never_panics(m in message(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let mut buf = frame(&m);
        let i = at.index(buf.len());
        buf[i] ^= x;
        check_arbitrary(&buf);
    }
}
