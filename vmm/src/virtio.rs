//! The machine's virtio devices: `--disk` (virtio-blk) and `--rng`
//! (virtio-rng), built from the configuration and put on PCI bus 0 after
//! the passed-through functions.
//!
//! Each device's worker thread starts here, before the VM runs, so it is
//! covered by the process-wide seccomp filter and no vCPU ever creates a
//! thread. Disks are raw or qcow2 (with backing chains), told apart by the
//! qcow2 magic unless `format=` says; a qcow2 file given as `format=raw`
//! is refused (the guest would see, and could overwrite, its metadata).

use std::sync::{Arc, Mutex};

use devices::pci::Bdf;
use devices::virtio::block::{Block, BlockBackend, BlockOptions, DiskError, RawFile};
use devices::virtio::console::Console;
use devices::virtio::net::Net;
use devices::virtio::pci::{VirtioPci, VirtioPciError};
use devices::virtio::qcow2;
use devices::virtio::rng::{Rng, RngOptions};
use log::{info, warn};
use vm_memory::GuestMemoryMmap;

use crate::config::{DiskCache, DiskFormat, VmConfig};
use crate::platform::Platform;

/// Bus-0 slots end below the LPC bridge (0x1f).
const LAST_SLOT: u8 = 0x1e;

/// Errors building the virtio devices.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// A disk image cannot be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// `format=raw` given for a qcow2 image.
    #[error(
        "disk {0}: it is a qcow2 image, given as format=raw (the guest would see and could overwrite its metadata); leave format out or give format=qcow2"
    )]
    Qcow2AsRaw(String),
    /// The transport could not be built.
    #[error(transparent)]
    Transport(#[from] VirtioPciError),
    /// More devices than bus-0 slots.
    #[error("too many PCI devices: bus 0 has no slot left for {0}")]
    NoSlot(String),
    /// The tap could not be had.
    #[error("--net: {0}")]
    Tap(String),
    /// The console's file could not be opened.
    #[error("--virtio-console: cannot open {0}: {1}")]
    Console(String, std::io::Error),
    /// `/dev/urandom` could not be opened.
    #[error("virtio-rng: cannot open /dev/urandom: {0}")]
    Urandom(std::io::Error),
    /// The slot is taken (a Tessera bug).
    #[error("{0}: {1}")]
    Attach(String, String),
}

impl VirtioError {
    /// True when the user can fix it (a path, a lock, an image format).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            VirtioError::Disk(_)
                | VirtioError::Qcow2AsRaw(_)
                | VirtioError::NoSlot(_)
                | VirtioError::Tap(_)
        )
    }
}

/// Where the devices went.
#[derive(Debug, Default)]
pub struct VirtioDevices {
    functions: Vec<(Bdf, String)>,
    disks: Vec<Bdf>,
}

impl VirtioDevices {
    /// The virtio-blk functions, in `--disk` order.
    pub fn disks(&self) -> &[Bdf] {
        &self.disks
    }
}

/// Build the devices of `cfg` and put them on bus 0 from `first_slot` on.
pub fn attach(
    platform: &Platform,
    cfg: &VmConfig,
    mem: &GuestMemoryMmap,
    first_slot: u8,
) -> Result<VirtioDevices, VirtioError> {
    let mut out = VirtioDevices::default();
    let mut slot = first_slot;
    let mut place = |model: VirtioPci, out: &mut VirtioDevices| -> Result<(), VirtioError> {
        let name = model.name().to_string();
        if slot > LAST_SLOT {
            return Err(VirtioError::NoSlot(name));
        }
        let bdf = Bdf::new(0, slot, 0);
        platform
            .add_pci_function(bdf, Arc::new(Mutex::new(model)))
            .map_err(|e| VirtioError::Attach(name.clone(), e.to_string()))?;
        info!("{name} at {bdf}");
        out.functions.push((bdf, name));
        slot += 1;
        Ok(())
    };
    for (i, d) in cfg.disks.iter().enumerate() {
        let sync = d.cache == DiskCache::None;
        let qcow2 = qcow2::is_qcow2(&d.path);
        let backend: Arc<dyn BlockBackend> = match (d.format, qcow2) {
            (DiskFormat::Raw, true) => {
                return Err(VirtioError::Qcow2AsRaw(d.path.display().to_string()));
            }
            (DiskFormat::Qcow2, _) | (DiskFormat::Auto, true) => {
                Arc::new(qcow2::Qcow2Disk::open(&d.path, d.read_only, sync)?)
            }
            _ => Arc::new(RawFile::open(&d.path, d.read_only, sync)?),
        };
        let block = Block::new(
            backend,
            BlockOptions {
                name: format!("disk{i}"),
                read_only: d.read_only,
                serial: d.serial.clone(),
                queues: d.queues,
            },
        );
        let model = VirtioPci::with_worker_hook(
            Box::new(block),
            mem.clone(),
            format!("blk{i}"),
            worker_jail(cfg),
        )?;
        place(model, &mut out)?;
        if let Some(&(bdf, _)) = out.functions.last() {
            out.disks.push(bdf);
        }
    }
    for (i, n) in cfg.nets.iter().enumerate() {
        let (tap, name) = open_tap(n.tap.as_deref()).map_err(VirtioError::Tap)?;
        let mac = n.mac.unwrap_or_else(|| default_mac(&name));
        info!(
            "virtio-net {i}: tap {name}, MAC {}",
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        let offloads = tap_takes_offloads(&tap, &name);
        let net = Net::with_vnet_hdr(tap, name, mac, offloads);
        let model = VirtioPci::with_worker_hook(
            Box::new(net),
            mem.clone(),
            format!("net{i}"),
            worker_jail(cfg),
        )?;
        place(model, &mut out)?;
    }
    if let Some(path) = &cfg.virtio_console {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| VirtioError::Console(path.display().to_string(), e))?;
        let console = Console::new(file, path.display().to_string());
        let model = VirtioPci::with_worker_hook(
            Box::new(console),
            mem.clone(),
            "console".into(),
            worker_jail(cfg),
        )?;
        place(model, &mut out)?;
    }
    if cfg.rng {
        let urandom = std::fs::File::open("/dev/urandom").map_err(VirtioError::Urandom)?;
        let rng = Rng::new(urandom, RngOptions::default());
        let model = VirtioPci::with_worker_hook(
            Box::new(rng),
            mem.clone(),
            "rng".into(),
            worker_jail(cfg),
        )?;
        place(model, &mut out)?;
    }
    Ok(out)
}

/// 52:54:00 (QEMU's prefix) and three bytes of a hash of the tap's name.
fn default_mac(tap: &str) -> [u8; 6] {
    let h = tap.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    [0x52, 0x54, 0x00, (h >> 16) as u8, (h >> 8) as u8, h as u8]
}

/// Whether the tap takes `TUNSETOFFLOAD` (checksum and TSO to its
/// reader); left at none, which the device sets per driver.
fn tap_takes_offloads(tap: &std::fs::File, name: &str) -> bool {
    use devices::virtio::net::set_tap_offloads;
    let all = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    match set_tap_offloads(tap, all).and_then(|()| set_tap_offloads(tap, 0)) {
        Ok(()) => true,
        Err(e) => {
            warn!("tap {name}: TUNSETOFFLOAD: {e}; virtio-net offers no checksum or TSO offload");
            false
        }
    }
}

/// Open the tap `name` (created when it does not exist, and then gone
/// when tessera exits; `None`: the kernel picks a name), non-blocking, as
/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` with the 12-byte virtio-net
/// header. Returns it and its name.
fn open_tap(name: Option<&str>) -> Result<(std::fs::File, String), String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| {
            format!("cannot open /dev/net/tun: {e} (load the tun module: modprobe tun; tessera needs root or CAP_NET_ADMIN to create a tap)")
        })?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if let Some(n) = name {
        for (d, s) in ifr
            .ifr_name
            .iter_mut()
            .zip(n.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives on this
    // stack frame for the call.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let who = name.map_or("a new tap".to_string(), |n| format!("tap {n}"));
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => format!(
                "{who}: permission denied: creating a tap needs root or CAP_NET_ADMIN; or create it for your user first (ip tuntap add dev NAME mode tap user $USER) and give tap=NAME"
            ),
            Some(libc::EBUSY) => format!("{who}: it is in use (another VM has it)"),
            Some(libc::EINVAL) => {
                format!("{who}: {e} (is NAME a tap? a tun or multi-queue device cannot be used)")
            }
            _ => format!("{who}: {e}"),
        });
    }
    let hdr_len: libc::c_int = devices::virtio::net::HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int, which lives on this stack
    // frame for the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) } != 0 {
        return Err(format!(
            "tap: setting the virtio-net header size: {}",
            std::io::Error::last_os_error()
        ));
    }
    let got: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok((tun, String::from_utf8_lossy(&got).into_owned()))
}

/// The worker's own seccomp filter, added by the worker thread before it
/// first serves the guest ([`crate::seccomp::WORKER`]).
fn worker_jail(cfg: &VmConfig) -> Option<devices::virtio::worker::OnFirstStart> {
    let mode = cfg.seccomp;
    Some(Box::new(move || {
        crate::seccomp::apply_worker(mode).map_err(|e| e.to_string())
    }))
}
