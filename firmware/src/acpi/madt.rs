//! MADT ("APIC"): local APICs, the I/O APIC, ISA interrupt overrides and
//! the LINT1 NMI.
//!
//! `acpi_tables` 0.2.1 hard-wires the MADT flags to 0 and has no Interrupt
//! Source Override or Local APIC NMI structures, so the header is built with
//! [`Sdt`] and the missing structures are defined here.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::{AcpiConfig, OEM_REVISION, OEM_TABLE_ID};

/// MADT revision for ACPI 6.3.
pub const MADT_REVISION: u8 = 5;
/// Length of the MADT header (standard header + local APIC address + flags).
const MADT_HEADER_LEN: u32 = 44;
/// Offset of the local interrupt controller address.
const LAPIC_ADDR_OFFSET: usize = 36;
/// Offset of the MADT flags.
const FLAGS_OFFSET: usize = 40;
/// MADT flag: the system also has dual 8259 PICs.
pub const PCAT_COMPAT: u32 = 1;

/// MPS INTI flags: polarity active high (bits 1:0 = 01).
pub const MPS_INTI_ACTIVE_HIGH: u16 = 0b01;
/// MPS INTI flags: trigger mode level (bits 3:2 = 11).
pub const MPS_INTI_LEVEL: u16 = 0b11 << 2;

/// Processor UID meaning "all processors" in a Local APIC NMI structure.
pub const ALL_PROCESSORS_UID: u8 = 0xff;

/// MADT Interrupt Source Override (type 2, 10 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, Immutable, KnownLayout)]
pub struct InterruptSourceOverride {
    kind: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: U32,
    flags: U16,
}

impl InterruptSourceOverride {
    /// ISA IRQ `source` is delivered as GSI `gsi` with MPS INTI `flags`
    /// (0 = conforms to the bus: edge, active high for ISA).
    pub fn new(source: u8, gsi: u32, flags: u16) -> Self {
        Self {
            kind: 2,
            length: 10,
            bus: 0, // ISA
            source,
            gsi: gsi.into(),
            flags: flags.into(),
        }
    }
}

/// MADT Local APIC NMI (type 4, 6 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, Immutable, KnownLayout)]
pub struct LocalApicNmi {
    kind: u8,
    length: u8,
    processor_uid: u8,
    flags: U16,
    lint: u8,
}

impl LocalApicNmi {
    /// NMI on local APIC input `lint` (0 or 1) of processor `processor_uid`
    /// ([`ALL_PROCESSORS_UID`] for all), with MPS INTI `flags`.
    pub fn new(processor_uid: u8, lint: u8, flags: u16) -> Self {
        Self {
            kind: 4,
            length: 6,
            processor_uid,
            flags: flags.into(),
            lint,
        }
    }
}

/// Builds the MADT. Its checksum is left for the back-ends.
///
/// `cfg` must have been validated: `cpu_count` in 1..=255 and `sci_irq` an
/// ISA IRQ.
pub fn build_madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        cfg.oem_id,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(LAPIC_ADDR_OFFSET, cfg.lapic_addr);
    madt.write_u32(FLAGS_OFFSET, PCAT_COMPAT);
    for cpu in 0..cfg.cpu_count {
        // Validated: cpu_count <= 255, so ids are 0..=254.
        let id = cpu as u8;
        let lapic = ProcessorLocalApic::new(id, id, EnabledStatus::Enabled);
        madt.append_slice(lapic.as_bytes());
    }
    madt.append_slice(IoApic::new(cfg.ioapic_id, cfg.ioapic_addr, 0).as_bytes());
    // The PIT's IRQ0 is wired to I/O APIC pin 2.
    madt.append_slice(InterruptSourceOverride::new(0, 2, 0).as_bytes());
    let sci_flags = MPS_INTI_LEVEL | MPS_INTI_ACTIVE_HIGH;
    let sci = InterruptSourceOverride::new(cfg.sci_irq, u32::from(cfg.sci_irq), sci_flags);
    madt.append_slice(sci.as_bytes());
    madt.append_slice(LocalApicNmi::new(ALL_PROCESSORS_UID, 1, 0).as_bytes());

    let mut bytes = madt.as_slice().to_vec();
    bytes[super::tables::SDT_CHECKSUM_OFFSET] = 0;
    bytes
}

/// Splits the MADT's interrupt controller structures into
/// `(type, structure bytes)` pairs. Returns `None` if a length is invalid.
#[cfg(test)]
pub fn structures(madt: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut rest = madt.get(MADT_HEADER_LEN as usize..)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(*rest.get(1)?);
        if len < 2 || len > rest.len() {
            return None;
        }
        out.push((rest[0], &rest[..len]));
        rest = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_sizes() {
        assert_eq!(size_of::<InterruptSourceOverride>(), 10);
        assert_eq!(size_of::<LocalApicNmi>(), 6);
    }

    #[test]
    fn madt_contents() {
        let cfg = AcpiConfig {
            cpu_count: 4,
            ..AcpiConfig::default()
        };
        let b = build_madt(&cfg);
        assert_eq!(&b[0..4], b"APIC");
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(b[8], MADT_REVISION);
        assert_eq!(&b[36..40], &0xfee0_0000u32.to_le_bytes());
        assert_eq!(&b[40..44], &1u32.to_le_bytes(), "PCAT_COMPAT");

        let s = structures(&b).unwrap();
        assert_eq!(s.len(), 4 + 1 + 2 + 1);
        for (cpu, (kind, bytes)) in s[..4].iter().enumerate() {
            let id = cpu as u8;
            assert_eq!(*kind, 0);
            assert_eq!(*bytes, &[0, 8, id, id, 1, 0, 0, 0][..]);
        }
        assert_eq!(s[4].1, &[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0][..]);
        assert_eq!(s[5].1, &[2, 10, 0, 0, 2, 0, 0, 0, 0, 0][..]);
        assert_eq!(s[6].1, &[2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0][..]);
        assert_eq!(s[7].1, &[4, 6, 0xff, 0, 0, 1][..]);
    }

    #[test]
    fn madt_follows_config() {
        let cfg = AcpiConfig {
            cpu_count: 255,
            ioapic_id: 3,
            ioapic_addr: 0xfec1_0000,
            lapic_addr: 0xfee1_0000,
            sci_irq: 10,
            ..AcpiConfig::default()
        };
        let b = build_madt(&cfg);
        assert_eq!(&b[36..40], &0xfee1_0000u32.to_le_bytes());
        let s = structures(&b).unwrap();
        assert_eq!(s.len(), 255 + 4);
        assert_eq!(s[254].1[2..4], [254, 254]);
        assert_eq!(s[255].1, &[1, 12, 3, 0, 0, 0, 0xc1, 0xfe, 0, 0, 0, 0][..]);
        assert_eq!(s[257].1, &[2, 10, 0, 10, 10, 0, 0, 0, 0x0d, 0][..]);
    }

    #[test]
    fn structures_rejects_bad_lengths() {
        let mut b = build_madt(&AcpiConfig::default());
        b[MADT_HEADER_LEN as usize + 1] = 0;
        assert!(structures(&b).is_none());
        let mut b = build_madt(&AcpiConfig::default());
        b.pop();
        assert!(structures(&b).is_none());
    }
}
