//! What a guest abort inside a memory slot needs from stage 2 (map, relax, set the access flag, or refuse), and serving it with a fault-mode walk.
//!
//! [`plan`] is the decision, a pure function of the abort, the slot and
//! whether the slot is dirty-logged; [`serve`] carries a plan out on the
//! stage-2 tree with a **fault-mode** walk (shared with other vCPUs, never
//! retrying: a lost race means "return to the guest and let it fault again
//! if it still needs to", [`Error::Refault`]).
//!
//! | abort | slot not logged | slot logged |
//! |-------|-----------------|-------------|
//! | translation | map the largest block alignment allows, RW (R on a read-only slot), +X for a fetch | map the 4 KiB page; RW and mark dirty for a write, R for a read, +X for a fetch |
//! | permission, write | relax to W; or, on a page of a block-capable range (logging was turned off), map the block again | relax to W, then mark dirty |
//! | permission, fetch / read | relax to X / R (a fetch in a page range a block now fits maps the block) | relax to X / R |
//! | access flag | set it | set it |
//! | write to a read-only slot, any other kind | refuse: the caller injects an abort | same |

use pgtable::{Error, MemCache, MmOps, Prot, Stage2, PAGE_SIZE};

use crate::dirty::DirtyLog;
use crate::guest_abort::{AbortKind, GuestAbort};
use crate::slots::MemSlot;

/// What to do about a stage-2 fault in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Map `[ipa, ipa + size)` to host `host` with `prot`.
    Map {
        /// First IPA.
        ipa: u64,
        /// Bytes: 4 KiB, 2 MiB or 1 GiB.
        size: u64,
        /// Host physical address of `ipa`.
        host: u64,
        /// Permissions.
        prot: Prot,
    },
    /// Add `prot` to the leaf that faulted.
    Relax {
        /// The permission the access needs.
        prot: Prot,
    },
    /// Set the access flag of the leaf that faulted.
    MkYoung,
    /// Refuse the access (the caller injects an abort), for this reason.
    Refuse(&'static str),
}

/// A [`Plan`], and whether the page is marked dirty once it succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// The stage-2 change.
    pub plan: Plan,
    /// Mark the page dirty after the change (a write to a logged slot).
    pub mark_dirty: bool,
}

/// Bytes a leaf at `level` maps (4 KiB granule).
const fn level_size(level: u8) -> u64 {
    PAGE_SIZE << (9 * (3 - level as u64))
}

/// Decides what the abort needs. `ipa` must lie in `slot` (the caller
/// found the slot by it); `max_block` caps the block a fault maps;
/// `logging` is the slot's dirty-log state, read under the stage-2 read
/// lock.
#[must_use]
pub fn plan(abort: &GuestAbort, slot: &MemSlot, max_block: u64, logging: bool) -> FaultPlan {
    let refuse = |why| FaultPlan {
        plan: Plan::Refuse(why),
        mark_dirty: false,
    };
    if abort.write && slot.readonly {
        return refuse("write to a read-only slot");
    }
    let exec = if abort.instruction {
        Prot::X
    } else {
        Prot::NONE
    };
    let logged_write = logging && abort.write;
    let plan = match abort.kind {
        AbortKind::Translation if logging => {
            let ipa = abort.ipa & !(PAGE_SIZE - 1);
            let data = if abort.write { Prot::RW } else { Prot::R };
            Plan::Map {
                ipa,
                size: PAGE_SIZE,
                host: slot.host + (ipa - slot.ipa),
                prot: data.union(exec),
            }
        }
        AbortKind::Translation => map_block(abort, slot, max_block, exec),
        AbortKind::Permission => {
            let fault_size = abort.level.map_or(PAGE_SIZE, level_size);
            let (_, block) = slot.block_for(abort.ipa, max_block);
            if !logging
                && !slot.readonly
                && block > fault_size
                && (abort.write || abort.instruction)
            {
                // A page left from dirty logging where a block fits again.
                map_block(abort, slot, max_block, exec)
            } else if abort.instruction {
                Plan::Relax { prot: Prot::X }
            } else if abort.write {
                Plan::Relax { prot: Prot::W }
            } else {
                Plan::Relax { prot: Prot::R }
            }
        }
        AbortKind::AccessFlag => Plan::MkYoung,
        _ => return refuse("unexpected fault kind"),
    };
    let mark_dirty = logged_write && !matches!(plan, Plan::MkYoung);
    FaultPlan { plan, mark_dirty }
}

/// The largest block alignment allows, with the slot's data permissions.
fn map_block(abort: &GuestAbort, slot: &MemSlot, max_block: u64, exec: Prot) -> Plan {
    let (ipa, size) = slot.block_for(abort.ipa, max_block);
    let data = if slot.readonly { Prot::R } else { Prot::RW };
    Plan::Map {
        ipa,
        size,
        host: slot.host + (ipa - slot.ipa),
        prot: data.union(exec),
    }
}

/// What [`serve`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Leaves installed, by level (0 to 3).
    pub mapped: [u64; 4],
    /// The page was marked dirty.
    pub marked: bool,
}

/// Carries out `fault` for the abort at `ipa` with a fault-mode walk on
/// `s2` (under the VM's read lock), table pages from `cache` (topped up
/// before the lock was taken); marks the page in `log` after a change that
/// a logged write needs.
///
/// # Errors
///
/// [`Error::Refault`] when another vCPU got there first or changed the
/// entry: return to the guest. [`Error::NoMemory`] if the cache ran dry.
/// A [`Plan::Refuse`] is not served: the caller handles it first.
pub fn serve<M: MmOps>(
    s2: &Stage2<M>,
    fault: FaultPlan,
    ipa: u64,
    log: Option<&DirtyLog>,
    cache: &mut MemCache,
) -> Result<Served, Error> {
    let ops = s2.fault();
    let mut served = Served::default();
    match fault.plan {
        Plan::Map {
            ipa,
            size,
            host,
            prot,
        } => {
            let mapped = ops.map(ipa, size, host, prot, cache)?;
            for (level, count) in served.mapped.iter_mut().enumerate() {
                *count = pgtable::Level::new(level as u8).map_or(0, |l| mapped.at(l));
            }
        }
        Plan::Relax { prot } => ops.relax_perms(ipa, prot)?,
        Plan::MkYoung => ops.mkyoung(ipa)?,
        Plan::Refuse(_) => return Ok(served),
    }
    if fault.mark_dirty {
        if let Some(log) = log {
            // After the entry became writable: see `crate::dirty`.
            log.mark(ipa);
            served.marked = true;
        }
    }
    Ok(served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_abort::GuestAbort;

    const M2: u64 = 2 << 20;
    const G1: u64 = 1 << 30;

    fn ram() -> MemSlot {
        MemSlot {
            name: "ram",
            ipa: 0x4000_0000,
            size: 64 << 20,
            host: 0x8000_0000,
            readonly: false,
        }
    }

    fn abort(kind: AbortKind, level: u8, write: bool, instruction: bool, ipa: u64) -> GuestAbort {
        GuestAbort::at(kind, level, write, instruction, ipa)
    }

    fn map(ipa: u64, size: u64, host: u64, prot: Prot) -> Plan {
        Plan::Map {
            ipa,
            size,
            host,
            prot,
        }
    }

    #[test]
    fn translation_maps_a_block_or_a_logged_page() {
        let slot = ram();
        let a = abort(AbortKind::Translation, 2, false, false, 0x4030_1234);
        let p = plan(&a, &slot, G1, false);
        assert_eq!(p.plan, map(0x4020_0000, M2, 0x8020_0000, Prot::RW));
        assert!(!p.mark_dirty);
        // Logged: the page, read-only for a read...
        let p = plan(&a, &slot, G1, true);
        assert_eq!(p.plan, map(0x4030_1000, PAGE_SIZE, 0x8030_1000, Prot::R));
        assert!(!p.mark_dirty);
        // ...writable and marked for a write, executable for a fetch.
        let w = abort(AbortKind::Translation, 2, true, false, 0x4030_1234);
        let p = plan(&w, &slot, G1, true);
        assert_eq!(p.plan, map(0x4030_1000, PAGE_SIZE, 0x8030_1000, Prot::RW));
        assert!(p.mark_dirty);
        let x = abort(AbortKind::Translation, 3, false, true, 0x4030_1234);
        let p = plan(&x, &slot, G1, true);
        assert_eq!(
            p.plan,
            map(0x4030_1000, PAGE_SIZE, 0x8030_1000, Prot::R.union(Prot::X))
        );
        // The block size cap holds without logging.
        let p = plan(&a, &slot, PAGE_SIZE, false);
        assert_eq!(p.plan, map(0x4030_1000, PAGE_SIZE, 0x8030_1000, Prot::RW));
    }

    #[test]
    fn permission_faults_relax_mark_or_bring_the_block_back() {
        let slot = ram();
        let w3 = abort(AbortKind::Permission, 3, true, false, 0x4030_1234);
        // Logged: relax, then mark.
        let p = plan(&w3, &slot, G1, true);
        assert_eq!(p.plan, Plan::Relax { prot: Prot::W });
        assert!(p.mark_dirty);
        // Logging off, a page where a 2 MiB block fits: the block comes back.
        let p = plan(&w3, &slot, G1, false);
        assert_eq!(p.plan, map(0x4020_0000, M2, 0x8020_0000, Prot::RW));
        assert!(!p.mark_dirty);
        // ...but not where only pages are allowed, nor at the block's own level.
        assert_eq!(
            plan(&w3, &slot, PAGE_SIZE, false).plan,
            Plan::Relax { prot: Prot::W }
        );
        let w2 = abort(AbortKind::Permission, 2, true, false, 0x4030_1234);
        assert_eq!(
            plan(&w2, &slot, G1, false).plan,
            Plan::Relax { prot: Prot::W }
        );
        // A fetch from a data page: X, never a mark.
        let x2 = abort(AbortKind::Permission, 2, false, true, 0x4030_1234);
        let p = plan(&x2, &slot, G1, true);
        assert_eq!(p.plan, Plan::Relax { prot: Prot::X });
        assert!(!p.mark_dirty);
    }

    #[test]
    fn access_flag_and_refusals() {
        let slot = ram();
        let af = abort(AbortKind::AccessFlag, 3, true, false, 0x4030_1234);
        let p = plan(&af, &slot, G1, true);
        assert_eq!(p.plan, Plan::MkYoung);
        assert!(!p.mark_dirty, "the write itself faults again if protected");
        let rom = MemSlot {
            readonly: true,
            ..ram()
        };
        let w = abort(AbortKind::Translation, 2, true, false, 0x4030_1234);
        assert_eq!(
            plan(&w, &rom, G1, false).plan,
            Plan::Refuse("write to a read-only slot")
        );
        let r = abort(AbortKind::Translation, 2, false, false, 0x4030_1234);
        assert_eq!(
            plan(&r, &rom, G1, false).plan,
            map(0x4020_0000, M2, 0x8020_0000, Prot::R)
        );
        let odd = abort(AbortKind::Alignment, 3, false, false, 0x4030_1234);
        assert_eq!(
            plan(&odd, &slot, G1, false).plan,
            Plan::Refuse("unexpected fault kind")
        );
    }

    /// `serve` on its own: a tree in heap memory and a log for the slot.
    mod serve {
        use super::*;
        use crate::dirty::DirtyLog;
        use pgtable::host::{HostMm, MmEvent};
        use pgtable::{Level, Outcome};

        fn tree() -> (Stage2<HostMm>, MemCache, HostMm) {
            let mm = HostMm::new();
            let s2 = Stage2::new(mm.clone(), 40).unwrap();
            let mut cache = MemCache::new();
            cache.topup(&mm, 8).unwrap();
            (s2, cache, mm)
        }

        fn leaf(s2: &Stage2<HostMm>, ipa: u64) -> pgtable::Leaf {
            s2.shared().get_leaf(ipa).unwrap()
        }

        const IPA: u64 = 0x4030_1234;

        #[test]
        fn a_map_reports_its_leaves_by_level_and_marks_only_when_asked() {
            let (s2, mut cache, _mm) = tree();
            let log = DirtyLog::new(&ram());
            // A 2 MiB block, not logged: one level-2 leaf, no mark.
            let block = FaultPlan {
                plan: map(0x4020_0000, M2, 0x8020_0000, Prot::RW),
                mark_dirty: false,
            };
            let served = serve(&s2, block, IPA, Some(&log), &mut cache).unwrap();
            assert_eq!(
                served,
                Served {
                    mapped: [0, 0, 1, 0],
                    marked: false
                }
            );
            assert_eq!(leaf(&s2, IPA).translate(IPA), Some(0x8030_1234));
            assert_eq!(log.dirty_pages(), 0);
            // A logged write's page: one level-3 leaf, the abort's page marked.
            let page = FaultPlan {
                plan: map(0x4060_1000, PAGE_SIZE, 0x8060_1000, Prot::RW),
                mark_dirty: true,
            };
            let ipa = 0x4060_1abc;
            let served = serve(&s2, page, ipa, Some(&log), &mut cache).unwrap();
            assert_eq!(
                served,
                Served {
                    mapped: [0, 0, 0, 1],
                    marked: true
                }
            );
            assert_eq!(leaf(&s2, ipa).level, Level::LAST);
            assert!(log.is_dirty(ipa));
            assert_eq!(log.dirty_pages(), 1);
            // Asked to mark, but no log: nothing to mark.
            let other = FaultPlan {
                plan: map(0x4070_0000, PAGE_SIZE, 0x8070_0000, Prot::RW),
                mark_dirty: true,
            };
            let served = serve(&s2, other, 0x4070_0000, None, &mut cache).unwrap();
            assert!(!served.marked);
            assert_eq!(log.dirty_pages(), 1);
        }

        #[test]
        fn relax_and_mkyoung_change_the_leaf_of_the_abort() {
            let (s2, mut cache, mm) = tree();
            let log = DirtyLog::new(&ram());
            s2.shared()
                .map(0x4000_0000, 4 * M2, 0x8000_0000, Prot::R, &mut cache)
                .unwrap();
            // A write to a logged read-only page: relax, then mark.
            let relax = FaultPlan {
                plan: Plan::Relax { prot: Prot::W },
                mark_dirty: true,
            };
            mm.take_events();
            let served = serve(&s2, relax, IPA, Some(&log), &mut cache).unwrap();
            assert_eq!(
                served,
                Served {
                    mapped: [0; 4],
                    marked: true
                }
            );
            assert_eq!(leaf(&s2, IPA).prot(), Some(Prot::RW));
            assert_eq!(
                mm.take_events(),
                [MmEvent::TlbiAddr {
                    addr: 0x4020_0000,
                    level: Level::new(2).unwrap()
                }],
                "the relaxed leaf is invalidated"
            );
            assert!(log.is_dirty(IPA));
            // The other block is untouched.
            assert_eq!(leaf(&s2, 0x4000_0000).prot(), Some(Prot::R));
            // Access flag: cleared by an ager, set again by the fault.
            assert!(s2
                .shared()
                .test_clear_young(0x4000_0000, 4 * M2, true)
                .unwrap());
            let young = FaultPlan {
                plan: Plan::MkYoung,
                mark_dirty: false,
            };
            let served = serve(&s2, young, IPA, Some(&log), &mut cache).unwrap();
            assert_eq!(served, Served::default());
            assert!(leaf(&s2, IPA).pte.young());
            assert!(!leaf(&s2, 0x4000_0000).pte.young(), "only the abort's leaf");
        }

        #[test]
        fn a_lost_fault_marks_nothing_and_a_refusal_does_nothing() {
            let (s2, mut cache, mm) = tree();
            let log = DirtyLog::new(&ram());
            let page = FaultPlan {
                plan: map(0x4030_1000, PAGE_SIZE, 0x8030_1000, Prot::RW),
                mark_dirty: true,
            };
            serve(&s2, page, IPA, Some(&log), &mut cache).unwrap();
            log.get_and_clear(&s2, &mut crate::dirty::DirtyPages::new())
                .unwrap();
            // Another vCPU mapped it first: back to the guest, no mark (the
            // write faults again on the protected page and marks then).
            assert_eq!(
                serve(&s2, page, IPA, Some(&log), &mut cache),
                Err(Error::Refault {
                    addr: 0x4030_1000,
                    outcome: Outcome::Unchanged
                })
            );
            assert_eq!(log.dirty_pages(), 0);
            // A refusal is the caller's to handle: nothing served, even
            // with a mark asked for.
            mm.take_events();
            let refuse = FaultPlan {
                plan: Plan::Refuse("test"),
                mark_dirty: true,
            };
            let served = serve(&s2, refuse, 0x4050_0000, Some(&log), &mut cache);
            assert_eq!(served, Ok(Served::default()));
            assert_eq!(leaf(&s2, 0x4050_0000).translate(0x4050_0000), None);
            assert_eq!(log.dirty_pages(), 0);
            assert!(mm.take_events().is_empty());
            // No table page left for a new table: reported, nothing marked.
            let mut empty = MemCache::new();
            let far = FaultPlan {
                plan: map(0x8000_0000, PAGE_SIZE, 0x9000_0000, Prot::RW),
                mark_dirty: true,
            };
            assert_eq!(
                serve(&s2, far, 0x8000_0000, Some(&log), &mut empty),
                Err(Error::NoMemory)
            );
        }
    }
}
