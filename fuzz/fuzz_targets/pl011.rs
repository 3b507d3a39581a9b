//! The console path: the emulated PL011 under any register accesses and input (its FIFO against a queue, its reported line against `line()`), the bytes it transmits collected into console lines (`hvcore::lines`: valid, short, no control characters, made of what was sent), and typed bytes through the escape key (`hvcore::escape`).
#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use hvcore::escape::{Escape, Key, ESCAPE};
use hvcore::lines::{LineBuf, UartLine, LINE_MAX};
use hvcore::pl011::{cr, fr, Pl011Emu, FIFO};
use libfuzzer_sys::fuzz_target;

const DR: u64 = 0x00;
const FR: u64 = 0x18;
const LCR_H: u64 = 0x2c;
const CR: u64 = 0x30;
/// `UARTLCR_H.FEN`.
const FEN: u64 = 1 << 4;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A register access at a 12-bit offset (the device's window).
    Read(u16),
    Write(u16, u64),
    /// Any offset at all.
    ReadWild(u64),
    WriteWild(u64, u64),
    /// Bytes typed on the console, through the escape key to the UART.
    Type(Vec<u8>),
    /// Bytes offered to the UART at once.
    Receive(Vec<u8>),
    /// vCPU `n` writes text to the data register.
    Send(u8, Vec<u8>),
}

/// The model of the UART's receive side: what it holds, and the two
/// registers that decide how much it takes.
struct Model {
    fifo: VecDeque<u8>,
    cr: u64,
    lcr_h: u64,
    line: bool,
}

impl Model {
    fn depth(&self) -> usize {
        if self.lcr_h & FEN != 0 {
            FIFO
        } else {
            1
        }
    }

    fn room(&self) -> usize {
        let on = u64::from(cr::UARTEN | cr::RXE);
        if self.cr & on == on {
            self.depth() - self.fifo.len()
        } else {
            0
        }
    }

    /// A reported change must be one, and the line must read as reported.
    fn changed(&mut self, change: Option<bool>, u: &Pl011Emu) {
        if let Some(level) = change {
            assert_ne!(level, self.line, "a change that is none");
            self.line = level;
        }
        assert_eq!(self.line, u.line(), "the reported line is stale");
    }
}

/// A console line against the bytes sent since the previous one (`since`,
/// without line ends): the same length as the part it stands for, each
/// byte the one sent or `'?'`, printable ASCII and tabs always kept.
fn check_line(line: &str, since: &mut Vec<u8>, ended: bool) {
    assert!(line.len() <= LINE_MAX);
    assert!(
        !line.chars().any(|c| c.is_control() && c != '\t'),
        "{line:?}"
    );
    let bytes = line.as_bytes();
    if ended {
        assert_eq!(bytes.len(), since.len(), "a whole line: {line:?} {since:?}");
    } else {
        // Cut: at most 3 bytes of an unfinished character carried over.
        assert!(bytes.len() <= since.len() && since.len() - bytes.len() <= 3);
        assert!(bytes.len() + 3 >= LINE_MAX);
    }
    for (&got, &sent) in bytes.iter().zip(since.iter()) {
        let text = sent == b'\t' || (0x20..0x7f).contains(&sent);
        assert!(
            got == sent || (got == b'?' && !text),
            "{got:#x} for {sent:#x}"
        );
    }
    since.drain(..bytes.len());
}

fuzz_target!(|ops: Vec<Op>| {
    let mut u = Pl011Emu::new();
    let mut m = Model {
        fifo: VecDeque::new(),
        cr: u64::from(cr::RXE | cr::TXE),
        lcr_h: 0,
        line: false,
    };
    let mut esc = Escape::new();
    let mut last_key = Key::Guest(0);
    let mut console = UartLine::new();
    let mut buf = LineBuf::new();
    // Bytes sent since the last line (line ends left out), and who sent
    // them.
    let mut since: Vec<u8> = Vec::new();
    let mut writers: u64 = 0;
    for op in ops.iter().take(512) {
        let (offset, write) = match *op {
            Op::Read(o) => (u64::from(o & 0xfff), None),
            Op::Write(o, v) => (u64::from(o & 0xfff), Some(v)),
            Op::ReadWild(o) => (o, None),
            Op::WriteWild(o, v) => (o, Some(v)),
            Op::Type(ref bytes) => {
                for &b in bytes {
                    let key = esc.feed(b);
                    let armed = last_key == Key::Pending;
                    match key {
                        Key::Pending => assert!(b == ESCAPE && !armed),
                        Key::Guest(g) => {
                            assert_eq!(g, b);
                            assert!(armed == (b == ESCAPE), "Ctrl-A passes only doubled");
                            let room = m.room();
                            let (n, change) = u.receive(&[g]);
                            assert_eq!(n, room.min(1));
                            if n == 1 {
                                m.fifo.push_back(g);
                            }
                            m.changed(change, &u);
                        }
                        Key::Quit => assert!(armed && b.eq_ignore_ascii_case(&b'x')),
                        Key::Help => assert!(armed && matches!(b, b'h' | b'H' | b'?')),
                        Key::Next => assert!(armed && b.eq_ignore_ascii_case(&b'n')),
                        Key::Unknown(k) => assert!(armed && k == b && b != ESCAPE),
                    }
                    last_key = key;
                }
                continue;
            }
            Op::Receive(ref bytes) => {
                let room = m.room();
                let (n, change) = u.receive(bytes);
                assert_eq!(n, room.min(bytes.len()));
                m.fifo.extend(&bytes[..n]);
                m.changed(change, &u);
                continue;
            }
            Op::Send(vcpu, ref bytes) => {
                let vcpu = usize::from(vcpu % 70);
                for &b in bytes {
                    let e = u.write(DR, u64::from(b) | 0xdead_0000);
                    assert_eq!(e.tx, Some(b), "the low byte leaves");
                    m.changed(e.line, &u);
                    if b != b'\r' && b != b'\n' {
                        since.push(b);
                        writers |= 1 << vcpu.min(63);
                    }
                    let mut expect = since.clone();
                    if let Some(line) = buf.push(b) {
                        check_line(line, &mut expect, b == b'\n');
                    }
                    if let Some((who, line)) = console.push(vcpu, b) {
                        // Only vCPUs that wrote since the last line.
                        let named = who.to_string();
                        let ids = named.strip_prefix("vcpu").expect("vcpuN");
                        for id in ids.split(',') {
                            let id: u32 = id.parse().expect("a number");
                            let wrote = writers | 1 << vcpu.min(63);
                            assert!(wrote >> id & 1 == 1, "{named} for {writers:#x}");
                        }
                        check_line(line, &mut since, b == b'\n');
                        writers = if since.is_empty() {
                            0
                        } else {
                            1 << vcpu.min(63)
                        };
                    }
                    assert_eq!(since, expect, "LineBuf and UartLine agree");
                    assert_eq!(buf.pending(), &since[..], "what is held is what was sent");
                }
                continue;
            }
        };
        match write {
            None => {
                let (value, change) = u.read(offset);
                assert!(value <= u64::from(u32::MAX));
                match offset {
                    DR => assert_eq!(value, u64::from(m.fifo.pop_front().unwrap_or(0))),
                    FR => {
                        let f = |bit: u32| value & u64::from(bit) != 0;
                        assert_eq!(f(fr::RXFE), m.fifo.is_empty());
                        assert_eq!(f(fr::RXFF), m.fifo.len() >= m.depth());
                        assert!(f(fr::TXFE) && !f(fr::TXFF));
                    }
                    _ => {}
                }
                m.changed(change, &u);
            }
            Some(value) => {
                let e = u.write(offset, value);
                assert_eq!(e.tx.is_some(), offset == DR);
                match offset {
                    CR => m.cr = value & 0xff87,
                    LCR_H => {
                        if (value ^ m.lcr_h) & FEN != 0 {
                            // Switching the FIFOs flushes them.
                            m.fifo.clear();
                        }
                        m.lcr_h = value & 0xff;
                    }
                    _ => {}
                }
                m.changed(e.line, &u);
            }
        }
        assert_eq!(u.rx_room(), m.room());
        let on = u64::from(cr::UARTEN | cr::RXE);
        assert_eq!(u.receiving(), m.cr & on == on);
    }
    if let Some((_, line)) = console.flush() {
        check_line(line, &mut since, true);
    }
    assert!(console.flush().is_none());
});
