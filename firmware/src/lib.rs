//! Guest firmware interfaces for Tessera: what the guest's firmware or
//! kernel reads at boot.
//!
//! * [`acpi`]: ACPI tables (RSDP, XSDT, FADT, FACS, DSDT, MADT) as a
//!   layout-independent model with a direct-boot placement back-end.
//! * [`ovmf`]: OVMF CODE/VARS flash images: validation, per-VM VARS
//!   creation from a template, SMM-build refusal and the flash layout.

#![deny(missing_docs)]

pub mod acpi;
pub mod fw_cfg;
pub mod multiboot;
pub mod ovmf;
pub mod ovmf_smm;
