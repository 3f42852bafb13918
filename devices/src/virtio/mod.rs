//! virtio 1.x devices on the PCI transport.
//!
//! A device model implements [`VirtioDevice`]: its type, queues, feature
//! bits and configuration space, and [`VirtioDevice::activate`], which
//! hands a [`QueueHandler`] to the device's worker thread once the driver
//! has set `DRIVER_OK`. The transport ([`pci::VirtioPci`]) is the PCI
//! function the guest sees: the modern (virtio 1.x) capabilities in one
//! memory BAR, MSI-X with a vector per queue plus one for configuration
//! changes, and a doorbell per queue that the VMM turns into a KVM
//! ioeventfd ([`crate::pci::BarPiece::Doorbell`]), so a guest's kick never
//! exits to userspace. Queues are served by the device's
//! [`worker::Worker`] thread, never by a vCPU; completions go to the
//! guest through the vector's eventfd (a KVM irqfd, see
//! [`crate::interrupt`]).
//!
//! What a guest puts in a queue is untrusted: descriptor chains are walked
//! with bounds ([`chain`]), every guest address is checked against guest
//! RAM before it is touched, and a chain the device cannot make sense of
//! is completed with an error status or, when the queue itself is broken,
//! the device sets `DEVICE_NEEDS_RESET` and stops serving it. Nothing a
//! guest writes may panic the VMM.

pub mod block;
pub mod chain;
pub mod console;
pub mod net;
pub mod pci;
pub mod qcow2;
pub mod rng;
pub mod worker;

use vm_memory::GuestMemoryMmap;

/// Feature bit: the device complies with virtio 1.x (always offered).
pub const F_VERSION_1: u64 = 1 << 32;
/// Feature bit: indirect descriptor tables.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: `used_event` / `avail_event` notification suppression.
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// Feature bit: the device is behind an IOMMU (or, for us, it accepts that
/// drivers say so; guest addresses are guest physical either way).
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Device status: the guest found the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the guest has a driver for it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready; the device may use its queues.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device hit an error it cannot recover from.
pub const STATUS_DEVICE_NEEDS_RESET: u8 = 0x40;
/// Device status: the driver gave up.
pub const STATUS_FAILED: u8 = 0x80;

/// MSI-X "no vector".
pub const NO_VECTOR: u16 = 0xffff;

/// Device type: block.
pub const TYPE_BLOCK: u16 = 2;
/// Device type: entropy source.
pub const TYPE_RNG: u16 = 4;
/// Device type: network card.
pub const TYPE_NET: u16 = 1;

/// What a device's worker does with its queues once the driver is ready.
/// One handler lives on one worker thread; it is dropped when the guest
/// resets the device.
pub trait QueueHandler: Send {
    /// Take what the guest made available in queue `index`, complete it
    /// (`add_used`), and return how many chains were completed. An `Err`
    /// means the queue is broken beyond a single request (the device then
    /// needs a reset).
    fn process(
        &mut self,
        index: usize,
        queue: &mut virtio_queue::Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<usize, QueueError>;

    /// True when [`process`](Self::process) takes everything the guest
    /// made available in queue `index` (then buffers still available
    /// afterwards mean more work). A receive queue, whose buffers wait for
    /// data from the host, says false.
    fn drains(&self, index: usize) -> bool {
        let _ = index;
        true
    }

    /// Host descriptors the worker should also wait on (edge-triggered,
    /// readable), e.g. a tap device; their events go to
    /// [`on_event`](Self::on_event).
    fn event_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }

    /// Event fd `which` (an index into [`event_fds`](Self::event_fds)) is
    /// readable: do the work and return the queues that got used buffers.
    fn on_event(
        &mut self,
        which: usize,
        queues: &mut [Option<virtio_queue::Queue>],
        mem: &GuestMemoryMmap,
    ) -> Result<Vec<usize>, QueueError> {
        let _ = (which, queues, mem);
        Ok(Vec::new())
    }
}

/// A queue the device cannot keep serving.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The rings point outside guest memory, or their indices are corrupt.
    #[error("queue {index}: {source}")]
    Ring {
        /// The queue.
        index: usize,
        /// What virtio-queue said.
        source: virtio_queue::Error,
    },
}

/// A virtio device model: what the transport needs to present it.
pub trait VirtioDevice: Send {
    /// The virtio device type ([`TYPE_BLOCK`], ...).
    fn device_type(&self) -> u16;

    /// PCI class code (base, sub, prog-if).
    fn pci_class(&self) -> (u8, u8, u8);

    /// A name for logs and statistics (`virtio-blk disk0`).
    fn name(&self) -> String;

    /// Largest size of each queue (their count is the queue count).
    fn queue_max_sizes(&self) -> Vec<u16>;

    /// Device feature bits (the transport adds [`F_VERSION_1`] and the
    /// ring features it supports).
    fn features(&self) -> u64;

    /// Read the device-specific configuration at `offset`; bytes beyond it
    /// read as zero.
    fn config_read(&self, offset: u64, data: &mut [u8]);

    /// Write the device-specific configuration (most of it is read-only).
    fn config_write(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }

    /// The driver set `DRIVER_OK` with `features` negotiated: the handler
    /// that serves the queues from now until the next reset.
    fn activate(&mut self, features: u64) -> Box<dyn QueueHandler>;
}

/// Little-endian bytes of `value` at `offset` of a structure of `len`
/// bytes, copied into `data` (zeros outside): device configuration reads.
pub fn read_le_fields(image: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| image.get(o))
            .copied()
            .unwrap_or(0);
    }
}
