//! What a vCPU writes to its SGI generation registers (`ICC_SGI1R_EL1`, `ICC_SGI0R_EL1`, `ICC_ASGI1R_EL1` share one layout), and affinities as the GIC packs them.
//!
//! Portable, so it is unit-tested on the host. One write reaches the CPUs of
//! one cluster: those that share `Aff3.Aff2.Aff1` and the range of 16 `Aff0`
//! values the range selector `RS` picks, each named by bit `Aff0 % 16` of the
//! target list. A list of CPUs spread over several clusters takes one write
//! per cluster ([`to_cpus`]). With `IRM` = 1 the SGI goes to every CPU but
//! the writer ([`to_others`]), and the affinity fields are ignored.

/// `IRM`: route to every PE but the writer.
pub const IRM: u64 = 1 << 40;
/// SGIs are INTIDs 0–15.
pub const COUNT: u32 = 16;
/// The affinity fields of an `MPIDR_EL1` (Aff3 at 39:32, Aff2–Aff0 at 23:0).
pub const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// `Aff3.Aff2.Aff1.Aff0` of `mpidr` packed in 32 bits, as
/// `GICR_TYPER[63:32]` holds a redistributor's affinity.
pub fn affinity(mpidr: u64) -> u32 {
    (((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff)) as u32
}

/// The `GICD_IROUTER<n>` value routing an SPI to the CPU `mpidr`
/// (`Interrupt_Routing_Mode` 0: that CPU only).
pub fn irouter(mpidr: u64) -> u64 {
    mpidr & MPIDR_AFFINITY
}

/// The cluster part of a register value: Aff3, RS, Aff2, Aff1.
fn cluster(mpidr: u64) -> u64 {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    aff3 << 48 | (aff0 / 16) << 44 | aff2 << 32 | aff1 << 16
}

/// The target-list bit of `mpidr` within its cluster.
fn bit(mpidr: u64) -> u64 {
    1 << ((mpidr & 0xff) % 16)
}

/// The value sending SGI `intid` (0–15) to the one CPU `mpidr`.
pub fn to_cpu(intid: u32, mpidr: u64) -> u64 {
    cluster(mpidr) | u64::from(intid & 0xf) << 24 | bit(mpidr)
}

/// The value sending SGI `intid` to every CPU but the writer (`IRM` = 1).
pub fn to_others(intid: u32) -> u64 {
    IRM | u64::from(intid & 0xf) << 24
}

/// The values sending SGI `intid` to every CPU in `mpidrs`: one per
/// cluster, in the order each cluster first appears (a CPU listed twice
/// gets the SGI once).
pub fn to_cpus(intid: u32, mpidrs: &[u64]) -> impl Iterator<Item = u64> + '_ {
    mpidrs.iter().enumerate().filter_map(move |(i, &first)| {
        let group = cluster(first);
        if mpidrs[..i].iter().any(|&m| cluster(m) == group) {
            return None;
        }
        let list = mpidrs[i..]
            .iter()
            .filter(|&&m| cluster(m) == group)
            .fold(0, |list, &m| list | bit(m));
        Some(group | u64::from(intid & 0xf) << 24 | list)
    })
}

/// The CPUs (affinity fields only) that a value written by CPU `writer`
/// reaches among `cpus`: what a GIC does with it (for the tests, and to say
/// what a scenario expects).
pub fn targets(value: u64, writer: u64, cpus: &[u64]) -> impl Iterator<Item = u64> + '_ {
    let writer = writer & MPIDR_AFFINITY;
    cpus.iter().map(|&m| m & MPIDR_AFFINITY).filter(move |&m| {
        if value & IRM != 0 {
            m != writer
        } else {
            cluster(m) == value & (0xff << 48 | 0xf << 44 | 0xff << 32 | 0xff << 16)
                && value & bit(m) != 0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu() {
        assert_eq!(to_cpu(0, 0), 1);
        assert_eq!(to_cpu(5, 3), 5 << 24 | 1 << 3);
        assert_eq!(to_cpu(15, 0x8000_0007), 15 << 24 | 1 << 7);
        // Aff1 2, Aff0 17: range selector 1, bit 1.
        assert_eq!(to_cpu(1, 0x211), 1 << 44 | 2 << 16 | 1 << 24 | 1 << 1);
        // Aff3 and Aff2.
        assert_eq!(
            to_cpu(2, 0x12_0034_0500),
            0x12 << 48 | 0x34 << 32 | 5 << 16 | 2 << 24 | 1
        );
        // Only the SGI's four bits.
        assert_eq!(to_cpu(0x13, 0), 3 << 24 | 1);
    }

    #[test]
    fn broadcast() {
        assert_eq!(to_others(9), 1 << 40 | 9 << 24);
        let cpus = [0, 1, 2, 3];
        let got: Vec<u64> = targets(to_others(9), 0x8000_0002, &cpus).collect();
        assert_eq!(got, [0, 1, 3]);
    }

    #[test]
    fn lists_group_by_cluster() {
        let cpus = [0, 1, 2, 3, 4, 5, 6, 7];
        let got: Vec<u64> = to_cpus(4, &cpus).collect();
        assert_eq!(got, [4 << 24 | 0xff]);

        let cpus = [0x100, 0, 0x103, 0x12, 5, 0x1_0000_0000, 5];
        let got: Vec<u64> = to_cpus(1, &cpus).collect();
        assert_eq!(
            got,
            [
                1 << 16 | 1 << 24 | 1 | 1 << 3,
                1 << 24 | 1 | 1 << 5,
                1 << 44 | 1 << 24 | 1 << 2,
                1 << 48 | 1 << 24 | 1,
            ]
        );
        // Every CPU listed is reached exactly once, and no other.
        let everyone = [0, 1, 5, 0x12, 0x100, 0x103, 0x104, 0x1_0000_0000];
        let mut reached: Vec<u64> = got.iter().flat_map(|&v| targets(v, 0, &everyone)).collect();
        reached.sort_unstable();
        let mut want = cpus.to_vec();
        want.sort_unstable();
        want.dedup();
        assert_eq!(reached, want);
        assert_eq!(to_cpus(1, &[]).count(), 0);
    }

    #[test]
    fn affinities() {
        assert_eq!(affinity(0x8000_0003), 3);
        assert_eq!(affinity(0x12_8034_5678), 0x1234_5678);
        assert_eq!(irouter(0x12_8034_5678), 0x12_0034_5678);
    }
}
