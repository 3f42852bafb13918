//! The interrupt seam between devices and the VMM: one eventfd per MSI or
//! MSI-X vector of a PCI function.
//!
//! A device (or its worker thread, or the host kernel's VFIO driver) raises
//! vector `v` by signalling `notifier(v)`. The VMM registers that eventfd as
//! a KVM irqfd on the vector's GSI while the vector is *live* (enabled and
//! unmasked; see [`PciChange::Msi`](crate::pci::PciChange::Msi)), so the
//! interrupt reaches the guest without any userspace work. While the vector
//! is masked the VMM deassigns the irqfd first and only then drops the
//! route: a signal that arrives then stays in the eventfd's counter, which
//! is exactly the vector's *pending* bit ([`MsiVectors::is_pending`]), and
//! KVM delivers it when the irqfd is assigned again on unmask (KVM checks
//! the counter when an irqfd is assigned). Nothing here knows KVM.

use std::io;
use std::os::fd::AsRawFd;

use vmm_sys_util::eventfd::EventFd;

/// The eventfds of a function's vectors, shared (behind an `Arc`) by the
/// device model, its workers and the VMM's interrupt router.
#[derive(Debug)]
pub struct MsiVectors {
    fds: Vec<EventFd>,
}

impl MsiVectors {
    /// `count` vectors, each with a fresh non-blocking eventfd.
    pub fn new(count: u16) -> io::Result<Self> {
        let fds = (0..count)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { fds })
    }

    /// Number of vectors.
    pub fn len(&self) -> u16 {
        self.fds.len() as u16
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The eventfd of `vector` (for VFIO's `SET_IRQS` and the VMM's irqfd).
    pub fn notifier(&self, vector: u16) -> Option<&EventFd> {
        self.fds.get(usize::from(vector))
    }

    /// All eventfds, in vector order.
    pub fn notifiers(&self) -> &[EventFd] {
        &self.fds
    }

    /// Raise `vector`: delivered at once if it is live, kept pending if it
    /// is masked. Unknown vectors are ignored.
    pub fn trigger(&self, vector: u16) -> io::Result<()> {
        match self.notifier(vector) {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }

    /// True when `vector` was raised and not yet delivered: its eventfd is
    /// readable. Polling does not consume the count. While a vector is
    /// live KVM consumes the count as it injects, so this is only
    /// meaningful for masked vectors (the PBA).
    pub fn is_pending(&self, vector: u16) -> bool {
        let Some(fd) = self.notifier(vector) else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor this struct owns, a
        // zero timeout; the kernel writes only `revents`.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 1 && pfd.revents & libc::POLLIN != 0
    }

    /// Forget a pending interrupt of `vector` (MSI or MSI-X was disabled:
    /// the specification discards pending messages then).
    pub fn clear(&self, vector: u16) {
        if let Some(fd) = self.notifier(vector) {
            // EAGAIN (nothing pending) is the expected outcome too.
            let _ = fd.read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_vector_stays_pending_until_consumed_or_cleared() {
        let v = MsiVectors::new(3).unwrap();
        assert_eq!(v.len(), 3);
        assert!(!v.is_pending(1));
        v.trigger(1).unwrap();
        v.trigger(1).unwrap();
        assert!(v.is_pending(1), "polling does not consume");
        assert!(v.is_pending(1));
        assert!(!v.is_pending(0));
        v.clear(1);
        assert!(!v.is_pending(1));
        // Out of range: nothing happens.
        v.trigger(7).unwrap();
        assert!(!v.is_pending(7));
        v.clear(7);
    }
}
