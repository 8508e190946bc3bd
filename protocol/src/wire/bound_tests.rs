//! The length bounds of every kind, as a table: each list, string and byte string just
//! under, at and just over each end of its range.

use super::frame::encode_unchecked;
use super::tests::{decoded, frame};
use super::*;
use crate::digest::Digest;

/// A string of exactly `len` bytes, mostly two-byte characters: bounds count bytes.
fn bytes_long(len: usize) -> String {
    let mut s = "é".repeat(len / 2);
    if len % 2 == 1 {
        s.push('a');
    }
    s
}

/// Every length bound of every kind: a field just under, at and just over each end of
/// its range, everything else valid.
#[test]
fn every_length_bound_just_under_at_and_over() {
    struct Bound {
        kind: Kind,
        field: &'static str,
        min: usize,
        max: usize,
        /// The message with that field `len` long.
        with: fn(usize) -> Message,
    }
    let bounds = [
        Bound {
            kind: Kind::PieceRequest,
            field: "indices",
            min: 1,
            max: MAX_REQUEST_PIECES,
            with: |n| Message::PieceRequest {
                digest: Digest::of(b"blob"),
                indices: (0..n as u32).collect(),
            },
        },
        Bound {
            kind: Kind::Have,
            field: "digests",
            min: 1,
            max: MAX_HAVE,
            with: |n| Message::Have {
                digests: vec![Digest::of(b"blob"); n],
            },
        },
        Bound {
            kind: Kind::PackRequest,
            field: "held",
            min: 0,
            max: MAX_PACK_BASES,
            with: |n| Message::PackRequest {
                layer: Digest::of(b"layer"),
                held: vec![Digest::of(b"base"); n],
            },
        },
        Bound {
            kind: Kind::NodeInfo,
            field: "name",
            min: 1,
            max: MAX_NODE_NAME_LEN,
            with: |n| Message::NodeInfo {
                name: "n".repeat(n),
                groups: vec!["web".into()],
            },
        },
        Bound {
            kind: Kind::NodeInfo,
            field: "groups",
            min: 0,
            max: MAX_GROUPS,
            with: |n| Message::NodeInfo {
                name: "n1".into(),
                groups: (0..n).map(|i| format!("g{i}")).collect(),
            },
        },
        Bound {
            kind: Kind::NodeInfo,
            field: "groups",
            min: 1,
            max: MAX_NODE_NAME_LEN,
            with: |n| Message::NodeInfo {
                name: "n1".into(),
                groups: vec!["web".into(), "g".repeat(n)],
            },
        },
        Bound {
            kind: Kind::SeedOrder,
            field: "image",
            min: 1,
            max: MAX_IMAGE_LEN,
            with: |n| Message::SeedOrder {
                id: 1,
                image: bytes_long(n),
                pin_ttl_secs: 60,
                origin_node: vec![1],
            },
        },
        Bound {
            kind: Kind::SeedOrder,
            field: "origin_node",
            min: 1,
            max: MAX_PEER_ID_LEN,
            with: |n| Message::SeedOrder {
                id: 1,
                image: "app:v1".into(),
                pin_ttl_secs: 60,
                origin_node: vec![0xab; n],
            },
        },
        Bound {
            kind: Kind::SeedStatus,
            field: "detail",
            min: 0,
            max: MAX_TEXT_LEN,
            with: |n| Message::SeedStatus {
                id: 1,
                state: SeedState::Failed,
                bytes_done: 1,
                bytes_total: 2,
                from_origin: 1,
                from_peers: 0,
                detail: bytes_long(n),
            },
        },
        Bound {
            kind: Kind::Error,
            field: "message",
            min: 0,
            max: MAX_TEXT_LEN,
            with: |n| Message::Error {
                code: ErrorCode::Internal,
                message: bytes_long(n),
            },
        },
        Bound {
            kind: Kind::Fetch,
            field: "upstream",
            min: 1,
            max: MAX_NAME_LEN,
            with: |n| Message::Fetch {
                digest: Digest::of(b"blob"),
                size: 3,
                upstream: bytes_long(n),
                repo: "library/debian".into(),
            },
        },
        Bound {
            kind: Kind::Fetch,
            field: "repo",
            min: 1,
            max: MAX_NAME_LEN,
            with: |n| Message::Fetch {
                digest: Digest::of(b"blob"),
                size: 0,
                upstream: "127.0.0.1:5000".into(),
                repo: bytes_long(n),
            },
        },
        Bound {
            kind: Kind::TagRequest,
            field: "upstream",
            min: 1,
            max: MAX_NAME_LEN,
            with: |n| Message::TagRequest {
                upstream: bytes_long(n),
                repo: "library/debian".into(),
                tag: "bookworm".into(),
            },
        },
        Bound {
            kind: Kind::TagRequest,
            field: "repo",
            min: 1,
            max: MAX_NAME_LEN,
            with: |n| Message::TagRequest {
                upstream: "docker.io".into(),
                repo: bytes_long(n),
                tag: "bookworm".into(),
            },
        },
        Bound {
            kind: Kind::TagRequest,
            field: "tag",
            min: 1,
            max: MAX_TAG_LEN,
            with: |n| Message::TagRequest {
                upstream: "docker.io".into(),
                repo: "library/debian".into(),
                tag: bytes_long(n),
            },
        },
        Bound {
            kind: Kind::Tag,
            field: "upstream",
            min: 1,
            max: MAX_NAME_LEN,
            with: |n| Message::Tag {
                upstream: bytes_long(n),
                repo: "library/debian".into(),
                tag: "bookworm".into(),
                resolved: None,
            },
        },
        Bound {
            kind: Kind::Tag,
            field: "repo",
            min: 1,
            max: MAX_NAME_LEN,
            with: |n| Message::Tag {
                upstream: "docker.io".into(),
                repo: bytes_long(n),
                tag: "bookworm".into(),
                resolved: None,
            },
        },
        Bound {
            kind: Kind::Tag,
            field: "tag",
            min: 1,
            max: MAX_TAG_LEN,
            with: |n| Message::Tag {
                upstream: "docker.io".into(),
                repo: "library/debian".into(),
                tag: bytes_long(n),
                resolved: None,
            },
        },
        Bound {
            kind: Kind::Tag,
            field: "media_type",
            min: 1,
            max: MAX_MEDIA_TYPE_LEN,
            with: |n| Message::Tag {
                upstream: "docker.io".into(),
                repo: "library/debian".into(),
                tag: "bookworm".into(),
                resolved: Some(TagResolution {
                    digest: Digest::of(b"manifest"),
                    media_type: bytes_long(n),
                    resolved_at: 1_700_000_000,
                }),
            },
        },
    ];
    for b in bounds {
        let mut lens = vec![b.min, b.min + 1, b.max - 1, b.max, b.max + 1];
        if let Some(under) = b.min.checked_sub(1) {
            lens.push(under);
        }
        for len in lens {
            let m = (b.with)(len);
            assert_eq!(m.kind(), b.kind);
            let what = format!("{:?}.{} of length {len}", b.kind, b.field);
            if (b.min..=b.max).contains(&len) {
                assert_eq!(m.validate(), Ok(()), "{what}");
                assert_eq!(decoded(&frame(&m)), m, "{what}");
                continue;
            }
            let reason = InvalidMessage::Length {
                field: b.field,
                len,
                min: b.min,
                max: b.max,
            };
            assert_eq!(m.validate(), Err(reason.clone()), "{what}");
            let mut out = Vec::new();
            assert_eq!(encode(&m, &mut out), Err(reason.clone()), "{what}");
            assert!(
                out.is_empty(),
                "{what}: a refused message left bytes behind"
            );
            // What a peer could send anyway.
            encode_unchecked(&m, &mut out);
            assert_eq!(
                decode(&out),
                Err(WireError::Invalid {
                    kind: b.kind,
                    reason
                }),
                "{what}"
            );
        }
    }
}
