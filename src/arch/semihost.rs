//! Arm semihosting calls (`hlt #0xf000` at EL2): the debug console used
//! before the UART is known, and the exit that reports a status to QEMU.
//! QEMU must run with `-semihosting`; otherwise `hlt` is undefined.

use core::arch::asm;

/// `SYS_WRITEC`: write one character to the debug console.
const SYS_WRITEC: u64 = 0x03;
/// `SYS_EXIT_EXTENDED`: exit with a reason and a status code.
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// `ADP_Stopped_ApplicationExit`: the reason for a normal exit.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Issues semihosting operation `op` with parameter block `param`.
///
/// # Safety
///
/// `param` must be what operation `op` expects: for the two operations used
/// here, the address of a live, readable parameter block.
unsafe fn call(op: u64, param: *const u64) -> u64 {
    let ret;
    // SAFETY: the semihosting trap reads at most the parameter block, which
    // the caller guarantees is valid, and writes only x0.
    unsafe {
        asm!(
            "hlt #0xf000",
            inout("x0") op => ret,
            in("x1") param,
            options(nostack, readonly),
        );
    }
    ret
}

/// Writes one byte to the semihosting debug console.
pub fn write_byte(byte: u8) {
    let block = u64::from(byte);
    // SAFETY: SYS_WRITEC reads one byte at `param`: the first byte of
    // `block`, which is that byte on a little-endian CPU.
    unsafe { call(SYS_WRITEC, &block) };
}

/// Ends the emulation with `code` (the shell sees it modulo 256). Returns
/// only if the host ignored the request.
pub fn exit(code: u32) {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // SAFETY: SYS_EXIT_EXTENDED reads the two-word block {reason, code},
    // which lives on this stack frame for the duration of the call.
    unsafe { call(SYS_EXIT_EXTENDED, block.as_ptr()) };
}
