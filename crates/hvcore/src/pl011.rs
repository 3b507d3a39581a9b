//! The guest's emulated PL011 UART (Arm DDI 0183), as Linux's `amba-pl011` driver uses it: data, flags, a 32-entry receive FIFO, the interrupt mask, raw and masked status and clear registers, and the PrimeCell identification.
//!
//! Transmission is instant: every byte written to `UARTDR` leaves at once
//! (the caller prints it), so the transmit FIFO is always empty
//! (`UARTFR.TXFE`, never `TXFF` or `BUSY`) and the transmit interrupt is
//! raised by each write, until the guest clears it, as QEMU's model does.
//! Received bytes (from the hypervisor's console, [`Pl011Emu::receive`])
//! wait in the FIFO until the guest reads `UARTDR`; the receive interrupt
//! is asserted while the FIFO holds its trigger level (`UARTIFLS`), and
//! the receive time-out interrupt while it holds anything (the time-out is
//! taken as expired at once: input arrives in bursts). Both follow the
//! FIFO, so clearing them while data waits does not lose it.
//!
//! The interrupt line is `(RIS & IMSC) != 0`; every access reports whether
//! it changed, so the caller drives the VM's interrupt only on a change.
//! Baud-rate, line-control, DMA and IrDA registers keep what is written
//! and have no effect. Accesses outside the registers read 0 and are
//! ignored.

/// Data register.
const DR: u64 = 0x00;
/// Receive status / error clear.
const RSR: u64 = 0x04;
/// Flag register.
const FR: u64 = 0x18;
/// IrDA low-power counter.
const ILPR: u64 = 0x20;
/// Integer baud rate.
const IBRD: u64 = 0x24;
/// Fractional baud rate.
const FBRD: u64 = 0x28;
/// Line control.
const LCR_H: u64 = 0x2c;
/// Control.
const CR: u64 = 0x30;
/// Interrupt FIFO level select.
const IFLS: u64 = 0x34;
/// Interrupt mask set/clear.
const IMSC: u64 = 0x38;
/// Raw interrupt status.
const RIS: u64 = 0x3c;
/// Masked interrupt status.
const MIS: u64 = 0x40;
/// Interrupt clear.
const ICR: u64 = 0x44;
/// DMA control.
const DMACR: u64 = 0x48;
/// First of the eight identification registers (`UARTPeriphID0`).
const ID_BASE: u64 = 0xfe0;
/// `UARTPeriphID0..3` then `UARTPCellID0..3`: part 0x011, designer ARM,
/// revision 1; the PrimeCell id 0xb105f00d.
const ID_VALUES: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// `UARTFR` bits.
pub mod fr {
    /// Receive FIFO empty.
    pub const RXFE: u32 = 1 << 4;
    /// Transmit FIFO full.
    pub const TXFF: u32 = 1 << 5;
    /// Receive FIFO full.
    pub const RXFF: u32 = 1 << 6;
    /// Transmit FIFO empty.
    pub const TXFE: u32 = 1 << 7;
}

/// Interrupt bits (`UARTIMSC`, `UARTRIS`, `UARTMIS`, `UARTICR`).
pub mod int {
    /// Receive.
    pub const RX: u32 = 1 << 4;
    /// Transmit.
    pub const TX: u32 = 1 << 5;
    /// Receive time-out.
    pub const RT: u32 = 1 << 6;
    /// Every source (11 bits).
    pub const ALL: u32 = 0x7ff;
}

/// `UARTCR` bits.
pub mod cr {
    /// UART enable.
    pub const UARTEN: u32 = 1 << 0;
    /// Transmit enable.
    pub const TXE: u32 = 1 << 8;
    /// Receive enable.
    pub const RXE: u32 = 1 << 9;
}

/// `UARTLCR_H.FEN`: FIFOs enabled (else each holds one character).
const LCR_FEN: u32 = 1 << 4;

/// Receive FIFO depth.
pub const FIFO: usize = 32;

/// What an access did besides its value: a byte to transmit, and the
/// interrupt line's new level if it changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Effect {
    /// A byte the guest transmitted.
    pub tx: Option<u8>,
    /// The interrupt line's new level, if it changed.
    pub line: Option<bool>,
}

/// The emulated PL011.
#[derive(Clone, Debug)]
pub struct Pl011Emu {
    rx: [u8; FIFO],
    rx_head: usize,
    rx_len: usize,
    /// Stored interrupt bits (transmit and the error sources); receive and
    /// receive time-out follow the FIFO.
    ris: u32,
    imsc: u32,
    cr: u32,
    lcr_h: u32,
    ifls: u32,
    ibrd: u32,
    fbrd: u32,
    ilpr: u32,
    dmacr: u32,
    /// The line level last reported.
    line: bool,
}

impl Default for Pl011Emu {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011Emu {
    /// Size of the device's MMIO window.
    pub const SIZE: u64 = 0x1000;

    /// A UART out of reset.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            rx: [0; FIFO],
            rx_head: 0,
            rx_len: 0,
            ris: 0,
            imsc: 0,
            cr: cr::RXE | cr::TXE,
            lcr_h: 0,
            ifls: 0x12,
            ibrd: 0,
            fbrd: 0,
            ilpr: 0,
            dmacr: 0,
            line: false,
        }
    }

    /// The receive FIFO's capacity now: 32 with FIFOs on, else 1.
    const fn depth(&self) -> usize {
        if self.lcr_h & LCR_FEN != 0 {
            FIFO
        } else {
            1
        }
    }

    /// Bytes that make the receive interrupt (`UARTIFLS.RXIFLSEL`: 1/8,
    /// 1/4, 1/2, 3/4 or 7/8 full; 1 without FIFOs).
    const fn rx_trigger(&self) -> usize {
        if self.lcr_h & LCR_FEN == 0 {
            return 1;
        }
        match (self.ifls >> 3) & 7 {
            0 => 4,
            1 => 8,
            2 => 16,
            3 => 24,
            _ => 28,
        }
    }

    /// The raw interrupt status.
    const fn raw(&self) -> u32 {
        let mut ris = self.ris;
        if self.rx_len > 0 {
            ris |= int::RT;
            if self.rx_len >= self.rx_trigger() {
                ris |= int::RX;
            }
        }
        ris
    }

    /// The interrupt line now.
    #[must_use]
    pub const fn line(&self) -> bool {
        self.raw() & self.imsc != 0
    }

    /// The line's level if it changed since last reported.
    #[inline]
    fn line_change(&mut self) -> Option<bool> {
        let now = self.line();
        (now != self.line).then(|| {
            self.line = now;
            now
        })
    }

    /// Whether the guest has the receiver on (`UARTEN` and `RXE`): only
    /// then does [`Pl011Emu::receive`] take bytes.
    #[must_use]
    pub const fn receiving(&self) -> bool {
        self.cr & (cr::UARTEN | cr::RXE) == cr::UARTEN | cr::RXE
    }

    /// Free room in the receive FIFO.
    #[must_use]
    pub const fn rx_room(&self) -> usize {
        if self.receiving() {
            self.depth() - self.rx_len
        } else {
            0
        }
    }

    /// Takes as many of `bytes` as the receive FIFO has room for (none
    /// while the receiver is off). Returns how many it took, and the line
    /// if it changed.
    #[must_use]
    pub fn receive(&mut self, bytes: &[u8]) -> (usize, Option<bool>) {
        let n = bytes.len().min(self.rx_room());
        for &b in &bytes[..n] {
            self.rx[(self.rx_head + self.rx_len) % FIFO] = b;
            self.rx_len += 1;
        }
        (n, self.line_change())
    }

    /// A guest read at `offset`: its value, and the line if it changed.
    #[must_use]
    pub fn read(&mut self, offset: u64) -> (u64, Option<bool>) {
        let value = match offset {
            DR => {
                if self.rx_len == 0 {
                    0
                } else {
                    let b = self.rx[self.rx_head];
                    self.rx_head = (self.rx_head + 1) % FIFO;
                    self.rx_len -= 1;
                    u32::from(b)
                }
            }
            FR => {
                let mut fr = fr::TXFE;
                if self.rx_len == 0 {
                    fr |= fr::RXFE;
                }
                if self.rx_len >= self.depth() {
                    fr |= fr::RXFF;
                }
                fr
            }
            ILPR => self.ilpr,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            RIS => self.raw(),
            MIS => self.raw() & self.imsc,
            DMACR => self.dmacr,
            ID_BASE..=0xffc if offset.is_multiple_of(4) => {
                u32::from(ID_VALUES[((offset - ID_BASE) / 4) as usize])
            }
            _ => 0,
        };
        (u64::from(value), self.line_change())
    }

    /// A guest write of `value` (the access's low bytes) at `offset`.
    #[inline]
    pub fn write(&mut self, offset: u64, value: u64) -> Effect {
        if offset == DR {
            // The console's path, one exit per byte: sent at once, so the
            // transmit FIFO is empty again.
            self.ris |= int::TX;
            return Effect {
                tx: Some(value as u8),
                line: self.line_change(),
            };
        }
        self.write_register(offset, value as u32);
        Effect {
            tx: None,
            line: self.line_change(),
        }
    }

    /// A write to any register but `UARTDR`.
    fn write_register(&mut self, offset: u64, v: u32) {
        match offset {
            RSR | FR | RIS | MIS => {}
            ILPR => self.ilpr = v & 0xff,
            IBRD => self.ibrd = v & 0xffff,
            FBRD => self.fbrd = v & 0x3f,
            LCR_H => {
                let was = self.lcr_h & LCR_FEN;
                self.lcr_h = v & 0xff;
                if self.lcr_h & LCR_FEN != was {
                    // Switching the FIFOs flushes them.
                    self.rx_len = 0;
                }
            }
            CR => self.cr = v & 0xff87,
            IFLS => self.ifls = v & 0x3f,
            IMSC => self.imsc = v & int::ALL,
            ICR => self.ris &= !(v & int::ALL),
            DMACR => self.dmacr = v & 7,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Set up as Linux's driver does: FIFOs on, UART and receiver on, the
    /// receive and time-out interrupts unmasked.
    fn linux_like() -> Pl011Emu {
        let mut u = Pl011Emu::new();
        let _ = u.write(LCR_H, u64::from(LCR_FEN | 0x60));
        let _ = u.write(CR, u64::from(cr::UARTEN | cr::TXE | cr::RXE));
        let _ = u.write(IMSC, u64::from(int::RX | int::RT));
        u
    }

    #[test]
    fn out_of_reset() {
        let mut u = Pl011Emu::new();
        assert_eq!(u.read(FR).0, 0x90, "TXFE and RXFE");
        assert_eq!(u.read(CR).0, 0x300);
        assert_eq!(u.read(IFLS).0, 0x12);
        let ids: Vec<u64> = (0..8).map(|i| u.read(0xfe0 + 4 * i).0).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        for offset in [0xfe1, 0xffd, 0x1000, 0x4c, 0x800, u64::MAX] {
            assert_eq!(u.read(offset).0, 0, "{offset:#x}");
        }
        assert!(!u.line());
        // Not enabled: nothing received.
        assert_eq!(u.receive(b"abc"), (0, None));
    }

    #[test]
    fn transmit_and_its_interrupt() {
        let mut u = Pl011Emu::new();
        assert_eq!(u.write(DR, 0x141).tx, Some(0x41), "the low byte");
        assert_eq!(u.read(RIS).0, u64::from(int::TX));
        // Unmasking asserts the line; clearing lowers it; a write raises it.
        assert_eq!(u.write(IMSC, u64::from(int::TX)).line, Some(true));
        assert_eq!(u.read(MIS).0, u64::from(int::TX));
        assert_eq!(
            u.write(ICR, u64::from(int::TX)),
            Effect {
                tx: None,
                line: Some(false)
            }
        );
        let e = u.write(DR, u64::from(b'x'));
        assert_eq!(
            e,
            Effect {
                tx: Some(b'x'),
                line: Some(true)
            }
        );
        assert_eq!(
            u.write(DR, u64::from(b'y')).line,
            None,
            "no change, no report"
        );
        assert_eq!(u.write(IMSC, 0).line, Some(false));
        for offset in [RSR, FR, RIS, MIS, 0x800] {
            assert_eq!(u.write(offset, 0xff).tx, None);
        }
    }

    #[test]
    fn receive_fifo_and_interrupts() {
        let mut u = linux_like();
        // Trigger at 1/2 of 32 = 16 (IFLS 0x12: RXIFLSEL 2); one byte makes
        // only the time-out interrupt.
        let (n, line) = u.receive(b"h");
        assert_eq!((n, line), (1, Some(true)));
        assert_eq!(u.read(RIS).0, u64::from(int::RT));
        assert_eq!(u.read(FR).0 & u64::from(fr::RXFE), 0);
        assert_eq!(u.read(DR), (u64::from(b'h'), Some(false)));
        assert_eq!(u.read(FR).0, 0x90);
        // 40 offered, 32 taken; RX at 16 and above, RXFF when full.
        let bytes: Vec<u8> = (0..40).collect();
        assert_eq!(u.receive(&bytes).0, FIFO);
        assert_eq!(u.read(RIS).0, u64::from(int::RX | int::RT));
        assert_ne!(u.read(FR).0 & u64::from(fr::RXFF), 0);
        assert_eq!(u.rx_room(), 0);
        // Clearing RX/RT while data waits changes nothing: they follow the FIFO.
        assert_eq!(u.write(ICR, u64::from(int::ALL)).line, None);
        let mut got = Vec::new();
        while u.read(FR).0 & u64::from(fr::RXFE) == 0 {
            got.push(u.read(DR).0 as u8);
        }
        assert_eq!(got, &bytes[..32], "in order, none lost");
        assert!(!u.line());
        assert_eq!(u.read(DR).0, 0, "empty reads 0");
    }

    #[test]
    fn without_fifos_one_byte_at_a_time() {
        let mut u = linux_like();
        let _ = u.write(LCR_H, 0x60);
        assert_eq!(u.receive(b"ab").0, 1);
        assert_eq!(u.read(RIS).0, u64::from(int::RX | int::RT), "trigger 1");
        assert_ne!(u.read(FR).0 & u64::from(fr::RXFF), 0);
        // Switching the FIFOs on flushes them.
        let _ = u.write(LCR_H, u64::from(LCR_FEN | 0x60));
        assert_eq!(u.read(FR).0 & u64::from(fr::RXFE), u64::from(fr::RXFE));
    }

    #[test]
    fn trigger_levels() {
        let mut u = linux_like();
        for (sel, level) in [(0, 4), (1, 8), (2, 16), (3, 24), (4, 28)] {
            let _ = u.write(IFLS, sel << 3);
            while u.read(FR).0 & u64::from(fr::RXFE) == 0 {
                let _ = u.read(DR);
            }
            let _ = u.receive(&[0; 31][..level - 1]);
            assert_eq!(u.read(RIS).0 & u64::from(int::RX), 0, "{sel}: below");
            let _ = u.receive(&[0]);
            assert_ne!(u.read(RIS).0 & u64::from(int::RX), 0, "{sel}: at");
        }
    }

    #[test]
    fn registers_keep_what_is_written() {
        let mut u = Pl011Emu::new();
        for (offset, value, back) in [
            (IBRD, 0x1_0027, 0x27),
            (FBRD, 0xff, 0x3f),
            (LCR_H, 0x170, 0x70),
            (CR, 0xffff, 0xff87),
            (IFLS, 0xff, 0x3f),
            (IMSC, 0xffff, 0x7ff),
            (DMACR, 0xff, 7),
            (ILPR, 0x1ff, 0xff),
        ] {
            let _ = u.write(offset, value);
            assert_eq!(u.read(offset).0, back, "{offset:#x}");
        }
    }

    proptest! {
        /// Whatever the guest does, the FIFO delivers received bytes in
        /// order without loss or invention, and the reported line always
        /// equals the level computed from the registers.
        #[test]
        fn fifo_against_a_queue(ops in proptest::collection::vec((0u8..6, any::<u8>()), 0..300)) {
            let mut u = linux_like();
            let mut model = std::collections::VecDeque::new();
            let mut line = false;
            let mut next = 0u8;
            for (op, arg) in ops {
                let change = match op {
                    0 | 1 => {
                        let bytes: Vec<u8> = (0..arg % 40).map(|i| next.wrapping_add(i)).collect();
                        let (n, change) = u.receive(&bytes);
                        prop_assert_eq!(n, bytes.len().min(FIFO - model.len()));
                        model.extend(&bytes[..n]);
                        next = next.wrapping_add(n as u8);
                        change
                    }
                    2 => {
                        let (v, change) = u.read(DR);
                        prop_assert_eq!(v, u64::from(model.pop_front().unwrap_or(0)));
                        change
                    }
                    3 => u.write(ICR, u64::from(arg)).line,
                    4 => u.write(IMSC, u64::from(arg)).line,
                    _ => u.write(IFLS, u64::from(arg)).line,
                };
                if let Some(level) = change {
                    prop_assert_ne!(level, line, "a change is a change");
                    line = level;
                }
                prop_assert_eq!(line, u.line());
                prop_assert_eq!(u.read(FR).0 & u64::from(fr::RXFE) != 0, model.is_empty());
            }
        }
    }
}
