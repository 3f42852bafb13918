//! Changes to host PCI state: enabling VFs, binding functions to VFIO
//! drivers, Xe scheduling profiles. Every write goes through a [`Kernel`],
//! in order, so tests see the exact sequence.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::intel;
use super::lock::lock_owner;
use super::pci::{PciFunction, group_in_host_use};
use super::preflight::group_holders;
use super::{HostError, HostRoot, PciAddress, is_vfio_driver, read_attr, read_opt};

/// Where sysfs writes and module loads go.
pub trait Kernel {
    /// Write `value` to the sysfs attribute `path`.
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    /// Load `module` (`vfio_pci`); the error is a one-line reason.
    fn modprobe(&mut self, module: &str) -> Result<(), String>;
}

/// The real kernel: writes the files; runs `modprobe` only when
/// `modprobe` is set (the real host, not a fake root).
#[derive(Debug, Clone, Copy)]
pub struct SysfsKernel {
    /// Run `modprobe` for missing drivers.
    pub modprobe: bool,
}

impl Kernel for SysfsKernel {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        // One write(2) per value, as `echo` does: sysfs takes a store per write.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        f.write_all(value.as_bytes())
    }

    fn modprobe(&mut self, module: &str) -> Result<(), String> {
        if !self.modprobe {
            return Err("not run on a fake host root".into());
        }
        let out = std::process::Command::new("modprobe")
            .arg(module)
            .output()
            .map_err(|e| format!("cannot run modprobe: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err.lines().next().unwrap_or("failed").trim().to_string())
        }
    }
}

fn write(k: &mut dyn Kernel, root: &HostRoot, path: &Path, value: &str) -> Result<(), HostError> {
    k.write(path, value).map_err(|source| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let hint = match (source.raw_os_error(), name) {
            (Some(libc::EACCES | libc::EPERM), _) => "; run as root".to_string(),
            (Some(libc::ENOMEM), "sriov_numvfs") => {
                "; the BIOS reserved no PCI space for the VFs' BARs: enable SR-IOV (and Above 4G Decoding / Resizable BAR) in the firmware setup, or boot with pci=realloc".to_string()
            }
            (Some(libc::ENOENT), "sriov_numvfs") => {
                "; the PF's driver cannot enable VFs (for Intel GPUs: xe with xe.max_vfs=N, or i915-sriov with i915.max_vfs=N)".to_string()
            }
            (Some(libc::EBUSY), "sriov_numvfs") => {
                "; VFs are enabled or still in use: destroy them first (tessera vf destroy)".to_string()
            }
            (Some(libc::EINVAL), "sriov_numvfs") => {
                "; more VFs than the driver allows (its max_vfs), or the PF is not ready".to_string()
            }
            _ => String::new(),
        };
        HostError::Write {
            path: root.display(path),
            value: value.trim().to_string(),
            source,
            hint,
        }
    })
}

/// Who uses `f` now: a tessera VM's lock, or processes with its VFIO
/// group open. `None` when nobody does.
pub fn user_of(root: &HostRoot, f: &PciFunction) -> Option<String> {
    if let Some(o) = lock_owner(root, f.address) {
        return Some(o);
    }
    let group = f.iommu_group?;
    let holders = group_holders(root, &root.dev.join("vfio").join(group.to_string()));
    if holders.is_empty() {
        None
    } else {
        Some(
            holders
                .iter()
                .map(|(p, c)| format!("pid {p} ({c})"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

fn sriov_pf(root: &HostRoot, pf: PciAddress) -> Result<(PciFunction, super::Sriov), HostError> {
    let f = PciFunction::read(root, pf)?;
    match f.sriov.clone() {
        Some(s) => Ok((f, s)),
        None => Err(HostError::NotSriovPf(pf)),
    }
}

fn refuse_vfs_in_use(root: &HostRoot, vfs: &[PciAddress]) -> Result<(), HostError> {
    for &vf in vfs {
        if let Ok(f) = PciFunction::read(root, vf) {
            if let Some(by) = user_of(root, &f) {
                return Err(HostError::InUse { address: vf, by });
            }
        }
    }
    Ok(())
}

/// What `create` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The PF.
    pub pf: PciAddress,
    /// VFs enabled before.
    pub before: u32,
    /// The VFs enabled now.
    pub vfs: Vec<PciAddress>,
}

/// Enable `count` VFs on `pf`: `sriov_drivers_autoprobe` first (0 unless
/// `autoprobe`, so host drivers leave the VFs alone), then `sriov_numvfs`,
/// through 0 when another non-zero count is enabled (the kernel refuses a
/// direct change). Refuses while any current VF is in use.
pub fn create_vfs(
    k: &mut dyn Kernel,
    root: &HostRoot,
    pf: PciAddress,
    count: u32,
    autoprobe: bool,
) -> Result<Created, HostError> {
    let (f, s) = sriov_pf(root, pf)?;
    if count > s.totalvfs {
        return Err(HostError::TooManyVfs {
            flag: "--count",
            address: pf,
            count,
            total: s.totalvfs,
            gpu: f.is_gpu(),
        });
    }
    if f.driver.is_none() {
        return Err(HostError::NoPfDriver(pf));
    }
    if s.numvfs == count && s.autoprobe == autoprobe {
        return Ok(Created {
            pf,
            before: s.numvfs,
            vfs: s.vfs,
        });
    }
    if s.numvfs != count {
        refuse_vfs_in_use(root, &s.vfs)?;
    }
    let auto = f.sysfs.join("sriov_drivers_autoprobe");
    if s.autoprobe != autoprobe {
        write(k, root, &auto, if autoprobe { "1" } else { "0" })?;
    }
    let num = f.sysfs.join("sriov_numvfs");
    if s.numvfs != count {
        if s.numvfs != 0 {
            write(k, root, &num, "0")?;
        }
        if count != 0 {
            write(k, root, &num, &count.to_string())?;
        }
    }
    let after = sriov_pf(root, pf)?.1;
    Ok(Created {
        pf,
        before: s.numvfs,
        vfs: after.vfs,
    })
}

/// Disable every VF of `pf` (`sriov_numvfs` 0); refuses while one is in
/// use. Returns how many there were.
pub fn destroy_vfs(k: &mut dyn Kernel, root: &HostRoot, pf: PciAddress) -> Result<u32, HostError> {
    let (f, s) = sriov_pf(root, pf)?;
    if s.numvfs == 0 {
        return Ok(0);
    }
    refuse_vfs_in_use(root, &s.vfs)?;
    write(k, root, &f.sysfs.join("sriov_numvfs"), "0")?;
    Ok(s.numvfs)
}

/// `--driver` for `bind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverChoice {
    /// `xe-vfio-pci` for Xe VFs it supports when the module is there,
    /// else `vfio-pci`.
    Auto,
    /// This driver.
    Named(String),
}

/// True when module `module` (`xe_vfio_pci`) is loaded or installed for
/// the running kernel (`/sys/module`, `modules.dep`, `modules.builtin`).
pub fn module_available(root: &HostRoot, module: &str) -> bool {
    if root.sys.join("module").join(module).is_dir() {
        return true;
    }
    let release = read_opt(&root.proc.join("sys/kernel/osrelease")).unwrap_or_default();
    let dir = root.modules_dir().join(release);
    let file = module.replace('_', "-");
    let under = module.to_string();
    ["modules.dep", "modules.builtin"].iter().any(|list| {
        read_opt(&dir.join(list)).is_some_and(|t| {
            t.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let base = path.rsplit('/').next().unwrap_or("");
                let stem = base.split(".ko").next().unwrap_or("");
                stem == file || stem == under
            })
        })
    })
}

/// The driver `auto` picks for `f`: `xe-vfio-pci` for a VF of an xe PF
/// whose device ID that driver takes, when its module exists; else
/// `vfio-pci`.
pub fn auto_driver(root: &HostRoot, f: &PciFunction) -> &'static str {
    let xe_pf = f
        .physfn
        .and_then(|pf| PciFunction::read(root, pf).ok())
        .is_some_and(|pf| pf.driver.as_deref() == Some("xe"));
    if xe_pf && intel::xe_vfio_supports(f.vendor, f.device) && module_available(root, "xe_vfio_pci")
    {
        "xe-vfio-pci"
    } else {
        "vfio-pci"
    }
}

/// What `bind` did to one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The function.
    pub address: PciAddress,
    /// Its driver before.
    pub before: Option<String>,
    /// Its driver now.
    pub driver: String,
    /// It was bound to that driver already.
    pub unchanged: bool,
}

fn ensure_driver(k: &mut dyn Kernel, root: &HostRoot, driver: &str) -> Result<(), HostError> {
    if root.pci_driver(driver).is_dir() {
        return Ok(());
    }
    let module = driver.replace('-', "_");
    let available = module_available(root, &module);
    if !available || !root.is_system() {
        return Err(HostError::DriverMissing {
            driver: driver.to_string(),
            module,
            available,
        });
    }
    k.modprobe(&module).map_err(|reason| HostError::Modprobe {
        module: module.clone(),
        reason,
    })?;
    if root.pci_driver(driver).is_dir() {
        Ok(())
    } else {
        Err(HostError::DriverMissing {
            driver: driver.to_string(),
            module,
            available,
        })
    }
}

/// Bind `addr` to a VFIO driver: `driver_override`, unbind from the
/// current driver, `drivers_probe`, then check the result. Refuses an
/// SR-IOV PF, a function a VM uses, and one whose IOMMU group holds a
/// device still used by a host driver, unless that device is in `along`
/// (being bound in the same command).
pub fn bind(
    k: &mut dyn Kernel,
    root: &HostRoot,
    addr: PciAddress,
    choice: &DriverChoice,
    along: &[PciAddress],
) -> Result<Bound, HostError> {
    let f = PciFunction::read(root, addr)?;
    if let Some(s) = &f.sriov {
        return Err(HostError::IsPf {
            address: addr,
            numvfs: s.numvfs,
            gpu: f.is_gpu(),
        });
    }
    let driver = match choice {
        DriverChoice::Auto => auto_driver(root, &f).to_string(),
        DriverChoice::Named(d) => d.clone(),
    };
    if f.driver.as_deref() == Some(driver.as_str()) {
        return Ok(Bound {
            address: addr,
            before: f.driver.clone(),
            driver,
            unchanged: true,
        });
    }
    let members: Vec<_> = group_in_host_use(root, &f)
        .into_iter()
        .filter(|(a, _)| !along.contains(a))
        .collect();
    if !members.is_empty() {
        return Err(HostError::GroupNotViable {
            address: addr,
            group: f.iommu_group.unwrap_or(0),
            members,
        });
    }
    if f.driver
        .as_deref()
        .is_some_and(|d| is_vfio_driver(d, &f.sysfs))
    {
        if let Some(by) = user_of(root, &f) {
            return Err(HostError::InUse { address: addr, by });
        }
    }
    ensure_driver(k, root, &driver)?;
    write(k, root, &f.sysfs.join("driver_override"), &driver)?;
    if f.driver.is_some() {
        write(k, root, &f.sysfs.join("driver/unbind"), &addr.to_string())?;
    }
    write(
        k,
        root,
        &root.sys.join("bus/pci/drivers_probe"),
        &addr.to_string(),
    )?;
    let now = PciFunction::read(root, addr)?.driver;
    if now.as_deref() != Some(driver.as_str()) {
        return Err(HostError::BindFailed {
            address: addr,
            wanted: driver,
            now,
        });
    }
    Ok(Bound {
        address: addr,
        before: f.driver,
        driver,
        unchanged: false,
    })
}

/// What `unbind` did to one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbound {
    /// The function.
    pub address: PciAddress,
    /// Its driver before.
    pub before: Option<String>,
    /// Its driver now (a host driver that probed it, or none).
    pub driver: Option<String>,
    /// A VF whose PF has `sriov_drivers_autoprobe` 0: no host driver
    /// probes it.
    pub no_autoprobe: bool,
}

/// Give `addr` back to the host: clear `driver_override`, unbind from its
/// driver, `drivers_probe` (a host driver may take it). Refuses while a VM
/// uses it.
pub fn unbind(k: &mut dyn Kernel, root: &HostRoot, addr: PciAddress) -> Result<Unbound, HostError> {
    let f = PciFunction::read(root, addr)?;
    if let Some(by) = user_of(root, &f) {
        return Err(HostError::InUse { address: addr, by });
    }
    if f.driver_override.is_some() {
        write(k, root, &f.sysfs.join("driver_override"), "\n")?;
    }
    if f.driver.is_some() {
        write(k, root, &f.sysfs.join("driver/unbind"), &addr.to_string())?;
    }
    write(
        k,
        root,
        &root.sys.join("bus/pci/drivers_probe"),
        &addr.to_string(),
    )?;
    let no_autoprobe = f
        .physfn
        .and_then(|pf| PciFunction::read(root, pf).ok())
        .and_then(|pf| pf.sriov)
        .is_some_and(|s| !s.autoprobe);
    Ok(Unbound {
        address: addr,
        before: f.driver,
        driver: PciFunction::read(root, addr)?.driver,
        no_autoprobe,
    })
}

/// Xe scheduling priorities (`sched_priority`).
pub const PRIORITIES: [&str; 3] = ["low", "normal", "high"];

/// An Xe function's scheduling profile (`sriov_admin/{pf,vfN}/profile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The function (the PF for `pf/`).
    pub address: PciAddress,
    /// Its PF.
    pub pf: PciAddress,
    /// `pf` or `vfN`.
    pub name: String,
    /// The profile directory under the root.
    pub dir: PathBuf,
    /// `exec_quantum_ms` (0 = unlimited).
    pub exec_quantum_ms: u32,
    /// `preempt_timeout_us` (0 = unlimited).
    pub preempt_timeout_us: u32,
    /// The active priority.
    pub priority: String,
    /// The priorities offered.
    pub priorities: Vec<String>,
    /// `sched_priority` may be written.
    pub priority_writable: bool,
}

/// Changes to a [`Profile`]; `None` leaves a value alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileChange {
    /// New `exec_quantum_ms`.
    pub exec_quantum_ms: Option<u32>,
    /// New `preempt_timeout_us`.
    pub preempt_timeout_us: Option<u32>,
    /// New `sched_priority`.
    pub priority: Option<String>,
}

/// The profile directory for `addr` (a VF, or an Xe PF for its own
/// `pf/`), with its PF, its name and its address.
fn profile_dir(
    root: &HostRoot,
    addr: PciAddress,
) -> Result<(PciAddress, String, PathBuf), HostError> {
    let f = PciFunction::read(root, addr)?;
    let (pf, name) = if f.is_pf() {
        (f.clone(), "pf".to_string())
    } else if let Some(n) = f.vf_number(root) {
        let pf = PciFunction::read(root, f.physfn.unwrap_or(addr))?;
        (pf, format!("vf{n}"))
    } else {
        return Err(HostError::NotSriovFunction(addr));
    };
    let admin = pf.sysfs.join("sriov_admin");
    if !admin.is_dir() {
        return Err(HostError::NoSriovAdmin {
            pf: pf.address,
            driver: pf.driver,
        });
    }
    Ok((pf.address, name.clone(), admin.join(name).join("profile")))
}

fn u32_attr(path: &Path) -> Result<u32, HostError> {
    let t = read_attr(path)?;
    t.parse().map_err(|_| HostError::Parse {
        path: path.to_path_buf(),
        text: t,
        what: "an unsigned integer",
    })
}

/// Read `addr`'s scheduling profile.
pub fn read_profile(root: &HostRoot, addr: PciAddress) -> Result<Profile, HostError> {
    let (pf, name, dir) = profile_dir(root, addr)?;
    let prio_path = dir.join("sched_priority");
    let text = read_attr(&prio_path)?;
    let priorities: Vec<String> = text
        .split_whitespace()
        .map(|w| w.trim_matches(['[', ']']).to_string())
        .collect();
    let priority = text
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| priorities.first().cloned().unwrap_or_default());
    let priority_writable = std::fs::metadata(&prio_path)
        .map(|m| m.permissions().mode() & 0o222 != 0)
        .unwrap_or(false);
    Ok(Profile {
        address: addr,
        pf,
        name,
        exec_quantum_ms: u32_attr(&dir.join("exec_quantum_ms"))?,
        preempt_timeout_us: u32_attr(&dir.join("preempt_timeout_us"))?,
        priority,
        priorities,
        priority_writable,
        dir,
    })
}

/// Apply `change` to `addr`'s profile: writes exactly the files the
/// kernel documents (`exec_quantum_ms`, `preempt_timeout_us`,
/// `sched_priority` in `sriov_admin/{pf,vfN}/profile/`), priority checked
/// against what the kernel offers first. Returns the profile read back.
pub fn set_profile(
    k: &mut dyn Kernel,
    root: &HostRoot,
    addr: PciAddress,
    change: &ProfileChange,
) -> Result<Profile, HostError> {
    let p = read_profile(root, addr)?;
    if let Some(want) = &change.priority {
        if !p.priority_writable {
            return Err(HostError::PriorityReadOnly {
                address: addr,
                path: root.display(&p.dir.join("sched_priority")),
            });
        }
        if !p.priorities.iter().any(|a| a == want) {
            return Err(HostError::PriorityUnavailable {
                address: addr,
                wanted: want.clone(),
                available: p.priorities.clone(),
            });
        }
    }
    if let Some(v) = change.exec_quantum_ms {
        write(k, root, &p.dir.join("exec_quantum_ms"), &v.to_string())?;
    }
    if let Some(v) = change.preempt_timeout_us {
        write(k, root, &p.dir.join("preempt_timeout_us"), &v.to_string())?;
    }
    if let Some(v) = &change.priority {
        write(k, root, &p.dir.join("sched_priority"), v)?;
    }
    read_profile(root, addr)
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
