//! Every `vf check` finding fires on a tree with the problem and stays
//! quiet on a healthy one.

use super::super::fake::{FakeFn, FakeHost};
use super::*;

/// A healthy host: igb PF with 2 VFs, the first on vfio-pci.
fn healthy(name: &str) -> (FakeHost, PciAddress) {
    let h = FakeHost::new(name);
    let vfs = h.igb_with_vfs(2);
    h.bind(vfs[0], "vfio-pci");
    (h, vfs[0])
}

fn checks(r: &CheckReport) -> Vec<(&'static str, Severity)> {
    r.findings.iter().map(|f| (f.check, f.severity)).collect()
}

fn only(r: &CheckReport, check: &str) -> String {
    let hits: Vec<&Finding> = r.findings.iter().filter(|f| f.check == check).collect();
    assert_eq!(hits.len(), 1, "want one {check} finding: {:?}", r.findings);
    assert_eq!(hits[0].message.lines().count(), 1);
    hits[0].message.clone()
}

#[test]
fn a_healthy_host_and_vf_have_no_findings() {
    let (h, vf) = healthy("chk-healthy");
    let r = check_host(&h.root, Some("01:10.0"), 0);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.ready());
    assert_eq!(r.target.unwrap().address, vf);
    let r = check_host(&h.root, None, 0);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn iommu_off_fires_and_skips_the_remapping_check() {
    let (h, _) = healthy("chk-iommu");
    h.no_iommu();
    let r = check_host(&h.root, None, 0);
    assert_eq!(checks(&r), [("iommu", Severity::Error)]);
    assert!(!r.ready());
}

#[test]
fn interrupt_remapping_off_is_an_error_unless_unsafe_interrupts_are_allowed() {
    let (h, _) = healthy("chk-ir");
    h.intel_iommu("dmar0", 0xf0_50d2);
    let r = check_host(&h.root, Some("01:10.0"), 0);
    let m = only(&r, "interrupt-remapping");
    assert!(
        m.contains("dmar0 has no interrupt remapping: ecap f050d2 has bit 3 (IR) clear"),
        "{m}"
    );
    assert!(m.contains("allow_unsafe_interrupts"), "{m}");
    assert!(!r.ready() && r.target.is_none());
    h.module("vfio_iommu_type1", &[("allow_unsafe_interrupts", "Y")]);
    let r = check_host(&h.root, Some("01:10.0"), 0);
    assert_eq!(checks(&r), [("interrupt-remapping", Severity::Warning)]);
    assert!(r.ready());
}

#[test]
fn intremap_off_and_amd_hosts_are_read_from_procfs() {
    let (h, _) = healthy("chk-ir-amd");
    h.proc_file("cmdline", "root=/dev/sda intremap=off\n");
    assert!(
        matches!(interrupt_remapping(&h.root), Remapping::Off(r) if r.contains("intremap=off"))
    );
    h.proc_file("cmdline", "root=/dev/sda\n");
    h.no_iommu();
    h.sys_file("class/iommu/ivhd0/amd-iommu/features", "25bf732fa2295afe\n");
    assert_eq!(interrupt_remapping(&h.root), Remapping::On);
    h.proc_file(
        "interrupts",
        " 24:  1  PCI-MSI-0000:01:00.0  0-edge  eth0\n",
    );
    assert!(matches!(interrupt_remapping(&h.root), Remapping::Off(_)));
    h.proc_file("interrupts", " 0:  1  IO-APIC  2-edge  timer\n");
    assert!(matches!(
        interrupt_remapping(&h.root),
        Remapping::Unknown(_)
    ));
    let r = check_host(&h.root, None, 0);
    assert_eq!(checks(&r), [("interrupt-remapping", Severity::Warning)]);
}

#[test]
fn a_missing_vfio_pci_is_an_error_and_an_unloaded_one_a_warning() {
    let h = FakeHost::new("chk-modules");
    h.igb_with_vfs(1);
    let r = check_host(&h.root, None, 0);
    let m = only(&r, "modules");
    assert!(m.contains("no vfio-pci driver (CONFIG_VFIO_PCI)"), "{m}");
    assert!(!r.ready());
    h.installed_module("kernel/drivers/vfio/pci/vfio-pci.ko");
    let r = check_host(&h.root, None, 0);
    assert_eq!(checks(&r), [("modules", Severity::Warning)]);
    assert!(r.ready());
}

#[test]
fn xe_vfio_pci_missing_is_a_warning_on_hosts_with_a_battlemage_pf() {
    let h = FakeHost::new("chk-xe-vfio");
    h.xe_dgpu(0);
    h.pci_driver("vfio-pci");
    let r = check_host(&h.root, None, 0);
    let m = only(&r, "modules");
    assert!(m.contains("no xe-vfio-pci"), "{m}");
    h.installed_module("kernel/drivers/vfio/pci/xe/xe-vfio-pci.ko");
    assert!(check_host(&h.root, None, 0).findings.is_empty());
}

#[test]
fn the_pf_itself_is_refused() {
    let (h, _) = healthy("chk-pf");
    let r = check_host(&h.root, Some("01:00.0"), 0);
    assert_eq!(r.function, Some("0000:01:00.0".parse().unwrap()));
    let m = only(&r, "sriov-pf");
    assert!(m.contains("pass one of its VFs"), "{m}");
    let m = only(&r, "driver");
    assert!(m.contains("bound to igb"), "{m}");
}

#[test]
fn group_permissions_busy_and_memlock_findings_come_from_the_preflight() {
    let (h, _) = healthy("chk-preflight");
    h.add(
        &FakeFn::new("0000:01:00.1", 0x8086, 0x10c9, 0x020000)
            .under("0000:00:01.0")
            .driver("igb")
            .group(2),
    );
    h.process(999, "qemu", &[(5, "/dev/vfio/2")]);
    let r = check_host(&h.root, Some("01:10.0"), 0);
    assert!(only(&r, "iommu-group").contains("0000:01:00.1 (igb)"));
    assert!(only(&r, "busy").contains("pid 999 (qemu)"));
    if let Some(limit) = memlock_limit() {
        let r = check_host(&h.root, Some("01:10.0"), limit + 1);
        assert!(only(&r, "memlock").contains("RLIMIT_MEMLOCK"));
        let r = check_host(&h.root, None, limit + 1);
        assert!(only(&r, "memlock").contains("RLIMIT_MEMLOCK"));
    }
}

#[test]
fn unassigned_vf_bars_are_found_on_the_pf_and_the_vf() {
    let h = FakeHost::new("chk-bars");
    h.pci_driver("vfio-pci");
    h.add(
        &FakeFn::new("0000:00:02.0", 0x8086, 0xa780, 0x030000)
            .driver("i915")
            .group(0)
            .sriov(7, 0xa780)
            .no_vf_bars(),
    );
    h.module("i915", &[("enable_guc", "3"), ("max_vfs", "7")]);
    let r = check_host(&h.root, None, 0);
    let m = only(&r, "vf-bars");
    assert!(
        m.starts_with("0000:00:02.0 has SR-IOV but no VF BAR is assigned")
            && m.contains("pci=realloc"),
        "{m}"
    );
    let g = FakeHost::new("chk-bars-vf");
    g.pci_driver("vfio-pci");
    g.add(
        &FakeFn::new("0000:00:02.0", 0x8086, 0xa780, 0x030000)
            .driver("i915")
            .group(0)
            .sriov(7, 0xa780),
    );
    g.module("i915", &[("enable_guc", "3"), ("max_vfs", "7")]);
    g.add(
        &FakeFn::new("0000:00:02.1", 0x8086, 0xa780, 0x030000)
            .driver("vfio-pci")
            .group(1)
            .no_bars(),
    );
    std::os::unix::fs::symlink(
        "../0000:00:02.0",
        g.root.sys.join("bus/pci/devices/0000:00:02.1/physfn"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../0000:00:02.1",
        g.root.sys.join("bus/pci/devices/0000:00:02.0/virtfn0"),
    )
    .unwrap();
    g.sys_file("bus/pci/devices/0000:00:02.0/sriov_numvfs", "1\n");
    let r = check_host(&g.root, Some("00:02.1"), 0);
    assert!(only(&r, "vf-bars").contains("VF 0000:00:02.1 has no BAR assigned"));
}

#[test]
fn i915_without_guc_submission_or_with_max_vfs_0_is_an_error() {
    for (guc, max, check, want) in [
        ("0", Some("7"), Severity::Error, "i915.enable_guc=3"),
        ("2", Some("7"), Severity::Error, "i915.enable_guc=3"),
        ("-1", Some("7"), Severity::Warning, "automatic"),
        (
            "3",
            Some("0"),
            Severity::Error,
            "i915.max_vfs=0: boot with i915.max_vfs=N",
        ),
        ("3", None, Severity::Warning, "i915-sriov-dkms"),
    ] {
        let h = FakeHost::new("chk-i915");
        h.pci_driver("vfio-pci");
        h.i915_igpu(guc, max);
        let r = check_host(&h.root, None, 0);
        let m = only(&r, "gpu-driver");
        assert!(m.contains(want), "enable_guc={guc} max_vfs={max:?}: {m}");
        assert_eq!(r.findings[0].severity, check, "{m}");
    }
    let h = FakeHost::new("chk-i915-ok");
    h.pci_driver("vfio-pci");
    h.i915_igpu("3", Some("7"));
    assert!(check_host(&h.root, None, 0).findings.is_empty());
}

#[test]
fn xe_with_max_vfs_0_or_execlists_is_an_error() {
    let h = FakeHost::new("chk-xe");
    h.pci_driver("vfio-pci");
    h.installed_module("kernel/drivers/vfio/pci/xe/xe-vfio-pci.ko");
    h.xe_dgpu(0);
    h.module("xe", &[("max_vfs", "0")]);
    let r = check_host(&h.root, None, 0);
    assert!(only(&r, "gpu-driver").contains("xe.max_vfs=0"));
    h.module("xe", &[("max_vfs", "4"), ("force_execlist", "Y")]);
    let r = check_host(&h.root, None, 0);
    assert!(only(&r, "gpu-driver").contains("without GuC submission"));
    h.module("xe", &[("force_execlist", "N")]);
    assert!(check_host(&h.root, None, 0).findings.is_empty());
}

#[test]
fn a_down_nic_pf_with_vfs_is_a_warning() {
    let (h, _) = healthy("chk-link");
    h.sys_file(
        "bus/pci/devices/0000:01:00.0/net/enp1s0/operstate",
        "down\n",
    );
    let r = check_host(&h.root, Some("01:10.0"), 0);
    assert_eq!(checks(&r), [("pf-link", Severity::Warning)]);
    assert!(only(&r, "pf-link").contains("ip link set enp1s0 up"));
    assert!(r.ready());
}

#[test]
fn an_unknown_function_stops_the_check_at_once() {
    let (h, _) = healthy("chk-unknown");
    let r = check_host(&h.root, Some("02:00.0"), 0);
    assert_eq!(checks(&r), [("function", Severity::Error)]);
    assert_eq!(r.function, None);
}

#[test]
fn every_check_name_is_documented() {
    let (h, _) = healthy("chk-names");
    h.no_iommu();
    for f in check_host(&h.root, Some("01:00.0"), 0).findings {
        assert!(CHECK_NAMES.contains(&f.check), "{}", f.check);
    }
}
