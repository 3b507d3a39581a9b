//! Typed visit outcomes and the per-operation policy that turns them into next / retry / exit.
#![doc = include_str!("../POLICY.md")]

/// What a visit found or did, when it did not simply succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A compare-and-swap lost to another walker, or another walker holds
    /// the entry for break-before-make.
    LostRace,
    /// The visit needed a valid leaf and found an invalid entry.
    Unmapped,
    /// The entry already holds what the visit would write.
    Unchanged,
    /// The visit needed a table page and its memory cache was empty.
    NoMemory,
    /// The entry holds a different mapping that this operation may not replace.
    Conflict,
}

impl Outcome {
    /// Every outcome, in table order.
    pub const ALL: [Outcome; 5] = [
        Outcome::LostRace,
        Outcome::Unmapped,
        Outcome::Unchanged,
        Outcome::NoMemory,
        Outcome::Conflict,
    ];

    /// The name used in `POLICY.md`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::LostRace => "lost-race",
            Outcome::Unmapped => "unmapped",
            Outcome::Unchanged => "unchanged",
            Outcome::NoMemory => "no-memory",
            Outcome::Conflict => "conflict",
        }
    }

    #[inline]
    const fn index(self) -> usize {
        self as usize
    }
}

/// Who else may be walking the tree, and why this walk runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The caller holds the tree alone.
    Exclusive,
    /// Other walkers may run concurrently; updates are compare-and-swaps.
    Shared,
    /// A shared walk serving a guest abort: a stale tree means "re-fault".
    Fault,
}

impl Access {
    /// Every mode, in table order.
    pub const ALL: [Access; 3] = [Access::Exclusive, Access::Shared, Access::Fault];

    /// Whether entries are updated by compare-and-swap.
    #[must_use]
    #[inline]
    pub const fn is_shared(self) -> bool {
        !matches!(self, Access::Exclusive)
    }

    /// The name used in `POLICY.md`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Access::Exclusive => "exclusive",
            Access::Shared => "shared",
            Access::Fault => "fault",
        }
    }

    #[inline]
    const fn index(self) -> usize {
        self as usize
    }
}

/// What the walker does after a visit's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Leave the entry and go on with the next one.
    Next,
    /// Read the entry again and visit it again (bounded).
    Retry,
    /// Stop the walk and return the outcome.
    Exit,
}

impl Action {
    /// The name used in `POLICY.md`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Action::Next => "next",
            Action::Retry => "retry",
            Action::Exit => "exit",
        }
    }
}

use Action::{Exit, Next, Retry};

/// One operation's policy: the modes it runs in and, for each outcome and
/// mode, the action. Pairs not set are [`Action::Exit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    name: &'static str,
    modes: [bool; 3],
    actions: [[Action; 3]; 5],
}

impl Policy {
    #[inline]
    const fn new(name: &'static str, modes: [bool; 3]) -> Policy {
        Policy {
            name,
            modes,
            actions: [[Exit; 3]; 5],
        }
    }

    const fn on(mut self, outcome: Outcome, actions: [Action; 3]) -> Policy {
        self.actions[outcome.index()] = actions;
        self
    }

    /// The operation's name in `POLICY.md`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the operation may run in `access` mode.
    #[must_use]
    #[inline]
    pub const fn allows(&self, access: Access) -> bool {
        self.modes[access.index()]
    }

    /// What the walker does when a visit of this operation, in `access`
    /// mode, reports `outcome`.
    #[must_use]
    #[inline]
    pub const fn action(&self, outcome: Outcome, access: Access) -> Action {
        self.actions[outcome.index()][access.index()]
    }
}

const ALL_MODES: [bool; 3] = [true, true, true];
const NOT_FAULT: [bool; 3] = [true, true, false];
const EXCLUSIVE_ONLY: [bool; 3] = [true, false, false];

/// Install leaves or tables (stage-2 map, unlinked subtrees, EL2 map).
pub const MAP: Policy = Policy::new("map", ALL_MODES)
    .on(Outcome::LostRace, [Retry, Retry, Exit])
    .on(Outcome::Unchanged, [Next, Next, Exit]);

/// Remove leaves and free tables that become empty.
pub const UNMAP: Policy =
    Policy::new("unmap", EXCLUSIVE_ONLY).on(Outcome::Unmapped, [Next, Exit, Exit]);

/// Update leaf attributes: relax permissions, write-protect, set the access flag.
pub const ATTR: Policy = Policy::new("attr", ALL_MODES)
    .on(Outcome::LostRace, [Retry, Retry, Exit])
    .on(Outcome::Unmapped, [Next, Next, Exit])
    .on(Outcome::Unchanged, [Next, Next, Exit]);

/// Test and clear the access flag: a hint, so a lost race is skipped.
pub const AGE: Policy = Policy::new("age", NOT_FAULT)
    .on(Outcome::LostRace, [Next, Next, Exit])
    .on(Outcome::Unmapped, [Next, Next, Exit]);

/// Split blocks into pages ahead of time.
pub const SPLIT: Policy = Policy::new("split", NOT_FAULT)
    .on(Outcome::LostRace, [Retry, Retry, Exit])
    .on(Outcome::Unmapped, [Next, Next, Exit]);

/// Read the leaf for an address.
pub const GET_LEAF: Policy = Policy::new("get-leaf", ALL_MODES);

/// Cache maintenance of the memory a range maps.
pub const FLUSH: Policy = Policy::new("flush", NOT_FAULT).on(Outcome::Unmapped, [Next, Next, Exit]);

/// Free a tree or an unlinked subtree.
pub const FREE: Policy = Policy::new("free", EXCLUSIVE_ONLY);

/// **Wrong on purpose**, for tests only: the errno-era behaviour the seed
/// thread describes, where a shared attribute walk that loses a race
/// *skips* the entry. A write-protect with this policy can leave a page
/// writable whose dirty bit was just cleared, so its next writes are never
/// logged. The dirty-log tests use it as the negative control that shows
/// they can fail; the library never uses it (and it is not in [`ALL`]).
#[cfg(any(test, feature = "host"))]
pub const ATTR_SKIPPING_LOST_RACES: Policy =
    Policy::new("attr (wrong: skip lost races)", ALL_MODES)
        .on(Outcome::LostRace, [Next, Next, Exit])
        .on(Outcome::Unmapped, [Next, Next, Exit])
        .on(Outcome::Unchanged, [Next, Next, Exit]);

/// Every operation's policy, in `POLICY.md` order.
pub const ALL: [&Policy; 8] = [&MAP, &UNMAP, &ATTR, &AGE, &SPLIT, &GET_LEAF, &FLUSH, &FREE];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The rows of the markdown table that follows `heading`.
    fn table_rows(doc: &str, heading: &str) -> Vec<Vec<String>> {
        let start = doc.find(heading).expect("heading in POLICY.md");
        doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // header and separator
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect()
    }

    fn policy(name: &str) -> &'static Policy {
        ALL.iter()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("POLICY.md names unknown operation {name}"))
    }

    fn outcome(name: &str) -> Outcome {
        *Outcome::ALL
            .iter()
            .find(|o| o.name() == name)
            .unwrap_or_else(|| panic!("POLICY.md names unknown outcome {name}"))
    }

    const DOC: &str = include_str!("../POLICY.md");

    #[test]
    fn access_modes_are_named_as_in_policy_md() {
        // The modes table's columns and the definitions use these names
        // (the tables below are read by position, in `Access::ALL` order).
        let header = format!(
            "| operation | {} |",
            Access::ALL.map(Access::name).join(" | ")
        );
        assert!(DOC.contains(&header), "no modes header {header:?}");
        for access in Access::ALL {
            let defined = format!("- **{}**:", access.name());
            assert!(DOC.contains(&defined), "{defined:?} not in POLICY.md");
        }
    }

    #[test]
    fn code_matches_policy_md() {
        // Modes: every operation listed once, each cell agrees.
        let modes = table_rows(DOC, "## Where each operation runs");
        assert_eq!(modes.len(), ALL.len(), "every operation has a modes row");
        for row in &modes {
            let p = policy(&row[0]);
            for (i, access) in Access::ALL.iter().enumerate() {
                let doc_allows = match row[i + 1].as_str() {
                    "yes" => true,
                    "—" => false,
                    other => panic!("bad modes cell {other:?}"),
                };
                assert_eq!(
                    p.allows(*access),
                    doc_allows,
                    "{} in {}",
                    p.name(),
                    access.name()
                );
            }
        }

        // Actions: the documented cells, and `exit` for every pair not listed.
        let mut documented: HashMap<(&str, Outcome), [String; 3]> = HashMap::new();
        let rows = table_rows(DOC, "## The actions");
        assert!(!rows.is_empty());
        for row in &rows {
            let p = policy(&row[0]);
            let o = outcome(&row[1]);
            let cells = [row[2].clone(), row[3].clone(), row[4].clone()];
            assert!(
                documented.insert((p.name(), o), cells).is_none(),
                "duplicate row"
            );
        }
        for p in ALL {
            for o in Outcome::ALL {
                for (i, access) in Access::ALL.iter().enumerate() {
                    let code = p.action(o, *access);
                    match documented.get(&(p.name(), o)) {
                        Some(cells) if cells[i] == "—" => {
                            assert!(!p.allows(*access), "{} runs in {}", p.name(), access.name());
                        }
                        Some(cells) => {
                            assert!(
                                p.allows(*access),
                                "{} {}: documented but not offered",
                                p.name(),
                                access.name()
                            );
                            assert_eq!(
                                code.name(),
                                cells[i],
                                "{} / {} / {}",
                                p.name(),
                                o.name(),
                                access.name()
                            );
                        }
                        None => assert_eq!(
                            code,
                            Action::Exit,
                            "{} / {} / {}: undocumented",
                            p.name(),
                            o.name(),
                            access.name()
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn the_seeds_case_retries_instead_of_skipping() {
        // A shared write-protect that loses a race must not skip the entry.
        assert_eq!(
            ATTR.action(Outcome::LostRace, Access::Shared),
            Action::Retry
        );
        // ...while a fault walk that loses the same race returns to the guest.
        assert_eq!(ATTR.action(Outcome::LostRace, Access::Fault), Action::Exit);
    }

    #[test]
    fn no_policy_retries_in_fault_mode() {
        // A fault walk must never spin on an entry another vCPU is changing:
        // the guest re-faults instead.
        for p in ALL {
            for o in Outcome::ALL {
                assert_ne!(p.action(o, Access::Fault), Action::Retry, "{}", p.name());
            }
        }
    }

    #[test]
    fn resource_outcomes_always_exit() {
        for p in ALL {
            for a in Access::ALL {
                assert_eq!(p.action(Outcome::NoMemory, a), Action::Exit);
                assert_eq!(p.action(Outcome::Conflict, a), Action::Exit);
            }
        }
    }
}
