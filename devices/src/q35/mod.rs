//! The Q35 chipset functions stock OVMF programs: the MCH host bridge at
//! 00:00.0 ([`Mch`]) and the ICH9 LPC/ISA bridge at 00:1f.0 ([`Lpc`]).
//!
//! Both are conventional PCI functions with a 256-byte configuration space
//! and no BARs. Each keeps its registers in a small byte array with a
//! per-byte write mask (the private `ConfigSpace` helper here), the way
//! QEMU's `PCIDevice` keeps `config` and `wmask`; registers with side
//! effects (PCIEXBAR, PMBASE/ACPI_CNTL) are decoded before and after every
//! write and the difference is returned as a [`PciChange`] for the VMM to
//! apply. Nothing here touches a bus or KVM.
//!
//! Reference: QEMU `hw/pci-host/q35.c`, `include/hw/pci-host/q35.h`,
//! `hw/isa/lpc_ich9.c`, `include/hw/southbridge/ich9.h`; edk2
//! `OvmfPkg/Include/IndustryStandard/Q35MchIch9.h`.
//!
//! [`PciChange`]: crate::pci::PciChange

pub mod lpc;
pub mod mch;

pub use lpc::Lpc;
pub use mch::{Mch, MchError};

use crate::pci::Bdf;

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

/// Size of a conventional PCI configuration space.
const CONFIG_SIZE: usize = 256;

/// Standard header offsets used here.
const PCI_VENDOR_ID: usize = 0x00;
const PCI_DEVICE_ID: usize = 0x02;
const PCI_COMMAND: usize = 0x04;
const PCI_REVISION_ID: usize = 0x08;
const PCI_CLASS_PROG: usize = 0x09;
const PCI_CACHE_LINE_SIZE: usize = 0x0c;
const PCI_HEADER_TYPE: usize = 0x0e;
const PCI_SUBSYSTEM_VENDOR_ID: usize = 0x2c;
const PCI_SUBSYSTEM_ID: usize = 0x2e;
const PCI_INTERRUPT_LINE: usize = 0x3c;

/// Command bits a type-0 function without BARs still lets software set,
/// as QEMU's `pci_init_wmask` does: I/O, memory, bus master, SERR#,
/// INTx disable.
const COMMAND_WMASK: u16 = 0x0001 | 0x0002 | 0x0004 | 0x0100 | 0x0400;

/// What identifies a function in its header.
#[derive(Debug, Clone, Copy)]
struct Identity {
    vendor: u16,
    device: u16,
    revision: u8,
    /// Class code, `class << 16 | subclass << 8 | prog_if`.
    class: u32,
    header_type: u8,
}

/// A 256-byte configuration space with a per-byte write mask.
///
/// Writes change only the bits set in the mask; reads return the bytes.
/// Accesses reaching past byte 255 read as all-ones and are dropped, so
/// no offset or width can make it panic.
#[derive(Clone)]
struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor", &format_args!("{:#06x}", self.u16(PCI_VENDOR_ID)))
            .field("device", &format_args!("{:#06x}", self.u16(PCI_DEVICE_ID)))
            .finish_non_exhaustive()
    }
}

impl ConfigSpace {
    /// A header with `id`, QEMU's subsystem IDs, everything else zero and
    /// read-only except the command register, cache line size and
    /// interrupt line (as QEMU's generic mask).
    fn new(id: Identity) -> Self {
        let mut cs = Self {
            bytes: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
        };
        cs.set_u16(PCI_VENDOR_ID, id.vendor);
        cs.set_u16(PCI_DEVICE_ID, id.device);
        cs.set_u8(PCI_REVISION_ID, id.revision);
        let class = id.class.to_le_bytes();
        cs.bytes[PCI_CLASS_PROG..PCI_CLASS_PROG + 3].copy_from_slice(&class[..3]);
        cs.set_u8(PCI_HEADER_TYPE, id.header_type);
        cs.set_u16(PCI_SUBSYSTEM_VENDOR_ID, SUBSYSTEM_VENDOR_QEMU);
        cs.set_u16(PCI_SUBSYSTEM_ID, SUBSYSTEM_ID_QEMU);
        cs.set_wmask(PCI_COMMAND, &COMMAND_WMASK.to_le_bytes());
        cs.set_wmask(PCI_CACHE_LINE_SIZE, &[0xff]);
        cs.set_wmask(PCI_INTERRUPT_LINE, &[0xff]);
        cs
    }

    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self
                .bytes
                .get(usize::from(offset) + i)
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// Guest write: only bits set in the write mask change.
    fn write(&mut self, offset: u16, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let off = usize::from(offset) + i;
            if let (Some(b), Some(&m)) = (self.bytes.get_mut(off), self.wmask.get(off)) {
                *b = (*b & !m) | (v & m);
            }
        }
    }

    fn u8(&self, off: usize) -> u8 {
        self.bytes.get(off).copied().unwrap_or(0)
    }

    fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.u8(off), self.u8(off + 1)])
    }

    fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.u8(off),
            self.u8(off + 1),
            self.u8(off + 2),
            self.u8(off + 3),
        ])
    }

    fn u64(&self, off: usize) -> u64 {
        u64::from(self.u32(off)) | (u64::from(self.u32(off + 4)) << 32)
    }

    /// Device-side store, ignoring the write mask.
    fn set_bytes(&mut self, off: usize, values: &[u8]) {
        for (i, &v) in values.iter().enumerate() {
            if let Some(b) = self.bytes.get_mut(off + i) {
                *b = v;
            }
        }
    }

    fn set_u8(&mut self, off: usize, v: u8) {
        self.set_bytes(off, &[v]);
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    fn set_u32(&mut self, off: usize, v: u32) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    fn set_u64(&mut self, off: usize, v: u64) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    /// Set the write mask of the bytes starting at `off`.
    fn set_wmask(&mut self, off: usize, mask: &[u8]) {
        for (i, &m) in mask.iter().enumerate() {
            if let Some(w) = self.wmask.get_mut(off + i) {
                *w = m;
            }
        }
    }
}

/// True when an access of `len` bytes at `offset` touches any byte of
/// `[start, start + size)`.
fn overlaps(offset: u16, len: usize, start: usize, size: usize) -> bool {
    let offset = usize::from(offset);
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

    fn space() -> ConfigSpace {
        ConfigSpace::new(Identity {
            vendor: 0x8086,
            device: 0x1234,
            revision: 7,
            class: 0x06_01_00,
            header_type: 0x80,
        })
    }

    #[test]
    fn header_layout() {
        let cs = space();
        assert_eq!(cs.u32(0), 0x1234_8086);
        assert_eq!(cs.u32(8), 0x0601_0007);
        assert_eq!(cs.u8(0x0e), 0x80);
        assert_eq!(cs.u32(0x2c), 0x1100_1af4);
    }

    #[test]
    fn masked_writes_and_out_of_range() {
        let mut cs = space();
        cs.write(0, &[0xff; 4]);
        assert_eq!(cs.u32(0), 0x1234_8086);
        cs.write(4, &[0xff, 0xff]);
        assert_eq!(cs.u16(4), COMMAND_WMASK);
        let mut buf = [0u8; 4];
        cs.read(0xfe, &mut buf);
        assert_eq!(buf, [0, 0, 0xff, 0xff]);
        cs.write(0xfe, &[1, 2, 3, 4]);
        cs.read(u16::MAX, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        cs.write(u16::MAX, &[1, 2, 3, 4]);
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
