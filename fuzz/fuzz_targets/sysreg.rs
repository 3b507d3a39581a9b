//! Trapped system-register accesses: `hvcore::sysreg::Trapped` keeps every field of the syndrome and agrees with `hvcore::esr`; the SGI registers' target lists (`vgic::sgi_targets`) name exactly the vCPUs the architecture says.
#![no_main]

use hvcore::esr::{Esr, Iss};
use hvcore::sysreg::{SysReg, Trapped, ICC_ASGI1R_EL1, ICC_SGI0R_EL1, ICC_SGI1R_EL1};
use hvcore::vgic::sgi_targets;
use libfuzzer_sys::fuzz_target;

/// The ISS of `MSR`/`MRS` `t`: the inverse of the decoder.
fn encode(t: &Trapped) -> u32 {
    let r = t.reg;
    u32::from(r.op0) << 20
        | u32::from(r.op2) << 17
        | u32::from(r.op1) << 14
        | u32::from(r.crn) << 10
        | u32::from(t.rt) << 5
        | u32::from(r.crm) << 1
        | u32::from(t.read)
}

/// The vCPUs (`Aff0` values, all other affinity levels 0) an SGI register
/// value names, as GICv3 defines the fields: `IRM` (bit 40) every PE but
/// the sender; else `Aff0 = RS * 16 + n` for each bit `n` of the target
/// list, at `Aff3.Aff2.Aff1`.
fn named(value: u64, sender: usize, target: usize) -> bool {
    if value >> 40 & 1 == 1 {
        return target != sender;
    }
    let aff321 = [
        (value >> 48) & 0xff,
        (value >> 32) & 0xff,
        (value >> 16) & 0xff,
    ];
    let rs = (value >> 44) & 0xf;
    aff321 == [0, 0, 0]
        && (0..16)
            .filter(|n| value >> n & 1 == 1)
            .any(|n| (rs * 16 + n) as usize == target)
}

fuzz_target!(|input: (u32, u64, u8, u16)| {
    let (iss, value, sender, target) = input;
    let iss = iss & 0x1ff_ffff;
    let t = Trapped::from_iss(iss);
    // Bits 24:22 are RES0: everything else survives a round trip.
    assert_eq!(encode(&t), iss & 0x3f_ffff);
    assert!(t.rt < 32 && t.reg.op0 < 4 && t.reg.op1 < 8 && t.reg.op2 < 8);
    assert!(t.reg.crn < 16 && t.reg.crm < 16);
    let r = t.reg;
    assert_eq!(
        r.to_string(),
        format!("S{}_{}_C{}_C{}_{}", r.op0, r.op1, r.crn, r.crm, r.op2)
    );
    assert_eq!(r, SysReg::new(r.op0, r.op1, r.crn, r.crm, r.op2));

    // The same syndrome through the full decoder.
    let esr = Esr::decode(0x18 << 26 | 1 << 25 | u64::from(iss));
    let Iss::SysReg(a) = esr.iss else {
        panic!("EC 0x18 is not a system-register trap: {esr:?}");
    };
    assert_eq!(
        (a.op0, a.op1, a.crn, a.crm, a.op2, a.reg, a.read),
        (r.op0, r.op1, r.crn, r.crm, r.op2, t.rt, t.read)
    );
    let is_sgi = [ICC_SGI1R_EL1, ICC_ASGI1R_EL1, ICC_SGI0R_EL1].contains(&r);
    assert_eq!(
        is_sgi,
        r.op0 == 3 && r.op1 == 0 && r.crn == 12 && r.crm == 11 && r.op2 >= 5
    );

    // What a write of `value` to an SGI register targets.
    let (sender, target) = (usize::from(sender), usize::from(target));
    assert_eq!(
        sgi_targets(value, sender, target),
        named(value, sender, target),
        "value {value:#x}, sender {sender}, target {target}"
    );
});
