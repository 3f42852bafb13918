//! The i8042 keyboard controller, reduced to what a VM needs: its reset line.
//!
//! Guests reboot by writing the "pulse output line" command 0xFE to the
//! command port (0x64). Linux's `reboot=k` path first polls the status
//! register until the input buffer is empty, so the input-buffer-full bit
//! always reads clear.
//!
//! Keyboards and mice are not emulated, and the FADT says there is no 8042.
//! Some kernels probe the ports anyway; they first drain the output buffer
//! and decide "no controller" when it never empties. So the status register
//! reports output-buffer-full forever (0x01) and data reads return 0xff:
//! the probe gives up after 16 reads instead of waiting a second or more
//! for answers to its commands. Other commands are accepted and ignored.

use std::sync::Arc;

use crate::{BusDevice, Effects, VmControl, VmRequest};

/// Base I/O port; the device spans 0x60..=0x64 (data at +0, command/status at +4).
pub const PORT_BASE: u16 = 0x60;
/// Length of the I/O range.
pub const PORT_LEN: u16 = 5;

const DATA: u64 = 0;
const COMMAND: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;
/// Status: output buffer full (bit 0); input buffer empty (bit 1 clear).
const STATUS: u8 = 0x01;

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
            DATA => data.fill(0xff),
            COMMAND => {
                data.fill(0xff);
                data[0] = STATUS;
            }
            // 0x61..0x63 are not ours (0x61 is the PIT/speaker port in
            // KVM's in-kernel PIT); behave like an open bus.
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        if offset == COMMAND && data.first() == Some(&CMD_RESET_CPU) {
            self.control.request(VmRequest::Reset);
        }
        Effects::none()
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
        let mut status = [0u8];
        dev.read(COMMAND, &mut status);
        assert_eq!(status[0] & 0x02, 0, "input buffer must read empty");
        assert_eq!(
            status[0] & 0x01,
            0x01,
            "output never drains: probes see no controller"
        );
        assert!(dev.write(COMMAND, &[0xd1]).is_empty());
        assert!(dev.write(DATA, &[0xfe]).is_empty());
        assert!(ctl.taken().is_empty(), "only command 0xFE resets");
        assert!(dev.write(COMMAND, &[0xfe]).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
    }
}
