//! Seeded, counter-based random numbers (SplitMix64): every draw is a pure function of the
//! seed, a purpose and an index (a job, a delivery), so every policy's run draws the same
//! numbers for the same job and a run is reproducible from its seed.

/// Purposes, so draws for different things are independent.
pub(crate) const ASSIGN: u64 = 0x61737369676e; // "assign"
pub(crate) const LOSE: u64 = 0x6c6f7365; // "lose"
pub(crate) const LAUNCH: u64 = 0x6c61756e6368; // "launch"
pub(crate) const RECLAIM: u64 = 0x7265636c61696d; // "reclaim"

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniformly distributed 64-bit number for (seed, purpose, index).
pub(crate) fn mix(seed: u64, purpose: u64, index: u64) -> u64 {
    splitmix64(seed ^ splitmix64(purpose ^ splitmix64(index)))
}

/// A uniformly distributed number in [0, 1) for (seed, purpose, index).
pub(crate) fn unit(seed: u64, purpose: u64, index: u64) -> f64 {
    (mix(seed, purpose, index) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_enough_and_seeded() {
        let n = 100_000;
        let below = (0..n).filter(|&i| unit(1, LOSE, i) < 0.02).count();
        assert!((1_700..2_300).contains(&below), "{below}");
        assert_eq!(mix(1, ASSIGN, 5), mix(1, ASSIGN, 5));
        assert_ne!(mix(1, ASSIGN, 5), mix(2, ASSIGN, 5));
        assert_ne!(mix(1, ASSIGN, 5), mix(1, LOSE, 5));
    }
}
