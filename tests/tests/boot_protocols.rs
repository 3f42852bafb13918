//! Direct-boot protocols on the real `/dev/kvm`, with stand-in kernels
//! built by `tests::images`: the same loaders, zero page, PVH start info,
//! ACPI placement and entry state a Linux kernel gets.

use std::time::Duration;

use tests::images::{LOAD_ADDR, bzimage, multiboot_elf32, pvh_elf, write_temp};
use tests::{DEBUG_EXIT_PORT, kvm_available};
use vmm::{BootSource, CpuMode, Report, SerialConfig, SharedBuffer, StopReason, VmConfig};

/// `startup_64` that checks what the 64-bit boot protocol hands it:
/// prints the command line found through the zero page's cmd_line_ptr,
/// 'A' if acpi_rsdp_addr points at "RSD PTR ", then the e820 entry count
/// as a digit, and debug-exits 0x33.
///
/// ```text
///   mov %rsi,%rbx ; mov $0x3f8,%dx
///   mov 0x228(%rbx),%esi
/// 1: lodsb ; test %al,%al ; jz 2f ; out %al,(%dx) ; jmp 1b
/// 2: mov 0x70(%rbx),%rax ; mov $"RSD PTR ",%rcx ; cmp (%rax),%rcx
///   mov $'N',%al ; jne 3f ; mov $'A',%al
/// 3: out %al,(%dx)
///   movzbl 0x1e8(%rbx),%eax ; add $'0',%al ; out %al,(%dx)
///   mov $0x501,%dx ; mov $0x33,%al ; out %al,(%dx)
/// 4: hlt ; jmp 4b
/// ```
const ZERO_PAGE_PROBE: &[u8] = &[
    0x48, 0x89, 0xf3, 0x66, 0xba, 0xf8, 0x03, 0x8b, 0xb3, 0x28, 0x02, 0x00, 0x00, 0xac, 0x84, 0xc0,
    0x74, 0x03, 0xee, 0xeb, 0xf8, 0x48, 0x8b, 0x43, 0x70, 0x48, 0xb9, 0x52, 0x53, 0x44, 0x20, 0x50,
    0x54, 0x52, 0x20, 0x48, 0x3b, 0x08, 0xb0, 0x4e, 0x75, 0x02, 0xb0, 0x41, 0xee, 0x0f, 0xb6, 0x83,
    0xe8, 0x01, 0x00, 0x00, 0x04, 0x30, 0xee, 0x66, 0xba, 0x01, 0x05, 0xb0, 0x33, 0xee, 0xf4, 0xeb,
    0xfd,
];

/// 32-bit PVH entry: 'P' if EBX points at an hvm_start_info (magic
/// 0x336ec578), then the command line from its cmdline_paddr, debug-exit 0x44.
///
/// ```text
///   mov $0x3f8,%dx
///   cmpl $0x336ec578,(%ebx) ; mov $'N',%al ; jne 1f ; mov $'P',%al
/// 1: out %al,(%dx)
///   mov 24(%ebx),%esi            # cmdline_paddr
/// 2: lodsb ; test %al,%al ; jz 3f ; out %al,(%dx) ; jmp 2b
/// 3: mov $0x501,%dx ; mov $0x44,%al ; out %al,(%dx)
/// 4: hlt ; jmp 4b
/// ```
const PVH_PROBE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33, 0xb0, 0x4e, 0x75, 0x02, 0xb0, 0x50,
    0xee, 0x8b, 0x73, 0x18, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0x66, 0xba, 0x01, 0x05,
    0xb0, 0x44, 0xee, 0xf4, 0xeb, 0xfd,
];

/// `ud2` with no usable IDT: #UD, then #GP, then #DF, then a triple fault.
const TRIPLE_FAULT: &[u8] = &[0x0f, 0x0b];

fn boot(kernel: &std::path::Path, cmdline: &str, cpus: u32) -> (Report, String) {
    let serial = SharedBuffer::default();
    let mut cfg = VmConfig::new(BootSource::Kernel {
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: cmdline.to_string(),
    });
    cfg.memory = 64 << 20;
    cfg.cpus = cpus;
    cfg.serial = SerialConfig::Capture(serial.clone());
    cfg.debug_exit_port = Some(DEBUG_EXIT_PORT);
    cfg.timeout = Some(Duration::from_secs(60));
    let report = vmm::run(&cfg).unwrap_or_else(|e| panic!("the VM did not run: {e}"));
    (report, serial.text())
}

#[test]
fn bzimage_gets_zero_page_cmdline_acpi_and_e820() {
    if !kvm_available("bzimage_gets_zero_page_cmdline_acpi_and_e820") {
        return;
    }
    let k = write_temp("probe.bzImage", &bzimage(ZERO_PAGE_PROBE));
    let (report, serial) = boot(&k, "console=ttyS0 tessera.test=1", 2);
    assert_eq!(
        report.reason,
        StopReason::DebugExit(0x33),
        "serial: {serial:?}"
    );
    assert!(
        serial.starts_with("console=ttyS0 tessera.test=1A"),
        "serial: {serial:?}"
    );
    let entries = serial
        .chars()
        .last()
        .and_then(|c| c.to_digit(10))
        .expect("e820 count digit");
    assert!(
        entries >= 4,
        "e820 map has RAM, EBDA, ACPI and RAM entries at least: {entries}"
    );
}

#[test]
fn pvh_elf_gets_start_info() {
    if !kvm_available("pvh_elf_gets_start_info") {
        return;
    }
    let k = write_temp("probe.pvh", &pvh_elf(PVH_PROBE));
    let (report, serial) = boot(&k, "pvh works", 1);
    assert_eq!(
        report.reason,
        StopReason::DebugExit(0x44),
        "serial: {serial:?}"
    );
    assert_eq!(serial, "Ppvh works");
}

#[test]
fn triple_fault_stops_the_vm_with_registers() {
    if !kvm_available("triple_fault_stops_the_vm_with_registers") {
        return;
    }
    let (report, _) = tests::run_raw(TRIPLE_FAULT, LOAD_ADDR, CpuMode::Long { rip: LOAD_ADDR }, 1);
    match &report.reason {
        StopReason::Fatal { cpu, message } => {
            assert_eq!(*cpu, 0);
            assert!(message.contains("triple"), "{message}");
            assert!(
                message.contains("rip="),
                "registers are reported: {message}"
            );
        }
        other => panic!("expected a fatal stop, got {other:?}"),
    }
    assert_eq!(report.reason.exit_code(), vmm::EXIT_FAILURE);
}

/// 32-bit multiboot entry: 'M' if EAX holds the bootloader magic
/// 0x2badb002, then the command line from the boot information's cmdline
/// field (EBX + 16), debug-exit 0x55.
///
/// ```text
///   mov $0x3f8,%dx
///   cmp $0x2badb002,%eax ; mov $'N',%al ; jne 1f ; mov $'M',%al
/// 1: out %al,(%dx)
///   mov 16(%ebx),%esi
/// 2: lodsb ; test %al,%al ; jz 3f ; out %al,(%dx) ; jmp 2b
/// 3: mov $0x501,%dx ; mov $0x55,%al ; out %al,(%dx)
/// 4: hlt ; jmp 4b
/// ```
const MULTIBOOT_PROBE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0x3d, 0x02, 0xb0, 0xad, 0x2b, 0xb0, 0x4e, 0x75, 0x02, 0xb0, 0x4d, 0xee,
    0x8b, 0x73, 0x10, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0x66, 0xba, 0x01, 0x05, 0xb0,
    0x55, 0xee, 0xf4, 0xeb, 0xfd,
];

#[test]
fn multiboot_elf32_gets_the_magic_and_the_boot_information() {
    if !kvm_available("multiboot_elf32_gets_the_magic_and_the_boot_information") {
        return;
    }
    let kernel = write_temp("multiboot.elf", &multiboot_elf32(MULTIBOOT_PROBE));
    let serial = SharedBuffer::default();
    let mut cfg = VmConfig::new(BootSource::Kernel {
        kernel,
        initrd: None,
        cmdline: "mb-cmdline".into(),
    });
    cfg.memory = 64 << 20;
    cfg.serial = SerialConfig::Capture(serial.clone());
    cfg.debug_exit_port = Some(DEBUG_EXIT_PORT);
    cfg.timeout = Some(Duration::from_secs(60));
    let report = vmm::run(&cfg).expect("the VM runs");
    assert_eq!(
        report.reason,
        StopReason::DebugExit(0x55),
        "serial: {}",
        serial.text()
    );
    assert_eq!(serial.text(), "Mmb-cmdline");
}
