//! QEMU's firmware configuration device (fw_cfg), as OVMF and Linux read it.
//!
//! The guest selects an item with a 16-bit key and then reads its bytes,
//! either one at a time through the data port or in bulk through the DMA
//! interface. Specification: QEMU `docs/specs/fw_cfg.rst`.
//!
//! # x86 I/O ports
//!
//! Register the device as one [`BusDevice`] at [`PORT_BASE`] (0x510) with
//! length [`PORT_LEN`] (12). Relative offsets:
//!
//! | offset | port  | access |
//! |--------|-------|--------|
//! | 0      | 0x510 | 16-bit write: selector (little-endian). Like QEMU's combined port, a read returns data bytes. |
//! | 1      | 0x511 | byte read: next data byte; 0 once past the end. Writes are ignored (QEMU ≥ 2.4). |
//! | 4..12  | 0x514 | DMA address, big-endian. A 32-bit write at 0x514 sets the high half; a 32-bit write at 0x518 ORs in the low half and starts the transfer; a 64-bit write at 0x514 sets both and starts it. Reads return `"QEMU CFG"`. |
//!
//! # Items
//!
//! The device provides [`FW_CFG_SIGNATURE`] (`"QEMU"`), [`FW_CFG_ID`]
//! (traditional + DMA) and the file directory [`FW_CFG_FILE_DIR`]. The VMM
//! adds numbered items with [`FwCfg::add_item`] (CPU counts, kernel items)
//! and named files with [`FwCfg::add_file`], which get keys from
//! [`FW_CFG_FILE_FIRST`] upward in insertion order. The directory lists the
//! files sorted by name (byte order, as QEMU does); unlike QEMU, keys are
//! not renumbered to follow that order, so a key returned by `add_file`
//! stays valid. Guests find files by name, never by key.
//!
//! # Generated files
//!
//! Some files must describe what the guest firmware configured, for
//! example the ACPI tables after OVMF has programmed PCIEXBAR and the BARs.
//! QEMU builds them at machine start and rebuilds them when the guest first
//! selects one of them. [`FwCfg::add_file_generated`] does the same:
//!
//! * A [`FileGenerator`] produces a whole set of files ([`GeneratedFiles`],
//!   name → bytes) from one build; files registered with clones of the
//!   same generator share that build. `etc/acpi/rsdp`, `etc/acpi/tables`
//!   and `etc/table-loader` must come from one generator, since the loader
//!   script refers to offsets inside the other two.
//! * At registration the generator runs once (the first time it is seen).
//!   That *boot build* fixes every file's size in the directory.
//! * The first time the guest selects any file of the generator (port or
//!   DMA select), the generator runs once more and every one of its files
//!   is replaced by the new contents, zero-padded to its boot size. The
//!   directory therefore never changes after boot, so a guest that read a
//!   size before the rebuild still reads exactly that many bytes.
//! * If the rebuild fails, lacks a file, or produces a file longer than its
//!   boot size, all files of that generator keep their boot-build contents
//!   (a consistent set) and an error is logged. Generators whose output can
//!   grow must reserve room in the boot build (see
//!   `firmware::acpi::table_loader`, which can pad `etc/acpi/tables`).
//! * [`FwCfg::reset`] (VM reset) restores the boot builds and re-arms the
//!   rebuild, like QEMU's ACPI rebuild on reset.
//!
//! Zero padding is harmless for the ACPI files: OVMF skips loader entries
//! of type 0 and trailing zeros in a blob are never pointed at.
//!
//! # Safety against the guest
//!
//! All DMA goes through [`GuestMemoryMmap`]: a descriptor or buffer that is
//! not entirely inside guest RAM, or whose end overflows 64 bits, sets the
//! error bit and transfers nothing to that range. No guest input can make
//! the device panic.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{BusDevice, Effects};

/// First I/O port of the device on x86 (the selector register).
pub const PORT_BASE: u16 = 0x510;
/// Length of the I/O range to register at [`PORT_BASE`]: selector, data
/// and the 8-byte DMA address register at 0x514..0x51c.
pub const PORT_LEN: u64 = 12;

/// Offset of the selector register inside the port range.
const SELECTOR_OFFSET: u64 = 0;
/// Offset of the data register inside the port range.
const DATA_OFFSET: u64 = 1;
/// Offset of the DMA address register (high half) inside the port range.
const DMA_OFFSET: u64 = 4;
/// Offset of the low half of the DMA address register.
const DMA_LOW_OFFSET: u64 = 8;

/// Key of the signature item (`"QEMU"`).
pub const FW_CFG_SIGNATURE: u16 = 0x00;
/// Key of the feature bitmap (little-endian u32).
pub const FW_CFG_ID: u16 = 0x01;
/// Key of the RAM size (unused by OVMF).
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
/// Key of the boot CPU count (little-endian u16).
pub const FW_CFG_NB_CPUS: u16 = 0x05;
/// Key of the kernel load address (little-endian u32).
pub const FW_CFG_KERNEL_ADDR: u16 = 0x07;
/// Key of the kernel size without setup (little-endian u32).
pub const FW_CFG_KERNEL_SIZE: u16 = 0x08;
/// Key of the legacy command-line address (little-endian u32).
pub const FW_CFG_KERNEL_CMDLINE: u16 = 0x09;
/// Key of the initrd load address (little-endian u32).
pub const FW_CFG_INITRD_ADDR: u16 = 0x0a;
/// Key of the initrd size (little-endian u32).
pub const FW_CFG_INITRD_SIZE: u16 = 0x0b;
/// Key of the possible CPU count (little-endian u16).
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;
/// Key of the kernel entry point (little-endian u32).
pub const FW_CFG_KERNEL_ENTRY: u16 = 0x10;
/// Key of the kernel bytes after the setup sectors.
pub const FW_CFG_KERNEL_DATA: u16 = 0x11;
/// Key of the initrd bytes.
pub const FW_CFG_INITRD_DATA: u16 = 0x12;
/// Key of the command-line address (little-endian u32).
pub const FW_CFG_CMDLINE_ADDR: u16 = 0x13;
/// Key of the command-line size including its NUL (little-endian u32).
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x14;
/// Key of the NUL-terminated command line.
pub const FW_CFG_CMDLINE_DATA: u16 = 0x15;
/// Key of the setup (real-mode) code address (little-endian u32).
pub const FW_CFG_SETUP_ADDR: u16 = 0x16;
/// Key of the setup size (little-endian u32).
pub const FW_CFG_SETUP_SIZE: u16 = 0x17;
/// Key of the setup bytes (boot sector + setup sectors).
pub const FW_CFG_SETUP_DATA: u16 = 0x18;
/// Key of the file directory.
pub const FW_CFG_FILE_DIR: u16 = 0x19;
/// Key of the first file.
pub const FW_CFG_FILE_FIRST: u16 = 0x20;
/// Selector bit that QEMU calls the write channel; it is ignored when
/// looking up an item (writes go through DMA).
pub const FW_CFG_WRITE_CHANNEL: u16 = 0x4000;
/// Selector bit of architecture-specific items (0x8000..).
pub const FW_CFG_ARCH_LOCAL: u16 = 0x8000;

/// Feature bit: the traditional selector/data interface.
pub const FEATURE_TRADITIONAL: u32 = 1 << 0;
/// Feature bit: the DMA interface.
pub const FEATURE_DMA: u32 = 1 << 1;

/// Size of a file name in the directory, including its NUL terminator.
pub const FILE_NAME_SIZE: usize = 56;
/// Size of one directory entry.
pub const DIR_ENTRY_SIZE: usize = 64;
/// Most files (keys [`FW_CFG_FILE_FIRST`]..0x420). QEMU allows 32 by
/// default; the key space would allow 0x3fe0.
pub const MAX_FILES: usize = 1024;

/// What a read of the DMA address register returns: `"QEMU CFG"`.
pub const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// DMA control bit: error (set by the device).
pub const DMA_CTL_ERROR: u32 = 1 << 0;
/// DMA control bit: read from the item into guest memory.
pub const DMA_CTL_READ: u32 = 1 << 1;
/// DMA control bit: skip bytes of the item.
pub const DMA_CTL_SKIP: u32 = 1 << 2;
/// DMA control bit: select the item in bits 31:16 first.
pub const DMA_CTL_SELECT: u32 = 1 << 3;
/// DMA control bit: write from guest memory into the item.
pub const DMA_CTL_WRITE: u32 = 1 << 4;

/// Size of the `FWCfgDmaAccess` descriptor in guest memory.
const DMA_DESCRIPTOR_SIZE: usize = 16;
/// Chunk size for zero-filling guest memory (bounds host allocations).
const ZERO_CHUNK: usize = 64 * 1024;
/// The most one DMA read zero-fills past the end of an item. QEMU fills
/// whatever the guest asks (up to 4 GiB, seconds of work on a vCPU
/// thread); no firmware reads more than a few bytes past an item, so a
/// longer read fails with the error bit instead.
pub const DMA_MAX_ZERO_FILL: u64 = 16 << 20;

/// Errors from configuring the device (never caused by the guest).
#[derive(Debug, thiserror::Error)]
pub enum FwCfgError {
    /// File names must be 1..=55 bytes without NUL.
    #[error("fw_cfg file name {0:?} must be 1..={max} bytes without NUL", max = FILE_NAME_SIZE - 1)]
    BadName(String),
    /// A file with this name exists already.
    #[error("fw_cfg file {0:?} already exists")]
    DuplicateFile(String),
    /// All file keys are in use.
    #[error("too many fw_cfg files (at most {MAX_FILES})")]
    TooManyFiles,
    /// The key belongs to the device (signature, ID, directory), to the
    /// file range, or has the write-channel bit set.
    #[error("fw_cfg key {0:#x} cannot be set with add_item")]
    ReservedKey(u16),
    /// An item or file does not fit the 32-bit size of the directory.
    #[error("fw_cfg item of {0} bytes is larger than 4 GiB")]
    TooLarge(usize),
    /// The boot build of a generator failed.
    #[error("fw_cfg generator for {name:?} failed: {reason}")]
    Generator {
        /// File being registered.
        name: String,
        /// The generator's error.
        reason: String,
    },
    /// The generator's boot build does not contain the file.
    #[error("fw_cfg generator does not produce file {0:?}")]
    NotGenerated(String),
}

/// The files one generator run produces: name → contents.
pub type GeneratedFiles = BTreeMap<String, Vec<u8>>;

/// Error a generator may return.
pub type GeneratorError = Box<dyn std::error::Error + Send + Sync>;

type GenerateFn = dyn Fn() -> Result<GeneratedFiles, GeneratorError> + Send + Sync;

/// A shared function that builds a set of files at once. Clones share
/// identity: files registered with clones of one generator come from one
/// build. See the module documentation for when it runs.
#[derive(Clone)]
pub struct FileGenerator(Arc<GenerateFn>);

impl FileGenerator {
    /// Wraps `f`, which must return every file it is registered for.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn() -> Result<GeneratedFiles, GeneratorError> + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }

    fn same(&self, other: &FileGenerator) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn run(&self) -> Result<GeneratedFiles, GeneratorError> {
        (self.0)()
    }
}

impl fmt::Debug for FileGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FileGenerator")
            .field(&Arc::as_ptr(&self.0).cast::<()>())
            .finish()
    }
}

/// One item: its bytes and how it may change.
#[derive(Debug)]
struct Item {
    data: Vec<u8>,
    /// The guest may overwrite the bytes through DMA writes.
    writable: bool,
    /// Index into `FwCfg::generators`.
    generator: Option<usize>,
}

/// A file in the directory.
#[derive(Debug)]
struct FileEntry {
    name: String,
    key: u16,
}

/// Rebuild state of one generator.
#[derive(Debug)]
struct GeneratorState {
    generator: FileGenerator,
    /// The boot build; fixes sizes and is served until the rebuild.
    boot: GeneratedFiles,
    /// Keys of the files registered with this generator.
    keys: Vec<u16>,
    /// The rebuild on first select has happened (or failed).
    rebuilt: bool,
}

/// Which transfer a DMA descriptor asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DmaOp {
    Read,
    Write,
    Skip,
}

/// The fw_cfg device. See the module documentation.
pub struct FwCfg {
    mem: GuestMemoryMmap,
    items: BTreeMap<u16, Item>,
    files: Vec<FileEntry>,
    generators: Vec<GeneratorState>,
    /// Raw selector value last written.
    selector: u16,
    /// Offset of the next byte of the selected item.
    offset: usize,
    /// DMA address register, assembled from its two halves.
    dma_addr: u64,
}

impl fmt::Debug for FwCfg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FwCfg")
            .field("items", &self.items.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("selector", &self.selector)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

fn check_size(len: usize) -> Result<(), FwCfgError> {
    if u32::try_from(len).is_err() {
        return Err(FwCfgError::TooLarge(len));
    }
    Ok(())
}

/// The key an item is stored under for a selector value: QEMU masks the
/// write-channel bit.
fn lookup_key(selector: u16) -> u16 {
    selector & !FW_CFG_WRITE_CHANNEL
}

impl FwCfg {
    /// A device with the signature, ID and an empty file directory. DMA
    /// reaches `mem` only.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let mut dev = FwCfg {
            mem,
            items: BTreeMap::new(),
            files: Vec::new(),
            generators: Vec::new(),
            selector: 0,
            offset: 0,
            dma_addr: 0,
        };
        dev.insert(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        dev.insert(
            FW_CFG_ID,
            (FEATURE_TRADITIONAL | FEATURE_DMA).to_le_bytes().to_vec(),
        );
        dev.rebuild_directory();
        dev
    }

    fn insert(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(
            key,
            Item {
                data,
                writable: false,
                generator: None,
            },
        );
    }

    /// Sets the numbered item `key` (e.g. [`FW_CFG_NB_CPUS`]), replacing
    /// an earlier value. Keys owned by the device (signature, ID,
    /// directory), file keys (0x20..0x4000) and keys with the write-channel
    /// bit are refused; architecture keys (0x8000..0xc000) are allowed.
    pub fn add_item(&mut self, key: u16, data: impl Into<Vec<u8>>) -> Result<(), FwCfgError> {
        let reserved = matches!(key, FW_CFG_SIGNATURE | FW_CFG_ID | FW_CFG_FILE_DIR)
            || (FW_CFG_FILE_FIRST..FW_CFG_WRITE_CHANNEL).contains(&key)
            || key & FW_CFG_WRITE_CHANNEL != 0;
        if reserved {
            return Err(FwCfgError::ReservedKey(key));
        }
        let data = data.into();
        check_size(data.len())?;
        self.insert(key, data);
        Ok(())
    }

    fn new_file_key(&self, name: &str) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.len() >= FILE_NAME_SIZE || name.contains('\0') {
            return Err(FwCfgError::BadName(name.to_owned()));
        }
        if self.file_key(name).is_some() {
            return Err(FwCfgError::DuplicateFile(name.to_owned()));
        }
        if self.files.len() >= MAX_FILES {
            return Err(FwCfgError::TooManyFiles);
        }
        // files.len() < MAX_FILES, so the key is below 0x4000.
        Ok(FW_CFG_FILE_FIRST + self.files.len() as u16)
    }

    fn push_file(&mut self, name: &str, key: u16, item: Item) -> u16 {
        self.items.insert(key, item);
        self.files.push(FileEntry {
            name: name.to_owned(),
            key,
        });
        self.rebuild_directory();
        key
    }

    /// Adds a read-only file and returns its key.
    pub fn add_file(&mut self, name: &str, data: impl Into<Vec<u8>>) -> Result<u16, FwCfgError> {
        self.add_file_inner(name, data.into(), false)
    }

    /// Adds a file the guest may overwrite in place through DMA writes
    /// (never resize), e.g. the target of a loader WRITE_POINTER. The VMM
    /// reads it back with [`FwCfg::file`].
    pub fn add_writable_file(
        &mut self,
        name: &str,
        data: impl Into<Vec<u8>>,
    ) -> Result<u16, FwCfgError> {
        self.add_file_inner(name, data.into(), true)
    }

    fn add_file_inner(
        &mut self,
        name: &str,
        data: Vec<u8>,
        writable: bool,
    ) -> Result<u16, FwCfgError> {
        let key = self.new_file_key(name)?;
        check_size(data.len())?;
        let item = Item {
            data,
            writable,
            generator: None,
        };
        Ok(self.push_file(name, key, item))
    }

    /// Adds a read-only file whose contents `generator` produces, and
    /// returns its key. The first time a generator is registered it runs
    /// once (the boot build, which fixes the file's size); it runs again
    /// when the guest first selects any of its files. See the module
    /// documentation.
    pub fn add_file_generated(
        &mut self,
        name: &str,
        generator: &FileGenerator,
    ) -> Result<u16, FwCfgError> {
        let key = self.new_file_key(name)?;
        let index = match self
            .generators
            .iter()
            .position(|g| g.generator.same(generator))
        {
            Some(index) => index,
            None => {
                let boot = generator.run().map_err(|e| FwCfgError::Generator {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?;
                self.generators.push(GeneratorState {
                    generator: generator.clone(),
                    boot,
                    keys: Vec::new(),
                    rebuilt: false,
                });
                self.generators.len() - 1
            }
        };
        let state = &mut self.generators[index];
        let data = state
            .boot
            .get(name)
            .cloned()
            .ok_or_else(|| FwCfgError::NotGenerated(name.to_owned()))?;
        check_size(data.len())?;
        state.keys.push(key);
        let item = Item {
            data,
            writable: false,
            generator: Some(index),
        };
        Ok(self.push_file(name, key, item))
    }

    /// The key of the file `name`.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        self.files.iter().find(|f| f.name == name).map(|f| f.key)
    }

    /// The current contents of the item `key`.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items.get(&key).map(|i| i.data.as_slice())
    }

    /// The current contents of the file `name`.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.item(self.file_key(name)?)
    }

    /// VM reset: selector 0, DMA address 0, generated files back to their
    /// boot builds with the rebuild on first select re-armed. Other items,
    /// including what the guest wrote into writable files, are kept.
    pub fn reset(&mut self) {
        self.selector = 0;
        self.offset = 0;
        self.dma_addr = 0;
        for index in 0..self.generators.len() {
            self.generators[index].rebuilt = false;
            self.install_build(index, None);
        }
    }

    fn rebuild_directory(&mut self) {
        let mut sorted: Vec<&FileEntry> = self.files.iter().collect();
        sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut dir = Vec::with_capacity(4 + DIR_ENTRY_SIZE * sorted.len());
        // At most MAX_FILES entries: fits in u32.
        dir.extend_from_slice(&(sorted.len() as u32).to_be_bytes());
        for f in sorted {
            // Sizes were checked to fit in u32 when the file was added and
            // generated files never change size.
            let size = self.items.get(&f.key).map_or(0, |i| i.data.len()) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&f.key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut name = [0u8; FILE_NAME_SIZE];
            name[..f.name.len()].copy_from_slice(f.name.as_bytes());
            dir.extend_from_slice(&name);
        }
        self.insert(FW_CFG_FILE_DIR, dir);
    }

    /// Selects `selector` as a selector write does: offset back to 0, and
    /// the first select of a generated file triggers its rebuild.
    fn select(&mut self, selector: u16) {
        self.selector = selector;
        self.offset = 0;
        let generator = self
            .items
            .get(&lookup_key(selector))
            .and_then(|i| i.generator);
        if let Some(index) = generator {
            if !self.generators[index].rebuilt {
                self.generators[index].rebuilt = true;
                self.rebuild(index);
            }
        }
    }

    /// Runs generator `index` again and installs its output if it fits.
    fn rebuild(&mut self, index: usize) {
        match self.generators[index].generator.run() {
            Ok(files) => {
                if let Err(reason) = self.check_build(index, &files) {
                    log::error!("fw_cfg: rebuild rejected ({reason}); serving the boot build");
                } else {
                    self.install_build(index, Some(files));
                }
            }
            Err(e) => log::error!("fw_cfg: rebuild failed ({e}); serving the boot build"),
        }
    }

    /// Checks that a rebuild has every file of the generator and none is
    /// longer than its size in the directory.
    fn check_build(&self, index: usize, files: &GeneratedFiles) -> Result<(), String> {
        for &key in &self.generators[index].keys {
            let name = self.file_name(key);
            let size = self.items.get(&key).map_or(0, |i| i.data.len());
            match files.get(name) {
                None => return Err(format!("file {name:?} missing")),
                Some(data) if data.len() > size => {
                    return Err(format!(
                        "file {name:?} grew from {size} to {} bytes",
                        data.len()
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn file_name(&self, key: u16) -> &str {
        self.files
            .iter()
            .find(|f| f.key == key)
            .map_or("", |f| f.name.as_str())
    }

    /// Replaces the files of generator `index` with `files` (or the boot
    /// build), each zero-padded to its directory size.
    fn install_build(&mut self, index: usize, files: Option<GeneratedFiles>) {
        let state = &self.generators[index];
        let source = files.as_ref().unwrap_or(&state.boot);
        for &key in &state.keys {
            let name = self
                .files
                .iter()
                .find(|f| f.key == key)
                .map_or("", |f| f.name.as_str());
            let (Some(item), Some(new)) = (self.items.get_mut(&key), source.get(name)) else {
                continue;
            };
            let size = item.data.len();
            item.data.clear();
            item.data.extend_from_slice(&new[..new.len().min(size)]);
            item.data.resize(size, 0);
        }
    }

    /// The next data byte of the selected item, 0 past its end.
    fn read_data_byte(&mut self) -> u8 {
        let Some(item) = self.items.get(&lookup_key(self.selector)) else {
            return 0;
        };
        match item.data.get(self.offset) {
            Some(&b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// True when `[addr, addr + len)` lies entirely in guest RAM and does
    /// not wrap around.
    fn guest_range_ok(&self, addr: u64, len: u64) -> bool {
        let Ok(len_usize) = usize::try_from(len) else {
            return false;
        };
        addr.checked_add(len).is_some() && self.mem.check_range(GuestAddress(addr), len_usize)
    }

    fn guest_write(&self, addr: u64, data: &[u8]) -> bool {
        self.guest_range_ok(addr, data.len() as u64)
            && self.mem.write_slice(data, GuestAddress(addr)).is_ok()
    }

    fn guest_read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.guest_range_ok(addr, data.len() as u64)
            && self.mem.read_slice(data, GuestAddress(addr)).is_ok()
    }

    fn guest_zero(&self, addr: u64, len: u64) -> bool {
        if !self.guest_range_ok(addr, len) {
            return false;
        }
        let zeros = [0u8; ZERO_CHUNK];
        let mut done = 0u64;
        while done < len {
            // Bounded by ZERO_CHUNK.
            let n = (len - done).min(ZERO_CHUNK as u64) as usize;
            if self
                .mem
                .write_slice(&zeros[..n], GuestAddress(addr + done))
                .is_err()
            {
                return false;
            }
            done += n as u64;
        }
        true
    }

    /// Performs the DMA transfer described at guest address `desc_addr`,
    /// then writes the resulting control word back (0 on success,
    /// [`DMA_CTL_ERROR`] on failure). Follows QEMU's `fw_cfg_dma_transfer`:
    /// reading past the end of an item zero-fills the rest of the buffer,
    /// skipping past it is not an error, writing past it is.
    fn dma_transfer(&mut self, desc_addr: u64) {
        let mut desc = [0u8; DMA_DESCRIPTOR_SIZE];
        if !self.guest_read(desc_addr, &mut desc) {
            // Best effort, as QEMU: this write fails too if the descriptor
            // is not in RAM.
            self.guest_write(desc_addr, &DMA_CTL_ERROR.to_be_bytes());
            return;
        }
        let field = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[8 - r.len()..].copy_from_slice(&desc[r]);
            u64::from_be_bytes(b)
        };
        // Masked to 32 bits by `field` reading 4 bytes.
        let control = field(0..4) as u32;
        let mut length = field(4..8);
        let mut addr = field(8..16);

        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let op = if control & DMA_CTL_READ != 0 {
            DmaOp::Read
        } else if control & DMA_CTL_WRITE != 0 {
            DmaOp::Write
        } else if control & DMA_CTL_SKIP != 0 {
            DmaOp::Skip
        } else {
            length = 0;
            DmaOp::Skip
        };

        let mut status = 0u32;
        let key = lookup_key(self.selector);
        while length > 0 && status & DMA_CTL_ERROR == 0 {
            let avail = self
                .items
                .get(&key)
                .map_or(0, |i| i.data.len().saturating_sub(self.offset));
            let len;
            if avail == 0 {
                len = length;
                match op {
                    DmaOp::Read => {
                        if len > DMA_MAX_ZERO_FILL || !self.guest_zero(addr, len) {
                            status |= DMA_CTL_ERROR;
                        }
                    }
                    DmaOp::Write => status |= DMA_CTL_ERROR,
                    DmaOp::Skip => {}
                }
            } else {
                len = length.min(avail as u64);
                // len <= avail, a usize.
                let n = len as usize;
                let start = self.offset;
                match op {
                    DmaOp::Read => {
                        let ok = match self.items.get(&key) {
                            Some(item) => self.guest_write(addr, &item.data[start..start + n]),
                            None => false,
                        };
                        if !ok {
                            status |= DMA_CTL_ERROR;
                        }
                    }
                    DmaOp::Write => {
                        let writable = self.items.get(&key).is_some_and(|i| i.writable);
                        if !writable || len != length {
                            status |= DMA_CTL_ERROR;
                        } else {
                            let mut buf = vec![0u8; n];
                            if self.guest_read(addr, &mut buf) {
                                if let Some(item) = self.items.get_mut(&key) {
                                    item.data[start..start + n].copy_from_slice(&buf);
                                }
                            } else {
                                status |= DMA_CTL_ERROR;
                            }
                        }
                    }
                    DmaOp::Skip => {}
                }
                self.offset += n;
            }
            addr = addr.wrapping_add(len);
            length -= len;
        }
        self.guest_write(desc_addr, &status.to_be_bytes());
    }

    fn write_dma(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (DMA_OFFSET, 4) => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                self.dma_addr = u64::from(u32::from_be_bytes(b)) << 32;
            }
            (DMA_LOW_OFFSET, 4) => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                let addr = self.dma_addr | u64::from(u32::from_be_bytes(b));
                self.dma_addr = 0;
                self.dma_transfer(addr);
            }
            (DMA_OFFSET, 8) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(data);
                self.dma_addr = 0;
                self.dma_transfer(u64::from_be_bytes(b));
            }
            _ => {}
        }
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            SELECTOR_OFFSET | DATA_OFFSET => {
                for b in data.iter_mut() {
                    *b = self.read_data_byte();
                }
            }
            DMA_OFFSET..PORT_LEN => {
                let start = (offset - DMA_OFFSET) as usize;
                for (i, b) in data.iter_mut().enumerate() {
                    *b = DMA_SIGNATURE.get(start + i).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        match (offset, data.len()) {
            (SELECTOR_OFFSET, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (DMA_OFFSET | DMA_LOW_OFFSET, _) => self.write_dma(offset, data),
            // Data-port writes have been ignored since QEMU 2.4.
            _ => {}
        }
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const RAM: u64 = 0x10_0000;
    /// Second RAM region, after a hole at [RAM, HOLE_END).
    const HOLE_END: u64 = 0x20_0000;
    const DESC: u64 = 0x1000;
    const BUF: u64 = 0x2000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), RAM as usize),
            (GuestAddress(HOLE_END), 0x1000),
        ])
        .unwrap()
    }

    fn dev() -> FwCfg {
        FwCfg::new(mem())
    }

    fn select(d: &mut FwCfg, key: u16) {
        assert!(d.write(0, &key.to_le_bytes()).is_empty());
    }

    fn read_port(d: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0xaa];
                d.read(1, &mut b);
                b[0]
            })
            .collect()
    }

    fn read_item(d: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
        select(d, key);
        read_port(d, n)
    }

    /// Writes a descriptor at `desc` and triggers it with two 32-bit writes.
    fn dma(d: &mut FwCfg, desc: u64, control: u32, length: u32, addr: u64) -> u32 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&control.to_be_bytes());
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&addr.to_be_bytes());
        d.mem.write_slice(&bytes, GuestAddress(desc)).unwrap();
        trigger32(d, desc);
        control_at(d, desc)
    }

    fn trigger32(d: &mut FwCfg, desc: u64) {
        let _ = d.write(4, &((desc >> 32) as u32).to_be_bytes());
        let _ = d.write(8, &(desc as u32).to_be_bytes());
    }

    fn control_at(d: &FwCfg, desc: u64) -> u32 {
        let mut c = [0u8; 4];
        d.mem.read_slice(&mut c, GuestAddress(desc)).unwrap();
        u32::from_be_bytes(c)
    }

    fn guest(d: &FwCfg, addr: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        d.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    fn sel(key: u16) -> u32 {
        (u32::from(key) << 16) | DMA_CTL_SELECT
    }

    #[test]
    fn signature_and_id_via_ports() {
        let mut d = dev();
        assert_eq!(read_item(&mut d, FW_CFG_SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut d, FW_CFG_ID, 4), [3, 0, 0, 0]);
        // The write-channel bit is masked on lookup.
        assert_eq!(read_item(&mut d, 0x4000, 4), b"QEMU");
        // Unknown items read as zero.
        assert_eq!(read_item(&mut d, 0x1234, 2), [0, 0]);
        // Re-selecting rewinds.
        assert_eq!(read_item(&mut d, FW_CFG_SIGNATURE, 2), b"QE");
        assert_eq!(read_item(&mut d, FW_CFG_SIGNATURE, 2), b"QE");
        // A wide read of the data port returns successive bytes.
        let mut w = [0u8; 2];
        d.read(1, &mut w);
        assert_eq!(&w, b"MU");
    }

    #[test]
    fn dma_register_reads_signature_and_ignores_odd_accesses() {
        let mut d = dev();
        let mut b = [0u8; 8];
        d.read(4, &mut b);
        assert_eq!(&b, b"QEMU CFG");
        let mut b = [0u8; 4];
        d.read(8, &mut b);
        assert_eq!(&b, b" CFG");
        let mut b = [0xffu8; 4];
        d.read(2, &mut b);
        assert_eq!(b, [0; 4]);
        // Odd widths/offsets neither panic nor select anything.
        for (off, len) in [
            (0, 1),
            (0, 4),
            (1, 1),
            (1, 2),
            (3, 1),
            (5, 4),
            (4, 2),
            (8, 8),
            (11, 1),
            (40, 4),
        ] {
            let _ = d.write(off, &vec![0xff; len]);
            let mut r = vec![0; len];
            d.read(off, &mut r);
        }
        assert_eq!(read_item(&mut d, FW_CFG_SIGNATURE, 4), b"QEMU");
    }

    #[test]
    fn items_and_reserved_keys() {
        let mut d = dev();
        d.add_item(FW_CFG_NB_CPUS, 4u16.to_le_bytes()).unwrap();
        d.add_item(0x8003, vec![9; 3]).unwrap();
        assert_eq!(read_item(&mut d, FW_CFG_NB_CPUS, 4), [4, 0, 0, 0]);
        assert_eq!(read_item(&mut d, 0x8003, 3), [9, 9, 9]);
        d.add_item(FW_CFG_NB_CPUS, 2u16.to_le_bytes()).unwrap();
        assert_eq!(d.item(FW_CFG_NB_CPUS), Some(&[2u8, 0][..]));
        for key in [
            FW_CFG_SIGNATURE,
            FW_CFG_ID,
            FW_CFG_FILE_DIR,
            0x20,
            0x3fff,
            0x4005,
            0xc000,
        ] {
            assert!(
                matches!(d.add_item(key, vec![1]), Err(FwCfgError::ReservedKey(k)) if k == key),
                "{key:#x}"
            );
        }
    }

    fn dir_entries(dir: &[u8]) -> Vec<(u32, u16, String)> {
        let count = u32::from_be_bytes(dir[..4].try_into().unwrap()) as usize;
        assert_eq!(dir.len(), 4 + count * DIR_ENTRY_SIZE);
        dir[4..]
            .chunks(DIR_ENTRY_SIZE)
            .map(|e| {
                assert_eq!(&e[6..8], &[0, 0]);
                let name = &e[8..];
                let end = name.iter().position(|&b| b == 0).unwrap();
                assert!(name[end..].iter().all(|&b| b == 0));
                (
                    u32::from_be_bytes(e[..4].try_into().unwrap()),
                    u16::from_be_bytes(e[4..6].try_into().unwrap()),
                    String::from_utf8(name[..end].to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn directory_format_and_order() {
        let mut d = dev();
        assert_eq!(read_item(&mut d, FW_CFG_FILE_DIR, 4), [0, 0, 0, 0]);
        let name55 = "x".repeat(55);
        assert_eq!(d.add_file("etc/e820", vec![1; 40]).unwrap(), 0x20);
        assert_eq!(d.add_file("bootorder", vec![2; 5]).unwrap(), 0x21);
        assert_eq!(d.add_file("etc/acpi/tables", vec![]).unwrap(), 0x22);
        assert_eq!(d.add_file(&name55, vec![3; 0x10203]).unwrap(), 0x23);
        let dir = read_item(&mut d, FW_CFG_FILE_DIR, 4 + 4 * 64 + 3);
        assert!(dir[4 + 4 * 64..].iter().all(|&b| b == 0), "past the end");
        assert_eq!(
            dir_entries(&dir[..4 + 4 * 64]),
            vec![
                (5, 0x21, "bootorder".to_owned()),
                (0, 0x22, "etc/acpi/tables".to_owned()),
                (40, 0x20, "etc/e820".to_owned()),
                (0x10203, 0x23, name55.clone()),
            ]
        );
        assert_eq!(d.file_key("etc/e820"), Some(0x20));
        assert_eq!(d.file("bootorder"), Some(&[2u8; 5][..]));
        assert_eq!(read_item(&mut d, 0x21, 6), [2, 2, 2, 2, 2, 0]);
    }

    #[test]
    fn file_name_errors() {
        let mut d = dev();
        d.add_file("a", vec![]).unwrap();
        assert!(matches!(
            d.add_file("a", vec![]),
            Err(FwCfgError::DuplicateFile(_))
        ));
        for bad in [String::new(), "y".repeat(56), "a\0b".to_owned()] {
            assert!(matches!(
                d.add_file(&bad, vec![]),
                Err(FwCfgError::BadName(_))
            ));
        }
        for i in 1..MAX_FILES {
            d.add_file(&format!("f{i}"), vec![]).unwrap();
        }
        assert!(matches!(
            d.add_file("last", vec![]),
            Err(FwCfgError::TooManyFiles)
        ));
        let dir = d.item(FW_CFG_FILE_DIR).unwrap();
        assert_eq!(
            u32::from_be_bytes(dir[..4].try_into().unwrap()) as usize,
            MAX_FILES
        );
        assert_eq!(
            d.file_key(&format!("f{}", MAX_FILES - 1)),
            Some(0x20 + MAX_FILES as u16 - 1)
        );
    }

    #[test]
    fn dma_select_and_read() {
        let mut d = dev();
        let data = pattern(300, 1);
        let key = d.add_file("opt/test", data.clone()).unwrap();
        let ctl = dma(&mut d, DESC, sel(key) | DMA_CTL_READ, 300, BUF);
        assert_eq!(ctl, 0);
        assert_eq!(guest(&d, BUF, 300), data);
        // The offset advanced: the port now reads past the end.
        assert_eq!(read_port(&mut d, 1), [0]);
    }

    #[test]
    fn dma_chained_reads_and_skip() {
        let mut d = dev();
        let data = pattern(100, 5);
        let key = d.add_file("opt/test", data.clone()).unwrap();
        assert_eq!(dma(&mut d, DESC, sel(key) | DMA_CTL_READ, 10, BUF), 0);
        assert_eq!(dma(&mut d, DESC, DMA_CTL_SKIP, 20, 0), 0);
        assert_eq!(dma(&mut d, DESC, DMA_CTL_READ, 30, BUF + 10), 0);
        assert_eq!(guest(&d, BUF, 10), data[..10]);
        assert_eq!(guest(&d, BUF + 10, 30), data[30..60]);
        // The port continues where DMA stopped.
        assert_eq!(read_port(&mut d, 2), data[60..62]);
        // Skip past the end is not an error; a following read zero-fills.
        assert_eq!(dma(&mut d, DESC, DMA_CTL_SKIP, 1000, 0), 0);
        d.mem.write_slice(&[0xee; 8], GuestAddress(BUF)).unwrap();
        assert_eq!(dma(&mut d, DESC, DMA_CTL_READ, 8, BUF), 0);
        assert_eq!(guest(&d, BUF, 8), [0; 8]);
        // A control word without read/write/skip transfers nothing.
        assert_eq!(dma(&mut d, DESC, sel(key), 50, BUF), 0);
        assert_eq!(read_port(&mut d, 1), data[..1]);
    }

    #[test]
    fn dma_read_past_end_zero_fills() {
        let mut d = dev();
        let key = d.add_file("opt/test", vec![7; 10]).unwrap();
        d.mem.write_slice(&[0xee; 32], GuestAddress(BUF)).unwrap();
        assert_eq!(dma(&mut d, DESC, sel(key) | DMA_CTL_READ, 16, BUF), 0);
        let mut expect = vec![7; 10];
        expect.extend_from_slice(&[0; 6]);
        expect.extend_from_slice(&[0xee; 16]);
        assert_eq!(guest(&d, BUF, 32), expect);
        // A large zero fill spanning several chunks.
        assert_eq!(
            dma(&mut d, DESC, sel(0x7ff) | DMA_CTL_READ, 0x30000, 0x40000),
            0
        );
        assert!(guest(&d, 0x40000, 0x30000).iter().all(|&b| b == 0));
    }

    #[test]
    fn dma_zero_fill_is_bounded() {
        let big = (DMA_MAX_ZERO_FILL * 2) as usize;
        let mut d = FwCfg::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), big + 0x10_0000)]).unwrap(),
        );
        let key = d.add_file("opt/test", vec![7; 10]).unwrap();
        d.mem
            .write_slice(&[0xee; 16], GuestAddress(0x10_0000))
            .unwrap();
        // The item, then more zeros than allowed: the error bit, and the
        // zero fill never started.
        let len = 10 + DMA_MAX_ZERO_FILL as u32 + 1;
        let st = dma(&mut d, DESC, sel(key) | DMA_CTL_READ, len, 0x10_0000 - 10);
        assert_eq!(st & DMA_CTL_ERROR, DMA_CTL_ERROR);
        assert_eq!(guest(&d, 0x10_0000, 16), vec![0xee; 16]);
        // Exactly the bound is still served.
        let len = 10 + DMA_MAX_ZERO_FILL as u32;
        assert_eq!(
            dma(&mut d, DESC, sel(key) | DMA_CTL_READ, len, 0x10_0000 - 10),
            0
        );
        assert_eq!(guest(&d, 0x10_0000, 16), vec![0; 16]);
    }

    #[test]
    fn dma_64bit_trigger_and_high_address() {
        let mut d = dev();
        let key = d.add_file("opt/test", vec![1, 2, 3]).unwrap();
        let mut desc = Vec::new();
        desc.extend_from_slice(&(sel(key) | DMA_CTL_READ).to_be_bytes());
        desc.extend_from_slice(&3u32.to_be_bytes());
        desc.extend_from_slice(&BUF.to_be_bytes());
        d.mem.write_slice(&desc, GuestAddress(HOLE_END)).unwrap();
        let _ = d.write(4, &HOLE_END.to_be_bytes());
        assert_eq!(control_at(&d, HOLE_END), 0);
        assert_eq!(guest(&d, BUF, 3), [1, 2, 3]);
        // The register is cleared after a transfer: a lone low write uses
        // high half 0.
        let _ = d.write(4, &1u32.to_be_bytes());
        d.mem.write_slice(&desc, GuestAddress(DESC)).unwrap();
        trigger32(&mut d, DESC); // writes high 0 then low
        assert_eq!(control_at(&d, DESC), 0);
    }

    #[test]
    fn dma_bad_addresses() {
        let mut d = dev();
        let key = d.add_file("opt/test", pattern(64, 3)).unwrap();
        let read = sel(key) | DMA_CTL_READ;
        // Buffer outside RAM, in the hole, straddling the end of RAM.
        for addr in [
            RAM,
            RAM + 0x800,
            RAM - 8,
            HOLE_END + 0xff0,
            0xffff_ffff_0000,
        ] {
            assert_eq!(
                dma(&mut d, DESC, read, 64, addr),
                DMA_CTL_ERROR,
                "{addr:#x}"
            );
        }
        // Buffer whose end overflows 64 bits.
        assert_eq!(dma(&mut d, DESC, read, 64, u64::MAX - 10), DMA_CTL_ERROR);
        // Zero fill straddling the end of RAM: error, RAM untouched.
        d.mem
            .write_slice(&[0xee; 8], GuestAddress(RAM - 8))
            .unwrap();
        assert_eq!(
            dma(&mut d, DESC, sel(0x7ff) | DMA_CTL_READ, 16, RAM - 8),
            DMA_CTL_ERROR
        );
        assert_eq!(guest(&d, RAM - 8, 8), [0xee; 8]);
        // Huge length that runs off RAM.
        assert_eq!(
            dma(&mut d, DESC, sel(0x7ff) | DMA_CTL_READ, u32::MAX, 0),
            DMA_CTL_ERROR
        );
        // Descriptor outside RAM or straddling its end: nothing happens.
        for desc in [RAM, RAM - 8, u64::MAX - 3, u64::MAX] {
            trigger32(&mut d, desc);
            let _ = d.write(4, &desc.to_be_bytes());
        }
        // A descriptor straddling the end of RAM cannot be read; as in
        // QEMU, the error goes to its control word, which is in RAM.
        d.mem
            .write_slice(&[0x11; 8], GuestAddress(RAM - 8))
            .unwrap();
        trigger32(&mut d, RAM - 8);
        assert_eq!(guest(&d, RAM - 8, 8), [0, 0, 0, 1, 0x11, 0x11, 0x11, 0x11]);
        // Descriptor in RAM but last word up against the end works.
        assert_eq!(dma(&mut d, RAM - 16, read, 4, BUF), 0);
    }

    #[test]
    fn dma_writes() {
        let mut d = dev();
        let ro = d.add_file("opt/ro", vec![0; 8]).unwrap();
        let rw = d.add_writable_file("etc/rw", vec![0; 8]).unwrap();
        d.mem
            .write_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9], GuestAddress(BUF))
            .unwrap();
        // Read-only file.
        assert_eq!(
            dma(&mut d, DESC, sel(ro) | DMA_CTL_WRITE, 4, BUF),
            DMA_CTL_ERROR
        );
        assert_eq!(d.file("opt/ro"), Some(&[0u8; 8][..]));
        // Writable: skip 2, write 4.
        assert_eq!(dma(&mut d, DESC, sel(rw) | DMA_CTL_SKIP, 2, 0), 0);
        assert_eq!(dma(&mut d, DESC, DMA_CTL_WRITE, 4, BUF), 0);
        assert_eq!(d.file("etc/rw"), Some(&[0, 0, 1, 2, 3, 4, 0, 0][..]));
        // A write running past the end is dropped entirely.
        assert_eq!(dma(&mut d, DESC, DMA_CTL_WRITE, 3, BUF), DMA_CTL_ERROR);
        assert_eq!(d.file("etc/rw"), Some(&[0, 0, 1, 2, 3, 4, 0, 0][..]));
        // From a bad guest address.
        assert_eq!(
            dma(&mut d, DESC, sel(rw) | DMA_CTL_WRITE, 4, RAM - 2),
            DMA_CTL_ERROR
        );
        assert_eq!(d.file("etc/rw"), Some(&[0, 0, 1, 2, 3, 4, 0, 0][..]));
        // Read wins over write when both bits are set.
        assert_eq!(
            dma(&mut d, DESC, sel(rw) | DMA_CTL_READ | DMA_CTL_WRITE, 8, BUF),
            0
        );
        assert_eq!(guest(&d, BUF, 8), [0, 0, 1, 2, 3, 4, 0, 0]);
        // Writes past the end of any item are errors.
        assert_eq!(
            dma(&mut d, DESC, sel(0x7ff) | DMA_CTL_WRITE, 1, BUF),
            DMA_CTL_ERROR
        );
        // Data-port writes are ignored.
        select(&mut d, rw);
        let _ = d.write(1, &[0xff]);
        assert_eq!(d.file("etc/rw").unwrap()[0], 0);
    }

    /// A generator that counts its runs and builds three files whose
    /// contents depend on the run number.
    fn counting_generator(runs: Arc<AtomicUsize>) -> FileGenerator {
        FileGenerator::new(move || {
            let n = runs.fetch_add(1, Ordering::SeqCst) as u8;
            let mut files = GeneratedFiles::new();
            files.insert("etc/acpi/rsdp".into(), vec![n; 4]);
            // Second build is shorter: gets padded.
            files.insert(
                "etc/acpi/tables".into(),
                vec![n; if n == 0 { 8 } else { 6 }],
            );
            files.insert("etc/table-loader".into(), vec![n + 10; 2]);
            Ok(files)
        })
    }

    #[test]
    fn generated_files_built_once_at_boot_and_once_on_select() {
        let runs = Arc::new(AtomicUsize::new(0));
        let g = counting_generator(runs.clone());
        let mut d = dev();
        let loader = d.add_file_generated("etc/table-loader", &g).unwrap();
        let tables = d.add_file_generated("etc/acpi/tables", &g.clone()).unwrap();
        let rsdp = d.add_file_generated("etc/acpi/rsdp", &g).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one boot build");
        let sizes: Vec<u32> = dir_entries(d.item(FW_CFG_FILE_DIR).unwrap())
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(sizes, vec![4, 8, 2]);
        // Reading the directory does not rebuild.
        let _ = read_item(&mut d, FW_CFG_FILE_DIR, 10);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // First select of any file rebuilds all of them, once.
        assert_eq!(read_item(&mut d, loader, 3), [11, 11, 0]);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(dma(&mut d, DESC, sel(tables) | DMA_CTL_READ, 8, BUF), 0);
        assert_eq!(
            guest(&d, BUF, 8),
            [1, 1, 1, 1, 1, 1, 0, 0],
            "padded to boot size"
        );
        assert_eq!(read_item(&mut d, rsdp, 4), [1; 4]);
        assert_eq!(read_item(&mut d, loader, 2), [11, 11]);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Sizes never change.
        let sizes2: Vec<u32> = dir_entries(d.item(FW_CFG_FILE_DIR).unwrap())
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(sizes, sizes2);
        // Reset restores the boot build and re-arms the rebuild.
        d.reset();
        assert_eq!(d.file("etc/acpi/rsdp"), Some(&[0u8; 4][..]));
        assert_eq!(read_item(&mut d, rsdp, 4), [2; 4]);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn generated_rebuild_that_grows_or_fails_keeps_boot_build() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let g = FileGenerator::new(move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let mut files = GeneratedFiles::new();
            files.insert("a".into(), vec![n as u8; 4]);
            files.insert("b".into(), vec![n as u8; 4 + n]);
            Ok(files)
        });
        let mut d = dev();
        let a = d.add_file_generated("a", &g).unwrap();
        d.add_file_generated("b", &g).unwrap();
        assert_eq!(read_item(&mut d, a, 4), [0; 4], "consistent boot build");
        assert_eq!(d.file("b"), Some(&[0u8; 4][..]));
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        let failing = FileGenerator::new({
            let runs = Arc::new(AtomicUsize::new(0));
            move || {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    Ok(GeneratedFiles::from([("c".to_owned(), vec![5; 3])]))
                } else {
                    Err("no".into())
                }
            }
        });
        let c = d.add_file_generated("c", &failing).unwrap();
        assert_eq!(read_item(&mut d, c, 3), [5; 3]);
    }

    #[test]
    fn generator_errors_at_registration() {
        let mut d = dev();
        let bad = FileGenerator::new(|| Err("boom".into()));
        assert!(matches!(
            d.add_file_generated("x", &bad),
            Err(FwCfgError::Generator { .. })
        ));
        let g = FileGenerator::new(|| Ok(GeneratedFiles::from([("y".to_owned(), vec![1])])));
        assert!(matches!(
            d.add_file_generated("z", &g),
            Err(FwCfgError::NotGenerated(_))
        ));
        d.add_file_generated("y", &g).unwrap();
        assert!(matches!(
            d.add_file_generated("y", &g),
            Err(FwCfgError::DuplicateFile(_))
        ));
        assert_eq!(d.file("y"), Some(&[1u8][..]));
    }

    #[test]
    fn fuzz_port_and_dma_accesses() {
        let mut d = dev();
        d.add_file("opt/a", pattern(50, 0)).unwrap();
        d.add_writable_file("opt/b", vec![0; 16]).unwrap();
        crate::fuzz::run("fw_cfg", 20_000, |rng| {
            let off = rng.offset(14);
            let len = rng.width();
            let val = rng.bytes();
            if rng.one_in(2) {
                // Random descriptor contents at a random in-RAM address.
                let desc = rng.below(RAM + 0x100);
                let _ = d
                    .mem
                    .write_slice(&rng.u64().to_be_bytes(), GuestAddress(desc));
                let _ = d
                    .mem
                    .write_slice(&rng.below(0x100_0000).to_be_bytes(), GuestAddress(desc + 8));
                let _ = d.write(4, &desc.to_be_bytes());
            }
            let _ = d.write(off, &val[..len]);
            let mut buf = vec![0; len];
            d.read(off, &mut buf);
        });
    }
}
