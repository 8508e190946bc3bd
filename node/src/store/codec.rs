//! The store's record encodings: a version byte, then fixed-width integers and
//! length-prefixed fields. These are internal to one node's disk, not a wire format; the
//! version byte lets a later shoal read or migrate what an earlier one wrote.

use shoal_protocol::{Digest, PieceId};

use super::{BlobRecord, PartialBlob, StoreError, TagRecord, Totals};

const V1: u8 = 1;
/// Partial blobs that may hold pieces beyond their prefix, and know their size.
const V2: u8 = 2;

/// Encodes a complete blob's record.
pub fn encode_blob(r: &BlobRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 2 + 4 + r.pieces.len() * 32 + 64);
    out.push(V1);
    out.extend_from_slice(&r.size.to_le_bytes());
    let media = r.media_type.as_deref().unwrap_or("");
    out.extend_from_slice(&(media.len() as u16).to_le_bytes());
    out.extend_from_slice(media.as_bytes());
    put_pieces(&mut out, &r.pieces);
    out
}

/// Decodes a complete blob's record.
pub fn decode_blob(key: &str, bytes: &[u8]) -> Result<BlobRecord, StoreError> {
    let mut r = Reader::new(key, bytes);
    r.version()?;
    let size = r.u64()?;
    let media_len = r.u16()? as usize;
    let media = r.take(media_len)?;
    let media = std::str::from_utf8(media).map_err(|_| r.bad("media type is not UTF-8"))?;
    let pieces = r.pieces()?;
    r.end()?;
    Ok(BlobRecord {
        size,
        pieces,
        media_type: (!media.is_empty()).then(|| media.to_owned()),
    })
}

/// Encodes a partial blob's record (version 2): the prefix as version 1 had it, then
/// the blob's size if known (a flag byte, then the size), then the pieces held beyond
/// the prefix (a count, then index and id each, in index order).
pub fn encode_partial(p: &PartialBlob) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 4 + p.pieces.len() * 32 + 9 + 4 + p.later.len() * 40);
    out.push(V2);
    out.extend_from_slice(&p.bytes.to_le_bytes());
    put_pieces(&mut out, &p.pieces);
    match p.size {
        Some(size) => {
            out.push(1);
            out.extend_from_slice(&size.to_le_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(p.later.len() as u32).to_le_bytes());
    for (index, id) in &p.later {
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&id.0);
    }
    out
}

/// Decodes a partial blob's record: version 2, or version 1 (a prefix only, written
/// before partials held pieces out of order). Refuses a record that breaks
/// [`PartialBlob::check`].
pub fn decode_partial(key: &str, bytes: &[u8]) -> Result<PartialBlob, StoreError> {
    let mut r = Reader::new(key, bytes);
    let version = r.version_in(&[V1, V2])?;
    let mut p = PartialBlob {
        bytes: r.u64()?,
        pieces: r.pieces()?,
        ..PartialBlob::default()
    };
    if version == V2 {
        p.size = match r.take(1)?[0] {
            0 => None,
            1 => Some(r.u64()?),
            _ => return Err(r.bad("the size's flag is neither 0 nor 1")),
        };
        let n = u32::from_le_bytes(r.array()?) as usize;
        if r.bytes.len() < n.saturating_mul(40) {
            return Err(r.bad("list of later pieces is truncated"));
        }
        for _ in 0..n {
            let index = r.u64()?;
            let id = PieceId(r.array()?);
            if p.later
                .last_key_value()
                .is_some_and(|(&last, _)| last >= index)
            {
                return Err(r.bad("later pieces are not in index order"));
            }
            p.later.insert(index, id);
        }
    }
    r.end()?;
    p.check().map_err(|why| r.bad(why))?;
    Ok(p)
}

/// Encodes a tag record.
pub fn encode_tag(t: &TagRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32 + 8 + 2 + t.media_type.len());
    out.push(V1);
    out.extend_from_slice(t.digest.as_bytes());
    out.extend_from_slice(&t.resolved_at.to_le_bytes());
    out.extend_from_slice(&(t.media_type.len() as u16).to_le_bytes());
    out.extend_from_slice(t.media_type.as_bytes());
    out
}

/// Decodes a tag record.
pub fn decode_tag(key: &str, bytes: &[u8]) -> Result<TagRecord, StoreError> {
    let mut r = Reader::new(key, bytes);
    r.version()?;
    let digest = Digest::from_bytes(r.array()?);
    let resolved_at = r.u64()?;
    let len = r.u16()? as usize;
    let media = r.take(len)?;
    let media_type = std::str::from_utf8(media)
        .map_err(|_| r.bad("media type is not UTF-8"))?
        .to_owned();
    r.end()?;
    Ok(TagRecord {
        digest,
        media_type,
        resolved_at,
    })
}

/// Encodes an image record.
pub fn encode_image(r: &super::images::ImageRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 + 2 + r.media_type.len() + 4 + r.refs.len() * 32);
    out.push(V1);
    out.extend_from_slice(&r.first_seen.to_le_bytes());
    out.extend_from_slice(&r.last_used.to_le_bytes());
    out.extend_from_slice(&(r.media_type.len() as u16).to_le_bytes());
    out.extend_from_slice(r.media_type.as_bytes());
    out.extend_from_slice(&(r.refs.len() as u32).to_le_bytes());
    for d in &r.refs {
        out.extend_from_slice(d.as_bytes());
    }
    out
}

/// Decodes an image record.
pub fn decode_image(key: &str, bytes: &[u8]) -> Result<super::images::ImageRecord, StoreError> {
    let mut r = Reader::new(key, bytes);
    r.version()?;
    let first_seen = r.u64()?;
    let last_used = r.u64()?;
    let len = r.u16()? as usize;
    let media = r.take(len)?;
    let media_type = std::str::from_utf8(media)
        .map_err(|_| r.bad("media type is not UTF-8"))?
        .to_owned();
    // Same layout as a piece list: a count, then 32-byte ids.
    let refs = r
        .pieces()?
        .into_iter()
        .map(|p| Digest::from_bytes(p.0))
        .collect();
    r.end()?;
    Ok(super::images::ImageRecord {
        media_type,
        refs,
        first_seen,
        last_used,
    })
}

/// Encodes a pin: when it was set and when it lapses (0 for never).
pub fn encode_pin(p: &super::images::Pin) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(V1);
    out.extend_from_slice(&p.created.to_le_bytes());
    out.extend_from_slice(&p.expires.unwrap_or(0).to_le_bytes());
    out
}

/// Decodes a pin.
pub fn decode_pin(key: &str, bytes: &[u8]) -> Result<super::images::Pin, StoreError> {
    let mut r = Reader::new(key, bytes);
    r.version()?;
    let created = r.u64()?;
    let expires = r.u64()?;
    r.end()?;
    Ok(super::images::Pin {
        created,
        expires: (expires != 0).then_some(expires),
    })
}

/// The totals, in the order they are encoded. A record written by an older shoal has
/// fewer values (the rest start at zero); one with more is refused.
fn totals_fields(t: &mut Totals) -> [&mut u64; 10] {
    [
        &mut t.blobs,
        &mut t.blob_bytes,
        &mut t.pieces,
        &mut t.piece_bytes,
        &mut t.partial_blobs,
        &mut t.chunks,
        &mut t.chunk_bytes,
        &mut t.recipes,
        &mut t.recipe_tar_bytes,
        &mut t.partial_recipes,
    ]
}

/// Encodes the store's totals.
pub fn encode_totals(t: &Totals) -> Vec<u8> {
    let mut copy = *t;
    let fields = totals_fields(&mut copy);
    let mut out = vec![V1, fields.len() as u8];
    for v in fields {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes the store's totals.
pub fn decode_totals(bytes: &[u8]) -> Result<Totals, StoreError> {
    let mut r = Reader::new("totals", bytes);
    r.version()?;
    let n = r.take(1)?[0] as usize;
    let mut t = Totals::default();
    let fields = totals_fields(&mut t);
    if n > fields.len() {
        return Err(r.bad("totals from a newer shoal"));
    }
    for field in fields.into_iter().take(n) {
        *field = r.u64()?;
    }
    r.end()?;
    Ok(t)
}

/// Encodes a stored recipe: version, tar size, then the recipe's wire form.
pub fn encode_recipe_record(r: &super::recipes::RecipeRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + r.encoded.len());
    out.push(V1);
    out.extend_from_slice(&r.tar_size.to_le_bytes());
    out.extend_from_slice(&r.encoded);
    out
}

/// Decodes a stored recipe.
pub fn decode_recipe_record(
    key: &str,
    bytes: &[u8],
) -> Result<super::recipes::RecipeRecord, StoreError> {
    let mut r = Reader::new(key, bytes);
    r.version()?;
    let tar_size = r.u64()?;
    let encoded = r.take(r.bytes.len())?.to_vec();
    Ok(super::recipes::RecipeRecord { tar_size, encoded })
}

/// Encodes a piece's reference count and size.
pub fn encode_piece_ref(count: u64, size: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&count.to_le_bytes());
    out[8..].copy_from_slice(&size.to_le_bytes());
    out
}

/// Decodes a piece's reference count and size.
pub fn decode_piece_ref(key: &str, bytes: &[u8]) -> Result<(u64, u64), StoreError> {
    let mut r = Reader::new(key, bytes);
    let count = r.u64()?;
    let size = r.u64()?;
    r.end()?;
    Ok((count, size))
}

fn put_pieces(out: &mut Vec<u8>, pieces: &[PieceId]) {
    out.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
    for p in pieces {
        out.extend_from_slice(&p.0);
    }
}

struct Reader<'a> {
    key: &'a str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(key: &'a str, bytes: &'a [u8]) -> Self {
        Reader { key, bytes }
    }

    fn bad(&self, why: &str) -> StoreError {
        StoreError::BadRecord {
            key: self.key.to_owned(),
            why: why.to_owned(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.bad("record is truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn version(&mut self) -> Result<(), StoreError> {
        self.version_in(&[V1]).map(drop)
    }

    /// Reads the version byte, which must be one of `known`.
    fn version_in(&mut self, known: &[u8]) -> Result<u8, StoreError> {
        let v = self.take(1)?[0];
        if known.contains(&v) {
            Ok(v)
        } else {
            Err(self.bad(&format!(
                "record version {v} is newer than this shoal knows"
            )))
        }
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn pieces(&mut self) -> Result<Vec<PieceId>, StoreError> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        if self.bytes.len() < n.saturating_mul(32) {
            return Err(self.bad("piece list is truncated"));
        }
        (0..n).map(|_| Ok(PieceId(self.array()?))).collect()
    }

    fn end(&self) -> Result<(), StoreError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.bad("record has trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shoal_protocol::PIECE_SIZE;

    proptest! {
        #[test]
        fn blob_records_round_trip(size in any::<u64>(), n in 0usize..20, media in proptest::option::of("[a-z./+]{1,40}")) {
            let r = BlobRecord {
                size,
                pieces: (0..n).map(|i| PieceId::of(&[i as u8])).collect(),
                media_type: media,
            };
            prop_assert_eq!(decode_blob("k", &encode_blob(&r)).unwrap(), r);
        }

        /// Partials of version 2 (pieces beyond the prefix, and a size) round trip.
        #[test]
        fn partial_records_round_trip(
            size in 0u64..(40 * PIECE_SIZE),
            prefix in any::<proptest::sample::Index>(),
            later in proptest::collection::vec(any::<bool>(), 0..40),
        ) {
            let p = sparse_partial(size, prefix, &later);
            prop_assert_eq!(decode_partial("k", &encode_partial(&p)).unwrap(), p);
        }

        /// Partials written as version 1 (a prefix only) still decode, as a partial of
        /// unknown size with nothing beyond its prefix; written again they are version 2.
        #[test]
        fn version_1_partials_still_decode(n in 0u64..20, last in 1u64..=PIECE_SIZE) {
            let p = PartialBlob {
                bytes: n.saturating_sub(1) * PIECE_SIZE + if n == 0 { 0 } else { last },
                pieces: (0..n).map(|i| PieceId::of(&i.to_le_bytes())).collect(),
                ..PartialBlob::default()
            };
            let v1 = encode_partial_v1(&p);
            prop_assert_eq!(decode_partial("k", &v1).unwrap(), p.clone());
            let v2 = encode_partial(&p);
            prop_assert_eq!(v2[0], V2);
            prop_assert_eq!(decode_partial("k", &v2).unwrap(), p);
        }

        #[test]
        fn decoders_refuse_garbage_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for version in [V1, V2] {
                let _ = decode_partial("k", &[&[version][..], &bytes].concat());
            }
            let _ = decode_blob("k", &bytes);
            let _ = decode_partial("k", &bytes);
            let _ = decode_tag("k", &bytes);
            let _ = decode_totals(&bytes);
            let _ = decode_piece_ref("k", &bytes);
            let _ = decode_image("k", &bytes);
            let _ = decode_pin("k", &bytes);
        }

        #[test]
        fn image_records_round_trip(first in any::<u64>(), last in any::<u64>(), n in 0usize..20, media in "[a-z./+]{0,40}", expires in proptest::option::of(1u64..)) {
            let r = super::super::images::ImageRecord {
                media_type: media,
                refs: (0..n).map(|i| Digest::of(&[i as u8])).collect(),
                first_seen: first,
                last_used: last,
            };
            prop_assert_eq!(decode_image("k", &encode_image(&r)).unwrap(), r);
            let p = super::super::images::Pin { created: first, expires };
            prop_assert_eq!(decode_pin("k", &encode_pin(&p)).unwrap(), p);
        }
    }

    /// A partial of a `size`-byte blob holding a prefix of `prefix` (scaled to the piece
    /// count) pieces and, beyond it, the pieces `later` marks.
    fn sparse_partial(size: u64, prefix: proptest::sample::Index, later: &[bool]) -> PartialBlob {
        let layout = shoal_protocol::PieceLayout::new(size);
        let n = prefix.index(layout.count() as usize + 1) as u64;
        let id = |i: u64| PieceId::of(&i.to_le_bytes());
        PartialBlob {
            bytes: layout.range(n).start,
            pieces: (0..n).map(id).collect(),
            later: (n + 1..layout.count())
                .zip(later)
                .filter(|(_, held)| **held)
                .map(|(i, _)| (i, id(i)))
                .collect(),
            size: Some(size),
        }
    }

    /// A partial as shoal wrote it before version 2.
    fn encode_partial_v1(p: &PartialBlob) -> Vec<u8> {
        let mut out = vec![V1];
        out.extend_from_slice(&p.bytes.to_le_bytes());
        put_pieces(&mut out, &p.pieces);
        out
    }

    #[test]
    fn partials_that_break_the_invariants_are_refused() {
        let mut p = PartialBlob {
            bytes: PIECE_SIZE,
            pieces: vec![PieceId::of(b"a")],
            later: [(2, PieceId::of(b"c"))].into(),
            size: Some(3 * PIECE_SIZE),
        };
        assert_eq!(decode_partial("k", &encode_partial(&p)).unwrap(), p);
        // The piece right after the prefix would have joined it.
        p.later = [(1, PieceId::of(b"b"))].into();
        let err = decode_partial("k", &encode_partial(&p)).unwrap_err();
        assert!(matches!(err, StoreError::BadRecord { .. }), "{err}");
        // Pieces beyond the prefix only with a size.
        p.later = [(2, PieceId::of(b"c"))].into();
        p.size = None;
        assert!(decode_partial("k", &encode_partial(&p)).is_err());
        // Later pieces out of order on disk.
        p.size = Some(9 * PIECE_SIZE);
        p.later = [(2, PieceId::of(b"c")), (5, PieceId::of(b"f"))].into();
        let mut bytes = encode_partial(&p);
        let at = bytes.len() - 80;
        let (first, second) = bytes[at..].split_at_mut(40);
        first.swap_with_slice(second);
        assert!(decode_partial("k", &bytes).is_err());
    }

    #[test]
    fn other_records_round_trip() {
        let p = PartialBlob {
            bytes: 5,
            pieces: vec![PieceId::of(b"a")],
            ..PartialBlob::default()
        };
        assert_eq!(decode_partial("k", &encode_partial(&p)).unwrap(), p);
        let t = TagRecord {
            digest: Digest::of(b"m"),
            media_type: "x/y".into(),
            resolved_at: 9,
        };
        assert_eq!(decode_tag("k", &encode_tag(&t)).unwrap(), t);
        let tot = Totals {
            blobs: 1,
            blob_bytes: 2,
            pieces: 3,
            piece_bytes: 4,
            partial_blobs: 5,
            chunks: 6,
            chunk_bytes: 7,
            recipes: 8,
            recipe_tar_bytes: 9,
            partial_recipes: 10,
        };
        assert_eq!(decode_totals(&encode_totals(&tot)).unwrap(), tot);
        assert_eq!(
            decode_piece_ref("k", &encode_piece_ref(7, 8)).unwrap(),
            (7, 8)
        );
    }
}
