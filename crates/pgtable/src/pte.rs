//! Descriptor encodings: the bits of a table, block or page entry, for stage 2 and EL2 stage 1.

use crate::geometry::Level;

const VALID: u64 = 1 << 0;
/// Bit 1: "table" at levels 0-2, "page" at level 3 (Arm ARM D8.3).
const TABLE_OR_PAGE: u64 = 1 << 1;
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Access flag (both stages).
pub(crate) const AF: u64 = 1 << 10;
/// Shareability field: inner shareable.
const SH_INNER: u64 = 0b11 << 8;
/// Software bit 55 in an *invalid* entry: a walker holds it for
/// break-before-make. Hardware ignores invalid entries, other walkers see
/// the lock and report a lost race.
const LOCKED: u64 = 1 << 55;

/// Stage 2: `S2AP[0]`, read allowed.
pub(crate) const S2_R: u64 = 1 << 6;
/// Stage 2: `S2AP[1]`, write allowed.
pub(crate) const S2_W: u64 = 1 << 7;
/// Stage 2: `XN[1]`, execute never at EL1 and EL0.
pub(crate) const S2_XN: u64 = 1 << 54;
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
const S2_MEMATTR_MASK: u64 = 0b1111 << 2;

/// EL2 stage 1: `AttrIndx` (into `MAIR_EL2`).
const S1_ATTRIDX_SHIFT: u32 = 2;
/// EL2 stage 1: `AP[2]`, read-only.
const S1_AP_RO: u64 = 1 << 7;
/// EL2 stage 1: `AP[1]`, RES1 in the EL2 regime without E2H.
const S1_AP_RES1: u64 = 1 << 6;
/// EL2 stage 1: `XN`.
const S1_XN: u64 = 1 << 54;

/// `MAIR_EL2` attribute index for Device-nGnRE.
pub const MAIR_IDX_DEVICE: u64 = 0;
/// `MAIR_EL2` attribute index for Normal write-back cacheable memory.
pub const MAIR_IDX_NORMAL: u64 = 1;
/// The `MAIR_EL2` value the EL2 stage-1 encoding assumes:
/// index 0 Device-nGnRE (0x04), index 1 Normal inner/outer WB RW-allocate (0xff).
pub const MAIR_EL2_VALUE: u64 = 0x04 | (0xff << 8);

/// Access permissions and memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Prot(u8);

impl Prot {
    /// Readable.
    pub const R: Prot = Prot(1);
    /// Writable.
    pub const W: Prot = Prot(2);
    /// Executable.
    pub const X: Prot = Prot(4);
    /// Device memory (otherwise Normal write-back).
    pub const DEVICE: Prot = Prot(8);
    /// Read and write.
    pub const RW: Prot = Prot(1 | 2);
    /// Read, write and execute.
    pub const RWX: Prot = Prot(1 | 2 | 4);
    /// No access at all.
    pub const NONE: Prot = Prot(0);

    /// Both sets of bits.
    #[must_use]
    #[inline]
    pub const fn union(self, other: Prot) -> Prot {
        Prot(self.0 | other.0)
    }

    /// These bits without `other`'s.
    #[must_use]
    pub const fn without(self, other: Prot) -> Prot {
        Prot(self.0 & !other.0)
    }

    /// Whether every bit of `other` is set here.
    #[must_use]
    #[inline]
    pub const fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits (for diagnostics).
    #[must_use]
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The value with these raw bits, if they are all known.
    #[must_use]
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<Prot> {
        if bits & !0xf == 0 {
            Some(Prot(bits))
        } else {
            None
        }
    }
}

impl core::fmt::Display for Prot {
    /// `rwx`-style, with `-` for a missing permission and ` dev` for device memory.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let flag = |p, c| if self.contains(p) { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            flag(Prot::R, 'r'),
            flag(Prot::W, 'w'),
            flag(Prot::X, 'x')
        )?;
        if self.contains(Prot::DEVICE) {
            f.write_str(" dev")?;
        }
        Ok(())
    }
}

/// One translation-table entry, as a value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pte(u64);

impl core::fmt::Debug for Pte {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pte({:#018x})", self.0)
    }
}

impl Pte {
    /// The invalid, unlocked entry.
    pub const INVALID: Pte = Pte(0);
    /// The invalid entry a walker holds during break-before-make.
    pub const LOCKED: Pte = Pte(LOCKED);

    /// The entry with these raw bits.
    #[must_use]
    #[inline]
    pub const fn from_bits(bits: u64) -> Pte {
        Pte(bits)
    }

    /// The raw bits.
    #[must_use]
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether hardware would use this entry.
    #[must_use]
    #[inline]
    pub const fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// Whether another walker holds this entry for break-before-make.
    #[must_use]
    #[inline]
    pub const fn is_locked(self) -> bool {
        !self.is_valid() && self.0 & LOCKED != 0
    }

    /// Whether this entry points to a next-level table at `level`.
    #[must_use]
    #[inline]
    pub const fn is_table(self, level: Level) -> bool {
        level.get() < 3 && self.0 & (VALID | TABLE_OR_PAGE) == (VALID | TABLE_OR_PAGE)
    }

    /// Whether this entry maps memory (a block, or a page at level 3).
    #[must_use]
    #[inline]
    pub const fn is_leaf(self, level: Level) -> bool {
        self.is_valid() && !self.is_table(level)
    }

    /// The output address (of the table, block or page).
    #[must_use]
    #[inline]
    pub const fn output_address(self) -> u64 {
        self.0 & OA_MASK
    }

    /// A table entry pointing to the table page at `pa`.
    #[must_use]
    #[inline]
    pub const fn table(pa: u64) -> Pte {
        Pte((pa & OA_MASK) | VALID | TABLE_OR_PAGE)
    }

    /// Whether the access flag is set.
    #[must_use]
    #[inline]
    pub const fn young(self) -> bool {
        self.0 & AF != 0
    }

    /// This entry with `set` bits set and `clear` bits cleared.
    #[must_use]
    #[inline]
    pub const fn with(self, set: u64, clear: u64) -> Pte {
        Pte((self.0 & !clear) | set)
    }

    /// The leaf mapping `pa` at `level` with the attributes of `template`
    /// (a leaf of any level).
    #[inline]
    pub(crate) const fn leaf_at(template: u64, pa: u64, level: Level) -> Pte {
        let kind = if level.get() == 3 { TABLE_OR_PAGE } else { 0 };
        Pte((template & !(OA_MASK | TABLE_OR_PAGE)) | (pa & OA_MASK) | kind | VALID)
    }
}

/// A translation regime's encoding of leaf attributes.
pub trait Format: Send + Sync + 'static {
    /// A short name for logs.
    const NAME: &'static str;
    /// Whether any memory this regime maps can need cache maintenance.
    const HAS_CMO: bool;
    /// Leaf attribute bits (no output address, no level bits) for `prot`,
    /// with the access flag set.
    fn leaf_attrs(prot: Prot) -> u64;
    /// The permissions and type a leaf grants.
    fn prot(pte: Pte) -> Prot;
    /// Whether memory mapped by this leaf needs cache maintenance when it
    /// appears in or leaves the tree (Normal memory, guest-visible).
    fn needs_cmo(pte: Pte) -> bool;
}

/// Stage 2 (IPA -> PA) for guests.
#[derive(Debug)]
pub enum Stage2 {}

impl Format for Stage2 {
    const NAME: &'static str = "stage-2";
    const HAS_CMO: bool = true;

    fn leaf_attrs(prot: Prot) -> u64 {
        let mut bits = AF | SH_INNER;
        bits |= if prot.contains(Prot::DEVICE) {
            S2_MEMATTR_DEVICE_NGNRE
        } else {
            S2_MEMATTR_NORMAL_WB
        };
        if prot.contains(Prot::R) {
            bits |= S2_R;
        }
        if prot.contains(Prot::W) {
            bits |= S2_W;
        }
        if !prot.contains(Prot::X) {
            bits |= S2_XN;
        }
        bits
    }

    fn prot(pte: Pte) -> Prot {
        let b = pte.bits();
        let mut p = Prot::NONE;
        if b & S2_R != 0 {
            p = p.union(Prot::R);
        }
        if b & S2_W != 0 {
            p = p.union(Prot::W);
        }
        if b & S2_XN == 0 {
            p = p.union(Prot::X);
        }
        if b & S2_MEMATTR_MASK == S2_MEMATTR_DEVICE_NGNRE {
            p = p.union(Prot::DEVICE);
        }
        p
    }

    fn needs_cmo(pte: Pte) -> bool {
        pte.bits() & S2_MEMATTR_MASK == S2_MEMATTR_NORMAL_WB
    }
}

/// Stage-2 permission bits a relax or write-protect may change.
pub(crate) fn stage2_perm_bits(prot: Prot) -> u64 {
    let mut bits = 0;
    if prot.contains(Prot::R) {
        bits |= S2_R;
    }
    if prot.contains(Prot::W) {
        bits |= S2_W;
    }
    if prot.contains(Prot::X) {
        bits |= S2_XN;
    }
    bits
}

/// EL2 stage 1 (the hypervisor's own VA -> PA, `TTBR0_EL2`, no VHE).
#[derive(Debug)]
pub enum El2 {}

impl Format for El2 {
    const NAME: &'static str = "EL2 stage-1";
    const HAS_CMO: bool = false;

    fn leaf_attrs(prot: Prot) -> u64 {
        let idx = if prot.contains(Prot::DEVICE) {
            MAIR_IDX_DEVICE
        } else {
            MAIR_IDX_NORMAL
        };
        let mut bits = AF | SH_INNER | S1_AP_RES1 | (idx << S1_ATTRIDX_SHIFT);
        if !prot.contains(Prot::W) {
            bits |= S1_AP_RO;
        }
        if !prot.contains(Prot::X) || prot.contains(Prot::DEVICE) {
            bits |= S1_XN;
        }
        bits
    }

    fn prot(pte: Pte) -> Prot {
        let b = pte.bits();
        let mut p = Prot::R;
        if b & S1_AP_RO == 0 {
            p = p.union(Prot::W);
        }
        if b & S1_XN == 0 {
            p = p.union(Prot::X);
        }
        if (b >> S1_ATTRIDX_SHIFT) & 0b111 == MAIR_IDX_DEVICE {
            p = p.union(Prot::DEVICE);
        }
        p
    }

    fn needs_cmo(_pte: Pte) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(n: u8) -> Level {
        Level::new(n).unwrap()
    }

    #[test]
    fn leaf_kinds_per_level() {
        let a = Stage2::leaf_attrs(Prot::RW);
        let block = Pte::leaf_at(a, 0x4020_0000, lv(2));
        assert!(block.is_leaf(lv(2)) && !block.is_table(lv(2)));
        assert_eq!(block.bits() & 0b11, 0b01, "a block is 0b01");
        let page = Pte::leaf_at(a, 0x4020_1000, lv(3));
        assert_eq!(page.bits() & 0b11, 0b11, "a page is 0b11");
        assert!(page.is_leaf(lv(3)) && !page.is_table(lv(3)));
        let t = Pte::table(0x8000_3000);
        assert!(t.is_table(lv(0)) && !t.is_leaf(lv(1)));
        assert_eq!(t.output_address(), 0x8000_3000);
    }

    #[test]
    fn stage2_prot_round_trips() {
        for bits in 0..16 {
            let prot = Prot::from_bits(bits).unwrap();
            let pte = Pte::leaf_at(Stage2::leaf_attrs(prot), 0x1000, lv(3));
            assert_eq!(Stage2::prot(pte), prot, "prot {bits:#x}");
            assert!(pte.young());
            assert_eq!(Stage2::needs_cmo(pte), !prot.contains(Prot::DEVICE));
        }
    }

    #[test]
    fn stage2_bits_match_the_arm_arm() {
        let pte = Pte::leaf_at(Stage2::leaf_attrs(Prot::RW), 0x4000_0000, lv(1));
        // S2AP=0b11 (6-7), MemAttr=0b1111 (2-5), SH=0b11 (8-9), AF (10), XN (54).
        assert_eq!(pte.bits(), 0x0040_0000_4000_07fd);
    }

    #[test]
    fn el2_prot_round_trips() {
        for prot in [
            Prot::R,
            Prot::RW,
            Prot::R.union(Prot::X),
            Prot::RW.union(Prot::DEVICE),
        ] {
            let pte = Pte::leaf_at(El2::leaf_attrs(prot), 0x1000, lv(3));
            assert_eq!(El2::prot(pte), prot);
        }
        // Device memory is never executable.
        let dev = Pte::leaf_at(El2::leaf_attrs(Prot::RWX.union(Prot::DEVICE)), 0, lv(3));
        assert!(!El2::prot(dev).contains(Prot::X));
    }

    #[test]
    fn prot_displays_like_ls() {
        assert_eq!(Prot::RW.to_string(), "rw-");
        assert_eq!(Prot::R.union(Prot::X).to_string(), "r-x");
        assert_eq!(Prot::RW.union(Prot::DEVICE).to_string(), "rw- dev");
    }

    #[test]
    fn locked_is_invalid_and_distinct() {
        assert!(!Pte::LOCKED.is_valid());
        assert!(Pte::LOCKED.is_locked());
        assert!(!Pte::INVALID.is_locked());
        assert!(!Pte::LOCKED.is_table(lv(1)));
    }
}
