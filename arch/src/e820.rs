//! E820 memory maps handed to the guest.
//!
//! Two flavours: [`direct_boot_map`] for a Linux kernel booted without
//! firmware (written into `boot_params` or the PVH start info), and
//! [`firmware_map`] for OVMF, which receives it through the fw_cfg file
//! `etc/e820` and carves out its own reserved areas.

use crate::layout::{
    ACPI_AREA_END, ACPI_AREA_START, EBDA_START, HIMEM_START, LEGACY_RAM_END, MemoryLayout,
    PCIE_ECAM_DEFAULT_START, PCIE_ECAM_SIZE,
};

/// Size in bytes of one entry in the fw_cfg `etc/e820` format.
pub const E820_ENTRY_SIZE: usize = 20;

/// Kind of an e820 range, with the numeric codes of the BIOS interface.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved, not to be used by the OS.
    Reserved = 2,
    /// ACPI tables, reclaimable once they are parsed.
    Acpi = 3,
    /// ACPI non-volatile storage.
    Nvs = 4,
}

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte of the range.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range holds.
    pub kind: E820Type,
}

impl E820Entry {
    /// Builds an entry.
    pub fn new(addr: u64, size: u64, kind: E820Type) -> E820Entry {
        E820Entry { addr, size, kind }
    }

    /// End (exclusive) of the range.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }

    /// Packed little-endian `{u64 addr, u64 size, u32 type}`, the layout of
    /// QEMU's fw_cfg `etc/e820` and of `boot_e820_entry` in Linux `boot_params`.
    pub fn to_bytes(&self) -> [u8; E820_ENTRY_SIZE] {
        let mut out = [0u8; E820_ENTRY_SIZE];
        out[0..8].copy_from_slice(&self.addr.to_le_bytes());
        out[8..16].copy_from_slice(&self.size.to_le_bytes());
        out[16..20].copy_from_slice(&(self.kind as u32).to_le_bytes());
        out
    }
}

/// Concatenates [`E820Entry::to_bytes`] of every entry: the contents of fw_cfg `etc/e820`.
pub fn to_bytes(entries: &[E820Entry]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_bytes()).collect()
}

/// Map for direct kernel boot, ascending:
///
/// - `[0, EBDA_START)` RAM
/// - `[EBDA_START, 0xa0000)` reserved (EBDA)
/// - `[ACPI_AREA_START, ACPI_AREA_END)` reserved (RSDP and ACPI tables)
/// - `[HIMEM_START, low_ram_end)` RAM
/// - `[PCIE_ECAM_DEFAULT_START, +256 MiB)` reserved, so Linux accepts an
///   MCFG table pointing there (it ignores MMCONFIG not reserved in e820 or ACPI)
/// - high RAM, if any
pub fn direct_boot_map(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry::new(0, EBDA_START, E820Type::Ram),
        E820Entry::new(EBDA_START, LEGACY_RAM_END - EBDA_START, E820Type::Reserved),
        E820Entry::new(
            ACPI_AREA_START,
            ACPI_AREA_END - ACPI_AREA_START,
            E820Type::Reserved,
        ),
        E820Entry::new(
            HIMEM_START,
            layout.low_ram_end() - HIMEM_START,
            E820Type::Ram,
        ),
        E820Entry::new(PCIE_ECAM_DEFAULT_START, PCIE_ECAM_SIZE, E820Type::Reserved),
    ];
    map.extend(high_ram_entry(layout));
    map
}

/// Map for firmware (fw_cfg `etc/e820`): RAM only, `[0, low_ram_end)` and
/// high RAM, as QEMU hands it to OVMF.
pub fn firmware_map(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut map = vec![E820Entry::new(0, layout.low_ram_end(), E820Type::Ram)];
    map.extend(high_ram_entry(layout));
    map
}

fn high_ram_entry(layout: &MemoryLayout) -> Option<E820Entry> {
    layout
        .high_ram()
        .map(|(start, size)| E820Entry::new(start, size, E820Type::Ram))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{GIB, MIB, MIN_RAM_SIZE};

    fn layouts() -> Vec<MemoryLayout> {
        [MIN_RAM_SIZE, 512 * MIB, 0xaff0_0000, 3 * GIB, 64 * GIB]
            .into_iter()
            .map(|s| MemoryLayout::new(s).unwrap())
            .collect()
    }

    fn assert_sorted_disjoint(map: &[E820Entry]) {
        for e in map {
            assert!(e.size > 0, "empty entry {e:?}");
        }
        for pair in map.windows(2) {
            assert!(
                pair[0].end() <= pair[1].addr,
                "{:?} overlaps or precedes {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820Type::Ram)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn entry_bytes_are_packed_le() {
        let e = E820Entry::new(0x1122_3344_5566_7788, 0x99aa_bbcc_ddee_ff00, E820Type::Acpi);
        assert_eq!(
            e.to_bytes(),
            [
                0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // addr
                0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, // size
                0x03, 0x00, 0x00, 0x00, // type
            ]
        );
        let all = to_bytes(&[e, E820Entry::new(0, 1, E820Type::Nvs)]);
        assert_eq!(all.len(), 2 * E820_ENTRY_SIZE);
        assert_eq!(all[E820_ENTRY_SIZE + 16], 4);
    }

    #[test]
    fn type_codes() {
        assert_eq!(E820Type::Ram as u32, 1);
        assert_eq!(E820Type::Reserved as u32, 2);
        assert_eq!(E820Type::Acpi as u32, 3);
        assert_eq!(E820Type::Nvs as u32, 4);
    }

    #[test]
    fn direct_boot_map_small() {
        let l = MemoryLayout::new(512 * MIB).unwrap();
        assert_eq!(
            direct_boot_map(&l),
            vec![
                E820Entry::new(0, 0x9fc00, E820Type::Ram),
                E820Entry::new(0x9fc00, 0x400, E820Type::Reserved),
                E820Entry::new(0xe0000, 0x20000, E820Type::Reserved),
                E820Entry::new(0x100000, 512 * MIB - 0x100000, E820Type::Ram),
                E820Entry::new(0xb000_0000, 0x1000_0000, E820Type::Reserved),
            ]
        );
    }

    #[test]
    fn direct_boot_map_with_high_ram() {
        let l = MemoryLayout::new(8 * GIB).unwrap();
        let map = direct_boot_map(&l);
        assert_eq!(
            map[3],
            E820Entry::new(0x100000, 2 * GIB - 0x100000, E820Type::Ram)
        );
        assert_eq!(
            map.last().unwrap(),
            &E820Entry::new(4 * GIB, 6 * GIB, E820Type::Ram)
        );
    }

    #[test]
    fn maps_are_sorted_disjoint_and_cover_ram() {
        for l in layouts() {
            let direct = direct_boot_map(&l);
            assert_sorted_disjoint(&direct);
            // Direct boot gives up the EBDA and [0xa0000, 1 MiB) to the holes.
            assert_eq!(
                ram_total(&direct),
                l.ram_size() - (HIMEM_START - EBDA_START)
            );
            for e in direct.iter().filter(|e| e.kind == E820Type::Ram) {
                assert!(l.is_ram(e.addr, e.size), "{e:?} is not backed by RAM");
            }
            for e in direct.iter().filter(|e| e.kind != E820Type::Ram) {
                assert!(!l.is_ram(e.addr, 1) || e.end() <= HIMEM_START, "{e:?}");
            }

            let fw = firmware_map(&l);
            assert_sorted_disjoint(&fw);
            assert!(fw.iter().all(|e| e.kind == E820Type::Ram));
            assert_eq!(ram_total(&fw), l.ram_size());
            let regions: Vec<(u64, u64)> = fw.iter().map(|e| (e.addr, e.size)).collect();
            assert_eq!(regions, l.ram_regions());
        }
    }
}
