//! Guest physical address map.
//!
//! The map follows QEMU's Q35 machine so that stock OVMF, which probes the
//! memory size through fw_cfg and assumes Q35's holes, agrees with it:
//!
//! ```text
//! 0x0000_0000 ..             low RAM (direct boot puts its tables in the first MiB)
//! low_ram_end .. 4 GiB       32-bit MMIO hole: PCIe ECAM, PCI BARs, IOAPIC,
//!                            HPET, LAPIC, firmware flash (top 4 MiB)
//! 4 GiB       .. end_of_ram  high RAM, only when RAM does not fit below the hole
//! ```
//!
//! The QEMU rule (`hw/i386/pc_q35.c`): if the RAM size is at least
//! `0xb000_0000`, low RAM is cut at 2 GiB and the rest continues at 4 GiB;
//! otherwise all RAM sits below the hole. Either way low RAM ends at or below
//! [`PCIE_ECAM_DEFAULT_START`].

use thiserror::Error;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;
/// Size of a 4 KiB page, the granularity of every RAM region.
pub const PAGE_SIZE: u64 = 0x1000;

// ---------------------------------------------------------------------------
// Low memory used by direct kernel boot (Linux 64-bit boot protocol and PVH).
// ---------------------------------------------------------------------------

/// Boot GDT (four 8-byte descriptors, see `regs::BOOT_GDT`).
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (empty: any exception before the kernel installs its own is fatal).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`; its memory map entries may follow, up to [`ZERO_PAGE_START`].
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux `boot_params` ("zero page") for the 64-bit boot protocol.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for direct boot (grows down, below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 table of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: u64 = 0xa000;
/// First of four page directories (0xb000..0xf000) mapping 0..4 GiB with 2 MiB pages.
pub const PDE_START: u64 = 0xb000;
/// Number of page directories after [`PDE_START`].
pub const PDE_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line (including the terminating NUL) that fits at [`CMDLINE_START`].
pub const CMDLINE_MAX_SIZE: u64 = 0x10000;
/// Start of the extended BIOS data area; low RAM usable by the guest ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// End of conventional memory (start of the legacy VGA hole).
pub const LEGACY_RAM_END: u64 = 0xa0000;
/// Start of the area holding the RSDP and ACPI tables for direct boot.
pub const ACPI_AREA_START: u64 = 0xe0000;
/// End (exclusive) of the ACPI area.
pub const ACPI_AREA_END: u64 = 0x100000;
/// Start of RAM above the first MiB; the kernel is loaded here.
pub const HIMEM_START: u64 = 0x100000;

// ---------------------------------------------------------------------------
// Platform MMIO below 4 GiB.
// ---------------------------------------------------------------------------

/// Where QEMU's Q35 puts the PCIe ECAM (MCH PCIEXBAR) at reset; the reason for
/// the `0xb000_0000` threshold in the RAM split. Firmware may move it (edk2
/// since stable202305 programs 0xe000_0000).
pub const PCIE_ECAM_DEFAULT_START: u64 = 0xb000_0000;
/// Size of the ECAM window for 256 buses.
pub const PCIE_ECAM_SIZE: u64 = 256 * MIB;
/// IOAPIC register window.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Size of the IOAPIC register window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// HPET register window.
pub const HPET_START: u64 = 0xfed0_0000;
/// Size of the HPET register window.
pub const HPET_SIZE: u64 = 0x400;
/// Local APIC register window.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Size of the local APIC register window.
pub const LAPIC_SIZE: u64 = 0x1000;
/// Largest firmware flash image; the flash ends at 4 GiB.
pub const FLASH_SIZE_MAX: u64 = 4 * MIB;
/// Lowest address of the firmware flash region.
pub const FLASH_START: u64 = MMIO32_HOLE_END - FLASH_SIZE_MAX;
/// End (exclusive) of the 32-bit MMIO hole.
pub const MMIO32_HOLE_END: u64 = 1 << 32;

// ---------------------------------------------------------------------------
// RAM sizing.
// ---------------------------------------------------------------------------

/// Smallest RAM size accepted.
pub const MIN_RAM_SIZE: u64 = 16 * MIB;
/// Highest guest-physical address (exclusive) RAM may reach: 64 TiB, what
/// OVMF accepts with 4-level paging and below every current host's MAXPHYADDR.
pub const MAX_PHYS_ADDR: u64 = 1 << 46;
/// RAM sizes at or above this split at [`LOW_RAM_SPLIT`] (QEMU Q35 rule).
pub const LOW_RAM_SPLIT_THRESHOLD: u64 = 0xb000_0000;
/// Where low RAM ends when it is split.
pub const LOW_RAM_SPLIT: u64 = 0x8000_0000;
/// Where high RAM starts.
pub const HIGH_RAM_START: u64 = MMIO32_HOLE_END;

// The fixed regions must not overlap; checked at compile time.
const _: () = {
    assert!(BOOT_GDT_START + 4 * 8 <= BOOT_IDT_START);
    assert!(BOOT_IDT_START + 8 <= PVH_INFO_START);
    assert!(PVH_INFO_START + PAGE_SIZE <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + PAGE_SIZE <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_START);
    assert!(PML4_START + PAGE_SIZE == PDPTE_START);
    assert!(PDPTE_START + PAGE_SIZE == PDE_START);
    assert!(PDE_START + PDE_COUNT * PAGE_SIZE <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE <= EBDA_START);
    assert!(EBDA_START < LEGACY_RAM_END);
    assert!(LEGACY_RAM_END <= ACPI_AREA_START);
    assert!(ACPI_AREA_END <= HIMEM_START);
    assert!(HIMEM_START < MIN_RAM_SIZE);
    assert!(LOW_RAM_SPLIT_THRESHOLD <= PCIE_ECAM_DEFAULT_START);
    assert!(PCIE_ECAM_DEFAULT_START + PCIE_ECAM_SIZE <= IOAPIC_START);
    assert!(IOAPIC_START + IOAPIC_SIZE <= HPET_START);
    assert!(HPET_START + HPET_SIZE <= LAPIC_START);
    assert!(LAPIC_START + LAPIC_SIZE <= FLASH_START);
    assert!(FLASH_START == 0xffc0_0000);
};

/// Errors building a [`MemoryLayout`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// The RAM size is below [`MIN_RAM_SIZE`].
    #[error("RAM size {size:#x} bytes is below the minimum of {min:#x} bytes")]
    RamTooSmall {
        /// Requested RAM size.
        size: u64,
        /// Smallest accepted size.
        min: u64,
    },
    /// The RAM would end above [`MAX_PHYS_ADDR`].
    #[error("RAM size {size:#x} bytes would end at {end:#x}, above the physical limit {limit:#x}")]
    RamTooLarge {
        /// Requested RAM size.
        size: u64,
        /// Where RAM would end (exclusive), saturated on overflow.
        end: u64,
        /// Highest permitted end.
        limit: u64,
    },
    /// The RAM size is not a whole number of pages.
    #[error("RAM size {size:#x} bytes is not a multiple of the page size {page:#x}")]
    RamUnaligned {
        /// Requested RAM size.
        size: u64,
        /// Required alignment.
        page: u64,
    },
}

/// Guest physical memory map for a given RAM size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    ram_size: u64,
    low_ram_end: u64,
}

impl MemoryLayout {
    /// Lays out `ram_size` bytes of RAM following QEMU's Q35 rule.
    ///
    /// Fails if the size is below [`MIN_RAM_SIZE`], not page aligned, or
    /// would put RAM above [`MAX_PHYS_ADDR`].
    pub fn new(ram_size: u64) -> Result<MemoryLayout, LayoutError> {
        if ram_size < MIN_RAM_SIZE {
            return Err(LayoutError::RamTooSmall {
                size: ram_size,
                min: MIN_RAM_SIZE,
            });
        }
        if ram_size % PAGE_SIZE != 0 {
            return Err(LayoutError::RamUnaligned {
                size: ram_size,
                page: PAGE_SIZE,
            });
        }
        let low_ram_end = if ram_size >= LOW_RAM_SPLIT_THRESHOLD {
            LOW_RAM_SPLIT
        } else {
            ram_size
        };
        let layout = MemoryLayout {
            ram_size,
            low_ram_end,
        };
        let end = match layout.high_ram() {
            None => Some(low_ram_end),
            Some((start, size)) => start.checked_add(size),
        };
        match end {
            Some(end) if end <= MAX_PHYS_ADDR => Ok(layout),
            _ => Err(LayoutError::RamTooLarge {
                size: ram_size,
                end: end.unwrap_or(u64::MAX),
                limit: MAX_PHYS_ADDR,
            }),
        }
    }

    /// Total RAM in bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// End (exclusive) of RAM below 4 GiB; also where the 32-bit MMIO hole starts.
    pub fn low_ram_end(&self) -> u64 {
        self.low_ram_end
    }

    /// RAM above 4 GiB as `(start, size)`, if any.
    pub fn high_ram(&self) -> Option<(u64, u64)> {
        let size = self.ram_size - self.low_ram_end;
        (size > 0).then_some((HIGH_RAM_START, size))
    }

    /// End (exclusive) of the highest RAM range.
    pub fn ram_end(&self) -> u64 {
        self.high_ram()
            .map_or(self.low_ram_end, |(start, size)| start + size)
    }

    /// Every RAM range as `(start, size)`, ascending: what to mmap as guest memory.
    pub fn ram_regions(&self) -> Vec<(u64, u64)> {
        let mut regions = vec![(0, self.low_ram_end)];
        regions.extend(self.high_ram());
        regions
    }

    /// The 32-bit MMIO hole as `(start, size)`: `[low_ram_end, 4 GiB)`.
    ///
    /// Note the second element is a size, like every other pair here.
    pub fn mmio32_hole(&self) -> (u64, u64) {
        (self.low_ram_end, MMIO32_HOLE_END - self.low_ram_end)
    }

    /// Highest RAM address plus one (above 4 GiB when there is high RAM).
    pub fn end_of_ram(&self) -> u64 {
        match self.high_ram() {
            Some((start, size)) => start + size,
            None => self.low_ram_end,
        }
    }

    /// Lowest address usable for a 64-bit MMIO window: the end of RAM (at
    /// least 4 GiB), rounded up to 1 GiB.
    pub fn mmio64_start(&self) -> u64 {
        self.end_of_ram().max(MMIO32_HOLE_END).next_multiple_of(GIB)
    }

    /// Whether `[addr, addr + len)` lies entirely inside guest RAM.
    pub fn is_ram(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.ram_regions()
            .iter()
            .any(|&(start, size)| addr >= start && end <= start + size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_is_all_low() {
        let l = MemoryLayout::new(512 * MIB).unwrap();
        assert_eq!(l.ram_size(), 512 * MIB);
        assert_eq!(l.low_ram_end(), 512 * MIB);
        assert_eq!(l.high_ram(), None);
        assert_eq!(l.ram_regions(), vec![(0, 512 * MIB)]);
        assert_eq!(l.mmio32_hole(), (512 * MIB, 4 * GIB - 512 * MIB));
        assert_eq!(l.end_of_ram(), 512 * MIB);
        assert_eq!(l.mmio64_start(), 4 * GIB);
    }

    #[test]
    fn just_below_threshold_stays_low() {
        let size = LOW_RAM_SPLIT_THRESHOLD - PAGE_SIZE;
        let l = MemoryLayout::new(size).unwrap();
        assert_eq!(l.low_ram_end(), size);
        assert_eq!(l.high_ram(), None);
        // Low RAM never reaches into the default ECAM window.
        assert!(l.low_ram_end() <= PCIE_ECAM_DEFAULT_START);
    }

    #[test]
    fn threshold_splits_at_2g() {
        let l = MemoryLayout::new(LOW_RAM_SPLIT_THRESHOLD).unwrap();
        assert_eq!(l.low_ram_end(), 2 * GIB);
        assert_eq!(
            l.high_ram(),
            Some((4 * GIB, LOW_RAM_SPLIT_THRESHOLD - 2 * GIB))
        );
    }

    #[test]
    fn large_ram_splits() {
        let l = MemoryLayout::new(8 * GIB).unwrap();
        assert_eq!(l.low_ram_end(), 2 * GIB);
        assert_eq!(l.high_ram(), Some((4 * GIB, 6 * GIB)));
        assert_eq!(l.ram_regions(), vec![(0, 2 * GIB), (4 * GIB, 6 * GIB)]);
        assert_eq!(l.mmio32_hole(), (2 * GIB, 2 * GIB));
        assert_eq!(l.end_of_ram(), 10 * GIB);
        assert_eq!(l.mmio64_start(), 10 * GIB);
        let total: u64 = l.ram_regions().iter().map(|r| r.1).sum();
        assert_eq!(total, 8 * GIB);
    }

    #[test]
    fn mmio64_start_is_gib_aligned() {
        let l = MemoryLayout::new(4 * GIB + 4 * MIB).unwrap();
        assert_eq!(l.end_of_ram(), 6 * GIB + 4 * MIB);
        assert_eq!(l.mmio64_start(), 7 * GIB);
    }

    #[test]
    fn rejects_too_small() {
        let err = MemoryLayout::new(MIN_RAM_SIZE - PAGE_SIZE).unwrap_err();
        assert_eq!(
            err,
            LayoutError::RamTooSmall {
                size: MIN_RAM_SIZE - PAGE_SIZE,
                min: MIN_RAM_SIZE
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("0xfff000"), "{msg}");
        assert!(msg.contains("0x1000000"), "{msg}");
        assert!(MemoryLayout::new(MIN_RAM_SIZE).is_ok());
    }

    #[test]
    fn rejects_unaligned() {
        let err = MemoryLayout::new(64 * MIB + 1).unwrap_err();
        assert!(matches!(err, LayoutError::RamUnaligned { .. }));
        assert!(err.to_string().contains("0x4000001"));
    }

    #[test]
    fn rejects_too_large() {
        // High RAM starts at 4 GiB and low RAM holds 2 GiB, so the largest
        // size that fits is MAX_PHYS_ADDR - 2 GiB.
        let max = MAX_PHYS_ADDR - 2 * GIB;
        assert_eq!(MemoryLayout::new(max).unwrap().end_of_ram(), MAX_PHYS_ADDR);
        let err = MemoryLayout::new(max + PAGE_SIZE).unwrap_err();
        assert_eq!(
            err,
            LayoutError::RamTooLarge {
                size: max + PAGE_SIZE,
                end: MAX_PHYS_ADDR + PAGE_SIZE,
                limit: MAX_PHYS_ADDR
            }
        );
        assert!(err.to_string().contains("0x400000000000"));
        // Overflowing sizes are rejected rather than wrapping.
        let err = MemoryLayout::new(u64::MAX - 0xfff).unwrap_err();
        assert!(matches!(
            err,
            LayoutError::RamTooLarge { end: u64::MAX, .. }
        ));
    }

    #[test]
    fn is_ram_checks_both_regions() {
        let l = MemoryLayout::new(8 * GIB).unwrap();
        assert!(l.is_ram(0, 2 * GIB));
        assert!(!l.is_ram(2 * GIB - 1, 2));
        assert!(l.is_ram(4 * GIB, 6 * GIB));
        assert!(!l.is_ram(10 * GIB, 1));
        assert!(!l.is_ram(u64::MAX, 2));
    }
}
