//! Descriptor chains as a device sees them: the guest-readable bytes, then
//! the guest-writable bytes, each a list of guest-physical segments.
//!
//! virtio-queue walks a chain (following indirect tables, bounded by the
//! queue size, so a loop ends) but stops silently where a descriptor is
//! malformed, which makes a bad chain look shorter. [`Chain::parse`] adds
//! the checks a device needs before it trusts the shape: every segment
//! lies in guest RAM, readable descriptors come before writable ones, and
//! the total stays under [`MAX_CHAIN_BYTES`]. Data then moves between guest
//! memory and files with `preadv`/`pwritev` straight into or out of the
//! guest's pages, or is copied with the bounds-checked helpers below.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// The most bytes one chain may describe (readable + writable): more than
/// any request of ours needs (the block device advertises 32 MiB).
pub const MAX_CHAIN_BYTES: u64 = 1 << 30;

/// A malformed chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A descriptor points outside guest RAM (or across a hole).
    #[error("descriptor at {addr:#x} (+{len:#x}) is not in guest RAM")]
    OutOfMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A readable descriptor follows a writable one.
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    /// The chain describes more than [`MAX_CHAIN_BYTES`].
    #[error("the chain describes more than {MAX_CHAIN_BYTES} bytes")]
    TooLong,
    /// A part of the chain is shorter than the request needs.
    #[error("the chain is too short: {0}")]
    TooShort(&'static str),
}

/// A run of guest-physical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Segments in order, with their total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segments {
    parts: Vec<Segment>,
    total: u64,
}

impl Segments {
    /// Total length.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The segments.
    pub fn parts(&self) -> &[Segment] {
        &self.parts
    }

    #[cfg(test)]
    pub(crate) fn push_for_tests(&mut self, s: Segment) {
        self.push(s)
    }

    fn push(&mut self, s: Segment) {
        if s.len > 0 {
            self.total += u64::from(s.len);
            self.parts.push(s);
        }
    }

    /// Split off the first `n` bytes (`None` if there are fewer).
    pub fn take_front(&mut self, n: u64) -> Option<Segments> {
        if n > self.total {
            return None;
        }
        let mut front = Segments::default();
        let mut left = n;
        let mut rest = Vec::with_capacity(self.parts.len());
        for s in self.parts.drain(..) {
            if left == 0 {
                rest.push(s);
            } else if u64::from(s.len) <= left {
                left -= u64::from(s.len);
                front.push(s);
            } else {
                let l = left as u32;
                front.push(Segment {
                    addr: s.addr,
                    len: l,
                });
                rest.push(Segment {
                    addr: s.addr + u64::from(l),
                    len: s.len - l,
                });
                left = 0;
            }
        }
        self.parts = rest;
        self.total -= n;
        Some(front)
    }

    /// Split off the last `n` bytes (`None` if there are fewer).
    pub fn take_back(&mut self, n: u64) -> Option<Segments> {
        let keep = self.total.checked_sub(n)?;
        let back = std::mem::take(self);
        let mut front = back;
        let tail = front
            .take_front(keep)
            .map(|head| std::mem::replace(&mut front, head))?;
        *self = front;
        Some(tail)
    }

    /// Copy the bytes into `buf` (at most `buf.len()`); returns how many.
    pub fn read_to(&self, mem: &GuestMemoryMmap, buf: &mut [u8]) -> Result<usize, ChainError> {
        let mut done = 0usize;
        for s in &self.parts {
            if done == buf.len() {
                break;
            }
            let n = (s.len as usize).min(buf.len() - done);
            mem.read_slice(&mut buf[done..done + n], GuestAddress(s.addr))
                .map_err(|_| ChainError::OutOfMemory {
                    addr: s.addr,
                    len: s.len,
                })?;
            done += n;
        }
        Ok(done)
    }

    /// Copy `buf` into the bytes (at most their length); returns how many.
    pub fn write_from(&self, mem: &GuestMemoryMmap, buf: &[u8]) -> Result<usize, ChainError> {
        let mut done = 0usize;
        for s in &self.parts {
            if done == buf.len() {
                break;
            }
            let n = (s.len as usize).min(buf.len() - done);
            mem.write_slice(&buf[done..done + n], GuestAddress(s.addr))
                .map_err(|_| ChainError::OutOfMemory {
                    addr: s.addr,
                    len: s.len,
                })?;
            done += n;
        }
        Ok(done)
    }

    /// The host slices behind the segments (a segment may span regions).
    pub(crate) fn slices<'m>(
        &self,
        mem: &'m GuestMemoryMmap,
    ) -> Result<Vec<VolatileSlice<'m>>, ChainError> {
        let mut out = Vec::with_capacity(self.parts.len());
        for s in &self.parts {
            let bad = ChainError::OutOfMemory {
                addr: s.addr,
                len: s.len,
            };
            for slice in mem.get_slices(GuestAddress(s.addr), s.len as usize) {
                out.push(slice.map_err(|_| bad.clone())?);
            }
        }
        Ok(out)
    }
}

/// A chain split into what the device reads and what it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The head descriptor's index (what `add_used` takes).
    pub head: u16,
    /// Device-readable bytes, in order.
    pub readable: Segments,
    /// Device-writable bytes, in order.
    pub writable: Segments,
}

impl Chain {
    /// Walk `chain`, checking every descriptor against `mem`.
    pub fn parse<M>(chain: DescriptorChain<M>, mem: &GuestMemoryMmap) -> Result<Self, ChainError>
    where
        M: std::ops::Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let head = chain.head_index();
        let mut out = Chain {
            head,
            readable: Segments::default(),
            writable: Segments::default(),
        };
        for d in chain {
            let seg = Segment {
                addr: d.addr().0,
                len: d.len(),
            };
            if !mem.check_range(d.addr(), d.len() as usize) {
                return Err(ChainError::OutOfMemory {
                    addr: seg.addr,
                    len: seg.len,
                });
            }
            if d.is_write_only() {
                out.writable.push(seg);
            } else if !out.writable.is_empty() {
                return Err(ChainError::ReadableAfterWritable);
            } else {
                out.readable.push(seg);
            }
            if out.readable.len() + out.writable.len() > MAX_CHAIN_BYTES {
                return Err(ChainError::TooLong);
            }
        }
        Ok(out)
    }
}

/// Pop every chain the guest made available in `queue` (queue number
/// `index`), hand each to `serve` parsed (or the reason it could not be),
/// and return it to the guest as used with the length `serve` gives.
/// Returns how many chains were completed.
pub fn complete_each(
    index: usize,
    queue: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    mut serve: impl FnMut(Result<Chain, ChainError>) -> u32,
) -> Result<usize, super::QueueError> {
    use virtio_queue::QueueT;
    let mut done = 0;
    while let Some(c) = queue.pop_descriptor_chain(mem) {
        let head = c.head_index();
        let used = serve(Chain::parse(c, mem));
        queue
            .add_used(mem, head, used)
            .map_err(|source| super::QueueError::Ring { index, source })?;
        done += 1;
    }
    Ok(done)
}

/// Largest iovec count per call (the kernel's IOV_MAX).
const IOV_MAX: usize = 1024;

/// Move bytes between `file` at `offset` and `slices` with `preadv`
/// (`write` false) or `pwritev`, resuming after short transfers; a read
/// stops at the end of the file. Returns the bytes moved.
fn transfer(
    file: &File,
    offset: u64,
    slices: &[VolatileSlice<'_>],
    write: bool,
) -> io::Result<u64> {
    let (mut idx, mut skip, mut done) = (0usize, 0usize, 0u64);
    while idx < slices.len() {
        let iov: Vec<libc::iovec> = slices[idx..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, s)| {
                let off = if i == 0 { skip } else { 0 };
                libc::iovec {
                    iov_base: s.ptr_guard_mut().as_ptr().wrapping_add(off).cast(),
                    iov_len: s.len() - off,
                }
            })
            .collect();
        let at = (offset + done) as libc::off_t;
        let n = if write {
            // SAFETY: every iovec lies inside a guest RAM slice that the
            // caller's `mem` keeps mapped for this call; the kernel only
            // reads from them.
            unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at) }
        } else {
            // SAFETY: as above; the kernel writes at most iov_len bytes to
            // each, all inside guest RAM.
            unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at) }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if write {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            break;
        }
        done += n as u64;
        let mut n = n as usize;
        while n > 0 && idx < slices.len() {
            let avail = slices[idx].len() - skip;
            if n >= avail {
                n -= avail;
                idx += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(done)
}

/// Read `file` at `offset` into the guest bytes `segs` (all of them unless
/// the file ends first); returns the bytes read.
pub fn read_file_into(
    file: &File,
    offset: u64,
    segs: &Segments,
    mem: &GuestMemoryMmap,
) -> io::Result<u64> {
    let slices = segs.slices(mem).map_err(io::Error::other)?;
    transfer(file, offset, &slices, false)
}

/// Write the guest bytes `segs` to `file` at `offset`, all of them.
pub fn write_file_from(
    file: &File,
    offset: u64,
    segs: &Segments,
    mem: &GuestMemoryMmap,
) -> io::Result<()> {
    let slices = segs.slices(mem).map_err(io::Error::other)?;
    transfer(file, offset, &slices, true).map(|_| ())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::GuestAddress;

    pub const F_NEXT: u16 = 1;
    pub const F_WRITE: u16 = 2;

    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// A queue of 16 with `descs` as one chain (flags: F_WRITE as given,
    /// F_NEXT added), returning the queue ready to pop.
    pub fn queue_with(mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> Queue {
        let q = MockSplitQueue::new(mem, 16);
        let v: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| {
                let next = if i + 1 < descs.len() { F_NEXT } else { 0 };
                RawDescriptor::from(SplitDescriptor::new(a, l, f | next, (i + 1) as u16))
            })
            .collect();
        q.build_desc_chain(&v).unwrap();
        q.create_queue().unwrap()
    }

    #[test]
    fn chains_split_into_readable_and_writable_and_bad_shapes_are_refused() {
        let mem = memory();
        let mut q = queue_with(
            &mem,
            &[
                (0x8000, 16, 0),
                (0x9000, 512, F_WRITE),
                (0xa000, 1, F_WRITE),
            ],
        );
        let c = q.iter(&mem).unwrap().next().unwrap();
        let chain = Chain::parse(c, &mem).unwrap();
        assert_eq!(chain.readable.len(), 16);
        assert_eq!(chain.writable.len(), 513);
        let mut w = chain.writable.clone();
        let status = w.take_back(1).unwrap();
        assert_eq!(
            status.parts(),
            &[Segment {
                addr: 0xa000,
                len: 1
            }]
        );
        assert_eq!(w.len(), 512);

        let mut q = queue_with(&mem, &[(0x9000, 8, F_WRITE), (0x8000, 16, 0)]);
        let c = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(
            Chain::parse(c, &mem),
            Err(ChainError::ReadableAfterWritable)
        );

        let mut q = queue_with(&mem, &[(0x8000, 16, 0), (0xf_ff00, 0x200, F_WRITE)]);
        let c = q.iter(&mem).unwrap().next().unwrap();
        assert!(matches!(
            Chain::parse(c, &mem),
            Err(ChainError::OutOfMemory { addr: 0xf_ff00, .. })
        ));
    }

    #[test]
    fn segments_split_anywhere() {
        let mut s = Segments::default();
        s.push(Segment {
            addr: 0x1000,
            len: 10,
        });
        s.push(Segment {
            addr: 0x2000,
            len: 10,
        });
        let front = s.take_front(15).unwrap();
        assert_eq!(
            front.parts(),
            &[
                Segment {
                    addr: 0x1000,
                    len: 10
                },
                Segment {
                    addr: 0x2000,
                    len: 5
                }
            ]
        );
        assert_eq!(
            s.parts(),
            &[Segment {
                addr: 0x2005,
                len: 5
            }]
        );
        assert!(s.take_front(6).is_none());
        assert!(s.take_back(6).is_none());
        let back = s.take_back(5).unwrap();
        assert_eq!(back.len(), 5);
        assert!(s.is_empty());
    }

    #[test]
    fn files_move_straight_to_and_from_guest_pages() {
        let mem = memory();
        let dir = std::env::temp_dir().join(format!("tessera-chain-{}", std::process::id()));
        std::fs::write(&dir, (0..=255u8).cycle().take(8192).collect::<Vec<_>>()).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        let mut s = Segments::default();
        s.push(Segment {
            addr: 0x3000,
            len: 100,
        });
        s.push(Segment {
            addr: 0x5000,
            len: 4000,
        });
        assert_eq!(read_file_into(&f, 10, &s, &mem).unwrap(), 4100);
        let mut b = [0u8; 4];
        mem.read_slice(&mut b, GuestAddress(0x3000)).unwrap();
        assert_eq!(b, [10, 11, 12, 13]);
        mem.read_slice(&mut b, GuestAddress(0x5000)).unwrap();
        assert_eq!(b, [110, 111, 112, 113]);
        // Past the end: a short read, the rest untouched.
        assert_eq!(read_file_into(&f, 8000, &s, &mem).unwrap(), 192);
        mem.write_slice(&[0xee; 4100], GuestAddress(0x3000))
            .unwrap();
        let mut w = Segments::default();
        w.push(Segment {
            addr: 0x3000,
            len: 4,
        });
        write_file_from(&f, 8190, &w, &mem).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().len(), 8194);
        let _ = std::fs::remove_file(&dir);
    }
}
