//! The i8042 keyboard controller, reduced to what a VM needs: its reset line.
//!
//! Guests reboot by writing the "pulse output line" command 0xFE to the
//! command port (0x64). Linux's `reboot=k` path first polls the status
//! register until the input buffer is empty, so status reads return 0 (no
//! data, input buffer empty). Data-port reads return 0; all other commands
//! are accepted and ignored. Keyboards and mice are not emulated; the FADT
//! says so (no 8042 flag), so guests do not probe for them.

use std::sync::Arc;

use crate::{BusDevice, VmControl, VmRequest};

/// Base I/O port; the device spans 0x60..=0x64 (data at +0, command/status at +4).
pub const PORT_BASE: u16 = 0x60;
/// Length of the I/O range.
pub const PORT_LEN: u16 = 5;

const DATA: u64 = 0;
const COMMAND: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 reset line.
pub struct I8042 {
    control: Arc<dyn VmControl>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042").finish_non_exhaustive()
    }
}

impl I8042 {
    /// A controller whose reset line goes to `control`.
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            DATA | COMMAND => data.fill(0),
            // 0x61..0x63 are not ours (0x61 is the PIT/speaker port in
            // KVM's in-kernel PIT); behave like an open bus.
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND && data.first() == Some(&CMD_RESET_CPU) {
            self.control.request(VmRequest::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RecordingControl;

    #[test]
    fn pulse_reset_line() {
        let ctl = Arc::new(RecordingControl::default());
        let mut dev = I8042::new(ctl.clone());
        let mut status = [0xffu8];
        dev.read(COMMAND, &mut status);
        assert_eq!(status, [0], "input buffer must read empty");
        dev.write(COMMAND, &[0xd1]);
        dev.write(DATA, &[0xfe]);
        assert!(ctl.taken().is_empty(), "only command 0xFE resets");
        dev.write(COMMAND, &[0xfe]);
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
    }
}
