//! Property tests: random sequences of stage-2 and EL2 operations against a
//! page-granular reference model.
//!
//! After every step the entries around the touched range (and a sample of
//! the rest) must agree with the model over their whole span, the page count
//! must add up (root + table pages + cache), and no table page may be freed
//! before a TLB invalidation of the operation. At the end the whole input
//! address space is walked: every entry agrees with the model, the table
//! pages found are exactly `stats().table_pages`, none is empty, and after
//! `destroy` no page is left.

mod common;

use common::*;
use pgtable::host::{HostMm, MmEvent};
use pgtable::{pages_needed, Error, Hyp, Leaf, Level, MemCache, Outcome, Prot, Stage2};
use proptest::prelude::*;

/// The IPA window the operations touch (inside every tree tried).
const WIN: u64 = 4 * G1;
/// PA = base + IPA: bases aligned to 1 GiB, to 2 MiB only, to 4 KiB only.
const BASES: [u64; 3] = [0x80_0000_0000, 0x90_0020_0000, 0xa0_0000_3000];

fn cases(n: u32) -> u32 {
    if cfg!(miri) {
        2
    } else {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(n)
    }
}

/// How hard proptest shrinks a failing case: 2000 iterations, or
/// `PROPTEST_MAX_SHRINK_ITERS` (`scripts/mutants.sh` sets 0: a mutation run
/// only needs to know that a case fails, and shrinking one of these cases
/// can take minutes).
fn shrink_iters() -> u32 {
    std::env::var("PROPTEST_MAX_SHRINK_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

fn addr() -> impl Strategy<Value = u64> {
    (
        0..4u64,
        prop_oneof![0..3u64, 509..512u64, 0..512u64],
        prop_oneof![3 => Just(0u64), 1 => 0..512u64, 1 => 510..512u64],
    )
        .prop_map(|(g, m, p)| g * G1 + m * M2 + p * K4)
}

/// Sizes cheap to walk page by page (map_pages, split).
fn small_size() -> BoxedStrategy<u64> {
    prop_oneof![
        (1..=16u64).prop_map(|n| n * K4),
        (1..=2u64, 0..3u64).prop_map(|(m, p)| m * M2 + p * K4),
    ]
    .boxed()
}

fn any_size() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => small_size(),
        2 => (1..=4u64).prop_map(|m| m * M2),
        1 => Just(G1),
        1 => Just(G1 + 2 * M2),
    ]
    .boxed()
}

fn prot() -> impl Strategy<Value = Prot> {
    prop_oneof![
        Just(Prot::R),
        Just(Prot::RW),
        Just(Prot::RWX),
        Just(Prot::R.union(Prot::X)),
        Just(Prot::NONE),
        Just(Prot::RW.union(Prot::DEVICE)),
    ]
}

fn relax_prot() -> impl Strategy<Value = Prot> {
    prop_oneof![
        Just(Prot::W),
        Just(Prot::X),
        Just(Prot::R),
        Just(Prot::RWX),
        Just(Prot::NONE)
    ]
}

fn clip(ipa: u64, size: u64) -> (u64, u64) {
    (ipa, (ipa + size).min(WIN) - ipa)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)]
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        ipa: u64,
        size: u64,
        base: usize,
        prot: Prot,
        pages: bool,
        mode: Mode,
    },
    /// A fault-mode map of one naturally aligned leaf (4 KiB, 2 MiB or 1 GiB).
    FaultMap {
        ipa: u64,
        level: u8,
        base: usize,
        prot: Prot,
    },
    Unmap {
        ipa: u64,
        size: u64,
    },
    Wrprotect {
        ipa: u64,
        size: u64,
        mode: Mode,
    },
    Relax {
        ipa: u64,
        prot: Prot,
        fault: bool,
    },
    Mkyoung {
        ipa: u64,
        fault: bool,
    },
    Age {
        ipa: u64,
        size: u64,
        mkold: bool,
    },
    Split {
        ipa: u64,
        size: u64,
        mode: Mode,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (addr(), any_size(), 0..3usize, prot(), mode()).prop_map(|(ipa, size, base, prot, mode)| {
            let (ipa, size) = clip(ipa, size);
            Op::Map { ipa, size, base, prot, pages: false, mode }
        }),
        3 => (addr(), small_size(), 0..3usize, prot(), mode()).prop_map(|(ipa, size, base, prot, mode)| {
            let (ipa, size) = clip(ipa, size);
            Op::Map { ipa, size, base, prot, pages: true, mode }
        }),
        3 => (addr(), 1..=3u8, 0..3usize, prot()).prop_map(|(ipa, level, base, prot)| {
            Op::FaultMap { ipa, level, base, prot }
        }),
        4 => (addr(), any_size()).prop_map(|(ipa, size)| {
            let (ipa, size) = clip(ipa, size);
            Op::Unmap { ipa, size }
        }),
        2 => (addr(), any_size(), mode()).prop_map(|(ipa, size, mode)| {
            let (ipa, size) = clip(ipa, size);
            Op::Wrprotect { ipa, size, mode }
        }),
        2 => (addr(), relax_prot(), any::<bool>()).prop_map(|(ipa, prot, fault)| Op::Relax { ipa, prot, fault }),
        1 => (addr(), any::<bool>()).prop_map(|(ipa, fault)| Op::Mkyoung { ipa, fault }),
        2 => (addr(), any_size(), any::<bool>()).prop_map(|(ipa, size, mkold)| {
            let (ipa, size) = clip(ipa, size);
            Op::Age { ipa, size, mkold }
        }),
        2 => (addr(), small_size(), mode()).prop_map(|(ipa, size, mode)| {
            let (ipa, size) = clip(ipa, size);
            Op::Split { ipa, size, mode }
        }),
    ]
}

/// Everything one test case needs.
struct World {
    s2: Stage2<HostMm>,
    mm: HostMm,
    cache: MemCache,
    model: Model,
    seed: u64,
}

fn leaf(s2: &Stage2<HostMm>, ipa: u64) -> Leaf {
    s2.shared().get_leaf(ipa).unwrap()
}

/// The largest level whose entry holding `a` a map of `[lo, hi)` to
/// `pa + (x - lo)` can fill with one leaf (what `map` promises).
fn expected_level(s2: &Stage2<HostMm>, lo: u64, hi: u64, pa: u64, a: u64, pages: bool) -> u8 {
    if pages {
        return 3;
    }
    let first = s2.geometry().start_level.get().max(1);
    for l in first..=3 {
        let level = lv(l);
        let start = level.align_down(a);
        let size = level.entry_size();
        if start >= lo && start + size <= hi && (pa + (start - lo)).is_multiple_of(size) {
            return l;
        }
    }
    0 // no leaf of the range itself starts here: only a kept, larger leaf can
}

impl World {
    /// `runs`: whether map and unmap may visit runs of entries at once
    /// (the default) or visit every entry on its own; both must match.
    /// `skip_cmo`: no cache maintenance (FEAT_S2FWB), the only case where
    /// unmap clears runs of leaves and drops covered tables whole.
    fn new(ia_bits: u32, seed: u64, runs: bool, skip_cmo: bool) -> World {
        let mm = HostMm::new();
        let mut s2 = Stage2::new(mm.clone(), ia_bits).unwrap();
        s2.set_runs(runs);
        s2.set_skip_cmo(skip_cmo);
        World {
            s2,
            mm,
            cache: MemCache::new(),
            model: Model::default(),
            seed,
        }
    }

    fn topup(&mut self, ipa: u64, size: u64) {
        let n = pages_needed(self.s2.geometry().start_level, ipa, size);
        self.cache.topup(&self.mm, n).unwrap();
        self.mm.take_events();
    }

    /// Runs one operation, checking its result against the model's
    /// prediction, then updates the model. Returns the range it touched.
    fn step(&mut self, op: &Op) -> Result<(u64, u64), TestCaseError> {
        match *op {
            Op::Map {
                ipa,
                size,
                base,
                prot,
                pages,
                mode,
            } => {
                let pa = BASES[base] + ipa;
                self.topup(ipa, size);
                let r = match (mode, pages) {
                    (Mode::Exclusive, false) => {
                        self.s2
                            .exclusive()
                            .map(ipa, size, pa, prot, &mut self.cache)
                    }
                    (Mode::Exclusive, true) => {
                        self.s2
                            .exclusive()
                            .map_pages(ipa, size, pa, prot, &mut self.cache)
                    }
                    (Mode::Shared, false) => {
                        self.s2.shared().map(ipa, size, pa, prot, &mut self.cache)
                    }
                    (Mode::Shared, true) => {
                        self.s2
                            .shared()
                            .map_pages(ipa, size, pa, prot, &mut self.cache)
                    }
                };
                prop_assert!(r.is_ok(), "{op:?}: {r:?}");
                let before = self.model.clone();
                self.model.set(ipa, ipa + size, pa, prot, true);
                // Every leaf in the range is as large as the range allows,
                // unless a larger leaf already mapped its whole span exactly
                // as asked: that one is kept, not split.
                for (start, lf) in leaves_in_capped(&self.s2, ipa, ipa + size, 64) {
                    let expected = expected_level(&self.s2, ipa, ipa + size, pa, start, pages);
                    if expected == 0 || lf.level.get() < expected {
                        let base = lf.level.align_down(start);
                        let span = lf.level.entry_size();
                        for a in [base, base + span / 2, base + span - K4] {
                            let had = before.get(a).map(|p| (p.pa, p.prot, p.young));
                            prop_assert_eq!(
                                had,
                                Some((lf.pte.output_address() + (a - base), prot, true)),
                                "{:?}: kept leaf at {:#x} (level {}) did not map {:#x} so before",
                                op,
                                base,
                                lf.level.get(),
                                a
                            );
                        }
                    } else {
                        prop_assert_eq!(lf.level.get(), expected, "{:?}: leaf at {:#x}", op, start);
                    }
                }
                self.check_events(op)?;
                Ok((ipa, ipa + size))
            }
            Op::FaultMap {
                ipa,
                level,
                base,
                prot,
            } => {
                // The largest leaf this tree has, and a PA aligned to it.
                let first = self.s2.geometry().start_level.get().max(1);
                let mut level = level.max(first);
                while !BASES[base].is_multiple_of(lv(level).entry_size()) {
                    level += 1;
                }
                let size = lv(level).entry_size();
                let ipa = lv(level).align_down(ipa);
                let pa = BASES[base] + ipa;
                let before = leaf(&self.s2, ipa);
                let refault = before.pte.is_valid()
                    && before.level.entry_size() >= size
                    && before.translate(ipa) == Some(pa);
                self.topup(ipa, size);
                let r = self.s2.fault().map(ipa, size, pa, prot, &mut self.cache);
                if refault {
                    prop_assert_eq!(
                        r,
                        Err(Error::Refault {
                            addr: ipa,
                            outcome: Outcome::Unchanged
                        }),
                        "{:?}",
                        op
                    );
                } else {
                    prop_assert!(r.is_ok(), "{op:?}: {r:?}");
                    self.model.set(ipa, ipa + size, pa, prot, true);
                    prop_assert_eq!(leaf(&self.s2, ipa).level.get(), level, "{:?}", op);
                }
                self.check_events(op)?;
                Ok((ipa, ipa + size))
            }
            Op::Unmap { ipa, size } => {
                self.topup(ipa, size);
                let want = self.model.mapped_bytes(ipa, ipa + size);
                let counted = self.s2.shared().mapped_bytes(ipa, size);
                prop_assert_eq!(counted, Ok(want), "{:?}", op);
                // Every leaf the range reaches goes (a block it covers in
                // part is split first), so the TLB may hold none of them.
                let removed = leaves_in(&self.s2, ipa, ipa + size);
                let r = self.s2.exclusive().unmap(ipa, size, &mut self.cache);
                prop_assert_eq!(r, Ok(()), "{:?}", op);
                let ev = self.mm.take_events();
                let stale = unreached_leaves(&removed, &ev);
                prop_assert!(
                    stale.is_empty(),
                    "{:?}: leaves (start, level) removed without a TLB invalidation: {:x?}; events {:?}",
                    op,
                    stale,
                    ev
                );
                prop_assert_eq!(self.s2.shared().mapped_bytes(ipa, size), Ok(0), "{:?}", op);
                self.model.clear(ipa, ipa + size);
                self.events_ordered(op, &ev)?;
                Ok((ipa, ipa + size))
            }
            Op::Wrprotect { ipa, size, mode } => {
                // Write-protect acts on whole leaves: every leaf the range
                // touches loses W, even the parts outside the range.
                let leaves = leaves_in(&self.s2, ipa, ipa + size);
                let mut reduced: Option<(u64, u64)> = None;
                for (start, lf) in &leaves {
                    if lf.prot().is_some_and(|p| p.contains(Prot::W)) {
                        let end = start + lf.level.entry_size();
                        reduced = Some(
                            reduced.map_or((*start, end), |(a, b)| (a.min(*start), b.max(end))),
                        );
                        self.model
                            .update(*start, end, |p, _| *p = p.without(Prot::W));
                    }
                }
                self.mm.take_events();
                let r = match mode {
                    Mode::Exclusive => self.s2.exclusive().wrprotect(ipa, size),
                    Mode::Shared => self.s2.shared().wrprotect(ipa, size),
                };
                let flush = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e:?}")))?;
                prop_assert_eq!(flush.is_needed(), reduced.is_some(), "{:?}", op);
                prop_assert!(
                    self.mm.take_events().is_empty(),
                    "{:?}: maintenance before complete",
                    op
                );
                self.s2.complete(flush);
                let want: Vec<MmEvent> = reduced
                    .map(|(a, b)| MmEvent::TlbiRange {
                        addr: a,
                        size: b - a,
                    })
                    .into_iter()
                    .collect();
                prop_assert_eq!(self.mm.take_events(), want, "{:?}", op);
                Ok((ipa, ipa + size))
            }
            Op::Relax { ipa, prot, fault } => self.attr_one(op, ipa, fault, prot),
            Op::Mkyoung { ipa, fault } => self.attr_one(op, ipa, fault, Prot::NONE),
            Op::Age { ipa, size, mkold } => {
                let mut young = false;
                for (start, lf) in leaves_in(&self.s2, ipa, ipa + size) {
                    if lf.pte.is_valid() {
                        young |= lf.pte.young();
                        if mkold {
                            self.model
                                .update(start, start + lf.level.entry_size(), |_, y| {
                                    *y = false;
                                });
                        }
                    }
                }
                self.mm.take_events();
                let r = self.s2.shared().test_clear_young(ipa, size, mkold);
                prop_assert_eq!(r, Ok(young), "{:?}", op);
                prop_assert_eq!(self.mm.take_events(), vec![], "{:?}: no maintenance", op);
                Ok((ipa, ipa + size))
            }
            Op::Split { ipa, size, mode } => {
                let mut want = 0;
                for (start, lf) in leaves_in(&self.s2, ipa, ipa + size) {
                    if lf.pte.is_valid() {
                        match lf.level.get() {
                            1 => {
                                // The 1 GiB block, then each 2 MiB block the range touches.
                                let lo = ipa.max(start);
                                let hi = (ipa + size).min(start + G1);
                                want += 1 + ((hi - 1) / M2 - lo / M2 + 1);
                            }
                            2 => want += 1,
                            _ => {}
                        }
                    }
                }
                self.topup(ipa, size);
                let r = match mode {
                    Mode::Exclusive => self.s2.exclusive().split(ipa, size, &mut self.cache),
                    Mode::Shared => self.s2.shared().split(ipa, size, &mut self.cache),
                };
                prop_assert_eq!(r, Ok(want), "{:?}", op);
                for (start, lf) in leaves_in(&self.s2, ipa, ipa + size) {
                    prop_assert!(
                        !lf.pte.is_valid() || lf.level.get() == 3,
                        "{:?}: block left at {:#x}",
                        op,
                        start
                    );
                }
                self.check_events(op)?;
                Ok((ipa, ipa + size))
            }
        }
    }

    /// relax_perms (prot) or mkyoung (prot NONE and `op` is Mkyoung).
    fn attr_one(
        &mut self,
        op: &Op,
        ipa: u64,
        fault: bool,
        prot: Prot,
    ) -> Result<(u64, u64), TestCaseError> {
        let page = ipa & !(K4 - 1);
        let lf = leaf(&self.s2, ipa);
        let (start, size) = span(ipa, &lf);
        let is_relax = matches!(op, Op::Relax { .. });
        let add = prot.without(Prot::DEVICE);
        let outcome = match lf.prot() {
            None => Some(Outcome::Unmapped),
            Some(p) => {
                let changes = !lf.pte.young() || (is_relax && !p.contains(add));
                if changes {
                    self.model.update(start, start + size, |p, y| {
                        *p = p.union(add);
                        *y = true;
                    });
                    None
                } else {
                    Some(Outcome::Unchanged)
                }
            }
        };
        self.mm.take_events();
        let r = match (is_relax, fault) {
            (true, false) => self.s2.shared().relax_perms(ipa, prot),
            (true, true) => self.s2.fault().relax_perms(ipa, prot),
            (false, false) => self.s2.shared().mkyoung(ipa),
            (false, true) => self.s2.fault().mkyoung(ipa),
        };
        let want = match outcome {
            Some(outcome) if fault => Err(Error::Refault {
                addr: page,
                outcome,
            }),
            _ => Ok(()),
        };
        prop_assert_eq!(r, want, "{:?}", op);
        // Relaxing invalidates the changed leaf at once; setting the access
        // flag needs no invalidation.
        let want_ev = if is_relax && outcome.is_none() {
            vec![MmEvent::TlbiAddr {
                addr: start,
                level: lf.level,
            }]
        } else {
            vec![]
        };
        prop_assert_eq!(self.mm.take_events(), want_ev, "{:?}", op);
        Ok((start, start + size))
    }

    /// The events of an operation (since the last `take_events`): no
    /// allocation (table pages only come from the cache), and no table page
    /// freed before the operation invalidated the TLB.
    fn check_events(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let ev = self.mm.take_events();
        self.events_ordered(op, &ev)
    }

    /// [`World::check_events`] on events already taken.
    fn events_ordered(&self, op: &Op, ev: &[MmEvent]) -> Result<(), TestCaseError> {
        let mut tlbi_seen = false;
        for e in ev {
            match e {
                MmEvent::Alloc { .. } => {
                    return Err(TestCaseError::fail(format!(
                        "{op:?}: allocated under the walk: {e:?}"
                    )))
                }
                MmEvent::TlbiAddr { .. } | MmEvent::TlbiRange { .. } | MmEvent::TlbiAll => {
                    tlbi_seen = true;
                }
                MmEvent::Free { .. } if !tlbi_seen => {
                    return Err(TestCaseError::fail(format!(
                        "{op:?}: a table page freed before any TLB invalidation: {ev:?}"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Entries around `[lo, hi)` and a sample of the window agree with the
    /// model over their whole span; the page count adds up.
    fn check_around(&mut self, op: &Op, lo: u64, hi: u64) -> Result<(), TestCaseError> {
        let lo = lo.saturating_sub(M2);
        let hi = (hi + M2).min(self.s2.geometry().limit());
        let mut a = lo;
        let mut n = 0;
        while a < hi && n < 600 {
            let lf = leaf(&self.s2, a);
            let (start, size) = span(a, &lf);
            check_leaf(&self.model, start, &lf)
                .map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
            a = start + size;
            n += 1;
        }
        // The last pages of the range, if the cap stopped short of them.
        for a in [hi.saturating_sub(K4), (hi - K4).saturating_sub(M2)] {
            if a >= lo {
                let lf = leaf(&self.s2, a);
                let (start, _) = span(a, &lf);
                check_leaf(&self.model, start, &lf)
                    .map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
            }
        }
        let mut rng = common::Rng::new(self.seed);
        self.seed = rng.next();
        for _ in 0..16 {
            let a = rng.below(WIN / K4) * K4;
            let lf = leaf(&self.s2, a);
            let (start, _) = span(a, &lf);
            check_leaf(&self.model, start, &lf)
                .map_err(|e| TestCaseError::fail(format!("after {op:?} (sample): {e}")))?;
        }
        let stats = self.s2.stats();
        prop_assert_eq!(
            self.mm.live_pages() as i64,
            self.s2.geometry().root_pages() as i64 + stats.table_pages + self.cache.len() as i64,
            "after {:?}: live pages = root + table pages + cache",
            op
        );
        prop_assert_eq!(stats.retries(), 0, "no retries without a race");
        prop_assert_eq!(stats.lost_races(), 0, "no lost race without a race");
        Ok(())
    }

    /// Walks the whole tree: every entry agrees with the model, the tables
    /// found are exactly the counted ones, none is empty; then destroys the
    /// tree and checks that nothing leaks.
    fn finish(self) -> Result<(), TestCaseError> {
        let World {
            s2,
            mm,
            mut cache,
            model,
            ..
        } = self;
        let mut bad = Vec::new();
        let shape = shape(&s2, (0, WIN), |start, lf| {
            if let Err(e) = check_leaf(&model, start, lf) {
                if bad.len() < 4 {
                    bad.push(e);
                }
            }
        });
        prop_assert!(bad.is_empty(), "final walk: {bad:#?}");
        if std::env::var_os("PGTABLE_COVERAGE").is_some() {
            let st = s2.stats();
            eprintln!(
                "ia {} leaves by level {:?} tables {} deferred {} unchanged/next {} unmapped/next {}",
                s2.geometry().ia_bits,
                shape.leaves_by_level,
                shape.tables.len(),
                st.deferred_subtrees,
                st.count(Outcome::Unchanged, pgtable::Action::Next),
                st.count(Outcome::Unmapped, pgtable::Action::Next),
            );
        }
        prop_assert!(
            shape.outside.is_empty(),
            "leaves outside the window: {:x?}",
            shape.outside
        );
        prop_assert_eq!(
            shape.tables.len() as i64,
            s2.stats().table_pages,
            "table pages reached by walks vs counted"
        );
        prop_assert!(
            shape.empty_tables.is_empty(),
            "tables with no valid entry left in the tree: {:x?}",
            shape.empty_tables
        );
        s2.destroy();
        cache.drain(&mm);
        prop_assert_eq!(mm.live_pages(), 0, "pages leaked");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(96),
        max_shrink_iters: shrink_iters(),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// Stage 2 against the model, on trees with a level-2, level-1 and
    /// level-0 root (1 GiB blocks need a level-1 or level-0 root).
    #[test]
    fn stage2_matches_model(
        ia_bits in prop_oneof![Just(32u32), Just(36u32), Just(40u32), Just(44u32)],
        ops in prop::collection::vec(op(), 1..28),
        seed in any::<u64>(),
        runs in any::<bool>(),
        skip_cmo in any::<bool>(),
    ) {
        let mut w = World::new(ia_bits, seed, runs, skip_cmo);
        for op in &ops {
            let (lo, hi) = w.step(op)?;
            w.check_around(op, lo, hi)?;
        }
        w.finish()?;
    }
}

// ---------------------------------------------------------------------------
// The EL2 tree.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum HypOp {
    Map {
        va: u64,
        size: u64,
        base: usize,
        prot: Prot,
    },
    Unmap {
        va: u64,
        size: u64,
    },
}

fn hyp_op() -> impl Strategy<Value = HypOp> {
    prop_oneof![
        3 => (addr(), any_size(), 0..3usize, prot()).prop_map(|(va, size, base, prot)| {
            let (va, size) = clip(va, size);
            HypOp::Map { va, size, base, prot }
        }),
        1 => (addr(), any_size()).prop_map(|(va, size)| {
            let (va, size) = clip(va, size);
            HypOp::Unmap { va, size }
        }),
    ]
}

/// What an EL2 leaf reads back as: always readable, device never executable.
fn el2_prot(p: Prot) -> Prot {
    let p = p.union(Prot::R);
    if p.contains(Prot::DEVICE) {
        p.without(Prot::X)
    } else {
        p
    }
}

fn hyp_check(
    hyp: &Hyp<HostMm>,
    model: &Model,
    a: u64,
    what: &dyn std::fmt::Debug,
) -> Result<(), TestCaseError> {
    let want = model.get(a).map(|p| (p.pa, p.prot));
    prop_assert_eq!(hyp.translate(a), Ok(want), "{:#x} after {:?}", a, what);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(96),
        max_shrink_iters: shrink_iters(),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// The EL2 tree against the model. A map over a *different* mapping must
    /// fail with `Conflict` and change nothing; a map over the same mapping
    /// is a no-op success (`Hyp::map`'s documentation).
    #[test]
    fn hyp_matches_model(
        va_bits in prop_oneof![Just(39u32), Just(40u32)],
        ops in prop::collection::vec(hyp_op(), 1..20),
        seed in any::<u64>(),
    ) {
        let mm = HostMm::new();
        let mut hyp = Hyp::new(mm.clone(), va_bits).unwrap();
        let mut model = Model::default();
        let mut rng = common::Rng::new(seed);
        for op in &ops {
            let (lo, hi) = match *op {
                HypOp::Map { va, size, base, prot } => {
                    let pa = BASES[base] + va;
                    let want = el2_prot(prot);
                    let conflict = model.segments(va, va + size).into_iter().any(|(a, _, p)| {
                        p.pa != BASES[base] + a || p.prot != want
                    });
                    let r = hyp.map(va, size, pa, prot);
                    mm.take_events();
                    if conflict {
                        prop_assert!(matches!(r, Err(Error::Conflict { .. })), "{:?}: {:?}", op, r);
                    } else {
                        prop_assert!(r.is_ok(), "{:?}: {:?} (the range holds nothing or the same mapping)", op, r);
                        model.set(va, va + size, pa, want, true);
                    }
                    (va, va + size)
                }
                HypOp::Unmap { va, size } => {
                    let want = model.mapped_bytes(va, va + size);
                    prop_assert_eq!(hyp.mapped_bytes(va, size), Ok(want), "{:?}", op);
                    mm.take_events();
                    prop_assert_eq!(hyp.unmap(va, size), Ok(()), "{:?}", op);
                    // Whatever was mapped in the range is invalidated.
                    let mapped: Vec<(u64, u64)> =
                        model.segments(va, va + size).into_iter().map(|(a, b, _)| (a, b)).collect();
                    let ev = mm.take_events();
                    let stale = uncovered_ranges(&mapped, &ev);
                    prop_assert!(
                        stale.is_empty(),
                        "{:?}: unmapped without a TLB invalidation: {:x?}; events {:?}",
                        op,
                        stale,
                        ev
                    );
                    prop_assert_eq!(hyp.mapped_bytes(va, size), Ok(0), "{:?}", op);
                    model.clear(va, va + size);
                    (va, va + size)
                }
            };
            // The range's ends, its 2 MiB boundaries, pages either side and a sample.
            let mut probes = vec![lo, hi - K4, lo.saturating_sub(K4), (hi).min(WIN - K4)];
            let mut b = (lo + M2 - 1) & !(M2 - 1);
            while b < hi && probes.len() < 64 {
                probes.extend([b, b.saturating_sub(K4)]);
                b += M2;
            }
            for _ in 0..16 {
                probes.push(rng.below(WIN / K4) * K4);
            }
            for a in probes {
                hyp_check(&hyp, &model, a, op)?;
            }
            prop_assert_eq!(
                mm.live_pages() as i64,
                1 + hyp.stats().table_pages,
                "after {:?}: live pages = root + table pages", op
            );
        }
        // Every segment's ends and the pages around them.
        for (lo, hi) in model.ranges() {
            for a in [lo, hi - K4, lo.saturating_sub(K4), hi, ((lo + hi) / 2) & !(K4 - 1)] {
                if a < WIN {
                    hyp_check(&hyp, &model, a, &"the end")?;
                }
            }
        }
        hyp.destroy();
        prop_assert_eq!(mm.live_pages(), 0, "pages leaked");
    }
}

#[test]
fn model_sanity() {
    // The model itself: splits, contiguity and uniformity.
    let mut m = Model::default();
    m.set(0, 4 * K4, 0x1000_0000, Prot::RW, true);
    m.update(K4, 2 * K4, |p, _| *p = Prot::R);
    assert_eq!(
        m.uniform(0, K4),
        Uniform::Mapped(Page {
            pa: 0x1000_0000,
            prot: Prot::RW,
            young: true
        })
    );
    assert_eq!(m.uniform(0, 2 * K4), Uniform::Mixed);
    m.update(K4, 2 * K4, |p, _| *p = Prot::RW);
    assert_eq!(
        m.uniform(0, 4 * K4),
        Uniform::Mapped(Page {
            pa: 0x1000_0000,
            prot: Prot::RW,
            young: true
        })
    );
    assert_eq!(m.uniform(0, 5 * K4), Uniform::Mixed);
    assert_eq!(m.uniform(5 * K4, 9 * K4), Uniform::Unmapped);
    assert_eq!(m.clear(3 * K4, 6 * K4), K4);
    assert_eq!(m.mapped_bytes(0, G1), 3 * K4);
    assert_eq!(m.mapped_bytes(2 * K4, 3 * K4), K4);
    assert_eq!(m.get(2 * K4).unwrap().pa, 0x1000_2000);
    let _ = Level::LAST;
}
