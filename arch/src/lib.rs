//! x86_64 platform facts for Tessera, as data and pure functions: the guest
//! physical memory map, e820 tables, CPUID shaping, boot MSRs, and boot
//! register state with its GDT and page tables.
//!
//! Nothing here performs I/O. The `vmm` crate applies these values through
//! KVM ioctls and writes the returned blobs into guest memory.

#![deny(missing_docs)]

pub mod cpuid;
pub mod e820;
pub mod layout;
pub mod msr;
pub mod regs;

pub use cpuid::{CpuTopology, CpuVendor, CpuidError, configure_cpuid};
pub use e820::{E820Entry, E820Type};
pub use layout::{LayoutError, MemoryLayout};
pub use msr::boot_msrs;
