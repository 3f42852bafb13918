//! The host side of PCI passthrough: reading and changing host PCI state
//! through sysfs.
//!
//! Every path is rooted at a [`HostRoot`] (`/sys`, `/dev`, `/proc` by
//! default), so tests build fake trees in a temporary directory
//! ([`fake`]) and `TESSERA_HOST_ROOT=DIR` points the `tessera` binary at
//! one. Symlinks in sysfs are relative, as the kernel makes them, and are
//! resolved inside the root: nothing here follows a path out of it.
//!
//! - [`pci`]: what a PCI function is (IDs, driver, IOMMU group, SR-IOV).
//! - [`preflight`]: everything that stops passthrough, checked before any
//!   VFIO ioctl ([`check_passthrough`]).
//! - [`ops`]: the changes (`sriov_numvfs`, `driver_override`, unbind,
//!   `drivers_probe`, Xe scheduling profiles), written through a [`Kernel`]
//!   so tests see the exact sequence.
//! - [`lock`]: one VM per VF ([`claim_vf`], an flock under `/run/tessera`).
//! - [`pool`]: `--device vf=PF`, a free VF of a PF for one VM ([`take_vf`]).
//! - [`intel`]: Intel GPU names and the i915/xe SR-IOV knobs.

pub mod checks;
pub mod fake;
pub mod intel;
pub mod lock;
pub mod ops;
pub mod pci;
pub mod pool;
pub mod preflight;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use lock::{VfClaim, claim_vf, lock_owner, vf_lock_path};
pub use ops::{Kernel, SysfsKernel};
pub use pci::{PciFunction, Sriov, list_functions, resolve_function};
pub use pool::take_vf;
pub use preflight::{
    PassthroughTarget, Preflight, check_passthrough, group_holders, passthrough_problems,
};

/// The environment variable that roots every host path at `DIR`
/// (`DIR/sys`, `DIR/dev`, `DIR/proc`, and `DIR/run`, `DIR/lib`).
pub const HOST_ROOT_ENV: &str = "TESSERA_HOST_ROOT";

/// Where the host's sysfs, device nodes and procfs are.
///
/// Two more places are derived from `sys`'s parent directory: `run/`
/// (VF locks, [`HostRoot::run_dir`]) and `lib/modules/`
/// ([`HostRoot::modules_dir`]); for the real host that is `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    /// sysfs, normally `/sys`.
    pub sys: PathBuf,
    /// Device nodes, normally `/dev`.
    pub dev: PathBuf,
    /// procfs, normally `/proc`.
    pub proc: PathBuf,
}

impl HostRoot {
    /// The real host: `/sys`, `/dev`, `/proc`.
    pub fn system() -> Self {
        Self::under(Path::new("/"))
    }

    /// `DIR/sys`, `DIR/dev`, `DIR/proc`.
    pub fn under(dir: &Path) -> Self {
        Self {
            sys: dir.join("sys"),
            dev: dir.join("dev"),
            proc: dir.join("proc"),
        }
    }

    /// [`HostRoot::under`] `$TESSERA_HOST_ROOT` when it is set and not
    /// empty, else [`HostRoot::system`].
    pub fn from_env() -> Self {
        match std::env::var_os(HOST_ROOT_ENV) {
            Some(d) if !d.is_empty() => Self::under(Path::new(&d)),
            _ => Self::system(),
        }
    }

    /// True for the real host (`/sys`): only then do the tools run
    /// `modprobe`.
    pub fn is_system(&self) -> bool {
        *self == Self::system()
    }

    fn base(&self) -> &Path {
        self.sys.parent().unwrap_or(Path::new("/"))
    }

    /// Runtime state, normally `/run`.
    pub fn run_dir(&self) -> PathBuf {
        self.base().join("run")
    }

    /// Kernel modules, normally `/lib/modules`.
    pub fn modules_dir(&self) -> PathBuf {
        self.base().join("lib/modules")
    }

    /// `/sys/bus/pci/devices/<bdf>` under this root.
    pub fn pci_device(&self, addr: PciAddress) -> PathBuf {
        self.sys.join("bus/pci/devices").join(addr.to_string())
    }

    /// `/sys/bus/pci/drivers/<name>` under this root.
    pub fn pci_driver(&self, name: &str) -> PathBuf {
        self.sys.join("bus/pci/drivers").join(name)
    }

    /// Map a host path (`/sys/...`, `/dev/...`, `/proc/...`) into this
    /// root; other paths are returned unchanged.
    pub fn map(&self, path: &Path) -> PathBuf {
        for (prefix, to) in [
            ("/sys", &self.sys),
            ("/dev", &self.dev),
            ("/proc", &self.proc),
        ] {
            if let Ok(rest) = path.strip_prefix(prefix) {
                return if rest.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                };
            }
        }
        path.to_path_buf()
    }

    /// The host path a path under this root stands for (the inverse of
    /// [`HostRoot::map`]), for messages: `DIR/dev/vfio/12` is `/dev/vfio/12`.
    pub fn display(&self, path: &Path) -> PathBuf {
        for (from, prefix) in [
            (&self.sys, "/sys"),
            (&self.dev, "/dev"),
            (&self.proc, "/proc"),
        ] {
            if let Ok(rest) = path.strip_prefix(from) {
                return Path::new(prefix).join(rest);
            }
        }
        path.to_path_buf()
    }
}

/// A PCI function address (domain:bus:device.function), e.g. `0000:01:10.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment); above 0xffff for VMD domains.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0-31.
    pub device: u8,
    /// Function number, 0-7.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = HostError;
    /// `DDDD:BB:DD.F` or `BB:DD.F` (domain 0), hexadecimal.
    fn from_str(s: &str) -> Result<Self, HostError> {
        let bad = || HostError::BadSpec(s.to_string());
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0", *b, *s),
            _ => return Err(bad()),
        };
        let hex = |t: &str, max_len: usize| {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
                None
            } else {
                u32::from_str_radix(t, 16).ok()
            }
        };
        let domain = hex(domain, 8).ok_or_else(bad)?;
        let bus = hex(bus, 2).ok_or_else(bad)? as u8;
        let device = hex(device, 2).filter(|&d| d < 32).ok_or_else(bad)? as u8;
        let function = hex(function, 1).filter(|&f| f < 8).ok_or_else(bad)? as u8;
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }
}

/// One line per address, for messages: `0000:01:00.1 (snd_hda_intel), ...`.
fn join_with_drivers(members: &[(PciAddress, Option<String>)]) -> String {
    members
        .iter()
        .map(|(a, d)| format!("{a} ({})", d.as_deref().unwrap_or("no driver")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn nearby_text(nearby: &[PciAddress]) -> String {
    if nearby.is_empty() {
        String::new()
    } else {
        format!(
            " (on that bus: {})",
            nearby
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn holders_text(holders: &[(u32, String)]) -> String {
    holders
        .iter()
        .map(|(pid, comm)| format!("pid {pid} ({comm})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A device node and who may open it, for [`HostError::PermissionDenied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAccess {
    /// The node as the host names it (`/dev/vfio/12`).
    pub path: PathBuf,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl fmt::Display for NodeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (owner {}:{}, mode {:04o})",
            self.path.display(),
            self.uid,
            self.gid,
            self.mode & 0o7777
        )
    }
}

/// Host PCI problems: each names what is wrong and what to do, in one line.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Not a BDF and not a sysfs path.
    #[error(
        "'{0}' is not a PCI function: give an address such as 0000:01:10.0 or 01:10.0, or a path such as /sys/bus/pci/devices/0000:01:10.0"
    )]
    BadSpec(String),
    /// The address names no function on this host.
    #[error(
        "no PCI function {address} on this host{}: list them with 'tessera vf list' or 'lspci -D'",
        nearby_text(nearby)
    )]
    NoSuchFunction {
        /// What was asked for.
        address: PciAddress,
        /// Functions on the same bus.
        nearby: Vec<PciAddress>,
    },
    /// A path that is not a PCI device in sysfs.
    #[error(
        "{} is not a PCI device in sysfs: give a path under /sys/bus/pci/devices or an address from 'lspci -D'",
        .0.display()
    )]
    NotPciPath(PathBuf),
    /// The IOMMU is not on, or the function is not behind one.
    #[error("{}", iommu_off_text(.reason, .param, *.on_cmdline))]
    IommuOff {
        /// What shows it ("no IOMMU in /sys/class/iommu", ...).
        reason: String,
        /// What to add to the kernel command line.
        param: &'static str,
        /// The command line already has it (so the firmware has it off).
        on_cmdline: bool,
    },
    /// The function is not bound to a VFIO driver.
    #[error(
        "{address} is bound to {}, not vfio-pci: run 'tessera vf bind {address}', or by hand: echo vfio-pci > /sys/bus/pci/devices/{address}/driver_override; {}echo {address} > /sys/bus/pci/drivers_probe",
        driver.as_deref().unwrap_or("no driver"),
        if driver.is_some() { format!("echo {address} > /sys/bus/pci/devices/{address}/driver/unbind; ") } else { String::new() }
    )]
    NotVfioBound {
        /// The function.
        address: PciAddress,
        /// Its current driver.
        driver: Option<String>,
    },
    /// Another member of the IOMMU group is used by a host driver.
    #[error(
        "IOMMU group {group} of {address} is not viable: {} still used by host drivers; bind them to vfio-pci too (tessera vf bind {}) or move the device to a slot with its own IOMMU group",
        join_with_drivers(members),
        members.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>().join(" ")
    )]
    GroupNotViable {
        /// The function.
        address: PciAddress,
        /// Its IOMMU group.
        group: u32,
        /// The members in host use, with their drivers.
        members: Vec<(PciAddress, Option<String>)>,
    },
    /// The VFIO device nodes cannot be opened by this user.
    #[error(
        "permission denied for uid {uid}: {}; run as root, or give the user the nodes (chown {uid} FILE, or a udev rule such as SUBSYSTEM==\"vfio\", OWNER=\"USER\" in /etc/udev/rules.d/)",
        nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    )]
    PermissionDenied {
        /// The caller's uid.
        uid: u32,
        /// The nodes it cannot open read-write.
        nodes: Vec<NodeAccess>,
    },
    /// VFIO pins all guest RAM; the lock limit is below it.
    #[error(
        "RLIMIT_MEMLOCK is {} but VFIO must lock all {} of guest RAM: raise it (ulimit -l unlimited; LimitMEMLOCK=infinity in a systemd unit; 'USER hard memlock unlimited' in /etc/security/limits.conf) or run with CAP_IPC_LOCK",
        crate::config::format_size(*limit),
        crate::config::format_size(*needed)
    )]
    MemlockTooLow {
        /// The current soft limit in bytes.
        limit: u64,
        /// The guest RAM.
        needed: u64,
    },
    /// Another process has the group (or device) open.
    #[error(
        "{} ({address}) is already open in {}: a VFIO group or device serves one process at a time; stop it first",
        node.display(),
        holders_text(holders)
    )]
    Busy {
        /// The function.
        address: PciAddress,
        /// The node as the host names it.
        node: PathBuf,
        /// Who holds it: (pid, command).
        holders: Vec<(u32, String)>,
    },
    /// The function is an SR-IOV physical function.
    #[error(
        "{address} is an SR-IOV physical function{}: pass one of its VFs instead (tessera vf list; tessera vf create --pf {address} --count N); the PF must stay with the host driver that manages its VFs",
        if *numvfs > 0 { format!(" with {numvfs} VFs enabled") } else if *gpu { " of a GPU".to_string() } else { String::new() }
    )]
    IsPf {
        /// The function.
        address: PciAddress,
        /// VFs enabled now.
        numvfs: u32,
        /// A display-class function.
        gpu: bool,
    },
    /// `--pf` names a function without SR-IOV.
    #[error(
        "{0} is not an SR-IOV physical function (no sriov_totalvfs, or it is 0): give a PF's address; 'tessera vf list' shows them"
    )]
    NotSriovPf(PciAddress),
    /// More VFs than the PF offers.
    #[error(
        "{flag} {count} is more than {address} offers (sriov_totalvfs {total}){}",
        if *gpu { "; for Intel GPUs the driver's max_vfs (xe.max_vfs or i915.max_vfs on the kernel command line) limits this" } else { "" }
    )]
    TooManyVfs {
        /// The option that asked (`--count`, `--vf-create`).
        flag: &'static str,
        /// The PF.
        address: PciAddress,
        /// What was asked for.
        count: u32,
        /// `sriov_totalvfs`.
        total: u32,
        /// A display-class PF.
        gpu: bool,
    },
    /// `vf create --count 0`.
    #[error("--count must be at least 1: 'tessera vf destroy --pf {0}' removes the VFs")]
    ZeroCount(PciAddress),
    /// The PF has no driver, so the kernel cannot enable its VFs.
    #[error(
        "{0} has no driver bound, and only the PF's own driver (igb, xe, i915 ...) can enable VFs: bind it (echo {0} > /sys/bus/pci/drivers_probe) and try again"
    )]
    NoPfDriver(PciAddress),
    /// A VF (or its group) is in use by a VM or another process.
    #[error("{address} is in use by {by}: stop that VM or process first")]
    InUse {
        /// The function.
        address: PciAddress,
        /// Who: "tessera VM 'x' (pid 1234)", "pid 99 (qemu)".
        by: String,
    },
    /// A driver needed for binding is not loaded.
    #[error("{}", driver_missing_text(.driver, .module, *.available))]
    DriverMissing {
        /// The driver (`vfio-pci`).
        driver: String,
        /// Its module (`vfio_pci`).
        module: String,
        /// The module exists for the running kernel.
        available: bool,
    },
    /// `modprobe` failed.
    #[error(
        "modprobe {module} failed: {reason}; check that the module is installed for this kernel (modinfo {module})"
    )]
    Modprobe {
        /// The module.
        module: String,
        /// Its message or exit status.
        reason: String,
    },
    /// The kernel did not bind the function to the driver asked for.
    #[error(
        "the kernel did not bind {address} to {wanted} (its driver is now {}): see the end of 'dmesg' for why",
        now.as_deref().unwrap_or("none")
    )]
    BindFailed {
        /// The function.
        address: PciAddress,
        /// The driver asked for.
        wanted: String,
        /// The driver it has now.
        now: Option<String>,
    },
    /// A sysfs write was refused.
    #[error("cannot write '{value}' to {}: {}{hint}", path.display(), crate::config::io_reason(source))]
    Write {
        /// The attribute.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The kernel's answer.
        source: io::Error,
        /// What to do ("; run as root", ...), empty when nothing specific.
        hint: String,
    },
    /// A sysfs or procfs read failed.
    #[error("cannot read {}: {}", path.display(), crate::config::io_reason(source))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file has contents this code does not understand.
    #[error("unexpected contents in {}: '{text}' ({what} expected)", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
        /// What was expected.
        what: &'static str,
    },
    /// The PF's driver has no Xe `sriov_admin` tree.
    #[error(
        "{pf} (driver {}) has no sriov_admin directory: VF scheduling profiles are set through the xe driver's /sys/bus/pci/drivers/xe/{pf}/sriov_admin, in Linux 6.19 and later, on a PF with SR-IOV enabled (xe.max_vfs=N){}",
        driver.as_deref().unwrap_or("none"),
        if driver.as_deref() == Some("i915") { "; i915-sriov keeps its own knobs under /sys/class/drm/card*/iov/" } else { "" }
    )]
    NoSriovAdmin {
        /// The PF.
        pf: PciAddress,
        /// Its driver.
        driver: Option<String>,
    },
    /// `profile` on a function that is neither a VF nor an SR-IOV PF.
    #[error("{0} is neither a VF nor an SR-IOV PF: give a VF's address (tessera vf list)")]
    NotSriovFunction(PciAddress),
    /// The VF's priority file is read-only.
    #[error(
        "the scheduling priority of {address} cannot be changed ({} is read-only: the GuC firmware lets only the PF's own priority be set); the VFs' common priority is sriov_admin/.bulk_profile/sched_priority",
        path.display()
    )]
    PriorityReadOnly {
        /// The VF.
        address: PciAddress,
        /// The file.
        path: PathBuf,
    },
    /// A priority the function does not offer.
    #[error("--priority {wanted} is not offered for {address}: choose one of {}", available.join(", "))]
    PriorityUnavailable {
        /// The function.
        address: PciAddress,
        /// What was asked for.
        wanted: String,
        /// What the kernel lists.
        available: Vec<String>,
    },
    /// Bound to VFIO, but the group's node is not in /dev.
    #[error(
        "{} does not exist although {address} is bound to VFIO: is devtmpfs mounted on /dev (and udev running)? 'udevadm trigger' recreates it",
        path.display()
    )]
    MissingNode {
        /// The node as the host names it.
        path: PathBuf,
        /// The function.
        address: PciAddress,
    },
    /// MSIs are not remapped, so VFIO refuses to attach a group.
    #[error(
        "interrupt remapping is off ({reason}): VFIO refuses to assign devices without it; enable it in the firmware setup (VT-d / AMD-Vi with interrupt remapping, x2APIC) and drop any intremap=off, or, accepting that a guest could forge interrupts, echo Y > /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts (iommufd: /sys/module/iommufd/parameters/allow_unsafe_interrupts)"
    )]
    InterruptRemappingOff {
        /// What shows it.
        reason: String,
    },
    /// No PCI address space for the VFs' BARs.
    #[error(
        "{address} has SR-IOV but {what}: the BIOS reserved no PCI space for VF BARs; enable SR-IOV (and Above 4G Decoding / Resizable BAR) in the firmware setup, or boot with pci=realloc"
    )]
    VfBarsUnassigned {
        /// The PF (or VF).
        address: PciAddress,
        /// "no VF BAR is assigned", "VF 0000:00:02.1 has no BAR assigned".
        what: String,
    },
    /// The GPU driver does not use GuC submission, which SR-IOV needs.
    #[error(
        "{address} ({driver}) runs without GuC submission, and its SR-IOV needs it: {fix}, then reboot"
    )]
    GucSubmissionOff {
        /// The PF.
        address: PciAddress,
        /// Its driver.
        driver: String,
        /// The kernel parameter to change.
        fix: &'static str,
    },
    /// The GPU driver was told to offer no VFs.
    #[error(
        "{address} ({driver}) is limited to 0 VFs by {param}=0: boot with {param}=N (up to sriov_totalvfs), e.g. {param}=7"
    )]
    MaxVfsZero {
        /// The PF.
        address: PciAddress,
        /// Its driver.
        driver: String,
        /// `xe.max_vfs` or `i915.max_vfs`.
        param: &'static str,
    },
    /// A kernel module needed for passthrough is not in this kernel.
    #[error("{0}")]
    ModuleMissing(String),
    /// `--device vf=PF` on a PF with no VFs, and no `--vf-create`.
    #[error(
        "PF {pf} has no VFs enabled (sriov_numvfs 0 of {total}): add --vf-create N to create N of them, or run 'tessera vf create --pf {pf} --count N' first"
    )]
    NoVfs {
        /// The PF.
        pf: PciAddress,
        /// `sriov_totalvfs`.
        total: u32,
    },
    /// `--device vf=PF`: every VF of the PF is taken.
    #[error("{}", no_free_vf_text(*.pf, .users, *.total))]
    NoFreeVf {
        /// The PF.
        pf: PciAddress,
        /// Each VF and who uses it.
        users: Vec<(PciAddress, String)>,
        /// `sriov_totalvfs`.
        total: u32,
    },
    /// `--device vf=` names a VF instead of its PF.
    #[error(
        "{vf} is a VF of PF {pf}, not a PF: vf= takes the PF and picks a free VF of it (--device vf={pf}); to pass this VF itself, use --device {vf}"
    )]
    VfNotPf {
        /// The VF given.
        vf: PciAddress,
        /// Its PF.
        pf: PciAddress,
    },
    /// `sriov_numvfs` was written but no VF showed up.
    #[error(
        "{pf}: sriov_numvfs was set to {count} but no VF appeared (no virtfnN links): see the end of 'dmesg' for why the PF's driver did not enable them"
    )]
    VfsDidNotAppear {
        /// The PF.
        pf: PciAddress,
        /// What was written.
        count: u32,
    },
    /// Another tessera kept the PF's creation lock too long.
    #[error(
        "another process has held {} for {secs}s while creating VFs on {pf}: wait for it to finish, or find it with 'fuser -v {}'",
        path.display(),
        path.display()
    )]
    PfLockTimeout {
        /// The PF.
        pf: PciAddress,
        /// The lock file, as the host names it.
        path: PathBuf,
        /// How long this process waited.
        secs: u64,
    },
    /// A lock under /run/tessera could not be made.
    #[error("cannot lock {}: {}; /run/tessera must be writable (run as root, or create it for this user)", path.display(), crate::config::io_reason(source))]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn no_free_vf_text(pf: PciAddress, users: &[(PciAddress, String)], total: u32) -> String {
    let who = users
        .iter()
        .map(|(a, by)| format!("{a} by {by}"))
        .collect::<Vec<_>>()
        .join(", ");
    let n = users.len();
    if (n as u32) < total {
        format!(
            "no free VF on PF {pf}: all {n} VFs are in use ({who}): stop one of those VMs, or, once none of them runs, enable more with 'tessera vf create --pf {pf} --count N' (up to {total})"
        )
    } else {
        format!(
            "no free VF on PF {pf}: all {n} VFs are in use ({who}) and the PF offers no more: stop one of those VMs first"
        )
    }
}

fn iommu_off_text(reason: &str, param: &str, on_cmdline: bool) -> String {
    if on_cmdline {
        format!(
            "the IOMMU is off ({reason}) although the kernel command line asks for it: enable VT-d or AMD-Vi (IOMMU) in the firmware setup and reboot"
        )
    } else {
        format!(
            "the IOMMU is off ({reason}): add '{param}' to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
        )
    }
}

fn driver_missing_text(driver: &str, module: &str, available: bool) -> String {
    if available {
        format!(
            "the {driver} driver is not loaded (no /sys/bus/pci/drivers/{driver}): run 'modprobe {module}' as root"
        )
    } else {
        format!(
            "the {driver} driver is not loaded and the running kernel has no {module} module: install a kernel built with it (or the package that provides it), or choose another --driver"
        )
    }
}

impl HostError {
    /// The exit status for the `tessera vf` tools: 1 when the kernel
    /// refused a change, 2 for everything the user can fix first.
    pub fn exit_code(&self) -> u8 {
        match self {
            HostError::Write { .. }
            | HostError::BindFailed { .. }
            | HostError::Modprobe { .. }
            | HostError::VfsDidNotAppear { .. } => crate::EXIT_FAILURE,
            _ => crate::EXIT_USAGE,
        }
    }
}

/// Read a sysfs attribute, trimmed.
pub(crate) fn read_attr(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| HostError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Read an attribute if it exists (`None` when missing or unreadable).
pub(crate) fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Parse `0x8086`-style hex.
pub(crate) fn parse_hex(path: &Path, text: &str) -> Result<u32, HostError> {
    let t = text.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).map_err(|_| HostError::Parse {
        path: path.to_path_buf(),
        text: t.to_string(),
        what: "a hexadecimal number",
    })
}

/// The last component of a symlink's target (`../../../bus/pci/drivers/igb`
/// gives `igb`); `None` when there is no such link.
pub(crate) fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// True for drivers that hand the device to user space through VFIO:
/// vfio-pci itself, its variant drivers (`xe-vfio-pci`, `mlx5_vfio_pci`,
/// ...), or any driver that made a `vfio-dev` node for the device.
pub fn is_vfio_driver(driver: &str, sysfs: &Path) -> bool {
    driver == "vfio-pci"
        || driver.ends_with("-vfio-pci")
        || driver.ends_with("_vfio_pci")
        || sysfs.join("vfio-dev").is_dir()
}

/// Drivers that may sit in an IOMMU group next to a passed-through device
/// (the kernel's own list: VFIO drivers, pci-stub, and PCIe port drivers
/// on bridges).
pub fn is_group_safe_driver(driver: Option<&str>, sysfs: &Path) -> bool {
    match driver {
        None => true,
        Some("pci-stub" | "pcieport") => true,
        Some(d) => is_vfio_driver(d, sysfs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_or_without_a_domain() {
        let a: PciAddress = "0000:01:10.0".parse().unwrap();
        assert_eq!(a.to_string(), "0000:01:10.0");
        let b: PciAddress = "01:10.2".parse().unwrap();
        assert_eq!(b.to_string(), "0000:01:10.2");
        let c: PciAddress = "10000:e1:1f.7".parse().unwrap();
        assert_eq!(c.to_string(), "10000:e1:1f.7");
        for bad in [
            "",
            "01:10",
            "0000:01:20.0",
            "0000:01:10.8",
            "x:01:10.0",
            "1:2:3:4.0",
            "01:10.0x",
        ] {
            let e = bad.parse::<PciAddress>().unwrap_err();
            assert!(matches!(e, HostError::BadSpec(_)), "{bad}");
            assert!(e.to_string().contains("0000:01:10.0"), "{e}");
        }
    }

    #[test]
    fn a_fake_root_maps_host_paths_into_itself_and_back() {
        let r = HostRoot::under(Path::new("/tmp/x"));
        assert_eq!(
            r.map(Path::new("/sys/bus/pci")),
            Path::new("/tmp/x/sys/bus/pci")
        );
        assert_eq!(r.map(Path::new("/dev")), Path::new("/tmp/x/dev"));
        assert_eq!(r.map(Path::new("/etc/passwd")), Path::new("/etc/passwd"));
        assert_eq!(
            r.display(Path::new("/tmp/x/dev/vfio/3")),
            Path::new("/dev/vfio/3")
        );
        assert_eq!(r.run_dir(), Path::new("/tmp/x/run"));
        assert_eq!(HostRoot::system().run_dir(), Path::new("/run"));
        assert_eq!(HostRoot::system().modules_dir(), Path::new("/lib/modules"));
        assert!(HostRoot::system().is_system() && !r.is_system());
    }

    #[test]
    fn vfio_variant_drivers_count_as_vfio() {
        let p = Path::new("/nonexistent");
        assert!(is_vfio_driver("vfio-pci", p));
        assert!(is_vfio_driver("xe-vfio-pci", p));
        assert!(!is_vfio_driver("igbvf", p));
        assert!(is_group_safe_driver(Some("pcieport"), p));
        assert!(is_group_safe_driver(None, p));
        assert!(!is_group_safe_driver(Some("snd_hda_intel"), p));
    }

    #[test]
    fn every_error_is_one_line() {
        let a: PciAddress = "01:00.0".parse().unwrap();
        let errors = [
            HostError::NotVfioBound {
                address: a,
                driver: Some("i915".into()),
            },
            HostError::GroupNotViable {
                address: a,
                group: 3,
                members: vec![(a, Some("snd_hda_intel".into()))],
            },
            HostError::IsPf {
                address: a,
                numvfs: 2,
                gpu: true,
            },
        ];
        for e in errors {
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
    }
}
