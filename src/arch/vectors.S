/*
 * The VBAR_EL2 exception vector table and the switch into a guest, included
 * by src/arch/exception.rs with global_asm!, which supplies these operands:
 *   FRAME_SIZE, FRAME_ELR, FRAME_SPSR   TrapFrame layout (EL2's own exceptions)
 *   HANDLER                             fn(&mut TrapFrame, index: u64), for those
 *   CTX_PC, CTX_HOST, CTX_GUEST, CTX_HOST_SP   VcpuContext layout (context.rs)
 *
 * Exceptions taken from EL2 itself (entries 0-7) are bugs: each entry saves
 * x0/x1, puts its index in x1 and branches to el2_trap, which saves the
 * rest into a TrapFrame on the current stack and calls HANDLER (which
 * reports and ends the run).
 *
 * Exceptions from a guest (entries 8-15) are exits. TPIDR_EL2 points at
 * this CPU's PerCpu, whose first word is the running vCPU's context: the
 * entry parks x0/x1 on the stack, loads the context into x0 and its index
 * into x1, and guest_exit stores every general register, ELR_EL2 and
 * SPSR_EL2 straight into the context. It then calls the exit trampoline
 * that arch_enter recorded there, with the Guest object and the index. A
 * zero result resumes the guest at once (guest_resume: registers from the
 * context, eret); any other value returns from arch_enter to its caller
 * (guest_leave: the caller's callee-saved registers and SP from the
 * context, ret).
 *
 * arch_enter(ctx, guest, trampoline) saves x19-x30 and SP in the context,
 * records the guest object and trampoline, and resumes the guest. While the
 * guest runs, SP_EL2 stays where arch_enter's caller left it: every exit
 * handler runs on that stack, below the caller's frames.
 */

    .section .text.vectors, "ax"

.macro EL2_ENTRY kind
    .balign 0x80
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       el2_trap
.endm

.macro GUEST_ENTRY kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el2
    ldr     x0, [x0]                /* PerCpu.current: the vCPU context */
    mov     x1, #\kind
    b       guest_exit
.endm

    .balign 0x800
    .global exception_vectors
exception_vectors:
    /* Current EL with SP_EL0 */
    EL2_ENTRY 0      /* synchronous */
    EL2_ENTRY 1      /* IRQ */
    EL2_ENTRY 2      /* FIQ */
    EL2_ENTRY 3      /* SError */
    /* Current EL with SP_ELx */
    EL2_ENTRY 4
    EL2_ENTRY 5
    EL2_ENTRY 6
    EL2_ENTRY 7
    /* Lower EL, AArch64 */
    GUEST_ENTRY 8
    GUEST_ENTRY 9
    GUEST_ENTRY 10
    GUEST_ENTRY 11
    /* Lower EL, AArch32 */
    GUEST_ENTRY 12
    GUEST_ENTRY 13
    GUEST_ENTRY 14
    GUEST_ENTRY 15

el2_trap:
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    str     x30, [sp, #16 * 15]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    str     x2, [sp, #{FRAME_ELR}]
    str     x3, [sp, #{FRAME_SPSR}]
    mov     x0, sp
    bl      {HANDLER}
    /* HANDLER does not return; stop here if it ever does. */
1:  wfe
    b       1b

guest_exit:
    /* x0 = the vCPU context, x1 = the vector index; the guest's x0/x1 on
     * the stack. */
    stp     x2, x3, [x0, #16 * 1]
    stp     x4, x5, [x0, #16 * 2]
    stp     x6, x7, [x0, #16 * 3]
    stp     x8, x9, [x0, #16 * 4]
    stp     x10, x11, [x0, #16 * 5]
    stp     x12, x13, [x0, #16 * 6]
    stp     x14, x15, [x0, #16 * 7]
    stp     x16, x17, [x0, #16 * 8]
    stp     x18, x19, [x0, #16 * 9]
    stp     x20, x21, [x0, #16 * 10]
    stp     x22, x23, [x0, #16 * 11]
    stp     x24, x25, [x0, #16 * 12]
    stp     x26, x27, [x0, #16 * 13]
    stp     x28, x29, [x0, #16 * 14]
    str     x30, [x0, #16 * 15]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #{CTX_PC}]
    mov     x19, x0                 /* the context survives the call */
    ldp     x0, x2, [x19, #{CTX_GUEST}]
    blr     x2                      /* trampoline(guest, index) */
    cbnz    x0, guest_leave
    mov     x0, x19

guest_resume:
    /* x0 = the vCPU context. */
    ldp     x2, x3, [x0, #{CTX_PC}]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [x0, #16 * 1]
    ldp     x4, x5, [x0, #16 * 2]
    ldp     x6, x7, [x0, #16 * 3]
    ldp     x8, x9, [x0, #16 * 4]
    ldp     x10, x11, [x0, #16 * 5]
    ldp     x12, x13, [x0, #16 * 6]
    ldp     x14, x15, [x0, #16 * 7]
    ldp     x16, x17, [x0, #16 * 8]
    ldp     x18, x19, [x0, #16 * 9]
    ldp     x20, x21, [x0, #16 * 10]
    ldp     x22, x23, [x0, #16 * 11]
    ldp     x24, x25, [x0, #16 * 12]
    ldp     x26, x27, [x0, #16 * 13]
    ldp     x28, x29, [x0, #16 * 14]
    ldr     x30, [x0, #16 * 15]
    ldp     x0, x1, [x0]
    eret

guest_leave:
    /* x19 = the vCPU context: back to arch_enter's caller. */
    ldp     x20, x21, [x19, #{CTX_HOST} + 8 * 1]
    ldp     x22, x23, [x19, #{CTX_HOST} + 8 * 3]
    ldp     x24, x25, [x19, #{CTX_HOST} + 8 * 5]
    ldp     x26, x27, [x19, #{CTX_HOST} + 8 * 7]
    ldp     x28, x29, [x19, #{CTX_HOST} + 8 * 9]
    ldr     x30, [x19, #{CTX_HOST} + 8 * 11]
    ldr     x2, [x19, #{CTX_HOST_SP}]
    mov     sp, x2
    ldr     x19, [x19, #{CTX_HOST}]
    ret

    .global arch_enter
arch_enter:
    /* x0 = the vCPU context, x1 = the Guest object, x2 = its trampoline. */
    str     x19, [x0, #{CTX_HOST}]
    stp     x20, x21, [x0, #{CTX_HOST} + 8 * 1]
    stp     x22, x23, [x0, #{CTX_HOST} + 8 * 3]
    stp     x24, x25, [x0, #{CTX_HOST} + 8 * 5]
    stp     x26, x27, [x0, #{CTX_HOST} + 8 * 7]
    stp     x28, x29, [x0, #{CTX_HOST} + 8 * 9]
    str     x30, [x0, #{CTX_HOST} + 8 * 11]
    mov     x3, sp
    str     x3, [x0, #{CTX_HOST_SP}]
    stp     x1, x2, [x0, #{CTX_GUEST}]
    b       guest_resume
