//! What brook's tests, benches and fuzz targets share: one small
//! deterministic random-number generator, so that an input made from a
//! seed repeats exactly. Not part of brook's API.

/// A xorshift sequence from its seed (which must not be zero).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A sequence from `seed` (which must not be zero).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next value below `n` (which must not be zero).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// The next value as a float in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_sequence_and_below_stays_below() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let first: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let again: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(first, again);
        assert_ne!(first[0], first[1]);
        assert!((0..1000).all(|_| a.below(10) < 10));
        assert!((0..1000).all(|_| (0.0..1.0).contains(&a.uniform())));
    }
}
