//! virtio-console (virtio spec §5.3): one port, the guest's `/dev/hvc0`,
//! whose output goes to a file (a second console next to the serial one:
//! a guest agent's log, or a CI channel).
//!
//! No features (no multiport, no size, no emergency write). The transmit
//! queue's bytes are appended to the file; the receive queue's buffers
//! are left to the guest (nothing is sent to it). A write error is logged
//! once and the bytes are dropped: the guest never blocks on a full disk.

use std::fs::File;
use std::io::Write;

use log::warn;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::chain::complete_each;
use super::{QueueError, QueueHandler, VirtioDevice};

/// Device type: console.
pub const TYPE_CONSOLE: u16 = 3;
const RX: usize = 0;
const TX: usize = 1;
/// Most bytes taken from one transmit chain.
const MAX_CHUNK: u64 = 1 << 20;

/// A virtio-console whose output goes to a file.
pub struct Console {
    out: File,
    name: String,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("name", &self.name).finish()
    }
}

impl Console {
    /// A console writing to `out`, named `name` in logs.
    pub fn new(out: File, name: String) -> Self {
        Self { out, name }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u16 {
        TYPE_CONSOLE
    }

    fn pci_class(&self) -> (u8, u8, u8) {
        // simple communication controller, other
        (0x07, 0x80, 0x00)
    }

    fn name(&self) -> String {
        format!("virtio-console {}", self.name)
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![64, 64]
    }

    fn features(&self) -> u64 {
        0
    }

    fn config_read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, _features: u64) -> Box<dyn QueueHandler> {
        Box::new(ConsoleHandler {
            out: self.out.try_clone().ok(),
            name: self.name.clone(),
            failed: false,
        })
    }
}

/// Serves one [`Console`].
pub struct ConsoleHandler {
    out: Option<File>,
    name: String,
    failed: bool,
}

impl QueueHandler for ConsoleHandler {
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<usize, QueueError> {
        if index != TX {
            // receive buffers wait: nothing is sent to the guest
            return Ok(0);
        }
        complete_each(index, queue, mem, |parsed| {
            match parsed {
                Ok(chain) => {
                    let n = chain.readable.len().min(MAX_CHUNK) as usize;
                    let mut buf = vec![0u8; n];
                    if chain.readable.read_to(mem, &mut buf).is_ok() {
                        if let Some(out) = &mut self.out {
                            if let Err(e) = out.write_all(&buf) {
                                if !self.failed {
                                    warn!(
                                        "{}: cannot write its output: {e}; dropping it",
                                        self.name
                                    );
                                    self.failed = true;
                                }
                            }
                        }
                    }
                }
                Err(e) => warn!("{}: malformed transmit chain: {e}", self.name),
            }
            0
        })
    }

    fn drains(&self, index: usize) -> bool {
        index != RX
    }
}
