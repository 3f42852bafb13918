//! Everything that stops a PCI function from being passed through, checked
//! on the host before any VFIO ioctl: [`check_passthrough`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::checks::{Remapping, interrupt_remapping, unsafe_interrupts_allowed};
use super::pci::{PciFunction, group_in_host_use, resolve_function};
use super::{HostError, HostRoot, NodeAccess, PciAddress, is_vfio_driver, read_opt};

/// A function that is ready to be passed through, and the nodes to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughTarget {
    /// The function.
    pub address: PciAddress,
    /// `/sys/bus/pci/devices/<bdf>` under the root.
    pub sysfs: PathBuf,
    /// Its driver: vfio-pci or a VFIO variant driver (`xe-vfio-pci`, ...).
    pub driver: String,
    /// Its IOMMU group.
    pub group: u32,
    /// `/dev/vfio/<group>` under the root.
    pub group_dev: PathBuf,
    /// `/dev/vfio/devices/vfioN` under the root, when the kernel made the
    /// VFIO character device (`/sys/.../vfio-dev/vfioN` exists).
    pub cdev: Option<PathBuf>,
    /// `/dev/iommu` exists (iommufd can be used with `cdev`).
    pub iommufd: bool,
}

/// The outcome of all checks: the target when nothing is wrong, else
/// every problem found, most basic first.
#[derive(Debug)]
pub struct Preflight {
    /// The function, when it resolved.
    pub address: Option<PciAddress>,
    /// Set when `problems` is empty.
    pub target: Option<PassthroughTarget>,
    /// What stops passthrough.
    pub problems: Vec<HostError>,
}

/// The kernel command line that turns the IOMMU on for this host's CPU
/// vendor (from `/proc/cpuinfo`).
pub fn iommu_param(root: &HostRoot) -> &'static str {
    let cpuinfo = read_opt(&root.proc.join("cpuinfo")).unwrap_or_default();
    if cpuinfo.contains("AuthenticAMD") || cpuinfo.contains("HygonGenuine") {
        "amd_iommu=on iommu=pt"
    } else {
        "intel_iommu=on iommu=pt"
    }
}

/// The IOMMU units in `/sys/class/iommu` (`dmar0`, `ivhd0`, ...).
pub fn iommu_units(root: &HostRoot) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.sys.join("class/iommu"))
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// [`HostError::IommuOff`] with `reason`, or `None` when an IOMMU is up.
pub fn iommu_off(root: &HostRoot, reason: Option<String>) -> Option<HostError> {
    let reason = match reason {
        Some(r) => r,
        None if iommu_units(root).is_empty() => "no IOMMU in /sys/class/iommu".to_string(),
        None => return None,
    };
    let param = iommu_param(root);
    let cmdline = read_opt(&root.proc.join("cmdline")).unwrap_or_default();
    let key = param.split(' ').next().unwrap_or(param);
    Some(HostError::IommuOff {
        reason,
        param,
        on_cmdline: cmdline.split_whitespace().any(|w| w == key),
    })
}

/// Processes (pid, command) with `node` open, found through the
/// `<proc>/PID/fd` links; `node` is a path under `root` (`DIR/dev/vfio/12`)
/// and matches links that name it as the host does (`/dev/vfio/12`). This
/// process is left out, as are processes whose fds cannot be read.
pub fn group_holders(root: &HostRoot, node: &Path) -> Vec<(u32, String)> {
    let host_name = root.display(node);
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&root.proc) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == host_name || t == node));
        if holds {
            let comm = read_opt(&e.path().join("comm")).unwrap_or_else(|| "?".into());
            out.push((pid, comm));
        }
    }
    out.sort();
    out
}

/// True when this process may open `path` read-write (access(2) with the
/// real uid/gid, which are this process's own).
pub fn can_open_rw(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call;
    // access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) == 0 }
}

fn node_access(root: &HostRoot, path: &Path) -> NodeAccess {
    let m = std::fs::metadata(path).ok();
    NodeAccess {
        path: root.display(path),
        uid: m.as_ref().map_or(0, |m| m.uid()),
        gid: m.as_ref().map_or(0, |m| m.gid()),
        mode: m.as_ref().map_or(0, |m| m.mode()),
    }
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid() has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` when unlimited.
pub fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for getrlimit to fill in.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(r.rlim_cur)
    }
}

/// CAP_IPC_LOCK (bit 14) in `CapEff` of `<proc>/self/status`.
pub fn has_cap_ipc_lock(root: &HostRoot) -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    read_opt(&root.proc.join("self/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// [`HostError::MemlockTooLow`] when `guest_memory` bytes cannot be locked
/// under `limit` (`None` = unlimited) without CAP_IPC_LOCK.
pub fn memlock_problem(
    limit: Option<u64>,
    cap_ipc_lock: bool,
    guest_memory: u64,
) -> Option<HostError> {
    match limit {
        Some(limit) if !cap_ipc_lock && guest_memory > limit => Some(HostError::MemlockTooLow {
            limit,
            needed: guest_memory,
        }),
        _ => None,
    }
}

/// The VFIO character device of `f` (`/dev/vfio/devices/vfioN` under the
/// root), when `/sys/.../vfio-dev/vfioN` exists.
pub fn vfio_cdev(root: &HostRoot, sysfs: &Path) -> Option<PathBuf> {
    let rd = std::fs::read_dir(sysfs.join("vfio-dev")).ok()?;
    let name = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .find(|n| n.starts_with("vfio"))?;
    Some(root.dev.join("vfio/devices").join(name))
}

/// Every problem with passing `spec` through to a VM with `guest_memory`
/// bytes of RAM (0: leave RLIMIT_MEMLOCK out).
pub fn passthrough_problems(root: &HostRoot, spec: &str, guest_memory: u64) -> Preflight {
    let mut problems = Vec::new();
    let fail = |e| Preflight {
        address: None,
        target: None,
        problems: vec![e],
    };
    let address = match resolve_function(root, spec) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let f = match PciFunction::read(root, address) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if let Some(s) = &f.sriov {
        if s.numvfs > 0 || f.is_gpu() {
            problems.push(HostError::IsPf {
                address,
                numvfs: s.numvfs,
                gpu: f.is_gpu(),
            });
        }
    }
    let off = iommu_off(root, None).or_else(|| {
        f.iommu_group
            .is_none()
            .then(|| iommu_off(root, Some(format!("{address} has no IOMMU group"))))
            .flatten()
    });
    let iommu_is_off = off.is_some();
    if let Some(e) = off {
        problems.push(e);
    }
    if !iommu_is_off {
        // VFIO refuses to attach the group (EPERM) without remapping.
        if let Remapping::Off(reason) = interrupt_remapping(root) {
            if !unsafe_interrupts_allowed(root) {
                problems.push(HostError::InterruptRemappingOff { reason });
            }
        }
    }
    let vfio = f
        .driver
        .as_deref()
        .is_some_and(|d| is_vfio_driver(d, &f.sysfs));
    if !vfio {
        problems.push(HostError::NotVfioBound {
            address,
            driver: f.driver.clone(),
        });
    }
    let Some(group) = f.iommu_group else {
        return Preflight {
            address: Some(address),
            target: None,
            problems,
        };
    };
    let members = group_in_host_use(root, &f);
    if !members.is_empty() {
        problems.push(HostError::GroupNotViable {
            address,
            group,
            members,
        });
    }
    let group_dev = root.dev.join("vfio").join(group.to_string());
    let cdev = vfio_cdev(root, &f.sysfs);
    let iommu_dev = root.dev.join("iommu");
    let iommufd = iommu_dev.exists();
    if vfio {
        if !group_dev.exists() && cdev.is_none() {
            problems.push(HostError::MissingNode {
                path: root.display(&group_dev),
                address,
            });
        } else {
            let container = root.dev.join("vfio/vfio");
            let legacy = [group_dev.clone(), container];
            let modern: Vec<PathBuf> = cdev.iter().cloned().chain([iommu_dev.clone()]).collect();
            let ok = |nodes: &[PathBuf]| nodes.iter().all(|n| n.exists() && can_open_rw(n));
            let legacy_ok = group_dev.exists() && ok(&legacy);
            let modern_ok = cdev.is_some() && iommufd && ok(&modern);
            if !legacy_ok && !modern_ok {
                let nodes = legacy
                    .iter()
                    .chain(if cdev.is_some() {
                        modern.iter()
                    } else {
                        [].iter()
                    })
                    .filter(|n| n.exists() && !can_open_rw(n))
                    .map(|n| node_access(root, n))
                    .collect::<Vec<_>>();
                if !nodes.is_empty() {
                    problems.push(HostError::PermissionDenied { uid: euid(), nodes });
                }
            }
            for node in std::iter::once(&group_dev).chain(cdev.iter()) {
                let holders = group_holders(root, node);
                if !holders.is_empty() {
                    problems.push(HostError::Busy {
                        address,
                        node: root.display(node),
                        holders,
                    });
                }
            }
        }
    }
    if guest_memory > 0 {
        if let Some(e) = memlock_problem(memlock_limit(), has_cap_ipc_lock(root), guest_memory) {
            problems.push(e);
        }
    }
    let target = problems.is_empty().then(|| PassthroughTarget {
        address,
        sysfs: f.sysfs.clone(),
        driver: f.driver.clone().unwrap_or_default(),
        group,
        group_dev,
        cdev,
        iommufd,
    });
    Preflight {
        address: Some(address),
        target,
        problems,
    }
}

/// Check that `spec` (a BDF or a sysfs path) can be passed through to a VM
/// with `guest_memory` bytes of RAM (0: skip the RLIMIT_MEMLOCK check), and
/// say which nodes to open. The first problem found is the error; `tessera
/// vf check` lists them all.
pub fn check_passthrough(
    root: &HostRoot,
    spec: &str,
    guest_memory: u64,
) -> Result<PassthroughTarget, HostError> {
    let mut p = passthrough_problems(root, spec, guest_memory);
    match p.target.take() {
        Some(t) => Ok(t),
        None => Err(p.problems.remove(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeFn, FakeHost};
    use super::*;

    fn ready_vf(name: &str) -> (FakeHost, PciAddress) {
        let h = FakeHost::new(name);
        let vfs = h.igb_with_vfs(2);
        h.bind(vfs[0], "vfio-pci");
        (h, vfs[0])
    }

    #[test]
    fn a_vf_on_vfio_pci_in_its_own_group_is_ready() {
        let (h, vf) = ready_vf("pre-ready");
        let t = check_passthrough(&h.root, "01:10.0", 0).unwrap();
        assert_eq!(t.address, vf);
        assert_eq!(t.driver, "vfio-pci");
        assert_eq!(t.group, 2);
        assert_eq!(t.group_dev, h.root.dev.join("vfio/2"));
        assert_eq!(t.sysfs, h.root.sys.join("bus/pci/devices/0000:01:10.0"));
        assert_eq!(t.cdev, None);
        assert!(!t.iommufd);
        let by_path = check_passthrough(&h.root, "/sys/bus/pci/devices/0000:01:10.0", 0).unwrap();
        assert_eq!(by_path, t);
    }

    #[test]
    fn the_cdev_and_iommufd_are_reported_when_the_kernel_has_them() {
        let h = FakeHost::new("pre-cdev");
        h.add(
            &FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00)
                .group(4)
                .cdev(0)
                .driver("vfio-pci"),
        );
        h.node_mode("iommu", 0o666);
        let t = check_passthrough(&h.root, "00:03.0", 0).unwrap();
        assert_eq!(t.cdev, Some(h.root.dev.join("vfio/devices/vfio0")));
        assert!(t.iommufd);
    }

    #[test]
    fn a_missing_function_is_the_only_problem() {
        let (h, _) = ready_vf("pre-missing");
        let e = check_passthrough(&h.root, "01:11.0", 0).unwrap_err();
        assert!(
            e.to_string().contains("no PCI function 0000:01:11.0"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("0000:01:00.0, 0000:01:10.0, 0000:01:10.2"),
            "{e}"
        );
    }

    #[test]
    fn iommu_off_gives_the_kernel_parameter_for_the_cpu_vendor() {
        let (h, _) = ready_vf("pre-iommu");
        h.no_iommu();
        h.proc_file("cmdline", "root=/dev/sda1 quiet\n");
        let e = check_passthrough(&h.root, "01:10.0", 0).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("no IOMMU in /sys/class/iommu")
                && m.contains("'intel_iommu=on iommu=pt'")
                && m.contains("reboot"),
            "{m}"
        );
        h.proc_file("cpuinfo", "vendor_id\t: AuthenticAMD\n");
        let m = check_passthrough(&h.root, "01:10.0", 0)
            .unwrap_err()
            .to_string();
        assert!(m.contains("'amd_iommu=on iommu=pt'"), "{m}");
        h.proc_file("cmdline", "root=/dev/sda1 amd_iommu=on iommu=pt\n");
        let m = check_passthrough(&h.root, "01:10.0", 0)
            .unwrap_err()
            .to_string();
        assert!(m.contains("firmware setup"), "{m}");
    }

    #[test]
    fn a_function_without_an_iommu_group_means_the_iommu_is_off_for_it() {
        let h = FakeHost::new("pre-nogroup");
        h.add(&FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00).driver("vfio-pci"));
        let e = check_passthrough(&h.root, "00:03.0", 0).unwrap_err();
        assert!(
            e.to_string().contains("0000:00:03.0 has no IOMMU group"),
            "{e}"
        );
    }

    #[test]
    fn a_function_on_a_host_driver_names_it_and_both_fixes() {
        let (h, _) = ready_vf("pre-driver");
        h.bind("0000:01:10.2".parse().unwrap(), "igbvf");
        let m = check_passthrough(&h.root, "01:10.2", 0)
            .unwrap_err()
            .to_string();
        assert!(
            m.starts_with("0000:01:10.2 is bound to igbvf, not vfio-pci"),
            "{m}"
        );
        assert!(m.contains("tessera vf bind 0000:01:10.2"), "{m}");
        assert!(
            m.contains("echo vfio-pci > /sys/bus/pci/devices/0000:01:10.2/driver_override"),
            "{m}"
        );
        assert!(
            m.contains("echo 0000:01:10.2 > /sys/bus/pci/devices/0000:01:10.2/driver/unbind"),
            "{m}"
        );
        assert!(
            m.contains("echo 0000:01:10.2 > /sys/bus/pci/drivers_probe"),
            "{m}"
        );
        h.unbind("0000:01:10.2".parse().unwrap());
        let m = check_passthrough(&h.root, "01:10.2", 0)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("bound to no driver") && !m.contains("driver/unbind"),
            "{m}"
        );
    }

    #[test]
    fn interrupt_remapping_off_stops_passthrough_unless_unsafe_interrupts_are_allowed() {
        let (h, _) = ready_vf("pre-ir");
        h.intel_iommu("dmar0", 0xf0_50d2);
        let e = check_passthrough(&h.root, "01:10.0", 0).unwrap_err();
        assert!(matches!(e, HostError::InterruptRemappingOff { .. }), "{e}");
        h.module("vfio_iommu_type1", &[("allow_unsafe_interrupts", "Y")]);
        check_passthrough(&h.root, "01:10.0", 0).unwrap();
    }

    #[test]
    fn variant_drivers_are_accepted() {
        let (h, vf) = ready_vf("pre-variant");
        h.unbind(vf);
        h.bind(vf, "xe-vfio-pci");
        assert_eq!(
            check_passthrough(&h.root, "01:10.0", 0).unwrap().driver,
            "xe-vfio-pci"
        );
    }

    #[test]
    fn a_group_shared_with_a_host_driver_is_not_viable() {
        let h = FakeHost::new("pre-group");
        h.add(
            &FakeFn::new("0000:00:1c.0", 0x8086, 0x7a38, 0x060400)
                .driver("pcieport")
                .group(7),
        );
        h.add(
            &FakeFn::new("0000:02:00.0", 0x10de, 0x1b80, 0x030000)
                .under("0000:00:1c.0")
                .driver("vfio-pci")
                .group(7),
        );
        h.add(
            &FakeFn::new("0000:02:00.1", 0x10de, 0x10f0, 0x040300)
                .under("0000:00:1c.0")
                .driver("snd_hda_intel")
                .group(7),
        );
        h.add(
            &FakeFn::new("0000:02:00.2", 0x10de, 0x1ad6, 0x0c0330)
                .under("0000:00:1c.0")
                .driver("xhci_hcd")
                .group(7),
        );
        let e = check_passthrough(&h.root, "02:00.0", 0).unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(e, HostError::GroupNotViable { group: 7, .. }),
            "{m}"
        );
        assert!(
            m.contains("0000:02:00.1 (snd_hda_intel), 0000:02:00.2 (xhci_hcd)"),
            "{m}"
        );
        assert!(
            m.contains("tessera vf bind 0000:02:00.1 0000:02:00.2"),
            "{m}"
        );
        assert!(
            !m.contains("00:1c.0"),
            "the root port on pcieport is fine: {m}"
        );
        h.unbind("0000:02:00.1".parse().unwrap());
        h.bind("0000:02:00.1".parse().unwrap(), "vfio-pci");
        h.unbind("0000:02:00.2".parse().unwrap());
        h.bind("0000:02:00.2".parse().unwrap(), "pci-stub");
        check_passthrough(&h.root, "02:00.0", 0).unwrap();
    }

    #[test]
    fn a_pf_with_vfs_or_a_gpu_pf_is_refused() {
        let (h, _) = ready_vf("pre-pf");
        h.unbind("0000:01:00.0".parse().unwrap());
        h.bind("0000:01:00.0".parse().unwrap(), "vfio-pci");
        let e = check_passthrough(&h.root, "01:00.0", 0).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("SR-IOV physical function with 2 VFs enabled")
                && m.contains("pass one of its VFs"),
            "{m}"
        );
        let g = FakeHost::new("pre-gpu-pf");
        g.add(
            &FakeFn::new("0000:00:02.0", 0x8086, 0xa780, 0x030000)
                .driver("vfio-pci")
                .group(0)
                .sriov(7, 0xa780),
        );
        let m = check_passthrough(&g.root, "00:02.0", 0)
            .unwrap_err()
            .to_string();
        assert!(m.contains("SR-IOV physical function of a GPU"), "{m}");
        // A network PF without VFs may go to a VM like any device.
        let n = FakeHost::new("pre-nic-pf");
        n.add(
            &FakeFn::new("0000:05:00.0", 0x8086, 0x10c9, 0x020000)
                .driver("vfio-pci")
                .group(3)
                .sriov(7, 0x10ca),
        );
        check_passthrough(&n.root, "05:00.0", 0).unwrap();
    }

    #[test]
    fn an_open_group_names_the_process_holding_it() {
        let (h, vf) = ready_vf("pre-busy");
        h.process(
            4242,
            "qemu-system-x86",
            &[(0, "/dev/null"), (17, "/dev/vfio/2")],
        );
        h.process(4343, "bash", &[(0, "/dev/pts/0")]);
        let e = check_passthrough(&h.root, "01:10.0", 0).unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(e, HostError::Busy { address, .. } if address == vf),
            "{m}"
        );
        assert!(
            m.contains("/dev/vfio/2 (0000:01:10.0) is already open in pid 4242 (qemu-system-x86)"),
            "{m}"
        );
        assert_eq!(
            group_holders(&h.root, &h.root.dev.join("vfio/2")),
            vec![(4242, "qemu-system-x86".to_string())]
        );
        assert!(group_holders(&h.root, &h.root.dev.join("vfio/3")).is_empty());
    }

    #[test]
    fn memlock_below_guest_ram_fires_unless_cap_ipc_lock() {
        assert!(memlock_problem(None, false, 1 << 40).is_none());
        assert!(memlock_problem(Some(8 << 20), true, 4 << 30).is_none());
        assert!(memlock_problem(Some(8 << 30), false, 4 << 30).is_none());
        let m = memlock_problem(Some(8 << 20), false, 4 << 30)
            .unwrap()
            .to_string();
        assert!(
            m.starts_with("RLIMIT_MEMLOCK is 8M but VFIO must lock all 4G of guest RAM"),
            "{m}"
        );
        assert!(
            m.contains("ulimit -l")
                && m.contains("LimitMEMLOCK=")
                && m.contains("limits.conf")
                && m.contains("CAP_IPC_LOCK"),
            "{m}"
        );

        let (h, _) = ready_vf("pre-memlock");
        assert!(!has_cap_ipc_lock(&h.root));
        h.cap_eff(1 << 14);
        assert!(has_cap_ipc_lock(&h.root));
        // With CAP_IPC_LOCK no limit matters, whatever this process's is.
        check_passthrough(&h.root, "01:10.0", u64::MAX).unwrap();
        h.cap_eff(0);
        match memlock_limit() {
            Some(limit) => {
                let e = check_passthrough(&h.root, "01:10.0", limit + 1).unwrap_err();
                assert!(matches!(e, HostError::MemlockTooLow { .. }), "{e}");
                check_passthrough(&h.root, "01:10.0", limit).unwrap();
            }
            None => eprintln!(
                "RLIMIT_MEMLOCK is unlimited here: the limit case is covered by memlock_problem above"
            ),
        }
    }

    #[test]
    fn vfio_nodes_this_user_cannot_open_are_named_with_owner_and_mode() {
        if euid() == 0 {
            eprintln!(
                "SKIP vfio_nodes_this_user_cannot_open...: root bypasses mode bits; tests/tests/vf_cli.rs checks this as uid 65534 through setpriv"
            );
            return;
        }
        let (h, _) = ready_vf("pre-perm");
        h.node_mode("vfio/2", 0o000);
        let m = check_passthrough(&h.root, "01:10.0", 0)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("/dev/vfio/2 (owner") && m.contains("mode 0000") && m.contains("udev"),
            "{m}"
        );
    }

    #[test]
    fn all_problems_are_listed_for_vf_check() {
        let h = FakeHost::new("pre-all");
        h.add(
            &FakeFn::new("0000:00:02.0", 0x8086, 0xa780, 0x030000)
                .driver("i915")
                .sriov(7, 0xa780),
        );
        h.no_iommu();
        let p = passthrough_problems(&h.root, "00:02.0", 0);
        assert!(p.target.is_none());
        let kinds: Vec<String> = p
            .problems
            .iter()
            .map(|e| {
                format!("{e:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(kinds, ["IsPf", "IommuOff", "NotVfioBound"]);
    }
}
