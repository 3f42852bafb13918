//! VFIO passthrough on the host: opening the functions (legacy
//! container/group or iommufd + device cdev), the KVM-VFIO device, DMA
//! mapping of guest RAM, and the [`VfioBackend`] the device model in
//! `devices::vfio` drives.
//!
//! Order of a VM's life with passed-through functions:
//! 1. [`Passthrough::open`]: each function is checked by
//!    [`crate::host::check_passthrough`] (bound to a VFIO driver, IOMMU and
//!    interrupt remapping on, group viable, permissions, memlock, not a
//!    PF), opened and
//!    reset; a function another process holds is refused (the kernel
//!    answers EBUSY) with the holder named.
//! 2. the device models are built and put on bus 0 ([`Passthrough::attach`]);
//!    INTx lines get a level irqfd with resample.
//! 3. all guest RAM is mapped for DMA ([`Passthrough::map_dma`]) before
//!    the first vCPU runs.
//! 4. at the end ([`Passthrough::shutdown`]): BAR slots removed,
//!    interrupts off, functions reset (no more DMA), DMA unmapped, files
//!    closed, in a thread with a deadline so a wedged device cannot keep
//!    tessera from exiting.
//!
//! The kernel's vfio-pci itself resets a function when it is opened and
//! when it is released, so every VM (also after `--on-reset restart`)
//! starts with a freshly reset device.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::pci::{Bdf, SharedPciDevice};
use devices::vfio::{IrqIndex, RegionInfo, VfioBackend, VfioOptions, VfioPciDevice, region};
use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use log::{debug, info, warn};
use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP, vfio_device_info,
};
use vfio_ioctls::{
    VfioContainer, VfioDevice, VfioDeviceFd, VfioError as IoctlError, VfioIommufd, VfioOps,
    VfioRegionInfoCap,
};
use vm_memory::{FileOffset, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MmapRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ref};

use crate::config::{DeviceSpec, VfioMode, format_size};
use crate::host::{self, HostError, HostRoot};
use crate::platform::Platform;

/// The two VFIO ioctls vfio-ioctls does not expose with their result
/// (linux/vfio.h: `VFIO_TYPE` ';', `VFIO_BASE` 100).
mod ioctls {
    #![allow(missing_docs)]
    use vmm_sys_util::ioctl_io_nr;
    ioctl_io_nr!(VFIO_DEVICE_GET_INFO, 0x3b, 100 + 7);
    ioctl_io_nr!(VFIO_DEVICE_RESET, 0x3b, 100 + 11);
}
use ioctls::{VFIO_DEVICE_GET_INFO, VFIO_DEVICE_RESET};

/// How long teardown may take before tessera gives up on a device.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// First bus-0 slot for passed-through functions (00:00.0 is the MCH).
pub const FIRST_SLOT: u8 = 2;

/// Errors passing a function through. Each names the function and what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    /// What the host checks found (not bound to vfio-pci, IOMMU off,
    /// group not viable, permissions, memlock, a PF ...).
    #[error(transparent)]
    Host(#[from] HostError),
    /// Another process holds the function (the kernel said EBUSY).
    #[error(
        "{0}: busy: {1} already has it open (another VM?); stop it or pass a different function"
    )]
    Busy(String, String),
    /// Opening the group or cdev was refused.
    #[error(
        "{0}: permission denied opening {1}: run as root, or give your user access to it (e.g. a udev rule: SUBSYSTEM==\"vfio\", OWNER=\"youruser\")"
    )]
    PermissionDenied(String, String),
    /// iommufd asked for but not available.
    #[error(
        "{0}: --vfio iommufd needs /dev/iommu and the device's VFIO cdev (/sys/bus/pci/devices/{0}/vfio-dev/vfioN); this kernel lacks {1}: use --vfio legacy"
    )]
    NoIommufd(String, &'static str),
    /// A VFIO or KVM call failed.
    #[error("{0}: cannot {1}: {2}")]
    Vfio(String, &'static str, String),
    /// The device model could not be built.
    #[error(transparent)]
    Model(#[from] devices::vfio::VfioError),
    /// The ROM file could not be read.
    #[error("{0}: cannot read rom={1}: {2}")]
    Rom(String, PathBuf, io::Error),
    /// DMA mapping guest RAM failed.
    #[error("cannot map guest RAM at {gpa:#x} (+{len}) for DMA: {reason}")]
    DmaMap {
        /// Guest address.
        gpa: u64,
        /// Length, human-readable.
        len: String,
        /// Why.
        reason: String,
    },
}

impl PassthroughError {
    /// True when the user can fix it (exit status 2): everything but a
    /// failing ioctl on a device that passed every check.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            PassthroughError::Vfio(..) | PassthroughError::DmaMap { .. }
        )
    }
}

/// A function resolved on the host.
#[derive(Debug, Clone)]
struct Target {
    bdf: String,
    sysfs: PathBuf,
    group: u32,
    cdev: Option<String>,
}

/// Resolve a `--device` path or BDF and check everything that stops
/// passthrough before opening anything (see [`crate::host`]).
fn preflight(root: &HostRoot, spec: &str, memory: u64) -> Result<Target, PassthroughError> {
    let t = host::check_passthrough(root, spec, memory)?;
    Ok(Target {
        bdf: t.address.to_string(),
        sysfs: t.sysfs,
        group: t.group,
        cdev: t
            .cdev
            .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned())),
    })
}

/// Check every `--device` before KVM is opened, so bad input is reported
/// first (opening happens later, in [`Passthrough::open`]).
pub fn check(specs: &[DeviceSpec], memory: u64) -> Result<(), PassthroughError> {
    let root = HostRoot::from_env();
    for s in specs {
        preflight(&root, &s.path, memory)?;
    }
    Ok(())
}

/// Take a free VF for every `vf=PF` device of `specs` ([`host::take_vf`]:
/// claimed, bound to a VFIO driver if needed, profile applied), creating
/// `create` VFs on a PF that has none. Returns the devices with each
/// `vf=PF` replaced by the VF taken, exactly as `--device <VF>` would
/// give it, and the claims, which hold the VFs until they are dropped.
/// `owner` names the VM in the locks (`tessera vf list`).
pub fn take_pool_vfs(
    specs: &[DeviceSpec],
    create: Option<u32>,
    owner: &str,
) -> Result<(Vec<DeviceSpec>, Vec<host::VfClaim>), HostError> {
    let root = HostRoot::from_env();
    let mut kernel = host::SysfsKernel {
        modprobe: root.is_system(),
    };
    let mut out = Vec::with_capacity(specs.len());
    let mut claims = Vec::new();
    for s in specs {
        let Some(pool) = &s.vf_pool else {
            out.push(s.clone());
            continue;
        };
        let pf = host::resolve_function(&root, &pool.pf)?;
        let (vf, claim) = host::take_vf(&mut kernel, &root, pf, create, &pool.profile, owner)?;
        claims.push(claim);
        out.push(DeviceSpec {
            path: vf.to_string(),
            vf_pool: None,
            ..s.clone()
        });
    }
    Ok((out, claims))
}

fn map_open_error(t: &Target, e: &IoctlError, mode_path: String) -> PassthroughError {
    let io_errno = match e {
        IoctlError::OpenGroup(io, _)
        | IoctlError::OpenContainer(io)
        | IoctlError::OpenDeviceCdev(io) => io.raw_os_error(),
        _ => None,
    };
    match (e, io_errno) {
        (_, Some(libc::EBUSY)) => {
            let who: Vec<String> =
                host::group_holders(&HostRoot::from_env(), Path::new(&mode_path))
                    .into_iter()
                    .map(|(pid, comm)| format!("pid {pid} ({comm})"))
                    .collect();
            let who = if who.is_empty() {
                "another process".to_string()
            } else {
                who.join(", ")
            };
            PassthroughError::Busy(t.bdf.clone(), who)
        }
        (_, Some(libc::EACCES | libc::EPERM)) => {
            PassthroughError::PermissionDenied(t.bdf.clone(), mode_path)
        }
        // The host changed since the checks (or they missed something):
        // say what they find now.
        (IoctlError::GroupViable, _) => match preflight(&HostRoot::from_env(), &t.bdf, 0) {
            Err(e) => e,
            Ok(_) => PassthroughError::Vfio(
                t.bdf.clone(),
                "use its IOMMU group",
                format!("group {} is not viable", t.group),
            ),
        },
        _ => PassthroughError::Vfio(t.bdf.clone(), "open the VFIO device", e.to_string()),
    }
}

/// The host side of one passed-through function, for the device model.
struct HostFunction {
    bdf: String,
    /// A second descriptor of the device for positioned I/O and mmap;
    /// declared before `device` so it is closed first (the kernel refuses
    /// to detach a group from its container while a device file is open).
    file: Arc<File>,
    device: Arc<VfioDevice>,
    can_reset: bool,
}

impl HostFunction {
    fn region_io_offset(&self, index: u32, offset: u64, len: usize) -> io::Result<u64> {
        let size = self.device.get_region_size(index);
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(self.device.get_region_offset(index) + offset),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}

fn exact(n: usize, want: usize) -> io::Result<()> {
    if n == want {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short VFIO region access",
        ))
    }
}

impl VfioBackend for HostFunction {
    fn address(&self) -> &str {
        &self.bdf
    }

    fn config_read(&self, offset: u16, data: &mut [u8]) -> io::Result<()> {
        self.region_read(region::CONFIG, u64::from(offset), data)
    }

    fn config_write(&self, offset: u16, data: &[u8]) -> io::Result<()> {
        self.region_write(region::CONFIG, u64::from(offset), data)
    }

    fn region(&self, index: u32) -> RegionInfo {
        let size = self.device.get_region_size(index);
        if size == 0 {
            return RegionInfo::default();
        }
        let sparse = self
            .device
            .get_region_caps(index)
            .into_iter()
            .find_map(|c| match c {
                VfioRegionInfoCap::SparseMmap(s) => {
                    Some(s.areas.iter().map(|a| (a.offset, a.size)).collect())
                }
                _ => None,
            });
        RegionInfo {
            size,
            mmap: self.device.get_region_flags(index) & VFIO_REGION_INFO_FLAG_MMAP != 0,
            sparse,
        }
    }

    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let at = self.region_io_offset(index, offset, data.len())?;
        exact(self.file.read_at(data, at)?, data.len())
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let at = self.region_io_offset(index, offset, data.len())?;
        exact(self.file.write_at(data, at)?, data.len())
    }

    fn map_region(&self, index: u32, offset: u64, len: u64) -> io::Result<Arc<MmapRegion>> {
        let at = self.region_io_offset(index, offset, len as usize)?;
        MmapRegion::build(
            Some(FileOffset::from_arc(self.file.clone(), at)),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map(Arc::new)
        .map_err(|e| io::Error::other(e.to_string()))
    }

    fn irq_count(&self, irq: IrqIndex) -> u32 {
        self.device
            .get_irq_info(irq_index(irq))
            .map_or(0, |i| i.count)
    }

    fn set_irqs(&self, irq: IrqIndex, fds: &[&EventFd]) -> io::Result<()> {
        let index = irq_index(irq);
        let r = if fds.is_empty() {
            self.device.disable_irq(index)
        } else {
            self.device.enable_irq(index, fds.to_vec())
        };
        r.map_err(|e| io::Error::other(e.to_string()))
    }

    fn set_intx_resample(&self, fd: &EventFd) -> io::Result<()> {
        self.device
            .set_irq_resample_fd(VFIO_PCI_INTX_IRQ_INDEX, vec![fd])
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn reset(&self) -> io::Result<()> {
        if !self.can_reset {
            return Err(io::Error::other(
                "the kernel offers no reset for it (no FLR, PM or bus reset)",
            ));
        }
        // SAFETY: VFIO_DEVICE_RESET takes no argument; the descriptor is a
        // VFIO device owned by this struct.
        let r = unsafe { ioctl(self.file.as_ref(), VFIO_DEVICE_RESET()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn irq_index(irq: IrqIndex) -> u32 {
    match irq {
        IrqIndex::Intx => VFIO_PCI_INTX_IRQ_INDEX,
        IrqIndex::Msi => VFIO_PCI_MSI_IRQ_INDEX,
        IrqIndex::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
    }
}

fn device_flags(file: &File) -> io::Result<u32> {
    let mut info = vfio_device_info {
        argsz: std::mem::size_of::<vfio_device_info>() as u32,
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_GET_INFO fills a vfio_device_info of the size
    // given in argsz; the descriptor is a VFIO device.
    let r = unsafe { ioctl_with_mut_ref(file, VFIO_DEVICE_GET_INFO(), &mut info) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(info.flags)
    }
}

/// One opened function.
struct Opened {
    target: Target,
    spec: DeviceSpec,
    host: Option<HostFunction>,
}

/// A model on bus 0.
struct Attached {
    bdf: Bdf,
    name: String,
    model: Arc<Mutex<VfioPciDevice>>,
}

/// The VM's passed-through functions and their DMA context.
pub struct Passthrough {
    ops: Option<Arc<dyn VfioOps>>,
    opened: Vec<Opened>,
    attached: Vec<Attached>,
    dma: Vec<(u64, u64)>,
    /// Userspace interrupt relays of `x-no-kvm-msi` functions.
    relays: Vec<crate::interrupt::MsiRelay>,
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passthrough")
            .field(
                "functions",
                &self
                    .opened
                    .iter()
                    .map(|o| &o.target.bdf)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Passthrough {
    /// No passthrough.
    pub fn none() -> Self {
        Self {
            ops: None,
            opened: Vec::new(),
            attached: Vec::new(),
            dma: Vec::new(),
            relays: Vec::new(),
        }
    }

    /// Check, open and reset every function of `specs` (none: nothing is
    /// opened). `memory` is the guest RAM that will be pinned.
    pub fn open(
        specs: &[DeviceSpec],
        mode: VfioMode,
        vm: &VmFd,
        memory: u64,
    ) -> Result<Self, PassthroughError> {
        if specs.is_empty() {
            return Ok(Self::none());
        }
        let root = HostRoot::from_env();
        let targets = specs
            .iter()
            .map(|s| preflight(&root, &s.path, memory))
            .collect::<Result<Vec<_>, _>>()?;
        let iommufd_ready =
            Path::new("/dev/iommu").exists() && targets.iter().all(|t| t.cdev.is_some());
        let use_iommufd = match mode {
            VfioMode::Legacy => false,
            VfioMode::Auto => iommufd_ready,
            VfioMode::Iommufd => {
                if let Some(t) = targets.first() {
                    if !Path::new("/dev/iommu").exists() {
                        return Err(PassthroughError::NoIommufd(
                            t.bdf.clone(),
                            "/dev/iommu (CONFIG_IOMMUFD)",
                        ));
                    }
                    if let Some(t) = targets.iter().find(|t| t.cdev.is_none()) {
                        return Err(PassthroughError::NoIommufd(
                            t.bdf.clone(),
                            "the VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV)",
                        ));
                    }
                }
                true
            }
        };
        let first = targets[0].bdf.clone();
        let kvm_err =
            |what, e: kvm_ioctls::Error| PassthroughError::Vfio(first.clone(), what, e.to_string());
        let mut dev = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let kvm_vfio = vm
            .create_device(&mut dev)
            .map_err(|e| kvm_err("create the KVM-VFIO device", e))?;
        let kvm_vfio = Arc::new(VfioDeviceFd::new_from_kvm(kvm_vfio));
        let ops: Arc<dyn VfioOps> = if use_iommufd {
            let fd = iommufd_ioctls::IommuFd::new().map_err(|e| {
                PassthroughError::Vfio(first.clone(), "open /dev/iommu", e.to_string())
            })?;
            Arc::new(
                VfioIommufd::new(Arc::new(fd), None, Some(kvm_vfio)).map_err(|e| {
                    PassthroughError::Vfio(first.clone(), "set up iommufd", e.to_string())
                })?,
            )
        } else {
            Arc::new(
                VfioContainer::new(Some(kvm_vfio))
                    .map_err(|e| map_open_error(&targets[0], &e, "/dev/vfio/vfio".into()))?,
            )
        };
        info!(
            "VFIO: {} interface",
            if use_iommufd {
                "iommufd"
            } else {
                "legacy container/group"
            }
        );
        let mut opened = Vec::new();
        for (t, spec) in targets.into_iter().zip(specs) {
            let node = match (&t.cdev, use_iommufd) {
                (Some(c), true) => format!("/dev/vfio/devices/{c}"),
                _ => format!("/dev/vfio/{}", t.group),
            };
            let device = VfioDevice::new(&t.sysfs, ops.clone(), true)
                .map_err(|e| map_open_error(&t, &e, node))?;
            // SAFETY: the descriptor belongs to `device`, which outlives
            // this borrow; it is duplicated, not taken.
            let fd = unsafe { BorrowedFd::borrow_raw(device.as_raw_fd()) };
            let file = File::from(fd.try_clone_to_owned().map_err(|e| {
                PassthroughError::Vfio(
                    t.bdf.clone(),
                    "duplicate the device descriptor",
                    e.to_string(),
                )
            })?);
            let can_reset = device_flags(&file).is_ok_and(|f| f & VFIO_DEVICE_FLAGS_RESET != 0);
            // No reset here: the kernel's vfio-pci resets the function
            // when it is opened (vfio_pci_core_enable), so the VM starts
            // with a clean device; a second reset would only double the
            // start-up time (a secondary bus reset waits about a second).
            let host = HostFunction {
                bdf: t.bdf.clone(),
                file: Arc::new(file),
                device: Arc::new(device),
                can_reset,
            };
            opened.push(Opened {
                target: t,
                spec: spec.clone(),
                host: Some(host),
            });
        }
        Ok(Self {
            ops: Some(ops),
            opened,
            attached: Vec::new(),
            dma: Vec::new(),
            relays: Vec::new(),
        })
    }

    /// True when nothing is passed through.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty()
    }

    /// Build the device models and put them on bus 0 from slot 2 on.
    pub fn attach(&mut self, platform: &Platform) -> Result<(), PassthroughError> {
        for (i, o) in self.opened.iter_mut().enumerate() {
            let Some(host) = o.host.take() else {
                continue;
            };
            let rom = match &o.spec.rom {
                Some(p) => Some(
                    std::fs::read(p)
                        .map_err(|e| PassthroughError::Rom(o.target.bdf.clone(), p.clone(), e))?,
                ),
                None => None,
            };
            let options = VfioOptions {
                rom,
                no_rom: o.spec.no_rom,
                no_mmap: o.spec.no_mmap,
            };
            let model = VfioPciDevice::new(Box::new(host), options)?;
            let slot = FIRST_SLOT + i as u8;
            let bdf = Bdf::new(0, slot, 0);
            if let Some(line) = model.intx() {
                let gsi = firmware::acpi::pci::pci_intx_gsi(slot, line.pin - 1);
                platform
                    .vm()
                    .assign_irqfd_with_resample(&line.trigger, &line.resample, gsi)
                    .map_err(|e| {
                        PassthroughError::Vfio(o.target.bdf.clone(), "wire INTx", e.to_string())
                    })?;
            }
            let name = model.name().to_string();
            let model = Arc::new(Mutex::new(model));
            let shared: SharedPciDevice = model.clone();
            if o.spec.no_kvm_msi {
                let relay = platform
                    .add_pci_function_relayed(bdf, shared)
                    .map_err(|e| {
                        PassthroughError::Vfio(
                            o.target.bdf.clone(),
                            "place it on bus 0",
                            e.to_string(),
                        )
                    })?;
                warn!("{name}: x-no-kvm-msi: its interrupts go through a userspace thread");
                self.relays.extend(relay);
            } else {
                platform.add_pci_function(bdf, shared).map_err(|e| {
                    PassthroughError::Vfio(o.target.bdf.clone(), "place it on bus 0", e.to_string())
                })?;
            }
            info!("{name} is {bdf} in the guest");
            self.attached.push(Attached { bdf, name, model });
        }
        Ok(())
    }

    /// The 64-bit BARs of the attached functions (for the address plan).
    pub fn bar64s(&self) -> Vec<crate::pci_space::Bar64> {
        let mut out = Vec::new();
        for a in &self.attached {
            let bars = devices::pci::PciDevice::programmed_bars(
                &mut *a.model.lock().unwrap_or_else(|e| e.into_inner()),
            );
            for b in bars {
                if matches!(b.kind, devices::pci::BarKind::Mem64 { .. }) {
                    out.push(crate::pci_space::Bar64 {
                        device: a.name.clone(),
                        index: b.index,
                        size: b.size,
                    });
                }
            }
        }
        out
    }

    /// Map all of `mem` for DMA (IOVA = guest physical address).
    pub fn map_dma(&mut self, mem: &GuestMemoryMmap) -> Result<(), PassthroughError> {
        let Some(ops) = &self.ops else {
            return Ok(());
        };
        for region in mem.iter() {
            let gpa = region.start_addr().0;
            let len = region.len();
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| PassthroughError::DmaMap {
                    gpa,
                    len: format_size(len),
                    reason: e.to_string(),
                })?;
            // SAFETY: `host` is the start of the guest memory region of
            // `len` bytes, owned by `mem`, which the VM keeps until after
            // `shutdown` unmapped it; tessera itself only touches guest
            // memory through volatile accesses.
            unsafe { ops.vfio_dma_map(gpa, len as usize, host) }.map_err(|e| {
                PassthroughError::DmaMap {
                    gpa,
                    len: format_size(len),
                    reason: e.to_string(),
                }
            })?;
            self.dma.push((gpa, len));
        }
        info!("guest RAM mapped for DMA: {:x?}", self.dma);
        Ok(())
    }

    /// Tear everything down (see the module documentation), within a
    /// deadline. Safe to call when nothing is passed through.
    pub fn shutdown(mut self, platform: &Platform) {
        if self.opened.is_empty() {
            return;
        }
        // The guest loses the BARs first; then the functions leave bus 0,
        // so the teardown thread holds the last reference to each model
        // (and closes the device files within the deadline).
        self.relays.clear();
        platform.unmap_all_bars();
        for a in &self.attached {
            platform.pci().remove(a.bdf);
        }
        let attached = std::mem::take(&mut self.attached);
        let ops = self.ops.take();
        let dma = std::mem::take(&mut self.dma);
        let opened = std::mem::take(&mut self.opened);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("vfio-teardown".into())
            .spawn(move || {
                for a in &attached {
                    let mut m = a.model.lock().unwrap_or_else(|e| e.into_inner());
                    m.disable_interrupts();
                    if let Err(e) = m.reset() {
                        debug!("{}: not reset at exit: {e}", a.name);
                    }
                }
                if let Some(ops) = &ops {
                    for (gpa, len) in dma {
                        if let Err(e) = ops.vfio_dma_unmap(gpa, len as usize) {
                            warn!("DMA unmap of {gpa:#x}: {e}");
                        }
                    }
                }
                drop(attached);
                drop(opened);
                drop(ops);
                let _ = tx.send(());
            });
        match worker {
            Ok(_) => {
                if rx.recv_timeout(TEARDOWN_DEADLINE).is_err() {
                    warn!(
                        "a passed-through device did not finish its reset within {TEARDOWN_DEADLINE:?}; exiting anyway"
                    );
                }
            }
            Err(e) => warn!("cannot start the VFIO teardown thread: {e}"),
        }
    }
}
