//! MSI routing: each live MSI/MSI-X vector of a PCI function becomes a KVM
//! GSI route (GSIs above the IOAPIC pins) with an irqfd, so an interrupt
//! goes from the device's eventfd to the guest's LAPIC without passing
//! through userspace.
//!
//! KVM replaces the whole routing table on every update, so the router
//! keeps the full table: the PC's legacy routes plus every live vector.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use devices::pci::{Bdf, MsiMessage};
use kvm_bindings::{
    KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1,
    kvm_irq_routing_msi,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::kvm::{IOAPIC_PINS, KvmError, legacy_gsi_routes};

/// KVM's limit on routing entries (`KVM_MAX_IRQ_ROUTES`).
pub const MAX_ROUTES: usize = 4096;

#[derive(Debug)]
struct Vector {
    gsi: u32,
    message: Option<MsiMessage>,
    irqfd: Option<Arc<EventFd>>,
}

/// Vectors by (function, vector number).
type Vectors = BTreeMap<(Bdf, u16), Vector>;

#[derive(Debug)]
struct State {
    next_gsi: u32,
    vectors: Vectors,
}

/// Routes MSI vectors through KVM.
#[derive(Debug)]
pub struct MsiRouter {
    vm: Arc<VmFd>,
    state: Mutex<State>,
}

/// The KVM routing entry delivering `message` on `gsi`.
pub fn msi_route(gsi: u32, message: MsiMessage) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            msi: kvm_irq_routing_msi {
                address_lo: message.address as u32,
                address_hi: (message.address >> 32) as u32,
                data: message.data,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// The whole table: legacy routes, then every vector that has a message.
fn table<'a>(
    vectors: impl Iterator<Item = (u32, &'a Option<MsiMessage>)>,
) -> Vec<kvm_irq_routing_entry> {
    let mut routes = legacy_gsi_routes();
    routes.extend(vectors.filter_map(|(gsi, m)| m.map(|m| msi_route(gsi, m))));
    routes
}

impl MsiRouter {
    /// A router for `vm` (which has the legacy routes installed).
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            state: Mutex::new(State {
                next_gsi: IOAPIC_PINS,
                vectors: BTreeMap::new(),
            }),
        }
    }

    fn install(&self, vectors: &Vectors) -> Result<(), KvmError> {
        let entries = table(vectors.values().map(|v| (v.gsi, &v.message)));
        let routing = KvmIrqRouting::from_entries(&entries).map_err(|_| {
            KvmError::Ioctl(
                "build the interrupt routing",
                kvm_ioctls::Error::new(libc::E2BIG),
            )
        })?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|e| KvmError::Ioctl("set the interrupt routing", e))
    }

    fn vector(state: &mut State, bdf: Bdf, vector: u16) -> Result<&mut Vector, KvmError> {
        let State {
            next_gsi: next,
            vectors,
        } = state;
        if !vectors.contains_key(&(bdf, vector)) {
            if vectors.len() + legacy_gsi_routes().len() >= MAX_ROUTES {
                return Err(KvmError::Ioctl(
                    "route another MSI vector",
                    kvm_ioctls::Error::new(libc::ENOSPC),
                ));
            }
            vectors.insert(
                (bdf, vector),
                Vector {
                    gsi: *next,
                    message: None,
                    irqfd: None,
                },
            );
            *next += 1;
        }
        Ok(vectors.get_mut(&(bdf, vector)).expect("inserted above"))
    }

    /// Vector `vector` of `bdf` now delivers `message` (or nothing).
    pub fn update(
        &self,
        bdf: Bdf,
        vector: u16,
        message: Option<MsiMessage>,
    ) -> Result<(), KvmError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let v = Self::vector(&mut state, bdf, vector)?;
        if v.message == message {
            return Ok(());
        }
        v.message = message;
        self.install(&state.vectors)
    }

    /// The eventfd that raises vector `vector` of `bdf` (an irqfd on its
    /// GSI; created on first use). Writing it while the vector has no
    /// route delivers nothing, as a masked MSI.
    pub fn irqfd(&self, bdf: Bdf, vector: u16) -> Result<Arc<EventFd>, KvmError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let v = Self::vector(&mut state, bdf, vector)?;
        if let Some(fd) = &v.irqfd {
            return Ok(fd.clone());
        }
        let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| {
            KvmError::Ioctl(
                "create an MSI eventfd",
                kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
        self.vm
            .register_irqfd(&fd, v.gsi)
            .map_err(|e| KvmError::Ioctl("register an MSI irqfd", e))?;
        let fd = Arc::new(fd);
        v.irqfd = Some(fd.clone());
        Ok(fd)
    }

    /// (GSI, message) of a vector, for logs and tests.
    pub fn route(&self, bdf: Bdf, vector: u16) -> Option<(u32, Option<MsiMessage>)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .vectors
            .get(&(bdf, vector))
            .map(|v| (v.gsi, v.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keeps_legacy_routes_and_live_vectors_only() {
        let m = MsiMessage {
            address: 0xfee0_1000,
            data: 0x4041,
        };
        let live = Some(m);
        let dead = None;
        let t = table([(24, &live), (25, &dead)].into_iter());
        assert_eq!(t.len(), legacy_gsi_routes().len() + 1);
        let last = t.last().unwrap();
        assert_eq!((last.gsi, last.type_), (24, KVM_IRQ_ROUTING_MSI));
        // SAFETY: built as an MSI entry just above.
        let msi = unsafe { last.u.msi };
        assert_eq!(
            (msi.address_lo, msi.address_hi, msi.data),
            (0xfee0_1000, 0, 0x4041)
        );
    }

    #[test]
    fn routes_on_real_kvm() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("SKIP routes_on_real_kvm: /dev/kvm is absent");
            return;
        }
        let kvm = crate::kvm::open(std::path::Path::new("/dev/kvm")).expect("open KVM");
        let vm = Arc::new(crate::kvm::create_vm(&kvm).expect("create a VM"));
        let r = MsiRouter::new(vm);
        let bdf = Bdf::new(0, 3, 0);
        let m = MsiMessage {
            address: 0xfee0_0000,
            data: 0x31,
        };
        r.update(bdf, 0, Some(m)).expect("KVM takes the MSI route");
        r.update(
            bdf,
            1,
            Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x32,
            }),
        )
        .unwrap();
        assert_eq!(r.route(bdf, 0), Some((IOAPIC_PINS, Some(m))));
        assert_eq!(r.route(bdf, 1).unwrap().0, IOAPIC_PINS + 1);
        let fd = r
            .irqfd(bdf, 0)
            .expect("irqfd registered on the vector's GSI");
        assert!(
            Arc::ptr_eq(&fd, &r.irqfd(bdf, 0).unwrap()),
            "one irqfd per vector"
        );
        fd.write(1).unwrap();
        r.update(bdf, 0, None).expect("masking removes the route");
        assert_eq!(r.route(bdf, 0), Some((IOAPIC_PINS, None)));
    }
}
