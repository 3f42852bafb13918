//! virtio-net (virtio spec §5.1) over a host tap device.
//!
//! Two queues (receive 0, transmit 1), a MAC address in the configuration
//! space, link status up. No offloads are offered (no checksum, no TSO):
//! the guest sends complete frames with their checksums, and tessera
//! offers only what it handles. Every frame carries the 12-byte
//! `virtio_net_hdr_v1`; it is dropped on the way out and written as zeros
//! (one buffer) on the way in. The tap is opened by the VMM
//! (`IFF_TAP | IFF_NO_PI`, non-blocking); the worker waits on it
//! (edge-triggered) and drains it into the guest's receive buffers; a
//! frame that finds no buffer waits for the guest's next receive kick.
//! Frames longer than the guest's buffer, and transmit chains with no
//! frame, are dropped (and counted in the log at debug level).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use log::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::chain::{Chain, complete_each};
use super::{QueueError, QueueHandler, TYPE_NET, VirtioDevice, read_le_fields};

/// Feature: the MAC address in the configuration is valid.
pub const F_MAC: u64 = 1 << 5;
/// Feature: the status field is valid.
pub const F_STATUS: u64 = 1 << 16;
/// Length of `virtio_net_hdr_v1`.
pub const HDR_LEN: usize = 12;
/// The largest frame accepted from the guest or the tap (a 64 KiB frame
/// plus the Ethernet header).
pub const MAX_FRAME: usize = 65536 + 14;
/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;

/// A virtio-net device.
pub struct Net {
    tap: Arc<File>,
    name: String,
    config: [u8; 8],
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
        F_MAC | F_STATUS
    }

    fn config_read(&self, offset: u64, data: &mut [u8]) {
        read_le_fields(&self.config, offset, data);
    }

    fn activate(&mut self, _features: u64) -> Box<dyn QueueHandler> {
        Box::new(NetHandler {
            tap: self.tap.clone(),
            name: self.name.clone(),
            stash: None,
            buf: vec![0u8; MAX_FRAME + HDR_LEN],
            dropped: 0,
        })
    }
}

/// Serves the two queues of one [`Net`].
pub struct NetHandler {
    tap: Arc<File>,
    name: String,
    /// A frame read from the tap that found no receive buffer yet.
    stash: Option<Vec<u8>>,
    buf: Vec<u8>,
    dropped: u64,
}

impl NetHandler {
    /// The next frame from the tap (or the stash); `None` when it has none.
    fn next_frame(&mut self) -> Option<Vec<u8>> {
        if let Some(f) = self.stash.take() {
            return Some(f);
        }
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            match (&*self.tap).read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.truncate(n);
                    return Some(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
        while let Some(frame) = self.next_frame() {
            let chain = match queue.pop_descriptor_chain(mem) {
                Some(c) => c,
                None => {
                    // Ask for a kick when buffers come, unless some came
                    // meanwhile.
                    if queue.enable_notification(mem).map_err(ring)? {
                        if let Some(c) = queue.pop_descriptor_chain(mem) {
                            c
                        } else {
                            self.stash = Some(frame);
                            break;
                        }
                    } else {
                        self.stash = Some(frame);
                        break;
                    }
                }
            };
            let head = chain.head_index();
            let len = match Chain::parse(chain, mem) {
                Ok(c) if c.writable.len() as usize >= HDR_LEN + frame.len() => {
                    let mut hdr = [0u8; HDR_LEN];
                    // num_buffers = 1
                    hdr[10] = 1;
                    let out = &mut self.buf[..HDR_LEN + frame.len()];
                    out[..HDR_LEN].copy_from_slice(&hdr);
                    out[HDR_LEN..].copy_from_slice(&frame);
                    c.writable
                        .write_from(mem, out)
                        .map(|n| n as u32)
                        .unwrap_or(0)
                }
                Ok(c) => {
                    self.dropped += 1;
                    debug!(
                        "{}: a {}-byte frame does not fit a {}-byte receive buffer: dropped ({} so far)",
                        self.name,
                        frame.len(),
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
                    let buf = &mut self.buf[..n];
                    if c.readable.read_to(mem, buf).is_ok() {
                        match (&*self.tap).write(&buf[HDR_LEN..]) {
                            Ok(_) => {}
                            // the host side is not keeping up: the frame is
                            // lost, as on a real wire
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dropped += 1,
                            Err(e) => debug!("{}: writing the tap failed: {e}", self.name),
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
