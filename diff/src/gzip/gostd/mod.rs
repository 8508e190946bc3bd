//! Go's standard library encoder, `compress/flate` as of Go 1.19 (the version that
//! built Debian 12's dockerd, whose `docker push` compresses layers with
//! `compress/gzip` at the default level, 6).
//!
//! Levels: 0 stores 64 KiB blocks; -2 (`HuffmanOnly`) writes 64 KiB blocks of
//! literals; 1 is the Snappy-style [`fast`] matcher over 64 KiB blocks; 2 to 9 are the
//! hash-chain matcher of [`lazy`], whose blocks end every 16 Ki tokens. Every block
//! gets its own tables; closing writes an empty final stored block.
//!
//! The output depends only on the bytes, not on how the producer sliced its writes,
//! for every level: levels 0, -2 and 1 work in whole 64 KiB blocks, and the matcher
//! of levels 2 to 9 always keeps 262 bytes of lookahead whatever it has been given.
//! (One path could differ in principle: a 16 Ki-token block that still reaches back
//! before the window's slide point when the window slides cannot be stored. Such a
//! block averages over two bytes a token and so is never the stored kind anyway.)

mod fast;
mod lazy;
mod writer;

use writer::{MAX_STORED, Writer};

enum Matcher {
    Store,
    Huffman,
    Fast(Box<fast::Fast>, Vec<u32>),
    Lazy(Box<lazy::Lazy>),
}

/// A Go standard library deflate stream being written.
pub(crate) struct Deflate {
    w: Writer,
    matcher: Matcher,
    /// The 64 KiB block being gathered by levels 0, -2 and 1.
    block: Vec<u8>,
}

impl Deflate {
    /// A stream at `level` (-2, or 0 to 9; -1 means 6).
    pub fn new(level: i8) -> Self {
        let matcher = match level {
            0 => Matcher::Store,
            -2 => Matcher::Huffman,
            1 => Matcher::Fast(Box::new(fast::Fast::new()), Vec::with_capacity(MAX_STORED)),
            -1 => Matcher::Lazy(Box::new(lazy::Lazy::new(6))),
            l => Matcher::Lazy(Box::new(lazy::Lazy::new(l.clamp(2, 9) as u8))),
        };
        Deflate {
            w: Writer::new(),
            matcher,
            block: Vec::with_capacity(MAX_STORED),
        }
    }

    /// Compresses `data`; finished bytes collect in [`output`](Self::output).
    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.step(false);
            let n = match &mut self.matcher {
                Matcher::Lazy(l) => l.fill(data),
                _ => {
                    let n = data.len().min(MAX_STORED - self.block.len());
                    self.block.extend_from_slice(&data[..n]);
                    n
                }
            };
            data = &data[n..];
        }
    }

    /// Ends the stream: the last data block, an empty final stored block, and the
    /// last bits padded to a byte.
    pub fn finish(&mut self) {
        self.step(true);
        self.w.stored_header(0, true);
        self.w.bits.align();
    }

    /// The bytes finished so far, for the caller to drain.
    pub fn output(&mut self) -> &mut Vec<u8> {
        self.w.bits.buffer()
    }

    fn step(&mut self, sync: bool) {
        let full = self.block.len() == MAX_STORED;
        match &mut self.matcher {
            Matcher::Lazy(l) => l.step(&mut self.w, sync),
            Matcher::Store => {
                if !self.block.is_empty() && (full || sync) {
                    self.w.stored_block(&self.block);
                    self.block.clear();
                }
            }
            Matcher::Huffman => {
                if !self.block.is_empty() && (full || sync) {
                    self.w.block_huff(false, &self.block);
                    self.block.clear();
                }
            }
            Matcher::Fast(fast, tokens) => {
                if !full {
                    if !sync {
                        return;
                    }
                    if self.block.len() < 128 {
                        match self.block.len() {
                            0 => return,
                            1..=16 => self.w.stored_block(&self.block),
                            _ => self.w.block_huff(false, &self.block),
                        }
                        self.block.clear();
                        fast.reset();
                        return;
                    }
                }
                tokens.clear();
                fast.encode(tokens, &self.block);
                let n = self.block.len();
                if tokens.len() > n - (n >> 4) {
                    self.w.block_huff(false, &self.block);
                } else {
                    self.w.block_dynamic(tokens, false, &self.block);
                }
                self.block.clear();
            }
        }
    }
}
