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
//!   printed) and tessera exits 1; a watchdog exits 1 after
//!   [`STOP_DEADLINE`] if the shutdown does not finish;
//! - on the main thread (the event loop) or outside a VM: exits 1 at once,
//!   without unwinding past vCPU threads that still use guest memory.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::control::{Controller, StopReason};

/// How long a VM may take to stop after a panic before tessera exits anyway.
pub const STOP_DEADLINE: Duration = Duration::from_millis(1500);

static ACTIVE: Mutex<Option<Weak<Controller>>> = Mutex::new(None);

/// Marks a VM as running in this process for the panic hook; unmarked on
/// drop.
#[derive(Debug)]
pub(crate) struct ActiveVm(());

impl ActiveVm {
    pub(crate) fn new(ctl: &Arc<Controller>) -> Self {
        *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(ctl));
        ActiveVm(())
    }
}

impl Drop for ActiveVm {
    fn drop(&mut self) {
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
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        let ctl = ACTIVE
            .try_lock()
            .ok()
            .and_then(|a| a.as_ref().and_then(Weak::upgrade));
        match ctl {
            Some(ctl) if name != "main" => {
                ctl.stop(StopReason::Panic {
                    thread: name,
                    message: format!("{message}{at}"),
                });
                let watchdog = std::thread::Builder::new()
                    .name("panic-watchdog".into())
                    .spawn(|| {
                        std::thread::sleep(STOP_DEADLINE);
                        eprintln!(
                            "tessera: the VM did not stop within {STOP_DEADLINE:?} of the panic; exiting"
                        );
                        // SAFETY: _exit ends the process; nothing runs after it.
                        unsafe { libc::_exit(1) }
                    });
                if watchdog.is_err() {
                    // SAFETY: as above.
                    unsafe { libc::_exit(1) }
                }
            }
            _ => std::process::exit(1),
        }
    }));
}
