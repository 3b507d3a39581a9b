//! VM descriptions as users write them (`scripts/run.sh --vm SPEC`, or one per line of a `--vms FILE`), turned into the settings line each VM's bundle part carries (`hvcore::vmspec`).
//!
//! A SPEC is comma-separated `key=value` settings, `args=` last (it takes
//! the rest, commas and spaces included):
//!
//! ```text
//! guest=smp,cpus=0-1,mem=128M,args=n=4
//! guest=target/linux/Image,initrd=target/linux/initramfs.cpio,cpus=2-3,mem=512M,args=console=ttyAMA0
//! ```
//!
//! `guest=` (a test guest's name or a file) and `cpus=` are required;
//! `mem=` defaults to 128M; `initrd=`, `block=`, `budget=` are optional.

use hvcore::vmspec::VmSpec;

/// One VM as described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserVm {
    /// `guest=`: a test guest's name or a file.
    pub guest: String,
    /// `initrd=`, if given.
    pub initrd: Option<String>,
    /// The settings line for the bundle (`cpus=… mem=… -- args`).
    pub config: String,
    /// The CPUs' count and the highest CPU, for the machine.
    pub cpus: (usize, usize),
    /// RAM in bytes.
    pub mem: u64,
}

/// Parses one SPEC.
///
/// # Errors
///
/// A message naming what is wrong.
pub fn parse(spec: &str) -> Result<UserVm, String> {
    let (settings, args) = match spec.find("args=") {
        Some(at) if at == 0 || spec[..at].ends_with(',') => {
            (spec[..at].trim_end_matches(','), &spec[at + 5..])
        }
        _ => (spec, ""),
    };
    let (mut guest, mut initrd, mut own) = (None, None, Vec::new());
    let mut mem = None;
    for item in settings.split(',').filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("`{item}`: expected key=value"));
        };
        match key {
            "guest" => guest = Some(value.to_string()),
            "initrd" => initrd = Some(value.to_string()),
            "mem" => mem = Some(value.to_string()),
            "cpus" | "block" | "budget" => own.push(format!("{key}={value}")),
            _ => {
                return Err(format!(
                    "unknown setting `{key}` (expected guest=, initrd=, cpus=, mem=, block=, budget=, args=)"
                ))
            }
        }
    }
    let guest = guest.ok_or("no `guest=`")?;
    own.push(format!("mem={}", mem.as_deref().unwrap_or("128M")));
    let config = if args.is_empty() {
        own.join(" ")
    } else {
        format!("{} -- {args}", own.join(" "))
    };
    let parsed = VmSpec::parse(&config).map_err(|e| e.to_string())?;
    let highest = parsed.cpus.iter().last().unwrap_or(0);
    Ok(UserVm {
        guest,
        initrd,
        cpus: (parsed.cpus.len(), highest),
        mem: parsed.mem,
        config,
    })
}

/// The SPECs of a file: one per line; blank lines and `#` comments are
/// skipped.
#[must_use]
pub fn file_specs(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// What QEMU must give for `vms`: CPUs (the highest named, plus one) and
/// RAM in MiB (every VM's, plus 512 MiB for the hypervisor and ROM slots,
/// at least 1 GiB).
#[must_use]
pub fn machine(vms: &[UserVm]) -> (usize, u64) {
    let cpus = vms.iter().map(|v| v.cpus.1 + 1).max().unwrap_or(1);
    let mib = vms.iter().map(|v| v.mem >> 20).sum::<u64>() + 512;
    (cpus, mib.max(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let v = parse("guest=smp,cpus=0-1,mem=64M,args=n=4, x y").unwrap();
        assert_eq!(v.guest, "smp");
        assert_eq!(v.config, "cpus=0-1 mem=64M -- n=4, x y");
        assert_eq!((v.cpus, v.mem), ((2, 1), 64 << 20));
        let v = parse("cpus=3,guest=a/b.img,initrd=c.cpio,block=4K,budget=20").unwrap();
        assert_eq!(v.initrd.as_deref(), Some("c.cpio"));
        assert_eq!(v.config, "cpus=3 block=4K budget=20 mem=128M");
        assert_eq!(v.cpus, (1, 3));
        assert_eq!(
            machine(&[v.clone(), parse("guest=x,cpus=0,mem=1G").unwrap()]),
            (4, 128 + 1024 + 512)
        );
        assert_eq!(
            machine(&[parse("guest=x,cpus=0,mem=64M").unwrap()]),
            (1, 1024)
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("cpus=0").unwrap_err(), "no `guest=`");
        assert!(parse("guest=x").unwrap_err().contains("no `cpus=`"));
        assert!(parse("guest=x,cpus=0,smp=2")
            .unwrap_err()
            .starts_with("unknown setting `smp`"));
        assert!(parse("guest=x,cpus=0-9")
            .unwrap_err()
            .starts_with("bad `cpus=0-9`"));
        assert!(parse("guest=x,cpus=0,mem=5M")
            .unwrap_err()
            .starts_with("bad `mem=5M`"));
        assert_eq!(
            parse("guest=x,cpus").unwrap_err(),
            "`cpus`: expected key=value"
        );
        // `args=` inside another value is not the guest's arguments.
        assert!(parse("guest=xargs=1,cpus=0").is_ok());
    }

    #[test]
    fn files() {
        let text = "# two VMs\nguest=smp,cpus=0-1\n\n  guest=hello,cpus=2  \n";
        assert_eq!(
            file_specs(text),
            ["guest=smp,cpus=0-1", "guest=hello,cpus=2"]
        );
    }
}
