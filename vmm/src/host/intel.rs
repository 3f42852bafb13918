//! Intel GPU facts: names for the device IDs with SR-IOV, and which VFs the
//! `xe-vfio-pci` variant driver takes.
//!
//! Device IDs are from the kernel's `include/drm/intel/pciids.h`
//! (torvalds/linux, 2026: `INTEL_ADLS_IDS`, `INTEL_ADLP_IDS`,
//! `INTEL_ADLN_IDS`, `INTEL_RPLS_IDS`, `INTEL_RPLU_IDS`, `INTEL_RPLP_IDS`,
//! `INTEL_MTL_IDS`, `INTEL_ARL_IDS`, `INTEL_LNL_IDS`, `INTEL_BMG_IDS`,
//! `INTEL_PTL_IDS`, `INTEL_WCL_IDS`, `INTEL_ATS_M_IDS`, `INTEL_PVC_IDS`).
//! `xe-vfio-pci` binds `INTEL_PTL_IDS`, `INTEL_WCL_IDS` and `INTEL_BMG_IDS`
//! (`drivers/vfio/pci/xe/main.c`), and only through `driver_override`.

/// The Intel PCI vendor ID.
pub const INTEL: u16 = 0x8086;

/// (family name, device IDs).
const FAMILIES: &[(&str, &[u16])] = &[
    (
        "Alder Lake-S (UHD 730/770)",
        &[
            0x4680, 0x4682, 0x4688, 0x468a, 0x468b, 0x4690, 0x4692, 0x4693,
        ],
    ),
    (
        "Alder Lake-P (Iris Xe)",
        &[
            0x46a0, 0x46a1, 0x46a2, 0x46a3, 0x46a6, 0x46a8, 0x46aa, 0x462a, 0x4626, 0x4628, 0x46b0,
            0x46b1, 0x46b2, 0x46b3, 0x46c0, 0x46c1, 0x46c2, 0x46c3,
        ],
    ),
    ("Alder Lake-N", &[0x46d0, 0x46d1, 0x46d2, 0x46d3, 0x46d4]),
    (
        "Raptor Lake-S (UHD 730/770)",
        &[
            0xa780, 0xa781, 0xa782, 0xa783, 0xa788, 0xa789, 0xa78a, 0xa78b,
        ],
    ),
    ("Raptor Lake-U", &[0xa721, 0xa7a1, 0xa7a9, 0xa7ac, 0xa7ad]),
    ("Raptor Lake-P", &[0xa720, 0xa7a0, 0xa7a8, 0xa7aa, 0xa7ab]),
    (
        "Meteor Lake (Arc)",
        &[0x7d40, 0x7d45, 0x7d55, 0x7d60, 0x7dd5],
    ),
    (
        "Arrow Lake (Arc)",
        &[0x7d51, 0x7dd1, 0x7d41, 0x7d67, 0xb640],
    ),
    ("Lunar Lake (Arc 130V/140V)", &[0x6420, 0x64a0, 0x64b0]),
    (
        "Battlemage (Arc B-series)",
        &[
            0xe202, 0xe209, 0xe20b, 0xe20c, 0xe20d, 0xe210, 0xe211, 0xe212, 0xe216, 0xe220, 0xe221,
            0xe222, 0xe223,
        ],
    ),
    (
        "Panther Lake",
        &[
            0xb080, 0xb081, 0xb082, 0xb083, 0xb084, 0xb085, 0xb086, 0xb087, 0xb08f, 0xb090, 0xb0a0,
            0xb0b0,
        ],
    ),
    ("Wildcat Lake", &[0xfd80, 0xfd81]),
    ("Data Center GPU Flex (ATS-M)", &[0x56c0, 0x56c1, 0x56c2]),
    (
        "Data Center GPU Max (Ponte Vecchio)",
        &[
            0x0b69, 0x0b6e, 0x0bd4, 0x0bd5, 0x0bd6, 0x0bd7, 0x0bd8, 0x0bd9, 0x0bda, 0x0bdb, 0x0be0,
            0x0be1, 0x0be5,
        ],
    ),
];

/// The families `xe-vfio-pci` binds.
const XE_VFIO_FAMILIES: &[&str] = &["Battlemage (Arc B-series)", "Panther Lake", "Wildcat Lake"];

fn family(vendor: u16, device: u16) -> Option<&'static str> {
    if vendor != INTEL {
        return None;
    }
    FAMILIES
        .iter()
        .find(|(_, ids)| ids.contains(&device))
        .map(|(name, _)| *name)
}

/// "Intel Battlemage (Arc B-series)" for a known Intel GPU with SR-IOV.
pub fn gpu_name(vendor: u16, device: u16) -> Option<String> {
    family(vendor, device).map(|f| format!("Intel {f}"))
}

/// True when the `xe-vfio-pci` variant driver takes this device ID.
pub fn xe_vfio_supports(vendor: u16, device: u16) -> bool {
    family(vendor, device).is_some_and(|f| XE_VFIO_FAMILIES.contains(&f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_intel_gpus_have_names_and_others_do_not() {
        assert_eq!(
            gpu_name(INTEL, 0xa780).as_deref(),
            Some("Intel Raptor Lake-S (UHD 730/770)")
        );
        assert_eq!(
            gpu_name(INTEL, 0xe20b).as_deref(),
            Some("Intel Battlemage (Arc B-series)")
        );
        assert_eq!(gpu_name(INTEL, 0x10c9), None);
        assert_eq!(gpu_name(0x10de, 0xa780), None);
    }

    #[test]
    fn xe_vfio_pci_takes_battlemage_and_panther_lake_only() {
        assert!(xe_vfio_supports(INTEL, 0xe20b));
        assert!(xe_vfio_supports(INTEL, 0xb080));
        assert!(!xe_vfio_supports(INTEL, 0xa780));
        assert!(!xe_vfio_supports(INTEL, 0x56c0));
    }
}
