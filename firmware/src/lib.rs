//! Guest firmware interfaces for Tessera: what the guest's firmware or
//! kernel reads at boot.
//!
//! * [`acpi`]: ACPI tables (RSDP, XSDT, FADT, FACS, DSDT, MADT) as a
//!   layout-independent model with a direct-boot placement back-end.

#![deny(missing_docs)]

pub mod acpi;
