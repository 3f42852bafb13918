//! seccomp: what each thread of a running VM may ask of the kernel.
//!
//! Two allow-lists, derived by tracing the testbed's boot and passthrough
//! suites (`TESSERA_STRACE_DIR`, see `tests/testbed/syscalls.py`) and kept
//! here in one readable place:
//! - [`MAIN`]: the main thread (event loop, set-up and teardown) and the
//!   worker threads (VFIO teardown, the MSI relays of `x-no-kvm-msi`, the
//!   panic watchdog). It is installed on every thread of the process at
//!   once (`SECCOMP_FILTER_FLAG_TSYNC`) before the first vCPU starts, so
//!   threads created later inherit it.
//! - [`VCPU`]: each vCPU thread adds this narrower list on top before its
//!   first `KVM_RUN` (every entry is also in [`MAIN`]: a thread's
//!   filters all have to allow a call).
//!
//! A call outside the list: with `--seccomp on` (the default) the thread
//! gets SIGSYS, whose handler writes `tessera: thread 'vcpu0' made a
//! forbidden system call N (name)` to stderr and ends the process with
//! status [`EXIT_SECCOMP`]; with `--seccomp log` the kernel logs it (audit
//! type 1326, `dmesg` / `journalctl -k`, `syscall=N`) and lets it through,
//! for finding a missing entry; `--seccomp off` installs nothing.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Exit status after a forbidden system call (as a signal death by SIGSYS
/// would report it: 128 + 31).
pub const EXIT_SECCOMP: i32 = 159;

/// `--seccomp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// Forbidden calls end the process (the default of `tessera run`).
    On,
    /// Forbidden calls are logged by the kernel and allowed.
    Log,
    /// No filter (the default of `VmConfig::new`, for in-process tests).
    #[default]
    Off,
}

/// Errors installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter did not compile (a bug in the lists).
    #[error("seccomp filter for {0} threads: {1}")]
    Build(&'static str, seccompiler::BackendError),
    /// The kernel refused it.
    #[error(
        "cannot install the seccomp filter of the {0} thread: {1} (use --seccomp off on a kernel without seccomp filters)"
    )]
    Apply(&'static str, seccompiler::Error),
}

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name, stringify!($name)),)*]
    };
}

/// The main and worker threads: the calls traced in the boot and
/// passthrough suites (set-up of a restarted VM included), plus thread
/// creation's and the kernel's own (`restart_syscall`).
#[rustfmt::skip]
pub const MAIN: &[(libc::c_long, &str)] = syscalls![
    // files: kernel/firmware/VARS/logs, sysfs, VFIO and KVM device files
    SYS_read, SYS_write, SYS_pread64, SYS_pwrite64, SYS_lseek, SYS_close,
    SYS_openat, SYS_fstat, SYS_newfstatat, SYS_statx, SYS_getdents64,
    SYS_readlink, SYS_fcntl, SYS_flock, SYS_fsync, SYS_fdatasync, SYS_linkat,
    SYS_unlink, SYS_ioctl,
    // virtio-blk workers: guest pages straight to and from the image,
    // discard and write-zeroes
    SYS_preadv, SYS_pwritev, SYS_fallocate,
    // memory: guest RAM, BAR mappings, the allocator, thread stacks
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_madvise, SYS_mremap, SYS_brk,
    // the event loop, timers, signals
    SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_wait, SYS_eventfd2,
    SYS_signalfd4, SYS_timerfd_create, SYS_timerfd_settime, SYS_poll,
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack,
    SYS_tgkill, SYS_getpid, SYS_gettid, SYS_prlimit64,
    // threads
    SYS_clone, SYS_clone3, SYS_set_robust_list, SYS_rseq, SYS_futex,
    SYS_sched_getaffinity, SYS_sched_yield, SYS_prctl, SYS_exit,
    SYS_exit_group,
    // time, randomness (hash maps)
    SYS_nanosleep, SYS_clock_nanosleep, SYS_clock_gettime, SYS_getrandom,
    SYS_restart_syscall,
    // vCPU threads add their own filter (filters only ever narrow)
    SYS_seccomp,
];

/// The vCPU threads, from their first `KVM_RUN` on: port and MMIO exits
/// (console writes, VARS writes with `fdatasync`, VFIO region accesses,
/// KVM routing and memory-slot updates), the allocator, the kick signal,
/// and what the SIGSYS handler and a panic need (`prctl`, `write`,
/// `exit_group`, waking the watchdog with `futex`).
#[rustfmt::skip]
pub const VCPU: &[(libc::c_long, &str)] = syscalls![
    SYS_read, SYS_write, SYS_pread64, SYS_pwrite64, SYS_close, SYS_fcntl,
    SYS_fdatasync, SYS_ioctl, SYS_eventfd2,
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_madvise, SYS_mremap, SYS_brk,
    SYS_futex, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack,
    SYS_gettid, SYS_sched_yield, SYS_nanosleep, SYS_clock_nanosleep,
    SYS_clock_gettime, SYS_prctl, SYS_restart_syscall, SYS_exit,
    SYS_exit_group,
    // hash-map seeds (std's RandomState), e.g. in --log-level debug paths
    SYS_getrandom,
];

/// The virtio device workers (`blk0`, `net0`, `rng`), from their first
/// activation on: waiting on doorbells and taps, moving guest pages to and
/// from images (raw: preadv/pwritev; qcow2: imago's pread/pwrite, growth
/// and sync), discard and write-zeroes, entropy reads, the allocator, and
/// what a panic needs. Every entry is also in [`MAIN`].
#[rustfmt::skip]
pub const WORKER: &[(libc::c_long, &str)] = syscalls![
    SYS_read, SYS_write, SYS_pread64, SYS_pwrite64, SYS_preadv, SYS_pwritev,
    SYS_lseek, SYS_fstat, SYS_newfstatat, SYS_statx, SYS_fcntl, SYS_close,
    SYS_fsync, SYS_fdatasync, SYS_fallocate,
    SYS_epoll_wait, SYS_epoll_ctl,
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_madvise, SYS_mremap, SYS_brk,
    SYS_futex, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack,
    SYS_gettid, SYS_sched_yield, SYS_nanosleep, SYS_clock_nanosleep,
    SYS_clock_gettime, SYS_getrandom, SYS_prctl, SYS_restart_syscall,
    SYS_exit, SYS_exit_group,
    // answered EACCES by WORKER_REFUSED (glibc reads
    // /proc/sys/vm/overcommit_memory when it trims a thread's malloc arena,
    // and copes when it cannot)
    SYS_openat,
];

/// Calls a worker thread gets an error for instead of the process dying:
/// a second filter, whose EACCES wins over the first one's allow.
#[rustfmt::skip]
const WORKER_REFUSED: &[(libc::c_long, &str)] = syscalls![SYS_openat];

/// Calls no list allows, named for the SIGSYS message.
#[rustfmt::skip]
const OTHERS: &[(libc::c_long, &str)] = syscalls![
    SYS_open, SYS_creat, SYS_socket, SYS_connect, SYS_bind, SYS_listen, SYS_accept4,
    SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_execve, SYS_execveat,
    SYS_fork, SYS_vfork, SYS_kill, SYS_ptrace, SYS_mount, SYS_umount2, SYS_reboot,
    SYS_setuid, SYS_setgid, SYS_chroot, SYS_pivot_root, SYS_unshare, SYS_setns,
    SYS_init_module, SYS_finit_module, SYS_bpf, SYS_perf_event_open, SYS_keyctl,
    SYS_process_vm_readv, SYS_process_vm_writev, SYS_mkdir, SYS_rmdir, SYS_rename,
    SYS_renameat2, SYS_unlinkat, SYS_chmod, SYS_chown, SYS_mincore,
    SYS_memfd_create, SYS_userfaultfd, SYS_io_uring_setup, SYS_getuid, SYS_uname,
];

static ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once a filter is installed in this process.
pub fn is_active() -> bool {
    ACTIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The name of syscall `nr` if this module knows it (else "?").
pub fn syscall_name(nr: i64) -> &'static str {
    MAIN.iter()
        .chain(VCPU)
        .chain(WORKER)
        .chain(OTHERS)
        .find(|(n, _)| *n == nr)
        .map_or("?", |(_, name)| name.trim_start_matches("SYS_"))
}

fn program(
    kind: &'static str,
    list: &[(libc::c_long, &str)],
    mode: SeccompMode,
) -> Result<BpfProgram, SeccompError> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        list.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Log,
        _ => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| SeccompError::Build(kind, e))?;
    filter.try_into().map_err(|e| SeccompError::Build(kind, e))
}

/// Install [`MAIN`] on every thread of the process (call once, before the
/// first vCPU thread starts).
pub fn apply_main(mode: SeccompMode) -> Result<(), SeccompError> {
    // Once per process: a VM restarted by --on-reset restart keeps it.
    if mode == SeccompMode::Off || is_active() {
        return Ok(());
    }
    install_sigsys_handler();
    let prog = program("main", MAIN, mode)?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| SeccompError::Apply("main", e))?;
    ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
    log::info!(
        "seccomp: {} calls allowed on the main and worker threads ({mode:?})",
        MAIN.len()
    );
    Ok(())
}

/// Add [`VCPU`] to the calling vCPU thread.
pub fn apply_vcpu(mode: SeccompMode) -> Result<(), SeccompError> {
    if mode == SeccompMode::Off {
        return Ok(());
    }
    let prog = program("vCPU", VCPU, mode)?;
    seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Apply("vCPU", e))
}

/// Add [`WORKER`] to the calling device worker thread.
pub fn apply_worker(mode: SeccompMode) -> Result<(), SeccompError> {
    if mode == SeccompMode::Off {
        return Ok(());
    }
    // The refusals first: the allow-list does not allow seccomp() itself.
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = WORKER_REFUSED
        .iter()
        .map(|(nr, _)| (*nr, Vec::new()))
        .collect();
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build("device worker", e))?;
    let refuse: BpfProgram = refuse
        .try_into()
        .map_err(|e| SeccompError::Build("device worker", e))?;
    seccompiler::apply_filter(&refuse).map_err(|e| SeccompError::Apply("device worker", e))?;
    let prog = program("device worker", WORKER, mode)?;
    seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Apply("device worker", e))
}

/// `si_syscall` of a SIGSYS siginfo (the `_sigsys` member of the union:
/// `void *_call_addr; int _syscall; unsigned _arch;` after the three ints
/// of the header and their padding, at byte 16 on x86-64).
fn sigsys_syscall(info: *const libc::siginfo_t) -> i32 {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS; the int at
    // byte 24 (16 + the 8-byte _call_addr) is _syscall.
    unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() }
}

/// Appends `s` to `buf` at `*len` (no allocation: this runs in a signal
/// handler).
fn push(buf: &mut [u8], len: &mut usize, s: &[u8]) {
    for &b in s {
        if *len < buf.len() {
            buf[*len] = b;
            *len += 1;
        }
    }
}

fn push_decimal(buf: &mut [u8], len: &mut usize, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while n > 0 {
        n -= 1;
        push(buf, len, &digits[n..=n]);
    }
}

extern "C" fn sigsys_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let nr = sigsys_syscall(info);
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes plus NUL into `name`.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(16);
    let mut buf = [0u8; 256];
    let mut len = 0;
    push(&mut buf, &mut len, b"tessera: thread '");
    push(&mut buf, &mut len, &name[..name_len]);
    push(&mut buf, &mut len, b"' made a forbidden system call ");
    push_decimal(&mut buf, &mut len, u64::try_from(nr).unwrap_or(0));
    push(&mut buf, &mut len, b" (");
    push(&mut buf, &mut len, syscall_name(i64::from(nr)).as_bytes());
    push(
        &mut buf,
        &mut len,
        b"); stopping (a missing entry in vmm/src/seccomp.rs? --seccomp log lets it through and logs it)\n",
    );
    // SAFETY: write(2) of an initialised buffer, then _exit; both are
    // async-signal-safe and in every allow-list.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::_exit(EXIT_SECCOMP);
    }
}

fn install_sigsys_handler() {
    if let Err(e) = vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, sigsys_handler) {
        log::warn!("cannot install the SIGSYS handler: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_calls_are_all_allowed_on_main_too() {
        for (nr, name) in VCPU.iter().chain(WORKER) {
            assert!(
                MAIN.iter().any(|(m, _)| m == nr),
                "{name} is in VCPU but not in MAIN: the main filter, inherited by vCPU threads, would forbid it"
            );
        }
    }

    #[test]
    fn a_worker_cannot_open_files_and_survives_trying() {
        let r = std::thread::spawn(|| {
            apply_worker(SeccompMode::On).unwrap();
            std::fs::File::open("/proc/sys/vm/overcommit_memory").map(|_| ())
        })
        .join()
        .unwrap();
        assert_eq!(
            r.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied,
            "EACCES, not a dead process"
        );
    }

    #[test]
    fn filters_compile_and_names_resolve() {
        for mode in [SeccompMode::On, SeccompMode::Log] {
            assert!(!program("main", MAIN, mode).unwrap().is_empty());
            assert!(!program("vCPU", VCPU, mode).unwrap().is_empty());
            assert!(!program("worker", WORKER, mode).unwrap().is_empty());
        }
        assert_eq!(syscall_name(libc::SYS_ioctl), "ioctl");
        assert_eq!(syscall_name(libc::SYS_reboot), "reboot");
        assert_eq!(syscall_name(100_000), "?");
        for (nr, name) in OTHERS {
            assert!(
                !MAIN.iter().chain(VCPU).any(|(m, _)| m == nr),
                "{name} is allowed, not an other"
            );
        }
    }

    #[test]
    fn decimal_formatting_without_allocation() {
        let mut b = [0u8; 32];
        let mut n = 0;
        push_decimal(&mut b, &mut n, 0);
        push(&mut b, &mut n, b" ");
        push_decimal(&mut b, &mut n, 1234567);
        assert_eq!(&b[..n], b"0 1234567");
    }
}
