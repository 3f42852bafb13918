//! The ACPI power-management register block (ICH9 layout, at PMBASE).
//!
//! | offset | register | notes |
//! |---|---|---|
//! | 0x00 | PM1_STS (16) | write 1 to clear |
//! | 0x02 | PM1_EN (16) | |
//! | 0x04 | PM1_CNT (32) | SCI_EN reads 1 (ACPI mode always on); SLP_EN with SLP_TYP = S5 powers off |
//! | 0x08 | PM_TMR (32) | free-running 3.579545 MHz counter, 32-bit (FADT TMR_VAL_EXT) |
//! | 0x20 | GPE0_STS (8 bytes) | write 1 to clear |
//! | 0x28 | GPE0_EN (8 bytes) | |
//!
//! The SCI is driven as a level from `(PM1_STS & PM1_EN) | (GPE0_STS & GPE0_EN)`.
//! The timer counts real elapsed time, so a guest calibrating against it
//! (OVMF's TimerLib, Linux's `acpi_pm` clocksource) gets true time even when
//! the VM is descheduled.

use std::sync::Arc;
use std::time::Instant;

use crate::{BusDevice, Effects, LevelIrqLine, VmControl, VmRequest, fill_le, le_value};

/// Size of the I/O block claimed at PMBASE.
pub const BLOCK_LEN: u16 = 0x80;
/// Default PMBASE (what OVMF programs on Q35, and QEMU's ICH9 value).
pub const DEFAULT_PMBASE: u16 = 0x600;
/// Offset of PM1 event block (status + enable).
pub const PM1_EVT_OFFSET: u16 = 0x00;
/// Offset of PM1 control.
pub const PM1_CNT_OFFSET: u16 = 0x04;
/// Offset of the PM timer.
pub const PM_TMR_OFFSET: u16 = 0x08;
/// Offset of the GPE0 block.
pub const GPE0_OFFSET: u16 = 0x20;
/// Length of the GPE0 block (status half + enable half).
pub const GPE0_LEN: u8 = 16;
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// SLP_TYP value meaning S5 (soft off) in this block; the DSDT's `\_S5`
/// announces the same value.
pub const S5_SLP_TYP: u8 = 0;

const PM1_CNT_SCI_EN: u32 = 1 << 0;
const PM1_CNT_SLP_EN: u32 = 1 << 13;
const PM1_CNT_SLP_TYP_SHIFT: u32 = 10;
const PM1_CNT_SLP_TYP_MASK: u32 = 0x7 << PM1_CNT_SLP_TYP_SHIFT;
const GPE0_HALF: u64 = (GPE0_LEN / 2) as u64;

/// The ACPI PM block.
pub struct AcpiPm {
    control: Arc<dyn VmControl>,
    sci: Option<Arc<dyn LevelIrqLine>>,
    start: Instant,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u32,
    gpe0_sts: [u8; GPE0_HALF as usize],
    gpe0_en: [u8; GPE0_HALF as usize],
    sci_level: bool,
}

impl std::fmt::Debug for AcpiPm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPm")
            .field("pm1_sts", &self.pm1_sts)
            .field("pm1_en", &self.pm1_en)
            .field("pm1_cnt", &self.pm1_cnt)
            .finish_non_exhaustive()
    }
}

impl AcpiPm {
    /// A PM block that reports S5 to `control` and drives `sci`.
    pub fn new(control: Arc<dyn VmControl>, sci: Option<Arc<dyn LevelIrqLine>>) -> Self {
        Self {
            control,
            sci,
            start: Instant::now(),
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: PM1_CNT_SCI_EN,
            gpe0_sts: [0; GPE0_HALF as usize],
            gpe0_en: [0; GPE0_HALF as usize],
            sci_level: false,
        }
    }

    /// Current PM timer value (24 bits of a 32-bit counter are what old
    /// guests read; the FADT announces 32).
    pub fn timer(&self) -> u32 {
        let ns = self.start.elapsed().as_nanos();
        // Wraps at 2^32 ticks (about 20 minutes), as the hardware does.
        ((ns * u128::from(PM_TIMER_HZ) / 1_000_000_000) & 0xffff_ffff) as u32
    }

    /// Latch a PM1 status bit (e.g. the power button, bit 8) and update the SCI.
    pub fn raise_pm1(&mut self, status_bits: u16) {
        self.pm1_sts |= status_bits;
        self.update_sci();
    }

    fn update_sci(&mut self) {
        let gpe = self
            .gpe0_sts
            .iter()
            .zip(self.gpe0_en.iter())
            .any(|(s, e)| s & e != 0);
        let level = (self.pm1_sts & self.pm1_en) != 0 || gpe;
        if level != self.sci_level {
            self.sci_level = level;
            if let Some(sci) = &self.sci {
                if let Err(e) = sci.set_level(level) {
                    log::warn!("acpi_pm: cannot drive SCI: {e}");
                }
            }
        }
    }

    fn write_pm1_cnt(&mut self, value: u32) {
        // SCI_EN stays set: there is no SMM to hand ACPI mode back to.
        self.pm1_cnt = (value & !PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN;
        if value & PM1_CNT_SLP_EN != 0 {
            let typ = ((value & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT) as u8;
            if typ == S5_SLP_TYP {
                self.control.request(VmRequest::PowerOff);
            } else {
                // S1-S4 are not offered by our DSDT; a guest asking anyway
                // keeps running, which is what it sees when a sleep fails.
                log::warn!("acpi_pm: guest asked for unsupported sleep type {typ}; ignored");
            }
        }
    }

    /// Read one byte of the register file.
    fn read_byte(&self, offset: u64) -> u8 {
        let byte = |v: u64, shift: u64| ((v >> (8 * shift)) & 0xff) as u8;
        match offset {
            0..=1 => byte(u64::from(self.pm1_sts), offset),
            2..=3 => byte(u64::from(self.pm1_en), offset - 2),
            4..=7 => byte(u64::from(self.pm1_cnt), offset - 4),
            8..=11 => byte(u64::from(self.timer()), offset - 8),
            o if (0x20..0x20 + GPE0_HALF).contains(&o) => self.gpe0_sts[(o - 0x20) as usize],
            o if (0x28..0x28 + GPE0_HALF).contains(&o) => self.gpe0_en[(o - 0x28) as usize],
            _ => 0,
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == u64::from(PM_TMR_OFFSET) && data.len() == 4 {
            // Read the timer once so the four bytes are consistent.
            fill_le(data, u64::from(self.timer()));
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            // Past the end of the address space reads as zero.
            *b = offset
                .checked_add(i as u64)
                .map_or(0, |o| self.read_byte(o));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        let value = le_value(data);
        let width = data.len() as u64;
        match offset {
            0 | 1 => {
                // PM1_STS: write-1-to-clear; a 32-bit write at 0 also sets PM1_EN.
                let clear = (value << (8 * offset)) as u16;
                self.pm1_sts &= !clear;
                if offset == 0 && width == 4 {
                    self.pm1_en = (value >> 16) as u16;
                }
            }
            2 => self.pm1_en = value as u16,
            4 => self.write_pm1_cnt(value as u32),
            5 => {
                // A byte write to the high half carries SLP_TYP/SLP_EN.
                let merged = (self.pm1_cnt & 0xff) | ((value as u32) << 8);
                self.write_pm1_cnt(merged);
            }
            o if (0x20..0x30).contains(&o) => {
                for (i, &b) in data.iter().enumerate() {
                    // o < 0x30: no overflow.
                    let o = o + i as u64;
                    if (0x20..0x20 + GPE0_HALF).contains(&o) {
                        self.gpe0_sts[(o - 0x20) as usize] &= !b;
                    } else if (0x28..0x28 + GPE0_HALF).contains(&o) {
                        self.gpe0_en[(o - 0x28) as usize] = b;
                    }
                }
            }
            _ => {}
        }
        self.update_sci();
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::test_util::RecordingControl;

    #[derive(Default)]
    struct Level(AtomicBool);
    impl LevelIrqLine for Level {
        fn set_level(&self, asserted: bool) -> std::io::Result<()> {
            self.0.store(asserted, Ordering::SeqCst);
            Ok(())
        }
    }

    fn pm() -> (AcpiPm, Arc<RecordingControl>, Arc<Level>) {
        let ctl = Arc::new(RecordingControl::default());
        let sci = Arc::new(Level::default());
        (AcpiPm::new(ctl.clone(), Some(sci.clone())), ctl, sci)
    }

    #[test]
    fn s5_powers_off_other_types_do_not() {
        let (mut pm, ctl, _) = pm();
        // Linux: outw(SLP_TYP << 10 | SLP_EN) to PM1a_CNT.
        assert!(
            pm.write(4, &(((3u16) << 10) | (1 << 13)).to_le_bytes())
                .is_empty()
        );
        assert!(ctl.taken().is_empty());
        assert!(
            pm.write(
                4,
                &((u16::from(S5_SLP_TYP) << 10) | (1 << 13)).to_le_bytes(),
            )
            .is_empty()
        );
        assert_eq!(ctl.taken(), vec![VmRequest::PowerOff]);
        // OVMF-style: byte write to the high half.
        assert!(pm.write(5, &[(1 << 5) | (S5_SLP_TYP << 2)]).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::PowerOff]);
    }

    #[test]
    fn sci_en_always_reads_set() {
        let (mut pm, _, _) = pm();
        assert!(pm.write(4, &[0, 0]).is_empty());
        let mut b = [0u8; 2];
        pm.read(4, &mut b);
        assert_eq!(u16::from_le_bytes(b) & 1, 1);
    }

    #[test]
    fn timer_runs_at_pm_frequency() {
        let (mut pm, _, _) = pm();
        let mut a = [0u8; 4];
        pm.read(8, &mut a);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut b = [0u8; 4];
        pm.read(8, &mut b);
        let ticks = u32::from_le_bytes(b).wrapping_sub(u32::from_le_bytes(a));
        // 50 ms = 178977 ticks; allow scheduling slack.
        assert!((170_000..600_000).contains(&ticks), "ticks={ticks}");
    }

    #[test]
    fn status_write_one_to_clear_and_sci_level() {
        let (mut pm, _, sci) = pm();
        assert!(pm.write(2, &0x0100u16.to_le_bytes()).is_empty()); // PWRBTN_EN
        pm.raise_pm1(0x0100);
        assert!(sci.0.load(Ordering::SeqCst));
        let mut b = [0u8; 2];
        pm.read(0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x0100);
        assert!(pm.write(0, &0x0100u16.to_le_bytes()).is_empty());
        pm.read(0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0);
        assert!(!sci.0.load(Ordering::SeqCst));
    }

    #[test]
    fn gpe0_registers() {
        let (mut pm, _, _) = pm();
        assert!(pm.write(0x28, &[0xff]).is_empty());
        let mut b = [0u8; 1];
        pm.read(0x28, &mut b);
        assert_eq!(b, [0xff]);
        pm.read(0x20, &mut b);
        assert_eq!(b, [0]);
        // Unknown offsets read as zero and never panic.
        let mut wide = [0xffu8; 8];
        pm.read(0x7c, &mut wide);
        assert!(pm.write(0x7f, &[1, 2, 3, 4, 5, 6, 7, 8]).is_empty());
    }

    #[test]
    fn fuzz_any_access_never_panics() {
        let (mut dev, _ctl, _sci) = pm();
        crate::test_util::stress("acpi_pm", &mut dev, 0x80, 200_000);
    }
}
