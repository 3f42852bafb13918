//! The subcommands against fake trees: exit statuses, writes, output.

use super::*;
use crate::host::fake::{FakeFn, FakeHost, FakeKernel};
use crate::host::{PciFunction, claim_vf};

fn create(pf: &str, count: u32) -> VfCommand {
    VfCommand::Create {
        pf: pf.into(),
        count,
        no_autoprobe: false,
        autoprobe: false,
    }
}

fn check(f: Option<&str>, memory: Option<&str>) -> VfCommand {
    VfCommand::Check {
        function: f.map(String::from),
        json: true,
        memory: memory.map(String::from),
    }
}

#[test]
fn create_bind_check_unbind_destroy_walks_a_vf_through_its_life() {
    let h = FakeHost::new("vf-life");
    h.igb_with_vfs(0);
    h.pci_driver("vfio-pci");
    let mut k = FakeKernel::new(&h);
    assert_eq!(run(&create("01:00.0", 2), &h.root, &mut k).unwrap(), 0);
    assert_eq!(
        run(&check(Some("01:10.0"), None), &h.root, &mut k).unwrap(),
        1
    );
    let bind = VfCommand::Bind {
        functions: vec!["01:10.0".into(), "0000:01:10.2".into()],
        driver: "auto".into(),
    };
    assert_eq!(run(&bind, &h.root, &mut k).unwrap(), 0);
    assert_eq!(
        run(&check(Some("01:10.0"), None), &h.root, &mut k).unwrap(),
        0
    );
    assert_eq!(
        run(&check(Some("01:00.0"), None), &h.root, &mut k).unwrap(),
        1
    );
    assert_eq!(run(&check(None, None), &h.root, &mut k).unwrap(), 0);
    let unbind = VfCommand::Unbind {
        functions: vec!["01:10.2".into()],
    };
    assert_eq!(run(&unbind, &h.root, &mut k).unwrap(), 0);
    let destroy = VfCommand::Destroy {
        pf: "01:00.0".into(),
    };
    assert_eq!(run(&destroy, &h.root, &mut k).unwrap(), 0);
    let paths: Vec<&str> = k.writes().iter().map(|(p, _)| *p).collect();
    assert_eq!(
        paths.first(),
        Some(&"/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs")
    );
    assert_eq!(
        paths.last(),
        Some(&"/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs")
    );
    // numvfs; override + probe for each unbound VF; override, unbind, probe; numvfs.
    assert_eq!(k.writes().len(), 1 + 2 * 2 + 3 + 1);
}

#[test]
fn bad_requests_are_errors_with_status_2_and_kernel_refusals_status_1() {
    let h = FakeHost::new("vf-errors");
    h.igb_with_vfs(1);
    let mut k = FakeKernel::new(&h);
    let e = run(&create("01:00.0", 0), &h.root, &mut k).unwrap_err();
    assert!(
        e.to_string()
            .contains("tessera vf destroy --pf 0000:01:00.0"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
    let e = run(&create("01:10.0", 1), &h.root, &mut k).unwrap_err();
    assert!(matches!(e, HostError::NotSriovPf(_)), "{e}");
    let e = run(&check(Some("zz"), None), &h.root, &mut k).unwrap_err();
    assert!(matches!(e, HostError::BadSpec(_)), "{e}");
    assert_eq!(
        run(&check(Some("01:1f.0"), None), &h.root, &mut k).unwrap(),
        1
    );
    assert_eq!(run(&check(None, Some("lots")), &h.root, &mut k).unwrap(), 2);
    k.fail.insert("sriov_numvfs".into(), libc::EIO);
    let e = run(&create("01:00.0", 3), &h.root, &mut k).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
}

#[test]
fn list_shows_pfs_vfs_groups_drivers_and_users() {
    let h = FakeHost::new("vf-list");
    let vfs = h.igb_with_vfs(3);
    h.bind(vfs[0], "vfio-pci");
    h.bind(vfs[1], "vfio-pci");
    h.add(&FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00).group(8));
    let _vm = claim_vf(&h.root, vfs[0], "vm gamer-1").unwrap();
    h.process(31337, "qemu-system-x86", &[(20, "/dev/vfio/3")]);
    let pfs = report::list(&h.root).unwrap();
    assert_eq!(pfs.len(), 1, "edu is no PF");
    let text = report::list_text(&h.root, &pfs);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "PF 0000:01:00.0 8086:10c9  driver igb  VFs 3/7  autoprobe off"
    );
    assert!(lines[1].starts_with("  VF 0000:01:10.0 8086:10ca  driver vfio-pci  group 2  in use by tessera vm gamer-1 (pid "), "{}", lines[1]);
    assert_eq!(
        lines[2],
        "  VF 0000:01:10.2 8086:10ca  driver vfio-pci  group 3  open in pid 31337 (qemu-system-x86)"
    );
    assert_eq!(
        lines[3],
        "  VF 0000:01:10.4 8086:10ca  driver none  group 4  free"
    );
    let j = report::list_json(&h.root, &pfs);
    assert_eq!(j["version"], 1);
    let pf = &j["pfs"][0];
    assert_eq!(
        (
            pf["address"].as_str(),
            pf["totalvfs"].as_u64(),
            pf["numvfs"].as_u64()
        ),
        (Some("0000:01:00.0"), Some(7), Some(3))
    );
    assert_eq!(pf["autoprobe"], false);
    assert_eq!(pf["name"], serde_json::Value::Null);
    assert_eq!(pf["vfs"][0]["iommu_group"], 2);
    assert!(
        pf["vfs"][0]["in_use_by"]
            .as_str()
            .unwrap()
            .contains("vm gamer-1")
    );
    assert_eq!(pf["vfs"][1]["holders"][0]["pid"], 31337);
    assert_eq!(pf["vfs"][2]["driver"], serde_json::Value::Null);
    assert_eq!(
        report::list_text(&FakeHost::new("vf-list-none").root, &[])
            .lines()
            .count(),
        1
    );
}

#[test]
fn list_names_known_intel_gpus_and_marks_sriov_admin() {
    let h = FakeHost::new("vf-list-xe");
    h.xe_dgpu(1);
    let pfs = report::list(&h.root).unwrap();
    let text = report::list_text(&h.root, &pfs);
    assert!(text.starts_with("PF 0000:03:00.0 8086:e20b Intel Battlemage (Arc B-series)  driver xe  VFs 1/12  autoprobe on  sriov_admin\n"), "{text}");
    let j = report::list_json(&h.root, &pfs);
    assert_eq!(j["pfs"][0]["name"], "Intel Battlemage (Arc B-series)");
    assert_eq!(j["pfs"][0]["sriov_admin"], true);
}

#[test]
fn check_output_is_one_line_per_finding_then_the_verdict() {
    let h = FakeHost::new("vf-check-text");
    let vfs = h.igb_with_vfs(1);
    h.bind(vfs[0], "vfio-pci");
    let r = crate::host::checks::check_host(&h.root, Some("01:10.0"), 0);
    assert_eq!(
        report::check_text(&h.root, &r),
        "ready: 0000:01:10.0 on vfio-pci, IOMMU group 2 (/dev/vfio/2)\n"
    );
    let j = report::check_json(&h.root, &r);
    assert_eq!(j["ready"], true);
    assert_eq!(j["target"]["group_dev"], "/dev/vfio/2");
    assert_eq!(j["target"]["sysfs"], "/sys/bus/pci/devices/0000:01:10.0");
    h.no_iommu();
    let r = crate::host::checks::check_host(&h.root, Some("01:00.0"), 0);
    let text = report::check_text(&h.root, &r);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("FAIL sriov-pf: 0000:01:00.0 is an SR-IOV physical function"),
        "{text}"
    );
    assert!(lines[1].starts_with("FAIL iommu: "), "{text}");
    assert!(lines[2].starts_with("FAIL driver: "), "{text}");
    assert_eq!(
        *lines.last().unwrap(),
        "not ready: 3 problems stop passthrough on 0000:01:00.0"
    );
    let j = report::check_json(&h.root, &r);
    assert_eq!(j["ready"], false);
    assert_eq!(j["findings"][1]["check"], "iommu");
    assert_eq!(j["findings"][1]["severity"], "error");
    assert_eq!(j["target"], serde_json::Value::Null);
}

#[test]
fn profile_shows_and_sets_an_xe_vf() {
    let h = FakeHost::new("vf-profile");
    let vfs = h.xe_dgpu(2);
    let mut k = FakeKernel::new(&h);
    let show = |f: &str| VfCommand::Profile {
        function: f.into(),
        exec_quantum_ms: None,
        preempt_timeout_us: None,
        priority: None,
        json: false,
    };
    assert_eq!(run(&show("03:10.2"), &h.root, &mut k).unwrap(), 0);
    assert!(k.log.is_empty(), "showing writes nothing");
    let set = VfCommand::Profile {
        function: "03:10.2".into(),
        exec_quantum_ms: Some(20),
        preempt_timeout_us: None,
        priority: None,
        json: true,
    };
    assert_eq!(run(&set, &h.root, &mut k).unwrap(), 0);
    assert_eq!(
        k.writes(),
        [(
            "/sys/bus/pci/devices/0000:03:00.0/sriov_admin/vf2/profile/exec_quantum_ms",
            "20"
        )]
    );
    let p = crate::host::ops::read_profile(&h.root, vfs[1]).unwrap();
    assert_eq!(
        report::profile_text(&p),
        "0000:03:10.2 (vf2 of PF 0000:03:00.0): exec_quantum_ms 20 ms, preempt_timeout_us 0 (unlimited), priority low (offered: low normal; read-only)"
    );
    let j = report::profile_json(&h.root, &p);
    assert_eq!(
        j["dir"],
        "/sys/bus/pci/devices/0000:03:00.0/sriov_admin/vf2/profile"
    );
    let f = PciFunction::read(&h.root, vfs[0]).unwrap();
    assert_eq!(f.vf_number(&h.root), Some(1));
}
