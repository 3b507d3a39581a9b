//! The guest's emulated PL011 UART: transmit only, collected into lines for the hypervisor's console.
//!
//! What the guest sees is in `docs/guest-abi.md`: writes to `UARTDR` print,
//! `UARTFR` reads "transmit FIFO empty, receive FIFO empty", the PrimeCell
//! identification registers read as a PL011's (Linux's AMBA bus matches the
//! driver by them), and every other register reads 0 and ignores writes.

/// Data register: a write transmits its low byte.
const UARTDR: u64 = 0x00;
/// Flag register.
const UARTFR: u64 = 0x18;
/// `UARTFR.RXFE`: receive FIFO empty.
const FR_RXFE: u64 = 1 << 4;
/// `UARTFR.TXFE`: transmit FIFO empty.
const FR_TXFE: u64 = 1 << 7;
/// First of the eight identification registers (`UARTPeriphID0`).
const ID_BASE: u64 = 0xfe0;
/// `UARTPeriphID0..3` then `UARTPCellID0..3`: part 0x011, designer ARM,
/// revision 1; the PrimeCell id 0xb105f00d.
const ID_VALUES: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Longest line held; a longer one is cut and shown in pieces.
pub const LINE_MAX: usize = 256;

/// The emulated UART's state: the line being collected.
#[derive(Clone, Debug)]
pub struct Pl011Emu {
    buf: [u8; LINE_MAX],
    /// Bytes of the line collected so far.
    len: usize,
    /// Bytes at the start of `buf` returned by the previous write, to be
    /// dropped before the next byte is stored.
    done: usize,
}

impl Default for Pl011Emu {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011Emu {
    /// Size of the device's MMIO window.
    pub const SIZE: u64 = 0x1000;

    /// A UART with nothing collected.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buf: [0; LINE_MAX],
            len: 0,
            done: 0,
        }
    }

    /// A guest write of `value` (the access's low bytes) at `offset`.
    ///
    /// Returns a complete line, without its `'\n'`, when `UARTDR` gets
    /// `'\n'`, or when the buffer is full: then the line is cut (before a
    /// UTF-8 sequence that is still incomplete, which starts the next
    /// piece). `'\r'` is dropped; bytes that are not UTF-8 are shown as
    /// `'?'`. Writes to other registers are ignored.
    pub fn write(&mut self, offset: u64, value: u64) -> Option<&str> {
        if offset != UARTDR {
            return None;
        }
        self.discard_done();
        match value as u8 {
            b'\r' => None,
            b'\n' => Some(self.emit(self.len)),
            byte => {
                self.buf[self.len] = byte;
                self.len += 1;
                if self.len < LINE_MAX {
                    return None;
                }
                let cut = LINE_MAX - incomplete_tail(&self.buf);
                Some(self.emit(cut))
            }
        }
    }

    /// A guest read at `offset`.
    #[must_use]
    pub const fn read(&self, offset: u64) -> u64 {
        match offset {
            UARTFR => FR_TXFE | FR_RXFE,
            ID_BASE..=0xffc if offset.is_multiple_of(4) => {
                ID_VALUES[((offset - ID_BASE) / 4) as usize] as u64
            }
            _ => 0,
        }
    }

    /// The part of the current line collected so far (not yet returned).
    #[must_use]
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.done..self.len]
    }

    /// Drops the bytes returned by the previous write, keeping any carried
    /// over (the start of a UTF-8 sequence cut off a full line).
    fn discard_done(&mut self) {
        if self.done > 0 {
            self.buf.copy_within(self.done..self.len, 0);
            self.len -= self.done;
            self.done = 0;
        }
    }

    /// Returns the first `n` bytes as a line, with bytes that are not UTF-8
    /// replaced by `'?'`; they are dropped at the next write.
    fn emit(&mut self, n: usize) -> &str {
        let line = &mut self.buf[..n];
        let mut at = 0;
        while let Err(e) = core::str::from_utf8(&line[at..]) {
            let bad_start = at + e.valid_up_to();
            let bad_len = e.error_len().unwrap_or(line.len() - bad_start);
            line[bad_start..bad_start + bad_len].fill(b'?');
            at = bad_start + bad_len;
        }
        self.done = n;
        core::str::from_utf8(&self.buf[..n]).unwrap_or_default()
    }
}

/// How many bytes at the end of `buf` are the start of a UTF-8 sequence
/// that more bytes could still complete (0..=3).
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=3.min(buf.len()) {
        let byte = buf[buf.len() - back];
        if byte & 0xc0 != 0x80 {
            // The lead byte: how long its sequence should be.
            let want = match byte {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return 0,
            };
            let tail = &buf[buf.len() - back..];
            let prefix_ok = match core::str::from_utf8(tail) {
                Ok(_) => false,
                Err(e) => e.valid_up_to() == 0 && e.error_len().is_none(),
            };
            return if back < want && prefix_ok { back } else { 0 };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes `bytes` to UARTDR, collecting every line returned.
    fn send(uart: &mut Pl011Emu, bytes: &[u8]) -> Vec<String> {
        bytes
            .iter()
            .filter_map(|&b| uart.write(0, u64::from(b)).map(str::to_owned))
            .collect()
    }

    #[test]
    fn lines_end_at_newline_and_drop_cr() {
        let mut u = Pl011Emu::new();
        assert_eq!(send(&mut u, b"hello"), Vec::<String>::new());
        assert_eq!(u.pending(), b"hello");
        assert_eq!(send(&mut u, b" world\r\n"), ["hello world"]);
        assert_eq!(u.pending(), b"");
        assert_eq!(send(&mut u, b"\n\r\nab\ncd"), ["", "", "ab"]);
        assert_eq!(u.pending(), b"cd");
    }

    #[test]
    fn only_the_low_byte_of_uartdr_counts() {
        let mut u = Pl011Emu::new();
        assert_eq!(u.write(0, 0xffff_ff41), None);
        assert_eq!(u.pending(), b"A");
        // 0x30a: low byte '\n'.
        assert_eq!(u.write(0, 0x30a), Some("A"));
    }

    #[test]
    fn other_registers_ignore_writes() {
        let mut u = Pl011Emu::new();
        for offset in [0x4, 0x18, 0x24, 0x28, 0x2c, 0x30, 0x38, 0x44, 0xfe0, 0x1] {
            assert_eq!(u.write(offset, u64::from(b'\n')), None, "{offset:#x}");
            assert_eq!(u.write(offset, u64::from(b'x')), None, "{offset:#x}");
        }
        assert_eq!(u.pending(), b"");
    }

    #[test]
    fn registers_read() {
        let u = Pl011Emu::new();
        assert_eq!(u.read(0x18), 0x90);
        let ids: Vec<u64> = (0..8).map(|i| u.read(0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        // What Linux's AMBA bus computes from them.
        let periph = ids[..4]
            .iter()
            .enumerate()
            .fold(0, |acc, (i, b)| acc | (b << (8 * i)));
        let cell = ids[4..]
            .iter()
            .enumerate()
            .fold(0, |acc, (i, b)| acc | (b << (8 * i)));
        assert_eq!(periph, 0x0014_1011);
        assert_eq!(cell, 0xb105_f00d);
        for offset in (0..Pl011Emu::SIZE).step_by(4) {
            if offset != 0x18 && offset < 0xfe0 {
                assert_eq!(u.read(offset), 0, "{offset:#x}");
            }
        }
        // Unaligned or out-of-window reads are 0.
        for offset in [0xfe1, 0xffd, 0x1000, 0x1fe0, u64::MAX] {
            assert_eq!(u.read(offset), 0, "{offset:#x}");
        }
    }

    #[test]
    fn non_utf8_becomes_question_marks() {
        let mut u = Pl011Emu::new();
        assert_eq!(send(&mut u, b"a\xffb\xc3\n"), ["a?b?"]);
        assert_eq!(send(&mut u, "é€😀\n".as_bytes()), ["é€😀"]);
        // A lone continuation byte, an overlong encoding, a surrogate.
        assert_eq!(send(&mut u, b"\x80|\xc0\xaf|\xed\xa0\x80\n"), ["?|??|???"]);
    }

    #[test]
    fn a_full_buffer_is_cut() {
        let mut u = Pl011Emu::new();
        let long = "x".repeat(LINE_MAX + 10);
        let lines = send(&mut u, format!("{long}\n").as_bytes());
        assert_eq!(lines, ["x".repeat(LINE_MAX), "x".repeat(10)]);
        // Exactly full, then the newline: one full piece and an empty line.
        let lines = send(&mut u, format!("{}\n", "y".repeat(LINE_MAX)).as_bytes());
        assert_eq!(lines, ["y".repeat(LINE_MAX), String::new()]);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut u = Pl011Emu::new();
        // 255 ASCII bytes, then a 3-byte '€': the buffer fills at its
        // second byte; the cut keeps it whole for the next piece.
        let text = format!("{}€z\n", "a".repeat(LINE_MAX - 1));
        let lines = send(&mut u, text.as_bytes());
        assert_eq!(lines, ["a".repeat(LINE_MAX - 1), "€z".to_owned()]);
    }

    /// The lines a UART must return for valid UTF-8 `text`, and what is
    /// left pending: `'\r'` dropped, split at `'\n'`, and each line cut
    /// whenever 256 bytes of it are held, at the last character boundary.
    fn model(text: &str) -> (Vec<String>, String) {
        let text: String = text.chars().filter(|&c| c != '\r').collect();
        let mut pieces = Vec::new();
        let mut segments = text.split('\n').peekable();
        while let Some(mut rest) = segments.next() {
            while rest.len() >= LINE_MAX {
                let mut cut = LINE_MAX;
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                pieces.push(rest[..cut].to_owned());
                rest = &rest[cut..];
            }
            if segments.peek().is_none() {
                return (pieces, rest.to_owned());
            }
            pieces.push(rest.to_owned());
        }
        unreachable!("split yields at least one segment")
    }

    proptest! {
        #[test]
        fn lines_reassemble_the_input(
            text in prop_oneof![
                "[a-z é€😀\n\r]{0,600}",
                // Long lines, so cuts land inside multi-byte characters.
                "[a-zé€😀]{100,300}(\r?\n[a-z€😀]{0,300}){0,3}",
            ]
        ) {
            let mut u = Pl011Emu::new();
            let lines = send(&mut u, text.as_bytes());
            // Valid UTF-8 in: exactly the model's pieces come out, and the
            // model's unfinished piece is what is pending.
            let (pieces, pending) = model(&text);
            prop_assert_eq!(lines, pieces);
            prop_assert_eq!(u.pending(), pending.as_bytes());
        }

        #[test]
        fn any_bytes_give_valid_short_lines(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let mut u = Pl011Emu::new();
            for b in bytes {
                if let Some(line) = u.write(0, u64::from(b)) {
                    prop_assert!(line.len() <= LINE_MAX);
                    prop_assert!(!line.contains('\n') && !line.contains('\r'));
                }
                prop_assert!(u.pending().len() < LINE_MAX);
            }
        }
    }
}
