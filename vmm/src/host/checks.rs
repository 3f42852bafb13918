//! `tessera vf check`: the passthrough preflight plus host-wide problems
//! (interrupt remapping, modules, PF driver knobs, VF BAR space), each as
//! one finding with its fix.

use super::intel;
use super::ops::module_available;
use super::pci::{PciFunction, list_functions};
use super::preflight::{
    can_open_rw, euid, has_cap_ipc_lock, iommu_off, iommu_units, memlock_limit, memlock_problem,
    passthrough_problems,
};
use super::{HostError, HostRoot, NodeAccess, PassthroughTarget, PciAddress, read_opt};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Stops passthrough.
    Error,
    /// Worth knowing; passthrough can still work.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem: a stable check name, its severity and the one-line
/// message with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `iommu`, `interrupt-remapping`, `driver`, ... (see [`check_name`]).
    pub check: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
}

impl Finding {
    fn error(e: &HostError) -> Self {
        Self {
            check: check_name(e),
            severity: Severity::Error,
            message: e.to_string(),
        }
    }

    fn warning(check: &'static str, message: String) -> Self {
        Self {
            check,
            severity: Severity::Warning,
            message,
        }
    }
}

/// The stable check name of an error, as `vf check --json` reports it.
pub fn check_name(e: &HostError) -> &'static str {
    use HostError as E;
    match e {
        E::BadSpec(_) | E::NoSuchFunction { .. } | E::NotPciPath(_) => "function",
        E::IsPf { .. } => "sriov-pf",
        E::IommuOff { .. } => "iommu",
        E::InterruptRemappingOff { .. } => "interrupt-remapping",
        E::NotVfioBound { .. } => "driver",
        E::GroupNotViable { .. } => "iommu-group",
        E::PermissionDenied { .. } | E::MissingNode { .. } => "permissions",
        E::Busy { .. } | E::InUse { .. } => "busy",
        E::MemlockTooLow { .. } => "memlock",
        E::VfBarsUnassigned { .. } => "vf-bars",
        E::GucSubmissionOff { .. } | E::MaxVfsZero { .. } => "gpu-driver",
        E::ModuleMissing(_) | E::DriverMissing { .. } | E::Modprobe { .. } => "modules",
        _ => "host",
    }
}

/// Everything `vf check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// The function checked, when one was given and it exists.
    pub function: Option<PciAddress>,
    /// Its passthrough target, when nothing stops it.
    pub target: Option<PassthroughTarget>,
    /// Errors and warnings, in check order.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// No errors (warnings allowed).
    pub fn ready(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Whether MSIs are remapped by the IOMMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remapping {
    /// On.
    On,
    /// Off, and what shows it.
    Off(String),
    /// Cannot tell from sysfs/procfs, and why.
    Unknown(String),
}

/// Interrupt remapping, without dmesg: Intel's ecap bit 3 (IR) of every
/// DMAR unit in `/sys/class/iommu/dmar*/intel-iommu/ecap` and
/// `intremap=off` on the command line; elsewhere (AMD's IOMMU has no IR
/// bit in its `features`), whether `/proc/interrupts` shows remapped
/// (`IR-`) MSI chips.
pub fn interrupt_remapping(root: &HostRoot) -> Remapping {
    let cmdline = read_opt(&root.proc.join("cmdline")).unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "intremap=off") {
        return Remapping::Off("intremap=off on the kernel command line".into());
    }
    let dmars: Vec<String> = iommu_units(root)
        .into_iter()
        .filter(|u| u.starts_with("dmar"))
        .collect();
    if !dmars.is_empty() {
        for u in &dmars {
            let p = root
                .sys
                .join("class/iommu")
                .join(u)
                .join("intel-iommu/ecap");
            let ecap =
                read_opt(&p).and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
            match ecap {
                Some(e) if e & (1 << 3) == 0 => {
                    return Remapping::Off(format!(
                        "{u} has no interrupt remapping: ecap {e:x} has bit 3 (IR) clear"
                    ));
                }
                Some(_) => {}
                None => {
                    return Remapping::Unknown(format!(
                        "cannot read {}",
                        root.display(&p).display()
                    ));
                }
            }
        }
        return Remapping::On;
    }
    let ints = read_opt(&root.proc.join("interrupts")).unwrap_or_default();
    if ints.contains("IR-PCI") || ints.contains("IR-IO-APIC") {
        Remapping::On
    } else if ints.contains("PCI-MSI") {
        Remapping::Off("MSIs in /proc/interrupts are not remapped (no IR- interrupt chips)".into())
    } else {
        Remapping::Unknown("no MSI in /proc/interrupts to tell from".into())
    }
}

/// `allow_unsafe_interrupts` of vfio_iommu_type1 or iommufd is set.
pub fn unsafe_interrupts_allowed(root: &HostRoot) -> bool {
    ["vfio_iommu_type1", "iommufd"].iter().any(|m| {
        read_opt(
            &root
                .sys
                .join("module")
                .join(m)
                .join("parameters/allow_unsafe_interrupts"),
        )
        .is_some_and(|v| v == "Y" || v == "1")
    })
}

/// `errors`: report remapping off as an error (the preflight already did
/// when a function was checked).
fn remapping_findings(root: &HostRoot, errors: bool, out: &mut Vec<Finding>) {
    match interrupt_remapping(root) {
        Remapping::On => {}
        Remapping::Off(reason) if unsafe_interrupts_allowed(root) => out.push(Finding::warning(
            "interrupt-remapping",
            format!(
                "interrupt remapping is off ({reason}), and allow_unsafe_interrupts is set: passthrough works, but a guest could forge interrupts; enable remapping in the firmware setup to close that"
            ),
        )),
        Remapping::Off(reason) => {
            if errors {
                out.push(Finding::error(&HostError::InterruptRemappingOff { reason }));
            }
        }
        Remapping::Unknown(why) => out.push(Finding::warning(
            "interrupt-remapping",
            format!("cannot tell whether interrupt remapping is on ({why}): 'dmesg | grep -i remapping' shows it"),
        )),
    }
}

fn module_findings(root: &HostRoot, out: &mut Vec<Finding>) {
    if !root.pci_driver("vfio-pci").is_dir() {
        if module_available(root, "vfio_pci") {
            out.push(Finding::warning(
                "modules",
                "vfio-pci is not loaded yet: 'tessera vf bind' loads it (or modprobe vfio-pci)"
                    .into(),
            ));
        } else {
            out.push(Finding::error(&HostError::ModuleMissing(
                "the running kernel has no vfio-pci driver (CONFIG_VFIO_PCI): install a kernel built with it".into(),
            )));
        }
    }
    let xe_pf = list_functions(root)
        .unwrap_or_default()
        .into_iter()
        .any(|a| {
            PciFunction::read(root, a).is_ok_and(|f| {
                f.driver.as_deref() == Some("xe")
                    && f.is_pf()
                    && intel::xe_vfio_supports(f.vendor, f.device)
            })
        });
    if xe_pf && !root.pci_driver("xe-vfio-pci").is_dir() && !module_available(root, "xe_vfio_pci") {
        out.push(Finding::warning(
            "modules",
            "this kernel has no xe-vfio-pci (Linux 6.19 and later, CONFIG_XE_VFIO_PCI): Xe VFs work with vfio-pci, without VF state migration".into(),
        ));
    }
}

fn param(root: &HostRoot, module: &str, name: &str) -> (bool, Option<String>) {
    let p = root
        .sys
        .join("module")
        .join(module)
        .join("parameters")
        .join(name);
    (p.exists(), read_opt(&p))
}

/// Problems of an SR-IOV PF: VF BAR space, and for Intel GPU PFs the
/// driver knobs (GuC submission, `max_vfs`).
pub fn pf_findings(root: &HostRoot, pf: &PciFunction, out: &mut Vec<Finding>) {
    let Some(s) = &pf.sriov else { return };
    let res = pf.resources();
    if res.len() >= 13 && res[7..13].iter().all(|r| r.0 == 0) {
        out.push(Finding::error(&HostError::VfBarsUnassigned {
            address: pf.address,
            what: "no VF BAR is assigned (resource lines 7-12 are empty)".into(),
        }));
    }
    let a = pf.address;
    match pf.driver.as_deref() {
        Some("i915") => {
            let (_, guc) = param(root, "i915", "enable_guc");
            match guc.as_deref().map(str::parse::<i32>) {
                Some(Ok(v)) if v >= 0 && v & 1 == 0 => out.push(Finding::error(&HostError::GucSubmissionOff {
                    address: a,
                    driver: "i915".into(),
                    fix: "boot with i915.enable_guc=3",
                })),
                Some(Ok(v)) if v < 0 => out.push(Finding::warning(
                    "gpu-driver",
                    format!("{a} (i915): enable_guc is {v} (automatic); SR-IOV needs GuC submission, so boot with i915.enable_guc=3 to be sure"),
                )),
                _ => {}
            }
            match param(root, "i915", "max_vfs") {
                (_, Some(v)) if v == "0" => out.push(Finding::error(&HostError::MaxVfsZero {
                    address: a,
                    driver: "i915".into(),
                    param: "i915.max_vfs",
                })),
                (false, _) => out.push(Finding::warning(
                    "gpu-driver",
                    format!("{a} (i915): this i915 has no max_vfs parameter, so it is not an SR-IOV build: upstream i915 cannot enable VFs; use the xe driver (xe.force_probe=, xe.max_vfs=N) or the i915-sriov-dkms module"),
                )),
                _ => {}
            }
        }
        Some("xe") => {
            if param(root, "xe", "force_execlist").1.as_deref() == Some("Y") {
                out.push(Finding::error(&HostError::GucSubmissionOff {
                    address: a,
                    driver: "xe".into(),
                    fix: "drop xe.force_execlist from the kernel command line",
                }));
            }
            match param(root, "xe", "max_vfs") {
                (_, Some(v)) if v == "0" => out.push(Finding::error(&HostError::MaxVfsZero {
                    address: a,
                    driver: "xe".into(),
                    param: "xe.max_vfs",
                })),
                (true, None) => out.push(Finding::warning(
                    "gpu-driver",
                    format!("{a} (xe): cannot read /sys/module/xe/parameters/max_vfs (root only): run 'tessera vf check' as root to see whether xe.max_vfs=N is set"),
                )),
                (false, _) => out.push(Finding::warning(
                    "gpu-driver",
                    format!("{a} (xe): xe has no max_vfs parameter (a kernel without CONFIG_PCI_IOV?), so it cannot enable VFs"),
                )),
                _ => {}
            }
        }
        _ => {}
    }
    if s.numvfs > 0 {
        if let Ok(rd) = std::fs::read_dir(pf.sysfs.join("net")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if read_opt(&e.path().join("operstate")).as_deref() == Some("down") {
                    out.push(Finding::warning(
                        "pf-link",
                        format!("{a}'s network interface {name} is down: NIC PFs such as igb serve their VFs' mailbox only while up (ip link set {name} up)"),
                    ));
                }
            }
        }
    }
}

fn vf_bar_findings(f: &PciFunction, out: &mut Vec<Finding>) {
    if f.is_vf() && f.resources().iter().take(6).all(|r| r.0 == 0) {
        out.push(Finding::error(&HostError::VfBarsUnassigned {
            address: f.address,
            what: format!("VF {} has no BAR assigned", f.address),
        }));
    }
}

fn container_access(root: &HostRoot) -> Option<HostError> {
    let node = root.dev.join("vfio/vfio");
    if !node.exists() || can_open_rw(&node) {
        return None;
    }
    let m = std::fs::metadata(&node).ok()?;
    use std::os::unix::fs::MetadataExt;
    Some(HostError::PermissionDenied {
        uid: euid(),
        nodes: vec![NodeAccess {
            path: root.display(&node),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
        }],
    })
}

/// Run every check: for `spec` (a BDF or sysfs path) the passthrough
/// preflight and its PF's problems; without it the host-wide checks and
/// every SR-IOV PF. `guest_memory` 0 leaves RLIMIT_MEMLOCK out.
pub fn check_host(root: &HostRoot, spec: Option<&str>, guest_memory: u64) -> CheckReport {
    let mut findings = Vec::new();
    let (function, target) = match spec {
        Some(spec) => {
            let p = passthrough_problems(root, spec, guest_memory);
            findings.extend(p.problems.iter().map(Finding::error));
            (p.address, p.target)
        }
        None => {
            if let Some(e) = iommu_off(root, None) {
                findings.push(Finding::error(&e));
            }
            if let Some(e) = container_access(root) {
                findings.push(Finding::error(&e));
            }
            if guest_memory > 0 {
                if let Some(e) =
                    memlock_problem(memlock_limit(), has_cap_ipc_lock(root), guest_memory)
                {
                    findings.push(Finding::error(&e));
                }
            }
            (None, None)
        }
    };
    if spec.is_some() && function.is_none() {
        return CheckReport {
            function,
            target,
            findings,
        };
    }
    if !iommu_units(root).is_empty() {
        remapping_findings(root, spec.is_none(), &mut findings);
    }
    module_findings(root, &mut findings);
    let pfs: Vec<PciFunction> = match function.and_then(|a| PciFunction::read(root, a).ok()) {
        Some(f) => {
            vf_bar_findings(&f, &mut findings);
            match f.physfn {
                Some(pf) => PciFunction::read(root, pf).into_iter().collect(),
                None if f.is_pf() => vec![f],
                None => Vec::new(),
            }
        }
        None => list_functions(root)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| PciFunction::read(root, a).ok())
            .filter(PciFunction::is_pf)
            .collect(),
    };
    for pf in &pfs {
        pf_findings(root, pf, &mut findings);
    }
    let target = if findings.iter().any(|f| f.severity == Severity::Error) {
        None
    } else {
        target
    };
    CheckReport {
        function,
        target,
        findings,
    }
}

/// The check names `vf check --json` uses, for the documentation.
pub const CHECK_NAMES: &[&str] = &[
    "function",
    "sriov-pf",
    "iommu",
    "interrupt-remapping",
    "driver",
    "iommu-group",
    "permissions",
    "busy",
    "memlock",
    "vf-bars",
    "gpu-driver",
    "modules",
    "pf-link",
    "host",
];

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
