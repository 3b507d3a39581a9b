//! A console line collected from a guest's bytes: what the hypervisor prints after the `[vmN/vcpuM]` tag, one whole line at a time, with nothing in it that a terminal would act on.
//!
//! A UART is one byte stream, whichever CPU writes it, so each emulated
//! UART collects one line at a time ([`UartLine`]). The tag names every
//! vCPU that wrote the line's text, the first first (`vcpu1`, or
//! `vcpu1,0` when vCPU 0 wrote some of it too): Linux hands a line's
//! transmission to whichever CPU takes the UART's interrupt, and a guest
//! cannot make a line carry a tag of vCPUs that did not write it. Line
//! ends (`'\r'`, `'\n'`) are not text: the CPU that only ends a line is
//! not named.

use core::fmt;

/// Longest line held; a longer one is cut and shown in pieces.
pub const LINE_MAX: usize = 256;

/// One console line being collected.
#[derive(Clone, Debug)]
pub struct LineBuf {
    buf: [u8; LINE_MAX],
    /// Bytes of the line collected so far.
    len: usize,
    /// Bytes at the start of `buf` returned by the previous write, to be
    /// dropped before the next byte is stored.
    done: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuf {
    /// A line with nothing collected.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buf: [0; LINE_MAX],
            len: 0,
            done: 0,
        }
    }

    /// The next byte the guest sent.
    ///
    /// Returns a complete line, without its `'\n'`, at `'\n'`, or when the
    /// buffer is full: then the line is cut (before a UTF-8 sequence that
    /// is still incomplete, which starts the next piece). `'\r'` is
    /// dropped; bytes that are not UTF-8, and control characters (C0 but
    /// the tab, DEL, C1), are shown as `'?'`: nothing a guest prints can
    /// move the terminal's cursor or start an escape sequence, so every
    /// line it prints stays one line, after its tag.
    pub fn push(&mut self, byte: u8) -> Option<&str> {
        self.discard_done();
        match byte {
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

    /// The part of the line collected so far as a line of its own (its
    /// end is not coming: the VM ended), if there is one.
    pub fn flush(&mut self) -> Option<&str> {
        self.discard_done();
        (self.len > 0).then(|| self.emit(self.len))
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
        // Control characters, one byte each (C0, DEL) or two (C1, U+0080
        // to U+009F: 0xc2 0x80..0x9f), become '?' ('??' for C1).
        let mut i = 0;
        while i < n {
            let b = line[i];
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                line[i] = b'?';
            } else if b == 0xc2 && i + 1 < n && (0x80..0xa0).contains(&line[i + 1]) {
                line[i] = b'?';
                line[i + 1] = b'?';
                i += 1;
            }
            i += 1;
        }
        self.done = n;
        core::str::from_utf8(&self.buf[..n]).unwrap_or_default()
    }
}

/// The vCPUs that wrote a line's text: the first, and a set of all (vCPU
/// numbers at and above 64 count as 63).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writers {
    first: u8,
    all: u64,
}

impl Writers {
    /// Adds `vcpu`.
    #[inline]
    fn add(&mut self, vcpu: usize) {
        let v = vcpu.min(63) as u8;
        if self.all == 0 {
            self.first = v;
        }
        self.all |= 1 << v;
    }

    /// Only `vcpu`.
    fn only(vcpu: usize) -> Self {
        let mut w = Self::default();
        w.add(vcpu);
        w
    }
}

impl fmt::Display for Writers {
    /// `vcpuF`, then `,N` for each other writer in increasing order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vcpu{}", self.first)?;
        let mut rest = self.all & !(1 << self.first);
        while rest != 0 {
            write!(f, ",{}", rest.trailing_zeros())?;
            rest &= rest - 1;
        }
        Ok(())
    }
}

/// One emulated UART's line being collected, with who wrote it.
#[derive(Clone, Debug, Default)]
pub struct UartLine {
    line: LineBuf,
    writers: Writers,
}

impl UartLine {
    /// Nothing collected.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            line: LineBuf::new(),
            writers: Writers { first: 0, all: 0 },
        }
    }

    /// `byte`, written by `vcpu`: a complete line as [`LineBuf::push`]
    /// gives it, with its writers (just `vcpu` for a line with no text).
    #[inline]
    pub fn push(&mut self, vcpu: usize, byte: u8) -> Option<(Writers, &str)> {
        if byte != b'\r' && byte != b'\n' {
            self.writers.add(vcpu);
            let l = &mut self.line;
            if l.done == 0 && l.len + 1 < LINE_MAX {
                // The common case, one byte more of a line.
                l.buf[l.len] = byte;
                l.len += 1;
                return None;
            }
        }
        let line = self.line.push(byte)?;
        let writers = if self.writers.all == 0 {
            Writers::only(vcpu)
        } else {
            self.writers
        };
        // Bytes carried over a cut (a character's start) are this vCPU's; a
        // line end, or a cut that carried nothing (the line filled exactly),
        // leaves the next line no writer yet: else the vCPU that filled it
        // was named on the next line, which it did not write (fuzzing found
        // it).
        let carried = byte != b'\n' && line.len() < LINE_MAX;
        self.writers = if carried {
            Writers::only(vcpu)
        } else {
            Writers::default()
        };
        Some((writers, line))
    }

    /// The unfinished line, if any (the VM ended), with its writers.
    pub fn flush(&mut self) -> Option<(Writers, &str)> {
        let writers = core::mem::take(&mut self.writers);
        self.line.flush().map(|line| (writers, line))
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
    fn send(line: &mut LineBuf, bytes: &[u8]) -> Vec<String> {
        bytes
            .iter()
            .filter_map(|&b| line.push(b).map(str::to_owned))
            .collect()
    }

    #[test]
    fn lines_end_at_newline_and_drop_cr() {
        let mut u = LineBuf::new();
        assert_eq!(send(&mut u, b"hello"), Vec::<String>::new());
        assert_eq!(u.pending(), b"hello");
        assert_eq!(send(&mut u, b" world\r\n"), ["hello world"]);
        assert_eq!(u.pending(), b"");
        assert_eq!(send(&mut u, b"\n\r\nab\ncd"), ["", "", "ab"]);
        assert_eq!(u.pending(), b"cd");
    }

    #[test]
    fn non_utf8_becomes_question_marks() {
        let mut u = LineBuf::new();
        assert_eq!(send(&mut u, b"a\xffb\xc3\n"), ["a?b?"]);
        assert_eq!(send(&mut u, "é€😀\n".as_bytes()), ["é€😀"]);
        // A lone continuation byte, an overlong encoding, a surrogate.
        assert_eq!(send(&mut u, b"\x80|\xc0\xaf|\xed\xa0\x80\n"), ["?|??|???"]);
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        let mut u = LineBuf::new();
        // An escape sequence (clear screen), a bell, a backspace, DEL, a
        // C1 CSI: each '?', the tab kept, the line still one line.
        assert_eq!(
            send(&mut u, b"\x1b[2Ja\x07b\x08c\x7fd\tx\xc2\x9by\n"),
            ["?[2Ja?b?c?d\tx??y"]
        );
        // Latin-1 above the C1 range is text.
        assert_eq!(send(&mut u, "\u{a0}\u{e9}\n".as_bytes()), ["\u{a0}\u{e9}"]);
    }

    #[test]
    fn tags_name_who_wrote_the_text() {
        fn send(u: &mut UartLine, out: &mut Vec<String>, vcpu: usize, bytes: &[u8]) {
            for &b in bytes {
                if let Some((w, line)) = u.push(vcpu, b) {
                    out.push(format!("[{w}] {line}"));
                }
            }
        }
        let mut u = UartLine::new();
        let mut out = Vec::new();
        send(&mut u, &mut out, 1, b"from one");
        send(&mut u, &mut out, 0, b"\r\n");
        send(&mut u, &mut out, 2, b"ab");
        send(&mut u, &mut out, 0, b"cd");
        send(&mut u, &mut out, 3, b"e\n");
        send(&mut u, &mut out, 5, b"\n");
        send(&mut u, &mut out, 70, b"x\n");
        assert_eq!(
            out,
            [
                "[vcpu1] from one",
                "[vcpu2,0,3] abcde",
                "[vcpu5] ",
                "[vcpu63] x"
            ]
        );
        send(&mut u, &mut out, 4, b"tail");
        assert_eq!(
            u.flush().map(|(w, l)| format!("[{w}] {l}")).as_deref(),
            Some("[vcpu4] tail")
        );
        assert_eq!(u.flush(), None);
    }

    #[test]
    fn a_cut_line_continues_with_the_writer() {
        let mut u = UartLine::new();
        let text = format!("{}€z\n", "a".repeat(LINE_MAX - 1));
        let mut tags = Vec::new();
        for (i, &b) in text.as_bytes().iter().enumerate() {
            let vcpu = usize::from(i >= LINE_MAX - 1);
            if let Some((w, _)) = u.push(vcpu, b) {
                tags.push(w.to_string());
            }
        }
        assert_eq!(tags, ["vcpu0,1", "vcpu1"]);
    }

    #[test]
    fn a_line_that_fills_exactly_does_not_name_its_writer_on_the_next() {
        let mut u = UartLine::new();
        let mut tags = Vec::new();
        let text = "a".repeat(LINE_MAX);
        for (vcpu, bytes) in [(1, text.as_bytes()), (2, b"b\n"), (3, b"\n")] {
            for &b in bytes {
                if let Some((w, _)) = u.push(vcpu, b) {
                    tags.push(w.to_string());
                }
            }
        }
        assert_eq!(tags, ["vcpu1", "vcpu2", "vcpu3"]);
    }

    #[test]
    fn flushing_the_unfinished_part() {
        let mut u = LineBuf::new();
        assert_eq!(u.flush(), None);
        assert_eq!(send(&mut u, b"a\nprompt\x1b $ "), ["a"]);
        assert_eq!(u.flush(), Some("prompt? $ "));
        assert_eq!(u.flush(), None);
        assert_eq!(send(&mut u, b"x\n"), ["x"]);
    }

    #[test]
    fn a_full_buffer_is_cut() {
        let mut u = LineBuf::new();
        let long = "x".repeat(LINE_MAX + 10);
        let lines = send(&mut u, format!("{long}\n").as_bytes());
        assert_eq!(lines, ["x".repeat(LINE_MAX), "x".repeat(10)]);
        // Exactly full, then the newline: one full piece and an empty line.
        let lines = send(&mut u, format!("{}\n", "y".repeat(LINE_MAX)).as_bytes());
        assert_eq!(lines, ["y".repeat(LINE_MAX), String::new()]);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut u = LineBuf::new();
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
            let mut u = LineBuf::new();
            let lines = send(&mut u, text.as_bytes());
            // Valid UTF-8 in: exactly the model's pieces come out, and the
            // model's unfinished piece is what is pending.
            let (pieces, pending) = model(&text);
            prop_assert_eq!(lines, pieces);
            prop_assert_eq!(u.pending(), pending.as_bytes());
        }

        #[test]
        fn any_bytes_give_valid_short_lines(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let mut u = LineBuf::new();
            for b in bytes {
                if let Some(line) = u.push(b) {
                    prop_assert!(line.len() <= LINE_MAX);
                    prop_assert!(!line.contains('\n') && !line.contains('\r'));
                    prop_assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "{:?}", line);
                }
                prop_assert!(u.pending().len() < LINE_MAX);
            }
        }
    }
}
