//! Which physical CPU runs what: a VM's vCPUs (vCPU N on CPU N) and the jobs beside them, planned from the boot arguments and the CPUs online.

use core::fmt;

/// The plan for one VM and its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPlan {
    /// vCPUs, on CPUs `0..vcpus`.
    pub vcpus: usize,
    /// The CPU that runs a live migration, if one was asked for: the first
    /// after the vCPUs.
    pub migrate_cpu: Option<usize>,
    /// The CPU that ages guest RAM beside a migration: the next one, if
    /// online.
    pub ager_cpu: Option<usize>,
}

/// Why the CPUs cannot be planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// More vCPUs than CPUs online (each vCPU has a CPU of its own).
    TooManyVcpus {
        /// vCPUs asked for.
        vcpus: usize,
        /// CPUs online.
        online: usize,
    },
    /// A migration needs a CPU that runs no vCPU.
    NoCpuForMigration {
        /// vCPUs asked for.
        vcpus: usize,
        /// CPUs online.
        online: usize,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooManyVcpus { vcpus, online } => write!(
                f,
                "guest.smp={vcpus}, but only {online} CPUs are online (one vCPU per CPU: give QEMU -smp {vcpus})"
            ),
            Self::NoCpuForMigration { vcpus, online } => write!(
                f,
                "migrate= needs a CPU that runs no vCPU, but {vcpus} vCPUs take all {online} CPUs online (give QEMU -smp {} or the guest fewer guest.smp=)",
                vcpus + 1
            ),
        }
    }
}

/// Plans `online` CPUs for a VM with `guest_smp` vCPUs (default: every
/// CPU, or every CPU but one when `migrate` needs one).
///
/// # Errors
///
/// A [`PlanError`] when the vCPUs (and the migration) do not fit.
pub fn plan(online: usize, guest_smp: Option<usize>, migrate: bool) -> Result<CpuPlan, PlanError> {
    let host_cpus = usize::from(migrate);
    let vcpus = guest_smp.unwrap_or(online.saturating_sub(host_cpus).max(1));
    if vcpus > online {
        return Err(PlanError::TooManyVcpus { vcpus, online });
    }
    if vcpus + host_cpus > online {
        return Err(PlanError::NoCpuForMigration { vcpus, online });
    }
    Ok(CpuPlan {
        vcpus,
        migrate_cpu: migrate.then_some(vcpus),
        ager_cpu: (migrate && vcpus + 1 < online).then_some(vcpus + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn defaults_take_every_cpu() {
        let p = plan(4, None, false).unwrap();
        assert_eq!((p.vcpus, p.migrate_cpu, p.ager_cpu), (4, None, None));
        assert_eq!(plan(1, None, false).unwrap().vcpus, 1);
        assert_eq!(
            plan(0, None, false).unwrap_err(),
            PlanError::TooManyVcpus {
                vcpus: 1,
                online: 0
            }
        );
    }

    #[test]
    fn a_migration_takes_the_cpu_after_the_vcpus_and_ages_on_the_next() {
        let p = plan(5, Some(3), true).unwrap();
        assert_eq!((p.vcpus, p.migrate_cpu, p.ager_cpu), (3, Some(3), Some(4)));
        let p = plan(4, None, true).unwrap();
        assert_eq!(
            (p.vcpus, p.migrate_cpu, p.ager_cpu),
            (3, Some(3), None),
            "no CPU left to age"
        );
        let p = plan(2, None, true).unwrap();
        assert_eq!((p.vcpus, p.migrate_cpu), (1, Some(1)));
    }

    #[test]
    fn what_does_not_fit() {
        assert_eq!(
            plan(4, Some(6), false),
            Err(PlanError::TooManyVcpus {
                vcpus: 6,
                online: 4
            })
        );
        assert_eq!(
            plan(4, Some(4), true),
            Err(PlanError::NoCpuForMigration {
                vcpus: 4,
                online: 4
            })
        );
        assert_eq!(
            plan(1, None, true),
            Err(PlanError::NoCpuForMigration {
                vcpus: 1,
                online: 1
            })
        );
        assert_eq!(plan(4, Some(4), false).unwrap().vcpus, 4);
        assert!(PlanError::TooManyVcpus {
            vcpus: 6,
            online: 4
        }
        .to_string()
        .starts_with("guest.smp=6, but only 4 CPUs are online"));
        assert!(PlanError::NoCpuForMigration { vcpus: 4, online: 4 }
            .to_string()
            .starts_with("migrate= needs a CPU that runs no vCPU, but 4 vCPUs take all 4 CPUs online (give QEMU -smp 5"));
    }
}
