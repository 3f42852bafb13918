//! Interrupts into the in-kernel irqchip: the edge and level lines of
//! legacy devices, and the router that turns each live MSI/MSI-X vector of
//! a PCI function into a KVM GSI route with an irqfd.
//!
//! # MSI routing
//!
//! Every vector of a function gets its own GSI above the IOAPIC pins the
//! first time the guest touches it, and keeps it. The function's
//! [`MsiVectors`] eventfd for that vector is the irqfd: the device (or the
//! host kernel's VFIO driver) signals it and KVM injects the message
//! without waking any tessera thread.
//!
//! A batch of route changes (one configuration or table write) is applied
//! in this order, which Cloud Hypervisor found the hard way (its #3827):
//! 1. irqfds of vectors that stop being live are deassigned, so a signal
//!    that arrives while a vector is masked stays in the eventfd: that is
//!    the vector's pending bit;
//! 2. the whole routing table (KVM only replaces it whole) is installed
//!    once for the batch;
//! 3. irqfds of vectors that became live are assigned; KVM checks the
//!    eventfd on assignment and delivers a pending interrupt at once.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use devices::interrupt::MsiVectors;
use devices::pci::{Bdf, MsiMessage};
use devices::{IrqLine, LevelIrqLine};
use kvm_bindings::{
    KVM_IRQ_ROUTING_MSI, kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1,
    kvm_irq_routing_msi,
};
use kvm_ioctls::VmFd;
use log::warn;
use vmm_sys_util::eventfd::EventFd;

use crate::kvm::{IOAPIC_PINS, KvmError, legacy_gsi_routes};
use crate::vm_ops::VmOps;

/// KVM's limit on routing entries (`KVM_MAX_IRQ_ROUTES`).
pub const MAX_ROUTES: usize = 4096;

/// An edge interrupt through a KVM irqfd.
#[derive(Debug)]
pub struct IrqFd {
    fd: EventFd,
}

impl IrqFd {
    /// Register an irqfd for `gsi` on `vm`.
    pub fn new(vm: &VmFd, gsi: u32) -> io::Result<Self> {
        let fd = EventFd::new(libc::EFD_NONBLOCK)?;
        vm.register_irqfd(&fd, gsi)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(Self { fd })
    }
}

impl IrqLine for IrqFd {
    fn trigger(&self) -> io::Result<()> {
        self.fd.write(1)
    }
}

/// A level-triggered line driven with KVM_IRQ_LINE.
#[derive(Debug)]
pub struct KvmLevelIrq {
    vm: Arc<VmFd>,
    irq: u32,
}

impl KvmLevelIrq {
    /// Line `irq` of the in-kernel PIC/IOAPIC.
    pub fn new(vm: Arc<VmFd>, irq: u32) -> Self {
        Self { vm, irq }
    }
}

impl LevelIrqLine for KvmLevelIrq {
    fn set_level(&self, asserted: bool) -> io::Result<()> {
        self.vm
            .set_irq_line(self.irq, asserted)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// One MSI route change: vector `vector` of `bdf` now delivers `message`
/// (`None`: disabled or masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// The function.
    pub bdf: Bdf,
    /// Its vector.
    pub vector: u16,
    /// What it delivers.
    pub message: Option<MsiMessage>,
}

#[derive(Debug)]
struct Vector {
    gsi: u32,
    message: Option<MsiMessage>,
    /// The irqfd is assigned to `gsi`.
    assigned: bool,
    /// Relayed vectors only: raised while masked, to deliver on unmask.
    relay_pending: bool,
}

#[derive(Debug, Default)]
struct State {
    next_gsi: u32,
    vectors: BTreeMap<(Bdf, u16), Vector>,
    functions: BTreeMap<Bdf, Arc<MsiVectors>>,
    /// Functions whose interrupts a userspace thread relays instead of
    /// irqfds (`x-no-kvm-msi`, for debugging and as a negative control).
    relayed: std::collections::BTreeSet<Bdf>,
}

/// Routes MSI/MSI-X vectors through KVM; see the module documentation.
pub struct MsiRouter {
    vm: Arc<dyn VmOps>,
    state: Mutex<State>,
}

impl std::fmt::Debug for MsiRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsiRouter").finish_non_exhaustive()
    }
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

impl MsiRouter {
    /// A router for a VM whose routing table holds the legacy routes.
    pub fn new(vm: Arc<dyn VmOps>) -> Self {
        Self {
            vm,
            state: Mutex::new(State {
                next_gsi: IOAPIC_PINS,
                ..Default::default()
            }),
        }
    }

    /// `bdf`'s vectors signal these eventfds. With `relay` they are not
    /// bound to KVM: a [`MsiRelay`] thread reads them and injects each
    /// interrupt from userspace.
    pub fn add_function(&self, bdf: Bdf, vectors: Arc<MsiVectors>, relay: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.functions.insert(bdf, vectors);
        if relay {
            state.relayed.insert(bdf);
        }
    }

    /// The relay read an interrupt of `vector` of `bdf`: inject it if the
    /// vector is live, else keep it pending until unmask.
    fn relay_deliver(&self, bdf: Bdf, vector: u16) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = state.vectors.get_mut(&(bdf, vector)) else {
            return;
        };
        match v.message {
            Some(m) => {
                if let Err(e) = self.vm.signal_msi(m.address, m.data) {
                    warn!("{bdf}: vector {vector}: {e}");
                }
            }
            None => v.relay_pending = true,
        }
    }

    fn table(vectors: &BTreeMap<(Bdf, u16), Vector>) -> Vec<kvm_irq_routing_entry> {
        let mut routes = legacy_gsi_routes();
        routes.extend(
            vectors
                .values()
                .filter_map(|v| v.message.map(|m| msi_route(v.gsi, m))),
        );
        routes
    }

    /// Apply one batch of route changes (see the module documentation for
    /// the order). A vector beyond KVM's route limit, or whose function
    /// has no eventfd for it, is reported and left undelivered; the rest
    /// of the batch still applies.
    pub fn apply(&self, changes: &[RouteChange]) -> Result<(), KvmError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State {
            next_gsi,
            vectors,
            functions,
            relayed,
        } = &mut *state;
        let mut table_changed = false;
        let mut first_error = None;
        let mut touched = Vec::new();
        for c in changes {
            let key = (c.bdf, c.vector);
            if !vectors.contains_key(&key) {
                if vectors.len() + legacy_gsi_routes().len() >= MAX_ROUTES {
                    first_error.get_or_insert(KvmError::TooManyRoutes(MAX_ROUTES));
                    continue;
                }
                vectors.insert(
                    key,
                    Vector {
                        gsi: *next_gsi,
                        message: None,
                        assigned: false,
                        relay_pending: false,
                    },
                );
                *next_gsi += 1;
            }
            let Some(v) = vectors.get_mut(&key) else {
                continue;
            };
            if v.message != c.message {
                v.message = c.message;
                table_changed = true;
            }
            if relayed.contains(&c.bdf) {
                // No irqfds; an interrupt that waited for the unmask goes now.
                if let (Some(m), true) = (v.message, v.relay_pending) {
                    v.relay_pending = false;
                    if let Err(e) = self.vm.signal_msi(m.address, m.data) {
                        first_error.get_or_insert(e);
                    }
                }
                continue;
            }
            touched.push(key);
        }
        let fd_of = |key: &(Bdf, u16)| functions.get(&key.0).and_then(|f| f.notifier(key.1));
        // 1. Park the eventfds of vectors that are no longer live.
        for key in &touched {
            let Some(v) = vectors.get_mut(key) else {
                continue;
            };
            if v.message.is_none() && v.assigned {
                if let Some(fd) = fd_of(key) {
                    match self.vm.deassign_irqfd(fd, v.gsi) {
                        Ok(()) => v.assigned = false,
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        // 2. One routing table for the batch.
        if table_changed {
            if let Err(e) = self.vm.set_routes(&Self::table(vectors)) {
                first_error.get_or_insert(e);
            }
        }
        // 3. Connect the eventfds of vectors that are live (those of this
        // batch, and any whose earlier assignment failed: it is retried).
        let pending: Vec<(Bdf, u16)> = vectors
            .iter()
            .filter(|(k, v)| v.message.is_some() && !v.assigned && !relayed.contains(&k.0))
            .map(|(k, _)| *k)
            .collect();
        for key in &pending {
            let Some(v) = vectors.get_mut(key) else {
                continue;
            };
            {
                match fd_of(key) {
                    Some(fd) => match self.vm.assign_irqfd(fd, v.gsi) {
                        Ok(()) => v.assigned = true,
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    },
                    None => warn!(
                        "{}: vector {} has a route but the function has no eventfd for it",
                        key.0, key.1
                    ),
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// (GSI, message, irqfd assigned) of a vector, for logs and tests.
    pub fn route(&self, bdf: Bdf, vector: u16) -> Option<(u32, Option<MsiMessage>, bool)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .vectors
            .get(&(bdf, vector))
            .map(|v| (v.gsi, v.message, v.assigned))
    }
}

/// The userspace path for `x-no-kvm-msi` functions: a thread that waits
/// on their vector eventfds and injects each interrupt with
/// `KVM_SIGNAL_MSI`. It exists to show what irqfds save (a thread wake-up
/// per interrupt) and to debug interrupt problems; stopped on drop.
pub struct MsiRelay {
    stop: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MsiRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsiRelay").finish_non_exhaustive()
    }
}

impl MsiRelay {
    /// Relay the vectors of `functions` through `router`.
    pub fn start(router: Arc<MsiRouter>, functions: &[(Bdf, Arc<MsiVectors>)]) -> io::Result<Self> {
        use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
        let epoll = Epoll::new()?;
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let mut sources: Vec<(Bdf, u16, Arc<MsiVectors>)> = Vec::new();
        epoll.ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&*wake),
            EpollEvent::new(EventSet::IN, u64::MAX),
        )?;
        for (bdf, vectors) in functions {
            for v in 0..vectors.len() {
                if let Some(fd) = vectors.notifier(v) {
                    epoll.ctl(
                        ControlOperation::Add,
                        std::os::fd::AsRawFd::as_raw_fd(fd),
                        EpollEvent::new(EventSet::IN, sources.len() as u64),
                    )?;
                    sources.push((*bdf, v, vectors.clone()));
                }
            }
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop2, wake2) = (stop.clone(), wake.clone());
        let thread = std::thread::Builder::new()
            .name("msi-relay".into())
            .spawn(move || {
                let mut events = vec![EpollEvent::default(); 64];
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            warn!("MSI relay: {e}");
                            return;
                        }
                    };
                    for ev in &events[..n] {
                        let Some((bdf, v, vectors)) = sources.get(ev.data() as usize) else {
                            let _ = wake2.read();
                            continue;
                        };
                        if let Some(fd) = vectors.notifier(*v) {
                            if fd.read().is_ok() {
                                router.relay_deliver(*bdf, *v);
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for MsiRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm_ops::tests::{Call, Recorder};

    const M1: MsiMessage = MsiMessage {
        address: 0xfee0_1000,
        data: 0x4041,
    };

    fn change(vector: u16, message: Option<MsiMessage>) -> RouteChange {
        RouteChange {
            bdf: Bdf::new(0, 3, 0),
            vector,
            message,
        }
    }

    fn setup(n: u16) -> (Arc<Recorder>, MsiRouter, Arc<MsiVectors>) {
        let rec = Arc::new(Recorder::default());
        let r = MsiRouter::new(rec.clone());
        let v = Arc::new(MsiVectors::new(n).unwrap());
        r.add_function(Bdf::new(0, 3, 0), v.clone(), false);
        (rec, r, v)
    }

    fn fd_is(c: &Call) -> Option<u32> {
        match c {
            Call::AssignIrqfd { gsi, .. } | Call::DeassignIrqfd { gsi, .. } => Some(*gsi),
            _ => None,
        }
    }

    #[test]
    fn a_batch_installs_the_table_once_then_connects_the_eventfds() {
        let (rec, r, _) = setup(8);
        let batch: Vec<_> = (0..8).map(|v| change(v, Some(M1))).collect();
        r.apply(&batch).unwrap();
        let calls = rec.take();
        let legacy = legacy_gsi_routes().len();
        assert_eq!(
            calls[0],
            Call::SetRoutes {
                entries: legacy + 8,
                msi_gsis: (24..32).collect()
            }
        );
        assert_eq!(calls.len(), 9, "one table, eight irqfds: {calls:?}");
        assert!(
            calls[1..]
                .iter()
                .all(|c| matches!(c, Call::AssignIrqfd { .. }))
        );
    }

    #[test]
    fn masking_parks_the_eventfd_before_the_route_goes_and_unmask_reverses_it() {
        let (rec, r, vectors) = setup(2);
        r.apply(&[change(1, Some(M1))]).unwrap();
        rec.take();
        r.apply(&[change(1, None)]).unwrap();
        let calls = rec.take();
        assert!(
            matches!(calls[0], Call::DeassignIrqfd { gsi: 24, .. }),
            "{calls:?}"
        );
        assert!(matches!(calls[1], Call::SetRoutes { ref msi_gsis, .. } if msi_gsis.is_empty()));
        assert_eq!(r.route(Bdf::new(0, 3, 0), 1), Some((24, None, false)));
        // While masked, a raised vector waits in its eventfd.
        vectors.trigger(1).unwrap();
        assert!(vectors.is_pending(1));
        r.apply(&[change(1, Some(M1))]).unwrap();
        let calls = rec.take();
        assert!(matches!(calls[0], Call::SetRoutes { ref msi_gsis, .. } if msi_gsis == &[24]));
        assert_eq!(
            calls.get(1).and_then(fd_is),
            Some(24),
            "reassigned after the route"
        );
        // Retargeting a live vector only changes the table.
        r.apply(&[change(
            1,
            Some(MsiMessage {
                address: 0xfee0_2000,
                data: 1,
            }),
        )])
        .unwrap();
        let calls = rec.take();
        assert_eq!(calls.len(), 1);
        // Nothing changed: nothing to do.
        r.apply(&[change(
            1,
            Some(MsiMessage {
                address: 0xfee0_2000,
                data: 1,
            }),
        )])
        .unwrap();
        assert!(rec.take().is_empty());
    }

    #[test]
    fn relayed_functions_get_no_irqfds_and_masked_interrupts_wait_for_unmask() {
        let rec = Arc::new(Recorder::default());
        let r = Arc::new(MsiRouter::new(rec.clone()));
        let bdf = Bdf::new(0, 3, 0);
        let v = Arc::new(MsiVectors::new(1).unwrap());
        r.add_function(bdf, v.clone(), true);
        r.apply(&[change(0, Some(M1))]).unwrap();
        assert!(
            rec.take()
                .iter()
                .all(|c| !matches!(c, Call::AssignIrqfd { .. }))
        );
        let relay = MsiRelay::start(r.clone(), &[(bdf, v.clone())]).unwrap();
        v.trigger(0).unwrap();
        let want = Call::SignalMsi {
            address: M1.address,
            data: M1.data,
        };
        let t0 = std::time::Instant::now();
        while !rec.0.lock().unwrap().contains(&want) {
            assert!(t0.elapsed().as_secs() < 5, "the relay injects it");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        rec.take();
        r.apply(&[change(0, None)]).unwrap();
        v.trigger(0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !rec.0.lock().unwrap().contains(&want),
            "masked: not delivered"
        );
        r.apply(&[change(0, Some(M1))]).unwrap();
        assert!(rec.take().contains(&want), "delivered on unmask");
        drop(relay);
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
        let v = Arc::new(MsiVectors::new(2).unwrap());
        r.add_function(bdf, v.clone(), false);
        r.apply(&[change(0, Some(M1)), change(1, Some(M1))])
            .expect("KVM takes the routes and irqfds");
        assert_eq!(r.route(bdf, 0), Some((IOAPIC_PINS, Some(M1), true)));
        v.trigger(0).unwrap();
        r.apply(&[change(0, None)])
            .expect("masking parks the irqfd");
        v.trigger(0).unwrap();
        assert!(v.is_pending(0), "KVM no longer consumes it");
        r.apply(&[change(0, Some(M1))]).expect("unmask");
    }
}
