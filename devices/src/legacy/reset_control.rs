//! The PC reset control register at I/O port 0xCF9.
//!
//! Bit 2 (RST_CPU) starts a reset; bit 1 (SYS_RST) selects a full system
//! reset and is kept so reads return it. This is also the FADT reset
//! register (value 0x06), so ACPI reboots land here.

use std::sync::Arc;

use crate::{BusDevice, Effects, VmControl, VmRequest};

/// I/O port of the register.
pub const PORT: u16 = 0xcf9;

const SYS_RST: u8 = 1 << 1;
const RST_CPU: u8 = 1 << 2;

/// The reset control register.
pub struct ResetControl {
    control: Arc<dyn VmControl>,
    value: u8,
}

impl std::fmt::Debug for ResetControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetControl")
            .field("value", &self.value)
            .finish()
    }
}

impl ResetControl {
    /// A reset register that reports to `control`.
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self { control, value: 0 }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let (0, Some(first)) = (offset, data.first_mut()) {
            *first = self.value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        if offset != 0 {
            return Effects::none();
        }
        let Some(&v) = data.first() else {
            return Effects::none();
        };
        self.value = v & SYS_RST;
        if v & RST_CPU != 0 {
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
    fn acpi_reset_value_resets() {
        let ctl = Arc::new(RecordingControl::default());
        let mut dev = ResetControl::new(ctl.clone());
        assert!(dev.write(0, &[0x02]).is_empty());
        assert!(ctl.taken().is_empty());
        let mut b = [0u8];
        dev.read(0, &mut b);
        assert_eq!(b, [0x02]);
        assert!(dev.write(0, &[0x06]).is_empty());
        assert_eq!(ctl.taken(), vec![VmRequest::Reset]);
    }

    #[test]
    fn fuzz_any_access_never_panics() {
        let ctl = Arc::new(RecordingControl::default());
        let mut dev = ResetControl::new(ctl);
        crate::test_util::stress("reset_control", &mut dev, 2, 200_000);
        dev.read(0, &mut []);
    }
}
