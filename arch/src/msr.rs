//! Model-specific registers set before a direct kernel boot.
//!
//! Firmware boots need none of these: a freshly created KVM vCPU already
//! holds the architectural reset values, and OVMF programs MTRRs itself.

use kvm_bindings::kvm_msr_entry;

/// Time-stamp counter.
pub const MSR_IA32_TSC: u32 = 0x10;
/// Local APIC base address and enable bits.
pub const MSR_IA32_APIC_BASE: u32 = 0x1b;
/// SYSENTER code segment.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// SYSENTER stack pointer.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// SYSENTER entry point.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// Miscellaneous feature enables.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// MTRR default memory type and enables.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// Extended feature enables (long mode, NX, SYSCALL).
pub const MSR_EFER: u32 = 0xc000_0080;
/// SYSCALL/SYSRET segment selectors.
pub const MSR_STAR: u32 = 0xc000_0081;
/// 64-bit SYSCALL entry point.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// Compatibility-mode SYSCALL entry point.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// RFLAGS mask applied on SYSCALL (SFMASK).
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// FS segment base.
pub const MSR_FS_BASE: u32 = 0xc000_0100;
/// GS segment base.
pub const MSR_GS_BASE: u32 = 0xc000_0101;
/// GS base swapped in by SWAPGS.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// `IA32_MISC_ENABLE` bit 0: fast-string operations enabled.
pub const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// `MTRRdefType` bit 11: MTRRs enabled.
pub const MTRR_ENABLE: u64 = 1 << 11;
/// MTRR memory type write-back.
pub const MTRR_MEM_TYPE_WB: u64 = 6;

fn entry(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

/// MSR values for a direct kernel boot, to pass to `KVM_SET_MSRS`
/// (wrap with `kvm_bindings::Msrs::from_entries`).
///
/// SYSENTER/SYSCALL state and the TSC are zeroed, fast strings enabled, and
/// MTRRs enabled with write-back as the default type (a kernel that finds
/// MTRRs disabled would treat all memory as uncached).
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(msrs: &[kvm_msr_entry], index: u32) -> Option<u64> {
        msrs.iter().find(|m| m.index == index).map(|m| m.data)
    }

    #[test]
    fn boot_msr_values() {
        let msrs = boot_msrs();
        assert_eq!(value(&msrs, 0x1a0), Some(1));
        assert_eq!(value(&msrs, 0x2ff), Some(0x806));
        for index in [
            0x10,
            0x174,
            0x175,
            0x176,
            0xc000_0081,
            0xc000_0082,
            0xc000_0083,
            0xc000_0084,
            0xc000_0102,
        ] {
            assert_eq!(value(&msrs, index), Some(0), "MSR {index:#x}");
        }
        assert_eq!(msrs.len(), 11);
    }

    #[test]
    fn boot_msrs_are_unique_and_clean() {
        let msrs = boot_msrs();
        let mut indices: Vec<u32> = msrs.iter().map(|m| m.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), msrs.len());
        assert!(msrs.iter().all(|m| m.reserved == 0));
    }

    #[test]
    fn fits_kvm_msrs_wrapper() {
        let wrapped = kvm_bindings::Msrs::from_entries(&boot_msrs()).unwrap();
        assert_eq!(wrapped.as_slice(), boot_msrs().as_slice());
    }
}
