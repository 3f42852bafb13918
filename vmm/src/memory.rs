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

/// Guest RAM being faulted in by worker threads ([`prefault`]); joined by
/// [`Prefault::wait`], or stopped within one step and joined when dropped
/// (a start-up error does not wait for the rest of RAM).
#[derive(Debug)]
pub struct Prefault {
    workers: Vec<std::thread::JoinHandle<()>>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    started: std::time::Instant,
}

/// Fault in all of `mem` with `MADV_POPULATE_WRITE`, split over up to
/// `threads` threads, in the background. VFIO pins every page of guest RAM
/// before the first vCPU runs, and pinning a page that was never touched
/// allocates and zeroes it, one page after another on one thread: done here
/// first, the zeroing runs on every core while the rest of the machine is
/// built, and pinning only finds present pages. Contents do not change, so
/// it may run while firmware or a kernel is being written into RAM. A kernel
/// without `MADV_POPULATE_WRITE` (before 5.14) just leaves the work to
/// pinning.
///
/// The returned [`Prefault`] must be dropped (or waited for) before `mem`.
pub fn prefault(mem: &GuestMemoryMmap, threads: usize) -> Prefault {
    const STEP: usize = 2 << 20;
    // One madvise call: the unit of cancellation.
    const CALL: usize = 32 * STEP;
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for region in mem.iter() {
        if let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) {
            ranges.push((host as usize, region.len() as usize));
        }
    }
    let total: usize = ranges.iter().map(|r| r.1).sum();
    let threads = threads.clamp(1, 16);
    // Each worker gets a contiguous share, in whole 2 MiB steps.
    let share = total.div_ceil(threads).div_ceil(STEP) * STEP;
    let mut chunks: Vec<Vec<(usize, usize)>> = vec![Vec::new(); threads];
    let (mut worker, mut room) = (0, share);
    for (mut start, mut len) in ranges {
        while len > 0 {
            let n = len.min(room);
            chunks[worker].push((start, n));
            start += n;
            len -= n;
            room -= n;
            if room == 0 && worker + 1 < threads {
                worker += 1;
                room = share;
            }
        }
    }
    let workers = chunks
        .into_iter()
        .filter(|c| !c.is_empty())
        .enumerate()
        .filter_map(|(i, chunk)| {
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name(format!("prefault{i}"))
                .spawn(move || {
                    for (start, len) in chunk {
                        let mut off = 0;
                        while off < len {
                            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                                return;
                            }
                            let n = CALL.min(len - off);
                            // SAFETY: a range inside a guest RAM mapping
                            // that outlives this thread (the caller drops the
                            // `Prefault`, which joins it, before the memory);
                            // MADV_POPULATE_WRITE only faults pages in and
                            // changes no contents.
                            let r = unsafe {
                                libc::madvise(
                                    (start + off) as *mut libc::c_void,
                                    n,
                                    libc::MADV_POPULATE_WRITE,
                                )
                            };
                            if r != 0 {
                                let e = std::io::Error::last_os_error();
                                log::debug!("MADV_POPULATE_WRITE: {e}");
                                return;
                            }
                            off += n;
                        }
                    }
                })
                .ok()
        })
        .collect();
    Prefault {
        workers,
        cancel,
        started: std::time::Instant::now(),
    }
}

impl Prefault {
    /// Wait until every page is in; how long it took since the start.
    pub fn wait(mut self) -> std::time::Duration {
        self.join();
        self.started.elapsed()
    }

    fn join(&mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.join();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryRegion};

    fn resident_pages(mem: &GuestMemoryMmap) -> (usize, usize) {
        let page = 4096;
        let (mut resident, mut all) = (0, 0);
        for r in mem.iter() {
            let host = r
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap();
            let n = r.len() as usize / page;
            let mut v = vec![0u8; n];
            // SAFETY: mincore only reads the residency of a mapping `mem`
            // owns into `v`, which has one byte per page of it.
            let rc = unsafe { libc::mincore(host.cast(), r.len() as usize, v.as_mut_ptr()) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            resident += v.iter().filter(|b| *b & 1 != 0).count();
            all += n;
        }
        (resident, all)
    }

    #[test]
    fn prefault_brings_every_page_in_and_keeps_contents() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 6 << 20),
            (GuestAddress(1 << 32), (3 << 20) + 4096),
        ])
        .unwrap();
        mem.write_slice(b"kernel", GuestAddress(0x10_0000)).unwrap();
        mem.write_slice(b"high", GuestAddress((1 << 32) + 5))
            .unwrap();
        let (before, all) = resident_pages(&mem);
        assert!(before < all / 2, "{before} of {all} resident before");
        // More threads than 2 MiB shares: some get nothing.
        prefault(&mem, 7).wait();
        assert_eq!(resident_pages(&mem), (all, all));
        let mut buf = [0u8; 6];
        mem.read_slice(&mut buf, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&buf, b"kernel");
        let mut buf = [0u8; 4];
        mem.read_slice(&mut buf, GuestAddress((1 << 32) + 5))
            .unwrap();
        assert_eq!(&buf, b"high");
    }

    #[test]
    fn a_dropped_prefault_stops_early() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 30)]).unwrap();
        let t = std::time::Instant::now();
        drop(prefault(&mem, 1));
        let (resident, all) = resident_pages(&mem);
        // At most a few 64 MiB steps of the 1 GiB were faulted in.
        assert!(resident < all / 4, "{resident} of {all} pages faulted in");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
