//! `tessera vf` end to end on fake host trees (`TESSERA_HOST_ROOT`): exit
//! statuses, one-line errors, the files written, JSON that parses, and the
//! checks that depend on who runs them (file modes as uid 65534 through
//! setpriv, RLIMIT_MEMLOCK through the shell's ulimit, a real flock).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tests::images::{bzimage, write_temp};
use vmm::host::fake::{FakeFn, FakeHost};
use vmm::host::{PciAddress, claim_vf};

/// The `tessera` binary of this crate (Cargo builds it for these tests).
fn tessera_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tessera"))
}

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

/// `tessera run --kernel K ARGS` against the fake host `host` (KVM is
/// never reached on these paths, or `kvm` names a missing device).
fn run_vm(host: &FakeHost, args: &[&str], kvm: Option<&str>) -> Output {
    let kernel = write_temp("vf-pool.bzImage", &bzimage(&[0xf4]));
    let mut c = Command::new(tessera_bin());
    c.arg("run")
        .arg("--kernel")
        .arg(&kernel)
        .args(args)
        .env("TESSERA_HOST_ROOT", &host.dir)
        .stdin(Stdio::null());
    if let Some(k) = kvm {
        c.env("TESSERA_KVM_DEVICE", k);
    }
    c.output().expect("tessera runs")
}

/// The igb PF with both VFs on vfio-pci, and CAP_IPC_LOCK (so the
/// memlock check passes whatever this shell's limit).
fn igb_pool(name: &str) -> FakeHost {
    let h = igb(name);
    h.bind("0000:01:10.2".parse().unwrap(), "vfio-pci");
    h.cap_eff(1 << 14);
    h
}

#[test]
fn run_with_a_vf_pool_refuses_what_is_not_an_sr_iov_pf() {
    let h = igb_pool("cli-pool-pf");
    h.add(&FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00).group(7));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--device", "vf=0000:05:00.0"],
            "no PCI function 0000:05:00.0 on this host",
        ),
        (
            &["--device", "vf=00:03.0"],
            "0000:00:03.0 is not an SR-IOV physical function",
        ),
        (
            &["--device", "vf=/sys/bus/pci/devices/0000:01:10.0"],
            "0000:01:10.0 is a VF of PF 0000:01:00.0, not a PF",
        ),
        (&["--device", "vf=gpu0"], "'gpu0' is not a PCI function"),
        (&["--device", "vf="], "vf= needs the PF"),
    ];
    for (args, expect) in cases {
        assert_error(&run_vm(&h, args, None), 2, expect);
    }
}

#[test]
fn run_with_a_vf_pool_refuses_bad_profile_values_and_a_pf_without_sriov_admin() {
    let h = igb_pool("cli-pool-profile");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--device", "vf=01:00.0,exec-quantum-ms=fast"],
            "exec-quantum-ms=fast: use a whole number of milliseconds",
        ),
        (
            &["--device", "vf=01:00.0,preempt-timeout-us=4294967296"],
            "from 0 to 4294967295",
        ),
        (
            &["--device", "vf=01:00.0,priority=urgent"],
            "priority=urgent: use low, normal or high",
        ),
        (
            &["--device", "01:10.0,exec-quantum-ms=5"],
            "tessera vf profile 01:10.0 --exec-quantum-ms 5",
        ),
        (
            &["--device", "vf=01:00.0,exec-quantum-ms=20"],
            "0000:01:00.0 (driver igb) has no sriov_admin directory",
        ),
        (
            &["--vf-create", "2"],
            "--vf-create only makes sense with --device vf=PF",
        ),
        (
            &["--device", "vf=01:00.0", "--vf-create", "0"],
            "--vf-create must be at least 1",
        ),
        (
            &["--device", "vf=01:00.0", "--vf-create", "many"],
            "--vf-create",
        ),
    ];
    for (args, expect) in cases {
        assert_error(&run_vm(&h, args, None), 2, expect);
    }
    // Nothing was claimed on the way.
    assert!(text(&vf(&h, &["list"]).stdout).contains("group 2  free"));
}

#[test]
fn run_with_a_vf_pool_says_how_to_get_vfs_on_a_pf_with_none() {
    let h = FakeHost::new("cli-pool-create");
    h.igb_with_vfs(0);
    assert_error(
        &run_vm(&h, &["--device", "vf=01:00.0"], None),
        2,
        "PF 0000:01:00.0 has no VFs enabled (sriov_numvfs 0 of 7): add --vf-create N",
    );
    assert_error(
        &run_vm(&h, &["--device", "vf=01:00.0", "--vf-create", "8"], None),
        2,
        "--vf-create 8 is more than 0000:01:00.0 offers (sriov_totalvfs 7)",
    );
    assert_eq!(sys(&h, "bus/pci/devices/0000:01:00.0/sriov_numvfs"), "0");
    // A fake tree has no kernel to make the VFs: the count is written,
    // and no VF appearing is the kernel's failure (status 1).
    assert_error(
        &run_vm(&h, &["--device", "vf=01:00.0", "--vf-create", "3"], None),
        1,
        "0000:01:00.0: sriov_numvfs was set to 3 but no VF appeared",
    );
    assert_eq!(sys(&h, "bus/pci/devices/0000:01:00.0/sriov_numvfs"), "3");
}

#[test]
fn run_with_a_vf_pool_names_every_holder_when_no_vf_is_free() {
    let h = igb_pool("cli-pool-full");
    let a = claim_vf(&h.root, "0000:01:10.0".parse().unwrap(), "vm web-1").unwrap();
    let b = claim_vf(&h.root, "0000:01:10.2".parse().unwrap(), "vm web-2").unwrap();
    let me = std::process::id();
    assert_error(
        &run_vm(&h, &["--device", "vf=01:00.0"], None),
        2,
        &format!(
            "no free VF on PF 0000:01:00.0: all 2 VFs are in use (0000:01:10.0 by tessera vm web-1 (pid {me}), 0000:01:10.2 by tessera vm web-2 (pid {me})): stop one of those VMs, or, once none of them runs, enable more with 'tessera vf create --pf 0000:01:00.0 --count N' (up to 7)"
        ),
    );
    drop((a, b));
}

#[test]
fn run_with_a_vf_pool_takes_the_first_free_vf_before_kvm_and_releases_it_at_exit() {
    let h = igb_pool("cli-pool-take");
    let held = claim_vf(&h.root, "0000:01:10.0".parse().unwrap(), "vm first").unwrap();
    let out = run_vm(
        &h,
        &["--device", "vf=01:00.0", "--log-level", "info"],
        Some("/nonexistent/kvm"),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "took VF 0000:01:10.2 (VF 2 of 2 on PF 0000:01:00.0, vfio-pci) for vm with kernel "
        ),
        "{err}"
    );
    // The VF passed the passthrough checks; KVM came next.
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("tessera: error: ") && l.contains("/nonexistent/kvm")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Released when tessera exited.
    assert!(
        text(&vf(&h, &["list"]).stdout)
            .contains("0000:01:10.2 8086:10ca  driver vfio-pci  group 3  free")
    );
    drop(held);
}
