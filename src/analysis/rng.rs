//! SplitMix64: a tiny, fully specified generator, so seeded draws (ContextCite masks, random
//! heads) are reproducible across platforms and from other languages (ANALYSES.md).

#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n - 1)
    }

    /// `rows` masks of `n` entries, each entry kept with probability `keep_prob`.
    pub fn masks(&mut self, rows: usize, n: usize, keep_prob: f64) -> Vec<Vec<bool>> {
        (0..rows)
            .map(|_| (0..n).map(|_| self.next_f64() < keep_prob).collect())
            .collect()
    }

    /// `k` distinct items of `pool`, drawn uniformly without replacement (partial Fisher–Yates).
    pub fn choose<T: Clone>(&mut self, pool: &[T], k: usize) -> Vec<T> {
        let mut items = pool.to_vec();
        let k = k.min(items.len());
        for i in 0..k {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
        items.truncate(k);
        items
    }
}

/// FNV-1a (64-bit) of bytes: a stable hash, unlike the standard library's, for cache file names
/// and derived seeds.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `base` mixed with the FNV-1a hash of `parts` (each followed by a 0xff byte, so `["ab", "c"]`
/// and `["a", "bc"]` differ): one seed per named quantity, so two draws never share a stream by
/// accident and a seed does not move when other quantities are added.
pub fn derive_seed(base: u64, parts: &[&str]) -> u64 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p.as_bytes());
        bytes.push(0xff);
    }
    base ^ fnv1a64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn choose_draws_distinct_items() {
        let mut r = SplitMix64::new(7);
        let pool: Vec<usize> = (0..20).collect();
        let mut got = r.choose(&pool, 10);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 10);
    }
}
