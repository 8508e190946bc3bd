//! The deflate bit writer: codes and fields packed least significant bit first
//! (RFC 1951 §3.1.1), whole bytes collected in a buffer the caller drains.
//!
//! Go's writers keep 48 bits in a register and spill six bytes at a time; what reaches
//! the output is the same sequence of bits, so one plain writer serves every encoder.

/// Packs bit fields into bytes.
#[derive(Default)]
pub(crate) struct BitWriter {
    acc: u64,
    nbits: u32,
    out: Vec<u8>,
}

impl BitWriter {
    /// Appends the low `n` bits of `value` (`n` at most 16; higher bits must be zero).
    #[inline]
    pub fn bits(&mut self, value: u32, n: u32) {
        debug_assert!(n <= 16 && (n == 16 || value >> n == 0));
        self.acc |= u64::from(value) << self.nbits;
        self.nbits += n;
        if self.nbits >= 48 {
            self.out.extend_from_slice(&self.acc.to_le_bytes()[..6]);
            self.acc >>= 48;
            self.nbits -= 48;
        }
    }

    /// Pads the last byte with zero bits and moves every pending bit to the buffer.
    pub fn align(&mut self) {
        while self.nbits > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits = self.nbits.saturating_sub(8);
        }
        self.acc = 0;
    }

    /// Appends bytes after the bits written so far, which must end on a byte boundary
    /// (as they do after a stored block's header).
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.align();
        self.out.extend_from_slice(bytes);
    }

    /// The whole bytes written so far, for the caller to take; pending bits stay.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}
