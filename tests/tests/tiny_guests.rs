//! Hand-assembled guests on the real `/dev/kvm`.
//!
//! The host KVM here may only emulate (about a million instructions per
//! second), so each guest is a few dozen instructions. Sources are shown
//! next to the bytes (GNU as syntax).

use tests::{kvm_available, run_raw};
use vmm::{CpuMode, EXIT_TIMEOUT, StopReason};

/// Real mode at 1000:0000: `rep outsb` a string to COM1, then debug-exit 0x21.
///
/// ```text
///   mov %cs,%ax ; mov %ax,%ds
///   mov $0x3f8,%dx ; mov $msg,%si ; mov $21,%cx ; cld
///   rep outsb
///   mov $0x501,%dx ; mov $0x21,%al ; out %al,(%dx)
/// 1: hlt ; jmp 1b
/// msg: .ascii "hello from real mode\n"
/// ```
const REAL_MODE_HELLO: &[u8] = &[
    0x8c, 0xc8, 0x8e, 0xd8, 0xba, 0xf8, 0x03, 0xbe, 0x19, 0x00, 0xb9, 0x15, 0x00, 0xfc, 0xf3, 0x6e,
    0xba, 0x01, 0x05, 0xb0, 0x21, 0xee, 0xf4, 0xeb, 0xfd, b'h', b'e', b'l', b'l', b'o', b' ', b'f',
    b'r', b'o', b'm', b' ', b'r', b'e', b'a', b'l', b' ', b'm', b'o', b'd', b'e', b'\n',
];

/// Long mode at 1 MiB: print "long mode\n", read the unclaimed MMIO address
/// 0xd000_0000 and print 'Y' if it read all-ones ('N' if not), write to it,
/// then debug-exit 0x10.
///
/// ```text
///   mov $0x3f8,%dx ; lea msg(%rip),%rsi ; mov $10,%ecx
/// 1: lodsb ; out %al,(%dx) ; loop 1b
///   mov $0xd0000000,%eax ; mov (%rax),%ebx
///   mov $'N',%al ; cmp $-1,%ebx ; jne 2f ; mov $'Y',%al
/// 2: out %al,(%dx)
///   movl $0x1234,(%rax)
///   mov $0x501,%dx ; mov $0x10,%al ; out %al,(%dx)
/// 3: hlt ; jmp 3b
/// msg: .ascii "long mode\n"
/// ```
const LONG_MODE_MMIO: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0x48, 0x8d, 0x35, 0x2a, 0x00, 0x00, 0x00, 0xb9, 0x0a, 0x00, 0x00, 0x00,
    0xac, 0xee, 0xe2, 0xfc, 0xb8, 0x00, 0x00, 0x00, 0xd0, 0x8b, 0x18, 0xb0, 0x4e, 0x83, 0xfb, 0xff,
    0x75, 0x02, 0xb0, 0x59, 0xee, 0xc7, 0x00, 0x34, 0x12, 0x00, 0x00, 0x66, 0xba, 0x01, 0x05, 0xb0,
    0x10, 0xee, 0xf4, 0xeb, 0xfd, b'l', b'o', b'n', b'g', b' ', b'm', b'o', b'd', b'e', b'\n',
];

/// Real mode on every vCPU: print the APIC ID from CPUID leaf 1 as a digit,
/// count in with `lock incb`; the APs halt, the BSP waits for both counts
/// and debug-exits 0x2a.
///
/// ```text
///   mov %cs,%ax ; mov %ax,%ds
///   mov $1,%eax ; cpuid ; shr $24,%ebx
///   mov %bl,%al ; add $'0',%al ; mov $0x3f8,%dx ; out %al,(%dx)
///   lock incb done
///   test %bl,%bl ; jnz park
/// wait: cmpb $2,done ; jne wait
///   mov $0x501,%dx ; mov $0x2a,%al ; out %al,(%dx)
/// park: hlt ; jmp park
/// done: .byte 0
/// ```
const SMP_APIC_IDS: &[u8] = &[
    0x8c, 0xc8, 0x8e, 0xd8, 0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0x66, 0xc1, 0xeb, 0x18,
    0x88, 0xd8, 0x04, 0x30, 0xba, 0xf8, 0x03, 0xee, 0xf0, 0xfe, 0x06, 0x31, 0x00, 0x84, 0xdb, 0x75,
    0x0d, 0x80, 0x3e, 0x31, 0x00, 0x02, 0x75, 0xf9, 0xba, 0x01, 0x05, 0xb0, 0x2a, 0xee, 0xf4, 0xeb,
    0xfd, 0x00,
];

/// Real mode: what kvm-unit-tests do to report, a 32-bit `out` to 0xf4.
///
/// ```text
/// mov $0xf4,%dx ; mov $0x12345601,%eax ; out %eax,(%dx) ; 1: hlt ; jmp 1b
/// ```
const OUTL_F4: &[u8] = &[
    0xba, 0xf4, 0x00, 0x66, 0xb8, 0x01, 0x56, 0x34, 0x12, 0x66, 0xef, 0xf4, 0xeb, 0xfd,
];

/// A guest that only spins: `1: jmp 1b`.
const SPIN: &[u8] = &[0xeb, 0xfe];

#[test]
fn real_mode_string_pio_reaches_the_uart() {
    if !kvm_available("real_mode_string_pio_reaches_the_uart") {
        return;
    }
    let (report, serial) = run_raw(
        REAL_MODE_HELLO,
        0x10000,
        CpuMode::Real { cs: 0x1000, ip: 0 },
        1,
    );
    assert_eq!(serial, "hello from real mode\n");
    assert_eq!(report.reason, StopReason::DebugExit(0x21));
    assert_eq!(report.reason.exit_code(), (0x21 << 1) | 1);
}

#[test]
fn a_dword_out_to_the_debug_exit_port_exits_like_qemu() {
    if !kvm_available("a_dword_out_to_the_debug_exit_port_exits_like_qemu") {
        return;
    }
    let serial = vmm::SharedBuffer::default();
    let mut cfg = vmm::VmConfig::new(vmm::BootSource::Raw {
        image: OUTL_F4.to_vec(),
        load_addr: 0x10000,
        mode: CpuMode::Real { cs: 0x1000, ip: 0 },
    });
    cfg.memory = 64 << 20;
    cfg.serial = vmm::SerialConfig::Capture(serial);
    cfg.debug_exit_port = Some(0xf4);
    cfg.debug_exit_size = 4;
    cfg.timeout = Some(std::time::Duration::from_secs(60));
    let report = vmm::run(&cfg).expect("the VM runs");
    assert_eq!(report.reason, StopReason::DebugExit(0x01));
    assert_eq!(report.reason.exit_code(), 3, "(0x12345601 << 1 | 1) & 0xff");
}

#[test]
fn long_mode_unclaimed_mmio_reads_all_ones() {
    if !kvm_available("long_mode_unclaimed_mmio_reads_all_ones") {
        return;
    }
    let (report, serial) = run_raw(
        LONG_MODE_MMIO,
        0x10_0000,
        CpuMode::Long { rip: 0x10_0000 },
        1,
    );
    assert_eq!(serial, "long mode\nY");
    assert_eq!(report.reason, StopReason::DebugExit(0x10));
    assert_eq!(report.reason.exit_code(), 0x21);
    assert_eq!(
        report.mmio_unclaimed,
        (1, 1),
        "one unclaimed read and one unclaimed write"
    );
}

#[test]
fn two_vcpus_both_run_with_their_own_apic_ids() {
    if !kvm_available("two_vcpus_both_run_with_their_own_apic_ids") {
        return;
    }
    let (report, serial) = run_raw(
        SMP_APIC_IDS,
        0x10000,
        CpuMode::Real { cs: 0x1000, ip: 0 },
        2,
    );
    assert_eq!(
        report.reason,
        StopReason::DebugExit(0x2a),
        "serial: {serial:?}"
    );
    let mut ids: Vec<char> = serial.chars().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!['0', '1'], "each vCPU prints its APIC ID once");
    assert_eq!(report.vcpu_exits.len(), 2);
    assert!(
        report.vcpu_exits.iter().all(|&n| n > 0),
        "both vCPUs ran: {:?}",
        report.vcpu_exits
    );
}

#[test]
fn timeout_stops_a_spinning_guest() {
    if !kvm_available("timeout_stops_a_spinning_guest") {
        return;
    }
    let serial = vmm::SharedBuffer::default();
    let mut cfg = vmm::VmConfig::new(vmm::BootSource::Raw {
        image: SPIN.to_vec(),
        load_addr: 0x10000,
        mode: CpuMode::Real { cs: 0x1000, ip: 0 },
    });
    cfg.memory = 32 << 20;
    cfg.serial = vmm::SerialConfig::Capture(serial);
    cfg.timeout = Some(std::time::Duration::from_secs(1));
    let start = std::time::Instant::now();
    let report = vmm::run(&cfg).expect("VM runs");
    assert_eq!(report.reason, StopReason::Timeout);
    assert_eq!(report.reason.exit_code(), EXIT_TIMEOUT);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "the spinning vCPU was kicked out"
    );
}
