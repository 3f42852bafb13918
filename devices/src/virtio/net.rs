//! virtio-net (virtio spec §5.1) over a host tap device.
//!
//! Two queues (receive 0, transmit 1), a MAC address in the configuration
//! space, link status up. Every frame carries the 12-byte
//! `virtio_net_hdr_v1`.
//!
//! On a tap opened with `IFF_VNET_HDR` (header size 12, what the VMM
//! opens) the header crosses the tap in both directions and the host
//! kernel does the offload work, so the device offers checksum offload and
//! TSO both ways: the guest may send frames with a partial checksum and
//! TCP segments up to 64 KiB (`F_CSUM`, `F_HOST_TSO4/6`), which the tap
//! checksums and segments, and it may be handed the same (`F_GUEST_CSUM`,
//! `F_GUEST_TSO4/6`), which the tap is told with `TUNSETOFFLOAD` at
//! `DRIVER_OK`: exactly what the driver accepted, nothing when it accepted
//! nothing (OVMF). A driver that takes TSO posts receive buffers big
//! enough for a 64 KiB segment (Linux's "big packets"); mergeable receive
//! buffers are not offered. Without `IFF_VNET_HDR` no offload is offered,
//! the header is dropped on the way out and written as zeros on the way in.
//!
//! The tap is non-blocking; the worker waits on it (edge-triggered) and
//! drains it into the guest's receive buffers; a frame that finds no buffer
//! waits for the guest's next receive kick. Frames longer than the guest's
//! buffer, frames the tap refuses (a malformed offload header) and transmit
//! chains with no frame are dropped and counted (logged at debug level).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use log::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::chain::{Chain, complete_each};
use super::{QueueError, QueueHandler, TYPE_NET, VirtioDevice, read_le_fields};

/// Feature: the driver may send frames with a partial checksum.
pub const F_CSUM: u64 = 1 << 0;
/// Feature: the device may hand the driver frames with a partial checksum.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// Feature: the MAC address in the configuration is valid.
pub const F_MAC: u64 = 1 << 5;
/// Feature: the driver takes TCP/IPv4 segments.
pub const F_GUEST_TSO4: u64 = 1 << 7;
/// Feature: the driver takes TCP/IPv6 segments.
pub const F_GUEST_TSO6: u64 = 1 << 8;
/// Feature: the driver may send TCP/IPv4 segments.
pub const F_HOST_TSO4: u64 = 1 << 11;
/// Feature: the driver may send TCP/IPv6 segments.
pub const F_HOST_TSO6: u64 = 1 << 12;
/// Feature: the status field is valid.
pub const F_STATUS: u64 = 1 << 16;
/// The offloads offered on a tap with a virtio-net header.
pub const OFFLOADS: u64 =
    F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_HOST_TSO4 | F_HOST_TSO6;
/// Length of `virtio_net_hdr_v1`.
pub const HDR_LEN: usize = 12;
/// The largest frame accepted from the guest or the tap (a 64 KiB frame
/// plus the Ethernet header).
pub const MAX_FRAME: usize = 65536 + 14;
/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// `virtio_net_hdr.flags`: the frame's checksum is known good.
const HDR_F_DATA_VALID: u8 = 2;

/// The tap offload flags (`TUNSETOFFLOAD`) for the features a driver
/// accepted: what the tap may hand it.
pub fn tap_offloads(features: u64) -> u32 {
    let mut f = 0;
    if features & F_GUEST_CSUM != 0 {
        f |= libc::TUN_F_CSUM;
        if features & F_GUEST_TSO4 != 0 {
            f |= libc::TUN_F_TSO4;
        }
        if features & F_GUEST_TSO6 != 0 {
            f |= libc::TUN_F_TSO6;
        }
    }
    f
}

/// Tell the tap which offloads its reader takes (`TUNSETOFFLOAD`).
pub fn set_tap_offloads(tap: &File, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no
    // memory of ours; `tap` is an open descriptor.
    let r = unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A virtio-net device.
pub struct Net {
    tap: Arc<File>,
    name: String,
    config: [u8; 8],
    /// The tap carries a 12-byte virtio-net header.
    vnet_hdr: bool,
    /// ... and takes `TUNSETOFFLOAD`: the offloads are offered.
    offloads: bool,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("name", &self.name).finish()
    }
}

impl Net {
    /// A network card on `tap` (a non-blocking tap descriptor) named
    /// `name` in logs, with `mac`.
    pub fn new(tap: File, name: String, mac: [u8; 6]) -> Self {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        // status: VIRTIO_NET_S_LINK_UP
        config[6] = 1;
        Self {
            tap: Arc::new(tap),
            name,
            config,
            vnet_hdr: false,
            offloads: false,
        }
    }

    /// The same on a tap opened with `IFF_VNET_HDR` and a 12-byte header
    /// (`TUNSETVNETHDRSZ`); `offloads`: it takes `TUNSETOFFLOAD`, so the
    /// checksum and TSO offloads are offered.
    pub fn with_vnet_hdr(tap: File, name: String, mac: [u8; 6], offloads: bool) -> Self {
        Self {
            vnet_hdr: true,
            offloads,
            ..Self::new(tap, name, mac)
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        TYPE_NET
    }

    fn pci_class(&self) -> (u8, u8, u8) {
        // network, Ethernet
        (0x02, 0x00, 0x00)
    }

    fn name(&self) -> String {
        format!("virtio-net {}", self.name)
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_MAC | F_STATUS | if self.offloads { OFFLOADS } else { 0 }
    }

    fn config_read(&self, offset: u64, data: &mut [u8]) {
        read_le_fields(&self.config, offset, data);
    }

    fn activate(&mut self, features: u64) -> Box<dyn QueueHandler> {
        if self.offloads {
            let flags = tap_offloads(features);
            if let Err(e) = set_tap_offloads(&self.tap, flags) {
                // The tap keeps what it had (none at open): frames stay
                // complete, which every driver takes.
                warn!("{}: TUNSETOFFLOAD {flags:#x}: {e}", self.name);
            }
        }
        Box::new(NetHandler::new(
            self.tap.clone(),
            self.name.clone(),
            self.vnet_hdr,
            features & F_GUEST_CSUM != 0,
        ))
    }
}

/// Serves the two queues of one [`Net`].
pub struct NetHandler {
    tap: Arc<File>,
    name: String,
    /// The tap carries the header (else it is made and dropped here).
    vnet_hdr: bool,
    /// The driver takes checksum flags in received headers.
    guest_csum: bool,
    /// Receive staging: header and frame, as they go to the guest.
    rx: Vec<u8>,
    /// Length of a frame in `rx` that found no receive buffer yet.
    waiting: Option<usize>,
    /// Transmit staging.
    tx: Vec<u8>,
    dropped: u64,
}

impl NetHandler {
    fn new(tap: Arc<File>, name: String, vnet_hdr: bool, guest_csum: bool) -> Self {
        Self {
            tap,
            name,
            vnet_hdr,
            guest_csum,
            rx: vec![0u8; HDR_LEN + MAX_FRAME],
            waiting: None,
            tx: vec![0u8; HDR_LEN + MAX_FRAME],
            dropped: 0,
        }
    }

    /// The next frame from the tap (or the one waiting) in `rx`, header
    /// included; its length, `None` when there is none.
    fn next_frame(&mut self) -> Option<usize> {
        if let Some(n) = self.waiting.take() {
            return Some(n);
        }
        let at = if self.vnet_hdr { 0 } else { HDR_LEN };
        loop {
            match (&*self.tap).read(&mut self.rx[at..]) {
                Ok(0) => return None,
                Ok(n) if at + n < HDR_LEN => {
                    self.dropped += 1;
                    debug!("{}: a {n}-byte read from the tap: dropped", self.name);
                }
                Ok(n) => {
                    let hdr = &mut self.rx[..HDR_LEN];
                    if !self.vnet_hdr {
                        hdr.fill(0);
                    } else if !self.guest_csum {
                        // A driver without GUEST_CSUM gets flags 0 (spec
                        // 5.1.6.4.1); the tap sends it complete frames.
                        hdr[0] &= !HDR_F_DATA_VALID;
                    }
                    // num_buffers = 1 (no mergeable buffers)
                    hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
                    return Some(at + n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    warn!("{}: reading the tap failed: {e}", self.name);
                    return None;
                }
            }
        }
    }

    /// Move frames from the tap into receive buffers; returns how many
    /// buffers were used.
    fn fill_rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<usize, QueueError> {
        let ring = |source| QueueError::Ring { index: RX, source };
        let mut used = 0;
        while let Some(n) = self.next_frame() {
            let chain = match queue.pop_descriptor_chain(mem) {
                Some(c) => c,
                None => {
                    // Ask for a kick when buffers come, unless some came
                    // meanwhile.
                    let more = queue.enable_notification(mem).map_err(ring)?;
                    match more.then(|| queue.pop_descriptor_chain(mem)).flatten() {
                        Some(c) => c,
                        None => {
                            self.waiting = Some(n);
                            break;
                        }
                    }
                }
            };
            let head = chain.head_index();
            let len = match Chain::parse(chain, mem) {
                Ok(c) if c.writable.len() as usize >= n => c
                    .writable
                    .write_from(mem, &self.rx[..n])
                    .map(|w| w as u32)
                    .unwrap_or(0),
                Ok(c) => {
                    self.dropped += 1;
                    debug!(
                        "{}: a {}-byte frame does not fit a {}-byte receive buffer: dropped ({} so far)",
                        self.name,
                        n - HDR_LEN,
                        c.writable.len(),
                        self.dropped
                    );
                    0
                }
                Err(e) => {
                    warn!("{}: malformed receive buffer: {e}", self.name);
                    0
                }
            };
            queue.add_used(mem, head, len).map_err(ring)?;
            used += 1;
        }
        Ok(used)
    }

    /// Send every frame the guest queued; returns how many chains were used.
    fn drain_tx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<usize, QueueError> {
        complete_each(TX, queue, mem, |parsed| {
            match parsed {
                Ok(c) if (HDR_LEN..=HDR_LEN + MAX_FRAME).contains(&(c.readable.len() as usize)) => {
                    let n = c.readable.len() as usize;
                    if c.readable.read_to(mem, &mut self.tx[..n]).is_ok() {
                        // the tap takes the header (and acts on it) or not
                        let out = if self.vnet_hdr {
                            &self.tx[..n]
                        } else {
                            &self.tx[HDR_LEN..n]
                        };
                        match (&*self.tap).write(out) {
                            Ok(_) => {}
                            // the host side is not keeping up: the frame is
                            // lost, as on a real wire
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dropped += 1,
                            Err(e) => {
                                self.dropped += 1;
                                debug!("{}: the tap refused a {n}-byte frame: {e}", self.name);
                            }
                        }
                    }
                }
                Ok(c) => {
                    self.dropped += 1;
                    debug!(
                        "{}: a {}-byte transmit chain: dropped",
                        self.name,
                        c.readable.len()
                    );
                }
                Err(e) => warn!("{}: malformed transmit chain: {e}", self.name),
            }
            0
        })
    }
}

impl QueueHandler for NetHandler {
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<usize, QueueError> {
        match index {
            RX => self.fill_rx(queue, mem),
            TX => self.drain_tx(queue, mem),
            _ => Ok(0),
        }
    }

    fn drains(&self, index: usize) -> bool {
        // receive buffers wait for frames from the tap
        index != RX
    }

    fn event_fds(&self) -> Vec<RawFd> {
        vec![self.tap.as_raw_fd()]
    }

    fn on_event(
        &mut self,
        _which: usize,
        queues: &mut [Option<Queue>],
        mem: &GuestMemoryMmap,
    ) -> Result<Vec<usize>, QueueError> {
        let Some(Some(rx)) = queues.get_mut(RX) else {
            return Ok(Vec::new());
        };
        let n = self.fill_rx(rx, mem)?;
        Ok(if n > 0 { vec![RX] } else { Vec::new() })
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
