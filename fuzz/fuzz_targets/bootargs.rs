//! The command line (`/chosen/bootargs`): `BootArgs::parse` accepts only values in range and says what is wrong otherwise, `verdict_token` finds the token `parse` keeps, and `split_guest` cuts at the first lone `--` and nowhere else.
#![no_main]

use hvcore::bootargs::{
    split_guest, verdict_token, BootArgError, BootArgs, GUEST_MEM_GRANULE, MAX_GUEST_SMP,
    MAX_MIGRATE_CONVERGE, MAX_MIGRATE_ROUNDS, MAX_MIGRATE_WINDOW,
};
use hvcore::verdict::valid_token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let line = line.as_ref();
    let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
    match BootArgs::parse(line) {
        Ok(args) => {
            if let Some(mem) = args.guest_mem {
                assert!(mem >= GUEST_MEM_GRANULE && mem % GUEST_MEM_GRANULE == 0);
            }
            if let Some(smp) = args.guest_smp {
                assert!((1..=MAX_GUEST_SMP).contains(&smp));
            }
            if let Some(block) = args.guest_block {
                assert!([4 << 10, 2 << 20, 1 << 30].contains(&block));
            }
            if let Some(n) = args.migrate {
                assert!((1..=MAX_MIGRATE_ROUNDS).contains(&n));
            }
            assert!(args.migrate_window.is_none_or(|n| n <= MAX_MIGRATE_WINDOW));
            assert!(args
                .migrate_converge
                .is_none_or(|n| n <= MAX_MIGRATE_CONVERGE));
            if let Some(t) = args.verdict_token {
                assert!(valid_token(t));
            }
            // Every token the parse accepted, it either knows or lists.
            for unknown in args.unknown() {
                assert!(tokens.contains(&unknown), "{unknown:?} is not a token");
            }
            // The same token, found without a full parse.
            assert_eq!(verdict_token(line), args.verdict_token);
        }
        Err(e) => {
            let key = match e {
                BootArgError::BadValue { key, .. } | BootArgError::Invalid { key, .. } => key,
            };
            assert!(tokens.iter().any(|t| t.split('=').next() == Some(key)));
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("bad boot argument `{key}=")),
                "{text}"
            );
        }
    }
    if let Some(t) = verdict_token(line) {
        assert!(valid_token(t));
        assert!(tokens.contains(&format!("verdict.token={t}").as_str()));
    }

    // The hypervisor's part and the guest's.
    let (ours, guest) = split_guest(line);
    assert!(line.starts_with(ours));
    assert!(line.ends_with(guest));
    let lone = |s: &str| s.split(' ').any(|t| t == "--");
    assert!(!lone(ours), "{ours:?} still has a lone --");
    if ours.len() == line.len() {
        assert!(!lone(line) && guest.is_empty());
    } else {
        assert!(ours.is_empty() || ours.ends_with(' '));
        let rest = &line[ours.len()..];
        let after = rest.strip_prefix("--").expect("cut at --");
        assert!(after.is_empty() || after.starts_with(' '));
        assert_eq!(after.trim_start(), guest);
    }
});
