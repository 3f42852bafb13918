//! Debug-exit port: a test guest ends the VM with a chosen code.
//!
//! Same contract as QEMU's `isa-debug-exit`: the guest writes `v` (1, 2 or
//! 4 bytes, anywhere in the device's `iosize` ports) and the VMM exits with
//! status `(v << 1) | 1` (as an exit status only its low 8 bits survive),
//! so a test harness can tell a guest-chosen result from the VMM's own
//! statuses. kvm-unit-tests writes its status with `outl` to port 0xf4.

use std::sync::Arc;

use crate::{BusDevice, Effects, VmControl, VmRequest};

/// The conventional I/O port (QEMU `isa-debug-exit`'s default).
pub const DEFAULT_PORT: u16 = 0x501;
/// Ports the device decodes by default (QEMU's `iosize` default).
pub const DEFAULT_SIZE: u8 = 2;

/// The debug-exit device.
pub struct DebugExit {
    control: Arc<dyn VmControl>,
}

impl std::fmt::Debug for DebugExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugExit").finish_non_exhaustive()
    }
}

impl DebugExit {
    /// A debug-exit device that reports to `control`.
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Effects {
        // The bus only dispatches accesses inside the registered ports.
        if !data.is_empty() {
            // Only the low 7 bits of v reach the exit status (v << 1 | 1).
            self.control
                .request(VmRequest::DebugExit(crate::le_value(data) as u8));
        }
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RecordingControl;

    #[test]
    fn write_requests_exit_with_value() {
        let ctl = Arc::new(RecordingControl::default());
        let mut dev = DebugExit::new(ctl.clone());
        assert!(dev.write(0, &[0x10]).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::DebugExit(0x10)]);
        let mut buf = [0u8; 1];
        dev.read(0, &mut buf);
        assert_eq!(buf, [0xff]);
        // A dword anywhere in the ports, as kvm-unit-tests' outl.
        assert!(dev.write(0, &0x1234_5601u32.to_le_bytes()).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::DebugExit(0x01)]);
        assert!(dev.write(1, &[7, 0]).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::DebugExit(7)]);
        assert!(dev.write(0, &[]).is_empty());
        assert!(ctl.taken().is_empty());
    }
}
