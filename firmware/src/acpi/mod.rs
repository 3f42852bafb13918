//! ACPI tables for an x86 guest: RSDP, XSDT, FADT, FACS, DSDT and MADT.
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

mod dsdt;
mod fadt;
#[cfg(test)]
mod iasl_tests;
mod madt;
pub mod tables;

pub use dsdt::{IrqNoFlags, dsdt_body, s5_aml, serial_device_aml, system_bus_aml};
pub use fadt::{
    DSDT_OFFSET, FADT_LEN, FIRMWARE_CTRL_OFFSET, X_DSDT_OFFSET, X_FIRMWARE_CTRL_OFFSET,
    iapc_boot_arch,
};
pub use madt::{
    ALL_PROCESSORS_UID, InterruptSourceOverride, LocalApicNmi, MPS_INTI_ACTIVE_HIGH, MPS_INTI_LEVEL,
};
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
}

impl Default for AcpiConfig {
    /// One vCPU, I/O APIC 0 at 0xfec0_0000, LAPIC at 0xfee0_0000, PM block
    /// at 0x600, SCI IRQ 9, reset 0x06 to port 0xcf9, COM1, OEM `TESSRA`.
    /// No 8042 and no CMOS RTC: the direct-boot machine emulates neither
    /// (its i8042 is only a reset line). Set them when the devices exist.
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
/// [`AcpiTables::place_at`]): RSDP, FACP, FACS, DSDT, APIC, XSDT. The XSDT
/// lists FACP and APIC; the FADT points at the FACS and the DSDT through
/// both its 32-bit and 64-bit fields.
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    cfg.validate()?;
    let mut t = AcpiTables::new();

    let rsdp = t.add_table(*b"RSDP", Zone::FSeg, RSDP_ALIGN, build_rsdp(cfg))?;
    let fadt = t.add_table(*b"FACP", Zone::High, TABLE_ALIGN, fadt::build_fadt(cfg))?;
    let facs = t.add_table(*b"FACS", Zone::High, FACS_ALIGN, fadt::build_facs())?;
    let dsdt = t.add_table(*b"DSDT", Zone::High, TABLE_ALIGN, dsdt::build_dsdt(cfg))?;
    let madt = t.add_table(*b"APIC", Zone::High, TABLE_ALIGN, madt::build_madt(cfg))?;
    // Tables reachable from the XSDT, in XSDT order (MCFG etc. go here).
    let xsdt_entries = [fadt, madt];
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

    for table in [fadt, dsdt, madt, xsdt] {
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
}
