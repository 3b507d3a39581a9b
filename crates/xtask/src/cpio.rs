//! `cargo xtask initramfs`: a `cpio` archive in the "newc" format Linux unpacks as its initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Every entry is a 110-byte ASCII header (`070701`, then thirteen 8-digit
//! hexadecimal fields), the name with its NUL, padding to 4 bytes, the
//! data, padding to 4 bytes; the archive ends with `TRAILER!!!`. Owners are
//! root and times 0, so the same inputs always give the same bytes.

/// One thing in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir {
        /// Its path, without a leading `/`.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Its path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Its path.
        path: String,
        /// What it points at.
        target: String,
    },
    /// A character device node.
    CharDev {
        /// Its path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Why an archive was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// An empty path, a `..` component, or a path that starts with `/`
    /// after trimming (two slashes).
    BadPath(String),
    /// The same path twice.
    Duplicate(String),
    /// A file larger than the format's 32-bit size field.
    TooLarge(String),
}

impl std::fmt::Display for CpioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadPath(p) => write!(f, "initramfs: bad path {p:?}"),
            Self::Duplicate(p) => write!(f, "initramfs: {p} given twice"),
            Self::TooLarge(p) => write!(f, "initramfs: {p} is larger than 4 GiB"),
        }
    }
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Self::Dir { path, .. }
            | Self::File { path, .. }
            | Self::Symlink { path, .. }
            | Self::CharDev { path, .. } => path,
        }
    }
}

/// A path as the archive stores it: no leading `/`, no `..`, not empty.
fn clean(path: &str) -> Result<String, CpioError> {
    let p = path.trim_start_matches('/');
    let bad = p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "..");
    if bad {
        Err(CpioError::BadPath(path.to_string()))
    } else {
        Ok(p.to_string())
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// The archive of `entries`, in their order (a directory must come before
/// what it holds, as the kernel creates them in order).
///
/// # Errors
///
/// A [`CpioError`] for a bad or repeated path or an oversized file.
pub fn write(entries: &[Entry]) -> Result<Vec<u8>, CpioError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let name = clean(e.path())?;
        if !seen.insert(name.clone()) {
            return Err(CpioError::Duplicate(name));
        }
        let ino = i as u32 + 1;
        let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match e {
            Entry::Dir { mode, .. } => (S_IFDIR | (mode & 0o7777), 2, &[], (0, 0)),
            Entry::File { mode, data, .. } => (S_IFREG | (mode & 0o7777), 1, data, (0, 0)),
            Entry::Symlink { target, .. } => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
            Entry::CharDev {
                mode, major, minor, ..
            } => (S_IFCHR | (mode & 0o7777), 1, &[], (*major, *minor)),
        };
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(name.clone()))?;
        header(&mut out, ino, mode, nlink, size, rdev, &name);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
    Ok(out)
}

/// One entry read back: name, mode (type and permissions), data (a
/// link's target), and `(rdevmajor, rdevminor)`.
pub type ReadEntry = (String, u32, Vec<u8>, (u32, u32));

/// Reads an archive back (what the tests check the writer with), trailer
/// excluded.
///
/// # Errors
///
/// A message for a truncated or malformed archive.
pub fn read(mut b: &[u8]) -> Result<Vec<ReadEntry>, String> {
    let mut out = Vec::new();
    let total = b.len();
    loop {
        let at = total - b.len();
        if b.len() < 110 || &b[..6] != b"070701" {
            return Err(format!("no newc header at byte {at}"));
        }
        let field = |n: usize| -> Result<u32, String> {
            let s = std::str::from_utf8(&b[6 + 8 * n..14 + 8 * n]).map_err(|e| e.to_string())?;
            u32::from_str_radix(s, 16).map_err(|e| format!("field {n} at byte {at}: {e}"))
        };
        let (mode, size, rdev, namesize) = (
            field(1)?,
            field(6)? as usize,
            (field(9)?, field(10)?),
            field(11)? as usize,
        );
        let name_end = 110 + namesize;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size;
        if namesize == 0 || b.len() < data_end {
            return Err(format!("entry at byte {at} is truncated"));
        }
        let name = String::from_utf8_lossy(&b[110..name_end - 1]).into_owned();
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        out.push((name, mode, b[data_start..data_end].to_vec(), rdev));
        b = &b[data_end.next_multiple_of(4).min(b.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Dir {
                path: "/bin".into(),
                mode: 0o755,
            },
            Entry::File {
                path: "bin/busybox".into(),
                mode: 0o755,
                data: b"\x7fELF...".to_vec(),
            },
            Entry::Symlink {
                path: "bin/sh".into(),
                target: "busybox".into(),
            },
            Entry::Dir {
                path: "dev".into(),
                mode: 0o755,
            },
            Entry::CharDev {
                path: "dev/console".into(),
                mode: 0o600,
                major: 5,
                minor: 1,
            },
            Entry::File {
                path: "init".into(),
                mode: 0o755,
                data: b"#!/bin/sh\necho hi\n".to_vec(),
            },
        ]
    }

    #[test]
    fn round_trip() {
        let a = write(&sample()).unwrap();
        assert_eq!(a.len() % 4, 0);
        let back = read(&a).unwrap();
        let names: Vec<&str> = back.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init"]
        );
        assert_eq!(back[0].1, 0o040_755);
        assert_eq!(back[1].1, 0o100_755);
        assert_eq!(back[1].2, b"\x7fELF...");
        assert_eq!(
            (back[2].1, back[2].2.as_slice()),
            (0o120_777, &b"busybox"[..])
        );
        assert_eq!((back[4].1, back[4].3), (0o020_600, (5, 1)));
        assert_eq!(back[5].2, b"#!/bin/sh\necho hi\n");
        assert_eq!(write(&sample()).unwrap(), a, "deterministic");
    }

    /// The bytes of one header, against the format document.
    #[test]
    fn the_exact_layout() {
        let a = write(&[Entry::File {
            path: "a".into(),
            mode: 0o644,
            data: b"xyz".to_vec(),
        }])
        .unwrap();
        let want = concat!(
            "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000",
            "00000003", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
        );
        assert_eq!(&a[..110], want.as_bytes());
        // Name "a\0" padded to 4 from the header's 110 bytes: 112.
        assert_eq!(&a[110..112], b"a\0");
        assert_eq!(&a[112..115], b"xyz");
        assert_eq!(a[115], 0);
        assert_eq!(&a[116..122], b"070701");
        assert!(a.ends_with(b"TRAILER!!!\0\0\0\0") || a.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn refusals() {
        let file = |p: &str| Entry::File {
            path: p.into(),
            mode: 0o644,
            data: vec![],
        };
        for bad in ["", "/", "a/../b", "a//b", ".."] {
            assert_eq!(
                write(&[file(bad)]),
                Err(CpioError::BadPath(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            write(&[file("x"), file("/x")]),
            Err(CpioError::Duplicate("x".into()))
        );
        assert!(read(b"070702").is_err());
        let a = write(&sample()).unwrap();
        assert!(read(&a[..a.len() - 20]).is_err());
    }
}
