//! The `tessera` command end to end: exit statuses, one-line errors,
//! signals, CI boot mode. Guests are stand-in bzImages (`tests::images`)
//! running on the real `/dev/kvm`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tests::images::{bzimage, write_temp};
use tests::kvm_available;

/// The `tessera` binary of this crate (Cargo builds it for these tests).
fn tessera_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tessera"))
}

/// `startup_64`: print 'B', then ACPI S5 (SLP_EN, SLP_TYP 0) on PM1a_CNT 0x604.
/// `mov $0x3f8,%dx; mov $'B',%al; out; mov $0x604,%dx; mov $0x2000,%ax; out %ax,(%dx); 1: hlt; jmp 1b`
const POWER_OFF: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0xb0, 0x42, 0xee, 0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x20, 0x66,
    0xef, 0xf4, 0xeb, 0xfd,
];
/// `startup_64`: print 'R', then write 0x06 to the reset control port 0xCF9.
const RESET: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0xb0, 0x52, 0xee, 0x66, 0xba, 0xf9, 0x0c, 0xb0, 0x06, 0xee, 0xf4, 0xeb,
    0xfd,
];
/// `startup_64`: print 'S', then spin forever.
const SPIN: &[u8] = &[0x66, 0xba, 0xf8, 0x03, 0xb0, 0x53, 0xee, 0xeb, 0xfe];

fn kernel(name: &str, code: &[u8]) -> PathBuf {
    write_temp(name, &bzimage(code))
}

fn tessera(args: &[&str]) -> Command {
    let mut c = Command::new(tessera_bin());
    c.arg("run").args(args).stdin(Stdio::null());
    c
}

fn output(args: &[&str]) -> Output {
    tessera(args).output().expect("tessera runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_usage_error(args: &[&str], env: &[(&str, &str)], expect: &str) {
    let mut c = tessera(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("tessera runs");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {err:?}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?}: exactly one line: {err:?}"
    );
    assert!(err.starts_with("tessera: error: "), "{args:?}: {err:?}");
    assert!(
        err.contains(expect),
        "{args:?}: {err:?} should mention {expect:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn bad_input_gets_one_line_and_status_2() {
    let good = kernel("ok.bzImage", POWER_OFF);
    let good = good.to_str().unwrap();
    let junk = write_temp("junk", b"this is not a kernel");
    let junk = junk.to_str().unwrap();
    let big_initrd = write_temp("big.initrd", &vec![0u8; 24 << 20]);
    let big_initrd = big_initrd.to_str().unwrap();
    let qcow2 = write_temp(
        "disk.qcow2",
        b"QFI\xfb\0\0\0\x03 and the rest of a qcow2 header",
    );
    let qcow2 = qcow2.to_str().unwrap();
    let tiny = write_temp("tiny.raw", b"short");
    let tiny = tiny.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--kernel", "/nonexistent/vmlinuz"], "no such file"),
        (&["--kernel", "/tmp"], "directory"),
        (&["--kernel", junk], "not a Linux kernel"),
        (&["--kernel", good, "--memory", "lots"], "invalid size"),
        (&["--kernel", good, "--memory", "4M"], "too small"),
        (&["--kernel", good, "--memory", "128T"], "too large"),
        (&["--kernel", good, "--memory", "1T"], "more than this host"),
        (
            &["--kernel", good, "--memory", "16M", "--initrd", big_initrd],
            "too small for this kernel and initrd",
        ),
        (&["--kernel", good, "--cpus", "0"], "at least 1"),
        (&["--kernel", good, "--cpus", "100000"], "--cpus 100000"),
        (&["--kernel", good, "--serial", "tcp:1234"], "--serial"),
        (&["--kernel", good, "--on-reset", "reboot"], "--on-reset"),
        (&["--kernel", good, "--timeout", "soon"], "--timeout"),
        (&["--kernel", good, "--frobnicate"], "--frobnicate"),
        (
            &["--kernel", good, "--device", "0000:99:1f.7"],
            "no PCI function 0000:99:1f.7",
        ),
        (
            &["--kernel", good, "--device", "0000:00:01.0,frob"],
            "unknown option 'frob'",
        ),
        (
            &[
                "--kernel",
                good,
                "--device",
                "01:00.0,rom=/x.rom,rombar=off",
            ],
            "contradict",
        ),
        (&["--kernel", good, "--device", ",rom=/x"], "--device"),
        (&["--kernel", good, "--vfio", "fancy"], "--vfio"),
        (
            &["--kernel", good, "--debug-exit-port", "0xf4,size=3"],
            "--debug-exit-port",
        ),
        (
            &["--kernel", good, "--disk", "path=/nonexistent/disk.raw"],
            "disk /nonexistent/disk.raw: cannot open it",
        ),
        (
            &["--kernel", good, "--disk", "path=x.vdi,format=vdi"],
            "qemu-img convert",
        ),
        (&["--kernel", good, "--disk", "path=x,cache=fast"], "--disk"),
        (
            &["--kernel", good, "--virtio-console", "stdout"],
            "--virtio-console",
        ),
        (
            &["--kernel", good, "--net", "mac=52:54:00:00:00:01"],
            "give tap=NAME",
        ),
        (
            &[
                "--kernel",
                good,
                "--disk",
                &format!("path={qcow2},format=raw"),
            ],
            "it is a qcow2 image",
        ),
        (&["--kernel", good, "--disk", qcow2], "disk"),
        (
            &["--kernel", good, "--disk", tiny],
            "smaller than one 512-byte sector",
        ),
        (&[], "--kernel"),
    ];
    for (args, expect) in cases {
        assert_usage_error(args, &[], expect);
    }
    assert_usage_error(
        &["--kernel", good],
        &[("TESSERA_KVM_DEVICE", "/nonexistent/kvm")],
        "does not exist",
    );
    assert_usage_error(
        &["--kernel", good],
        &[("TESSERA_KVM_DEVICE", "/tmp")],
        "cannot open /tmp",
    );
}

/// A PCI function of this host without an IOMMU group (the IOMMU is off,
/// as on our build machines) is refused before anything is opened, with
/// the kernel command line that turns the IOMMU on.
#[test]
fn passthrough_without_an_iommu_says_how_to_turn_it_on() {
    let Some(func) = std::fs::read_dir("/sys/bus/pci/devices")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.join("iommu_group").exists())
    else {
        eprintln!(
            "SKIP passthrough_without_an_iommu_says_how_to_turn_it_on: every PCI function here has an IOMMU group"
        );
        return;
    };
    if !kvm_available("passthrough_without_an_iommu_says_how_to_turn_it_on") {
        return;
    }
    let k = kernel("iommu.bzImage", POWER_OFF);
    let func = func.to_str().unwrap();
    assert_usage_error(
        &["--kernel", k.to_str().unwrap(), "--device", func],
        &[],
        "iommu=on iommu=pt",
    );
}

#[test]
fn poweroff_exits_0_and_reset_exits_3() {
    if !kvm_available("poweroff_exits_0_and_reset_exits_3") {
        return;
    }
    let k = kernel("poweroff.bzImage", POWER_OFF);
    let out = output(&["--kernel", k.to_str().unwrap(), "--memory", "64M"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "B");

    let k = kernel("reset.bzImage", RESET);
    let out = output(&["--kernel", k.to_str().unwrap(), "--memory", "64M"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "R");
}

#[test]
fn restart_on_reset_boots_again() {
    if !kvm_available("restart_on_reset_boots_again") {
        return;
    }
    let k = kernel("restart.bzImage", RESET);
    let out = output(&[
        "--kernel",
        k.to_str().unwrap(),
        "--memory",
        "64M",
        "--on-reset",
        "restart",
        "--timeout",
        "2",
    ]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "stderr: {}",
        text(&out.stderr)
    );
    let boots = text(&out.stdout).matches('R').count();
    assert!(boots >= 2, "the guest booted {boots} times");
}

#[test]
fn expect_serial_and_timeout() {
    if !kvm_available("expect_serial_and_timeout") {
        return;
    }
    let k = kernel("spin.bzImage", SPIN);
    let k = k.to_str().unwrap();
    let t = Instant::now();
    let out = output(&[
        "--kernel",
        k,
        "--memory",
        "64M",
        "--expect-serial",
        "S",
        "--timeout",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(20));

    let out = output(&["--kernel", k, "--memory", "64M", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(124));
    let err = text(&out.stderr);
    assert!(
        err.contains("timed out after 1s") && err.contains("| S"),
        "{err}"
    );
}

fn wait_for(path: &Path, what: &str, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(what)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what:?} never appeared in {}", path.display());
}

#[test]
fn sigterm_and_sigint_stop_the_vm() {
    if !kvm_available("sigterm_and_sigint_stop_the_vm") {
        return;
    }
    let k = kernel("spin-sig.bzImage", SPIN);
    for (sig, code) in [(libc_sig::SIGTERM, 143), (libc_sig::SIGINT, 130)] {
        let log = write_temp(&format!("serial-{sig}.log"), b"");
        let serial = format!("file={}", log.display());
        let mut child = tessera(&[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--cpus",
            "2",
            "--serial",
            &serial,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera");
        wait_for(&log, "S", Duration::from_secs(30));
        let t = Instant::now();
        let rc = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status();
        assert!(rc.is_ok_and(|s| s.success()));
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(code), "signal {sig}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "stopping took {:?}",
            t.elapsed()
        );
    }
}

/// Signal numbers (x86_64 Linux).
mod libc_sig {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

/// `startup_64`: print 'P', write 1 to port 0xe0 (the test hook's panic
/// port), then spin.
const PANIC_PORT_WRITE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0xb0, 0x50, 0xee, 0x66, 0xba, 0xe0, 0x00, 0xb0, 0x01, 0xee, 0xeb, 0xfe,
];

#[test]
fn a_device_model_panic_stops_the_vm_with_status_1() {
    if !kvm_available("a_device_model_panic_stops_the_vm_with_status_1") {
        return;
    }
    let k = kernel("panic-port.bzImage", PANIC_PORT_WRITE);
    let t0 = Instant::now();
    let out = tessera(&[
        "--kernel",
        k.to_str().unwrap(),
        "--memory",
        "64M",
        "--timeout",
        "30",
    ])
    .env("TESSERA_TEST_HOOK", "panic-port=0xe0")
    .output()
    .expect("tessera runs");
    let took = t0.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(text(&out.stdout), "P");
    assert!(
        err.contains("tessera: thread 'vcpu0' panicked at")
            && err.contains("test hook: device model panic"),
        "{err}"
    );
    assert!(
        err.contains("the VM was stopped because thread 'vcpu0' panicked"),
        "{err}"
    );
    // The whole run (machine set-up, guest, panic, shutdown) within 2 s.
    assert!(took < Duration::from_secs(2), "took {took:?}: {err}");

    // An unknown hook is refused with its name.
    let out = tessera(&["--kernel", k.to_str().unwrap(), "--memory", "64M"])
        .env("TESSERA_TEST_HOOK", "bogus")
        .output()
        .expect("tessera runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown hook 'bogus'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_forbidden_system_call_names_the_thread_and_the_call() {
    if !kvm_available("a_forbidden_system_call_names_the_thread_and_the_call") {
        return;
    }
    let k = kernel("seccomp.bzImage", POWER_OFF);
    let run = |seccomp: &str| {
        tessera(&[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--seccomp",
            seccomp,
        ])
        .env(
            "TESSERA_TEST_HOOK",
            format!("vcpu-syscall={}", libc_sys_socket()),
        )
        .output()
        .expect("tessera runs")
    };
    let out = run("on");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(159), "stderr: {err}");
    assert!(
        err.contains("tessera: thread 'vcpu0' made a forbidden system call 41 (socket)"),
        "{err}"
    );
    // log: the call goes through (the kernel logs it), the guest powers off.
    let out = run("log");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "B");
    let out = run("off");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // The default is on, and a guest that only does its job is not stopped.
    let out = output(&["--kernel", k.to_str().unwrap(), "--memory", "64M"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

/// socket(2) on x86-64.
fn libc_sys_socket() -> i64 {
    41
}

#[test]
fn landlock_and_user_close_the_rest_of_the_host() {
    if !kvm_available("landlock_and_user_close_the_rest_of_the_host") {
        return;
    }
    let k = kernel("jail.bzImage", POWER_OFF);
    let k = k.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["--kernel", k, "--memory", "64M", "--log-level", "info"];
        args.extend_from_slice(extra);
        tessera(&args)
            .env("TESSERA_TEST_HOOK", "open-after-jail=/etc/passwd")
            .output()
            .expect("tessera runs")
    };
    // Landlock (the default): the guest runs, a file outside the VM's set
    // cannot be opened. A kernel without Landlock says so instead.
    let out = run(&[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    if err.contains("landlock: enforced") {
        assert!(
            err.contains("opening /etc/passwd after the jail: Err(Os { code: 13"),
            "{err}"
        );
    } else {
        assert!(err.contains("landlock: not supported"), "{err}");
    }
    // --landlock off: the same open succeeds.
    let out = run(&["--landlock", "off"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("opening /etc/passwd after the jail: Ok"),
        "{err}"
    );

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = run(&["--user", "nobody"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "stderr: {err}");
        assert!(
            err.contains("user: now nobody")
                && err.contains("effective capabilities 0000000000000000"),
            "{err}"
        );
    }
    assert_usage_error(
        &["--kernel", k, "--user", "nobody", "--on-reset", "restart"],
        &[],
        "--user cannot be combined with --on-reset restart",
    );
    assert_usage_error(
        &["--kernel", k, "--user", "no-such-user-x"],
        &[],
        "no user 'no-such-user-x'",
    );
    assert_usage_error(
        &["--kernel", k, "--landlock", "maybe"],
        &[],
        "invalid --landlock 'maybe'",
    );
    assert_usage_error(
        &["--kernel", k, "--seccomp", "maybe"],
        &[],
        "invalid --seccomp 'maybe'",
    );
}
