//! The VMM thread's event loop (event-manager): the stop latch, host
//! signals, host stdin into the UART, and the `--timeout` timer.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::legacy::{Serial, SerialInputWaker};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, warn};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::console::EscapeFilter;
use crate::control::{Controller, StopReason};

/// Signals that stop the VM.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Blocks [`STOP_SIGNALS`] in this thread (and the threads it starts) and
/// receives them through a signalfd; the old mask comes back on drop.
pub struct SignalGuard {
    fd: File,
    old: libc::sigset_t,
}

impl std::fmt::Debug for SignalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalGuard").field("fd", &self.fd).finish()
    }
}

impl SignalGuard {
    /// Block the stop signals and open a signalfd for them.
    pub fn new() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data, initialized by sigemptyset below.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in STOP_SIGNALS {
                libc::sigaddset(&mut set, s);
            }
        }
        // SAFETY: valid sigset pointers; changes only this thread's mask.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: creates a new fd from a valid sigset; result checked.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: restoring the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            return Err(e);
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { File::from_raw_fd(fd) };
        Ok(Self { fd, old })
    }

    fn read_signal(&self) -> Option<i32> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match (&self.fd).read(&mut info) {
            Ok(n) if n == info.len() => {
                // ssi_signo is the first u32 of signalfd_siginfo.
                Some(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32)
            }
            _ => None,
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // A signal that arrived after the VM stopped is dropped with the fd;
        // restoring the mask must not deliver it late and kill us.
        while self.read_signal().is_some() {}
        // SAFETY: restoring the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Turns stop signals into a stop.
pub struct SignalSubscriber {
    guard: Arc<SignalGuard>,
    ctl: Arc<Controller>,
}

impl SignalSubscriber {
    /// Watch `guard`'s signalfd.
    pub fn new(guard: Arc<SignalGuard>, ctl: Arc<Controller>) -> Self {
        Self { guard, ctl }
    }
}

impl MutEventSubscriber for SignalSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        while let Some(sig) = self.guard.read_signal() {
            debug!("received signal {sig}");
            self.ctl.stop(StopReason::Signal(sig));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.guard.fd, EventSet::IN)) {
            warn!("cannot watch signals: {e:?}");
        }
    }
}

/// Drains the controller's wake-up fd so `run()` returns.
pub struct WakeSubscriber {
    ctl: Arc<Controller>,
}

impl WakeSubscriber {
    /// Watch `ctl`'s fd.
    pub fn new(ctl: Arc<Controller>) -> Self {
        Self { ctl }
    }
}

impl MutEventSubscriber for WakeSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.ctl.wake_fd().read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.ctl.wake_fd(), EventSet::IN)) {
            warn!("cannot watch the stop latch: {e:?}");
        }
    }
}

/// Stops the VM after `--timeout`.
pub struct TimeoutSubscriber {
    timer: TimerFd,
    ctl: Arc<Controller>,
}

impl TimeoutSubscriber {
    /// Arm a one-shot timer.
    pub fn new(after: Duration, ctl: Arc<Controller>) -> io::Result<Self> {
        let mut timer = TimerFd::new().map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        timer
            .reset(after, None)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(Self { timer, ctl })
    }
}

impl MutEventSubscriber for TimeoutSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        self.ctl.stop(StopReason::Timeout);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            warn!("cannot watch the timeout timer: {e:?}");
        }
    }
}

/// Wakes the stdin subscriber when the UART's FIFO drains.
#[derive(Debug)]
pub struct FifoWaker(pub EventFd);

impl SerialInputWaker for FifoWaker {
    fn input_wanted(&self) {
        let _ = self.0.write(1);
    }
}

/// Host stdin → COM1, with the Ctrl-A escape, never dropping input: when
/// the guest's FIFO is full, stdin is left unread until the FIFO drains.
pub struct StdinSubscriber {
    stdin: io::Stdin,
    serial: Arc<Mutex<Serial>>,
    waker: Arc<FifoWaker>,
    escape: EscapeFilter,
    pending: Vec<u8>,
    watching_stdin: bool,
    closed: bool,
    ctl: Arc<Controller>,
}

impl StdinSubscriber {
    /// Feed `serial` from stdin.
    pub fn new(serial: Arc<Mutex<Serial>>, waker: Arc<FifoWaker>, ctl: Arc<Controller>) -> Self {
        Self {
            stdin: io::stdin(),
            serial,
            waker,
            escape: EscapeFilter::default(),
            pending: Vec::new(),
            watching_stdin: false,
            closed: false,
            ctl,
        }
    }

    fn push_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let taken = self
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue_input(&self.pending);
        self.pending.drain(..taken);
    }

    fn set_stdin_watch(&mut self, ops: &mut EventOps, on: bool) {
        if on == self.watching_stdin || (on && self.closed) {
            return;
        }
        let ev = Events::new(&self.stdin, EventSet::IN);
        let res = if on { ops.add(ev) } else { ops.remove(ev) };
        match res {
            Ok(()) => self.watching_stdin = on,
            // epoll refuses regular files and /dev/null: such a stdin has
            // nothing interactive to offer, so the guest simply gets none.
            Err(e) => {
                debug!("stdin not watched ({e:?}); the guest gets no console input");
                self.closed = true;
            }
        }
    }
}

impl MutEventSubscriber for StdinSubscriber {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.waker.0.as_raw_fd() {
            let _ = self.waker.0.read();
        } else {
            let mut buf = [0u8; 256];
            match (&self.stdin).read(&mut buf) {
                Ok(0) => {
                    debug!("stdin closed");
                    self.set_stdin_watch(ops, false);
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    let f = self.escape.filter(&buf[..n]);
                    if f.quit {
                        self.ctl.stop(StopReason::UserQuit);
                        return;
                    }
                    self.pending.extend_from_slice(&f.to_guest);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("reading stdin failed: {e}; console input stops");
                    self.set_stdin_watch(ops, false);
                    self.closed = true;
                    return;
                }
            }
        }
        self.push_pending();
        let want_more = self.pending.is_empty();
        self.set_stdin_watch(ops, want_more);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.waker.0, EventSet::IN)) {
            warn!("cannot watch the serial FIFO: {e:?}");
        }
        self.set_stdin_watch(ops, true);
    }
}
