//! The inode metadata an entry carries (mode, owner, mtime, xattrs), decoded from its
//! header with PAX records taking precedence, and its canonical encoding.
//!
//! The encoding matters because a regular file's object is shared by hardlinks, so
//! everything on its inode is part of what the object *is*: two files with the same
//! bytes but another owner, mode, mtime or xattr are different objects. The encoding is
//! fixed-width little-endian with length-prefixed xattrs sorted by name, so equal
//! metadata always hashes equal, whatever order the tar listed the xattrs in.

use rustix::fs::{Timespec, Timestamps};

use super::error::Problem;
use super::stream::RawEntry;

/// Permission bits an inode keeps: rwx for all three, setuid, setgid, sticky.
const MODE_BITS: u32 = 0o7777;

/// Xattr namespaces that overlayfs reads as its own instructions (redirects, opaque
/// markers, metacopy). An image could use them to change what a later overlay mount of
/// the tree shows, so they are dropped.
const OVERLAY_PRIVATE: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// A modification time, seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mtime {
    /// Whole seconds (may be negative).
    pub(crate) secs: i64,
    /// Nanoseconds, below 1e9.
    pub(crate) nanos: u32,
}

impl Mtime {
    /// Access and modification time both set to this.
    pub(crate) fn timestamps(self) -> Timestamps {
        let ts = Timespec {
            tv_sec: self.secs,
            tv_nsec: self.nanos.into(),
        };
        Timestamps {
            last_access: ts,
            last_modification: ts,
        }
    }
}

/// What an inode carries besides its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Permission bits including setuid, setgid and sticky.
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u32,
    /// Group.
    pub(crate) gid: u32,
    /// Modification time.
    pub(crate) mtime: Mtime,
    /// Extended attributes sorted by name, one value per name (the last one listed).
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// Decodes an entry's metadata; `dropped` counts overlay-private xattrs left out.
    pub(crate) fn of(entry: &RawEntry, dropped: &mut u64) -> Result<Meta, Problem> {
        let header = &entry.header;
        let mode = header
            .mode()
            .map_err(|_| Problem::BadField { field: "mode" })?
            & MODE_BITS;
        let uid = match entry.pax.uid {
            Some(uid) => uid,
            None => header
                .uid()
                .map_err(|_| Problem::BadField { field: "uid" })?,
        };
        let gid = match entry.pax.gid {
            Some(gid) => gid,
            None => header
                .gid()
                .map_err(|_| Problem::BadField { field: "gid" })?,
        };
        let mtime = match &entry.pax.mtime {
            Some(raw) => parse_pax_time(raw).ok_or(Problem::BadField { field: "PAX mtime" })?,
            None => {
                let secs = header
                    .mtime()
                    .map_err(|_| Problem::BadField { field: "mtime" })?;
                Mtime {
                    secs: i64::try_from(secs).map_err(|_| Problem::BadField { field: "mtime" })?,
                    nanos: 0,
                }
            }
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(entry.pax.xattrs.len());
        for (name, value) in &entry.pax.xattrs {
            if name.is_empty() || name.contains(&0) {
                return Err(Problem::BadXattr {
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            if OVERLAY_PRIVATE.iter().any(|p| name.starts_with(p)) {
                *dropped += 1;
                continue;
            }
            xattrs.retain(|(n, _)| n != name);
            xattrs.push((name.clone(), value.clone()));
        }
        xattrs.sort();
        Ok(Meta {
            mode,
            uid: owner_id(uid)?,
            gid: owner_id(gid)?,
            mtime,
            xattrs,
        })
    }

    /// The canonical encoding of everything on the inode besides its content.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.xattrs.len() * 48);
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.mtime.secs.to_le_bytes());
        out.extend_from_slice(&self.mtime.nanos.to_le_bytes());
        out.extend_from_slice(&(self.xattrs.len() as u64).to_le_bytes());
        for (name, value) in &self.xattrs {
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }
}

/// A uid or gid an inode can hold: `u32::MAX` is `(uid_t)-1`, "leave unchanged".
fn owner_id(id: u64) -> Result<u32, Problem> {
    match u32::try_from(id) {
        Ok(id) if id != u32::MAX => Ok(id),
        _ => Err(Problem::BadOwner { id }),
    }
}

/// Parses a PAX time: `[-]SECONDS[.FRACTION]`, the fraction cut to nanoseconds.
pub(crate) fn parse_pax_time(raw: &[u8]) -> Option<Mtime> {
    let (negative, rest) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw),
    };
    let (whole, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &b""[..]),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(whole).ok()?.parse().ok()?;
    let mut nanos = 0u32;
    for i in 0..9 {
        let d = frac.get(i).map_or(0, |d| u32::from(d - b'0'));
        nanos = nanos * 10 + d;
    }
    Some(match (negative, nanos) {
        (false, _) => Mtime { secs, nanos },
        (true, 0) => Mtime { secs: -secs, nanos },
        (true, _) => Mtime {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        },
    })
}
