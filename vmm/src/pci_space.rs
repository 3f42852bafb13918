//! Where PCI BARs may go, and, for direct kernel boot, putting them there
//! as firmware would.
//!
//! **The 64-bit window.** Passed-through functions bring 64-bit BARs of up
//! to many GiB (a discrete GPU VF's memory BAR). The window for them is
//! sized from those BARs: the next power of two of their total, doubled so
//! the guest can still relocate them, at least 1 GiB. Direct boot places
//! it right above RAM, the way OVMF's classic rule does
//! (`PlatformInitLib/MemDetect.c`: the end of RAM aligned up to 1 GiB,
//! then to the window's size rounded down to a power of two), and OVMF is
//! told its size with `opt/ovmf/X-PciMmio64Mb`. OVMF itself may choose
//! otherwise: since edk2-stable202211 (Debian 12's), when the CPUID
//! address width looks real it puts a window of 1/8 of the address space
//! at its top (`PlatformDynamicMmioWindow`) unless the requested size is
//! larger. Either way the window lies below the (clamped) address width,
//! and the ACPI `_CRS` is built from where the BARs really are
//! ([`PciSpace::mmio64_covering`]), so only the size is planned here.
//!
//! **Physical address bits.** With passed-through functions the guest's
//! CPUID address width is clamped to what the host IOMMU can translate,
//! so nothing the guest places (RAM, BARs) lies beyond what DMA mapping
//! can reach. A BAR that cannot fit below that limit is refused before
//! the VM starts, naming the device, the BAR, its size and the limit.

use arch::layout::{GIB, MIB, MemoryLayout};
use devices::pci::config::{BAR0, COMMAND, COMMAND_IO, COMMAND_MEMORY, INTERRUPT_LINE, ROM_BAR};
use devices::pci::{BarAllocator, BarKind, Bdf, PciRoot};
use devices::q35::{LPC_BDF, MCH_BDF};
use firmware::acpi::MmioWindow;
use log::debug;

use crate::exit::EffectSink;
use crate::platform::Platform;

/// Errors planning the PCI address space.
#[derive(Debug, thiserror::Error)]
pub enum PciSpaceError {
    /// The 64-bit BARs do not fit below the address limit.
    #[error(
        "{device} BAR{index} ({size}) does not fit: with the guest's RAM the 64-bit PCI window would end at {end:#x}, beyond the {limit_bits}-bit limit of {why}; pass fewer or smaller devices, or give the guest less RAM"
    )]
    DoesNotFit {
        /// The device with the largest 64-bit BAR.
        device: String,
        /// That BAR.
        index: u8,
        /// Its size, human-readable.
        size: String,
        /// Where the window would end.
        end: u64,
        /// The limit in bits.
        limit_bits: u8,
        /// Whose limit it is.
        why: &'static str,
    },
    /// Direct boot: no room for a BAR.
    #[error("{bdf} BAR{index}: no room for {size:#x} bytes in the PCI windows: {source}")]
    NoRoom {
        /// The function.
        bdf: Bdf,
        /// The BAR.
        index: u8,
        /// Its size.
        size: u64,
        /// The allocator's reason.
        source: devices::pci::AllocError,
    },
}

/// Buses the machine describes to the guest (MCFG and the root bridge's
/// `_CRS`): only bus 0 exists, there are no bridges. The ECAM window itself
/// stays the 256 MiB PCIEXBAR the firmware programs, but an OS must not be
/// told there are 256 buses: Linux takes MCFG's last bus as
/// `pcibios_last_bus`, and `pcibios_fixup_peer_bridges` then reads the
/// vendor ID of 32 devices on every bus up to it, 8192 configuration reads
/// (16k exits through 0xCF8/0xCFC) for nothing.
pub const BUS_COUNT: u16 = 1;

/// I/O ports for BARs: above what the chipset and legacy devices use.
pub const IO_WINDOW: (u64, u64) = (0xc000, 0x4000);

/// A 64-bit BAR the plan must make room for.
#[derive(Debug, Clone)]
pub struct Bar64 {
    /// Who has it (for messages).
    pub device: String,
    /// Its index.
    pub index: u8,
    /// Its size.
    pub size: u64,
}

/// The machine's PCI address-space plan.
#[derive(Debug, Clone, Default)]
pub struct PciSpace {
    /// The 64-bit window, if passed-through functions need one.
    pub mmio64: Option<MmioWindow>,
    /// The guest's CPUID physical address width, when it must be clamped.
    pub phys_bits: Option<u8>,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a).saturating_mul(a)
}

/// Where OVMF 2022.11 puts a 64-bit window of `size` bytes above RAM that
/// ends at `ram_end` (see the module documentation).
pub fn ovmf_window(ram_end: u64, size: u64) -> MmioWindow {
    let size = align_up(size.min(1 << 62), GIB);
    let first_non_address = ram_end.max(1 << 32);
    let pow2 = 1u64 << (63 - size.leading_zeros());
    let base = align_up(align_up(first_non_address, GIB), pow2);
    MmioWindow { base, size }
}

impl PciSpace {
    /// Plan for `bars` (the passed-through functions' 64-bit BARs) with
    /// guest RAM `layout`. `host_phys_bits` is the host CPU's address
    /// width, `iommu_bits` the host IOMMU's, if known.
    pub fn plan(
        layout: &MemoryLayout,
        bars: &[Bar64],
        host_phys_bits: u8,
        iommu_bits: Option<u8>,
        passthrough: bool,
    ) -> Result<Self, PciSpaceError> {
        let (limit_bits, why) = match iommu_bits {
            Some(b) if passthrough && b < host_phys_bits => (b, "the host IOMMU"),
            _ => (host_phys_bits, "the host CPU"),
        };
        let mut space = Self {
            mmio64: None,
            phys_bits: passthrough.then_some(limit_bits),
        };
        let total = bars
            .iter()
            .try_fold(0u64, |t, b| t.checked_add(b.size))
            .unwrap_or(u64::MAX);
        if total == 0 {
            return Ok(space);
        }
        let size = total
            .checked_next_power_of_two()
            .and_then(|p| p.checked_mul(2))
            .unwrap_or(u64::MAX)
            .max(GIB);
        let window = ovmf_window(layout.ram_end(), size);
        let end = window.base.saturating_add(window.size);
        if size == u64::MAX || (limit_bits < 64 && end > 1u64 << limit_bits) {
            let biggest = bars
                .iter()
                .max_by_key(|b| b.size)
                .cloned()
                .unwrap_or(Bar64 {
                    device: String::new(),
                    index: 0,
                    size: 0,
                });
            return Err(PciSpaceError::DoesNotFit {
                device: biggest.device,
                index: biggest.index,
                size: crate::config::format_size(biggest.size),
                end,
                limit_bits,
                why,
            });
        }
        space.mmio64 = Some(window);
        Ok(space)
    }

    /// The `opt/ovmf/X-PciMmio64Mb` value to hand OVMF.
    pub fn ovmf_mmio64_mb(&self) -> Option<u64> {
        self.mmio64.map(|w| w.size / MIB)
    }

    /// The 64-bit window to describe in ACPI: the planned one, grown to
    /// cover every 64-bit BAR programmed above 4 GiB (the firmware may
    /// have chosen its own window).
    pub fn mmio64_covering(&self, root: &PciRoot) -> Option<MmioWindow> {
        let mut lo = self.mmio64.map(|w| w.base);
        let mut hi = self.mmio64.map(|w| w.base + w.size);
        for bdf in root.functions() {
            let Some(dev) = root.get(bdf) else {
                continue;
            };
            let bars = dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .programmed_bars();
            for b in bars {
                if matches!(b.kind, BarKind::Mem64 { .. }) && b.address >= 1 << 32 {
                    lo = Some(lo.map_or(b.address, |l| l.min(b.address)));
                    let end = b.address.saturating_add(b.size);
                    hi = Some(hi.map_or(end, |h| h.max(end)));
                }
            }
        }
        match (lo, hi) {
            (Some(base), Some(end)) if end > base => Some(MmioWindow {
                base,
                size: end - base,
            }),
            _ => None,
        }
    }
}

fn read32(root: &PciRoot, bdf: Bdf, reg: u16) -> u32 {
    let mut b = [0u8; 4];
    root.config_read(bdf, reg, &mut b);
    u32::from_le_bytes(b)
}

fn write32(platform: &Platform, bdf: Bdf, reg: u16, v: u32) {
    let effects = platform.pci().config_write(bdf, reg, &v.to_le_bytes());
    platform.apply(effects);
}

/// Direct kernel boot: do what firmware does before the kernel runs.
/// Program the MCH's PCIEXBAR and the LPC's PMBASE/ACPI_EN (the ECAM
/// window and the PM block appear), then size every other function's
/// BARs through its configuration space, place them in the windows
/// (`mmio32`, the plan's 64-bit window, [`IO_WINDOW`]), set the interrupt
/// line and turn decoding on. Bus mastering is left to the guest's drivers.
pub fn program_like_firmware(
    platform: &Platform,
    space: &PciSpace,
    ecam_base: u64,
    pm_base: u16,
    mmio32: MmioWindow,
) -> Result<(), PciSpaceError> {
    use devices::q35::{lpc, mch};
    write32(
        platform,
        MCH_BDF,
        mch::PCIEXBAR + 4,
        (ecam_base >> 32) as u32,
    );
    write32(
        platform,
        MCH_BDF,
        mch::PCIEXBAR,
        ecam_base as u32 | mch::PCIEXBAR_EN as u32,
    );
    write32(
        platform,
        LPC_BDF,
        lpc::PMBASE,
        u32::from(pm_base) | lpc::PMBASE_RTE,
    );
    let cntl = read32(platform.pci(), LPC_BDF, lpc::ACPI_CNTL);
    write32(
        platform,
        LPC_BDF,
        lpc::ACPI_CNTL,
        cntl | u32::from(lpc::ACPI_CNTL_ACPI_EN),
    );

    let mmio64 = space.mmio64.map_or((0, 0), |w| (w.base, w.size));
    let mut alloc =
        BarAllocator::new(IO_WINDOW, (mmio32.base, mmio32.size), mmio64).map_err(|e| {
            PciSpaceError::NoRoom {
                bdf: MCH_BDF,
                index: 0,
                size: 0,
                source: e,
            }
        })?;
    let root = platform.pci();
    for bdf in root.functions() {
        if bdf == MCH_BDF || bdf == LPC_BDF {
            continue;
        }
        let mut command = 0u16;
        let mut index = 0u16;
        while index < 6 {
            let reg = BAR0 + 4 * index;
            write32(platform, bdf, reg, u32::MAX);
            let lo = read32(root, bdf, reg);
            if lo == 0 {
                index += 1;
                continue;
            }
            let (kind, size, step) = if lo & 1 == 1 {
                (
                    BarKind::Io,
                    u64::from(!(lo & !0x3)).wrapping_add(1) & 0xffff,
                    1,
                )
            } else if lo & 0x6 == 0x4 {
                write32(platform, bdf, reg + 4, u32::MAX);
                let hi = read32(root, bdf, reg + 4);
                let mask = (u64::from(hi) << 32) | u64::from(lo & !0xf);
                let kind = BarKind::Mem64 {
                    prefetchable: lo & 0x8 != 0,
                };
                (kind, (!mask).wrapping_add(1), 2)
            } else {
                let kind = BarKind::Mem32 {
                    prefetchable: lo & 0x8 != 0,
                };
                (kind, u64::from(!(lo & !0xf)).wrapping_add(1), 1)
            };
            let base = alloc
                .allocate(kind, size)
                .map_err(|source| PciSpaceError::NoRoom {
                    bdf,
                    index: index as u8,
                    size,
                    source,
                })?;
            write32(platform, bdf, reg, base as u32);
            if step == 2 {
                write32(platform, bdf, reg + 4, (base >> 32) as u32);
            }
            debug!("{bdf} BAR{index}: {kind:?} {size:#x} at {base:#x}");
            command |= if kind == BarKind::Io {
                COMMAND_IO
            } else {
                COMMAND_MEMORY
            };
            index += step;
        }
        // The expansion ROM gets an address too (disabled), so the guest
        // can read it without reassigning resources.
        write32(platform, bdf, ROM_BAR, 0xffff_f800);
        let rom = read32(root, bdf, ROM_BAR) & 0xffff_f800;
        if rom != 0 {
            let size = u64::from(!rom).wrapping_add(1) & 0xffff_ffff;
            let kind = BarKind::Mem32 {
                prefetchable: false,
            };
            let base = alloc
                .allocate(kind, size)
                .map_err(|source| PciSpaceError::NoRoom {
                    bdf,
                    index: 6,
                    size,
                    source,
                })?;
            write32(platform, bdf, ROM_BAR, base as u32);
        } else {
            write32(platform, bdf, ROM_BAR, 0);
        }
        let pin = read32(root, bdf, INTERRUPT_LINE) >> 8 & 0xff;
        if (1..=4).contains(&pin) {
            let gsi = firmware::acpi::pci::pci_intx_gsi(bdf.device, (pin - 1) as u8);
            let effects = root.config_write(bdf, INTERRUPT_LINE, &[gsi as u8]);
            platform.apply(effects);
        }
        let old = read32(root, bdf, COMMAND) as u16;
        let effects = root.config_write(bdf, COMMAND, &(old | command).to_le_bytes());
        platform.apply(effects);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_lands_where_ovmf_2022_11_puts_it() {
        // 256 MiB of RAM, a 16 GiB window: above 4 GiB, 16 GiB aligned.
        assert_eq!(
            ovmf_window(256 << 20, 16 * GIB),
            MmioWindow {
                base: 16 * GIB,
                size: 16 * GIB
            }
        );
        // 6 GiB of RAM end at 8 GiB (2 below + 4 above 4 GiB... ) -> a
        // 1 GiB window right after.
        assert_eq!(
            ovmf_window(8 * GIB + 1, GIB),
            MmioWindow {
                base: 9 * GIB,
                size: GIB
            }
        );
    }

    #[test]
    fn the_plan_sizes_the_window_from_the_bars_and_refuses_what_cannot_fit() {
        let layout = MemoryLayout::new(512 << 20).unwrap();
        let lmem = Bar64 {
            device: "vfio 0000:03:00.0".into(),
            index: 2,
            size: 4 * GIB,
        };
        let regs = Bar64 {
            device: "vfio 0000:03:00.0".into(),
            index: 0,
            size: 16 << 20,
        };
        let p = PciSpace::plan(&layout, &[lmem.clone(), regs], 48, Some(39), true).unwrap();
        assert_eq!(
            p.mmio64,
            Some(MmioWindow {
                base: 16 * GIB,
                size: 16 * GIB
            })
        );
        assert_eq!(p.phys_bits, Some(39), "clamped to the IOMMU");
        assert_eq!(p.ovmf_mmio64_mb(), Some(16 * 1024));
        let e = PciSpace::plan(&layout, &[lmem], 48, Some(33), true).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("vfio 0000:03:00.0 BAR2 (4G)"), "{msg}");
        assert!(msg.contains("33-bit limit of the host IOMMU"), "{msg}");
        let none = PciSpace::plan(&layout, &[], 48, Some(39), false).unwrap();
        assert_eq!((none.mmio64, none.phys_bits), (None, None));
    }
}
