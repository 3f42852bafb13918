//! PCI: what a PCI function is to the rest of the VMM.
//!
//! A function's configuration writes return [`PciChange`]s (a BAR started
//! decoding or moved, the ECAM window moved, an MSI route changed) as data;
//! the configuration-access devices wrap them into
//! [`Effect::Pci`](crate::Effect::Pci) with the function's address, and the
//! VMM applies them to its buses, KVM memory slots and GSI routes.

use std::fmt;

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
    /// The PCI Express enhanced configuration window (ECAM, the Q35 MCH's
    /// PCIEXBAR) moved, appeared or disappeared: (base, length).
    Ecam {
        /// Previous window.
        old: Option<(u64, u64)>,
        /// New window.
        new: Option<(u64, u64)>,
    },
    /// The ACPI PM I/O block (ICH9 LPC PMBASE + ACPI_EN) moved, appeared
    /// or disappeared.
    PmBase {
        /// Previous base port.
        old: Option<u16>,
        /// New base port.
        new: Option<u16>,
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
}
