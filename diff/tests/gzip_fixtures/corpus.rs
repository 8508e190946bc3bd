//! The content behind the gzip fixtures, generated from a seed so the fixtures need
//! not carry it: tars of config-like text, duplicated files, zero runs, random bytes
//! and two-letter noise (paths to stored, literal-only, one- and two-symbol blocks
//! and long matches). The generator is frozen: the fixtures were made by real tools
//! from its output (see `README.md` here), so changing it breaks them.

#![allow(dead_code)] // each user takes its own part

/// splitmix64: a small generator whose output never changes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: [&str; 24] = [
    "listen", "server", "port", "enable", "timeout", "path", "user", "group", "cache", "level",
    "debug", "worker", "socket", "limit", "retry", "backend", "frontend", "mode", "proxy",
    "buffer", "size", "log", "format", "include",
];

/// `len` bytes of config-like text: `key.sub = value` lines from a small vocabulary.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let a = WORDS[r.below(WORDS.len() as u64) as usize];
        let b = WORDS[r.below(WORDS.len() as u64) as usize];
        match r.below(4) {
            0 => out.extend_from_slice(format!("{a}.{b} = {}\n", r.below(1000)).as_bytes()),
            1 => out.extend_from_slice(format!("# {a} {b}\n").as_bytes()),
            2 => out.extend_from_slice(format!("[{a}]\n").as_bytes()),
            _ => out.extend_from_slice(format!("{a} = \"/var/lib/{b}\"\n").as_bytes()),
        }
    }
    out.truncate(len);
    out
}

/// `len` random bytes.
pub fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

/// `len` bytes of `a` and `b` at random.
pub fn two_letters(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|_| if r.below(2) == 0 { b'a' } else { b'b' })
        .collect()
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// One ustar header block for a regular file.
fn header(name: &str, size: usize) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size as u64);
    octal(&mut h[136..148], 1_700_000_000);
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// A tar of about `size` bytes of files made from `seed`.
pub fn tar(seed: u64, size: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(size + (64 << 10));
    let mut last_text = Vec::new();
    let mut n = 0;
    while out.len() < size {
        let (name, body) = match r.below(10) {
            0 => ("blob.bin", random(r.next(), 1 + r.below(1500) as usize)),
            1 | 2 => ("zeros", vec![0u8; 1 + r.below(150_000) as usize]),
            3 => ("ab.txt", two_letters(r.next(), 1 + r.below(3000) as usize)),
            4..=6 if !last_text.is_empty() => ("copy.conf", last_text.clone()),
            _ => {
                last_text = text(r.next(), 1 + r.below(12_000) as usize);
                ("app.conf", last_text.clone())
            }
        };
        let name = format!("etc/{n:04}/{name}");
        n += 1;
        out.extend_from_slice(&header(&name, body.len()));
        out.extend_from_slice(&body);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// `len` bytes, mostly zeros: 200 bytes of text, then a 100-byte text snippet every
/// 32 KiB. Compresses to almost nothing, so fixtures of megabytes stay small. Each
/// length's output is a prefix of every longer one's.
pub fn sparse(seed: u64, len: usize) -> Vec<u8> {
    let mut out = text(seed, 200.min(len));
    let mut r = Rng::new(seed ^ 0x5a5a);
    while out.len() < len {
        let at = out.len();
        out.resize(at.next_multiple_of(32768).max(at + 1), 0);
        out.extend_from_slice(&text(r.next(), 100));
    }
    out.truncate(len);
    out
}
