//! virtio-blk (virtio spec §5.2) over a [`BlockBackend`].
//!
//! Requests: read, write, flush (`fdatasync` before the completion), get-ID
//! (the serial), discard and write-zeroes (`fallocate`), each checked
//! against the disk's size; anything else completes with `UNSUPP`. A chain
//! whose shape is wrong (no header, no status byte, data not a multiple of
//! 512 bytes, a range past the end of the disk) completes with `IOERR`; a
//! chain that points outside guest RAM completes with `IOERR` when its
//! status byte can still be written, and is returned with length 0
//! otherwise. A read-only disk refuses writes, discards and write-zeroes
//! with `IOERR` and offers `VIRTIO_BLK_F_RO`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, warn};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::chain::{Chain, ChainError, Segments, complete_each, read_file_into, write_file_from};
use super::{QueueError, QueueHandler, TYPE_BLOCK, VirtioDevice, read_le_fields};

/// Sector size of the protocol.
pub const SECTOR: u64 = 512;

/// Feature: `seg_max` is valid.
pub const F_SEG_MAX: u64 = 1 << 2;
/// Feature: read-only disk.
pub const F_RO: u64 = 1 << 5;
/// Feature: `blk_size` is valid.
pub const F_BLK_SIZE: u64 = 1 << 6;
/// Feature: flush command.
pub const F_FLUSH: u64 = 1 << 9;
/// Feature: `num_queues` is valid.
pub const F_MQ: u64 = 1 << 12;
/// Feature: discard command.
pub const F_DISCARD: u64 = 1 << 13;
/// Feature: write-zeroes command.
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Request types.
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Get the device ID (serial, 20 bytes).
pub const T_GET_ID: u32 = 8;
/// Discard.
pub const T_DISCARD: u32 = 11;
/// Write zeroes.
pub const T_WRITE_ZEROES: u32 = 13;

/// Status: done.
pub const S_OK: u8 = 0;
/// Status: failed.
pub const S_IOERR: u8 = 1;
/// Status: not supported.
pub const S_UNSUPP: u8 = 2;

/// Largest serial (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
/// Segments per request the driver may use (`seg_max`).
pub const SEG_MAX: u32 = 254;
/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
/// Largest discard / write-zeroes range, in sectors.
const MAX_RANGE_SECTORS: u32 = 0x3f_ffff;
/// Most discard / write-zeroes segments accepted in one request.
const MAX_RANGES: u64 = 256;

/// Where a disk's bytes live.
pub trait BlockBackend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Read at `offset` into guest memory; returns the bytes read.
    fn read_into(&self, offset: u64, segs: &Segments, mem: &GuestMemoryMmap) -> io::Result<u64>;
    /// Write guest memory at `offset`.
    fn write_from(&self, offset: u64, segs: &Segments, mem: &GuestMemoryMmap) -> io::Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Forget `len` bytes at `offset` (they may read as anything after).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Make `len` bytes at `offset` read as zero.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// Errors opening a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file could not be opened.
    #[error("disk {path}: cannot open it: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the image.
    #[error(
        "disk {path}: it is in use by another process (locked{}); stop that VM first, or open it with readonly=on if both only read it",
        if *.read_only { " for writing" } else { "" }
    )]
    Locked {
        /// The image.
        path: PathBuf,
        /// This VM asked for read-only access.
        read_only: bool,
    },
    /// The image's format cannot be used (with what to run).
    #[error("disk {path}: {why}")]
    Format {
        /// The image.
        path: PathBuf,
        /// Why, and what to do.
        why: String,
    },
    /// The image is empty or smaller than a sector.
    #[error("disk {path}: {size} bytes is smaller than one 512-byte sector")]
    TooSmall {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// Lock an image against other VMs: `shared` (read-only use) or exclusive
/// (writing). The lock lives as long as `file` stays open.
pub fn lock_file(file: &File, path: &Path, shared: bool) -> Result<(), DiskError> {
    let op = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock on a descriptor the caller owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(DiskError::Locked {
                path: path.to_owned(),
                read_only: shared,
            });
        }
        warn!(
            "disk {}: cannot lock it ({e}); used unlocked",
            path.display()
        );
    }
    Ok(())
}

/// A raw image file: sector *n* is at byte `n * 512`.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
}

impl RawFile {
    /// Open `path` (read-only or read-write) and lock it against other
    /// VMs: an exclusive lock for writing, a shared one for reading, so two
    /// VMs never write one image and none writes an image another reads.
    /// `sync_writes`: every write is durable when it completes (`O_DSYNC`;
    /// `cache=none`).
    pub fn open(path: &Path, read_only: bool, sync_writes: bool) -> Result<Self, DiskError> {
        let open_err = |source| DiskError::Open {
            path: path.to_owned(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        if sync_writes && !read_only {
            opts.custom_flags(libc::O_DSYNC);
        }
        let file = opts.open(path).map_err(open_err)?;
        lock_file(&file, path, read_only)?;
        let size = file.metadata().map_err(open_err)?.len();
        if size < SECTOR {
            return Err(DiskError::TooSmall {
                path: path.to_owned(),
                size,
            });
        }
        Ok(Self { file, size })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on a descriptor this struct owns; no memory is
        // passed.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_into(&self, offset: u64, segs: &Segments, mem: &GuestMemoryMmap) -> io::Result<u64> {
        read_file_into(&self.file, offset, segs, mem)
    }

    fn write_from(&self, offset: u64, segs: &Segments, mem: &GuestMemoryMmap) -> io::Result<()> {
        write_file_from(&self.file, offset, segs, mem)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            // A file system without ZERO_RANGE: a hole reads as zero too.
            Err(_) => self.discard(offset, len).or_else(|_| {
                use std::os::unix::fs::FileExt;
                let zeros = vec![0u8; 1 << 20];
                let mut at = offset;
                while at < offset + len {
                    let n = (offset + len - at).min(zeros.len() as u64) as usize;
                    self.file.write_all_at(&zeros[..n], at)?;
                    at += n as u64;
                }
                Ok(())
            }),
        }
    }
}

/// How a disk is presented.
#[derive(Debug, Clone)]
pub struct BlockOptions {
    /// A name for logs (`disk0`).
    pub name: String,
    /// Refuse writes.
    pub read_only: bool,
    /// The serial (`GET_ID`; at most 20 bytes are used).
    pub serial: Option<String>,
    /// Number of request queues.
    pub queues: u16,
}

/// A virtio-blk device.
pub struct Block {
    backend: Arc<dyn BlockBackend>,
    options: BlockOptions,
    config: Vec<u8>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("options", &self.options)
            .finish()
    }
}

impl Block {
    /// A disk over `backend`.
    pub fn new(backend: Arc<dyn BlockBackend>, options: BlockOptions) -> Self {
        let mut config = vec![0u8; 60];
        let put = |c: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            c[at..at + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut config, 0, &(backend.size() / SECTOR).to_le_bytes());
        put(&mut config, 12, &SEG_MAX.to_le_bytes());
        put(&mut config, 20, &(SECTOR as u32).to_le_bytes());
        put(&mut config, 34, &options.queues.max(1).to_le_bytes());
        put(&mut config, 36, &MAX_RANGE_SECTORS.to_le_bytes());
        put(&mut config, 40, &1u32.to_le_bytes());
        put(&mut config, 44, &1u32.to_le_bytes());
        put(&mut config, 48, &MAX_RANGE_SECTORS.to_le_bytes());
        put(&mut config, 52, &1u32.to_le_bytes());
        config[56] = 1;
        Self {
            backend,
            options,
            config,
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        TYPE_BLOCK
    }

    fn pci_class(&self) -> (u8, u8, u8) {
        // mass storage, "other"
        (0x01, 0x80, 0x00)
    }

    fn name(&self) -> String {
        format!("virtio-blk {}", self.options.name)
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; usize::from(self.options.queues.max(1))]
    }

    fn features(&self) -> u64 {
        let mut f = F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_MQ;
        if self.options.read_only {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        f
    }

    fn config_read(&self, offset: u64, data: &mut [u8]) {
        read_le_fields(&self.config, offset, data);
    }

    fn activate(&mut self, _features: u64) -> Box<dyn QueueHandler> {
        Box::new(BlockHandler {
            backend: self.backend.clone(),
            options: self.options.clone(),
        })
    }
}

/// Serves the request queues of one [`Block`].
pub struct BlockHandler {
    backend: Arc<dyn BlockBackend>,
    options: BlockOptions,
}

impl BlockHandler {
    /// Execute one request; returns (status, bytes written to the guest
    /// before the status byte), or the chain error.
    fn execute(&self, chain: &mut Chain, mem: &GuestMemoryMmap) -> Result<(u8, u64), ChainError> {
        let header = chain
            .readable
            .take_front(16)
            .ok_or(ChainError::TooShort("no 16-byte request header"))?;
        let mut h = [0u8; 16];
        header.read_to(mem, &mut h)?;
        let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let sector = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        let size = self.backend.size();
        let range_ok = |len: u64| {
            sector
                .checked_mul(SECTOR)
                .and_then(|o| o.checked_add(len))
                .is_some_and(|end| end <= size)
        };
        let io = |r: io::Result<()>, what: &str| match r {
            Ok(()) => S_OK,
            Err(e) => {
                warn!(
                    "{}: {what} at sector {sector} failed: {e}",
                    self.options.name
                );
                S_IOERR
            }
        };
        Ok(match ty {
            T_IN => {
                let data = &chain.writable;
                if data.len() % SECTOR != 0 || !range_ok(data.len()) {
                    (S_IOERR, 0)
                } else {
                    match self.backend.read_into(sector * SECTOR, data, mem) {
                        Ok(n) if n == data.len() => (S_OK, n),
                        Ok(n) => {
                            warn!(
                                "{}: short read at sector {sector}: {n} of {} bytes",
                                self.options.name,
                                data.len()
                            );
                            (S_IOERR, n)
                        }
                        Err(e) => {
                            warn!("{}: read at sector {sector} failed: {e}", self.options.name);
                            (S_IOERR, 0)
                        }
                    }
                }
            }
            T_OUT => {
                let data = &chain.readable;
                if self.options.read_only || data.len() % SECTOR != 0 || !range_ok(data.len()) {
                    (S_IOERR, 0)
                } else {
                    (
                        io(self.backend.write_from(sector * SECTOR, data, mem), "write"),
                        0,
                    )
                }
            }
            T_FLUSH => {
                if self.options.read_only {
                    (S_OK, 0)
                } else {
                    (io(self.backend.flush(), "flush"), 0)
                }
            }
            T_GET_ID => {
                let mut id = [0u8; ID_BYTES];
                if let Some(s) = &self.options.serial {
                    let b = s.as_bytes();
                    let n = b.len().min(ID_BYTES);
                    id[..n].copy_from_slice(&b[..n]);
                }
                let n = chain.writable.write_from(mem, &id)?;
                (S_OK, n as u64)
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if self.options.read_only {
                    return Ok((S_IOERR, 0));
                }
                let count = chain.readable.len() / 16;
                if count == 0 || count > MAX_RANGES || chain.readable.len() % 16 != 0 {
                    return Ok((S_IOERR, 0));
                }
                let mut raw = vec![0u8; chain.readable.len() as usize];
                chain.readable.read_to(mem, &mut raw)?;
                let mut status = S_OK;
                for r in raw.chunks_exact(16) {
                    let start = u64::from_le_bytes(r[0..8].try_into().unwrap_or([0; 8]));
                    let sectors = u32::from_le_bytes(r[8..12].try_into().unwrap_or([0; 4]));
                    let flags = u32::from_le_bytes(r[12..16].try_into().unwrap_or([0; 4]));
                    let end = start
                        .checked_add(u64::from(sectors))
                        .and_then(|e| e.checked_mul(SECTOR));
                    let bad_flags = if ty == T_DISCARD {
                        flags != 0
                    } else {
                        flags & !1 != 0
                    };
                    if sectors > MAX_RANGE_SECTORS || bad_flags || end.is_none_or(|e| e > size) {
                        status = S_IOERR;
                        break;
                    }
                    let (off, len) = (start * SECTOR, u64::from(sectors) * SECTOR);
                    let r = if ty == T_DISCARD {
                        self.backend.discard(off, len)
                    } else {
                        self.backend.write_zeroes(off, len)
                    };
                    status = io(
                        r,
                        if ty == T_DISCARD {
                            "discard"
                        } else {
                            "write-zeroes"
                        },
                    );
                    if status != S_OK {
                        break;
                    }
                }
                (status, 0)
            }
            other => {
                debug!("{}: request type {other} unsupported", self.options.name);
                (S_UNSUPP, 0)
            }
        })
    }
}

impl QueueHandler for BlockHandler {
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<usize, QueueError> {
        complete_each(index, queue, mem, |parsed| match parsed {
            Ok(mut chain) => match chain.writable.take_back(1) {
                None => {
                    warn!(
                        "{}: a request without a status byte: dropped",
                        self.options.name
                    );
                    0
                }
                Some(status_byte) => {
                    let (status, written) = match self.execute(&mut chain, mem) {
                        Ok(r) => r,
                        Err(e) => {
                            warn!("{}: malformed request: {e}", self.options.name);
                            (S_IOERR, 0)
                        }
                    };
                    match status_byte.write_from(mem, &[status]) {
                        Ok(_) => written as u32 + 1,
                        Err(_) => 0,
                    }
                }
            },
            Err(e) => {
                warn!("{}: malformed request: {e}", self.options.name);
                0
            }
        })
    }
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
