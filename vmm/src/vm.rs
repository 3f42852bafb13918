//! Building and running one VM, start to stop.
//!
//! The order is linear: guest memory → KVM VM (irqchip, PIT) → memory slots
//! → devices on the buses → ACPI tables → kernel or raw image → vCPUs →
//! event loop until something stops the VM → vCPUs kicked and joined.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arch::layout::{self, MemoryLayout};
use devices::VmControl;
use devices::acpi_pm::{self, AcpiPm};
use devices::legacy::{Cmos, DebugExit, I8042, ResetControl, Serial, cmos, serial};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::Kvm;
use log::{debug, info, warn};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::{self, BootEntry};
use crate::config::{BootSource, CpuMode, SerialConfig, VmConfig};
use crate::console::{ConsoleOut, Watcher};
use crate::control::{Controller, IrqFd, KvmLevelIrq, StopReason};
use crate::event_loop::{
    FifoWaker, SignalGuard, SignalSubscriber, StdinSubscriber, TimeoutSubscriber, WakeSubscriber,
};
use crate::platform::Platform;
use crate::vcpu::{Vcpu, VcpuStart, kick_signal};
use crate::{Error, kvm};

/// What one run of a VM came to.
#[derive(Debug, Clone)]
pub struct Report {
    /// Why it stopped.
    pub reason: StopReason,
    /// KVM exits taken by each vCPU.
    pub vcpu_exits: Vec<u64>,
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
    let control: Arc<dyn VmControl> = ctl.clone();

    // Memory first: dropped last, after the VM that maps it.
    let mem = crate::memory::allocate(layout)?;
    let vm = Arc::new(kvm::create_vm(kvm)?);
    kvm::register_memory(&vm, &mem)?;

    let mut platform = Platform::default();
    let buses = &mut platform.buses;

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
        com1.clone(),
    )?;
    buses.pio.insert(
        u64::from(devices::legacy::i8042::PORT_BASE),
        u64::from(devices::legacy::i8042::PORT_LEN),
        Arc::new(Mutex::new(I8042::new(control.clone()))),
    )?;
    let high_ram = layout.high_ram().map_or(0, |(_, size)| size);
    buses.pio.insert(
        u64::from(cmos::PORT),
        u64::from(cmos::PORT_LEN),
        Arc::new(Mutex::new(Cmos::new(
            layout.low_ram_end(),
            high_ram,
            cfg.cpus,
        ))),
    )?;
    if let Some(port) = cfg.debug_exit_port {
        buses.pio.insert(
            u64::from(port),
            1,
            Arc::new(Mutex::new(DebugExit::new(control.clone()))),
        )?;
    }
    let sci: Arc<dyn devices::LevelIrqLine> = Arc::new(KvmLevelIrq::new(
        vm.clone(),
        firmware::acpi::AcpiConfig::default().sci_irq.into(),
    ));

    // The machine-specific part and what the vCPUs start with.
    let (bsp, aps) = match &cfg.boot {
        BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let rsdp = legacy_platform(&platform, &mem, cfg.cpus, &control, sci)?;
            let entry = boot::load_kernel(&mem, layout, kernel, initrd.as_deref(), cmdline, rsdp)?;
            let bsp = match entry {
                BootEntry::Linux64 { entry, zero_page } => VcpuStart::Linux64 { entry, zero_page },
                BootEntry::Pvh { entry, start_info } => VcpuStart::Pvh { entry, start_info },
            };
            info!("kernel loaded: {bsp:x?}");
            (bsp, VcpuStart::WaitForSipi)
        }
        BootSource::Raw {
            image,
            load_addr,
            mode,
        } => {
            legacy_platform(&platform, &mem, cfg.cpus, &control, sci)?;
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
                    vm: &vm,
                    mem: &mem,
                    layout,
                    control: &control,
                    sci,
                    firmware,
                    kernel: kernel.as_ref(),
                },
            )?;
            (VcpuStart::FirmwareReset, VcpuStart::WaitForSipi)
        }
    };
    let platform = Arc::new(platform);

    write_boot_tables(&mem, bsp)?;
    let mut vcpus = Vec::with_capacity(cfg.cpus as usize);
    for i in 0..cfg.cpus {
        let start = if i == 0 { bsp } else { aps };
        vcpus.push(Vcpu::new(kvm, &vm, i, cfg.cpus, start)?);
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

    let mut handles = Vec::with_capacity(vcpus.len());
    for v in vcpus {
        match v.spawn(platform.clone(), ctl.clone()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                ctl.stop(StopReason::Fatal {
                    cpu: handles.len() as u32,
                    message: e.to_string(),
                });
                stop_vcpus(&handles);
                return Err(e.into());
            }
        }
    }

    while !ctl.is_stopping() {
        if let Err(e) = em.run() {
            warn!("event loop: {e:?}");
            ctl.stop(StopReason::Fatal {
                cpu: 0,
                message: format!("event loop failed: {e:?}"),
            });
        }
    }
    let vcpu_exits = if stop_vcpus(&handles) {
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    } else {
        Vec::new()
    };
    let reason = ctl.reason().unwrap_or(StopReason::Fatal {
        cpu: 0,
        message: "stopped without a reason".into(),
    });
    let serial_tail = watcher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last_lines(20);
    debug!("vCPU exits: {vcpu_exits:?}");
    Ok(Report {
        reason,
        vcpu_exits,
        pio_unclaimed: platform.buses.pio.unclaimed(),
        mmio_unclaimed: platform.buses.mmio.unclaimed(),
        serial_tail,
    })
}

/// Kick every vCPU thread until it leaves KVM_RUN. Returns false if one
/// would not stop (its thread is then left behind, detached).
fn stop_vcpus(handles: &[std::thread::JoinHandle<u64>]) -> bool {
    use vmm_sys_util::signal::Killable;
    let deadline = std::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let mut running = false;
        for h in handles.iter().filter(|h| !h.is_finished()) {
            running = true;
            // A signal between the vCPU's stop check and KVM_RUN is lost,
            // hence the repeated kicks.
            let _ = h.kill(kick_signal());
        }
        if !running {
            return true;
        }
        if std::time::Instant::now() > deadline {
            warn!("a vCPU thread did not stop within {JOIN_TIMEOUT:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The direct-boot platform's fixed parts: reset control at 0xCF9, the
/// ACPI PM block at its default base, ACPI tables in the BIOS area (where
/// Linux also finds them by scanning). Returns the RSDP address.
fn legacy_platform(
    platform: &Platform,
    mem: &GuestMemoryMmap,
    cpus: u32,
    control: &Arc<dyn VmControl>,
    sci: Arc<dyn devices::LevelIrqLine>,
) -> Result<u64, Error> {
    let buses = &platform.buses;
    buses.pio.insert(
        u64::from(devices::legacy::reset_control::PORT),
        1,
        Arc::new(Mutex::new(ResetControl::new(control.clone()))),
    )?;
    buses.pio.insert(
        u64::from(acpi_pm::DEFAULT_PMBASE),
        u64::from(acpi_pm::BLOCK_LEN),
        Arc::new(Mutex::new(AcpiPm::new(control.clone(), Some(sci)))),
    )?;
    write_acpi(mem, cpus)
}

fn write_acpi(mem: &GuestMemoryMmap, cpus: u32) -> Result<u64, Error> {
    let cfg = firmware::acpi::AcpiConfig {
        cpu_count: cpus,
        cmos_rtc: true,
        i8042: true,
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

/// GDT, an empty IDT and (for long mode) identity page tables, matching
/// the segment registers the boot vCPU starts with.
fn write_boot_tables(mem: &GuestMemoryMmap, start: VcpuStart) -> Result<(), Error> {
    let data = match start {
        VcpuStart::Pvh { .. } => arch::regs::pvh_boot_data(),
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
