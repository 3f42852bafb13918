//! virtio-rng (virtio spec §5.4): entropy from the host's `/dev/urandom`,
//! rate-limited so one guest cannot keep a host core busy.
//!
//! The limit is a token bucket of [`RngOptions::bytes_per_sec`] with a
//! one-second burst; a request that finds the bucket empty waits (on the
//! worker thread, never a vCPU) until some bytes are available, at most
//! [`MAX_WAIT`], and is then filled with what there is. A request is never
//! completed empty unless its chain is malformed.

use std::fs::File;
use std::io::Read;
use std::time::{Duration, Instant};

use log::warn;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::chain::complete_each;
use super::{QueueError, QueueHandler, TYPE_RNG, VirtioDevice};

/// Longest wait for tokens per request.
pub const MAX_WAIT: Duration = Duration::from_millis(200);
/// Most bytes given per request.
const MAX_REQUEST: usize = 64 * 1024;

/// How the entropy device behaves.
#[derive(Debug, Clone, Copy)]
pub struct RngOptions {
    /// Bytes per second (and the burst).
    pub bytes_per_sec: u64,
}

impl Default for RngOptions {
    fn default() -> Self {
        Self {
            bytes_per_sec: 1 << 20,
        }
    }
}

/// A virtio-rng device.
pub struct Rng {
    source: File,
    options: RngOptions,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rng")
            .field("options", &self.options)
            .finish()
    }
}

impl Rng {
    /// An entropy device reading `source` (`/dev/urandom`).
    pub fn new(source: File, options: RngOptions) -> Self {
        Self { source, options }
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u16 {
        TYPE_RNG
    }

    fn pci_class(&self) -> (u8, u8, u8) {
        (0xff, 0x00, 0x00)
    }

    fn name(&self) -> String {
        "virtio-rng".into()
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![256]
    }

    fn features(&self) -> u64 {
        0
    }

    fn config_read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, _features: u64) -> Box<dyn QueueHandler> {
        let source = match self.source.try_clone() {
            Ok(f) => Some(f),
            Err(e) => {
                warn!("virtio-rng: cannot share the entropy source: {e}");
                None
            }
        };
        Box::new(RngHandler {
            source,
            rate: self.options.bytes_per_sec.max(1),
            tokens: self.options.bytes_per_sec as f64,
            last: Instant::now(),
        })
    }
}

/// Serves the request queue of one [`Rng`].
pub struct RngHandler {
    source: Option<File>,
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl RngHandler {
    fn refill(&mut self) {
        let now = Instant::now();
        let add = now.duration_since(self.last).as_secs_f64() * self.rate as f64;
        self.tokens = (self.tokens + add).min(self.rate as f64);
        self.last = now;
    }

    /// Bytes the next request may have (waiting for some if needed).
    fn grant(&mut self, want: usize) -> usize {
        self.refill();
        if self.tokens < 1.0 {
            let need = (want.min(64) as f64 - self.tokens) / self.rate as f64;
            std::thread::sleep(Duration::from_secs_f64(need).min(MAX_WAIT));
            self.refill();
        }
        let n = (self.tokens.max(0.0) as usize).min(want).max(1);
        self.tokens -= n as f64;
        n
    }
}

impl QueueHandler for RngHandler {
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<usize, QueueError> {
        complete_each(index, queue, mem, |parsed| match parsed {
            Ok(chain) => {
                let want = (chain.writable.len() as usize).min(MAX_REQUEST);
                if want == 0 {
                    return 0;
                }
                let n = self.grant(want);
                let mut buf = vec![0u8; n];
                let filled = match &mut self.source {
                    Some(f) => f.read(&mut buf).unwrap_or(0),
                    None => 0,
                };
                chain.writable.write_from(mem, &buf[..filled]).unwrap_or(0) as u32
            }
            Err(e) => {
                warn!("virtio-rng: malformed request: {e}");
                0
            }
        })
    }
}
