//! 16550A UART (COM1 and friends), built on vm-superio's model.
//!
//! Output goes to any `Write` the VMM picks (stdout, a file, a test buffer).
//! Input is pushed by the VMM with [`Serial::enqueue_input`], which accepts
//! only what fits in the 64-byte receive FIFO; when the guest drains the FIFO
//! the [`SerialInputWaker`] tells the VMM to offer more, so host input is
//! never dropped and never busy-polled.

use std::io::{self, Write};
use std::sync::Arc;

use log::warn;
use vm_superio::Trigger;
use vm_superio::serial::SerialEvents;

use crate::{BusDevice, Effects, IrqLine};

/// I/O base of COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// IRQ of COM1.
pub const COM1_IRQ: u8 = 4;
/// Number of registers (I/O ports) of a 16550.
pub const PORT_LEN: u16 = 8;

/// Told when the guest has emptied the receive FIFO.
pub trait SerialInputWaker: Send + Sync {
    /// The receive FIFO is empty: more input can be enqueued.
    fn input_wanted(&self);
}

struct IrqTrigger(Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

struct Events(Option<Arc<dyn SerialInputWaker>>);

impl SerialEvents for Events {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Some(w) = &self.0 {
            w.input_wanted();
        }
    }
}

/// A 16550A UART.
pub struct Serial {
    inner: vm_superio::Serial<IrqTrigger, Events, Box<dyn Write + Send>>,
    write_errors: u64,
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial")
            .field("write_errors", &self.write_errors)
            .finish_non_exhaustive()
    }
}

impl Serial {
    /// A UART raising `irq`, writing transmitted bytes to `out`, and waking
    /// `waker` (if any) when its receive FIFO runs empty.
    pub fn new(
        irq: Arc<dyn IrqLine>,
        out: Box<dyn Write + Send>,
        waker: Option<Arc<dyn SerialInputWaker>>,
    ) -> Self {
        Self {
            inner: vm_superio::Serial::with_events(IrqTrigger(irq), Events(waker), out),
            write_errors: 0,
        }
    }

    /// Queue host input for the guest. Returns how many bytes were taken
    /// (at most the free FIFO space; 0 when the FIFO is full).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.inner.fifo_capacity());
        if n == 0 {
            return 0;
        }
        match self.inner.enqueue_raw_bytes(&bytes[..n]) {
            Ok(taken) => taken,
            Err(e) => {
                warn!("serial: could not queue input: {e}");
                0
            }
        }
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.inner.fifo_capacity()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Ok(off), Some(first)) = (u8::try_from(offset), data.first_mut()) {
            if off < PORT_LEN as u8 {
                *first = self.inner.read(off);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        let (Ok(off), Some(&value)) = (u8::try_from(offset), data.first()) else {
            return Effects::none();
        };
        if off >= PORT_LEN as u8 {
            return Effects::none();
        }
        if let Err(e) = self.inner.write(off, value) {
            // A full disk or a closed pipe must not stop the guest; say it
            // once in a while instead of on every byte.
            self.write_errors += 1;
            if self.write_errors.is_power_of_two() {
                warn!(
                    "serial: output lost ({} bytes so far): {e}",
                    self.write_errors
                );
            }
        }
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl IrqLine for Count {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    impl SerialInputWaker for Count {
        fn input_wanted(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LSR: u64 = 5;

    #[test]
    fn output_and_interrupts() {
        let irq = Arc::new(Count::default());
        let out = Buf::default();
        let mut s = Serial::new(irq.clone(), Box::new(out.clone()), None);
        assert!(s.write(IER, &[0x02]).is_empty()); // THR empty interrupt
        let before = irq.0.load(Ordering::SeqCst);
        let mut iir = [0u8];
        for b in b"hi\n" {
            s.read(IIR, &mut iir); // acknowledges the pending THR-empty interrupt
            assert!(s.write(0, &[*b]).is_empty());
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert!(irq.0.load(Ordering::SeqCst) > before);
        // Out-of-range offsets and wide accesses never panic.
        assert!(s.write(100, &[1, 2, 3, 4]).is_empty());
        let mut wide = [0xaau8; 4];
        s.read(LSR, &mut wide);
        assert_eq!(wide[1..], [0, 0, 0]);
    }

    #[test]
    fn input_respects_fifo_and_wakes_when_drained() {
        let irq = Arc::new(Count::default());
        let waker = Arc::new(Count::default());
        let mut s = Serial::new(irq, Box::new(io::sink()), Some(waker.clone()));
        let big = vec![b'x'; 100];
        let taken = s.enqueue_input(&big);
        assert_eq!(taken, 64, "a 16550 FIFO holds 64 bytes");
        assert_eq!(s.enqueue_input(&big), 0);
        let mut b = [0u8];
        for _ in 0..64 {
            s.read(0, &mut b);
            assert_eq!(b, [b'x']);
        }
        assert!(
            waker.0.load(Ordering::SeqCst) >= 1,
            "drained FIFO must wake the VMM"
        );
        assert_eq!(s.input_capacity(), 64);
    }
}
