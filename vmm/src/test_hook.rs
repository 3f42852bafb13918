//! Faults only a test can ask for, never a guest: the environment variable
//! `TESSERA_TEST_HOOK`, read once at start, names them (comma-separated).
//! Each one in use is logged as a warning.
//!
//! - `panic-port=PORT`: an I/O port whose first write panics the device
//!   model, on the vCPU thread that wrote it (the panic-handling test).
//! - `vcpu-syscall=NR`: vCPU 0 makes system call NR (no arguments) once
//!   its seccomp filter is installed, before its first `KVM_RUN` (the
//!   seccomp test).
//! - `open-after-jail=PATH`: the main thread opens PATH right after the
//!   Landlock and `--user` step and logs the result (the Landlock test).

use std::sync::Arc;
use std::sync::Mutex;

use devices::{BusDevice, Effects};

/// The hooks asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestHooks {
    /// `panic-port=PORT`.
    pub panic_port: Option<u16>,
    /// `vcpu-syscall=NR`.
    pub vcpu_syscall: Option<i64>,
    /// `open-after-jail=PATH`.
    pub open_after_jail: Option<std::path::PathBuf>,
}

impl TestHooks {
    /// The hooks `TESSERA_TEST_HOOK` names (none if unset); an unknown or
    /// malformed entry is an error that names it.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("TESSERA_TEST_HOOK") {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(Self::default()),
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        let mut h = Self::default();
        for item in s.split(',').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some(("panic-port", v)) => {
                    let port = match v.strip_prefix("0x") {
                        Some(x) => u16::from_str_radix(x, 16),
                        None => v.parse(),
                    };
                    h.panic_port = Some(port.map_err(|_| {
                        format!("TESSERA_TEST_HOOK: bad port in '{item}' (want panic-port=0xNNNN)")
                    })?);
                }
                Some(("open-after-jail", v)) if !v.is_empty() => {
                    h.open_after_jail = Some(v.into());
                }
                Some(("vcpu-syscall", v)) => {
                    h.vcpu_syscall = Some(v.parse().map_err(|_| {
                        format!("TESSERA_TEST_HOOK: bad number in '{item}' (want vcpu-syscall=NR)")
                    })?);
                }
                _ => {
                    return Err(format!(
                        "TESSERA_TEST_HOOK: unknown hook '{item}' (known: panic-port=PORT, vcpu-syscall=NR, open-after-jail=PATH)"
                    ));
                }
            }
        }
        Ok(h)
    }
}

/// The `panic-port` device.
#[derive(Debug)]
pub struct PanicPort;

impl PanicPort {
    /// Shared, for a bus.
    pub fn shared() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(PanicPort))
    }
}

impl BusDevice for PanicPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Effects {
        panic!("test hook: device model panic (the guest wrote {data:02x?} to the panic port)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hooks_and_names_bad_ones() {
        assert_eq!(TestHooks::parse("").unwrap(), TestHooks::default());
        assert_eq!(
            TestHooks::parse("panic-port=0x510").unwrap().panic_port,
            Some(0x510)
        );
        assert_eq!(
            TestHooks::parse("panic-port=80").unwrap().panic_port,
            Some(80)
        );
        assert!(
            TestHooks::parse("panic-port=x")
                .unwrap_err()
                .contains("panic-port=x")
        );
        assert!(TestHooks::parse("nope").unwrap_err().contains("'nope'"));
        let h = TestHooks::parse("vcpu-syscall=102,panic-port=1").unwrap();
        assert_eq!((h.vcpu_syscall, h.panic_port), (Some(102), Some(1)));
        assert!(TestHooks::parse("vcpu-syscall=").is_err());
    }

    #[test]
    #[should_panic(expected = "test hook: device model panic")]
    fn the_panic_port_panics() {
        let _ = PanicPort.write(0, &[1]);
    }
}
