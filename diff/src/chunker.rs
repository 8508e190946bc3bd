//! Content-defined chunking of one file's content as it arrives in pieces.
//!
//! FastCDC (the 2020 variant, normalization level 1) decides each cut from the bytes
//! after the previous cut only, and never looks further than [`CHUNK_MAX`] bytes: the
//! chunk starting at offset `o` of a file of `n` bytes is the first chunk FastCDC cuts
//! from the window `content[o .. o + min(n - o, CHUNK_MAX)]`. So this chunker holds at
//! most one window of content, cuts one chunk whenever a whole window is there (or the
//! file's remaining bytes, if fewer), and gives exactly the chunks FastCDC gives over
//! the whole content however the content was split.
//!
//! Windows that lie whole inside the caller's slice are cut in place; only a window
//! that straddles two slices is copied into the buffer.

use fastcdc::v2020::FastCDC;
use shoal_protocol::recipe::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, ChunkId, ChunkRef};

/// Receives each chunk as it is cut: its reference and its bytes.
pub(crate) type ChunkSink<'a> = dyn FnMut(ChunkRef, &[u8]) + 'a;

/// Chunks one file's content.
pub(crate) struct Chunker {
    /// Received bytes that are not yet cut; never more than one window.
    buf: Vec<u8>,
    /// Bytes of content not yet received.
    unread: u64,
    /// Bytes of content in all.
    size: u64,
    /// BLAKE3 of the whole content so far (unused when one chunk holds it all: the
    /// chunk's id is then the content's).
    whole: blake3::Hasher,
    /// The chunks cut so far.
    chunks: Vec<ChunkRef>,
}

impl Chunker {
    /// A chunker for content of `size` bytes, buffering in `buf` (emptied; its
    /// allocation is reused).
    pub(crate) fn new(size: u64, mut buf: Vec<u8>) -> Self {
        buf.clear();
        Chunker {
            buf,
            unread: size,
            size,
            whole: blake3::Hasher::new(),
            chunks: Vec::new(),
        }
    }

    /// Bytes of content not yet received.
    pub(crate) fn unread(&self) -> u64 {
        self.unread
    }

    /// Bytes of buffer held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether all content has been received and cut.
    pub(crate) fn is_done(&self) -> bool {
        self.unread == 0 && self.buf.is_empty()
    }

    /// Takes content from the front of `data` (no more than the file has left), cuts
    /// every chunk it can, and returns how many bytes it took.
    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut ChunkSink<'_>) -> usize {
        let take = usize::try_from(self.unread).map_or(data.len(), |u| u.min(data.len()));
        let data = &data[..take];
        self.unread -= take as u64;
        // `data[pos..]` is taken but neither buffered nor cut.
        let mut pos = 0;
        loop {
            let left = (self.buf.len() + (take - pos)) as u64 + self.unread;
            // The window is at most CHUNK_MAX, which fits a usize.
            let window = left.min(u64::from(CHUNK_MAX)) as usize;
            if window == 0 {
                break;
            }
            if self.buf.is_empty() && take - pos >= window {
                let n = cut(&data[pos..pos + window]);
                self.emit(&data[pos..pos + n], sink);
                pos += n;
                continue;
            }
            let fill = (window - self.buf.len()).min(take - pos);
            if self.buf.capacity() < window {
                self.buf.reserve_exact(window - self.buf.len());
            }
            self.buf.extend_from_slice(&data[pos..pos + fill]);
            pos += fill;
            if self.buf.len() < window {
                break;
            }
            let n = cut(&self.buf);
            let chunk = std::mem::take(&mut self.buf);
            self.emit(&chunk[..n], sink);
            self.buf = chunk;
            let rest = window - n;
            if rest <= fill {
                // What is left of the window came from `data`: read it from there.
                pos -= rest;
                self.buf.clear();
            } else {
                self.buf.drain(..n);
            }
        }
        take
    }

    fn emit(&mut self, bytes: &[u8], sink: &mut ChunkSink<'_>) {
        if bytes.len() as u64 != self.size {
            self.whole.update(bytes);
        }
        let chunk = ChunkRef {
            id: ChunkId::of(bytes),
            // A chunk is at most CHUNK_MAX bytes.
            len: bytes.len() as u32,
        };
        self.chunks.push(chunk);
        sink(chunk, bytes);
    }

    /// The content's BLAKE3 (`None` for empty content), its chunks, and the buffer
    /// for the next file. Call once [`is_done`](Self::is_done).
    pub(crate) fn finish(self) -> (Option<ChunkId>, Vec<ChunkRef>, Vec<u8>) {
        let content = match &self.chunks[..] {
            [] => None,
            [only] => Some(only.id),
            _ => Some(ChunkId(*self.whole.finalize().as_bytes())),
        };
        (content, self.chunks, self.buf)
    }
}

/// Length of the first chunk FastCDC cuts from `window` (which is non-empty).
fn cut(window: &[u8]) -> usize {
    if window.len() <= CHUNK_MIN as usize {
        // FastCDC takes all of a source no longer than the minimum; skip its set-up.
        return window.len();
    }
    FastCDC::new(window, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .next()
        .map_or(window.len(), |c| c.length.clamp(1, window.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn chunk_in_slices(content: &[u8], slice: usize) -> Vec<ChunkRef> {
        let mut c = Chunker::new(content.len() as u64, Vec::new());
        let mut seen = Vec::new();
        for piece in content.chunks(slice.max(1)) {
            assert_eq!(
                c.feed(piece, &mut |r, b| seen.push((r, b.len()))),
                piece.len()
            );
        }
        assert!(c.is_done());
        let (whole, chunks, _) = c.finish();
        assert_eq!(whole, (!content.is_empty()).then(|| ChunkId::of(content)));
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), chunks);
        chunks
    }

    #[test]
    fn cuts_where_fastcdc_cuts_over_the_whole_content() {
        let content = random(3 << 20, 1);
        let expected: Vec<ChunkRef> = FastCDC::new(&content, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
            .map(|c| ChunkRef {
                id: ChunkId::of(&content[c.offset..c.offset + c.length]),
                len: c.length as u32,
            })
            .collect();
        for slice in [
            1,
            7,
            512,
            4096,
            65_536,
            262_143,
            262_144,
            262_145,
            1 << 20,
            3 << 20,
        ] {
            assert_eq!(
                chunk_in_slices(&content, slice),
                expected,
                "slices of {slice}"
            );
        }
    }

    #[test]
    fn zeros_cut_at_the_maximum_and_the_last_chunk_may_be_short() {
        let content = vec![0u8; 2 * CHUNK_MAX as usize + 10];
        let lens: Vec<u32> = chunk_in_slices(&content, 1000)
            .iter()
            .map(|c| c.len)
            .collect();
        assert_eq!(lens, [CHUNK_MAX, CHUNK_MAX, 10]);
    }

    #[test]
    fn takes_no_more_than_the_file_has() {
        let mut c = Chunker::new(10, vec![9; 100]);
        assert_eq!(c.feed(&[1; 30], &mut |_, _| {}), 10);
        assert!(c.is_done());
        assert_eq!(c.finish().1.len(), 1);
        assert_eq!(Chunker::new(0, Vec::new()).finish(), (None, vec![], vec![]));
    }
}
