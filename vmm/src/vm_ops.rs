//! What the machine asks of the hypervisor after the VM exists: memory
//! slots, the GSI routing table, irqfds and ioeventfds.
//!
//! [`VmOps`] is implemented for KVM's `VmFd`; the platform and the
//! interrupt router hold an `Arc<dyn VmOps>`, so their logic is unit-tested
//! with [`tests::Recorder`], which records every call.

use kvm_bindings::{
    KVM_MEM_READONLY, KvmIrqRouting, kvm_irq_routing_entry, kvm_userspace_memory_region,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::kvm::KvmError;

/// Hypervisor operations on a running VM.
pub trait VmOps: Send + Sync {
    /// Map `len` bytes of host memory at `host` into the guest at `gpa` as
    /// slot `slot` (replacing what the slot held).
    ///
    /// # Safety
    ///
    /// `host..host + len` must be a live mapping of this process that
    /// stays mapped until the slot is removed or replaced.
    unsafe fn set_memory(
        &self,
        slot: u32,
        gpa: u64,
        len: u64,
        host: u64,
        read_only: bool,
    ) -> Result<(), KvmError>;

    /// Remove slot `slot` (guest accesses to its range exit again).
    fn remove_memory(&self, slot: u32, gpa: u64) -> Result<(), KvmError>;

    /// Replace the whole GSI routing table.
    fn set_routes(&self, routes: &[kvm_irq_routing_entry]) -> Result<(), KvmError>;

    /// Deliver GSI `gsi` whenever `fd` is signalled.
    fn assign_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), KvmError>;

    /// Stop delivering `fd` on `gsi`; signals then stay in the eventfd.
    fn deassign_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), KvmError>;

    /// A level-triggered irqfd: KVM asserts `gsi` on `fd` and signals
    /// `resample` when the guest acknowledges the interrupt (EOI).
    fn assign_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), KvmError>;

    /// Inject one MSI now (`KVM_SIGNAL_MSI`), from userspace.
    fn signal_msi(&self, address: u64, data: u32) -> Result<(), KvmError>;

    /// Signal `fd` on a guest write of any width to MMIO address `addr`,
    /// in the kernel (`KVM_IOEVENTFD`): the write never exits.
    fn register_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), KvmError>;

    /// Undo [`register_ioevent`](Self::register_ioevent).
    fn unregister_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), KvmError>;

    /// Make guest writes to the MMIO range `addr..addr + len` that reach
    /// no memory slot go to the coalesced ring instead of exiting
    /// (`KVM_REGISTER_COALESCED_MMIO`).
    fn register_coalesced(&self, addr: u64, len: u32) -> Result<(), KvmError>;

    /// Undo [`VmOps::register_coalesced`]; once it returns no write is
    /// added to the ring for the range.
    fn unregister_coalesced(&self, addr: u64, len: u32) -> Result<(), KvmError>;
}

impl VmOps for VmFd {
    unsafe fn set_memory(
        &self,
        slot: u32,
        gpa: u64,
        len: u64,
        host: u64,
        read_only: bool,
    ) -> Result<(), KvmError> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: if read_only { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: host,
        };
        // SAFETY: the caller guarantees the host range stays mapped for as
        // long as the slot exists.
        unsafe { self.set_user_memory_region(region) }
            .map_err(|e| KvmError::Ioctl("map a memory slot", e))
    }

    fn remove_memory(&self, slot: u32, gpa: u64) -> Result<(), KvmError> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a zero-sized region deletes the slot; no host memory is
        // handed to KVM.
        unsafe { self.set_user_memory_region(region) }
            .map_err(|e| KvmError::Ioctl("remove a memory slot", e))
    }

    fn set_routes(&self, routes: &[kvm_irq_routing_entry]) -> Result<(), KvmError> {
        let routing = KvmIrqRouting::from_entries(routes)
            .map_err(|_| KvmError::TooManyRoutes(routes.len()))?;
        self.set_gsi_routing(&routing)
            .map_err(|e| KvmError::Ioctl("set the interrupt routing", e))
    }

    fn assign_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), KvmError> {
        self.register_irqfd(fd, gsi)
            .map_err(|e| KvmError::Ioctl("register an irqfd", e))
    }

    fn deassign_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), KvmError> {
        self.unregister_irqfd(fd, gsi)
            .map_err(|e| KvmError::Ioctl("unregister an irqfd", e))
    }

    fn assign_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), KvmError> {
        self.register_irqfd_with_resample(fd, resample, gsi)
            .map_err(|e| KvmError::Ioctl("register a level irqfd", e))
    }

    fn signal_msi(&self, address: u64, data: u32) -> Result<(), KvmError> {
        let msi = kvm_bindings::kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        VmFd::signal_msi(self, msi)
            .map(|_| ())
            .map_err(|e| KvmError::Ioctl("inject an MSI", e))
    }

    fn register_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), KvmError> {
        VmFd::register_ioevent(
            self,
            fd,
            &kvm_ioctls::IoEventAddress::Mmio(addr),
            kvm_ioctls::NoDatamatch,
        )
        .map_err(|e| KvmError::Ioctl("register an ioeventfd", e))
    }

    fn unregister_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), KvmError> {
        VmFd::unregister_ioevent(
            self,
            fd,
            &kvm_ioctls::IoEventAddress::Mmio(addr),
            kvm_ioctls::NoDatamatch,
        )
        .map_err(|e| KvmError::Ioctl("unregister an ioeventfd", e))
    }

    fn register_coalesced(&self, addr: u64, len: u32) -> Result<(), KvmError> {
        VmFd::register_coalesced_mmio(self, kvm_ioctls::IoEventAddress::Mmio(addr), len)
            .map_err(|e| KvmError::Ioctl("register a coalesced MMIO zone", e))
    }

    fn unregister_coalesced(&self, addr: u64, len: u32) -> Result<(), KvmError> {
        VmFd::unregister_coalesced_mmio(self, kvm_ioctls::IoEventAddress::Mmio(addr), len)
            .map_err(|e| KvmError::Ioctl("unregister a coalesced MMIO zone", e))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::Mutex;

    use super::*;

    /// One call the platform made.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        SetMemory {
            slot: u32,
            gpa: u64,
            len: u64,
            read_only: bool,
        },
        RemoveMemory {
            slot: u32,
            gpa: u64,
        },
        /// The number of entries and the MSI GSIs (beyond the legacy ones).
        SetRoutes {
            entries: usize,
            msi_gsis: Vec<u32>,
        },
        AssignIrqfd {
            fd: i32,
            gsi: u32,
        },
        DeassignIrqfd {
            fd: i32,
            gsi: u32,
        },
        AssignLevel {
            fd: i32,
            gsi: u32,
        },
        SignalMsi {
            address: u64,
            data: u32,
        },
        Ioevent {
            fd: i32,
            addr: u64,
            registered: bool,
        },
        Coalesced {
            addr: u64,
            len: u32,
            registered: bool,
        },
    }

    /// Records every call; never fails.
    #[derive(Debug, Default)]
    pub struct Recorder(pub Mutex<Vec<Call>>);

    impl Recorder {
        pub fn take(&self) -> Vec<Call> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
        fn push(&self, c: Call) {
            self.0.lock().unwrap().push(c);
        }
    }

    impl VmOps for Recorder {
        unsafe fn set_memory(
            &self,
            slot: u32,
            gpa: u64,
            len: u64,
            _host: u64,
            read_only: bool,
        ) -> Result<(), KvmError> {
            self.push(Call::SetMemory {
                slot,
                gpa,
                len,
                read_only,
            });
            Ok(())
        }
        fn remove_memory(&self, slot: u32, gpa: u64) -> Result<(), KvmError> {
            self.push(Call::RemoveMemory { slot, gpa });
            Ok(())
        }
        fn set_routes(&self, routes: &[kvm_irq_routing_entry]) -> Result<(), KvmError> {
            let msi_gsis = routes
                .iter()
                .filter(|r| r.type_ == kvm_bindings::KVM_IRQ_ROUTING_MSI)
                .map(|r| r.gsi)
                .collect();
            self.push(Call::SetRoutes {
                entries: routes.len(),
                msi_gsis,
            });
            Ok(())
        }
        fn assign_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), KvmError> {
            self.push(Call::AssignIrqfd {
                fd: fd.as_raw_fd(),
                gsi,
            });
            Ok(())
        }
        fn deassign_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), KvmError> {
            self.push(Call::DeassignIrqfd {
                fd: fd.as_raw_fd(),
                gsi,
            });
            Ok(())
        }
        fn assign_irqfd_with_resample(
            &self,
            fd: &EventFd,
            _resample: &EventFd,
            gsi: u32,
        ) -> Result<(), KvmError> {
            self.push(Call::AssignLevel {
                fd: fd.as_raw_fd(),
                gsi,
            });
            Ok(())
        }
        fn signal_msi(&self, address: u64, data: u32) -> Result<(), KvmError> {
            self.push(Call::SignalMsi { address, data });
            Ok(())
        }
        fn register_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), KvmError> {
            self.push(Call::Ioevent {
                fd: fd.as_raw_fd(),
                addr,
                registered: true,
            });
            Ok(())
        }
        fn unregister_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), KvmError> {
            self.push(Call::Ioevent {
                fd: fd.as_raw_fd(),
                addr,
                registered: false,
            });
            Ok(())
        }

        fn register_coalesced(&self, addr: u64, len: u32) -> Result<(), KvmError> {
            self.push(Call::Coalesced {
                addr,
                len,
                registered: true,
            });
            Ok(())
        }

        fn unregister_coalesced(&self, addr: u64, len: u32) -> Result<(), KvmError> {
            self.push(Call::Coalesced {
                addr,
                len,
                registered: false,
            });
            Ok(())
        }
    }
}
