//! Which capabilities of a passed-through function the guest sees.
//!
//! One place decides: [`keep_capability`] for the conventional list at
//! 0x34 and [`keep_extended_capability`] for the PCI Express list at
//! 0x100. Everything not kept is unlinked from its list and reads as zero.
//!
//! Conventional capabilities are an allow-list: power management, MSI,
//! MSI-X, PCI Express and vendor-specific, what a GPU VF or an ordinary
//! endpoint driver uses (QEMU, Cloud Hypervisor and crosvm expose about the
//! same set). VPD (a register protocol that reads board data from an
//! EEPROM), Enhanced Allocation (fixed BAR addresses that bypass the BAR
//! emulation), PCI-X, AGP, HyperTransport, hot-plug and bridge-only
//! capabilities are hidden. MSI or MSI-X whose interrupts the host driver
//! does not offer are hidden too.
//!
//! A hidden capability is unlinked and its own bytes ([`capability_len`],
//! [`extended_capability_len`]) read as zero; registers after it are left
//! alone.
//!
//! Extended capabilities are an allow-list too, because most of them
//! describe the host's topology or the physical function rather than the
//! device the guest drives: SR-IOV and VF Resizable BAR (PF-only: a guest
//! that writes them would reconfigure the host's VFs), ARI (next-function
//! numbering that only makes sense on the host bus), Resizable BAR (the
//! guest must not resize a BAR whose host mapping is fixed), ATS/PRI/PASID
//! (need a virtual IOMMU), ACS, LTR, L1 PM substates, DPC, PTM, the
//! physical-layer and lane-margining capabilities (the host link), TPH
//! (host steering tags), DOE/IDE (host-side security protocols).

/// Conventional capability IDs (PCI Local Bus 3.0 / PCI Code and ID
/// Assignment).
pub mod id {
    /// Power management.
    pub const PM: u8 = 0x01;
    /// Vital product data.
    pub const VPD: u8 = 0x03;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor-specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const EXP: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
    /// Advanced features (conventional-PCI FLR).
    pub const AF: u8 = 0x13;
    /// Enhanced allocation.
    pub const EA: u8 = 0x14;
}

/// Extended capability IDs (PCI Express Base 6.0, 7.9).
pub mod ext_id {
    /// Advanced error reporting.
    pub const AER: u16 = 0x0001;
    /// Device serial number.
    pub const DSN: u16 = 0x0003;
    /// Vendor-specific extended capability.
    pub const VSEC: u16 = 0x000b;
    /// Access control services.
    pub const ACS: u16 = 0x000d;
    /// Alternative routing-ID interpretation.
    pub const ARI: u16 = 0x000e;
    /// Address translation services.
    pub const ATS: u16 = 0x000f;
    /// Single-root I/O virtualization.
    pub const SRIOV: u16 = 0x0010;
    /// Page request interface.
    pub const PRI: u16 = 0x0013;
    /// Resizable BAR.
    pub const REBAR: u16 = 0x0015;
    /// Latency tolerance reporting.
    pub const LTR: u16 = 0x0018;
    /// Process address space ID.
    pub const PASID: u16 = 0x001b;
    /// Designated vendor-specific extended capability.
    pub const DVSEC: u16 = 0x0023;
    /// VF resizable BAR.
    pub const VF_REBAR: u16 = 0x0024;
}

/// Bytes of the conventional capability `id` at `at`, read with `rd`
/// (a byte reader of configuration space); at least its 2-byte header.
pub fn capability_len(id: u8, at: u16, rd: impl Fn(u16) -> u8) -> u16 {
    let w = |o: u16| u16::from(rd(at + o)) | (u16::from(rd(at + o + 1)) << 8);
    match id {
        0x02 => 12,   // AGP
        0x04 => 4,    // slot identification
        id::VPD => 8, // address + data
        id::MSI => {
            let ctrl = w(2);
            let data = if ctrl & (1 << 7) != 0 { 0xc } else { 0x8 };
            if ctrl & (1 << 8) != 0 {
                data + 12
            } else {
                data + 2
            }
        }
        0x07 => 8, // PCI-X (device)
        0x0a => 4, // debug port
        0x0d => 8, // subsystem vendor ID
        id::MSIX => 12,
        id::AF => 6,
        id::EA => {
            // Header, then NumEntries entries of 1 + EntrySize dwords.
            let n = u16::from(rd(at + 2) & 0x3f);
            let mut len = 4u16;
            for _ in 0..n {
                if usize::from(at + len) + 4 > 256 {
                    break;
                }
                let esize = u16::from(rd(at + len) & 0x7);
                len += 4 + 4 * esize;
            }
            len
        }
        _ => 2,
    }
}

/// Bytes of the extended capability `id` at `at`; at least its 4-byte
/// header.
pub fn extended_capability_len(id: u16, at: u16, rd: impl Fn(u16) -> u8) -> u16 {
    match id {
        0x0004 => 0x10, // power budgeting
        ext_id::DSN => 0xc,
        ext_id::ACS => 8,
        ext_id::ARI => 8,
        ext_id::ATS => 8,
        ext_id::SRIOV => 0x40,
        ext_id::PRI => 0x10,
        ext_id::REBAR | ext_id::VF_REBAR => {
            // Number of resizable BARs: control register bits 7:5.
            let n = u16::from((rd(at + 8) >> 5) & 0x7).max(1);
            4 + 8 * n
        }
        ext_id::LTR => 8,
        ext_id::PASID => 8,
        0x001e => 0x10, // L1 PM substates
        0x001f => 0xc,  // precision time measurement
        _ => 4,
    }
}

/// True when the guest sees the conventional capability `id`.
pub fn keep_capability(id: u8) -> bool {
    matches!(id, id::PM | id::MSI | id::VENDOR | id::EXP | id::MSIX)
}

/// True when the guest sees the extended capability `id`: error reporting,
/// the device's serial number and vendor-specific data (GPU drivers keep
/// their own structures in VSEC/DVSEC); nothing that describes the host
/// link, the PF or an IOMMU.
pub fn keep_extended_capability(id: u16) -> bool {
    matches!(id, ext_id::AER | ext_id::DSN | ext_id::VSEC | ext_id::DVSEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pf_only_and_host_revealing_capabilities_are_hidden() {
        for hidden in [id::VPD, id::AF, id::EA, 0x02, 0x07, 0x0d] {
            assert!(!keep_capability(hidden), "{hidden:#x}");
        }
        for kept in [id::PM, id::MSI, id::MSIX, id::EXP, id::VENDOR] {
            assert!(keep_capability(kept), "{kept:#x}");
        }
        for hidden in [
            ext_id::SRIOV,
            ext_id::ARI,
            ext_id::REBAR,
            ext_id::VF_REBAR,
            ext_id::ATS,
            ext_id::PRI,
            ext_id::PASID,
            ext_id::ACS,
            ext_id::LTR,
            0x0000,
            0x001e,
            0x001d,
        ] {
            assert!(!keep_extended_capability(hidden), "{hidden:#x}");
        }
        for kept in [ext_id::AER, ext_id::DSN, ext_id::VSEC, ext_id::DVSEC] {
            assert!(keep_extended_capability(kept), "{kept:#x}");
        }
    }
}
