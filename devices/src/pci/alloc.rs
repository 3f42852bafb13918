//! BAR placement for the VMM (direct boot, hot-plug).
//!
//! [`BarAllocator`] hands out naturally aligned ranges from three windows
//! (I/O ports, 32-bit MMIO below 4 GiB, 64-bit MMIO above) using
//! vm-allocator's [`AddressAllocator`]. 64-bit BARs prefer the 64-bit
//! window and fall back to the 32-bit one; 32-bit BARs only use the 32-bit
//! window. Firmware (OVMF) places BARs itself; this is for when the VMM
//! does.

use std::collections::BTreeMap;

use thiserror::Error;
use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

use super::BarKind;

/// Errors placing BARs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// A window is invalid (wraps, or a 32-bit window above 4 GiB, or an
    /// I/O window above port 0xffff).
    #[error("invalid {window} window {base:#x}+{size:#x}")]
    BadWindow {
        /// Which window.
        window: &'static str,
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// The size is not a power of two or too small for the BAR kind.
    #[error("invalid size {size:#x} for a {kind:?} BAR")]
    BadSize {
        /// The BAR's kind.
        kind: BarKind,
        /// The rejected size.
        size: u64,
    },
    /// No window has room.
    #[error("no room for a {size:#x}-byte {kind:?} BAR")]
    Exhausted {
        /// The BAR's kind.
        kind: BarKind,
        /// Its size.
        size: u64,
    },
    /// `free` of a range that was not allocated.
    #[error("{base:#x}+{size:#x} was not allocated")]
    NotAllocated {
        /// Base passed to `free`.
        base: u64,
        /// Size passed to `free`.
        size: u64,
    },
}

#[derive(Debug)]
struct Window {
    allocator: AddressAllocator,
    /// Live allocations: base -> size.
    live: BTreeMap<u64, u64>,
}

impl Window {
    fn new(
        window: &'static str,
        (base, size): (u64, u64),
        limit: u64,
    ) -> Result<Option<Self>, AllocError> {
        if size == 0 {
            return Ok(None);
        }
        let bad = AllocError::BadWindow { window, base, size };
        match base.checked_add(size - 1) {
            Some(last) if last <= limit => {}
            _ => return Err(bad),
        }
        let allocator = AddressAllocator::new(base, size).map_err(|_| bad)?;
        Ok(Some(Self {
            allocator,
            live: BTreeMap::new(),
        }))
    }

    fn allocate(&mut self, size: u64) -> Option<u64> {
        let range = self
            .allocator
            .allocate(size, size, AllocPolicy::FirstMatch)
            .ok()?;
        self.live.insert(range.start(), size);
        Some(range.start())
    }

    fn contains(&self, base: u64) -> bool {
        (self.allocator.base()..=self.allocator.end()).contains(&base)
    }

    fn free(&mut self, base: u64, size: u64) -> bool {
        if self.live.get(&base) != Some(&size) {
            return false;
        }
        let Ok(range) = RangeInclusive::new(base, base + size - 1) else {
            return false;
        };
        if self.allocator.free(&range).is_err() {
            return false;
        }
        self.live.remove(&base);
        true
    }
}

/// Places BARs in the I/O, 32-bit and 64-bit MMIO windows; see the module
/// documentation.
#[derive(Debug)]
pub struct BarAllocator {
    io: Option<Window>,
    mmio32: Option<Window>,
    mmio64: Option<Window>,
}

impl BarAllocator {
    /// An allocator over the `(base, size)` windows; a size of zero means
    /// the window does not exist. The I/O window must lie below 0x10000
    /// and the 32-bit window below 4 GiB.
    pub fn new(io: (u64, u64), mmio32: (u64, u64), mmio64: (u64, u64)) -> Result<Self, AllocError> {
        Ok(Self {
            io: Window::new("I/O", io, 0xffff)?,
            mmio32: Window::new("32-bit MMIO", mmio32, 0xffff_ffff)?,
            mmio64: Window::new("64-bit MMIO", mmio64, u64::MAX)?,
        })
    }

    /// Place a BAR of `kind` and `size` bytes (a power of two, at least 4
    /// for I/O and 16 for memory) at an address aligned to its size.
    pub fn allocate(&mut self, kind: BarKind, size: u64) -> Result<u64, AllocError> {
        let min = if kind == BarKind::Io { 4 } else { 16 };
        if !size.is_power_of_two() || size < min {
            return Err(AllocError::BadSize { kind, size });
        }
        let found = match kind {
            BarKind::Io => self.io.as_mut().and_then(|w| w.allocate(size)),
            BarKind::Mem32 { .. } => self.mmio32.as_mut().and_then(|w| w.allocate(size)),
            BarKind::Mem64 { .. } => self
                .mmio64
                .as_mut()
                .and_then(|w| w.allocate(size))
                .or_else(|| self.mmio32.as_mut().and_then(|w| w.allocate(size))),
        };
        found.ok_or(AllocError::Exhausted { kind, size })
    }

    /// Give back a BAR placed by [`allocate`](Self::allocate) with the same
    /// `kind` and `size`.
    pub fn free(&mut self, kind: BarKind, base: u64, size: u64) -> Result<(), AllocError> {
        let (first, second) = match kind {
            BarKind::Io => (&mut self.io, None),
            BarKind::Mem32 { .. } => (&mut self.mmio32, None),
            BarKind::Mem64 { .. } => (&mut self.mmio64, Some(&mut self.mmio32)),
        };
        let freed = [Some(first), second]
            .into_iter()
            .flatten()
            .filter_map(Option::as_mut)
            .any(|w| w.contains(base) && w.free(base, size));
        if freed {
            Ok(())
        } else {
            Err(AllocError::NotAllocated { base, size })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM32: BarKind = BarKind::Mem32 {
        prefetchable: false,
    };
    const MEM64: BarKind = BarKind::Mem64 { prefetchable: true };

    fn alloc() -> BarAllocator {
        BarAllocator::new(
            (0xc000, 0x4000),
            (0xc000_0000, 0x1000_0000),
            (0x80_0000_0000, 0x10_0000_0000),
        )
        .unwrap()
    }

    #[test]
    fn natural_alignment() {
        let mut a = alloc();
        let io1 = a.allocate(BarKind::Io, 0x20).unwrap();
        let io2 = a.allocate(BarKind::Io, 0x100).unwrap();
        assert_eq!(io1, 0xc000);
        assert_eq!(io2 % 0x100, 0);
        assert!(io2 >= 0xc020);
        let m1 = a.allocate(MEM32, 0x1000).unwrap();
        let m2 = a.allocate(MEM32, 0x10_0000).unwrap();
        assert_eq!(m1, 0xc000_0000);
        assert_eq!(m2 % 0x10_0000, 0);
        assert!(m2 >= m1 + 0x1000 && m2 < 0xd000_0000);
        let big = a.allocate(MEM64, 1 << 34).unwrap();
        assert_eq!(big % (1 << 34), 0);
        assert!(big >= 0x80_0000_0000);
    }

    #[test]
    fn mem64_falls_back_to_32bit_window() {
        let mut a = BarAllocator::new((0, 0), (0xe000_0000, 0x10_0000), (0, 0)).unwrap();
        let b = a.allocate(MEM64, 0x1000).unwrap();
        assert_eq!(b, 0xe000_0000);
        assert_eq!(
            a.allocate(BarKind::Io, 4),
            Err(AllocError::Exhausted {
                kind: BarKind::Io,
                size: 4
            })
        );
        a.free(MEM64, b, 0x1000).unwrap();
        assert_eq!(a.allocate(MEM64, 0x1000).unwrap(), 0xe000_0000);
    }

    #[test]
    fn exhaustion_and_free() {
        let mut a = alloc();
        let first = a.allocate(MEM32, 0x800_0000).unwrap();
        let second = a.allocate(MEM32, 0x800_0000).unwrap();
        assert_ne!(first, second);
        assert!(matches!(
            a.allocate(MEM32, 16),
            Err(AllocError::Exhausted { .. })
        ));
        assert_eq!(
            a.free(MEM32, first, 0x1000),
            Err(AllocError::NotAllocated {
                base: first,
                size: 0x1000
            })
        );
        a.free(MEM32, first, 0x800_0000).unwrap();
        assert!(a.free(MEM32, first, 0x800_0000).is_err());
        assert_eq!(a.allocate(MEM32, 16).unwrap(), first);
    }

    #[test]
    fn bad_inputs() {
        let mut a = alloc();
        assert!(matches!(
            a.allocate(MEM32, 0x3000),
            Err(AllocError::BadSize { .. })
        ));
        assert!(matches!(
            a.allocate(MEM32, 8),
            Err(AllocError::BadSize { .. })
        ));
        assert!(matches!(
            a.allocate(BarKind::Io, 0),
            Err(AllocError::BadSize { .. })
        ));
        assert!(BarAllocator::new((0xf000, 0x2000), (0, 0), (0, 0)).is_err());
        assert!(BarAllocator::new((0, 0), (0xf000_0000, 0x2000_0000), (0, 0)).is_err());
        assert!(BarAllocator::new((0, 0), (0, 0), (u64::MAX, 2)).is_err());
        assert!(a.free(BarKind::Io, 0x1234, 4).is_err());
    }
}
