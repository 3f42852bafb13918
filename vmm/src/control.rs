//! How the VM is stopped: one place records the first reason and wakes the
//! event loop, whoever asks (a device on a vCPU thread, a signal, a timer,
//! the console watcher).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use devices::{VmControl, VmRequest};
use vmm_sys_util::eventfd::EventFd;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// ACPI S5 or a KVM shutdown event.
    PowerOff,
    /// 0xCF9, i8042 or a KVM reset event.
    Reset,
    /// The debug-exit port was written.
    DebugExit(u8),
    /// `--expect-serial` text seen.
    ExpectSeen,
    /// `--timeout` expired.
    Timeout,
    /// SIGINT/SIGTERM/SIGHUP.
    Signal(i32),
    /// The user typed the console escape (Ctrl-A x).
    UserQuit,
    /// A vCPU could not continue.
    Fatal {
        /// The vCPU.
        cpu: u32,
        /// What happened (with registers when available).
        message: String,
    },
    /// A thread of the VM panicked (see [`crate::panic`]).
    Panic {
        /// The thread's name (`vcpu0`, `vfio-teardown`, ...).
        thread: String,
        /// The panic message and where it was raised.
        message: String,
    },
}

/// Shared stop latch + wake-up.
#[derive(Debug)]
pub struct Controller {
    reason: Mutex<Option<StopReason>>,
    stopping: AtomicBool,
    wake: EventFd,
}

impl Controller {
    /// A controller whose `wake` fd the event loop watches.
    pub fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            reason: Mutex::new(None),
            stopping: AtomicBool::new(false),
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
        }))
    }

    /// Record `reason` if it is the first, and wake the event loop.
    pub fn stop(&self, reason: StopReason) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_some() {
                return;
            }
            log::debug!("stopping: {reason:?}");
            *r = Some(reason);
        }
        self.stopping.store(true, Ordering::SeqCst);
        // A full eventfd counter still wakes the loop; nothing to do on error.
        let _ = self.wake.write(1);
    }

    /// True once any stop was requested (vCPUs check it between exits).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The reason, once stopped.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The fd the event loop watches.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }
}

impl VmControl for Controller {
    fn request(&self, request: VmRequest) {
        self.stop(match request {
            VmRequest::PowerOff => StopReason::PowerOff,
            VmRequest::Reset => StopReason::Reset,
            VmRequest::DebugExit(v) => StopReason::DebugExit(v),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_wakes() {
        let c = Controller::new().unwrap();
        assert!(!c.is_stopping());
        c.request(VmRequest::Reset);
        c.stop(StopReason::PowerOff);
        assert!(c.is_stopping());
        assert_eq!(c.reason(), Some(StopReason::Reset));
        assert_eq!(c.wake_fd().read().unwrap(), 1);
    }
}
