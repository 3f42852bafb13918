//! Tests for `cpuid`, against fabricated `KVM_GET_SUPPORTED_CPUID` output
//! resembling an Intel and an AMD host.

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;

use super::*;

const IDX: u32 = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

fn e(
    function: u32,
    index: u32,
    flags: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

fn vendor_regs(name: &[u8; 12]) -> (u32, u32, u32) {
    let word = |i: usize| u32::from_le_bytes(name[i..i + 4].try_into().unwrap());
    (word(0), word(8), word(4)) // EBX, ECX, EDX
}

fn leaf0(max: u32, name: &[u8; 12]) -> kvm_cpuid_entry2 {
    let (ebx, ecx, edx) = vendor_regs(name);
    e(0, 0, 0, max, ebx, ecx, edx)
}

/// A 16-core / 32-thread Intel host (host APIC ID 11), without hypervisor leaves.
fn intel_host() -> CpuId {
    CpuId::from_entries(&[
        leaf0(0x1f, b"GenuineIntel"),
        e(0x1, 0, 0, 0x000906ea, 0x0b10_0800, 0x7ffa_fbff, 0xbfeb_fbff),
        // L1d, L1i, L2, L3 (shared by 16 threads), terminator.
        e(0x4, 0, IDX, 0x1c00_4121, 0x01c0_003f, 0x3f, 0),
        e(0x4, 1, IDX, 0x1c00_4122, 0x01c0_003f, 0x3f, 0),
        e(0x4, 2, IDX, 0x1c00_4143, 0x00c0_003f, 0x3ff, 0),
        e(0x4, 3, IDX, 0x1c03_c163, 0x03c0_003f, 0x3fff, 6),
        e(0x4, 4, IDX, 0, 0, 0, 0),
        e(0x6, 0, 0, 0x0000_27f7, 2, 9, 0),
        e(0x7, 0, IDX, 0, 0x029c_6fbf, 0x4000_0000, 0xbc00_0400),
        e(0xb, 0, IDX, 1, 2, 0x100, 11),
        e(0xb, 1, IDX, 5, 32, 0x201, 11),
        e(0xb, 2, IDX, 0, 0, 2, 11),
        e(0x1f, 0, IDX, 1, 2, 0x100, 11),
        e(0x1f, 1, IDX, 5, 32, 0x201, 11),
        e(0x1f, 2, IDX, 0, 0, 2, 11),
        e(0x8000_0000, 0, 0, 0x8000_0008, 0, 0, 0),
        e(0x8000_0001, 0, 0, 0, 0, 0x121, 0x2c10_0800),
        e(0x8000_0008, 0, 0, 0x3027, 0, 0, 0),
    ])
    .unwrap()
}

/// A 16-core / 32-thread AMD host (host APIC ID 0x17), with KVM's
/// hypervisor leaves; leaf 0xB lacks its terminating subleaf.
fn amd_host() -> CpuId {
    CpuId::from_entries(&[
        leaf0(0x10, b"AuthenticAMD"),
        e(
            0x1,
            0,
            0,
            0x00a2_0f10,
            0x1720_0800,
            0xfef8_3203,
            0x178b_fbff,
        ),
        e(0x6, 0, 0, 4, 0, 1, 0),
        e(0xb, 0, IDX, 1, 2, 0x100, 0x17),
        e(0xb, 1, IDX, 7, 32, 0x201, 0x17),
        e(
            0x4000_0000,
            0,
            0,
            0x4000_0001,
            KVM_SIGNATURE[0],
            KVM_SIGNATURE[1],
            KVM_SIGNATURE[2],
        ),
        e(0x4000_0001, 0, 0, 0x0100_7afb, 0, 0, 0),
        e(0x8000_0000, 0, 0, 0x8000_0021, 0, 0, 0),
        e(
            0x8000_0001,
            0,
            0,
            0x00a2_0f10,
            0x2000_0000,
            0x75c2_37ff,
            0x2fd3_fbff,
        ),
        e(0x8000_0008, 0, 0, 0x3030, 0x0111_ef57, 0x0001_701f, 0),
        // L1d, L1i, L2 (each shared by 2 threads), L3 (16 threads), terminator.
        e(0x8000_001d, 0, IDX, 0x0000_4121, 0x01c0_003f, 0x3f, 0),
        e(0x8000_001d, 1, IDX, 0x0000_4122, 0x01c0_003f, 0x3f, 0),
        e(0x8000_001d, 2, IDX, 0x0000_4143, 0x01c0_003f, 0x3ff, 2),
        e(0x8000_001d, 3, IDX, 0x0003_c163, 0x03c0_003f, 0x7fff, 1),
        e(0x8000_001d, 4, IDX, 0, 0, 0, 0),
        e(0x8000_001e, 0, 0, 0x17, 0x0103, 0x0000_0100, 0),
    ])
    .unwrap()
}

fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
    *cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .unwrap_or_else(|| panic!("leaf {function:#x}/{index} missing"))
}

fn count(cpuid: &CpuId, function: u32) -> usize {
    cpuid
        .as_slice()
        .iter()
        .filter(|e| e.function == function)
        .count()
}

fn configured(mut cpuid: CpuId, cpu_index: u32, cpu_count: u32) -> CpuId {
    configure_cpuid(
        &mut cpuid,
        &CpuTopology {
            cpu_index,
            cpu_count,
        },
    )
    .unwrap();
    cpuid
}

#[test]
fn vendor_detection() {
    assert_eq!(cpu_vendor(intel_host().as_slice()), CpuVendor::Intel);
    assert_eq!(cpu_vendor(amd_host().as_slice()), CpuVendor::Amd);
    assert_eq!(cpu_vendor(&[leaf0(0xd, b"HygonGenuine")]), CpuVendor::Amd);
    assert_eq!(cpu_vendor(&[leaf0(0xd, b"TCGTCGTCGTCG")]), CpuVendor::Other);
    // Register order matters: EBX, EDX, ECX.
    assert_eq!(cpu_vendor(&[leaf0(0xd, b"GenuntelineI")]), CpuVendor::Other);
    assert_eq!(cpu_vendor(&[]), CpuVendor::Other);
}

#[test]
fn intel_leaf1() {
    let c = configured(intel_host(), 2, 4);
    let l1 = get(&c, 1, 0);
    assert_eq!(l1.ebx, 0x0204_0800, "APIC ID 2, 4 logical, CLFLUSH 8 kept");
    assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
    assert_eq!(l1.ecx & !LEAF1_ECX_HYPERVISOR, 0x7ffa_fbff);
    assert_eq!(l1.edx, 0xbfeb_fbff);
    assert_eq!(l1.eax, 0x000906ea);
}

#[test]
fn intel_cache_leaf4() {
    let c = configured(intel_host(), 2, 4);
    // Private L1/L2: no sharing, 4 cores per package.
    assert_eq!(get(&c, 4, 0).eax, (3 << 26) | 0x121);
    assert_eq!(get(&c, 4, 1).eax, (3 << 26) | 0x122);
    assert_eq!(get(&c, 4, 2).eax, (3 << 26) | 0x143);
    // L3 shared by all four vCPUs.
    assert_eq!(get(&c, 4, 3).eax, (3 << 26) | (3 << 14) | 0x163);
    // Other registers and the terminator untouched.
    assert_eq!(get(&c, 4, 3).ebx, 0x03c0_003f);
    assert_eq!(get(&c, 4, 4), e(0x4, 4, IDX, 0, 0, 0, 0));
}

#[test]
fn intel_ext_topology() {
    let c = configured(intel_host(), 2, 4);
    for leaf in [0xb, 0x1f] {
        assert_eq!(get(&c, leaf, 0), e(leaf, 0, IDX, 0, 1, 0x100, 2));
        assert_eq!(get(&c, leaf, 1), e(leaf, 1, IDX, 2, 4, 0x201, 2));
        assert_eq!(get(&c, leaf, 2), e(leaf, 2, IDX, 0, 0, 2, 2));
        assert_eq!(count(&c, leaf), 3);
    }
    // Shift = ceil(log2(count)).
    for (cpus, shift) in [(1, 0), (2, 1), (3, 2), (5, 3), (8, 3), (9, 4), (255, 8)] {
        let c = configured(intel_host(), 0, cpus);
        assert_eq!(get(&c, 0xb, 1).eax, shift, "{cpus} vCPUs");
        assert_eq!(get(&c, 0xb, 1).ebx, cpus);
    }
}

#[test]
fn intel_leaves_left_alone_and_added() {
    let c = configured(intel_host(), 2, 4);
    // Leaf 6 keeps only ARAT.
    assert_eq!(get(&c, 6, 0), e(6, 0, 0, 4, 0, 0, 0));
    // AMD-only fields are not touched on Intel.
    assert_eq!(get(&c, 0x8000_0008, 0).ecx, 0);
    assert_eq!(get(&c, 0x8000_0001, 0).ecx, 0x121);
    assert_eq!(get(&c, 7, 0), get(&intel_host(), 7, 0));
    // Hypervisor leaves were missing and are added.
    let h = get(&c, 0x4000_0000, 0);
    let sig: Vec<u8> = [h.ebx, h.ecx, h.edx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
    assert_eq!(h.eax, 0x4000_0001);
    assert_eq!(get(&c, 0x4000_0001, 0), e(0x4000_0001, 0, 0, 0, 0, 0, 0));
    assert_eq!(c.as_slice().len(), intel_host().as_slice().len() + 2);
}

#[test]
fn single_vcpu_clears_smp_hints() {
    let c = configured(intel_host(), 0, 1);
    let l1 = get(&c, 1, 0);
    assert_eq!(l1.edx & LEAF1_EDX_HTT, 0);
    assert_eq!(l1.ebx >> 16, 0x0001);
    assert_eq!(get(&c, 4, 3).eax, 0x163, "no sharing, one core");
    assert_eq!(get(&c, 0xb, 1), e(0xb, 1, IDX, 0, 1, 0x201, 0));

    let c = configured(amd_host(), 0, 1);
    assert_eq!(get(&c, 1, 0).edx & LEAF1_EDX_HTT, 0);
    assert_eq!(get(&c, 0x8000_0001, 0).ecx & EXT_ECX_CMP_LEGACY, 0);
    assert_eq!(get(&c, 0x8000_0008, 0).ecx, 0x0001_0000);
}

#[test]
fn amd_topology() {
    let c = configured(amd_host(), 5, 6);
    let l1 = get(&c, 1, 0);
    assert_eq!(l1.ebx, 0x0506_0800);
    assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
    assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);

    let ext = get(&c, 0x8000_0001, 0);
    assert_eq!(ext.ecx, 0x75c2_37ff, "CmpLegacy stays set");
    // NC = 5, ApicIdCoreIdSize = 3, PerfTscSize (bits 17:16) kept.
    assert_eq!(get(&c, 0x8000_0008, 0).ecx, 0x0001_3005);
    assert_eq!(get(&c, 0x8000_0008, 0).eax, 0x3030);

    assert_eq!(get(&c, 0x8000_001e, 0), e(0x8000_001e, 0, 0, 5, 5, 0, 0));

    // Per-core L1/L2 (host had 2 threads sharing), L3 shared by all 6.
    assert_eq!(get(&c, 0x8000_001d, 0).eax, 0x121);
    assert_eq!(get(&c, 0x8000_001d, 2).eax, 0x143);
    assert_eq!(get(&c, 0x8000_001d, 3).eax, (5 << 14) | 0x163);
    assert_eq!(get(&c, 0x8000_001d, 3).ecx, 0x7fff);
    assert_eq!(get(&c, 0x8000_001d, 4).eax, 0);
}

#[test]
fn amd_ext_topology_gets_terminator() {
    let c = configured(amd_host(), 5, 6);
    assert_eq!(count(&c, 0xb), 3);
    assert_eq!(get(&c, 0xb, 0), e(0xb, 0, IDX, 0, 1, 0x100, 5));
    assert_eq!(get(&c, 0xb, 1), e(0xb, 1, IDX, 3, 6, 0x201, 5));
    assert_eq!(get(&c, 0xb, 2), e(0xb, 2, IDX, 0, 0, 2, 5));
    // Leaf 0x1F was absent and stays absent.
    assert_eq!(count(&c, 0x1f), 0);
}

#[test]
fn amd_keeps_kvm_hypervisor_leaves() {
    let c = configured(amd_host(), 1, 2);
    assert_eq!(get(&c, 0x4000_0000, 0), get(&amd_host(), 0x4000_0000, 0));
    assert_eq!(get(&c, 0x4000_0001, 0).eax, 0x0100_7afb);
    assert_eq!(count(&c, 0x4000_0000), 1);
    assert_eq!(count(&c, 0x4000_0001), 1);
}

#[test]
fn configure_is_idempotent() {
    for host in [intel_host(), amd_host()] {
        let once = configured(host, 3, 4);
        let twice = configured(once.clone(), 3, 4);
        assert_eq!(once.as_slice(), twice.as_slice());
    }
}

#[test]
fn vcpus_differ_only_in_ids() {
    let a = configured(intel_host(), 0, 4);
    let b = configured(intel_host(), 3, 4);
    assert_eq!(get(&a, 1, 0).ebx >> 24, 0);
    assert_eq!(get(&b, 1, 0).ebx >> 24, 3);
    assert_eq!(get(&b, 0x1f, 1).edx, 3);
    assert_eq!(get(&a, 4, 3), get(&b, 4, 3));
}

#[test]
fn topology_errors() {
    let bad = [
        (
            CpuTopology {
                cpu_index: 0,
                cpu_count: 0,
            },
            CpuidError::NoCpus,
        ),
        (
            CpuTopology {
                cpu_index: 4,
                cpu_count: 4,
            },
            CpuidError::IndexOutOfRange { index: 4, count: 4 },
        ),
        (
            CpuTopology {
                cpu_index: 0,
                cpu_count: 256,
            },
            CpuidError::TooManyCpus {
                count: 256,
                max: 255,
            },
        ),
    ];
    for (topo, want) in bad {
        let mut c = intel_host();
        assert_eq!(configure_cpuid(&mut c, &topo), Err(want));
        // Nothing was changed.
        assert_eq!(c.as_slice(), intel_host().as_slice());
    }
    let msg = CpuidError::IndexOutOfRange { index: 4, count: 4 }.to_string();
    assert!(msg.contains('4'), "{msg}");
}

#[test]
fn full_array_is_an_error() {
    let mut entries = vec![leaf0(0xd, b"GenuineIntel")];
    entries.extend((1..KVM_MAX_CPUID_ENTRIES as u32).map(|i| e(0x8000_0000 + i, 0, 0, 0, 0, 0, 0)));
    let mut c = CpuId::from_entries(&entries).unwrap();
    let err = configure_cpuid(
        &mut c,
        &CpuTopology {
            cpu_index: 0,
            cpu_count: 1,
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        CpuidError::Full {
            function: 0x4000_0000,
            index: 0
        }
    );
}
