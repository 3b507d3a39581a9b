//! The console's escape sequence: what the user types goes to the guest, except `Ctrl-A` and the key after it, which talk to the hypervisor (as QEMU's and Xen's consoles do).
//!
//! | keys | effect |
//! |------|--------|
//! | `Ctrl-A x` | end the run (every VM ends "from the console") |
//! | `Ctrl-A n` | give the input to the next VM (with several) |
//! | `Ctrl-A h` | print this help |
//! | `Ctrl-A Ctrl-A` | send one `Ctrl-A` to the guest |
//! | `Ctrl-A` anything else | ignored, with a hint |

/// The escape key, `Ctrl-A`.
pub const ESCAPE: u8 = 0x01;

/// The help text (`Ctrl-A h`).
pub const HELP: &str =
    "console: Ctrl-A x ends the run, Ctrl-A n input to the next VM, Ctrl-A h this help, Ctrl-A Ctrl-A sends Ctrl-A";

/// What one typed byte means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Pass this byte to the guest.
    Guest(u8),
    /// Nothing yet (the escape key, waiting for the next).
    Pending,
    /// End the run.
    Quit,
    /// Show the help.
    Help,
    /// Give the input to the next VM.
    Next,
    /// An escape followed by a key that means nothing.
    Unknown(u8),
}

/// The escape state: whether the last byte was the escape key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Escape {
    armed: bool,
}

impl Escape {
    /// No escape pending.
    #[must_use]
    pub const fn new() -> Self {
        Self { armed: false }
    }

    /// What `byte` means, given what came before.
    pub fn feed(&mut self, byte: u8) -> Key {
        if !self.armed {
            if byte == ESCAPE {
                self.armed = true;
                return Key::Pending;
            }
            return Key::Guest(byte);
        }
        self.armed = false;
        match byte {
            b'x' | b'X' => Key::Quit,
            b'h' | b'H' | b'?' => Key::Help,
            b'n' | b'N' => Key::Next,
            ESCAPE => Key::Guest(ESCAPE),
            other => Key::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut e = Escape::new();
        bytes.iter().map(|&b| e.feed(b)).collect()
    }

    #[test]
    fn sequences() {
        assert_eq!(
            keys(b"ls\r"),
            [Key::Guest(b'l'), Key::Guest(b's'), Key::Guest(b'\r')]
        );
        assert_eq!(keys(b"\x01x"), [Key::Pending, Key::Quit]);
        assert_eq!(
            keys(b"\x01h\x01?"),
            [Key::Pending, Key::Help, Key::Pending, Key::Help]
        );
        assert_eq!(
            keys(b"\x01\x01\x01x"),
            [Key::Pending, Key::Guest(1), Key::Pending, Key::Quit],
            "a sent Ctrl-A does not arm the next"
        );
        assert_eq!(
            keys(b"\x01qx"),
            [Key::Pending, Key::Unknown(b'q'), Key::Guest(b'x')]
        );
        assert_eq!(keys(b"x"), [Key::Guest(b'x')], "x alone is text");
        assert_eq!(keys(b"\x01nn"), [Key::Pending, Key::Next, Key::Guest(b'n')]);
    }
}
