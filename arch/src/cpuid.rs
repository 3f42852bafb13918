//! CPUID shaping for one vCPU.
//!
//! `KVM_GET_SUPPORTED_CPUID` describes what KVM can virtualise, but its
//! topology fields describe the host (APIC IDs, core counts, cache sharing).
//! [`configure_cpuid`] rewrites those fields for a guest with one socket,
//! `cpu_count` cores and one thread per core, where the APIC ID of a vCPU is
//! its index.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};
use thiserror::Error;

/// Largest vCPU count supported: xAPIC IDs are 8 bits and 0xff is the
/// broadcast ID, and the leaf 1 logical-processor count is 8 bits.
pub const MAX_CPUS: u32 = 255;

/// Leaf 0: vendor string and highest basic leaf.
pub const LEAF_VENDOR: u32 = 0x0;
/// Leaf 1: family/model, APIC ID, feature flags.
pub const LEAF_FEATURES: u32 = 0x1;
/// Leaf 4: deterministic cache parameters (Intel).
pub const LEAF_CACHE_PARAMS: u32 = 0x4;
/// Leaf 6: thermal and power management.
pub const LEAF_THERMAL_POWER: u32 = 0x6;
/// Leaf 0xB: extended topology (x2APIC).
pub const LEAF_EXT_TOPOLOGY: u32 = 0xb;
/// Leaf 0x1F: V2 extended topology.
pub const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
/// Hypervisor leaf: highest hypervisor leaf and the KVM signature.
pub const LEAF_HYPERVISOR: u32 = 0x4000_0000;
/// KVM paravirtual feature leaf.
pub const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
/// Extended features (AMD CmpLegacy lives here).
pub const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
/// Address sizes and (AMD) core count.
pub const LEAF_ADDRESS_SIZES: u32 = 0x8000_0008;
/// AMD cache topology.
pub const LEAF_AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
/// AMD extended APIC ID, core and node IDs.
pub const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

/// Leaf 1 EDX bit 28: more than one logical processor per package (HTT).
pub const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 1 ECX bit 31: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 6 EAX bit 2: APIC timer always running (ARAT), the only bit KVM offers.
pub const LEAF6_EAX_ARAT: u32 = 1 << 2;
/// Leaf 0x80000001 ECX bit 1: core multi-processing legacy mode (AMD).
pub const EXT_ECX_CMP_LEGACY: u32 = 1 << 1;

/// KVM signature in the hypervisor leaf, as EBX, ECX, EDX ("KVMKVMKVM\0\0\0").
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// Level types of leaves 0xB / 0x1F (ECX[15:8]).
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Errors shaping CPUID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CpuidError {
    /// A VM needs at least one vCPU.
    #[error("the vCPU count must be at least 1")]
    NoCpus,
    /// More vCPUs than APIC IDs can address.
    #[error("{count} vCPUs requested, at most {max} are supported")]
    TooManyCpus {
        /// Requested vCPU count.
        count: u32,
        /// Largest supported count.
        max: u32,
    },
    /// The vCPU index is not below the vCPU count.
    #[error("vCPU index {index} is out of range for {count} vCPUs")]
    IndexOutOfRange {
        /// Requested index.
        index: u32,
        /// vCPU count.
        count: u32,
    },
    /// No room left in the CPUID array for a leaf that must be added.
    #[error("no room in the CPUID array to add leaf {function:#x} subleaf {index}")]
    Full {
        /// Leaf that could not be added.
        function: u32,
        /// Its subleaf.
        index: u32,
    },
}

/// CPU vendor, from the leaf 0 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD" (or Hygon's AMD-compatible "HygonGenuine").
    Amd,
    /// Anything else, or leaf 0 missing.
    Other,
}

/// Position of one vCPU: one socket, `cpu_count` cores, one thread per core,
/// APIC ID = `cpu_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// Index of this vCPU, also its APIC ID.
    pub cpu_index: u32,
    /// Number of vCPUs in the VM.
    pub cpu_count: u32,
}

impl CpuTopology {
    fn validate(&self) -> Result<(), CpuidError> {
        if self.cpu_count == 0 {
            return Err(CpuidError::NoCpus);
        }
        if self.cpu_count > MAX_CPUS {
            return Err(CpuidError::TooManyCpus {
                count: self.cpu_count,
                max: MAX_CPUS,
            });
        }
        if self.cpu_index >= self.cpu_count {
            return Err(CpuidError::IndexOutOfRange {
                index: self.cpu_index,
                count: self.cpu_count,
            });
        }
        Ok(())
    }

    /// APIC ID bits needed to number the cores: ceil(log2(cpu_count)).
    fn core_bits(&self) -> u32 {
        u32::BITS - (self.cpu_count - 1).leading_zeros()
    }
}

/// The physical address width leaf 0x8000_0008 reports (EAX bits 7:0).
pub fn phys_bits(entries: &[kvm_cpuid_entry2]) -> Option<u8> {
    entries
        .iter()
        .find(|e| e.function == LEAF_ADDRESS_SIZES)
        .map(|e| (e.eax & 0xff) as u8)
        .filter(|&b| b > 0)
}

/// Lower the physical address width leaf 0x8000_0008 reports to at most
/// `bits` (e.g. the host IOMMU's width); wider values are left alone.
pub fn limit_phys_bits(entries: &mut [kvm_cpuid_entry2], bits: u8) {
    for e in entries
        .iter_mut()
        .filter(|e| e.function == LEAF_ADDRESS_SIZES)
    {
        let have = (e.eax & 0xff) as u8;
        if have > bits {
            e.eax = (e.eax & !0xff) | u32::from(bits);
        }
    }
}

/// Reads the vendor from leaf 0.
pub fn cpu_vendor(entries: &[kvm_cpuid_entry2]) -> CpuVendor {
    let Some(leaf0) = entries.iter().find(|e| e.function == LEAF_VENDOR) else {
        return CpuVendor::Other;
    };
    let mut name = [0u8; 12];
    name[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    name[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &name {
        b"GenuineIntel" => CpuVendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => CpuVendor::Amd,
        _ => CpuVendor::Other,
    }
}

/// Makes `cpuid` (as returned by `KVM_GET_SUPPORTED_CPUID`) correct for the
/// vCPU described by `topo`; pass the result to `KVM_SET_CPUID2`.
///
/// - leaf 1: APIC ID, logical processor count, HTT when more than one vCPU,
///   hypervisor bit; the CLFLUSH size and brand index are kept;
/// - leaf 4: cores per package; L1/L2 private to a core, the highest cache
///   level (if at least L2) shared by all vCPUs;
/// - leaf 6: only ARAT kept;
/// - leaves 0xB and 0x1F (when present): SMT level, core level, then
///   invalid levels, x2APIC ID = `cpu_index`; subleaves 0-2 are added if missing;
/// - AMD: CmpLegacy (0x80000001), core count and ApicIdCoreIdSize
///   (0x80000008), cache sharing (0x8000001D) and extended APIC/core/node
///   IDs (0x8000001E);
/// - the KVM hypervisor leaves 0x40000000/0x40000001 are added if missing.
///
/// The topology is checked before anything is changed; a [`CpuidError::Full`]
/// error may leave leaves already added in place.
pub fn configure_cpuid(cpuid: &mut CpuId, topo: &CpuTopology) -> Result<(), CpuidError> {
    topo.validate()?;
    let vendor = cpu_vendor(cpuid.as_slice());
    add_missing_leaves(cpuid)?;

    let leaf4_top = highest_cache_level(cpuid.as_slice(), LEAF_CACHE_PARAMS);
    let amd_cache_top = highest_cache_level(cpuid.as_slice(), LEAF_AMD_CACHE_TOPOLOGY);
    let amd = vendor == CpuVendor::Amd;

    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => set_leaf1(entry, topo),
            LEAF_CACHE_PARAMS => set_cache_params(entry, topo, leaf4_top, true),
            LEAF_THERMAL_POWER => {
                entry.eax &= LEAF6_EAX_ARAT;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => set_ext_topology(entry, topo),
            LEAF_EXT_FEATURES if amd => {
                if topo.cpu_count > 1 {
                    entry.ecx |= EXT_ECX_CMP_LEGACY;
                } else {
                    entry.ecx &= !EXT_ECX_CMP_LEGACY;
                }
            }
            LEAF_ADDRESS_SIZES if amd => {
                // ECX[7:0] NC = cores - 1, ECX[15:12] ApicIdCoreIdSize.
                entry.ecx = (entry.ecx & !0xf0ff) | (topo.core_bits() << 12) | (topo.cpu_count - 1);
            }
            LEAF_AMD_CACHE_TOPOLOGY if amd => {
                set_cache_params(entry, topo, amd_cache_top, false);
            }
            LEAF_AMD_EXT_APIC_ID if amd => {
                entry.eax = topo.cpu_index;
                // EBX[7:0] core ID, EBX[15:8] threads per core - 1 = 0.
                entry.ebx = (entry.ebx & !0xffff) | (topo.cpu_index & 0xff);
                // ECX[7:0] node ID 0, ECX[10:8] nodes per processor - 1 = 0.
                entry.ecx &= !0x7ff;
            }
            _ => {}
        }
    }
    Ok(())
}

fn has_leaf(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> bool {
    entries
        .iter()
        .any(|e| e.function == function && e.index == index)
}

fn push(
    cpuid: &mut CpuId,
    function: u32,
    index: u32,
    flags: u32,
    regs: [u32; 4],
) -> Result<(), CpuidError> {
    let [eax, ebx, ecx, edx] = regs;
    let entry = kvm_cpuid_entry2 {
        function,
        index,
        flags,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    cpuid
        .push(entry)
        .map_err(|_| CpuidError::Full { function, index })
}

fn add_missing_leaves(cpuid: &mut CpuId) -> Result<(), CpuidError> {
    if !has_leaf(cpuid.as_slice(), LEAF_HYPERVISOR, 0) {
        let [ebx, ecx, edx] = KVM_SIGNATURE;
        push(
            cpuid,
            LEAF_HYPERVISOR,
            0,
            0,
            [LEAF_KVM_FEATURES, ebx, ecx, edx],
        )?;
    }
    if !has_leaf(cpuid.as_slice(), LEAF_KVM_FEATURES, 0) {
        push(cpuid, LEAF_KVM_FEATURES, 0, 0, [0; 4])?;
    }
    // The topology leaves are indexed; a guest walks subleaves until it
    // finds level type 0, so make sure SMT, core and the terminator exist.
    for function in [LEAF_EXT_TOPOLOGY, LEAF_EXT_TOPOLOGY_V2] {
        if !cpuid.as_slice().iter().any(|e| e.function == function) {
            continue;
        }
        for index in 0..3 {
            if !has_leaf(cpuid.as_slice(), function, index) {
                push(
                    cpuid,
                    function,
                    index,
                    KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                    [0; 4],
                )?;
            }
        }
    }
    Ok(())
}

fn set_leaf1(entry: &mut kvm_cpuid_entry2, topo: &CpuTopology) {
    // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
    entry.ebx = (entry.ebx & 0xffff) | (topo.cpu_index << 24) | (topo.cpu_count << 16);
    entry.ecx |= LEAF1_ECX_HYPERVISOR;
    if topo.cpu_count > 1 {
        entry.edx |= LEAF1_EDX_HTT;
    } else {
        entry.edx &= !LEAF1_EDX_HTT;
    }
}

/// Cache type in EAX[4:0] of leaves 4 and 0x8000001D; 0 means no more caches.
fn cache_type(entry: &kvm_cpuid_entry2) -> u32 {
    entry.eax & 0x1f
}

/// Cache level in EAX[7:5] of leaves 4 and 0x8000001D.
fn cache_level(entry: &kvm_cpuid_entry2) -> u32 {
    (entry.eax >> 5) & 0x7
}

fn highest_cache_level(entries: &[kvm_cpuid_entry2], function: u32) -> u32 {
    entries
        .iter()
        .filter(|e| e.function == function && cache_type(e) != 0)
        .map(cache_level)
        .max()
        .unwrap_or(0)
}

/// Rewrites sharing in a leaf 4 / 0x8000001D subleaf. The cache at
/// `top_level` (when at least L2) is shared by every vCPU, lower levels are
/// private. `cores_field` sets leaf 4's EAX[31:26] cores-per-package field,
/// which leaf 0x8000001D does not have.
fn set_cache_params(
    entry: &mut kvm_cpuid_entry2,
    topo: &CpuTopology,
    top_level: u32,
    cores_field: bool,
) {
    if cache_type(entry) == 0 {
        return;
    }
    let shared = top_level >= 2 && cache_level(entry) == top_level;
    // EAX[25:14]: addressable IDs sharing this cache - 1.
    let sharing = if shared { topo.cpu_count - 1 } else { 0 };
    entry.eax = (entry.eax & !(0xfff << 14)) | (sharing << 14);
    if cores_field {
        // EAX[31:26]: addressable core IDs in the package - 1 (6 bits).
        let cores = (topo.cpu_count - 1).min(0x3f);
        entry.eax = (entry.eax & !(0x3f << 26)) | (cores << 26);
    }
}

fn set_ext_topology(entry: &mut kvm_cpuid_entry2, topo: &CpuTopology) {
    let index = entry.index & 0xff;
    // EAX[4:0]: APIC ID shift to the next level; EBX[15:0]: logical
    // processors at this level; ECX[15:8]: level type, ECX[7:0]: subleaf.
    let (eax, ebx, level_type) = match index {
        0 => (0, 1, LEVEL_TYPE_SMT),
        1 => (topo.core_bits(), topo.cpu_count, LEVEL_TYPE_CORE),
        _ => (0, 0, 0),
    };
    entry.eax = eax;
    entry.ebx = ebx;
    entry.ecx = (level_type << 8) | index;
    entry.edx = topo.cpu_index;
    entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
}

#[cfg(test)]
#[path = "cpuid_tests.rs"]
mod tests;
