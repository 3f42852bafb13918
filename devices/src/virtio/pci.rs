//! The virtio 1.x PCI transport (virtio spec §4.1, modern only).
//!
//! The function is `1af4:(1040 + type)`, revision 1, subsystem
//! `1af4:(1040 + type)` (OVMF's `Virtio10Dxe` binds modern devices with
//! revision ≥ 1 and subsystem ID ≥ 0x40). BAR0 is 32-bit memory,
//! [`BAR_SIZE`] bytes:
//!
//! | offset | what |
//! |---|---|
//! | 0x0000 | common configuration (`virtio_pci_common_cfg`) |
//! | 0x1000 | ISR status (read-to-clear) |
//! | 0x2000 | device-specific configuration |
//! | 0x3000 | notifications: queue *n* at `n * 4` (a doorbell: KVM ioeventfd) |
//! | 0x4000 | MSI-X table (queues + 1 vectors: one per queue, one for config) |
//! | 0x6000 | MSI-X pending-bit array |
//!
//! The capability list holds the MSI-X capability and the five virtio
//! capabilities (common, notify, ISR, device, and the PCI configuration
//! access window the spec requires). No INTx: drivers use MSI-X (Linux)
//! or poll (OVMF).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use log::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::worker::{Activation, Interrupt, Worker, WorkerError};
use super::{
    F_ACCESS_PLATFORM, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, NO_VECTOR,
    STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK, VirtioDevice,
};
use crate::interrupt::MsiVectors;
use crate::pci::config::{PciConfiguration, Type0Header};
use crate::pci::{
    BarKind, BarLayout, BarPiece, Doorbell, MsixCapability, PciChange, PciDevice, ProgrammedBar,
};

/// Vendor ID of virtio devices.
pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the device type.
pub const MODERN_DEVICE_BASE: u16 = 0x1040;
/// Size of BAR0.
pub const BAR_SIZE: u64 = 0x8000;
/// Offsets of the structures in BAR0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// ISR status.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Notifications.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' doorbells.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// MSI-X table.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X PBA.
pub const MSIX_PBA_OFFSET: u64 = 0x6000;
/// Length of each structure's window.
const WINDOW: u64 = 0x1000;
/// Length of the common configuration (virtio 1.0 fields).
const COMMON_LEN: u64 = 0x38;

const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

/// One queue's registers.
#[derive(Debug, Clone, Copy)]
struct QueueRegs {
    max: u16,
    size: u16,
    vector: u16,
    enabled: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueRegs {
    fn new(max: u16) -> Self {
        Self {
            max,
            size: max,
            vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// Errors building a virtio function.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// The configuration space could not take a BAR or capability.
    #[error("virtio {0}: {1}")]
    Config(String, String),
    /// An eventfd could not be created.
    #[error("virtio {0}: cannot create an eventfd: {1}")]
    EventFd(String, std::io::Error),
    /// The worker thread did not start.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// A virtio device on the PCI transport; see the module documentation.
pub struct VirtioPci {
    name: String,
    device: Box<dyn VirtioDevice>,
    config: PciConfiguration,
    msix: MsixCapability,
    vectors: Arc<MsiVectors>,
    kicks: Vec<Arc<EventFd>>,
    worker: Worker,
    mem: GuestMemoryMmap,
    /// Offset of the PCI-configuration-access capability.
    pci_cfg_cap: u16,
    // common configuration
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    config_vector: u16,
    status: u8,
    generation: u8,
    queue_select: u16,
    queues: Vec<QueueRegs>,
    isr: Arc<AtomicU8>,
    needs_reset: Arc<AtomicBool>,
    active: bool,
}

impl std::fmt::Debug for VirtioPci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPci")
            .field("name", &self.name)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn cap_body(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    // cap_len, cfg_type, bar, id, padding[2], offset, length (the two
    // bytes of vendor ID and next pointer are added by add_capability)
    let mut b = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    b.extend_from_slice(extra);
    b
}

impl VirtioPci {
    /// Put `device` on the transport; `thread` names its worker thread.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        thread: String,
    ) -> Result<Self, VirtioPciError> {
        Self::with_worker_hook(device, mem, thread, None)
    }

    /// Like [`new`](Self::new); the worker runs `on_first_start` (e.g. its
    /// seccomp filter) before it serves the guest for the first time.
    pub fn with_worker_hook(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        thread: String,
        on_first_start: Option<super::worker::OnFirstStart>,
    ) -> Result<Self, VirtioPciError> {
        let name = device.name();
        let ty = device.device_type();
        let (class, subclass, prog_if) = device.pci_class();
        let header = Type0Header {
            vendor_id: VIRTIO_VENDOR,
            device_id: MODERN_DEVICE_BASE + ty,
            class,
            subclass,
            prog_if,
            revision: 1,
            subsystem_vendor_id: VIRTIO_VENDOR,
            subsystem_id: MODERN_DEVICE_BASE + ty,
            multi_function: false,
        };
        let cerr = |e: String| VirtioPciError::Config(name.clone(), e);
        let mut config = PciConfiguration::new_type0(&header, false);
        config
            .add_bar(
                0,
                BarKind::Mem32 {
                    prefetchable: false,
                },
                BAR_SIZE,
            )
            .map_err(|e| cerr(e.to_string()))?;
        let sizes = device.queue_max_sizes();
        let nvec = sizes.len() as u16 + 1;
        let msix = MsixCapability::add(
            &mut config,
            nvec,
            (0, MSIX_TABLE_OFFSET),
            (0, MSIX_PBA_OFFSET),
        )
        .map_err(|e| cerr(e.to_string()))?;
        let caps = [
            cap_body(CFG_COMMON, COMMON_OFFSET, COMMON_LEN, &[]),
            cap_body(
                CFG_NOTIFY,
                NOTIFY_OFFSET,
                u64::from(NOTIFY_MULTIPLIER) * sizes.len() as u64,
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
            cap_body(CFG_ISR, ISR_OFFSET, 1, &[]),
            cap_body(CFG_DEVICE, DEVICE_OFFSET, WINDOW, &[]),
        ];
        for c in caps {
            config
                .add_capability(CAP_VENDOR, &c)
                .map_err(|e| cerr(e.to_string()))?;
        }
        let pci_cfg_cap = config
            .add_capability(CAP_VENDOR, &cap_body(CFG_PCI, 0, 0, &[0; 4]))
            .map_err(|e| cerr(e.to_string()))?;
        // bar, offset, length and data are the driver's to write
        config
            .set_writable_mask(pci_cfg_cap + 4, &[0xff])
            .and_then(|()| config.set_writable_mask(pci_cfg_cap + 8, &[0xff; 8]))
            .and_then(|()| config.set_writable_mask(pci_cfg_cap + 16, &[0xff; 4]))
            .map_err(|e| cerr(e.to_string()))?;
        let vectors =
            Arc::new(MsiVectors::new(nvec).map_err(|e| VirtioPciError::EventFd(name.clone(), e))?);
        let kicks = sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VirtioPciError::EventFd(name.clone(), e))?;
        let worker = Worker::start(name.clone(), thread, kicks.clone(), on_first_start)?;
        Ok(Self {
            name,
            device,
            config,
            msix,
            vectors,
            kicks,
            worker,
            mem,
            pci_cfg_cap,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            config_vector: NO_VECTOR,
            status: 0,
            generation: 0,
            queue_select: 0,
            queues: sizes.into_iter().map(QueueRegs::new).collect(),
            isr: Arc::new(AtomicU8::new(0)),
            needs_reset: Arc::new(AtomicBool::new(false)),
            active: false,
        })
    }

    /// The name the device goes by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the device offers: its own bits plus the transport's.
    pub fn device_features(&self) -> u64 {
        self.device.features()
            | F_VERSION_1
            | F_RING_INDIRECT_DESC
            | F_RING_EVENT_IDX
            | F_ACCESS_PLATFORM
    }

    /// The device status register as the guest reads it.
    pub fn status(&self) -> u8 {
        let broken = if self.needs_reset.load(Ordering::SeqCst) {
            STATUS_DEVICE_NEEDS_RESET
        } else {
            0
        };
        self.status | broken
    }

    fn reset(&mut self) {
        if self.active {
            self.worker.reset();
            self.active = false;
        }
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.config_vector = NO_VECTOR;
        self.status = 0;
        self.generation = self.generation.wrapping_add(1);
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueRegs::new(q.max);
        }
        self.isr.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
        for v in 0..self.vectors.len() {
            self.vectors.clear(v);
        }
        for k in &self.kicks {
            let _ = k.read();
        }
        debug!("{}: reset", self.name);
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value & !STATUS_DEVICE_NEEDS_RESET;
        let newly = value & !self.status;
        if newly & STATUS_FEATURES_OK != 0 {
            let offered = self.device_features();
            let ok =
                self.driver_features & !offered == 0 && self.driver_features & F_VERSION_1 != 0;
            if !ok {
                warn!(
                    "{}: the driver asked for features {:#x} (offered {offered:#x}, VERSION_1 required): FEATURES_OK refused",
                    self.name, self.driver_features
                );
                value &= !STATUS_FEATURES_OK;
            }
        }
        self.status = value;
        if newly & STATUS_DRIVER_OK != 0
            && value & STATUS_FEATURES_OK != 0
            && value & STATUS_FAILED == 0
            && !self.active
        {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let features = self.driver_features;
        let event_idx = features & F_RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, r) in self.queues.iter().enumerate() {
            if !r.enabled {
                queues.push(None);
                continue;
            }
            let Ok(mut q) = Queue::new(r.max) else {
                queues.push(None);
                continue;
            };
            q.set_size(r.size);
            q.set_desc_table_address(Some(r.desc as u32), Some((r.desc >> 32) as u32));
            q.set_avail_ring_address(Some(r.avail as u32), Some((r.avail >> 32) as u32));
            q.set_used_ring_address(Some(r.used as u32), Some((r.used >> 32) as u32));
            q.set_event_idx(event_idx);
            q.set_ready(true);
            if !q.is_valid(&self.mem) {
                warn!(
                    "{}: queue {i} (size {}, desc {:#x}, avail {:#x}, used {:#x}) is not valid: the device needs a reset",
                    self.name, r.size, r.desc, r.avail, r.used
                );
                self.needs_reset.store(true, Ordering::SeqCst);
                return;
            }
            queues.push(Some(q));
        }
        let handler = self.device.activate(features);
        let interrupt = Interrupt {
            vectors: self.vectors.clone(),
            isr: self.isr.clone(),
            needs_reset: self.needs_reset.clone(),
            queue_vectors: self.queues.iter().map(|q| q.vector).collect(),
            config_vector: self.config_vector,
        };
        self.worker.activate(Activation {
            handler,
            queues,
            mem: self.mem.clone(),
            interrupt,
        });
        self.active = true;
        debug!("{}: DRIVER_OK, features {features:#x}", self.name);
    }

    fn valid_vector(&self, v: u16) -> u16 {
        if v < self.vectors.len() { v } else { NO_VECTOR }
    }

    /// Read a common-configuration field: (start, width, value).
    fn common_field(&self, offset: u64) -> Option<(u64, u64, u64)> {
        let q = self.queues.get(usize::from(self.queue_select));
        let qv = |f: fn(&QueueRegs) -> u64| q.map_or(0, f);
        let f = match offset {
            0x00..=0x03 => (0x00, 4, u64::from(self.device_feature_select)),
            0x04..=0x07 => (
                0x04,
                4,
                match self.device_feature_select {
                    0 => self.device_features() & 0xffff_ffff,
                    1 => self.device_features() >> 32,
                    _ => 0,
                },
            ),
            0x08..=0x0b => (0x08, 4, u64::from(self.driver_feature_select)),
            0x0c..=0x0f => (
                0x0c,
                4,
                match self.driver_feature_select {
                    0 => self.driver_features & 0xffff_ffff,
                    1 => self.driver_features >> 32,
                    _ => 0,
                },
            ),
            0x10..=0x11 => (0x10, 2, u64::from(self.config_vector)),
            0x12..=0x13 => (0x12, 2, self.queues.len() as u64),
            0x14 => (0x14, 1, u64::from(self.status())),
            0x15 => (0x15, 1, u64::from(self.generation)),
            0x16..=0x17 => (0x16, 2, u64::from(self.queue_select)),
            0x18..=0x19 => (0x18, 2, qv(|q| u64::from(q.size))),
            0x1a..=0x1b => (
                0x1a,
                2,
                q.map_or(u64::from(NO_VECTOR), |q| u64::from(q.vector)),
            ),
            0x1c..=0x1d => (0x1c, 2, qv(|q| u64::from(q.enabled))),
            0x1e..=0x1f => (0x1e, 2, u64::from(self.queue_select)),
            0x20..=0x27 => (0x20, 8, qv(|q| q.desc)),
            0x28..=0x2f => (0x28, 8, qv(|q| q.avail)),
            0x30..=0x37 => (0x30, 8, qv(|q| q.used)),
            _ => return None,
        };
        Some(f)
    }

    fn common_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = match self.common_field(at) {
                Some((start, _, v)) => (v >> (8 * (at - start))) as u8,
                None => 0,
            };
        }
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        // Merge the written bytes into each field they touch, then store it.
        let mut i = 0usize;
        while i < data.len() {
            let at = offset.saturating_add(i as u64);
            let Some((start, width, old)) = self.common_field(at) else {
                i += 1;
                continue;
            };
            let mut v = old;
            let mut j = i;
            while j < data.len() {
                let pos = offset.saturating_add(j as u64);
                if pos < start || pos >= start + width {
                    break;
                }
                let shift = 8 * (pos - start);
                v = (v & !(0xff << shift)) | (u64::from(data[j]) << shift);
                j += 1;
            }
            self.store_field(start, v);
            i = j.max(i + 1);
        }
    }

    fn store_field(&mut self, start: u64, v: u64) {
        let before_features = self.status & STATUS_FEATURES_OK == 0;
        let sel = usize::from(self.queue_select);
        let live = self.status & STATUS_DRIVER_OK != 0;
        match start {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            0x0c if before_features => match self.driver_feature_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff)
                }
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            },
            0x10 => self.config_vector = self.valid_vector(v as u16),
            0x14 => self.set_status(v as u8),
            0x16 => self.queue_select = v as u16,
            _ => {
                let vector = self.valid_vector(v as u16);
                let Some(q) = self.queues.get_mut(sel) else {
                    return;
                };
                // Queue registers are frozen once the queue is enabled
                // and the device is live (except its vector).
                match start {
                    0x1a => q.vector = vector,
                    _ if live || q.enabled => {}
                    0x18 => q.size = (v as u16).min(q.max),
                    0x1c => q.enabled = v & 1 == 1,
                    0x20 => q.desc = v,
                    0x28 => q.avail = v,
                    0x30 => q.used = v,
                    _ => {}
                }
            }
        }
    }

    /// A doorbell write that reached userspace (no ioeventfd): wake the
    /// worker the same way.
    fn notify(&self, offset: u64) {
        let q = (offset / u64::from(NOTIFY_MULTIPLIER)) as usize;
        if let Some(k) = self.kicks.get(q) {
            let _ = k.write(1);
        }
    }

    fn bar0_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < COMMON_OFFSET + WINDOW => self.common_read(o - COMMON_OFFSET, data),
            o if (ISR_OFFSET..ISR_OFFSET + WINDOW).contains(&o) => {
                data.fill(0);
                if o == ISR_OFFSET {
                    if let Some(b) = data.first_mut() {
                        *b = self.isr.swap(0, Ordering::SeqCst);
                    }
                }
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + WINDOW).contains(&o) => {
                self.device.config_read(o - DEVICE_OFFSET, data)
            }
            o if self.msix.bar_read(0, o, data) => {
                if (MSIX_PBA_OFFSET..MSIX_PBA_OFFSET + WINDOW).contains(&o) {
                    let v = self.vectors.clone();
                    self.msix
                        .pba_read_with(o - MSIX_PBA_OFFSET, data, |n| v.is_pending(n));
                }
            }
            _ => data.fill(0),
        }
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> Vec<PciChange> {
        match offset {
            o if o < COMMON_OFFSET + WINDOW => self.common_write(o - COMMON_OFFSET, data),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + WINDOW).contains(&o) => {
                self.device.config_write(o - DEVICE_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + WINDOW).contains(&o) => {
                self.notify(o - NOTIFY_OFFSET)
            }
            o => {
                if let Some(up) = self.msix.bar_write(0, o, data) {
                    return up.changes;
                }
            }
        }
        Vec::new()
    }

    /// The PCI-configuration access window (`VIRTIO_PCI_CAP_PCI_CFG`):
    /// (offset in BAR0, length) as the driver set them, if usable.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let c = self.pci_cfg_cap;
        let bar = self.config.read_u8(c + 4);
        let offset = u64::from(self.config.read_u32(c + 8));
        let len = self.config.read_u32(c + 12) as usize;
        (bar == 0 && matches!(len, 1 | 2 | 4) && offset.checked_add(len as u64)? <= BAR_SIZE)
            .then_some((offset, len))
    }
}

impl PciDevice for VirtioPci {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
        let win = self.pci_cfg_cap + 16;
        if offset == win {
            if let Some((o, len)) = self.pci_cfg_window() {
                let n = len.min(data.len());
                let mut buf = [0u8; 4];
                self.bar0_read(o, &mut buf[..n]);
                data[..n].copy_from_slice(&buf[..n]);
            }
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> Vec<PciChange> {
        let mut changes = self.config.write(offset, data);
        let up = self.msix.config_written(&self.config, offset, data.len());
        changes.extend(up.changes);
        let win = self.pci_cfg_cap + 16;
        if offset == win {
            if let Some((o, len)) = self.pci_cfg_window() {
                let n = len.min(data.len());
                changes.extend(self.bar0_write(o, &data[..n]));
            }
        }
        changes
    }

    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if index == 0 {
            self.bar0_read(offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) -> Vec<PciChange> {
        if index == 0 {
            self.bar0_write(offset, data)
        } else {
            Vec::new()
        }
    }

    fn bar_layout(&mut self, index: u8) -> Option<BarLayout> {
        if index != 0 {
            return None;
        }
        let base = self.config.bar_mapping(0)?;
        let doorbells = self
            .kicks
            .iter()
            .enumerate()
            .map(|(i, fd)| Doorbell {
                offset: NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_MULTIPLIER),
                fd: fd.clone(),
            })
            .collect();
        let name = |what: &str| format!("{} {what}", self.name);
        Some(BarLayout {
            base,
            kind: BarKind::Mem32 {
                prefetchable: false,
            },
            size: BAR_SIZE,
            pieces: vec![
                BarPiece::Trap {
                    offset: 0,
                    len: NOTIFY_OFFSET,
                    name: name("config"),
                },
                BarPiece::Doorbells {
                    offset: NOTIFY_OFFSET,
                    len: WINDOW,
                    doorbells,
                    name: name("notify"),
                },
                BarPiece::Trap {
                    offset: MSIX_TABLE_OFFSET,
                    len: BAR_SIZE - MSIX_TABLE_OFFSET,
                    name: name("msix"),
                },
            ],
        })
    }

    fn programmed_bars(&mut self) -> Vec<ProgrammedBar> {
        vec![ProgrammedBar {
            index: 0,
            kind: BarKind::Mem32 {
                prefetchable: false,
            },
            address: self.config.bar_address(0).unwrap_or(0),
            size: BAR_SIZE,
        }]
    }

    fn msi_vectors(&self) -> Option<Arc<MsiVectors>> {
        Some(self.vectors.clone())
    }
}

#[cfg(test)]
#[path = "pci_tests.rs"]
mod tests;
