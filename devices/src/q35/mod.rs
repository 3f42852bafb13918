//! The Q35 chipset functions stock OVMF programs: the MCH host bridge at
//! 00:00.0 ([`Mch`]) and the ICH9 LPC/ISA bridge at 00:1f.0 ([`Lpc`]).
//!
//! Both are conventional PCI functions with a 256-byte configuration space
//! and no BARs, kept in a [`PciConfiguration`] (the same configuration
//! space every PCI function uses, with QEMU's write masks); registers with side
//! effects (PCIEXBAR, PMBASE/ACPI_CNTL) are decoded before and after every
//! write and the difference is returned as a [`PciChange`] for the VMM to
//! apply. Nothing here touches a bus or KVM.
//!
//! Reference: QEMU `hw/pci-host/q35.c`, `include/hw/pci-host/q35.h`,
//! `hw/isa/lpc_ich9.c`, `include/hw/southbridge/ich9.h`; edk2
//! `OvmfPkg/Include/IndustryStandard/Q35MchIch9.h`.
//!
//! [`PciChange`]: crate::pci::PciChange
//! [`PciConfiguration`]: crate::pci::PciConfiguration

pub mod lpc;
pub mod mch;

pub use lpc::Lpc;
pub use mch::{Mch, MchError};

use crate::pci::{Bdf, PciConfiguration, Type0Header};

/// Where the MCH sits.
pub const MCH_BDF: Bdf = Bdf::new(0, 0, 0);
/// Where the ICH9 LPC bridge sits.
pub const LPC_BDF: Bdf = Bdf::new(0, 0x1f, 0);

/// Intel's PCI vendor ID.
pub const VENDOR_INTEL: u16 = 0x8086;
/// Subsystem vendor QEMU gives its devices (Red Hat / Qumranet).
pub const SUBSYSTEM_VENDOR_QEMU: u16 = 0x1af4;
/// Subsystem ID QEMU gives its devices ("QEMU Virtual Machine").
pub const SUBSYSTEM_ID_QEMU: u16 = 0x1100;

/// A chipset function's header: `class` is `class << 16 | subclass << 8 |
/// prog_if`; QEMU's subsystem IDs; no BARs or capabilities.
fn chipset_config(
    device_id: u16,
    revision: u8,
    class: u32,
    multi_function: bool,
) -> PciConfiguration {
    let [prog_if, subclass, class, _] = class.to_le_bytes();
    PciConfiguration::new_type0(
        &Type0Header {
            vendor_id: VENDOR_INTEL,
            device_id,
            class,
            subclass,
            prog_if,
            revision,
            subsystem_vendor_id: SUBSYSTEM_VENDOR_QEMU,
            subsystem_id: SUBSYSTEM_ID_QEMU,
            multi_function,
        },
        false,
    )
}

/// Set the write mask of `mask.len()` bytes at `offset`, which the
/// chipset models only call with ranges inside the 256-byte space.
fn set_wmask(cs: &mut PciConfiguration, offset: u16, mask: &[u8]) {
    let ok = cs.set_writable_mask(offset, mask);
    debug_assert!(ok.is_ok(), "chipset register {offset:#x} out of range");
}

/// True when an access of `len` bytes at `offset` touches any byte of
/// `[start, start + size)`.
fn overlaps(offset: u16, len: usize, start: u16, size: usize) -> bool {
    let (offset, start) = (usize::from(offset), usize::from(start));
    offset < start + size && start < offset + len
}

#[cfg(test)]
pub(crate) mod test_util {
    use crate::pci::PciDevice;

    /// Read `len` (1, 2 or 4) bytes of configuration space as a number.
    pub fn cfg_read(dev: &mut dyn PciDevice, offset: u16, len: usize) -> u32 {
        let mut buf = [0u8; 4];
        dev.config_read(offset, &mut buf[..len]);
        u32::from_le_bytes(buf)
    }

    /// Write the low `len` bytes of `value`; returns the changes.
    pub fn cfg_write(
        dev: &mut dyn PciDevice,
        offset: u16,
        len: usize,
        value: u32,
    ) -> Vec<crate::pci::PciChange> {
        dev.config_write(offset, &value.to_le_bytes()[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let cs = chipset_config(0x1234, 7, 0x06_01_00, true);
        assert_eq!(cs.read_u32(0), 0x1234_8086);
        assert_eq!(cs.read_u32(8), 0x0601_0007);
        assert_eq!(cs.read_u8(0x0e), 0x80);
        assert_eq!(cs.read_u32(0x2c), 0x1100_1af4);
    }

    #[test]
    fn masked_writes_and_out_of_range() {
        let mut cs = chipset_config(0x1234, 7, 0x06_01_00, true);
        let _ = cs.write(0, &[0xff; 4]);
        assert_eq!(cs.read_u32(0), 0x1234_8086);
        let _ = cs.write(4, &[0xff, 0xff]);
        assert_eq!(cs.read_u16(4), crate::pci::config::COMMAND_WRITABLE);
        let mut buf = [0u8; 4];
        cs.read(0xfe, &mut buf);
        assert_eq!(buf, [0, 0, 0xff, 0xff]);
        let _ = cs.write(0xfe, &[1, 2, 3, 4]);
        cs.read(u16::MAX, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        let _ = cs.write(u16::MAX, &[1, 2, 3, 4]);
    }

    #[test]
    fn overlap_rules() {
        assert!(overlaps(0x60, 4, 0x60, 8));
        assert!(overlaps(0x64, 4, 0x60, 8));
        assert!(overlaps(0x5e, 4, 0x60, 8));
        assert!(!overlaps(0x5c, 4, 0x60, 8));
        assert!(!overlaps(0x68, 1, 0x60, 8));
    }
}
