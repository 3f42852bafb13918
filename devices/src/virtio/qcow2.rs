//! qcow2 images (v2 and v3) with backing chains, behind [`BlockBackend`].
//!
//! The format work is imago's (`imago` 0.2, sync): cluster allocation,
//! refcounts, copy-on-write from the backing file, zero clusters, discard,
//! compressed (zlib) clusters read. What is ours:
//! - the header is read first, so an image imago would refuse gets an
//!   error that says what to run: the dirty bit (`qemu-img check -r all`),
//!   the corrupt bit, and features imago does not support (zstd
//!   compression, external data files, extended L2: `qemu-img convert`);
//! - every image of the chain is locked like a raw image: the top one
//!   exclusively when writable, the backing files shared, so no VM writes a
//!   golden image while overlays use it, and two VMs never write one
//!   overlay;
//! - a guest flush writes imago's metadata caches and then `fdatasync`s,
//!   so a flush the guest saw completed survives a SIGKILL of tessera.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};
use vm_memory::GuestMemoryMmap;

use super::block::{BlockBackend, DiskError, lock_file};
use super::chain::Segments;

/// The qcow2 magic, `QFI\xfb`.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Longest backing chain followed.
const MAX_CHAIN: usize = 16;

/// Incompatible feature bits.
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

/// What the header of a qcow2 file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// The backing file as written in the image (relative to its directory).
    pub backing: Option<String>,
    /// Incompatible feature bits (v3; 0 for v2).
    pub incompatible: u64,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// True when `path` starts with the qcow2 magic.
pub fn is_qcow2(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == MAGIC
}

/// Read the header of the qcow2 image `file`.
pub fn read_header(file: &mut File) -> io::Result<Header> {
    let mut h = [0u8; 104];
    file.seek(SeekFrom::Start(0))?;
    let n = file.read(&mut h)?;
    if n < 72 || h[0..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a qcow2 image",
        ));
    }
    let version = be32(&h, 4);
    let incompatible = if version >= 3 && n >= 80 {
        be64(&h, 72)
    } else {
        0
    };
    let (off, len) = (be64(&h, 8), be32(&h, 16));
    let backing = if off != 0 && len > 0 && len <= 1023 {
        let mut name = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(off))?;
        file.read_exact(&mut name)?;
        Some(String::from_utf8_lossy(&name).into_owned())
    } else {
        None
    };
    Ok(Header {
        version,
        size: be64(&h, 24),
        backing,
        incompatible,
    })
}

/// Why a qcow2 image cannot be opened, with what to do.
fn refusal(path: &Path, h: &Header) -> Option<String> {
    let p = path.display();
    if !(2..=3).contains(&h.version) {
        return Some(format!(
            "qcow2 version {} is not supported (2 and 3 are); convert it with 'qemu-img convert -O qcow2 {p} NEW.qcow2'",
            h.version
        ));
    }
    if h.incompatible & INCOMPAT_DIRTY != 0 {
        return Some(format!(
            "the image is marked dirty (a VMM using lazy refcounts stopped without closing it); repair it with 'qemu-img check -r all {p}'"
        ));
    }
    if h.incompatible & INCOMPAT_CORRUPT != 0 {
        return Some(format!(
            "the image is marked corrupt; see 'qemu-img check {p}' and repair it with 'qemu-img check -r all {p}'"
        ));
    }
    let unsupported = h.incompatible & !(INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
    if unsupported != 0 {
        let mut what = Vec::new();
        if unsupported & INCOMPAT_COMPRESSION != 0 {
            what.push("zstd compression");
        }
        if unsupported & INCOMPAT_DATA_FILE != 0 {
            what.push("an external data file");
        }
        if unsupported & INCOMPAT_EXTL2 != 0 {
            what.push("extended L2 entries");
        }
        if unsupported & !(INCOMPAT_COMPRESSION | INCOMPAT_DATA_FILE | INCOMPAT_EXTL2) != 0 {
            what.push("unknown incompatible features");
        }
        return Some(format!(
            "the image uses {}, which tessera does not support; convert it with 'qemu-img convert -O qcow2 {p} NEW.qcow2'",
            what.join(" and ")
        ));
    }
    None
}

/// A qcow2 image (and its backing chain).
pub struct Qcow2Disk {
    access: Mutex<FormatAccess<imago::file::File>>,
    size: u64,
    sync_writes: bool,
    /// The locks on every file of the chain, held while the disk is open.
    _locks: Vec<File>,
}

impl std::fmt::Debug for Qcow2Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Disk")
            .field("size", &self.size)
            .finish()
    }
}

impl Qcow2Disk {
    /// Open `path` and its backing chain. `sync_writes`: every write is
    /// durable when it completes (`cache=none`).
    pub fn open(path: &Path, read_only: bool, sync_writes: bool) -> Result<Self, DiskError> {
        let bad = |why: String| DiskError::Format {
            path: path.to_owned(),
            why,
        };
        let mut locks = Vec::new();
        let mut at: PathBuf = path.to_owned();
        let mut size = None;
        for depth in 0..MAX_CHAIN {
            let top = depth == 0;
            let mut f = File::open(&at).map_err(|source| DiskError::Open {
                path: at.clone(),
                source,
            })?;
            lock_file(&f, &at, !top || read_only)?;
            if !is_qcow2(&at) {
                // a raw backing file ends the chain
                locks.push(f);
                break;
            }
            let h = read_header(&mut f).map_err(|e| bad(format!("{}: {e}", at.display())))?;
            if let Some(why) = refusal(&at, &h) {
                return Err(bad(why));
            }
            size.get_or_insert(h.size);
            locks.push(f);
            match h.backing {
                None => break,
                Some(name) => {
                    let p = Path::new(&name);
                    at = if p.is_absolute() {
                        p.to_owned()
                    } else {
                        at.parent().unwrap_or(Path::new(".")).join(p)
                    };
                }
            }
            if depth + 1 == MAX_CHAIN {
                return Err(bad(format!(
                    "the backing chain is longer than {MAX_CHAIN} images"
                )));
            }
        }
        let qcow2 = Qcow2::<imago::file::File>::builder_path(path)
            .write(!read_only)
            .open(PermissiveImplicitOpenGate::default())
            .map_err(|e| bad(e.to_string()))?;
        let access = FormatAccess::new(qcow2);
        let size = size.unwrap_or(access.size());
        Ok(Self {
            access: Mutex::new(access),
            size,
            sync_writes,
            _locks: locks,
        })
    }

    fn access(&self) -> std::sync::MutexGuard<'_, FormatAccess<imago::file::File>> {
        self.access.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockBackend for Qcow2Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_into(&self, offset: u64, segs: &Segments, mem: &GuestMemoryMmap) -> io::Result<u64> {
        let slices = segs.slices(mem).map_err(io::Error::other)?;
        let (vec, _guard) = IoVectorMut::from_volatile_slice(&slices);
        self.access().readv(vec, offset)?;
        Ok(segs.len())
    }

    fn write_from(&self, offset: u64, segs: &Segments, mem: &GuestMemoryMmap) -> io::Result<()> {
        let slices = segs.slices(mem).map_err(io::Error::other)?;
        let (vec, _guard) = IoVector::from_volatile_slice(&slices);
        let a = self.access();
        a.writev(vec, offset)?;
        if self.sync_writes {
            a.flush()?;
            a.sync()?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let a = self.access();
        a.flush()?;
        a.sync()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.access().discard_to_any(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let a = self.access();
        a.write_zeroes(offset, len)?;
        if self.sync_writes {
            a.flush()?;
            a.sync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "qcow2_tests.rs"]
mod tests;
