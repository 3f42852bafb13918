//! A PCI function as sysfs shows it: IDs, class, driver, IOMMU group and
//! SR-IOV state (`sriov_*`, `physfn`, `virtfnN`).

use std::path::{Path, PathBuf};

use super::{HostError, HostRoot, PciAddress, link_name, parse_hex, read_attr, read_opt};

/// SR-IOV state of a physical function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sriov {
    /// `sriov_totalvfs`: the most VFs the PF (and its driver) offers.
    pub totalvfs: u32,
    /// `sriov_numvfs`: VFs enabled now.
    pub numvfs: u32,
    /// `sriov_drivers_autoprobe`: host drivers probe new VFs.
    pub autoprobe: bool,
    /// The enabled VFs, in VF order (`virtfn0`, `virtfn1`, ...).
    pub vfs: Vec<PciAddress>,
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Its address.
    pub address: PciAddress,
    /// `/sys/bus/pci/devices/<bdf>` under the root.
    pub sysfs: PathBuf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// The bound driver's name.
    pub driver: Option<String>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// SR-IOV PF state, when the function has `sriov_totalvfs` > 0.
    pub sriov: Option<Sriov>,
    /// The PF, when this is a VF.
    pub physfn: Option<PciAddress>,
}

impl PciFunction {
    /// Read the function at `address`.
    pub fn read(root: &HostRoot, address: PciAddress) -> Result<Self, HostError> {
        let sysfs = root.pci_device(address);
        if !sysfs.join("vendor").exists() {
            return Err(HostError::NoSuchFunction {
                address,
                nearby: same_bus(root, address),
            });
        }
        let id = |name: &str| -> Result<u32, HostError> {
            let p = sysfs.join(name);
            parse_hex(&p, &read_attr(&p)?)
        };
        let vendor = id("vendor")? as u16;
        let device = id("device")? as u16;
        let class = id("class")?;
        let driver = link_name(&sysfs.join("driver"));
        let driver_override =
            read_opt(&sysfs.join("driver_override")).filter(|s| !s.is_empty() && s != "(null)");
        let iommu_group = link_name(&sysfs.join("iommu_group")).and_then(|n| n.parse().ok());
        let physfn = link_name(&sysfs.join("physfn")).and_then(|n| n.parse().ok());
        let sriov = read_sriov(&sysfs)?;
        Ok(Self {
            address,
            sysfs,
            vendor,
            device,
            class,
            driver,
            driver_override,
            iommu_group,
            sriov,
            physfn,
        })
    }

    /// A display controller (class 0x03xxxx): a GPU.
    pub fn is_gpu(&self) -> bool {
        self.class >> 16 == 0x03
    }

    /// A PCI-to-PCI bridge (root port, switch port).
    pub fn is_bridge(&self) -> bool {
        self.class >> 8 == 0x0604
    }

    /// An SR-IOV physical function.
    pub fn is_pf(&self) -> bool {
        self.sriov.is_some()
    }

    /// A virtual function.
    pub fn is_vf(&self) -> bool {
        self.physfn.is_some()
    }

    /// `vendor:device` as lspci prints it.
    pub fn ids(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }

    /// The number of this VF on its PF, 1-based as in the SR-IOV
    /// specification and the xe driver's `sriov_admin/vfN`.
    pub fn vf_number(&self, root: &HostRoot) -> Option<u32> {
        let pf = self.physfn?;
        let pf = PciFunction::read(root, pf).ok()?;
        let vfs = pf.sriov?.vfs;
        vfs.iter()
            .position(|&v| v == self.address)
            .map(|i| i as u32 + 1)
    }

    /// The resources (BARs) the kernel assigned: `(start, end, flags)` from
    /// the `resource` file, one per line (0-5 BARs, 6 ROM, 7-12 VF BARs).
    pub fn resources(&self) -> Vec<(u64, u64, u64)> {
        read_opt(&self.sysfs.join("resource"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut f = l
                    .split_whitespace()
                    .map(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).unwrap_or(0));
                (
                    f.next().unwrap_or(0),
                    f.next().unwrap_or(0),
                    f.next().unwrap_or(0),
                )
            })
            .collect()
    }
}

fn read_sriov(sysfs: &Path) -> Result<Option<Sriov>, HostError> {
    let Some(total) = read_opt(&sysfs.join("sriov_totalvfs")) else {
        return Ok(None);
    };
    let num_of = |name: &str, text: &str| -> Result<u32, HostError> {
        text.parse().map_err(|_| HostError::Parse {
            path: sysfs.join(name),
            text: text.to_string(),
            what: "a number",
        })
    };
    let totalvfs = num_of("sriov_totalvfs", &total)?;
    if totalvfs == 0 {
        return Ok(None);
    }
    let numvfs = match read_opt(&sysfs.join("sriov_numvfs")) {
        Some(t) => num_of("sriov_numvfs", &t)?,
        None => 0,
    };
    let autoprobe = read_opt(&sysfs.join("sriov_drivers_autoprobe")).as_deref() != Some("0");
    let mut vfs: Vec<(u32, PciAddress)> = std::fs::read_dir(sysfs)
        .map_err(|source| HostError::Read {
            path: sysfs.to_path_buf(),
            source,
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("virtfn")?.parse().ok()?;
            let addr = link_name(&e.path())?.parse().ok()?;
            Some((n, addr))
        })
        .collect();
    vfs.sort();
    Ok(Some(Sriov {
        totalvfs,
        numvfs,
        autoprobe,
        vfs: vfs.into_iter().map(|(_, a)| a).collect(),
    }))
}

/// Every PCI function on the host, sorted by address.
pub fn list_functions(root: &HostRoot) -> Result<Vec<PciAddress>, HostError> {
    let dir = root.sys.join("bus/pci/devices");
    let rd = std::fs::read_dir(&dir).map_err(|source| HostError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut v: Vec<PciAddress> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    Ok(v)
}

fn same_bus(root: &HostRoot, address: PciAddress) -> Vec<PciAddress> {
    list_functions(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.domain == address.domain && a.bus == address.bus)
        .take(8)
        .collect()
}

/// Turn what a user typed into a function address: a BDF (`0000:01:10.0`,
/// `01:10.0`) or a sysfs path (`/sys/bus/pci/devices/0000:01:10.0`, or any
/// symlink to a device such as `/sys/class/drm/card1/device`). Paths are
/// resolved inside `root`; the function must exist.
pub fn resolve_function(root: &HostRoot, spec: &str) -> Result<PciAddress, HostError> {
    let address = if spec.contains('/') {
        let given = Path::new(spec);
        let path = if given.starts_with(&root.sys) {
            given.to_path_buf()
        } else {
            root.map(given)
        };
        let canon =
            std::fs::canonicalize(&path).map_err(|_| HostError::NotPciPath(given.into()))?;
        let sys = std::fs::canonicalize(&root.sys).unwrap_or_else(|_| root.sys.clone());
        if !canon.starts_with(&sys) || !canon.join("vendor").is_file() {
            return Err(HostError::NotPciPath(given.into()));
        }
        canon
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<PciAddress>().ok())
            .ok_or_else(|| HostError::NotPciPath(given.into()))?
    } else {
        spec.parse()?
    };
    if !root.pci_device(address).join("vendor").exists() {
        return Err(HostError::NoSuchFunction {
            address,
            nearby: same_bus(root, address),
        });
    }
    Ok(address)
}

/// The members of IOMMU group `group`, sorted.
pub fn group_members(root: &HostRoot, group: u32) -> Vec<PciAddress> {
    let dir = root
        .sys
        .join("kernel/iommu_groups")
        .join(group.to_string())
        .join("devices");
    let mut v: Vec<PciAddress> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The other members of `f`'s IOMMU group that a host driver still uses
/// (anything but no driver, VFIO drivers, pci-stub, and pcieport on
/// bridges), with their drivers.
pub fn group_in_host_use(root: &HostRoot, f: &PciFunction) -> Vec<(PciAddress, Option<String>)> {
    let Some(group) = f.iommu_group else {
        return Vec::new();
    };
    group_members(root, group)
        .into_iter()
        .filter(|&a| a != f.address)
        .filter_map(|a| {
            let m = PciFunction::read(root, a).ok()?;
            if super::is_group_safe_driver(m.driver.as_deref(), &m.sysfs) {
                None
            } else {
                Some((a, m.driver))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeFn, FakeHost};
    use super::*;

    #[test]
    fn a_vf_knows_its_pf_and_its_number() {
        let h = FakeHost::new("pci-vf");
        h.igb_with_vfs(2);
        let pf = PciFunction::read(&h.root, "0000:01:00.0".parse().unwrap()).unwrap();
        let s = pf.sriov.clone().unwrap();
        assert_eq!((s.totalvfs, s.numvfs, s.autoprobe), (7, 2, false));
        assert_eq!(s.vfs.len(), 2);
        assert_eq!(pf.driver.as_deref(), Some("igb"));
        let vf = PciFunction::read(&h.root, s.vfs[1]).unwrap();
        assert_eq!(vf.physfn, Some(pf.address));
        assert_eq!(vf.vf_number(&h.root), Some(2));
        assert_eq!(vf.ids(), "8086:10ca");
        assert!(vf.is_vf() && !vf.is_pf() && pf.is_pf());
    }

    #[test]
    fn functions_resolve_from_a_bdf_a_short_bdf_or_a_sysfs_symlink() {
        let h = FakeHost::new("pci-resolve");
        h.add(&FakeFn::new("0000:00:02.0", 0x8086, 0xa780, 0x030000).driver("i915"));
        h.link_class("drm/card0", "0000:00:02.0");
        let want: PciAddress = "0000:00:02.0".parse().unwrap();
        assert_eq!(resolve_function(&h.root, "00:02.0").unwrap(), want);
        assert_eq!(resolve_function(&h.root, "0000:00:02.0").unwrap(), want);
        for p in [
            "/sys/bus/pci/devices/0000:00:02.0",
            "/sys/class/drm/card0/device",
            "/sys/devices/pci0000:00/0000:00:02.0",
        ] {
            assert_eq!(resolve_function(&h.root, p).unwrap(), want, "{p}");
        }
        let direct = h.root.sys.join("bus/pci/devices/0000:00:02.0");
        assert_eq!(
            resolve_function(&h.root, direct.to_str().unwrap()).unwrap(),
            want
        );
    }

    #[test]
    fn a_missing_function_names_its_neighbours() {
        let h = FakeHost::new("pci-missing");
        h.add(&FakeFn::new("0000:00:02.0", 0x8086, 0xa780, 0x030000));
        h.add(&FakeFn::new("0000:00:1f.0", 0x8086, 0x7a06, 0x060100));
        let e = resolve_function(&h.root, "00:03.0").unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, HostError::NoSuchFunction { .. }));
        assert!(
            m.contains("0000:00:02.0, 0000:00:1f.0") && m.contains("lspci -D"),
            "{m}"
        );
        let e = resolve_function(&h.root, "/sys/class/net/eth0").unwrap_err();
        assert!(matches!(e, HostError::NotPciPath(_)), "{e}");
        assert!(matches!(
            resolve_function(&h.root, "gpu0").unwrap_err(),
            HostError::BadSpec(_)
        ));
    }

    #[test]
    fn group_members_in_host_use_exclude_bridges_and_vfio() {
        let h = FakeHost::new("pci-group");
        h.add(
            &FakeFn::new("0000:00:01.0", 0x8086, 0x1901, 0x060400)
                .driver("pcieport")
                .group(1),
        );
        h.add(
            &FakeFn::new("0000:01:00.0", 0x10de, 0x1b80, 0x030000)
                .under("0000:00:01.0")
                .driver("vfio-pci")
                .group(1),
        );
        h.add(
            &FakeFn::new("0000:01:00.1", 0x10de, 0x10f0, 0x040300)
                .under("0000:00:01.0")
                .driver("snd_hda_intel")
                .group(1),
        );
        h.add(
            &FakeFn::new("0000:01:00.2", 0x10de, 0x1ad6, 0x0c0330)
                .under("0000:00:01.0")
                .group(1),
        );
        let f = PciFunction::read(&h.root, "01:00.0".parse().unwrap()).unwrap();
        assert_eq!(group_members(&h.root, 1).len(), 4);
        assert_eq!(
            group_in_host_use(&h.root, &f),
            vec![(
                "0000:01:00.1".parse().unwrap(),
                Some("snd_hda_intel".to_string())
            )]
        );
    }
}
