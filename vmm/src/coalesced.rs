//! KVM's coalesced MMIO ring, used for the UEFI variable flash while it is
//! being programmed.
//!
//! OVMF programs its variable store a byte at a time: a program command
//! and the byte, two MMIO writes, with no read in between until the
//! sequence ends with "read array" (a fresh VARS costs some 30,000 writes
//! on the first boot). While the flash is out of read-array mode its memory
//! slot is removed, so every read of it exits; that is when the range is a
//! coalesced zone (`KVM_REGISTER_COALESCED_MMIO`): KVM appends the writes to
//! a ring page instead of exiting, up to [`RING_ENTRIES`] of them.
//!
//! The ring is drained, in order, before any exit is handled, by whichever
//! vCPU exits first ([`Coalesced::drain`]), so the device has seen every
//! earlier write before it answers a read, and before any other device
//! sees the guest's next access: a flash read, the serial line that says a
//! variable was written, a power-off. When a drained write returns the
//! flash to read-array mode the zone is unregistered and the slot mapped
//! again (reads stop exiting); a write in read-array mode exits as before.
//! A full ring makes KVM exit with the write itself, after the ring is
//! drained.
//!
//! Cost when idle: one relaxed atomic load per exit.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Bytes of one ring entry (`struct kvm_coalesced_mmio`).
const ENTRY_LEN: usize = 24;
/// Bytes before the first entry (`first`, `last`).
const HEADER_LEN: usize = 8;
/// The page KVM shares.
const PAGE: usize = 4096;
/// Entries in the ring (`KVM_COALESCED_MMIO_MAX`).
pub const RING_ENTRIES: u32 = ((PAGE - HEADER_LEN) / ENTRY_LEN) as u32;

/// The ring page, mapped from a vCPU descriptor (one ring per VM) or, in
/// tests, a page of our own.
pub struct Ring {
    page: NonNull<u8>,
    mapped: bool,
}

// SAFETY: the page is shared memory read with atomics and volatile reads;
// `Coalesced` serialises the consumers.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("mapped", &self.mapped)
            .finish()
    }
}

impl Ring {
    /// Map the VM's ring through vCPU descriptor `vcpu`
    /// (`KVM_COALESCED_MMIO_PAGE_OFFSET`).
    pub fn map(vcpu: &impl AsRawFd) -> io::Result<Self> {
        let offset =
            kvm_bindings::KVM_COALESCED_MMIO_PAGE_OFFSET as libc::off_t * PAGE as libc::off_t;
        // SAFETY: a fresh shared mapping of one page of the vCPU file at
        // KVM's documented offset; the result is checked before use and
        // unmapped on drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            page: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            mapped: true,
        })
    }

    /// A ring on a page the caller owns (tests: the caller plays KVM).
    ///
    /// # Safety
    ///
    /// `page` must point to [`PAGE`] bytes, 8-byte aligned, that outlive
    /// the ring.
    #[cfg(test)]
    pub unsafe fn on(page: *mut u8) -> Self {
        Self {
            page: NonNull::new(page).expect("a page"),
            mapped: false,
        }
    }

    fn index(&self, at: usize) -> &AtomicU32 {
        // SAFETY: `at` is 0 or 4, inside the page, 4-byte aligned; KVM
        // updates these words concurrently, hence atomics.
        unsafe { &*self.page.as_ptr().add(at).cast::<AtomicU32>() }
    }

    /// Hand every entry, oldest first, to `each(address, bytes)`; returns
    /// how many.
    fn drain(&self, mut each: impl FnMut(u64, &[u8])) -> usize {
        let first = self.index(0);
        let last = self.index(4);
        let mut n = 0;
        loop {
            let f = first.load(Ordering::Relaxed);
            // KVM writes the entry, then `last` (with a barrier).
            if f == last.load(Ordering::Acquire) {
                return n;
            }
            if f >= RING_ENTRIES {
                // Not a state KVM leaves: start over rather than read
                // outside the page.
                first.store(last.load(Ordering::Acquire), Ordering::Release);
                return n;
            }
            let mut e = [0u8; ENTRY_LEN];
            // SAFETY: entry `f` lies inside the page (f < RING_ENTRIES);
            // a volatile copy, as KVM owns the memory until `first` moves.
            unsafe {
                let src = self.page.as_ptr().add(HEADER_LEN + f as usize * ENTRY_LEN);
                for (i, b) in e.iter_mut().enumerate() {
                    *b = std::ptr::read_volatile(src.add(i));
                }
            }
            let addr = u64::from_le_bytes(e[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(e[8..12].try_into().unwrap_or_default()).min(8) as usize;
            // The entry is copied: give the slot back before acting on it.
            first.store((f + 1) % RING_ENTRIES, Ordering::Release);
            each(addr, &e[16..16 + len]);
            n += 1;
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: the page was mapped by `map` with this length and is
            // unmapped once.
            unsafe { libc::munmap(self.page.as_ptr().cast(), PAGE) };
        }
    }
}

/// The ring plus the state of the coalesced zones, shared by the vCPUs.
#[derive(Debug)]
pub struct Coalesced {
    ring: Ring,
    /// A zone is registered, or was until the last drain: exits drain.
    active: AtomicBool,
    /// Draining vCPU (writes are replayed in ring order, by one thread).
    drain: Mutex<()>,
    /// Zones registered now.
    zones: Mutex<u32>,
    /// Writes that took no exit.
    writes: AtomicU64,
}

impl Coalesced {
    /// Zones over `ring`.
    pub fn new(ring: Ring) -> Self {
        Self {
            ring,
            active: AtomicBool::new(false),
            drain: Mutex::new(()),
            zones: Mutex::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// A zone was registered (`true`) or unregistered.
    pub fn zone_changed(&self, registered: bool) {
        let mut z = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        if registered {
            *z += 1;
            self.active.store(true, Ordering::SeqCst);
        } else {
            *z = z.saturating_sub(1);
        }
    }

    /// Replay the ring's writes through `write(address, bytes)`, in
    /// order; a no-op (one atomic load) while no zone was registered
    /// since the last drain. Returns how many were replayed.
    pub fn drain(&self, mut write: impl FnMut(u64, &[u8])) -> usize {
        if !self.active.load(Ordering::Relaxed) {
            return 0;
        }
        let _one = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = self.ring.drain(&mut write);
        // Entries written before a zone was unregistered are in the ring
        // once the ioctl returned: with no zone left and the ring empty,
        // stop looking until the next registration. Replayed writes may
        // register or unregister zones, so the zone lock is not held
        // while replaying; unregistering happens only in a drain (this
        // one), registering sets `active` under the zone lock.
        loop {
            if *self.zones.lock().unwrap_or_else(|e| e.into_inner()) != 0 {
                break;
            }
            let more = self.ring.drain(&mut write);
            n += more;
            if more == 0 {
                let zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
                if *zones == 0 {
                    self.active.store(false, Ordering::SeqCst);
                }
                break;
            }
        }
        self.writes.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Writes replayed from the ring so far (exits saved).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page playing KVM's ring.
    struct Page(Box<[u64; PAGE / 8]>);

    impl Page {
        fn new() -> Self {
            Self(Box::new([0u64; PAGE / 8]))
        }
        fn ptr(&mut self) -> *mut u8 {
            self.0.as_mut_ptr().cast()
        }
        /// Append a write, as KVM does.
        fn push(&mut self, addr: u64, data: &[u8]) {
            let p = self.ptr();
            // SAFETY: offsets inside the page; single-threaded test.
            unsafe {
                let last = p.add(4).cast::<u32>();
                let l = *last;
                let e = p.add(HEADER_LEN + l as usize * ENTRY_LEN);
                e.cast::<u64>().write_unaligned(addr);
                e.add(8).cast::<u32>().write_unaligned(data.len() as u32);
                std::ptr::copy_nonoverlapping(data.as_ptr(), e.add(16), data.len());
                *last = (l + 1) % RING_ENTRIES;
            }
        }
    }

    #[test]
    fn ring_geometry_is_kvms() {
        assert_eq!(RING_ENTRIES, 170);
        assert_eq!(
            ENTRY_LEN,
            std::mem::size_of::<kvm_bindings::kvm_coalesced_mmio>()
        );
    }

    #[test]
    fn idle_until_a_zone_is_registered_then_drains_in_order_across_the_wrap() {
        let mut page = Page::new();
        // SAFETY: the page outlives the ring (dropped after it below).
        let c = Coalesced::new(unsafe { Ring::on(page.ptr()) });
        page.push(0x1000, &[1]);
        let mut seen = Vec::new();
        assert_eq!(
            c.drain(|a, d| seen.push((a, d.to_vec()))),
            0,
            "inactive: not read"
        );
        c.zone_changed(true);
        // start near the end so the ring wraps
        // SAFETY: the page's first/last words.
        unsafe {
            *page.ptr().cast::<u32>() = RING_ENTRIES - 2;
            *page.ptr().add(4).cast::<u32>() = RING_ENTRIES - 2;
        }
        for i in 0..5u8 {
            page.push(0xffc0_0000 + u64::from(i), &[0x10, i]);
        }
        assert_eq!(c.drain(|a, d| seen.push((a, d.to_vec()))), 5);
        let want: Vec<(u64, Vec<u8>)> = (0..5u8)
            .map(|i| (0xffc0_0000 + u64::from(i), vec![0x10, i]))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(c.writes(), 5);
        // still active while the zone is registered
        page.push(0xffc0_0010, &[0xff]);
        seen.clear();
        assert_eq!(c.drain(|a, d| seen.push((a, d.to_vec()))), 1);
        // unregistered and empty: back to one atomic load per exit
        c.zone_changed(false);
        assert_eq!(c.drain(|_, _| {}), 0);
        page.push(0x2000, &[9]);
        assert_eq!(c.drain(|_, _| {}), 0, "inactive again");
        drop(c);
        drop(page);
    }

    #[test]
    fn a_write_replayed_during_the_drain_may_unregister_the_zone() {
        let mut page = Page::new();
        // SAFETY: the page outlives the ring.
        let c = Coalesced::new(unsafe { Ring::on(page.ptr()) });
        c.zone_changed(true);
        page.push(0x10, &[0x10]);
        page.push(0x10, &[0x42]);
        page.push(0x10, &[0xff]);
        let mut n = 0;
        c.drain(|_, d| {
            n += 1;
            if d == [0xff] {
                // back in read-array mode: the platform unregisters
                c.zone_changed(false);
            }
        });
        assert_eq!(n, 3);
        page.push(0x10, &[1]);
        assert_eq!(c.drain(|_, _| {}), 0, "no zone, nothing read");
        drop(c);
        drop(page);
    }
}
