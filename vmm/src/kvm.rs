//! Opening KVM and creating the VM's kernel-side pieces: in-kernel irqchip
//! (PIC, IOAPIC, LAPICs), PIT, and guest memory slots.

use std::io;
use std::path::{Path, PathBuf};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_PIT_SPEAKER_DUMMY, KvmIrqRouting, kvm_irq_routing_entry,
    kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip, kvm_pit_config,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// KVM errors.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The device node does not exist.
    #[error("{} does not exist: this host has no KVM (load kvm_intel or kvm_amd, or enable virtualization in the firmware)", .0.display())]
    Missing(PathBuf),
    /// Opening it was refused.
    #[error("permission denied opening {}: run as root or add your user to the group that owns it (usually 'kvm')", .0.display())]
    PermissionDenied(PathBuf),
    /// Any other open failure.
    #[error("cannot open {}: {}", .0.display(), .1)]
    Open(PathBuf, io::Error),
    /// A capability Tessera needs is missing.
    #[error("KVM on this host lacks {0}, which Tessera needs")]
    MissingCap(&'static str),
    /// A KVM ioctl failed while building the VM.
    #[error("KVM refused to {0}: {1}")]
    Ioctl(&'static str, kvm_ioctls::Error),
    /// More interrupt routes than KVM can hold.
    #[error("{0} interrupt routes are more than KVM's limit of 4096")]
    TooManyRoutes(usize),
    /// A memory slot request outside its backing mapping (a Tessera bug).
    #[error("memory slot at {gpa:#x}+{len:#x} does not fit its host mapping")]
    BadSlot {
        /// Guest address.
        gpa: u64,
        /// Length.
        len: u64,
    },
}

/// Where KVM's private pages for real-mode emulation go on Intel (the TSS
/// takes three pages, the EPT identity map one). QEMU's addresses: just
/// below the 16 MiB that end at 0xff00_0000, outside RAM and outside the
/// firmware flash, so no guest-visible resource overlaps them.
pub const IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
/// See [`IDENTITY_MAP_ADDR`].
pub const TSS_ADDR: u64 = IDENTITY_MAP_ADDR + 0x1000;

/// Open `path` (normally `/dev/kvm`) with messages a person can act on.
pub fn open(path: &Path) -> Result<Kvm, KvmError> {
    // Probe with a plain open first: kvm-ioctls' error loses the path.
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        return Err(match e.kind() {
            io::ErrorKind::NotFound => KvmError::Missing(path.to_path_buf()),
            io::ErrorKind::PermissionDenied => KvmError::PermissionDenied(path.to_path_buf()),
            _ => KvmError::Open(path.to_path_buf(), e),
        });
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| KvmError::Open(path.to_path_buf(), io::Error::other(e)))?;
    let kvm = Kvm::new_with_path(&cpath)
        .map_err(|e| KvmError::Open(path.to_path_buf(), io::Error::from_raw_os_error(e.errno())))?;
    for (cap, name) in [
        (Cap::Irqchip, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
        (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
        (Cap::Pit2, "the in-kernel PIT (KVM_CAP_PIT2)"),
        (Cap::ExtCpuid, "KVM_GET_SUPPORTED_CPUID"),
        (Cap::UserMemory, "user memory slots"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap(name));
        }
    }
    Ok(kvm)
}

/// The most vCPUs this KVM allows in one VM.
pub fn max_vcpus(kvm: &Kvm) -> u32 {
    kvm.get_max_vcpus().try_into().unwrap_or(u32::MAX)
}

/// Create a VM with the in-kernel irqchip and PIT.
pub fn create_vm(kvm: &Kvm) -> Result<VmFd, KvmError> {
    let vm = kvm
        .create_vm()
        .map_err(|e| KvmError::Ioctl("create a VM", e))?;
    vm.set_identity_map_address(IDENTITY_MAP_ADDR)
        .map_err(|e| KvmError::Ioctl("set the identity map address", e))?;
    vm.set_tss_address(TSS_ADDR as usize)
        .map_err(|e| KvmError::Ioctl("set the TSS address", e))?;
    vm.create_irq_chip()
        .map_err(|e| KvmError::Ioctl("create the in-kernel irqchip", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| KvmError::Ioctl("create the in-kernel PIT", e))?;
    vm.set_gsi_routing(&legacy_gsi_routing()?)
        .map_err(|e| KvmError::Ioctl("set the interrupt routing", e))?;
    Ok(vm)
}

/// Number of IOAPIC pins (and legacy GSIs) of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;

/// The PC's legacy interrupt routing, as the MADT describes it: ISA IRQs
/// 0-15 reach the PICs (2 is the cascade), and GSI n reaches IOAPIC pin n,
/// except that the PIT's IRQ 0 is wired to pin 2 (the MADT's interrupt
/// source override). KVM's built-in default sends GSI 0 to pin 0, which
/// makes Linux report "8254 timer not connected to IO-APIC".
pub fn legacy_gsi_routes() -> Vec<kvm_irq_routing_entry> {
    let route = |gsi: u32, irqchip: u32, pin: u32| kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    };
    let mut routes = Vec::new();
    for irq in 0..16 {
        match irq {
            2 => {}
            0..8 => routes.push(route(irq, KVM_IRQCHIP_PIC_MASTER, irq)),
            _ => routes.push(route(irq, KVM_IRQCHIP_PIC_SLAVE, irq - 8)),
        }
    }
    for gsi in 0..IOAPIC_PINS {
        match gsi {
            0 => routes.push(route(0, KVM_IRQCHIP_IOAPIC, 2)),
            2 => {}
            _ => routes.push(route(gsi, KVM_IRQCHIP_IOAPIC, gsi)),
        }
    }
    routes
}

fn legacy_gsi_routing() -> Result<KvmIrqRouting, KvmError> {
    let routes = legacy_gsi_routes();
    KvmIrqRouting::from_entries(&routes).map_err(|_| KvmError::TooManyRoutes(routes.len()))
}

/// Register every region of `mem` as a KVM memory slot (slots 0, 1, ...).
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), KvmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| {
                KvmError::Ioctl("map guest memory", kvm_ioctls::Error::new(libc::EFAULT))
            })?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region's host mapping is owned by `mem`, which the VM
        // keeps alive (it outlives the VmFd in `Vm`), and it is exactly
        // `memory_size` bytes long.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|e| KvmError::Ioctl("add a guest memory slot", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(gsi: u32) -> Vec<(u32, u32)> {
        legacy_gsi_routes()
            .iter()
            .filter(|r| r.gsi == gsi)
            // SAFETY: every entry built above is of the irqchip kind.
            .map(|r| unsafe { (r.u.irqchip.irqchip, r.u.irqchip.pin) })
            .collect()
    }

    #[test]
    fn pit_reaches_ioapic_pin_2_and_pic_irq_0() {
        assert_eq!(
            pins(0),
            vec![(KVM_IRQCHIP_PIC_MASTER, 0), (KVM_IRQCHIP_IOAPIC, 2)]
        );
        assert_eq!(
            pins(2),
            vec![],
            "GSI 2 is the PIC cascade; nothing raises it"
        );
        assert_eq!(
            pins(4),
            vec![(KVM_IRQCHIP_PIC_MASTER, 4), (KVM_IRQCHIP_IOAPIC, 4)]
        );
        assert_eq!(
            pins(9),
            vec![(KVM_IRQCHIP_PIC_SLAVE, 1), (KVM_IRQCHIP_IOAPIC, 9)]
        );
        assert_eq!(pins(23), vec![(KVM_IRQCHIP_IOAPIC, 23)]);
        assert!(KvmIrqRouting::from_entries(&legacy_gsi_routes()).is_ok());
    }
}
