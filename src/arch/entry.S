/*
 * Entry points of the hypervisor, included by the crate root (arch::hyp_entry!) with
 * global_asm!, which supplies these operands:
 *   MAX_CPUS, STACK_SIZE   per-CPU stack geometry
 *   RUST_ENTRY             fn(cpu: usize, dtb: usize) -> !
 *   WRONG_EL               fn(el: u64) -> !, when not entered at EL2
 *
 * Boot CPU:  QEMU (or firmware) jumps to _start at EL2 with x0 = DTB address,
 *            MMU and caches off, interrupts masked.
 * Secondary: PSCI CPU_ON enters secondary_entry at EL2 with x0 = context_id,
 *            which the boot CPU sets to the logical CPU id.
 * Both then share one path: check the exception level, install the vectors,
 * (boot CPU only) clear .bss, switch to the CPU's own stack, call Rust.
 */

    .section .text.head, "ax"
    .global _start
_start:
    /* For debuggers (CFI kept in .debug_frame, not loaded): this code has
     * no caller, x30 holds no return address. */
    .cfi_sections .debug_frame
    .cfi_startproc
    .cfi_undefined x30
    /* arm64 Image header (Linux Documentation/arch/arm64/booting.rst). */
    b       primary_entry           /* code0: branch over the header */
    .long   0                       /* code1 */
    .quad   _text_offset            /* text_offset: load offset from RAM base */
    .quad   _image_size             /* image_size, including .bss */
    .quad   0x2                     /* flags: little-endian, 4 KiB pages */
    .quad   0                       /* res2 */
    .quad   0                       /* res3 */
    .quad   0                       /* res4 */
    .ascii  "ARM\x64"               /* magic */
    .long   0                       /* res5: no PE header */

primary_entry:
    mov     x19, x0                 /* DTB physical address */
    mov     x20, #0                 /* the boot CPU is logical CPU 0 */
    b       common_entry

    .global secondary_entry
secondary_entry:
    mov     x20, x0                 /* logical CPU id from CPU_ON context_id */
    mov     x19, #0                 /* no DTB: the boot CPU already parsed it */

common_entry:
    /* Only EL2 has VBAR_EL2: check the exception level before touching it. */
    mrs     x21, CurrentEL
    ubfx    x21, x21, #2, #2        /* CurrentEL.EL */
    cmp     x21, #2
    b.ne    1f
    /* Vectors first, so that any fault from here on is reported. */
    adrp    x0, exception_vectors
    add     x0, x0, :lo12:exception_vectors
    msr     vbar_el2, x0
    isb

1:  /* A CPU id we have no stack for would corrupt another CPU's: park it. */
    cmp     x20, #{MAX_CPUS}
    b.hs    park

    cbnz    x20, 3f
    /* Boot CPU only: zero .bss (which holds the stacks, so before any use). */
    adrp    x0, _bss_start
    add     x0, x0, :lo12:_bss_start
    adrp    x1, _bss_end
    add     x1, x1, :lo12:_bss_end
2:  cmp     x0, x1
    b.hs    3f
    stp     xzr, xzr, [x0], #16
    b       2b

3:  /* sp = boot_stacks + (id + 1) * STACK_SIZE: stacks grow down. */
    adrp    x0, boot_stacks
    add     x0, x0, :lo12:boot_stacks
    add     x1, x20, #1
    mov     x2, #{STACK_SIZE}
    madd    x0, x1, x2, x0
    mov     sp, x0
    mov     x29, #0                 /* terminate frame-pointer chains */
    mov     x30, #0

    cmp     x21, #2
    b.ne    4f
    mov     x0, x20
    mov     x1, x19
    bl      {RUST_ENTRY}
    /* RUST_ENTRY never returns; park if it somehow does. */
    b       park

4:  /* Not at EL2: report it (x0 = the EL we are at) and stop. */
    mov     x0, x21
    bl      {WRONG_EL}

park:
    wfe
    b       park
    .cfi_endproc

    .section .bss.stacks, "aw", %nobits
    .balign 4096
    .global boot_stacks
boot_stacks:
    .space  {MAX_CPUS} * {STACK_SIZE}
