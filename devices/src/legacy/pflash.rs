//! CFI parallel flash with the Intel/Sharp command set: the PC's system
//! flash that OVMF keeps its UEFI variables in.
//!
//! The model follows QEMU's `pflash_cfi01` as the PC machine configures it
//! (`hw/i386/pc_sysfw.c`: one 8-bit device, 4 KiB sectors, all ID codes 0,
//! little-endian), which is what OVMF's `QemuFlashFvbServicesRuntimeDxe`
//! (`QemuFlash.c`) was written against. Supported commands:
//!
//! | first write | meaning | reads afterwards return |
//! |---|---|---|
//! | `0xFF`, `0xF0`, `0x00` | read array | the contents |
//! | `0x70` | read status | the status register |
//! | `0x50` | clear status (status := 0), then read array | the contents |
//! | `0x10`, `0x40` + data write | program the written byte(s) | the status register |
//! | `0x20` + `0xD0` | erase the 4 KiB block the confirm write addresses | the status register |
//! | `0x60` + `0xD0`/`0x01` | block (un)lock: accepted, no effect (as QEMU) | the status register |
//! | `0x90` | read identifier codes (all 0, as QEMU's PC flash) | the codes |
//! | `0x98` | CFI query (QEMU's table) | the table |
//!
//! Status register: bit 7 (ready) is set after every program or erase and
//! at reset; bit 5 (erase error) and bit 4 (program error) report an erase
//! or program that was refused (read-only device, offset outside the
//! device, host I/O error) and are both set by an improper sequence (erase
//! setup followed by something other than confirm or read array, or the
//! unsupported write-to-buffer command `0xE8`). Clear status sets the
//! whole register to 0 — including bit 7, as QEMU does and as OVMF's probe
//! relies on (it expects `0x00` from read status after clear status).
//!
//! Differences from QEMU, all invisible to OVMF: programming follows flash
//! physics (`new = old & data`, bits only go from 1 to 0; QEMU overwrites);
//! the erase happens at the confirm write (QEMU erases at the setup write,
//! so an aborted sequence already destroyed the block); an improper erase
//! sequence and `0xE8` set the error bits and leave the device in read
//! status mode (QEMU silently returns to read array / half-emulates `0xE8`);
//! any write in CFI-query mode is taken as a new command (QEMU only leaves
//! query mode on `0xFF`).
//!
//! Accesses may be 1, 2, 4 or 8 bytes wide at any offset. In read-array
//! mode a wide read returns the bytes at those offsets (bytes beyond the
//! end read `0xFF`). A program data write programs every byte written. A
//! command is the low byte of the written value. Status reads follow
//! QEMU's "no device width" rule: 1 and 2 byte reads return the status in
//! the low byte, wider reads return it in bytes 0 and 2.
//!
//! # Read-array mode and memory mapping
//!
//! In read-array mode the device reads exactly like memory, so the VMM may
//! map [`Pflash::contents`] into the guest as read-only memory (QEMU's
//! "romd" mode): reads then never exit, writes do and reach
//! [`BusDevice::write`]. In every other mode each read must reach the
//! device. A write returns [`Effect::FlashMode`] exactly when it switches
//! the device between the two (`read_array: false` on leaving read-array
//! mode, `true` on returning to it); when it returns `true`, the bytes in
//! [`Pflash::take_dirty`] have changed since the mapping was last filled.
//!
//! # Persistence and crash guarantees
//!
//! A flash built with [`Pflash::new`] on a writable file writes every
//! program and erase through to the file before the guest can observe it
//! (before the write that caused it returns; tessera's VMM may collect the
//! writes of a programming sequence in KVM's coalesced ring, and then
//! replays them before it handles any later guest access, so no device,
//! this one included, answers the guest before they are applied), with one positioned write
//! (`pwrite`) of exactly the affected bytes: a program writes the 1-8
//! programmed bytes, an erase writes the whole 4 KiB block of `0xFF` in one
//! call. The in-memory copy is updated only after the file write succeeded,
//! so it always holds what the guest was told.
//!
//! * **The VMM process dies (SIGKILL, panic, OOM kill) at any time**: every
//!   program and erase the guest completed is in the file (it is in the
//!   host's page cache, which survives the process). An erase is never
//!   half-applied: Linux's generic write path (ext4, xfs, btrfs, tmpfs)
//!   checks for fatal signals only between pages of a write, and a block
//!   is exactly one page-aligned 4 KiB page of the file. A program is
//!   equally atomic unless a wide (2-8 byte) write straddles a 4 KiB
//!   boundary, which OVMF (byte writes only) never does.
//! * **The host loses power or crashes**: with [`Durability::Synced`] (the
//!   default) the file is `fdatasync`ed after every erase and whenever the
//!   guest returns the device to read-array mode after programming it
//!   (OVMF does so at the end of every `QemuFlashWrite`, i.e. after every
//!   variable-store update step), and on [`Pflash::flush`], [`Pflash::reset`]
//!   and drop. Updates completed before such a point survive; later ones
//!   may be lost, and whether a 4 KiB block write interrupted by power loss
//!   reaches the disk whole depends on the filesystem and disk (POSIX does
//!   not promise it); OVMF's fault-tolerant-write protocol is designed to
//!   recover from exactly that kind of torn flash operation, and the sync
//!   points keep the ordering of its steps. With [`Durability::Buffered`]
//!   only [`Pflash::flush`] and drop sync: host power loss may lose anything
//!   since the last sync, process death still loses nothing.
//!
//! A failed file write is logged, counted ([`Pflash::io_errors`]) and
//! reported to the guest with the program/erase error status bit; the
//! contents are left as they were (and the old bytes are written back to
//! the file, best effort, in case the failed write was partial). The
//! device never panics.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use log::{debug, error, warn};

use crate::{BusDevice, Effect, Effects, fill_le, le_value};

/// Erase block ("sector") size: QEMU's PC system flash uses 4 KiB
/// (`FLASH_SECTOR_SIZE` in `hw/i386/pc_sysfw.c`), matching OVMF's
/// `PcdOvmfFirmwareBlockSize`.
pub const SECTOR_SIZE: usize = 4096;

/// Largest supported device: the CFI erase-region descriptor counts at most
/// 65,536 blocks.
pub const MAX_LEN: u64 = SECTOR_SIZE as u64 * 0x1_0000;

/// Status register: write state machine ready.
pub const STATUS_READY: u8 = 0x80;
/// Status register: erase error (also set by an improper command sequence).
pub const STATUS_ERASE_ERROR: u8 = 0x20;
/// Status register: program error (also set by an improper command sequence).
pub const STATUS_PROGRAM_ERROR: u8 = 0x10;

/// Commands (first write of a sequence).
const CMD_READ_ARRAY: u8 = 0xFF;
const CMD_READ_ARRAY_AMD: u8 = 0xF0;
const CMD_READ_ARRAY_QEMU: u8 = 0x00;
const CMD_PROGRAM: u8 = 0x10;
const CMD_PROGRAM_ALT: u8 = 0x40;
const CMD_ERASE_SETUP: u8 = 0x20;
const CMD_CLEAR_STATUS: u8 = 0x50;
const CMD_LOCK_SETUP: u8 = 0x60;
const CMD_READ_STATUS: u8 = 0x70;
const CMD_READ_ID: u8 = 0x90;
const CMD_CFI_QUERY: u8 = 0x98;
const CMD_WRITE_BUFFER: u8 = 0xE8;
/// Second writes.
const CMD_CONFIRM: u8 = 0xD0;
const CMD_LOCK_CLEAR_ALT: u8 = 0x01;

/// Identifier codes id0..id3 (QEMU's PC machine passes 0 for all four).
const IDENT: [u8; 4] = [0, 0, 0, 0];

/// Size of QEMU's CFI table; query offsets at or past it read 0.
const CFI_LEN: usize = 0x52;

/// How many I/O errors are logged individually before only every
/// power-of-two-th one is.
const LOGGED_IO_ERRORS: u64 = 8;

/// Errors creating a flash device.
#[derive(Debug, thiserror::Error)]
pub enum PflashError {
    /// The requested size is zero, not a multiple of [`SECTOR_SIZE`] or
    /// larger than [`MAX_LEN`].
    #[error(
        "flash size {0} is invalid: it must be a non-zero multiple of {SECTOR_SIZE} bytes, at most {MAX_LEN}"
    )]
    BadSize(u64),
    /// The backing file's size differs from the requested size.
    #[error("flash backing file is {actual} bytes, expected {expected}")]
    FileSize {
        /// The requested device size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// Reading the backing file failed.
    #[error("reading the flash backing file: {0}")]
    Io(#[from] io::Error),
}

/// When a writable flash syncs its backing file to stable storage (see the
/// module documentation for what each guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` after every erase, when the guest returns to read-array
    /// mode after programming, on flush, reset and drop.
    #[default]
    Synced,
    /// `fdatasync` only on flush and drop (survives process death, not
    /// host power loss).
    Buffered,
}

/// The device's command state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads return the contents.
    ReadArray,
    /// Reads return the status register (after 0x70, a program, an erase,
    /// a lock command or an error).
    Status,
    /// 0x10/0x40 seen: the next write is the data. Reads return status.
    ProgramSetup,
    /// 0x20 seen: the next write should be the confirm. Reads return status.
    EraseSetup,
    /// 0x60 seen: the next write is the lock/unlock confirm. Reads return
    /// status.
    LockSetup,
    /// Reads return identifier codes.
    ReadId,
    /// Reads return the CFI query table.
    CfiQuery,
}

/// A CFI flash device (see the module documentation).
pub struct Pflash {
    contents: Vec<u8>,
    /// The file every change is written through to; `None` for a ROM.
    file: Option<File>,
    read_only: bool,
    durability: Durability,
    mode: Mode,
    status: u8,
    /// Changes written to the file since its last sync.
    unsynced: bool,
    /// Bytes changed since the last [`Pflash::take_dirty`].
    dirty: Option<Range<usize>>,
    io_errors: u64,
    cfi: [u8; CFI_LEN],
}

impl std::fmt::Debug for Pflash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pflash")
            .field("len", &self.contents.len())
            .field("read_only", &self.read_only)
            .field("persistent", &self.file.is_some())
            .field("durability", &self.durability)
            .field("mode", &self.mode)
            .field("status", &self.status)
            .field("io_errors", &self.io_errors)
            .finish_non_exhaustive()
    }
}

impl Pflash {
    /// A flash of `len` bytes backed by `file`, whose size must be exactly
    /// `len`; the contents are read from it now. When `read_only`, the
    /// file is never written (it may be opened read-only) and the guest's
    /// program and erase commands fail with the error status bits (the
    /// OVMF CODE flash). Otherwise every change is written through to the
    /// file (open it read-write) with [`Durability::Synced`].
    pub fn new(file: File, len: u64, read_only: bool) -> Result<Self, PflashError> {
        check_len(len)?;
        let actual = file.metadata()?.len();
        if actual != len {
            return Err(PflashError::FileSize {
                expected: len,
                actual,
            });
        }
        let size = usize::try_from(len).map_err(|_| PflashError::BadSize(len))?;
        let mut contents = vec![0u8; size];
        file.read_exact_at(&mut contents, 0)?;
        Ok(Self::build(contents, Some(file), read_only))
    }

    /// A read-only flash holding `contents` and backed by no file (e.g. a
    /// CODE image already read into memory).
    pub fn rom(contents: Vec<u8>) -> Result<Self, PflashError> {
        check_len(contents.len() as u64)?;
        Ok(Self::build(contents, None, true))
    }

    /// Use `durability` instead of the default [`Durability::Synced`].
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    fn build(contents: Vec<u8>, file: Option<File>, read_only: bool) -> Self {
        let cfi = cfi_table(contents.len());
        Self {
            contents,
            file,
            read_only,
            durability: Durability::default(),
            mode: Mode::ReadArray,
            status: STATUS_READY,
            unsynced: false,
            dirty: None,
            io_errors: 0,
            cfi,
        }
    }

    /// Size of the device in bytes.
    pub fn len(&self) -> usize {
        self.contents.len()
    }

    /// Always false: a flash has at least one block.
    pub fn is_empty(&self) -> bool {
        self.contents.is_empty()
    }

    /// The device's contents, as read in read-array mode.
    pub fn contents(&self) -> &[u8] {
        &self.contents
    }

    /// True when the guest cannot change the contents.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// True in read-array mode, when the contents may be mapped as
    /// read-only guest memory.
    pub fn is_read_array(&self) -> bool {
        self.mode == Mode::ReadArray
    }

    /// The status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Number of failed writes or syncs of the backing file so far.
    pub fn io_errors(&self) -> u64 {
        self.io_errors
    }

    /// The byte range of [`Pflash::contents`] changed since the previous
    /// call (`None` if nothing changed): what a VMM that maps the contents
    /// must copy again before remapping them.
    pub fn take_dirty(&mut self) -> Option<Range<usize>> {
        self.dirty.take()
    }

    /// Sync the backing file to stable storage if anything was written
    /// since the last sync. The VMM calls this on exit (drop does it too,
    /// but can only log a failure).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Machine reset: back to read-array mode with a ready status; the
    /// backing file is synced. Returns the mode flip, if any.
    pub fn reset(&mut self) -> Effects {
        let was = self.is_read_array();
        self.mode = Mode::ReadArray;
        self.status = STATUS_READY;
        self.sync_logged();
        flip(was, true)
    }

    /// Handle the first write of a command sequence.
    fn command(&mut self, offset: u64, cmd: u8) {
        match cmd {
            CMD_READ_ARRAY | CMD_READ_ARRAY_AMD | CMD_READ_ARRAY_QEMU => self.enter_read_array(),
            CMD_PROGRAM | CMD_PROGRAM_ALT => self.mode = Mode::ProgramSetup,
            CMD_ERASE_SETUP => self.mode = Mode::EraseSetup,
            CMD_CLEAR_STATUS => {
                self.status = 0;
                self.enter_read_array();
            }
            CMD_LOCK_SETUP => self.mode = Mode::LockSetup,
            CMD_READ_STATUS => self.mode = Mode::Status,
            CMD_READ_ID => self.mode = Mode::ReadId,
            CMD_CFI_QUERY => self.mode = Mode::CfiQuery,
            CMD_WRITE_BUFFER => {
                debug!("pflash: write-to-buffer (0xE8) at {offset:#x} is not supported");
                self.sequence_error();
            }
            other => {
                debug!("pflash: unknown command {other:#04x} at {offset:#x}; back to read array");
                self.enter_read_array();
            }
        }
    }

    fn enter_read_array(&mut self) {
        self.mode = Mode::ReadArray;
        if self.durability == Durability::Synced {
            self.sync_logged();
        }
    }

    /// An improper command sequence: both error bits, read status mode.
    fn sequence_error(&mut self) {
        self.status |= STATUS_READY | STATUS_PROGRAM_ERROR | STATUS_ERASE_ERROR;
        self.mode = Mode::Status;
    }

    /// The data cycle of a program command: program `data` at `offset`.
    fn program(&mut self, offset: u64, data: &[u8]) {
        self.mode = Mode::Status;
        self.status |= STATUS_READY;
        if self.read_only {
            debug!("pflash: program at {offset:#x} refused: read-only device");
            self.status |= STATUS_PROGRAM_ERROR;
            return;
        }
        let Some(range) = self.range(offset, data.len()) else {
            debug!("pflash: program at {offset:#x} is outside the device");
            self.status |= STATUS_PROGRAM_ERROR;
            return;
        };
        let old = &self.contents[range.clone()];
        let new: Vec<u8> = old.iter().zip(data).map(|(o, d)| o & d).collect();
        if new == old {
            return;
        }
        if self.write_through(range.start, &new) {
            self.apply(range, &new);
        } else {
            self.status |= STATUS_PROGRAM_ERROR;
        }
    }

    /// The confirm cycle of an erase: erase the block holding `offset`.
    fn erase(&mut self, offset: u64) {
        self.mode = Mode::Status;
        self.status |= STATUS_READY;
        if self.read_only {
            debug!("pflash: erase at {offset:#x} refused: read-only device");
            self.status |= STATUS_ERASE_ERROR;
            return;
        }
        let block = offset & !(SECTOR_SIZE as u64 - 1);
        let Some(range) = self.range(block, SECTOR_SIZE) else {
            debug!("pflash: erase at {offset:#x} is outside the device");
            self.status |= STATUS_ERASE_ERROR;
            return;
        };
        if self.contents[range.clone()].iter().all(|&b| b == 0xFF) {
            return;
        }
        let erased = [0xFFu8; SECTOR_SIZE];
        if !self.write_through(range.start, &erased) {
            self.status |= STATUS_ERASE_ERROR;
            return;
        }
        self.apply(range, &erased);
        if self.durability == Durability::Synced && !self.sync_logged() {
            // The block is erased in the file's page cache but may not be on
            // disk: tell the guest something went wrong.
            self.status |= STATUS_ERASE_ERROR;
        }
    }

    /// `len` bytes at `offset`, if they are all inside the device.
    fn range(&self, offset: u64, len: usize) -> Option<Range<usize>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.contents.len()).then_some(start..end)
    }

    /// Copy `bytes` into the contents at `range` (already in the file).
    fn apply(&mut self, range: Range<usize>, bytes: &[u8]) {
        self.contents[range.clone()].copy_from_slice(bytes);
        self.dirty = Some(match self.dirty.take() {
            Some(d) => d.start.min(range.start)..d.end.max(range.end),
            None => range,
        });
    }

    /// Write `bytes` to the backing file at `start`. True on success (or
    /// when there is no file). On failure the old contents are written
    /// back, best effort, in case the write was partial.
    fn write_through(&mut self, start: usize, bytes: &[u8]) -> bool {
        let Some(file) = &self.file else {
            return true;
        };
        match file.write_all_at(bytes, start as u64) {
            Ok(()) => {
                self.unsynced = true;
                true
            }
            Err(e) => {
                let old = &self.contents[start..start + bytes.len()];
                let restored = file.write_all_at(old, start as u64);
                self.io_error(
                    &format!(
                        "writing {} bytes at {start:#x} (restoring the old bytes: {})",
                        bytes.len(),
                        match &restored {
                            Ok(()) => "done".to_string(),
                            Err(e) => e.to_string(),
                        }
                    ),
                    &e,
                );
                false
            }
        }
    }

    /// Sync the backing file if needed; log failures. True on success.
    fn sync_logged(&mut self) -> bool {
        match self.flush() {
            Ok(()) => true,
            Err(e) => {
                self.io_error("syncing", &e);
                false
            }
        }
    }

    fn io_error(&mut self, what: &str, e: &io::Error) {
        self.io_errors += 1;
        let n = self.io_errors;
        if n <= LOGGED_IO_ERRORS || n.is_power_of_two() {
            error!("pflash: I/O error #{n} on the backing file, {what}: {e}");
        }
    }

    /// The value a status read of `width` bytes returns (QEMU, no device
    /// width: the status in byte 0, and also byte 2 for wider reads).
    fn status_value(&self, width: usize) -> u64 {
        let s = u64::from(self.status);
        if width > 2 { s | s << 16 } else { s }
    }
}

impl Drop for Pflash {
    fn drop(&mut self) {
        self.sync_logged();
    }
}

impl BusDevice for Pflash {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.mode {
            Mode::ReadArray => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = offset
                        .checked_add(i as u64)
                        .and_then(|o| usize::try_from(o).ok())
                        .and_then(|o| self.contents.get(o))
                        .copied()
                        .unwrap_or(0xFF);
                }
            }
            Mode::Status | Mode::ProgramSetup | Mode::EraseSetup | Mode::LockSetup => {
                fill_le(data, self.status_value(data.len()));
            }
            Mode::ReadId => {
                let value = match offset & 0xFF {
                    0 => u16::from(IDENT[0]) << 8 | u16::from(IDENT[1]),
                    1 => u16::from(IDENT[2]) << 8 | u16::from(IDENT[3]),
                    _ => 0,
                };
                fill_le(data, u64::from(value));
            }
            Mode::CfiQuery => {
                let index = (offset & 0xFF) as usize;
                fill_le(data, u64::from(self.cfi.get(index).copied().unwrap_or(0)));
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        if data.is_empty() {
            return Effects::none();
        }
        let was = self.is_read_array();
        let cmd = le_value(data) as u8;
        match self.mode {
            Mode::ProgramSetup => self.program(offset, data),
            Mode::EraseSetup => match cmd {
                CMD_CONFIRM => self.erase(offset),
                CMD_READ_ARRAY => self.enter_read_array(),
                other => {
                    warn!(
                        "pflash: erase setup followed by {other:#04x} instead of confirm at {offset:#x}"
                    );
                    self.sequence_error();
                }
            },
            Mode::LockSetup => match cmd {
                CMD_CONFIRM | CMD_LOCK_CLEAR_ALT => {
                    self.status |= STATUS_READY;
                    self.mode = Mode::Status;
                }
                _ => self.enter_read_array(),
            },
            Mode::ReadArray | Mode::Status | Mode::ReadId | Mode::CfiQuery => {
                self.command(offset, cmd)
            }
        }
        flip(was, self.is_read_array())
    }
}

/// The [`Effect::FlashMode`] for a change from `was` to `now`, if any.
fn flip(was: bool, now: bool) -> Effects {
    if was == now {
        Effects::none()
    } else {
        Effects::one(Effect::FlashMode { read_array: now })
    }
}

fn check_len(len: u64) -> Result<(), PflashError> {
    if len == 0 || len % SECTOR_SIZE as u64 != 0 || len > MAX_LEN {
        return Err(PflashError::BadSize(len));
    }
    Ok(())
}

/// QEMU's CFI table for a one-chip, 8-bit-wide device of `len` bytes in
/// 4 KiB blocks (`pflash_cfi01_fill_cfi_table`).
fn cfi_table(len: usize) -> [u8; CFI_LEN] {
    let blocks = len / SECTOR_SIZE;
    let mut t = [0u8; CFI_LEN];
    t[0x10] = b'Q';
    t[0x11] = b'R';
    t[0x12] = b'Y';
    // Primary command set: Intel/Sharp extended.
    t[0x13] = 0x01;
    t[0x14] = 0x00;
    // Primary extended table at 0x31.
    t[0x15] = 0x31;
    t[0x16] = 0x00;
    // Vcc min/max; no Vpp.
    t[0x1B] = 0x45;
    t[0x1C] = 0x55;
    // Timeouts.
    t[0x1F] = 0x07;
    t[0x20] = 0x07;
    t[0x21] = 0x0A;
    t[0x22] = 0x00;
    t[0x23] = 0x04;
    t[0x24] = 0x04;
    t[0x25] = 0x04;
    t[0x26] = 0x00;
    // Device size as QEMU reports it: ctz(len), which is log2(len) for a
    // power-of-two size.
    t[0x27] = len.trailing_zeros() as u8;
    // Interface: x8/x16.
    t[0x28] = 0x02;
    t[0x29] = 0x00;
    // Max bytes in a buffered write: 2^8 (bank width 1).
    t[0x2A] = 0x08;
    t[0x2B] = 0x00;
    // One uniform erase region: `blocks` blocks of SECTOR_SIZE.
    t[0x2C] = 0x01;
    let count = blocks.saturating_sub(1);
    t[0x2D] = count as u8;
    t[0x2E] = (count >> 8) as u8;
    t[0x2F] = (SECTOR_SIZE >> 8) as u8;
    t[0x30] = (SECTOR_SIZE >> 16) as u8;
    // Primary extended query table.
    t[0x31] = b'P';
    t[0x32] = b'R';
    t[0x33] = b'I';
    t[0x34] = b'1';
    t[0x35] = b'0';
    // One protection field.
    t[0x3F] = 0x01;
    t
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn with(contents: &[u8]) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "tessera-pflash-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn rw(&self) -> File {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.0)
                .unwrap()
        }

        fn ro(&self) -> File {
            File::open(&self.0).unwrap()
        }

        /// The file's bytes as another process would see them now.
        fn bytes(&self) -> Vec<u8> {
            std::fs::read(&self.0).unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The first bytes of Debian's OVMF_VARS_4M.fd: a 16-byte zero vector,
    /// then the NV-data firmware-volume GUID (first byte 0x8D), padded to
    /// `blocks` blocks with a recognisable pattern.
    fn vars_image(blocks: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..blocks * SECTOR_SIZE)
            .map(|i| (i % 251) as u8 | 0x01)
            .collect();
        v[..16].fill(0);
        v[16..32].copy_from_slice(&[
            0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b,
            0x4f, 0x50,
        ]);
        v
    }

    fn flash(blocks: usize) -> (TempFile, Pflash) {
        let file = TempFile::with(&vars_image(blocks));
        let dev = Pflash::new(file.rw(), (blocks * SECTOR_SIZE) as u64, false).unwrap();
        (file, dev)
    }

    fn rd8(dev: &mut dyn BusDevice, offset: u64) -> u8 {
        let mut b = [0u8; 1];
        dev.read(offset, &mut b);
        b[0]
    }

    fn wr8(dev: &mut dyn BusDevice, offset: u64, v: u8) -> Effects {
        dev.write(offset, &[v])
    }

    fn to_array(on: bool) -> Effects {
        Effects::one(Effect::FlashMode { read_array: on })
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Probe {
        NoLocation,
        Ram,
        Rom,
        Flash,
        Unknown,
    }

    /// OVMF's `QemuFlashDetected` (QemuFlash.c), statement for statement,
    /// through byte accesses at the start of the variable store.
    fn ovmf_probe(dev: &mut dyn BusDevice, block_size: u64) -> Probe {
        const CLEAR_STATUS_CMD: u8 = 0x50;
        const READ_STATUS_CMD: u8 = 0x70;
        const READ_ARRAY_CMD: u8 = 0xFF;
        const CLEARED_ARRAY_STATUS: u8 = 0x00;
        let mut offset = 0;
        while offset < block_size {
            let probe = rd8(dev, offset);
            if probe != CLEAR_STATUS_CMD
                && probe != READ_STATUS_CMD
                && probe != CLEARED_ARRAY_STATUS
            {
                break;
            }
            offset += 1;
        }
        if offset >= block_size {
            return Probe::NoLocation;
        }
        let original = rd8(dev, offset);
        let _ = wr8(dev, offset, CLEAR_STATUS_CMD);
        let probe = rd8(dev, offset);
        if original != CLEAR_STATUS_CMD && probe == CLEAR_STATUS_CMD {
            let _ = wr8(dev, offset, original);
            return Probe::Ram;
        }
        let _ = wr8(dev, offset, READ_STATUS_CMD);
        let probe = rd8(dev, offset);
        if probe == original {
            Probe::Rom
        } else if probe == READ_STATUS_CMD {
            let _ = wr8(dev, offset, original);
            Probe::Ram
        } else if probe == CLEARED_ARRAY_STATUS {
            let _ = wr8(dev, offset, READ_ARRAY_CMD);
            Probe::Flash
        } else {
            Probe::Unknown
        }
    }

    /// OVMF's `QemuFlashWrite`: program each byte, then read array at the
    /// last byte. Returns every write's effects.
    fn ovmf_write(dev: &mut Pflash, offset: u64, bytes: &[u8]) -> Vec<Effects> {
        let mut effects = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            effects.push(wr8(dev, offset + i as u64, CMD_PROGRAM));
            effects.push(wr8(dev, offset + i as u64, b));
        }
        if !bytes.is_empty() {
            effects.push(wr8(dev, offset + bytes.len() as u64 - 1, CMD_READ_ARRAY));
        }
        effects
    }

    /// OVMF's `QemuFlashEraseBlock`.
    fn ovmf_erase(dev: &mut Pflash, block: u64) -> Vec<Effects> {
        let at = block * SECTOR_SIZE as u64;
        vec![wr8(dev, at, CMD_ERASE_SETUP), wr8(dev, at, CMD_CONFIRM)]
    }

    /// A plain RAM device, to check the probe tells RAM from flash.
    struct Ram(Vec<u8>);

    impl BusDevice for Ram {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = self.0[offset as usize];
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
            self.0[offset as usize] = data[0];
            Effects::none()
        }
    }

    /// Reads nothing back that was written.
    struct Rom(Vec<u8>);

    impl BusDevice for Rom {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = self.0[offset as usize];
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) -> Effects {
            Effects::none()
        }
    }

    #[test]
    fn ovmf_probe_detects_flash_and_leaves_it_in_read_array() {
        let (file, mut dev) = flash(4);
        let before = file.bytes();
        assert_eq!(ovmf_probe(&mut dev, SECTOR_SIZE as u64), Probe::Flash);
        assert!(dev.is_read_array());
        assert_eq!(dev.status(), 0);
        assert_eq!(dev.contents(), &before[..]);
        assert_eq!(file.bytes(), before);
        assert_eq!(dev.take_dirty(), None);
        // The probe helper is faithful: RAM and ROM are told apart.
        let image = vars_image(1);
        assert_eq!(
            ovmf_probe(&mut Ram(image.clone()), SECTOR_SIZE as u64),
            Probe::Ram
        );
        assert_eq!(ovmf_probe(&mut Rom(image), SECTOR_SIZE as u64), Probe::Rom);
        assert_eq!(
            ovmf_probe(&mut Rom(vec![0; SECTOR_SIZE]), SECTOR_SIZE as u64),
            Probe::NoLocation
        );
    }

    #[test]
    fn ovmf_probe_effects_are_exactly_the_flips() {
        let (_file, mut dev) = flash(1);
        // Probe location: offset 16 (first byte that is not 0x00/0x50/0x70).
        assert_eq!(rd8(&mut dev, 16), 0x8d);
        assert!(wr8(&mut dev, 16, CMD_CLEAR_STATUS).is_empty());
        assert_eq!(rd8(&mut dev, 16), 0x8d);
        assert_eq!(wr8(&mut dev, 16, CMD_READ_STATUS), to_array(false));
        assert_eq!(rd8(&mut dev, 16), 0x00);
        assert_eq!(wr8(&mut dev, 16, CMD_READ_ARRAY), to_array(true));
    }

    #[test]
    fn read_only_flash_also_probes_as_flash() {
        // As with QEMU's readonly pflash: the probe cannot tell, writes fail.
        let file = TempFile::with(&vars_image(1));
        let mut dev = Pflash::new(file.ro(), SECTOR_SIZE as u64, true).unwrap();
        assert_eq!(ovmf_probe(&mut dev, SECTOR_SIZE as u64), Probe::Flash);
    }

    #[test]
    fn program_then_read_back_written_through_at_once() {
        let (file, mut dev) = flash(4);
        // OVMF writes to erased flash: erase block 1 first.
        let effects = ovmf_erase(&mut dev, 1);
        assert_eq!(effects, vec![to_array(false), Effects::none()]);
        assert_eq!(dev.take_dirty(), Some(SECTOR_SIZE..2 * SECTOR_SIZE));
        let at = SECTOR_SIZE as u64 + 0x10;
        let payload = b"variable store!";
        let effects = ovmf_write(&mut dev, at, payload);
        let flips: Vec<_> = effects.iter().filter(|e| !e.is_empty()).collect();
        assert_eq!(
            flips,
            vec![&to_array(true)],
            "only the final READ_ARRAY flips"
        );
        assert!(dev.is_read_array());
        let start = at as usize;
        assert_eq!(&dev.contents()[start..start + payload.len()], payload);
        for (i, &b) in payload.iter().enumerate() {
            assert_eq!(rd8(&mut dev, at + i as u64), b);
        }
        // Already in the file, without flush or drop.
        assert_eq!(file.bytes(), dev.contents());
        assert_eq!(dev.take_dirty(), Some(start..start + payload.len()));
        assert_eq!(dev.take_dirty(), None);
        assert_eq!(dev.io_errors(), 0);
    }

    #[test]
    fn file_matches_after_every_single_operation() {
        let (file, dev) = flash(2);
        let mut dev = dev.with_durability(Durability::Buffered);
        let _ = ovmf_erase(&mut dev, 0);
        assert_eq!(file.bytes(), dev.contents());
        assert!(file.bytes()[..SECTOR_SIZE].iter().all(|&b| b == 0xFF));
        for i in 0..8u64 {
            let _ = wr8(&mut dev, 100 + i, CMD_PROGRAM);
            let _ = wr8(&mut dev, 100 + i, i as u8);
            // Re-read the file as a fresh process would after a SIGKILL here.
            let on_disk = file.bytes();
            assert_eq!(on_disk[100 + i as usize], i as u8);
            assert_eq!(on_disk, dev.contents());
        }
        // The bytes survive the device being dropped without a flush.
        let expected = dev.contents().to_vec();
        drop(dev);
        let reopened = Pflash::new(file.rw(), 2 * SECTOR_SIZE as u64, false).unwrap();
        assert_eq!(reopened.contents(), &expected[..]);
    }

    #[test]
    fn program_can_only_clear_bits() {
        let (file, mut dev) = flash(1);
        let _ = ovmf_erase(&mut dev, 0);
        let _ = ovmf_write(&mut dev, 7, &[0xF0]);
        assert_eq!(dev.contents()[7], 0xF0);
        let _ = ovmf_write(&mut dev, 7, &[0x0F]);
        assert_eq!(dev.contents()[7], 0x00, "0xF0 & 0x0F");
        let _ = ovmf_write(&mut dev, 7, &[0xFF]);
        assert_eq!(dev.contents()[7], 0x00, "programming cannot set bits");
        let _ = ovmf_write(&mut dev, 8, &[0xA5]);
        let _ = ovmf_write(&mut dev, 8, &[0x3C]);
        assert_eq!(dev.contents()[8], 0xA5 & 0x3C);
        assert_eq!(file.bytes(), dev.contents());
        assert_eq!(dev.status(), STATUS_READY);
    }

    #[test]
    fn wide_program_writes_every_byte() {
        let (file, mut dev) = flash(1);
        let _ = ovmf_erase(&mut dev, 0);
        let _ = dev.take_dirty();
        let _ = dev.write(0x101, &[CMD_PROGRAM, 0, 0, 0]);
        let _ = dev.write(0x101, &[0x11, 0x22, 0x33, 0x44]);
        let _ = wr8(&mut dev, 0x101, CMD_READ_ARRAY);
        assert_eq!(&dev.contents()[0x101..0x105], &[0x11, 0x22, 0x33, 0x44]);
        let mut wide = [0u8; 4];
        dev.read(0x101, &mut wide);
        assert_eq!(wide, [0x11, 0x22, 0x33, 0x44]);
        let mut two = [0u8; 2];
        dev.read(0x103, &mut two);
        assert_eq!(two, [0x33, 0x44]);
        assert_eq!(dev.take_dirty(), Some(0x101..0x105));
        assert_eq!(file.bytes(), dev.contents());
    }

    #[test]
    fn erase_sets_exactly_the_addressed_block_to_ff() {
        let (file, mut dev) = flash(4);
        let before = dev.contents().to_vec();
        // Confirm addressed in the middle of block 2.
        let mid = 2 * SECTOR_SIZE as u64 + 0x123;
        assert_eq!(wr8(&mut dev, mid, CMD_ERASE_SETUP), to_array(false));
        assert_eq!(
            rd8(&mut dev, mid),
            STATUS_READY,
            "status while awaiting confirm"
        );
        assert!(wr8(&mut dev, mid, CMD_CONFIRM).is_empty());
        assert_eq!(rd8(&mut dev, 0), STATUS_READY, "status after erase");
        let (b, s) = (2 * SECTOR_SIZE, SECTOR_SIZE);
        assert!(dev.contents()[b..b + s].iter().all(|&x| x == 0xFF));
        assert_eq!(&dev.contents()[..b], &before[..b]);
        assert_eq!(&dev.contents()[b + s..], &before[b + s..]);
        assert_eq!(file.bytes(), dev.contents());
        assert_eq!(dev.take_dirty(), Some(b..b + s));
        assert_eq!(wr8(&mut dev, 0, CMD_READ_ARRAY), to_array(true));
        assert_eq!(rd8(&mut dev, b as u64), 0xFF);
    }

    #[test]
    fn erase_setup_then_not_confirm_erases_nothing() {
        let (file, mut dev) = flash(2);
        let before = file.bytes();
        // Setup, then read array: abandoned quietly (QEMU).
        let _ = wr8(&mut dev, 0, CMD_ERASE_SETUP);
        assert_eq!(wr8(&mut dev, 0, CMD_READ_ARRAY), to_array(true));
        assert_eq!(dev.status(), STATUS_READY);
        // Setup, then something else: improper sequence, both error bits,
        // device stays in status mode.
        assert_eq!(wr8(&mut dev, 0, CMD_ERASE_SETUP), to_array(false));
        assert!(wr8(&mut dev, 0, CMD_PROGRAM).is_empty());
        assert_eq!(
            rd8(&mut dev, 0),
            STATUS_READY | STATUS_ERASE_ERROR | STATUS_PROGRAM_ERROR
        );
        assert!(!dev.is_read_array());
        assert_eq!(dev.contents(), &before[..]);
        assert_eq!(file.bytes(), before);
        assert_eq!(dev.take_dirty(), None);
        // The error persists until clear status, which also returns to
        // read array.
        assert_eq!(wr8(&mut dev, 0, CMD_CLEAR_STATUS), to_array(true));
        assert_eq!(dev.status(), 0);
        assert_eq!(rd8(&mut dev, 0), 0);
    }

    #[test]
    fn program_setup_then_read_returns_status_and_keeps_waiting() {
        let (file, mut dev) = flash(1);
        let _ = ovmf_erase(&mut dev, 0);
        let _ = wr8(&mut dev, 0, CMD_CLEAR_STATUS);
        assert_eq!(wr8(&mut dev, 40, CMD_PROGRAM), to_array(false));
        assert_eq!(rd8(&mut dev, 40), 0x00, "status, not contents");
        let mut wide = [0u8; 4];
        dev.read(40, &mut wide);
        assert_eq!(wide, [0; 4]);
        // The next write is still the data.
        assert!(wr8(&mut dev, 40, 0x5A).is_empty());
        assert_eq!(dev.contents()[40], 0x5A);
        assert_eq!(rd8(&mut dev, 40), STATUS_READY);
        assert_eq!(file.bytes(), dev.contents());
    }

    #[test]
    fn read_only_device_refuses_program_and_erase() {
        let image = vars_image(2);
        let file = TempFile::with(&image);
        let mut dev = Pflash::new(file.ro(), 2 * SECTOR_SIZE as u64, true).unwrap();
        assert!(dev.is_read_only());
        let _ = wr8(&mut dev, 20, CMD_PROGRAM);
        let _ = wr8(&mut dev, 20, 0x00);
        assert_eq!(rd8(&mut dev, 20), STATUS_READY | STATUS_PROGRAM_ERROR);
        let _ = wr8(&mut dev, 20, CMD_CLEAR_STATUS);
        let _ = ovmf_erase(&mut dev, 1);
        assert_eq!(rd8(&mut dev, 0), STATUS_READY | STATUS_ERASE_ERROR);
        let _ = wr8(&mut dev, 0, CMD_READ_ARRAY);
        assert_eq!(dev.contents(), &image[..]);
        assert_eq!(file.bytes(), image);
        assert_eq!(dev.take_dirty(), None);
        assert_eq!(dev.io_errors(), 0);

        let mut rom = Pflash::rom(image.clone()).unwrap();
        let _ = ovmf_write(&mut rom, 0, &[0]);
        assert_eq!(rom.contents(), &image[..]);
        assert_eq!(rom.status() & STATUS_PROGRAM_ERROR, STATUS_PROGRAM_ERROR);
    }

    #[test]
    fn failed_file_write_is_reported_and_contents_unchanged() {
        let image = vars_image(1);
        let file = TempFile::with(&image);
        // Writable device on a read-only descriptor: every pwrite fails.
        let mut dev = Pflash::new(file.ro(), SECTOR_SIZE as u64, false).unwrap();
        let _ = wr8(&mut dev, 16, CMD_PROGRAM);
        let _ = wr8(&mut dev, 16, 0x00);
        assert_eq!(rd8(&mut dev, 16), STATUS_READY | STATUS_PROGRAM_ERROR);
        let _ = wr8(&mut dev, 16, CMD_CLEAR_STATUS);
        let _ = ovmf_erase(&mut dev, 0);
        assert_eq!(rd8(&mut dev, 16), STATUS_READY | STATUS_ERASE_ERROR);
        assert_eq!(dev.io_errors(), 2);
        assert_eq!(dev.contents(), &image[..], "the guest was told it failed");
        assert_eq!(dev.take_dirty(), None);
        assert_eq!(file.bytes(), image);
        assert!(dev.flush().is_ok(), "nothing was written, nothing to sync");
    }

    #[test]
    fn flash_mode_effects_exactly_on_flips() {
        let (_file, mut dev) = flash(1);
        let steps: &[(u8, Option<bool>)] = &[
            (CMD_READ_ARRAY, None),
            (CMD_CLEAR_STATUS, None),
            (CMD_READ_STATUS, Some(false)),
            (CMD_READ_STATUS, None),
            (CMD_READ_ID, None),
            (CMD_CFI_QUERY, None),
            (CMD_CLEAR_STATUS, Some(true)),
            (CMD_READ_ARRAY_AMD, None),
            (CMD_CFI_QUERY, Some(false)),
            (CMD_READ_ARRAY_QEMU, Some(true)),
            (CMD_LOCK_SETUP, Some(false)),
            (CMD_CONFIRM, None),
            (CMD_READ_ARRAY, Some(true)),
            (CMD_LOCK_SETUP, Some(false)),
            (0x33, Some(true)),
            (0x33, None),
            (CMD_WRITE_BUFFER, Some(false)),
            (0x99, Some(true)),
        ];
        for (i, &(cmd, flip)) in steps.iter().enumerate() {
            let expected = match flip {
                Some(on) => to_array(on),
                None => Effects::none(),
            };
            assert_eq!(wr8(&mut dev, 0, cmd), expected, "step {i}: {cmd:#04x}");
            assert_eq!(dev.is_read_array(), flip.unwrap_or(dev.is_read_array()));
        }
        // Machine reset flips back only if needed.
        let _ = wr8(&mut dev, 0, CMD_READ_STATUS);
        assert_eq!(dev.reset(), to_array(true));
        assert_eq!(dev.reset(), Effects::none());
        assert_eq!(dev.status(), STATUS_READY);
    }

    #[test]
    fn out_of_range_accesses_never_panic() {
        let (file, mut dev) = flash(1);
        let end = SECTOR_SIZE as u64;
        let before = file.bytes();
        let mut wide = [0u8; 4];
        dev.read(end - 2, &mut wide);
        assert_eq!(
            wide,
            [before[SECTOR_SIZE - 2], before[SECTOR_SIZE - 1], 0xFF, 0xFF]
        );
        dev.read(u64::MAX - 1, &mut wide);
        assert_eq!(wide, [0xFF; 4]);
        let mut eight = [0u8; 8];
        dev.read(end, &mut eight);
        assert_eq!(eight, [0xFF; 8]);
        // Program straddling the end: refused whole.
        let _ = dev.write(end - 1, &[CMD_PROGRAM, 0]);
        let _ = dev.write(end - 1, &[0, 0]);
        assert_eq!(rd8(&mut dev, 0), STATUS_READY | STATUS_PROGRAM_ERROR);
        let _ = wr8(&mut dev, u64::MAX, CMD_CLEAR_STATUS);
        let _ = wr8(&mut dev, u64::MAX, CMD_PROGRAM);
        let _ = wr8(&mut dev, u64::MAX, 0);
        assert_eq!(rd8(&mut dev, u64::MAX), STATUS_READY | STATUS_PROGRAM_ERROR);
        let _ = wr8(&mut dev, 0, CMD_CLEAR_STATUS);
        let _ = wr8(&mut dev, end, CMD_ERASE_SETUP);
        let _ = wr8(&mut dev, end, CMD_CONFIRM);
        assert_eq!(rd8(&mut dev, 0), STATUS_READY | STATUS_ERASE_ERROR);
        let _ = wr8(&mut dev, u64::MAX, CMD_CLEAR_STATUS);
        let _ = wr8(&mut dev, u64::MAX, CMD_ERASE_SETUP);
        let _ = wr8(&mut dev, u64::MAX, CMD_CONFIRM);
        assert_eq!(rd8(&mut dev, 0), STATUS_READY | STATUS_ERASE_ERROR);
        // Empty accesses are ignored.
        dev.read(0, &mut []);
        assert!(dev.write(0, &[]).is_empty());
        assert_eq!(file.bytes(), before);
        assert_eq!(dev.contents(), &before[..]);
    }

    #[test]
    fn status_read_widths_follow_qemu() {
        let (_file, mut dev) = flash(1);
        let _ = wr8(&mut dev, 0, CMD_READ_STATUS);
        let mut two = [0xAAu8; 2];
        dev.read(0, &mut two);
        assert_eq!(two, [0x80, 0x00]);
        let mut four = [0xAAu8; 4];
        dev.read(1, &mut four);
        assert_eq!(four, [0x80, 0x00, 0x80, 0x00]);
    }

    #[test]
    fn cfi_query_and_identifier_codes() {
        let (_file, mut dev) = flash(132); // OVMF_VARS_4M.fd: 0x84000 bytes
        let _ = wr8(&mut dev, 0, CMD_CFI_QUERY);
        let qry: Vec<u8> = (0x10..0x13).map(|o| rd8(&mut dev, o)).collect();
        assert_eq!(qry, b"QRY");
        assert_eq!(rd8(&mut dev, 0x13), 0x01, "Intel command set");
        assert_eq!(rd8(&mut dev, 0x27), 14, "QEMU reports ctz(0x84000)");
        assert_eq!(rd8(&mut dev, 0x2C), 1, "one erase region");
        assert_eq!(rd8(&mut dev, 0x2D), 131);
        assert_eq!(rd8(&mut dev, 0x2E), 0);
        assert_eq!(rd8(&mut dev, 0x2F), 0x10, "4 KiB blocks, in 256-byte units");
        assert_eq!(rd8(&mut dev, 0x30), 0);
        assert_eq!(rd8(&mut dev, 0x60), 0, "past the table");
        assert_eq!(rd8(&mut dev, 0x110), b'Q', "address bits above 8 ignored");
        let mut wide = [0xAAu8; 4];
        dev.read(0x10, &mut wide);
        assert_eq!(wide, [b'Q', 0, 0, 0]);
        let _ = wr8(&mut dev, 0, CMD_READ_ID);
        assert_eq!(rd8(&mut dev, 0), 0, "manufacturer");
        assert_eq!(rd8(&mut dev, 1), 0, "device");
        assert_eq!(rd8(&mut dev, 2), 0);
        assert_eq!(wr8(&mut dev, 0, CMD_READ_ARRAY), to_array(true));
        assert_eq!(rd8(&mut dev, 16), 0x8d);
        assert_eq!(cfi_table(1 << 20)[0x27], 20);
    }

    #[test]
    fn constructor_checks_sizes() {
        let file = TempFile::with(&vars_image(2));
        let err = Pflash::new(file.rw(), SECTOR_SIZE as u64, false).unwrap_err();
        assert!(
            matches!(
                err,
                PflashError::FileSize {
                    expected: 4096,
                    actual: 8192
                }
            ),
            "{err}"
        );
        for bad in [0, 100, MAX_LEN + SECTOR_SIZE as u64] {
            assert!(matches!(
                Pflash::new(file.rw(), bad, false),
                Err(PflashError::BadSize(_))
            ));
        }
        assert!(matches!(
            Pflash::rom(vec![0; 10]),
            Err(PflashError::BadSize(10))
        ));
        let ok = Pflash::new(file.rw(), 2 * SECTOR_SIZE as u64, false).unwrap();
        assert_eq!(ok.len(), 2 * SECTOR_SIZE);
        assert!(!ok.is_empty());
        assert!(format!("{ok:?}").contains("Pflash"));
        assert!(file.path().exists());
    }

    #[test]
    fn flush_syncs_and_is_idempotent() {
        let (file, mut dev) = flash(1);
        let _ = wr8(&mut dev, 16, CMD_PROGRAM);
        let _ = wr8(&mut dev, 16, 0);
        assert!(
            dev.unsynced,
            "programmed, still in status mode: not synced yet"
        );
        dev.flush().unwrap();
        assert!(!dev.unsynced);
        dev.flush().unwrap();
        assert_eq!(file.bytes(), dev.contents());
        // Synced durability syncs on the way back to read array.
        let _ = ovmf_write(&mut dev, 17, &[0]);
        assert_eq!(dev.contents()[17], 0);
        assert!(!dev.unsynced);
    }

    #[test]
    fn fuzz_command_sequences_keep_file_and_memory_equal() {
        let (file, mut dev) = flash(3);
        let cmds = [
            0x00, 0x10, 0x20, 0x40, 0x50, 0x60, 0x70, 0x90, 0x98, 0xD0, 0xE8, 0xF0, 0xFF, 0x01,
        ];
        let span = 3 * SECTOR_SIZE as u64 + 64;
        let mut n = 0u64;
        crate::fuzz::run("pflash", 20_000, |rng| {
            let offset = rng.offset(span);
            let width = rng.width();
            let mut buf = rng.bytes();
            if rng.one_in(3) {
                dev.read(offset, &mut buf[..width]);
            } else {
                if rng.one_in(2) {
                    buf[0] = rng.pick(&cmds);
                }
                let was = dev.is_read_array();
                let effects = dev.write(offset, &buf[..width]);
                let flipped = was != dev.is_read_array();
                assert_eq!(effects.is_empty(), !flipped);
            }
            // The file, as another process sees it, always equals what the
            // guest reads (checked every 1000 executions).
            n += 1;
            if n % 1000 == 0 {
                assert_eq!(file.bytes(), dev.contents());
            }
        });
        assert_eq!(file.bytes(), dev.contents());
        assert_eq!(dev.io_errors(), 0);
    }
}
