//! Describing several VMs: each VM's settings (its physical CPUs, RAM, stage-2 budget, command line), read from the guest bundle's config part, and the checks that a set of them fits the machine before anything boots.
//!
//! One VM's description is one line:
//!
//! ```text
//! cpus=0-1,3 mem=128M [block=4K|2M|1G] [budget=PAGES] -- the guest's command line
//! ```
//!
//! `cpus=` names physical CPUs (ranges and single numbers, comma
//! separated); the VM gets one vCPU per CPU, vCPU n on the n-th lowest. A
//! CPU belongs to at most one VM ([`check`]). `budget=` caps the pages its
//! stage-2 tables may take (default: [`default_budget`], enough to map all
//! its memory with 4 KiB pages). `scripts/run.sh --vm` and `cargo xtask
//! bundle --vm-spec` write these lines; the hypervisor reads them with
//! [`VmSpec::parse`] and refuses the whole set with a clear error if one
//! does not parse or does not fit.

use core::fmt;

use crate::bootargs;
use crate::memmap::ROM_SIZE;

/// Most VMs a set may have (the hypervisor's VM table).
pub const MAX_VMS: usize = 8;
/// Most CPUs a `cpus=` may name (the hypervisor's CPU limit).
pub const MAX_CPUS: usize = 8;

/// A set of physical CPUs (bit n: CPU n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSet(pub u64);

impl CpuSet {
    /// The CPUs, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |&c| self.0 & (1 << c) != 0)
    }

    /// How many.
    #[must_use]
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether it is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses `0-1,3`.
    fn parse(text: &str) -> Option<Self> {
        let mut set = 0u64;
        for item in text.split(',') {
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
                None => {
                    let n = item.parse::<usize>().ok()?;
                    (n, n)
                }
            };
            if lo > hi || hi >= MAX_CPUS {
                return None;
            }
            for c in lo..=hi {
                set |= 1 << c;
            }
        }
        (set != 0).then_some(Self(set))
    }
}

impl fmt::Display for CpuSet {
    /// `0-1,3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut c = 0;
        while c < 64 {
            if self.0 & (1 << c) == 0 {
                c += 1;
                continue;
            }
            let start = c;
            while c + 1 < 64 && self.0 & (1 << (c + 1)) != 0 {
                c += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == c {
                write!(f, "{c}")?;
            } else {
                write!(f, "{start}-{c}")?;
            }
            c += 1;
        }
        Ok(())
    }
}

/// One VM's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSpec<'a> {
    /// Its physical CPUs (one vCPU each).
    pub cpus: CpuSet,
    /// Its RAM, bytes.
    pub mem: u64,
    /// The largest block a stage-2 fault maps, if given.
    pub block: Option<u64>,
    /// Its stage-2 table budget in pages, if given.
    pub budget: Option<usize>,
    /// The guest's command line.
    pub guest_args: &'a str,
}

/// Why a description is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError<'a> {
    /// A setting this format does not have.
    Unknown(&'a str),
    /// A setting given twice.
    Twice(&'a str),
    /// A bad value, and what it must be.
    Bad {
        /// The setting.
        key: &'a str,
        /// The value given.
        value: &'a str,
        /// What it must be.
        expected: &'static str,
    },
    /// A required setting missing.
    Missing(&'static str),
}

impl fmt::Display for SpecError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(key) => write!(f, "unknown setting `{key}` (expected cpus=, mem=, block=, budget=, then -- and the guest's command line)"),
            Self::Twice(key) => write!(f, "`{key}=` given twice"),
            Self::Bad { key, value, expected } => write!(f, "bad `{key}={value}`: expected {expected}"),
            Self::Missing(key) => write!(f, "no `{key}=`"),
        }
    }
}

impl<'a> VmSpec<'a> {
    /// Parses one VM's description line.
    ///
    /// # Errors
    ///
    /// A [`SpecError`] naming the setting.
    pub fn parse(line: &'a str) -> Result<Self, SpecError<'a>> {
        let (own, guest_args) = bootargs::split_guest(line);
        let (mut cpus, mut mem, mut block, mut budget) = (None, None, None, None);
        for token in own.split_ascii_whitespace() {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            let bad = |expected| SpecError::Bad {
                key,
                value,
                expected,
            };
            let slot_taken = match key {
                "cpus" => cpus
                    .replace(
                        CpuSet::parse(value)
                            .ok_or_else(|| bad("CPU numbers and ranges below 8, e.g. 0-1,3"))?,
                    )
                    .is_some(),
                "mem" => mem
                    .replace(
                        // No allocation: this runs before the heap exists.
                        bootargs::parse_guest_mem(value)
                            .map_err(|_| bad("a size, a multiple of 2M, e.g. 128M"))?,
                    )
                    .is_some(),
                "block" => block
                    .replace(match value {
                        "4K" | "4k" => 4 << 10,
                        "2M" | "2m" => 2 << 20,
                        "1G" | "1g" => 1 << 30,
                        _ => return Err(bad("4K, 2M or 1G")),
                    })
                    .is_some(),
                "budget" => budget
                    .replace(
                        value
                            .parse::<usize>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| bad("a number of pages, at least 1"))?,
                    )
                    .is_some(),
                _ => return Err(SpecError::Unknown(key)),
            };
            if slot_taken {
                return Err(SpecError::Twice(key));
            }
        }
        Ok(Self {
            cpus: cpus.ok_or(SpecError::Missing("cpus"))?,
            mem: mem.ok_or(SpecError::Missing("mem"))?,
            block,
            budget,
            guest_args,
        })
    }

    /// Its stage-2 budget: as given, else [`default_budget`].
    #[must_use]
    pub fn budget(&self) -> usize {
        self.budget
            .unwrap_or_else(|| default_budget(self.mem, self.cpus.len()))
    }
}

/// A VM's default stage-2 budget: twice the tables that map its RAM and
/// ROM slot with 4 KiB pages (one last-level table per 2 MiB, one per
/// 1 GiB above), since pages held ready in caches count too (a dirty log's
/// enabling tops one up with a table per block it will split, while the
/// tree may already have some), plus the root and slack, plus the pages
/// each vCPU's fault path keeps ready. A guest cannot need more; a VM
/// given less (`budget=`) may be stopped.
#[must_use]
pub const fn default_budget(mem: u64, vcpus: usize) -> usize {
    let covered = mem + ROM_SIZE;
    let l3 = covered.div_ceil(2 << 20);
    let l2 = covered.div_ceil(1 << 30) + 1;
    2 * (l3 + l2) as usize + 16 + 3 * vcpus
}

/// Why a set of VMs does not fit the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitError {
    /// More VMs than the table holds.
    TooManyVms(usize),
    /// A VM names a CPU that is not online.
    CpuOffline {
        /// The VM.
        vm: usize,
        /// The CPU.
        cpu: usize,
        /// CPUs online.
        online: usize,
    },
    /// Two VMs name the same CPU.
    Overlap {
        /// The first VM.
        a: usize,
        /// The second.
        b: usize,
        /// The CPUs both name.
        cpus: CpuSet,
    },
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooManyVms(n) => write!(f, "{n} VMs described, at most {MAX_VMS}"),
            Self::CpuOffline { vm, cpu, online } => write!(
                f,
                "vm{vm}: cpus= names CPU {cpu}, but only {online} CPUs are online (QEMU -smp)"
            ),
            Self::Overlap { a, b, cpus } => {
                write!(
                    f,
                    "vm{a} and vm{b} both name CPU(s) {cpus}: a CPU runs one VM's vCPU"
                )
            }
        }
    }
}

/// Checks that `vms` (VM n's settings at index n) fit `online` CPUs: each
/// CPU online and in one VM only.
///
/// # Errors
///
/// The first [`FitError`] found.
pub fn check(vms: &[VmSpec<'_>], online: usize) -> Result<(), FitError> {
    if vms.len() > MAX_VMS {
        return Err(FitError::TooManyVms(vms.len()));
    }
    for (i, vm) in vms.iter().enumerate() {
        if let Some(cpu) = vm.cpus.iter().find(|&c| c >= online) {
            return Err(FitError::CpuOffline { vm: i, cpu, online });
        }
        for (j, other) in vms.iter().enumerate().skip(i + 1) {
            let both = vm.cpus.0 & other.cpus.0;
            if both != 0 {
                return Err(FitError::Overlap {
                    a: i,
                    b: j,
                    cpus: CpuSet(both),
                });
            }
        }
    }
    Ok(())
}

/// The CPUs no VM in `vms` uses, of `online` (for jobs).
#[must_use]
pub fn spare_cpus(vms: &[VmSpec<'_>], online: usize) -> CpuSet {
    let used = vms.iter().fold(0, |acc, v| acc | v.cpus.0);
    let all = if online >= 64 {
        u64::MAX
    } else {
        (1u64 << online) - 1
    };
    CpuSet(all & !used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::ToString;

    #[test]
    fn a_description() {
        let s =
            VmSpec::parse("cpus=0-1,3 mem=128M block=4K budget=99 -- console=ttyAMA0 x=1").unwrap();
        assert_eq!(s.cpus, CpuSet(0b1011));
        assert_eq!(s.cpus.iter().collect::<std::vec::Vec<_>>(), [0, 1, 3]);
        assert_eq!(s.cpus.len(), 3);
        assert_eq!(s.mem, 128 << 20);
        assert_eq!(s.block, Some(4 << 10));
        assert_eq!(s.budget(), 99);
        assert_eq!(s.guest_args, "console=ttyAMA0 x=1");
        let d = VmSpec::parse("mem=64M cpus=2").unwrap();
        assert_eq!((d.cpus, d.block, d.guest_args), (CpuSet(4), None, ""));
        assert_eq!(d.budget(), default_budget(64 << 20, 1));
        assert_eq!(CpuSet(0b1011).to_string(), "0-1,3");
        assert_eq!(CpuSet(0b111_0101).to_string(), "0,2,4-6");
    }

    #[test]
    fn refusals() {
        fn err(line: &str) -> std::string::String {
            VmSpec::parse(line).unwrap_err().to_string()
        }
        assert_eq!(err("mem=64M"), "no `cpus=`");
        assert_eq!(err("cpus=0"), "no `mem=`");
        assert_eq!(err("cpus=0 mem=64M cpus=1"), "`cpus=` given twice");
        assert!(err("cpus=0 mem=64M smp=2").starts_with("unknown setting `smp`"));
        for bad in [
            "cpus=",
            "cpus=8",
            "cpus=3-1",
            "cpus=a",
            "cpus=0,,1",
            "cpus=0-",
        ] {
            assert!(
                err(&format!("{bad} mem=64M")).starts_with("bad `cpus="),
                "{bad}"
            );
        }
        assert!(err("cpus=0 mem=3M").starts_with("bad `mem=3M`: expected a size"));
        assert!(err("cpus=0 mem=64M block=8K").starts_with("bad `block=8K`"));
        assert!(err("cpus=0 mem=64M budget=0").starts_with("bad `budget=0`"));
    }

    #[test]
    fn sets_that_fit_and_do_not() {
        let a = VmSpec::parse("cpus=0-1 mem=64M").unwrap();
        let b = VmSpec::parse("cpus=2 mem=64M").unwrap();
        let c = VmSpec::parse("cpus=1-2 mem=64M").unwrap();
        assert_eq!(check(&[a, b], 4), Ok(()));
        assert_eq!(spare_cpus(&[a, b], 4), CpuSet(0b1000));
        assert_eq!(
            check(&[a, b, c], 4),
            Err(FitError::Overlap {
                a: 0,
                b: 2,
                cpus: CpuSet(0b10)
            })
        );
        assert_eq!(
            check(&[a, b], 2),
            Err(FitError::CpuOffline {
                vm: 1,
                cpu: 2,
                online: 2
            })
        );
        assert_eq!(check(&[a; 9], 8), Err(FitError::TooManyVms(9)));
        assert_eq!(
            FitError::Overlap {
                a: 0,
                b: 2,
                cpus: CpuSet(0b10)
            }
            .to_string(),
            "vm0 and vm2 both name CPU(s) 1: a CPU runs one VM's vCPU"
        );
    }

    #[test]
    fn the_default_budget_maps_everything_with_pages() {
        // 128 MiB + the 2 MiB ROM: 65 last-level tables, 2 above, twice,
        // the root and slack, 3 per vCPU.
        assert_eq!(default_budget(128 << 20, 2), 2 * (65 + 2) + 16 + 6);
    }

    proptest! {
        #[test]
        fn cpu_sets_print_and_parse_back(mask in 1u64..256) {
            let text = CpuSet(mask).to_string();
            prop_assert_eq!(CpuSet::parse(&text), Some(CpuSet(mask)));
        }

        #[test]
        fn parse_never_panics(line in "[a-z0-9=, -]{0,60}") {
            let _ = VmSpec::parse(&line);
        }
    }
}
