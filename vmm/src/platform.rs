//! The machine as the vCPUs see it: the buses, PCI bus 0, the memory slots
//! beyond RAM and the MSI router, and the code that applies what device
//! writes changed (see [`devices::Effect`]).
//!
//! Effects are applied on the vCPU thread that caused them, after the
//! device's lock and the bus's read lock are released, so moving a range
//! (which takes the bus's write lock) cannot deadlock.
//!
//! **BARs.** A [`PciChange::Bar`] only says "BAR `index` of `bdf` changed";
//! the platform then asks the function for the BAR's current
//! [`BarLayout`] and maps exactly that: trapped pieces on the PIO or MMIO
//! bus, host-memory pieces as KVM memory slots. Because the function's
//! answer is the truth at the time of applying, two vCPUs applying changes
//! out of order still end with the BAR where the function says it is. A
//! BAR the guest places over another device, over RAM or off page
//! alignment (for memory pieces) is never allowed to cover anything: it
//! stays unmapped or trapped, with an error logged; the guest broke its
//! own machine, the VMM must not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use devices::pci::{
    BarKind, BarLayout, BarPiece, Bdf, PciBarRegion, PciChange, PciRoot, SharedPciDevice,
};
use devices::{Effect, Effects, Window};
use log::{debug, error, warn};
use vm_memory::MmapRegion;

use crate::bus::{Bus, Buses, SharedDevice};
use crate::coalesced::Coalesced;
use crate::interrupt::{MsiRouter, RouteChange};
use crate::slots::{HostBuffer, Slots};
use crate::vm_ops::VmOps;

/// Host page size, the granularity of memory slots.
const PAGE: u64 = 4096;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A device whose address range the guest can move (ECAM, the ACPI PM
/// block): where it is now, and the device itself.
pub struct Movable {
    /// The device.
    pub device: SharedDevice,
    /// Length of its range.
    pub len: u64,
    /// Current base and length, if mapped.
    pub base: Mutex<Option<(u64, u64)>>,
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
    /// points at an occupied address stays unmapped, with an error logged.
    pub fn move_to(&self, bus: &Bus, new: Option<(u64, u64)>, what: &str) {
        let new = new.map(|(b, l)| (b, l.min(self.len)));
        let mut base = lock(&self.base);
        // Base and length: a guest that changes only PCIEXBAR's length
        // gets the new range.
        if *base == new {
            return;
        }
        if let Some((old, _)) = base.take() {
            if let Err(e) = bus.remove(old) {
                error!("{what}: cannot unmap from {old:#x}: {e}");
            }
        }
        if let Some((n, len)) = new {
            match bus.insert(n, len, what, self.device.clone()) {
                Ok(()) => {
                    debug!("{what} now at {n:#x} (+{len:#x})");
                    *base = Some((n, len));
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

/// Errors adding functions to the platform.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The bus-0 slot is taken or invalid.
    #[error(transparent)]
    Root(#[from] devices::pci::RootError),
    /// The interrupt relay thread could not start.
    #[error("cannot start the MSI relay: {0}")]
    Relay(std::io::Error),
}

/// One mapped piece of a BAR, as the platform holds it.
#[derive(Debug)]
enum MappedPiece {
    /// On a bus at `base`.
    Trap { io: bool, base: u64 },
    /// On the MMIO bus at `base`, with ioeventfds on its doorbells.
    Doorbells {
        base: u64,
        doorbells: Vec<(u64, Arc<vmm_sys_util::eventfd::EventFd>)>,
    },
    /// A memory slot; the `Arc` keeps the host mapping alive while mapped.
    Memory {
        slot: u32,
        gpa: u64,
        _memory: Arc<MmapRegion>,
    },
}

#[derive(Debug)]
struct MappedBar {
    base: u64,
    pieces: Vec<MappedPiece>,
}

/// A BAR piece that was mapped as guest memory (for `--stats`: it never
/// exits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRecord {
    /// The piece's name.
    pub name: String,
    /// Guest physical address.
    pub base: u64,
    /// Length.
    pub len: u64,
}

/// Buses plus the effect applier, shared by every vCPU thread.
pub struct Platform {
    /// Port and MMIO buses.
    pub buses: Buses,
    vm: Arc<dyn VmOps>,
    slots: Slots,
    pci: Arc<PciRoot>,
    msi: Arc<MsiRouter>,
    windows: HashMap<Window, Movable>,
    flash: Option<FlashWindow>,
    /// The coalesced MMIO ring (set once the vCPUs exist, when KVM has it).
    coalesced: std::sync::OnceLock<Coalesced>,
    /// The flash range is a coalesced zone now.
    flash_zone: std::sync::atomic::AtomicBool,
    /// Read-only memory mapped into the guest (firmware code), kept alive
    /// for as long as its slots are mapped.
    rom: Vec<HostBuffer>,
    bars: Mutex<HashMap<(Bdf, u8), MappedBar>>,
    /// Distinct mapped pieces (at most [`crate::bus::HISTORY_MAX`]).
    mapped_history: Mutex<Vec<MappedRecord>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("buses", &self.buses)
            .field("pci", &self.pci)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// An empty machine on `vm` whose RAM is `ram` ((base, length) pairs,
    /// in slots 0 up): PCI bus 0 with no functions, memory slot numbers
    /// after the RAM slots.
    pub fn new(vm: Arc<dyn VmOps>, ram: &[(u64, u64)]) -> Self {
        Self {
            buses: Buses::default(),
            slots: Slots::new(vm.clone(), ram.len() as u32, ram),
            msi: Arc::new(MsiRouter::new(vm.clone())),
            vm,
            pci: Arc::new(PciRoot::new()),
            windows: HashMap::new(),
            flash: None,
            coalesced: std::sync::OnceLock::new(),
            flash_zone: std::sync::atomic::AtomicBool::new(false),
            rom: Vec::new(),
            bars: Mutex::new(HashMap::new()),
            mapped_history: Mutex::new(Vec::new()),
        }
    }

    /// PCI bus 0.
    pub fn pci(&self) -> &Arc<PciRoot> {
        &self.pci
    }

    /// The memory slots beyond RAM.
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The hypervisor.
    pub fn vm(&self) -> &Arc<dyn VmOps> {
        &self.vm
    }

    /// Put `device` at `bdf` on bus 0 and connect its MSI vectors.
    pub fn add_pci_function(
        &self,
        bdf: Bdf,
        device: SharedPciDevice,
    ) -> Result<(), devices::pci::RootError> {
        if let Some(vectors) = lock(&device).msi_vectors() {
            self.msi.add_function(bdf, vectors, false);
        }
        self.pci.add(bdf, device)
    }

    /// Like [`add_pci_function`](Self::add_pci_function), but the
    /// function's MSI/MSI-X interrupts are relayed by a userspace thread
    /// instead of irqfds (`x-no-kvm-msi`); returns the relay.
    pub fn add_pci_function_relayed(
        &self,
        bdf: Bdf,
        device: SharedPciDevice,
    ) -> Result<Option<crate::interrupt::MsiRelay>, PlatformError> {
        let vectors = lock(&device).msi_vectors();
        if let Some(v) = &vectors {
            self.msi.add_function(bdf, v.clone(), true);
        }
        self.pci.add(bdf, device)?;
        match vectors {
            Some(v) => crate::interrupt::MsiRelay::start(self.msi.clone(), &[(bdf, v)])
                .map(Some)
                .map_err(PlatformError::Relay),
            None => Ok(None),
        }
    }

    /// `window` is served by `movable` wherever the guest places it.
    pub fn add_window(&mut self, window: Window, movable: Movable) {
        self.windows.insert(window, movable);
    }

    /// Where `window` decodes now.
    pub fn window_base(&self, window: Window) -> Option<u64> {
        self.windows
            .get(&window)
            .and_then(|m| lock(&m.base).map(|(b, _)| b))
    }

    /// The UEFI variable flash window.
    pub fn set_flash(&mut self, flash: FlashWindow) {
        self.flash = Some(flash);
    }

    /// Keep `buffer` (mapped firmware code) alive with the machine.
    pub fn keep_rom(&mut self, buffer: HostBuffer) {
        self.rom.push(buffer);
    }

    /// BAR pieces that were mapped as guest memory at some point.
    pub fn mapped_history(&self) -> Vec<MappedRecord> {
        lock(&self.mapped_history).clone()
    }

    /// True when a flash window is mapped.
    pub fn has_flash(&self) -> bool {
        self.flash.is_some()
    }

    /// Use `ring` for the flash's programming writes (see
    /// [`crate::coalesced`]); only the first call counts.
    pub fn set_coalesced(&self, ring: Coalesced) {
        let _ = self.coalesced.set(ring);
    }

    /// Replay the guest's coalesced writes on the MMIO bus, in order (see
    /// [`crate::coalesced`]); called by every vCPU before it handles an
    /// exit. One atomic load when there are none.
    pub fn drain_coalesced(&self) -> usize {
        let Some(c) = self.coalesced.get() else {
            return 0;
        };
        c.drain(|addr, data| {
            if let Some(e) = self.buses.mmio.write(addr, data).filter(|e| !e.is_empty()) {
                crate::exit::EffectSink::apply(self, e);
            }
        })
    }

    /// Writes that went through the coalesced ring instead of exiting.
    pub fn coalesced_writes(&self) -> Option<u64> {
        self.coalesced.get().map(Coalesced::writes)
    }

    /// Make the flash range a coalesced zone (`on`: its slot is unmapped,
    /// every read exits and drains the ring first) or stop.
    fn flash_zone(&self, flash: &FlashWindow, on: bool) {
        use std::sync::atomic::Ordering;
        let Some(c) = self.coalesced.get() else {
            return;
        };
        if self.flash_zone.load(Ordering::SeqCst) == on {
            return;
        }
        let len = flash.buffer.len() as u32;
        let r = if on {
            self.vm.register_coalesced(flash.gpa, len)
        } else {
            self.vm.unregister_coalesced(flash.gpa, len)
        };
        match r {
            Ok(()) => {
                self.flash_zone.store(on, Ordering::SeqCst);
                c.zone_changed(on);
            }
            // Writes keep exiting: slower, equally correct.
            Err(e) => warn!("flash at {:#x}: {e}", flash.gpa),
        }
    }

    fn flash_mode(&self, read_array: bool) {
        let Some(flash) = &self.flash else {
            warn!("flash mode change without a mapped flash");
            return;
        };
        // Programming writes coalesce only while the slot is unmapped (a
        // read must exit to see them); the zone goes before the slot comes
        // back, and comes after it went.
        if read_array {
            self.flash_zone(flash, false);
        }
        let result = if read_array {
            let bytes = (flash.contents)();
            flash
                .buffer
                .fill(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    self.slots
                        .map(flash.slot, flash.gpa, &flash.buffer, true)
                        .map_err(|e| e.to_string())
                })
        } else {
            self.slots
                .unmap(flash.slot, flash.gpa)
                .map_err(|e| e.to_string())
        };
        // Either way the device on the MMIO bus still answers every access
        // correctly; only speed is lost.
        match result {
            Ok(()) if !read_array => self.flash_zone(flash, true),
            Ok(()) => {}
            Err(e) => error!("flash window (read_array={read_array}): {e}"),
        }
    }

    fn window(&self, window: Window, new: Option<(u64, u64)>) {
        let Some(m) = self.windows.get(&window) else {
            warn!("{window:?} moved on a machine without it");
            return;
        };
        match window {
            Window::Ecam => m.move_to(&self.buses.mmio, new, "ECAM"),
            Window::AcpiPm => m.move_to(&self.buses.pio, new, "ACPI PM block"),
        }
    }

    fn bus(&self, io: bool) -> &Bus {
        if io {
            &self.buses.pio
        } else {
            &self.buses.mmio
        }
    }

    fn unmap_bar(&self, bdf: Bdf, index: u8, bar: MappedBar) {
        for piece in bar.pieces {
            match piece {
                MappedPiece::Trap { io, base } => {
                    if let Err(e) = self.bus(io).remove(base) {
                        error!("{bdf} BAR{index}: cannot unmap from {base:#x}: {e}");
                    }
                }
                MappedPiece::Doorbells { base, doorbells } => {
                    for (addr, fd) in doorbells {
                        if let Err(e) = self.vm.unregister_ioevent(&fd, addr) {
                            error!("{bdf} BAR{index}: doorbell at {addr:#x}: {e}");
                        }
                    }
                    if let Err(e) = self.bus(false).remove(base) {
                        error!("{bdf} BAR{index}: cannot unmap from {base:#x}: {e}");
                    }
                }
                MappedPiece::Memory { slot, gpa, .. } => {
                    match self.slots.unmap(slot, gpa) {
                        Ok(()) => self.slots.free(slot),
                        // The slot stays in use rather than be reused
                        // while KVM may still map it.
                        Err(e) => error!("{bdf} BAR{index}: cannot remove slot {slot}: {e}"),
                    }
                }
            }
        }
    }

    /// Map `layout` of BAR `index` of `bdf`, all or nothing.
    fn map_bar(
        &self,
        bdf: Bdf,
        index: u8,
        layout: BarLayout,
        device: &SharedPciDevice,
    ) -> Option<MappedBar> {
        let io = layout.kind == BarKind::Io;
        let mut mapped = MappedBar {
            base: layout.base,
            pieces: Vec::new(),
        };
        let mut records = Vec::new();
        for piece in layout.pieces {
            let (offset, len) = piece.range();
            let Some(gpa) = layout.base.checked_add(offset) else {
                self.unmap_bar(bdf, index, mapped);
                return None;
            };
            let trap = |name: &str| {
                if !io && self.slots.overlaps_memory(gpa, len) {
                    return Err(format!("{name} would lie under RAM or mapped memory"));
                }
                let region = Arc::new(Mutex::new(PciBarRegion::new(
                    bdf,
                    index,
                    offset,
                    device.clone(),
                )));
                self.bus(io)
                    .insert(gpa, len, name, region)
                    .map_err(|e| e.to_string())
            };
            let result = match piece {
                BarPiece::Memory {
                    memory,
                    name,
                    read_only,
                    ..
                } if gpa % PAGE == 0 && !io => {
                    // A memory slot must not shadow a trapped device.
                    if let Some(other) = self.bus(false).overlapping(gpa, len) {
                        Err(format!("it would cover the device at {other:#x}"))
                    } else {
                        let slot = self.slots.allocate();
                        match self.slots.map_region(slot, gpa, &memory, len, read_only) {
                            Ok(()) => {
                                records.push(MappedRecord {
                                    name,
                                    base: gpa,
                                    len,
                                });
                                mapped.pieces.push(MappedPiece::Memory {
                                    slot,
                                    gpa,
                                    _memory: memory,
                                });
                                Ok(())
                            }
                            Err(e) => {
                                self.slots.free(slot);
                                Err(e.to_string())
                            }
                        }
                    }
                }
                BarPiece::Memory { name, .. } => {
                    warn!("{name}: at {gpa:#x}, not page aligned: trapped instead of mapped");
                    trap(&name).map(|()| mapped.pieces.push(MappedPiece::Trap { io, base: gpa }))
                }
                BarPiece::Trap { name, .. } => {
                    trap(&name).map(|()| mapped.pieces.push(MappedPiece::Trap { io, base: gpa }))
                }
                BarPiece::Doorbells { name, .. } if io => {
                    trap(&name).map(|()| mapped.pieces.push(MappedPiece::Trap { io, base: gpa }))
                }
                BarPiece::Doorbells {
                    name, doorbells, ..
                } => trap(&name).map(|()| {
                    // A doorbell without its ioeventfd still works: the
                    // write exits and the device signals the same eventfd.
                    let mut bells = Vec::new();
                    for d in doorbells {
                        let addr = layout.base.saturating_add(d.offset);
                        match self.vm.register_ioevent(&d.fd, addr) {
                            Ok(()) => bells.push((addr, d.fd)),
                            Err(e) => warn!("{name}: doorbell at {addr:#x} exits instead: {e}"),
                        }
                    }
                    mapped.pieces.push(MappedPiece::Doorbells {
                        base: gpa,
                        doorbells: bells,
                    })
                }),
            };
            if let Err(e) = result {
                error!(
                    "{bdf} BAR{index}: the guest placed it at {:#x} (+{:#x}) where it cannot go, left unmapped: {e}",
                    layout.base, layout.size
                );
                self.unmap_bar(bdf, index, mapped);
                return None;
            }
        }
        let mut history = lock(&self.mapped_history);
        for r in records {
            if history.len() < crate::bus::HISTORY_MAX && !history.contains(&r) {
                history.push(r);
            }
        }
        drop(history);
        debug!(
            "{bdf} BAR{index} now at {:#x} (+{:#x})",
            layout.base, layout.size
        );
        Some(mapped)
    }

    /// Make BAR `index` of `bdf` mapped where the function says it decodes.
    fn bar(&self, bdf: Bdf, index: u8) {
        let mut bars = lock(&self.bars);
        let Some(device) = self.pci.get(bdf) else {
            return;
        };
        let layout = lock(&device).bar_layout(index);
        if let (Some(have), Some(want)) = (bars.get(&(bdf, index)), &layout) {
            if have.base == want.base {
                return;
            }
        }
        if let Some(old) = bars.remove(&(bdf, index)) {
            self.unmap_bar(bdf, index, old);
        }
        if let Some(layout) = layout {
            if let Some(mapped) = self.map_bar(bdf, index, layout, &device) {
                bars.insert((bdf, index), mapped);
            }
        }
    }

    /// Unmap every BAR (teardown: the host mappings go before the devices).
    pub fn unmap_all_bars(&self) {
        let mut bars = lock(&self.bars);
        for ((bdf, index), bar) in bars.drain() {
            self.unmap_bar(bdf, index, bar);
        }
    }
}

impl crate::exit::EffectSink for Platform {
    fn apply(&self, effects: Effects) {
        let mut routes = Vec::new();
        for effect in effects {
            match effect {
                Effect::Pci {
                    bdf,
                    change: PciChange::Bar { index, .. },
                } => self.bar(bdf, index),
                Effect::Pci {
                    bdf,
                    change: PciChange::Msi { vector, message },
                } => routes.push(RouteChange {
                    bdf,
                    vector,
                    message,
                }),
                Effect::Pci {
                    change: PciChange::Window { window, new },
                    ..
                }
                | Effect::Window { window, new } => self.window(window, new),
                Effect::FlashMode { read_array } => self.flash_mode(read_array),
            }
        }
        if let Err(e) = self.msi.apply(&routes) {
            error!("MSI routing: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
