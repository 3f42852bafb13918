//! Fake host trees for tests: sysfs, `/dev` and `/proc` laid out as the
//! kernel lays them out, under a temporary directory.
//!
//! Device directories live at `sys/devices/pci0000:00/[bridge/]BDF`, and
//! every link is relative as in the real sysfs: `bus/pci/devices/BDF ->
//! ../../../devices/pci0000:00/BDF`, `driver -> ../../../bus/pci/drivers/X`,
//! `iommu_group -> ../../../kernel/iommu_groups/N`, `physfn -> ../PF`,
//! `virtfnN -> ../VF`. The files and their formats follow the kernel's
//! Documentation/ABI/testing/sysfs-bus-pci and what the testbed's real
//! igb PF shows.
//!
//! [`FakeKernel`] plays the kernel's part for writes: it records each one
//! and applies what the real attribute would do (unbind drops the driver
//! link, `drivers_probe` binds to `driver_override`, `sriov_numvfs` makes
//! or removes VFs and refuses a non-zero to non-zero change with EBUSY).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{HostRoot, Kernel, PciAddress, link_name, read_opt};

/// A fake host under a temporary directory, removed on drop.
#[derive(Debug)]
pub struct FakeHost {
    /// The directory holding `sys`, `dev`, `proc`, `run`, `lib`.
    pub dir: PathBuf,
    /// The root to hand to the code under test.
    pub root: HostRoot,
}

/// A function to add to a [`FakeHost`].
#[derive(Debug, Clone)]
pub struct FakeFn {
    address: PciAddress,
    vendor: u16,
    device: u16,
    class: u32,
    driver: Option<String>,
    group: Option<u32>,
    parent: Option<PciAddress>,
    sriov: Option<(u32, u32, u16)>,
    resources: Vec<(u64, u64, u64)>,
    cdev: Option<u32>,
}

const NO_RESOURCE: (u64, u64, u64) = (0, 0, 0);
/// Flags of a 64-bit memory BAR.
const MEM64: u64 = 0x0014_0204;

impl FakeFn {
    /// A function with IDs and class; `bdf` as `0000:01:00.0`. It gets
    /// BAR0 assigned (and VF BARs, once it has SR-IOV).
    pub fn new(bdf: &str, vendor: u16, device: u16, class: u32) -> Self {
        let address: PciAddress = bdf.parse().expect("fake BDF");
        let base = 0xf000_0000
            + (u64::from(address.bus) << 20)
            + (u64::from(address.device) << 15)
            + (u64::from(address.function) << 12);
        let mut resources = vec![NO_RESOURCE; 13];
        resources[0] = (base, base + 0xfff, MEM64);
        Self {
            address,
            vendor,
            device,
            class,
            driver: None,
            group: None,
            parent: None,
            sriov: None,
            resources,
            cdev: None,
        }
    }

    /// Bound to `driver`.
    pub fn driver(mut self, driver: &str) -> Self {
        self.driver = Some(driver.to_string());
        self
    }

    /// In IOMMU group `n`.
    pub fn group(mut self, n: u32) -> Self {
        self.group = Some(n);
        self
    }

    /// Behind the bridge `bdf` (added before).
    pub fn under(mut self, bdf: &str) -> Self {
        self.parent = Some(bdf.parse().expect("fake parent BDF"));
        self
    }

    /// An SR-IOV PF: `total` VFs offered, VF device ID `vf_device`
    /// (`sriov_numvfs` 0; add VFs with [`FakeHost::add_vfs`]).
    pub fn sriov(mut self, total: u32, vf_device: u16) -> Self {
        self.sriov = Some((total, 0, vf_device));
        let base = 0xe000_0000 + (u64::from(self.address.bus) << 24);
        self.resources[7] = (base, base + u64::from(total) * 0x4000 - 1, MEM64);
        self
    }

    /// No VF BAR space assigned (the BIOS reserved none).
    pub fn no_vf_bars(mut self) -> Self {
        for r in &mut self.resources[7..] {
            *r = NO_RESOURCE;
        }
        self
    }

    /// No BAR assigned at all.
    pub fn no_bars(mut self) -> Self {
        self.resources = vec![NO_RESOURCE; 13];
        self
    }

    /// Has the VFIO character device `vfio-dev/vfioN`.
    pub fn cdev(mut self, n: u32) -> Self {
        self.cdev = Some(n);
        self
    }
}

/// Write a fake sysfs file whole: a reader in another thread sees the old
/// or the new text, never an empty file (as with a real attribute).
fn write(path: &Path, text: &str) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("fake dir");
    }
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".fake-tmp-{n}"));
    std::fs::write(&tmp, text).expect("fake file");
    std::fs::rename(&tmp, path).expect("fake file");
}

fn link(target: &str, at: &Path) {
    if let Some(p) = at.parent() {
        std::fs::create_dir_all(p).expect("fake dir");
    }
    let _ = std::fs::remove_file(at);
    symlink(target, at).expect("fake link");
}

/// `../` enough times to climb from `dir` (relative to sys) up to sys.
fn up(dir: &Path) -> String {
    "../".repeat(dir.components().count())
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl FakeHost {
    /// An empty host: an Intel CPU with the IOMMU on (`dmar0`, with
    /// interrupt remapping), no PCI functions, no privileges in
    /// `/proc/self/status`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tessera-fake-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let root = HostRoot::under(&dir);
        let h = Self { dir, root };
        for d in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/kernel/iommu_groups",
            "sys/class/iommu",
            "sys/module",
            "dev/vfio",
            "proc",
            "run",
        ] {
            std::fs::create_dir_all(h.dir.join(d)).expect("fake dir");
        }
        write(&h.root.sys.join("bus/pci/drivers_probe"), "");
        write(&h.root.sys.join("bus/pci/rescan"), "");
        h.intel_iommu("dmar0", 0xf0_50da);
        h.proc_file(
            "cpuinfo",
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Fake CPU\n",
        );
        h.proc_file(
            "cmdline",
            "BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro intel_iommu=on iommu=pt\n",
        );
        h.proc_file("sys/kernel/osrelease", "6.19.0-fake\n");
        h.proc_file(
            "interrupts",
            "           CPU0\n 24:   1  IR-PCI-MSIX-0000:01:00.0    0-edge      eth0\n",
        );
        h.cap_eff(0);
        h
    }

    /// Write `proc/<rel>`.
    pub fn proc_file(&self, rel: &str, text: &str) {
        write(&self.root.proc.join(rel), text);
    }

    /// Write `sys/<rel>`.
    pub fn sys_file(&self, rel: &str, text: &str) {
        write(&self.root.sys.join(rel), text);
    }

    /// Remove `sys/<rel>` (file or directory).
    pub fn remove(&self, rel: &str) {
        let p = self.root.sys.join(rel);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
    }

    /// `/proc/self/status` with this `CapEff` mask.
    pub fn cap_eff(&self, caps: u64) {
        self.proc_file(
            "self/status",
            &format!("Name:\ttessera\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t{caps:016x}\nCapEff:\t{caps:016x}\n"),
        );
    }

    /// An Intel IOMMU unit with this extended capability register.
    pub fn intel_iommu(&self, name: &str, ecap: u64) {
        self.sys_file(
            &format!("class/iommu/{name}/intel-iommu/ecap"),
            &format!("{ecap:x}\n"),
        );
        self.sys_file(
            &format!("class/iommu/{name}/intel-iommu/cap"),
            "d2008c40660462\n",
        );
    }

    /// No IOMMU at all (`/sys/class/iommu` empty).
    pub fn no_iommu(&self) {
        let _ = std::fs::remove_dir_all(self.root.sys.join("class/iommu"));
        std::fs::create_dir_all(self.root.sys.join("class/iommu")).expect("fake dir");
    }

    /// A loaded module, with parameters (`name=value`).
    pub fn module(&self, module: &str, params: &[(&str, &str)]) {
        std::fs::create_dir_all(self.root.sys.join("module").join(module)).expect("fake dir");
        for (p, v) in params {
            self.sys_file(
                &format!("module/{module}/parameters/{p}"),
                &format!("{v}\n"),
            );
        }
    }

    /// A module file installed for the running kernel (`modules.dep` line).
    pub fn installed_module(&self, rel: &str) {
        let dir = self.dir.join("lib/modules/6.19.0-fake");
        write(&dir.join(rel), "");
        let dep = dir.join("modules.dep");
        let mut text = std::fs::read_to_string(&dep).unwrap_or_default();
        text.push_str(&format!("{rel}:\n"));
        write(&dep, &text);
    }

    /// An empty PCI driver directory (the driver is loaded).
    pub fn pci_driver(&self, name: &str) {
        let d = self.root.pci_driver(name);
        for f in ["bind", "unbind", "new_id", "remove_id"] {
            write(&d.join(f), "");
        }
        let module = name.replace('-', "_");
        std::fs::create_dir_all(self.root.sys.join("module").join(module)).expect("fake dir");
    }

    /// `class/<name>/device` pointing at the function (`drm/card0`).
    pub fn link_class(&self, name: &str, bdf: &str) {
        let a: PciAddress = bdf.parse().expect("fake BDF");
        let dev = self.device_rel(a).expect("function added");
        let at = Path::new("class").join(name);
        link(
            &format!("{}{}", up(&at), dev.display()),
            &self.root.sys.join(&at).join("device"),
        );
    }

    /// Where a function's directory is, relative to sys.
    fn device_rel(&self, a: PciAddress) -> Option<PathBuf> {
        let l = std::fs::read_link(self.root.pci_device(a)).ok()?;
        Some(l.components().skip(3).collect())
    }

    /// Add a function.
    pub fn add(&self, f: &FakeFn) {
        let sys = &self.root.sys;
        let bdf = f.address.to_string();
        let rel = match f.parent {
            Some(p) => self.device_rel(p).expect("parent added first").join(&bdf),
            None => Path::new("devices")
                .join(format!("pci{:04x}:00", f.address.domain))
                .join(&bdf),
        };
        let dir = sys.join(&rel);
        let up_from_dev = up(&rel);
        write(&dir.join("vendor"), &format!("0x{:04x}\n", f.vendor));
        write(&dir.join("device"), &format!("0x{:04x}\n", f.device));
        write(&dir.join("class"), &format!("0x{:06x}\n", f.class));
        write(&dir.join("driver_override"), "(null)\n");
        write(&dir.join("reset_method"), "flr bus\n");
        write(&dir.join("config"), "");
        let res: String = f
            .resources
            .iter()
            .map(|(s, e, fl)| format!("0x{s:016x} 0x{e:016x} 0x{fl:016x}\n"))
            .collect();
        write(&dir.join("resource"), &res);
        link(
            &format!("../../../{}", rel.display()),
            &sys.join("bus/pci/devices").join(&bdf),
        );
        if let Some((total, num, vf_device)) = f.sriov {
            write(&dir.join("sriov_totalvfs"), &format!("{total}\n"));
            write(&dir.join("sriov_numvfs"), &format!("{num}\n"));
            write(&dir.join("sriov_drivers_autoprobe"), "1\n");
            write(&dir.join("sriov_offset"), "128\n");
            write(&dir.join("sriov_stride"), "2\n");
            write(&dir.join("sriov_vf_device"), &format!("{vf_device:x}\n"));
        }
        if let Some(g) = f.group {
            let gdir = sys.join("kernel/iommu_groups").join(g.to_string());
            write(&gdir.join("type"), "DMA\n");
            link(
                &format!("../../../../{}", rel.display()),
                &gdir.join("devices").join(&bdf),
            );
            link(
                &format!("{up_from_dev}kernel/iommu_groups/{g}"),
                &dir.join("iommu_group"),
            );
        }
        if let Some(n) = f.cdev {
            write(
                &dir.join(format!("vfio-dev/vfio{n}/dev")),
                &format!("511:{n}\n"),
            );
            write(&self.root.dev.join(format!("vfio/devices/vfio{n}")), "");
            self.node_mode(&format!("vfio/devices/vfio{n}"), 0o600);
        }
        if let Some(d) = &f.driver {
            self.bind(f.address, d);
        }
    }

    /// Bind an added function to `driver` (the links the kernel makes).
    pub fn bind(&self, a: PciAddress, driver: &str) {
        let rel = self.device_rel(a).expect("function added");
        let dir = self.root.sys.join(&rel);
        self.pci_driver(driver);
        link(
            &format!("{}bus/pci/drivers/{driver}", up(&rel)),
            &dir.join("driver"),
        );
        link(
            &format!("../../../../{}", rel.display()),
            &self.root.pci_driver(driver).join(a.to_string()),
        );
        if super::is_vfio_driver(driver, &dir) {
            if let Some(g) = link_name(&dir.join("iommu_group")) {
                if !self.root.dev.join("vfio").join(&g).exists() {
                    write(&self.root.dev.join("vfio").join(&g), "");
                    self.node_mode(&format!("vfio/{g}"), 0o600);
                }
            }
            if !self.root.dev.join("vfio/vfio").exists() {
                write(&self.root.dev.join("vfio/vfio"), "");
                self.node_mode("vfio/vfio", 0o666);
            }
        }
    }

    /// Drop an added function's driver (the links the kernel removes).
    pub fn unbind(&self, a: PciAddress) {
        let dev = self.root.pci_device(a);
        if let Some(d) = link_name(&dev.join("driver")) {
            let _ = std::fs::remove_file(self.root.pci_driver(&d).join(a.to_string()));
        }
        let _ = std::fs::remove_file(dev.join("driver"));
    }

    /// Set a node's mode under dev (`vfio/12`).
    pub fn node_mode(&self, rel: &str, mode: u32) {
        let p = self.root.dev.join(rel);
        if !p.exists() {
            write(&p, "");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A process `pid` named `comm` with fd `fd` open on `target` (a host
    /// path such as `/dev/vfio/12`, as `/proc/PID/fd/N` links read).
    pub fn process(&self, pid: u32, comm: &str, fds: &[(u32, &str)]) {
        self.proc_file(&format!("{pid}/comm"), &format!("{comm}\n"));
        for (fd, target) in fds {
            link(target, &self.root.proc.join(format!("{pid}/fd/{fd}")));
        }
    }

    /// Add VFs 0..n of `pf` (same bus, `sriov_offset` 128, stride 2), each
    /// in its own IOMMU group from `first_group`, and set `sriov_numvfs`.
    pub fn add_vfs(
        &self,
        pf: &str,
        n: u32,
        first_group: u32,
        driver: Option<&str>,
    ) -> Vec<PciAddress> {
        let pfa: PciAddress = pf.parse().expect("fake PF BDF");
        let pfdir = self.root.pci_device(pfa);
        let vf_device = read_opt(&pfdir.join("sriov_vf_device"))
            .and_then(|t| u16::from_str_radix(&t, 16).ok())
            .unwrap_or(0);
        let vendor = read_opt(&pfdir.join("vendor"))
            .and_then(|t| u16::from_str_radix(t.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let class = read_opt(&pfdir.join("class"))
            .and_then(|t| u32::from_str_radix(t.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let parent = self
            .device_rel(pfa)
            .and_then(|r| {
                r.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .filter(|n| !n.starts_with("pci"));
        let offset: u32 = read_opt(&pfdir.join("sriov_offset"))
            .and_then(|t| t.parse().ok())
            .unwrap_or(1);
        let stride: u32 = read_opt(&pfdir.join("sriov_stride"))
            .and_then(|t| t.parse().ok())
            .unwrap_or(1);
        let pf_devfn = u32::from(pfa.device) << 3 | u32::from(pfa.function);
        let mut out = Vec::new();
        for i in 0..n {
            let devfn = pf_devfn + offset + i * stride;
            let a = PciAddress {
                domain: pfa.domain,
                bus: pfa.bus + (devfn >> 8) as u8,
                device: ((devfn >> 3) & 31) as u8,
                function: (devfn & 7) as u8,
            };
            let mut f =
                FakeFn::new(&a.to_string(), vendor, vf_device, class).group(first_group + i);
            if let Some(p) = &parent {
                f = f.under(p);
            }
            if let Some(d) = driver {
                f = f.driver(d);
            }
            self.add(&f);
            let vdir = self.root.pci_device(a);
            link(&format!("../{pfa}"), &vdir.join("physfn"));
            link(&format!("../{a}"), &pfdir.join(format!("virtfn{i}")));
            out.push(a);
        }
        write(&pfdir.join("sriov_numvfs"), &format!("{n}\n"));
        out
    }

    /// Remove every VF of `pf` and set `sriov_numvfs` to 0.
    pub fn remove_vfs(&self, pf: PciAddress) {
        let pfdir = self.root.pci_device(pf);
        let vfs = super::pci::PciFunction::read(&self.root, pf)
            .ok()
            .and_then(|f| f.sriov)
            .map(|s| s.vfs)
            .unwrap_or_default();
        for (i, vf) in vfs.iter().enumerate() {
            self.unbind(*vf);
            let dev = self.root.pci_device(*vf);
            if let Some(g) = link_name(&dev.join("iommu_group")) {
                let _ = std::fs::remove_dir_all(self.root.sys.join("kernel/iommu_groups").join(g));
            }
            if let Ok(real) = std::fs::canonicalize(&dev) {
                let _ = std::fs::remove_dir_all(real);
            }
            let _ = std::fs::remove_file(&dev);
            let _ = std::fs::remove_file(pfdir.join(format!("virtfn{i}")));
        }
        write(&pfdir.join("sriov_numvfs"), "0\n");
    }

    /// The testbed's igb PF: a root port 0000:00:01.0 (pcieport, group 0)
    /// with the igb PF 0000:01:00.0 (8086:10c9, group 1, 7 VFs offered,
    /// autoprobe off) and `n` VFs (8086:10ca, unbound, groups 2...).
    pub fn igb_with_vfs(&self, n: u32) -> Vec<PciAddress> {
        self.add(
            &FakeFn::new("0000:00:01.0", 0x1b36, 0x000c, 0x060400)
                .driver("pcieport")
                .group(0),
        );
        self.add(
            &FakeFn::new("0000:01:00.0", 0x8086, 0x10c9, 0x020000)
                .under("0000:00:01.0")
                .driver("igb")
                .group(1)
                .sriov(7, 0x10ca),
        );
        self.sys_file(
            "bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe",
            "0\n",
        );
        self.add_vfs("0000:01:00.0", n, 2, None)
    }

    /// A Battlemage dGPU PF on the xe driver (0000:03:00.0, 8086:e20b,
    /// group 10, 12 VFs offered) with the 6.19 `sriov_admin` tree for
    /// `vfs` VFs (GuC default profile values).
    pub fn xe_dgpu(&self, vfs: u32) -> Vec<PciAddress> {
        self.add(
            &FakeFn::new("0000:00:06.0", 0x8086, 0xa74d, 0x060400)
                .driver("pcieport")
                .group(9),
        );
        self.add(
            &FakeFn::new("0000:03:00.0", 0x8086, 0xe20b, 0x030000)
                .under("0000:00:06.0")
                .driver("xe")
                .group(10)
                .sriov(12, 0xe20b),
        );
        self.module("xe", &[("max_vfs", "12"), ("force_execlist", "N")]);
        let admin = "bus/pci/devices/0000:03:00.0/sriov_admin";
        for f in ["exec_quantum_ms", "preempt_timeout_us", "sched_priority"] {
            self.sys_file(&format!("{admin}/.bulk_profile/{f}"), "");
        }
        self.sys_file(&format!("{admin}/pf/profile/exec_quantum_ms"), "0\n");
        self.sys_file(&format!("{admin}/pf/profile/preempt_timeout_us"), "0\n");
        self.sys_file(
            &format!("{admin}/pf/profile/sched_priority"),
            "[low] normal high\n",
        );
        for n in 1..=12 {
            self.sys_file(&format!("{admin}/vf{n}/profile/exec_quantum_ms"), "0\n");
            self.sys_file(&format!("{admin}/vf{n}/profile/preempt_timeout_us"), "0\n");
            let p = format!("{admin}/vf{n}/profile/sched_priority");
            self.sys_file(&p, "[low] normal\n");
            std::fs::set_permissions(
                self.root.sys.join(&p),
                std::fs::Permissions::from_mode(0o444),
            )
            .expect("chmod");
        }
        self.add_vfs("0000:03:00.0", vfs, 11, None)
    }

    /// An ADL/RPL iGPU PF on i915-sriov (0000:00:02.0, 8086:a780, group
    /// 0, 7 VFs offered) with `enable_guc` and `max_vfs` as given.
    pub fn i915_igpu(&self, enable_guc: &str, max_vfs: Option<&str>) {
        self.add(
            &FakeFn::new("0000:00:02.0", 0x8086, 0xa780, 0x030000)
                .driver("i915")
                .group(0)
                .sriov(7, 0xa780),
        );
        let mut params = vec![("enable_guc", enable_guc)];
        if let Some(m) = max_vfs {
            params.push(("max_vfs", m));
        }
        self.module("i915", &params);
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        if std::env::var_os("TESSERA_KEEP_FAKE").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The kernel's side of sysfs writes, for tests: see the module docs.
#[derive(Debug)]
pub struct FakeKernel<'a> {
    host: &'a FakeHost,
    /// Every write and modprobe, in order: (host path, value), with
    /// `("modprobe", module)` for module loads.
    pub log: Vec<(String, String)>,
    /// Writes to a path ending in the key fail with this errno.
    pub fail: HashMap<String, i32>,
    /// `modprobe` fails.
    pub modprobe_fails: bool,
}

impl<'a> FakeKernel<'a> {
    /// A kernel for `host`.
    pub fn new(host: &'a FakeHost) -> Self {
        Self {
            host,
            log: Vec::new(),
            fail: HashMap::new(),
            modprobe_fails: false,
        }
    }

    /// The log as `(path, value)` string pairs, paths as the host names them.
    pub fn writes(&self) -> Vec<(&str, &str)> {
        self.log
            .iter()
            .map(|(p, v)| (p.as_str(), v.as_str()))
            .collect()
    }
}

impl Kernel for FakeKernel<'_> {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        let shown = self.host.root.display(path).display().to_string();
        self.log.push((shown.clone(), value.to_string()));
        if let Some((_, errno)) = self.fail.iter().find(|(k, _)| shown.ends_with(k.as_str())) {
            return Err(io::Error::from_raw_os_error(*errno));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dev_of = |v: &str| {
            v.trim()
                .parse::<PciAddress>()
                .map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))
        };
        match name {
            "unbind" => {
                let a = dev_of(value)?;
                if !self.host.root.pci_device(a).join("driver").exists() {
                    return Err(io::Error::from_raw_os_error(libc::ENODEV));
                }
                self.host.unbind(a);
            }
            "drivers_probe" => {
                let a = dev_of(value)?;
                let dev = self.host.root.pci_device(a);
                let ovr = read_opt(&dev.join("driver_override"))
                    .filter(|s| !s.is_empty() && s != "(null)");
                if let Some(d) = ovr {
                    if self.host.root.pci_driver(&d).is_dir() && !dev.join("driver").exists() {
                        self.host.bind(a, &d);
                    }
                }
            }
            "sriov_numvfs" => {
                let n: u32 = value
                    .trim()
                    .parse()
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                let pfdir = path.parent().unwrap_or(Path::new("/"));
                let pf: PciAddress = pfdir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
                let cur: u32 = read_opt(path).and_then(|t| t.parse().ok()).unwrap_or(0);
                if n != 0 && cur != 0 && n != cur {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
                if n == 0 {
                    self.host.remove_vfs(pf);
                } else if cur == 0 {
                    let next = std::fs::read_dir(self.host.root.sys.join("kernel/iommu_groups"))
                        .map(|rd| {
                            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                                .max()
                                .unwrap_or(0)
                                + 1
                        })
                        .unwrap_or(1);
                    self.host.add_vfs(&pf.to_string(), n, next, None);
                }
            }
            "driver_override" => {
                let v = value.trim();
                std::fs::write(
                    path,
                    if v.is_empty() {
                        "(null)\n".to_string()
                    } else {
                        format!("{v}\n")
                    },
                )?;
            }
            _ => std::fs::write(path, value)?,
        }
        Ok(())
    }

    fn modprobe(&mut self, module: &str) -> Result<(), String> {
        self.log.push(("modprobe".into(), module.into()));
        if self.modprobe_fails {
            return Err("exit status 1: module not found".into());
        }
        self.host.pci_driver(&module.replace('_', "-"));
        Ok(())
    }
}
