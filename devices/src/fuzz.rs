//! The seeded driver of the guest-interface fuzz targets (the `fuzz_*`
//! tests of every device model): stable toolchain, no extra crates.
//!
//! Each target is a test that calls [`run`] with its name, a number of
//! executions and one execution: a short burst of arbitrary accesses
//! (widths 0-8, offsets anywhere, random values and command bytes) drawn
//! from the [`Rng`] it is handed, followed by the target's own invariant
//! checks. A run is deterministic: the seed is derived from the target's
//! name unless `TESSERA_FUZZ_SEED` gives one.
//!
//! - `cargo test` (CI) runs each target for its base count.
//! - `TESSERA_FUZZ_SCALE=N` multiplies every count (the long run:
//!   `TESSERA_FUZZ_SCALE=200 cargo test --release fuzz_ -- --nocapture`).
//! - Each target prints `fuzz NAME: N executions, seed S`; a failure
//!   prints the execution number and the seed to reproduce it with.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// xorshift64*: fast, good enough to spread accesses, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `[0, n)` (0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.u64() % n }
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// An access width as a guest (or a bus bug) can produce: mostly 1, 2,
    /// 4 or 8, sometimes 0, 3, 5, 6 or 7.
    pub fn width(&mut self) -> usize {
        if self.one_in(16) {
            self.below(9) as usize
        } else {
            self.pick(&[1, 2, 4, 8])
        }
    }

    /// An offset mostly inside `[0, span)`, sometimes anywhere, sometimes
    /// at the very top of the address space.
    pub fn offset(&mut self, span: u64) -> u64 {
        match self.below(16) {
            0 => u64::MAX - self.below(16),
            1 => self.u64(),
            _ => self.below(span.max(1)),
        }
    }

    /// Eight random bytes.
    pub fn bytes(&mut self) -> [u8; 8] {
        self.u64().to_le_bytes()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The number of executions of a target whose base count is `base`.
pub fn executions(base: usize) -> usize {
    base.saturating_mul(env_u64("TESSERA_FUZZ_SCALE").unwrap_or(1).max(1) as usize)
}

/// The seed of target `name`: `TESSERA_FUZZ_SEED` or a hash of the name.
pub fn seed(name: &str) -> u64 {
    env_u64("TESSERA_FUZZ_SEED").unwrap_or_else(|| {
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    })
}

/// Run target `name`: [`executions`]`(base)` calls of `one`, each with the
/// shared generator; reports the count, and on a panic the execution and
/// the seed before re-raising it.
pub fn run(name: &str, base: usize, mut one: impl FnMut(&mut Rng)) {
    let seed = seed(name);
    let n = executions(base);
    let mut rng = Rng::new(seed);
    for i in 0..n {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| one(&mut rng))) {
            eprintln!(
                "fuzz {name}: failed in execution {i} of {n}; reproduce with TESSERA_FUZZ_SEED={seed:#x}"
            );
            resume_unwind(p);
        }
    }
    eprintln!("fuzz {name}: {n} executions, seed {seed:#x}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        let mut a = Rng::new(seed("x"));
        let mut b = Rng::new(seed("x"));
        let xs: Vec<u64> = (0..100).map(|_| a.u64()).collect();
        assert!(xs.iter().all(|&x| x == b.u64()));
        assert_ne!(seed("x"), seed("y"));
        let mut widths = [0usize; 9];
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            widths[r.width()] += 1;
            assert!(r.below(7) < 7);
        }
        assert!(widths.iter().all(|&c| c > 0), "{widths:?}");
        assert_eq!(Rng::new(5).below(0), 0);
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn a_failing_execution_is_reported_and_re_raised() {
        run("always-fails", 3, |_| panic!("boom"));
    }
}
