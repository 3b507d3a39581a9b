/*
 * The VBAR_EL2 exception vector table, included by src/exception.rs with
 * global_asm!, which supplies these operands:
 *   FRAME_SIZE, FRAME_ELR, FRAME_SPSR   TrapFrame layout (src/exception.rs)
 *   HANDLER                             fn(&mut TrapFrame, kind: u64)
 *
 * Each of the 16 entries saves x0/x1, puts its index (VectorKind) in x1 and
 * branches to a common path that saves the rest of the general registers,
 * ELR_EL2 and SPSR_EL2 into a TrapFrame on the current stack, calls the
 * handler, then restores everything from the (possibly modified) frame and
 * returns with eret. Lower-EL entries are the guest exit path: the frame
 * then holds the vCPU's registers, which the handler may change (results
 * of hypercalls, emulated loads, the next PC) before eret resumes the guest.
 *
 * enter_guest(frame, stack_top) starts a vCPU: it copies the frame to the
 * top of the CPU's stack, where every later exit from the guest will push
 * its frame again, and leaves through trap_return. So the stack is reset on
 * every vCPU start (CPU_ON after CPU_OFF cannot grow it).
 */

    .section .text.vectors, "ax"

.macro VECTOR_ENTRY kind
    .balign 0x80
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       trap_common
.endm

    .balign 0x800
    .global exception_vectors
exception_vectors:
    /* Current EL with SP_EL0 */
    VECTOR_ENTRY 0      /* synchronous */
    VECTOR_ENTRY 1      /* IRQ */
    VECTOR_ENTRY 2      /* FIQ */
    VECTOR_ENTRY 3      /* SError */
    /* Current EL with SP_ELx */
    VECTOR_ENTRY 4
    VECTOR_ENTRY 5
    VECTOR_ENTRY 6
    VECTOR_ENTRY 7
    /* Lower EL, AArch64 */
    VECTOR_ENTRY 8
    VECTOR_ENTRY 9
    VECTOR_ENTRY 10
    VECTOR_ENTRY 11
    /* Lower EL, AArch32 */
    VECTOR_ENTRY 12
    VECTOR_ENTRY 13
    VECTOR_ENTRY 14
    VECTOR_ENTRY 15

trap_common:
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

    /* Restore the frame at sp and return from the exception. */
trap_return:
    ldr     x2, [sp, #{FRAME_ELR}]
    ldr     x3, [sp, #{FRAME_SPSR}]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    ldr     x30, [sp, #16 * 15]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{FRAME_SIZE}
    eret

    .global enter_guest
enter_guest:
    /* x0 = source TrapFrame, x1 = top of this CPU's stack. The source may
     * lie just below the destination on the same stack: copy downwards. */
    sub     x2, x1, #{FRAME_SIZE}
    mov     x3, #{FRAME_SIZE}
1:  sub     x3, x3, #16
    add     x6, x0, x3
    add     x7, x2, x3
    ldp     x4, x5, [x6]
    stp     x4, x5, [x7]
    cbnz    x3, 1b
    mov     sp, x2
    b       trap_return
