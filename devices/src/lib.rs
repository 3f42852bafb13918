//! Device models of the Tessera VMM.
//!
//! Every device here is plain data plus logic: it is reached through
//! [`BusDevice`] by the VMM's buses, raises interrupts through [`IrqLine`]
//! and asks for VM-wide actions (power-off, reset) through [`VmControl`].
//! None of these traits mention KVM, so every device is unit-testable
//! without `/dev/kvm`; the `vmm` crate implements them on top of KVM.

#![deny(missing_docs)]

pub mod acpi_pm;
pub mod fuzz;
pub mod interrupt;
pub mod legacy;
pub mod pci;
pub mod q35;
pub mod vfio;
pub mod virtio;

use std::io;

/// A device reached through a PIO or MMIO bus.
///
/// `offset` is relative to the base of the range the device was registered
/// at. `data.len()` is the access width (1, 2, 4 or 8 bytes). A device must
/// never panic on any offset or width a guest can produce: unknown registers
/// read as all-ones or zero, as the device's hardware would, and writes to
/// them are ignored.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`. Returns what the write changed
    /// that the VMM must apply (almost always nothing).
    fn write(&mut self, offset: u64, data: &[u8]) -> Effects;
}

/// Something a device write changed that the VMM must apply to the
/// machine: bus ranges, KVM memory slots, interrupt routes. Devices never
/// reach the buses or KVM themselves; they return this as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A PCI function's configuration write changed a mapping or a route.
    Pci {
        /// The function.
        bdf: pci::Bdf,
        /// What changed.
        change: pci::PciChange,
    },
    /// A chipset window moved: it now decodes at `new` (base, length), or
    /// nowhere.
    Window {
        /// Which window.
        window: Window,
        /// Where it decodes now.
        new: Option<(u64, u64)>,
    },
    /// A flash device switched between read-array mode (its contents can
    /// be mapped as read-only memory, no exits) and command mode (every
    /// access must reach the device).
    FlashMode {
        /// True in read-array mode.
        read_array: bool,
    },
}

/// An address window of the chipset that the guest places by programming
/// a register, and that the VMM maps on a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The PCI Express configuration window (ECAM; the Q35 MCH's PCIEXBAR),
    /// on the MMIO bus.
    Ecam,
    /// The ACPI PM I/O block (the ICH9 LPC's PMBASE and ACPI_EN), on the
    /// port bus.
    AcpiPm,
}

/// The effects of one write. Empty for almost every write; an empty
/// `Effects` does not allocate.
#[must_use]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects(Vec<Effect>);

impl Effects {
    /// No effects.
    pub const fn none() -> Self {
        Self(Vec::new())
    }

    /// One effect.
    pub fn one(effect: Effect) -> Self {
        Self(vec![effect])
    }

    /// Add an effect.
    pub fn push(&mut self, effect: Effect) {
        self.0.push(effect);
    }

    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The effects, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Effect> {
        self.0.iter()
    }

    /// Append another write's effects.
    pub fn extend(&mut self, other: Effects) {
        self.0.extend(other.0);
    }
}

impl IntoIterator for Effects {
    type Item = Effect;
    type IntoIter = std::vec::IntoIter<Effect>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// An edge-triggered interrupt line into the VM's interrupt controller.
pub trait IrqLine: Send + Sync {
    /// Raise one interrupt edge.
    fn trigger(&self) -> io::Result<()>;
}

/// A level-triggered interrupt line (e.g. the ACPI SCI).
pub trait LevelIrqLine: Send + Sync {
    /// Drive the line to `asserted`.
    fn set_level(&self, asserted: bool) -> io::Result<()>;
}

/// What a device can ask of the whole VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRequest {
    /// The guest turned the machine off (ACPI S5).
    PowerOff,
    /// The guest reset the machine (0xCF9, i8042 pulse, ACPI reset register).
    Reset,
    /// A test guest wrote `value` to the debug-exit port.
    DebugExit(u8),
}

/// Receives [`VmRequest`]s from devices. The VMM implements it; devices
/// never stop the VM themselves.
pub trait VmControl: Send + Sync {
    /// Ask the VMM to act on `request`. The first request wins; later ones
    /// while the VM is stopping are ignored by the implementation.
    fn request(&self, request: VmRequest);
}

/// Little-endian value of up to 8 bytes, the way the guest wrote it.
pub fn le_value(data: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = data.len().min(8);
    bytes[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(bytes)
}

/// Fill `data` with the little-endian bytes of `value` (truncated to the
/// access width).
pub fn fill_le(data: &mut [u8], value: u64) {
    let bytes = value.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = bytes.get(i).copied().unwrap_or(0);
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::sync::Mutex;

    use super::*;

    /// Records every request, for assertions.
    #[derive(Default)]
    pub struct RecordingControl(pub Mutex<Vec<VmRequest>>);

    impl VmControl for RecordingControl {
        fn request(&self, request: VmRequest) {
            self.0.lock().unwrap().push(request);
        }
    }

    impl RecordingControl {
        pub fn taken(&self) -> Vec<VmRequest> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// Fuzz target `name`: `n` random reads and writes of 0 to 8 bytes
    /// (scaled by `TESSERA_FUZZ_SCALE`), at offsets mostly in `[0, span)`
    /// and otherwise anywhere (up to `u64::MAX`): what a guest (or a bus
    /// bug) can send. The device must not panic; with overflow checks on
    /// (test builds) neither may its offset arithmetic wrap.
    pub fn stress(name: &str, dev: &mut dyn BusDevice, span: u64, n: usize) {
        crate::fuzz::run(name, n, |rng| {
            let width = rng.width();
            let offset = rng.offset(span);
            let value = rng.bytes();
            if rng.one_in(2) {
                let _ = dev.write(offset, &value[..width]);
            } else {
                let mut buf = [0u8; 8];
                dev.read(offset, &mut buf[..width]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_roundtrip() {
        let mut buf = [0u8; 4];
        fill_le(&mut buf, 0x1122_3344_5566);
        assert_eq!(buf, [0x66, 0x55, 0x44, 0x33]);
        assert_eq!(le_value(&buf), 0x3344_5566);
        assert_eq!(le_value(&[0xff; 12]), u64::MAX);
    }
}
