//! klauspost/compress 1.15.12's deflate encoder, and pgzip 1.2.5's framing of it —
//! what Debian 12's podman, buildah and skopeo (containers/image 5.23) write layers
//! with.
//!
//! # The encoder
//!
//! Levels 1 to 6 gather the input in 64 KiB (65535-byte) blocks and match each with
//! a level-specific "fast" matcher that can reach into earlier blocks; `-1` means 5.
//! Levels 7 to 9 match with hash chains over a sliding window instead ([`lazy`]);
//! level 0 stores 64 KiB blocks and -2 Huffman-codes 32 KiB ones.
//! A block's tokens are then written by [`writer`] as a dynamic block (whose table may
//! stay open for the next block), a literal-only block when matching removed less
//! than 1/16 of the bytes, or stored when no match was found. A flush (`sync`)
//! encodes what is gathered, however short: up to 32 bytes are stored, up to 127
//! Huffman-coded without matching, and an empty stored block follows.
//!
//! # pgzip
//!
//! pgzip cuts the input into blocks of exactly 1 MiB (its default block size) and
//! compresses each on its own goroutine with a fresh encoder whose dictionary is the
//! last 16 KiB of the block before; each block ends with a flush, the last with the
//! final empty block too. A block's bytes therefore depend only on its input and its
//! predecessor's tail: not on GOMAXPROCS, scheduling or pooled encoders (a reused
//! encoder's history is pushed out of reach on reset, and the tables' stale entries
//! are always rejected by the distance checks). Measured: the same 204 MB layer gave
//! the same sha256 with GOMAXPROCS 1, 2 and 8, equal to podman's push.

mod fastgen;
mod lazy;
mod level12;
mod level3;
mod level4;
mod level5;
mod level6;
mod tokens;
mod writer;

use fastgen::MAX_BLOCK;
use tokens::Tokens;
use writer::Writer;

/// pgzip's dictionary: the last 16 KiB of the previous block.
const PGZIP_TAIL: usize = 16384;

/// One of the fast levels' matchers.
enum Fast {
    L12(level12::Level12),
    L3(level3::Level3),
    L4(level4::Level4),
    L5(level5::Level5),
    L6(level6::Level6),
}

impl Fast {
    fn new(level: i8) -> Self {
        match level {
            1 | 2 => Fast::L12(level12::Level12::new(level as u8)),
            3 => Fast::L3(level3::Level3::new()),
            4 => Fast::L4(level4::Level4::new()),
            6 => Fast::L6(level6::Level6::new()),
            _ => Fast::L5(level5::Level5::new()),
        }
    }

    fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        match self {
            Fast::L12(f) => f.encode(dst, src),
            Fast::L3(f) => f.encode(dst, src),
            Fast::L4(f) => f.encode(dst, src),
            Fast::L5(f) => f.encode(dst, src),
            Fast::L6(f) => f.encode(dst, src),
        }
    }

    fn reset(&mut self) {
        match self {
            Fast::L12(f) => f.reset(),
            Fast::L3(f) => f.reset(),
            Fast::L4(f) => f.reset(),
            Fast::L5(f) => f.reset(),
            Fast::L6(f) => f.reset(),
        }
    }
}

/// Levels 1 to 6: 64 KiB blocks, matched whole when full or flushed.
struct Blocks {
    fast: Fast,
    tokens: Tokens,
    window: Vec<u8>,
}

impl Blocks {
    /// klauspost's `storeFast`: matches a full (or flushed) block and writes it.
    fn step(&mut self, w: &mut Writer, sync: bool) {
        let n = self.window.len();
        if n < MAX_BLOCK {
            if !sync {
                return;
            }
            if n < 128 {
                if n == 0 {
                    return;
                }
                if n <= 32 {
                    w.stored_block(&self.window);
                } else {
                    w.block_huff(false, &self.window, true);
                }
                self.tokens.reset();
                self.window.clear();
                self.fast.reset();
                return;
            }
        }
        self.fast.encode(&mut self.tokens, &self.window);
        if self.tokens.n() == 0 {
            w.stored_block(&self.window);
        } else if self.tokens.n() > n - (n >> 4) {
            w.block_huff(false, &self.window, sync);
        } else {
            w.block_dynamic(&mut self.tokens, false, Some(&self.window), sync);
        }
        self.tokens.reset();
        self.window.clear();
    }
}

/// How a level finds matches.
enum Matcher {
    Fast(Box<Blocks>),
    /// Levels 7 to 9: a sliding window matched as it fills.
    Lazy(Box<lazy::Lazy>),
    /// Level 0: 64 KiB stored blocks.
    Store(Vec<u8>),
    /// Level -2 (`HuffmanOnly`): 32 KiB literal-only blocks.
    Huffman(Vec<u8>),
}

/// A klauspost encoder at levels -2 to 9 (-1 is 5).
pub(crate) struct Deflate {
    w: Writer,
    m: Matcher,
}

/// Whether [`Deflate::new`] knows `level`.
pub(crate) fn supported(level: i8) -> bool {
    (-2..=9).contains(&level)
}

/// Level -2's block size.
const HUFFMAN_BLOCK: usize = 32 << 10;

impl Deflate {
    pub fn new(level: i8) -> Self {
        debug_assert!(supported(level));
        let (penalty, m) = match level {
            7..=9 => (8, Matcher::Lazy(Box::new(lazy::Lazy::new(level)))),
            0 => (0, Matcher::Store(Vec::with_capacity(MAX_BLOCK))),
            -2 => (10, Matcher::Huffman(Vec::with_capacity(HUFFMAN_BLOCK))),
            _ => (7, Matcher::Fast(Box::new(Blocks::new(level)))),
        };
        Deflate {
            w: Writer::new(penalty),
            m,
        }
    }
}

impl Blocks {
    fn new(level: i8) -> Self {
        Blocks {
            fast: Fast::new(level),
            tokens: Tokens::new(),
            window: Vec::with_capacity(MAX_BLOCK),
        }
    }
}

impl Deflate {
    /// Starts over, as a pooled encoder does when pgzip hands it the next block with
    /// `dict` as its dictionary.
    pub fn reset(&mut self, dict: &[u8]) {
        self.w.reset();
        match &mut self.m {
            Matcher::Fast(b) => {
                b.fast.reset();
                b.window.clear();
                b.tokens.reset();
                // Go encodes the dictionary's last 32 KiB and drops the tokens.
                let dict = &dict[dict.len().saturating_sub(crate::gzip::token::MAX_DISTANCE)..];
                b.fast.encode(&mut b.tokens, dict);
                b.tokens.reset();
            }
            Matcher::Lazy(l) => l.reset(dict),
            // These levels ignore a dictionary.
            Matcher::Store(window) | Matcher::Huffman(window) => window.clear(),
        }
    }

    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.full() {
                self.step(false);
            }
            data = &data[self.gather(data)..];
        }
    }

    /// Whether the gathered input fills a block (or the window), so the next byte
    /// must wait until it is encoded.
    fn full(&self) -> bool {
        match &self.m {
            Matcher::Fast(b) => b.window.len() == MAX_BLOCK,
            Matcher::Lazy(l) => l.full(),
            Matcher::Store(w) => w.len() == MAX_BLOCK,
            Matcher::Huffman(w) => w.len() == HUFFMAN_BLOCK,
        }
    }

    /// Takes as much of `data` as fits; returns how much.
    fn gather(&mut self, data: &[u8]) -> usize {
        let (window, limit) = match &mut self.m {
            Matcher::Lazy(l) => return l.fill(data),
            Matcher::Fast(b) => (&mut b.window, MAX_BLOCK),
            Matcher::Store(w) => (w, MAX_BLOCK),
            Matcher::Huffman(w) => (w, HUFFMAN_BLOCK),
        };
        let n = data.len().min(limit - window.len());
        window.extend_from_slice(&data[..n]);
        n
    }

    /// Go's `Flush`: everything gathered, then an empty stored block.
    pub fn flush(&mut self) {
        self.step(true);
        self.w.stored_header(0, false);
        self.w.flush();
    }

    /// Go's `Close`: everything gathered, then the final (empty, fixed) block.
    pub fn close(&mut self) {
        self.step(true);
        self.w.stored_header(0, true);
        self.w.flush();
    }

    pub fn output(&mut self) -> &mut Vec<u8> {
        self.w.bits.buffer()
    }

    fn step(&mut self, sync: bool) {
        match &mut self.m {
            Matcher::Lazy(l) => l.step(&mut self.w, sync),
            Matcher::Fast(b) => b.step(&mut self.w, sync),
            Matcher::Store(window) => {
                if !window.is_empty() && (window.len() == MAX_BLOCK || sync) {
                    self.w.stored_block(window);
                    window.clear();
                }
            }
            Matcher::Huffman(window) => {
                if !window.is_empty() && (window.len() == HUFFMAN_BLOCK || sync) {
                    self.w.block_huff(false, window, sync);
                    window.clear();
                }
            }
        }
    }
}

/// pgzip's stream: blocks of `block_size` input bytes, each compressed alone with
/// the last 16 KiB of the block before as its dictionary. A block is compressed as
/// its bytes arrive (pgzip gathers it first; the bytes out are the same).
pub(crate) struct Pgzip {
    enc: Deflate,
    block_size: usize,
    /// Bytes of the current block written so far.
    filled: usize,
    /// Whether the encoder has been reset for the current block.
    started: bool,
    /// The last bytes of the current block, up to 16 KiB.
    tail: Vec<u8>,
    /// The dictionary of the next block.
    dict: Vec<u8>,
}

impl Pgzip {
    pub fn new(level: i8, block_size: usize) -> Self {
        debug_assert!(block_size > PGZIP_TAIL);
        Pgzip {
            enc: Deflate::new(level),
            block_size,
            filled: 0,
            started: false,
            tail: Vec::with_capacity(PGZIP_TAIL),
            dict: Vec::with_capacity(PGZIP_TAIL),
        }
    }

    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.start();
            let n = data.len().min(self.block_size - self.filled);
            self.enc.write(&data[..n]);
            self.keep_tail(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == self.block_size {
                self.enc.flush();
                // A whole block is longer than the tail, so the tail is whole.
                std::mem::swap(&mut self.dict, &mut self.tail);
                self.tail.clear();
                self.filled = 0;
                self.started = false;
            }
        }
    }

    /// The last block (empty when the input filled whole blocks): flushed, then the
    /// final empty block.
    pub fn finish(&mut self) {
        self.start();
        self.enc.flush();
        self.enc.close();
    }

    pub fn output(&mut self) -> &mut Vec<u8> {
        self.enc.output()
    }

    fn start(&mut self) {
        if !self.started {
            self.enc.reset(&self.dict);
            self.started = true;
        }
    }

    fn keep_tail(&mut self, data: &[u8]) {
        if data.len() >= PGZIP_TAIL {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - PGZIP_TAIL..]);
            return;
        }
        let excess = (self.tail.len() + data.len()).saturating_sub(PGZIP_TAIL);
        self.tail.drain(..excess);
        self.tail.extend_from_slice(data);
    }
}
