//! The MC146818 CMOS RAM and real-time clock at I/O ports 0x70-0x71.
//!
//! Register it at [`PORT`] with length [`PORT_LEN`]: offset 0 is the index
//! port (bit 7 of the written index is the NMI-disable bit and is ignored
//! for addressing; reading it returns 0xff), offset 1 the data port. Only
//! the first byte of a wider access is handled: wide reads fill the rest
//! with 0xff, the rest of a wide write is dropped.
//!
//! The 128 bytes of RAM hold, besides the clock registers, the memory-size
//! and CPU-count bytes QEMU's PC machine writes and SeaBIOS and OVMF read
//! (see [`Cmos::new`]).
//!
//! The clock is the host wall clock (UTC) plus an offset the guest sets by
//! writing the time registers, either while Status B's SET bit is 1 (the
//! new time takes effect, and starts a fresh second, when SET is cleared)
//! or directly while SET is 0 (the time takes effect at once, keeping the
//! sub-second phase). Time registers read the clock at the moment of the
//! read in the format Status B selects (BCD or binary, 24- or 12-hour);
//! while SET is 1 they are frozen and read back what the guest wrote.
//! Status A's UIP bit is 1 during the last 244 µs before each second rolls
//! over. The divider bits of Status A are stored but do not stop the clock.
//!
//! **No interrupts are generated**: periodic, alarm and update-ended
//! interrupts (IRQ 8) are not implemented, whatever Status B enables, and
//! Status C always reads 0. The alarm registers are plain storage.

use crate::Effects;
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;

use crate::BusDevice;

/// First I/O port of the device (index port; the data port follows).
pub const PORT: u16 = 0x70;
/// Number of I/O ports the device decodes.
pub const PORT_LEN: u16 = 2;
/// ISA IRQ of the RTC (announced in ACPI; never raised by this model).
pub const IRQ: u8 = 8;
/// Bytes of CMOS RAM, registers included.
pub const CMOS_SIZE: usize = 128;

/// Seconds register.
pub const REG_SECONDS: u8 = 0x00;
/// Seconds alarm register.
pub const REG_SECONDS_ALARM: u8 = 0x01;
/// Minutes register.
pub const REG_MINUTES: u8 = 0x02;
/// Minutes alarm register.
pub const REG_MINUTES_ALARM: u8 = 0x03;
/// Hours register (bit 7 = PM in 12-hour mode).
pub const REG_HOURS: u8 = 0x04;
/// Hours alarm register.
pub const REG_HOURS_ALARM: u8 = 0x05;
/// Day of week register, 1 = Sunday .. 7 = Saturday.
pub const REG_DAY_OF_WEEK: u8 = 0x06;
/// Day of month register, 1..=31.
pub const REG_DAY_OF_MONTH: u8 = 0x07;
/// Month register, 1..=12.
pub const REG_MONTH: u8 = 0x08;
/// Year register, 0..=99 (year within the century).
pub const REG_YEAR: u8 = 0x09;
/// Status register A: UIP (bit 7, read-only), divider, rate select.
pub const REG_STATUS_A: u8 = 0x0a;
/// Status register B: SET, interrupt enables, DM, 24/12, DSE.
pub const REG_STATUS_B: u8 = 0x0b;
/// Status register C: interrupt flags (always 0 here).
pub const REG_STATUS_C: u8 = 0x0c;
/// Status register D: VRT (valid RAM and time).
pub const REG_STATUS_D: u8 = 0x0d;
/// Century register (the one the ACPI FADT and QEMU use).
pub const REG_CENTURY: u8 = 0x32;

/// Status A after power-on: 32.768 kHz time base, 1024 Hz rate.
pub const STATUS_A_DEFAULT: u8 = 0x26;
/// Status B after power-on: 24-hour mode, BCD, no interrupts.
pub const STATUS_B_DEFAULT: u8 = 0x02;
/// Status A bit 7: update in progress.
pub const STATUS_A_UIP: u8 = 0x80;
/// Status B bit 7: updates frozen while the guest sets the time.
pub const STATUS_B_SET: u8 = 0x80;
/// Status B bit 2: data mode binary (0 = BCD).
pub const STATUS_B_DM_BINARY: u8 = 0x04;
/// Status B bit 1: 24-hour mode (0 = 12-hour with bit 7 of hours = PM).
pub const STATUS_B_24H: u8 = 0x02;
/// Status D bit 7: valid RAM and time.
pub const STATUS_D_VRT: u8 = 0x80;
/// Hours register bit 7 in 12-hour mode: PM.
pub const HOURS_PM: u8 = 0x80;

/// How long before a second rolls over UIP reads 1, in nanoseconds.
pub const UIP_WINDOW_NS: i128 = 244_000;

const NS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Memory-size and CPU-count bytes of the CMOS RAM.
const REG_BASE_MEM_LO: usize = 0x15;
const REG_BASE_MEM_HI: usize = 0x16;
const REG_EXT_MEM_LO: usize = 0x17;
const REG_EXT_MEM_HI: usize = 0x18;
const REG_EXT_MEM2_LO: usize = 0x30;
const REG_EXT_MEM2_HI: usize = 0x31;
const REG_MEM_16M_LO: usize = 0x34;
const REG_MEM_16M_HI: usize = 0x35;
const REG_MEM_4G_LO: usize = 0x5b;
const REG_MEM_4G_MID: usize = 0x5c;
const REG_MEM_4G_HI: usize = 0x5d;
const REG_CPU_COUNT: usize = 0x5f;

/// Registers holding the running time (alarms excluded).
const TIME_REGS: [u8; 8] = [
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_DAY_OF_WEEK,
    REG_DAY_OF_MONTH,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
];

/// The wall clock the RTC runs from. Returns the current time (UTC).
pub type Clock = Box<dyn Fn() -> SystemTime + Send>;

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Day of week, 1 = Sunday .. 7 = Saturday.
    pub weekday: u8,
}

/// Days since 1970-01-01 of the civil date `year-month-day` (proleptic
/// Gregorian calendar; Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of `days` since 1970-01-01 (inverse
/// of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // 0..=11
    // Both fit in u8 by the ranges above.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Number of days in `month` (1..=12) of `year`; 0 for an invalid month.
pub fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl CivilTime {
    /// The UTC time `secs` seconds after the Unix epoch (negative: before).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday (5 with Sunday = 1).
        let weekday = ((days + 4).rem_euclid(7) + 1) as u8;
        // All below 86400 / 3600 = 24, 60 and 60: they fit in u8.
        Self {
            year,
            month,
            day,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            weekday,
        }
    }

    /// Seconds since the Unix epoch. `weekday` is ignored.
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

fn to_bcd(v: u8) -> u8 {
    let v = v % 100;
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// Nanoseconds since the Unix epoch (negative before it).
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// `v` capped at 0xffff.
fn cap_u16(v: u64) -> u16 {
    v.min(0xffff) as u16
}

/// The MC146818 RTC with its 128 bytes of CMOS RAM.
pub struct Cmos {
    /// RAM; time registers hold the frozen time while SET is 1 and are
    /// otherwise computed on read.
    ram: [u8; CMOS_SIZE],
    /// Selected register (index port, NMI bit stripped).
    index: u8,
    /// Guest time minus host time, in nanoseconds.
    offset_ns: i128,
    clock: Clock,
}

impl std::fmt::Debug for Cmos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmos")
            .field("index", &self.index)
            .field("offset_ns", &self.offset_ns)
            .finish_non_exhaustive()
    }
}

impl Cmos {
    /// A CMOS/RTC running from the host wall clock, for a guest with
    /// `mem_below_4g` bytes of RAM below 4 GiB, `mem_above_4g` bytes above
    /// it and `cpu_count` vCPUs.
    ///
    /// The RAM is filled as QEMU's PC machine does:
    /// * 0x15/0x16: base memory in KiB, at most 640;
    /// * 0x17/0x18 and 0x30/0x31: KiB between 1 MiB and 64 MiB (capped at
    ///   0xffff);
    /// * 0x34/0x35: 64 KiB units between 16 MiB and 4 GiB (capped at
    ///   0xffff);
    /// * 0x5b/0x5c/0x5d: 64 KiB units above 4 GiB (24 bits, low byte first);
    /// * 0x5f: `cpu_count - 1`, or 0 when `cpu_count` is 0 or above 255 (as
    ///   QEMU does: firmware must then use fw_cfg `etc/boot-cpus`).
    ///
    /// Like QEMU, the 24-bit count above 4 GiB wraps at 1 TiB.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64, cpu_count: u32) -> Self {
        Self::with_clock(
            mem_below_4g,
            mem_above_4g,
            cpu_count,
            Box::new(SystemTime::now),
        )
    }

    /// Like [`Cmos::new`], with the host wall clock replaced by `clock`.
    pub fn with_clock(mem_below_4g: u64, mem_above_4g: u64, cpu_count: u32, clock: Clock) -> Self {
        let mut ram = [0u8; CMOS_SIZE];
        let mut set16 = |lo: usize, hi: usize, v: u16| {
            let [l, h] = v.to_le_bytes();
            ram[lo] = l;
            ram[hi] = h;
        };
        set16(
            REG_BASE_MEM_LO,
            REG_BASE_MEM_HI,
            cap_u16((mem_below_4g / KIB).min(640)),
        );
        let ext = cap_u16(mem_below_4g.saturating_sub(MIB) / KIB);
        set16(REG_EXT_MEM_LO, REG_EXT_MEM_HI, ext);
        set16(REG_EXT_MEM2_LO, REG_EXT_MEM2_HI, ext);
        let mem_16m = cap_u16(mem_below_4g.saturating_sub(16 * MIB) / (64 * KIB));
        set16(REG_MEM_16M_LO, REG_MEM_16M_HI, mem_16m);
        let [b0, b1, b2, ..] = (mem_above_4g / (64 * KIB)).to_le_bytes();
        ram[REG_MEM_4G_LO] = b0;
        ram[REG_MEM_4G_MID] = b1;
        ram[REG_MEM_4G_HI] = b2;
        ram[REG_CPU_COUNT] = u8::try_from(cpu_count).map_or(0, |c| c.saturating_sub(1));
        ram[usize::from(REG_STATUS_A)] = STATUS_A_DEFAULT;
        ram[usize::from(REG_STATUS_B)] = STATUS_B_DEFAULT;
        ram[usize::from(REG_STATUS_D)] = STATUS_D_VRT;
        Self {
            ram,
            index: 0,
            offset_ns: 0,
            clock,
        }
    }

    /// The byte of register `reg` (0..=127) as the guest would read it.
    pub fn read_register(&self, reg: u8) -> u8 {
        let reg = reg & 0x7f;
        match reg {
            REG_STATUS_A => {
                let mut a = self.ram[usize::from(REG_STATUS_A)] & !STATUS_A_UIP;
                if !self.set_mode() && self.update_in_progress() {
                    a |= STATUS_A_UIP;
                }
                a
            }
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D_VRT,
            r if TIME_REGS.contains(&r) && !self.set_mode() => {
                let now = self.guest_time();
                self.encode(&now)[usize::from(r)]
            }
            r => self.ram[usize::from(r)],
        }
    }

    /// The guest writes `value` to register `reg` (0..=127).
    pub fn write_register(&mut self, reg: u8, value: u8) {
        let reg = reg & 0x7f;
        match reg {
            REG_STATUS_A => {
                self.ram[usize::from(REG_STATUS_A)] = value & !STATUS_A_UIP;
            }
            REG_STATUS_B => self.write_status_b(value),
            REG_STATUS_C | REG_STATUS_D => {}
            r if TIME_REGS.contains(&r) => {
                if self.set_mode() {
                    self.ram[usize::from(r)] = value;
                } else {
                    // Takes effect at once, keeping the phase of the second.
                    let frac = self.guest_nanos().rem_euclid(NS_PER_SEC);
                    self.freeze();
                    self.ram[usize::from(r)] = value;
                    self.apply_registers(frac);
                }
            }
            r => self.ram[usize::from(r)] = value,
        }
    }

    /// The guest's current time (host clock plus the guest's offset).
    pub fn guest_time(&self) -> CivilTime {
        CivilTime::from_unix(self.guest_secs())
    }

    /// Guest time minus host time, in nanoseconds.
    pub fn offset_nanos(&self) -> i128 {
        self.offset_ns
    }

    fn status_b(&self) -> u8 {
        self.ram[usize::from(REG_STATUS_B)]
    }

    fn set_mode(&self) -> bool {
        self.status_b() & STATUS_B_SET != 0
    }

    fn guest_nanos(&self) -> i128 {
        unix_nanos((self.clock)()) + self.offset_ns
    }

    fn guest_secs(&self) -> i64 {
        // Any SystemTime plus a guest offset (years 0..=9999) fits.
        i64::try_from(self.guest_nanos().div_euclid(NS_PER_SEC)).unwrap_or(i64::MAX)
    }

    fn update_in_progress(&self) -> bool {
        self.guest_nanos().rem_euclid(NS_PER_SEC) >= NS_PER_SEC - UIP_WINDOW_NS
    }

    fn write_status_b(&mut self, value: u8) {
        let was_set = self.set_mode();
        let now_set = value & STATUS_B_SET != 0;
        if !was_set && now_set {
            // Freeze the time registers in the format being selected.
            self.ram[usize::from(REG_STATUS_B)] = value;
            self.freeze();
        } else if was_set && !now_set {
            // The guest's time starts a fresh second now.
            self.ram[usize::from(REG_STATUS_B)] = value;
            self.apply_registers(0);
        } else {
            self.ram[usize::from(REG_STATUS_B)] = value;
        }
    }

    /// Copies the current time into the time registers of the RAM.
    fn freeze(&mut self) {
        let regs = self.encode(&self.guest_time());
        for r in TIME_REGS {
            self.ram[usize::from(r)] = regs[usize::from(r)];
        }
    }

    /// Makes the time in the RAM's time registers the guest's time, `frac`
    /// nanoseconds into its second. Invalid register contents leave the
    /// clock as it was.
    fn apply_registers(&mut self, frac: i128) {
        match self.decode() {
            Some(t) => {
                let host = unix_nanos((self.clock)());
                self.offset_ns = i128::from(t.to_unix()) * NS_PER_SEC + frac - host;
            }
            None => {
                let regs: Vec<u8> = TIME_REGS
                    .iter()
                    .map(|&r| self.ram[usize::from(r)])
                    .collect();
                warn!(
                    "cmos: guest set an invalid time {regs:02x?} (status B {:#04x}); clock unchanged",
                    self.status_b()
                );
            }
        }
    }

    /// `t` in register format, indexed by register number.
    fn encode(&self, t: &CivilTime) -> [u8; CMOS_SIZE] {
        let b = self.status_b();
        let conv = |v: u8| {
            if b & STATUS_B_DM_BINARY != 0 {
                v
            } else {
                to_bcd(v)
            }
        };
        let hours = if b & STATUS_B_24H != 0 {
            conv(t.hour)
        } else {
            let h12 = match t.hour % 12 {
                0 => 12,
                h => h,
            };
            conv(h12) | if t.hour >= 12 { HOURS_PM } else { 0 }
        };
        let mut regs = [0u8; CMOS_SIZE];
        regs[usize::from(REG_SECONDS)] = conv(t.second);
        regs[usize::from(REG_MINUTES)] = conv(t.minute);
        regs[usize::from(REG_HOURS)] = hours;
        regs[usize::from(REG_DAY_OF_WEEK)] = conv(t.weekday);
        regs[usize::from(REG_DAY_OF_MONTH)] = conv(t.day);
        regs[usize::from(REG_MONTH)] = conv(t.month);
        regs[usize::from(REG_YEAR)] = conv(t.year.rem_euclid(100) as u8);
        regs[usize::from(REG_CENTURY)] = conv(t.year.div_euclid(100).rem_euclid(100) as u8);
        regs
    }

    /// The time in the RAM's time registers, if valid. The day of week is
    /// not checked: it follows from the date.
    fn decode(&self) -> Option<CivilTime> {
        let b = self.status_b();
        let conv = |v: u8| {
            if b & STATUS_B_DM_BINARY != 0 {
                Some(v)
            } else {
                from_bcd(v)
            }
        };
        let reg = |r: u8| self.ram[usize::from(r)];
        let hours = reg(REG_HOURS);
        let hour = if b & STATUS_B_24H != 0 {
            conv(hours).filter(|&h| h < 24)?
        } else {
            let h12 = conv(hours & !HOURS_PM).filter(|h| (1..=12).contains(h))?;
            h12 % 12 + if hours & HOURS_PM != 0 { 12 } else { 0 }
        };
        let second = conv(reg(REG_SECONDS)).filter(|&v| v < 60)?;
        let minute = conv(reg(REG_MINUTES)).filter(|&v| v < 60)?;
        let yy = conv(reg(REG_YEAR)).filter(|&v| v < 100)?;
        let century = conv(reg(REG_CENTURY)).filter(|&v| v < 100)?;
        let year = i64::from(century) * 100 + i64::from(yy);
        let month = conv(reg(REG_MONTH)).filter(|m| (1..=12).contains(m))?;
        let day =
            conv(reg(REG_DAY_OF_MONTH)).filter(|&d| d >= 1 && d <= days_in_month(year, month))?;
        let days = days_from_civil(year, month, day);
        Some(CivilTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        })
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 1 {
            if let Some(first) = data.first_mut() {
                *first = self.read_register(self.index);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        let Some(&value) = data.first() else {
            return Effects::none();
        };
        match offset {
            0 => self.index = value & 0x7f,
            1 => self.write_register(self.index, value),
            _ => {}
        }
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    const GIB: u64 = 1024 * MIB;

    /// A settable clock shared between the test and the device.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<SystemTime>>);

    impl FakeClock {
        /// A clock at `secs` + `nanos` after the epoch.
        fn at(secs: i64, nanos: u32) -> Self {
            let c = FakeClock(Arc::new(Mutex::new(UNIX_EPOCH)));
            c.set(secs, nanos);
            c
        }

        fn set(&self, secs: i64, nanos: u32) {
            let t = if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nanos)
            };
            *self.0.lock().unwrap() = t;
        }

        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }

        fn boxed(&self) -> Clock {
            let c = self.clone();
            Box::new(move || *c.0.lock().unwrap())
        }
    }

    /// 2026-11-21 13:45:07 UTC, a Saturday.
    const SAT_2026_11_21: i64 = 1_795_268_707;

    fn cmos_at(secs: i64) -> (Cmos, FakeClock) {
        let clock = FakeClock::at(secs, 0);
        (Cmos::with_clock(512 * MIB, 0, 1, clock.boxed()), clock)
    }

    /// Reads register `reg` through the ports, with the NMI-disable bit set
    /// in the index as many BIOSes do.
    fn inb(c: &mut Cmos, reg: u8) -> u8 {
        assert!(c.write(0, &[reg | 0x80]).is_empty());
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    fn outb(c: &mut Cmos, reg: u8, value: u8) {
        assert!(c.write(0, &[reg]).is_empty());
        assert!(c.write(1, &[value]).is_empty());
    }

    /// (sec, min, hour, wday, mday, month, year, century) as read.
    fn time_regs(c: &mut Cmos) -> [u8; 8] {
        TIME_REGS.map(|r| inb(c, r))
    }

    fn mem_bytes(below: u64, above: u64) -> Cmos {
        Cmos::new(below, above, 1)
    }

    fn word(c: &mut Cmos, lo: usize) -> u16 {
        u16::from_le_bytes([c.read_register(lo as u8), c.read_register(lo as u8 + 1)])
    }

    fn above_4g(c: &mut Cmos) -> u32 {
        u32::from_le_bytes([
            c.read_register(0x5b),
            c.read_register(0x5c),
            c.read_register(0x5d),
            0,
        ])
    }

    #[test]
    fn memory_bytes_512m() {
        let mut c = mem_bytes(512 * MIB, 0);
        assert_eq!(word(&mut c, 0x15), 640);
        assert_eq!([c.read_register(0x15), c.read_register(0x16)], [0x80, 0x02]);
        // (512 MiB - 1 MiB) / KiB = 523264: capped.
        assert_eq!(word(&mut c, 0x17), 0xffff);
        assert_eq!(word(&mut c, 0x30), 0xffff);
        // (512 - 16) MiB / 64 KiB = 7936.
        assert_eq!(word(&mut c, 0x34), 0x1f00);
        assert_eq!(above_4g(&mut c), 0);
        assert_eq!(c.read_register(0x5f), 0);
    }

    #[test]
    fn memory_bytes_3g() {
        // Q35 puts 2 GiB below 4 GiB when RAM >= 0xb000_0000.
        let mut c = mem_bytes(2 * GIB, GIB);
        assert_eq!(word(&mut c, 0x15), 640);
        assert_eq!(word(&mut c, 0x17), 0xffff);
        assert_eq!(word(&mut c, 0x30), 0xffff);
        assert_eq!(word(&mut c, 0x34), 0x7f00);
        assert_eq!(above_4g(&mut c), 0x4000);
        assert_eq!(
            [0x5b, 0x5c, 0x5d].map(|r| c.read_register(r)),
            [0x00, 0x40, 0x00]
        );
        // All 3 GiB below 4 GiB (i440fx-style split).
        let mut c = mem_bytes(3 * GIB, 0);
        assert_eq!(word(&mut c, 0x34), 0xbf00);
        assert_eq!(above_4g(&mut c), 0);
    }

    #[test]
    fn memory_bytes_8g() {
        let mut c = mem_bytes(2 * GIB, 6 * GIB);
        assert_eq!(word(&mut c, 0x34), 0x7f00);
        // 6 GiB / 64 KiB = 98304 = 0x018000, low byte first.
        assert_eq!(
            [0x5b, 0x5c, 0x5d].map(|r| c.read_register(r)),
            [0x00, 0x80, 0x01]
        );
    }

    #[test]
    fn memory_bytes_edge_cases() {
        // Less than 640 KiB, less than 1 MiB, less than 16 MiB.
        let mut c = mem_bytes(512 * KIB, 0);
        assert_eq!(word(&mut c, 0x15), 512);
        assert_eq!(word(&mut c, 0x17), 0);
        assert_eq!(word(&mut c, 0x34), 0);
        let mut c = mem_bytes(8 * MIB, 0);
        assert_eq!(word(&mut c, 0x15), 640);
        assert_eq!(word(&mut c, 0x17), 7 * 1024);
        assert_eq!(word(&mut c, 0x30), 7 * 1024);
        assert_eq!(word(&mut c, 0x34), 0);
        // 64 MiB: the extended-memory word just fits.
        let mut c = mem_bytes(64 * MIB, 0);
        assert_eq!(word(&mut c, 0x17), 63 * 1024);
        assert_eq!(word(&mut c, 0x34), 48 * 16);
        // The 16 MiB..4 GiB word is capped, the 24-bit one wraps like QEMU.
        let mut c = mem_bytes(u64::MAX, (1 << 40) + 3 * 64 * KIB);
        assert_eq!(word(&mut c, 0x15), 640);
        assert_eq!(word(&mut c, 0x34), 0xffff);
        assert_eq!(above_4g(&mut c), 3);
        let mut c = mem_bytes(0, (1 << 40) - 64 * KIB);
        assert_eq!(above_4g(&mut c), 0xff_ffff);
        assert_eq!(word(&mut c, 0x15), 0);
    }

    #[test]
    fn cpu_count_byte() {
        for (cpus, byte) in [(0, 0), (1, 0), (4, 3), (255, 254), (256, 0), (1000, 0)] {
            let c = Cmos::new(512 * MIB, 0, cpus);
            assert_eq!(c.read_register(0x5f), byte, "{cpus} CPUs");
        }
    }

    #[test]
    fn memory_bytes_are_guest_writable_ram() {
        let mut c = mem_bytes(512 * MIB, 0);
        outb(&mut c, 0x34, 0x12);
        assert_eq!(inb(&mut c, 0x34), 0x12);
        outb(&mut c, 0x7f, 0xa5);
        assert_eq!(inb(&mut c, 0x7f), 0xa5);
        outb(&mut c, 0x0f, 0x0a); // shutdown status byte
        assert_eq!(inb(&mut c, 0x0f), 0x0a);
    }

    #[test]
    fn civil_calendar_known_dates() {
        let t = CivilTime::from_unix(0);
        assert_eq!((t.year, t.month, t.day, t.weekday), (1970, 1, 1, 5));
        let t = CivilTime::from_unix(951_782_400);
        assert_eq!((t.year, t.month, t.day, t.hour), (2000, 2, 29, 0));
        assert_eq!(t.weekday, 3, "2000-02-29 was a Tuesday");
        let t = CivilTime::from_unix(SAT_2026_11_21);
        assert_eq!(
            t,
            CivilTime {
                year: 2026,
                month: 11,
                day: 21,
                hour: 13,
                minute: 45,
                second: 7,
                weekday: 7,
            }
        );
        let t = CivilTime::from_unix(946_684_799);
        assert_eq!(
            (
                t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday
            ),
            (1999, 12, 31, 23, 59, 59, 6)
        );
        let t = CivilTime::from_unix(946_684_800);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 1, 1, 7));
        let t = CivilTime::from_unix(-1);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.second, t.weekday),
            (1969, 12, 31, 23, 59, 4)
        );
        let t = CivilTime::from_unix(4_107_542_400);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2100, 3, 1, 2));
        let t = CivilTime::from_unix(-11_676_096_000);
        assert_eq!((t.year, t.month, t.day, t.weekday), (1600, 1, 1, 7));
        for secs in [0, -1, 951_782_400, SAT_2026_11_21, -11_676_096_000] {
            assert_eq!(CivilTime::from_unix(secs).to_unix(), secs);
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2000) && is_leap_year(2024) && is_leap_year(1600));
        assert!(!is_leap_year(1900) && !is_leap_year(2100) && !is_leap_year(2023));
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2026, 4), 30);
        assert_eq!(days_in_month(2026, 13), 0);
        // Day after 2100-02-28 is March 1st.
        let d = days_from_civil(2100, 2, 28);
        assert_eq!(civil_from_days(d + 1), (2100, 3, 1));
        assert_eq!(
            civil_from_days(days_from_civil(2000, 2, 28) + 1),
            (2000, 2, 29)
        );
    }

    #[test]
    fn calendar_walks_day_by_day() {
        // 1600-01-01 to 2400-12-31: every day follows the previous one and
        // the weekday cycles.
        let (mut y, mut m, mut d) = (1600i64, 1u8, 1u8);
        let mut wday = 7u8; // Saturday
        let mut days = days_from_civil(y, m, d);
        while y <= 2400 {
            assert_eq!(civil_from_days(days), (y, m, d));
            assert_eq!(days_from_civil(y, m, d), days);
            let t = CivilTime::from_unix(days * SECS_PER_DAY + 86_399);
            assert_eq!((t.year, t.month, t.day, t.weekday), (y, m, d, wday));
            days += 1;
            wday = wday % 7 + 1;
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn reads_bcd_24h_by_default() {
        let (mut c, _clock) = cmos_at(SAT_2026_11_21);
        assert_eq!(inb(&mut c, REG_STATUS_B), 0x02);
        assert_eq!(
            time_regs(&mut c),
            [0x07, 0x45, 0x13, 0x07, 0x21, 0x11, 0x26, 0x20]
        );
    }

    #[test]
    fn reads_binary_mode() {
        let (mut c, _clock) = cmos_at(SAT_2026_11_21);
        outb(&mut c, REG_STATUS_B, STATUS_B_24H | STATUS_B_DM_BINARY);
        assert_eq!(time_regs(&mut c), [7, 45, 13, 7, 21, 11, 26, 20]);
    }

    #[test]
    fn reads_12_hour_mode() {
        let (mut c, clock) = cmos_at(SAT_2026_11_21);
        // BCD, 12-hour: 13:45 is 1 PM.
        outb(&mut c, REG_STATUS_B, 0x00);
        assert_eq!(inb(&mut c, REG_HOURS), 0x81);
        // Binary, 12-hour.
        outb(&mut c, REG_STATUS_B, STATUS_B_DM_BINARY);
        assert_eq!(inb(&mut c, REG_HOURS), 0x81);
        let midnight = SAT_2026_11_21 - (13 * 3600 + 45 * 60 + 7);
        for (hour, bcd, bin) in [
            (0, 0x12, 12),    // 12 AM
            (1, 0x01, 1),     // 1 AM
            (11, 0x11, 11),   // 11 AM
            (12, 0x92, 0x8c), // 12 PM
            (23, 0x91, 0x8b), // 11 PM
        ] {
            clock.set(midnight + hour * 3600, 0);
            outb(&mut c, REG_STATUS_B, 0x00);
            assert_eq!(inb(&mut c, REG_HOURS), bcd, "{hour}h BCD");
            outb(&mut c, REG_STATUS_B, STATUS_B_DM_BINARY);
            assert_eq!(inb(&mut c, REG_HOURS), bin, "{hour}h binary");
        }
    }

    #[test]
    fn time_runs_with_the_host_clock() {
        let (mut c, clock) = cmos_at(946_684_799);
        assert_eq!(
            time_regs(&mut c),
            [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19]
        );
        clock.advance(Duration::from_millis(999));
        assert_eq!(inb(&mut c, REG_SECONDS), 0x59);
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            time_regs(&mut c),
            [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]
        );
        // 2000-02-28 23:59:59 + 1 s is the leap day.
        clock.set(951_782_399, 0);
        assert_eq!(
            time_regs(&mut c)[3..7],
            [0x02, 0x28, 0x02, 0x00],
            "Monday 28 Feb"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            time_regs(&mut c),
            [0x00, 0x00, 0x00, 0x03, 0x29, 0x02, 0x00, 0x20]
        );
    }

    #[test]
    fn status_registers_defaults() {
        let (mut c, _clock) = cmos_at(SAT_2026_11_21);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0x26);
        assert_eq!(inb(&mut c, REG_STATUS_B), 0x02);
        assert_eq!(inb(&mut c, REG_STATUS_C), 0x00);
        assert_eq!(inb(&mut c, REG_STATUS_D), 0x80);
    }

    #[test]
    fn status_c_and_d_ignore_writes_and_no_interrupt_flags() {
        let (mut c, clock) = cmos_at(SAT_2026_11_21);
        // Enable periodic, alarm and update interrupts: still nothing.
        outb(&mut c, REG_STATUS_B, 0x70 | STATUS_B_24H);
        assert_eq!(inb(&mut c, REG_STATUS_B), 0x72);
        outb(&mut c, REG_STATUS_C, 0xff);
        outb(&mut c, REG_STATUS_D, 0x00);
        clock.advance(Duration::from_secs(5));
        assert_eq!(inb(&mut c, REG_STATUS_C), 0);
        assert_eq!(inb(&mut c, REG_STATUS_C), 0);
        assert_eq!(inb(&mut c, REG_STATUS_D), 0x80);
    }

    #[test]
    fn status_a_uip_window_and_read_only_bit() {
        let clock = FakeClock::at(SAT_2026_11_21, 500_000_000);
        let mut c = Cmos::with_clock(512 * MIB, 0, 1, clock.boxed());
        assert_eq!(inb(&mut c, REG_STATUS_A), 0x26);
        clock.set(SAT_2026_11_21, 999_755_999);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0x26, "just before the window");
        clock.set(SAT_2026_11_21, 999_756_000);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0xa6, "244 µs before rollover");
        clock.set(SAT_2026_11_21, 999_999_999);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0xa6);
        clock.set(SAT_2026_11_21 + 1, 0);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0x26, "after rollover");
        // Writing UIP does not stick; the other bits do.
        outb(&mut c, REG_STATUS_A, 0xaf);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0x2f);
        // No updates, no UIP, while SET is 1.
        clock.set(SAT_2026_11_21, 999_900_000);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0xaf);
        outb(&mut c, REG_STATUS_B, STATUS_B_SET | STATUS_B_24H);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0x2f);
    }

    #[test]
    fn alarm_registers_are_stored() {
        let (mut c, clock) = cmos_at(SAT_2026_11_21);
        outb(&mut c, REG_SECONDS_ALARM, 0x30);
        outb(&mut c, REG_MINUTES_ALARM, 0xc0); // "don't care"
        outb(&mut c, REG_HOURS_ALARM, 0x07);
        clock.advance(Duration::from_secs(3600));
        outb(&mut c, REG_STATUS_B, 0x06);
        assert_eq!(inb(&mut c, REG_SECONDS_ALARM), 0x30);
        assert_eq!(inb(&mut c, REG_MINUTES_ALARM), 0xc0);
        assert_eq!(inb(&mut c, REG_HOURS_ALARM), 0x07);
        assert_eq!(c.offset_nanos(), 0);
    }

    /// Sets the time the way Linux's `mc146818_set_time` does.
    fn linux_set_time(c: &mut Cmos, regs: [u8; 8]) {
        let b = inb(c, REG_STATUS_B);
        let a = inb(c, REG_STATUS_A);
        outb(c, REG_STATUS_B, b | STATUS_B_SET);
        outb(c, REG_STATUS_A, a | 0x70); // divider reset
        for (r, v) in TIME_REGS.iter().zip(regs) {
            if *r != REG_DAY_OF_WEEK {
                outb(c, *r, v);
            }
        }
        outb(c, REG_STATUS_B, b);
        outb(c, REG_STATUS_A, a);
    }

    #[test]
    fn set_time_then_read() {
        let (mut c, clock) = cmos_at(SAT_2026_11_21);
        clock.set(SAT_2026_11_21, 400_000_000);
        outb(&mut c, REG_STATUS_B, STATUS_B_SET | STATUS_B_24H);
        // SET freezes the registers at the current time.
        assert_eq!(
            time_regs(&mut c),
            [0x07, 0x45, 0x13, 0x07, 0x21, 0x11, 0x26, 0x20]
        );
        // 2030-06-15 08:30:00.
        for (r, v) in [
            (REG_SECONDS, 0x00),
            (REG_MINUTES, 0x30),
            (REG_HOURS, 0x08),
            (REG_DAY_OF_MONTH, 0x15),
            (REG_MONTH, 0x06),
            (REG_YEAR, 0x30),
        ] {
            outb(&mut c, r, v);
        }
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            time_regs(&mut c),
            [0x00, 0x30, 0x08, 0x07, 0x15, 0x06, 0x30, 0x20],
            "frozen while SET (day of week as left)"
        );
        outb(&mut c, REG_STATUS_B, STATUS_B_24H);
        assert_eq!(
            time_regs(&mut c),
            [0x00, 0x30, 0x08, 0x07, 0x15, 0x06, 0x30, 0x20]
        );
        assert_eq!(c.guest_time().to_unix(), 1_907_742_600);
        // The new second started when SET was cleared.
        clock.advance(Duration::from_millis(999));
        assert_eq!(inb(&mut c, REG_SECONDS), 0x00);
        clock.advance(Duration::from_millis(1));
        assert_eq!(inb(&mut c, REG_SECONDS), 0x01);
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            time_regs(&mut c),
            [0x01, 0x31, 0x08, 0x07, 0x15, 0x06, 0x30, 0x20]
        );
        // The offset follows the host clock: jumps of the host clock show.
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(inb(&mut c, REG_DAY_OF_MONTH), 0x16);
        assert_eq!(inb(&mut c, REG_DAY_OF_WEEK), 0x01, "Sunday");
    }

    #[test]
    fn set_time_like_linux_in_binary_12h_mode() {
        let (mut c, clock) = cmos_at(SAT_2026_11_21);
        outb(&mut c, REG_STATUS_B, STATUS_B_DM_BINARY);
        // 1999-12-31 11:59:58 PM, century left as frozen (20) then set to 19.
        linux_set_time(&mut c, [58, 59, 0x8b, 0, 31, 12, 99, 19]);
        assert_eq!(inb(&mut c, REG_STATUS_B), STATUS_B_DM_BINARY);
        assert_eq!(inb(&mut c, REG_STATUS_A), 0x26);
        assert_eq!(c.guest_time().to_unix(), 946_684_798);
        assert_eq!(time_regs(&mut c), [58, 59, 0x8b, 6, 31, 12, 99, 19]);
        clock.advance(Duration::from_secs(2));
        assert_eq!(time_regs(&mut c), [0, 0, 12, 7, 1, 1, 0, 20]);
        // Back in BCD 24-hour the same moment reads the usual way.
        outb(&mut c, REG_STATUS_B, STATUS_B_24H);
        assert_eq!(
            time_regs(&mut c),
            [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]
        );
    }

    #[test]
    fn set_12_hour_noon_and_midnight() {
        let (mut c, _clock) = cmos_at(SAT_2026_11_21);
        outb(&mut c, REG_STATUS_B, 0x00); // BCD, 12-hour
        linux_set_time(&mut c, [0, 0, 0x12, 0, 0x21, 0x11, 0x26, 0x20]);
        assert_eq!(c.guest_time().hour, 0, "12 AM is midnight");
        linux_set_time(&mut c, [0, 0, 0x92, 0, 0x21, 0x11, 0x26, 0x20]);
        assert_eq!(c.guest_time().hour, 12, "12 PM is noon");
        linux_set_time(&mut c, [0, 0, 0x87, 0, 0x21, 0x11, 0x26, 0x20]);
        assert_eq!(c.guest_time().hour, 19);
    }

    #[test]
    fn invalid_time_leaves_the_clock_alone() {
        let (mut c, _clock) = cmos_at(SAT_2026_11_21);
        for regs in [
            [0, 0, 0, 0, 0x30, 0x02, 0x26, 0x20], // 30 February
            [0, 0, 0, 0, 0x29, 0x02, 0x26, 0x20], // 29 Feb 2026: no leap year
            [0, 0, 0, 0, 0x01, 0x13, 0x26, 0x20], // month 13
            [0, 0, 0x24, 0, 0x01, 0x01, 0x26, 0x20],
            [0x60, 0, 0, 0, 0x01, 0x01, 0x26, 0x20],
            [0, 0, 0, 0, 0x00, 0x01, 0x26, 0x20],    // day 0
            [0x0a, 0, 0, 0, 0x01, 0x01, 0x26, 0x20], // not BCD
            [0, 0, 0, 0, 0x01, 0x01, 0x26, 0xaa],
        ] {
            linux_set_time(&mut c, regs);
            assert_eq!(c.offset_nanos(), 0, "{regs:02x?}");
            assert_eq!(c.guest_time().to_unix(), SAT_2026_11_21);
        }
        // 12-hour mode rejects hour 0 and 13.
        outb(&mut c, REG_STATUS_B, 0x00);
        for hours in [0x00, 0x13, 0x80, 0x93] {
            linux_set_time(&mut c, [0, 0, hours, 0, 0x01, 0x01, 0x26, 0x20]);
            assert_eq!(c.offset_nanos(), 0, "hours {hours:#x}");
        }
        // Leap day of a leap year is fine.
        linux_set_time(&mut c, [0, 0, 0x12, 0, 0x29, 0x02, 0x28, 0x20]);
        let t = c.guest_time();
        assert_eq!((t.year, t.month, t.day, t.hour), (2028, 2, 29, 0));
    }

    #[test]
    fn write_while_running_takes_effect_at_once() {
        let clock = FakeClock::at(SAT_2026_11_21, 250_000_000);
        let mut c = Cmos::with_clock(512 * MIB, 0, 1, clock.boxed());
        outb(&mut c, REG_MINUTES, 0x10);
        assert_eq!(
            time_regs(&mut c),
            [0x07, 0x10, 0x13, 0x07, 0x21, 0x11, 0x26, 0x20]
        );
        assert_eq!(c.offset_nanos(), -35 * 60 * NS_PER_SEC);
        // The phase of the second is kept.
        clock.advance(Duration::from_millis(749));
        assert_eq!(inb(&mut c, REG_SECONDS), 0x07);
        clock.advance(Duration::from_millis(1));
        assert_eq!(inb(&mut c, REG_SECONDS), 0x08);
        // Writing the century moves the clock by 100 years.
        outb(&mut c, REG_CENTURY, 0x21);
        assert_eq!(c.guest_time().year, 2126);
        // An invalid write is ignored.
        outb(&mut c, REG_MONTH, 0x00);
        assert_eq!(c.guest_time().month, 11);
    }

    #[test]
    fn nmi_bit_is_ignored_for_addressing() {
        let (mut c, _clock) = cmos_at(SAT_2026_11_21);
        assert!(c.write(0, &[0x80 | 0x40]).is_empty());
        assert!(c.write(1, &[0x5a]).is_empty());
        assert!(c.write(0, &[0x40]).is_empty());
        let mut b = [0u8];
        c.read(1, &mut b);
        assert_eq!(b, [0x5a]);
        assert!(c.write(0, &[0x80 | REG_STATUS_D]).is_empty());
        c.read(1, &mut b);
        assert_eq!(b, [0x80]);
        assert_eq!(c.read_register(0x80 | 0x40), 0x5a);
    }

    #[test]
    fn odd_offsets_and_widths_never_panic() {
        let (mut c, clock) = cmos_at(SAT_2026_11_21);
        // The index port reads as 0xff.
        let mut b = [0u8];
        c.read(0, &mut b);
        assert_eq!(b, [0xff]);
        // Wide reads: first byte only, the rest 0xff.
        assert!(c.write(0, &[REG_STATUS_D]).is_empty());
        let mut wide = [0u8; 4];
        c.read(1, &mut wide);
        assert_eq!(wide, [0x80, 0xff, 0xff, 0xff]);
        // Wide writes: first byte only.
        assert!(c.write(0, &[0x40, 0x41, 0x42, 0x43]).is_empty());
        assert!(c.write(1, &[0x11, 0x22]).is_empty());
        assert_eq!(c.read_register(0x40), 0x11);
        assert_eq!(c.read_register(0x41), 0x00);
        // Everything else is harmless.
        for offset in [0, 1, 2, 3, 0x70, u64::MAX] {
            for len in 0..=8 {
                let mut data = vec![0u8; len];
                c.read(offset, &mut data);
                if offset >= 2 {
                    assert!(data.iter().all(|&b| b == 0xff), "{offset:#x}");
                }
                assert!(c.write(offset, &vec![0x55; len]).is_empty());
            }
        }
        // Any value to any register, in any mode, at odd times.
        for secs in [SAT_2026_11_21, -62_000_000_000, 0, 253_402_300_799] {
            clock.set(secs, 999_999_999);
            for b_value in [0x00, 0x02, 0x04, 0x06, 0x82, 0x86, 0xff] {
                for reg in 0..=255u8 {
                    for value in [0x00, 0x59, 0x99, 0xff] {
                        outb(&mut c, REG_STATUS_B, b_value);
                        outb(&mut c, reg, value);
                        inb(&mut c, reg);
                    }
                }
                outb(&mut c, REG_STATUS_B, b_value & !STATUS_B_SET);
                time_regs(&mut c);
            }
        }
    }

    #[test]
    fn real_clock_is_host_utc() {
        let mut c = Cmos::new(512 * MIB, 0, 1);
        let host = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let guest = c.guest_time().to_unix();
        assert!((guest - host).abs() <= 2, "guest {guest}, host {host}");
        let century = (CivilTime::from_unix(guest).year / 100) as u8;
        assert_eq!(inb(&mut c, REG_CENTURY), to_bcd(century));
        assert!(inb(&mut c, REG_CENTURY) >= 0x20);
    }
}
