//! The machine as the vCPUs see it: the buses, and the code that applies
//! what device writes changed (see [`devices::Effect`]).
//!
//! Effects are applied on the vCPU thread that caused them, after the
//! device's lock and the bus's read lock are released, so moving a range
//! (which takes the bus's write lock) cannot deadlock.

use std::sync::Mutex;

use devices::pci::PciChange;
use devices::{Effect, Effects};
use log::{debug, error, warn};

use std::collections::HashMap;
use std::sync::Arc;

use devices::pci::{BarKind, Bdf, PciBarRegion, PciRoot};

use crate::bus::{Bus, Buses, SharedDevice};
use crate::msi::MsiRouter;
use crate::slots::{HostBuffer, Slots};

/// A device whose address range the guest can move (ECAM, the ACPI PM
/// block): where it is now, and the device itself.
pub struct Movable {
    /// The device.
    pub device: SharedDevice,
    /// Length of its range.
    pub len: u64,
    /// Current base, if mapped.
    pub base: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Movable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Movable")
            .field("len", &self.len)
            .field("base", &self.base)
            .finish()
    }
}

impl Movable {
    /// An unmapped movable device.
    pub fn new(device: SharedDevice, len: u64) -> Self {
        Self {
            device,
            len,
            base: Mutex::new(None),
        }
    }

    /// Map at `base` with length `len` (or unmap with `None`) on `bus`.
    /// `len` is capped at the device's own length. A range the guest
    /// points at an occupied address stays unmapped, with an error logged:
    /// the guest broke its own machine, the VMM must not.
    pub fn move_to(&self, bus: &Bus, new: Option<(u64, u64)>, what: &str) {
        let new = new.map(|(b, l)| (b, l.min(self.len)));
        let mut base = self.base.lock().unwrap_or_else(|e| e.into_inner());
        if *base == new.map(|(b, _)| b) {
            return;
        }
        if let Some(old) = base.take() {
            if let Err(e) = bus.remove(old) {
                error!("{what}: cannot unmap from {old:#x}: {e}");
            }
        }
        if let Some((n, len)) = new {
            match bus.insert(n, len, self.device.clone()) {
                Ok(()) => {
                    debug!("{what} now at {n:#x}");
                    *base = Some(n);
                }
                Err(e) => {
                    error!("{what}: the guest moved it onto other devices, left unmapped: {e}")
                }
            }
        }
    }
}

/// Flash that is mapped as read-only memory while it reads as an array
/// (OVMF's variable store), trapped otherwise.
pub struct FlashWindow {
    /// The flash device (also on the MMIO bus over the same range).
    pub device: SharedDevice,
    /// Reads the device's current contents.
    pub contents: Box<dyn Fn() -> Vec<u8> + Send + Sync>,
    /// Guest physical base.
    pub gpa: u64,
    /// KVM slot used while mapped.
    pub slot: u32,
    /// Host memory behind the slot.
    pub buffer: HostBuffer,
}

impl std::fmt::Debug for FlashWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlashWindow")
            .field("gpa", &self.gpa)
            .field("slot", &self.slot)
            .finish()
    }
}

/// Buses plus the effect applier, shared by every vCPU thread.
#[derive(Debug, Default)]
pub struct Platform {
    /// Port and MMIO buses.
    pub buses: Buses,
    /// KVM slots beyond RAM (firmware boot).
    pub slots: Option<Slots>,
    /// The PCI Express configuration window (moved by the MCH's PCIEXBAR).
    pub ecam: Option<Movable>,
    /// The ACPI PM block (moved by the LPC's PMBASE).
    pub acpi_pm: Option<Movable>,
    /// The UEFI variable flash.
    pub flash: Option<FlashWindow>,
    /// Read-only memory mapped into the guest (firmware code), kept alive
    /// for as long as its slots are mapped.
    pub rom: Vec<HostBuffer>,
    /// PCI bus 0, for the BARs its functions decode.
    pub pci: Option<Arc<PciRoot>>,
    /// Where each decoding BAR is mapped: (function, BAR) → (I/O?, base).
    pub bars: Mutex<HashMap<(Bdf, u8), (bool, u64)>>,
    /// MSI/MSI-X vectors as KVM routes.
    pub msi: Option<MsiRouter>,
}

impl Platform {
    fn flash_mode(&self, read_array: bool) {
        let (Some(flash), Some(slots)) = (&self.flash, &self.slots) else {
            warn!("flash mode change without a mapped flash");
            return;
        };
        let result = if read_array {
            let bytes = (flash.contents)();
            flash
                .buffer
                .fill(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    slots
                        .map(flash.slot, flash.gpa, &flash.buffer, true)
                        .map_err(|e| e.to_string())
                })
        } else {
            slots
                .unmap(flash.slot, flash.gpa)
                .map_err(|e| e.to_string())
        };
        // Either way the device on the MMIO bus still answers every access
        // correctly; only speed is lost.
        if let Err(e) = result {
            error!("flash window (read_array={read_array}): {e}");
        }
    }

    fn pci(&self, bdf: devices::pci::Bdf, change: PciChange) {
        match change {
            PciChange::Ecam { new, .. } => match &self.ecam {
                Some(ecam) => ecam.move_to(&self.buses.mmio, new, "ECAM"),
                None => warn!("{bdf}: ECAM change on a machine without ECAM"),
            },
            PciChange::PmBase { new, .. } => match &self.acpi_pm {
                Some(pm) => pm.move_to(
                    &self.buses.pio,
                    new.map(|b| (u64::from(b), pm.len)),
                    "ACPI PM block",
                ),
                None => warn!("{bdf}: PMBASE change on a machine without a movable PM block"),
            },
            PciChange::Bar {
                index,
                kind,
                size,
                new,
                ..
            } => self.bar(bdf, index, kind, size, new),
            PciChange::Msi { vector, message } => match &self.msi {
                Some(router) => {
                    if let Err(e) = router.update(bdf, vector, message) {
                        error!("{bdf}: MSI vector {vector}: {e}");
                    }
                }
                None => warn!("{bdf}: MSI change on a machine without MSI routing"),
            },
        }
    }

    /// Map BAR `index` of `bdf` at `new` (unmapping where we had it).
    /// A BAR the guest put over another device stays unmapped (logged):
    /// the guest broke its own machine, the VMM must not.
    fn bar(&self, bdf: Bdf, index: u8, kind: BarKind, size: u64, new: Option<u64>) {
        let Some(root) = &self.pci else {
            warn!("{bdf}: BAR change on a machine without PCI");
            return;
        };
        let io = kind == BarKind::Io;
        let bus = |io: bool| {
            if io {
                &self.buses.pio
            } else {
                &self.buses.mmio
            }
        };
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((was_io, old)) = bars.remove(&(bdf, index)) {
            if let Err(e) = bus(was_io).remove(old) {
                error!("{bdf} BAR{index}: cannot unmap from {old:#x}: {e}");
            }
        }
        let (Some(base), Some(device)) = (new, root.get(bdf)) else {
            return;
        };
        let region = Arc::new(Mutex::new(PciBarRegion::new(bdf, index, device)));
        match bus(io).insert(base, size, region) {
            Ok(()) => {
                debug!("{bdf} BAR{index} now at {base:#x} (+{size:#x})");
                bars.insert((bdf, index), (io, base));
            }
            Err(e) => error!(
                "{bdf} BAR{index}: the guest placed it over other devices, left unmapped: {e}"
            ),
        }
    }
}

impl crate::exit::EffectSink for Platform {
    fn apply(&self, effects: Effects) {
        for effect in effects {
            match effect {
                Effect::Pci { bdf, change } => self.pci(bdf, change),
                Effect::FlashMode { read_array } => self.flash_mode(read_array),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use devices::pci::Bdf;

    use super::*;
    use crate::bus::tests::Probe;
    use crate::exit::EffectSink;

    #[test]
    fn ecam_and_pm_block_follow_the_guest() {
        let probe = Arc::new(Mutex::new(Probe::default()));
        let pm = Arc::new(Mutex::new(Probe::default()));
        let p = Platform {
            ecam: Some(Movable::new(probe, 0x1000_0000)),
            acpi_pm: Some(Movable::new(pm, 0x80)),
            ..Default::default()
        };
        let bdf = Bdf::new(0, 0, 0);
        let ecam = |new| Effect::Pci {
            bdf,
            change: PciChange::Ecam { old: None, new },
        };
        p.apply(Effects::one(ecam(Some((0xb000_0000, 0x1000_0000)))));
        let mut b = [0u8; 4];
        assert!(p.buses.mmio.read(0xb000_0010, &mut b));
        // Relocated (a newer OVMF's base), the old window is gone.
        p.apply(Effects::one(ecam(Some((0xe000_0000, 0x1000_0000)))));
        assert!(!p.buses.mmio.read(0xb000_0010, &mut b));
        assert!(p.buses.mmio.read(0xe000_0010, &mut b));
        p.apply(Effects::one(ecam(None)));
        assert!(!p.buses.mmio.read(0xe000_0010, &mut b));

        let pmbase = |new| Effect::Pci {
            bdf,
            change: PciChange::PmBase { old: None, new },
        };
        p.apply(Effects::one(pmbase(Some(0x600))));
        assert!(p.buses.pio.read(0x604, &mut b[..2]));
        p.apply(Effects::one(pmbase(Some(0xb000))));
        assert!(!p.buses.pio.read(0x604, &mut b[..2]));
        assert!(p.buses.pio.read(0xb004, &mut b[..2]));
    }

    /// A function whose BAR reads return the BAR index.
    struct Endpoint;
    impl devices::pci::PciDevice for Endpoint {
        fn config_read(&mut self, _: u16, data: &mut [u8]) {
            data.fill(0);
        }
        fn config_write(&mut self, _: u16, _: &[u8]) -> Vec<PciChange> {
            Vec::new()
        }
        fn bar_read(&mut self, index: u8, _: u64, data: &mut [u8]) {
            data.fill(index);
        }
    }

    #[test]
    fn bars_follow_the_guest_and_never_cover_other_devices() {
        let root = Arc::new(PciRoot::new());
        let bdf = Bdf::new(0, 2, 0);
        root.add(bdf, Arc::new(Mutex::new(Endpoint))).unwrap();
        let p = Platform {
            pci: Some(root),
            ..Default::default()
        };
        let bar = |index, kind, new| Effect::Pci {
            bdf,
            change: PciChange::Bar {
                index,
                kind,
                size: 0x1000,
                old: None,
                new,
            },
        };
        let mem = BarKind::Mem32 {
            prefetchable: false,
        };
        p.apply(Effects::one(bar(2, mem, Some(0xc000_0000))));
        let mut b = [0u8; 4];
        assert!(p.buses.mmio.read(0xc000_0010, &mut b));
        assert_eq!(b, [2; 4]);
        p.apply(Effects::one(bar(2, mem, Some(0xc001_0000))));
        assert!(!p.buses.mmio.read(0xc000_0010, &mut b));
        assert!(p.buses.mmio.read(0xc001_0010, &mut b));
        p.apply(Effects::one(bar(0, BarKind::Io, Some(0xc000))));
        assert!(p.buses.pio.read(0xc004, &mut b[..1]));
        // Over another device: refused; disabling then removes nothing else.
        p.buses
            .mmio
            .insert(0xfee0_0000, 0x1000, Arc::new(Mutex::new(Probe::default())))
            .unwrap();
        p.apply(Effects::one(bar(2, mem, Some(0xfee0_0000))));
        assert!(!p.buses.mmio.read(0xc001_0010, &mut b));
        p.apply(Effects::one(bar(2, mem, None)));
        assert!(
            p.buses.mmio.read(0xfee0_0000, &mut b),
            "the other device is untouched"
        );
    }

    #[test]
    fn a_window_moved_onto_another_device_stays_unmapped() {
        let p = Platform {
            ecam: Some(Movable::new(Arc::new(Mutex::new(Probe::default())), 0x1000)),
            ..Default::default()
        };
        p.buses
            .mmio
            .insert(0xfee0_0000, 0x1000, Arc::new(Mutex::new(Probe::default())))
            .unwrap();
        let bdf = Bdf::new(0, 0, 0);
        p.apply(Effects::one(Effect::Pci {
            bdf,
            change: PciChange::Ecam {
                old: None,
                new: Some((0xfee0_0000, 0x1000)),
            },
        }));
        assert_eq!(*p.ecam.as_ref().unwrap().base.lock().unwrap(), None);
    }
}
