//! Shared helpers for Tessera's integration tests.
//!
//! Tests here run real VMs on the host's `/dev/kvm`. A test skips (printing
//! why) only when `/dev/kvm` is absent; any other failure to use it fails
//! the test.

#![deny(missing_docs)]

pub mod images;

use std::time::Duration;

use vmm::{BootSource, CpuMode, Report, SerialConfig, SharedBuffer, VmConfig};

/// The debug-exit port the tiny guests use (QEMU's isa-debug-exit default).
pub const DEBUG_EXIT_PORT: u16 = 0x501;

/// True when `/dev/kvm` exists; prints why a test skips otherwise.
pub fn kvm_available(test: &str) -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        true
    } else {
        eprintln!("SKIP {test}: /dev/kvm is absent on this host");
        false
    }
}

/// Run a raw image on real KVM with serial captured. Every guest gets a
/// timeout so a broken guest fails the test instead of hanging it.
pub fn run_raw(image: &[u8], load_addr: u64, mode: CpuMode, cpus: u32) -> (Report, String) {
    let serial = SharedBuffer::default();
    let mut cfg = VmConfig::new(BootSource::Raw {
        image: image.to_vec(),
        load_addr,
        mode,
    });
    cfg.memory = 64 << 20;
    cfg.cpus = cpus;
    cfg.serial = SerialConfig::Capture(serial.clone());
    cfg.debug_exit_port = Some(DEBUG_EXIT_PORT);
    cfg.timeout = Some(Duration::from_secs(60));
    let report = vmm::run(&cfg).unwrap_or_else(|e| panic!("the VM did not run: {e}"));
    (report, serial.text())
}
