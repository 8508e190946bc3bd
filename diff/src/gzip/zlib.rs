//! zlib's deflate through flate2's C zlib backend (this crate's `zlib` feature): the
//! output of zlib 1.2.x at levels 1 to 9 with default settings, bit for bit.
//!
//! flate2's default backend here, zlib-rs, follows zlib-ng's matchers and differs
//! from zlib at every level (measured on a 20 MB layer tar); only C zlib reproduces
//! zlib. Enabling the feature switches flate2 to C zlib for the whole build (flate2
//! prefers it over zlib-rs); the library is already linked, through librocksdb-sys.

use flate2::{Compress, Compression, FlushCompress, Status};

pub(crate) struct Deflate {
    c: Compress,
    out: Vec<u8>,
}

impl Deflate {
    pub fn new(level: i8) -> Self {
        Deflate {
            c: Compress::new(Compression::new(level.clamp(1, 9) as u32), false),
            out: Vec::new(),
        }
    }

    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.out.reserve(64 << 10);
            let before = self.c.total_in();
            // Raw deflate into memory fails only on a bad state, which is a bug here.
            self.c
                .compress_vec(data, &mut self.out, FlushCompress::None)
                .expect("zlib deflate into memory");
            data = &data[(self.c.total_in() - before) as usize..];
        }
    }

    pub fn finish(&mut self) {
        loop {
            self.out.reserve(64 << 10);
            match self
                .c
                .compress_vec(&[], &mut self.out, FlushCompress::Finish)
                .expect("zlib deflate into memory")
            {
                Status::StreamEnd => return,
                Status::Ok | Status::BufError => {}
            }
        }
    }

    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}
