//! The thread that serves one virtio device's queues.
//!
//! It is started with the device, before the VM runs (so it gets the
//! process's seccomp filter, and no vCPU ever creates a thread), and waits
//! on an epoll set: the queues' doorbell eventfds (which the guest's kicks
//! signal through KVM ioeventfds, or the transport for a trapped write)
//! and a control eventfd. The transport hands it an [`Activation`] when the
//! driver sets `DRIVER_OK` and takes it back on reset, waiting for the
//! worker's acknowledgement, so no request is served after a reset
//! returns.
//!
//! A kick drains the queue with notifications disabled, re-enables them,
//! and drains again if the guest added more meanwhile (the EVENT_IDX
//! protocol). A used-buffer interrupt is sent only when the driver asked
//! for one.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{NO_VECTOR, QueueHandler};
use crate::interrupt::MsiVectors;

/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 2;

/// How the worker tells the guest: the ISR byte and the MSI-X vectors.
#[derive(Debug, Clone)]
pub struct Interrupt {
    /// The function's vector eventfds.
    pub vectors: Arc<MsiVectors>,
    /// The ISR status byte (read-to-clear by the guest).
    pub isr: Arc<AtomicU8>,
    /// Set when the device needs a reset (shown in the status register).
    pub needs_reset: Arc<AtomicBool>,
    /// Vector of each queue ([`NO_VECTOR`]: none).
    pub queue_vectors: Vec<u16>,
    /// Vector of configuration changes.
    pub config_vector: u16,
}

impl Interrupt {
    /// Queue `index` has used buffers the driver wants to hear of.
    pub fn queue(&self, index: usize) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        let v = self.queue_vectors.get(index).copied().unwrap_or(NO_VECTOR);
        if v != NO_VECTOR {
            if let Err(e) = self.vectors.trigger(v) {
                warn!("virtio: cannot raise vector {v}: {e}");
            }
        }
    }

    /// The device needs a reset: say so, with a configuration interrupt.
    pub fn device_broken(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        if self.config_vector != NO_VECTOR {
            let _ = self.vectors.trigger(self.config_vector);
        }
    }
}

/// What a worker serves between `DRIVER_OK` and reset.
pub struct Activation {
    /// The device's queue logic.
    pub handler: Box<dyn QueueHandler>,
    /// The queues, as the driver configured them (`None`: not enabled).
    pub queues: Vec<Option<Queue>>,
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// Where completions go.
    pub interrupt: Interrupt,
}

/// Run by the worker thread itself before it serves its first
/// activation (the VMM's per-thread seccomp filter; by then the process's
/// filter is in place, so adding one cannot disturb it).
pub type OnFirstStart = Box<dyn FnOnce() -> Result<(), String> + Send>;

enum Command {
    Start(Box<Activation>),
    Reset,
    Exit,
}

/// Errors starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// An eventfd, the epoll set or the thread could not be created.
    #[error("cannot start the worker thread of {0}: {1}")]
    Start(String, std::io::Error),
}

/// The handle the transport keeps.
pub struct Worker {
    name: String,
    control: Arc<EventFd>,
    tx: Mutex<Sender<Command>>,
    acks: Mutex<Receiver<()>>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

/// How long a reset waits for the worker to finish the request in hand.
const RESET_WAIT: Duration = Duration::from_secs(10);

const CONTROL_TOKEN: u64 = u64::MAX;
/// Tokens of the handler's own descriptors start here.
const EVENT_TOKEN: u64 = 1 << 32;

impl Worker {
    /// Start the thread `thread_name` serving the queues whose doorbells
    /// are `kicks` (one per queue, in order).
    pub fn start(
        name: String,
        thread_name: String,
        kicks: Vec<Arc<EventFd>>,
        on_first_start: Option<OnFirstStart>,
    ) -> Result<Self, WorkerError> {
        let err = |e| WorkerError::Start(name.clone(), e);
        let control = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(err)?);
        let epoll = Epoll::new().map_err(err)?;
        epoll
            .ctl(
                ControlOperation::Add,
                std::os::fd::AsRawFd::as_raw_fd(&*control),
                EpollEvent::new(EventSet::IN, CONTROL_TOKEN),
            )
            .map_err(err)?;
        for (i, k) in kicks.iter().enumerate() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    std::os::fd::AsRawFd::as_raw_fd(&**k),
                    EpollEvent::new(EventSet::IN, i as u64),
                )
                .map_err(err)?;
        }
        let (tx, rx) = channel();
        let (ack_tx, acks) = channel();
        let ctl = control.clone();
        let thread_label = name.clone();
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run(&thread_label, epoll, ctl, kicks, rx, ack_tx, on_first_start))
            .map_err(err)?;
        Ok(Self {
            name,
            control,
            tx: Mutex::new(tx),
            acks: Mutex::new(acks),
            handle: Some(handle),
        })
    }

    fn send(&self, c: Command) -> bool {
        let ok = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(c)
            .is_ok();
        ok && self.control.write(1).is_ok()
    }

    /// Serve `activation` from now on.
    pub fn activate(&self, activation: Activation) {
        if !self.send(Command::Start(Box::new(activation))) {
            error!(
                "{}: the worker thread is gone; the device does nothing",
                self.name
            );
        }
    }

    /// Stop serving (the guest reset the device); returns once the worker
    /// dropped its activation, or after [`RESET_WAIT`] with an error logged.
    pub fn reset(&self) {
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        while acks.try_recv().is_ok() {}
        if !self.send(Command::Reset) {
            return;
        }
        if acks.recv_timeout(RESET_WAIT).is_err() {
            error!(
                "{}: the worker did not stop within {RESET_WAIT:?} of a device reset",
                self.name
            );
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.send(Command::Exit);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    name: &str,
    epoll: Epoll,
    control: Arc<EventFd>,
    kicks: Vec<Arc<EventFd>>,
    rx: Receiver<Command>,
    acks: Sender<()>,
    mut on_first_start: Option<OnFirstStart>,
) {
    let mut active: Option<Box<Activation>> = None;
    let mut events = vec![EpollEvent::default(); kicks.len() + 9];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error!("{name}: epoll_wait failed, the device stops: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == CONTROL_TOKEN {
                let _ = control.read();
                while let Ok(c) = rx.try_recv() {
                    match c {
                        Command::Start(a) => {
                            if let Some(hook) = on_first_start.take() {
                                if let Err(e) = hook() {
                                    error!("{name}: {e}; the device stays inactive");
                                    on_first_start = Some(Box::new(move || Err(e)));
                                    continue;
                                }
                            }
                            debug!("{name}: activated");
                            for (i, fd) in a.handler.event_fds().into_iter().enumerate() {
                                let ev = EpollEvent::new(
                                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                                    EVENT_TOKEN + i as u64,
                                );
                                if let Err(e) = epoll.ctl(ControlOperation::Add, fd, ev) {
                                    error!("{name}: cannot wait on its host descriptor: {e}");
                                }
                            }
                            active = Some(a);
                            // Requests made available before DRIVER_OK
                            // (allowed for some devices) are served now.
                            if let Some(a) = active.as_mut() {
                                for i in 0..a.queues.len() {
                                    serve(name, a, i);
                                }
                            }
                        }
                        Command::Reset => {
                            if let Some(a) = active.take() {
                                for fd in a.handler.event_fds() {
                                    let _ = epoll.ctl(
                                        ControlOperation::Delete,
                                        fd,
                                        EpollEvent::default(),
                                    );
                                }
                            }
                            let _ = acks.send(());
                        }
                        Command::Exit => return,
                    }
                }
                continue;
            }
            if token >= EVENT_TOKEN {
                if let Some(a) = active.as_mut() {
                    host_event(name, a, (token - EVENT_TOKEN) as usize);
                }
                continue;
            }
            let index = token as usize;
            if let Some(k) = kicks.get(index) {
                let _ = k.read();
            }
            if let Some(a) = active.as_mut() {
                serve(name, a, index);
            }
        }
    }
}

/// A handler descriptor is readable: let the handler work, then tell the
/// guest of the queues it completed buffers in.
fn host_event(name: &str, a: &mut Activation, which: usize) {
    if a.interrupt.needs_reset.load(Ordering::SeqCst) {
        return;
    }
    let done = match a.handler.on_event(which, &mut a.queues, &a.mem) {
        Ok(d) => d,
        Err(e) => {
            error!("{name}: {e}; the device needs a reset");
            a.interrupt.device_broken();
            return;
        }
    };
    for index in done {
        if let Some(Some(queue)) = a.queues.get_mut(index) {
            notify_if_asked(name, queue, &a.mem, &a.interrupt, index);
        }
    }
}

/// Queue `index` got used buffers: interrupt the guest if it asked to be.
fn notify_if_asked(
    name: &str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    index: usize,
) {
    match queue.needs_notification(mem) {
        Ok(true) => interrupt.queue(index),
        Ok(false) => {}
        Err(e) => {
            error!("{name}: queue {index}: {e}");
            interrupt.device_broken();
        }
    }
}

/// Drain queue `index`, then tell the guest if it asked.
fn serve(name: &str, a: &mut Activation, index: usize) {
    if a.interrupt.needs_reset.load(Ordering::SeqCst) {
        return;
    }
    let Some(Some(queue)) = a.queues.get_mut(index) else {
        return;
    };
    let mem = &a.mem;
    let mut completed = 0usize;
    let result = loop {
        if let Err(e) = queue.disable_notification(mem) {
            break Err(e.to_string());
        }
        match a.handler.process(index, queue, mem) {
            Ok(n) => completed += n,
            Err(e) => break Err(e.to_string()),
        }
        match queue.enable_notification(mem) {
            Ok(true) if a.handler.drains(index) => continue,
            Ok(_) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
    };
    if let Err(e) = result {
        error!("{name}: queue {index} is broken, the device needs a reset: {e}");
        a.interrupt.device_broken();
        return;
    }
    if completed > 0 {
        notify_if_asked(name, queue, mem, &a.interrupt, index);
    }
}
