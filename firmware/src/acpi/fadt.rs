//! FADT ("FACP") and FACS.
//!
//! The FADT describes a full (not hardware-reduced) ACPI platform with an
//! ICH9-style PM block in I/O space, so that Linux can power off through
//! PM1a_CNT.SLP_EN and reset through the reset register.
//!
//! The Q35 machine (`cfg.pci` set) differs from the direct-boot one the way
//! QEMU's q35 FADT does where it matters to the OS: CENTURY names the CMOS
//! century register (0x32) when there is an RTC, and IAPC_BOOT_ARCH says
//! "VGA not present" only when no VGA device exists. Everything else (PM
//! blocks, reset register 0xcf9 = 6, no SMI_CMD so ACPI mode is always on,
//! flags) is shared.

use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::{Aml, fadt};
use zerocopy::IntoBytes;

use super::{AcpiConfig, OEM_REVISION, OEM_TABLE_ID};

/// FADT major revision (ACPI 6.x).
pub const FADT_REVISION: u8 = 6;
/// FADT minor revision: ACPI 6.3.
pub const FADT_MINOR_REVISION: u8 = 3;
/// Length of a revision 6 FADT.
pub const FADT_LEN: usize = 276;

/// Offset of FIRMWARE_CTRL (32-bit FACS address).
pub const FIRMWARE_CTRL_OFFSET: usize = 36;
/// Offset of DSDT (32-bit DSDT address).
pub const DSDT_OFFSET: usize = 40;
/// Offset of X_FIRMWARE_CTRL (64-bit FACS address).
pub const X_FIRMWARE_CTRL_OFFSET: usize = 132;
/// Offset of X_DSDT (64-bit DSDT address).
pub const X_DSDT_OFFSET: usize = 140;

/// IAPC_BOOT_ARCH bit 0: the platform has legacy (ISA) devices.
pub const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
/// IAPC_BOOT_ARCH bit 1: an 8042 keyboard controller is present.
pub const IAPC_8042: u16 = 1 << 1;
/// IAPC_BOOT_ARCH bit 2: VGA is not present (do not probe it).
pub const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IAPC_BOOT_ARCH bit 5: the CMOS RTC is not present.
pub const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// The CMOS register holding the century (BCD), as in QEMU's `RTC_CENTURY`.
pub const CMOS_CENTURY_REG: u8 = 0x32;

/// P_LVL2_LAT value meaning "C2 not supported".
const P_LVL2_LAT_UNSUPPORTED: u16 = 0x0fff;
/// P_LVL3_LAT value meaning "C3 not supported".
const P_LVL3_LAT_UNSUPPORTED: u16 = 0x03e9;

/// FACS length.
pub const FACS_LEN: usize = 64;
/// FACS version for ACPI 6.x.
const FACS_VERSION: u8 = 2;

/// A GAS for an I/O port block of `len` bytes; a zero-length block gives an
/// all-zero GAS ("not present").
fn io_gas(port: u16, len: u8, access: AccessSize) -> GAS {
    if len == 0 {
        return GAS::default();
    }
    GAS::new(
        AddressSpace::SystemIo,
        len.saturating_mul(8),
        0,
        access,
        u64::from(port),
    )
}

/// The IAPC_BOOT_ARCH flags for `cfg`: legacy devices; the 8042 per
/// `cfg.i8042`; "CMOS RTC not present" unless `cfg.cmos_rtc`; "VGA not
/// present" without PCI or when `cfg.pci` says there is no VGA.
pub fn iapc_boot_arch(cfg: &AcpiConfig) -> u16 {
    let mut arch = IAPC_LEGACY_DEVICES;
    if !cfg.pci.as_ref().is_some_and(|pci| pci.vga) {
        arch |= IAPC_VGA_NOT_PRESENT;
    }
    if cfg.i8042 {
        arch |= IAPC_8042;
    }
    if !cfg.cmos_rtc {
        arch |= IAPC_CMOS_RTC_NOT_PRESENT;
    }
    arch
}

/// Builds the FADT. FIRMWARE_CTRL, DSDT, X_FIRMWARE_CTRL, X_DSDT and the
/// checksum are left zero for the back-ends to fill in.
pub fn build_fadt(cfg: &AcpiConfig) -> Vec<u8> {
    let pm = &cfg.pm;
    let tmr_len = if pm.pm_tmr == 0 { 0 } else { super::PM_TMR_LEN };

    let mut f = FADTBuilder::new(cfg.oem_id, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    if tmr_len != 0 {
        // The PM timer counts in 32 bits.
        f = f.flag(Flags::TmrValExt);
    }
    f.major_version = FADT_REVISION;
    f.fadt_minor_version = FADT_MINOR_REVISION;
    f.sci_int = u16::from(cfg.sci_irq).into();
    // SMI_CMD, ACPI_ENABLE and ACPI_DISABLE stay 0: ACPI is always enabled
    // (the PM device must report PM1_CNT.SCI_EN = 1).
    f.pm1a_evt_blk = u32::from(pm.pm1a_evt).into();
    f.pm1a_cnt_blk = u32::from(pm.pm1a_cnt).into();
    f.pm_tmr_blk = u32::from(pm.pm_tmr).into();
    f.gpe0_blk = u32::from(if pm.gpe0_len == 0 { 0 } else { pm.gpe0 }).into();
    f.pm1_evt_len = super::PM1_EVT_LEN;
    f.pm1_cnt_len = super::PM1_CNT_LEN;
    f.pm_tmr_len = tmr_len;
    f.gpe0_blk_len = pm.gpe0_len;
    f.p_lvl2_lat = P_LVL2_LAT_UNSUPPORTED.into();
    f.p_lvl3_lat = P_LVL3_LAT_UNSUPPORTED.into();
    f.iapc_boot_arch = iapc_boot_arch(cfg).into();
    if cfg.pci.is_some() && cfg.cmos_rtc {
        f.century = CMOS_CENTURY_REG;
    }
    f.reset_reg = io_gas(cfg.reset.port, 1, AccessSize::ByteAccess);
    f.reset_value = cfg.reset.value;
    // Access size "undefined" (legacy) for the PM blocks, as QEMU does: ACPICA
    // splits PM1 event blocks into 16-bit status/enable halves itself.
    f.x_pm1a_evt_blk = io_gas(pm.pm1a_evt, super::PM1_EVT_LEN, AccessSize::Undefined);
    f.x_pm1a_cnt_blk = io_gas(pm.pm1a_cnt, super::PM1_CNT_LEN, AccessSize::Undefined);
    f.x_pm_tmr_blk = io_gas(pm.pm_tmr, tmr_len, AccessSize::Undefined);
    f.x_gpe0_blk = io_gas(pm.gpe0, pm.gpe0_len, AccessSize::Undefined);

    let mut bytes = Vec::with_capacity(fadt::FADT::len());
    f.finalize().to_aml_bytes(&mut bytes);
    debug_assert_eq!(bytes.len(), FADT_LEN);
    // The checksum is computed by the back-end, after the pointers.
    bytes[super::tables::SDT_CHECKSUM_OFFSET] = 0;
    bytes
}

/// Builds the 64-byte FACS (no checksum field).
pub fn build_facs() -> Vec<u8> {
    let mut facs = FACS::new();
    facs.version = FACS_VERSION;
    let bytes = facs.as_bytes().to_vec();
    debug_assert_eq!(bytes.len(), FACS_LEN);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// Checks an I/O-space GAS at `off`.
    fn assert_io_gas(b: &[u8], off: usize, bits: u8, access: u8, port: u64) {
        assert_eq!(&b[off..off + 4], &[1, bits, 0, access], "GAS at {off}");
        assert_eq!(u64_at(b, off + 4), port, "GAS address at {off}");
    }

    #[test]
    fn fadt_fields_at_spec_offsets() {
        let cfg = AcpiConfig::default();
        let b = build_fadt(&cfg);
        assert_eq!(b.len(), FADT_LEN);
        assert_eq!(&b[0..4], b"FACP");
        assert_eq!(u32_at(&b, 4), 276);
        assert_eq!(b[8], 6);
        assert_eq!(&b[10..16], b"TESSRA");
        assert_eq!(u32_at(&b, FIRMWARE_CTRL_OFFSET), 0);
        assert_eq!(u32_at(&b, DSDT_OFFSET), 0);
        assert_eq!(u16_at(&b, 46), 9, "SCI_INT");
        assert_eq!(u32_at(&b, 48), 0, "SMI_CMD");
        assert_eq!(&b[52..54], &[0, 0], "ACPI_ENABLE/ACPI_DISABLE");
        assert_eq!(u32_at(&b, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(&b, 60), 0, "PM1b_EVT_BLK");
        assert_eq!(u32_at(&b, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(&b, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(u32_at(&b, 80), 0x620, "GPE0_BLK");
        assert_eq!(&b[88..93], &[4, 2, 0, 4, 16], "PM1_EVT..GPE0_BLK_LEN");
        assert_eq!(u16_at(&b, 96), 0x0fff, "P_LVL2_LAT");
        assert_eq!(u16_at(&b, 98), 0x03e9, "P_LVL3_LAT");
        assert_eq!(u16_at(&b, 109), 0b10_0101, "IAPC_BOOT_ARCH");
        let flags = u32_at(&b, 112);
        assert_eq!(flags, (1 << 0) | (1 << 2) | (1 << 5) | (1 << 8) | (1 << 10));
        assert_eq!(flags & (1 << 20), 0, "not HW_REDUCED");
        assert_io_gas(&b, 116, 8, 1, 0xcf9);
        assert_eq!(b[128], 0x06, "RESET_VALUE");
        assert_eq!(b[131], FADT_MINOR_REVISION);
        assert_eq!(u64_at(&b, X_FIRMWARE_CTRL_OFFSET), 0);
        assert_eq!(u64_at(&b, X_DSDT_OFFSET), 0);
        assert_io_gas(&b, 148, 32, 0, 0x600);
        assert_eq!(&b[160..172], &[0; 12], "X_PM1b_EVT_BLK");
        assert_io_gas(&b, 172, 16, 0, 0x604);
        assert_io_gas(&b, 208, 32, 0, 0x608);
        assert_io_gas(&b, 220, 128, 0, 0x620);
        assert!(b[232..].iter().all(|&x| x == 0), "GPE1, sleep regs, vendor");
    }

    #[test]
    fn boot_arch_follows_config() {
        let mut cfg = AcpiConfig {
            i8042: true,
            cmos_rtc: true,
            ..AcpiConfig::default()
        };
        let b = build_fadt(&cfg);
        assert_eq!(u16_at(&b, 109), 0b111);
        cfg.i8042 = false;
        assert_eq!(iapc_boot_arch(&cfg), 0b101);
        cfg.cmos_rtc = false;
        assert_eq!(iapc_boot_arch(&cfg), 0b10_0101);
    }

    #[test]
    fn no_pm_timer_and_no_gpe0() {
        let mut cfg = AcpiConfig::default();
        cfg.pm.pm_tmr = 0;
        cfg.pm.gpe0_len = 0;
        let b = build_fadt(&cfg);
        assert_eq!(b[91], 0, "PM_TMR_LEN");
        assert_eq!(b[92], 0, "GPE0_BLK_LEN");
        assert_eq!(u32_at(&b, 80), 0, "GPE0_BLK");
        assert_eq!(u32_at(&b, 112) & (1 << 8), 0, "TMR_VAL_EXT");
        assert_eq!(&b[208..232], &[0; 24]);
    }

    #[test]
    fn facs_layout() {
        let b = build_facs();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[0..4], b"FACS");
        assert_eq!(u32_at(&b, 4), 64);
        assert_eq!(b[32], FACS_VERSION);
    }
}
