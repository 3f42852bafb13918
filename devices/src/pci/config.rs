//! The configuration space of one PCI function.
//!
//! [`PciConfiguration`] holds the 256-byte (conventional PCI) or 4096-byte
//! (PCI Express) configuration space of a function together with a
//! per-byte *writable* mask and a per-byte *write-1-to-clear* mask. Device
//! models embed one, build their header with [`PciConfiguration::new_type0`],
//! declare BARs and capabilities, and delegate their
//! [`PciDevice`](super::PciDevice) configuration accesses to
//! [`PciConfiguration::read`] and [`PciConfiguration::write`].
//!
//! # BARs and decoding
//!
//! A BAR's register holds its base address in the bits above its size and
//! read-only type bits below (I/O: bit 0 set; memory: bits 2:1 = type,
//! bit 3 = prefetchable). Writing all-ones and reading back therefore
//! yields the size mask with the type bits, as a guest expects when sizing.
//!
//! A BAR *decodes* (is mapped) when the command register's I/O or memory
//! decode bit for its kind is set and its address is usable: non-zero,
//! not wrapping, an I/O BAR entirely below port 0x10000 and a memory BAR
//! not reaching the last byte of its address space (that is where the
//! all-ones sizing pattern points; QEMU applies the same rule). Whenever
//! the decoded address of a BAR changes, [`PciConfiguration::write`]
//! returns a [`PciChange::Bar`] with the old and new mapping.
//!
//! ## 64-bit BARs written one half at a time
//!
//! A 64-bit BAR is programmed with two dword writes. When memory decode is
//! on and one half is rewritten with a different value, the BAR is reported
//! as *not decoding* (`new: None`) until the other half is written, and
//! only then is the complete new address reported. An address made of one
//! new half and one stale half is never reported. The transition also ends
//! when the guest writes any other register (a guest that only meant to
//! change one half); the BAR is then reported at the address its registers
//! hold. Guests normally program BARs with decode off (Linux and OVMF do),
//! in which case nothing is reported until decode is enabled.
//!
//! The expansion ROM BAR (optional, [`ROM_BAR_INDEX`]) decodes when memory
//! decode and its own enable bit (bit 0) are both set.

use thiserror::Error;

use super::{BarKind, PciChange};

/// Size of a conventional PCI configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Size of a PCI Express (extended) configuration space.
pub const EXTENDED_CONFIG_SPACE_SIZE: usize = 4096;

/// Vendor ID register.
pub const VENDOR_ID: u16 = 0x00;
/// Device ID register.
pub const DEVICE_ID: u16 = 0x02;
/// Command register.
pub const COMMAND: u16 = 0x04;
/// Status register.
pub const STATUS: u16 = 0x06;
/// Revision ID register.
pub const REVISION_ID: u16 = 0x08;
/// Programming interface byte (class code bits 7:0).
pub const PROG_IF: u16 = 0x09;
/// Subclass byte.
pub const SUBCLASS: u16 = 0x0a;
/// Base class byte.
pub const CLASS: u16 = 0x0b;
/// Cache line size register.
pub const CACHE_LINE_SIZE: u16 = 0x0c;
/// Header type register (bit 7: multi-function).
pub const HEADER_TYPE: u16 = 0x0e;
/// First BAR register.
pub const BAR0: u16 = 0x10;
/// Subsystem vendor ID register.
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
/// Subsystem ID register.
pub const SUBSYSTEM_ID: u16 = 0x2e;
/// Expansion ROM BAR register.
pub const ROM_BAR: u16 = 0x30;
/// Capabilities pointer register.
pub const CAPABILITY_POINTER: u16 = 0x34;
/// Interrupt line register.
pub const INTERRUPT_LINE: u16 = 0x3c;
/// Interrupt pin register.
pub const INTERRUPT_PIN: u16 = 0x3d;

/// Command register: I/O space decode enable.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decode enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx emulation disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register: the capability list is present.
pub const STATUS_CAPABILITY_LIST: u16 = 1 << 4;
/// Header type register: the device has more than one function.
pub const HEADER_TYPE_MULTI_FUNCTION: u8 = 0x80;

/// Number of BAR slots in a type-0 header.
pub const NUM_BARS: usize = 6;
/// The index [`PciChange::Bar`] uses for the expansion ROM BAR.
pub const ROM_BAR_INDEX: u8 = 6;

/// Writable command bits: I/O, memory, bus master, SERR# enable, INTx
/// disable (QEMU's `pci_init_wmask`; parity error response stays 0).
pub const COMMAND_WRITABLE: u16 = 0x0507;
/// Write-1-to-clear status bits: master data parity error, signaled/
/// received target abort, received master abort, signaled system error,
/// detected parity error.
const STATUS_W1C: u16 = 0xf900;
/// Where the first capability goes.
const FIRST_CAPABILITY: u16 = 0x40;
/// Where the first extended capability goes.
const FIRST_EXTENDED_CAPABILITY: u16 = 0x100;
/// Bound on capability-list walks (a list cannot hold more entries).
const MAX_CAPABILITIES: usize = 1024;

/// Errors building a configuration space.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// BAR index out of range (or a 64-bit BAR in the last slot).
    #[error("BAR index {0} is out of range")]
    BadBarIndex(u8),
    /// The BAR slot (or the second slot of a 64-bit BAR) is taken.
    #[error("BAR slot {0} is already in use")]
    BarInUse(u8),
    /// The size is not a power of two or is too small or large for its kind.
    #[error("invalid size {size:#x} for a {kind:?} BAR")]
    BadBarSize {
        /// The BAR's kind.
        kind: BarKind,
        /// The rejected size.
        size: u64,
    },
    /// Invalid expansion ROM size (a power of two, 2 KiB to 2 GiB).
    #[error("invalid expansion ROM size {0:#x}")]
    BadRomSize(u64),
    /// The capability does not fit in the remaining space.
    #[error("no room for a {0}-byte capability")]
    NoRoom(usize),
    /// Extended capabilities need a PCI Express configuration space.
    #[error("extended capabilities need a 4 KiB (PCI Express) configuration space")]
    NotExpress,
    /// A register range lies outside the configuration space.
    #[error("register range {offset:#x}+{len} is outside the configuration space")]
    OutOfRange {
        /// First byte.
        offset: u16,
        /// Length in bytes.
        len: usize,
    },
}

/// The identity of a function, for [`PciConfiguration::new_type0`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Type0Header {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Base class code (byte 0x0b).
    pub class: u8,
    /// Subclass code (byte 0x0a).
    pub subclass: u8,
    /// Programming interface (byte 0x09).
    pub prog_if: u8,
    /// Revision ID.
    pub revision: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Set bit 7 of the header type: the device has other functions.
    pub multi_function: bool,
}

/// A BAR as declared with [`PciConfiguration::add_bar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarInfo {
    /// Address space and width.
    pub kind: BarKind,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// A 64-bit BAR with one half rewritten while memory decode was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HalfWritten {
    index: u8,
    upper: bool,
}

/// The configuration space of one function; see the module documentation.
#[derive(Debug, Clone)]
pub struct PciConfiguration {
    bytes: Vec<u8>,
    writable: Vec<u8>,
    w1c: Vec<u8>,
    /// Slots 0..6 are the BARs (a 64-bit BAR at its low slot), slot 6 the ROM.
    bars: [Option<BarInfo>; NUM_BARS + 1],
    /// The slot holds the upper half of the 64-bit BAR below it.
    upper_half: [bool; NUM_BARS],
    /// Where each BAR decodes, as last reported.
    mapped: [Option<u64>; NUM_BARS + 1],
    half_written: Option<HalfWritten>,
    last_capability: Option<u16>,
    next_capability: u16,
    last_extended: Option<u16>,
    next_extended: u16,
}

impl PciConfiguration {
    /// A type-0 header with the identity in `header`: 256 bytes, or 4096
    /// when `express`. The command register's decode, bus-master, parity,
    /// SERR and INTx-disable bits, the cache line size and the interrupt
    /// line are writable; the status error bits are write-1-to-clear;
    /// everything else is read-only until BARs or capabilities are added.
    pub fn new_type0(header: &Type0Header, express: bool) -> Self {
        let size = if express {
            EXTENDED_CONFIG_SPACE_SIZE
        } else {
            CONFIG_SPACE_SIZE
        };
        let mut cfg = Self {
            bytes: vec![0; size],
            writable: vec![0; size],
            w1c: vec![0; size],
            bars: [None; NUM_BARS + 1],
            upper_half: [false; NUM_BARS],
            mapped: [None; NUM_BARS + 1],
            half_written: None,
            last_capability: None,
            next_capability: FIRST_CAPABILITY,
            last_extended: None,
            next_extended: FIRST_EXTENDED_CAPABILITY,
        };
        cfg.set_u16(VENDOR_ID, header.vendor_id);
        cfg.set_u16(DEVICE_ID, header.device_id);
        cfg.set_u8(REVISION_ID, header.revision);
        cfg.set_u8(PROG_IF, header.prog_if);
        cfg.set_u8(SUBCLASS, header.subclass);
        cfg.set_u8(CLASS, header.class);
        cfg.set_u16(SUBSYSTEM_VENDOR_ID, header.subsystem_vendor_id);
        cfg.set_u16(SUBSYSTEM_ID, header.subsystem_id);
        cfg.set_multi_function(header.multi_function);
        cfg.mask_u16(COMMAND, COMMAND_WRITABLE, 0);
        cfg.mask_u16(STATUS, 0, STATUS_W1C);
        cfg.mask_u8(CACHE_LINE_SIZE, 0xff);
        cfg.mask_u8(INTERRUPT_LINE, 0xff);
        cfg
    }

    /// A function's configuration space as read from hardware (a
    /// passed-through function): `image` is 256 or 4096 bytes (padded with
    /// all-ones or cut to the nearer size), every byte read-only, no BARs
    /// or capabilities declared. The caller declares BARs with
    /// [`add_bar`](Self::add_bar) and makes registers writable as it
    /// emulates them.
    pub fn from_image(mut image: Vec<u8>) -> Self {
        let size = if image.len() > CONFIG_SPACE_SIZE {
            EXTENDED_CONFIG_SPACE_SIZE
        } else {
            CONFIG_SPACE_SIZE
        };
        image.resize(size, 0xff);
        Self {
            bytes: image,
            writable: vec![0; size],
            w1c: vec![0; size],
            bars: [None; NUM_BARS + 1],
            upper_half: [false; NUM_BARS],
            mapped: [None; NUM_BARS + 1],
            half_written: None,
            last_capability: None,
            next_capability: CONFIG_SPACE_SIZE as u16,
            last_extended: None,
            next_extended: EXTENDED_CONFIG_SPACE_SIZE as u16,
        }
    }

    /// Size of the space: 256 or 4096.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// True for a 4 KiB (PCI Express) space.
    pub fn is_express(&self) -> bool {
        self.bytes.len() == EXTENDED_CONFIG_SPACE_SIZE
    }

    /// Set or clear the multi-function bit of the header type.
    pub fn set_multi_function(&mut self, multi_function: bool) {
        let ty = self.read_u8(HEADER_TYPE) & !HEADER_TYPE_MULTI_FUNCTION;
        let mf = if multi_function {
            HEADER_TYPE_MULTI_FUNCTION
        } else {
            0
        };
        self.set_u8(HEADER_TYPE, ty | mf);
    }

    /// Set the interrupt pin (0: none, 1..=4: INTA#..INTD#).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_u8(INTERRUPT_PIN, pin.min(4));
    }

    /// The interrupt line the guest wrote (firmware's IRQ routing note).
    pub fn interrupt_line(&self) -> u8 {
        self.read_u8(INTERRUPT_LINE)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(COMMAND)
    }

    // ----- guest accesses -----

    /// The guest reads `data.len()` bytes at `offset`. Bytes beyond the
    /// space read as all-ones.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self
                .bytes
                .get(usize::from(offset) + i)
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// The guest writes `data` at `offset`: writable bits take the new
    /// value, write-1-to-clear bits written as one are cleared, everything
    /// else is kept. Bytes beyond the space are ignored. Returns the BAR
    /// mapping changes the write caused.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> Vec<PciChange> {
        let start = usize::from(offset);
        if start >= self.bytes.len() || data.is_empty() {
            return Vec::new();
        }
        let len = data.len().min(self.bytes.len() - start);
        let before = self.bytes[start..start + len].to_vec();
        for (i, &v) in data[..len].iter().enumerate() {
            let at = start + i;
            let wm = self.writable[at];
            let mut b = (self.bytes[at] & !wm) | (v & wm);
            b &= !(v & self.w1c[at]);
            self.bytes[at] = b;
        }
        self.track_half_writes(start, len, &before);
        self.refresh_mappings()
    }

    /// Update the 64-bit BAR transition state after a write of `len`
    /// bytes at `start` whose previous contents were `before`.
    fn track_half_writes(&mut self, start: usize, len: usize, before: &[u8]) {
        let touches = |reg: usize| start < reg + 4 && reg < start + len;
        let changed = |reg: usize| {
            (reg.max(start)..(reg + 4).min(start + len))
                .any(|at| before[at - start] != self.bytes[at])
        };
        let mut completed = None;
        if let Some(hw) = self.half_written {
            let lo = usize::from(bar_register(hw.index));
            let (this, other) = if hw.upper { (lo + 4, lo) } else { (lo, lo + 4) };
            if touches(other) {
                completed = Some(hw.index);
                self.half_written = None;
            } else if !touches(this) {
                self.half_written = None;
            }
        }
        if self.half_written.is_some() || self.command() & COMMAND_MEMORY == 0 {
            return;
        }
        for index in 0..NUM_BARS as u8 {
            if completed == Some(index) {
                continue;
            }
            let Some(BarInfo {
                kind: BarKind::Mem64 { .. },
                ..
            }) = self.bars[usize::from(index)]
            else {
                continue;
            };
            let lo = usize::from(bar_register(index));
            let lo_changed = touches(lo) && changed(lo);
            let hi_changed = touches(lo + 4) && changed(lo + 4);
            if lo_changed != hi_changed {
                self.half_written = Some(HalfWritten {
                    index,
                    upper: hi_changed,
                });
                return;
            }
        }
    }

    /// Recompute where every BAR decodes; report the differences.
    fn refresh_mappings(&mut self) -> Vec<PciChange> {
        let mut changes = Vec::new();
        for index in 0..=ROM_BAR_INDEX {
            let Some(info) = self.bars[usize::from(index)] else {
                continue;
            };
            let pending = self.half_written.is_some_and(|hw| hw.index == index);
            let new = if pending { None } else { self.decoded(index) };
            let old = self.mapped[usize::from(index)];
            if old != new {
                self.mapped[usize::from(index)] = new;
                changes.push(PciChange::Bar {
                    index,
                    kind: info.kind,
                    size: info.size,
                    old,
                    new,
                });
            }
        }
        changes
    }

    /// Where BAR `index` decodes according to its registers and the
    /// command register (ignoring any half-written state).
    fn decoded(&self, index: u8) -> Option<u64> {
        let info = (*self.bars.get(usize::from(index))?)?;
        let cmd = self.command();
        let enabled = match info.kind {
            BarKind::Io => cmd & COMMAND_IO != 0,
            _ => cmd & COMMAND_MEMORY != 0,
        };
        if !enabled || (index == ROM_BAR_INDEX && self.read_u32(ROM_BAR) & 1 == 0) {
            return None;
        }
        let addr = self.bar_address(index)?;
        let last = addr.checked_add(info.size - 1)?;
        let usable = addr != 0
            && match info.kind {
                BarKind::Io => last <= 0xffff,
                BarKind::Mem32 { .. } => last < 0xffff_ffff,
                BarKind::Mem64 { .. } => last < u64::MAX,
            };
        usable.then_some(addr)
    }

    // ----- BARs -----

    /// Declare BAR `index` of `kind` and `size` bytes (a power of two: at
    /// least 16 for memory, at least 4 and at most 64 KiB for I/O, at most
    /// 2 GiB for 32-bit memory). A 64-bit BAR also takes slot `index + 1`.
    pub fn add_bar(&mut self, index: u8, kind: BarKind, size: u64) -> Result<(), ConfigError> {
        let slots = if matches!(kind, BarKind::Mem64 { .. }) {
            2
        } else {
            1
        };
        let i = usize::from(index);
        if i + slots > NUM_BARS {
            return Err(ConfigError::BadBarIndex(index));
        }
        for slot in i..i + slots {
            if self.bars[slot].is_some() || self.upper_half[slot] {
                return Err(ConfigError::BarInUse(slot as u8));
            }
        }
        let (min, max) = match kind {
            BarKind::Io => (4, 1 << 16),
            BarKind::Mem32 { .. } => (16, 1 << 31),
            BarKind::Mem64 { .. } => (16, 1 << 63),
        };
        if !size.is_power_of_two() || size < min || size > max {
            return Err(ConfigError::BadBarSize { kind, size });
        }
        let reg = bar_register(index);
        let mask = !(size - 1);
        match kind {
            BarKind::Io => {
                self.set_u32(reg, 1);
                self.mask_u32(reg, mask as u32 & !0x3);
            }
            BarKind::Mem32 { prefetchable } => {
                self.set_u32(reg, if prefetchable { 0x8 } else { 0 });
                self.mask_u32(reg, mask as u32 & !0xf);
            }
            BarKind::Mem64 { prefetchable } => {
                self.set_u32(reg, if prefetchable { 0xc } else { 0x4 });
                self.mask_u32(reg, mask as u32 & !0xf);
                self.set_u32(reg + 4, 0);
                self.mask_u32(reg + 4, (mask >> 32) as u32);
                self.upper_half[i + 1] = true;
            }
        }
        self.bars[i] = Some(BarInfo { kind, size });
        Ok(())
    }

    /// Declare an expansion ROM BAR of `size` bytes (a power of two, 2 KiB
    /// to 2 GiB); it is reported as BAR [`ROM_BAR_INDEX`], a 32-bit
    /// non-prefetchable memory BAR.
    pub fn add_rom_bar(&mut self, size: u64) -> Result<(), ConfigError> {
        if !size.is_power_of_two() || !(0x800..=1 << 31).contains(&size) {
            return Err(ConfigError::BadRomSize(size));
        }
        if self.bars[usize::from(ROM_BAR_INDEX)].is_some() {
            return Err(ConfigError::BarInUse(ROM_BAR_INDEX));
        }
        self.set_u32(ROM_BAR, 0);
        self.mask_u32(ROM_BAR, (!(size - 1) as u32 & 0xffff_f800) | 1);
        self.bars[usize::from(ROM_BAR_INDEX)] = Some(BarInfo {
            kind: BarKind::Mem32 {
                prefetchable: false,
            },
            size,
        });
        Ok(())
    }

    /// The BAR declared at `index` (0..6, or [`ROM_BAR_INDEX`]); `None`
    /// for an empty slot or the upper half of a 64-bit BAR.
    pub fn bar(&self, index: u8) -> Option<BarInfo> {
        *self.bars.get(usize::from(index))?
    }

    /// Every declared BAR, with its index.
    pub fn bars(&self) -> impl Iterator<Item = (u8, BarInfo)> + '_ {
        (0..=ROM_BAR_INDEX).filter_map(|i| self.bar(i).map(|b| (i, b)))
    }

    /// The base address programmed into BAR `index` (whether or not it
    /// decodes); `None` when there is no BAR there.
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        let info = self.bar(index)?;
        if index == ROM_BAR_INDEX {
            return Some(u64::from(self.read_u32(ROM_BAR) & 0xffff_f800));
        }
        let reg = bar_register(index);
        let lo = u64::from(self.read_u32(reg));
        Some(match info.kind {
            BarKind::Io => lo & !0x3,
            BarKind::Mem32 { .. } => lo & !0xf,
            BarKind::Mem64 { .. } => (u64::from(self.read_u32(reg + 4)) << 32) | (lo & !0xf),
        })
    }

    /// Where BAR `index` currently decodes, as last reported through
    /// [`PciChange::Bar`].
    pub fn bar_mapping(&self, index: u8) -> Option<u64> {
        *self.mapped.get(usize::from(index))?
    }

    /// Program BAR `index` to `address` (aligned down to its size) as
    /// firmware would, e.g. for direct boot. Returns the mapping change if
    /// decode is already on.
    pub fn set_bar_address(
        &mut self,
        index: u8,
        address: u64,
    ) -> Result<Vec<PciChange>, ConfigError> {
        let info = self.bar(index).ok_or(ConfigError::BadBarIndex(index))?;
        let addr = address & !(info.size - 1);
        if index == ROM_BAR_INDEX {
            let v = (self.read_u32(ROM_BAR) & 1) | addr as u32;
            self.set_u32(ROM_BAR, v);
        } else {
            let reg = bar_register(index);
            let ty = self.read_u32(reg) & if info.kind == BarKind::Io { 0x3 } else { 0xf };
            self.set_u32(reg, ty | addr as u32);
            if matches!(info.kind, BarKind::Mem64 { .. }) {
                self.set_u32(reg + 4, (addr >> 32) as u32);
            }
        }
        if self.half_written.is_some_and(|hw| hw.index == index) {
            self.half_written = None;
        }
        Ok(self.refresh_mappings())
    }

    // ----- capabilities -----

    /// Append a capability with `id` and `body` (the bytes after the ID and
    /// next-pointer bytes) to the list at 0x34, dword-aligned from 0x40;
    /// sets the status register's capability-list bit. The body is
    /// read-only until [`set_writable_mask`](Self::set_writable_mask).
    /// Returns the capability's offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u16, ConfigError> {
        let len = body.len() + 2;
        let offset = self.next_capability;
        let end = usize::from(offset) + len;
        if end > CONFIG_SPACE_SIZE {
            return Err(ConfigError::NoRoom(len));
        }
        self.set_u8(offset, id);
        self.set_u8(offset + 1, 0);
        self.bytes[usize::from(offset) + 2..end].copy_from_slice(body);
        match self.last_capability {
            Some(prev) => self.set_u8(prev + 1, offset as u8),
            None => self.set_u8(CAPABILITY_POINTER, offset as u8),
        }
        let status = self.read_u16(STATUS) | STATUS_CAPABILITY_LIST;
        self.set_u16(STATUS, status);
        self.last_capability = Some(offset);
        self.next_capability = (end as u16).next_multiple_of(4);
        Ok(offset)
    }

    /// Append a PCI Express extended capability (`id`, `version`, `body`
    /// after the 4-byte header) to the list at 0x100. Returns its offset.
    pub fn add_extended_capability(
        &mut self,
        id: u16,
        version: u8,
        body: &[u8],
    ) -> Result<u16, ConfigError> {
        if !self.is_express() {
            return Err(ConfigError::NotExpress);
        }
        let len = body.len() + 4;
        let offset = self.next_extended;
        let end = usize::from(offset) + len;
        if end > EXTENDED_CONFIG_SPACE_SIZE {
            return Err(ConfigError::NoRoom(len));
        }
        self.set_u32(offset, u32::from(id) | (u32::from(version & 0xf) << 16));
        self.bytes[usize::from(offset) + 4..end].copy_from_slice(body);
        if let Some(prev) = self.last_extended {
            let hdr = self.read_u32(prev) & 0x000f_ffff;
            self.set_u32(prev, hdr | (u32::from(offset) << 20));
        }
        self.last_extended = Some(offset);
        self.next_extended = (end as u16).next_multiple_of(4);
        Ok(offset)
    }

    /// Offsets and IDs of the capability list, walked from 0x34 as a guest
    /// would (bounded, so a corrupt list cannot loop).
    pub fn capabilities(&self) -> Vec<(u8, u16)> {
        let mut out = Vec::new();
        if self.read_u16(STATUS) & STATUS_CAPABILITY_LIST == 0 {
            return out;
        }
        let mut at = u16::from(self.read_u8(CAPABILITY_POINTER) & !3);
        while at >= FIRST_CAPABILITY && out.len() < MAX_CAPABILITIES {
            out.push((self.read_u8(at), at));
            at = u16::from(self.read_u8(at + 1) & !3);
        }
        out
    }

    /// Offset of the first capability with `id`.
    pub fn find_capability(&self, id: u8) -> Option<u16> {
        self.capabilities()
            .into_iter()
            .find(|&(cid, _)| cid == id)
            .map(|(_, at)| at)
    }

    /// Offsets and IDs of the extended capability list.
    pub fn extended_capabilities(&self) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        if !self.is_express() {
            return out;
        }
        let mut at = FIRST_EXTENDED_CAPABILITY;
        while at >= FIRST_EXTENDED_CAPABILITY && out.len() < MAX_CAPABILITIES {
            let hdr = self.read_u32(at);
            if hdr == 0 {
                break;
            }
            out.push((hdr as u16, at));
            at = (hdr >> 20) as u16 & !3;
        }
        out
    }

    // ----- device-side access -----

    /// Make the bits set in `mask` guest-writable for the bytes at
    /// `offset` (the bits clear in `mask` become read-only).
    pub fn set_writable_mask(&mut self, offset: u16, mask: &[u8]) -> Result<(), ConfigError> {
        let range = self.range(offset, mask.len())?;
        self.writable[range].copy_from_slice(mask);
        Ok(())
    }

    /// Make the bits set in `mask` write-1-to-clear for the bytes at
    /// `offset`.
    pub fn set_w1c_mask(&mut self, offset: u16, mask: &[u8]) -> Result<(), ConfigError> {
        let range = self.range(offset, mask.len())?;
        self.w1c[range].copy_from_slice(mask);
        Ok(())
    }

    fn range(&self, offset: u16, len: usize) -> Result<std::ops::Range<usize>, ConfigError> {
        let start = usize::from(offset);
        match start.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok(start..end),
            _ => Err(ConfigError::OutOfRange { offset, len }),
        }
    }

    /// Device-side read of a byte (all-ones beyond the space).
    pub fn read_u8(&self, offset: u16) -> u8 {
        let mut b = [0u8; 1];
        self.read(offset, &mut b);
        b[0]
    }

    /// Device-side read of a little-endian word.
    pub fn read_u16(&self, offset: u16) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    /// Device-side read of a little-endian dword.
    pub fn read_u32(&self, offset: u16) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// Device-side read of a little-endian qword.
    pub fn read_u64(&self, offset: u16) -> u64 {
        u64::from(self.read_u32(offset))
            | (u64::from(self.read_u32(offset.saturating_add(4))) << 32)
    }

    /// Device-side store of bytes, ignoring the masks and reporting
    /// nothing (bytes beyond the space are dropped). Do not use it on BAR
    /// or command registers; see [`set_bar_address`](Self::set_bar_address).
    pub fn set_bytes(&mut self, offset: u16, data: &[u8]) {
        let start = usize::from(offset);
        for (i, &v) in data.iter().enumerate() {
            if let Some(b) = self.bytes.get_mut(start + i) {
                *b = v;
            }
        }
    }

    /// Device-side store of a byte.
    pub fn set_u8(&mut self, offset: u16, value: u8) {
        self.set_bytes(offset, &[value]);
    }

    /// Device-side store of a little-endian word.
    pub fn set_u16(&mut self, offset: u16, value: u16) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    /// Device-side store of a little-endian dword.
    pub fn set_u32(&mut self, offset: u16, value: u32) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    /// Device-side store of a little-endian qword.
    pub fn set_u64(&mut self, offset: u16, value: u64) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    fn mask_u8(&mut self, offset: u16, writable: u8) {
        let at = usize::from(offset);
        self.writable[at] = writable;
    }

    fn mask_u16(&mut self, offset: u16, writable: u16, w1c: u16) {
        let at = usize::from(offset);
        self.writable[at..at + 2].copy_from_slice(&writable.to_le_bytes());
        self.w1c[at..at + 2].copy_from_slice(&w1c.to_le_bytes());
    }

    fn mask_u32(&mut self, offset: u16, writable: u32) {
        let at = usize::from(offset);
        self.writable[at..at + 4].copy_from_slice(&writable.to_le_bytes());
    }
}

/// Configuration offset of BAR slot `index` (0..6).
fn bar_register(index: u8) -> u16 {
    BAR0 + 4 * u16::from(index)
}

#[cfg(test)]
pub(crate) mod test_endpoint {
    //! A small PCI function over [`PciConfiguration`], shared by the PCI
    //! unit tests.

    use super::*;
    use crate::pci::PciDevice;
    use crate::pci::msi::MsiCapability;
    use crate::pci::msix::MsixCapability;

    /// A test function: a configuration space, optionally MSI and MSI-X,
    /// and a record of the interrupts that must fire.
    pub struct TestEndpoint {
        pub config: PciConfiguration,
        pub msi: Option<MsiCapability>,
        pub msix: Option<MsixCapability>,
        pub fired: Vec<(u16, crate::pci::MsiMessage)>,
    }

    impl TestEndpoint {
        pub fn new(device_id: u16, express: bool) -> Self {
            let header = Type0Header {
                vendor_id: 0x1af4,
                device_id,
                class: 0xff,
                revision: 1,
                ..Default::default()
            };
            Self {
                config: PciConfiguration::new_type0(&header, express),
                msi: None,
                msix: None,
                fired: Vec::new(),
            }
        }
    }

    impl PciDevice for TestEndpoint {
        fn config_read(&mut self, offset: u16, data: &mut [u8]) {
            self.config.read(offset, data);
        }

        fn config_write(&mut self, offset: u16, data: &[u8]) -> Vec<PciChange> {
            let mut changes = self.config.write(offset, data);
            if let Some(msi) = &mut self.msi {
                let up = msi.config_written(&mut self.config, offset, data.len());
                changes.extend(up.changes);
                self.fired.extend(up.fire);
            }
            if let Some(msix) = &mut self.msix {
                let up = msix.config_written(&self.config, offset, data.len());
                changes.extend(up.changes);
                self.fired.extend(up.fire);
            }
            changes
        }

        fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
            if let Some(msix) = &self.msix {
                if msix.bar_read(index, offset, data) {
                    return;
                }
            }
            data.fill(0);
        }

        fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) -> Vec<PciChange> {
            match self
                .msix
                .as_mut()
                .and_then(|m| m.bar_write(index, offset, data))
            {
                Some(up) => {
                    self.fired.extend(up.fire);
                    up.changes
                }
                None => Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_endpoint::TestEndpoint;
    use super::*;

    fn cfg() -> PciConfiguration {
        TestEndpoint::new(0x1234, false).config
    }

    fn wr32(c: &mut PciConfiguration, off: u16, v: u32) -> Vec<PciChange> {
        c.write(off, &v.to_le_bytes())
    }

    fn rd32(c: &PciConfiguration, off: u16) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn bar_change(
        index: u8,
        kind: BarKind,
        size: u64,
        old: Option<u64>,
        new: Option<u64>,
    ) -> PciChange {
        PciChange::Bar {
            index,
            kind,
            size,
            old,
            new,
        }
    }

    const MEM32: BarKind = BarKind::Mem32 {
        prefetchable: false,
    };
    const MEM64P: BarKind = BarKind::Mem64 { prefetchable: true };

    #[test]
    fn header_identity_and_read_only_fields() {
        let header = Type0Header {
            vendor_id: 0x8086,
            device_id: 0x29c0,
            class: 0x06,
            subclass: 0x00,
            prog_if: 0x00,
            revision: 2,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
            multi_function: true,
        };
        let mut c = PciConfiguration::new_type0(&header, false);
        assert_eq!(rd32(&c, 0), 0x29c0_8086);
        assert_eq!(rd32(&c, 8), 0x0600_0002);
        assert_eq!(c.read_u8(HEADER_TYPE), 0x80);
        assert_eq!(rd32(&c, 0x2c), 0x1100_1af4);
        assert!(wr32(&mut c, 0, 0xdead_beef).is_empty());
        wr32(&mut c, 8, 0xffff_ffff);
        wr32(&mut c, 0x2c, 0);
        assert_eq!(rd32(&c, 0), 0x29c0_8086);
        assert_eq!(rd32(&c, 8), 0x0600_0002);
        assert_eq!(rd32(&c, 0x2c), 0x1100_1af4);
        // Command: only the implemented bits stick.
        c.write(COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), COMMAND_WRITABLE);
        // Interrupt line writable, pin read-only.
        c.set_interrupt_pin(1);
        c.write(INTERRUPT_LINE, &[0x0b, 0x04]);
        assert_eq!(c.interrupt_line(), 0x0b);
        assert_eq!(c.read_u8(INTERRUPT_PIN), 1);
        c.set_multi_function(false);
        assert_eq!(c.read_u8(HEADER_TYPE), 0);
    }

    #[test]
    fn out_of_range_reads_all_ones_and_writes_ignored() {
        let mut c = cfg();
        let mut b = [0u8; 4];
        c.read(0x100, &mut b);
        assert_eq!(b, [0xff; 4]);
        c.read(0xfe, &mut b);
        assert_eq!(b, [0, 0, 0xff, 0xff]);
        assert!(c.write(0xffff, &[1, 2, 3, 4]).is_empty());
        assert!(c.write(0xfe, &[1, 2, 3, 4]).is_empty());
        let e = TestEndpoint::new(1, true).config;
        e.read(0xffc, &mut b);
        assert_eq!(b, [0; 4]);
        e.read(0x1000, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn status_write_one_to_clear() {
        let mut c = cfg();
        c.set_u16(STATUS, 0x8000 | 0x0100 | STATUS_CAPABILITY_LIST);
        c.write(STATUS, &0x0000u16.to_le_bytes());
        assert_eq!(c.read_u16(STATUS), 0x8110);
        c.write(STATUS, &0x8010u16.to_le_bytes());
        assert_eq!(c.read_u16(STATUS), 0x0110);
        // A dword write to the command register leaves status alone.
        wr32(&mut c, COMMAND, 0x0000_0002);
        assert_eq!(c.read_u16(STATUS), 0x0110);
    }

    #[test]
    fn io_bar_sizing() {
        let mut c = cfg();
        c.add_bar(0, BarKind::Io, 32).unwrap();
        assert_eq!(rd32(&c, BAR0), 1);
        wr32(&mut c, BAR0, 0xffff_ffff);
        assert_eq!(rd32(&c, BAR0), 0xffff_ffe1);
        wr32(&mut c, BAR0, 0xc00f);
        assert_eq!(rd32(&c, BAR0), 0xc001);
        assert_eq!(c.bar_address(0), Some(0xc000));
        // Byte writes to the read-only low bits do nothing.
        c.write(BAR0, &[0x1e]);
        assert_eq!(rd32(&c, BAR0), 0xc001);
    }

    #[test]
    fn mem32_bar_sizing() {
        let mut c = cfg();
        c.add_bar(1, BarKind::Mem32 { prefetchable: true }, 0x1000)
            .unwrap();
        wr32(&mut c, BAR0 + 4, 0xffff_ffff);
        assert_eq!(rd32(&c, BAR0 + 4), 0xffff_f008);
        wr32(&mut c, BAR0 + 4, 0xfebf_1234);
        assert_eq!(rd32(&c, BAR0 + 4), 0xfebf_1008);
        assert_eq!(c.bar_address(1), Some(0xfebf_1000));
        // Unused slots read zero and stay zero.
        wr32(&mut c, BAR0, 0xffff_ffff);
        assert_eq!(rd32(&c, BAR0), 0);
    }

    #[test]
    fn mem64_bar_sizing() {
        let mut c = cfg();
        c.add_bar(2, MEM64P, 1 << 33).unwrap();
        let lo = BAR0 + 8;
        assert_eq!(rd32(&c, lo), 0xc);
        wr32(&mut c, lo, 0xffff_ffff);
        wr32(&mut c, lo + 4, 0xffff_ffff);
        assert_eq!(rd32(&c, lo), 0x0000_000c);
        assert_eq!(rd32(&c, lo + 4), 0xffff_fffe);
        wr32(&mut c, lo, 0);
        wr32(&mut c, lo + 4, 0x0000_0008);
        assert_eq!(c.bar_address(2), Some(0x8_0000_0000));
        assert_eq!(c.bar_address(3), None);
        assert_eq!(
            c.bar(2),
            Some(BarInfo {
                kind: MEM64P,
                size: 1 << 33
            })
        );

        let mut c = cfg();
        c.add_bar(
            4,
            BarKind::Mem64 {
                prefetchable: false,
            },
            0x4000,
        )
        .unwrap();
        wr32(&mut c, BAR0 + 16, 0xffff_ffff);
        wr32(&mut c, BAR0 + 20, 0xffff_ffff);
        assert_eq!(rd32(&c, BAR0 + 16), 0xffff_c004);
        assert_eq!(rd32(&c, BAR0 + 20), 0xffff_ffff);
    }

    #[test]
    fn add_bar_validation() {
        let mut c = cfg();
        assert_eq!(c.add_bar(6, MEM32, 16), Err(ConfigError::BadBarIndex(6)));
        assert_eq!(c.add_bar(5, MEM64P, 16), Err(ConfigError::BadBarIndex(5)));
        assert!(matches!(
            c.add_bar(0, MEM32, 8),
            Err(ConfigError::BadBarSize { .. })
        ));
        assert!(matches!(
            c.add_bar(0, BarKind::Io, 2),
            Err(ConfigError::BadBarSize { .. })
        ));
        assert!(matches!(
            c.add_bar(0, MEM32, 0x3000),
            Err(ConfigError::BadBarSize { .. })
        ));
        assert!(matches!(
            c.add_bar(0, MEM32, 1 << 32),
            Err(ConfigError::BadBarSize { .. })
        ));
        c.add_bar(0, MEM64P, 1 << 20).unwrap();
        assert_eq!(c.add_bar(1, MEM32, 16), Err(ConfigError::BarInUse(1)));
        assert_eq!(c.add_bar(0, MEM32, 16), Err(ConfigError::BarInUse(0)));
        c.add_bar(2, BarKind::Io, 4).unwrap();
        assert_eq!(c.bars().count(), 2);
    }

    #[test]
    fn decode_enable_reports_bar_changes() {
        let mut c = cfg();
        c.add_bar(0, BarKind::Io, 16).unwrap();
        c.add_bar(1, MEM32, 0x1000).unwrap();
        wr32(&mut c, BAR0, 0xc000);
        wr32(&mut c, BAR0 + 4, 0xfe00_0000);
        // Decode off: nothing maps.
        assert_eq!(c.bar_mapping(0), None);
        // I/O decode only.
        let ch = c.write(COMMAND, &COMMAND_IO.to_le_bytes());
        assert_eq!(ch, vec![bar_change(0, BarKind::Io, 16, None, Some(0xc000))]);
        // Add memory decode.
        let ch = c.write(COMMAND, &(COMMAND_IO | COMMAND_MEMORY).to_le_bytes());
        assert_eq!(
            ch,
            vec![bar_change(1, MEM32, 0x1000, None, Some(0xfe00_0000))]
        );
        // Same value again: no change.
        assert!(
            c.write(COMMAND, &(COMMAND_IO | COMMAND_MEMORY).to_le_bytes())
                .is_empty()
        );
        // Moving a decoding BAR reports old and new.
        let ch = wr32(&mut c, BAR0 + 4, 0xfe01_0000);
        assert_eq!(
            ch,
            vec![bar_change(
                1,
                MEM32,
                0x1000,
                Some(0xfe00_0000),
                Some(0xfe01_0000)
            )]
        );
        // Disabling both unmaps both.
        let ch = c.write(COMMAND, &0u16.to_le_bytes());
        assert_eq!(
            ch,
            vec![
                bar_change(0, BarKind::Io, 16, Some(0xc000), None),
                bar_change(1, MEM32, 0x1000, Some(0xfe01_0000), None),
            ]
        );
        assert_eq!(c.bar_mapping(1), None);
    }

    #[test]
    fn sizing_with_decode_on_never_maps_the_sizing_pattern() {
        let mut c = cfg();
        c.add_bar(0, MEM32, 0x1000).unwrap();
        c.add_bar(1, BarKind::Io, 0x100).unwrap();
        wr32(&mut c, BAR0, 0xfe00_0000);
        wr32(&mut c, BAR0 + 4, 0x1000);
        c.write(COMMAND, &3u16.to_le_bytes());
        assert_eq!(c.bar_mapping(0), Some(0xfe00_0000));
        let ch = wr32(&mut c, BAR0, 0xffff_ffff);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM32, 0x1000, Some(0xfe00_0000), None)]
        );
        let ch = wr32(&mut c, BAR0, 0xfe00_0000);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM32, 0x1000, None, Some(0xfe00_0000))]
        );
        let ch = wr32(&mut c, BAR0 + 4, 0xffff_ffff);
        assert_eq!(
            ch,
            vec![bar_change(1, BarKind::Io, 0x100, Some(0x1000), None)]
        );
        // Address zero does not decode either.
        assert!(wr32(&mut c, BAR0 + 4, 0).is_empty());
    }

    #[test]
    fn mem64_half_writes_with_decode_on() {
        let mut c = cfg();
        c.add_bar(0, MEM64P, 0x10000).unwrap();
        wr32(&mut c, BAR0, 0x0000_0000);
        wr32(&mut c, BAR0 + 4, 0x1);
        let ch = c.write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, None, Some(0x1_0000_0000))]
        );
        // Low half: the BAR stops decoding; the mixed address is not reported.
        let ch = wr32(&mut c, BAR0, 0x8000_0000);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, Some(0x1_0000_0000), None)]
        );
        // Low half again: still in transition.
        assert!(wr32(&mut c, BAR0, 0x8001_0000).is_empty());
        // High half completes it.
        let ch = wr32(&mut c, BAR0 + 4, 0x2);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, None, Some(0x2_8001_0000))]
        );
        // High half first works too.
        let ch = wr32(&mut c, BAR0 + 4, 0x3);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, Some(0x2_8001_0000), None)]
        );
        let ch = wr32(&mut c, BAR0, 0x8001_0000);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, None, Some(0x3_8001_0000))]
        );
        // Rewriting a half with its current value starts nothing.
        assert!(wr32(&mut c, BAR0 + 4, 0x3).is_empty());
        // Only the low half changes, then the guest moves on: the BAR maps
        // at what its registers hold once another register is written.
        let ch = wr32(&mut c, BAR0, 0x4000_0000);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, Some(0x3_8001_0000), None)]
        );
        let ch = c.write(INTERRUPT_LINE, &[5]);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, None, Some(0x3_4000_0000))]
        );
        // Full sizing sequence with decode on never reports a mapping.
        let mut all = Vec::new();
        all.extend(wr32(&mut c, BAR0, 0xffff_ffff));
        all.extend(wr32(&mut c, BAR0 + 4, 0xffff_ffff));
        all.extend(wr32(&mut c, BAR0, 0x4000_0000));
        assert_eq!(
            all,
            vec![bar_change(0, MEM64P, 0x10000, Some(0x3_4000_0000), None)]
        );
        let ch = wr32(&mut c, BAR0 + 4, 0x3);
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, None, Some(0x3_4000_0000))]
        );
    }

    #[test]
    fn mem64_half_writes_with_decode_off_are_silent() {
        let mut c = cfg();
        c.add_bar(0, MEM64P, 0x10000).unwrap();
        assert!(wr32(&mut c, BAR0, 0x8000_0000).is_empty());
        assert!(wr32(&mut c, BAR0 + 4, 0x4).is_empty());
        let ch = c.write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(
            ch,
            vec![bar_change(0, MEM64P, 0x10000, None, Some(0x4_8000_0000))]
        );
    }

    #[test]
    fn rom_bar() {
        let mut c = cfg();
        c.add_rom_bar(0x10000).unwrap();
        assert_eq!(
            c.add_rom_bar(0x10000),
            Err(ConfigError::BarInUse(ROM_BAR_INDEX))
        );
        assert_eq!(
            TestEndpoint::new(1, false).config.add_rom_bar(0x400),
            Err(ConfigError::BadRomSize(0x400))
        );
        wr32(&mut c, ROM_BAR, 0xffff_f800);
        assert_eq!(rd32(&c, ROM_BAR), 0xffff_0000);
        wr32(&mut c, ROM_BAR, 0xfeb0_0000);
        assert!(c.write(COMMAND, &COMMAND_MEMORY.to_le_bytes()).is_empty());
        let ch = wr32(&mut c, ROM_BAR, 0xfeb0_0001);
        assert_eq!(
            ch,
            vec![bar_change(
                ROM_BAR_INDEX,
                MEM32,
                0x10000,
                None,
                Some(0xfeb0_0000)
            )]
        );
    }

    #[test]
    fn set_bar_address_programs_like_firmware() {
        let mut c = cfg();
        c.add_bar(0, MEM64P, 0x1000).unwrap();
        c.add_bar(2, BarKind::Io, 0x20).unwrap();
        assert!(c.set_bar_address(0, 0x10_0000_0000).unwrap().is_empty());
        assert!(c.set_bar_address(2, 0xc020).unwrap().is_empty());
        assert_eq!(rd32(&c, BAR0), 0xc);
        assert_eq!(rd32(&c, BAR0 + 4), 0x10);
        assert_eq!(rd32(&c, BAR0 + 8), 0xc021);
        let ch = c.write(COMMAND, &3u16.to_le_bytes());
        assert_eq!(ch.len(), 2);
        let ch = c.set_bar_address(2, 0xd000).unwrap();
        assert_eq!(
            ch,
            vec![bar_change(2, BarKind::Io, 0x20, Some(0xc020), Some(0xd000))]
        );
        assert_eq!(c.set_bar_address(1, 0), Err(ConfigError::BadBarIndex(1)));
    }

    #[test]
    fn capability_chain() {
        let mut c = cfg();
        assert!(c.capabilities().is_empty());
        assert_eq!(c.read_u16(STATUS) & STATUS_CAPABILITY_LIST, 0);
        let a = c.add_capability(0x09, &[1, 2, 3]).unwrap();
        let b = c.add_capability(0x10, &[0; 10]).unwrap();
        let d = c.add_capability(0x05, &[0; 8]).unwrap();
        assert_eq!((a, b, d), (0x40, 0x48, 0x54));
        assert_ne!(c.read_u16(STATUS) & STATUS_CAPABILITY_LIST, 0);
        // Walk as a guest would, through the raw registers.
        let mut at = c.read_u8(CAPABILITY_POINTER);
        let mut seen = Vec::new();
        while at != 0 {
            seen.push((c.read_u8(at.into()), at));
            at = c.read_u8(u16::from(at) + 1);
        }
        assert_eq!(seen, vec![(0x09, 0x40), (0x10, 0x48), (0x05, 0x54)]);
        assert_eq!(c.find_capability(0x05), Some(0x54));
        assert_eq!(c.find_capability(0x11), None);
        assert_eq!(c.read_u8(0x42), 1);
        // Capability bytes are read-only by default.
        c.write(0x42, &[0xaa]);
        assert_eq!(c.read_u8(0x42), 1);
        c.set_writable_mask(0x42, &[0x0f]).unwrap();
        c.write(0x42, &[0xaa]);
        assert_eq!(c.read_u8(0x42), 0x0a);
        assert_eq!(
            c.add_capability(0x01, &[0; 200]),
            Err(ConfigError::NoRoom(202))
        );
        assert!(c.set_writable_mask(0xff, &[0, 0]).is_err());
    }

    #[test]
    fn extended_capability_chain() {
        let mut c = cfg();
        assert_eq!(
            c.add_extended_capability(1, 1, &[0; 4]),
            Err(ConfigError::NotExpress)
        );
        let mut e = TestEndpoint::new(1, true).config;
        assert!(e.extended_capabilities().is_empty());
        let a = e.add_extended_capability(0x0001, 2, &[0; 0x18]).unwrap();
        let b = e.add_extended_capability(0x000b, 1, &[0; 6]).unwrap();
        assert_eq!((a, b), (0x100, 0x11c));
        assert_eq!(e.read_u32(0x100), (0x11c << 20) | (2 << 16) | 1);
        assert_eq!(e.read_u32(0x11c), (1 << 16) | 0xb);
        assert_eq!(e.extended_capabilities(), vec![(1, 0x100), (0xb, 0x11c)]);
        assert!(e.add_extended_capability(2, 1, &[0; 4000]).is_err());
    }
}
