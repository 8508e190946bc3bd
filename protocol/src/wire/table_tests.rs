//! Table tests of the framing: hostile headers and payloads, each rule a message can
//! break, piece sizes around the limit, the largest message of each kind, and golden
//! frames that pin the format down. Length bounds are in `bound_tests.rs`.

use bytes::{Bytes, BytesMut};

use super::frame::encode_unchecked;
use super::tests::{decoded, frame, raw_frame};
use super::*;
use crate::digest::Digest;
use crate::piece::{PIECE_SIZE, PieceId};

#[test]
fn oversize_length_prefixes_are_refused_from_four_bytes() {
    assert_eq!(
        decode(&[0xff; 4]),
        Err(WireError::FrameTooLarge {
            kind: None,
            len: u32::MAX.into(),
            max: MAX_BODY
        })
    );
    let just_over = ((MAX_BODY + 1) as u32).to_le_bytes();
    assert!(matches!(
        decode(&just_over),
        Err(WireError::FrameTooLarge { kind: None, .. })
    ));
    let limit = (MAX_BODY as u32).to_le_bytes();
    assert_eq!(decode(&limit), Ok(Decoded::NeedMore(MAX_BODY)));
    // A small kind announcing a large frame is refused once its kind byte is in.
    let mut have = ((Kind::Have.max_payload() + 3) as u32)
        .to_le_bytes()
        .to_vec();
    have.extend([VERSION, Kind::Have as u8]);
    assert_eq!(
        decode(&have),
        Err(WireError::FrameTooLarge {
            kind: Some(Kind::Have),
            len: (Kind::Have.max_payload() + 3) as u64,
            max: Kind::Have.max_payload() + 2
        })
    );
    let mut bytes = BytesMut::from(&have[..]);
    assert!(decode_bytes(&mut bytes).is_err());
    assert!(bytes.capacity() < 1024, "an oversize frame reserved memory");
}

#[test]
fn bad_headers_are_told_apart() {
    assert_eq!(
        decode(&[0, 0, 0, 0]),
        Err(WireError::FrameTooShort { len: 0 })
    );
    assert_eq!(
        decode(&[1, 0, 0, 0, 1]),
        Err(WireError::FrameTooShort { len: 1 })
    );
    let newer = decode(&raw_frame(VERSION + 1, 0x01, &[]));
    assert_eq!(
        newer,
        Err(WireError::NewerVersion {
            version: VERSION + 1
        })
    );
    assert!(newer.unwrap_err().is_newer_protocol());
    // Refused from the version byte on, before the rest arrives.
    assert!(decode(&[100, 0, 0, 0, 9]).unwrap_err().is_newer_protocol());
    let zero = decode(&raw_frame(0, 0x31, &[])).unwrap_err();
    assert_eq!(zero, WireError::BadVersion { version: 0 });
    assert!(!zero.is_newer_protocol());
    assert_eq!(
        decode(&[10, 0, 0, 0, VERSION, 0x7f]),
        Err(WireError::UnknownKind {
            version: VERSION,
            kind: 0x7f
        })
    );
    assert_eq!(
        decode(&raw_frame(VERSION, 0x7f, &[])).unwrap_err().reply(),
        Some(Message::Error {
            code: ErrorCode::BadMessage,
            message: "peer sent a frame of unknown kind 0x7f (wire version 1)".into()
        })
    );
}

#[test]
fn malformed_payloads_are_refused() {
    let malformed = |kind: Kind, payload: &[u8]| {
        let err = decode(&raw_frame(VERSION, kind as u8, payload)).unwrap_err();
        assert!(
            matches!(err, WireError::Malformed { kind: k, .. } if k == kind),
            "{kind:?} {payload:?}: {err:?}"
        );
    };
    malformed(Kind::Bye, &[0]);
    malformed(Kind::FleetProof, &[1; 31]);
    malformed(Kind::FleetProof, &[1; 33]);
    malformed(Kind::Piece, &[1; 35]);
    malformed(Kind::Piece, &[]);
    // A bool of 2.
    let mut map = frame(&Message::BlobMap {
        digest: Digest::of(b""),
        size: 0,
        start: 0,
        pieces: vec![],
        complete: true,
    });
    *map.last_mut().unwrap() = 2;
    assert!(matches!(decode(&map), Err(WireError::Malformed { .. })));
    // A string that is not UTF-8.
    malformed(Kind::Error, &[1, 2, 0xff, 0xfe]);
    malformed(Kind::TagRequest, &[1, b'h', 1, b'r', 1, 0xc0]);
    // An option tag of 2, and a missing option.
    let mut tag = frame(&tag_message(None));
    *tag.last_mut().unwrap() = 2;
    assert!(matches!(decode(&tag), Err(WireError::Malformed { .. })));
    tag.pop();
    tag[0] -= 1;
    assert!(matches!(decode(&tag), Err(WireError::Malformed { .. })));
    // A name's length running past the payload.
    let mut fetch = Vec::from([1; 32]);
    fetch.extend([0, 5, b'h', 1, b'r']);
    malformed(Kind::Fetch, &fetch);
}

fn tag_message(resolved: Option<TagResolution>) -> Message {
    Message::Tag {
        upstream: "docker.io".into(),
        repo: "library/debian".into(),
        tag: "bookworm".into(),
        resolved,
    }
}

#[test]
fn invalid_messages_are_refused_for_the_reason_validate_gives() {
    let d = Digest::of(b"blob");
    let cases = [
        Message::FleetChallenge {
            nonce: [0; 32],
            proto_version: 0,
        },
        Message::BlobMap {
            digest: d,
            size: 3 * PIECE_SIZE,
            start: 4,
            pieces: vec![],
            complete: false,
        },
        Message::BlobMap {
            digest: d,
            size: 3 * PIECE_SIZE,
            start: 1,
            pieces: vec![None],
            complete: false,
        },
        Message::BlobMap {
            digest: d,
            size: 2 * PIECE_SIZE,
            start: 0,
            pieces: vec![Some(PieceId([1; 32])), None],
            complete: true,
        },
        Message::BlobMap {
            digest: d,
            size: u64::MAX,
            start: 0,
            pieces: vec![],
            complete: false,
        },
        Message::PieceRequest {
            digest: d,
            indices: vec![],
        },
        Message::PieceRequest {
            digest: d,
            indices: vec![0; MAX_REQUEST_PIECES + 1],
        },
        Message::Piece {
            digest: d,
            index: 0,
            bytes: Bytes::new(),
        },
        Message::Have { digests: vec![] },
        Message::Have {
            digests: vec![d; MAX_HAVE + 1],
        },
        Message::NodeInfo {
            name: "-n1".into(),
            groups: vec![],
        },
        Message::NodeInfo {
            name: "n1".into(),
            groups: vec!["web front".into()],
        },
        Message::NodeInfo {
            name: "n1".into(),
            groups: vec!["é".into()],
        },
        Message::SeedOrder {
            id: 1,
            image: String::new(),
            pin_ttl_secs: 0,
            origin_node: vec![1],
        },
        Message::SeedOrder {
            id: 1,
            image: "a".repeat(MAX_IMAGE_LEN + 1),
            pin_ttl_secs: 0,
            origin_node: vec![1],
        },
        Message::SeedOrder {
            id: 1,
            image: "app:v1".into(),
            pin_ttl_secs: 0,
            origin_node: vec![1; MAX_PEER_ID_LEN + 1],
        },
        Message::SeedStatus {
            id: 1,
            state: SeedState::Fetching,
            bytes_done: 2,
            bytes_total: 1,
            from_origin: 0,
            from_peers: 0,
            detail: String::new(),
        },
        Message::Error {
            code: ErrorCode::Internal,
            message: "é".repeat(MAX_TEXT_LEN / 2 + 1),
        },
    ];
    for m in cases {
        let reason = m.validate().unwrap_err();
        let mut out = vec![7];
        assert_eq!(encode(&m, &mut out), Err(reason.clone()), "{m:?}");
        assert_eq!(out, [7], "a refused message left bytes behind");
        let mut buf = Vec::new();
        encode_unchecked(&m, &mut buf);
        assert_eq!(
            decode(&buf),
            Err(WireError::Invalid {
                kind: m.kind(),
                reason
            })
        );
    }
    // Codes this version does not define.
    for (kind, payload) in [
        (Kind::PieceUnavailable, [&[0u8; 33][..], &[9]].concat()),
        (Kind::SeedStatus, vec![1, 0, 0, 0, 0, 0, 0]),
        (Kind::Error, vec![0, 0]),
    ] {
        let err = decode(&raw_frame(VERSION, kind as u8, &payload)).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Invalid {
                    reason: InvalidMessage::UnknownCode { .. },
                    ..
                }
            ),
            "{kind:?}: {err:?}"
        );
    }
}

#[test]
fn piece_sizes_around_the_limit() {
    let d = Digest::of(b"blob");
    for (len, ok) in [
        (0, false),
        (1, true),
        (PIECE_SIZE as usize - 1, true),
        (PIECE_SIZE as usize, true),
        (PIECE_SIZE as usize + 1, false),
    ] {
        let bytes = Bytes::from(vec![0xa5; len]);
        let piece = Message::Piece {
            digest: d,
            index: 7,
            bytes: bytes.clone(),
        };
        let mut header = Vec::new();
        let header_ok = encode_piece_header(&d, 7, len, &mut header);
        let mut whole = Vec::new();
        let whole_ok = encode(&piece, &mut whole);
        assert_eq!(whole_ok.is_ok(), ok, "encode, {len} bytes");
        assert_eq!(header_ok, whole_ok, "header, {len} bytes");
        if ok {
            assert_eq!(header.len(), PIECE_HEADER_LEN);
            header.extend_from_slice(&bytes);
            assert_eq!(header, whole, "header then bytes is the frame");
            assert_eq!(decoded(&whole), piece);
            // decode_bytes hands out a slice of the buffer, not a copy.
            let mut buf = BytesMut::from(&whole[..]);
            let base = buf.as_ptr() as usize;
            let Some(Message::Piece { bytes: got, .. }) = decode_bytes(&mut buf).unwrap() else {
                panic!("not a piece");
            };
            assert_eq!(got.as_ptr() as usize, base + PIECE_HEADER_LEN);
            assert_eq!(got, bytes);
        } else {
            assert_eq!(whole_ok, Err(InvalidMessage::PieceSize { len: len as u64 }));
            // What a peer would send: refused whole (empty) or from the header (too big).
            let mut frame = Vec::new();
            encode_unchecked(&piece, &mut frame);
            let err = decode(&frame).unwrap_err();
            let mut buf = BytesMut::from(&frame[..]);
            assert_eq!(decode_bytes(&mut buf).unwrap_err(), err);
            assert_eq!(&buf[..], &frame[..], "a refused frame stays in the buffer");
            if len == 0 {
                assert!(matches!(err, WireError::Invalid { .. }), "{err:?}");
            } else {
                assert!(matches!(err, WireError::FrameTooLarge { .. }), "{err:?}");
                assert!(decode(&frame[..HEADER_LEN]).is_err());
            }
        }
    }
}

/// The bounds of each kind agree with `Kind::max_payload`: the largest valid message
/// of every kind encodes within it and decodes.
#[test]
fn the_largest_message_of_each_kind_fits_its_frame() {
    let d = Digest::from_bytes([0xff; 32]);
    let big = [
        Message::FleetChallenge {
            nonce: [0xff; 32],
            proto_version: u8::MAX,
        },
        Message::FleetProof { mac: [0xff; 32] },
        Message::BlobMapRequest {
            digest: d,
            start: u32::MAX,
        },
        Message::BlobMap {
            digest: d,
            size: (1 << 32) * PIECE_SIZE,
            start: 0,
            pieces: vec![Some(PieceId([0xff; 32])); MAX_MAP_PIECES],
            complete: true,
        },
        Message::PieceRequest {
            digest: d,
            indices: vec![u32::MAX; MAX_REQUEST_PIECES],
        },
        Message::Piece {
            digest: d,
            index: u32::MAX,
            bytes: vec![0xff; PIECE_SIZE as usize].into(),
        },
        Message::PieceUnavailable {
            digest: d,
            index: u32::MAX,
            reason: Unavailable::Busy,
        },
        Message::Have {
            digests: vec![d; MAX_HAVE],
        },
        Message::Fetch {
            digest: d,
            size: u64::MAX,
            upstream: "u".repeat(MAX_NAME_LEN),
            repo: "r".repeat(MAX_NAME_LEN),
        },
        Message::TagRequest {
            upstream: "u".repeat(MAX_NAME_LEN),
            repo: "r".repeat(MAX_NAME_LEN),
            tag: "t".repeat(MAX_TAG_LEN),
        },
        Message::Tag {
            upstream: "u".repeat(MAX_NAME_LEN),
            repo: "r".repeat(MAX_NAME_LEN),
            tag: "t".repeat(MAX_TAG_LEN),
            resolved: Some(TagResolution {
                digest: d,
                media_type: "m".repeat(MAX_MEDIA_TYPE_LEN),
                resolved_at: u64::MAX,
            }),
        },
        Message::NodeInfo {
            name: "n".repeat(MAX_NODE_NAME_LEN),
            groups: vec!["g".repeat(MAX_NODE_NAME_LEN); MAX_GROUPS],
        },
        Message::PackRequest {
            layer: d,
            held: vec![d; MAX_PACK_BASES],
        },
        Message::Pack {
            layer: d,
            pack: d,
            size: u64::MAX,
            blob_size: u64::MAX,
        },
        Message::SeedOrder {
            id: u64::MAX,
            image: "i".repeat(MAX_IMAGE_LEN),
            pin_ttl_secs: u64::MAX,
            origin_node: vec![0xff; MAX_PEER_ID_LEN],
        },
        Message::SeedStatus {
            id: u64::MAX,
            state: SeedState::Failed,
            bytes_done: u64::MAX,
            bytes_total: u64::MAX,
            from_origin: u64::MAX,
            from_peers: u64::MAX,
            detail: "d".repeat(MAX_TEXT_LEN),
        },
        Message::Error {
            code: ErrorCode::Internal,
            message: "m".repeat(MAX_TEXT_LEN),
        },
        Message::Bye,
    ];
    assert_eq!(big.len(), Kind::ALL.len());
    for (m, kind) in big.iter().zip(Kind::ALL) {
        assert_eq!(m.kind(), kind);
        let buf = frame(m);
        assert!(buf.len() - HEADER_LEN <= kind.max_payload(), "{kind:?}");
        assert!(buf.len() <= MAX_FRAME);
        assert_eq!(&decoded(&buf), m);
    }
}

/// These bytes are the format; if this test has to change, so does `VERSION`.
#[test]
fn golden_frames() {
    assert_eq!(frame(&Message::Bye), [2, 0, 0, 0, 1, 0x31]);
    let mut challenge = vec![35, 0, 0, 0, 1, 0x01];
    challenge.extend([0xab; 32]);
    challenge.push(1);
    assert_eq!(
        frame(&Message::FleetChallenge {
            nonce: [0xab; 32],
            proto_version: 1
        }),
        challenge
    );
    let mut unavailable = vec![37, 0, 0, 0, 1, 0x14];
    unavailable.extend([1; 32]);
    unavailable.extend([0xac, 0x02, 1]); // 300 as a varint, NotHeld
    assert_eq!(
        frame(&Message::PieceUnavailable {
            digest: Digest::from_bytes([1; 32]),
            index: 300,
            reason: Unavailable::NotHeld
        }),
        unavailable
    );
    let mut piece = vec![41, 0, 0, 0, 1, 0x13];
    piece.extend([2; 32]);
    piece.extend([1, 0, 0, 0]);
    piece.extend(b"abc");
    assert_eq!(
        frame(&Message::Piece {
            digest: Digest::from_bytes([2; 32]),
            index: 1,
            bytes: Bytes::from_static(b"abc")
        }),
        piece
    );
    let mut map = vec![44, 0, 0, 0, 1, 0x11];
    map.extend([3; 32]);
    // size PIECE_SIZE + 1 (varint), start 1, one entry: Some(id), then complete.
    map.extend([0x81, 0x80, 0x40, 1, 1, 1]);
    map.extend([4; 32]);
    map.push(1);
    map[0] = (map.len() - 4) as u8;
    assert_eq!(
        frame(&Message::BlobMap {
            digest: Digest::from_bytes([3; 32]),
            size: PIECE_SIZE + 1,
            start: 1,
            pieces: vec![Some(PieceId([4; 32]))],
            complete: true
        }),
        map
    );
    let mut fetch = vec![0, 0, 0, 0, 1, 0x16];
    fetch.extend([5; 32]);
    fetch.extend([0x80, 0x01]); // size 128
    fetch.extend(b"\x09docker.io\x0elibrary/debian");
    fetch[0] = (fetch.len() - 4) as u8;
    assert_eq!(
        frame(&Message::Fetch {
            digest: Digest::from_bytes([5; 32]),
            size: 128,
            upstream: "docker.io".into(),
            repo: "library/debian".into()
        }),
        fetch
    );
    let mut request = vec![0, 0, 0, 0, 1, 0x17];
    request.extend(b"\x09docker.io\x0elibrary/debian\x08bookworm");
    request[0] = (request.len() - 4) as u8;
    assert_eq!(
        frame(&Message::TagRequest {
            upstream: "docker.io".into(),
            repo: "library/debian".into(),
            tag: "bookworm".into()
        }),
        request
    );
    let mut never = vec![0, 0, 0, 0, 1, 0x18];
    never.extend(b"\x09docker.io\x0elibrary/debian\x08bookworm");
    never.push(0); // None
    never[0] = (never.len() - 4) as u8;
    assert_eq!(frame(&tag_message(None)), never);
    let mut tag = never.clone();
    *tag.last_mut().unwrap() = 1; // Some
    tag.extend([6; 32]);
    tag.extend(b"\x04json");
    tag.extend([0x80, 0xe2, 0xcf, 0xaa, 0x06]); // 1_700_000_000
    tag[0] = (tag.len() - 4) as u8;
    assert_eq!(
        frame(&tag_message(Some(TagResolution {
            digest: Digest::from_bytes([6; 32]),
            media_type: "json".into(),
            resolved_at: 1_700_000_000
        }))),
        tag
    );
    assert_eq!(
        frame(&Message::NodeInfo {
            name: "n1".into(),
            groups: vec!["web".into()]
        }),
        b"\x0a\0\0\0\x01\x19\x02n1\x01\x03web"
    );
}

#[test]
fn debug_of_a_piece_leaves_its_bytes_out() {
    let piece = Message::Piece {
        digest: Digest::of(b""),
        index: 0,
        bytes: vec![0; PIECE_SIZE as usize].into(),
    };
    let s = format!("{piece:?}");
    assert!(s.len() < 300 && s.contains("len: 1048576"), "{s}");
    assert!(format!("{:?}", Message::Bye) == "Bye");
}

#[test]
fn debug_of_a_tag_shows_its_resolution() {
    let s = format!(
        "{:?}",
        tag_message(Some(TagResolution {
            digest: Digest::from_bytes([6; 32]),
            media_type: "json".into(),
            resolved_at: 7
        }))
    );
    assert!(
        s.starts_with(r#"Tag { upstream: "docker.io", repo: "library/debian", tag: "bookworm", resolved: Some(TagResolution {"#)
            && s.contains(r#"media_type: "json", resolved_at: 7 })"#),
        "{s}"
    );
}

#[test]
fn every_kind_byte_maps_back() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_byte(kind as u8), Some(kind));
    }
    let known = (0..=u8::MAX)
        .filter(|b| Kind::from_byte(*b).is_some())
        .count();
    assert_eq!(known, Kind::ALL.len());
}

#[test]
fn node_names_are_plain_ascii_words() {
    for ok in [
        "n1",
        "web-1",
        "Host.example_2",
        "9",
        &"a".repeat(MAX_NODE_NAME_LEN),
    ] {
        assert!(is_node_name(ok), "{ok:?}");
    }
    let long = "a".repeat(MAX_NODE_NAME_LEN + 1);
    for bad in ["", "-n", ".n", "_n", "a b", "a,b", "é", "a/b", "a:b", &long] {
        assert!(!is_node_name(bad), "{bad:?}");
    }
}
