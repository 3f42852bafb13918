//! The Q35 PCI host bridge: its configuration ([`PciHostConfig`]), the INTx
//! routing shared with the VMM ([`pci_intx_gsi`]) and the `\_SB_.PCI0`
//! AML, modelled on QEMU's q35 DSDT (`hw/i386/acpi-build.c`).
//!
//! `\_SB_.PCI0` holds:
//!
//! * `_HID` PNP0A08 (PCI Express root bridge), `_CID` PNP0A03, `_ADR` 0,
//!   `_UID` 0, `_SEG` 0, `_BBN` 0;
//! * `_CRS`: the bus range, the config ports 0xcf8..0xcff (consumed), the
//!   I/O windows, the legacy VGA window 0xa0000..0xbffff, the 32-bit MMIO
//!   window and, if any, the 64-bit MMIO window (all produced);
//! * `_PRT`: 32 slots x 4 pins, each routed straight to a GSI (the APIC-mode
//!   form `Package {slot << 16 | 0xffff, pin, 0, gsi}`, no link devices);
//! * `_OSC`: grants the OS native PCIe hotplug, SHPC hotplug, PME, AER and
//!   the PCIe capability structure;
//! * `DRAC` (PNP0C01): reserves the ECAM area as a motherboard resource, so
//!   Linux accepts the MCFG region ("reserved as ACPI motherboard resource");
//! * `LPC_` at `_ADR` 0x001f0000 (the ICH9 LPC bridge, 00:1f.0) with the
//!   serial ports, the RTC and the 8042 keyboard controller.
//!
//! # INTx routing
//!
//! ICH9 routes each device's INTA..INTD to one of eight PIRQ lines A..H
//! (the `D<N>IR` registers); QEMU's q35 `_PRT` describes its defaults, and so
//! does [`pci_intx_pirq`]:
//!
//! | slots                | INTA, INTB, INTC, INTD                         |
//! |----------------------|------------------------------------------------|
//! | 0x00..=0x18          | PIRQ E..H, rotated by `slot % 4`: INTA of slot 1 is PIRQF |
//! | 0x19..=0x1d, 0x1f    | PIRQ A, B, C, D                                |
//! | 0x1e (DMI-PCI bridge)| PIRQ E, F, G, H                                |
//!
//! In APIC mode PIRQ A..H are I/O APIC inputs 16..23
//! ([`Q35_PIRQ_GSIS`]), so `pci_intx_gsi(slot, pin)` is the GSI the `_PRT`
//! gives the OS and the GSI the VMM must raise for that slot's pin. A `_PRT`
//! entry naming a GSI directly means "level-triggered, active-low, shared";
//! the OS programs the I/O APIC that way. (KVM's in-kernel I/O APIC ignores
//! the polarity bit: the VMM asserts the line with level 1 and deasserts
//! with 0.) There are no link devices, so the 8259 (PIC-mode) routing is
//! not described; OSes with an I/O APIC use APIC mode.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, And, Arg, CreateDWordField, EISAName, Else, Equal, IO, If,
    Local, Method, Name, NotEqual, Or, PackageBuilder, Path, ResourceTemplate, Return, Store, Uuid,
};
use acpi_tables::{Aml, AmlSink};

use super::{AcpiConfig, AcpiError, IrqNoFlags, dsdt};

/// Device numbers (slots) on a PCI bus.
pub const PCI_SLOTS: u8 = 32;
/// Interrupt pins per device: INTA..INTD, numbered 0..=3.
pub const PCI_INTX_PINS: u8 = 4;
/// Number of ICH9 PIRQ lines (A..H).
pub const PIRQ_COUNT: usize = 8;
/// The GSIs of PIRQ A..H on Q35 in APIC mode: I/O APIC inputs 16..23.
pub const Q35_PIRQ_GSIS: [u32; PIRQ_COUNT] = [16, 17, 18, 19, 20, 21, 22, 23];
/// Bytes of ECAM space per bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Most buses one ECAM area (and one PCIEXBAR) can cover.
pub const MAX_BUS_COUNT: u16 = 256;
/// Slot of the ICH9 LPC bridge.
pub const LPC_SLOT: u8 = 0x1f;
/// `_ADR` of the LPC bridge: device 0x1f, function 0.
pub const LPC_ADR: u32 = (LPC_SLOT as u32) << 16;
/// First PCI configuration port (CONFIG_ADDRESS; CONFIG_DATA follows).
pub const PCI_CONFIG_IO: u16 = 0xcf8;
/// Number of PCI configuration ports (0xcf8..=0xcff).
pub const PCI_CONFIG_IO_LEN: u8 = 8;
/// Start of the legacy VGA memory window.
pub const VGA_MEM_BASE: u64 = 0xa_0000;
/// Size of the legacy VGA memory window.
pub const VGA_MEM_SIZE: u64 = 0x2_0000;
/// The I/O ranges QEMU's q35 forwards to PCI: everything but the config
/// ports 0xcf8..=0xcff.
pub const Q35_IO_WINDOWS: [IoWindow; 2] = [
    IoWindow {
        first: 0x0000,
        last: 0x0cf7,
    },
    IoWindow {
        first: 0x0d00,
        last: 0xffff,
    },
];
/// The PCI host bridge `_OSC` UUID (PCI Firmware Specification 3.x).
pub const OSC_PCI_HOST_UUID: &str = "33DB4D5B-1FF7-401C-9657-7441C03DD766";
/// `_OSC` control bits granted to the OS: native PCIe hotplug (0), SHPC
/// hotplug (1), PME (2), AER (3), PCIe capability structure (4).
pub const OSC_CONTROL_GRANTED: u32 = 0x1f;

/// `_STA` value: present, enabled, shown in UI, functioning.
const STA_PRESENT: u8 = 0x0f;
/// i8042 data port.
const I8042_DATA: u16 = 0x60;
/// i8042 command/status port.
const I8042_CMD: u16 = 0x64;
/// ISA IRQ of the 8042 keyboard.
const I8042_KBD_IRQ: u8 = 1;

/// An inclusive range of I/O ports forwarded to PCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoWindow {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

/// A guest-physical MMIO window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioWindow {
    /// First address.
    pub base: u64,
    /// Size in bytes, at least 1.
    pub size: u64,
}

impl MmioWindow {
    /// The last address of the window (inclusive). The window must be valid
    /// (non-empty, not wrapping).
    pub fn last(&self) -> u64 {
        self.base + (self.size - 1)
    }
}

/// What the ACPI tables say about the Q35 PCI Express host bridge.
///
/// Build the tables after the guest firmware has programmed PCIEXBAR and
/// the BARs, so that `ecam_base` and the windows describe what it chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHostConfig {
    /// Guest-physical base of the ECAM (MMCONFIG) area, i.e. the address
    /// the guest programmed into PCIEXBAR; 1 MiB aligned. Segment 0.
    pub ecam_base: u64,
    /// Buses decoded from bus 0: 1..=256 (256 with OVMF's PCIEXBAR).
    pub bus_count: u16,
    /// I/O ranges forwarded to PCI ([`Q35_IO_WINDOWS`] as in QEMU); they
    /// must not overlap each other or the config ports 0xcf8..=0xcff.
    pub io_windows: Vec<IoWindow>,
    /// The 32-bit MMIO window (below 4 GiB, not overlapping the ECAM).
    pub mmio32: MmioWindow,
    /// The 64-bit MMIO window (at or above 4 GiB), if any.
    pub mmio64: Option<MmioWindow>,
    /// GSI of each PIRQ line A..H ([`Q35_PIRQ_GSIS`] on Q35); each at
    /// least 16, so that no PCI interrupt shares an ISA IRQ.
    pub pirq_gsis: [u32; PIRQ_COUNT],
    /// Whether a VGA device decodes the legacy VGA ranges; if false the
    /// FADT says "VGA not present".
    pub vga: bool,
}

impl PciHostConfig {
    /// A Q35 host bridge with 256 buses at `ecam_base`, the 32-bit window
    /// `mmio32`, no 64-bit window, QEMU's I/O windows, PIRQ A..H on GSIs
    /// 16..23 and no VGA.
    pub fn q35(ecam_base: u64, mmio32: MmioWindow) -> Self {
        Self {
            ecam_base,
            bus_count: MAX_BUS_COUNT,
            io_windows: Q35_IO_WINDOWS.to_vec(),
            mmio32,
            mmio64: None,
            pirq_gsis: Q35_PIRQ_GSIS,
            vga: false,
        }
    }

    /// Size of the ECAM area in bytes.
    pub fn ecam_size(&self) -> u64 {
        u64::from(self.bus_count) * ECAM_BUS_SIZE
    }

    /// The last bus number, `bus_count - 1` (valid configs only).
    pub fn last_bus(&self) -> u8 {
        // Validated: bus_count is 1..=256.
        (self.bus_count - 1) as u8
    }

    /// The GSI the `_PRT` gives INTx `pin` (0..=3 for INTA..INTD) of device
    /// `slot` (0..=31) on bus 0: `pirq_gsis[pci_intx_pirq(slot, pin)]`.
    pub fn intx_gsi(&self, slot: u8, pin: u8) -> u32 {
        self.pirq_gsis[pci_intx_pirq(slot, pin)]
    }

    /// Checks that the configuration can be described by the tables.
    pub fn validate(&self) -> Result<(), AcpiError> {
        if !(1..=MAX_BUS_COUNT).contains(&self.bus_count) {
            return Err(AcpiError::InvalidBusCount(self.bus_count));
        }
        let ecam_end = self.ecam_base.checked_add(self.ecam_size());
        if self.ecam_base % ECAM_BUS_SIZE != 0 || ecam_end.is_none() {
            return Err(AcpiError::InvalidEcam {
                base: self.ecam_base,
                bus_count: self.bus_count,
            });
        }

        let config_last = PCI_CONFIG_IO + u16::from(PCI_CONFIG_IO_LEN) - 1;
        for (i, w) in self.io_windows.iter().enumerate() {
            let overlaps = |first: u16, last: u16| w.first <= last && first <= w.last;
            let bad = w.first > w.last
                || overlaps(PCI_CONFIG_IO, config_last)
                || self.io_windows[..i]
                    .iter()
                    .any(|o| overlaps(o.first, o.last));
            if bad {
                return Err(AcpiError::InvalidIoWindow {
                    first: w.first,
                    last: w.last,
                });
            }
        }

        let bad_window = |name: &'static str, w: &MmioWindow| AcpiError::InvalidMmioWindow {
            name,
            base: w.base,
            size: w.size,
        };
        let m32 = &self.mmio32;
        let m32_end = m32.base.checked_add(m32.size);
        if m32.size == 0 || m32_end.is_none_or(|end| end > 1 << 32) {
            return Err(bad_window("32-bit MMIO", m32));
        }
        if let Some(m64) = &self.mmio64 {
            if m64.size == 0 || m64.base < 1 << 32 || m64.base.checked_add(m64.size - 1).is_none() {
                return Err(bad_window("64-bit MMIO", m64));
            }
        }

        // Ranges that must be disjoint: (name, first, last).
        let mut ranges = vec![
            (
                "ECAM",
                self.ecam_base,
                self.ecam_base + (self.ecam_size() - 1),
            ),
            ("VGA", VGA_MEM_BASE, VGA_MEM_BASE + VGA_MEM_SIZE - 1),
            ("32-bit MMIO", m32.base, m32.last()),
        ];
        if let Some(m64) = &self.mmio64 {
            ranges.push(("64-bit MMIO", m64.base, m64.last()));
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[..i] {
                if a.1 <= b.2 && b.1 <= a.2 {
                    return Err(AcpiError::WindowOverlap { a: b.0, b: a.0 });
                }
            }
        }

        for (pirq, &gsi) in self.pirq_gsis.iter().enumerate() {
            if gsi < 16 {
                return Err(AcpiError::InvalidPirqGsi { pirq, gsi });
            }
        }
        Ok(())
    }
}

/// The ICH9 PIRQ line (0..=7 for A..H) that INTx `pin` of device `slot` on
/// bus 0 is routed to, as in QEMU's q35 `_PRT` (see the module docs).
///
/// `slot` is the device number (0..=31) and `pin` is 0..=3 for INTA..INTD,
/// i.e. the config-space Interrupt Pin register minus one. Larger values
/// are reduced modulo 32 and 4.
pub fn pci_intx_pirq(slot: u8, pin: u8) -> usize {
    debug_assert!(slot < PCI_SLOTS && pin < PCI_INTX_PINS);
    let slot = slot % PCI_SLOTS;
    let pin = usize::from(pin % PCI_INTX_PINS);
    match slot {
        // LPC/SMBus/SATA/HDA/USB functions and slot 31: INTA -> PIRQA.
        0x19..=0x1d | 0x1f => pin,
        // The DMI-to-PCI bridge: INTA -> PIRQE, unrotated.
        0x1e => 4 + pin,
        // PCIe slots: PIRQ E..H, swizzled by slot so that the INTAs of
        // neighbouring slots land on different lines.
        _ => 4 + (usize::from(slot % 4) + pin) % 4,
    }
}

/// The GSI of INTx `pin` (0..=3) of device `slot` (0..=31) on bus 0 with
/// the Q35 PIRQ GSIs 16..23 ([`Q35_PIRQ_GSIS`]): the GSI the `_PRT` built
/// from [`PciHostConfig::q35`] announces, and the GSI the VMM must raise.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    Q35_PIRQ_GSIS[pci_intx_pirq(slot, pin)]
}

/// Already-encoded AML, to mix with `acpi_tables` objects.
struct RawAml<'a>(&'a [u8]);

impl Aml for RawAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.0);
    }
}

fn to_aml(obj: &dyn Aml) -> Vec<u8> {
    let mut aml = Vec::new();
    obj.to_aml_bytes(&mut aml);
    aml
}

/// `Name (_CRS, ResourceTemplate () {...})` of `\_SB_.PCI0`, in QEMU's
/// order: bus numbers, config ports, I/O windows, VGA window, 32-bit and
/// 64-bit MMIO windows. `pci` must have been validated.
pub fn pci0_crs_aml(pci: &PciHostConfig) -> Vec<u8> {
    let mut items: Vec<u8> = Vec::new();
    AddressSpace::<u16>::new_bus_number(0, u16::from(pci.last_bus())).to_aml_bytes(&mut items);
    IO::new(PCI_CONFIG_IO, PCI_CONFIG_IO, 1, PCI_CONFIG_IO_LEN).to_aml_bytes(&mut items);
    for w in &pci.io_windows {
        AddressSpace::<u16>::new_io(w.first, w.last, None).to_aml_bytes(&mut items);
    }
    // Validated: these windows lie below 4 GiB.
    let dword_memory = |cacheable, first: u64, last: u64| {
        AddressSpace::<u32>::new_memory(cacheable, true, first as u32, last as u32, None)
    };
    let vga_last = VGA_MEM_BASE + VGA_MEM_SIZE - 1;
    dword_memory(AddressSpaceCacheable::Cacheable, VGA_MEM_BASE, vga_last).to_aml_bytes(&mut items);
    let m32 = &pci.mmio32;
    dword_memory(AddressSpaceCacheable::NotCacheable, m32.base, m32.last())
        .to_aml_bytes(&mut items);
    if let Some(m64) = &pci.mmio64 {
        AddressSpace::<u64>::new_memory(
            AddressSpaceCacheable::Cacheable,
            true,
            m64.base,
            m64.last(),
            None,
        )
        .to_aml_bytes(&mut items);
    }
    let items = RawAml(&items);
    to_aml(&Name::new(
        Path::new("_CRS"),
        &ResourceTemplate::new(vec![&items]),
    ))
}

/// `Name (_PRT, Package (128) {...})`: every pin of every slot on bus 0
/// routed to `pci.intx_gsi(slot, pin)`.
pub fn pci0_prt_aml(pci: &PciHostConfig) -> Vec<u8> {
    let mut prt = PackageBuilder::new();
    for slot in 0..PCI_SLOTS {
        let addr = (u32::from(slot) << 16) | 0xffff;
        for pin in 0..PCI_INTX_PINS {
            let gsi = pci.intx_gsi(slot, pin);
            let mut entry = PackageBuilder::new();
            entry.add_element(&addr);
            entry.add_element(&pin);
            // Source 0: the fourth element is a GSI, not a link's index.
            entry.add_element(&0u8);
            entry.add_element(&gsi);
            prt.add_element(&entry);
        }
    }
    to_aml(&Name::new(Path::new("_PRT"), &prt))
}

/// The host bridge `_OSC` (as QEMU's q35, but also granting native PCIe
/// hotplug, since there is no ACPI hotplug):
///
/// ```text
/// Method (_OSC, 4) {
///     CreateDWordField (Arg3, 0, CDW1)
///     If (Arg0 == ToUUID ("33DB4D5B-1FF7-401C-9657-7441C03DD766")) {
///         CreateDWordField (Arg3, 8, CDW3)
///         Local0 = CDW3 & 0x1F
///         If (Arg1 != 1) { CDW1 |= 0x08 }          // unknown revision
///         If (CDW3 != Local0) { CDW1 |= 0x10 }     // capabilities masked
///         CDW3 = Local0
///     } Else { CDW1 |= 0x04 }                      // unrecognized UUID
///     Return (Arg3)
/// }
/// ```
pub fn pci0_osc_aml() -> Vec<u8> {
    let cdw1 = Path::new("CDW1");
    let cdw3 = Path::new("CDW3");
    let create_cdw1 = CreateDWordField::new(&cdw1, &Arg(3), &0u8);
    let create_cdw3 = CreateDWordField::new(&cdw3, &Arg(3), &8u8);
    let uuid = Uuid::new(OSC_PCI_HOST_UUID);
    let is_pci_host = Equal::new(&Arg(0), &uuid);
    let granted = OSC_CONTROL_GRANTED;
    let mask = And::new(&Local(0), &cdw3, &granted);
    let unknown_rev = NotEqual::new(&Arg(1), &1u8);
    let flag_rev = Or::new(&cdw1, &cdw1, &0x08u8);
    let if_rev = If::new(&unknown_rev, vec![&flag_rev]);
    let masked = NotEqual::new(&cdw3, &Local(0));
    let flag_masked = Or::new(&cdw1, &cdw1, &0x10u8);
    let if_masked = If::new(&masked, vec![&flag_masked]);
    let store = Store::new(&cdw3, &Local(0));
    let if_uuid = If::new(
        &is_pci_host,
        vec![&create_cdw3, &mask, &if_rev, &if_masked, &store],
    );
    let flag_uuid = Or::new(&cdw1, &cdw1, &0x04u8);
    let else_uuid = Else::new(vec![&flag_uuid]);
    let ret = Return::new(&Arg(3));
    to_aml(&Method::new(
        Path::new("_OSC"),
        4,
        false,
        vec![&create_cdw1, &if_uuid, &else_uuid, &ret],
    ))
}

/// `Device (DRAC)`: a PNP0C01 motherboard resource covering the ECAM area,
/// as QEMU's q35 (DWordMemory below 4 GiB, QWordMemory above).
pub fn ecam_reservation_aml(pci: &PciHostConfig) -> Vec<u8> {
    let first = pci.ecam_base;
    let last = first + (pci.ecam_size() - 1);
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0C01"));
    let cacheable = AddressSpaceCacheable::NotCacheable;
    let crs = if last < 1 << 32 {
        let mem = AddressSpace::<u32>::new_memory(cacheable, true, first as u32, last as u32, None);
        to_aml(&Name::new(
            Path::new("_CRS"),
            &ResourceTemplate::new(vec![&mem]),
        ))
    } else {
        let mem = AddressSpace::<u64>::new_memory(cacheable, true, first, last, None);
        to_aml(&Name::new(
            Path::new("_CRS"),
            &ResourceTemplate::new(vec![&mem]),
        ))
    };
    to_aml(&acpi_tables::aml::Device::new(
        Path::new("DRAC"),
        vec![&hid, &RawAml(&crs)],
    ))
}

/// `Device (PS2K)`: the 8042 keyboard controller (PNP0303) with ports 0x60
/// and 0x64 and IRQ 1, as QEMU's `KBD`.
pub fn i8042_device_aml() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0303"));
    let sta_value = Return::new(&STA_PRESENT);
    let sta = Method::new(Path::new("_STA"), 0, false, vec![&sta_value]);
    let data = IO::new(I8042_DATA, I8042_DATA, 1, 1);
    let cmd = IO::new(I8042_CMD, I8042_CMD, 1, 1);
    let irq = IrqNoFlags::new(I8042_KBD_IRQ);
    let crs = Name::new(
        Path::new("_CRS"),
        &ResourceTemplate::new(vec![&data, &cmd, &irq]),
    );
    to_aml(&acpi_tables::aml::Device::new(
        Path::new("PS2K"),
        vec![&hid, &sta, &crs],
    ))
}

/// `Device (LPC_)` at `_ADR` 0x001f0000 with the ISA devices of `cfg`: the
/// serial ports, the RTC if `cfg.cmos_rtc`, the keyboard controller if
/// `cfg.i8042`.
pub fn lpc_aml(cfg: &AcpiConfig) -> Vec<u8> {
    let mut children = to_aml(&Name::new(Path::new("_ADR"), &LPC_ADR));
    for (index, port) in cfg.serial_ports.iter().enumerate() {
        children.extend_from_slice(&dsdt::serial_device_aml(index, port));
    }
    if cfg.cmos_rtc {
        children.extend_from_slice(&dsdt::rtc_device_aml());
    }
    if cfg.i8042 {
        children.extend_from_slice(&i8042_device_aml());
    }
    to_aml(&acpi_tables::aml::Device::new(
        Path::new("LPC_"),
        vec![&RawAml(&children)],
    ))
}

/// `Device (PCI0)` (relative name, for the `\_SB_` scope) for `cfg`, whose
/// `pci` must be `Some` and validated.
pub fn pci0_aml(cfg: &AcpiConfig, pci: &PciHostConfig) -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0A08"));
    let cid = Name::new(Path::new("_CID"), &EISAName::new("PNP0A03"));
    let adr = Name::new(Path::new("_ADR"), &0u8);
    let uid = Name::new(Path::new("_UID"), &0u8);
    let seg = Name::new(Path::new("_SEG"), &0u8);
    let bbn = Name::new(Path::new("_BBN"), &0u8);
    let mut rest = pci0_crs_aml(pci);
    rest.extend_from_slice(&pci0_prt_aml(pci));
    rest.extend_from_slice(&pci0_osc_aml());
    rest.extend_from_slice(&ecam_reservation_aml(pci));
    rest.extend_from_slice(&lpc_aml(cfg));
    to_aml(&acpi_tables::aml::Device::new(
        Path::new("PCI0"),
        vec![&hid, &cid, &adr, &uid, &seg, &bbn, &RawAml(&rest)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    fn ovmf_2022() -> PciHostConfig {
        PciHostConfig::q35(
            0xb000_0000,
            MmioWindow {
                base: 0xc000_0000,
                size: 0x3c00_0000,
            },
        )
    }

    #[test]
    fn swizzle_matches_qemu_q35() {
        // Slots 0..=0x18: PIRQ E + (slot + pin) % 4.
        assert_eq!(pci_intx_pirq(0, 0), 4);
        assert_eq!(pci_intx_pirq(1, 0), 5);
        assert_eq!(pci_intx_pirq(2, 3), 5);
        assert_eq!(pci_intx_pirq(3, 1), 4);
        assert_eq!(pci_intx_pirq(0x17, 0), 7);
        assert_eq!(pci_intx_pirq(0x18, 0), 4);
        // Slots 0x19..=0x1d and 0x1f: PIRQ A..D.
        for slot in (0x19..=0x1d).chain([0x1f]) {
            for pin in 0..4 {
                assert_eq!(pci_intx_pirq(slot, pin), usize::from(pin), "slot {slot:#x}");
            }
        }
        // Slot 0x1e: PIRQ E..H.
        assert_eq!(pci_intx_pirq(0x1e, 0), 4);
        assert_eq!(pci_intx_pirq(0x1e, 3), 7);
        // GSIs 16..23, and every slot spreads its four pins over four lines.
        assert_eq!(pci_intx_gsi(0, 0), 20);
        assert_eq!(pci_intx_gsi(0x1f, 0), 16);
        assert_eq!(pci_intx_gsi(5, 2), 23);
        for slot in 0..PCI_SLOTS {
            let mut gsis: Vec<u32> = (0..4).map(|pin| pci_intx_gsi(slot, pin)).collect();
            assert!(gsis.iter().all(|g| (16..=23).contains(g)));
            gsis.sort();
            gsis.dedup();
            assert_eq!(gsis.len(), 4, "slot {slot}");
        }
    }

    #[test]
    fn custom_pirq_gsis_are_used() {
        let mut pci = ovmf_2022();
        pci.pirq_gsis = [40, 41, 42, 43, 44, 45, 46, 47];
        assert_eq!(pci.intx_gsi(0x1f, 1), 41);
        assert_eq!(pci.intx_gsi(1, 0), 45);
        assert_eq!(ovmf_2022().intx_gsi(1, 0), pci_intx_gsi(1, 0));
    }

    #[test]
    fn crs_bytes() {
        let mut pci = ovmf_2022();
        pci.mmio64 = Some(MmioWindow {
            base: 0x80_0000_0000,
            size: 0x8_0000_0000,
        });
        let crs = pci0_crs_aml(&pci);
        #[rustfmt::skip]
        let bus = [0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0xff, 0, 0, 0, 0x00, 0x01];
        #[rustfmt::skip]
        let cfg_io = [0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08];
        #[rustfmt::skip]
        let io_hi = [0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00, 0xf3];
        let mut m32 = vec![0x87, 0x17, 0x00, 0x00, 0x0c, 0x01];
        for v in [0u32, 0xc000_0000, 0xfbff_ffff, 0, 0x3c00_0000] {
            m32.extend_from_slice(&v.to_le_bytes());
        }
        let mut m64 = vec![0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03];
        for v in [0u64, 0x80_0000_0000, 0x87_ffff_ffff, 0, 0x8_0000_0000] {
            m64.extend_from_slice(&v.to_le_bytes());
        }
        let positions: Vec<usize> = [&bus[..], &cfg_io, &io_hi, &m32, &m64]
            .iter()
            .map(|d| find(&crs, d).unwrap_or_else(|| panic!("{d:02x?} not in _CRS")))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        assert_eq!(&crs[crs.len() - 2..], &[0x79, 0x00]);
        pci.mmio64 = None;
        assert!(find(&pci0_crs_aml(&pci), &[0x8a, 0x2b]).is_none());
    }

    #[test]
    fn prt_has_128_entries() {
        let prt = pci0_prt_aml(&ovmf_2022());
        // NameOp "_PRT" PackageOp PkgLength(2 bytes) NumElements 128.
        assert_eq!(&prt[..5], b"\x08_PRT");
        assert_eq!(prt[5], 0x12);
        assert_eq!(prt[8], 128);
        // Slot 2, INTD: Package (4) {0x0002FFFF, 3, 0, 21}.
        let entry = [
            0x12, 0x0c, 0x04, 0x0c, 0xff, 0xff, 0x02, 0x00, 0x0a, 0x03, 0x00, 0x0a, 21,
        ];
        assert_eq!(pci_intx_gsi(2, 3), 21);
        assert!(find(&prt, &entry).is_some());
    }

    #[test]
    fn validation() {
        let ok = ovmf_2022();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.ecam_size(), 0x1000_0000);
        let mut up_to_4g = ovmf_2022();
        up_to_4g.mmio32.size = 0x4000_0000;
        assert_eq!(up_to_4g.validate(), Ok(()));
        assert_eq!(up_to_4g.mmio32.last(), 0xffff_ffff);
        let bad = |f: fn(&mut PciHostConfig)| {
            let mut pci = ovmf_2022();
            f(&mut pci);
            pci.validate().unwrap_err()
        };
        assert_eq!(bad(|p| p.bus_count = 0), AcpiError::InvalidBusCount(0));
        assert_eq!(bad(|p| p.bus_count = 257), AcpiError::InvalidBusCount(257));
        assert!(matches!(
            bad(|p| p.ecam_base = 0xb000_8000),
            AcpiError::InvalidEcam { .. }
        ));
        assert!(matches!(
            bad(|p| p.ecam_base = u64::MAX - 0xf_ffff),
            AcpiError::InvalidEcam { .. }
        ));
        assert_eq!(
            bad(|p| p.io_windows[0].last = 0xcf8),
            AcpiError::InvalidIoWindow {
                first: 0,
                last: 0xcf8
            }
        );
        assert!(matches!(
            bad(|p| p.io_windows.push(IoWindow {
                first: 0x1000,
                last: 0x1fff
            })),
            AcpiError::InvalidIoWindow { first: 0x1000, .. }
        ));
        assert!(matches!(
            bad(|p| p.io_windows[1] = IoWindow {
                first: 0xe000,
                last: 0xd000
            }),
            AcpiError::InvalidIoWindow { .. }
        ));
        assert!(matches!(
            bad(|p| p.mmio32.size = 0x4000_0001),
            AcpiError::InvalidMmioWindow { .. }
        ));
        assert!(matches!(
            bad(|p| p.mmio32.size = 0),
            AcpiError::InvalidMmioWindow { .. }
        ));
        assert!(matches!(
            bad(|p| p.mmio64 = Some(MmioWindow {
                base: 0xf000_0000,
                size: 0x1000
            })),
            AcpiError::InvalidMmioWindow {
                name: "64-bit MMIO",
                ..
            }
        ));
        assert_eq!(
            bad(|p| p.mmio32.base = 0xb800_0000),
            AcpiError::WindowOverlap {
                a: "ECAM",
                b: "32-bit MMIO"
            }
        );
        assert_eq!(
            bad(|p| p.ecam_base = 0),
            AcpiError::WindowOverlap {
                a: "ECAM",
                b: "VGA"
            }
        );
        assert_eq!(
            bad(|p| p.pirq_gsis[3] = 11),
            AcpiError::InvalidPirqGsi { pirq: 3, gsi: 11 }
        );
        let mut pci = ovmf_2022();
        pci.io_windows.clear();
        pci.bus_count = 1;
        pci.ecam_base = 0x1_0000_0000;
        pci.mmio64 = Some(MmioWindow {
            base: 0x1_0010_0000,
            size: 1 << 30,
        });
        assert_eq!(pci.validate(), Ok(()));
        assert_eq!(pci.last_bus(), 0);
    }

    #[test]
    fn ecam_reservation_width_follows_address() {
        let low = ecam_reservation_aml(&ovmf_2022());
        assert!(find(&low, b"DRAC").is_some());
        // DWordMemory 0xb0000000..0xbfffffff.
        let mut want = vec![0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0];
        want.extend_from_slice(&0xb000_0000u32.to_le_bytes());
        want.extend_from_slice(&0xbfff_ffffu32.to_le_bytes());
        assert!(find(&low, &want).is_some());
        let mut pci = ovmf_2022();
        pci.ecam_base = 0x40_0000_0000;
        let high = ecam_reservation_aml(&pci);
        assert!(find(&high, &[0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01]).is_some());
    }

    #[test]
    fn lpc_holds_the_isa_devices() {
        let mut cfg = AcpiConfig {
            cmos_rtc: true,
            i8042: true,
            ..AcpiConfig::default()
        };
        let lpc = lpc_aml(&cfg);
        // _ADR 0x001F0000.
        assert!(find(&lpc, &[b'_', b'A', b'D', b'R', 0x0c, 0, 0, 0x1f, 0]).is_some());
        for name in [&b"COM1"[..], b"RTC_", b"PS2K"] {
            assert!(find(&lpc, name).is_some());
        }
        cfg.cmos_rtc = false;
        cfg.i8042 = false;
        let lpc = lpc_aml(&cfg);
        assert!(find(&lpc, b"RTC_").is_none() && find(&lpc, b"PS2K").is_none());
    }
}
