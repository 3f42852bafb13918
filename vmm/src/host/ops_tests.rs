//! Tests of the host changes against fake trees and the fake kernel.

use super::super::fake::{FakeFn, FakeHost, FakeKernel};
use super::super::lock::claim_vf;
use super::*;

fn pf() -> PciAddress {
    "0000:01:00.0".parse().unwrap()
}

#[test]
fn create_turns_autoprobe_off_then_writes_the_count() {
    let h = FakeHost::new("ops-create");
    h.igb_with_vfs(0);
    h.sys_file(
        "bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe",
        "1\n",
    );
    let mut k = FakeKernel::new(&h);
    let c = create_vfs(&mut k, &h.root, pf(), 3, false).unwrap();
    assert_eq!(
        k.writes(),
        [
            (
                "/sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe",
                "0"
            ),
            ("/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "3"),
        ]
    );
    assert_eq!(c.before, 0);
    let names: Vec<String> = c.vfs.iter().map(|a| a.to_string()).collect();
    assert_eq!(names, ["0000:01:10.0", "0000:01:10.2", "0000:01:10.4"]);
    // The new VFs are unbound, each in its own group.
    for vf in &c.vfs {
        let f = PciFunction::read(&h.root, *vf).unwrap();
        assert_eq!(f.driver, None);
        assert!(f.iommu_group.is_some());
    }
}

#[test]
fn changing_a_non_zero_count_goes_through_zero() {
    let h = FakeHost::new("ops-recount");
    h.igb_with_vfs(2);
    let mut k = FakeKernel::new(&h);
    let c = create_vfs(&mut k, &h.root, pf(), 4, false).unwrap();
    assert_eq!(
        k.writes(),
        [
            ("/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "0"),
            ("/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "4"),
        ]
    );
    assert_eq!((c.before, c.vfs.len()), (2, 4));
    // The same count again writes nothing.
    let mut k = FakeKernel::new(&h);
    assert_eq!(
        create_vfs(&mut k, &h.root, pf(), 4, false)
            .unwrap()
            .vfs
            .len(),
        4
    );
    assert!(k.log.is_empty());
}

#[test]
fn autoprobe_can_be_left_on() {
    let h = FakeHost::new("ops-autoprobe");
    h.igb_with_vfs(0);
    let mut k = FakeKernel::new(&h);
    create_vfs(&mut k, &h.root, pf(), 1, true).unwrap();
    assert_eq!(
        k.writes()[0],
        (
            "/sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe",
            "1"
        )
    );
}

#[test]
fn create_refuses_bad_requests_before_writing() {
    let h = FakeHost::new("ops-create-bad");
    h.igb_with_vfs(1);
    h.add(&FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00).group(5));
    let mut k = FakeKernel::new(&h);
    let e = create_vfs(&mut k, &h.root, pf(), 8, false).unwrap_err();
    assert!(
        e.to_string()
            .contains("--count 8 is more than 0000:01:00.0 offers (sriov_totalvfs 7)"),
        "{e}"
    );
    let e = create_vfs(&mut k, &h.root, "00:03.0".parse().unwrap(), 1, false).unwrap_err();
    assert!(matches!(e, HostError::NotSriovPf(_)), "{e}");
    // A VF in use by a VM keeps the count.
    let _claim = claim_vf(&h.root, "0000:01:10.0".parse().unwrap(), "vm busy").unwrap();
    let e = create_vfs(&mut k, &h.root, pf(), 2, false).unwrap_err();
    assert!(
        e.to_string()
            .contains("0000:01:10.0 is in use by tessera vm busy"),
        "{e}"
    );
    let e = destroy_vfs(&mut k, &h.root, pf()).unwrap_err();
    assert!(matches!(e, HostError::InUse { .. }), "{e}");
    assert!(k.log.is_empty());
    // The PF without a driver cannot enable VFs.
    h.unbind(pf());
    drop(_claim);
    let e = create_vfs(&mut k, &h.root, pf(), 2, false).unwrap_err();
    assert!(matches!(e, HostError::NoPfDriver(_)), "{e}");
}

#[test]
fn kernel_refusals_explain_themselves() {
    let h = FakeHost::new("ops-enomem");
    h.igb_with_vfs(0);
    let mut k = FakeKernel::new(&h);
    k.fail.insert("sriov_numvfs".into(), libc::ENOMEM);
    let e = create_vfs(&mut k, &h.root, pf(), 2, false).unwrap_err();
    let m = e.to_string();
    assert!(
        m.starts_with("cannot write '2' to /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs"),
        "{m}"
    );
    assert!(m.contains("pci=realloc"), "{m}");
    assert_eq!(e.exit_code(), 1);
    k.fail.insert("sriov_numvfs".into(), libc::EACCES);
    let m = create_vfs(&mut k, &h.root, pf(), 2, false)
        .unwrap_err()
        .to_string();
    assert!(m.contains("run as root"), "{m}");
}

#[test]
fn destroy_writes_zero_once() {
    let h = FakeHost::new("ops-destroy");
    h.igb_with_vfs(3);
    let mut k = FakeKernel::new(&h);
    assert_eq!(destroy_vfs(&mut k, &h.root, pf()).unwrap(), 3);
    assert_eq!(
        k.writes(),
        [("/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "0")]
    );
    assert!(!h.root.pci_device("01:10.0".parse().unwrap()).exists());
    let mut k = FakeKernel::new(&h);
    assert_eq!(destroy_vfs(&mut k, &h.root, pf()).unwrap(), 0);
    assert!(k.log.is_empty());
}

#[test]
fn bind_writes_override_unbind_and_probe_in_that_order() {
    let h = FakeHost::new("ops-bind");
    let vfs = h.igb_with_vfs(2);
    h.bind(vfs[0], "igbvf");
    h.pci_driver("vfio-pci");
    let mut k = FakeKernel::new(&h);
    let b = bind(&mut k, &h.root, vfs[0], &DriverChoice::Auto, &[]).unwrap();
    assert_eq!(
        k.writes(),
        [
            (
                "/sys/bus/pci/devices/0000:01:10.0/driver_override",
                "vfio-pci"
            ),
            (
                "/sys/bus/pci/devices/0000:01:10.0/driver/unbind",
                "0000:01:10.0"
            ),
            ("/sys/bus/pci/drivers_probe", "0000:01:10.0"),
        ]
    );
    assert_eq!(
        (b.before.as_deref(), b.driver.as_str(), b.unchanged),
        (Some("igbvf"), "vfio-pci", false)
    );
    // An unbound function skips the unbind.
    let mut k = FakeKernel::new(&h);
    bind(
        &mut k,
        &h.root,
        vfs[1],
        &DriverChoice::Named("vfio-pci".into()),
        &[],
    )
    .unwrap();
    assert_eq!(k.writes().len(), 2);
    // Binding again changes nothing.
    let mut k = FakeKernel::new(&h);
    assert!(
        bind(&mut k, &h.root, vfs[1], &DriverChoice::Auto, &[])
            .unwrap()
            .unchanged
    );
    assert!(k.log.is_empty());
}

#[test]
fn bind_loads_vfio_pci_on_the_real_host_only() {
    let h = FakeHost::new("ops-modprobe");
    let vfs = h.igb_with_vfs(1);
    let mut k = FakeKernel::new(&h);
    let e = bind(&mut k, &h.root, vfs[0], &DriverChoice::Auto, &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("the running kernel has no vfio_pci module"),
        "{e}"
    );
    h.installed_module("kernel/drivers/vfio/pci/vfio-pci.ko.xz");
    let e = bind(&mut k, &h.root, vfs[0], &DriverChoice::Auto, &[]).unwrap_err();
    assert!(
        e.to_string().contains("run 'modprobe vfio_pci' as root"),
        "{e}"
    );
    assert!(k.log.is_empty(), "a fake root never runs modprobe");
}

#[test]
fn bind_refuses_a_pf_a_busy_group_and_a_vf_in_use() {
    let h = FakeHost::new("ops-bind-refuse");
    let vfs = h.igb_with_vfs(2);
    h.pci_driver("vfio-pci");
    let mut k = FakeKernel::new(&h);
    let e = bind(&mut k, &h.root, pf(), &DriverChoice::Auto, &[]).unwrap_err();
    assert!(matches!(e, HostError::IsPf { numvfs: 2, .. }), "{e}");
    // Put a host-driven function into the second VF's group.
    h.add(
        &FakeFn::new("0000:01:00.1", 0x8086, 0x10c9, 0x020000)
            .under("0000:00:01.0")
            .driver("igb")
            .group(3),
    );
    let e = bind(&mut k, &h.root, vfs[1], &DriverChoice::Auto, &[]).unwrap_err();
    assert!(e.to_string().contains("0000:01:00.1 (igb)"), "{e}");
    assert!(k.log.is_empty());
    // Binding the whole group in one command is fine.
    let other: PciAddress = "0000:01:00.1".parse().unwrap();
    bind(&mut k, &h.root, vfs[1], &DriverChoice::Auto, &[other]).unwrap();
    k.log.clear();
    // A VF a VM holds is not moved to another VFIO driver.
    h.bind(vfs[0], "vfio-pci");
    h.process(777, "tessera", &[(9, "/dev/vfio/2")]);
    let e = bind(
        &mut k,
        &h.root,
        vfs[0],
        &DriverChoice::Named("xe-vfio-pci".into()),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("in use by pid 777 (tessera)"), "{e}");
    assert!(k.log.is_empty());
}

/// A kernel that takes every write and does nothing.
struct DeafKernel(Vec<String>);

impl Kernel for DeafKernel {
    fn write(&mut self, path: &Path, _value: &str) -> io::Result<()> {
        self.0.push(path.display().to_string());
        Ok(())
    }
    fn modprobe(&mut self, _module: &str) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_bind_the_kernel_refuses_or_ignores_is_an_error() {
    let h = FakeHost::new("ops-bind-ignored");
    let vfs = h.igb_with_vfs(1);
    h.pci_driver("vfio-pci");
    let mut k = FakeKernel::new(&h);
    k.fail.insert("drivers_probe".into(), libc::EINVAL);
    let e = bind(&mut k, &h.root, vfs[0], &DriverChoice::Auto, &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot write '0000:01:10.0' to /sys/bus/pci/drivers_probe"),
        "{e}"
    );
    let mut deaf = DeafKernel(Vec::new());
    let e = bind(&mut deaf, &h.root, vfs[0], &DriverChoice::Auto, &[]).unwrap_err();
    assert_eq!(deaf.0.len(), 2);
    let m = e.to_string();
    assert!(
        m.contains("the kernel did not bind 0000:01:10.0 to vfio-pci (its driver is now none)")
            && m.contains("dmesg"),
        "{m}"
    );
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn auto_picks_xe_vfio_pci_for_xe_vfs_when_the_module_exists() {
    let h = FakeHost::new("ops-auto");
    let vfs = h.xe_dgpu(2);
    h.pci_driver("vfio-pci");
    let vf = PciFunction::read(&h.root, vfs[0]).unwrap();
    assert_eq!(auto_driver(&h.root, &vf), "vfio-pci");
    h.installed_module("kernel/drivers/vfio/pci/xe/xe-vfio-pci.ko.zst");
    assert_eq!(auto_driver(&h.root, &vf), "xe-vfio-pci");
    h.pci_driver("xe-vfio-pci");
    let mut k = FakeKernel::new(&h);
    let b = bind(&mut k, &h.root, vfs[0], &DriverChoice::Auto, &[]).unwrap();
    assert_eq!(b.driver, "xe-vfio-pci");
    assert_eq!(
        k.writes()[0],
        (
            "/sys/bus/pci/devices/0000:03:10.0/driver_override",
            "xe-vfio-pci"
        )
    );
    // igb VFs never get it.
    let g = FakeHost::new("ops-auto-igb");
    let igb = g.igb_with_vfs(1);
    g.installed_module("kernel/drivers/vfio/pci/xe/xe-vfio-pci.ko.zst");
    assert_eq!(
        auto_driver(&g.root, &PciFunction::read(&g.root, igb[0]).unwrap()),
        "vfio-pci"
    );
}

#[test]
fn unbind_clears_the_override_and_leaves_a_no_autoprobe_vf_unbound() {
    let h = FakeHost::new("ops-unbind");
    let vfs = h.igb_with_vfs(1);
    h.pci_driver("vfio-pci");
    let mut k = FakeKernel::new(&h);
    bind(&mut k, &h.root, vfs[0], &DriverChoice::Auto, &[]).unwrap();
    let mut k = FakeKernel::new(&h);
    let u = unbind(&mut k, &h.root, vfs[0]).unwrap();
    assert_eq!(
        k.writes(),
        [
            ("/sys/bus/pci/devices/0000:01:10.0/driver_override", "\n"),
            (
                "/sys/bus/pci/devices/0000:01:10.0/driver/unbind",
                "0000:01:10.0"
            ),
            ("/sys/bus/pci/drivers_probe", "0000:01:10.0"),
        ]
    );
    assert_eq!(u.before.as_deref(), Some("vfio-pci"));
    assert_eq!(u.driver, None);
    assert!(u.no_autoprobe);
    let f = PciFunction::read(&h.root, vfs[0]).unwrap();
    assert_eq!(f.driver_override, None);
}

#[test]
fn unbind_refuses_a_vf_a_vm_holds() {
    let h = FakeHost::new("ops-unbind-busy");
    let vfs = h.igb_with_vfs(1);
    h.bind(vfs[0], "vfio-pci");
    let _c = claim_vf(&h.root, vfs[0], "vm one").unwrap();
    let mut k = FakeKernel::new(&h);
    let e = unbind(&mut k, &h.root, vfs[0]).unwrap_err();
    assert!(e.to_string().contains("in use by tessera vm one"), "{e}");
    assert!(k.log.is_empty());
}

#[test]
fn profile_reads_and_writes_exactly_the_documented_files() {
    let h = FakeHost::new("ops-profile");
    let vfs = h.xe_dgpu(2);
    let p = read_profile(&h.root, vfs[1]).unwrap();
    assert_eq!(p.name, "vf2");
    assert_eq!((p.exec_quantum_ms, p.preempt_timeout_us), (0, 0));
    assert_eq!(p.priority, "low");
    assert_eq!(p.priorities, ["low", "normal"]);
    assert!(!p.priority_writable);
    let mut k = FakeKernel::new(&h);
    let change = ProfileChange {
        exec_quantum_ms: Some(25),
        preempt_timeout_us: Some(500_000),
        priority: None,
    };
    let after = set_profile(&mut k, &h.root, vfs[1], &change).unwrap();
    let admin = "/sys/bus/pci/devices/0000:03:00.0/sriov_admin";
    assert_eq!(
        k.writes(),
        [
            (
                format!("{admin}/vf2/profile/exec_quantum_ms").as_str(),
                "25"
            ),
            (
                format!("{admin}/vf2/profile/preempt_timeout_us").as_str(),
                "500000"
            ),
        ]
    );
    assert_eq!(
        (after.exec_quantum_ms, after.preempt_timeout_us),
        (25, 500_000)
    );
    // The PF's own profile: its priority may be set, to high too.
    let mut k = FakeKernel::new(&h);
    let pf_change = ProfileChange {
        priority: Some("high".into()),
        ..Default::default()
    };
    let p = set_profile(&mut k, &h.root, "03:00.0".parse().unwrap(), &pf_change).unwrap();
    assert_eq!(p.name, "pf");
    assert_eq!(
        k.writes(),
        [(
            format!("{admin}/pf/profile/sched_priority").as_str(),
            "high"
        )]
    );
}

#[test]
fn profile_refuses_what_the_kernel_would() {
    let h = FakeHost::new("ops-profile-bad");
    let vfs = h.xe_dgpu(1);
    let mut k = FakeKernel::new(&h);
    let prio = |p: &str| ProfileChange {
        priority: Some(p.into()),
        ..Default::default()
    };
    let e = set_profile(&mut k, &h.root, vfs[0], &prio("normal")).unwrap_err();
    assert!(matches!(e, HostError::PriorityReadOnly { .. }), "{e}");
    assert!(
        e.to_string().contains(".bulk_profile/sched_priority"),
        "{e}"
    );
    let admin = "bus/pci/devices/0000:03:00.0/sriov_admin/vf1/profile/sched_priority";
    std::fs::set_permissions(
        h.root.sys.join(admin),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = set_profile(&mut k, &h.root, vfs[0], &prio("high")).unwrap_err();
    assert!(
        e.to_string()
            .contains("--priority high is not offered for 0000:03:10.0: choose one of low, normal"),
        "{e}"
    );
    assert!(k.log.is_empty());
    // No sriov_admin: say where it comes from.
    let g = FakeHost::new("ops-profile-igb");
    let igb = g.igb_with_vfs(1);
    let e = read_profile(&g.root, igb[0]).unwrap_err();
    assert!(
        e.to_string()
            .contains("0000:01:00.0 (driver igb) has no sriov_admin directory")
            && e.to_string().contains("6.19"),
        "{e}"
    );
    g.add(&FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00));
    let e = read_profile(&g.root, "00:03.0".parse().unwrap()).unwrap_err();
    assert!(matches!(e, HostError::NotSriovFunction(_)), "{e}");
}
