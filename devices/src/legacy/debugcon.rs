//! The QEMU/Bochs debug console (`isa-debugcon`) at I/O port 0x402, where
//! OVMF writes its debug log.
//!
//! * Reads return 0xE9 in every byte. OVMF's `PlatformDebugLibIoPort`
//!   (`OvmfPkg/Library/PlatformDebugLibIoPort/DebugIoPortQemu.c`) reads one
//!   byte from `PcdDebugIoPort` (0x402) and logs only if it reads
//!   `BOCHS_DEBUG_PORT_MAGIC` (0xE9).
//! * Every byte written is appended to the output. OVMF emits its messages
//!   with `IoWriteFifo8` (`rep outsb`); if the VMM hands over a string
//!   I/O exit as one buffer, every byte of it is logged (QEMU splits wide
//!   accesses into bytes, so the result is the same).
//!
//! Output is buffered here and written out at each newline, when 4 KiB
//! have accumulated, on [`Debugcon::flush`] and on drop, so a plain `File`
//! gets one `write` per line rather than one per byte. An output error is
//! counted ([`Debugcon::errors`]), logged once, and the buffered bytes are
//! dropped; the guest never notices and the device never panics.

use std::io::Write;

use log::warn;

use crate::{BusDevice, Effects};

/// I/O port of the device (OVMF's `PcdDebugIoPort`).
pub const PORT: u16 = 0x402;
/// What a read returns: the Bochs/QEMU debug-port signature.
pub const MAGIC: u8 = 0xe9;

/// Bytes buffered before the output is written without a newline.
const BUFFER_LIMIT: usize = 4096;

/// The debug console.
pub struct Debugcon {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    bytes: u64,
    errors: u64,
}

impl std::fmt::Debug for Debugcon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debugcon")
            .field("bytes", &self.bytes)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Debugcon {
    /// A debug console that appends guest output to `out` (for
    /// `--firmware-log PATH`, the opened file).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(256),
            bytes: 0,
            errors: 0,
        }
    }

    /// Bytes the guest has written.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Output errors so far (each loses the bytes buffered at the time).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Write out everything buffered and flush the output.
    pub fn flush(&mut self) {
        let result = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        self.buf.clear();
        if let Err(e) = result {
            if self.errors == 0 {
                warn!("debugcon: firmware log output failed, dropping output: {e}");
            }
            self.errors += 1;
        }
    }
}

impl Drop for Debugcon {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.flush();
        }
    }
}

impl BusDevice for Debugcon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(MAGIC);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        if offset != 0 {
            return Effects::none();
        }
        self.bytes += data.len() as u64;
        self.buf.extend_from_slice(data);
        if data.contains(&b'\n') || self.buf.len() >= BUFFER_LIMIT {
            self.flush();
        }
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A shared sink that can be told to fail.
    #[derive(Clone, Default)]
    struct Sink {
        data: Arc<Mutex<Vec<u8>>>,
        fail: Arc<Mutex<bool>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if *self.fail.lock().unwrap() {
                return Err(io::Error::other("disk full"));
            }
            *self.writes.lock().unwrap() += 1;
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.data.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn reads_return_the_magic() {
        let mut dev = Debugcon::new(Box::new(io::sink()));
        let mut b = [0u8];
        dev.read(0, &mut b);
        assert_eq!(b, [0xe9]);
        let mut w = [0u8; 4];
        dev.read(0, &mut w);
        assert_eq!(w, [0xe9; 4]);
    }

    #[test]
    fn writes_reach_the_output_by_line() {
        let sink = Sink::default();
        let mut dev = Debugcon::new(Box::new(sink.clone()));
        for &b in b"SecCoreStartupWithStack(" {
            assert!(dev.write(0, &[b]).is_empty());
        }
        assert_eq!(sink.text(), "", "buffered until newline");
        // A string I/O exit handed over as one buffer.
        let _ = dev.write(0, b"0xFFFCC000)\nPlatform");
        assert_eq!(sink.text(), "SecCoreStartupWithStack(0xFFFCC000)\nPlatform");
        assert_eq!(*sink.writes.lock().unwrap(), 1);
        let _ = dev.write(0, b" PEIM");
        assert_eq!(dev.bytes_written(), 49);
        drop(dev);
        assert!(sink.text().ends_with("Platform PEIM"));
    }

    #[test]
    fn long_lines_are_written_in_chunks() {
        let sink = Sink::default();
        let mut dev = Debugcon::new(Box::new(sink.clone()));
        for _ in 0..BUFFER_LIMIT {
            let _ = dev.write(0, b"x");
        }
        assert_eq!(sink.data.lock().unwrap().len(), BUFFER_LIMIT);
    }

    #[test]
    fn other_offsets_are_ignored() {
        let sink = Sink::default();
        let mut dev = Debugcon::new(Box::new(sink.clone()));
        let _ = dev.write(1, b"no\n");
        let _ = dev.write(0, b"");
        dev.flush();
        assert_eq!(sink.text(), "");
        assert_eq!(dev.bytes_written(), 0);
    }

    #[test]
    fn output_errors_are_counted_not_fatal() {
        let sink = Sink::default();
        let mut dev = Debugcon::new(Box::new(sink.clone()));
        *sink.fail.lock().unwrap() = true;
        assert!(dev.write(0, b"lost\n").is_empty());
        assert!(dev.write(0, b"lost too\n").is_empty());
        assert_eq!(dev.errors(), 2);
        *sink.fail.lock().unwrap() = false;
        let _ = dev.write(0, b"kept\n");
        assert_eq!(sink.text(), "kept\n");
        assert_eq!(dev.errors(), 2);
        let mut b = [0u8];
        dev.read(0, &mut b);
        assert_eq!(b, [MAGIC]);
    }
}
