//! The seeded random stream of the random criterion.
//!
//! Written here rather than taken from `rand` / `rand_chacha`: prune-core
//! declares no random-number crate (candle-core 0.11 itself pulls rand in,
//! so this saves no crate today), and the stream does not change with the
//! rand version candle-core moves to. The stream is
//! bit-for-bit the one of `rand_chacha::ChaCha8Rng::seed_from_u64(seed)` read
//! with `rng.random::<f32>()` (rand 0.9), which the project used before and
//! which its published figures of the random criterion came from; the crate's
//! tests hold the two side by side.
//!
//! - seeding: the 32-byte key is filled with PCG32 outputs of the `u64` seed
//!   (`rand_core`'s `seed_from_u64`);
//! - blocks: ChaCha with 8 rounds, a 64-bit block counter from 0 and a 64-bit
//!   stream id of 0, words read in block order;
//! - `f32`: the top 24 bits of a word times `2⁻²⁴`, uniform on `[0, 1)`.

/// ChaCha8 keyed from a `u64` seed.
#[derive(Clone, Debug)]
pub struct SeededRng {
    key: [u32; 8],
    counter: u64,
    block: [u32; 16],
    next: usize,
}

impl SeededRng {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        let mut key = [0u32; 8];
        for word in &mut key {
            *word = pcg32(&mut state);
        }
        Self {
            key,
            counter: 0,
            block: [0; 16],
            next: 16,
        }
    }

    /// The next 32-bit word of the stream.
    pub fn next_u32(&mut self) -> u32 {
        if self.next == 16 {
            self.block = chacha8_block(&self.key, self.counter);
            self.counter = self.counter.wrapping_add(1);
            self.next = 0;
        }
        let word = self.block[self.next];
        self.next += 1;
        word
    }

    /// A uniform `f32` in `[0, 1)` with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        (self.next_u32() >> 8) as f32 * SCALE
    }
}

/// One PCG32 step (multiplier and increment of `rand_core`), as a key word.
fn pcg32(state: &mut u64) -> u32 {
    const MUL: u64 = 6_364_136_223_846_793_005;
    const INC: u64 = 11_634_580_027_462_260_723;
    *state = state.wrapping_mul(MUL).wrapping_add(INC);
    let s = *state;
    let xorshifted = (((s >> 18) ^ s) >> 27) as u32;
    xorshifted.rotate_right((s >> 59) as u32)
}

/// Block `counter` of ChaCha8 under `key`, stream 0.
fn chacha8_block(key: &[u32; 8], counter: u64) -> [u32; 16] {
    let mut input = [0u32; 16];
    // "expand 32-byte k"
    input[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    input[4..12].copy_from_slice(key);
    input[12] = counter as u32;
    input[13] = (counter >> 32) as u32;
    let mut x = input;
    for _ in 0..4 {
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 1, 5, 9, 13);
        quarter(&mut x, 2, 6, 10, 14);
        quarter(&mut x, 3, 7, 11, 15);
        quarter(&mut x, 0, 5, 10, 15);
        quarter(&mut x, 1, 6, 11, 12);
        quarter(&mut x, 2, 7, 8, 13);
        quarter(&mut x, 3, 4, 9, 14);
    }
    for (out, inp) in x.iter_mut().zip(input) {
        *out = out.wrapping_add(inp);
    }
    x
}

fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

#[cfg(test)]
mod tests {
    use super::SeededRng;
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The stream equals `rand_chacha`'s, words and `f32`s, across several
    /// blocks and seeds (including the extremes).
    #[test]
    fn the_stream_is_rand_chachas() {
        for seed in [0, 1, 7, 42, 0x5C0E_0000, u64::MAX] {
            let mut ours = SeededRng::new(seed);
            let mut theirs = ChaCha8Rng::seed_from_u64(seed);
            for i in 0..200 {
                assert_eq!(ours.next_u32(), theirs.next_u32(), "seed {seed} word {i}");
            }
            let mut ours = SeededRng::new(seed);
            let mut theirs = ChaCha8Rng::seed_from_u64(seed);
            for i in 0..200 {
                let (a, b) = (ours.next_f32(), theirs.random::<f32>());
                assert_eq!(a.to_bits(), b.to_bits(), "seed {seed} float {i}");
            }
        }
    }
}
