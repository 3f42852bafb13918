//! `--device vf=PF`: a free VF of a PF for one VM, like a node runner's
//! pool.
//!
//! [`take_vf`] walks the PF's VFs in VF order and claims the first one it
//! can ([`claim_vf`]: a non-blocking flock under `/run/tessera/vf`), so
//! any number of tesseras started at once get different VFs, and a
//! crashed one leaves no stale claim (the kernel drops an flock with its
//! holder). The VF it wins is then made ready as libvirt's managed mode
//! would: bound to a VFIO driver when it is not ([`bind`], driver
//! [`DriverChoice::Auto`]), and given the Xe scheduling profile asked for
//! ([`set_profile`]). The VF stays on its VFIO driver when the claim is
//! released, ready for the next VM.
//!
//! VFs are created ([`create_vfs`], `sriov_drivers_autoprobe` 0) only when
//! the PF has none and a count is given (`--vf-create N`), under a
//! per-PF lock so two tesseras never write `sriov_numvfs` at once.

use std::time::Duration;

use log::{debug, info};

use super::lock::{VfClaim, claim_vf, lock_pf};
use super::ops::{DriverChoice, Kernel, ProfileChange, bind, create_vfs, set_profile};
use super::pci::PciFunction;
use super::preflight::{group_holders, vfio_cdev};
use super::{HostError, HostRoot, PciAddress, Sriov, is_vfio_driver};

/// How long [`take_vf`] waits for another process creating VFs on the
/// same PF (enabling VFs takes the kernel about a second per VF on some
/// GPUs).
pub const PF_LOCK_WAIT: Duration = Duration::from_secs(60);

/// The PF `pf` and its SR-IOV state; a VF or a function without SR-IOV
/// is refused with what to give instead.
fn read_pf(root: &HostRoot, pf: PciAddress) -> Result<(PciFunction, Sriov), HostError> {
    let f = PciFunction::read(root, pf)?;
    if let Some(of) = f.physfn {
        return Err(HostError::VfNotPf { vf: pf, pf: of });
    }
    match f.sriov.clone() {
        Some(s) => Ok((f, s)),
        None => Err(HostError::NotSriovPf(pf)),
    }
}

/// The PF's VFs, creating `create` of them first when it has none.
fn vfs_of(
    k: &mut dyn Kernel,
    root: &HostRoot,
    pf: PciAddress,
    create: Option<u32>,
) -> Result<(PciFunction, Sriov), HostError> {
    let (f, s) = read_pf(root, pf)?;
    if !s.vfs.is_empty() {
        if create.is_some() {
            debug!(
                "{pf} has {} VFs already: --vf-create not needed",
                s.vfs.len()
            );
        }
        return Ok((f, s));
    }
    let Some(count) = create else {
        return Err(HostError::NoVfs {
            pf,
            total: s.totalvfs,
        });
    };
    if count > s.totalvfs {
        return Err(HostError::TooManyVfs {
            flag: "--vf-create",
            address: pf,
            count,
            total: s.totalvfs,
            gpu: f.is_gpu(),
        });
    }
    let _creating = lock_pf(root, pf, PF_LOCK_WAIT)?;
    // Another tessera may have created them while this one waited.
    let (f, s) = read_pf(root, pf)?;
    if !s.vfs.is_empty() {
        return Ok((f, s));
    }
    let c = create_vfs(k, root, pf, count, false)?;
    if c.vfs.is_empty() {
        return Err(HostError::VfsDidNotAppear { pf, count });
    }
    info!(
        "{pf}: created {} VFs ({}), host driver autoprobe off",
        c.vfs.len(),
        c.vfs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    read_pf(root, pf)
}

/// Processes other than this one with `vf`'s VFIO group or cdev open
/// (another VMM using it without a tessera lock).
fn other_users(root: &HostRoot, vf: &PciFunction) -> Vec<(u32, String)> {
    let mut holders = Vec::new();
    if let Some(g) = vf.iommu_group {
        holders = group_holders(root, &root.dev.join("vfio").join(g.to_string()));
    }
    if let Some(c) = vfio_cdev(root, &vf.sysfs) {
        holders.extend(group_holders(root, &c));
    }
    holders.sort();
    holders.dedup();
    holders
}

/// Take a free VF of `pf` for this process: the first VF (in VF order)
/// whose claim succeeds and that no other process has open. `create`
/// VFs are created first when the PF has none (`--vf-create N`);
/// `profile` is applied to the VF taken (Xe `sriov_admin`; refused on a
/// PF without it before anything changes). `owner` names the VM in the
/// lock (`tessera vf list` shows it). The VF is held until the claim is
/// dropped or the process exits.
pub fn take_vf(
    k: &mut dyn Kernel,
    root: &HostRoot,
    pf: PciAddress,
    create: Option<u32>,
    profile: &ProfileChange,
    owner: &str,
) -> Result<(PciAddress, VfClaim), HostError> {
    let (pf_fn, _) = read_pf(root, pf)?;
    let wants_profile = *profile != ProfileChange::default();
    if wants_profile && !pf_fn.sysfs.join("sriov_admin").is_dir() {
        return Err(HostError::NoSriovAdmin {
            pf,
            driver: pf_fn.driver,
        });
    }
    let (_, s) = vfs_of(k, root, pf, create)?;
    let mut users = Vec::new();
    for (i, &vf) in s.vfs.iter().enumerate() {
        let claim = match claim_vf(root, vf, owner) {
            Ok(c) => c,
            Err(HostError::InUse { by, .. }) => {
                debug!("{vf} is taken by {by}");
                users.push((vf, by));
                continue;
            }
            Err(e) => return Err(e),
        };
        let f = PciFunction::read(root, vf)?;
        let others = other_users(root, &f);
        if !others.is_empty() {
            let by = others
                .iter()
                .map(|(p, c)| format!("pid {p} ({c})"))
                .collect::<Vec<_>>()
                .join(", ");
            debug!("{vf} is open in {by} without a tessera lock");
            users.push((vf, by));
            continue;
        }
        let driver = match f.driver.as_deref() {
            Some(d) if is_vfio_driver(d, &f.sysfs) => d.to_string(),
            before => {
                let b = bind(k, root, vf, &DriverChoice::Auto, &[])?;
                info!(
                    "{vf}: bound to {} (was {})",
                    b.driver,
                    before.unwrap_or("no driver")
                );
                b.driver
            }
        };
        if wants_profile {
            let p = set_profile(k, root, vf, profile)?;
            info!(
                "{vf}: scheduling profile exec_quantum_ms {} preempt_timeout_us {} priority {}",
                p.exec_quantum_ms, p.preempt_timeout_us, p.priority
            );
        }
        info!(
            "took VF {vf} (VF {} of {} on PF {pf}, {driver}) for {owner}",
            i + 1,
            s.vfs.len()
        );
        return Ok((vf, claim));
    }
    Err(HostError::NoFreeVf {
        pf,
        users,
        total: s.totalvfs,
    })
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
