//! Images and pins: what garbage collection reasons about.
//!
//! An *image record* exists for every manifest the node has served, keyed by the
//! upstream, repository and manifest digest it was served as. It lists the digests the
//! manifest points at (an index's manifests, or an image's config and layers) and when
//! it was first and last used, so that GC can walk from images to the blobs they need
//! and choose the least recently used. A *pin* keeps an image (and all it points at)
//! from being collected: the operator's `shoal pin`, a seed order, a mount.
//!
//! Records are small and written under the store's writer lock, so that a GC that
//! removes an image "if it was not used since I looked" decides on the record as it is.

use std::ops::ControlFlow;

use shoal_protocol::{Digest, RepoName};

use super::content::ContentStore;
use super::engine::{Batch, Engine, Table};
use super::{StoreError, TagRecord, codec};

/// Which image: the upstream and repository it was served from, and its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageKey {
    /// The upstream registry as engines name it (`host[:port]`).
    pub upstream: String,
    /// The repository.
    pub repo: RepoName,
    /// The manifest's digest.
    pub digest: Digest,
}

impl ImageKey {
    /// The store key: upstream, NUL, repository, NUL, the digest's 32 bytes. NUL cannot
    /// occur in a host or a repository name.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\0{}\0", self.upstream, self.repo).into_bytes();
        out.extend_from_slice(self.digest.as_bytes());
        out
    }

    /// The key back from [`ImageKey::encode`]'s bytes (a prefix of a pin key also works:
    /// trailing bytes after the digest are returned).
    pub fn decode(key: &[u8]) -> Option<(ImageKey, &[u8])> {
        let first = key.iter().position(|&b| b == 0)?;
        let second = first + 1 + key[first + 1..].iter().position(|&b| b == 0)?;
        let digest: [u8; 32] = key.get(second + 1..second + 33)?.try_into().ok()?;
        let upstream = std::str::from_utf8(&key[..first]).ok()?.to_owned();
        let repo = RepoName::parse(std::str::from_utf8(&key[first + 1..second]).ok()?).ok()?;
        Some((
            ImageKey {
                upstream,
                repo,
                digest: Digest::from_bytes(digest),
            },
            &key[second + 33..],
        ))
    }
}

impl std::fmt::Display for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.upstream, self.repo, self.digest)
    }
}

/// What the node knows of an image it served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// The manifest's media type.
    pub media_type: String,
    /// What it points at: an index's manifests, or an image's config then layers.
    pub refs: Vec<Digest>,
    /// When it was first served, in seconds since the Unix epoch.
    pub first_seen: u64,
    /// When it was last served (its manifest asked for), same unit.
    pub last_used: u64,
}

/// A pin: why an image must stay, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// When it was set, in seconds since the Unix epoch.
    pub created: u64,
    /// When it lapses (same unit), or `None` for never.
    pub expires: Option<u64>,
}

impl Pin {
    /// Whether the pin still holds at `now`.
    pub fn holds(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// A pin as listed: which image, its name (`operator`, `seed`, `mount:/path`), the pin.
pub type PinEntry = (ImageKey, String, Pin);

/// A tag as listed: upstream, repository, tag, and what it resolved to.
pub type TagEntry = (String, RepoName, String, TagRecord);

/// Image records, pins and tag listings.
pub trait ImageStore {
    /// Records that `key` was served at `now`: creates its record with `media_type` and
    /// `refs`, or moves an existing record's `last_used` forward.
    fn touch_image(
        &self,
        key: &ImageKey,
        media_type: &str,
        refs: &[Digest],
        now: u64,
    ) -> Result<(), StoreError>;

    /// The record of `key`, if any.
    fn image(&self, key: &ImageKey) -> Result<Option<ImageRecord>, StoreError>;

    /// Every image record.
    fn images(&self) -> Result<Vec<(ImageKey, ImageRecord)>, StoreError>;

    /// Removes the record of `key` and the tags of its repository that point at it,
    /// but only if it holds no pin and (when `unused_since` is given) was not used
    /// after that time. Returns whether it was removed. Content is not touched: what
    /// no image needs any more is the collector's to sweep.
    fn remove_image(&self, key: &ImageKey, unused_since: Option<u64>) -> Result<bool, StoreError>;

    /// Sets pin `name` on `key` (replacing a pin of the same name).
    fn set_pin(&self, key: &ImageKey, name: &str, pin: &Pin) -> Result<(), StoreError>;

    /// Removes pin `name` from `key`. Returns whether it was set.
    fn remove_pin(&self, key: &ImageKey, name: &str) -> Result<bool, StoreError>;

    /// Every pin, lapsed ones included.
    fn pins(&self) -> Result<Vec<PinEntry>, StoreError>;

    /// Every tag record.
    fn tags(&self) -> Result<Vec<TagEntry>, StoreError>;
}

/// What [`ContentStore::scan_table`] calls with each key and value.
type RowVisit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

fn pin_key(key: &ImageKey, name: &str) -> Vec<u8> {
    let mut out = key.encode();
    out.push(0);
    out.extend_from_slice(name.as_bytes());
    out
}

impl<E: Engine> ContentStore<E> {
    /// Calls `f` with every key and value of `table`, from one snapshot.
    fn scan_table(&self, table: Table, f: &mut RowVisit<'_>) -> Result<(), StoreError> {
        self.engine().with_snapshot(&mut |snapshot| {
            let mut failed = None;
            snapshot.scan(table, &mut |k, v| match f(k, v) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            })?;
            failed.map_or(Ok(()), Err)
        })
    }

    fn pins_of(&self, key: &ImageKey, now: u64) -> Result<bool, StoreError> {
        let mut prefix = key.encode();
        prefix.push(0);
        for k in self.engine().keys_with_prefix(Table::Pins, &prefix)? {
            if let Some(v) = self.engine().get(Table::Pins, &k)?
                && codec::decode_pin("pin", &v)?.holds(now)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<E: Engine> ImageStore for ContentStore<E> {
    fn touch_image(
        &self,
        key: &ImageKey,
        media_type: &str,
        refs: &[Digest],
        now: u64,
    ) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        let record = match self.image(key)? {
            Some(mut r) => {
                r.last_used = r.last_used.max(now);
                r
            }
            None => ImageRecord {
                media_type: media_type.to_owned(),
                refs: refs.to_vec(),
                first_seen: now,
                last_used: now,
            },
        };
        let mut batch = Batch::default();
        batch.put(Table::Images, &key.encode(), codec::encode_image(&record));
        self.engine().write(batch)
    }

    fn image(&self, key: &ImageKey) -> Result<Option<ImageRecord>, StoreError> {
        self.engine()
            .get(Table::Images, &key.encode())?
            .map(|v| codec::decode_image(&format!("image {key}"), &v))
            .transpose()
    }

    fn images(&self) -> Result<Vec<(ImageKey, ImageRecord)>, StoreError> {
        let mut out = Vec::new();
        self.scan_table(Table::Images, &mut |k, v| {
            let bad = || StoreError::BadRecord {
                key: format!("image {}", String::from_utf8_lossy(k)),
                why: "the key does not decode".into(),
            };
            let (key, rest) = ImageKey::decode(k).ok_or_else(bad)?;
            if !rest.is_empty() {
                return Err(bad());
            }
            let record = codec::decode_image(&format!("image {key}"), v)?;
            out.push((key, record));
            Ok(())
        })?;
        Ok(out)
    }

    fn remove_image(&self, key: &ImageKey, unused_since: Option<u64>) -> Result<bool, StoreError> {
        let _writer = self.lock_writer();
        let Some(record) = self.image(key)? else {
            return Ok(false);
        };
        if unused_since.is_some_and(|t| record.last_used > t)
            || self.pins_of(key, super::unix_now())?
        {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.delete(Table::Images, &key.encode());
        let prefix = format!("{}\0{}\0", key.upstream, key.repo).into_bytes();
        for tag_key in self.engine().keys_with_prefix(Table::Tags, &prefix)? {
            if let Some(v) = self.engine().get(Table::Tags, &tag_key)?
                && codec::decode_tag("tag", &v)?.digest == key.digest
            {
                batch.delete(Table::Tags, &tag_key);
            }
        }
        // Lapsed pins go with the image; a live one stopped us above.
        let mut pin_prefix = key.encode();
        pin_prefix.push(0);
        for k in self.engine().keys_with_prefix(Table::Pins, &pin_prefix)? {
            batch.delete(Table::Pins, &k);
        }
        self.engine().write(batch)?;
        Ok(true)
    }

    fn set_pin(&self, key: &ImageKey, name: &str, pin: &Pin) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        let mut batch = Batch::default();
        batch.put(Table::Pins, &pin_key(key, name), codec::encode_pin(pin));
        self.engine().write(batch)
    }

    fn remove_pin(&self, key: &ImageKey, name: &str) -> Result<bool, StoreError> {
        let _writer = self.lock_writer();
        let k = pin_key(key, name);
        if self.engine().get(Table::Pins, &k)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.delete(Table::Pins, &k);
        self.engine().write(batch)?;
        Ok(true)
    }

    fn pins(&self) -> Result<Vec<PinEntry>, StoreError> {
        let mut out = Vec::new();
        self.scan_table(Table::Pins, &mut |k, v| {
            let bad = || StoreError::BadRecord {
                key: format!("pin {}", String::from_utf8_lossy(k)),
                why: "the key does not decode".into(),
            };
            let (key, rest) = ImageKey::decode(k).ok_or_else(bad)?;
            let name = rest
                .strip_prefix(&[0])
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(bad)?
                .to_owned();
            let pin = codec::decode_pin(&format!("pin {key} {name}"), v)?;
            out.push((key, name, pin));
            Ok(())
        })?;
        Ok(out)
    }

    fn tags(&self) -> Result<Vec<TagEntry>, StoreError> {
        let mut out = Vec::new();
        self.scan_table(Table::Tags, &mut |k, v| {
            let text = String::from_utf8_lossy(k);
            let mut parts = text.splitn(3, '\0');
            let (Some(up), Some(repo), Some(tag)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(StoreError::BadRecord {
                    key: format!("tag {text}"),
                    why: "the key does not decode".into(),
                });
            };
            let repo = RepoName::parse(repo).map_err(|e| StoreError::BadRecord {
                key: format!("tag {text}"),
                why: e.to_string(),
            })?;
            let record = codec::decode_tag(&format!("tag {up}/{repo}:{tag}"), v)?;
            out.push((up.to_owned(), repo, tag.to_owned(), record));
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_keys_round_trip_and_carry_a_suffix() {
        let key = ImageKey {
            upstream: "127.0.0.1:5000".into(),
            repo: RepoName::parse("team/app").unwrap(),
            digest: Digest::of(b"manifest"),
        };
        let mut bytes = key.encode();
        assert_eq!(ImageKey::decode(&bytes), Some((key.clone(), &[][..])));
        bytes.extend_from_slice(b"\0operator");
        assert_eq!(ImageKey::decode(&bytes), Some((key, &b"\0operator"[..])));
        assert_eq!(ImageKey::decode(b"no-nul"), None);
        assert_eq!(ImageKey::decode(b"a\0b\0short"), None);
    }

    #[test]
    fn pins_hold_until_they_lapse() {
        let forever = Pin {
            created: 1,
            expires: None,
        };
        let until = Pin {
            created: 1,
            expires: Some(10),
        };
        assert!(forever.holds(u64::MAX));
        assert!(until.holds(9));
        assert!(!until.holds(10));
    }
}
