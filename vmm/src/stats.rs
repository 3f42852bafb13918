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
use std::sync::atomic::Ordering;

use kvm_ioctls::VcpuExit;

use crate::platform::Platform;

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
}

impl Stats {
    /// Gather the buses' counters and the mapped BAR pieces of `platform`.
    pub fn collect(platform: &Platform, vcpus: Vec<ExitStats>) -> Self {
        let mut devices = Vec::new();
        for bus in [&platform.buses.pio, &platform.buses.mmio] {
            for r in bus.range_stats() {
                let reads = r.reads.load(Ordering::Relaxed);
                let writes = r.writes.load(Ordering::Relaxed);
                if reads + writes > 0 || r.name.starts_with("vfio ") {
                    devices.push(DeviceLine {
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
            devices.push(DeviceLine {
                name: m.name,
                bus: None,
                base: m.base,
                len: m.len,
                reads: 0,
                writes: 0,
            });
        }
        Self { vcpus, devices }
    }

    /// The lines `--stats` prints.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, v) in self.vcpus.iter().enumerate() {
            out.push(format!(
                "tessera-stats: exits vcpu={i} total={} pio={} mmio={} other={}",
                v.total, v.pio, v.mmio, v.other
            ));
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
        };
        assert_eq!(
            s.lines(),
            vec![
                "tessera-stats: exits vcpu=0 total=2 pio=1 mmio=0 other=1",
                "tessera-stats: device=\"COM1\" kind=trap bus=pio base=0x3f8 len=0x8 reads=0 writes=1",
                "tessera-stats: device=\"vfio 0000:03:00.0 BAR2\" kind=mapped base=0x400000000 len=0x100000000",
            ]
        );
    }
}
