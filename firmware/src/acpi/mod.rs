//! ACPI tables for an x86 guest: RSDP, XSDT, FADT, FACS, DSDT, MADT and,
//! on the Q35 machine, MCFG.
//!
//! [`build`] turns an [`AcpiConfig`] into an [`AcpiTables`] model: one byte
//! blob per table plus the pointer fix-ups and checksums between them (see
//! [`tables`] for the model). Back-ends then decide where the
//! tables live:
//!
//! * [`AcpiTables::place_at`] for direct kernel boot: everything contiguous
//!   at one guest-physical address (0xe0000, where Linux scans for the RSDP).
//! * later, fw_cfg `etc/table-loader` commands for OVMF on Q35.
//!
//! The platform described is a full (not hardware-reduced) ACPI PC: local
//! APICs, one I/O APIC, 8259 PICs (PCAT_COMPAT), an ICH9-style PM block in
//! I/O space, reset through port 0xcf9, and 16550 serial ports.
//!
//! One [`AcpiConfig`] describes either machine:
//!
//! * `pci: None`: the direct-boot machine without PCI. The serial ports and
//!   the RTC sit directly in `\_SB_`.
//! * `pci: Some(`[`PciHostConfig`]`)`: the Q35 machine. The DSDT gains
//!   `\_SB_.PCI0` (see [`pci`]) with the ISA devices moved under its LPC
//!   bridge `\_SB_.PCI0.LPC_`, the XSDT lists an MCFG, and the FADT
//!   announces the RTC century register and VGA per the config. Build the
//!   tables once the firmware has programmed PCIEXBAR and the BARs (for
//!   OVMF: on the guest's first fw_cfg read of the ACPI files), so that the
//!   ECAM address and the windows are the ones the guest chose.

mod dsdt;
mod fadt;
#[cfg(test)]
mod iasl_tests;
mod madt;
mod mcfg;
pub mod pci;
pub mod table_loader;
pub mod tables;

pub use dsdt::{IrqNoFlags, dsdt_body, s5_aml, serial_device_aml, system_bus_aml};
pub use fadt::{
    DSDT_OFFSET, FADT_LEN, FIRMWARE_CTRL_OFFSET, X_DSDT_OFFSET, X_FIRMWARE_CTRL_OFFSET,
    iapc_boot_arch,
};
pub use madt::{
    ALL_PROCESSORS_UID, InterruptSourceOverride, LocalApicNmi, MPS_INTI_ACTIVE_HIGH, MPS_INTI_LEVEL,
};
pub use mcfg::{MCFG_LEN, MCFG_REVISION, build_mcfg};
pub use pci::{IoWindow, MmioWindow, PciHostConfig, pci_intx_gsi, pci_intx_pirq};
pub use tables::{
    AcpiTables, PlacedTable, PlacedTables, PointerWidth, TableBlob, TableChecksum, TableId,
    TablePointer, Zone,
};

use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use zerocopy::IntoBytes;

/// The SLP_TYP value the DSDT's `\_S5_` announces. The PM device treats
/// PM1a_CNT.SLP_EN with this SLP_TYP as power-off (QEMU/ICH9 convention;
/// OVMF also writes SLP_TYP 0 for shutdown).
pub const S5_SLP_TYP: u8 = 0;

/// Length of the PM1a event block (status + enable, 16 bits each).
pub const PM1_EVT_LEN: u8 = 4;
/// Length of the PM1a control block.
pub const PM1_CNT_LEN: u8 = 2;
/// Length of the PM timer block (32-bit counter).
pub const PM_TMR_LEN: u8 = 4;

/// OEM table ID written in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"TESSERA ";
/// OEM revision written in every table header.
pub const OEM_REVISION: u32 = 1;

/// Alignment of the RSDP (the OS scans 16-byte boundaries).
const RSDP_ALIGN: u64 = 16;
/// Alignment of the FACS required by the ACPI spec.
const FACS_ALIGN: u64 = 64;
/// Alignment of every other table.
const TABLE_ALIGN: u64 = 8;
/// Offset of the XSDT address in the RSDP.
const RSDP_XSDT_OFFSET: usize = 24;
/// Offset of the RSDP's first checksum (over bytes 0..20).
const RSDP_CHECKSUM_OFFSET: usize = 8;
/// Length covered by the RSDP's first checksum.
const RSDP_V1_LEN: usize = 20;
/// Offset of the RSDP's extended checksum (over all 36 bytes).
const RSDP_EXT_CHECKSUM_OFFSET: usize = 32;
/// Length of the standard ACPI table header.
const SDT_HEADER_LEN: usize = 36;
/// XSDT revision.
const XSDT_REVISION: u8 = 1;
/// Most serial ports named `COM1`..`COM9`.
pub const MAX_SERIAL_PORTS: usize = 9;

/// Errors from building or placing ACPI tables.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    /// `cpu_count` must be 1..=255 (xAPIC ids; 0xff means broadcast).
    #[error("cpu_count {0} is out of range 1..=255")]
    InvalidCpuCount(u32),
    /// The SCI must be an ISA IRQ other than 0 and 2 (timer, cascade).
    #[error("SCI IRQ {0} must be an ISA IRQ (1 or 3..=15)")]
    InvalidSciIrq(u8),
    /// Too many serial ports to name COM1..COM9.
    #[error("{0} serial ports given, at most {MAX_SERIAL_PORTS} are supported")]
    TooManySerialPorts(usize),
    /// A serial port's IRQ is not an ISA IRQ.
    #[error("serial port {index}: IRQ {irq} is not an ISA IRQ (0..=15)")]
    InvalidSerialIrq {
        /// Index in `serial_ports`.
        index: usize,
        /// The IRQ given.
        irq: u8,
    },
    /// An I/O block is zero where required, or runs past port 0xffff.
    #[error("{name} I/O block at {port:#x} with length {len} is invalid")]
    InvalidIoBlock {
        /// Which block.
        name: &'static str,
        /// Its first port.
        port: u16,
        /// Its length in bytes.
        len: u8,
    },
    /// GPE0_BLK_LEN must be even and at most 30 (its GAS width is 8 bits).
    #[error("GPE0 block length {0} must be even and at most 30")]
    InvalidGpe0Len(u8),
    /// A table alignment is not a power of two.
    #[error("table {table}: alignment {align} is not a power of two")]
    BadAlignment {
        /// Table signature.
        table: String,
        /// The alignment given.
        align: u64,
    },
    /// A fix-up refers to a table that does not exist.
    #[error("no table with index {0}")]
    UnknownTable(usize),
    /// A pointer or checksum range lies outside its table.
    #[error(
        "{what} at offset {offset:#x} (+{len}) is outside table {table} of length {table_len:#x}"
    )]
    OutOfBounds {
        /// "pointer" or "checksum range".
        what: &'static str,
        /// Table signature.
        table: String,
        /// Offset of the field or range.
        offset: usize,
        /// Length of the field or range.
        len: usize,
        /// Length of the table.
        table_len: usize,
    },
    /// A checksum byte lies outside the range it covers.
    #[error("table {table}: checksum byte {field:#x} is outside its range {start:#x}+{len:#x}")]
    ChecksumFieldOutsideRange {
        /// Table signature.
        table: String,
        /// Offset of the checksum byte.
        field: usize,
        /// Start of the range.
        start: usize,
        /// Length of the range.
        len: usize,
    },
    /// The tables do not fit in the space given to `place_at`.
    #[error("ACPI tables at {base:#x} need {needed:#x} bytes, only {limit:#x} available")]
    NoRoom {
        /// Requested base address.
        base: u64,
        /// Bytes needed, including alignment padding.
        needed: u64,
        /// Bytes available.
        limit: u64,
    },
    /// The layout would run past the end of the 64-bit address space.
    #[error("ACPI tables at {base:#x} overflow the address space")]
    AddressOverflow {
        /// Requested base address.
        base: u64,
    },
    /// A table's address does not fit in a 32-bit pointer field.
    #[error("table {table}: pointer at {offset:#x} cannot hold address {addr:#x} of {target}")]
    PointerOverflow {
        /// Table holding the pointer.
        table: String,
        /// Offset of the pointer field.
        offset: usize,
        /// Target table signature.
        target: String,
        /// Target address.
        addr: u64,
    },
    /// The model has no RSDP, so there is no address to hand to the guest.
    #[error("no RSDP among the tables")]
    NoRsdp,
    /// The PCI host bridge must decode 1..=256 buses.
    #[error("PCI bus count {0} is out of range 1..=256")]
    InvalidBusCount(u16),
    /// The ECAM area must be 1 MiB aligned and end inside the address space.
    #[error("ECAM at {base:#x} for {bus_count} buses is misaligned or overflows")]
    InvalidEcam {
        /// ECAM base address.
        base: u64,
        /// Number of buses.
        bus_count: u16,
    },
    /// A PCI I/O window is empty, overlaps the config ports 0xcf8..=0xcff
    /// or overlaps another I/O window.
    #[error(
        "PCI I/O window {first:#x}..={last:#x} is empty or overlaps 0xcf8..=0xcff or another window"
    )]
    InvalidIoWindow {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// An MMIO window is empty, wraps, or lies on the wrong side of 4 GiB.
    #[error("{name} window at {base:#x} with size {size:#x} is invalid")]
    InvalidMmioWindow {
        /// Which window.
        name: &'static str,
        /// Its base address.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// Two address ranges of the PCI host bridge overlap.
    #[error("the {a} and {b} ranges overlap")]
    WindowOverlap {
        /// The first range.
        a: &'static str,
        /// The second range.
        b: &'static str,
    },
    /// A PIRQ line is routed to an ISA IRQ (GSI below 16).
    #[error("PIRQ{} is routed to GSI {gsi}, which is an ISA IRQ", (b'A' + *pirq as u8) as char)]
    InvalidPirqGsi {
        /// PIRQ line, 0..=7 for A..H.
        pirq: usize,
        /// The GSI given.
        gsi: u32,
    },
}

/// I/O ports of the ACPI PM block (ICH9 layout at PMBASE 0x600 by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmBlocks {
    /// PM1a event block (status + enable), [`PM1_EVT_LEN`] bytes.
    pub pm1a_evt: u16,
    /// PM1a control block, [`PM1_CNT_LEN`] bytes.
    pub pm1a_cnt: u16,
    /// PM timer, [`PM_TMR_LEN`] bytes, 32-bit counter; 0 = no PM timer.
    pub pm_tmr: u16,
    /// GPE0 block (status half, then enable half).
    pub gpe0: u16,
    /// GPE0 block length in bytes; 0 = no GPE0 block.
    pub gpe0_len: u8,
}

impl Default for PmBlocks {
    fn default() -> Self {
        Self {
            pm1a_evt: 0x600,
            pm1a_cnt: 0x604,
            pm_tmr: 0x608,
            gpe0: 0x620,
            gpe0_len: 16,
        }
    }
}

/// The FADT reset register: an I/O port and the byte written to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetRegister {
    /// I/O port.
    pub port: u16,
    /// Value the OS writes to reset.
    pub value: u8,
}

impl Default for ResetRegister {
    /// The ICH9 reset control register: write 0x06 to port 0xcf9.
    fn default() -> Self {
        Self {
            port: 0xcf9,
            value: 0x06,
        }
    }
}

/// A 16550 UART on the ISA bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialPort {
    /// First of its 8 I/O ports.
    pub io: u16,
    /// ISA IRQ.
    pub irq: u8,
}

impl SerialPort {
    /// COM1: ports 0x3f8..0x400, IRQ 4.
    pub const COM1: SerialPort = SerialPort { io: 0x3f8, irq: 4 };
}

/// What the ACPI tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs: LAPIC ids and processor UIDs 0..cpu_count.
    pub cpu_count: u32,
    /// I/O APIC id.
    pub ioapic_id: u8,
    /// I/O APIC MMIO address (GSI base 0).
    pub ioapic_addr: u32,
    /// Local APIC MMIO address.
    pub lapic_addr: u32,
    /// I/O ports of the ACPI PM block.
    pub pm: PmBlocks,
    /// ISA IRQ of the SCI (level-triggered, active high).
    pub sci_irq: u8,
    /// Reset register.
    pub reset: ResetRegister,
    /// Whether an 8042 keyboard controller is present (IAPC_BOOT_ARCH).
    pub i8042: bool,
    /// Whether a CMOS RTC is present; if false, IAPC_BOOT_ARCH says
    /// "CMOS RTC not present".
    pub cmos_rtc: bool,
    /// Serial ports, described as `\_SB_.COM1`, `\_SB_.COM2`, …
    pub serial_ports: Vec<SerialPort>,
    /// OEM id in every table header.
    pub oem_id: [u8; 6],
    /// The PCI Express host bridge of the Q35 machine; `None` for the
    /// direct-boot machine without PCI.
    pub pci: Option<PciHostConfig>,
}

impl Default for AcpiConfig {
    /// One vCPU, I/O APIC 0 at 0xfec0_0000, LAPIC at 0xfee0_0000, PM block
    /// at 0x600, SCI IRQ 9, reset 0x06 to port 0xcf9, COM1, OEM `TESSRA`.
    /// No 8042 and no CMOS RTC: the direct-boot machine emulates neither
    /// (its i8042 is only a reset line). Set them when the devices exist.
    /// No PCI.
    fn default() -> Self {
        Self {
            cpu_count: 1,
            ioapic_id: 0,
            ioapic_addr: 0xfec0_0000,
            lapic_addr: 0xfee0_0000,
            pm: PmBlocks::default(),
            sci_irq: 9,
            reset: ResetRegister::default(),
            i8042: false,
            cmos_rtc: false,
            serial_ports: vec![SerialPort::COM1],
            oem_id: *b"TESSRA",
            pci: None,
        }
    }
}

fn check_io_block(name: &'static str, port: u16, len: u8) -> Result<(), AcpiError> {
    let end = u32::from(port) + u32::from(len);
    if port == 0 || end > 0x1_0000 {
        return Err(AcpiError::InvalidIoBlock { name, port, len });
    }
    Ok(())
}

impl AcpiConfig {
    /// Checks that the configuration can be described by the tables.
    pub fn validate(&self) -> Result<(), AcpiError> {
        if !(1..=255).contains(&self.cpu_count) {
            return Err(AcpiError::InvalidCpuCount(self.cpu_count));
        }
        if !matches!(self.sci_irq, 1 | 3..=15) {
            return Err(AcpiError::InvalidSciIrq(self.sci_irq));
        }
        if self.serial_ports.len() > MAX_SERIAL_PORTS {
            return Err(AcpiError::TooManySerialPorts(self.serial_ports.len()));
        }
        for (index, port) in self.serial_ports.iter().enumerate() {
            if port.irq >= 16 {
                return Err(AcpiError::InvalidSerialIrq {
                    index,
                    irq: port.irq,
                });
            }
            check_io_block("serial", port.io, dsdt::UART_IO_LEN)?;
        }
        let pm = &self.pm;
        check_io_block("PM1a_EVT", pm.pm1a_evt, PM1_EVT_LEN)?;
        check_io_block("PM1a_CNT", pm.pm1a_cnt, PM1_CNT_LEN)?;
        if pm.pm_tmr != 0 {
            check_io_block("PM_TMR", pm.pm_tmr, PM_TMR_LEN)?;
        }
        if pm.gpe0_len % 2 != 0 || pm.gpe0_len > 30 {
            return Err(AcpiError::InvalidGpe0Len(pm.gpe0_len));
        }
        if pm.gpe0_len != 0 {
            check_io_block("GPE0", pm.gpe0, pm.gpe0_len)?;
        }
        if let Some(pci) = &self.pci {
            pci.validate()?;
            // The interrupt controllers' 4 KiB pages must stay out of the
            // PCI host bridge's ranges.
            let mmio32 = ("32-bit MMIO", pci.mmio32.base, pci.mmio32.last());
            let ecam_last = pci.ecam_base + (pci.ecam_size() - 1);
            let ecam = ("ECAM", pci.ecam_base, ecam_last);
            let ioapic = ("I/O APIC", u64::from(self.ioapic_addr), 0xfff);
            let lapic = ("local APIC", u64::from(self.lapic_addr), 0xfff);
            for (a, first, last) in [mmio32, ecam] {
                for (b, base, len) in [ioapic, lapic] {
                    if base <= last && first <= base + len {
                        return Err(AcpiError::WindowOverlap { a, b });
                    }
                }
            }
        }
        Ok(())
    }
}

/// The RSDP (revision 2) with XSDT address and checksums left zero.
fn build_rsdp(cfg: &AcpiConfig) -> Vec<u8> {
    let mut bytes = Rsdp::new(cfg.oem_id, 0).as_bytes().to_vec();
    bytes[RSDP_CHECKSUM_OFFSET] = 0;
    bytes[RSDP_EXT_CHECKSUM_OFFSET] = 0;
    bytes
}

/// An XSDT with `entries` zero entries and a zero checksum.
fn build_xsdt(cfg: &AcpiConfig, entries: usize) -> Vec<u8> {
    let len = SDT_HEADER_LEN + 8 * entries;
    // At most a handful of entries: the length fits in u32.
    let xsdt = Sdt::new(
        *b"XSDT",
        len as u32,
        XSDT_REVISION,
        cfg.oem_id,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    let mut bytes = xsdt.as_slice().to_vec();
    bytes[tables::SDT_CHECKSUM_OFFSET] = 0;
    bytes
}

/// Builds the ACPI tables for `cfg`.
///
/// Table order (also the order in guest memory after
/// [`AcpiTables::place_at`]): RSDP, FACP, FACS, DSDT, APIC, then MCFG if
/// `cfg.pci` is set, then XSDT. The XSDT lists FACP, APIC and MCFG; the
/// FADT points at the FACS and the DSDT through both its 32-bit and 64-bit
/// fields.
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    cfg.validate()?;
    let mut t = AcpiTables::new();

    let rsdp = t.add_table(*b"RSDP", Zone::FSeg, RSDP_ALIGN, build_rsdp(cfg))?;
    let fadt = t.add_table(*b"FACP", Zone::High, TABLE_ALIGN, fadt::build_fadt(cfg))?;
    let facs = t.add_table(*b"FACS", Zone::High, FACS_ALIGN, fadt::build_facs())?;
    let dsdt = t.add_table(*b"DSDT", Zone::High, TABLE_ALIGN, dsdt::build_dsdt(cfg))?;
    let madt = t.add_table(*b"APIC", Zone::High, TABLE_ALIGN, madt::build_madt(cfg))?;
    let mcfg = match &cfg.pci {
        Some(pci) => {
            let blob = mcfg::build_mcfg(cfg, pci);
            Some(t.add_table(*b"MCFG", Zone::High, TABLE_ALIGN, blob)?)
        }
        None => None,
    };
    // Tables reachable from the XSDT, in XSDT order.
    let xsdt_entries: Vec<TableId> = [fadt, madt].into_iter().chain(mcfg).collect();
    let xsdt_blob = build_xsdt(cfg, xsdt_entries.len());
    let xsdt = t.add_table(*b"XSDT", Zone::High, TABLE_ALIGN, xsdt_blob)?;

    t.add_pointer(rsdp, RSDP_XSDT_OFFSET, PointerWidth::Qword, xsdt)?;
    for (i, &entry) in xsdt_entries.iter().enumerate() {
        t.add_pointer(xsdt, SDT_HEADER_LEN + 8 * i, PointerWidth::Qword, entry)?;
    }
    t.add_pointer(fadt, FIRMWARE_CTRL_OFFSET, PointerWidth::Dword, facs)?;
    t.add_pointer(fadt, DSDT_OFFSET, PointerWidth::Dword, dsdt)?;
    t.add_pointer(fadt, X_FIRMWARE_CTRL_OFFSET, PointerWidth::Qword, facs)?;
    t.add_pointer(fadt, X_DSDT_OFFSET, PointerWidth::Qword, dsdt)?;

    for table in [fadt, dsdt, madt].into_iter().chain(mcfg).chain([xsdt]) {
        t.add_sdt_checksum(table)?;
    }
    // The 20-byte (ACPI 1.0) checksum first: the extended one covers it.
    t.add_checksum(rsdp, 0, RSDP_V1_LEN, RSDP_CHECKSUM_OFFSET)?;
    let rsdp_len = Rsdp::len();
    t.add_checksum(rsdp, 0, rsdp_len, RSDP_EXT_CHECKSUM_OFFSET)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xe0000;
    const LIMIT: u64 = 0x10000;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }
    fn u32_at(b: &[u8], off: usize) -> u64 {
        u64::from(u32::from_le_bytes(b[off..off + 4].try_into().unwrap()))
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// The placed bytes of the table starting at guest address `addr`.
    fn at(p: &PlacedTables, addr: u64) -> &[u8] {
        let t = p
            .tables
            .iter()
            .find(|t| t.addr == addr)
            .unwrap_or_else(|| panic!("no table at {addr:#x}"));
        &p.bytes[(addr - p.base) as usize..][..t.len]
    }

    fn placed(cfg: &AcpiConfig) -> PlacedTables {
        build(cfg).unwrap().place_at(BASE, LIMIT).unwrap()
    }

    #[test]
    fn signatures_in_order() {
        let t = build(&AcpiConfig::default()).unwrap();
        let names: Vec<[u8; 4]> = vec![*b"RSDP", *b"FACP", *b"FACS", *b"DSDT", *b"APIC", *b"XSDT"];
        assert_eq!(t.signatures(), names);
        assert_eq!(t.find(b"DSDT").map(TableId::index), Some(3));
        assert_eq!(t.pointers().len(), 1 + 2 + 4);
        assert_eq!(t.checksums().len(), 4 + 2);
    }

    #[test]
    fn every_checksum_is_valid_after_placement() {
        for cpu_count in [1, 2, 8, 255] {
            let p = placed(&AcpiConfig {
                cpu_count,
                ..AcpiConfig::default()
            });
            for (i, t) in p.tables.iter().enumerate() {
                let b = p.table_bytes(i).unwrap();
                match &t.name {
                    b"FACS" => assert_eq!(&b[..4], b"FACS"),
                    b"RSDP" => {
                        assert_eq!(sum(&b[..20]), 0, "RSDP 20-byte checksum");
                        assert_eq!(sum(b), 0, "RSDP extended checksum");
                    }
                    name => assert_eq!(sum(b), 0, "{}", tables::sig_str(name)),
                }
            }
        }
    }

    #[test]
    fn rsdp_layout() {
        let p = placed(&AcpiConfig::default());
        assert_eq!(p.rsdp_addr, BASE);
        let rsdp = at(&p, p.rsdp_addr);
        assert_eq!(rsdp.len(), 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(&rsdp[9..15], b"TESSRA");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u32_at(rsdp, 16), 0, "RsdtAddress");
        assert_eq!(u32_at(rsdp, 20), 36, "length");
    }

    #[test]
    fn pointers_land_on_the_right_tables() {
        let cfg = AcpiConfig {
            cpu_count: 3,
            ..AcpiConfig::default()
        };
        let p = placed(&cfg);
        let rsdp = at(&p, p.rsdp_addr);
        let xsdt_addr = u64_at(rsdp, 24);
        let xsdt = at(&p, xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(u32_at(xsdt, 4), 36 + 16);
        let entries: Vec<&[u8]> = (0..2).map(|i| at(&p, u64_at(xsdt, 36 + 8 * i))).collect();
        assert_eq!(&entries[0][..4], b"FACP");
        assert_eq!(&entries[1][..4], b"APIC");

        let fadt = entries[0];
        let facs_addr = u32_at(fadt, FIRMWARE_CTRL_OFFSET);
        assert_eq!(u64_at(fadt, X_FIRMWARE_CTRL_OFFSET), facs_addr);
        assert_eq!(facs_addr % 64, 0, "FACS alignment");
        assert_eq!(&at(&p, facs_addr)[..4], b"FACS");
        let dsdt_addr = u32_at(fadt, DSDT_OFFSET);
        assert_eq!(u64_at(fadt, X_DSDT_OFFSET), dsdt_addr);
        assert_eq!(&at(&p, dsdt_addr)[..4], b"DSDT");

        // Everything lies inside [base, base + len) and tables do not overlap.
        let mut spans: Vec<(u64, u64)> = p
            .tables
            .iter()
            .map(|t| (t.addr, t.addr + t.len as u64))
            .collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
        assert_eq!(spans[0].0, BASE);
        assert_eq!(spans.last().unwrap().1, BASE + p.bytes.len() as u64);
    }

    #[test]
    fn fadt_after_placement() {
        let p = placed(&AcpiConfig::default());
        let fadt = p.find(b"FACP").unwrap();
        assert_eq!(fadt.len(), 276);
        assert_eq!(u32_at(fadt, 46) & 0xffff, 9, "SCI_INT");
        assert_eq!(u32_at(fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(fadt, 112), 0x0525, "FLAGS");
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1], "RESET_REG GAS");
        assert_eq!(u64_at(fadt, 120), 0xcf9);
        assert_eq!(fadt[128], 6, "RESET_VALUE");
        assert_eq!(u64_at(fadt, 140), u32_at(fadt, 40), "X_DSDT");
    }

    #[test]
    fn madt_entry_count() {
        for cpu_count in [1, 4, 255] {
            let p = placed(&AcpiConfig {
                cpu_count,
                ..AcpiConfig::default()
            });
            let madt = p.find(b"APIC").unwrap();
            let s = madt::structures(madt).unwrap();
            assert_eq!(s.len() as u32, cpu_count + 1 + 2 + 1);
            let lapics = s.iter().filter(|(kind, _)| *kind == 0).count();
            assert_eq!(lapics as u32, cpu_count);
        }
    }

    #[test]
    fn dsdt_announces_s5() {
        let p = placed(&AcpiConfig::default());
        let dsdt = p.find(b"DSDT").unwrap();
        let s5 = s5_aml();
        assert!(dsdt.windows(s5.len()).any(|w| w == s5.as_slice()));
    }

    #[test]
    fn place_at_fails_cleanly_when_too_small() {
        let t = build(&AcpiConfig::default()).unwrap();
        let needed = t.place_at(BASE, LIMIT).unwrap().bytes.len() as u64;
        assert!(t.place_at(BASE, needed).is_ok());
        for limit in [0, 36, needed - 1] {
            assert_eq!(
                t.place_at(BASE, limit),
                Err(AcpiError::NoRoom {
                    base: BASE,
                    needed,
                    limit
                })
            );
        }
    }

    #[test]
    fn place_above_4g_is_rejected_for_32bit_pointers() {
        let t = build(&AcpiConfig::default()).unwrap();
        let err = t.place_at(0x1_0000_0000, LIMIT).unwrap_err();
        assert!(matches!(err, AcpiError::PointerOverflow { .. }), "{err}");
    }

    #[test]
    fn placement_is_position_independent() {
        let t = build(&AcpiConfig::default()).unwrap();
        let a = t.place_at(0xe0000, LIMIT).unwrap();
        let b = t.place_at(0x10_0000, LIMIT).unwrap();
        assert_eq!(b.rsdp_addr, 0x10_0000);
        assert_ne!(a.bytes, b.bytes);
        let xsdt = |p: &PlacedTables| u64_at(at(p, p.rsdp_addr), 24) - p.base;
        assert_eq!(xsdt(&a), xsdt(&b));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = |f: fn(&mut AcpiConfig)| {
            let mut cfg = AcpiConfig::default();
            f(&mut cfg);
            build(&cfg).unwrap_err()
        };
        assert_eq!(bad(|c| c.cpu_count = 0), AcpiError::InvalidCpuCount(0));
        assert_eq!(bad(|c| c.cpu_count = 256), AcpiError::InvalidCpuCount(256));
        assert_eq!(bad(|c| c.sci_irq = 2), AcpiError::InvalidSciIrq(2));
        assert_eq!(bad(|c| c.sci_irq = 16), AcpiError::InvalidSciIrq(16));
        assert_eq!(
            bad(|c| c.serial_ports = vec![SerialPort::COM1; 10]),
            AcpiError::TooManySerialPorts(10)
        );
        assert_eq!(
            bad(|c| c.serial_ports[0].irq = 16),
            AcpiError::InvalidSerialIrq { index: 0, irq: 16 }
        );
        assert!(matches!(
            bad(|c| c.serial_ports[0].io = 0xfffc),
            AcpiError::InvalidIoBlock { name: "serial", .. }
        ));
        assert!(matches!(
            bad(|c| c.pm.pm1a_cnt = 0),
            AcpiError::InvalidIoBlock {
                name: "PM1a_CNT",
                ..
            }
        ));
        assert_eq!(bad(|c| c.pm.gpe0_len = 3), AcpiError::InvalidGpe0Len(3));
        assert_eq!(bad(|c| c.pm.gpe0_len = 32), AcpiError::InvalidGpe0Len(32));
        let mut cfg = AcpiConfig::default();
        cfg.serial_ports.clear();
        cfg.pm.pm_tmr = 0;
        cfg.pm.gpe0_len = 0;
        assert!(build(&cfg).is_ok());
    }

    /// FNV-1a, to pin the direct-boot output without storing it.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn direct_boot_tables_are_unchanged() {
        // Digests of the placed tables from before PCI support existed: the
        // machine without PCI must keep getting exactly these bytes.
        let cases = [
            (AcpiConfig::default(), 644, 0x7c20_d9ed_0674_8914),
            (
                AcpiConfig {
                    cpu_count: 4,
                    serial_ports: vec![SerialPort::COM1, SerialPort { io: 0x2f8, irq: 3 }],
                    cmos_rtc: true,
                    ..AcpiConfig::default()
                },
                764,
                0xa7ec_7e1f_1fd7_cafe,
            ),
            (
                AcpiConfig {
                    cpu_count: 255,
                    i8042: true,
                    cmos_rtc: true,
                    sci_irq: 10,
                    ..AcpiConfig::default()
                },
                2716,
                0x29d0_d17f_c838_1346,
            ),
        ];
        for (cfg, len, digest) in cases {
            let p = placed(&cfg);
            assert_eq!(p.bytes.len(), len);
            assert_eq!(fnv1a(&p.bytes), digest, "{cfg:?}");
        }
    }

    /// The Q35 machine as Debian 12's OVMF (edk2-stable202211) sets it up:
    /// ECAM at 0xb0000000 (256 buses), 32-bit window 0xc0000000..0xfc000000,
    /// and a 32 GiB 64-bit window at 32 GiB. Shared with the iasl tests.
    pub(super) fn q35(cpu_count: u32) -> AcpiConfig {
        let mut pci = PciHostConfig::q35(
            0xb000_0000,
            MmioWindow {
                base: 0xc000_0000,
                size: 0x3c00_0000,
            },
        );
        pci.mmio64 = Some(MmioWindow {
            base: 0x8_0000_0000,
            size: 0x8_0000_0000,
        });
        AcpiConfig {
            cpu_count,
            cmos_rtc: true,
            i8042: true,
            serial_ports: vec![SerialPort::COM1, SerialPort { io: 0x2f8, irq: 3 }],
            pci: Some(pci),
            ..AcpiConfig::default()
        }
    }

    #[test]
    fn q35_tables() {
        let t = build(&q35(2)).unwrap();
        let names: Vec<[u8; 4]> = vec![
            *b"RSDP", *b"FACP", *b"FACS", *b"DSDT", *b"APIC", *b"MCFG", *b"XSDT",
        ];
        assert_eq!(t.signatures(), names);
        assert_eq!(t.pointers().len(), 1 + 3 + 4);
        assert_eq!(t.checksums().len(), 5 + 2);

        let p = t.place_at(BASE, LIMIT).unwrap();
        for (i, t) in p.tables.iter().enumerate() {
            let b = p.table_bytes(i).unwrap();
            match &t.name {
                b"FACS" => {}
                b"RSDP" => assert_eq!((sum(&b[..20]), sum(b)), (0, 0)),
                name => assert_eq!(sum(b), 0, "{}", tables::sig_str(name)),
            }
        }
        let xsdt = at(&p, u64_at(at(&p, p.rsdp_addr), 24));
        assert_eq!(u32_at(xsdt, 4), 36 + 24);
        let mcfg = at(&p, u64_at(xsdt, 36 + 16));
        assert_eq!(&mcfg[..4], b"MCFG");
        assert_eq!(mcfg.len(), MCFG_LEN);
        assert_eq!(u64_at(mcfg, 44), 0xb000_0000);
        assert_eq!(&mcfg[54..56], &[0, 255]);

        let fadt = p.find(b"FACP").unwrap();
        assert_eq!(fadt[108], 0x32, "CENTURY");
        assert_eq!(
            u16::from_le_bytes([fadt[109], fadt[110]]),
            0b111,
            "IAPC_BOOT_ARCH"
        );
        assert_eq!(u32_at(fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(u32_at(fadt, 80), 0x620, "GPE0_BLK");
        assert_eq!(fadt[92], 16, "GPE0_BLK_LEN");
        assert_eq!(u64_at(fadt, 120), 0xcf9);
        assert_eq!(fadt[128], 6, "RESET_VALUE");

        let dsdt = p.find(b"DSDT").unwrap();
        let has = |n: &[u8]| dsdt.windows(n.len()).any(|w| w == n);
        assert!(has(b"PCI0") && has(b"LPC_") && has(b"_PRT") && has(b"DRAC"));
        assert!(has(&s5_aml()));
        // The RTC and the COM ports moved under LPC_: none directly in \_SB_.
        let sb = dsdt::system_bus_aml(&q35(2));
        assert_eq!(&dsdt[36 + s5_aml().len()..], &sb[..]);
        assert_eq!(&dsdt[36..36 + s5_aml().len()], &s5_aml()[..]);
    }

    #[test]
    fn q35_fadt_vga_and_century_follow_config() {
        let mut cfg = q35(1);
        cfg.cmos_rtc = false;
        cfg.i8042 = false;
        let f = fadt::build_fadt(&cfg);
        assert_eq!(f[108], 0, "no RTC, no CENTURY");
        assert_eq!(u16::from_le_bytes([f[109], f[110]]), 0b10_0101);
        cfg.pci.as_mut().unwrap().vga = true;
        assert_eq!(iapc_boot_arch(&cfg), 0b10_0001);
        // Without PCI the same config keeps the direct-boot values.
        cfg.pci = None;
        cfg.cmos_rtc = true;
        assert_eq!(fadt::build_fadt(&cfg)[108], 0);
        assert_eq!(iapc_boot_arch(&cfg), 0b101);
    }

    #[test]
    fn q35_invalid_pci_is_rejected() {
        let mut cfg = q35(1);
        cfg.pci.as_mut().unwrap().bus_count = 0;
        assert_eq!(build(&cfg), Err(AcpiError::InvalidBusCount(0)));
        let mut cfg = q35(1);
        cfg.pci.as_mut().unwrap().pirq_gsis[7] = 9;
        let err = build(&cfg).unwrap_err();
        assert_eq!(err, AcpiError::InvalidPirqGsi { pirq: 7, gsi: 9 });
        assert_eq!(
            err.to_string(),
            "PIRQH is routed to GSI 9, which is an ISA IRQ"
        );
        let mut cfg = q35(1);
        cfg.pci.as_mut().unwrap().mmio32.size = 0x3ec0_0001;
        assert_eq!(
            build(&cfg),
            Err(AcpiError::WindowOverlap {
                a: "32-bit MMIO",
                b: "I/O APIC"
            })
        );
        cfg.pci.as_mut().unwrap().mmio32.size = 0x3ec0_0000;
        assert!(build(&cfg).is_ok(), "up to the I/O APIC page");
        let mut cfg = q35(1);
        cfg.lapic_addr = 0xb000_0000;
        assert_eq!(
            build(&cfg),
            Err(AcpiError::WindowOverlap {
                a: "ECAM",
                b: "local APIC"
            })
        );
    }
}
