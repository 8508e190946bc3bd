//! Building a layer's recipe from its uncompressed tar, pushed in slices of any size.
//!
//! [`RecipeBuilder`] is a push parser: the caller hands it the tar as it comes out of
//! the decompressor, and it hands back each content chunk as soon as FastCDC cuts it,
//! so the node can store chunks while the layer is still arriving. What it holds at any
//! time is bounded whatever the tar holds: one chunking window of content (at most
//! [`CHUNK_MAX`](shoal_protocol::recipe::CHUNK_MAX) bytes), the header blocks of the
//! current entry (at most [`Limits::max_header`]), the trailer (at most
//! [`Limits::max_trailer`]) and the recipe itself.
//!
//! # How the tar is read
//!
//! As Go's `archive/tar` reads it (what containerd, dockerd and podman apply layers
//! with), where readers differ:
//! - Each entry is its header run, then content, then padding to the next block. The
//!   header run is the entry's own header block preceded by any PAX `x` records and
//!   GNU `L`/`K` long-name records (and followed by old-GNU sparse extension blocks).
//!   Checksums are checked on every header block (unsigned or signed byte sums).
//! - Content size: the PAX `size` record if there is one, else the size field (octal,
//!   or GNU base-256). Header-only types (hard link, symlink, char and block devices,
//!   directory, FIFO) have no content whatever their size says; so has a type-NUL entry
//!   whose path ends in `/` (Go reads it as a directory). Regular files and every
//!   unknown type have `size` bytes.
//! - Path: the ustar name (with its prefix for ustar and star headers), replaced by a
//!   PAX `path`, replaced by a GNU long name, replaced by `GNU.sparse.name` for a PAX
//!   sparse file. Non-UTF-8 bytes become U+FFFD (the recipe's path is a `String`).
//!   When two PAX `x` headers precede an entry, the second replaces the first.
//! - A PAX global header (`g`) is an entry of its own, as Go and the `tar` crate return
//!   it: kind `Other(b'g')`, its records in its header run, no content. Its records are
//!   parsed (a bad one is an error) but applied to no other entry: Go and the `tar`
//!   crate ignore them, and containerd skips `g` entries, so GNU tar's reading (which
//!   applies them) would make the recipe disagree with what engines unpack.
//! - The archive ends at a zero block where a header is due; from there on everything
//!   is the trailer, kept verbatim. A zero block followed by a non-zero block is an
//!   error (Go refuses it; GNU tar reads on). A tar that ends right after an entry's
//!   padding, with no end blocks at all, is accepted with an empty trailer.
//! - Other header fields (mode, owner, times, link targets, xattrs) are not checked:
//!   they stay in the verbatim header bytes for whoever reads the recipe.

use shoal_protocol::digest::DigestHasher;
use shoal_protocol::recipe::{
    BLOCK, ChunkId, ChunkRef, Entry, EntryKind, MAX_ENTRIES, MAX_HEADER, MAX_PATH, Padding, Recipe,
};

use crate::chunker::Chunker;
use crate::error::{Part, TarError};
use crate::header::{self, BLOCK_LEN, Fault, Header, Pax};

/// Default for [`Limits::max_trailer`]: bytes kept after the end of the archive. GNU
/// tar pads to its 10 KiB record size; anything near this limit is not a layer.
pub const MAX_TRAILER: usize = 4 << 20;

/// Limits on what one tar may hold. The defaults are the recipe format's own limits,
/// and larger values are lowered to them, so a built recipe always validates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest header run of one entry, PAX and GNU records included (default
    /// [`MAX_HEADER`]). The first block of a run is always read.
    pub max_header: usize,
    /// Longest path of an entry, in bytes of UTF-8 (default [`MAX_PATH`]).
    pub max_path: usize,
    /// Most entries in the tar (default [`MAX_ENTRIES`]).
    pub max_entries: usize,
    /// Most bytes from the end-of-archive blocks on (default [`MAX_TRAILER`]).
    pub max_trailer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: MAX_HEADER,
            max_path: MAX_PATH,
            max_entries: MAX_ENTRIES,
            max_trailer: MAX_TRAILER,
        }
    }
}

/// Builds a recipe from a tar pushed in slices. See the [module docs](self) for how
/// the tar is read.
pub struct RecipeBuilder {
    limits: Limits,
    diff_id: DigestHasher,
    /// Bytes taken so far.
    offset: u64,
    entries: Vec<Entry>,
    state: State,
    /// The last bytes pushed, to tell a lying size from a tar cut short.
    tail: Tail,
    /// The chunking buffer, kept between files.
    spare: Vec<u8>,
    /// The first error; every later call returns it again.
    failed: Option<TarError>,
}

enum State {
    /// Reading an entry's header run.
    Header(Run),
    /// Reading an entry's content and padding.
    Body(Box<Body>),
    /// After the end of the archive.
    Trailer { start: u64, bytes: Vec<u8> },
}

/// The header run of the entry being read.
struct Run {
    /// Offset of its first block.
    start: u64,
    /// Its blocks so far.
    bytes: Vec<u8>,
    /// Length `bytes` must reach for `step` to be taken.
    want: usize,
    step: Step,
    /// PAX records of the last `x` header.
    pax: Pax,
    /// The last GNU long name.
    long_name: Option<Vec<u8>>,
}

/// What the bytes up to [`Run::want`] complete.
enum Step {
    /// A header block.
    Header,
    /// The (padded) records of a special header whose block starts at `at`.
    Records { head: Header, at: usize },
    /// An old GNU sparse extension block of the entry whose header is `main`.
    SparseExtension { main: Header },
}

/// The entry whose content and padding are being read.
struct Body {
    start: u64,
    header: Vec<u8>,
    path: String,
    kind: EntryKind,
    size: u64,
    chunker: Chunker,
    /// Padding received so far, out of `pad_len`.
    pad: Vec<u8>,
    pad_len: usize,
}

impl Default for RecipeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecipeBuilder {
    /// A builder with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A builder with these limits (lowered to the recipe format's where larger).
    pub fn with_limits(limits: Limits) -> Self {
        let defaults = Limits::default();
        RecipeBuilder {
            limits: Limits {
                max_header: limits.max_header.min(defaults.max_header),
                max_path: limits.max_path.min(defaults.max_path),
                max_entries: limits.max_entries.min(defaults.max_entries),
                max_trailer: limits.max_trailer,
            },
            diff_id: DigestHasher::new(),
            offset: 0,
            entries: Vec::new(),
            state: State::Header(Run::new(0)),
            tail: Tail::default(),
            spare: Vec::new(),
            failed: None,
        }
    }

    /// Takes the next bytes of the tar, calling `sink` with each content chunk as soon
    /// as it is cut. After an error the builder is spent: every later call returns the
    /// same error.
    pub fn push(
        &mut self,
        data: &[u8],
        sink: &mut dyn FnMut(ChunkRef, &[u8]),
    ) -> Result<(), TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.diff_id.update(data);
        self.tail.update(data);
        let mut data = data;
        while !data.is_empty() {
            match self.step(data, sink) {
                Ok(n) => data = &data[n..],
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Ends the tar and returns its recipe.
    pub fn finish(self) -> Result<Recipe, TarError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let entry = self.entries.len();
        let trailer = match self.state {
            State::Header(run) if run.bytes.is_empty() => Vec::new(),
            State::Header(run) => {
                return Err(
                    if matches!(run.step, Step::Header) && run.bytes.len() + BLOCK_LEN == run.want {
                        TarError::MissingHeader {
                            entry,
                            offset: run.start,
                        }
                    } else {
                        TarError::TruncatedHeader {
                            entry,
                            offset: run.start,
                        }
                    },
                );
            }
            State::Body(body) => {
                let content_start = body.start + body.header.len() as u64;
                return Err(if !body.chunker.is_done() {
                    if self.tail.ends_archive_after(content_start, self.offset) {
                        TarError::SizePastEnd {
                            entry,
                            path: body.path,
                            offset: body.start,
                            size: body.size,
                            end: self.offset,
                        }
                    } else {
                        TarError::Truncated {
                            entry,
                            path: body.path,
                            offset: body.start,
                            part: Part::Content,
                            missing: body.chunker.unread(),
                        }
                    }
                } else {
                    TarError::Truncated {
                        entry,
                        path: body.path,
                        offset: body.start,
                        part: Part::Padding,
                        missing: (body.pad_len - body.pad.len()) as u64,
                    }
                });
            }
            State::Trailer { bytes, .. } => bytes,
        };
        Ok(Recipe {
            diff_id: self.diff_id.finish(),
            tar_size: self.offset,
            entries: self.entries,
            trailer,
        })
    }

    /// Takes bytes from the front of `data` (at least one) and acts on them.
    fn step(
        &mut self,
        data: &[u8],
        sink: &mut dyn FnMut(ChunkRef, &[u8]),
    ) -> Result<usize, TarError> {
        match &mut self.state {
            State::Header(run) => {
                let n = (run.want - run.bytes.len()).min(data.len());
                run.bytes.reserve_exact(run.want - run.bytes.len());
                run.bytes.extend_from_slice(&data[..n]);
                self.offset += n as u64;
                if run.bytes.len() == run.want {
                    self.header_ready()?;
                }
                Ok(n)
            }
            State::Body(body) => {
                let n = if body.chunker.is_done() {
                    let n = (body.pad_len - body.pad.len()).min(data.len());
                    body.pad.extend_from_slice(&data[..n]);
                    n
                } else {
                    body.chunker.feed(data, sink)
                };
                self.offset += n as u64;
                if body.chunker.is_done() && body.pad.len() == body.pad_len {
                    self.end_body();
                }
                Ok(n)
            }
            State::Trailer { start, bytes } => {
                if bytes.len().saturating_add(data.len()) > self.limits.max_trailer {
                    return Err(TarError::TrailerTooLarge {
                        offset: *start,
                        limit: self.limits.max_trailer,
                    });
                }
                let before = bytes.len();
                bytes.extend_from_slice(data);
                self.offset += data.len() as u64;
                let second = BLOCK_LEN..2 * BLOCK_LEN;
                if before < second.end
                    && bytes.len() >= second.end
                    && !header::is_zero(&bytes[second])
                {
                    return Err(TarError::LoneZeroBlock { offset: *start });
                }
                Ok(data.len())
            }
        }
    }

    /// Acts on a header run that has reached [`Run::want`] bytes.
    fn header_ready(&mut self) -> Result<(), TarError> {
        let entry = self.entries.len();
        let State::Header(run) = &mut self.state else {
            return Ok(());
        };
        let at = run.want - BLOCK_LEN;
        match std::mem::replace(&mut run.step, Step::Header) {
            Step::Header => {
                let mut block = [0u8; BLOCK_LEN];
                block.copy_from_slice(&run.bytes[at..]);
                if header::is_zero(&block) {
                    if at > 0 {
                        return Err(TarError::MissingHeader {
                            entry,
                            offset: run.start,
                        });
                    }
                    if BLOCK_LEN > self.limits.max_trailer {
                        return Err(TarError::TrailerTooLarge {
                            offset: run.start,
                            limit: self.limits.max_trailer,
                        });
                    }
                    self.state = State::Trailer {
                        start: run.start,
                        bytes: std::mem::take(&mut run.bytes),
                    };
                    return Ok(());
                }
                let offset = run.start + at as u64;
                let head = header::parse(&block).map_err(|fault| match fault {
                    Fault::Checksum { stored, computed } => TarError::BadChecksum {
                        entry,
                        offset,
                        stored,
                        computed,
                    },
                    Fault::Size => TarError::BadSize { entry, offset },
                })?;
                if matches!(head.typeflag, b'x' | b'g' | b'L' | b'K') {
                    let padded = head.size.div_ceil(BLOCK) * BLOCK;
                    let want = self.grow(padded)?;
                    if let State::Header(run) = &mut self.state {
                        run.want = want;
                        run.step = Step::Records { head, at };
                        if padded == 0 {
                            return self.header_ready();
                        }
                    }
                    Ok(())
                } else if head.sparse_extended {
                    self.extend_run(Step::SparseExtension { main: head })
                } else {
                    self.start_body(head)
                }
            }
            Step::Records { head, at } => {
                let offset = run.start + at as u64;
                // The records lie inside the run: `head.size` was checked against
                // `want` when the step was set.
                let records = &run.bytes[at + BLOCK_LEN..][..head.size as usize];
                let bad_pax = |reason| TarError::BadPax {
                    entry,
                    offset,
                    reason,
                };
                match head.typeflag {
                    b'x' => run.pax = header::parse_pax(records).map_err(bad_pax)?,
                    b'L' => run.long_name = Some(header::c_string(records).to_vec()),
                    b'g' => {
                        let pax = header::parse_pax(records).map_err(bad_pax)?;
                        let name = pax.path.unwrap_or(head.name);
                        let path = self.path_of(&name, entry)?;
                        self.start_entry()?;
                        let State::Header(run) = &mut self.state else {
                            return Ok(());
                        };
                        let header = std::mem::take(&mut run.bytes);
                        self.entries.push(Entry {
                            header,
                            path,
                            kind: EntryKind::Other(b'g'),
                            size: 0,
                            content: None,
                            chunks: Vec::new(),
                            padding: Padding::Zeros,
                        });
                        self.state = State::Header(Run::new(self.offset));
                        return Ok(());
                    }
                    _ => {} // `K`: the link target, which the recipe does not name.
                }
                self.extend_run(Step::Header)
            }
            Step::SparseExtension { main } => {
                if header::sparse_block_extended(&run.bytes[at..]) {
                    self.extend_run(Step::SparseExtension { main })
                } else {
                    self.start_body(main)
                }
            }
        }
    }

    /// Checks that the header run may grow by `more` bytes, and returns its new length.
    fn grow(&self, more: u64) -> Result<usize, TarError> {
        let State::Header(run) = &self.state else {
            return Ok(0);
        };
        let len = (run.bytes.len() as u64).saturating_add(more);
        if len > self.limits.max_header as u64 {
            return Err(TarError::HeaderTooLarge {
                entry: self.entries.len(),
                offset: run.start,
                len,
                limit: self.limits.max_header,
            });
        }
        // At most `max_header`, which is a usize.
        Ok(len as usize)
    }

    /// Reads one more block into the header run, for `step`.
    fn extend_run(&mut self, step: Step) -> Result<(), TarError> {
        let want = self.grow(BLOCK)?;
        if let State::Header(run) = &mut self.state {
            run.want = want;
            run.step = step;
        }
        Ok(())
    }

    /// Checks that one more entry is allowed.
    fn start_entry(&self) -> Result<(), TarError> {
        if self.entries.len() >= self.limits.max_entries {
            let offset = match &self.state {
                State::Header(run) => run.start,
                _ => self.offset,
            };
            return Err(TarError::TooManyEntries {
                offset,
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// The path a reader sees for these name bytes, within the limit.
    fn path_of(&self, name: &[u8], entry: usize) -> Result<String, TarError> {
        let path = String::from_utf8_lossy(name).into_owned();
        if path.len() > self.limits.max_path {
            let offset = match &self.state {
                State::Header(run) => run.start,
                _ => self.offset,
            };
            return Err(TarError::PathTooLong {
                entry,
                offset,
                len: path.len(),
                limit: self.limits.max_path,
            });
        }
        Ok(path)
    }

    /// The header run is complete with `head` as the entry's own header: start reading
    /// its content.
    fn start_body(&mut self, head: Header) -> Result<(), TarError> {
        let entry = self.entries.len();
        let State::Header(run) = &mut self.state else {
            return Ok(());
        };
        let name = run
            .pax
            .sparse_name
            .take()
            .or_else(|| run.long_name.take())
            .or_else(|| run.pax.path.take())
            .unwrap_or(head.name);
        let size = run.pax.size;
        let path = self.path_of(&name, entry)?;
        self.start_entry()?;
        let kind = kind_of(head.typeflag, &path);
        let size = if has_content(kind) {
            size.unwrap_or(head.size)
        } else {
            0
        };
        let State::Header(run) = &mut self.state else {
            return Ok(());
        };
        self.state = State::Body(Box::new(Body {
            start: run.start,
            header: std::mem::take(&mut run.bytes),
            path,
            kind,
            size,
            chunker: Chunker::new(size, std::mem::take(&mut self.spare)),
            pad: Vec::new(),
            // Less than a block.
            pad_len: Entry::padding_len(size) as usize,
        }));
        if size == 0 {
            self.end_body();
        }
        Ok(())
    }

    /// The entry's content and padding are complete: add it to the recipe.
    fn end_body(&mut self) {
        let next = State::Header(Run::new(self.offset));
        let State::Body(body) = std::mem::replace(&mut self.state, next) else {
            return;
        };
        let Body {
            header,
            path,
            kind,
            size,
            chunker,
            pad,
            ..
        } = *body;
        let (content, chunks, spare) = chunker.finish();
        self.spare = spare;
        self.entries.push(Entry {
            header,
            path,
            kind,
            size,
            content,
            chunks,
            padding: if header::is_zero(&pad) {
                Padding::Zeros
            } else {
                Padding::Raw(pad)
            },
        });
    }
}

impl Run {
    fn new(start: u64) -> Self {
        Run {
            start,
            bytes: Vec::with_capacity(BLOCK_LEN),
            want: BLOCK_LEN,
            step: Step::Header,
            pax: Pax::default(),
            long_name: None,
        }
    }
}

/// An entry's kind from its type flag (and, for type NUL, its path).
fn kind_of(typeflag: u8, path: &str) -> EntryKind {
    match typeflag {
        b'0' | b'7' => EntryKind::File,
        0 if path.ends_with('/') => EntryKind::Dir,
        0 => EntryKind::File,
        b'1' => EntryKind::Hardlink,
        b'2' => EntryKind::Symlink,
        b'3' => EntryKind::Char,
        b'4' => EntryKind::Block,
        b'5' => EntryKind::Dir,
        b'6' => EntryKind::Fifo,
        other => EntryKind::Other(other),
    }
}

/// Whether entries of this kind carry content (as Go's `isHeaderOnlyType` says).
fn has_content(kind: EntryKind) -> bool {
    matches!(kind, EntryKind::File | EntryKind::Other(_))
}

/// The last two blocks' worth of bytes pushed, in a ring (in no particular order:
/// all that is asked of them is whether they are all zeros).
struct Tail {
    ring: [u8; 2 * BLOCK_LEN],
    /// Where the next byte goes.
    next: usize,
    /// Bytes of the ring that hold pushed bytes.
    filled: usize,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            ring: [0; 2 * BLOCK_LEN],
            next: 0,
            filled: 0,
        }
    }
}

impl Tail {
    fn update(&mut self, data: &[u8]) {
        let cap = self.ring.len();
        let data = &data[data.len().saturating_sub(cap)..];
        let first = data.len().min(cap - self.next);
        self.ring[self.next..self.next + first].copy_from_slice(&data[..first]);
        self.ring[..data.len() - first].copy_from_slice(&data[first..]);
        self.next = (self.next + data.len()) % cap;
        self.filled = (self.filled + data.len()).min(cap);
    }

    /// Whether a tar of `end` bytes ends in two zero blocks, on a block boundary, that
    /// start at or after `from`.
    fn ends_archive_after(&self, from: u64, end: u64) -> bool {
        self.filled == self.ring.len()
            && end.is_multiple_of(BLOCK)
            && end >= from.saturating_add(2 * BLOCK)
            && header::is_zero(&self.ring)
    }
}

/// Builds the recipe of a whole tar in memory (a [`RecipeBuilder`] fed one slice).
pub fn build(tar: &[u8], sink: &mut dyn FnMut(ChunkRef, &[u8])) -> Result<Recipe, TarError> {
    let mut builder = RecipeBuilder::new();
    builder.push(tar, sink)?;
    builder.finish()
}

/// The chunks FastCDC cuts from a whole file's content, with the content's BLAKE3:
/// what a recipe entry holds for that content.
pub fn chunk_content(content: &[u8]) -> (Option<ChunkId>, Vec<ChunkRef>) {
    let mut chunker = Chunker::new(content.len() as u64, Vec::new());
    chunker.feed(content, &mut |_, _| {});
    let (id, chunks, _) = chunker.finish();
    (id, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::recipe::CHUNK_MAX;

    impl RecipeBuilder {
        /// Bytes of the tar held apart from the recipe: the chunking window and the
        /// header run or trailer.
        fn held(&self) -> usize {
            self.spare.capacity()
                + match &self.state {
                    State::Header(run) => run.bytes.capacity(),
                    State::Body(body) => body.chunker.held() + body.header.capacity(),
                    State::Trailer { bytes, .. } => bytes.capacity(),
                }
        }
    }

    #[test]
    fn a_builder_can_move_to_a_blocking_thread() {
        fn send<T: Send + 'static>() {}
        send::<RecipeBuilder>();
    }

    #[test]
    fn memory_stays_within_one_window_and_the_header_run() {
        let mut header = [0u8; 512];
        header[..4].copy_from_slice(b"file");
        header[100..108].copy_from_slice(b"0000644\0");
        let size = 5 << 20;
        header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        header[156] = b'0';
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut tar = header.to_vec();
        let mut content = vec![0u8; size];
        blake3::Hasher::new().finalize_xof().fill(&mut content);
        tar.extend(&content);
        tar.extend([0; 1024]);
        for slice in [1000, 100_003, 300_000, 1 << 20] {
            let mut b = RecipeBuilder::new();
            let mut most = 0;
            for part in tar.chunks(slice) {
                b.push(part, &mut |_, _| {}).unwrap();
                most = most.max(b.held());
            }
            assert!(
                most <= CHUNK_MAX as usize + 1024,
                "held {most} bytes in slices of {slice}"
            );
            assert_eq!(b.finish().unwrap().entries[0].size, size as u64);
        }
    }
}
