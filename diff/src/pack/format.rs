//! The pack's bytes: header and sections, written and read. The layout is specified in
//! the [module docs](super); this file checks every length against the bytes present
//! and the caller's limits before anything is allocated from it.

use shoal_protocol::Digest;
use shoal_protocol::recipe::{ChunkId, MAX_DECODED};

use super::Limits;
use super::error::PackError;

/// The pack format's first four bytes.
pub const MAGIC: [u8; 4] = *b"SHPK";
/// The format version this shoal writes and reads.
pub const VERSION: u8 = 1;
/// Most bases one pack may name.
pub const MAX_BASES: usize = 256;
/// Longest gzip profile a pack carries: a profile's fixed fields and the longest gzip
/// header it may hold ([`gzip::MAX_HEADER`](crate::gzip::MAX_HEADER)), with room to spare.
pub const MAX_PROFILE: usize = 8 << 10;

/// Bytes of the fixed part of the header, before the base list.
const FIXED_LEN: u64 = 4 + 1 + 32 + 32 + 8 + 2;
/// Bytes per base in the header.
const BASE_LEN: u64 = 32 + 32;
/// Bytes per entry of the delta table.
pub(crate) const DELTA_ENTRY_LEN: u64 = 4 + 2 + 4 + 8;

/// What a pack's header says: the target it rebuilds and the bases it needs. A receiver
/// reads it first, to load those bases (and to drop a pack for another target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The target layer's blob digest.
    pub target_layer: Digest,
    /// sha256 of the target's uncompressed tar (its diff_id), as its recipe says.
    pub diff_id: Digest,
    /// Length of the target's uncompressed tar.
    pub tar_size: u64,
    /// The base layers' blob digests, in the order the pack uses them.
    pub bases: Vec<Digest>,
    /// BLAKE3 of each base's recipe in its raw form
    /// ([`recipe::to_raw`](shoal_protocol::recipe::to_raw)), in the same order.
    pub base_recipes: Vec<ChunkId>,
}

impl Header {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(self.target_layer.as_bytes());
        out.extend_from_slice(self.diff_id.as_bytes());
        out.extend_from_slice(&self.tar_size.to_le_bytes());
        // `make` refuses more than MAX_BASES bases.
        out.extend_from_slice(&(self.bases.len() as u16).to_le_bytes());
        for (layer, recipe) in self.bases.iter().zip(&self.base_recipes) {
            out.extend_from_slice(layer.as_bytes());
            out.extend_from_slice(&recipe.0);
        }
    }
}

/// Reads a pack's header, checking only its own fields (magic, version, base count and
/// that the base list is present): enough to see what the pack is for and which bases
/// it needs before applying it.
pub fn read_header(pack: &[u8]) -> Result<Header, PackError> {
    read_header_from(&mut Reader::new(pack))
}

fn read_header_from(r: &mut Reader<'_>) -> Result<Header, PackError> {
    let magic: [u8; 4] = r.array("magic")?;
    if magic != MAGIC {
        return Err(PackError::Magic(magic));
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(PackError::Version(version));
    }
    r.want("header", FIXED_LEN - 5)?;
    let target_layer = Digest::from_bytes(r.array("header")?);
    let diff_id = Digest::from_bytes(r.array("header")?);
    let tar_size = r.u64("header")?;
    let count = usize::from(r.u16("header")?);
    if count > MAX_BASES {
        return Err(PackError::Inconsistent(format!(
            "{count} bases (at most {MAX_BASES})"
        )));
    }
    r.want("base list", count as u64 * BASE_LEN)?;
    let mut bases = Vec::with_capacity(count);
    let mut base_recipes = Vec::with_capacity(count);
    for _ in 0..count {
        bases.push(Digest::from_bytes(r.array("base list")?));
        base_recipes.push(ChunkId(r.array("base list")?));
    }
    Ok(Header {
        target_layer,
        diff_id,
        tar_size,
        bases,
        base_recipes,
    })
}

/// One entry of the delta table: the delta that rebuilds target entry `entry` from
/// entry `base_entry` of base `base` (an index into the header's list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeltaEntry {
    pub entry: u32,
    pub base: u16,
    pub base_entry: u32,
}

/// A pack cut into its sections, every length checked against the bytes present and
/// the limits, nothing decoded yet.
pub(crate) struct Sections<'a> {
    pub header: Header,
    pub profile: Option<&'a [u8]>,
    pub recipe_raw_len: u32,
    pub recipe: &'a [u8],
    pub deltas: Vec<(DeltaEntry, &'a [u8])>,
    pub literal_raw_len: u64,
    pub literal: &'a [u8],
}

/// Cuts `pack` into its sections. Checks: the header as [`read_header`] does and its
/// tar size against `limits`; the profile's flag and length; the recipe's raw length
/// against [`MAX_DECODED`] and `limits`; the delta table's count against the bytes
/// present and its entries' order (strictly increasing target entries); each length
/// against the bytes left; and that the literal stream ends the pack exactly.
pub(crate) fn read_sections<'a>(
    pack: &'a [u8],
    limits: &Limits,
) -> Result<Sections<'a>, PackError> {
    let mut r = Reader::new(pack);
    let header = read_header_from(&mut r)?;
    if header.tar_size > limits.max_tar {
        return Err(PackError::TooLarge {
            what: "target tar",
            len: header.tar_size,
            limit: limits.max_tar,
        });
    }
    let profile = match r.u8("profile flag")? {
        0 => None,
        1 => {
            let len = usize::from(r.u16("profile length")?);
            if len > MAX_PROFILE {
                return Err(PackError::Inconsistent(format!(
                    "a profile of {len} bytes (at most {MAX_PROFILE})"
                )));
            }
            Some(r.take("profile", len as u64)?)
        }
        flag => {
            return Err(PackError::Inconsistent(format!("profile flag {flag}")));
        }
    };
    let recipe_raw_len = r.u32("recipe length")?;
    let recipe_limit = limits.max_recipe.min(MAX_DECODED as u64);
    if u64::from(recipe_raw_len) > recipe_limit {
        return Err(PackError::TooLarge {
            what: "target recipe",
            len: u64::from(recipe_raw_len),
            limit: recipe_limit,
        });
    }
    let recipe_len = r.u32("recipe length")?;
    let recipe = r.take("recipe", u64::from(recipe_len))?;
    let count = r.u32("delta count")?;
    // Checked against the bytes present before the table is allocated.
    r.want("delta table", u64::from(count) * DELTA_ENTRY_LEN)?;
    let mut table: Vec<(DeltaEntry, u64)> = Vec::with_capacity(count as usize);
    for i in 0..count {
        let entry = DeltaEntry {
            entry: r.u32("delta table")?,
            base: r.u16("delta table")?,
            base_entry: r.u32("delta table")?,
        };
        let len = r.u64("delta table")?;
        if let Some((last, _)) = table.last()
            && entry.entry <= last.entry
        {
            return Err(PackError::Inconsistent(format!(
                "delta {i} is for entry {}, after a delta for entry {}",
                entry.entry, last.entry
            )));
        }
        table.push((entry, len));
    }
    let mut deltas = Vec::with_capacity(table.len());
    for (entry, len) in table {
        deltas.push((entry, r.take("delta", len)?));
    }
    let literal_raw_len = r.u64("literal length")?;
    let literal_len = r.u64("literal length")?;
    let literal = r.take("literal stream", literal_len)?;
    let rest = r.rest();
    if !rest.is_empty() {
        return Err(PackError::Inconsistent(format!(
            "{} bytes follow the literal stream",
            rest.len()
        )));
    }
    if (literal_raw_len == 0) != literal.is_empty() {
        return Err(PackError::Inconsistent(format!(
            "a literal stream of {} bytes for {literal_raw_len} bytes of chunks",
            literal.len()
        )));
    }
    Ok(Sections {
        header,
        profile,
        recipe_raw_len,
        recipe,
        deltas,
        literal_raw_len,
        literal,
    })
}

impl DeltaEntry {
    pub(crate) fn encode(&self, len: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.entry.to_le_bytes());
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.base_entry.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
}

/// Reads little-endian fields from the front of a slice, refusing to read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn want(&self, what: &'static str, need: u64) -> Result<(), PackError> {
        if (self.bytes.len() as u64) < need {
            return Err(PackError::Truncated {
                what,
                need,
                have: self.bytes.len() as u64,
            });
        }
        Ok(())
    }

    fn take(&mut self, what: &'static str, n: u64) -> Result<&'a [u8], PackError> {
        self.want(what, n)?;
        // `want` checked that n fits in the slice's length.
        let (head, rest) = self.bytes.split_at(n as usize);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PackError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(what, N as u64)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PackError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PackError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, PackError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, PackError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}
