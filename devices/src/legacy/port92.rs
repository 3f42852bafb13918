//! System Control Port A at I/O port 0x92 ("port 92", fast A20 and fast
//! reset), as QEMU's `port92` device.
//!
//! * Bit 1 (ALT_A20_GATE) is stored and read back. KVM has no A20 masking,
//!   so the gate is always open whatever the guest writes; OVMF
//!   (`PlatformInitLib/Platform.c` `PlatformMiscInitialization`) only ever
//!   does `IoOr8 (0x92, BIT1)` to open it.
//! * Bit 0 (ALT_RESET) is stored too; a write that takes it from 0 to 1
//!   asks the VMM for [`VmRequest::Reset`]. Because only the edge resets,
//!   a read-modify-write of the A20 bit with bit 0 still set (e.g. after a
//!   port-92 reset the VMM did not pair with [`Port92::reset`]) does not
//!   reset again.
//! * The other bits are stored and read back (QEMU keeps the whole byte).
//!
//! Only the first byte of an access is the register; the rest of a wide
//! read reads 0xff and the rest of a wide write is dropped.

use std::sync::Arc;

use crate::{BusDevice, Effects, VmControl, VmRequest};

/// I/O port of the register.
pub const PORT: u16 = 0x92;

/// Bit 0: fast reset.
pub const ALT_RESET: u8 = 1 << 0;
/// Bit 1: A20 gate.
pub const ALT_A20_GATE: u8 = 1 << 1;

/// System Control Port A.
pub struct Port92 {
    control: Arc<dyn VmControl>,
    value: u8,
}

impl std::fmt::Debug for Port92 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port92")
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

impl Port92 {
    /// A port-92 register that reports resets to `control`; reads 0.
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self { control, value: 0 }
    }

    /// The register value.
    pub fn value(&self) -> u8 {
        self.value
    }

    /// True when the guest has set the A20 gate bit.
    pub fn a20_enabled(&self) -> bool {
        self.value & ALT_A20_GATE != 0
    }

    /// Machine reset: clears the reset bit and keeps the rest, as QEMU's
    /// `port92_reset`.
    pub fn reset(&mut self) {
        self.value &= !ALT_RESET;
    }
}

impl BusDevice for Port92 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = self.value;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        if offset != 0 {
            return Effects::none();
        }
        let Some(&v) = data.first() else {
            return Effects::none();
        };
        let old = self.value;
        self.value = v;
        if v & ALT_RESET != 0 && old & ALT_RESET == 0 {
            self.control.request(VmRequest::Reset);
        }
        Effects::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RecordingControl;

    fn read(dev: &mut Port92) -> u8 {
        let mut b = [0u8];
        dev.read(0, &mut b);
        b[0]
    }

    #[test]
    fn a20_is_stored_and_read_back() {
        let ctl = Arc::new(RecordingControl::default());
        let mut dev = Port92::new(ctl.clone());
        assert_eq!(read(&mut dev), 0);
        assert!(!dev.a20_enabled());
        // OVMF: IoOr8 (0x92, BIT1).
        let v = read(&mut dev);
        assert!(dev.write(0, &[v | ALT_A20_GATE]).is_empty());
        assert_eq!(read(&mut dev), 0x02);
        assert!(dev.a20_enabled());
        assert!(ctl.taken().is_empty());
        assert!(dev.write(0, &[0]).is_empty());
        assert!(!dev.a20_enabled());
    }

    #[test]
    fn rising_reset_bit_resets_once() {
        let ctl = Arc::new(RecordingControl::default());
        let mut dev = Port92::new(ctl.clone());
        assert!(dev.write(0, &[0x03]).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
        // Bit 0 stays set: rewriting it is not a new edge.
        assert_eq!(read(&mut dev), 0x03);
        let _ = dev.write(0, &[0x03]);
        let _ = dev.write(0, &[0x01]);
        assert!(ctl.taken().is_empty());
        // Clear, then set again: a second reset.
        let _ = dev.write(0, &[0x02]);
        let _ = dev.write(0, &[0x03]);
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
        // Machine reset clears bit 0 and keeps A20.
        dev.reset();
        assert_eq!(read(&mut dev), 0x02);
        let _ = dev.write(0, &[0x01]);
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
    }

    #[test]
    fn odd_offsets_and_widths() {
        let ctl = Arc::new(RecordingControl::default());
        let mut dev = Port92::new(ctl.clone());
        assert!(dev.write(1, &[0x01]).is_empty());
        assert!(dev.write(0, &[]).is_empty());
        assert!(ctl.taken().is_empty());
        let mut w = [0u8; 4];
        let _ = dev.write(0, &[0x02, 0x01, 0x01, 0x01]);
        dev.read(0, &mut w);
        assert_eq!(w, [0x02, 0xff, 0xff, 0xff]);
        dev.read(3, &mut w[..1]);
        assert_eq!(w[0], 0xff);
        dev.read(0, &mut []);
        assert!(ctl.taken().is_empty());
    }
}
