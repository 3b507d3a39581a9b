//! The hypervisor's own EL2 stage-1 tables (`TTBR0_EL2`), built with the same walker.

use core::marker::PhantomData;

use crate::error::Error;
use crate::geometry::Geometry;
use crate::mm::{pages_needed_for_map, MemCache, MmOps};
use crate::ops::{self, Mapped};
use crate::policy::Access;
use crate::pte::{self, Format, Prot};
use crate::stats::StatsSnapshot;
use crate::tree::Tree;
use crate::walker::WalkFlags;

/// The EL2 translation tree. Every operation is exclusive (`&mut`): the
/// hypervisor changes its own mappings at boot or under its own lock, and
/// never replaces a live mapping (that could pull the ground from under
/// the code doing it): mapping over a different mapping is
/// [`Error::Conflict`].
pub struct Hyp<M: MmOps> {
    tree: Tree<M>,
}

impl<M: MmOps> Hyp<M> {
    /// An empty tree for `va_bits` of virtual address (no concatenation).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedSize`], or [`Error::NoMemory`] for the root.
    pub fn new(mm: M, va_bits: u32) -> Result<Hyp<M>, Error> {
        let geometry =
            Geometry::stage1(va_bits).ok_or(Error::UnsupportedSize { ia_bits: va_bits })?;
        Ok(Hyp {
            tree: Tree::new(mm, geometry)?,
        })
    }

    /// The tree's shape (for `TCR_EL2.T0SZ`).
    #[must_use]
    pub fn geometry(&self) -> Geometry {
        self.tree.geometry
    }

    /// Physical address of the root (for `TTBR0_EL2`).
    #[must_use]
    pub fn root_pa(&self) -> u64 {
        self.tree.root_pa()
    }

    /// The tree's counters.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.tree.stats()
    }

    /// The memory operations the tree uses.
    #[must_use]
    pub fn mm(&self) -> &M {
        &self.tree.mm
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)` with `prot`, using the
    /// largest blocks alignment allows. Mapping what is already mapped the
    /// same way is a no-op.
    ///
    /// # Errors
    ///
    /// Range errors, [`Error::NoMemory`], [`Error::Conflict`] if a different
    /// mapping is in the way.
    pub fn map(&mut self, va: u64, size: u64, pa: u64, prot: Prot) -> Result<Mapped, Error> {
        self.tree.check_range(va, size)?;
        crate::mm::check_output(pa, size)?;
        let attrs = pte::El2::leaf_attrs(prot);
        // Refuse before changing anything: with `&mut self` nothing can
        // change the tree between this check and the map.
        let mut probe = ops::Probe { ipa: va, pa, attrs };
        self.tree
            .walk(va, size, &mut probe, Access::Exclusive, WalkFlags::LEAF)?;
        // Exactly the tables an empty range needs (fewer if some exist); a
        // walk that still runs dry grows the cache and runs again, which is
        // safe: re-running a map over what it installed is a no-op.
        let max_block = crate::geometry::MAX_BLOCK;
        let mut want =
            pages_needed_for_map(self.tree.geometry.start_level, va, size, pa, max_block);
        let mut cache = MemCache::new();
        let result = loop {
            if let Err(e) = cache.topup(&self.tree.mm, want) {
                break Err(e);
            }
            let mut map = ops::Map::<pte::El2> {
                ipa: va,
                pa,
                attrs,
                max_size: max_block,
                replace: false,
                cache: &mut cache,
                mapped: Mapped::default(),
                format: PhantomData,
            };
            match self
                .tree
                .walk(va, size, &mut map, Access::Exclusive, WalkFlags::LEAF)
            {
                Ok(()) => break Ok(map.mapped),
                Err(Error::NoMemory) => want = want.max(1) * 2,
                Err(e) => break Err(e),
            }
        };
        cache.drain(&self.tree.mm);
        result
    }

    /// Unmaps `[va, va + size)`, freeing tables that become empty (a
    /// table the range covers whole goes at once, without reading its
    /// leaves; [`Hyp::mapped_bytes`] tells beforehand what was mapped).
    ///
    /// # Errors
    ///
    /// Range errors, [`Error::NoMemory`] if a block must be split.
    pub fn unmap(&mut self, va: u64, size: u64) -> Result<(), Error> {
        self.tree.check_range(va, size)?;
        let mut cache = MemCache::new();
        // At most two blocks are cut in part (at each end), each needing
        // one table per level below it.
        let result = cache.topup(&self.tree.mm, 6).and_then(|()| {
            let mut v = ops::Unmap::<pte::El2> {
                cache: &mut cache,
                format: PhantomData,
            };
            let flags = WalkFlags::LEAF
                .union(WalkFlags::TABLE_PRE)
                .union(WalkFlags::TABLE_POST);
            self.tree.walk(va, size, &mut v, Access::Exclusive, flags)
        });
        cache.drain(&self.tree.mm);
        result
    }

    /// Bytes of `[va, va + size)` that leaves map (a read-only walk).
    ///
    /// # Errors
    ///
    /// Range errors.
    pub fn mapped_bytes(&self, va: u64, size: u64) -> Result<u64, Error> {
        let mut v = ops::CountMapped::default();
        self.tree
            .walk(va, size, &mut v, Access::Shared, WalkFlags::LEAF)?;
        Ok(v.bytes)
    }

    /// Translates `va` through the tree: the physical address and the
    /// permissions, if mapped.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the tree.
    pub fn translate(&self, va: u64) -> Result<Option<(u64, Prot)>, Error> {
        let mut v = ops::GetLeaf::default();
        let page = va & !(crate::geometry::PAGE_SIZE - 1);
        self.tree.walk(
            page,
            crate::geometry::PAGE_SIZE,
            &mut v,
            Access::Shared,
            WalkFlags::LEAF,
        )?;
        let (pte, level) = v.found.expect("a walk of one page visits one leaf");
        Ok(pte.is_leaf(level).then(|| {
            (
                pte.output_address() + (va & (level.entry_size() - 1)),
                pte::El2::prot(pte),
            )
        }))
    }

    /// Frees the whole tree (also done on drop).
    pub fn destroy(self) {
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostMm;

    #[test]
    fn map_translate_unmap() {
        let mm = HostMm::new();
        let mut hyp = Hyp::new(mm.clone(), 40).unwrap();
        assert_eq!(hyp.geometry().start_level.get(), 0);
        // The image: 2 MiB-aligned RAM, as blocks; a UART page as device.
        let m = hyp
            .map(0x4000_0000, 0x40_0000, 0x4000_0000, Prot::RWX)
            .unwrap();
        assert_eq!(m.at(crate::Level::new(2).unwrap()), 2);
        hyp.map(
            0x0900_0000,
            0x1000,
            0x0900_0000,
            Prot::RW.union(Prot::DEVICE),
        )
        .unwrap();
        assert_eq!(
            hyp.translate(0x4012_3456),
            Ok(Some((0x4012_3456, Prot::RWX)))
        );
        assert_eq!(
            hyp.translate(0x0900_0018),
            Ok(Some((0x0900_0018, Prot::RW.union(Prot::DEVICE))))
        );
        assert_eq!(hyp.translate(0x0900_1000), Ok(None));
        // Mapping the same again is fine; a different mapping is refused.
        assert!(hyp
            .map(0x4000_0000, 0x20_0000, 0x4000_0000, Prot::RWX)
            .is_ok());
        assert_eq!(
            hyp.map(0x4000_0000, 0x1000, 0x5000_0000, Prot::RW),
            Err(Error::Conflict { addr: 0x4000_0000 })
        );
        assert_eq!(
            hyp.translate(0x4000_0000),
            Ok(Some((0x4000_0000, Prot::RWX)))
        );
        // Unmap frees what becomes empty, splitting a block in part.
        assert_eq!(hyp.mapped_bytes(0x0900_0000, 0x1000), Ok(0x1000));
        assert_eq!(hyp.unmap(0x0900_0000, 0x1000), Ok(()));
        assert_eq!(hyp.mapped_bytes(0x4000_0000, 0x1000), Ok(0x1000));
        assert_eq!(hyp.unmap(0x4000_0000, 0x1000), Ok(()));
        assert_eq!(
            hyp.translate(0x4000_1000),
            Ok(Some((0x4000_1000, Prot::RWX)))
        );
        assert_eq!(
            hyp.mapped_bytes(0x4000_0000, 0x40_0000),
            Ok(0x40_0000 - 0x1000)
        );
        assert_eq!(hyp.unmap(0x4000_0000, 0x40_0000), Ok(()));
        assert_eq!(hyp.stats().table_pages, 0);
        assert_eq!(mm.live_pages(), 1, "only the root is left");
        hyp.destroy();
        assert_eq!(mm.live_pages(), 0);
    }

    #[test]
    fn errors() {
        let mm = HostMm::new();
        let mut hyp = Hyp::new(mm.clone(), 39).unwrap();
        assert!(matches!(
            hyp.map(1 << 39, 0x1000, 0, Prot::RW),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            hyp.map(0, 0x1000, 0x10, Prot::RW),
            Err(Error::Misaligned { .. })
        ));
        mm.set_page_limit(1);
        assert_eq!(hyp.map(0, 0x1000, 0, Prot::RW), Err(Error::NoMemory));
        assert_eq!(hyp.translate(0), Ok(None));
        drop(hyp);
        assert_eq!(mm.live_pages(), 0);
    }
}
