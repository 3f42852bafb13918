//! KVM memory slots beyond guest RAM: firmware ROM and flash mapped as
//! read-only memory, so reads run at memory speed and only writes exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{MmapRegion, VolatileMemory};

use crate::kvm::KvmError;

/// Host memory backing a slot: an anonymous mapping owned here.
#[derive(Debug)]
pub struct HostBuffer {
    region: MmapRegion,
}

impl HostBuffer {
    /// `len` bytes of zeroed anonymous memory.
    pub fn new(len: usize) -> std::io::Result<Self> {
        let region = MmapRegion::new(len).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { region })
    }

    /// Copy `bytes` in at offset 0 (they must fit).
    pub fn fill(&self, bytes: &[u8]) -> std::io::Result<()> {
        let vs = self
            .region
            .get_slice(0, bytes.len())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        vs.copy_from(bytes);
        Ok(())
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.region.size()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hands out slot numbers above the RAM slots and (un)maps buffers.
#[derive(Debug)]
pub struct Slots {
    vm: Arc<VmFd>,
    next: AtomicU32,
}

impl Slots {
    /// Slot numbers start at `first_free` (the RAM slots come first).
    pub fn new(vm: Arc<VmFd>, first_free: u32) -> Self {
        Self {
            vm,
            next: AtomicU32::new(first_free),
        }
    }

    /// A fresh slot number.
    pub fn allocate(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Map `buf` at guest address `gpa` in `slot`, read-only for the guest
    /// when `read_only` (guest writes then exit as MMIO writes).
    pub fn map(
        &self,
        slot: u32,
        gpa: u64,
        buf: &HostBuffer,
        read_only: bool,
    ) -> Result<(), KvmError> {
        let r = kvm_userspace_memory_region {
            slot,
            flags: if read_only { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: buf.len() as u64,
            userspace_addr: buf.region.as_ptr() as u64,
        };
        // SAFETY: `buf` is a live anonymous mapping of exactly
        // `memory_size` bytes; its owner keeps it alive for as long as the
        // slot is mapped (the VM's platform owns both and unmaps or drops
        // the VM first).
        unsafe { self.vm.set_user_memory_region(r) }
            .map_err(|e| KvmError::Ioctl("map a firmware memory slot", e))
    }

    /// Remove `slot`: guest accesses to its range exit as MMIO again.
    pub fn unmap(&self, slot: u32, gpa: u64) -> Result<(), KvmError> {
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a zero-sized region deletes the slot; no host memory is
        // handed to KVM.
        unsafe { self.vm.set_user_memory_region(r) }
            .map_err(|e| KvmError::Ioctl("unmap a firmware memory slot", e))
    }
}
