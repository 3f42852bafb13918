//! Where a guest's VM exits go: per-vCPU counts by kind, and per device
//! (every bus range counts the accesses dispatched to it).
//!
//! `tessera run --stats` prints them at exit, one line each, so tests can
//! check claims such as "a passed-through BAR takes no exits":
//!
//! ```text
//! tessera-stats: exits vcpu=0 total=61234 pio=20011 mmio=412 other=40811
//! tessera-stats: device="COM1" kind=trap bus=pio base=0x3f8 len=0x8 reads=120 writes=3400
//! tessera-stats: device="vfio 0000:01:10.0 BAR3 msix-table" kind=trap bus=mmio base=0xfe002000 len=0x1000 reads=0 writes=12
//! tessera-stats: device="vfio 0000:03:00.0 BAR2" kind=mapped base=0x400000000 len=0x100000000
//! ```
//!
//! Trapped ranges are listed when they took an exit, and every trapped
//! piece of a passed-through BAR is listed even with none; pieces mapped
//! as guest memory cannot exit and are listed as `kind=mapped`. With debug
//! logging the vCPU threads also log their most frequent exit addresses.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kvm_ioctls::VcpuExit;

use crate::platform::Platform;

static STARTED: OnceLock<Instant> = OnceLock::new();
static FIRST_ENTRY: OnceLock<(Instant, SystemTime)> = OnceLock::new();

/// Note when tessera started working (`vmm::run`).
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// Note the first entry of any vCPU into the guest (only the first counts).
pub fn mark_first_entry() {
    FIRST_ENTRY.get_or_init(|| (Instant::now(), SystemTime::now()));
}

/// (milliseconds from [`mark_start`] to the first vCPU entry, the entry's
/// wall-clock time in microseconds since the epoch).
pub fn first_entry() -> Option<(f64, u128)> {
    let (at, wall) = *FIRST_ENTRY.get()?;
    let ms = STARTED
        .get()
        .map_or(0.0, |s| at.duration_since(*s).as_secs_f64() * 1000.0);
    let us = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    Some((ms, us))
}

/// One vCPU's exits.
#[derive(Debug, Default, Clone)]
pub struct ExitStats {
    /// All exits.
    pub total: u64,
    /// Port I/O exits.
    pub pio: u64,
    /// MMIO exits.
    pub mmio: u64,
    /// Everything else (HLT, interrupt windows, system events ...).
    pub other: u64,
    /// By (kind, port or 4 KiB page), only with debug logging.
    by_address: Option<HashMap<(&'static str, u64), u64>>,
}

impl ExitStats {
    /// Counters; per-address ones when `detailed`.
    pub fn new(detailed: bool) -> Self {
        Self {
            by_address: detailed.then(HashMap::new),
            ..Default::default()
        }
    }

    /// Count one exit.
    pub fn count(&mut self, exit: &VcpuExit<'_>) {
        self.total += 1;
        let key = match exit {
            VcpuExit::IoIn(port, _) => {
                self.pio += 1;
                ("pio-in", u64::from(*port))
            }
            VcpuExit::IoOut(port, _) => {
                self.pio += 1;
                ("pio-out", u64::from(*port))
            }
            VcpuExit::MmioRead(addr, _) => {
                self.mmio += 1;
                ("mmio-read", *addr & !0xfff)
            }
            VcpuExit::MmioWrite(addr, _) => {
                self.mmio += 1;
                ("mmio-write", *addr & !0xfff)
            }
            VcpuExit::Hlt => {
                self.other += 1;
                ("hlt", 0)
            }
            _ => {
                self.other += 1;
                ("other", 0)
            }
        };
        if let Some(by) = &mut self.by_address {
            *by.entry(key).or_default() += 1;
        }
    }

    /// Log the most frequent exit addresses (debug logging).
    pub fn log(&self, cpu: u32) {
        let Some(by) = &self.by_address else { return };
        let mut v: Vec<_> = by.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = v
            .iter()
            .take(12)
            .map(|((kind, addr), n)| format!("{kind} {addr:#x}: {n}"))
            .collect();
        log::debug!(
            "vCPU {cpu}: {} exits; most frequent (MMIO by 4 KiB page):\n{}",
            self.total,
            top.join("\n")
        );
    }
}

/// A bus range's accesses, or a mapped piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLine {
    /// The range's name.
    pub name: String,
    /// `Some("pio"|"mmio")` for a trapped range, `None` for mapped memory.
    pub bus: Option<&'static str>,
    /// Base address.
    pub base: u64,
    /// Length.
    pub len: u64,
    /// Reads dispatched.
    pub reads: u64,
    /// Writes dispatched.
    pub writes: u64,
}

/// Everything `--stats` prints.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Per vCPU.
    pub vcpus: Vec<ExitStats>,
    /// Per device range.
    pub devices: Vec<DeviceLine>,
    /// Writes replayed from the coalesced ring (no exit each), when it is
    /// in use.
    pub coalesced: Option<u64>,
}

impl Stats {
    /// Gather the buses' counters and the mapped BAR pieces of `platform`.
    /// A range registered several times at the same place (a BAR the guest
    /// turned off and on again while sizing it) is one line with the sum.
    pub fn collect(platform: &Platform, vcpus: Vec<ExitStats>) -> Self {
        let mut devices: Vec<DeviceLine> = Vec::new();
        let mut add = |line: DeviceLine| match devices.iter_mut().find(|d| {
            (d.name.as_str(), d.bus, d.base, d.len)
                == (line.name.as_str(), line.bus, line.base, line.len)
        }) {
            Some(d) => {
                d.reads += line.reads;
                d.writes += line.writes;
            }
            None => devices.push(line),
        };
        for bus in [&platform.buses.pio, &platform.buses.mmio] {
            for r in bus.range_stats() {
                let reads = r.reads.load(Ordering::Relaxed);
                let writes = r.writes.load(Ordering::Relaxed);
                if reads + writes > 0 || r.name.starts_with("vfio ") || r.name.starts_with("virtio")
                {
                    add(DeviceLine {
                        name: r.name.clone(),
                        bus: Some(bus.name()),
                        base: r.base,
                        len: r.len,
                        reads,
                        writes,
                    });
                }
            }
        }
        for m in platform.mapped_history() {
            add(DeviceLine {
                name: m.name,
                bus: None,
                base: m.base,
                len: m.len,
                reads: 0,
                writes: 0,
            });
        }
        Self {
            vcpus,
            devices,
            coalesced: platform.coalesced_writes(),
        }
    }

    /// The lines `--stats` prints.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((ms, us)) = first_entry() {
            out.push(format!(
                "tessera-stats: startup first_vcpu_entry_ms={ms:.1} first_vcpu_entry_epoch_us={us}"
            ));
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            out.push(format!(
                "tessera-stats: exits vcpu={i} total={} pio={} mmio={} other={}",
                v.total, v.pio, v.mmio, v.other
            ));
        }
        if let Some(n) = self.coalesced {
            out.push(format!("tessera-stats: coalesced writes={n}"));
        }
        for d in &self.devices {
            out.push(match d.bus {
                Some(bus) => format!(
                    "tessera-stats: device=\"{}\" kind=trap bus={bus} base={:#x} len={:#x} reads={} writes={}",
                    d.name, d.base, d.len, d.reads, d.writes
                ),
                None => format!(
                    "tessera-stats: device=\"{}\" kind=mapped base={:#x} len={:#x}",
                    d.name, d.base, d.len
                ),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_documented_shape() {
        let mut v = ExitStats::new(false);
        v.count(&VcpuExit::Hlt);
        v.count(&VcpuExit::IoOut(0x3f8, &[1]));
        let s = Stats {
            vcpus: vec![v],
            devices: vec![
                DeviceLine {
                    name: "COM1".into(),
                    bus: Some("pio"),
                    base: 0x3f8,
                    len: 8,
                    reads: 0,
                    writes: 1,
                },
                DeviceLine {
                    name: "vfio 0000:03:00.0 BAR2".into(),
                    bus: None,
                    base: 0x4_0000_0000,
                    len: 0x1_0000_0000,
                    reads: 0,
                    writes: 0,
                },
            ],
            coalesced: Some(30700),
        };
        assert_eq!(
            s.lines(),
            vec![
                "tessera-stats: exits vcpu=0 total=2 pio=1 mmio=0 other=1",
                "tessera-stats: coalesced writes=30700",
                "tessera-stats: device=\"COM1\" kind=trap bus=pio base=0x3f8 len=0x8 reads=0 writes=1",
                "tessera-stats: device=\"vfio 0000:03:00.0 BAR2\" kind=mapped base=0x400000000 len=0x100000000",
            ]
        );
    }
}
