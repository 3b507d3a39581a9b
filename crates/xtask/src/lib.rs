//! Host-side tools behind scripts/ (`cargo xtask <subcommand>`), as functions tests can call.

pub mod bench_profile;
pub mod bench_ratios;
pub mod bench_table;
pub mod cpio;
pub mod deps;
pub mod diff;
pub mod json;
pub mod linux_bench;
pub mod linux_check;
pub mod pyfmt;
pub mod vms;

/// The hypervisor text's address range, as QEMU's `-dfilter` takes it (`0xSTART..0xEND`), from
/// `nm` output: the values of the `_text_start` and `_text_end` symbols (the last of each).
pub fn text_range(nm: &str) -> Option<String> {
    let (mut start, mut end) = (None, None);
    for line in nm.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.get(2) {
            Some(&"_text_start") => start = Some(fields[0]),
            Some(&"_text_end") => end = Some(fields[0]),
            _ => {}
        }
    }
    Some(format!("0x{}..0x{}", start?, end?))
}

#[cfg(test)]
mod tests {
    use super::text_range;

    #[test]
    fn text_range_from_nm() {
        let nm = "0000000040080000 T _text_start\n00000000400a7000 T _text_end\n0000000040000000 T _start\n";
        assert_eq!(
            text_range(nm).as_deref(),
            Some("0x0000000040080000..0x00000000400a7000")
        );
        assert_eq!(text_range("0000000040080000 T _text_start\n"), None);
    }
}
