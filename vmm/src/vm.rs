//! Building and running one VM, start to stop.
//!
//! The order is linear: guest memory → KVM VM (irqchip, PIT) → memory slots
//! → devices on the buses → ACPI tables → kernel or raw image → vCPUs →
//! event loop until something stops the VM → vCPUs kicked and joined.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arch::layout::{self, MemoryLayout};
use devices::VmControl;
use devices::acpi_pm;
use devices::legacy::{Cmos, DebugExit, I8042, Serial, cmos, serial};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use firmware::acpi::PciHostConfig;
use kvm_ioctls::Kvm;
use log::{debug, error, info, warn};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::{self, BootEntry};
use crate::config::{BootSource, CpuMode, SerialConfig, VmConfig};
use crate::console::{ConsoleOut, Watcher};
use crate::control::{Controller, StopReason};
use crate::event_loop::{
    FifoWaker, SignalGuard, SignalSubscriber, StdinSubscriber, TimeoutSubscriber, WakeSubscriber,
};
use crate::interrupt::{IrqFd, KvmLevelIrq};
use crate::pci_space::PciSpace;
use crate::platform::Platform;
use crate::stats::{ExitStats, Stats};
use crate::vcpu::{Vcpu, VcpuFilter, VcpuStart, VcpuThread};
use crate::vfio::Passthrough;
use crate::{Error, kvm};

/// What one run of a VM came to.
#[derive(Debug, Clone)]
pub struct Report {
    /// Why it stopped.
    pub reason: StopReason,
    /// KVM exits taken by each vCPU.
    pub vcpu_exits: Vec<u64>,
    /// Exit statistics (with `--stats`).
    pub stats: Option<Stats>,
    /// Unclaimed (reads, writes) on the port bus.
    pub pio_unclaimed: (u64, u64),
    /// Unclaimed (reads, writes) on the MMIO bus.
    pub mmio_unclaimed: (u64, u64),
    /// The last lines the guest printed.
    pub serial_tail: String,
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// How long to keep kicking a vCPU that does not leave KVM_RUN.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Build and run one VM instance until it stops.
pub(crate) fn run_once(
    cfg: &VmConfig,
    kvm: &Kvm,
    layout: &MemoryLayout,
    signals: &Arc<SignalGuard>,
    deadline: Option<Instant>,
) -> Result<Report, Error> {
    let ctl = Controller::new().map_err(|e| Error::Io("create the stop latch", e))?;
    let _active = crate::panic::ActiveVm::new(&ctl);
    let control: Arc<dyn VmControl> = ctl.clone();
    let hooks = crate::test_hook::TestHooks::from_env().map_err(Error::Device)?;

    // Memory first: dropped last, after the VM that maps it.
    let mem = crate::memory::allocate(layout, !cfg.devices.is_empty())?;
    let vm = Arc::new(kvm::create_vm(kvm)?);
    kvm::register_memory(&vm, &mem)?;
    // Passed-through functions are opened (and checked) before anything
    // else is built, so a busy or unbound device fails fast.
    // With passthrough all of RAM will be pinned for DMA: fault it in on
    // every core while the functions are opened (the kernel resets each,
    // which can take a second) and the machine is built. Declared after
    // `mem`, so dropped (stopped and joined) before it.
    let prefault = (!cfg.devices.is_empty()).then(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        crate::memory::prefault(&mem, threads)
    });
    let mut passthrough = Passthrough::open(&cfg.devices, cfg.vfio, &vm, cfg.memory)?;

    let mut platform = Platform::new(vm.clone(), &layout.ram_regions());
    let buses = &platform.buses;

    // COM1.
    let watcher = Arc::new(Mutex::new(Watcher::new(
        cfg.expect_serial.as_deref(),
        ctl.clone(),
    )));
    let out = ConsoleOut::open(&cfg.serial, watcher.clone())?;
    let com1_irq = IrqFd::new(&vm, u32::from(serial::COM1_IRQ))
        .map_err(|e| Error::Io("wire the COM1 interrupt", e))?;
    let waker = Arc::new(FifoWaker(
        vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| Error::Io("create the serial waker", e))?,
    ));
    let com1 = Arc::new(Mutex::new(Serial::new(
        Arc::new(com1_irq),
        Box::new(out),
        Some(waker.clone()),
    )));
    buses.pio.insert(
        u64::from(serial::COM1_PORT),
        u64::from(serial::PORT_LEN),
        "COM1",
        com1.clone(),
    )?;
    buses.pio.insert(
        u64::from(devices::legacy::i8042::PORT_BASE),
        u64::from(devices::legacy::i8042::PORT_LEN),
        "i8042",
        Arc::new(Mutex::new(I8042::new(control.clone()).with_irq(Arc::new(
            IrqFd::new(&vm, 1).map_err(|e| Error::Io("wire the i8042 interrupt", e))?,
        )))),
    )?;
    let high_ram = layout.high_ram().map_or(0, |(_, size)| size);
    buses.pio.insert(
        u64::from(cmos::PORT),
        u64::from(cmos::PORT_LEN),
        "CMOS/RTC",
        Arc::new(Mutex::new(Cmos::new(
            layout.low_ram_end(),
            high_ram,
            cfg.cpus,
        ))),
    )?;
    if let Some(port) = cfg.debug_exit_port {
        buses.pio.insert(
            u64::from(port),
            u64::from(cfg.debug_exit_size),
            "debug-exit",
            Arc::new(Mutex::new(DebugExit::new(control.clone()))),
        )?;
    }
    if let Some(port) = hooks.panic_port {
        warn!("TESSERA_TEST_HOOK: a write to port {port:#x} panics the device model");
        buses.pio.insert(
            u64::from(port),
            1,
            "test-hook panic port",
            crate::test_hook::PanicPort::shared(),
        )?;
    }
    let sci: Arc<dyn devices::LevelIrqLine> = Arc::new(KvmLevelIrq::new(
        vm.clone(),
        firmware::acpi::AcpiConfig::default().sci_irq.into(),
    ));

    // One machine for both boot paths: the Q35 chipset, then the
    // passed-through functions on bus 0, then the address-space plan.
    let chipset = crate::q35::chipset(&mut platform, &control, sci)?;
    passthrough.attach(&platform)?;
    let virtio = crate::virtio::attach(
        &platform,
        cfg,
        &mem,
        crate::vfio::FIRST_SLOT + cfg.devices.len() as u8,
    )?;
    let space = PciSpace::plan(
        layout,
        &passthrough.bar64s(),
        host_phys_bits(kvm),
        iommu_address_bits(),
        !passthrough.is_empty(),
    )?;

    // The machine-specific part and what the vCPUs start with.
    let (bsp, aps) = match &cfg.boot {
        BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let rsdp = direct_boot_platform(&platform, &mem, layout, cfg.cpus, &space)?;
            let entry = boot::load_kernel(&mem, layout, kernel, initrd.as_deref(), cmdline, rsdp)?;
            let bsp = match entry {
                BootEntry::Linux64 { entry, zero_page } => VcpuStart::Linux64 { entry, zero_page },
                BootEntry::Pvh { entry, start_info } => VcpuStart::Pvh { entry, start_info },
                BootEntry::Multiboot { entry, info } => {
                    // Multiboot test kernels (kvm-unit-tests) read the CPU
                    // count and RAM size from fw_cfg, as on QEMU.
                    add_legacy_fw_cfg(&platform, &mem, cfg.cpus, layout.ram_size())?;
                    VcpuStart::Multiboot { entry, info }
                }
            };
            info!("kernel loaded: {bsp:x?}");
            (bsp, VcpuStart::WaitForSipi)
        }
        BootSource::Raw {
            image,
            load_addr,
            mode,
        } => {
            direct_boot_platform(&platform, &mem, layout, cfg.cpus, &space)?;
            boot::load_raw(&mem, image, *load_addr)?;
            let start = match *mode {
                CpuMode::Real { cs, ip } => VcpuStart::Real { cs, ip },
                CpuMode::Long { rip } => VcpuStart::Long { rip },
            };
            (start, start)
        }
        BootSource::Firmware { firmware, kernel } => {
            crate::q35::build(
                &mut platform,
                &crate::q35::Q35Inputs {
                    cfg,
                    mem: &mem,
                    layout,
                    chipset: &chipset,
                    space: &space,
                    firmware,
                    kernel: kernel.as_ref(),
                    disks: virtio.disks().to_vec(),
                },
            )?;
            (VcpuStart::FirmwareReset, VcpuStart::WaitForSipi)
        }
    };
    // Every byte of guest RAM is reachable by device DMA before any vCPU
    // runs.
    if let Some(p) = prefault {
        info!("guest RAM faulted in after {:?}", p.wait());
    }
    passthrough.map_dma(&mem)?;
    let platform = Arc::new(platform);

    write_boot_tables(&mem, bsp)?;
    let mut vcpus = Vec::with_capacity(cfg.cpus as usize);
    for i in 0..cfg.cpus {
        let start = if i == 0 { bsp } else { aps };
        vcpus.push(Vcpu::new(kvm, &vm, i, cfg.cpus, start, space.phys_bits)?);
    }
    // The flash's programming writes go through KVM's coalesced ring
    // (crate::coalesced) when KVM has one.
    if platform.has_flash() && kvm.check_extension(kvm_ioctls::Cap::CoalescedMmio) {
        match vcpus.first().map(Vcpu::map_coalesced_ring) {
            None => {}
            Some(Ok(ring)) => platform.set_coalesced(crate::coalesced::Coalesced::new(ring)),
            Some(Err(e)) => warn!("coalesced MMIO ring: {e}; flash writes exit one by one"),
        }
    }

    // Event loop subscribers exist before any vCPU runs, so no stop is missed.
    let mut em =
        EventManager::<Subscriber>::new().map_err(|e| Error::EventLoop(format!("{e:?}")))?;
    em.add_subscriber(Arc::new(Mutex::new(WakeSubscriber::new(ctl.clone()))));
    em.add_subscriber(Arc::new(Mutex::new(SignalSubscriber::new(
        signals.clone(),
        ctl.clone(),
    ))));
    if let Some(deadline) = deadline {
        // A zero duration would disarm the timer: expire at once instead.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let sub = TimeoutSubscriber::new(left, ctl.clone())
            .map_err(|e| Error::Io("arm the timeout", e))?;
        em.add_subscriber(Arc::new(Mutex::new(sub)));
    }
    if matches!(cfg.serial, SerialConfig::Stdio) {
        em.add_subscriber(Arc::new(Mutex::new(StdinSubscriber::new(
            com1,
            waker,
            ctl.clone(),
        ))));
    }

    // From here on every thread is filtered: the main filter on all of
    // them now, the vCPU filter added by each vCPU thread.
    // Once per process (a restarted VM keeps them).
    static JAILED: std::sync::Once = std::sync::Once::new();
    let mut jail = Ok(());
    JAILED.call_once(|| jail = crate::jail::apply(cfg));
    jail?;
    if let Some(p) = &hooks.open_after_jail {
        warn!(
            "TESSERA_TEST_HOOK: opening {} after the jail: {:?}",
            p.display(),
            std::fs::File::open(p).map(|_| "opened")
        );
    }
    crate::seccomp::apply_main(cfg.seccomp)?;
    let filter = VcpuFilter {
        seccomp: cfg.seccomp,
        test_syscall: hooks.vcpu_syscall,
    };
    let (exited_tx, exited) = std::sync::mpsc::channel::<()>();
    let mut handles = Vec::with_capacity(vcpus.len());
    for v in vcpus {
        match v.spawn(
            platform.clone(),
            ctl.clone(),
            mem.clone(),
            exited_tx.clone(),
            filter,
        ) {
            Ok(h) => handles.push(h),
            Err(e) => {
                ctl.stop(StopReason::Fatal {
                    cpu: handles.len() as u32,
                    message: e.to_string(),
                });
                drop(exited_tx);
                stop_vcpus(&handles, &exited);
                return Err(e.into());
            }
        }
    }
    drop(exited_tx);

    while !ctl.is_stopping() {
        if let Err(e) = em.run() {
            warn!("event loop: {e:?}");
            ctl.stop(StopReason::Fatal {
                cpu: 0,
                message: format!("event loop failed: {e:?}"),
            });
        }
    }
    let stuck = stop_vcpus(&handles, &exited);
    let stopped = stuck.is_empty();
    let vcpu_stats: Vec<ExitStats> = if stopped {
        handles.into_iter().map(VcpuThread::join).collect()
    } else {
        Vec::new()
    };
    let vcpu_exits = vcpu_stats.iter().map(|s| s.total).collect();
    let mut reason = ctl.reason().unwrap_or(StopReason::Fatal {
        cpu: 0,
        message: "stopped without a reason".into(),
    });
    if stopped {
        passthrough.shutdown(&platform);
    } else {
        // A vCPU thread still runs (stuck in the kernel, or in a device
        // access): nothing it can reach may be freed or unmapped under it.
        // It holds its own reference to guest RAM (see Vcpu::spawn); the
        // devices and their DMA mappings stay as they are until the process
        // exits, and no new VM is built in this process.
        error!(
            "{} did not stop within {JOIN_TIMEOUT:?}: leaving guest memory and devices in place until tessera exits",
            stuck.join(", ")
        );
        std::mem::forget(passthrough);
        reason = StopReason::Fatal {
            cpu: 0,
            message: format!(
                "{} did not stop within {JOIN_TIMEOUT:?} (stop reason was {reason:?})",
                stuck.join(", ")
            ),
        };
    }
    let serial_tail = watcher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last_lines(20);
    debug!("vCPU exits: {vcpu_exits:?}");
    let stats = cfg.stats.then(|| Stats::collect(&platform, vcpu_stats));
    Ok(Report {
        reason,
        vcpu_exits,
        stats,
        pio_unclaimed: platform.buses.pio.unclaimed(),
        mmio_unclaimed: platform.buses.mmio.unclaimed(),
        serial_tail,
    })
}

/// Kick every vCPU thread once (the stop was already requested, so a
/// thread that misses the kick sees the request before its next KVM_RUN,
/// and one inside KVM_RUN gets EINTR) and wait until all have ended, at
/// most [`JOIN_TIMEOUT`]. Returns the ones that did not end, described.
/// `exited` disconnects when the last vCPU thread has dropped its sender.
fn stop_vcpus(handles: &[VcpuThread], exited: &std::sync::mpsc::Receiver<()>) -> Vec<String> {
    for h in handles {
        h.kick();
    }
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match exited.recv_timeout(left) {
            Ok(()) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Vec::new(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    let stuck: Vec<String> = handles
        .iter()
        .filter(|h| !h.is_finished())
        .map(VcpuThread::describe)
        .collect();
    warn!("{} did not stop within {JOIN_TIMEOUT:?}", stuck.join(", "));
    stuck
}

/// Direct boot: tessera does what firmware would on the Q35 machine (ECAM
/// and PM block placed, BARs assigned, see
/// [`crate::pci_space::program_like_firmware`]) and places ACPI tables
/// describing it in the BIOS area, where Linux also finds them by
/// scanning. Returns the RSDP address.
fn direct_boot_platform(
    platform: &Platform,
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    cpus: u32,
    space: &PciSpace,
) -> Result<u64, Error> {
    let ecam = devices::q35::mch::PCIEXBAR_DEFAULT;
    let mmio32 = crate::q35::mmio32_window(ecam, layout.low_ram_end());
    crate::pci_space::program_like_firmware(
        platform,
        space,
        ecam,
        acpi_pm::DEFAULT_PMBASE,
        mmio32,
    )?;
    let mut host = PciHostConfig::q35(ecam, mmio32);
    host.bus_count = crate::pci_space::BUS_COUNT;
    host.mmio64 = space.mmio64_covering(platform.pci());
    let cfg = firmware::acpi::AcpiConfig {
        cpu_count: cpus,
        cmos_rtc: true,
        i8042: true,
        pci: Some(host),
        ..Default::default()
    };
    let tables = firmware::acpi::build(&cfg)?;
    let placed = tables.place_at(
        layout::ACPI_AREA_START,
        layout::ACPI_AREA_END - layout::ACPI_AREA_START,
    )?;
    mem.write_slice(&placed.bytes, GuestAddress(layout::ACPI_AREA_START))
        .map_err(|e| Error::GuestWrite("the ACPI tables", e.to_string()))?;
    Ok(placed.rsdp_addr)
}

/// fw_cfg for a multiboot kernel: the selector/data ports at 0x510 with
/// the CPU counts and `FW_CFG_RAM_SIZE`, as QEMU gives every PC.
fn add_legacy_fw_cfg(
    platform: &Platform,
    mem: &GuestMemoryMmap,
    cpus: u32,
    ram_size: u64,
) -> Result<(), Error> {
    use devices::legacy::fw_cfg::{self, FwCfg};
    let fw_err = |e: fw_cfg::FwCfgError| Error::Device(format!("fw_cfg: {e}"));
    let mut fw = FwCfg::new(mem.clone());
    let cpus = u16::try_from(cpus).unwrap_or(u16::MAX);
    for (key, bytes) in firmware::fw_cfg::cpu_count_items(cpus, cpus) {
        fw.add_item(key, bytes).map_err(fw_err)?;
    }
    fw.add_item(
        firmware::fw_cfg::FW_CFG_RAM_SIZE,
        ram_size.to_le_bytes().to_vec(),
    )
    .map_err(fw_err)?;
    platform.buses.pio.insert(
        u64::from(fw_cfg::PORT_BASE),
        fw_cfg::PORT_LEN,
        "fw_cfg",
        Arc::new(Mutex::new(fw)),
    )?;
    Ok(())
}

/// The host CPU's physical address width (KVM's CPUID leaf 0x80000008).
fn host_phys_bits(kvm: &Kvm) -> u8 {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .ok()
        .and_then(|c| arch::cpuid::phys_bits(c.as_slice()))
        .unwrap_or(36)
}

/// The smallest address width of the host's IOMMUs, from sysfs: Intel
/// VT-d's MGAW field (`intel-iommu/cap` bits 21:16, plus one). An AMD-Vi
/// unit (`amd-iommu/`) counts as 48 bits, what its 4-level host page tables
/// always cover (its extended features, which could say 57, are printed in
/// a format that changed between kernels).
fn iommu_address_bits() -> Option<u8> {
    let dir = std::fs::read_dir("/sys/class/iommu").ok()?;
    dir.flatten()
        .filter_map(|e| {
            let p = e.path();
            let cap = std::fs::read_to_string(p.join("intel-iommu/cap"))
                .ok()
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
            match cap {
                Some(cap) => Some((((cap >> 16) & 0x3f) + 1) as u8),
                None => p.join("amd-iommu").exists().then_some(48),
            }
        })
        .min()
}

/// GDT, an empty IDT and (for long mode) identity page tables, matching
/// the segment registers the boot vCPU starts with.
fn write_boot_tables(mem: &GuestMemoryMmap, start: VcpuStart) -> Result<(), Error> {
    let data = match start {
        VcpuStart::Pvh { .. } | VcpuStart::Multiboot { .. } => arch::regs::pvh_boot_data(),
        VcpuStart::Linux64 { .. } | VcpuStart::Long { .. } => arch::regs::long_mode_boot_data(),
        VcpuStart::Real { .. } | VcpuStart::WaitForSipi | VcpuStart::FirmwareReset => {
            return Ok(());
        }
    };
    for (addr, bytes) in data {
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(|e| Error::GuestWrite("the boot GDT and page tables", e.to_string()))?;
    }
    Ok(())
}
