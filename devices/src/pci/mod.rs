//! PCI: what a PCI function is to the rest of the VMM.
//!
//! A function's configuration writes return [`PciChange`]s (a BAR started
//! decoding or moved, the ECAM window moved, an MSI route changed) as data;
//! the configuration-access devices wrap them into
//! [`Effect::Pci`](crate::Effect::Pci) with the function's address, and the
//! VMM applies them to its buses, KVM memory slots and GSI routes.

use std::fmt;
use std::sync::Arc;

use vm_memory::MmapRegion;

use crate::interrupt::MsiVectors;

pub mod alloc;
pub mod config;
pub mod msi;
pub mod msix;
pub mod root;

pub use alloc::{AllocError, BarAllocator};
pub use config::{BarInfo, ConfigError, PciConfiguration, Type0Header};
pub use msi::{InterruptUpdate, MsiCapability, MsiError};
pub use msix::{MsixCapability, MsixEntry, MsixError};
pub use root::{PciBarRegion, PciConfigIo, PciConfigMmio, PciRoot, RootError, SharedPciDevice};

/// A PCI function address on segment 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl Bdf {
    /// A function address; `device` < 32 and `function` < 8 are the
    /// caller's to keep.
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        Self {
            bus,
            device,
            function,
        }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// What address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Mem32 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// 64-bit memory (occupies two BAR slots).
    Mem64 {
        /// Prefetchable.
        prefetchable: bool,
    },
}

/// An MSI message (address/data pair) as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (0xfeeX_XXXX on x86).
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// A change a configuration (or BAR) write made that the VMM must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PciChange {
    /// BAR `index` stopped decoding (`new: None`), started (`old: None`)
    /// or moved. Addresses are guest physical (or I/O port) bases.
    Bar {
        /// BAR index (0..6; a 64-bit BAR is named by its low half).
        index: u8,
        /// Address space.
        kind: BarKind,
        /// Size in bytes (a power of two).
        size: u64,
        /// Where it decoded before.
        old: Option<u64>,
        /// Where it decodes now.
        new: Option<u64>,
    },
    /// A chipset window moved, appeared (`new: Some((base, length))`) or
    /// disappeared (`None`). The configuration-access devices turn this
    /// into [`Effect::Window`](crate::Effect::Window); it is a PCI change
    /// only because chipset functions (MCH, LPC) set windows through their
    /// configuration registers.
    Window {
        /// Which window.
        window: crate::Window,
        /// Where it decodes now.
        new: Option<(u64, u64)>,
    },
    /// MSI or MSI-X vector `vector` now delivers `message`, or nothing
    /// (`None`: disabled or masked).
    Msi {
        /// Vector number within the function (MSI-X table entry or MSI
        /// vector).
        vector: u16,
        /// The route, if the vector is live.
        message: Option<MsiMessage>,
    },
}

/// One piece of a decoding BAR, as the device declares it and the VMM
/// applies it: offsets and lengths are relative to the BAR's base.
#[derive(Debug, Clone)]
pub enum BarPiece {
    /// Accesses exit to the VMM and reach the device's
    /// [`PciDevice::bar_read`] / [`PciDevice::bar_write`] with offsets
    /// relative to the BAR.
    Trap {
        /// Offset in the BAR.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// What it is, for statistics and logs (e.g. `vfio 0000:01:10.0
        /// BAR3 msix-table`).
        name: String,
    },
    /// Host memory (a VFIO BAR mapping) that the VMM maps into the guest
    /// as a memory slot: accesses never exit. `offset` and `len` are
    /// multiples of the host page size; the mapping is at least `len`
    /// bytes. A VMM that cannot map it at the BAR's address (a guest that
    /// placed the BAR off page alignment) traps it instead.
    Memory {
        /// Offset in the BAR.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// The host mapping, kept alive by whoever maps it.
        memory: Arc<MmapRegion>,
        /// Guest writes must not reach the memory (an expansion ROM): they
        /// exit and are dropped.
        read_only: bool,
        /// What it is, for statistics and logs.
        name: String,
    },
    /// Trapped like [`BarPiece::Trap`], except that writes to the
    /// doorbells signal their eventfds in the kernel (KVM ioeventfds) and
    /// never exit. The device still handles a doorbell write that reaches
    /// it (a VMM without ioeventfds) by signalling the same eventfd.
    Doorbells {
        /// Offset in the BAR.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// The doorbells, offsets relative to the BAR.
        doorbells: Vec<Doorbell>,
        /// What it is, for statistics and logs.
        name: String,
    },
}

impl BarPiece {
    /// (offset, length) in the BAR.
    pub fn range(&self) -> (u64, u64) {
        match self {
            BarPiece::Trap { offset, len, .. }
            | BarPiece::Memory { offset, len, .. }
            | BarPiece::Doorbells { offset, len, .. } => (*offset, *len),
        }
    }

    /// The piece's name.
    pub fn name(&self) -> &str {
        match self {
            BarPiece::Trap { name, .. }
            | BarPiece::Memory { name, .. }
            | BarPiece::Doorbells { name, .. } => name,
        }
    }
}

/// A queue doorbell inside a [`BarPiece::Doorbells`] piece: a write of any
/// width at `offset` signals `fd` (through a KVM ioeventfd, without an
/// exit).
#[derive(Debug, Clone)]
pub struct Doorbell {
    /// Offset in the BAR.
    pub offset: u64,
    /// What the write signals.
    pub fd: Arc<vmm_sys_util::eventfd::EventFd>,
}

/// Where a BAR decodes now and what it is made of.
#[derive(Debug, Clone)]
pub struct BarLayout {
    /// Guest physical (or port) base.
    pub base: u64,
    /// Address space.
    pub kind: BarKind,
    /// Size in bytes.
    pub size: u64,
    /// Pieces covering `[0, size)`, in order, without gaps or overlaps.
    pub pieces: Vec<BarPiece>,
}

impl BarLayout {
    /// A BAR that is trapped as one piece.
    pub fn trapped(base: u64, kind: BarKind, size: u64, name: String) -> Self {
        Self {
            base,
            kind,
            size,
            pieces: vec![BarPiece::Trap {
                offset: 0,
                len: size,
                name,
            }],
        }
    }
}

/// A BAR as its registers are programmed now, decoding or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgrammedBar {
    /// BAR index (0..6, the ROM 6).
    pub index: u8,
    /// Address space.
    pub kind: BarKind,
    /// Programmed base (0 until firmware places it).
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A PCI function.
///
/// Configuration accesses are naturally aligned and 1, 2 or 4 bytes wide;
/// `offset` is below 4096 (256 for conventional PCI functions, which read
/// all-ones above). Nothing a guest writes may make a function panic.
pub trait PciDevice: Send {
    /// Read configuration space.
    fn config_read(&mut self, offset: u16, data: &mut [u8]);

    /// Write configuration space; returns what changed.
    fn config_write(&mut self, offset: u16, data: &[u8]) -> Vec<PciChange>;

    /// Read from BAR `index` at `offset`. Functions without BARs keep the
    /// default (all-ones, as an unclaimed access).
    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        let _ = (index, offset);
        data.fill(0xff);
    }

    /// Write to BAR `index` at `offset`; returns what changed (e.g. an
    /// MSI-X table entry was reprogrammed).
    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) -> Vec<PciChange> {
        let _ = (index, offset, data);
        Vec::new()
    }

    /// Where BAR `index` (0..6, or the ROM, 6) decodes now and its pieces;
    /// `None` while it does not decode. The VMM calls this whenever a
    /// [`PciChange::Bar`] for the BAR arrives and maps what it returns, so
    /// the answer is the truth even if changes are applied out of order.
    /// Functions without BARs keep the default.
    fn bar_layout(&mut self, index: u8) -> Option<BarLayout> {
        let _ = index;
        None
    }

    /// Every BAR with its programmed address (for the VMM's address-space
    /// plan and the ACPI windows). Functions without BARs keep the default.
    fn programmed_bars(&mut self) -> Vec<ProgrammedBar> {
        Vec::new()
    }

    /// The eventfds of the function's MSI/MSI-X vectors, which the VMM
    /// binds to KVM routes (see [`crate::interrupt`]); `None` for a
    /// function without message interrupts.
    fn msi_vectors(&self) -> Option<Arc<MsiVectors>> {
        None
    }
}
