//! Seeds for guests (`/chosen/rng-seed`, `kaslr-seed`): ChaCha20 keyed once from the hypervisor's own entropy, one stream per VM boot.
//!
//! The hypervisor's entropy is what the machine gives it: the CPU's
//! `RNDR` where it has one, else the `rng-seed` (and `kaslr-seed`) QEMU
//! puts in the host device tree, mixed with the counter at boot. That is
//! read once into a 256-bit key; every seed a guest gets is a ChaCha20
//! block of its own (stream = VM, block counter = how many times that VM
//! booted), so no two boots see the same seed and no guest learns the key
//! or another VM's seed.

/// ChaCha20's constant words, `"expand 32-byte k"`.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// One ChaCha20 block (RFC 8439, section 2.3): 64 bytes from `key`,
/// block `counter` and `nonce`.
#[must_use]
pub fn chacha20_block(key: &[u32; 8], counter: u32, nonce: &[u32; 3]) -> [u8; 64] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&SIGMA);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(nonce);
    let mut s = init;
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for (i, word) in s.iter().enumerate() {
        let w = word.wrapping_add(init[i]);
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The hypervisor's seed source: a key gathered once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entropy {
    key: [u32; 8],
}

/// What one VM boot gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestSeeds {
    /// `/chosen/rng-seed`.
    pub rng_seed: [u8; 32],
    /// `/chosen/kaslr-seed`.
    pub kaslr_seed: u64,
}

impl Entropy {
    /// A key from `inputs`, each folded in turn (XOR after a ChaCha20
    /// round of the key so far, so that the order and every byte count).
    #[must_use]
    pub fn gather<'a>(inputs: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut key = [0u32; 8];
        for (n, input) in inputs.into_iter().enumerate() {
            // At least one round per input, so that an empty one counts.
            let rounds = input.len().div_ceil(32).max(1);
            for c in 0..rounds {
                let chunk = input
                    .get(32 * c..input.len().min(32 * c + 32))
                    .unwrap_or(&[]);
                let mut words = [0u32; 8];
                for (i, b) in chunk.iter().enumerate() {
                    words[i / 4] |= u32::from(*b) << (8 * (i % 4));
                }
                let mixed = chacha20_block(&key, c as u32, &[n as u32, chunk.len() as u32, 0]);
                for i in 0..8 {
                    let m = u32::from_le_bytes([
                        mixed[4 * i],
                        mixed[4 * i + 1],
                        mixed[4 * i + 2],
                        mixed[4 * i + 3],
                    ]);
                    key[i] = m ^ words[i];
                }
            }
        }
        Self { key }
    }

    /// The seeds of boot number `boot` of VM `vm`.
    #[must_use]
    pub fn seeds(&self, vm: u16, boot: u32) -> GuestSeeds {
        let block = chacha20_block(&self.key, boot, &[u32::from(vm), 0x7365_6564, 0]);
        let mut rng_seed = [0; 32];
        rng_seed.copy_from_slice(&block[..32]);
        let mut kaslr = [0; 8];
        kaslr.copy_from_slice(&block[32..40]);
        GuestSeeds {
            rng_seed,
            kaslr_seed: u64::from_le_bytes(kaslr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439, 2.3.2: the block function's test vector.
    #[test]
    fn rfc8439_block() {
        let key: [u32; 8] = core::array::from_fn(|i| {
            u32::from_le_bytes([
                4 * i as u8,
                4 * i as u8 + 1,
                4 * i as u8 + 2,
                4 * i as u8 + 3,
            ])
        });
        let nonce = [0x0900_0000, 0x4a00_0000, 0];
        let out = chacha20_block(&key, 1, &nonce);
        let want: [u8; 64] = [
            0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20,
            0x71, 0xc4, 0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22, 0xaa, 0x9a,
            0xc3, 0xd4, 0x6c, 0x4e, 0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa, 0x09, 0x14, 0xc2,
            0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2, 0xb5, 0x12, 0x9c, 0xd1, 0xde, 0x16, 0x4e, 0xb9,
            0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn every_boot_and_vm_differs() {
        let e = Entropy::gather([&b"seed from the host"[..], &7u64.to_le_bytes()]);
        let mut seen = std::collections::HashSet::new();
        for vm in 0..4 {
            for boot in 0..4 {
                let s = e.seeds(vm, boot);
                assert!(seen.insert(s.rng_seed), "vm {vm} boot {boot} repeats");
                assert!(seen.insert(s.kaslr_seed.to_le_bytes().repeat(4).try_into().unwrap()));
            }
        }
        assert_eq!(e.seeds(1, 2), e.seeds(1, 2), "deterministic for one key");
    }

    #[test]
    fn every_input_byte_and_the_order_count() {
        let base = Entropy::gather([&[1u8, 2, 3][..], &[4u8][..]]);
        assert_ne!(base, Entropy::gather([&[1u8, 2, 4][..], &[4u8][..]]));
        assert_ne!(base, Entropy::gather([&[4u8][..], &[1u8, 2, 3][..]]));
        assert_ne!(base, Entropy::gather([&[1u8, 2, 3, 4][..]]));
        assert_ne!(
            base,
            Entropy::gather([&[1u8, 2, 3][..], &[4u8][..], &[][..]])
        );
        let long: std::vec::Vec<u8> = (0..100).collect();
        let mut longer = long.clone();
        longer[99] ^= 1;
        assert_ne!(Entropy::gather([&long[..]]), Entropy::gather([&longer[..]]));
        assert_ne!(Entropy::gather([&long[..]]).seeds(0, 0), base.seeds(0, 0));
    }
}
