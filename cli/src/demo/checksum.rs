//! The demo's payloads and their check: a deterministic byte stream
//! (splitmix64) and an FNV-1a checksum over 64-bit words that does not
//! depend on how the bytes are sliced.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

/// FNV-1a over 64-bit little-endian words; fed in any slicing, it gives
/// the same value for the same bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checksum {
    h: u64,
    tail: [u8; 8],
    tail_len: usize,
    len: u64,
}

impl Checksum {
    pub(super) fn new() -> Checksum {
        Checksum { h: FNV_OFFSET, tail: [0; 8], tail_len: 0, len: 0 }
    }

    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(FNV_PRIME);
    }

    pub(super) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail_len > 0 {
            let n = (8 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
            self.tail_len += n;
            data = &data[n..];
            if self.tail_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    pub(super) fn finish(&self) -> u64 {
        let mut c = *self;
        if c.tail_len > 0 {
            c.tail[c.tail_len..].fill(0);
            c.mix(u64::from_le_bytes(c.tail));
        }
        c.mix(c.len);
        c.h
    }
}

pub(super) fn checksum(data: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(data);
    c.finish()
}

/// A deterministic byte stream (splitmix64), different for each seed.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    state: u64,
}

impl Pattern {
    pub(super) fn new(seed: u64) -> Pattern {
        Pattern { state: seed.wrapping_mul(0x2545_f491_4f6c_dd1d) }
    }

    pub(super) fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next_word().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_does_not_depend_on_slicing() {
        let mut data = vec![0u8; 1000];
        Pattern::new(7).fill(&mut data);
        let whole = checksum(&data);
        for step in [1, 3, 7, 8, 13, 64, 999] {
            let mut c = Checksum::new();
            for chunk in data.chunks(step) {
                c.update(chunk);
            }
            assert_eq!(c.finish(), whole, "step {step}");
        }
        // One byte changed, a byte more, or a byte fewer: another checksum.
        let mut other = data.clone();
        other[500] ^= 1;
        assert_ne!(checksum(&other), whole);
        assert_ne!(checksum(&data[..999]), whole);
        let mut longer = data.clone();
        longer.push(0);
        assert_ne!(checksum(&longer), whole);
    }

    #[test]
    fn patterns_are_deterministic_and_differ_by_seed() {
        let (mut a, mut b, mut c) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        Pattern::new(1).fill(&mut a);
        Pattern::new(1).fill(&mut b);
        Pattern::new(2).fill(&mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
