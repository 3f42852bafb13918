//! MCFG: where the PCI Express enhanced configuration (ECAM) space lives.
//!
//! One allocation: segment 0, buses 0..bus_count, at the address the guest
//! programmed into PCIEXBAR.

use acpi_tables::sdt::Sdt;

use super::pci::PciHostConfig;
use super::{AcpiConfig, OEM_REVISION, OEM_TABLE_ID};

/// MCFG revision (PCI Firmware Specification 3.x).
pub const MCFG_REVISION: u8 = 1;
/// Length of the MCFG header: the standard header plus 8 reserved bytes.
const MCFG_HEADER_LEN: u32 = 44;
/// Length of one configuration space base address allocation structure.
pub const MCFG_ALLOCATION_LEN: usize = 16;
/// Length of an MCFG with one allocation.
pub const MCFG_LEN: usize = MCFG_HEADER_LEN as usize + MCFG_ALLOCATION_LEN;

/// The 16-byte allocation structure: base address, PCI segment group,
/// start bus, end bus, 4 reserved bytes.
fn allocation(base: u64, segment: u16, start_bus: u8, end_bus: u8) -> [u8; MCFG_ALLOCATION_LEN] {
    let mut a = [0u8; MCFG_ALLOCATION_LEN];
    a[0..8].copy_from_slice(&base.to_le_bytes());
    a[8..10].copy_from_slice(&segment.to_le_bytes());
    a[10] = start_bus;
    a[11] = end_bus;
    a
}

/// Builds the MCFG for `pci` (validated). The checksum is left for the
/// back-ends.
pub fn build_mcfg(cfg: &AcpiConfig, pci: &PciHostConfig) -> Vec<u8> {
    let mut mcfg = Sdt::new(
        *b"MCFG",
        MCFG_HEADER_LEN,
        MCFG_REVISION,
        cfg.oem_id,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    mcfg.append_slice(&allocation(pci.ecam_base, 0, 0, pci.last_bus()));
    let mut bytes = mcfg.as_slice().to_vec();
    debug_assert_eq!(bytes.len(), MCFG_LEN);
    bytes[super::tables::SDT_CHECKSUM_OFFSET] = 0;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::pci::MmioWindow;

    #[test]
    fn mcfg_bytes() {
        let mut pci = PciHostConfig::q35(
            0xb000_0000,
            MmioWindow {
                base: 0xc000_0000,
                size: 0x3c00_0000,
            },
        );
        let b = build_mcfg(&AcpiConfig::default(), &pci);
        assert_eq!(b.len(), 60);
        assert_eq!(&b[0..4], b"MCFG");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 60);
        assert_eq!(b[8], 1, "revision");
        assert_eq!(b[9], 0, "checksum left to the back-end");
        assert_eq!(&b[10..16], b"TESSRA");
        assert_eq!(&b[16..24], b"TESSERA ");
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 1);
        assert_eq!(&b[36..44], &[0; 8], "reserved");
        #[rustfmt::skip]
        assert_eq!(
            &b[44..],
            &[
                0x00, 0x00, 0x00, 0xb0, 0, 0, 0, 0, // base 0xb0000000
                0x00, 0x00,                         // segment 0
                0x00, 0xff,                         // buses 0..=255
                0, 0, 0, 0,                         // reserved
            ]
        );

        pci.ecam_base = 0x38_0000_0000;
        pci.bus_count = 64;
        let b = build_mcfg(&AcpiConfig::default(), &pci);
        assert_eq!(
            u64::from_le_bytes(b[44..52].try_into().unwrap()),
            0x38_0000_0000
        );
        assert_eq!(&b[52..56], &[0, 0, 0, 63]);
    }
}
