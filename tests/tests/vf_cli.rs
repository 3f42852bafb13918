//! `tessera vf` end to end on fake host trees (`TESSERA_HOST_ROOT`): exit
//! statuses, one-line errors, the files written, JSON that parses, and the
//! checks that depend on who runs them (file modes as uid 65534 through
//! setpriv, RLIMIT_MEMLOCK through the shell's ulimit, a real flock).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tests::tessera_bin;
use vmm::host::fake::{FakeFn, FakeHost};
use vmm::host::{PciAddress, claim_vf};

fn vf(host: &FakeHost, args: &[&str]) -> Output {
    Command::new(tessera_bin())
        .arg("vf")
        .args(args)
        .env("TESSERA_HOST_ROOT", &host.dir)
        .stdin(Stdio::null())
        .output()
        .expect("tessera runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit status `code`, and exactly one `tessera: error:` line naming `expect`.
fn assert_error(out: &Output, code: i32, expect: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr {err:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("tessera: error: "), "{err:?}");
    assert!(err.contains(expect), "{err:?} should mention {expect:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn sys(host: &FakeHost, rel: &str) -> String {
    std::fs::read_to_string(host.root.sys.join(rel))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The testbed's igb PF with 2 VFs, the first on vfio-pci.
fn igb(name: &str) -> FakeHost {
    let h = FakeHost::new(name);
    let vfs = h.igb_with_vfs(2);
    h.bind(vfs[0], "vfio-pci");
    h
}

#[test]
fn list_prints_the_pf_and_its_vfs_and_json_that_parses() {
    let h = igb("cli-list");
    let out = vf(&h, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.starts_with("PF 0000:01:00.0 8086:10c9  driver igb  VFs 2/7  autoprobe off\n"),
        "{s}"
    );
    assert!(
        s.contains("  VF 0000:01:10.0 8086:10ca  driver vfio-pci  group 2  free\n"),
        "{s}"
    );
    let out = vf(&h, &["list", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json parses");
    assert_eq!(j["pfs"][0]["totalvfs"], 7);
    assert_eq!(j["pfs"][0]["vfs"][1]["address"], "0000:01:10.2");
}

#[test]
fn check_exits_0_when_ready_1_when_not_and_2_for_bad_input() {
    let h = igb("cli-check");
    let out = vf(&h, &["check", "01:10.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stdout),
        "ready: 0000:01:10.0 on vfio-pci, IOMMU group 2 (/dev/vfio/2)\n"
    );

    let out = vf(&h, &["check", "0000:01:00.0"]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(
        s.contains("FAIL sriov-pf: 0000:01:00.0 is an SR-IOV physical function with 2 VFs enabled"),
        "{s}"
    );
    assert!(
        s.contains("FAIL driver: 0000:01:00.0 is bound to igb, not vfio-pci"),
        "{s}"
    );

    let out = vf(&h, &["check", "01:10.2", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json parses");
    assert_eq!(j["ready"], false);
    assert_eq!(j["findings"][0]["check"], "driver");
    assert!(
        j["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("tessera vf bind 0000:01:10.2")
    );

    let out = vf(&h, &["check", "01:1f.0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("FAIL function: no PCI function 0000:01:1f.0"));
    assert_error(&vf(&h, &["check", "gpu0"]), 2, "not a PCI function");
    assert_error(&vf(&h, &["check", "--memory", "lots"]), 2, "invalid size");
    assert_error(&vf(&h, &["frobnicate"]), 2, "tessera vf --help");
}

#[test]
fn check_without_an_iommu_names_the_kernel_command_line() {
    let h = igb("cli-iommu");
    h.no_iommu();
    h.proc_file("cmdline", "root=/dev/sda1\n");
    let out = vf(&h, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("add 'intel_iommu=on iommu=pt' to the kernel command line"));
}

#[test]
fn create_and_destroy_write_the_pf_files() {
    let h = FakeHost::new("cli-create");
    h.igb_with_vfs(0);
    h.sys_file(
        "bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe",
        "1\n",
    );
    let out = vf(&h, &["create", "--pf", "01:00.0", "--count", "3"]);
    // A fake tree has no kernel to make the VFs: only the files change.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sys(&h, "bus/pci/devices/0000:01:00.0/sriov_numvfs"), "3");
    assert_eq!(
        sys(&h, "bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe"),
        "0"
    );
    let out = vf(&h, &["destroy", "--pf", "01:00.0"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "0000:01:00.0: 3 VFs removed (sriov_numvfs 0)\n"
    );
    assert_eq!(sys(&h, "bus/pci/devices/0000:01:00.0/sriov_numvfs"), "0");
    assert_error(
        &vf(&h, &["create", "--pf", "01:00.0", "--count", "8"]),
        2,
        "sriov_totalvfs 7",
    );
    assert_error(
        &vf(&h, &["create", "--pf", "01:00.0", "--count", "0"]),
        2,
        "tessera vf destroy",
    );
    assert_error(
        &vf(&h, &["create", "--pf", "01:10.0", "--count", "1"]),
        2,
        "no PCI function 0000:01:10.0",
    );
    assert_error(&vf(&h, &["create", "--count", "1"]), 2, "--pf");
}

#[test]
fn bind_refuses_a_pf_and_says_how_to_get_vfio_pci() {
    let h = FakeHost::new("cli-bind");
    h.igb_with_vfs(1);
    assert_error(
        &vf(&h, &["bind", "01:00.0"]),
        2,
        "is an SR-IOV physical function",
    );
    assert_error(&vf(&h, &["bind", "01:10.0"]), 2, "has no vfio_pci module");
    h.installed_module("kernel/drivers/vfio/pci/vfio-pci.ko.xz");
    assert_error(
        &vf(&h, &["bind", "01:10.0"]),
        2,
        "run 'modprobe vfio_pci' as root",
    );
    assert_error(
        &vf(&h, &["bind", "01:10.0", "--driver", "nouveau"]),
        2,
        "--driver",
    );
    h.pci_driver("vfio-pci");
    // A fake tree never binds: the override is written, then the result checked.
    let out = vf(&h, &["bind", "01:10.0"]);
    assert_error(&out, 1, "the kernel did not bind 0000:01:10.0 to vfio-pci");
    assert_eq!(
        sys(&h, "bus/pci/devices/0000:01:10.0/driver_override"),
        "vfio-pci"
    );
    assert_eq!(sys(&h, "bus/pci/drivers_probe"), "0000:01:10.0");
}

#[test]
fn a_vf_held_by_a_vm_shows_in_list_and_is_not_unbound() {
    let h = igb("cli-lock");
    let addr: PciAddress = "0000:01:10.0".parse().unwrap();
    let claim = claim_vf(&h.root, addr, "vm cli-test").unwrap();
    let out = vf(&h, &["list"]);
    let want = format!(
        "group 2  in use by tessera vm cli-test (pid {})",
        std::process::id()
    );
    assert!(text(&out.stdout).contains(&want), "{}", text(&out.stdout));
    assert_error(
        &vf(&h, &["unbind", "01:10.0"]),
        2,
        "in use by tessera vm cli-test",
    );
    drop(claim);
    assert!(text(&vf(&h, &["list"]).stdout).contains("group 2  free"));
}

#[test]
fn profile_writes_the_sriov_admin_files_and_checks_values() {
    let h = FakeHost::new("cli-profile");
    h.xe_dgpu(2);
    let admin = "bus/pci/devices/0000:03:00.0/sriov_admin";
    let out = vf(
        &h,
        &[
            "profile",
            "03:10.0",
            "--exec-quantum-ms",
            "25",
            "--preempt-timeout-us",
            "500000",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        sys(&h, &format!("{admin}/vf1/profile/exec_quantum_ms")),
        "25"
    );
    assert_eq!(
        sys(&h, &format!("{admin}/vf1/profile/preempt_timeout_us")),
        "500000"
    );
    assert!(
        text(&out.stdout)
            .starts_with("0000:03:10.0 (vf1 of PF 0000:03:00.0): exec_quantum_ms 25 ms")
    );
    let out = vf(&h, &["profile", "03:10.2", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("profile --json parses");
    assert_eq!(j["function"], "vf2");
    assert_error(
        &vf(&h, &["profile", "03:10.0", "--priority", "normal"]),
        2,
        "read-only",
    );
    assert_error(
        &vf(
            &h,
            &["profile", "03:10.0", "--exec-quantum-ms", "4294967296"],
        ),
        2,
        "--exec-quantum-ms",
    );
    assert_error(
        &vf(&h, &["profile", "03:10.0", "--priority", "urgent"]),
        2,
        "--priority",
    );
    let g = igb("cli-profile-igb");
    assert_error(
        &vf(&g, &["profile", "01:10.0"]),
        2,
        "has no sriov_admin directory",
    );
}

#[test]
fn memlock_below_the_guest_ram_fails_the_check() {
    let h = igb("cli-memlock");
    let cmd = format!(
        "ulimit -l 64 && exec {} vf check 01:10.0 --memory 1G",
        tessera_bin().display()
    );
    let out = Command::new("sh")
        .args(["-c", &cmd])
        .env("TESSERA_HOST_ROOT", &h.dir)
        .output()
        .expect("sh runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("FAIL memlock: RLIMIT_MEMLOCK is 64K but VFIO must lock all 1G of guest RAM"),
        "{s}"
    );
    h.cap_eff(1 << 14);
    let out = Command::new("sh")
        .args(["-c", &cmd])
        .env("TESSERA_HOST_ROOT", &h.dir)
        .output()
        .expect("sh runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "CAP_IPC_LOCK lifts the limit: {}",
        text(&out.stdout)
    );
}

fn readable_by_all(p: &Path) -> bool {
    p.ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005))
}

#[test]
fn vfio_nodes_are_checked_for_the_user_who_runs_tessera() {
    if vmm::host::preflight::euid() != 0 {
        eprintln!(
            "SKIP vfio_nodes_are_checked...: needs root to run tessera as uid 65534 with setpriv"
        );
        return;
    }
    let bin = tessera_bin();
    if !readable_by_all(&bin) || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!(
            "SKIP vfio_nodes_are_checked...: setpriv missing, or {} not readable by uid 65534",
            bin.display()
        );
        return;
    }
    let h = igb("cli-perm");
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["vf", "check", "01:10.0"])
            .env("TESSERA_HOST_ROOT", &h.dir)
            .output()
            .expect("setpriv runs")
    };
    let out = as_nobody();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let s = text(&out.stdout);
    assert!(
        s.contains(
            "FAIL permissions: permission denied for uid 65534: /dev/vfio/2 (owner 0:0, mode 0600)"
        ),
        "{s}"
    );
    assert!(
        s.contains("chown 65534") && s.contains("SUBSYSTEM==\"vfio\""),
        "{s}"
    );
    h.node_mode("vfio/2", 0o666);
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // iommufd mode: the cdev and /dev/iommu are enough without the container.
    h.node_mode("vfio/2", 0o600);
    h.node_mode("vfio/vfio", 0o600);
    h.add(
        &FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00)
            .group(6)
            .cdev(1)
            .driver("vfio-pci"),
    );
    h.node_mode("vfio/6", 0o600);
    h.node_mode("vfio/devices/vfio1", 0o666);
    h.node_mode("iommu", 0o666);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["vf", "check", "00:03.0"])
        .env("TESSERA_HOST_ROOT", &h.dir)
        .output()
        .expect("setpriv runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}
