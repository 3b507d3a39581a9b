//! A VM: its memory slots, its stage-2 tree behind a reader-writer lock, its vCPUs and devices.

use core::fmt;

use alloc::vec::Vec;

use hvcore::dirty::DirtyLog;
use hvcore::guest_dt::{self, VmDesc};
use hvcore::pl011::Pl011Emu;
use hvcore::range::PhysRange;
use hvcore::slots::{MemSlot, SlotError, SlotMap};
use log::info;
use pgtable::Stage2;
use spin::{Mutex, Once, RwLock};

use super::context::VmControls;
use super::migrate::{Migration, MigrationConfig};
use super::pause::PauseState;
use super::s2mm::S2Mm;
use super::stats::VmStats;
use super::vcpu::Vcpu;
use crate::mm;
use crate::percpu::MAX_CPUS;

/// Guest RAM starts here (IPA), as on QEMU's virt board.
pub const RAM_IPA: u64 = 0x4000_0000;
/// The read-only memory slot (IPA) and its size.
pub const ROM_IPA: u64 = 0x0400_0000;
/// Size of the ROM slot.
pub const ROM_SIZE: u64 = 0x20_0000;
/// The emulated PL011 (IPA).
pub const UART_IPA: u64 = 0x0900_0000;
/// The device tree sits this far below the end of RAM (2 MiB aligned).
const DTB_FROM_END: u64 = 0x20_0000;
/// IPA bits of every VM's stage 2 (1 TiB: RAM, ROM and devices fit).
const IPA_BITS: u32 = 40;
/// The ROM pattern: `"ROM\0"` in the top bytes, the offset below.
pub const ROM_MAGIC: u64 = 0x524f_4d00_0000_0000;

/// Everything a VM is made from.
#[derive(Debug)]
pub struct VmConfig<'a> {
    /// The guest image in host memory (handed over as the initrd).
    pub image: PhysRange,
    /// Host memory for guest RAM (2 MiB aligned).
    pub ram: PhysRange,
    /// Host memory for the ROM slot (2 MiB).
    pub rom: PhysRange,
    /// vCPUs (one per physical CPU).
    pub vcpus: usize,
    /// The guest's command line (`/chosen/bootargs`).
    pub bootargs: &'a str,
    /// The largest block a stage-2 fault maps (4 KiB, 2 MiB or 1 GiB).
    pub max_block: u64,
    /// A live migration of guest RAM to run beside the guest, if any.
    pub migration: Option<MigrationConfig>,
}

/// Why a VM could not be created.
#[derive(Debug)]
pub enum VmError {
    /// The image does not fit in RAM below the device tree.
    ImageTooLarge {
        /// Image size.
        image: u64,
        /// Room for it.
        room: u64,
    },
    /// A memory slot was refused.
    Slot(SlotError),
    /// The device tree could not be built.
    Dtb(guest_dt::GuestDtError),
    /// No page for the stage-2 root.
    Stage2(pgtable::Error),
    /// A VM exists already.
    Exists,
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ImageTooLarge { image, room } => write!(
                f,
                "vm: guest image of {image} bytes does not fit in the {room} bytes of RAM below the device tree"
            ),
            Self::Slot(e) => write!(f, "vm: memory slot: {e}"),
            Self::Dtb(e) => write!(f, "vm: device tree: {e}"),
            Self::Stage2(e) => write!(f, "vm: stage 2: {e}"),
            Self::Exists => f.write_str("vm: a VM is already running"),
        }
    }
}

/// One virtual machine.
pub struct Vm {
    /// Its number, in console tags.
    pub id: usize,
    /// Guest-physical memory: RAM and ROM.
    pub slots: SlotMap,
    /// The stage-2 tree: vCPU faults take it shared, teardown exclusive.
    pub stage2: RwLock<Stage2<S2Mm>>,
    /// Stage-2 memory operations (the VMID), usable without the lock.
    pub s2mm: S2Mm,
    /// The EL2 controls every vCPU loads.
    pub controls: VmControls,
    /// Its vCPUs (the first `nr_vcpus` exist).
    pub vcpus: [Vcpu; MAX_CPUS],
    /// How many vCPUs it has.
    pub nr_vcpus: usize,
    /// The emulated UART.
    pub uart: Mutex<Pl011Emu>,
    /// What happened so far.
    pub stats: VmStats,
    /// IPA of the guest's device tree.
    pub dtb_ipa: u64,
    /// The largest block a stage-2 fault maps.
    pub max_block: u64,
    /// Dirty logs, one per slot, in `slots.iter()` order.
    pub logs: Vec<DirtyLog>,
    /// Pause requests (see `pause.rs`).
    pub pause: PauseState,
    /// The live migration job, if one was asked for.
    pub migration: Option<Migration>,
}

static VM: Once<Vm> = Once::new();

/// The VM, once created.
pub fn get() -> Option<&'static Vm> {
    VM.get()
}

impl Vm {
    /// The RAM slot.
    pub fn ram(&self) -> &MemSlot {
        self.slots.find(RAM_IPA).expect("every VM has RAM")
    }
}

/// Copies `bytes` into host memory at `pa` and cleans it to the point of
/// coherency: the guest reads it with its MMU (and caches) off.
fn load(pa: u64, bytes: &[u8]) {
    // SAFETY: callers pass a destination inside the VM's RAM or ROM slot,
    // host memory carved for this VM alone (identity-mapped, writable at
    // EL2) that no guest runs on yet; `bytes` does not overlap it.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa as *mut u8, bytes.len()) };
    mm::dcache_clean_inval_poc(pa, bytes.len() as u64);
}

/// Creates the VM: slots, ROM contents, the image and device tree in RAM,
/// an empty stage-2 tree (guest memory appears in it on first touch).
///
/// # Errors
///
/// A [`VmError`] if the image does not fit, a slot is refused, or memory
/// for the device tree or stage-2 root runs out.
pub fn create(cfg: &VmConfig<'_>) -> Result<&'static Vm, VmError> {
    if VM.get().is_some() {
        return Err(VmError::Exists);
    }
    let ram_size = cfg.ram.size();
    let room = ram_size.saturating_sub(DTB_FROM_END);
    if cfg.image.size() > room {
        return Err(VmError::ImageTooLarge {
            image: cfg.image.size(),
            room,
        });
    }
    let mut slots = SlotMap::new();
    let ram = MemSlot {
        name: "ram",
        ipa: RAM_IPA,
        size: ram_size,
        host: cfg.ram.start().as_u64(),
        readonly: false,
    };
    let rom = MemSlot {
        name: "rom",
        ipa: ROM_IPA,
        size: ROM_SIZE,
        host: cfg.rom.start().as_u64(),
        readonly: true,
    };
    slots.insert(ram.clone()).map_err(VmError::Slot)?;
    slots.insert(rom.clone()).map_err(VmError::Slot)?;

    // ROM: the pattern the ABI promises.
    let words = (ROM_SIZE / 8) as usize;
    for i in 0..words {
        let value = ROM_MAGIC | (i as u64 * 8);
        // SAFETY: `i * 8` is inside the 2 MiB ROM block carved for this VM.
        unsafe { core::ptr::write_volatile((rom.host as *mut u64).add(i), value) };
    }
    mm::dcache_clean_inval_poc(rom.host, ROM_SIZE);

    // The image, at the start of RAM.
    // SAFETY: the initrd range was reported by the device tree, kept out
    // of every allocator, and is identity-mapped read-write at EL2.
    let image = unsafe {
        core::slice::from_raw_parts(
            cfg.image.start().as_u64() as *const u8,
            cfg.image.size() as usize,
        )
    };
    load(ram.host, image);

    // The device tree, 2 MiB below the end of RAM.
    let dtb_ipa = RAM_IPA + ram_size - DTB_FROM_END;
    let dtb = guest_dt::build(&VmDesc {
        ram_base: RAM_IPA,
        ram_size,
        cpus: cfg.vcpus,
        uart_base: UART_IPA,
        rom: Some((ROM_IPA, ROM_SIZE)),
        bootargs: cfg.bootargs,
    })
    .map_err(VmError::Dtb)?;
    load(ram.host + (dtb_ipa - RAM_IPA), &dtb);
    mm::icache_inval_all();

    let vmid = 1;
    let s2mm = S2Mm::new(vmid);
    let mut stage2 = Stage2::new(s2mm, IPA_BITS).map_err(VmError::Stage2)?;
    // No cache maintenance per fault: guest memory is carved for the VM and
    // the hypervisor writes it only above, cleaning what it wrote.
    stage2.set_skip_cmo(true);
    let controls = VmControls::new(stage2.geometry(), stage2.root_pa(), vmid);
    info!(
        "vm0: {} vCPUs, RAM {} MiB at IPA {RAM_IPA:#x} (host {}), ROM at IPA {ROM_IPA:#x}, UART at IPA {UART_IPA:#x}, faults map blocks up to {} KiB",
        cfg.vcpus,
        ram_size >> 20,
        cfg.ram,
        cfg.max_block >> 10,
    );
    info!(
        "vm0: image {} bytes at IPA {RAM_IPA:#x}, device tree {} bytes at IPA {dtb_ipa:#x}; stage 2: {IPA_BITS}-bit IPA, start level {}, {} root page(s), empty",
        image.len(),
        dtb.len(),
        stage2.geometry().start_level.get(),
        stage2.geometry().root_pages()
    );
    let logs = slots.iter().map(DirtyLog::new).collect();
    let migration = cfg
        .migration
        .map(|m| Migration::new(m, cfg.vcpus, crate::percpu::online_count()));
    let vm = Vm {
        id: 0,
        logs,
        pause: PauseState::default(),
        migration,
        slots,
        stage2: RwLock::new(stage2),
        s2mm,
        controls,
        vcpus: core::array::from_fn(Vcpu::new),
        nr_vcpus: cfg.vcpus,
        uart: Mutex::new(Pl011Emu::new()),
        stats: VmStats::default(),
        dtb_ipa,
        max_block: cfg.max_block,
    };
    let vm = VM.call_once(|| vm);
    // CPUs waiting in `vcpu::idle` look again: one may have a job now.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
    aarch64_cpu::asm::sev();
    Ok(vm)
}
