//! Test bytes: a seeded [`pattern`], its [`checksum`], and [`assert_bytes`]
//! (exact, in order, no duplicates).

/// `len` bytes of the stream `seed`: a hash of (seed, offset), so a lost,
/// doubled or reordered chunk shows at its offset.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|off| {
            let h = (off ^ (seed << 40)).wrapping_add(0x632B_E59B_D9B4_E019).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (h >> 56) as u8
        })
        .collect()
}

/// FNV-1a over `bytes`.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Panics unless `got == want`, saying where they part: lengths,
/// checksums and the first differing offset.
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes (checksum {:#x}), want {} (checksum {:#x}); first difference at offset {first}",
        got.len(),
        checksum(got),
        want.len(),
        checksum(want)
    );
}
