//! The ICH9 LPC/ISA bridge at 00:1f.0.
//!
//! IDs as QEMU's `ICH9-LPC`: 8086:2918, revision 2, class 0x060100 (ISA
//! bridge), header type 0x80 (multi-function: on QEMU SATA and SMBus sit at
//! 1f.2 and 1f.3), subsystem 1af4:1100. No BARs, no capabilities.
//!
//! | offset | register | behaviour |
//! |---|---|---|
//! | 0x40 | PMBASE (32) | bits 15:7 base, bit 0 reads 1 (I/O space); reset 0x00000001 |
//! | 0x44 | ACPI_CNTL | bit 7 ACPI_EN, bits 2:0 SCI IRQ select (0:9 1:10 2:11 4:20 5:21) |
//! | 0x60..0x63 | PIRQA..D_ROUT | bit 7 IRQEN (1 = not routed), bits 3:0 ISA IRQ; reset 0x80 |
//! | 0x68..0x6b | PIRQE..H_ROUT | same |
//! | 0xa0..0xa7 | GEN_PMCON_1/2/3, GEN_PMCON_LOCK | stored as QEMU does; GEN_PMCON_1.SMI_LOCK (bit 4) cannot be cleared once set |
//! | 0xf0 | RCBA (32) | bit 0 enable, bits 31:14 base; stored |
//!
//! Everything else in the device-specific area reads 0 and ignores writes.
//!
//! **PM block.** The ACPI PM I/O block ([`crate::acpi_pm`], 128 ports)
//! decodes at PMBASE while ACPI_EN is set and PMBASE is non-zero, as QEMU's
//! `ich9_lpc_pmbase_sci_update` (PCICMD.IOSE is stored but, as in QEMU,
//! does not gate it). Every write that changes the decoded base returns
//! one [`PciChange::Window`]. OVMF (`PlatformInitLib/Platform.c`
//! `PlatformMiscInitialization`) reads ACPI_CNTL, and if ACPI_EN is clear
//! does a 32-bit read-modify-write of PMBASE to 0x600, sets PCICMD.IOSE and
//! then ACPI_EN: one change, `None -> 0x600`, on the last write.
//!
//! **SCI.** [`Lpc::sci_irq`] decodes the select field; QEMU's ACPI tables
//! and OVMF leave it at 0 (IRQ 9). A change of the select is not reported:
//! the VMM wires the SCI statically to what its FADT announces.
//!
//! **PIRQ routes.** Stored and exposed via [`Lpc::pirq_routes`]. OVMF's
//! `PciAcpiInitialization` (`PlatformBootManagerLib/BdsPlatform.c`) routes
//! PIRQA..H to IRQ 10/10/11/11; those routes only matter to a guest
//! driving the 8259; in APIC mode QEMU (and the VMM's ACPI `_PRT`) connect
//! PIRQA..H to GSI 16..23 regardless, so no change is reported.
//!
//! **RCBA.** Stored so OVMF reads back its 0xfed1c000 | EN; the 16 KiB
//! root complex register block itself (chipset configuration registers:
//! interrupt routing D25IR..D31IR, GCS, ...) is **not emulated**: the VMM
//! need not map anything there (OVMF only reserves the range in its memory
//! map), and guest accesses fall to the MMIO bus's unclaimed handling.

use super::{chipset_config, overlaps, set_wmask};
use crate::pci::{PciChange, PciConfiguration, PciDevice};

/// Device ID (QEMU's `PCI_DEVICE_ID_INTEL_ICH9_8`).
pub const DEVICE_ID: u16 = 0x2918;
/// Revision ID (QEMU's `ICH9_A2_LPC_REVISION`).
pub const REVISION: u8 = 0x02;
/// Class code: bridge, ISA bridge.
pub const CLASS: u32 = 0x06_01_00;
/// Header type: type 0, multi-function.
pub const HEADER_TYPE: u8 = 0x80;

/// Offset of PMBASE (32 bits).
pub const PMBASE: u16 = 0x40;
/// Base-address bits of PMBASE (128-port aligned).
pub const PMBASE_BASE_MASK: u32 = 0xff80;
/// PMBASE bit 0: resource type indicator, hardwired 1 (I/O space).
pub const PMBASE_RTE: u32 = 0x1;
/// The PMBASE OVMF programs on Q35 (`ICH9_PMBASE_VALUE`).
pub const OVMF_PMBASE: u16 = 0x600;

/// Offset of ACPI_CNTL.
pub const ACPI_CNTL: u16 = 0x44;
/// ACPI_CNTL: ACPI I/O enable.
pub const ACPI_CNTL_ACPI_EN: u8 = 0x80;
/// ACPI_CNTL: SCI IRQ select field.
pub const ACPI_CNTL_SCI_IRQ_SEL_MASK: u8 = 0x07;
const ACPI_CNTL_WMASK: u8 = ACPI_CNTL_ACPI_EN | ACPI_CNTL_SCI_IRQ_SEL_MASK;

/// Offset of PIRQA_ROUT; PIRQB..D follow.
pub const PIRQA_ROUT: u16 = 0x60;
/// Offset of PIRQE_ROUT; PIRQF..H follow.
pub const PIRQE_ROUT: u16 = 0x68;
/// PIRQx_ROUT bit 7: routing to the 8259 disabled.
pub const PIRQ_ROUT_IRQEN: u8 = 0x80;
/// PIRQx_ROUT: ISA IRQ field.
pub const PIRQ_ROUT_IRQ_MASK: u8 = 0x0f;
/// PIRQx_ROUT reset value (not routed).
pub const PIRQ_ROUT_DEFAULT: u8 = 0x80;
const PIRQ_ROUT_WMASK: u8 = PIRQ_ROUT_IRQEN | PIRQ_ROUT_IRQ_MASK;

/// Offset of GEN_PMCON_1 (16 bits).
pub const GEN_PMCON_1: u16 = 0xa0;
/// GEN_PMCON_1: SMI_LOCK, sticky once set.
pub const GEN_PMCON_1_SMI_LOCK: u16 = 1 << 4;
/// Offset of GEN_PMCON_2.
pub const GEN_PMCON_2: u16 = 0xa2;
/// Offset of GEN_PMCON_3.
pub const GEN_PMCON_3: u16 = 0xa4;
/// Bytes of the GEN_PMCON block QEMU stores (0xa0..0xa8).
const GEN_PMCON_LEN: usize = 8;

/// Offset of RCBA (32 bits).
pub const RCBA: u16 = 0xf0;
/// RCBA enable bit.
pub const RCBA_EN: u32 = 0x1;
/// RCBA base-address bits 31:14 (16 KiB aligned).
pub const RCBA_BASE_MASK: u32 = 0xffff_c000;
/// The RCBA OVMF programs (`ICH9_ROOT_COMPLEX_BASE`).
pub const OVMF_RCBA: u32 = 0xfed1_c000;
/// Size of the root complex register block.
pub const RCBA_SIZE: u32 = 16 * 1024;

/// The ICH9 LPC bridge.
#[derive(Debug, Clone)]
pub struct Lpc {
    cs: PciConfiguration,
}

impl Default for Lpc {
    fn default() -> Self {
        Self::new()
    }
}

impl Lpc {
    /// An LPC bridge in its reset state (PM block not decoding, PIRQs not
    /// routed, RCBA disabled).
    pub fn new() -> Self {
        let mut cs = chipset_config(DEVICE_ID, REVISION, CLASS, HEADER_TYPE & 0x80 != 0);
        cs.set_u32(PMBASE, PMBASE_RTE);
        set_wmask(&mut cs, PMBASE, &PMBASE_BASE_MASK.to_le_bytes());
        set_wmask(&mut cs, ACPI_CNTL, &[ACPI_CNTL_WMASK]);
        for base in [PIRQA_ROUT, PIRQE_ROUT] {
            cs.set_bytes(base, &[PIRQ_ROUT_DEFAULT; 4]);
            set_wmask(&mut cs, base, &[PIRQ_ROUT_WMASK; 4]);
        }
        set_wmask(&mut cs, GEN_PMCON_1, &[0xff; GEN_PMCON_LEN]);
        set_wmask(&mut cs, RCBA, &(RCBA_BASE_MASK | RCBA_EN).to_le_bytes());
        Self { cs }
    }

    /// Return to the reset state. Returns the PM-block change if the block
    /// was decoding.
    pub fn reset(&mut self) -> Vec<PciChange> {
        let old = self.pm_base();
        *self = Self::new();
        pm_change(old, self.pm_base())
    }

    /// Where the ACPI PM block decodes: PMBASE while ACPI_EN is set and the
    /// base is non-zero.
    pub fn pm_base(&self) -> Option<u16> {
        let base = self.pmbase_register();
        (self.acpi_enabled() && base != 0).then_some(base)
    }

    /// The base address programmed in PMBASE, decoding or not.
    pub fn pmbase_register(&self) -> u16 {
        // Masked to 16 bits by PMBASE_BASE_MASK.
        (self.cs.read_u32(PMBASE) & PMBASE_BASE_MASK) as u16
    }

    /// ACPI_CNTL.ACPI_EN.
    pub fn acpi_enabled(&self) -> bool {
        self.cs.read_u8(ACPI_CNTL) & ACPI_CNTL_ACPI_EN != 0
    }

    /// The IRQ (GSI) the SCI select field names: 9, 10, 11, 20 or 21.
    /// Reserved selections (3, 6, 7) are treated as the default, IRQ 9.
    pub fn sci_irq(&self) -> u8 {
        match self.cs.read_u8(ACPI_CNTL) & ACPI_CNTL_SCI_IRQ_SEL_MASK {
            1 => 10,
            2 => 11,
            4 => 20,
            5 => 21,
            _ => 9,
        }
    }

    /// PIRQA..PIRQH: the ISA IRQ each is routed to on the 8259, or `None`
    /// while its IRQEN bit (7) is set. The IRQ is the raw 4-bit field;
    /// values the datasheet calls reserved (0-2, 8, 13) are reported as
    /// written.
    pub fn pirq_routes(&self) -> [Option<u8>; 8] {
        let mut routes = [None; 8];
        for (i, r) in routes.iter_mut().enumerate() {
            let off = if i < 4 {
                PIRQA_ROUT + i as u16
            } else {
                PIRQE_ROUT + i as u16 - 4
            };
            let v = self.cs.read_u8(off);
            if v & PIRQ_ROUT_IRQEN == 0 {
                *r = Some(v & PIRQ_ROUT_IRQ_MASK);
            }
        }
        routes
    }

    /// GEN_PMCON_1 as stored.
    pub fn gen_pmcon_1(&self) -> u16 {
        self.cs.read_u16(GEN_PMCON_1)
    }

    /// True once GEN_PMCON_1.SMI_LOCK has been set (until reset).
    pub fn smi_locked(&self) -> bool {
        self.gen_pmcon_1() & GEN_PMCON_1_SMI_LOCK != 0
    }

    /// The raw RCBA register.
    pub fn rcba_register(&self) -> u32 {
        self.cs.read_u32(RCBA)
    }

    /// The root complex register block base, if enabled. Informational:
    /// the block is not emulated.
    pub fn rcba(&self) -> Option<u32> {
        let v = self.rcba_register();
        (v & RCBA_EN != 0).then_some(v & RCBA_BASE_MASK)
    }

    /// QEMU's `ich9_lpc_pmcon_update`: once SMI_LOCK is set it can no
    /// longer be written.
    fn update_pmcon_lock(&mut self) {
        if self.smi_locked() {
            let mask: u16 = !GEN_PMCON_1_SMI_LOCK;
            set_wmask(&mut self.cs, GEN_PMCON_1, &mask.to_le_bytes());
        }
    }
}

fn pm_change(old: Option<u16>, new: Option<u16>) -> Vec<PciChange> {
    if old == new {
        Vec::new()
    } else {
        vec![pm_window(new)]
    }
}

/// The PM block's window change for a new base.
fn pm_window(new: Option<u16>) -> PciChange {
    PciChange::Window {
        window: crate::Window::AcpiPm,
        new: new.map(|b| (u64::from(b), u64::from(crate::acpi_pm::BLOCK_LEN))),
    }
}

impl PciDevice for Lpc {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.cs.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> Vec<PciChange> {
        let old_pm = self.pm_base();
        self.cs.write(offset, data);
        if overlaps(offset, data.len(), GEN_PMCON_1, GEN_PMCON_LEN) {
            self.update_pmcon_lock();
        }
        pm_change(old_pm, self.pm_base())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{cfg_read, cfg_write};
    use super::*;

    fn pm(_old: Option<u16>, new: Option<u16>) -> Vec<PciChange> {
        vec![pm_window(new)]
    }

    /// OVMF's `PlatformMiscInitialization` on Q35, access by access.
    fn ovmf_init(l: &mut Lpc) -> Vec<PciChange> {
        let mut changes = Vec::new();
        let acpi = cfg_read(l, ACPI_CNTL, 1) as u8;
        if acpi & ACPI_CNTL_ACPI_EN == 0 {
            // PciAndThenOr32 (Pmba, ~ICH9_PMBASE_MASK, ICH9_PMBASE_VALUE)
            let v = cfg_read(l, PMBASE, 4);
            changes.extend(cfg_write(l, PMBASE, 4, (v & !0xff80) | 0x600));
            // PciOr8 (PmCmd, EFI_PCI_COMMAND_IO_SPACE)
            let c = cfg_read(l, 4, 1);
            changes.extend(cfg_write(l, 4, 1, c | 1));
            // PciOr8 (AcpiCtlReg, ICH9_ACPI_CNTL_ACPI_EN)
            let a = cfg_read(l, ACPI_CNTL, 1);
            changes.extend(cfg_write(l, ACPI_CNTL, 1, a | 0x80));
        }
        // PciWrite32 (ICH9_RCBA, ICH9_ROOT_COMPLEX_BASE | ICH9_RCBA_EN)
        changes.extend(cfg_write(l, RCBA, 4, OVMF_RCBA | RCBA_EN));
        changes
    }

    #[test]
    fn identity_reads_at_every_width() {
        let mut l = Lpc::new();
        assert_eq!(cfg_read(&mut l, 0, 4), 0x2918_8086);
        assert_eq!(cfg_read(&mut l, 0, 2), 0x8086);
        assert_eq!(cfg_read(&mut l, 2, 2), 0x2918);
        assert_eq!(cfg_read(&mut l, 2, 1), 0x18);
        assert_eq!(cfg_read(&mut l, 8, 4), 0x0601_0002);
        assert_eq!(cfg_read(&mut l, 8, 1), 0x02);
        assert_eq!(cfg_read(&mut l, 0x0a, 2), 0x0601);
        assert_eq!(cfg_read(&mut l, 0x0c, 4), 0x0080_0000);
        assert_eq!(cfg_read(&mut l, 0x0e, 1), 0x80);
        assert_eq!(cfg_read(&mut l, 0x2c, 4), 0x1100_1af4);
        assert_eq!(cfg_read(&mut l, 0x2c, 2), 0x1af4);
        assert_eq!(cfg_read(&mut l, 0x10, 4), 0);
        assert_eq!(cfg_read(&mut l, 0x3d, 1), 0, "no interrupt pin");
        assert_eq!(cfg_read(&mut l, 0x800, 2), 0xffff);
        assert!(cfg_write(&mut l, 0x0e, 1, 0).is_empty());
        assert_eq!(cfg_read(&mut l, 0x0e, 1), 0x80);
    }

    #[test]
    fn reset_state() {
        let mut l = Lpc::new();
        assert_eq!(cfg_read(&mut l, PMBASE, 4), 1);
        assert_eq!(cfg_read(&mut l, ACPI_CNTL, 1), 0);
        assert_eq!(l.pm_base(), None);
        assert_eq!(l.sci_irq(), 9);
        assert_eq!(l.pirq_routes(), [None; 8]);
        assert_eq!(l.rcba(), None);
        assert_eq!(cfg_read(&mut l, RCBA, 4), 0);
    }

    #[test]
    fn ovmf_sequence_gives_one_pm_change() {
        let mut l = Lpc::new();
        assert_eq!(ovmf_init(&mut l), pm(None, Some(0x600)));
        assert_eq!(l.pm_base(), Some(0x600));
        assert_eq!(cfg_read(&mut l, PMBASE, 4), 0x601);
        assert_eq!(cfg_read(&mut l, 4, 2), 1, "PCICMD.IOSE");
        assert_eq!(cfg_read(&mut l, ACPI_CNTL, 1), 0x80);
        assert_eq!(cfg_read(&mut l, RCBA, 4), 0xfed1_c001);
        assert_eq!(l.rcba(), Some(OVMF_RCBA));
        assert_eq!(l.sci_irq(), 9);
        // Second pass (S3 resume, warm reboot without device reset): ACPI_EN
        // is already set, so OVMF skips PMBASE; nothing changes.
        assert!(ovmf_init(&mut l).is_empty());
    }

    #[test]
    fn pmbase_relocate_and_disable() {
        let mut l = Lpc::new();
        let _ = ovmf_init(&mut l);
        // Relocation while enabled; low bits other than 7 are read-only and
        // bit 0 stays 1.
        assert_eq!(
            cfg_write(&mut l, PMBASE, 2, 0xb07f),
            pm(Some(0x600), Some(0xb000))
        );
        assert_eq!(cfg_read(&mut l, PMBASE, 4), 0xb001);
        // Same base again: nothing.
        assert!(cfg_write(&mut l, PMBASE, 4, 0xffff_b000).is_empty());
        assert_eq!(cfg_read(&mut l, PMBASE, 4), 0xb001);
        // Bit 7 alone (a byte write) moves it by 128 ports.
        assert_eq!(
            cfg_write(&mut l, PMBASE, 1, 0x80),
            pm(Some(0xb000), Some(0xb080))
        );
        // ACPI_EN off, then on.
        assert_eq!(cfg_write(&mut l, ACPI_CNTL, 1, 0), pm(Some(0xb080), None));
        assert!(cfg_write(&mut l, PMBASE, 2, 0x700).is_empty());
        assert_eq!(cfg_write(&mut l, ACPI_CNTL, 1, 0x80), pm(None, Some(0x700)));
        // Base 0 with ACPI_EN set does not decode.
        assert_eq!(cfg_write(&mut l, PMBASE, 4, 0), pm(Some(0x700), None));
        assert_eq!(cfg_write(&mut l, PMBASE, 4, 0x600), pm(None, Some(0x600)));
        // Bits 31:16 are read-only.
        assert!(cfg_write(&mut l, PMBASE + 2, 2, 0xffff).is_empty());
        assert_eq!(cfg_read(&mut l, PMBASE, 4), 0x601);
    }

    #[test]
    fn sci_select() {
        let mut l = Lpc::new();
        for (sel, irq) in [
            (0, 9),
            (1, 10),
            (2, 11),
            (3, 9),
            (4, 20),
            (5, 21),
            (6, 9),
            (7, 9),
        ] {
            assert!(cfg_write(&mut l, ACPI_CNTL, 1, sel).is_empty());
            assert_eq!(l.sci_irq(), irq, "select {sel}");
        }
        // Bits 6:3 are read-only.
        let _ = cfg_write(&mut l, ACPI_CNTL, 1, 0x79);
        assert_eq!(cfg_read(&mut l, ACPI_CNTL, 1), 0x01);
        // 0x45..0x47 read 0.
        let _ = cfg_write(&mut l, ACPI_CNTL, 4, 0xffff_ff00);
        assert_eq!(cfg_read(&mut l, ACPI_CNTL, 4), 0);
    }

    #[test]
    fn pirq_routes_as_ovmf_programs_them() {
        let mut l = Lpc::new();
        // PciAcpiInitialization: PIRQA..H <- 10, 10, 11, 11, 10, 10, 11, 11.
        for (i, irq) in [10u32, 10, 11, 11].iter().enumerate() {
            assert!(cfg_write(&mut l, PIRQA_ROUT + i as u16, 1, *irq).is_empty());
            assert!(cfg_write(&mut l, PIRQE_ROUT + i as u16, 1, *irq).is_empty());
        }
        let r = [Some(10), Some(10), Some(11), Some(11)];
        let mut all = [None; 8];
        all[..4].copy_from_slice(&r);
        all[4..].copy_from_slice(&r);
        assert_eq!(l.pirq_routes(), all);
        assert_eq!(cfg_read(&mut l, PIRQA_ROUT, 4), 0x0b0b_0a0a);
        assert_eq!(cfg_read(&mut l, PIRQE_ROUT, 4), 0x0b0b_0a0a);
        // 0x64..0x67 are not PIRQ registers.
        let _ = cfg_write(&mut l, 0x64, 4, 0xffff_ffff);
        assert_eq!(cfg_read(&mut l, 0x64, 4), 0);
        // Reserved bits 6:4 are read-only; IRQEN disables the route.
        let _ = cfg_write(&mut l, PIRQA_ROUT, 1, 0xff);
        assert_eq!(cfg_read(&mut l, PIRQA_ROUT, 1), 0x8f);
        let _ = cfg_write(&mut l, PIRQE_ROUT + 3, 1, 0x7f);
        assert_eq!(cfg_read(&mut l, PIRQE_ROUT + 3, 1), 0x0f);
        let routes = l.pirq_routes();
        assert_eq!((routes[0], routes[7]), (None, Some(15)));
    }

    #[test]
    fn gen_pmcon_storage_and_smi_lock() {
        let mut l = Lpc::new();
        let _ = cfg_write(&mut l, GEN_PMCON_1, 2, 0x0201);
        assert_eq!(l.gen_pmcon_1(), 0x0201);
        let _ = cfg_write(&mut l, GEN_PMCON_2, 1, 0x5a);
        let _ = cfg_write(&mut l, GEN_PMCON_3, 2, 0xa5a5);
        assert_eq!(cfg_read(&mut l, GEN_PMCON_2, 1), 0x5a);
        assert_eq!(cfg_read(&mut l, GEN_PMCON_3, 2), 0xa5a5);
        assert!(!l.smi_locked());
        // SeaBIOS/OVMF-SMM style: read, OR SMI_LOCK, write a dword.
        let v = cfg_read(&mut l, GEN_PMCON_1, 2);
        let _ = cfg_write(&mut l, GEN_PMCON_1, 4, v | 0x10);
        assert!(l.smi_locked());
        // The dword write also hit GEN_PMCON_2 (0xa2) with 0.
        assert_eq!(cfg_read(&mut l, GEN_PMCON_2, 1), 0);
        // SMI_LOCK sticks; other bits stay writable.
        let _ = cfg_write(&mut l, GEN_PMCON_1, 2, 0x0003);
        assert_eq!(l.gen_pmcon_1(), 0x0013);
        // 0xa8 is past the block.
        let _ = cfg_write(&mut l, 0xa8, 1, 0xff);
        assert_eq!(cfg_read(&mut l, 0xa8, 1), 0);
        assert!(l.reset().is_empty());
        assert!(!l.smi_locked());
        let _ = cfg_write(&mut l, GEN_PMCON_1, 2, 0);
        assert_eq!(l.gen_pmcon_1(), 0);
    }

    #[test]
    fn rcba_masks() {
        let mut l = Lpc::new();
        let _ = cfg_write(&mut l, RCBA, 4, 0xffff_ffff);
        assert_eq!(cfg_read(&mut l, RCBA, 4), 0xffff_c001);
        assert_eq!(l.rcba(), Some(0xffff_c000));
        let _ = cfg_write(&mut l, RCBA, 4, OVMF_RCBA);
        assert_eq!(l.rcba_register(), OVMF_RCBA);
        assert_eq!(l.rcba(), None);
        let _ = cfg_write(&mut l, RCBA, 1, 0x01);
        assert_eq!(l.rcba(), Some(OVMF_RCBA));
    }

    #[test]
    fn reset_reports_pm_teardown() {
        let mut l = Lpc::new();
        let _ = ovmf_init(&mut l);
        let _ = cfg_write(&mut l, PIRQA_ROUT, 1, 10);
        assert_eq!(l.reset(), pm(Some(0x600), None));
        assert_eq!(l.pirq_routes(), [None; 8]);
        assert_eq!(l.rcba(), None);
        assert_eq!(cfg_read(&mut l, 4, 2), 0);
        // The next boot runs the full sequence again.
        assert_eq!(ovmf_init(&mut l), pm(None, Some(0x600)));
    }

    #[test]
    fn fuzz_config_space() {
        let mut l = Lpc::new();
        crate::fuzz::run("lpc_config", 20_000, |rng| {
            let off = rng.below(0x1100) as u16;
            let len = rng.width();
            let bytes = rng.bytes();
            for change in l.config_write(off, &bytes[..len]) {
                assert!(matches!(change, PciChange::Window { .. }));
            }
            let mut buf = [0u8; 8];
            l.config_read(off, &mut buf[..len]);
            if let Some(base) = l.pm_base() {
                assert_eq!(base % 128, 0);
            }
        });
    }
}
