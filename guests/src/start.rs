//! Entry points: the arm64 Image header and `_start` (boot vCPU), `secondary_entry` (PSCI `CPU_ON`), stacks, and the hand-over to the scenario.
//!
//! Boot vCPU: entered at the image's first byte at EL1h, MMU off, `x0` = the
//! device tree (the ABI; also how QEMU and other arm64 `Image` loaders enter).
//! The image is linked at the start of RAM (0x4000_0000), where the
//! hypervisor puts it; a loader that honours the header's `text_offset` of 0
//! puts it elsewhere (QEMU `-kernel`: RAM + 2 MiB, below its own boot stub's
//! limit), so `_start` first copies the image to its link address if needed.
//! Then: `VBAR_EL1`, `.bss` cleared, the stack of vCPU `MPIDR.Aff0`, Rust.
//!
//! Secondary vCPUs: `secondary_entry` with `x0` = the `CPU_ON` context id;
//! vectors, the boot vCPU's MMU settings if it turned its MMU on
//! ([`crate::mmu::CONFIG`]), own stack, then the scenario's `secondary_main`.
//! A vCPU whose `Aff0` has no stack (>= [`MAX_CPUS`]) is parked.

use core::arch::global_asm;
use core::cell::UnsafeCell;

use crate::console;
use crate::cpu::MAX_CPUS;
use crate::dt::{Platform, Region};
use crate::fail;

/// Stack bytes per vCPU.
pub const STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
struct Stacks(UnsafeCell<[u8; STACK_SIZE * MAX_CPUS]>);

// SAFETY: Rust never accesses the array: each vCPU's entry code points its
// stack pointer at its own slice, indexed by its unique MPIDR.Aff0.
unsafe impl Sync for Stacks {}

static STACKS: Stacks = Stacks(UnsafeCell::new([0; STACK_SIZE * MAX_CPUS]));

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    /* arm64 Image header (Linux Documentation/arch/arm64/booting.rst). */
    b       guest_primary           /* code0: branch over the header */
    .long   0                       /* code1 */
    .quad   0                       /* text_offset: at the start of RAM */
    .quad   _image_size             /* image_size, .bss included */
    .quad   0x2                     /* flags: little-endian, 4 KiB pages */
    .quad   0                       /* res2 */
    .quad   0                       /* res3 */
    .quad   0                       /* res4 */
    .ascii  "ARM\x64"               /* magic */
    .long   0                       /* res5: no PE header */

guest_primary:
    /* Loaded away from the link address (QEMU -kernel)? Copy the file's
     * contents there (x0, the device tree, is kept), then jump there. */
    adr     x1, _start              /* where we run */
    ldr     x2, .Llink_start        /* where we are linked */
    cmp     x1, x2
    b.eq    .Lrelocated
    ldr     x3, .Llink_load_end
    sub     x3, x3, x2              /* bytes in the file, 16-byte multiple */
    cmp     x1, x2
    b.lo    .Lcopy_down
    mov     x4, x1                  /* below the load address: copy upwards */
    mov     x5, x2
    add     x6, x2, x3
.Lcopy_up:
    ldp     x7, x8, [x4], #16
    stp     x7, x8, [x5], #16
    cmp     x5, x6
    b.lo    .Lcopy_up
    b       .Lcopied
.Lcopy_down:                        /* above the load address: from the end */
    add     x4, x1, x3
    add     x5, x2, x3
.Lcopy_down_loop:
    ldp     x7, x8, [x4, #-16]!
    stp     x7, x8, [x5, #-16]!
    cmp     x5, x2
    b.hi    .Lcopy_down_loop
.Lcopied:
    dsb     sy
    ic      iallu
    dsb     sy
    isb
    ldr     x3, .Llink_relocated
    br      x3

    .balign 8
.Llink_start:
    .quad   _start
.Llink_load_end:
    .quad   _load_end
.Llink_relocated:
    .quad   .Lrelocated

.Lrelocated:
    mov     x19, x0                 /* device tree */
    mrs     x20, mpidr_el1
    and     x20, x20, #0xff
    adrp    x1, guest_vectors
    add     x1, x1, :lo12:guest_vectors
    msr     vbar_el1, x1
    isb
    cmp     x20, #{max_cpus}
    b.hs    guest_park

    adrp    x1, _bss_start          /* boot vCPU only: zero .bss */
    add     x1, x1, :lo12:_bss_start
    adrp    x2, _bss_end
    add     x2, x2, :lo12:_bss_end
.Lclear_bss:
    cmp     x1, x2
    b.hs    .Lbss_clear
    stp     xzr, xzr, [x1], #16
    b       .Lclear_bss
.Lbss_clear:
    bl      guest_set_stack
    mov     x0, x19
    bl      {rust_start}
guest_park:
    wfe
    b       guest_park

    /* sp = stacks + (Aff0 + 1) * STACK_SIZE, Aff0 in x20. Clobbers x1-x3. */
guest_set_stack:
    adrp    x1, {stacks}
    add     x1, x1, :lo12:{stacks}
    add     x2, x20, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    mov     x29, xzr
    ret

    .section .text, "ax"
    .global secondary_entry
secondary_entry:
    mov     x19, x0                 /* CPU_ON context id */
    mrs     x20, mpidr_el1
    and     x20, x20, #0xff
    adrp    x1, guest_vectors
    add     x1, x1, :lo12:guest_vectors
    msr     vbar_el1, x1
    isb
    cmp     x20, #{max_cpus}
    b.hs    guest_park

    /* The boot vCPU's MMU settings, if it turned its MMU on: turn ours on
     * before touching memory, so all vCPUs agree on memory attributes. */
    adrp    x1, {mmu_config}
    add     x1, x1, :lo12:{mmu_config}
    ldr     x2, [x1]                /* TTBR0_EL1, 0 = MMU off */
    cbz     x2, .Lsecondary_mmu_done
    ldr     x3, [x1, #8]            /* TCR_EL1 */
    ldr     x4, [x1, #16]           /* MAIR_EL1 */
    ldr     x5, [x1, #24]           /* SCTLR_EL1 */
    msr     mair_el1, x4
    msr     tcr_el1, x3
    msr     ttbr0_el1, x2
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    msr     sctlr_el1, x5
    isb
.Lsecondary_mmu_done:
    bl      guest_set_stack
    mov     x0, x19
    bl      {secondary}
    b       guest_park
    "#,
    max_cpus = const MAX_CPUS,
    stack_size = const STACK_SIZE,
    stacks = sym STACKS,
    mmu_config = sym crate::mmu::CONFIG,
    rust_start = sym rust_start,
    secondary = sym secondary_rust_entry,
);

extern "C" {
    /// Where secondary vCPUs start: the entry point to give PSCI `CPU_ON`
    /// (see [`crate::psci::start_secondary`]). Not to be called from Rust.
    pub fn secondary_entry();
}

extern "Rust" {
    /// The scenario's `main`, defined by [`crate::entry!`].
    fn __guest_main(platform: &'static Platform<'static>);
    /// The scenario's `secondary_main`, defined by [`crate::entry!`].
    fn __guest_secondary_main(context: u64) -> !;
}

/// The stack of vCPU `id` (`MPIDR_EL1.Aff0`, below [`MAX_CPUS`]): it grows
/// down from [`Region::end`].
pub fn stack(id: usize) -> Region {
    assert!(id < MAX_CPUS, "vcpu{id} has no stack");
    Region {
        base: STACKS.0.get() as u64 + (id * STACK_SIZE) as u64,
        size: STACK_SIZE as u64,
    }
}

struct PlatformCell(UnsafeCell<Option<Platform<'static>>>);

// SAFETY: written once, by the boot vCPU before the scenario runs and so
// before any other vCPU is started; only read afterwards.
unsafe impl Sync for PlatformCell {}

static PLATFORM: PlatformCell = PlatformCell(UnsafeCell::new(None));

/// What the device tree said (available once the scenario runs).
pub fn platform() -> &'static Platform<'static> {
    // SAFETY: see `PlatformCell`: no write happens after the scenario starts.
    match unsafe { &*PLATFORM.0.get() } {
        Some(p) => p,
        None => fail!("platform() called before the device tree was read"),
    }
}

/// The boot vCPU's Rust entry, with the device tree address from `x0`.
extern "C" fn rust_start(dtb: u64) -> ! {
    let p = read_device_tree(dtb);
    console::init(p.uart);
    // SAFETY: the one write, on the boot vCPU before anything reads it (see
    // `PlatformCell`).
    unsafe { *PLATFORM.0.get() = Some(p) };
    // SAFETY: defined by the scenario's `entry!` with this signature.
    unsafe { __guest_main(platform()) };
    crate::exit(0)
}

/// A secondary vCPU's Rust entry, with the `CPU_ON` context id.
extern "C" fn secondary_rust_entry(context: u64) -> ! {
    // SAFETY: defined by the scenario's `entry!` with this signature.
    unsafe { __guest_secondary_main(context) }
}

const FDT_MAGIC: u32 = 0xd00d_feed;

/// Reads the device tree at `dtb`; a FAIL (on the ABI's UART, the only one
/// known yet) if there is none.
fn read_device_tree(dtb: u64) -> Platform<'static> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        fail!("no device tree: x0 = {dtb:#x} at entry (expected an 8-byte aligned address)");
    }
    // SAFETY: x0 at entry is the device tree's address (the ABI), non-null
    // and aligned; the MMU is off, so it is the address in RAM. The header's
    // first 8 bytes (magic, total size) are read.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != FDT_MAGIC {
        fail!("no device tree at {dtb:#x}: magic {:#x}", word(0));
    }
    // SAFETY: the blob is `totalsize` bytes from its start (its header says
    // so). Nothing writes it: `mem::free` keeps scenario memory away from
    // it, so it lives as long as the run.
    let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, word(4) as usize) };
    Platform::parse(blob, dtb).unwrap_or_else(|e| fail!("device tree at {dtb:#x}: {e}"))
}
