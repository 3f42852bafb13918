//! PCI bus 0 and the two ways to reach its configuration space.
//!
//! [`PciRoot`] holds up to 32 devices × 8 functions on bus 0. Two bus
//! devices give the guest configuration access to it:
//!
//! * [`PciConfigIo`], configuration mechanism #1, registered on the PIO bus
//!   at [`CONFIG_IO_PORT`] (0xCF8) with length [`CONFIG_IO_LEN`] (8):
//!   CONFIG_ADDRESS at 0xCF8 (latched by dword writes only) and CONFIG_DATA
//!   at 0xCFC..0xCFF. Port 0xCF9 is the PC reset-control register, which
//!   overlaps the CONFIG_ADDRESS dword: byte/word accesses at 0xCF9..0xCFB
//!   go to the inner device passed to [`PciConfigIo::new`] (0xCF9 is its
//!   offset 0).
//! * [`PciConfigMmio`], the PCI Express enhanced configuration access
//!   mechanism (ECAM), registered on the MMIO bus at the ECAM base (the
//!   Q35 PCIEXBAR) with the window's length (up to 256 MiB): offset
//!   `bus << 20 | device << 15 | function << 12 | register`.
//!
//! Both wrap each function's [`PciChange`]s into
//! [`Effect::Pci`] with the function's address.
//! [`PciBarRegion`] is the bus device the VMM registers for an emulated
//! function's BAR once it decodes.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use thiserror::Error;

use super::{Bdf, PciChange, PciDevice};
use crate::{BusDevice, Effect, Effects, fill_le, le_value};

/// A PCI function as the root holds it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// The first port of [`PciConfigIo`] (CONFIG_ADDRESS).
pub const CONFIG_IO_PORT: u16 = 0xcf8;
/// Length of the [`PciConfigIo`] port range (0xCF8..0xD00).
pub const CONFIG_IO_LEN: u64 = 8;
/// Largest ECAM window (256 buses).
pub const ECAM_MAX_LEN: u64 = 256 << 20;
/// Size of one function's configuration space.
const FUNCTION_SPACE: usize = 4096;
/// CONFIG_ADDRESS enable bit.
const CONFIG_ENABLE: u32 = 1 << 31;

/// Errors adding functions to the root.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RootError {
    /// Only bus 0 exists.
    #[error("bus {0} does not exist (only bus 0 does)")]
    BadBus(u8),
    /// Device numbers are 0..32.
    #[error("device number {0} is out of range")]
    BadDevice(u8),
    /// Function numbers are 0..8.
    #[error("function number {0} is out of range")]
    BadFunction(u8),
    /// Something is already at that address.
    #[error("PCI function {0} already exists")]
    Occupied(Bdf),
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wrap a function's changes into effects (chipset windows become
/// [`Effect::Window`]).
fn effects(bdf: Bdf, changes: Vec<PciChange>) -> Effects {
    let mut out = Effects::none();
    for change in changes {
        out.push(match change {
            PciChange::Window { window, new } => Effect::Window { window, new },
            change => Effect::Pci { bdf, change },
        });
    }
    out
}

/// Split an access into the naturally aligned 1/2/4-byte pieces the
/// [`PciDevice`] contract promises: aligned accesses pass whole, aligned
/// qwords become two dwords, anything else goes byte by byte.
fn pieces(offset: usize, len: usize, mut f: impl FnMut(usize, Range<usize>)) {
    if matches!(len, 1 | 2 | 4) && offset % len == 0 {
        f(offset, 0..len);
    } else if len == 8 && offset % 4 == 0 {
        f(offset, 0..4);
        f(offset + 4, 4..8);
    } else {
        for i in 0..len {
            f(offset + i, i..i + 1);
        }
    }
}

/// Bus 0: up to 32 devices of up to 8 functions.
pub struct PciRoot {
    /// Indexed by `device * 8 + function`.
    functions: RwLock<Vec<Option<SharedPciDevice>>>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRoot")
            .field("functions", &self.functions())
            .finish()
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// An empty bus 0.
    pub fn new() -> Self {
        Self {
            functions: RwLock::new(vec![None; 256]),
        }
    }

    fn slot(bdf: Bdf) -> Result<usize, RootError> {
        if bdf.bus != 0 {
            return Err(RootError::BadBus(bdf.bus));
        }
        if bdf.device >= 32 {
            return Err(RootError::BadDevice(bdf.device));
        }
        if bdf.function >= 8 {
            return Err(RootError::BadFunction(bdf.function));
        }
        Ok(usize::from(bdf.device) * 8 + usize::from(bdf.function))
    }

    /// Put `device` at `bdf` (bus 0). Functions other than 0 are visible
    /// only while function 0 of the same device is present; setting the
    /// multi-function bit in function 0's header is the caller's job.
    pub fn add(&self, bdf: Bdf, device: SharedPciDevice) -> Result<(), RootError> {
        let slot = Self::slot(bdf)?;
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        if functions[slot].is_some() {
            return Err(RootError::Occupied(bdf));
        }
        functions[slot] = Some(device);
        Ok(())
    }

    /// Take the function at `bdf` away (hot-unplug).
    pub fn remove(&self, bdf: Bdf) -> Option<SharedPciDevice> {
        let slot = Self::slot(bdf).ok()?;
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        functions[slot].take()
    }

    /// The function at `bdf` as the guest sees it: `None` when absent or
    /// hidden because function 0 of its device is absent.
    pub fn get(&self, bdf: Bdf) -> Option<SharedPciDevice> {
        let slot = Self::slot(bdf).ok()?;
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions[slot & !7].as_ref()?;
        functions[slot].clone()
    }

    /// Addresses of the functions present, in order.
    pub fn functions(&self) -> Vec<Bdf> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_some())
            .map(|(i, _)| Bdf::new(0, (i / 8) as u8, (i % 8) as u8))
            .collect()
    }

    /// Configuration read of `data.len()` bytes at `offset` of `bdf`.
    /// Absent functions, other buses and offsets beyond 4 KiB read as
    /// all-ones.
    pub fn config_read(&self, bdf: Bdf, offset: u16, data: &mut [u8]) {
        let Some(dev) = self.get(bdf) else {
            data.fill(0xff);
            return;
        };
        let mut dev = lock(&dev);
        pieces(usize::from(offset), data.len(), |at, range| {
            if at + range.len() <= FUNCTION_SPACE {
                dev.config_read(at as u16, &mut data[range]);
            } else {
                data[range].fill(0xff);
            }
        });
    }

    /// Configuration write of `data` at `offset` of `bdf`; returns the
    /// function's changes as [`Effect::Pci`]. Writes to absent functions
    /// are dropped.
    pub fn config_write(&self, bdf: Bdf, offset: u16, data: &[u8]) -> Effects {
        let Some(dev) = self.get(bdf) else {
            return Effects::none();
        };
        let mut changes = Vec::new();
        {
            let mut dev = lock(&dev);
            pieces(usize::from(offset), data.len(), |at, range| {
                if at + range.len() <= FUNCTION_SPACE {
                    changes.extend(dev.config_write(at as u16, &data[range]));
                }
            });
        }
        effects(bdf, changes)
    }
}

/// The CONFIG_ADDRESS value (enable bit set) that selects `register` of
/// `bdf` through configuration mechanism #1.
pub fn config_address(bdf: Bdf, register: u8) -> u32 {
    CONFIG_ENABLE
        | (u32::from(bdf.bus) << 16)
        | (u32::from(bdf.device & 0x1f) << 11)
        | (u32::from(bdf.function & 0x7) << 8)
        | u32::from(register & 0xfc)
}

/// Offset of `register` of `bdf` within an ECAM window.
pub fn ecam_offset(bdf: Bdf, register: u16) -> u64 {
    (u64::from(bdf.bus) << 20)
        | (u64::from(bdf.device & 0x1f) << 15)
        | (u64::from(bdf.function & 0x7) << 12)
        | u64::from(register & 0xfff)
}

/// The function and register an ECAM window offset selects.
pub fn decode_ecam(offset: u64) -> (Bdf, u16) {
    let bdf = Bdf::new(
        ((offset >> 20) & 0xff) as u8,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 0x7) as u8,
    );
    (bdf, (offset & 0xfff) as u16)
}

/// Configuration mechanism #1 at ports 0xCF8..0xD00; see the module
/// documentation.
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
    reset: Option<Box<dyn BusDevice>>,
}

impl std::fmt::Debug for PciConfigIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciConfigIo")
            .field("address", &format_args!("{:#x}", self.address))
            .field("reset", &self.reset.is_some())
            .finish()
    }
}

impl PciConfigIo {
    /// Mechanism #1 over `root`. `reset` receives the byte and word
    /// accesses at 0xCF9..0xCFB (0xCF9 is its offset 0), normally a
    /// [`ResetControl`](crate::legacy::ResetControl).
    pub fn new(root: Arc<PciRoot>, reset: Option<Box<dyn BusDevice>>) -> Self {
        Self {
            root,
            address: 0,
            reset,
        }
    }

    /// The latched CONFIG_ADDRESS.
    pub fn address(&self) -> u32 {
        self.address
    }

    /// The function and register CONFIG_DATA at `offset` (0..4) reaches,
    /// and how many bytes fit before the end of the dword; `None` when
    /// the enable bit is clear.
    fn target(&self, offset: u64, len: usize) -> Option<(Bdf, u16, usize)> {
        if self.address & CONFIG_ENABLE == 0 {
            return None;
        }
        let a = self.address;
        let bdf = Bdf::new(
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 0x7) as u8,
        );
        let register = (a & 0xfc) as u16 + offset as u16;
        Some((bdf, register, len.min(4 - offset as usize)))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => fill_le(data, u64::from(self.address)),
            1..=3 => match &mut self.reset {
                Some(reset) => reset.read(offset - 1, data),
                None => data.fill(0xff),
            },
            4..=7 => {
                data.fill(0xff);
                if let Some((bdf, register, n)) = self.target(offset - 4, data.len()) {
                    self.root.config_read(bdf, register, &mut data[..n]);
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        match offset {
            0 if data.len() == 4 => {
                self.address = le_value(data) as u32 & 0x80ff_fffc;
                Effects::none()
            }
            1..=3 => match &mut self.reset {
                Some(reset) => reset.write(offset - 1, data),
                None => Effects::none(),
            },
            4..=7 => match self.target(offset - 4, data.len()) {
                Some((bdf, register, n)) => self.root.config_write(bdf, register, &data[..n]),
                None => Effects::none(),
            },
            _ => Effects::none(),
        }
    }
}

/// The ECAM window; see the module documentation.
#[derive(Debug)]
pub struct PciConfigMmio {
    root: Arc<PciRoot>,
    len: u64,
}

impl PciConfigMmio {
    /// ECAM over `root` for a window of `len` bytes (1 MiB per bus, at
    /// most [`ECAM_MAX_LEN`]); offsets beyond it read as all-ones.
    pub fn new(root: Arc<PciRoot>, len: u64) -> Self {
        Self {
            root,
            len: len.min(ECAM_MAX_LEN),
        }
    }

    /// The window length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length window.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn in_window(&self, offset: u64, len: usize) -> bool {
        offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.len)
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if !self.in_window(offset, data.len()) {
            data.fill(0xff);
            return;
        }
        let (bdf, register) = decode_ecam(offset);
        self.root.config_read(bdf, register, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        if !self.in_window(offset, data.len()) {
            return Effects::none();
        }
        let (bdf, register) = decode_ecam(offset);
        self.root.config_write(bdf, register, data)
    }
}

/// A trapped piece of a function's BAR as a bus device: the VMM registers
/// it at the piece's address (on the PIO bus for I/O BARs) while the BAR
/// decodes; accesses reach the function with offsets relative to the BAR.
pub struct PciBarRegion {
    bdf: Bdf,
    index: u8,
    /// Where the piece starts in the BAR.
    offset: u64,
    device: SharedPciDevice,
}

impl std::fmt::Debug for PciBarRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciBarRegion")
            .field("bdf", &self.bdf)
            .field("index", &self.index)
            .finish()
    }
}

impl PciBarRegion {
    /// The piece of BAR `index` of `device` at `bdf` that starts at
    /// `offset` in the BAR.
    pub fn new(bdf: Bdf, index: u8, offset: u64, device: SharedPciDevice) -> Self {
        Self {
            bdf,
            index,
            offset,
            device,
        }
    }
}

impl BusDevice for PciBarRegion {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let at = self.offset.saturating_add(offset);
        lock(&self.device).bar_read(self.index, at, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        let at = self.offset.saturating_add(offset);
        let changes = lock(&self.device).bar_write(self.index, at, data);
        effects(self.bdf, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VmRequest;
    use crate::legacy::ResetControl;
    use crate::pci::config::test_endpoint::TestEndpoint;
    use crate::pci::config::{BAR0, COMMAND, COMMAND_MEMORY};
    use crate::pci::msix::{MSIX_CONTROL_ENABLE, MsixCapability};
    use crate::pci::{BarKind, MsiMessage};
    use crate::test_util::RecordingControl;

    fn endpoint(device_id: u16, express: bool) -> Arc<Mutex<TestEndpoint>> {
        Arc::new(Mutex::new(TestEndpoint::new(device_id, express)))
    }

    fn root_with(devices: &[(Bdf, Arc<Mutex<TestEndpoint>>)]) -> Arc<PciRoot> {
        let root = Arc::new(PciRoot::new());
        for (bdf, d) in devices {
            root.add(*bdf, d.clone()).unwrap();
        }
        root
    }

    fn read32(dev: &mut dyn BusDevice, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        dev.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn cf8_read(io: &mut PciConfigIo, bdf: Bdf, reg: u8) -> u32 {
        assert!(
            io.write(0, &config_address(bdf, reg).to_le_bytes())
                .is_empty()
        );
        read32(io, 4)
    }

    #[test]
    fn add_errors() {
        let root = PciRoot::new();
        let d = endpoint(1, false);
        root.add(Bdf::new(0, 3, 0), d.clone()).unwrap();
        assert_eq!(
            root.add(Bdf::new(0, 3, 0), d.clone()),
            Err(RootError::Occupied(Bdf::new(0, 3, 0)))
        );
        assert_eq!(
            root.add(Bdf::new(1, 0, 0), d.clone()),
            Err(RootError::BadBus(1))
        );
        assert_eq!(
            root.add(Bdf::new(0, 32, 0), d.clone()),
            Err(RootError::BadDevice(32))
        );
        assert_eq!(
            root.add(Bdf::new(0, 0, 8), d.clone()),
            Err(RootError::BadFunction(8))
        );
        assert_eq!(root.functions(), vec![Bdf::new(0, 3, 0)]);
        assert!(root.remove(Bdf::new(0, 3, 0)).is_some());
        assert!(root.functions().is_empty());
        assert!(root.remove(Bdf::new(0, 99, 0)).is_none());
    }

    #[test]
    fn address_latch_only_on_dword_writes() {
        let root = root_with(&[(Bdf::new(0, 0, 0), endpoint(0x29c0, false))]);
        let mut io = PciConfigIo::new(root, None);
        assert_eq!(read32(&mut io, 0), 0);
        let addr = config_address(Bdf::new(0, 0, 0), 0);
        assert!(io.write(0, &addr.to_le_bytes()).is_empty());
        assert_eq!(read32(&mut io, 0), 0x8000_0000);
        // Byte and word writes at 0xCF8 do not touch the latch.
        assert!(io.write(0, &[0x10]).is_empty());
        assert!(io.write(0, &[0x10, 0x08]).is_empty());
        assert_eq!(io.address(), 0x8000_0000);
        // Non-dword reads at 0xCF8 are all-ones.
        let mut b = [0u8; 2];
        io.read(0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        // Reserved low bits are dropped.
        assert!(io.write(0, &0x8000_0803u32.to_le_bytes()).is_empty());
        assert_eq!(io.address(), 0x8000_0800);
    }

    #[test]
    fn config_data_widths_and_enable_bit() {
        let root = root_with(&[(Bdf::new(0, 2, 0), endpoint(0xabcd, false))]);
        let mut io = PciConfigIo::new(root, None);
        let bdf = Bdf::new(0, 2, 0);
        assert_eq!(cf8_read(&mut io, bdf, 0), 0xabcd_1af4);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0xabcd);
        let mut b = [0u8; 1];
        io.read(5, &mut b);
        assert_eq!(b[0], 0x1a);
        // Word at 0xCFD straddles bytes 1..3 of the register.
        io.read(5, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0xcd1a);
        // Byte write of the interrupt line through 0xCFC + 0.
        assert!(
            io.write(0, &config_address(bdf, 0x3c).to_le_bytes())
                .is_empty()
        );
        assert!(io.write(4, &[0x0a]).is_empty());
        assert_eq!(read32(&mut io, 4) & 0xff, 0x0a);
        // Enable bit clear: CONFIG_DATA reads all-ones, writes dropped.
        assert!(
            io.write(
                0,
                &(config_address(bdf, 0x3c) & !CONFIG_ENABLE).to_le_bytes(),
            )
            .is_empty()
        );
        assert_eq!(read32(&mut io, 4), 0xffff_ffff);
        assert!(io.write(4, &[0x0b]).is_empty());
        assert_eq!(cf8_read(&mut io, bdf, 0x3c) & 0xff, 0x0a);
        // Register bits beyond 0xfc reach only the first 256 bytes.
        assert_eq!(cf8_read(&mut io, bdf, 0xfc), 0);
    }

    #[test]
    fn cf9_goes_to_the_reset_register() {
        let ctl = Arc::new(RecordingControl::default());
        let reset = Box::new(ResetControl::new(ctl.clone()));
        let root = root_with(&[(Bdf::new(0, 0, 0), endpoint(1, false))]);
        let mut io = PciConfigIo::new(root, Some(reset));
        assert!(
            io.write(0, &config_address(Bdf::new(0, 0, 0), 0).to_le_bytes())
                .is_empty()
        );
        assert!(io.write(1, &[0x02]).is_empty());
        assert!(ctl.taken().is_empty());
        let mut b = [0u8; 1];
        io.read(1, &mut b);
        assert_eq!(b, [0x02]);
        // The CONFIG_ADDRESS latch is untouched by 0xCF9.
        assert_eq!(io.address(), 0x8000_0000);
        io.read(2, &mut b);
        assert_eq!(b, [0xff]);
        assert!(io.write(1, &[0x06]).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
        // Without an inner device, 0xCF9 reads all-ones.
        let mut io = PciConfigIo::new(Arc::new(PciRoot::new()), None);
        io.read(1, &mut b);
        assert_eq!(b, [0xff]);
        assert!(io.write(1, &[0x06]).is_empty());
    }

    #[test]
    fn absent_and_multi_function() {
        let f0 = endpoint(0x10, false);
        lock(&f0).config.set_multi_function(true);
        let root = root_with(&[
            (Bdf::new(0, 1, 0), f0),
            (Bdf::new(0, 1, 3), endpoint(0x13, false)),
            (Bdf::new(0, 5, 2), endpoint(0x52, false)),
        ]);
        let mut io = PciConfigIo::new(root.clone(), None);
        assert_eq!(cf8_read(&mut io, Bdf::new(0, 1, 0), 0), 0x0010_1af4);
        assert_eq!(
            (cf8_read(&mut io, Bdf::new(0, 1, 0), 0xc) >> 16) & 0xff,
            0x80
        );
        assert_eq!(cf8_read(&mut io, Bdf::new(0, 1, 3), 0), 0x0013_1af4);
        assert_eq!(cf8_read(&mut io, Bdf::new(0, 1, 1), 0), 0xffff_ffff);
        assert_eq!(cf8_read(&mut io, Bdf::new(0, 9, 0), 0), 0xffff_ffff);
        // Bus 1 does not exist.
        assert_eq!(cf8_read(&mut io, Bdf::new(1, 1, 0), 0), 0xffff_ffff);
        // 5.2 without 5.0 is hidden until function 0 appears.
        assert_eq!(cf8_read(&mut io, Bdf::new(0, 5, 2), 0), 0xffff_ffff);
        root.add(Bdf::new(0, 5, 0), endpoint(0x50, false)).unwrap();
        assert_eq!(cf8_read(&mut io, Bdf::new(0, 5, 2), 0), 0x0052_1af4);
        // Writes to absent functions do nothing.
        assert!(
            io.write(0, &config_address(Bdf::new(0, 9, 0), 4).to_le_bytes())
                .is_empty()
        );
        assert!(io.write(4, &[0xff, 0xff]).is_empty());
    }

    /// Dispatch an absolute address to an ECAM window at `base`, as the
    /// VMM's MMIO bus does.
    fn ecam_at(base: u64, ecam: &mut PciConfigMmio, addr: u64, data: &mut [u8]) {
        if addr >= base && addr - base < ecam.len() {
            ecam.read(addr - base, data);
        } else {
            data.fill(0xff);
        }
    }

    #[test]
    fn ecam_decoding_at_several_bases() {
        let root = root_with(&[
            (Bdf::new(0, 0, 0), endpoint(0x29c0, true)),
            (Bdf::new(0, 0x1f, 0), endpoint(0x2918, true)),
            (Bdf::new(0, 0x1f, 7), endpoint(0x2930, false)),
        ]);
        for (base, len) in [
            (0xb000_0000u64, 256u64 << 20),
            (0xe000_0000, 64 << 20),
            (0x8000_0000, 128 << 20),
        ] {
            let mut ecam = PciConfigMmio::new(root.clone(), len);
            let rd = |ecam: &mut PciConfigMmio, bdf: Bdf, reg: u16| {
                let mut b = [0u8; 4];
                ecam_at(base, ecam, base + ecam_offset(bdf, reg), &mut b);
                u32::from_le_bytes(b)
            };
            assert_eq!(rd(&mut ecam, Bdf::new(0, 0, 0), 0), 0x29c0_1af4);
            assert_eq!(rd(&mut ecam, Bdf::new(0, 0x1f, 0), 0), 0x2918_1af4);
            assert_eq!(rd(&mut ecam, Bdf::new(0, 0x1f, 7), 0), 0x2930_1af4);
            assert_eq!(rd(&mut ecam, Bdf::new(0, 0x1f, 1), 0), 0xffff_ffff);
            // Extended space: zero on PCIe, all-ones beyond 256 bytes on a
            // conventional function.
            assert_eq!(rd(&mut ecam, Bdf::new(0, 0, 0), 0x100), 0);
            assert_eq!(rd(&mut ecam, Bdf::new(0, 0, 0), 0xffc), 0);
            assert_eq!(rd(&mut ecam, Bdf::new(0, 0x1f, 7), 0x100), 0xffff_ffff);
            // Other buses read all-ones.
            assert_eq!(rd(&mut ecam, Bdf::new(1, 0, 0), 0), 0xffff_ffff);
            assert_eq!(rd(&mut ecam, Bdf::new(63, 0x1f, 7), 0), 0xffff_ffff);
            // Sub-dword reads.
            let mut w = [0u8; 2];
            ecam_at(
                base,
                &mut ecam,
                base + ecam_offset(Bdf::new(0, 0x1f, 0), 2),
                &mut w,
            );
            assert_eq!(u16::from_le_bytes(w), 0x2918);
        }
        assert_eq!(decode_ecam(0x00f_a10c), (Bdf::new(0, 0x1f, 2), 0x10c));
        assert_eq!(decode_ecam(0x2a0_8ffc), (Bdf::new(0x2a, 1, 0), 0xffc));
        assert_eq!(ecam_offset(Bdf::new(0x2a, 1, 0), 0xffc), 0x2a0_8ffc);
        // Beyond the window and oversize windows.
        let mut ecam = PciConfigMmio::new(root.clone(), 1 << 20);
        assert_eq!(read32(&mut ecam, 1 << 20), 0xffff_ffff);
        assert_eq!(PciConfigMmio::new(root, u64::MAX).len(), ECAM_MAX_LEN);
    }

    #[test]
    fn ecam_qword_and_unaligned_accesses() {
        let root = root_with(&[(Bdf::new(0, 3, 0), endpoint(0x77, true))]);
        let mut ecam = PciConfigMmio::new(root, 1 << 20);
        let base = ecam_offset(Bdf::new(0, 3, 0), 0);
        let mut q = [0u8; 8];
        ecam.read(base, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x0077_1af4);
        ecam.read(base + 8, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0xff00_0001);
        let mut w = [0u8; 2];
        ecam.read(base + 1, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x771a);
        // Crossing the end of the function's space: all-ones past it.
        let mut d = [0u8; 4];
        ecam.read(base + 0xffe, &mut d);
        assert_eq!(d, [0, 0, 0xff, 0xff]);
        ecam.read(ecam_offset(Bdf::new(0, 3, 0), 0xfff), &mut w);
        assert_eq!(w, [0, 0xff]);
    }

    #[test]
    fn bar_changes_become_effects_with_the_bdf() {
        let dev = endpoint(0x42, true);
        lock(&dev)
            .config
            .add_bar(
                0,
                BarKind::Mem32 {
                    prefetchable: false,
                },
                0x1000,
            )
            .unwrap();
        let bdf = Bdf::new(0, 4, 0);
        let root = root_with(&[(bdf, dev.clone())]);
        let mut io = PciConfigIo::new(root.clone(), None);
        let mut ecam = PciConfigMmio::new(root, 1 << 20);
        // Size and program BAR 0 through 0xCF8/0xCFC.
        assert!(
            io.write(0, &config_address(bdf, BAR0 as u8).to_le_bytes())
                .is_empty()
        );
        assert!(io.write(4, &0xffff_ffffu32.to_le_bytes()).is_empty());
        assert_eq!(read32(&mut io, 4), 0xffff_f000);
        assert!(io.write(4, &0xfe00_0000u32.to_le_bytes()).is_empty());
        // Enable memory decode through ECAM.
        let fx = ecam.write(ecam_offset(bdf, COMMAND), &COMMAND_MEMORY.to_le_bytes());
        let expected = Effect::Pci {
            bdf,
            change: PciChange::Bar {
                index: 0,
                kind: BarKind::Mem32 {
                    prefetchable: false,
                },
                size: 0x1000,
                old: None,
                new: Some(0xfe00_0000),
            },
        };
        assert_eq!(fx, Effects::one(expected));
        // Disable through 0xCFC with a word write at offset 4 of the dword.
        assert!(
            io.write(0, &config_address(bdf, COMMAND as u8).to_le_bytes())
                .is_empty()
        );
        let fx: Vec<_> = io.write(4, &0u16.to_le_bytes()).into_iter().collect();
        assert!(matches!(
            fx.as_slice(),
            [Effect::Pci { bdf: b, change: PciChange::Bar { old: Some(0xfe00_0000), new: None, .. } }] if *b == bdf
        ));
    }

    #[test]
    fn bar_region_forwards_msix_table_writes() {
        let dev = endpoint(0x43, true);
        let msix_off = {
            let mut d = lock(&dev);
            d.config
                .add_bar(
                    2,
                    BarKind::Mem32 {
                        prefetchable: false,
                    },
                    0x2000,
                )
                .unwrap();
            let m = MsixCapability::add(&mut d.config, 4, (2, 0), (2, 0x1000)).unwrap();
            let off = m.offset();
            d.msix = Some(m);
            off
        };
        let bdf = Bdf::new(0, 6, 0);
        let root = root_with(&[(bdf, dev.clone())]);
        let fx = root.config_write(bdf, msix_off + 2, &MSIX_CONTROL_ENABLE.to_le_bytes());
        assert!(fx.is_empty());
        let mut region = PciBarRegion::new(bdf, 2, 0, dev.clone());
        assert!(region.write(0x10, &0xfee0_0000u32.to_le_bytes()).is_empty());
        assert!(region.write(0x18, &0x61u32.to_le_bytes()).is_empty());
        let fx = region.write(0x1c, &0u32.to_le_bytes());
        assert_eq!(
            fx,
            Effects::one(Effect::Pci {
                bdf,
                change: PciChange::Msi {
                    vector: 1,
                    message: Some(MsiMessage {
                        address: 0xfee0_0000,
                        data: 0x61
                    }),
                },
            })
        );
        assert_eq!(read32(&mut region, 0x18), 0x61);
        assert_eq!(read32(&mut region, 0x1800), 0);
    }
    #[test]
    fn fuzz_config_ecam_bars_msi_msix() {
        let dev = endpoint(0x44, true);
        {
            let mut d = lock(&dev);
            d.config.set_multi_function(true);
            d.config.add_bar(0, BarKind::Io, 0x20).unwrap();
            d.config
                .add_bar(1, BarKind::Mem64 { prefetchable: true }, 0x4000)
                .unwrap();
            d.config.add_rom_bar(0x800).unwrap();
            let msi = crate::pci::MsiCapability::add(&mut d.config, 32, true, true).unwrap();
            d.msi = Some(msi);
            let m = MsixCapability::add(&mut d.config, 65, (1, 0), (1, 0x2000)).unwrap();
            d.msix = Some(m);
        }
        let root = root_with(&[
            (Bdf::new(0, 0, 0), dev.clone()),
            (Bdf::new(0, 0, 1), endpoint(0x45, false)),
        ]);
        let mut io = PciConfigIo::new(root.clone(), None);
        let mut ecam = PciConfigMmio::new(root, 2 << 20);
        let mut bar = PciBarRegion::new(Bdf::new(0, 0, 0), 1, 0, dev.clone());
        crate::fuzz::run("pci_root", 50_000, |rng| {
            let r = rng.u64();
            let width = [1usize, 2, 4, 8][(r & 3) as usize];
            let value = rng.u64().to_le_bytes();
            let mut buf = [0u8; 8];
            // Bias toward function 0's header, capabilities and BARs.
            let ecam_off = if r & 0x10 != 0 {
                (r >> 8) % 0x200
            } else {
                (r >> 8) % (2 << 20)
            };
            let dev_off = match (r >> 5) & 3 {
                0 => (r >> 8) % 16,
                1 => ecam_off,
                _ => (r >> 8) % 0x4000,
            };
            let target: &mut dyn BusDevice = match (r >> 5) & 3 {
                0 => &mut io,
                1 => &mut ecam,
                _ => &mut bar,
            };
            if r & 4 != 0 {
                let _ = target.write(dev_off, &value[..width]);
            } else {
                target.read(dev_off, &mut buf[..width]);
            }
            let d = &mut *lock(&dev);
            if let Some(m) = &mut d.msi {
                let _ = m.trigger(&mut d.config, (r >> 40) as u16 % 40);
            }
            if let Some(m) = &mut d.msix {
                let _ = m.trigger((r >> 40) as u16 % 80);
            }
        });
    }
}
