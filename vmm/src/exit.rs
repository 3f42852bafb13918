//! What a vCPU does with each KVM exit: a plain function over `VcpuExit`.
//!
//! Kept free of threads and file descriptors so it is unit-tested with
//! fabricated exits.

use devices::Effects;
use kvm_ioctls::VcpuExit;
use log::{debug, warn};

use crate::bus::Buses;

/// Applies what device writes changed (bus ranges, memory slots, routes).
/// Called on the vCPU thread after the device and bus locks are released.
pub trait EffectSink: Sync {
    /// Apply `effects`, in order.
    fn apply(&self, effects: Effects);
}

/// What the vCPU loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Re-enter the guest.
    Continue,
    /// The guest shut the machine down through a KVM system event.
    PowerOff,
    /// The guest reset the machine through a KVM system event.
    Reset,
    /// The vCPU cannot go on; the string says why. The caller logs the
    /// vCPU's registers and stops the VM.
    Fatal(String),
}

// KVM_SYSTEM_EVENT_* (linux/kvm.h).
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;
const SYSTEM_EVENT_CRASH: u32 = 3;

/// Handle one exit. `io_size` is the width of a single port access (KVM's
/// `io.size`): string instructions (`rep insb`) arrive as one exit carrying
/// several accesses, which are dispatched one by one.
pub fn handle_exit(
    exit: VcpuExit<'_>,
    io_size: usize,
    buses: &Buses,
    sink: &dyn EffectSink,
) -> ExitAction {
    let apply = |effects: Option<Effects>| {
        if let Some(e) = effects.filter(|e| !e.is_empty()) {
            sink.apply(e);
        }
    };
    match exit {
        VcpuExit::IoIn(port, data) => {
            for chunk in data.chunks_mut(access_width(io_size, data.len())) {
                buses.pio.read(u64::from(port), chunk);
            }
            ExitAction::Continue
        }
        VcpuExit::IoOut(port, data) => {
            for chunk in data.chunks(access_width(io_size, data.len())) {
                apply(buses.pio.write(u64::from(port), chunk));
            }
            ExitAction::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            buses.mmio.read(addr, data);
            ExitAction::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            apply(buses.mmio.write(addr, data));
            ExitAction::Continue
        }
        // With the in-kernel irqchip HLT stays in the kernel; should one
        // come out anyway, re-entering is what the guest expects.
        VcpuExit::Hlt => ExitAction::Continue,
        VcpuExit::Debug(_) => ExitAction::Continue,
        VcpuExit::Shutdown => ExitAction::Fatal(
            "the guest triple-faulted (KVM_EXIT_SHUTDOWN): it hit an exception it could not handle"
                .into(),
        ),
        VcpuExit::FailEntry(reason, cpu) => ExitAction::Fatal(format!(
            "KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x} on host CPU {cpu})"
        )),
        VcpuExit::InternalError => ExitAction::Fatal(
            "KVM internal error (KVM_EXIT_INTERNAL_ERROR): often an instruction KVM cannot emulate"
                .into(),
        ),
        VcpuExit::SystemEvent(kind, flags) => match kind {
            SYSTEM_EVENT_SHUTDOWN => ExitAction::PowerOff,
            SYSTEM_EVENT_RESET => ExitAction::Reset,
            SYSTEM_EVENT_CRASH => {
                ExitAction::Fatal(format!("the guest reported a crash (flags {flags:x?})"))
            }
            other => {
                warn!("ignoring KVM system event {other} (flags {flags:x?})");
                ExitAction::Continue
            }
        },
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => ExitAction::Continue,
        VcpuExit::Unknown => ExitAction::Fatal("KVM reported an unknown exit".into()),
        other => {
            debug!("unhandled exit {other:?}");
            ExitAction::Fatal(format!("unhandled KVM exit: {other:?}"))
        }
    }
}

/// Width of one access: KVM's `io.size` when it divides the data, else the
/// whole buffer (a single access).
fn access_width(io_size: usize, len: usize) -> usize {
    if matches!(io_size, 1 | 2 | 4) && len % io_size == 0 {
        io_size
    } else {
        len.max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use devices::Effect;

    use super::*;
    use crate::bus::tests::Probe;

    /// Records applied effects.
    #[derive(Default)]
    struct Sink(Mutex<Vec<Effect>>);
    impl EffectSink for Sink {
        fn apply(&self, effects: Effects) {
            self.0.lock().unwrap().extend(effects);
        }
    }

    /// Returns one FlashMode effect per write.
    struct Flash;
    impl devices::BusDevice for Flash {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _: u64, data: &[u8]) -> Effects {
            Effects::one(Effect::FlashMode {
                read_array: data[0] == 0xff,
            })
        }
    }

    #[test]
    fn write_effects_reach_the_sink_in_order() {
        let buses = Buses::default();
        buses
            .mmio
            .insert(0xffc0_0000, 0x1000, "flash", Arc::new(Mutex::new(Flash)))
            .unwrap();
        let sink = Sink::default();
        handle_exit(VcpuExit::MmioWrite(0xffc0_0010, &[0x10]), 0, &buses, &sink);
        handle_exit(VcpuExit::MmioWrite(0xffc0_0010, &[0xff]), 0, &buses, &sink);
        let mut m = [0u8; 1];
        handle_exit(VcpuExit::MmioRead(0xffc0_0010, &mut m), 0, &buses, &sink);
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![
                Effect::FlashMode { read_array: false },
                Effect::FlashMode { read_array: true }
            ]
        );
    }

    fn buses_with_probe() -> (Buses, Arc<Mutex<Probe>>) {
        let buses = Buses::default();
        let probe = Arc::new(Mutex::new(Probe::default()));
        buses.pio.insert(0x3f8, 8, "probe", probe.clone()).unwrap();
        buses
            .mmio
            .insert(0xd000_0000, 0x1000, "probe", probe.clone())
            .unwrap();
        (buses, probe)
    }

    #[test]
    fn string_out_is_split_into_accesses() {
        let (buses, probe) = buses_with_probe();
        let sink = Sink::default();
        let mut data = *b"abc";
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0x3f8, &data), 1, &buses, &sink),
            ExitAction::Continue
        );
        let writes: Vec<_> = probe.lock().unwrap().writes.drain(..).collect();
        assert_eq!(
            writes,
            vec![(0, b"a".to_vec()), (0, b"b".to_vec()), (0, b"c".to_vec())]
        );
        // rep insb with count 3: three one-byte reads.
        handle_exit(VcpuExit::IoIn(0x3fd, &mut data), 1, &buses, &sink);
        assert_eq!(data, [5, 5, 5]);
        // A 16-bit access is one access.
        let mut w = [0u8; 2];
        handle_exit(VcpuExit::IoIn(0x3f9, &mut w), 2, &buses, &sink);
        assert_eq!(w, [1, 1]);
    }

    #[test]
    fn unclaimed_reads_are_all_ones_and_writes_counted() {
        let (buses, _) = buses_with_probe();
        let sink = Sink::default();
        let mut d = [0u8; 8];
        handle_exit(VcpuExit::MmioRead(0xe000_0000, &mut d), 0, &buses, &sink);
        assert_eq!(d, [0xff; 8]);
        let mut p = [0u8; 4];
        handle_exit(VcpuExit::IoIn(0x70, &mut p), 4, &buses, &sink);
        assert_eq!(p, [0xff; 4]);
        handle_exit(VcpuExit::MmioWrite(0xe000_0000, &[1, 2]), 0, &buses, &sink);
        handle_exit(VcpuExit::IoOut(0x80, &[0x55]), 1, &buses, &sink);
        assert_eq!(buses.mmio.unclaimed(), (1, 1));
        assert_eq!(buses.pio.unclaimed(), (1, 1));
        // A claimed MMIO access reaches the device at its offset.
        let mut m = [0u8; 4];
        handle_exit(VcpuExit::MmioRead(0xd000_0010, &mut m), 0, &buses, &sink);
        assert_eq!(m, [0x10; 4]);
    }

    #[test]
    fn fatal_and_system_exits() {
        let buses = Buses::default();
        let sink = Sink::default();
        assert!(
            matches!(handle_exit(VcpuExit::Shutdown, 0, &buses, &sink), ExitAction::Fatal(m) if m.contains("triple"))
        );
        assert!(matches!(
            handle_exit(VcpuExit::InternalError, 0, &buses, &sink),
            ExitAction::Fatal(_)
        ));
        assert!(
            matches!(handle_exit(VcpuExit::FailEntry(0x80000021, 1), 0, &buses, &sink), ExitAction::Fatal(m) if m.contains("0x80000021"))
        );
        assert_eq!(
            handle_exit(VcpuExit::SystemEvent(1, &[]), 0, &buses, &sink),
            ExitAction::PowerOff
        );
        assert_eq!(
            handle_exit(VcpuExit::SystemEvent(2, &[]), 0, &buses, &sink),
            ExitAction::Reset
        );
        assert!(matches!(
            handle_exit(VcpuExit::SystemEvent(3, &[]), 0, &buses, &sink),
            ExitAction::Fatal(_)
        ));
        assert_eq!(
            handle_exit(VcpuExit::Hlt, 0, &buses, &sink),
            ExitAction::Continue
        );
        assert!(matches!(
            handle_exit(VcpuExit::Unsupported(99), 0, &buses, &sink),
            ExitAction::Fatal(_)
        ));
    }
}
