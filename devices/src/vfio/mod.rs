//! A host PCI function passed through to the guest with VFIO.
//!
//! [`VfioPciDevice`] is the guest-facing model: it owns a virtual copy of
//! the function's configuration space and decides, byte by byte, what the
//! guest sees from that copy (*emulated*) and what it reads from and writes
//! to the real function (*passed through*). The host side (the VFIO device
//! file, its regions, interrupts and reset) sits behind [`VfioBackend`],
//! which the `vmm` crate implements on top of the kernel's VFIO interface
//! and the tests implement on a fake function.
//!
//! What is emulated:
//!
//! * **BARs** (0x10..0x27) and the **expansion ROM BAR** (0x30): addresses
//!   belong to the guest; sizes and types come from the function (VFIO's
//!   region sizes and the BAR's own type bits: I/O, 32/64-bit,
//!   prefetchable), so sizing probes read the right masks. The ROM comes
//!   from the function's ROM region (read once), or from a file given by
//!   the user (sized up to a power of two), or is absent (`rombar=off`);
//!   it is mapped as read-only guest memory, so reading it costs no exits.
//! * the **command register** is kept here for BAR decoding and also
//!   written through to the function (bus master, memory enable). Turning
//!   decode off unmaps the BARs (a [`PciChange::Bar`] with `new: None`).
//! * the **capability lists**: only the capabilities of [`caps`] are
//!   linked; hidden ones read as zero. A PCI Express endpoint is presented
//!   as a root-complex integrated endpoint (it sits on the root bus, as
//!   QEMU does it) with its link registers zero.
//! * **MSI** and **MSI-X**: the capability registers, the MSI-X table and
//!   PBA are emulated ([`MsiCapability`], [`MsixCapability`]); the host
//!   function signals one eventfd per vector ([`MsiVectors`]), which the VMM
//!   binds to KVM routes, so no interrupt passes through userspace.
//!   Enabling MSI or MSI-X here enables it at VFIO with those eventfds;
//!   masking a vector only changes its route (the VMM parks the eventfd).
//! * header type (single function), interrupt line and pin.
//!
//! Everything else (device-specific registers, power management, device
//! control, vendor capabilities) is read from and written to the function
//! through VFIO's config region; the kernel's own VFIO driver virtualizes
//! what must never reach the hardware.
//!
//! **BAR layout.** Each memory BAR the kernel lets us mmap becomes host
//! memory the VMM maps into the guest ([`BarPiece::Memory`]): the guest's
//! accesses never exit. The pages holding the MSI-X table and PBA stay
//! trapped ([`BarPiece::Trap`]) whatever the kernel allows, so the table
//! is emulated; sparse-mmap areas are honoured. I/O BARs, BARs the kernel
//! does not let us map and `x-no-mmap` devices are trapped and forwarded
//! with region reads and writes.

pub mod caps;

use std::io;
use std::sync::Arc;

use log::{debug, warn};
use thiserror::Error;
use vm_memory::MmapRegion;
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::MsiVectors;
use crate::pci::config::{
    BAR0, CAPABILITY_POINTER, COMMAND, COMMAND_WRITABLE, CONFIG_SPACE_SIZE, ConfigError,
    EXTENDED_CONFIG_SPACE_SIZE, HEADER_TYPE, INTERRUPT_LINE, INTERRUPT_PIN, NUM_BARS, ROM_BAR,
    ROM_BAR_INDEX, STATUS, STATUS_CAPABILITY_LIST,
};
use crate::pci::{
    BarKind, BarLayout, BarPiece, MsiCapability, MsiError, MsiMessage, MsixCapability, MsixError,
    PciChange, PciConfiguration, PciDevice, ProgrammedBar,
};

/// VFIO's PCI region indexes (linux/vfio.h `VFIO_PCI_*_REGION_INDEX`).
pub mod region {
    /// The expansion ROM.
    pub const ROM: u32 = 6;
    /// Configuration space.
    pub const CONFIG: u32 = 7;
}

/// The kinds of interrupt a VFIO PCI function offers (`VFIO_PCI_*_IRQ_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqIndex {
    /// The legacy INTx pin.
    Intx,
    /// MSI.
    Msi,
    /// MSI-X.
    Msix,
}

/// What the kernel says about one VFIO region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size in bytes (0: the region does not exist).
    pub size: u64,
    /// `mmap` is allowed (`VFIO_REGION_INFO_FLAG_MMAP`).
    pub mmap: bool,
    /// The only ranges that may be mapped, (offset, length), when the
    /// kernel gives a sparse-mmap capability.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// The host side of a passed-through function. All offsets are relative
/// to the region (or to configuration space).
pub trait VfioBackend: Send {
    /// The host function's address, e.g. `0000:01:10.0`.
    fn address(&self) -> &str;
    /// Read configuration space.
    fn config_read(&self, offset: u16, data: &mut [u8]) -> io::Result<()>;
    /// Write configuration space.
    fn config_write(&self, offset: u16, data: &[u8]) -> io::Result<()>;
    /// Region `index` (BARs 0..6, ROM 6, config 7).
    fn region(&self, index: u32) -> RegionInfo;
    /// Read region `index` at `offset`.
    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()>;
    /// Write region `index` at `offset`.
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Map `len` bytes of region `index` from `offset` (page multiples)
    /// into this process, shared with the device.
    fn map_region(&self, index: u32, offset: u64, len: u64) -> io::Result<Arc<MmapRegion>>;
    /// How many interrupts of `irq` the function has (0: none).
    fn irq_count(&self, irq: IrqIndex) -> u32;
    /// Signal `fds[i]` for interrupt `i` of kind `irq`; an empty slice
    /// disables that kind.
    fn set_irqs(&self, irq: IrqIndex, fds: &[&EventFd]) -> io::Result<()>;
    /// Unmask INTx when `fd` is signalled (KVM's resample on EOI).
    fn set_intx_resample(&self, fd: &EventFd) -> io::Result<()>;
    /// Reset the function (FLR or whatever the kernel can do).
    fn reset(&self) -> io::Result<()>;
}

/// How the user attached the function.
#[derive(Debug, Clone, Default)]
pub struct VfioOptions {
    /// Expansion ROM contents replacing the function's own (`rom=FILE`).
    pub rom: Option<Vec<u8>>,
    /// No expansion ROM at all (`rombar=off`).
    pub no_rom: bool,
    /// Trap every BAR access instead of mapping BARs (`x-no-mmap`), for
    /// debugging and for measuring what mapping saves.
    pub no_mmap: bool,
}

/// Errors building the model of a passed-through function.
#[derive(Debug, Error)]
pub enum VfioError {
    /// Its configuration space could not be read.
    #[error("{0}: cannot read its configuration space: {1}")]
    ConfigRead(String, io::Error),
    /// It is not a type-0 (endpoint) function.
    #[error("{0}: header type {1:#x} is not an endpoint (bridges cannot be passed through)")]
    NotEndpoint(String, u8),
    /// A BAR the guest cannot be given.
    #[error("{address}: BAR{index} ({size:#x} bytes) cannot be presented: {reason}")]
    BadBar {
        /// The function.
        address: String,
        /// The BAR.
        index: u8,
        /// Its size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// The ROM file is too large.
    #[error("{0}: the ROM file is {1} bytes; an expansion ROM holds at most 16 MiB")]
    RomTooLarge(String, usize),
    /// The MSI capability is malformed.
    #[error("{0}: MSI capability: {1}")]
    Msi(String, MsiError),
    /// The MSI-X capability is malformed.
    #[error("{0}: MSI-X capability: {1}")]
    Msix(String, MsixError),
    /// Configuration space layout.
    #[error("{0}: {1}")]
    Config(String, ConfigError),
    /// Interrupt eventfds or the INTx setup failed.
    #[error("{0}: cannot set up its interrupts: {1}")]
    Interrupts(String, io::Error),
}

/// The legacy interrupt of a function: VFIO signals `trigger` when the pin
/// asserts (and masks it), the VMM binds it to the pin's GSI as a KVM irqfd
/// with `resample`, which KVM signals on EOI and VFIO answers by unmasking.
#[derive(Debug, Clone)]
pub struct IntxLine {
    /// INTA..INTD as 1..=4.
    pub pin: u8,
    /// Raised by VFIO.
    pub trigger: Arc<EventFd>,
    /// Raised by KVM on EOI.
    pub resample: Arc<EventFd>,
}

/// Which interrupt kind is enabled at VFIO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IrqMode {
    None,
    Intx,
    Msi(u16),
    Msix(u16),
}

/// What a function reset returns the emulated state to.
#[derive(Debug, Clone)]
struct Pristine {
    config: PciConfiguration,
    msi: Option<MsiCapability>,
    msix: Option<MsixCapability>,
}

/// A passthrough BAR: its type, size and the layout of its pieces.
#[derive(Debug, Clone)]
struct Bar {
    kind: BarKind,
    size: u64,
    pieces: Vec<BarPiece>,
}

/// Largest expansion ROM accepted from a file.
const ROM_MAX: usize = 16 << 20;
/// Page size for BAR mappings (x86_64).
const PAGE: u64 = 4096;
/// PCI Express capability: flags register offset, device/port type field.
const EXP_FLAGS: u16 = 0x02;
const EXP_FLAGS_TYPE_MASK: u16 = 0x00f0;
const EXP_TYPE_ENDPOINT: u16 = 0x0;
const EXP_TYPE_LEGACY_ENDPOINT: u16 = 0x1;
const EXP_TYPE_RC_END: u16 = 0x9;
/// Link capabilities/control/status and their "2" versions.
const EXP_LINK_REGS: [(u16, usize); 2] = [(0x0c, 8), (0x2c, 8)];
/// Bytes of a version-2 PCI Express capability.
const EXP_V2_LEN: u16 = 0x3c;

/// A passed-through function; see the module documentation.
pub struct VfioPciDevice {
    name: String,
    config: PciConfiguration,
    /// Per byte: the bits the guest reads from `config` rather than the
    /// function.
    emulated: Vec<u8>,
    /// Per byte: guest writes also go to the function.
    forward: Vec<bool>,
    bars: [Option<Bar>; NUM_BARS + 1],
    /// The expansion ROM (from the file or read once from the function),
    /// padded to the ROM BAR's size.
    rom: Option<Vec<u8>>,
    msi: Option<MsiCapability>,
    msix: Option<MsixCapability>,
    vectors: Arc<MsiVectors>,
    /// The route of each vector as last reported: what the interrupt kind
    /// enabled at VFIO delivers (MSI and MSI-X share vector numbers and
    /// eventfds, so only the active kind may route them).
    routes: Vec<Option<MsiMessage>>,
    intx: Option<IntxLine>,
    mode: IrqMode,
    /// Offset of the power management capability.
    pm: Option<u16>,
    /// Offset of the PCI Express capability.
    exp: Option<u16>,
    /// The guest put the function in D3hot: its BARs are unreachable.
    d3: bool,
    /// The emulated state right after construction, for a guest-initiated
    /// function reset.
    pristine: Option<Box<Pristine>>,
    /// Last: fields drop in order, and the BAR mappings must be gone
    /// before the host device is closed.
    backend: Box<dyn VfioBackend>,
}

impl std::fmt::Debug for VfioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioPciDevice")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn align_down(v: u64, a: u64) -> u64 {
    v & !(a - 1)
}

fn align_up(v: u64, a: u64) -> u64 {
    v.saturating_add(a - 1) & !(a - 1)
}

impl VfioPciDevice {
    /// Build the guest's view of the function behind `backend`. Reads its
    /// configuration space, declares its BARs, filters its capabilities,
    /// maps its mappable BARs and prepares one eventfd per vector. Does
    /// not reset the function (the VMM does that first).
    pub fn new(backend: Box<dyn VfioBackend>, options: VfioOptions) -> Result<Self, VfioError> {
        let name = format!("vfio {}", backend.address());
        let address = backend.address().to_string();
        let cfg_size = match backend.region(region::CONFIG).size {
            s if s >= EXTENDED_CONFIG_SPACE_SIZE as u64 => EXTENDED_CONFIG_SPACE_SIZE,
            _ => CONFIG_SPACE_SIZE,
        };
        let mut image = vec![0u8; cfg_size];
        for (i, chunk) in image.chunks_mut(4).enumerate() {
            backend
                .config_read((i * 4) as u16, chunk)
                .map_err(|e| VfioError::ConfigRead(address.clone(), e))?;
        }
        let header_type = image[usize::from(HEADER_TYPE)] & 0x7f;
        if header_type != 0 {
            return Err(VfioError::NotEndpoint(address, header_type));
        }
        let original_bars: Vec<u32> = (0..NUM_BARS)
            .map(|i| {
                let at = usize::from(BAR0) + 4 * i;
                u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]])
            })
            .collect();
        let mut config = PciConfiguration::from_image(image);
        let mut dev = Self {
            backend,
            name,
            emulated: vec![0; config.size()],
            forward: vec![true; config.size()],
            config: PciConfiguration::from_image(Vec::new()),
            bars: Default::default(),
            rom: None,
            msi: None,
            msix: None,
            vectors: Arc::new(
                MsiVectors::new(0).map_err(|e| VfioError::Interrupts(address.clone(), e))?,
            ),
            routes: Vec::new(),
            intx: None,
            mode: IrqMode::None,
            pm: None,
            exp: None,
            d3: false,
            pristine: None,
        };

        // Header: command kept here (and written through), BARs and ROM
        // emulated, single function, our own interrupt line.
        config.set_u16(COMMAND, 0);
        let _ = config.set_writable_mask(COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        dev.emulate(COMMAND, 2, 0xff, true);
        dev.emulate(HEADER_TYPE, 1, 0xff, false);
        config.set_u8(HEADER_TYPE, 0);
        dev.emulate(BAR0, 4 * NUM_BARS, 0xff, false);
        for i in 0..NUM_BARS {
            config.set_u32(BAR0 + 4 * i as u16, 0);
        }
        dev.emulate(ROM_BAR, 4, 0xff, false);
        config.set_u32(ROM_BAR, 0);
        dev.emulate(INTERRUPT_LINE, 2, 0xff, false);
        let _ = config.set_writable_mask(INTERRUPT_LINE, &[0xff]);
        let pin = config.read_u8(INTERRUPT_PIN);
        let has_intx = pin != 0 && dev.backend.irq_count(IrqIndex::Intx) > 0;
        config.set_u8(INTERRUPT_PIN, if has_intx { pin.min(4) } else { 0 });

        dev.declare_bars(&mut config, &original_bars)?;
        dev.declare_rom(&mut config, options.rom, options.no_rom)?;
        dev.filter_capabilities(&mut config)?;
        dev.filter_extended_capabilities(&mut config);
        dev.config = config;

        let count = dev
            .msix
            .as_ref()
            .map_or(0, |m| m.vectors())
            .max(dev.msi.as_ref().map_or(0, |m| m.vectors()));
        dev.vectors = Arc::new(
            MsiVectors::new(count).map_err(|e| VfioError::Interrupts(address.clone(), e))?,
        );
        dev.routes = vec![None; usize::from(count)];
        dev.layout_bars(options.no_mmap);
        if has_intx {
            let fd = || {
                EventFd::new(libc::EFD_NONBLOCK)
                    .map(Arc::new)
                    .map_err(|e| VfioError::Interrupts(address.clone(), e))
            };
            dev.intx = Some(IntxLine {
                pin: dev.config.read_u8(INTERRUPT_PIN),
                trigger: fd()?,
                resample: fd()?,
            });
        }
        dev.sync_irqs();
        dev.pristine = Some(Box::new(Pristine {
            config: dev.config.clone(),
            msi: dev.msi.clone(),
            msix: dev.msix.clone(),
        }));
        Ok(dev)
    }

    /// The name used in logs and statistics (`vfio 0000:01:10.0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The function's INTx line, if it has one (the VMM binds it).
    pub fn intx(&self) -> Option<&IntxLine> {
        self.intx.as_ref()
    }

    /// Reset the host function (at VM start and after the VM stopped).
    pub fn reset(&self) -> io::Result<()> {
        self.backend.reset()
    }

    /// Stop the function's interrupts at VFIO (before tearing down).
    pub fn disable_interrupts(&mut self) {
        self.set_mode(IrqMode::None);
    }

    /// Mark `len` bytes at `offset` as emulated with `mask`; `forward`
    /// keeps guest writes going to the function too.
    fn emulate(&mut self, offset: u16, len: usize, mask: u8, forward: bool) {
        let start = usize::from(offset);
        for i in start..(start + len).min(self.emulated.len()) {
            self.emulated[i] = mask;
            self.forward[i] = forward || mask != 0xff;
        }
    }

    fn declare_bars(
        &mut self,
        config: &mut PciConfiguration,
        original: &[u32],
    ) -> Result<(), VfioError> {
        let mut index = 0u8;
        while usize::from(index) < NUM_BARS {
            let reg = original[usize::from(index)];
            let size = self.backend.region(u32::from(index)).size;
            let kind = if reg & 1 == 1 {
                BarKind::Io
            } else if reg & 0x6 == 0x4 {
                BarKind::Mem64 {
                    prefetchable: reg & 0x8 != 0,
                }
            } else {
                BarKind::Mem32 {
                    prefetchable: reg & 0x8 != 0,
                }
            };
            let step = if matches!(kind, BarKind::Mem64 { .. }) {
                2
            } else {
                1
            };
            if size > 0 {
                let bad = |reason: String| VfioError::BadBar {
                    address: self.backend.address().to_string(),
                    index,
                    size,
                    reason,
                };
                let size = if size.is_power_of_two() {
                    size
                } else {
                    return Err(bad("its size is not a power of two".into()));
                };
                // The smallest BAR the PCI rules allow, for tiny regions.
                let size = size.max(if kind == BarKind::Io { 4 } else { 16 });
                config
                    .add_bar(index, kind, size)
                    .map_err(|e| bad(e.to_string()))?;
                self.bars[usize::from(index)] = Some(Bar {
                    kind,
                    size,
                    pieces: Vec::new(),
                });
            }
            index += step;
        }
        Ok(())
    }

    fn declare_rom(
        &mut self,
        config: &mut PciConfiguration,
        file: Option<Vec<u8>>,
        no_rom: bool,
    ) -> Result<(), VfioError> {
        let address = self.backend.address().to_string();
        if no_rom {
            return Ok(());
        }
        let size = match &file {
            Some(bytes) if bytes.len() > ROM_MAX => {
                return Err(VfioError::RomTooLarge(address, bytes.len()));
            }
            Some(bytes) => (bytes.len() as u64).next_power_of_two().max(0x800),
            None => match self.backend.region(region::ROM).size {
                0 => return Ok(()),
                s => s.next_power_of_two().max(0x800),
            },
        };
        let mut bytes = match file {
            Some(bytes) => bytes,
            None => {
                let mut bytes = vec![0u8; self.backend.region(region::ROM).size as usize];
                if let Err(e) = self.backend.region_read(region::ROM, 0, &mut bytes) {
                    warn!(
                        "{}: cannot read its expansion ROM, presenting none: {e}",
                        self.name
                    );
                    return Ok(());
                }
                bytes
            }
        };
        bytes.resize(size as usize, 0);
        config
            .add_rom_bar(size)
            .map_err(|e| VfioError::Config(address, e))?;
        let kind = BarKind::Mem32 {
            prefetchable: false,
        };
        // Firmware reads option ROMs byte by byte: as read-only memory
        // that costs no exits.
        let piece = if size % PAGE == 0 {
            MmapRegion::new(size as usize)
                .ok()
                .and_then(|m| {
                    use vm_memory::VolatileMemory;
                    let slice = m.get_slice(0, bytes.len()).ok()?;
                    slice.copy_from(&bytes);
                    Some(m)
                })
                .map(|m| BarPiece::Memory {
                    offset: 0,
                    len: size,
                    memory: Arc::new(m),
                    read_only: true,
                    name: format!("{} ROM", self.name),
                })
        } else {
            None
        };
        let piece = piece.unwrap_or_else(|| BarPiece::Trap {
            offset: 0,
            len: size,
            name: format!("{} ROM", self.name),
        });
        self.bars[usize::from(ROM_BAR_INDEX)] = Some(Bar {
            kind,
            size,
            pieces: vec![piece],
        });
        self.rom = Some(bytes);
        Ok(())
    }

    /// Relink the conventional list through the kept capabilities; set up
    /// MSI, MSI-X and the PCI Express capability.
    fn filter_capabilities(&mut self, config: &mut PciConfiguration) -> Result<(), VfioError> {
        let address = self.backend.address().to_string();
        let status = config.read_u16(STATUS);
        let mut chain = Vec::new();
        if status & STATUS_CAPABILITY_LIST != 0 {
            let mut at = u16::from(config.read_u8(CAPABILITY_POINTER) & !3);
            let mut seen = [false; CONFIG_SPACE_SIZE];
            while at >= 0x40 && usize::from(at) < CONFIG_SPACE_SIZE && !seen[usize::from(at)] {
                seen[usize::from(at)] = true;
                chain.push((config.read_u8(at), at));
                at = u16::from(config.read_u8(at + 1) & !3);
            }
        }
        let (msi_offered, msix_offered) = (
            self.backend.irq_count(IrqIndex::Msi) > 0,
            self.backend.irq_count(IrqIndex::Msix) > 0,
        );
        let keep = |id: u8| {
            caps::keep_capability(id)
                && match id {
                    caps::id::MSI => msi_offered,
                    caps::id::MSIX => msix_offered,
                    _ => true,
                }
        };
        // A hidden capability is zeroed over its own length, never past
        // the next capability.
        let mut starts: Vec<u16> = chain.iter().map(|&(_, at)| at).collect();
        starts.sort_unstable();
        let kept: Vec<(u8, u16)> = chain.iter().copied().filter(|&(id, _)| keep(id)).collect();
        for &(id, at) in &chain {
            if keep(id) {
                continue;
            }
            debug!("{}: hiding capability {id:#04x} at {at:#x}", self.name);
            let next = starts
                .iter()
                .copied()
                .find(|&s| s > at)
                .unwrap_or(CONFIG_SPACE_SIZE as u16);
            let len = caps::capability_len(id, at, |o| config.read_u8(o));
            let end = (at + len).min(next).min(CONFIG_SPACE_SIZE as u16);
            for b in at..end {
                config.set_u8(b, 0);
            }
            self.emulate(at, usize::from(end - at), 0xff, false);
        }
        self.emulate(CAPABILITY_POINTER, 1, 0xff, false);
        config.set_u8(
            CAPABILITY_POINTER,
            kept.first().map_or(0, |&(_, at)| at as u8),
        );
        self.emulate(STATUS, 1, STATUS_CAPABILITY_LIST as u8, true);
        let cap_bit = if kept.is_empty() {
            0
        } else {
            STATUS_CAPABILITY_LIST
        };
        config.set_u16(STATUS, (status & !STATUS_CAPABILITY_LIST) | cap_bit);
        for (i, &(id, at)) in kept.iter().enumerate() {
            let next = kept.get(i + 1).map_or(0, |&(_, n)| n as u8);
            config.set_u8(at + 1, next);
            // ID and next pointer: ours (the pointer differs from the
            // function's when a capability is hidden).
            self.emulate(at, 2, 0xff, false);
            match id {
                caps::id::MSI => {
                    let max = self.backend.irq_count(IrqIndex::Msi) as u16;
                    let msi = MsiCapability::at(config, at, max)
                        .map_err(|e| VfioError::Msi(address.clone(), e))?;
                    self.emulate(at + 2, usize::from(msi.len()) - 2, 0xff, false);
                    self.msi = Some(msi);
                }
                caps::id::MSIX => {
                    let msix = MsixCapability::at(config, at)
                        .map_err(|e| VfioError::Msix(address.clone(), e))?;
                    self.emulate(at + 2, 10, 0xff, false);
                    self.msix = Some(msix);
                }
                caps::id::EXP => {
                    self.exp = Some(at);
                    self.present_as_integrated_endpoint(config, at);
                }
                caps::id::PM => self.pm = Some(at),
                _ => {}
            }
        }
        Ok(())
    }

    /// On the root bus a PCI Express endpoint is a root-complex integrated
    /// endpoint, which has no link (QEMU's `vfio_setup_pcie_cap`).
    fn present_as_integrated_endpoint(&mut self, config: &mut PciConfiguration, at: u16) {
        let flags = config.read_u16(at + EXP_FLAGS);
        let ty = (flags & EXP_FLAGS_TYPE_MASK) >> 4;
        if ty != EXP_TYPE_ENDPOINT && ty != EXP_TYPE_LEGACY_ENDPOINT {
            return;
        }
        config.set_u16(
            at + EXP_FLAGS,
            (flags & !EXP_FLAGS_TYPE_MASK) | (EXP_TYPE_RC_END << 4),
        );
        self.emulate(at + EXP_FLAGS, 2, 0xff, false);
        let version = flags & 0xf;
        for (i, &(off, len)) in EXP_LINK_REGS.iter().enumerate() {
            if i == 1 && (version < 2 || usize::from(at + EXP_V2_LEN) > CONFIG_SPACE_SIZE) {
                break;
            }
            for b in 0..len as u16 {
                config.set_u8(at + off + b, 0);
            }
            self.emulate(at + off, len, 0xff, false);
        }
    }

    /// Relink the extended list at 0x100 through the kept capabilities.
    fn filter_extended_capabilities(&mut self, config: &mut PciConfiguration) {
        if !config.is_express() {
            return;
        }
        let mut chain = Vec::new();
        let mut at = 0x100u16;
        let mut seen = std::collections::BTreeSet::new();
        while at >= 0x100 && usize::from(at) + 4 <= EXTENDED_CONFIG_SPACE_SIZE && seen.insert(at) {
            let hdr = config.read_u32(at);
            if hdr == 0 || hdr == u32::MAX {
                break;
            }
            chain.push((hdr as u16, ((hdr >> 16) & 0xf) as u8, at));
            at = ((hdr >> 20) as u16) & !3;
        }
        if chain.is_empty() {
            return;
        }
        let mut starts: Vec<u16> = chain.iter().map(|&(_, _, at)| at).collect();
        starts.sort_unstable();
        let kept: Vec<(u16, u8, u16)> = chain
            .iter()
            .copied()
            .filter(|&(id, _, _)| caps::keep_extended_capability(id))
            .collect();
        for &(id, _, at) in &chain {
            if caps::keep_extended_capability(id) {
                continue;
            }
            debug!(
                "{}: hiding extended capability {id:#06x} at {at:#x}",
                self.name
            );
            let next = starts
                .iter()
                .copied()
                .find(|&s| s > at)
                .unwrap_or(EXTENDED_CONFIG_SPACE_SIZE as u16);
            let len = caps::extended_capability_len(id, at, |o| config.read_u8(o));
            let end = (at + len).min(next).min(EXTENDED_CONFIG_SPACE_SIZE as u16);
            for b in at..end {
                config.set_u8(b, 0);
            }
            self.emulate(at, usize::from(end - at), 0xff, false);
        }
        for (i, &(id, ver, at)) in kept.iter().enumerate() {
            let next = kept.get(i + 1).map_or(0, |&(_, _, n)| u32::from(n));
            config.set_u32(at, u32::from(id) | (u32::from(ver) << 16) | (next << 20));
            self.emulate(at, 4, 0xff, false);
        }
        // The list must start at 0x100: if that capability is hidden, a
        // null capability there points at the first kept one.
        if kept.first().is_none_or(|&(_, _, at)| at != 0x100) {
            let next = kept.first().map_or(0, |&(_, _, n)| u32::from(n));
            config.set_u32(0x100, next << 20);
            self.emulate(0x100, 4, 0xff, false);
        }
    }

    /// Split each BAR into mapped and trapped pieces and map the former.
    fn layout_bars(&mut self, no_mmap: bool) {
        let msix = self
            .msix
            .as_ref()
            .map(|m| (m.table_location(), m.pba_location()));
        for index in 0..NUM_BARS as u8 {
            let Some(bar) = self.bars[usize::from(index)].clone() else {
                continue;
            };
            let region = self.backend.region(u32::from(index));
            let bar_name = format!("{} BAR{index}", self.name);
            // Ranges that must stay trapped: the MSI-X structures' pages.
            let mut holes: Vec<(u64, u64, &str)> = Vec::new();
            if let Some(((tb, to, tl), (pb, po, pl))) = msix {
                if tb == index {
                    holes.push((align_down(to, PAGE), align_up(to + tl, PAGE), "msix-table"));
                }
                if pb == index {
                    holes.push((align_down(po, PAGE), align_up(po + pl, PAGE), "msix-pba"));
                }
            }
            let mappable = region.mmap && !no_mmap && bar.kind != BarKind::Io;
            let areas: Vec<(u64, u64)> = match (&region.sparse, mappable) {
                (_, false) => Vec::new(),
                (Some(areas), true) => areas.clone(),
                (None, true) => vec![(0, region.size.min(bar.size))],
            };
            let mut mapped: Vec<(u64, u64)> = Vec::new();
            for (off, len) in areas {
                let (mut start, end) = (
                    align_up(off, PAGE),
                    align_down(off.saturating_add(len), PAGE),
                );
                let mut cuts: Vec<(u64, u64)> = holes.iter().map(|&(s, e, _)| (s, e)).collect();
                cuts.sort_unstable();
                for (hs, he) in cuts {
                    if hs >= end || he <= start {
                        continue;
                    }
                    if hs > start {
                        mapped.push((start, hs));
                    }
                    start = start.max(he);
                }
                if start < end {
                    mapped.push((start, end));
                }
            }
            mapped.sort_unstable();
            let mut pieces = Vec::new();
            let mut pos = 0u64;
            // A trapped gap, split where the MSI-X structures begin and end
            // so each piece is named for what it holds.
            let trap = |pieces: &mut Vec<BarPiece>, from: u64, to: u64| {
                let mut cuts = vec![from, to];
                for &(s, e, _) in &holes {
                    cuts.extend([s, e].into_iter().filter(|&c| from < c && c < to));
                }
                cuts.sort_unstable();
                cuts.dedup();
                for w in cuts.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    let tag = holes
                        .iter()
                        .find(|&&(s, e, _)| s < b && a < e)
                        .map(|&(_, _, t)| format!(" {t}"))
                        .unwrap_or_default();
                    pieces.push(BarPiece::Trap {
                        offset: a,
                        len: b - a,
                        name: format!("{bar_name}{tag}"),
                    });
                }
            };
            for (start, end) in mapped {
                match self
                    .backend
                    .map_region(u32::from(index), start, end - start)
                {
                    Ok(memory) => {
                        trap(&mut pieces, pos, start);
                        pieces.push(BarPiece::Memory {
                            offset: start,
                            len: end - start,
                            memory,
                            read_only: false,
                            name: bar_name.clone(),
                        });
                        pos = end;
                    }
                    Err(e) => warn!(
                        "{bar_name}: cannot map {start:#x}+{:#x}, trapping it instead: {e}",
                        end - start
                    ),
                }
            }
            trap(&mut pieces, pos, bar.size);
            if let Some(b) = self.bars[usize::from(index)].as_mut() {
                b.pieces = pieces;
            }
        }
    }

    /// The interrupt kind the guest's configuration asks for.
    fn wanted_mode(&self) -> IrqMode {
        if let Some(msix) = self.msix.as_ref().filter(|m| m.enabled()) {
            return IrqMode::Msix(msix.vectors());
        }
        if let Some(msi) = self.msi.as_ref().filter(|m| m.enabled(&self.config)) {
            return IrqMode::Msi(msi.enabled_vectors(&self.config));
        }
        if self.intx.is_some() {
            return IrqMode::Intx;
        }
        IrqMode::None
    }

    fn sync_irqs(&mut self) {
        let wanted = self.wanted_mode();
        if wanted != self.mode {
            self.set_mode(wanted);
        }
    }

    /// Switch VFIO to `mode`: the old kind is disabled first (VFIO allows
    /// one kind at a time), stale pending messages are dropped.
    fn set_mode(&mut self, mode: IrqMode) {
        let off = match self.mode {
            IrqMode::None => None,
            IrqMode::Intx => Some(IrqIndex::Intx),
            IrqMode::Msi(_) => Some(IrqIndex::Msi),
            IrqMode::Msix(_) => Some(IrqIndex::Msix),
        };
        if let Some(index) = off {
            if let Err(e) = self.backend.set_irqs(index, &[]) {
                warn!("{}: disabling {index:?} failed: {e}", self.name);
            }
        }
        for v in 0..self.vectors.len() {
            self.vectors.clear(v);
        }
        self.mode = IrqMode::None;
        let result = match mode {
            IrqMode::None => Ok(()),
            IrqMode::Intx => match &self.intx {
                Some(line) => self
                    .backend
                    .set_irqs(IrqIndex::Intx, &[&line.trigger])
                    .and_then(|()| self.backend.set_intx_resample(&line.resample)),
                None => Ok(()),
            },
            IrqMode::Msi(n) | IrqMode::Msix(n) => {
                let index = if matches!(mode, IrqMode::Msi(_)) {
                    IrqIndex::Msi
                } else {
                    IrqIndex::Msix
                };
                let fds: Vec<&EventFd> = self
                    .vectors
                    .notifiers()
                    .iter()
                    .take(usize::from(n))
                    .collect();
                self.backend.set_irqs(index, &fds)
            }
        };
        match result {
            Ok(()) => self.mode = mode,
            Err(e) => warn!(
                "{}: enabling {mode:?} failed, the guest gets no interrupts: {e}",
                self.name
            ),
        }
    }

    fn declared_bar(&self, index: u8) -> Option<&Bar> {
        self.bars.get(usize::from(index))?.as_ref()
    }

    /// Write the bytes of a configuration write that reach the function,
    /// each run of them as one write (emulated bytes never go there).
    fn forward_config_write(&self, offset: u16, data: &[u8]) {
        let start = usize::from(offset);
        let fwd = |i: usize| self.forward.get(start + i).copied().unwrap_or(false);
        let mut i = 0;
        while i < data.len() {
            if !fwd(i) {
                i += 1;
                continue;
            }
            let run = i;
            while i < data.len() && fwd(i) {
                i += 1;
            }
            let at = offset + run as u16;
            if let Err(e) = self.backend.config_write(at, &data[run..i]) {
                debug!(
                    "{}: config write {at:#x} {:02x?}: {e}",
                    self.name,
                    &data[run..i]
                );
            }
        }
    }

    /// The new value of a register of `len` bytes at `reg` if the write
    /// covers all of it.
    fn written(offset: u16, data: &[u8], reg: u16, len: u16) -> Option<u64> {
        if offset > reg || usize::from(reg - offset) + usize::from(len) > data.len() {
            return None;
        }
        let at = usize::from(reg - offset);
        Some(crate::le_value(&data[at..at + usize::from(len)]))
    }

    /// The write sets Initiate Function Level Reset (PCI Express device
    /// control bit 15), which the kernel carries out.
    fn flr_written(&self, offset: u16, data: &[u8]) -> bool {
        let Some(exp) = self.exp else { return false };
        let devctl = exp + 8;
        // The bit is in the upper byte of the register.
        Self::written(offset, data, devctl + 1, 1).is_some_and(|v| v & 0x80 != 0)
    }

    /// `Some(true)` when the write puts the function in D3hot (power
    /// management control/status, bits 1:0 = 3), `Some(false)` for D0-D2.
    fn d3_written(&self, offset: u16, data: &[u8]) -> Option<bool> {
        let pmcsr = self.pm? + 4;
        Self::written(offset, data, pmcsr, 1).map(|v| v & 3 == 3)
    }

    /// "BAR changed" for every memory BAR: the platform asks
    /// [`bar_layout`](PciDevice::bar_layout) again.
    fn resync_memory_bars(&self) -> Vec<PciChange> {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i as u8, b)))
            .filter(|(_, b)| b.kind != BarKind::Io)
            .map(|(index, b)| PciChange::Bar {
                index,
                kind: b.kind,
                size: b.size,
                old: None,
                new: None,
            })
            .collect()
    }

    /// After a function reset the function's registers are at their reset
    /// values: so are the emulated ones (decode off, BARs at 0, MSI and
    /// MSI-X disabled, the table masked).
    fn reset_emulated_state(&mut self) -> Vec<PciChange> {
        let Some(p) = self.pristine.as_deref().cloned() else {
            return Vec::new();
        };
        let mut changes: Vec<PciChange> = Vec::new();
        for (index, b) in self
            .bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i as u8, b)))
        {
            if self.config.bar_mapping(index).is_some() {
                changes.push(PciChange::Bar {
                    index,
                    kind: b.kind,
                    size: b.size,
                    old: self.config.bar_mapping(index),
                    new: None,
                });
            }
        }
        self.config = p.config;
        self.msi = p.msi;
        self.msix = p.msix;
        self.d3 = false;
        changes
    }

    /// What vector `v` delivers given the kind enabled at VFIO.
    fn effective_route(&self, v: u16) -> Option<MsiMessage> {
        let i = usize::from(v);
        match self.mode {
            IrqMode::Msix(_) => self.msix.as_ref()?.routes().get(i).copied().flatten(),
            IrqMode::Msi(_) => self.msi.as_ref()?.routes().get(i).copied().flatten(),
            IrqMode::None | IrqMode::Intx => None,
        }
    }

    /// The route changes since last reported, one per vector that changed.
    fn route_changes(&mut self) -> Vec<PciChange> {
        let mut changes = Vec::new();
        for v in 0..self.routes.len() as u16 {
            let route = self.effective_route(v);
            if self.routes[usize::from(v)] != route {
                self.routes[usize::from(v)] = route;
                changes.push(PciChange::Msi {
                    vector: v,
                    message: route,
                });
            }
        }
        changes
    }
}

impl PciDevice for VfioPciDevice {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        let start = usize::from(offset);
        let n = data.len().min(4);
        let emulated = |i: usize| self.emulated.get(start + i).copied().unwrap_or(0xff);
        let mut dev = [0xffu8; 4];
        if (0..n).any(|i| emulated(i) != 0xff)
            && self.backend.config_read(offset, &mut dev[..n]).is_err()
        {
            dev = [0xff; 4];
        }
        let mut virt = [0u8; 4];
        self.config.read(offset, &mut virt[..n]);
        for i in 0..n {
            let m = emulated(i);
            data[i] = (virt[i] & m) | (dev[i] & !m);
        }
        // MSI pending bits live in the vectors' eventfds.
        if let Some(p) = self.msi.as_ref().and_then(|m| m.pending_offset()) {
            for (i, b) in data.iter_mut().enumerate().take(n) {
                let at = start + i;
                if (usize::from(p)..usize::from(p) + 4).contains(&at) {
                    let first = 8 * (at - usize::from(p)) as u16;
                    for bit in 0..8u16 {
                        if self.vectors.is_pending(first + bit) {
                            *b |= 1 << bit;
                        }
                    }
                }
            }
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> Vec<PciChange> {
        self.forward_config_write(offset, data);
        let mut changes = self.config.write(offset, data);
        // The capabilities' own route reports are not used: the effective
        // routes are derived below from the kind that is enabled.
        if let Some(msi) = &mut self.msi {
            let _ = msi.config_written(&mut self.config, offset, data.len());
        }
        if let Some(msix) = &mut self.msix {
            let _ = msix.config_written(&self.config, offset, data.len());
        }
        if self.flr_written(offset, data) {
            changes.extend(self.reset_emulated_state());
        }
        if let Some(d3) = self.d3_written(offset, data) {
            if d3 != self.d3 {
                self.d3 = d3;
                changes.extend(self.resync_memory_bars());
            }
        }
        self.sync_irqs();
        changes.extend(self.route_changes());
        changes
    }

    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if index == ROM_BAR_INDEX {
            for (i, b) in data.iter_mut().enumerate() {
                *b = usize::try_from(offset.saturating_add(i as u64))
                    .ok()
                    .and_then(|at| self.rom.as_ref()?.get(at))
                    .copied()
                    .unwrap_or(0xff);
            }
            return;
        }
        if let Some(msix) = &self.msix {
            let (pb, po, pl) = msix.pba_location();
            if pb == index && (po..po + pl).contains(&offset) {
                let vectors = &self.vectors;
                msix.pba_read_with(offset - po, data, |v| vectors.is_pending(v));
                return;
            }
            if msix.bar_read(index, offset, data) {
                return;
            }
        }
        if self.declared_bar(index).is_none()
            || self
                .backend
                .region_read(u32::from(index), offset, data)
                .is_err()
        {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) -> Vec<PciChange> {
        if index == ROM_BAR_INDEX {
            return Vec::new();
        }
        if self
            .msix
            .as_mut()
            .and_then(|m| m.bar_write(index, offset, data))
            .is_some()
        {
            return self.route_changes();
        }
        if self.declared_bar(index).is_some() {
            if let Err(e) = self.backend.region_write(u32::from(index), offset, data) {
                debug!("{}: BAR{index} write at {offset:#x}: {e}", self.name);
            }
        }
        Vec::new()
    }

    fn bar_layout(&mut self, index: u8) -> Option<BarLayout> {
        let bar = self.bars.get(usize::from(index))?.as_ref()?;
        // In D3hot the kernel blocks the BARs (its mmaps fault): nothing
        // may be mapped then, and trapped accesses read all-ones.
        if self.d3 && bar.kind != BarKind::Io {
            return None;
        }
        let base = self.config.bar_mapping(index)?;
        Some(BarLayout {
            base,
            kind: bar.kind,
            size: bar.size,
            pieces: bar.pieces.clone(),
        })
    }

    fn programmed_bars(&mut self) -> Vec<ProgrammedBar> {
        self.config
            .bars()
            .map(|(index, info)| ProgrammedBar {
                index,
                kind: info.kind,
                address: self.config.bar_address(index).unwrap_or(0),
                size: info.size,
            })
            .collect()
    }

    fn msi_vectors(&self) -> Option<Arc<MsiVectors>> {
        (!self.vectors.is_empty()).then(|| self.vectors.clone())
    }
}

#[cfg(test)]
mod tests;
