//! A VM: its memory slots and memory map, its stage-2 tree behind a reader-writer lock, its MMIO bus and devices, its vCPUs, and how it ends.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use hvcore::dirty::DirtyLog;
use hvcore::entropy::Entropy;
use hvcore::guest_dt::{self, VmDesc};
use hvcore::lines::UartLine;
use hvcore::loader::{self, LoadError, LoadPlan};
use hvcore::memmap::{DeviceKind, MemoryMap, ROM_MAGIC};
use hvcore::mmio::{Bus, BusError};
use hvcore::pl011::Pl011Emu;
use hvcore::power::{Live, Start};
use hvcore::ratelimit::{Admit, LogLimit};
use hvcore::request::{Kick, PauseGate};
use hvcore::slots::{MemSlot, SlotError, SlotMap};
use hvcore::smccc::Workarounds;
use hvcore::verdict::VmEnd;
use hvcore::vgic::Vgic;
use log::{info, warn};
use pgtable::Stage2;
use spin::{Mutex, Once, RwLock};

use super::vcpu::Vcpu;
use crate::arch::context::VmControls;
use crate::arch::guest_mem::{self, HostRange};
use crate::arch::percpu::{self, CpuId};
use crate::arch::s2mm::S2Mm;
use crate::arch::vgic as arch_vgic;
use crate::arch::{cpu, gic, mm};

/// IPA bits of every VM's stage 2 (1 TiB: RAM, ROM and devices fit).
const IPA_BITS: u32 = 40;

/// Everything a VM is made from.
pub struct VmConfig<'a> {
    /// The kernel (an arm64 `Image`, or a raw image), kept for reboots.
    pub kernel: &'static [u8],
    /// Its initramfs, if any.
    pub initrd: Option<&'static [u8]>,
    /// Host memory for guest RAM (2 MiB aligned).
    pub ram: HostRange,
    /// Host memory for the ROM slot (2 MiB).
    pub rom: HostRange,
    /// The physical CPU of each vCPU, in vCPU order.
    pub cpus: &'a [CpuId],
    /// The guest's command line (`/chosen/bootargs`).
    pub bootargs: &'static str,
    /// Where the guest's seeds come from.
    pub entropy: Entropy,
    /// Reboots the VM gets before a `SYSTEM_RESET` ends it (`None`: no
    /// limit).
    pub reset_limit: Option<u32>,
    /// Its console output goes out raw, not as tagged lines.
    pub console_raw: bool,
    /// What `SMCCC_ARCH_FEATURES` tells it of the Spectre workarounds.
    pub workarounds: Workarounds,
    /// The largest block a stage-2 fault maps (4 KiB, 2 MiB or 1 GiB).
    pub max_block: u64,
    /// Pages its stage-2 tables may take (`hvcore::vmspec`).
    pub budget: usize,
    /// The vendor-specific hypervisor service its `HVC`s may reach.
    pub vendor: Option<VendorService>,
}

/// Why a VM could not be created.
#[derive(Debug)]
pub enum VmError {
    /// The kernel, initramfs and device tree cannot be laid out in RAM.
    Load(LoadError),
    /// A memory slot was refused.
    Slot(SlotError),
    /// A device window was refused.
    Bus(BusError),
    /// The device tree could not be built.
    Dtb(guest_dt::GuestDtError),
    /// No page for the stage-2 root.
    Stage2(pgtable::Error),
    /// The VM table is full.
    TableFull,
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(e) => write!(f, "vm: {e}"),
            Self::Slot(e) => write!(f, "vm: memory slot: {e}"),
            Self::Bus(e) => write!(f, "vm: {e}"),
            Self::Dtb(e) => write!(f, "vm: device tree: {e}"),
            Self::Stage2(e) => write!(f, "vm: stage 2: {e}"),
            Self::TableFull => f.write_str("vm: no room for another VM"),
        }
    }
}

/// A vendor-specific hypervisor service (owning entity 6), such as the
/// benchmark calls: answers the call in `args` (`x0`-`x3`) made by `vcpu`
/// of `vm`, or `None` if it is not one of its own (then `NOT_SUPPORTED`).
/// Installed by whoever provides it (a plain function: no vtable on the
/// exit path); the VM layer only routes to it.
pub type VendorService = fn(vm: &Vm, vcpu: &Vcpu, args: &[u64; 4]) -> Option<i64>;

/// An emulated device on a VM's MMIO bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The GIC distributor ([`Vm::vgic`]).
    GicDist,
    /// The GIC redistributors.
    GicRedist,
    /// The PL011 UART ([`Vm::uart`]).
    Uart,
}

/// One virtual machine.
pub struct Vm {
    /// Its number, in console tags and log lines.
    pub id: u16,
    /// Its guest-physical memory map.
    pub map: MemoryMap,
    /// Guest-physical memory: RAM and ROM.
    pub slots: SlotMap,
    /// Host memory behind the RAM slot.
    pub ram_host: HostRange,
    /// Host memory behind the ROM slot.
    pub rom_host: HostRange,
    /// The stage-2 tree: vCPU faults take it shared, teardown exclusive.
    pub stage2: RwLock<Stage2<S2Mm>>,
    /// Stage-2 memory operations (the VMID), usable without the lock.
    pub s2mm: S2Mm,
    /// The EL2 controls every vCPU loads.
    pub controls: VmControls,
    /// Its vCPUs.
    pub vcpus: Vec<Vcpu>,
    /// How many of them are not off (`hvcore::power`: the last one off
    /// ends the VM).
    pub live: Live,
    /// Device windows.
    pub bus: Bus<Device>,
    /// The virtual GIC (`vmm::irq` is its door and its hardware half).
    pub vgic: Mutex<Vgic>,
    /// The emulated UART and the console line it is collecting, under one
    /// lock (one per byte the guest prints).
    pub uart: Mutex<Uart>,
    /// Console input waiting for room in the UART's receive FIFO.
    pub input: Mutex<VecDeque<u8>>,
    /// Its console output goes out raw (`guest.console=raw`), not as
    /// tagged lines.
    pub console_raw: bool,
    /// The largest block a stage-2 fault maps.
    pub max_block: u64,
    /// Dirty logs, one per slot, in `slots.iter()` order.
    pub logs: Vec<DirtyLog>,
    /// A job owns the dirty logs (a migration): nobody else may use them.
    logs_reserved: AtomicBool,
    /// The VM-wide pause (see `hvcore::request`).
    pub pause: PauseGate,
    /// What `SMCCC_ARCH_FEATURES` reports for the workarounds.
    pub workarounds: Workarounds,
    /// The vendor-specific hypervisor service, if there is one.
    pub vendor: Option<VendorService>,
    /// What it boots (again on a reset).
    pub boot: Boot,
    /// A reboot is under way (`SYSTEM_RESET`): `CPU_ON` is refused.
    resetting: AtomicBool,
    /// How it ended, once it has (the first end wins).
    end: Once<VmEnd>,
    /// vCPUs whose CPU has seen the end.
    left: AtomicUsize,
    /// The budget of log lines the guest can trigger (`guest_log!`).
    log_limit: Mutex<LogLimit>,
}

impl Vm {
    /// The RAM slot.
    pub fn ram(&self) -> &MemSlot {
        self.slots
            .find(self.map.ram_base)
            .expect("every VM has RAM")
    }

    /// The vCPU a guest names by `mpidr` (Aff0 = vCPU index, higher levels 0).
    pub fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<&Vcpu> {
        let id = usize::try_from(mpidr & 0xff_00ff_ffff).ok()?;
        self.vcpus.get(id)
    }

    /// The u64 the guest has at `ipa` in RAM or ROM (aligned down), if
    /// `ipa` is in one.
    pub fn read_u64(&self, ipa: u64) -> Option<u64> {
        let slot = self.slots.find(ipa)?;
        let host = if slot.readonly {
            self.rom_host
        } else {
            self.ram_host
        };
        guest_mem::read_u64(host, ipa - slot.ipa)
    }

    /// Claims the dirty logs for one job; false if another has them.
    pub fn reserve_logs(&self) -> bool {
        !self.logs_reserved.swap(true, Ordering::AcqRel)
    }

    /// Whether a job owns the dirty logs.
    pub fn logs_reserved(&self) -> bool {
        self.logs_reserved.load(Ordering::Acquire)
    }

    /// Kicks `vcpu`'s CPU out of the guest or out of its wait, and wakes
    /// CPUs waiting for an event.
    pub fn wake(&self, vcpu: &Vcpu) {
        cpu::wake_all();
        // This CPU is awake already. Without a GICv3 there is no kick:
        // waiters then use `wfe`.
        if vcpu.cpu != percpu::current_id() {
            let _ = gic::kick(vcpu.cpu);
        }
    }

    /// Stops every vCPU from running guest code and waits until none does.
    /// Returns how many were kicked out of the guest.
    pub fn pause_vcpus(&self) -> u32 {
        let kicked = self.pause.pause(
            self.vcpus.iter().map(|v| (v.id(), &v.requests)),
            &CpuKick(self),
        );
        while !self.pause.all_out(self.vcpus.iter().map(|v| &v.requests)) {
            cpu::relax();
        }
        kicked
    }

    /// Lets the vCPUs run again.
    pub fn resume_vcpus(&self) {
        self.pause.resume();
        cpu::wake_all();
    }

    /// Ends the VM as `end` says (only the first end counts): every vCPU
    /// is asked to stop, and kicked.
    pub fn stop(&self, end: VmEnd) {
        self.end.call_once(|| end);
        for vcpu in &self.vcpus {
            vcpu.requests
                .make(super::vcpu::req::STOP, vcpu.id(), &CpuKick(self));
            // Also a CPU waiting for its vCPU's CPU_ON.
            self.wake(vcpu);
        }
    }

    /// Starts a reboot: true for the one vCPU that leads it (the first to
    /// ask), which then calls [`reboot`]; every vCPU is asked to leave.
    pub fn begin_reset(&self) -> bool {
        if self.resetting.swap(true, Ordering::SeqCst) {
            return false;
        }
        for vcpu in &self.vcpus {
            self.request_reset(vcpu);
        }
        true
    }

    /// Asks `vcpu` to leave its guest, powered off, for the reboot.
    pub fn request_reset(&self, vcpu: &Vcpu) {
        vcpu.requests
            .make(super::vcpu::req::RESET, vcpu.id(), &CpuKick(self));
        self.wake(vcpu);
    }

    /// Whether a reboot is under way.
    pub fn is_resetting(&self) -> bool {
        self.resetting.load(Ordering::SeqCst)
    }

    /// How it ended, if it has.
    pub fn end(&self) -> Option<VmEnd> {
        self.end.get().copied()
    }

    /// Records that one vCPU's CPU has seen the end and left; true for the
    /// last vCPU to leave (whose CPU then reports the VM's end).
    pub fn leave(&self) -> bool {
        self.left.fetch_add(1, Ordering::AcqRel) + 1 == self.vcpus.len()
    }

    /// Whether a log line the guest triggered may be printed now (its VM's
    /// rate limit); before the first line after a drop, says how many were
    /// dropped.
    pub fn log_admit(&self) -> bool {
        let admit = self.log_limit.lock().admit(cpu::counter());
        match admit {
            Admit::Drop => false,
            Admit::Log { suppressed } => {
                if suppressed > 0 {
                    warn!(
                        "vm{}: {suppressed} guest-triggered log lines suppressed (rate limit)",
                        self.id
                    );
                }
                true
            }
        }
    }

    /// At its end: says how many guest-triggered lines were dropped since
    /// the last one printed, and in all.
    pub fn report_suppressed(&self) {
        let mut limit = self.log_limit.lock();
        let (last, total) = (limit.take_suppressed(), limit.dropped());
        drop(limit);
        if total > 0 {
            warn!(
                "vm{}: {last} guest-triggered log lines suppressed (rate limit); {total} in all",
                self.id
            );
        }
    }

    /// Whether it has ended and every vCPU has left it.
    pub fn is_finished(&self) -> bool {
        self.end().is_some() && self.left.load(Ordering::Acquire) == self.vcpus.len()
    }
}

/// A VM's emulated UART.
pub struct Uart {
    /// Its registers and receive FIFO.
    pub emu: Pl011Emu,
    /// The console line it is collecting (`guest.console=log`).
    pub line: UartLine,
}

impl Uart {
    /// Out of reset, nothing collected.
    pub const fn new() -> Self {
        Self {
            emu: Pl011Emu::new(),
            line: UartLine::new(),
        }
    }
}

/// What a VM boots, kept for its reboots.
pub struct Boot {
    /// The kernel.
    pub kernel: &'static [u8],
    /// Its initramfs.
    pub initrd: Option<&'static [u8]>,
    /// The guest's command line.
    pub bootargs: &'static str,
    /// Where it goes in RAM (checked once, at creation).
    pub plan: LoadPlan,
    /// The seeds' source.
    pub entropy: Entropy,
    /// How many times the VM booted (each boot has seeds of its own).
    pub boots: AtomicU32,
    /// Reboots it gets before a `SYSTEM_RESET` ends it (`reset=`).
    pub reset_limit: Option<u32>,
}

/// Kicks a VM's vCPUs by their index.
pub struct CpuKick<'a>(pub &'a Vm);

impl Kick for CpuKick<'_> {
    fn kick(&self, vcpu: usize) {
        // A CPU never kicks itself: it is in the hypervisor, and checks
        // its requests before it enters or waits.
        if let Some(v) = self
            .0
            .vcpus
            .get(vcpu)
            .filter(|v| v.cpu != percpu::current_id())
        {
            let _ = gic::kick(v.cpu);
        }
    }
}

/// Creates a VM numbered `id` with VMID `vmid`: slots, the MMIO bus, an
/// empty stage-2 tree (guest memory appears in it on first touch), its
/// images loaded ([`load`]) and vCPU 0 powered on at the kernel's entry.
///
/// # Errors
///
/// A [`VmError`] if the images do not fit, a slot or window is refused,
/// or memory for the device tree or stage-2 root runs out.
pub fn create(id: u16, vmid: u16, cfg: &VmConfig<'_>) -> Result<Vm, VmError> {
    let map = MemoryMap::new(cfg.ram.size(), cfg.cpus.len());
    let plan = loader::plan(&map, cfg.kernel, cfg.initrd.map(|i| i.len() as u64))
        .map_err(VmError::Load)?;
    let mut slots = SlotMap::new();
    let ram = MemSlot {
        name: "ram",
        ipa: map.ram_base,
        size: map.ram_size,
        host: cfg.ram.start(),
        readonly: false,
    };
    let rom = MemSlot {
        name: "rom",
        ipa: map.rom.0,
        size: map.rom.1,
        host: cfg.rom.start(),
        readonly: true,
    };
    slots.insert(ram.clone()).map_err(VmError::Slot)?;
    slots.insert(rom.clone()).map_err(VmError::Slot)?;

    let mut bus = Bus::new();
    for window in map.devices() {
        let device = match window.kind {
            DeviceKind::GicDist => Device::GicDist,
            DeviceKind::GicRedist => Device::GicRedist,
            DeviceKind::Uart => Device::Uart,
        };
        bus.insert(window.base, window.size, device)
            .map_err(VmError::Bus)?;
    }

    let budget: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(cfg.budget)));
    let s2mm = S2Mm::new(vmid, budget);
    let mut stage2 = Stage2::new(s2mm, IPA_BITS).map_err(VmError::Stage2)?;
    // No cache maintenance per fault: guest memory is carved for the VM and
    // the hypervisor writes it only when loading, cleaning what it wrote.
    stage2.set_skip_cmo(true);
    let controls = VmControls::new(stage2.geometry(), stage2.root_pa(), vmid);
    let uart = map.device(DeviceKind::Uart);
    info!(
        "vm{id}: {} vCPUs, RAM {} MiB at IPA {:#x} (host {}), ROM at IPA {:#x}, UART at IPA {:#x}, faults map blocks up to {} KiB",
        cfg.cpus.len(),
        map.ram_size >> 20,
        map.ram_base,
        cfg.ram,
        map.rom.0,
        uart.base,
        cfg.max_block >> 10,
    );
    info!(
        "vm{id}: stage 2: VMID {vmid}, {IPA_BITS}-bit IPA, start level {}, {} root page(s), empty",
        stage2.geometry().start_level.get(),
        stage2.geometry().root_pages()
    );
    let logs = slots.iter().map(DirtyLog::new).collect();
    let vcpus: Vec<Vcpu> = cfg
        .cpus
        .iter()
        .enumerate()
        .map(|(i, &cpu)| Vcpu::new(i, cpu))
        .collect();
    let vm = Vm {
        id,
        map,
        slots,
        ram_host: cfg.ram,
        rom_host: cfg.rom,
        stage2: RwLock::new(stage2),
        s2mm,
        controls,
        vcpus,
        live: Live::new(),
        bus,
        vgic: Mutex::new(Vgic::new(cfg.cpus.len(), arch_vgic::nr_lrs())),
        uart: Mutex::new(Uart::new()),
        input: Mutex::new(VecDeque::new()),
        console_raw: cfg.console_raw,
        max_block: cfg.max_block,
        logs,
        logs_reserved: AtomicBool::new(false),
        pause: PauseGate::new(),
        workarounds: cfg.workarounds,
        vendor: cfg.vendor,
        boot: Boot {
            kernel: cfg.kernel,
            initrd: cfg.initrd,
            bootargs: cfg.bootargs,
            plan,
            entropy: cfg.entropy.clone(),
            boots: AtomicU32::new(0),
            reset_limit: cfg.reset_limit,
        },
        resetting: AtomicBool::new(false),
        end: Once::new(),
        left: AtomicUsize::new(0),
        log_limit: Mutex::new(LogLimit::with_defaults(cpu::counter_hz(), cpu::counter())),
    };
    let start = load(&vm)?;
    vm.vcpus[0].power.cpu_on(start, &vm.live);
    Ok(vm)
}

/// Loads what `vm` boots into its memory, as on a power-on: the ROM's
/// pattern, the kernel and initramfs where the plan says, a device tree
/// with fresh seeds. Returns where vCPU 0 starts. Call only while no vCPU
/// of the VM runs.
///
/// # Errors
///
/// [`VmError::Dtb`] or [`VmError::Load`] for a device tree that cannot be
/// built or is too large.
pub fn load(vm: &Vm) -> Result<Start, VmError> {
    let boot = &vm.boot;
    let plan = boot.plan;
    let ram = vm.ram_host;
    let at = |ipa: u64, len: u64| {
        ram.sub(ipa - vm.map.ram_base, len)
            .expect("the load plan keeps everything in RAM")
    };
    // ROM: the pattern the ABI promises.
    guest_mem::fill_words(vm.rom_host, |offset| ROM_MAGIC | offset);
    guest_mem::load(at(plan.kernel, boot.kernel.len() as u64), boot.kernel);
    if let (Some((start, size)), Some(initrd)) = (plan.initrd, boot.initrd) {
        guest_mem::load(at(start, size), initrd);
    }
    let n = boot.boots.fetch_add(1, Ordering::Relaxed);
    let mut desc = VmDesc::new(&vm.map, boot.bootargs);
    desc.initrd = plan.initrd;
    desc.seeds = Some(boot.entropy.seeds(vm.id, n));
    let dtb = guest_dt::build(&desc).map_err(VmError::Dtb)?;
    loader::check_dtb(dtb.len() as u64).map_err(VmError::Load)?;
    guest_mem::load(at(plan.dtb, dtb.len() as u64), &dtb);
    mm::icache_inval_all();
    // Once per boot: a guest that reboots in a loop is limited too.
    guest_log!(
        vm,
        Info,
        "vm{}: kernel {} bytes at IPA {:#x} (spans {:#x}), {}device tree {} bytes at IPA {:#x}",
        vm.id,
        boot.kernel.len(),
        plan.kernel,
        plan.kernel_span,
        InitrdNote(plan.initrd),
        dtb.len(),
        plan.dtb
    );
    Ok(Start {
        entry: plan.entry(),
        context: plan.dtb,
    })
}

/// Reboots `vm`, as a machine's reset would: once every vCPU has left
/// and is off, its stage 2 emptied, its RAM zeroed, its GIC distributor
/// and UART back to reset, its images and a device tree (with new seeds)
/// loaded again, and vCPU 0 started at the entry. Called by the CPU of the
/// vCPU that asked ([`Vm::begin_reset`]). Returns early, doing nothing, if
/// the VM ends meanwhile.
///
/// # Errors
///
/// A [`VmError`] if stage 2 cannot be emptied or the images reloaded (the
/// caller then ends the VM).
pub fn reboot(vm: &Vm) -> Result<(), VmError> {
    use hvcore::psci::AffinityState;
    // Every vCPU leaves at its next entry (the RESET request), or at once
    // if it waits; then none runs, and none can be started (CPU_ON is
    // refused while resetting).
    while !vm
        .vcpus
        .iter()
        .all(|v| v.power.state() == AffinityState::Off)
    {
        if vm.end().is_some() {
            return Ok(());
        }
        cpu::relax();
    }
    for vcpu in &vm.vcpus {
        vcpu.requests.clear(super::vcpu::req::RESET);
    }
    {
        let mut stage2 = vm.stage2.write();
        let top = 1u64 << IPA_BITS;
        stage2
            .exclusive()
            .unmap(0, top, &mut pgtable::MemCache::new())
            .map_err(VmError::Stage2)?;
    }
    guest_mem::zero(vm.ram_host);
    vm.vgic.lock().reset_dist();
    vm.uart.lock().emu = Pl011Emu::new();
    vm.input.lock().clear();
    let start = load(vm)?;
    vm.resetting.store(false, Ordering::SeqCst);
    let vcpu0 = &vm.vcpus[0];
    vcpu0.power.cpu_on(start, &vm.live);
    vm.wake(vcpu0);
    Ok(())
}

/// "initramfs N bytes at IPA X, " for the load line, or nothing.
struct InitrdNote(Option<(u64, u64)>);

impl fmt::Display for InitrdNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((start, size)) => write!(f, "initramfs {size} bytes at IPA {start:#x}, "),
            None => Ok(()),
        }
    }
}
