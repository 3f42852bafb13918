//! PIO and MMIO buses shared by every vCPU thread.
//!
//! A bus maps non-overlapping address ranges to devices. Lookups take the
//! bus's read lock only (vCPUs never serialize on the bus itself); each
//! device has its own mutex, so two vCPUs touching different devices run in
//! parallel. The write lock is taken only to add or remove ranges, never
//! from inside a device callback (devices cannot reach the bus at all).
//!
//! Unclaimed reads return all-ones, as an open PC bus does; unclaimed
//! accesses are counted and otherwise ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use devices::{BusDevice, Effects};
use log::debug;

/// Bus errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// A range of length zero (or one that wraps around) was registered.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Start of the range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// The new range overlaps one already registered.
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    Overlap {
        /// Start of the new range.
        base: u64,
        /// Its length.
        len: u64,
        /// Start of the range it overlaps.
        other: u64,
    },
    /// Nothing is registered at that base.
    #[error("no device registered at {0:#x}")]
    NotFound(u64),
}

/// The most distinct ranges a bus remembers for statistics.
pub const HISTORY_MAX: usize = 4096;

/// A device as held by a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
    stats: Arc<RangeStats>,
}

/// The accesses one registered range took (for `--stats`); kept after the
/// range is removed, so a BAR the guest moved still shows its exits. A
/// range registered again with the same name, base and length (a BAR the
/// guest turned off and on) shares its counters.
#[derive(Debug)]
pub struct RangeStats {
    /// What the range is (`COM1`, `vfio 0000:01:10.0 BAR3 msix-table`).
    pub name: String,
    /// Where it was registered.
    pub base: u64,
    /// Its length.
    pub len: u64,
    /// Reads dispatched to it.
    pub reads: AtomicU64,
    /// Writes dispatched to it.
    pub writes: AtomicU64,
}

/// One address space (port I/O or MMIO).
#[derive(Default)]
pub struct Bus {
    name: &'static str,
    ranges: RwLock<BTreeMap<u64, Entry>>,
    /// By (name, base, length); at most [`HISTORY_MAX`] entries, so a guest
    /// that keeps moving a BAR cannot grow it without bound.
    history: Mutex<HashMap<(String, u64, u64), Arc<RangeStats>>>,
    unclaimed_reads: AtomicU64,
    unclaimed_writes: AtomicU64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.name)
            .field("unclaimed_reads", &self.unclaimed_reads)
            .field("unclaimed_writes", &self.unclaimed_writes)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// An empty bus; `name` appears in logs ("pio", "mmio").
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    /// The bus's name ("pio", "mmio").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Register `device`, called `name` in statistics, for
    /// `[base, base + len)`.
    pub fn insert(
        &self,
        base: u64,
        len: u64,
        name: impl Into<String>,
        device: SharedDevice,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        if let Some((&other, e)) = ranges.range(..end).next_back() {
            if other + e.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        let name = name.into();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name, base, len);
        let stats = match history.get(&key) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(RangeStats {
                    name: key.0.clone(),
                    base,
                    len,
                    reads: AtomicU64::new(0),
                    writes: AtomicU64::new(0),
                });
                if history.len() < HISTORY_MAX {
                    history.insert(key, s.clone());
                }
                s
            }
        };
        drop(history);
        ranges.insert(base, Entry { len, device, stats });
        Ok(())
    }

    /// The base of a registered range that overlaps `[base, base + len)`.
    pub fn overlapping(&self, base: u64, len: u64) -> Option<u64> {
        let end = base.checked_add(len)?;
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (&other, e) = ranges.range(..end).next_back()?;
        (other + e.len > base).then_some(other)
    }

    /// Remove the device registered at exactly `base`.
    pub fn remove(&self, base: u64) -> Result<SharedDevice, BusError> {
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        ranges
            .remove(&base)
            .map(|e| e.device)
            .ok_or(BusError::NotFound(base))
    }

    fn lookup(&self, addr: u64, len: usize) -> Option<(u64, SharedDevice, Arc<RangeStats>)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (&base, e) = ranges.range(..=addr).next_back()?;
        let end = addr.checked_add(len as u64)?;
        (end <= base + e.len).then(|| (base, e.device.clone(), e.stats.clone()))
    }

    /// Every range registered (the first [`HISTORY_MAX`] distinct ones,
    /// and those registered now), with the accesses it took, by address.
    pub fn range_stats(&self) -> Vec<Arc<RangeStats>> {
        let mut all: Vec<Arc<RangeStats>> = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        for e in ranges.values() {
            if !all.iter().any(|s| Arc::ptr_eq(s, &e.stats)) {
                all.push(e.stats.clone());
            }
        }
        all.sort_by_key(|s| (s.base, s.len));
        all
    }

    /// Dispatch a read; returns false (and fills all-ones) when unclaimed.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.lookup(addr, data.len()) {
            Some((base, dev, stats)) => {
                stats.reads.fetch_add(1, Ordering::Relaxed);
                lock(&dev).read(addr - base, data);
                true
            }
            None => {
                data.fill(0xff);
                let n = self.unclaimed_reads.fetch_add(1, Ordering::Relaxed);
                if n < 16 {
                    debug!(
                        "{}: unclaimed read of {} bytes at {addr:#x}",
                        self.name,
                        data.len()
                    );
                }
                false
            }
        }
    }

    /// Dispatch a write; returns the device's effects, or `None` (and
    /// drops the write) when unclaimed.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<Effects> {
        match self.lookup(addr, data.len()) {
            // The device lock and the bus read lock are released before
            // the caller applies the effects (which may need the write lock).
            Some((base, dev, stats)) => {
                stats.writes.fetch_add(1, Ordering::Relaxed);
                Some(lock(&dev).write(addr - base, data))
            }
            None => {
                let n = self.unclaimed_writes.fetch_add(1, Ordering::Relaxed);
                if n < 16 {
                    debug!("{}: unclaimed write of {data:02x?} at {addr:#x}", self.name);
                }
                None
            }
        }
    }

    /// (unclaimed reads, unclaimed writes) so far.
    pub fn unclaimed(&self) -> (u64, u64) {
        (
            self.unclaimed_reads.load(Ordering::Relaxed),
            self.unclaimed_writes.load(Ordering::Relaxed),
        )
    }
}

/// Lock a device, recovering from a poisoned mutex: a device that panicked
/// once must not take every later vCPU exit down with it.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

/// The VM's two address spaces.
#[derive(Debug)]
pub struct Buses {
    /// Port I/O (16-bit addresses).
    pub pio: Bus,
    /// Memory-mapped I/O.
    pub mmio: Bus,
}

impl Default for Buses {
    fn default() -> Self {
        Self {
            pio: Bus::new("pio"),
            mmio: Bus::new("mmio"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Stores the last write; reads return the offset.
    #[derive(Default)]
    pub struct Probe {
        pub writes: Vec<(u64, Vec<u8>)>,
    }
    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
            self.writes.push((offset, data.to_vec()));
            Effects::none()
        }
    }

    #[test]
    fn dispatch_offsets_and_unclaimed() {
        let bus = Bus::new("t");
        let probe = Arc::new(Mutex::new(Probe::default()));
        bus.insert(0x3f8, 8, "probe", probe.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert_eq!(bus.write(0x3f8, b"A"), Some(Effects::none()));
        assert_eq!(probe.lock().unwrap().writes, vec![(0, vec![b'A'])]);
        let mut w = [0u8; 4];
        assert!(!bus.read(0x400, &mut w));
        assert_eq!(w, [0xff; 4]);
        // An access straddling the end of a range is not claimed.
        assert!(!bus.read(0x3fe, &mut w));
        assert!(bus.write(0x10, &[1]).is_none());
        assert_eq!(bus.unclaimed(), (2, 1));
        let st = &bus.range_stats()[0];
        assert_eq!(
            (
                st.name.as_str(),
                st.reads.load(Ordering::Relaxed),
                st.writes.load(Ordering::Relaxed)
            ),
            ("probe", 1, 1)
        );
    }

    #[test]
    fn a_range_registered_again_shares_its_counters_and_history_is_bounded() {
        let bus = Bus::new("t");
        let probe = Arc::new(Mutex::new(Probe::default()));
        for _ in 0..3 {
            bus.insert(0x100, 4, "bar", probe.clone()).unwrap();
            let mut b = [0u8; 1];
            bus.read(0x100, &mut b);
            bus.remove(0x100).unwrap();
        }
        let st = bus.range_stats();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].reads.load(Ordering::Relaxed), 3);
        for i in 0..(HISTORY_MAX as u64 + 10) {
            bus.insert(0x1000 + 16 * i, 4, "moving", probe.clone())
                .unwrap();
            bus.remove(0x1000 + 16 * i).unwrap();
        }
        assert_eq!(bus.range_stats().len(), HISTORY_MAX);
    }

    #[test]
    fn overlaps_are_refused() {
        let bus = Bus::new("t");
        let d = || Arc::new(Mutex::new(Probe::default()));
        bus.insert(0x100, 0x10, "d", d()).unwrap();
        assert!(matches!(
            bus.insert(0x108, 4, "d", d()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0xf8, 9, "d", d()),
            Err(BusError::Overlap { .. })
        ));
        bus.insert(0xf8, 8, "d", d()).unwrap();
        bus.insert(0x110, 1, "d", d()).unwrap();
        assert!(matches!(
            bus.insert(0, 0, "d", d()),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, "d", d()),
            Err(BusError::InvalidRange { .. })
        ));
        bus.remove(0x100).unwrap();
        assert_eq!(bus.remove(0x100).err(), Some(BusError::NotFound(0x100)));
        bus.insert(0x104, 4, "d", d()).unwrap();
    }
}
