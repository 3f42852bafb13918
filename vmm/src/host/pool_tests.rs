//! Tests of `--device vf=PF` against fake trees and the fake kernel.

use std::sync::Barrier;

use super::super::fake::{FakeFn, FakeHost, FakeKernel};
use super::super::lock::lock_owner;
use super::*;

fn pf() -> PciAddress {
    "0000:01:00.0".parse().unwrap()
}

fn none() -> ProfileChange {
    ProfileChange::default()
}

/// The testbed's igb PF with `n` VFs on vfio-pci.
fn igb_bound(name: &str, n: u32) -> (FakeHost, Vec<PciAddress>) {
    let h = FakeHost::new(name);
    let vfs = h.igb_with_vfs(n);
    for &v in &vfs {
        h.bind(v, "vfio-pci");
    }
    (h, vfs)
}

#[test]
fn two_takes_get_different_vfs_and_a_third_on_a_two_vf_pf_names_both_holders() {
    let (h, vfs) = igb_bound("pool-two", 2);
    let mut k = FakeKernel::new(&h);
    let (a, ca) = take_vf(&mut k, &h.root, pf(), None, &none(), "vm a").unwrap();
    let (b, cb) = take_vf(&mut k, &h.root, pf(), None, &none(), "vm b").unwrap();
    assert_eq!((a, b), (vfs[0], vfs[1]));
    assert_eq!((ca.address, cb.address), (a, b));
    // Both were on vfio-pci already: nothing written.
    assert!(k.writes().is_empty(), "{:?}", k.writes());
    let me = std::process::id();
    assert_eq!(
        lock_owner(&h.root, a),
        Some(format!("tessera vm a (pid {me})"))
    );
    let e = take_vf(&mut k, &h.root, pf(), None, &none(), "vm c").unwrap_err();
    assert!(matches!(e, HostError::NoFreeVf { .. }), "{e}");
    let m = e.to_string();
    assert_eq!(
        m,
        format!(
            "no free VF on PF 0000:01:00.0: all 2 VFs are in use (0000:01:10.0 by tessera vm a (pid {me}), 0000:01:10.2 by tessera vm b (pid {me})): stop one of those VMs, or, once none of them runs, enable more with 'tessera vf create --pf 0000:01:00.0 --count N' (up to 7)"
        )
    );
    assert_eq!(m.lines().count(), 1);
    // A released VF is free for the next VM.
    drop(ca);
    let (c, cc) = take_vf(&mut k, &h.root, pf(), None, &none(), "vm c").unwrap();
    assert_eq!(c, vfs[0]);
    drop((cb, cc));
}

#[test]
fn a_claimed_vf_and_one_another_process_has_open_are_skipped() {
    let (h, vfs) = igb_bound("pool-skip", 3);
    let held = claim_vf(&h.root, vfs[0], "vm elsewhere").unwrap();
    // VF 2's group (3) is open in a QEMU that took no tessera lock.
    h.process(4242, "qemu-system-x86", &[(17, "/dev/vfio/3")]);
    let mut k = FakeKernel::new(&h);
    let (got, claim) = take_vf(&mut k, &h.root, pf(), None, &none(), "vm here").unwrap();
    assert_eq!(got, vfs[2]);
    // The skipped VF 2 was not left claimed.
    assert_eq!(lock_owner(&h.root, vfs[1]), None);
    let e = take_vf(&mut k, &h.root, pf(), None, &none(), "vm more").unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("0000:01:10.2 by pid 4242 (qemu-system-x86)")
            && m.contains("0000:01:10.0 by tessera vm elsewhere")
            && m.contains("0000:01:10.4 by tessera vm here"),
        "{m}"
    );
    drop((held, claim));
}

#[test]
fn a_vf_another_process_holds_is_skipped_until_that_process_dies() {
    let (h, vfs) = igb_bound("pool-proc", 2);
    let path = super::super::lock::vf_lock_path(&h.root, vfs[0]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "pid 1\nowner vm other\n").unwrap();
    let child = std::process::Command::new("flock")
        .args(["-x", "--close"])
        .arg(&path)
        .args(["sleep", "30"])
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("SKIP a_vf_another_process_holds...: flock(1) is not installed");
        return;
    };
    let t = std::time::Instant::now();
    while lock_owner(&h.root, vfs[0]).is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut k = FakeKernel::new(&h);
    let (got, claim) = take_vf(&mut k, &h.root, pf(), None, &none(), "vm here").unwrap();
    assert_eq!(got, vfs[1]);
    drop(claim);
    // SIGKILL: the kernel drops the flock, no cleanup needed.
    child.kill().unwrap();
    child.wait().unwrap();
    let (got, claim) = take_vf(&mut k, &h.root, pf(), None, &none(), "vm next").unwrap();
    assert_eq!(got, vfs[0]);
    drop(claim);
}

#[test]
fn vf_create_creates_vfs_on_a_pf_with_none_and_binds_the_one_taken() {
    let h = FakeHost::new("pool-create");
    h.igb_with_vfs(0);
    h.pci_driver("vfio-pci");
    let mut k = FakeKernel::new(&h);
    let e = take_vf(&mut k, &h.root, pf(), None, &none(), "vm a").unwrap_err();
    assert!(matches!(e, HostError::NoVfs { .. }));
    assert!(
        e.to_string()
            .contains("sriov_numvfs 0 of 7): add --vf-create N"),
        "{e}"
    );
    let e = take_vf(&mut k, &h.root, pf(), Some(8), &none(), "vm a").unwrap_err();
    assert_eq!(
        e.to_string(),
        "--vf-create 8 is more than 0000:01:00.0 offers (sriov_totalvfs 7)"
    );
    assert!(k.writes().is_empty());
    let (got, claim) = take_vf(&mut k, &h.root, pf(), Some(3), &none(), "vm a").unwrap();
    assert_eq!(got.to_string(), "0000:01:10.0");
    assert_eq!(
        k.writes(),
        [
            ("/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "3"),
            (
                "/sys/bus/pci/devices/0000:01:10.0/driver_override",
                "vfio-pci"
            ),
            ("/sys/bus/pci/drivers_probe", "0000:01:10.0"),
        ]
    );
    let f = PciFunction::read(&h.root, got).unwrap();
    assert_eq!(f.driver.as_deref(), Some("vfio-pci"));
    // With VFs present, --vf-create changes nothing.
    let mut k = FakeKernel::new(&h);
    let (next, claim2) = take_vf(&mut k, &h.root, pf(), Some(5), &none(), "vm b").unwrap();
    assert_eq!(next.to_string(), "0000:01:10.2");
    assert!(k.writes().iter().all(|(p, _)| !p.ends_with("sriov_numvfs")));
    drop((claim, claim2));
}

#[test]
fn a_vf_on_a_host_driver_is_rebound_to_vfio_pci() {
    let h = FakeHost::new("pool-rebind");
    let vfs = h.igb_with_vfs(1);
    h.bind(vfs[0], "igbvf");
    h.pci_driver("vfio-pci");
    let mut k = FakeKernel::new(&h);
    let (got, claim) = take_vf(&mut k, &h.root, pf(), None, &none(), "vm a").unwrap();
    assert_eq!(got, vfs[0]);
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
    let f = PciFunction::read(&h.root, got).unwrap();
    assert_eq!(f.driver.as_deref(), Some("vfio-pci"));
    drop(claim);
    // Released, it stays on vfio-pci for the next VM.
    let f = PciFunction::read(&h.root, got).unwrap();
    assert_eq!(f.driver.as_deref(), Some("vfio-pci"));
}

#[test]
fn a_failed_bind_releases_the_vf() {
    let h = FakeHost::new("pool-nobind");
    let vfs = h.igb_with_vfs(1);
    let mut k = FakeKernel::new(&h);
    let e = take_vf(&mut k, &h.root, pf(), None, &none(), "vm a").unwrap_err();
    assert!(matches!(e, HostError::DriverMissing { .. }), "{e}");
    assert_eq!(lock_owner(&h.root, vfs[0]), None);
}

#[test]
fn eight_threads_racing_for_seven_vfs_never_share_one() {
    let (h, vfs) = igb_bound("pool-race", 7);
    for round in 0..3 {
        let barrier = Barrier::new(8);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (h, barrier) = (&h, &barrier);
                    s.spawn(move || {
                        let mut k = FakeKernel::new(h);
                        barrier.wait();
                        take_vf(&mut k, &h.root, pf(), None, &none(), &format!("vm {i}"))
                    })
                })
                .collect();
            handles.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut got: Vec<PciAddress> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|(a, _)| *a))
            .collect();
        got.sort();
        assert_eq!(got, vfs, "round {round}: 7 VFs, each once");
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(failed.len(), 1, "round {round}");
        assert!(
            matches!(failed[0], HostError::NoFreeVf { .. }),
            "{}",
            failed[0]
        );
    }
}

#[test]
fn two_threads_creating_vfs_at_once_write_sriov_numvfs_once() {
    let h = FakeHost::new("pool-race-create");
    h.igb_with_vfs(0);
    h.pci_driver("vfio-pci");
    let barrier = Barrier::new(2);
    let (r1, r2) = std::thread::scope(|s| {
        let take = || {
            let mut k = FakeKernel::new(&h);
            barrier.wait();
            let r = take_vf(&mut k, &h.root, pf(), Some(2), &none(), "vm");
            let numvfs = k
                .writes()
                .iter()
                .filter(|(p, _)| p.ends_with("sriov_numvfs"))
                .count();
            (r, numvfs)
        };
        let a = s.spawn(take);
        let b = s.spawn(take);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(r1.1 + r2.1, 1, "one sriov_numvfs write in all");
    let (a, ca) = r1.0.unwrap();
    let (b, cb) = r2.0.unwrap();
    assert_ne!(a, b);
    drop((ca, cb));
}

#[test]
fn the_profile_is_written_for_the_vf_taken_and_refused_without_sriov_admin() {
    let h = FakeHost::new("pool-profile");
    let vfs = h.xe_dgpu(2);
    for &v in &vfs {
        h.bind(v, "vfio-pci");
    }
    let xe: PciAddress = "0000:03:00.0".parse().unwrap();
    let held = claim_vf(&h.root, vfs[0], "vm first").unwrap();
    let mut k = FakeKernel::new(&h);
    let change = ProfileChange {
        exec_quantum_ms: Some(20),
        preempt_timeout_us: Some(20000),
        priority: None,
    };
    let (got, claim) = take_vf(&mut k, &h.root, xe, None, &change, "vm a").unwrap();
    assert_eq!(got, vfs[1]);
    let admin = "/sys/bus/pci/devices/0000:03:00.0/sriov_admin/vf2/profile";
    assert_eq!(
        k.writes(),
        [
            (format!("{admin}/exec_quantum_ms").as_str(), "20"),
            (format!("{admin}/preempt_timeout_us").as_str(), "20000"),
        ]
    );
    drop((held, claim));

    let (g, gvfs) = igb_bound("pool-profile-igb", 1);
    let mut k = FakeKernel::new(&g);
    let e = take_vf(&mut k, &g.root, pf(), None, &change, "vm a").unwrap_err();
    assert!(matches!(e, HostError::NoSriovAdmin { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("0000:01:00.0 (driver igb) has no sriov_admin directory"),
        "{e}"
    );
    assert!(k.writes().is_empty());
    assert_eq!(lock_owner(&g.root, gvfs[0]), None);
}

#[test]
fn a_pf_that_is_missing_a_vf_or_without_sr_iov_is_refused_with_what_to_give() {
    let (h, vfs) = igb_bound("pool-pf", 1);
    h.add(&FakeFn::new("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00).group(7));
    let mut k = FakeKernel::new(&h);
    let take = |k: &mut FakeKernel, a: &str| {
        take_vf(k, &h.root, a.parse().unwrap(), None, &none(), "vm").unwrap_err()
    };
    let e = take(&mut k, "0000:05:00.0");
    assert!(matches!(e, HostError::NoSuchFunction { .. }), "{e}");
    let e = take(&mut k, "0000:00:03.0");
    assert_eq!(
        e.to_string(),
        "0000:00:03.0 is not an SR-IOV physical function (no sriov_totalvfs, or it is 0): give a PF's address; 'tessera vf list' shows them"
    );
    let e = take(&mut k, &vfs[0].to_string());
    assert_eq!(
        e.to_string(),
        "0000:01:10.0 is a VF of PF 0000:01:00.0, not a PF: vf= takes the PF and picks a free VF of it (--device vf=0000:01:00.0); to pass this VF itself, use --device 0000:01:10.0"
    );
}

/// Set in the children of the next test: the fake host's directory.
const CHILD_ENV: &str = "TESSERA_POOL_TEST_CHILD";

#[test]
fn processes_started_at_once_never_share_a_vf() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        // A child: wait for the start signal, take a VF, report it, and
        // hold it until the parent closes stdin.
        use std::io::{Read, Write};
        // Never outlive a parent that stopped listening.
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(3);
        });
        let dir = std::path::PathBuf::from(dir);
        while !dir.join("go").exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let root = HostRoot::under(&dir);
        let mut k = super::super::ops::SysfsKernel { modprobe: false };
        let r = take_vf(&mut k, &root, pf(), None, &none(), "vm child");
        let line = match &r {
            // On a line of its own (libtest's "test ... " has no newline).
            Ok((a, _)) => format!("\nTOOK {a}\n"),
            Err(e) => format!("\nERR {e}\n"),
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        return;
    }
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let (h, vfs) = igb_bound("pool-procs", 3);
    let me = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&me)
                .args([
                    "--exact",
                    "host::pool::tests::processes_started_at_once_never_share_a_vf",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &h.dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("the test binary runs again")
        })
        .collect();
    std::fs::write(h.dir.join("go"), "").unwrap();
    let mut reports = Vec::new();
    let mut outs = Vec::new();
    for c in &mut children {
        let mut out = BufReader::new(c.stdout.take().unwrap()).lines();
        let line = out
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("TOOK ") || l.starts_with("ERR "))
            .expect("each child reports");
        reports.push(line);
        outs.push(out);
    }
    // All four hold (or failed) at once; now let them go.
    for (c, out) in children.iter_mut().zip(outs) {
        drop(c.stdin.take());
        out.for_each(drop);
        assert!(c.wait().unwrap().success());
    }
    let mut took: Vec<String> = reports
        .iter()
        .filter_map(|l| l.strip_prefix("TOOK ").map(str::to_string))
        .collect();
    took.sort();
    let want: Vec<String> = vfs.iter().map(|a| a.to_string()).collect();
    assert_eq!(took, want, "{reports:?}");
    let errs: Vec<_> = reports.iter().filter(|l| l.starts_with("ERR ")).collect();
    assert_eq!(errs.len(), 1, "{reports:?}");
    assert!(
        errs[0].contains("no free VF on PF 0000:01:00.0: all 3 VFs are in use"),
        "{reports:?}"
    );
}
