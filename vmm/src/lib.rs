//! Tessera: a KVM virtual machine monitor for VMs with their own slice of a
//! real GPU.
//!
//! [`run`] boots a [`VmConfig`] and returns how it ended; the `tessera`
//! binary is a thin command line over it.

#![deny(missing_docs)]

pub mod boot;
pub mod bus;
pub mod coalesced;
pub mod config;
pub mod console;
pub mod control;
pub mod event_loop;
pub mod exit;
pub mod host;
pub mod interrupt;
pub mod jail;
pub mod kvm;
pub mod logger;
pub mod memory;
pub mod panic;
pub mod pci_space;
pub mod platform;
mod q35;
pub mod seccomp;
pub mod slots;
pub mod stats;
pub mod test_hook;
pub mod vcpu;
pub mod vf;
pub mod vfio;
pub mod virtio;
pub mod vm;
pub mod vm_ops;

use std::sync::Arc;

pub use config::{BootSource, CpuMode, OnReset, SerialConfig, SharedBuffer, VmConfig};
pub use control::StopReason;
pub use vm::Report;

/// Exit status: the guest powered off (or `--expect-serial` matched).
pub const EXIT_OK: u8 = 0;
/// Exit status: the VM failed (triple fault, KVM error) or the VMM did.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: bad input (command line, files, host setup).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the guest reset the machine (with `--on-reset exit`).
pub const EXIT_RESET: u8 = 3;
/// Exit status: `--timeout` expired (as timeout(1)).
pub const EXIT_TIMEOUT: u8 = 124;

/// The most vCPUs Tessera supports: xAPIC IDs are 8 bits and 0xff is the
/// broadcast ID.
pub const MAX_CPUS: u32 = 254;

/// Everything that can stop Tessera before or while running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// KVM could not be used.
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Loading the kernel.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// Setting up a vCPU.
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    /// Console setup.
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    /// Building ACPI tables.
    #[error("ACPI tables: {0}")]
    Acpi(#[from] firmware::acpi::AcpiError),
    /// Two devices claim the same addresses (a Tessera bug).
    #[error("device layout: {0}")]
    Bus(#[from] bus::BusError),
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(String),
    /// Writing setup data into guest memory failed.
    #[error("cannot write {0} into guest memory: {1}")]
    GuestWrite(&'static str, String),
    /// A host resource could not be had.
    #[error("cannot {0}: {1}")]
    Io(&'static str, std::io::Error),
    /// The firmware images cannot be used.
    #[error(transparent)]
    Firmware(#[from] firmware::ovmf::OvmfError),
    /// A device could not be set up (a Tessera bug, or a resource limit).
    #[error("device setup: {0}")]
    Device(String),
    /// A passed-through function cannot be used.
    #[error(transparent)]
    Passthrough(#[from] vfio::PassthroughError),
    /// No VF could be taken for `--device vf=PF`.
    #[error(transparent)]
    VfPool(host::HostError),
    /// The PCI address space cannot hold the devices.
    #[error(transparent)]
    PciSpace(#[from] pci_space::PciSpaceError),
    /// Privileges could not be dropped.
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    /// A seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// A virtio device could not be set up.
    #[error(transparent)]
    Virtio(#[from] virtio::VirtioError),
}

impl Error {
    /// True when the user can fix it by changing the input or the host
    /// setup (exit status [`EXIT_USAGE`]); false for Tessera or KVM faults.
    pub fn is_user_error(&self) -> bool {
        use boot::BootError as B;
        use kvm::KvmError as K;
        match self {
            Error::Config(_)
            | Error::Firmware(_)
            | Error::Memory(_)
            | Error::Console(console::ConsoleError::OpenFile(..)) => true,
            Error::Kvm(K::Missing(_) | K::PermissionDenied(_) | K::MissingCap(_) | K::Open(..)) => {
                true
            }
            Error::Passthrough(p) => p.is_user_error(),
            Error::VfPool(h) => h.exit_code() == EXIT_USAGE,
            Error::PciSpace(_) => true,
            Error::Virtio(v) => v.is_user_error(),
            Error::Boot(B::Write(..)) => false,
            Error::Boot(_) => true,
            _ => false,
        }
    }
}

impl StopReason {
    /// The process exit status for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            StopReason::PowerOff | StopReason::ExpectSeen | StopReason::UserQuit => EXIT_OK,
            StopReason::Reset => EXIT_RESET,
            // QEMU isa-debug-exit's convention, so existing test guests work.
            StopReason::DebugExit(v) => ((u32::from(*v) << 1) | 1) as u8,
            StopReason::Timeout => EXIT_TIMEOUT,
            StopReason::Signal(n) => (128 + n) as u8,
            StopReason::Fatal { .. } | StopReason::Panic { .. } => EXIT_FAILURE,
        }
    }
}

/// A passed-through function brings one eventfd per MSI-X vector (up to
/// 2048): raise the soft open-file limit to the hard one.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::debug!("RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// Who holds a VF for this VM, in its lock (`tessera vf list` shows
/// "tessera <this> (pid N)"): the serial log, else the UEFI variable
/// store, else the kernel, since those name a VM on a node.
fn vm_owner(cfg: &VmConfig) -> String {
    let what = match (&cfg.serial, &cfg.boot) {
        (SerialConfig::File(p), _) => format!("serial file {}", p.display()),
        (_, BootSource::Firmware { firmware, .. }) => format!("vars {}", firmware.vars.display()),
        (_, BootSource::Kernel { kernel, .. }) => format!("kernel {}", kernel.display()),
        (_, BootSource::Raw { .. }) => "a raw image".to_string(),
    };
    format!("vm with {what}")
}

/// Validate `cfg`, open KVM, and run the VM until it stops. With
/// `--on-reset restart` a guest reset rebuilds the VM and boots again.
///
/// `--device vf=PF` devices get their VFs first (before KVM is opened, so
/// "no free VF" comes before anything else); the VFs are held for the
/// whole run, restarts included, and released when this returns.
pub fn run(cfg: &VmConfig) -> Result<Report, Error> {
    stats::mark_start();
    cfg.validate()?;
    if !cfg.devices.is_empty() {
        raise_open_file_limit();
    }
    let layout = memory::plan(cfg.memory)?;
    let taken;
    let (cfg, _claims) = if cfg.devices.iter().any(|d| d.vf_pool.is_some()) {
        let (devices, claims) = vfio::take_pool_vfs(&cfg.devices, cfg.vf_create, &vm_owner(cfg))
            .map_err(Error::VfPool)?;
        taken = VmConfig {
            devices,
            ..cfg.clone()
        };
        (&taken, claims)
    } else {
        (cfg, Vec::new())
    };
    vfio::check(&cfg.devices, cfg.memory)?;
    let kvm = kvm::open(&cfg.kvm_path)?;
    let max = kvm::max_vcpus(&kvm);
    if cfg.cpus > max {
        return Err(config::ConfigError::TooManyCpus {
            requested: cfg.cpus,
            limit: max,
            why: "KVM on this host allows in one VM",
        }
        .into());
    }
    // Signals are blocked before any vCPU thread exists, so only the
    // event loop ever sees them.
    let signals = Arc::new(
        event_loop::SignalGuard::new().map_err(|e| Error::Io("set up signal handling", e))?,
    );
    let _raw = match cfg.serial {
        SerialConfig::Stdio => console::RawTerminal::stdin()?,
        _ => None,
    };
    // One deadline for the whole run: a guest that keeps resetting under
    // --on-reset restart must still time out.
    let deadline = cfg.timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let mut report = vm::run_once(cfg, &kvm, &layout, &signals, deadline)?;
        if report.reason == StopReason::Reset && cfg.on_reset == OnReset::Restart {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                report.reason = StopReason::Timeout;
                return Ok(report);
            }
            log::info!("guest reset: starting the VM again");
            continue;
        }
        return Ok(report);
    }
}
