//! A panic on any thread ends the VM with exit status 1 and says which
//! thread panicked, where and why, instead of leaving a vCPU thread gone and
//! the VM running on (or waiting for `--timeout`).
//!
//! [`install_hook`] (the binary calls it first) replaces Rust's default hook:
//! it restores the terminal, prints one line (`tessera: thread 'vcpu0'
//! panicked at src/x.rs:10: message`; a backtrace too with
//! `RUST_BACKTRACE=1`), then
//! - on a thread of a running VM other than the main thread (a vCPU, a
//!   device worker): asks the VM to stop with [`StopReason::Panic`], so the
//!   normal shutdown runs (vCPUs stopped, devices reset, the report
//!   printed) and tessera exits 1; a watchdog thread (started with the VM)
//!   exits 1 after [`STOP_DEADLINE`] if the shutdown does not finish;
//! - on the main thread (the event loop) or outside a VM: exits 1 at once,
//!   without unwinding past vCPU threads that still use guest memory.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::control::{Controller, StopReason};

/// How long a VM may take to stop after a panic before tessera exits anyway.
pub const STOP_DEADLINE: Duration = Duration::from_millis(1500);

/// The running VM's controller and its watchdog's trigger.
struct Active {
    ctl: Weak<Controller>,
    watchdog: Option<Sender<()>>,
}

static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

/// Marks a VM as running in this process for the panic hook (unmarked on
/// drop), with a watchdog thread started now, so that a panicking thread
/// (under seccomp, a vCPU may not create threads) only has to wake it.
#[derive(Debug)]
pub(crate) struct ActiveVm(());

impl ActiveVm {
    pub(crate) fn new(ctl: &Arc<Controller>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::Builder::new()
            .name("panic-watchdog".into())
            .spawn(move || {
                // Ok: a panic; Err: the VM ended without one.
                if rx.recv().is_ok() {
                    std::thread::sleep(STOP_DEADLINE);
                    eprintln!(
                        "tessera: the VM did not stop within {STOP_DEADLINE:?} of the panic; exiting"
                    );
                    // SAFETY: _exit ends the process; nothing runs after it.
                    unsafe { libc::_exit(1) }
                }
            })
            .ok()
            .map(|_| tx);
        *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Active {
            ctl: Arc::downgrade(ctl),
            watchdog,
        });
        ActiveVm(())
    }
}

impl Drop for ActiveVm {
    fn drop(&mut self) {
        // Dropping the sender ends the watchdog thread.
        *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The panic's message text.
fn payload_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    let p = info.payload();
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Install the hook described in the module documentation.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::console::restore_terminal();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed").to_string();
        let message = payload_text(info);
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("tessera: thread '{name}' panicked{at}: {message}");
        // (Symbolising a backtrace opens files, which seccomp forbids on a
        // vCPU thread.)
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0")
            && !crate::seccomp::is_active()
        {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        let active = ACTIVE.try_lock().ok().and_then(|a| {
            a.as_ref()
                .and_then(|a| Some((a.ctl.upgrade()?, a.watchdog.clone())))
        });
        match active {
            Some((ctl, watchdog)) if name != "main" => {
                ctl.stop(StopReason::Panic {
                    thread: name,
                    message: format!("{message}{at}"),
                });
                if watchdog.is_none_or(|w| w.send(()).is_err()) {
                    // No watchdog to bound the stop: exit now.
                    // SAFETY: _exit ends the process; nothing runs after it.
                    unsafe { libc::_exit(1) }
                }
            }
            _ => std::process::exit(1),
        }
    }));
}
