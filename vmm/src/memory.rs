//! Guest RAM: sized against the host, laid out by `arch::layout`.

use arch::layout::MemoryLayout;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::config::format_size;

/// Guest memory errors.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The layout refused the size.
    #[error("--memory {}: {}", format_size(*.0), layout_advice(.1))]
    Layout(u64, arch::layout::LayoutError),
    /// More than the host has.
    #[error("--memory {} is more than this host's {} of RAM: ask for less", format_size(*requested), format_size(*host))]
    MoreThanHost {
        /// What was asked.
        requested: u64,
        /// What the host has.
        host: u64,
    },
    /// mmap failed.
    #[error("cannot allocate {} of guest memory: {}", format_size(*.0), .1)]
    Allocate(u64, vm_memory::mmap::FromRangesError),
}

fn layout_advice(e: &arch::layout::LayoutError) -> String {
    use arch::layout::LayoutError as L;
    match e {
        L::RamTooSmall { min, .. } => format!("too small; the minimum is {}", format_size(*min)),
        L::RamTooLarge { limit, .. } => format!(
            "too large; guest RAM must end below {}",
            format_size(*limit)
        ),
        L::RamUnaligned { page, .. } => {
            format!("not a whole number of {} pages", format_size(*page))
        }
    }
}

/// Total host RAM from /proc/meminfo, if readable.
pub fn host_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Check `size` against the layout rules and the host.
pub fn plan(size: u64) -> Result<MemoryLayout, MemoryError> {
    let layout = MemoryLayout::new(size).map_err(|e| MemoryError::Layout(size, e))?;
    if let Some(host) = host_ram() {
        if size > host {
            return Err(MemoryError::MoreThanHost {
                requested: size,
                host,
            });
        }
    }
    Ok(layout)
}

/// Allocate guest RAM for `layout` (anonymous, not yet touched). With
/// `huge_pages` the kernel is asked to back it with transparent huge pages
/// (`MADV_HUGEPAGE`): done when devices are passed through, because all of
/// RAM is then pinned for DMA anyway, and 2 MiB pages make pinning and
/// IOMMU mapping hundreds of times fewer operations.
pub fn allocate(layout: &MemoryLayout, huge_pages: bool) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = layout
        .ram_regions()
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges)
        .map_err(|e| MemoryError::Allocate(layout.ram_size(), e))?;
    if huge_pages {
        for region in mem.iter() {
            let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
                continue;
            };
            // SAFETY: advice on a mapping `mem` owns, of exactly its
            // length; MADV_HUGEPAGE changes no contents.
            let r =
                unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
            if r != 0 {
                log::debug!("MADV_HUGEPAGE: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(mem)
}
