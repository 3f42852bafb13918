//! The i8042 keyboard controller with a keyboard that has no keys.
//!
//! Firmware and kernels probe the controller and the keyboard behind it;
//! both must get prompt, correct answers or they poll for seconds (Linux)
//! or forever (OVMF's PS/2 driver drains the output buffer while the
//! status says it is full). So the controller answers its command set
//! (read/write the command byte, self-tests, port enables, output port)
//! and the keyboard acknowledges every command (reset answers 0xAA, the
//! identify command a standard MF2 keyboard's ID), but never sends a key.
//! There is no mouse: the auxiliary port reports a failed interface test.
//!
//! Guests reboot by pulsing the reset line: controller command 0xFE, or
//! clearing bit 0 of the output port (command 0xD1).
//!
//! With an interrupt line ([`I8042::with_irq`], ISA IRQ 1) each byte that
//! becomes readable raises it while the command byte enables keyboard
//! interrupts, as on a PC: Linux's keyboard driver waits for the
//! acknowledgement of its commands by interrupt, and without one it sits
//! out each command's timeout (some 0.45 s of boot).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{BusDevice, Effects, IrqLine, VmControl, VmRequest};

/// Base I/O port; the device spans 0x60..=0x64 (data at +0, command/status at +4).
pub const PORT_BASE: u16 = 0x60;
/// Length of the I/O range.
pub const PORT_LEN: u16 = 5;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

// Status register bits.
const STATUS_OBF: u8 = 1 << 0;
const STATUS_SYS: u8 = 1 << 2;
const STATUS_CMD: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

// Command byte (CTR) bits.
const CTR_KBD_INT: u8 = 1 << 0;
const CTR_SYS: u8 = 1 << 2;
const CTR_KBD_DISABLE: u8 = 1 << 4;
const CTR_AUX_DISABLE: u8 = 1 << 5;
const CTR_XLATE: u8 = 1 << 6;

/// Controller commands that take a data byte next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    WriteCtr,
    WriteOutputPort,
    WriteToAux,
    KeyboardArg,
}

/// The controller.
pub struct I8042 {
    control: Arc<dyn VmControl>,
    ctr: u8,
    output: VecDeque<u8>,
    last_was_command: bool,
    pending: Pending,
    output_port: u8,
    irq: Option<Arc<dyn IrqLine>>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042")
            .field("ctr", &self.ctr)
            .field("queued", &self.output.len())
            .finish_non_exhaustive()
    }
}

impl I8042 {
    /// A controller whose reset line goes to `control`.
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self {
            control,
            ctr: CTR_KBD_INT | CTR_SYS | CTR_XLATE | CTR_AUX_DISABLE,
            output: VecDeque::new(),
            last_was_command: false,
            pending: Pending::None,
            output_port: 0x03,
            irq: None,
        }
    }

    /// The same, raising `irq` (IRQ 1) for each byte that becomes
    /// readable while the command byte enables keyboard interrupts.
    pub fn with_irq(mut self, irq: Arc<dyn IrqLine>) -> Self {
        self.irq = Some(irq);
        self
    }

    /// A byte is readable now: interrupt, when enabled.
    fn byte_ready(&self) {
        if self.ctr & CTR_KBD_INT == 0 || self.output.is_empty() {
            return;
        }
        if let Some(irq) = &self.irq {
            // A lost edge costs the guest a timeout, never correctness.
            let _ = irq.trigger();
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED;
        if !self.output.is_empty() {
            s |= STATUS_OBF;
        }
        if self.ctr & CTR_SYS != 0 {
            s |= STATUS_SYS;
        }
        if self.last_was_command {
            s |= STATUS_CMD;
        }
        s
    }

    fn reply(&mut self, bytes: &[u8]) {
        let was_empty = self.output.is_empty();
        // A real controller holds one byte; a short queue keeps multi-byte
        // answers (reset, identify) in order without losing any.
        for &b in bytes {
            if self.output.len() < 16 {
                self.output.push_back(b);
            }
        }
        if was_empty {
            self.byte_ready();
        }
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_command = true;
        match cmd {
            0x20 => {
                let ctr = self.ctr;
                self.reply(&[ctr]);
            }
            0x60 => self.pending = Pending::WriteCtr,
            0xa7 => self.ctr |= CTR_AUX_DISABLE,
            0xa8 => self.ctr &= !CTR_AUX_DISABLE,
            // Auxiliary interface test: 0xFF, no mouse port.
            0xa9 => self.reply(&[0xff]),
            // Controller self-test passed.
            0xaa => self.reply(&[0x55]),
            // Keyboard interface test passed.
            0xab => self.reply(&[0x00]),
            0xad => self.ctr |= CTR_KBD_DISABLE,
            0xae => self.ctr &= !CTR_KBD_DISABLE,
            // Read input port / output port.
            0xc0 => self.reply(&[0x80]),
            0xd0 => {
                let p = self.output_port;
                self.reply(&[p]);
            }
            0xd1 => self.pending = Pending::WriteOutputPort,
            0xd4 => self.pending = Pending::WriteToAux,
            // Pulse output lines: bit 0 low is the CPU reset line.
            0xf0..=0xff if cmd & 1 == 0 => self.control.request(VmRequest::Reset),
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        self.last_was_command = false;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::WriteCtr => {
                let enabled = value & CTR_KBD_INT != 0 && self.ctr & CTR_KBD_INT == 0;
                self.ctr = value;
                if enabled {
                    self.byte_ready();
                }
            }
            Pending::WriteOutputPort => {
                self.output_port = value;
                if value & 1 == 0 {
                    self.control.request(VmRequest::Reset);
                }
            }
            // Nothing is on the auxiliary port: the byte is lost.
            Pending::WriteToAux => {}
            // Argument of a keyboard command (LEDs, typematic rate, scan set).
            Pending::KeyboardArg => self.reply(&[0xfa]),
            Pending::None => self.keyboard(value),
        }
    }

    /// A byte for the keyboard.
    fn keyboard(&mut self, cmd: u8) {
        match cmd {
            // Reset: ACK, then self-test passed.
            0xff => self.reply(&[0xfa, 0xaa]),
            // Identify: MF2 keyboard (translated).
            0xf2 => self.reply(&[0xfa, 0xab, 0x83]),
            // Echo.
            0xee => self.reply(&[0xee]),
            // Set LEDs, typematic rate, scan code set: ACK, then the argument.
            0xed | 0xf3 | 0xf0 => {
                self.reply(&[0xfa]);
                self.pending = Pending::KeyboardArg;
            }
            _ => self.reply(&[0xfa]),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        match offset {
            DATA => {
                *first = self.output.pop_front().unwrap_or(0);
                // the next byte of a multi-byte answer
                self.byte_ready();
            }
            COMMAND => *first = self.status(),
            // 0x61..0x63 are not ours (0x61 is the PIT/speaker port in
            // KVM's in-kernel PIT); behave like an open bus.
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        match (offset, data.first()) {
            (DATA, Some(&v)) => self.data(v),
            (COMMAND, Some(&v)) => self.command(v),
            _ => {}
        }
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RecordingControl;

    #[derive(Default)]
    struct Edges(std::sync::atomic::AtomicUsize);

    impl IrqLine for Edges {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    impl Edges {
        fn take(&self) -> usize {
            self.0.swap(0, std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn each_readable_byte_interrupts_while_enabled() {
        let (d, _) = dev();
        let edges = Arc::new(Edges::default());
        let mut d = d.with_irq(edges.clone());
        // reset: ACK and BAT; one edge per byte as each becomes readable
        data(&mut d, 0xff);
        assert_eq!(edges.take(), 1);
        let mut b = [0u8];
        d.read(DATA, &mut b);
        assert_eq!((b[0], edges.take()), (0xfa, 1), "the BAT byte is next");
        d.read(DATA, &mut b);
        assert_eq!((b[0], edges.take()), (0xaa, 0), "nothing left");
        // keyboard interrupts off in the command byte: no edges
        cmd(&mut d, 0x60);
        data(&mut d, 0x64);
        data(&mut d, 0xf4);
        assert_eq!(edges.take(), 0);
        // on again with the ACK waiting: it interrupts now
        cmd(&mut d, 0x60);
        data(&mut d, 0x65);
        assert_eq!(edges.take(), 1);
        assert_eq!(drain(&mut d), vec![0xfa]);
    }

    fn dev() -> (I8042, Arc<RecordingControl>) {
        let ctl = Arc::new(RecordingControl::default());
        (I8042::new(ctl.clone()), ctl)
    }

    fn status(d: &mut I8042) -> u8 {
        let mut b = [0u8];
        d.read(COMMAND, &mut b);
        b[0]
    }

    fn drain(d: &mut I8042) -> Vec<u8> {
        let mut out = Vec::new();
        while status(d) & STATUS_OBF != 0 {
            let mut b = [0u8];
            d.read(DATA, &mut b);
            out.push(b[0]);
            assert!(out.len() < 64, "output never drains");
        }
        out
    }

    fn cmd(d: &mut I8042, c: u8) {
        assert!(d.write(COMMAND, &[c]).is_empty());
    }

    fn data(d: &mut I8042, v: u8) {
        assert!(d.write(DATA, &[v]).is_empty());
    }

    #[test]
    fn output_buffer_drains_and_input_is_never_full() {
        let (mut d, _) = dev();
        assert_eq!(drain(&mut d), Vec::<u8>::new());
        assert_eq!(status(&mut d) & 0x02, 0, "input buffer always empty");
    }

    #[test]
    fn controller_probe_as_linux_does_it() {
        let (mut d, _) = dev();
        cmd(&mut d, 0x20);
        let ctr = drain(&mut d);
        assert_eq!(ctr.len(), 1);
        cmd(&mut d, 0x60);
        data(&mut d, ctr[0] & !CTR_KBD_INT);
        cmd(&mut d, 0x20);
        assert_eq!(drain(&mut d), vec![ctr[0] & !CTR_KBD_INT]);
        cmd(&mut d, 0xaa);
        assert_eq!(drain(&mut d), vec![0x55]);
        cmd(&mut d, 0xab);
        assert_eq!(drain(&mut d), vec![0x00]);
        cmd(&mut d, 0xa9);
        assert_eq!(drain(&mut d), vec![0xff], "no mouse port");
    }

    #[test]
    fn keyboard_acknowledges_and_identifies() {
        let (mut d, _) = dev();
        data(&mut d, 0xff);
        assert_eq!(drain(&mut d), vec![0xfa, 0xaa]);
        data(&mut d, 0xf2);
        assert_eq!(drain(&mut d), vec![0xfa, 0xab, 0x83]);
        data(&mut d, 0xed);
        assert_eq!(drain(&mut d), vec![0xfa]);
        data(&mut d, 0x07);
        assert_eq!(drain(&mut d), vec![0xfa], "LED argument acknowledged");
        data(&mut d, 0xf4);
        assert_eq!(drain(&mut d), vec![0xfa]);
    }

    #[test]
    fn reset_line() {
        let (mut d, ctl) = dev();
        cmd(&mut d, 0xd1);
        data(&mut d, 0x03);
        assert!(ctl.taken().is_empty(), "bit 0 set: no reset");
        cmd(&mut d, 0xfe);
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
        cmd(&mut d, 0xd1);
        data(&mut d, 0x02);
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
        cmd(&mut d, 0xff);
        assert!(ctl.taken().is_empty(), "0xFF pulses no line");
    }

    #[test]
    fn odd_offsets_and_widths() {
        let (mut d, _) = dev();
        let mut wide = [0u8; 4];
        d.read(2, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        assert!(d.write(3, &[1, 2, 3]).is_empty());
        assert!(d.write(DATA, &[]).is_empty());
        for _ in 0..100 {
            data(&mut d, 0xff);
        }
        assert!(drain(&mut d).len() <= 16);
    }

    #[test]
    fn fuzz_any_access_never_panics() {
        let ctl = Arc::new(crate::test_util::RecordingControl::default());
        let mut dev = I8042::new(ctl);
        crate::test_util::stress("i8042", &mut dev, 8, 200_000);
        let mut none = [0u8; 0];
        dev.read(DATA, &mut none);
        dev.read(COMMAND, &mut none);
    }
}
