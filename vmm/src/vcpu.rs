//! vCPUs: setup for each boot mode, and the per-thread run loop.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::thread::JoinHandle;

use arch::cpuid::{CpuTopology, configure_cpuid};
use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE, Msrs, kvm_fpu, kvm_mp_state, kvm_run,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use log::{error, warn};

use crate::control::{Controller, StopReason};
use crate::exit::{ExitAction, handle_exit};
use crate::platform::Platform;
use crate::stats::ExitStats;

/// How many times in a row KVM_RUN may fail with EFAULT (0.5 ms apart)
/// before the VM is stopped: about a second.
const EFAULT_RETRIES: u32 = 2000;

/// vCPU errors.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed during setup.
    #[error("vCPU {cpu}: KVM refused to {what}: {err}")]
    Setup {
        /// Which vCPU.
        cpu: u32,
        /// What was being done.
        what: &'static str,
        /// The ioctl error.
        err: kvm_ioctls::Error,
    },
    /// CPUID shaping failed.
    #[error("vCPU {0}: {1}")]
    Cpuid(u32, arch::cpuid::CpuidError),
    /// Mapping kvm_run failed.
    #[error("vCPU {0}: cannot map its kvm_run page: {1}")]
    Map(u32, std::io::Error),
    /// Starting the thread failed.
    #[error("cannot start the thread of vCPU {0}: {1}")]
    Spawn(u32, std::io::Error),
}

/// How a vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuStart {
    /// Linux 64-bit boot protocol (BSP).
    Linux64 {
        /// Entry point.
        entry: u64,
        /// Zero page (in RSI).
        zero_page: u64,
    },
    /// Multiboot v1 entry (BSP).
    Multiboot {
        /// Entry point.
        entry: u64,
        /// Boot information (in EBX).
        info: u64,
    },
    /// PVH entry (BSP).
    Pvh {
        /// Entry point.
        entry: u64,
        /// hvm_start_info (in EBX).
        start_info: u64,
    },
    /// Real mode at cs:ip, runnable at once (test guests; every vCPU).
    Real {
        /// Segment.
        cs: u16,
        /// Offset.
        ip: u16,
    },
    /// Long mode at rip, runnable at once (test guests; every vCPU).
    Long {
        /// Entry.
        rip: u64,
    },
    /// The architectural reset state (firmware at 0xffff_fff0), BSP.
    FirmwareReset,
    /// An application processor waiting for INIT/SIPI from the BSP.
    WaitForSipi,
}

/// A read-only second mapping of a vCPU's `kvm_run` page.
///
/// kvm-ioctls hands out a port exit's data as one slice of `count * size`
/// bytes and drops `size`, so a `rep insb` of four bytes looks like one
/// 32-bit access. Reading `io.size` through this separate mapping (its own
/// virtual address, never borrowed by Rust) recovers it without aliasing
/// the slice the exit holds.
struct RunView {
    ptr: NonNull<kvm_run>,
    len: usize,
}

// SAFETY: the mapping is shared memory owned by this struct; it is only
// accessed with volatile loads and stores of plain integers.
unsafe impl Send for RunView {}

impl RunView {
    fn new(fd: &VcpuFd, cpu: u32) -> Result<Self, VcpuError> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: mapping one shared page of the vCPU fd at offset 0, which
        // KVM backs with this vCPU's kvm_run; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VcpuError::Map(cpu, std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(ptr.cast::<kvm_run>())
            .ok_or_else(|| VcpuError::Map(cpu, std::io::Error::other("null mapping")))?;
        Ok(Self { ptr, len: page })
    }

    /// Width of one port access of the current KVM_EXIT_IO.
    fn io_size(&self) -> usize {
        let run = self.ptr.as_ptr();
        // SAFETY: `run` points at a live, page-sized, readable mapping of
        // kvm_run; the io member of the exit union is plain integers, valid
        // for any bit pattern, and is read with a volatile copy.
        let io = unsafe { std::ptr::addr_of!((*run).__bindgen_anon_1.io).read_volatile() };
        usize::from(io.size)
    }

    /// Where the kick handler writes `immediate_exit`.
    fn immediate_exit(&self) -> *mut u8 {
        // SAFETY: only computes the field's address inside the live mapping.
        unsafe { std::ptr::addr_of_mut!((*self.ptr.as_ptr()).immediate_exit) }
    }
}

thread_local! {
    /// This vCPU thread's `kvm_run.immediate_exit` (null on other threads
    /// and once the vCPU has stopped), set by [`KickTarget`].
    static IMMEDIATE_EXIT: std::cell::Cell<*mut u8> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// While alive, kicks of this thread set the vCPU's `immediate_exit`, so a
/// kick that lands between the stop check and `KVM_RUN` makes `KVM_RUN`
/// return at once (EINTR) instead of being lost. Cleared on drop (also
/// when the thread unwinds), before the mapping goes away.
struct KickTarget;

impl KickTarget {
    fn arm(view: &RunView) -> Self {
        IMMEDIATE_EXIT.with(|c| c.set(view.immediate_exit()));
        KickTarget
    }
}

impl Drop for KickTarget {
    fn drop(&mut self) {
        let _ = IMMEDIATE_EXIT.try_with(|c| c.set(std::ptr::null_mut()));
    }
}

impl Drop for RunView {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One vCPU, configured and ready to run on its own thread.
pub struct Vcpu {
    index: u32,
    fd: VcpuFd,
    run_view: RunView,
}

impl std::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcpu")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

// LAPIC register offsets and delivery modes for LINT0/LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

impl Vcpu {
    /// Create vCPU `index` and set it up to start as `start`; its CPUID
    /// address width is clamped to `phys_bits` when given.
    pub fn new(
        kvm: &Kvm,
        vm: &VmFd,
        index: u32,
        cpu_count: u32,
        start: VcpuStart,
        phys_bits: Option<u8>,
    ) -> Result<Self, VcpuError> {
        let setup = |what: &'static str| {
            move |err| VcpuError::Setup {
                cpu: index,
                what,
                err,
            }
        };
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(setup("create the vCPU"))?;
        let run_view = RunView::new(&fd, index)?;

        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(setup("report its supported CPUID"))?;
        configure_cpuid(
            &mut cpuid,
            &CpuTopology {
                cpu_index: index,
                cpu_count,
            },
        )
        .map_err(|e| VcpuError::Cpuid(index, e))?;
        if let Some(bits) = phys_bits {
            arch::cpuid::limit_phys_bits(cpuid.as_mut_slice(), bits);
        }
        // The TSC-deadline timer (CPUID.1:ECX[24]) is not advertised: with
        // it, L2 guests under the testbed's iommufd L1 kernel crashed or
        // stalled in the APIC timer path (3 of 4 pass-through checks
        // failed; 4 of 4 passed without it), so Linux uses the LAPIC's
        // one-shot mode, as it did in every passing run before.
        fd.set_cpuid2(&cpuid).map_err(setup("set CPUID"))?;

        let msrs = Msrs::from_entries(&arch::msr::boot_msrs()).map_err(|_| VcpuError::Setup {
            cpu: index,
            what: "build the MSR list",
            err: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let written = fd.set_msrs(&msrs).map_err(setup("set the boot MSRs"))?;
        if written != msrs.as_slice().len() {
            warn!(
                "vCPU {index}: KVM accepted only {written} of {} boot MSRs",
                msrs.as_slice().len()
            );
        }

        // LINT0 delivers the PIC (ExtINT), LINT1 NMIs, as the BIOS would set them.
        let mut lapic = fd.get_lapic().map_err(setup("read its local APIC"))?;
        set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
        fd.set_lapic(&lapic).map_err(setup("set its local APIC"))?;

        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        fd.set_fpu(&fpu).map_err(setup("set the FPU state"))?;

        let base = fd
            .get_sregs()
            .map_err(setup("read its segment registers"))?;
        let (regs, sregs, runnable) = match start {
            VcpuStart::Linux64 { entry, zero_page } => (
                arch::regs::long_mode_regs(entry, zero_page),
                arch::regs::long_mode_sregs(&base),
                false,
            ),
            VcpuStart::Pvh { entry, start_info } => (
                arch::regs::pvh_regs(entry, start_info),
                arch::regs::protected_mode_sregs(&base),
                false,
            ),
            // The PVH state (flat 32-bit protected mode, paging off) with
            // the multiboot registers.
            VcpuStart::Multiboot { entry, info } => (
                kvm_bindings::kvm_regs {
                    rax: u64::from(firmware::multiboot::BOOTLOADER_MAGIC),
                    ..arch::regs::pvh_regs(entry, info)
                },
                arch::regs::protected_mode_sregs(&base),
                false,
            ),
            VcpuStart::Real { cs, ip } => (
                arch::regs::real_mode_regs(u64::from(ip)),
                arch::regs::real_mode_sregs(&base, cs),
                true,
            ),
            VcpuStart::Long { rip } => (
                arch::regs::long_mode_regs(rip, 0),
                arch::regs::long_mode_sregs(&base),
                true,
            ),
            VcpuStart::FirmwareReset => (
                arch::regs::firmware_reset_regs(),
                arch::regs::firmware_reset_sregs(&base),
                false,
            ),
            VcpuStart::WaitForSipi => {
                return Ok(Self {
                    index,
                    fd,
                    run_view,
                });
            }
        };
        fd.set_sregs(&sregs)
            .map_err(setup("set its segment registers"))?;
        fd.set_regs(&regs).map_err(setup("set its registers"))?;
        if runnable && index != 0 {
            // Test guests start every vCPU at the entry instead of INIT/SIPI.
            fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(setup("make it runnable"))?;
        }
        Ok(Self {
            index,
            fd,
            run_view,
        })
    }

    /// Run on a new thread until the VM stops; the thread holds `ram`
    /// (guest memory is unmapped only after every vCPU thread, even one
    /// that never stopped, has let go of it) and `exited` (dropped when the
    /// thread ends, however it ends).
    pub fn spawn(
        self,
        platform: Arc<Platform>,
        ctl: Arc<Controller>,
        ram: vm_memory::GuestMemoryMmap,
        exited: std::sync::mpsc::Sender<()>,
        filter: VcpuFilter,
    ) -> Result<VcpuThread, VcpuError> {
        install_kick_handler();
        let index = self.index;
        let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let tid_in = tid.clone();
        let join = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let _exited = exited;
                let _ram = ram;
                // SAFETY: gettid has no preconditions.
                tid_in.store(
                    unsafe { libc::gettid() },
                    std::sync::atomic::Ordering::Relaxed,
                );
                if let Err(e) = crate::seccomp::apply_vcpu(filter.seccomp) {
                    ctl.stop(StopReason::Fatal {
                        cpu: index,
                        message: e.to_string(),
                    });
                    return ExitStats::default();
                }
                if let Some(nr) = filter.test_syscall.filter(|_| index == 0) {
                    // SAFETY: a test hook: a system call without arguments
                    // (the seccomp filter is expected to stop it).
                    unsafe { libc::syscall(nr) };
                }
                self.run(&platform, &ctl)
            })
            .map_err(|e| VcpuError::Spawn(index, e))?;
        Ok(VcpuThread { index, join, tid })
    }

    fn run(mut self, platform: &Platform, ctl: &Controller) -> ExitStats {
        let _kick = KickTarget::arm(&self.run_view);
        let mut stats = ExitStats::new(log::log_enabled!(log::Level::Debug));
        crate::stats::mark_first_entry();
        let mut efaults = 0u32;
        while !ctl.is_stopping() {
            let action = match self.fd.run() {
                Ok(exit) => {
                    efaults = 0;
                    // Writes the guest made before this exit come first.
                    platform.drain_coalesced();
                    stats.count(&exit);
                    let io_size = self.run_view.io_size();
                    handle_exit(exit, io_size, &platform.buses, platform)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    continue;
                }
                // A passed-through BAR the host just blocked (the guest
                // turned memory decode off or put the function in D3hot):
                // the kernel zaps the BAR's mapping when it sees the
                // guest's write, and the platform removes the memory slot a
                // moment later, after which the access exits to the bus and
                // reads all-ones. Retry for a while rather than end the VM.
                Err(e) if e.errno() == libc::EFAULT && efaults < EFAULT_RETRIES => {
                    efaults += 1;
                    std::thread::sleep(std::time::Duration::from_micros(500));
                    continue;
                }
                Err(e) if e.errno() == libc::EFAULT => ExitAction::Fatal(format!(
                    "KVM_RUN failed: {e}: the guest kept accessing memory the host cannot map (a passed-through BAR of a device in D3hot or with memory decode off, whose slot the guest keeps reaching)"
                )),
                Err(e) => ExitAction::Fatal(explain_run_error(&e)),
            };
            match action {
                ExitAction::Continue => {}
                ExitAction::PowerOff => ctl.stop(StopReason::PowerOff),
                ExitAction::Reset => ctl.stop(StopReason::Reset),
                ExitAction::Fatal(msg) => {
                    let message = format!("{msg}\n{}", self.describe_state());
                    error!("vCPU {}: {message}", self.index);
                    ctl.stop(StopReason::Fatal {
                        cpu: self.index,
                        message,
                    });
                }
            }
        }
        // What the guest wrote before the VM stopped reaches its devices.
        platform.drain_coalesced();
        stats.log(self.index);
        stats
    }

    /// Map the VM's coalesced MMIO ring through this vCPU.
    pub fn map_coalesced_ring(&self) -> std::io::Result<crate::coalesced::Ring> {
        crate::coalesced::Ring::map(&self.fd)
    }

    /// Registers for a crash report.
    fn describe_state(&self) -> String {
        let regs = match self.fd.get_regs() {
            Ok(r) => r,
            Err(e) => return format!("(registers unavailable: {e})"),
        };
        let mut s = format!(
            "rip={:#018x} rsp={:#018x} rflags={:#010x}\nrax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\nrsi={:#018x} rdi={:#018x} rbp={:#018x}\nr8={:#018x} r9={:#018x} r10={:#018x} r11={:#018x}\nr12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
            regs.rip,
            regs.rsp,
            regs.rflags,
            regs.rax,
            regs.rbx,
            regs.rcx,
            regs.rdx,
            regs.rsi,
            regs.rdi,
            regs.rbp,
            regs.r8,
            regs.r9,
            regs.r10,
            regs.r11,
            regs.r12,
            regs.r13,
            regs.r14,
            regs.r15
        );
        if let Ok(sr) = self.fd.get_sregs() {
            s.push_str(&format!(
                "\ncs={:#06x} base={:#x} ds={:#06x} ss={:#06x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                sr.cs.selector, sr.cs.base, sr.ds.selector, sr.ss.selector, sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer
            ));
            if regs.rip == 0xfff0 && sr.cs.base == 0xffff_0000 && sr.cr0 & 1 == 0 {
                s.push_str(
                    "\n(these are the reset vector's registers, not the fault's: KVM on AMD SVM resets the vCPU when it reports a shutdown)",
                );
            }
        }
        s
    }
}

fn set_lvt_mode(regs: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = regs[offset + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *x as std::os::raw::c_char;
    }
}

/// What a failed KVM_RUN means and what to try.
fn explain_run_error(e: &kvm_ioctls::Error) -> String {
    let hint = match e.errno() {
        libc::EIO => {
            "KVM could not continue the guest (most often firmware that needs SMM, which Tessera does not emulate: a Secure Boot OVMF build such as OVMF_CODE_4M.secboot.fd; use the build without SMM, OVMF_CODE_4M.fd with OVMF_VARS_4M.fd)"
        }
        libc::ENOEXEC => {
            "the vCPU's state is one the host CPU cannot run (an invalid guest state; under nested virtualization, a limit of the outer hypervisor)"
        }
        libc::ENOMEM => {
            "the host ran out of memory for the VM (free memory or use a smaller --memory)"
        }
        libc::EINVAL => {
            "KVM rejected the vCPU's state (a Tessera bug: run with --log-level debug and report it)"
        }
        libc::ENXIO => {
            "a device the guest used is gone from the host (a passed-through function removed or reset)"
        }
        _ => "unexpected: run with --log-level debug and report it",
    };
    format!("KVM_RUN failed: {e}: {hint}")
}

/// What a vCPU thread installs before it runs.
#[derive(Debug, Clone, Copy)]
pub struct VcpuFilter {
    /// `--seccomp`.
    pub seccomp: crate::seccomp::SeccompMode,
    /// `TESSERA_TEST_HOOK=vcpu-syscall=NR`.
    pub test_syscall: Option<i64>,
}

/// A running vCPU thread.
#[derive(Debug)]
pub struct VcpuThread {
    index: u32,
    join: JoinHandle<ExitStats>,
    tid: Arc<std::sync::atomic::AtomicI32>,
}

impl VcpuThread {
    /// Kick the thread out of `KVM_RUN` (once: the handler sets
    /// `immediate_exit`, so a kick is never lost).
    pub fn kick(&self) {
        use vmm_sys_util::signal::Killable;
        if !self.join.is_finished() {
            let _ = self.join.kill(kick_signal());
        }
    }

    /// True once the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Its exit counts (none if the thread panicked).
    pub fn join(self) -> ExitStats {
        self.join.join().unwrap_or_default()
    }

    /// "vcpu1 (thread 1234, in the kernel at kvm_vcpu_block)": what a report
    /// of a vCPU that will not stop says.
    pub fn describe(&self) -> String {
        let tid = self.tid.load(std::sync::atomic::Ordering::Relaxed);
        let wchan = std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan"))
            .ok()
            .filter(|w| !w.is_empty() && w != "0");
        match wchan {
            Some(w) => format!("vcpu{} (thread {tid}, in the kernel at {w})", self.index),
            None => format!("vcpu{} (thread {tid})", self.index),
        }
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A const-initialised thread-local without a destructor: reading it
    // allocates nothing and takes no lock, so it is safe in a handler.
    let p = IMMEDIATE_EXIT
        .try_with(std::cell::Cell::get)
        .unwrap_or(std::ptr::null_mut());
    if !p.is_null() {
        // SAFETY: `p` is this thread's kvm_run.immediate_exit, set by a live
        // KickTarget whose RunView mapping outlives it (the handler runs on
        // the thread it interrupts).
        unsafe { p.write_volatile(1) };
    }
}

fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler) {
            error!("cannot install the vCPU kick handler: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_errors_are_explained() {
        let m = explain_run_error(&kvm_ioctls::Error::new(libc::EIO));
        assert!(
            m.starts_with("KVM_RUN failed: ") && m.contains("SMM") && m.contains("OVMF_CODE_4M.fd"),
            "{m}"
        );
        let m = explain_run_error(&kvm_ioctls::Error::new(libc::ENOMEM));
        assert!(m.contains("--memory"), "{m}");
        let m = explain_run_error(&kvm_ioctls::Error::new(libc::EPERM));
        assert!(m.contains("report it"), "{m}");
    }

    #[test]
    fn lvt_mode_bits() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0] = 0x10;
        regs[APIC_LVT0 + 2] = 0x01; // mask bit 16
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x10);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT0 + 2] as u8, 0x01);
    }
}
