//! Mutations of a valid input: the edits that break a reader's assumptions
//! about sizes, offsets, lengths and terminators.

use rand::Rng;

/// Integers that sit on the edges readers get wrong: zero, one, sign
/// boundaries, all ones and sizes past any real file.
const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// `base` with one to eight random edits, some splicing in bytes of `other`.
pub fn mutate(base: &[u8], other: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut data = base.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        edit(&mut data, other, rng);
    }
    data
}

fn edit(data: &mut Vec<u8>, other: &[u8], rng: &mut impl Rng) {
    let len = data.len();
    // Offsets favour the start, where headers are.
    let at = |rng: &mut dyn rand::RngCore, len: usize| -> usize {
        if len == 0 {
            0
        } else if rng.random_bool(0.5) {
            rng.random_range(0..len.min(64))
        } else {
            rng.random_range(0..len)
        }
    };
    match rng.random_range(0..8) {
        0 if len > 0 => {
            let i = at(rng, len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = at(rng, len);
            data[i] = rng.random();
        }
        2 if len > 0 => {
            // An interesting integer, little- or big-endian, 1 to 8 bytes wide.
            let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let width = [1, 2, 4, 8][rng.random_range(0..4)];
            let bytes = if rng.random_bool(0.5) {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let i = at(rng, len);
            for (k, b) in bytes.iter().take(width).enumerate() {
                if let Some(slot) = data.get_mut(i + k) {
                    *slot = *b;
                }
            }
        }
        3 => {
            let i = at(rng, len);
            let n = rng.random_range(1..=16);
            let fill: u8 = rng.random();
            data.splice(i..i, std::iter::repeat_n(fill, n));
        }
        4 if len > 0 => {
            let i = at(rng, len);
            let n = rng.random_range(1..=(len - i).min(64));
            data.drain(i..i + n);
        }
        5 if len > 0 => {
            data.truncate(rng.random_range(0..len));
        }
        6 if !other.is_empty() => {
            // Splice a chunk of the other input over ours.
            let from = rng.random_range(0..other.len());
            let n = rng.random_range(1..=(other.len() - from).min(256));
            let i = at(rng, len);
            let end = (i + n).min(len);
            data.splice(i..end, other[from..from + n].iter().copied());
        }
        7 if len > 1 => {
            // Duplicate a chunk (repeated records, sections, lines).
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(128));
            let chunk = data[i..i + n].to_vec();
            let to = rng.random_range(0..=len);
            data.splice(to..to, chunk);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn mutations_change_inputs_and_reach_every_length_class() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let base: Vec<u8> = (0..200u8).collect();
        let other = vec![0xaa; 50];
        let (mut changed, mut shorter, mut longer) = (0, 0, 0);
        for _ in 0..1000 {
            let m = mutate(&base, &other, &mut rng);
            changed += usize::from(m != base);
            shorter += usize::from(m.len() < base.len());
            longer += usize::from(m.len() > base.len());
        }
        assert!(changed > 950, "{changed}");
        assert!(shorter > 100 && longer > 100, "{shorter} {longer}");
    }

    #[test]
    fn an_empty_input_can_grow() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        assert!((0..100).any(|_| !mutate(&[], b"xyz", &mut rng).is_empty()));
    }
}
