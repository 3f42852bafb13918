//! The Q35 machine: its chipset, which both boot paths share (MCH and ICH9
//! LPC on PCI bus 0, configuration through 0xCF8 and a guest-placed ECAM
//! window, the LPC-placed ACPI PM block), and what stock OVMF needs on top:
//! fw_cfg with DMA and ACPI through the table-loader, OVMF code as ROM and
//! its variables in CFI flash written through to the VM's VARS file.

use std::sync::{Arc, Mutex};

use arch::layout::MemoryLayout;
use devices::acpi_pm::{self, AcpiPm};
use devices::legacy::fw_cfg::{self, FileGenerator, FwCfg, GeneratedFiles};
use devices::legacy::{Debugcon, Pflash, Port92, ResetControl, debugcon, port92};
use devices::pci::root::{CONFIG_IO_LEN, CONFIG_IO_PORT, ECAM_MAX_LEN};
use devices::pci::{PciConfigIo, PciConfigMmio, PciRoot, SharedPciDevice};
use devices::q35::{LPC_BDF, Lpc, MCH_BDF, Mch};
use devices::{BusDevice, Effects, LevelIrqLine, VmControl, Window};
use firmware::acpi::{AcpiConfig, MmioWindow, PciHostConfig, table_loader};
use firmware::ovmf::FirmwareImages;
use log::info;
use vm_memory::GuestMemoryMmap;

use crate::Error;
use crate::config::{FirmwareConfig, FwCfgValue, KernelSpec, VmConfig, io_reason};
use crate::pci_space::PciSpace;
use crate::platform::{FlashWindow, Movable, Platform};
use crate::slots::HostBuffer;

/// What building the firmware side of the Q35 machine needs.
pub(crate) struct Q35Inputs<'a> {
    pub cfg: &'a VmConfig,
    pub mem: &'a GuestMemoryMmap,
    pub layout: &'a MemoryLayout,
    pub chipset: &'a Chipset,
    pub space: &'a PciSpace,
    pub firmware: &'a FirmwareConfig,
    pub kernel: Option<&'a KernelSpec>,
    /// The virtio-blk functions, in `--disk` order (the boot order).
    pub disks: Vec<devices::pci::Bdf>,
}

/// The chipset both boot paths share.
pub(crate) struct Chipset {
    /// The host bridge (ECAM window).
    pub mch: Arc<Mutex<Mch>>,
}

/// PCI bus 0 with the MCH and the ICH9 LPC bridge, configuration
/// mechanism #1 at 0xCF8 (with the reset register 0xCF9 inside its
/// range), the ECAM window the MCH places, the ACPI PM block the LPC
/// places, and port 0x92. Firmware (or [`crate::pci_space::program_like_firmware`]
/// for direct boot) then programs them.
pub(crate) fn chipset(
    platform: &mut Platform,
    control: &Arc<dyn VmControl>,
    sci: Arc<dyn LevelIrqLine>,
) -> Result<Chipset, Error> {
    let mch = Arc::new(Mutex::new(Mch::new()));
    let mch_dyn: SharedPciDevice = mch.clone();
    let lpc: SharedPciDevice = Arc::new(Mutex::new(Lpc::new()));
    platform
        .add_pci_function(MCH_BDF, mch_dyn)
        .map_err(|e| Error::Device(e.to_string()))?;
    platform
        .add_pci_function(LPC_BDF, lpc)
        .map_err(|e| Error::Device(e.to_string()))?;
    let reset = ResetControl::new(control.clone());
    platform.buses.pio.insert(
        u64::from(CONFIG_IO_PORT),
        CONFIG_IO_LEN,
        "PCI config (0xcf8) and reset (0xcf9)",
        Arc::new(Mutex::new(PciConfigIo::new(
            platform.pci().clone(),
            Some(Box::new(reset)),
        ))),
    )?;
    let ecam = Movable::new(
        Arc::new(Mutex::new(PciConfigMmio::new(
            platform.pci().clone(),
            ECAM_MAX_LEN,
        ))),
        ECAM_MAX_LEN,
    );
    platform.add_window(Window::Ecam, ecam);
    let pm = Movable::new(
        Arc::new(Mutex::new(AcpiPm::new(control.clone(), Some(sci)))),
        u64::from(acpi_pm::BLOCK_LEN),
    );
    platform.add_window(Window::AcpiPm, pm);
    platform.buses.pio.insert(
        u64::from(port92::PORT),
        1,
        "port 0x92",
        Arc::new(Mutex::new(Port92::new(control.clone()))),
    )?;
    Ok(Chipset { mch })
}

/// Where the 32-bit PCI window ends (below the IOAPIC/flash area), as OVMF uses it.
const MMIO32_END: u64 = 0xfc00_0000;
/// Room reserved in `etc/acpi/tables` so the rebuild after PCI enumeration
/// always fits the size announced at boot.
const ACPI_TABLES_RESERVE: usize = 64 << 10;

/// Behind the firmware code's read-only memory slot: KVM serves reads from
/// the slot (mapped for the VM's whole life), so only guest writes exit,
/// and they land here and are dropped, as writes to ROM are. Reads can
/// only arrive if the slot is gone, and then see an open bus.
struct RomWrites;

impl BusDevice for RomWrites {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Effects {
        Effects::none()
    }
}

/// The 32-bit PCI window that goes with an ECAM base, following the two
/// OVMF generations: with ECAM at 0xB000_0000 (edk2-stable202211, Debian
/// 12) the window is above it, [0xC000_0000, 0xFC00_0000); with ECAM at
/// 0xE000_0000 (edk2-stable202305 and later) it is below, from the end of
/// low RAM.
pub(crate) fn mmio32_window(ecam_base: u64, low_ram_end: u64) -> MmioWindow {
    let ecam_end = ecam_base + ECAM_MAX_LEN;
    if ecam_base < 0xe000_0000 && ecam_end < MMIO32_END {
        MmioWindow {
            base: ecam_end,
            size: MMIO32_END - ecam_end,
        }
    } else {
        let base = low_ram_end.next_power_of_two();
        MmioWindow {
            base,
            size: ecam_base.min(MMIO32_END).saturating_sub(base).max(1),
        }
    }
}

/// Put the Q35 devices, firmware and fw_cfg on `platform`.
pub(crate) fn build(platform: &mut Platform, inputs: &Q35Inputs<'_>) -> Result<(), Error> {
    let Q35Inputs {
        cfg,
        mem,
        layout,
        chipset,
        space,
        firmware,
        kernel,
        disks,
    } = inputs;
    let images = FirmwareImages::open(
        &firmware.code,
        &firmware.vars,
        firmware.vars_template.as_deref(),
    )?;
    if images.vars_created() {
        info!(
            "created {} from {}",
            images.vars_path().display(),
            images
                .template()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let (code, vars_file, flash) = images.into_parts();
    // OVMF code: read-only memory, writes dropped.
    let code_range = flash.code_range();
    let code_buf =
        HostBuffer::new(code.len()).map_err(|e| Error::Io("allocate the firmware ROM", e))?;
    code_buf
        .fill(&code)
        .map_err(|e| Error::Io("copy the firmware ROM", e))?;
    let slots = platform.slots();
    slots.map(slots.allocate(), code_range.start, &code_buf, true)?;
    platform.buses.mmio.insert(
        code_range.start,
        code.len() as u64,
        "firmware code (writes dropped)",
        Arc::new(Mutex::new(RomWrites)),
    )?;
    drop(code);

    // OVMF variables: CFI flash, mapped as memory while it reads as an array.
    let vars_range = flash.vars_range();
    let vars_len = vars_range.end - vars_range.start;
    let pflash = Arc::new(Mutex::new(
        Pflash::new(vars_file, vars_len, false)
            .map_err(|e| Error::Io("open the UEFI variable store", std::io::Error::other(e)))?,
    ));
    platform.buses.mmio.insert(
        vars_range.start,
        vars_len,
        "UEFI variable flash",
        pflash.clone(),
    )?;
    let window = FlashWindow {
        device: pflash.clone(),
        contents: Box::new(move || {
            pflash
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contents()
                .to_vec()
        }),
        gpa: vars_range.start,
        slot: platform.slots().allocate(),
        buffer: HostBuffer::new(vars_len as usize)
            .map_err(|e| Error::Io("allocate the variable store window", e))?,
    };
    platform.keep_rom(code_buf);
    platform.set_flash(window);
    // Reset state: read-array mode, so map it now.
    crate::exit::EffectSink::apply(
        &*platform,
        Effects::one(devices::Effect::FlashMode { read_array: true }),
    );

    if let Some(path) = &firmware.log {
        let file = std::fs::File::create(path).map_err(|e| {
            Error::Config(crate::config::ConfigError::BadFile {
                what: "--firmware-log",
                path: path.clone(),
                reason: io_reason(&e),
            })
        })?;
        platform.buses.pio.insert(
            u64::from(debugcon::PORT),
            1,
            "debugcon",
            Arc::new(Mutex::new(Debugcon::new(Box::new(file)))),
        )?;
    }

    // fw_cfg.
    let mut fw = FwCfg::new((*mem).clone());
    let fw_err = |e: fw_cfg::FwCfgError| Error::Device(format!("fw_cfg: {e}"));
    let cpus = u16::try_from(cfg.cpus).unwrap_or(u16::MAX);
    for (key, bytes) in firmware::fw_cfg::cpu_count_items(cpus, cpus) {
        fw.add_item(key, bytes).map_err(fw_err)?;
    }
    fw.add_file("etc/e820", firmware::fw_cfg::e820_file(layout))
        .map_err(fw_err)?;
    if let Some(k) = kernel {
        let read = |what: &'static str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                Error::Config(crate::config::ConfigError::BadFile {
                    what,
                    path: p.into(),
                    reason: io_reason(&e),
                })
            })
        };
        let kernel_bytes = read("kernel", &k.kernel)?;
        let initrd = k.initrd.as_deref().map(|p| read("initrd", p)).transpose()?;
        let items =
            firmware::fw_cfg::KernelItems::for_firmware(kernel_bytes, initrd, &k.cmdline, layout)
                .map_err(|e| {
                Error::Boot(crate::boot::BootError::Unbootable(
                    k.kernel.clone(),
                    e.to_string(),
                ))
            })?;
        for (key, bytes) in items.into_items() {
            fw.add_item(key, bytes).map_err(fw_err)?;
        }
    }
    for item in &cfg.fw_cfg {
        let bytes = match &item.value {
            FwCfgValue::String(s) => s.as_bytes().to_vec(),
            FwCfgValue::File(p) => std::fs::read(p).map_err(|e| {
                Error::Config(crate::config::ConfigError::BadFile {
                    what: "--fw-cfg file",
                    path: p.clone(),
                    reason: io_reason(&e),
                })
            })?,
        };
        fw.add_file(&item.name, bytes).map_err(fw_err)?;
    }
    // The disks in --disk order, unless the user gave a boot order.
    if !disks.is_empty() && !cfg.fw_cfg.iter().any(|i| i.name == "bootorder") {
        let slots: Vec<(u8, u8)> = disks.iter().map(|b| (b.device, b.function)).collect();
        fw.add_file("bootorder", firmware::fw_cfg::bootorder_file(&slots))
            .map_err(fw_err)?;
    }
    if let Some(mb) = space.ovmf_mmio64_mb() {
        fw.add_file("opt/ovmf/X-PciMmio64Mb", mb.to_string().into_bytes())
            .map_err(fw_err)?;
    }
    let acpi = acpi_generator(
        cfg.cpus,
        layout.low_ram_end(),
        chipset.mch.clone(),
        platform.pci().clone(),
        (*space).clone(),
    );
    for name in ["etc/acpi/rsdp", "etc/acpi/tables", "etc/table-loader"] {
        fw.add_file_generated(name, &acpi).map_err(fw_err)?;
    }
    platform.buses.pio.insert(
        u64::from(fw_cfg::PORT_BASE),
        fw_cfg::PORT_LEN,
        "fw_cfg",
        Arc::new(Mutex::new(fw)),
    )?;
    Ok(())
}

/// ACPI tables through the table-loader, built from the machine as the
/// guest has configured it: ECAM where the MCH's PCIEXBAR says, the 64-bit
/// window covering where the firmware put the 64-bit BARs.
fn acpi_generator(
    cpus: u32,
    low_ram_end: u64,
    mch: Arc<Mutex<Mch>>,
    root: Arc<PciRoot>,
    space: PciSpace,
) -> FileGenerator {
    FileGenerator::new(move || {
        let ecam_base = mch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ecam()
            .map_or(devices::q35::mch::PCIEXBAR_DEFAULT, |(base, _)| base);
        let mut host = PciHostConfig::q35(ecam_base, mmio32_window(ecam_base, low_ram_end));
        host.bus_count = crate::pci_space::BUS_COUNT;
        host.mmio64 = space.mmio64_covering(&root);
        let cfg = AcpiConfig {
            cpu_count: cpus,
            cmos_rtc: true,
            i8042: true,
            pci: Some(host),
            ..Default::default()
        };
        let model = firmware::acpi::build(&cfg)?;
        let mut files = table_loader::build(&model)?;
        files.pad_tables(ACPI_TABLES_RESERVE);
        Ok(files
            .files()
            .into_iter()
            .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
            .collect::<GeneratedFiles>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmio32_window_follows_the_ovmf_generation() {
        // edk2-stable202211: ECAM at 0xB000_0000, window above it.
        assert_eq!(
            mmio32_window(0xb000_0000, 0x1000_0000),
            MmioWindow {
                base: 0xc000_0000,
                size: 0x3c00_0000
            }
        );
        // edk2-stable202305+: ECAM at 0xE000_0000, window below it, from the
        // power-of-two-aligned end of low RAM.
        assert_eq!(
            mmio32_window(0xe000_0000, 0x8000_0000),
            MmioWindow {
                base: 0x8000_0000,
                size: 0x6000_0000
            }
        );
        assert_eq!(
            mmio32_window(0xe000_0000, 0x1800_0000),
            MmioWindow {
                base: 0x2000_0000,
                size: 0xc000_0000
            }
        );
    }
}
