//! What `tessera vf` prints: text for people, JSON (`"version": 1`) for
//! programs. The JSON shapes are documented in README.md and only grow.

use serde_json::{Value, json};

use crate::host::checks::CheckReport;
use crate::host::ops::{Bound, Created, Profile, Unbound};
use crate::host::preflight::vfio_cdev;
use crate::host::{
    HostError, HostRoot, PciFunction, group_holders, intel, list_functions, lock_owner,
};

/// A VF as `list` shows it.
pub struct VfEntry {
    /// The function.
    pub f: PciFunction,
    /// The tessera VM holding its lock.
    pub vm: Option<String>,
    /// Processes with its VFIO group (or device) open.
    pub holders: Vec<(u32, String)>,
}

/// A PF as `list` shows it.
pub struct PfEntry {
    /// The function.
    pub f: PciFunction,
    /// A name for known Intel GPUs.
    pub name: Option<String>,
    /// Has the xe `sriov_admin` tree (profiles).
    pub sriov_admin: bool,
    /// Its VFs.
    pub vfs: Vec<VfEntry>,
}

/// Every SR-IOV PF and its VFs.
pub fn list(root: &HostRoot) -> Result<Vec<PfEntry>, HostError> {
    let mut out = Vec::new();
    for a in list_functions(root)? {
        let f = PciFunction::read(root, a)?;
        let Some(s) = f.sriov.clone() else { continue };
        let vfs = s
            .vfs
            .iter()
            .filter_map(|&v| PciFunction::read(root, v).ok())
            .map(|vf| {
                let mut holders = Vec::new();
                if let Some(g) = vf.iommu_group {
                    holders = group_holders(root, &root.dev.join("vfio").join(g.to_string()));
                }
                if let Some(c) = vfio_cdev(root, &vf.sysfs) {
                    holders.extend(group_holders(root, &c));
                }
                holders.sort();
                holders.dedup();
                VfEntry {
                    vm: lock_owner(root, vf.address),
                    holders,
                    f: vf,
                }
            })
            .collect();
        out.push(PfEntry {
            name: intel::gpu_name(f.vendor, f.device),
            sriov_admin: f.sysfs.join("sriov_admin").is_dir(),
            f,
            vfs,
        });
    }
    Ok(out)
}

fn drv(d: &Option<String>) -> &str {
    d.as_deref().unwrap_or("none")
}

fn group(g: Option<u32>) -> String {
    g.map_or("none".into(), |g| g.to_string())
}

fn holders_text(h: &[(u32, String)]) -> String {
    h.iter()
        .map(|(p, c)| format!("pid {p} ({c})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `vf list` for people.
pub fn list_text(_root: &HostRoot, pfs: &[PfEntry]) -> String {
    if pfs.is_empty() {
        return "no SR-IOV physical functions on this host (no PCI function has sriov_totalvfs > 0); 'lspci -D' lists every function\n".into();
    }
    let mut s = String::new();
    for p in pfs {
        let sr = p.f.sriov.as_ref().expect("list keeps PFs only");
        s.push_str(&format!(
            "PF {} {}{}  driver {}  VFs {}/{}  autoprobe {}{}\n",
            p.f.address,
            p.f.ids(),
            p.name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default(),
            drv(&p.f.driver),
            sr.numvfs,
            sr.totalvfs,
            if sr.autoprobe { "on" } else { "off" },
            if p.sriov_admin { "  sriov_admin" } else { "" },
        ));
        for v in &p.vfs {
            let use_ = match (&v.vm, v.holders.is_empty()) {
                (Some(vm), _) => format!("in use by {vm}"),
                (None, false) => format!("open in {}", holders_text(&v.holders)),
                (None, true) => "free".into(),
            };
            s.push_str(&format!(
                "  VF {} {}  driver {}  group {}  {use_}\n",
                v.f.address,
                v.f.ids(),
                drv(&v.f.driver),
                group(v.f.iommu_group),
            ));
        }
    }
    s
}

fn holders_json(h: &[(u32, String)]) -> Value {
    h.iter()
        .map(|(pid, comm)| json!({"pid": pid, "comm": comm}))
        .collect()
}

/// `vf list --json`.
pub fn list_json(_root: &HostRoot, pfs: &[PfEntry]) -> Value {
    let pfs: Vec<Value> = pfs
        .iter()
        .map(|p| {
            let sr = p.f.sriov.as_ref().expect("list keeps PFs only");
            json!({
                "address": p.f.address.to_string(),
                "vendor": format!("{:04x}", p.f.vendor),
                "device": format!("{:04x}", p.f.device),
                "class": format!("{:06x}", p.f.class),
                "name": p.name,
                "driver": p.f.driver,
                "iommu_group": p.f.iommu_group,
                "totalvfs": sr.totalvfs,
                "numvfs": sr.numvfs,
                "autoprobe": sr.autoprobe,
                "sriov_admin": p.sriov_admin,
                "vfs": p.vfs.iter().map(|v| json!({
                    "address": v.f.address.to_string(),
                    "vendor": format!("{:04x}", v.f.vendor),
                    "device": format!("{:04x}", v.f.device),
                    "driver": v.f.driver,
                    "iommu_group": v.f.iommu_group,
                    "in_use_by": v.vm,
                    "holders": holders_json(&v.holders),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"version": 1, "pfs": pfs})
}

/// `vf create` output.
pub fn created_text(root: &HostRoot, c: &Created, autoprobe: bool) -> String {
    let n = c.vfs.len();
    let how = if c.before as usize == n {
        "already enabled".to_string()
    } else if c.before != 0 {
        format!("enabled (was {})", c.before)
    } else {
        "enabled".to_string()
    };
    let mut s = format!(
        "{}: {n} VFs {how} (sriov_drivers_autoprobe {})\n",
        c.pf,
        u8::from(autoprobe)
    );
    for &v in &c.vfs {
        if let Ok(f) = PciFunction::read(root, v) {
            s.push_str(&format!(
                "  VF {} {}  driver {}  group {}\n",
                v,
                f.ids(),
                drv(&f.driver),
                group(f.iommu_group)
            ));
        }
    }
    if !c.vfs.is_empty() {
        let all: Vec<String> = c.vfs.iter().map(|a| a.to_string()).collect();
        s.push_str(&format!("next: tessera vf bind {}\n", all.join(" ")));
    }
    s
}

/// One `vf bind` line.
pub fn bound_text(root: &HostRoot, b: &Bound) -> String {
    let g = PciFunction::read(root, b.address)
        .ok()
        .and_then(|f| f.iommu_group)
        .map(|g| format!(" (IOMMU group {g}, /dev/vfio/{g})"))
        .unwrap_or_default();
    if b.unchanged {
        format!("{}: already on {}{g}", b.address, b.driver)
    } else {
        format!("{}: {} -> {}{g}", b.address, drv(&b.before), b.driver)
    }
}

/// One `vf unbind` line.
pub fn unbound_text(_root: &HostRoot, u: &Unbound) -> String {
    let mut s = format!("{}: {} -> {}", u.address, drv(&u.before), drv(&u.driver));
    if u.driver.is_none() && u.no_autoprobe {
        s.push_str(" (its PF has sriov_drivers_autoprobe 0, so no host driver probes it)");
    }
    s
}

/// `vf check` for people: one line per finding, then the verdict.
pub fn check_text(root: &HostRoot, r: &CheckReport) -> String {
    let mut s = String::new();
    for f in &r.findings {
        let tag = match f.severity {
            crate::host::checks::Severity::Error => "FAIL",
            crate::host::checks::Severity::Warning => "WARN",
        };
        s.push_str(&format!("{tag} {}: {}\n", f.check, f.message));
    }
    let errors = r
        .findings
        .iter()
        .filter(|f| f.severity == crate::host::checks::Severity::Error)
        .count();
    let what = r
        .function
        .map(|a| a.to_string())
        .unwrap_or_else(|| "this host".into());
    match (&r.target, errors) {
        (Some(t), 0) => s.push_str(&format!(
            "ready: {} on {}, IOMMU group {} ({}{})\n",
            t.address,
            t.driver,
            t.group,
            root.display(&t.group_dev).display(),
            t.cdev
                .as_ref()
                .map(|c| format!(", {}", root.display(c).display()))
                .unwrap_or_default()
        )),
        (_, 0) => s.push_str(&format!("ready: nothing on {what} stops passthrough\n")),
        (_, n) => s.push_str(&format!(
            "not ready: {n} problem{} stop{} passthrough on {what}\n",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" }
        )),
    }
    s
}

/// `vf check --json`.
pub fn check_json(root: &HostRoot, r: &CheckReport) -> Value {
    let target = r.target.as_ref().map(|t| {
        json!({
            "address": t.address.to_string(),
            "sysfs": root.display(&t.sysfs),
            "driver": t.driver,
            "iommu_group": t.group,
            "group_dev": root.display(&t.group_dev),
            "cdev": t.cdev.as_ref().map(|c| root.display(c)),
            "iommufd": t.iommufd,
        })
    });
    json!({
        "version": 1,
        "function": r.function.map(|a| a.to_string()),
        "ready": r.ready(),
        "findings": r.findings.iter().map(|f| json!({
            "check": f.check,
            "severity": f.severity.as_str(),
            "message": f.message,
        })).collect::<Vec<_>>(),
        "target": target,
    })
}

/// `vf profile` for people.
pub fn profile_text(p: &Profile) -> String {
    let limit = |v: u32, unit: &str| {
        if v == 0 {
            "0 (unlimited)".to_string()
        } else {
            format!("{v} {unit}")
        }
    };
    format!(
        "{} ({} of PF {}): exec_quantum_ms {}, preempt_timeout_us {}, priority {} (offered: {}{})",
        p.address,
        p.name,
        p.pf,
        limit(p.exec_quantum_ms, "ms"),
        limit(p.preempt_timeout_us, "us"),
        p.priority,
        p.priorities.join(" "),
        if p.priority_writable {
            ""
        } else {
            "; read-only"
        }
    )
}

/// `vf profile --json`.
pub fn profile_json(root: &HostRoot, p: &Profile) -> Value {
    json!({
        "version": 1,
        "address": p.address.to_string(),
        "pf": p.pf.to_string(),
        "function": p.name,
        "dir": root.display(&p.dir),
        "exec_quantum_ms": p.exec_quantum_ms,
        "preempt_timeout_us": p.preempt_timeout_us,
        "sched_priority": p.priority,
        "priorities": p.priorities,
        "priority_writable": p.priority_writable,
    })
}
