//! One aarch64 VMSA page-table walker with per-walker action policies, and the stage-2 and EL2 operations built on it.
//!
//! # Where things are
//!
//! - [`walker`]: the one walker. It visits entries in
//!   address order (leaf, table-pre, table-post visits per [`WalkFlags`]),
//!   re-reads an entry after visiting it, and after every outcome asks the
//!   operation's [`Policy`] whether to go to the **next** entry, **retry**
//!   this one (bounded) or **exit** the walk.
//! - [`policy`]: the typed [`Outcome`]s, the [`Access`] modes and every
//!   operation's policy, documented as one table (`POLICY.md`, checked
//!   against the code by a test).
//! - `ops`: each operation's visitor (map, unmap, attr, age, get-leaf,
//!   flush, split, free). A visitor reports outcomes; it never decides
//!   what the walker does next.
//! - [`Stage2`] and [`Hyp`]: the public operations on guest stage-2 tables
//!   and the hypervisor's own EL2 tables. Stage-2 operations run through a
//!   handle typed by mode ([`Stage2::exclusive`] needs `&mut`), so an
//!   exclusive walk cannot run beside a shared one.
//! - [`MmOps`]: what the walker needs from its environment; [`MemCache`]:
//!   pre-allocated table pages for the fault path. `defer`: when a table
//!   page unlinked by a shared walk may be freed.
//! - `host` (host builds only, feature `host`): heap-backed [`MmOps`] that records every
//!   TLB and cache operation, for tests and benchmarks.
#![cfg_attr(not(any(test, feature = "host")), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod defer;
mod error;
mod geometry;
#[cfg(any(test, feature = "host"))]
pub mod host;
mod hyp;
mod mm;
mod mode;
mod ops;
pub mod policy;
mod pte;
mod stage2;
mod stats;
mod table;
mod tree;
pub mod walker;

pub use error::Error;
pub use geometry::{Geometry, Level, ENTRIES_PER_TABLE, PAGE_SIZE};
pub use hyp::Hyp;
pub use mm::{page_span, pages_needed, pages_needed_for_map, MemCache, MmOps};
pub use mode::{Exclusive, Fault, Mode, NotFault, Shared};
pub use ops::Mapped;
pub use policy::{Access, Action, Outcome, Policy};
pub use pte::{El2, Format, Prot, Pte, MAIR_EL2_VALUE, MAIR_IDX_DEVICE, MAIR_IDX_NORMAL};
pub use stage2::{Leaf, Ops, PendingFlush, Stage2, UnlinkedTable};
pub use stats::{Stats, StatsSnapshot};
pub use tree::DEFAULT_MAX_RETRIES;
pub use walker::{VisitKind, WalkFlags};
