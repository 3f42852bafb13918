//! The Q35 MCH (memory controller hub), the host bridge at 00:00.0.
//!
//! IDs as QEMU's `mch`: 8086:29c0 (QEMU uses the 82P35 DID, which is what
//! OVMF's `INTEL_Q35_MCH_DEVICE_ID` checks), revision 0, class 0x060000,
//! header type 0, subsystem 1af4:1100. No BARs, no capabilities.
//!
//! | offset | register | behaviour |
//! |---|---|---|
//! | 0x50 | EXT_TSEG_MBYTES (16) | QEMU extension: reads 0xffff after reset; a write that leaves 0xffff in it makes it read the extended TSEG size in MiB; any other write is ignored |
//! | 0x60 | PCIEXBAR (64) | ECAM window: bit 0 enable, bits 2:1 length, base bits 35:28/27/26; see below |
//! | 0x90..0x96 | PAM0..PAM6 | stored (PAM0 bits 5:4, PAM1-6 bits 5:4 and 1:0); no effect |
//! | 0x9d | SMRAM | reset 0x02 (C_BASE_SEG hardwired); D_OPEN/D_CLS/D_LCK/G_SMRAME writable; D_LCK locks |
//! | 0x9e | ESMRAMC | reset 0x38 (SM_CACHE/SM_L1/SM_L2 hardwired); H_SMRAME/TSEG_SZ/T_EN writable until D_LCK |
//!
//! Everything else in the device-specific area reads 0 and ignores writes
//! (QEMU lets software scribble on them; no OVMF path reads one back).
//!
//! **PCIEXBAR.** Length 00 = 256 MiB (base bits 35:28), 01 = 128 MiB
//! (35:27), 10 = 64 MiB (35:26), 11 = reserved: the window stops decoding.
//! (These are the datasheet's bit positions; QEMU's `128ADMSK`/`64ADMSK`
//! are off by one bit, which no firmware notices because all use 256 MiB.)
//! Reset value 0xb000_0000, i.e. QEMU's default base, disabled. Every write
//! that changes the decoded window returns one [`PciChange::Window`] with
//! `(base, length)`; the length fixes the bus count (1 MiB per bus). OVMF
//! (`PlatformInitLib/Platform.c` `PciExBarInitialization`) writes the low
//! dword 0, the high dword, then `base | EN` to the low dword: one change,
//! `None -> (PcdPciExpressBaseAddress, 256 MiB)`.
//!
//! **PAM.** The VMM keeps RAM (read-write) behind 0xc0000..0xfffff
//! whatever these say. A non-CSM OVMF copies nothing into the legacy BIOS
//! area and does not program PAM at all, so this is all it needs; a CSM or
//! SeaBIOS guest that relies on PAM write-protecting shadow RAM would not
//! get that.
//!
//! **SMRAM/ESMRAMC, extended TSEG.** Only SMM builds of OVMF read these
//! (`SmmAccess/SmmAccessPei.c`, `PlatformPei/MemDetect.c`
//! `Q35TsegMbytesInitialization`, reached only with `PcdSmmSmramRequire`).
//! They are stored with QEMU's reset values and masks so that a probe sees
//! QEMU's answers, but SMRAM/TSEG are not implemented: nothing is hidden or
//! remapped. GGC, TOLUD, GBSM, BGSM, TSEGMB and the default-SMBASE register
//! (0x9c) are written only by those SMM paths and are not emulated.

use thiserror::Error;

use super::{chipset_config, overlaps, set_wmask};
use crate::pci::{PciChange, PciConfiguration, PciDevice};

/// Device ID (QEMU's `PCI_DEVICE_ID_INTEL_P35_MCH`; OVMF's
/// `INTEL_Q35_MCH_DEVICE_ID`).
pub const DEVICE_ID: u16 = 0x29c0;
/// Revision ID (QEMU's `MCH_HOST_BRIDGE_REVISION_DEFAULT`).
pub const REVISION: u8 = 0;
/// Class code: bridge, host bridge.
pub const CLASS: u32 = 0x06_00_00;

/// Offset of QEMU's extended-TSEG register (16 bits).
pub const EXT_TSEG_MBYTES: u16 = 0x50;
/// Value written to [`EXT_TSEG_MBYTES`] to query the size.
pub const EXT_TSEG_MBYTES_QUERY: u16 = 0xffff;
/// Largest extended TSEG size QEMU accepts, in MiB.
pub const EXT_TSEG_MBYTES_MAX: u16 = 0xfff;
/// QEMU's default extended TSEG size (machine types up to 10.1) in MiB.
pub const DEFAULT_EXT_TSEG_MBYTES: u16 = 16;

/// Offset of PCIEXBAR (64 bits).
pub const PCIEXBAR: u16 = 0x60;
/// PCIEXBAR reset value: QEMU's default base, not enabled.
pub const PCIEXBAR_DEFAULT: u64 = 0xb000_0000;
/// PCIEXBAR enable bit.
pub const PCIEXBAR_EN: u64 = 1;
const PCIEXBAR_LENGTH_SHIFT: u32 = 1;
const PCIEXBAR_LENGTH_MASK: u64 = 0b11 << PCIEXBAR_LENGTH_SHIFT;
/// Base-address bits 35:26 (the widest, 64 MiB, case).
const PCIEXBAR_BASE_MASK: u64 = 0x0000_000f_fc00_0000;
const PCIEXBAR_WMASK: u64 = PCIEXBAR_BASE_MASK | PCIEXBAR_LENGTH_MASK | PCIEXBAR_EN;
/// 256 MiB, the ECAM size for 256 buses.
pub const ECAM_SIZE_256M: u64 = 256 << 20;
/// 128 MiB (128 buses).
pub const ECAM_SIZE_128M: u64 = 128 << 20;
/// 64 MiB (64 buses).
pub const ECAM_SIZE_64M: u64 = 64 << 20;

/// Offset of PAM0; PAM1..PAM6 follow.
pub const PAM0: u16 = 0x90;
/// Number of PAM registers.
pub const PAM_COUNT: usize = 7;
const PAM0_WMASK: u8 = 0x30;
const PAM_WMASK: u8 = 0x33;

/// Offset of SMRAM (SMRAMC).
pub const SMRAM: u16 = 0x9d;
/// SMRAM: open SMRAM to non-SMM code.
pub const SMRAM_D_OPEN: u8 = 1 << 6;
/// SMRAM: close SMRAM to data accesses.
pub const SMRAM_D_CLS: u8 = 1 << 5;
/// SMRAM: lock SMRAM and ESMRAMC.
pub const SMRAM_D_LCK: u8 = 1 << 4;
/// SMRAM: global SMRAM enable.
pub const SMRAM_G_SMRAME: u8 = 1 << 3;
/// SMRAM reset value (C_BASE_SEG hardwired to 0b010).
pub const SMRAM_DEFAULT: u8 = 0x02;
const SMRAM_WMASK: u8 = SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME;
const SMRAM_WMASK_LCK: u8 = SMRAM_D_CLS;

/// Offset of ESMRAMC.
pub const ESMRAMC: u16 = 0x9e;
/// ESMRAMC: high SMRAM enable.
pub const ESMRAMC_H_SMRAME: u8 = 1 << 7;
/// ESMRAMC: TSEG size field.
pub const ESMRAMC_TSEG_SZ_MASK: u8 = 0b11 << 1;
/// ESMRAMC: TSEG enable.
pub const ESMRAMC_T_EN: u8 = 1;
/// ESMRAMC reset value (SM_CACHE, SM_L1, SM_L2; OVMF's SMRAM probe
/// requires all three).
pub const ESMRAMC_DEFAULT: u8 = (1 << 5) | (1 << 4) | (1 << 3);
const ESMRAMC_WMASK: u8 = ESMRAMC_H_SMRAME | ESMRAMC_TSEG_SZ_MASK | ESMRAMC_T_EN;
const ESMRAMC_WMASK_LCK: u8 = 0;

/// An ECAM window: (base, length).
pub type EcamWindow = (u64, u64);

/// Errors building an [`Mch`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MchError {
    /// The extended TSEG size is larger than QEMU allows.
    #[error("extended TSEG of {0} MiB is larger than the maximum {EXT_TSEG_MBYTES_MAX} MiB")]
    ExtTsegTooLarge(u16),
}

/// The Q35 host bridge.
#[derive(Debug, Clone)]
pub struct Mch {
    cs: PciConfiguration,
    ext_tseg_mb: u16,
}

impl Default for Mch {
    fn default() -> Self {
        Self::new()
    }
}

impl Mch {
    /// A host bridge in its reset state offering QEMU's default extended
    /// TSEG ([`DEFAULT_EXT_TSEG_MBYTES`]).
    pub fn new() -> Self {
        Self::build(DEFAULT_EXT_TSEG_MBYTES)
    }

    /// A host bridge whose extended-TSEG register reports `mb` MiB; 0 means
    /// no extended TSEG (the query value reads back unchanged, as on QEMU
    /// machine types before 2.10).
    pub fn with_extended_tseg_mb(mb: u16) -> Result<Self, MchError> {
        if mb > EXT_TSEG_MBYTES_MAX {
            return Err(MchError::ExtTsegTooLarge(mb));
        }
        Ok(Self::build(mb))
    }

    fn build(ext_tseg_mb: u16) -> Self {
        let mut cs = chipset_config(DEVICE_ID, REVISION, CLASS, false);
        if ext_tseg_mb > 0 {
            cs.set_u16(EXT_TSEG_MBYTES, EXT_TSEG_MBYTES_QUERY);
        }
        cs.set_u64(PCIEXBAR, PCIEXBAR_DEFAULT);
        set_wmask(&mut cs, PCIEXBAR, &PCIEXBAR_WMASK.to_le_bytes());
        set_wmask(&mut cs, PAM0, &[PAM0_WMASK]);
        set_wmask(&mut cs, PAM0 + 1, &[PAM_WMASK; PAM_COUNT - 1]);
        cs.set_u8(SMRAM, SMRAM_DEFAULT);
        set_wmask(&mut cs, SMRAM, &[SMRAM_WMASK]);
        cs.set_u8(ESMRAMC, ESMRAMC_DEFAULT);
        set_wmask(&mut cs, ESMRAMC, &[ESMRAMC_WMASK]);
        Self { cs, ext_tseg_mb }
    }

    /// Return to the reset state (PCIEXBAR disabled, SMRAM unlocked).
    /// Returns the ECAM change if a window was decoding.
    pub fn reset(&mut self) -> Vec<PciChange> {
        let old = self.ecam();
        *self = Self::build(self.ext_tseg_mb);
        ecam_change(old, self.ecam())
    }

    /// The raw PCIEXBAR value.
    pub fn pciexbar(&self) -> u64 {
        self.cs.read_u64(PCIEXBAR)
    }

    /// The ECAM window PCIEXBAR decodes, if enabled: (base, length).
    pub fn ecam(&self) -> Option<EcamWindow> {
        decode_pciexbar(self.pciexbar())
    }

    /// PAM0..PAM6 as stored.
    pub fn pam(&self) -> [u8; PAM_COUNT] {
        let mut pam = [0; PAM_COUNT];
        for (i, p) in pam.iter_mut().enumerate() {
            *p = self.cs.read_u8(PAM0 + i as u16);
        }
        pam
    }

    /// The SMRAM register.
    pub fn smram(&self) -> u8 {
        self.cs.read_u8(SMRAM)
    }

    /// The ESMRAMC register.
    pub fn esmramc(&self) -> u8 {
        self.cs.read_u8(ESMRAMC)
    }

    /// True once the guest has set SMRAM.D_LCK (until reset).
    pub fn smram_locked(&self) -> bool {
        self.smram() & SMRAM_D_LCK != 0
    }

    /// The extended TSEG size this bridge reports, in MiB (0: none).
    pub fn extended_tseg_mb(&self) -> u16 {
        self.ext_tseg_mb
    }

    /// QEMU's `mch_update_ext_tseg_mbytes`, with writes that do not leave
    /// the query value ignored (the register's write mask is 0).
    fn write_ext_tseg(&mut self, offset: u16, data: &[u8], before: u16) {
        let mut word = before.to_le_bytes();
        for (i, &v) in data.iter().enumerate() {
            let off = usize::from(offset) + i;
            if let Some(slot) = off
                .checked_sub(usize::from(EXT_TSEG_MBYTES))
                .and_then(|k| word.get_mut(k))
            {
                *slot = v;
            }
        }
        if u16::from_le_bytes(word) == EXT_TSEG_MBYTES_QUERY {
            let answer = if self.ext_tseg_mb > 0 {
                self.ext_tseg_mb
            } else {
                EXT_TSEG_MBYTES_QUERY
            };
            self.cs.set_u16(EXT_TSEG_MBYTES, answer);
        }
    }

    /// QEMU's `mch_update_smram` lock handling: D_LCK clears D_OPEN and
    /// leaves only D_CLS writable, and ESMRAMC read-only.
    fn update_smram_lock(&mut self) {
        let smram = self.cs.read_u8(SMRAM);
        if smram & SMRAM_D_LCK != 0 {
            self.cs.set_u8(SMRAM, smram & !SMRAM_D_OPEN);
            set_wmask(&mut self.cs, SMRAM, &[SMRAM_WMASK_LCK]);
            set_wmask(&mut self.cs, ESMRAMC, &[ESMRAMC_WMASK_LCK]);
        }
    }
}

/// The window a PCIEXBAR value decodes.
pub fn decode_pciexbar(value: u64) -> Option<EcamWindow> {
    if value & PCIEXBAR_EN == 0 {
        return None;
    }
    let length = match (value & PCIEXBAR_LENGTH_MASK) >> PCIEXBAR_LENGTH_SHIFT {
        0 => ECAM_SIZE_256M,
        1 => ECAM_SIZE_128M,
        2 => ECAM_SIZE_64M,
        // Reserved length: QEMU logs a guest error; we stop decoding.
        _ => return None,
    };
    Some((value & PCIEXBAR_BASE_MASK & !(length - 1), length))
}

fn ecam_change(old: Option<EcamWindow>, new: Option<EcamWindow>) -> Vec<PciChange> {
    if old == new {
        Vec::new()
    } else {
        vec![PciChange::Window {
            window: crate::Window::Ecam,
            new,
        }]
    }
}

impl PciDevice for Mch {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.cs.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> Vec<PciChange> {
        let old_ecam = self.ecam();
        let old_tseg = self.cs.read_u16(EXT_TSEG_MBYTES);
        self.cs.write(offset, data);
        if overlaps(offset, data.len(), EXT_TSEG_MBYTES, 2) {
            self.write_ext_tseg(offset, data, old_tseg);
        }
        if overlaps(offset, data.len(), SMRAM, 2) {
            self.update_smram_lock();
        }
        ecam_change(old_ecam, self.ecam())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{cfg_read, cfg_write};
    use super::*;

    const OFF_HI: u16 = PCIEXBAR + 4;
    const OFF_LO: u16 = PCIEXBAR;

    fn ecam(_old: Option<EcamWindow>, new: Option<EcamWindow>) -> Vec<PciChange> {
        vec![PciChange::Window {
            window: crate::Window::Ecam,
            new,
        }]
    }

    #[test]
    fn identity_reads_at_every_width() {
        let mut m = Mch::new();
        assert_eq!(cfg_read(&mut m, 0, 4), 0x29c0_8086);
        assert_eq!(cfg_read(&mut m, 0, 2), 0x8086);
        assert_eq!(cfg_read(&mut m, 2, 2), 0x29c0);
        assert_eq!(cfg_read(&mut m, 1, 1), 0x80);
        assert_eq!(cfg_read(&mut m, 3, 1), 0x29);
        assert_eq!(cfg_read(&mut m, 8, 4), 0x0600_0000);
        assert_eq!(cfg_read(&mut m, 0x0a, 2), 0x0600);
        assert_eq!(cfg_read(&mut m, 0x0b, 1), 0x06);
        assert_eq!(cfg_read(&mut m, 0x0e, 1), 0x00);
        assert_eq!(cfg_read(&mut m, 0x0c, 4), 0);
        assert_eq!(cfg_read(&mut m, 0x2c, 4), 0x1100_1af4);
        assert_eq!(cfg_read(&mut m, 0x2e, 2), 0x1100);
        assert_eq!(cfg_read(&mut m, 0x10, 4), 0, "no BARs");
        assert_eq!(cfg_read(&mut m, 0x34, 1), 0, "no capabilities");
        assert_eq!(cfg_read(&mut m, 0x100, 4), 0xffff_ffff, "conventional");
        // IDs are read-only.
        assert!(cfg_write(&mut m, 0, 4, 0xdead_beef).is_empty());
        assert_eq!(cfg_read(&mut m, 0, 4), 0x29c0_8086);
    }

    #[test]
    fn pciexbar_reset_value() {
        let mut m = Mch::new();
        assert_eq!(cfg_read(&mut m, OFF_LO, 4), 0xb000_0000);
        assert_eq!(cfg_read(&mut m, OFF_HI, 4), 0);
        assert_eq!(m.ecam(), None);
    }

    #[test]
    fn ovmf_pciexbar_sequence_gives_one_change() {
        let mut m = Mch::new();
        // PciExBarInitialization: low <- 0, high <- 0, low <- base|EN.
        assert!(cfg_write(&mut m, OFF_LO, 4, 0).is_empty());
        assert!(cfg_write(&mut m, OFF_HI, 4, 0).is_empty());
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0xb000_0001),
            ecam(None, Some((0xb000_0000, ECAM_SIZE_256M)))
        );
        assert_eq!(m.ecam(), Some((0xb000_0000, ECAM_SIZE_256M)));
        assert_eq!(cfg_read(&mut m, OFF_LO, 4), 0xb000_0001);
        // Rewriting the same value changes nothing.
        assert!(cfg_write(&mut m, OFF_LO, 4, 0xb000_0001).is_empty());
        assert!(cfg_write(&mut m, OFF_HI, 4, 0).is_empty());
        // And a second run of the same sequence (e.g. after S3) disables
        // then re-enables.
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0),
            ecam(Some((0xb000_0000, ECAM_SIZE_256M)), None)
        );
    }

    #[test]
    fn pciexbar_relocate_and_disable() {
        let mut m = Mch::new();
        let w256 = |b| Some((b, ECAM_SIZE_256M));
        let _ = cfg_write(&mut m, OFF_LO, 4, 0xb000_0001);
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0xe000_0001),
            ecam(w256(0xb000_0000), w256(0xe000_0000))
        );
        // High dword while enabled moves the window above 4 GiB at once.
        assert_eq!(
            cfg_write(&mut m, OFF_HI, 4, 0x8),
            ecam(w256(0xe000_0000), w256(0x8_e000_0000))
        );
        // Bits above 35 are not writable.
        assert!(cfg_write(&mut m, OFF_HI, 4, 0xffff_fff8).is_empty());
        assert_eq!(cfg_read(&mut m, OFF_HI, 4), 0x8);
        let _ = cfg_write(&mut m, OFF_HI, 4, 0);
        // Byte write of the enable byte alone disables.
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 1, 0x00),
            ecam(w256(0xe000_0000), None)
        );
        // Moving a disabled window is silent.
        assert!(cfg_write(&mut m, OFF_LO, 4, 0xc000_0000).is_empty());
        assert!(cfg_write(&mut m, OFF_HI, 4, 0x1).is_empty());
        // Byte write of the enable byte alone enables where it now points.
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 1, 0x01),
            ecam(None, w256(0x1_c000_0000))
        );
    }

    #[test]
    fn pciexbar_length_variants() {
        let mut m = Mch::new();
        // 128 MiB: base bit 27 counts.
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0xb800_0003),
            ecam(None, Some((0xb800_0000, ECAM_SIZE_128M)))
        );
        // 64 MiB: base bit 26 counts too.
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0xbc00_0005),
            ecam(
                Some((0xb800_0000, ECAM_SIZE_128M)),
                Some((0xbc00_0000, ECAM_SIZE_64M))
            )
        );
        // Back to 256 MiB: bits 27:26 are ignored for the base.
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0xbc00_0001),
            ecam(
                Some((0xbc00_0000, ECAM_SIZE_64M)),
                Some((0xb000_0000, ECAM_SIZE_256M))
            )
        );
        // Reserved length stops decoding.
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0xb000_0007),
            ecam(Some((0xb000_0000, ECAM_SIZE_256M)), None)
        );
        // Same base, only the length changes: still a change.
        let _ = cfg_write(&mut m, OFF_LO, 4, 0xb000_0001);
        assert_eq!(
            cfg_write(&mut m, OFF_LO, 4, 0xb000_0003),
            ecam(
                Some((0xb000_0000, ECAM_SIZE_256M)),
                Some((0xb000_0000, ECAM_SIZE_128M))
            )
        );
        // Reserved low bits (25:3) are read-only.
        let _ = cfg_write(&mut m, OFF_LO, 4, 0xffff_ffff);
        assert_eq!(cfg_read(&mut m, OFF_LO, 4), 0xfc00_0007);
    }

    #[test]
    fn decode_table() {
        assert_eq!(decode_pciexbar(PCIEXBAR_DEFAULT), None);
        assert_eq!(
            decode_pciexbar(0xf_f000_0001),
            Some((0xf_f000_0000, ECAM_SIZE_256M))
        );
        assert_eq!(
            decode_pciexbar(0xffff_ffff_ffff_fffd),
            Some((0xf_fc00_0000, ECAM_SIZE_64M))
        );
    }

    #[test]
    fn pam_masks() {
        let mut m = Mch::new();
        assert_eq!(m.pam(), [0; 7]);
        for i in 0..7u16 {
            assert!(cfg_write(&mut m, PAM0 + i, 1, 0xff).is_empty());
        }
        assert_eq!(m.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        // A dword write covering PAM0..PAM3.
        let _ = cfg_write(&mut m, PAM0, 4, 0x1111_1111);
        assert_eq!(cfg_read(&mut m, PAM0, 4), 0x1111_1110);
        // 0x97 is past PAM6 and reads 0.
        let _ = cfg_write(&mut m, 0x97, 1, 0xff);
        assert_eq!(cfg_read(&mut m, 0x97, 1), 0);
    }

    #[test]
    fn smram_reset_values_and_masks() {
        let mut m = Mch::new();
        assert_eq!(cfg_read(&mut m, SMRAM, 1), 0x02);
        assert_eq!(cfg_read(&mut m, ESMRAMC, 1), 0x38);
        // ESMRAMC: H_SMRAME, TSEG_SZ, T_EN writable; cache bits fixed.
        let _ = cfg_write(&mut m, ESMRAMC, 1, 0xff);
        assert_eq!(m.esmramc(), 0xbf);
        let _ = cfg_write(&mut m, ESMRAMC, 1, 0x00);
        assert_eq!(m.esmramc(), 0x38);
        // SMRAM without D_LCK: D_OPEN | D_CLS | G_SMRAME writable,
        // C_BASE_SEG hardwired.
        let _ = cfg_write(&mut m, SMRAM, 1, 0xef);
        assert_eq!(m.smram(), 0x6a);
        let _ = cfg_write(&mut m, SMRAM, 1, 0x00);
        assert_eq!(m.smram(), 0x02);
        assert!(!m.smram_locked());
    }

    #[test]
    fn smram_lock() {
        let mut m = Mch::new();
        let _ = cfg_write(&mut m, ESMRAMC, 1, 0x07);
        // Set D_OPEN | D_LCK | G_SMRAME at once: D_OPEN is dropped.
        let _ = cfg_write(&mut m, SMRAM, 1, 0x58);
        assert!(m.smram_locked());
        assert_eq!(m.smram(), 0x1a);
        // Only D_CLS stays writable; D_LCK cannot be cleared.
        let _ = cfg_write(&mut m, SMRAM, 1, 0x60);
        assert_eq!(m.smram(), 0x3a);
        let _ = cfg_write(&mut m, SMRAM, 1, 0x00);
        assert_eq!(m.smram(), 0x1a);
        // ESMRAMC is frozen.
        let _ = cfg_write(&mut m, ESMRAMC, 1, 0x00);
        assert_eq!(m.esmramc(), 0x3f);
        // A 16-bit write covering both, as a guest might.
        let _ = cfg_write(&mut m, 0x9c, 4, 0);
        assert_eq!((m.smram(), m.esmramc()), (0x1a, 0x3f));
        // Reset unlocks.
        assert!(m.reset().is_empty());
        assert_eq!((m.smram(), m.esmramc()), (0x02, 0x38));
        let _ = cfg_write(&mut m, SMRAM, 1, 0x08);
        assert_eq!(m.smram(), 0x0a);
    }

    #[test]
    fn ext_tseg_query() {
        let mut m = Mch::new();
        let off = EXT_TSEG_MBYTES;
        assert_eq!(cfg_read(&mut m, off, 2), 0xffff);
        assert!(cfg_write(&mut m, off, 2, 0xffff).is_empty());
        assert_eq!(cfg_read(&mut m, off, 2), 16);
        // Any other value is ignored, including a byte that does not
        // complete 0xffff.
        let _ = cfg_write(&mut m, off, 2, 0x1234);
        assert_eq!(cfg_read(&mut m, off, 2), 16);
        let _ = cfg_write(&mut m, off, 1, 0xff);
        assert_eq!(cfg_read(&mut m, off, 2), 16);
        // Querying again answers again (OVMF does so on every boot).
        let _ = cfg_write(&mut m, off, 2, 0xffff);
        assert_eq!(cfg_read(&mut m, off, 2), 16);
        // A dword write at 0x50 works too.
        let _ = cfg_write(&mut m, off, 4, 0x0000_ffff);
        assert_eq!(cfg_read(&mut m, off, 4), 16);
        let _ = m.reset();
        assert_eq!(cfg_read(&mut m, off, 2), 0xffff);
    }

    #[test]
    fn ext_tseg_sizes() {
        let mut m = Mch::with_extended_tseg_mb(64).unwrap();
        let off = EXT_TSEG_MBYTES;
        let _ = cfg_write(&mut m, off, 2, 0xffff);
        assert_eq!(cfg_read(&mut m, off, 2), 64);
        // No extended TSEG: the query value stays, as OVMF expects.
        let mut m = Mch::with_extended_tseg_mb(0).unwrap();
        assert_eq!(cfg_read(&mut m, off, 2), 0);
        let _ = cfg_write(&mut m, off, 2, 0xffff);
        assert_eq!(cfg_read(&mut m, off, 2), 0xffff);
        assert_eq!(
            Mch::with_extended_tseg_mb(0x1000).unwrap_err(),
            MchError::ExtTsegTooLarge(0x1000)
        );
    }

    #[test]
    fn reset_reports_ecam_teardown() {
        let mut m = Mch::new();
        assert!(m.reset().is_empty());
        let _ = cfg_write(&mut m, OFF_LO, 4, 0xb000_0001);
        assert_eq!(m.reset(), ecam(Some((0xb000_0000, ECAM_SIZE_256M)), None));
        assert_eq!(m.pciexbar(), PCIEXBAR_DEFAULT);
    }

    #[test]
    fn unemulated_registers_read_zero() {
        let mut m = Mch::new();
        for (off, len) in [
            (0x40u16, 4),
            (0x52, 2),
            (0x9c, 1),
            (0xa4, 4),
            (0xa8, 4),
            (0xac, 4),
            (0xb0, 4),
            (0xfc, 4),
        ] {
            let _ = cfg_write(&mut m, off, len, 0xffff_ffff);
            assert_eq!(cfg_read(&mut m, off, len), 0, "offset {off:#x}");
        }
        assert_eq!((m.smram(), m.esmramc()), (SMRAM_DEFAULT, ESMRAMC_DEFAULT));
        // Command: I/O, memory, master, SERR, INTx-disable.
        let _ = cfg_write(&mut m, 4, 2, 0xffff);
        assert_eq!(cfg_read(&mut m, 4, 2), 0x0507);
        assert_eq!(cfg_read(&mut m, 6, 2), 0, "status");
    }

    #[test]
    fn fuzz_config_space() {
        let mut m = Mch::new();
        crate::fuzz::run("mch_config", 20_000, |rng| {
            let off = rng.below(0x1100) as u16;
            let len = rng.width();
            let bytes = rng.bytes();
            let _ = m.config_write(off, &bytes[..len]);
            let mut buf = [0u8; 8];
            m.config_read(off, &mut buf[..len]);
            // Whatever happened, the window is always well formed.
            if let Some((base, len)) = m.ecam() {
                assert_eq!(base % len, 0);
                assert!(base < 1 << 36);
            }
        });
    }
}
