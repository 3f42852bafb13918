//! What a VM is made of, parsed and checked before anything is created.
//!
//! Parsing here has no side effects beyond reading file metadata, so every
//! bad input is reported before `/dev/kvm` is opened.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::host::ops::ProfileChange;

/// Configuration errors: each names the bad input and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A size such as `--memory` did not parse.
    #[error(
        "invalid size '{0}': use a number with an optional K, M, G or T suffix, e.g. 512M or 4G"
    )]
    BadSize(String),
    /// `--cpus 0`.
    #[error("--cpus must be at least 1")]
    ZeroCpus,
    /// More vCPUs than supported.
    #[error("--cpus {requested} is more than {limit}, the most {why}")]
    TooManyCpus {
        /// What was asked for.
        requested: u32,
        /// The limit.
        limit: u32,
        /// Who imposes it.
        why: &'static str,
    },
    /// A file given on the command line cannot be used.
    #[error("{what} '{}': {reason}", path.display())]
    BadFile {
        /// Which option ("kernel", "initrd", ...).
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// Why (not found, a directory, permission denied ...).
        reason: String,
    },
    /// `--serial` value not understood.
    #[error("invalid --serial '{0}': use stdio, null or file=PATH")]
    BadSerial(String),
    /// `--on-reset` value not understood.
    #[error("invalid --on-reset '{0}': use exit or restart")]
    BadOnReset(String),
    /// `--timeout 0` or similar.
    #[error("invalid --timeout '{0}': use a whole number of seconds, at least 1")]
    BadTimeout(String),
    /// `--expect-serial ''`.
    #[error("--expect-serial needs a non-empty text")]
    EmptyExpect,
    /// A command line with a NUL byte.
    #[error("--cmdline must not contain a NUL byte")]
    BadCmdline,
    /// Neither a kernel nor firmware.
    #[error("nothing to boot: give --kernel PATH, or --firmware OVMF_CODE.fd --vars VARS.fd")]
    NothingToBoot,
    /// `--firmware` without `--vars`.
    #[error(
        "--firmware needs --vars PATH: the per-VM UEFI variable store (created from --vars-template when missing)"
    )]
    MissingVars,
    /// Firmware-only options without `--firmware`.
    #[error("{0} only makes sense with --firmware")]
    NeedsFirmware(&'static str),
    /// `--fw-cfg` value not understood.
    #[error("invalid --fw-cfg '{0}': {1}")]
    BadFwCfg(String, &'static str),
    /// `--device` value not understood.
    #[error("invalid --device '{0}': {1}")]
    BadDevice(String, String),
    /// `--disk` value not understood.
    #[error("invalid --disk '{0}': {1}")]
    BadDisk(String, String),
    /// `--virtio-console` value not understood.
    #[error(
        "invalid --virtio-console '{0}': use file=FILE (the guest's /dev/hvc0 output is appended to FILE)"
    )]
    BadVirtioConsole(String),
    /// `--net` value not understood.
    #[error("invalid --net '{0}': {1}")]
    BadNet(String, String),
    /// `--debug-exit-port` value not understood.
    #[error(
        "invalid --debug-exit-port '{0}': use PORT or PORT,size=1|2|4 (PORT decimal or 0x-hex)"
    )]
    BadDebugExit(String),
    /// `--user` with `--on-reset restart`.
    #[error(
        "--user cannot be combined with --on-reset restart yet: a restart opens the devices again, which needs the privileges --user gives up (use --on-reset exit and restart tessera)"
    )]
    UserWithRestart,
    /// `--user` value not understood.
    #[error("{0}")]
    BadUser(String),
    /// `--landlock` value not understood.
    #[error("invalid --landlock '{0}': use on or off")]
    BadLandlock(String),
    /// `--seccomp` value not understood.
    #[error("invalid --seccomp '{0}': use on, log or off")]
    BadSeccomp(String),
    /// `--vf-create 0`.
    #[error("--vf-create must be at least 1 (it is how many VFs to create on a PF that has none)")]
    ZeroVfCreate,
    /// `--vf-create` without a `--device vf=PF`.
    #[error(
        "--vf-create only makes sense with --device vf=PF (it creates VFs on that PF when it has none)"
    )]
    VfCreateWithoutPool,
    /// `--vfio` value not understood.
    #[error("invalid --vfio '{0}': use auto, legacy or iommufd")]
    BadVfioMode(String),
}

/// Parse a size with an optional binary suffix (K, M, G, T; case-insensitive,
/// an optional trailing `B`/`iB`). A bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(s.to_string());
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        Some('t') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Human form of a byte count (exact when it is a whole number of units).
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        // Exact in this unit, or the largest unit that fits: 512M, 23.5G.
        if bytes >= 1 << shift && (bytes % (1 << shift) == 0 || shift >= 20) {
            if bytes % (1 << shift) == 0 {
                return format!("{}{unit}", bytes >> shift);
            }
            return format!("{:.1}{unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes >= 1 << shift {
            return format!("{:.1}{unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes} bytes")
}

/// A buffer that collects serial output (tests, embedding).
#[derive(Clone, Default)]
pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedBuffer")
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where COM1 goes.
#[derive(Debug, Clone, Default)]
pub enum SerialConfig {
    /// Host stdout, with host stdin as input (raw mode when it is a terminal).
    #[default]
    Stdio,
    /// Appended to a file; no input.
    File(PathBuf),
    /// Discarded; no input.
    Null,
    /// Collected in memory; no input.
    Capture(SharedBuffer),
}

impl FromStr for SerialConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdio" => Ok(Self::Stdio),
            "null" => Ok(Self::Null),
            _ => match s.strip_prefix("file=") {
                Some(p) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
                _ => Err(ConfigError::BadSerial(s.to_string())),
            },
        }
    }
}

/// What a guest reset does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnReset {
    /// Tessera exits with [`crate::EXIT_RESET`].
    #[default]
    Exit,
    /// The VM is rebuilt from scratch and boots again.
    Restart,
}

impl FromStr for OnReset {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "exit" => Ok(Self::Exit),
            "restart" => Ok(Self::Restart),
            _ => Err(ConfigError::BadOnReset(s.to_string())),
        }
    }
}

/// Parse `--timeout` seconds.
pub fn parse_timeout(s: &str) -> Result<Duration, ConfigError> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => Err(ConfigError::BadTimeout(s.to_string())),
    }
}

/// The mode a raw (test) image starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// 16-bit real mode at `cs:ip`.
    Real {
        /// Code segment selector (base = cs << 4).
        cs: u16,
        /// Instruction pointer.
        ip: u16,
    },
    /// 64-bit long mode, identity-mapped first 4 GiB, at `rip`.
    Long {
        /// Entry point.
        rip: u64,
    },
}

/// A Linux kernel to boot.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

/// UEFI firmware: OVMF code and a per-VM variable store.
#[derive(Debug, Clone)]
pub struct FirmwareConfig {
    /// OVMF_CODE*.fd, mapped read-only below 4 GiB.
    pub code: PathBuf,
    /// The VM's own OVMF_VARS*.fd, written through on every variable update.
    pub vars: PathBuf,
    /// Where to copy a missing `vars` from (default: the template the
    /// firmware's descriptor names).
    pub vars_template: Option<PathBuf>,
    /// Where OVMF's debug log (I/O port 0x402) goes.
    pub log: Option<PathBuf>,
}

/// A user item for fw_cfg (`--fw-cfg name=...,file=...|string=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwCfgUserItem {
    /// File name in the fw_cfg directory (e.g. `opt/org.example/config`).
    pub name: String,
    /// Contents.
    pub value: FwCfgValue,
}

/// Where a user fw_cfg item's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwCfgValue {
    /// A host file.
    File(PathBuf),
    /// A literal string.
    String(String),
}

/// The longest fw_cfg file name (the directory has 56 bytes with the NUL).
pub const FW_CFG_NAME_MAX: usize = 55;

impl FromStr for FwCfgUserItem {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why| ConfigError::BadFwCfg(s.to_string(), why);
        let mut name = None;
        let mut value = None;
        // The value may contain commas (string=a,b): split off name= first.
        let rest = s
            .strip_prefix("name=")
            .ok_or_else(|| bad("it must start with name=NAME"))?;
        let (n, tail) = rest
            .split_once(',')
            .ok_or_else(|| bad("add ,file=PATH or ,string=TEXT"))?;
        name.get_or_insert(n.to_string());
        if let Some(p) = tail.strip_prefix("file=") {
            value = Some(FwCfgValue::File(PathBuf::from(p)));
        } else if let Some(t) = tail.strip_prefix("string=") {
            value = Some(FwCfgValue::String(t.to_string()));
        }
        let name = name.unwrap_or_default();
        let value = value.ok_or_else(|| bad("add ,file=PATH or ,string=TEXT"))?;
        if name.is_empty() || name.len() > FW_CFG_NAME_MAX {
            return Err(bad("the name must be 1 to 55 bytes"));
        }
        if name.starts_with("etc/") {
            return Err(bad("names under etc/ are the VMM's own; use opt/..."));
        }
        if matches!(&value, FwCfgValue::File(p) if p.as_os_str().is_empty()) {
            return Err(bad("file= needs a path"));
        }
        Ok(Self { name, value })
    }
}

/// `--device vf=PF[,...]`: any free VF of a PF, taken when the VM starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfPool {
    /// The PF as given: a BDF or a sysfs path.
    pub pf: String,
    /// The Xe scheduling profile to give the VF (`exec-quantum-ms=`,
    /// `preempt-timeout-us=`, `priority=`); empty leaves it alone.
    pub profile: ProfileChange,
}

/// `--disk cache=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskCache {
    /// The host page cache keeps writes until the guest flushes.
    #[default]
    Writeback,
    /// Every completed write is on the medium (`O_DSYNC`).
    None,
}

/// `--disk format=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskFormat {
    /// qcow2 when the file starts with the qcow2 magic, raw otherwise.
    #[default]
    Auto,
    /// Raw (a qcow2 file given as raw is refused).
    Raw,
    /// qcow2, with its backing chain.
    Qcow2,
}

/// A virtio-blk disk (`--disk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The image file.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// Refuse guest writes (and open the image read-only).
    pub read_only: bool,
    /// The serial the guest reads (`/sys/block/vda/serial`).
    pub serial: Option<String>,
    /// Write caching.
    pub cache: DiskCache,
    /// Request queues.
    pub queues: u16,
}

impl FromStr for DiskSpec {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::BadDisk(s.to_string(), why);
        let mut spec = Self {
            path: PathBuf::new(),
            format: DiskFormat::Auto,
            read_only: false,
            serial: None,
            cache: DiskCache::Writeback,
            queues: 1,
        };
        for opt in s.split(',') {
            match opt.split_once('=') {
                Some(("path", p)) if !p.is_empty() => spec.path = PathBuf::from(p),
                Some(("format", "raw")) => spec.format = DiskFormat::Raw,
                Some(("format", "qcow2")) => spec.format = DiskFormat::Qcow2,
                Some(("format", f)) => {
                    return Err(bad(format!(
                        "format={f}: tessera reads raw and qcow2 images; convert others with 'qemu-img convert -O qcow2 IMAGE NEW.qcow2'"
                    )));
                }
                Some(("readonly", "on" | "true" | "1")) => spec.read_only = true,
                Some(("readonly", "off" | "false" | "0")) => spec.read_only = false,
                Some(("serial", id)) => {
                    if id.len() > devices::virtio::block::ID_BYTES || !id.is_ascii() {
                        return Err(bad(format!(
                            "serial={id}: at most {} ASCII characters",
                            devices::virtio::block::ID_BYTES
                        )));
                    }
                    spec.serial = Some(id.to_string());
                }
                Some(("cache", "none")) => spec.cache = DiskCache::None,
                Some(("cache", "writeback")) => spec.cache = DiskCache::Writeback,
                Some(("queues", n)) => {
                    spec.queues = n
                        .parse()
                        .ok()
                        .filter(|q| (1..=16).contains(q))
                        .ok_or_else(|| bad(format!("queues={n}: use 1 to 16")))?
                }
                None if spec.path.as_os_str().is_empty() && !opt.is_empty() => {
                    spec.path = PathBuf::from(opt)
                }
                _ => {
                    return Err(bad(format!(
                        "'{opt}' is not an option; use path=FILE[,format=raw][,readonly=on][,serial=ID][,cache=none|writeback][,queues=N]"
                    )));
                }
            }
        }
        if spec.path.as_os_str().is_empty() {
            return Err(bad("no image: give path=FILE".into()));
        }
        Ok(spec)
    }
}

/// A virtio-net card (`--net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The tap to attach to; `None`: create one (deleted at exit).
    pub tap: Option<String>,
    /// The guest's MAC address (default: 52:54:00 and three bytes from the
    /// tap's name).
    pub mac: Option<[u8; 6]>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    // unicast only
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

impl FromStr for NetSpec {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::BadNet(s.to_string(), why);
        let mut spec = Self {
            tap: None,
            mac: None,
        };
        let mut tap_given = false;
        for opt in s.split(',') {
            match opt.split_once('=') {
                None if opt == "tap" => tap_given = true,
                Some(("tap", name)) if !name.is_empty() && name.len() < 16 && !name.contains('/') => {
                    tap_given = true;
                    spec.tap = Some(name.to_string());
                }
                Some(("tap", name)) => {
                    return Err(bad(format!(
                        "tap={name}: a network interface name of 1 to 15 characters"
                    )));
                }
                Some(("mac", m)) => {
                    spec.mac = Some(parse_mac(m).ok_or_else(|| {
                        bad(format!("mac={m}: use six hex bytes, e.g. 52:54:00:12:34:56 (unicast: the first byte even)"))
                    })?)
                }
                _ => {
                    return Err(bad(format!(
                        "'{opt}' is not an option; use tap[=NAME][,mac=52:54:00:12:34:56]"
                    )));
                }
            }
        }
        if !tap_given {
            return Err(bad(
                "give tap=NAME (an existing tap) or tap (tessera creates one)".into(),
            ));
        }
        Ok(spec)
    }
}

/// A host PCI function to pass through (`--device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The function as given: a sysfs path or a BDF. For `vf=PF`, the PF
    /// until [`crate::run`] has taken a VF, then that VF's address.
    pub path: String,
    /// `vf=PF`: take a free VF of this PF (`None` once one is taken).
    pub vf_pool: Option<VfPool>,
    /// An expansion ROM image to present instead of the device's own.
    pub rom: Option<PathBuf>,
    /// `rombar=off`: no expansion ROM at all.
    pub no_rom: bool,
    /// `x-no-mmap`: trap every BAR access (debugging, measurements).
    pub no_mmap: bool,
    /// `x-no-kvm-msi`: relay MSI/MSI-X through a userspace thread instead
    /// of KVM irqfds (debugging, measurements).
    pub no_kvm_msi: bool,
}

impl FromStr for DeviceSpec {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::BadDevice(s.to_string(), why);
        let mut parts = s.split(',');
        let first = parts.next().unwrap_or_default();
        let pool = first.strip_prefix("vf=");
        if pool == Some("") {
            return Err(bad(
                "vf= needs the PF whose VFs to take from, e.g. vf=0000:03:00.0 (tessera vf list shows the PFs)".into(),
            ));
        }
        if first.is_empty() {
            return Err(bad(
                "give the function as /sys/bus/pci/devices/0000:01:10.0 or 0000:01:10.0, or vf=PF for any free VF of a PF".into(),
            ));
        }
        let mut profile = ProfileChange::default();
        let mut spec = Self {
            path: pool.unwrap_or(first).to_string(),
            vf_pool: None,
            rom: None,
            no_rom: false,
            no_mmap: false,
            no_kvm_msi: false,
        };
        let number = |key: &str, v: &str, unit: &str| {
            v.parse::<u32>().map_err(|_| {
                bad(format!(
                    "{key}={v}: use a whole number of {unit} from 0 to 4294967295 (0 = unlimited)"
                ))
            })
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("rom", file)) if !file.is_empty() => spec.rom = Some(PathBuf::from(file)),
                Some(("rombar", "off" | "0")) => spec.no_rom = true,
                Some(("rombar", "on" | "1")) => spec.no_rom = false,
                None if opt == "x-no-mmap" => spec.no_mmap = true,
                None if opt == "x-no-kvm-msi" => spec.no_kvm_msi = true,
                Some((key @ ("exec-quantum-ms" | "preempt-timeout-us" | "priority"), v))
                    if pool.is_none() =>
                {
                    return Err(bad(format!(
                        "{key}= is for vf=PF (a VF taken from a PF's pool); set a given VF's profile with 'tessera vf profile {} --{key} {v}'",
                        spec.path
                    )));
                }
                Some(("exec-quantum-ms", v)) => {
                    profile.exec_quantum_ms = Some(number("exec-quantum-ms", v, "milliseconds")?)
                }
                Some(("preempt-timeout-us", v)) => {
                    profile.preempt_timeout_us =
                        Some(number("preempt-timeout-us", v, "microseconds")?)
                }
                Some(("priority", v)) => {
                    if !crate::host::ops::PRIORITIES.contains(&v) {
                        return Err(bad(format!("priority={v}: use low, normal or high")));
                    }
                    profile.priority = Some(v.to_string());
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option '{opt}': use rom=FILE, rombar=off or x-no-mmap{}",
                        if pool.is_some() {
                            ", and for vf=PF exec-quantum-ms=N, preempt-timeout-us=N or priority=low|normal|high"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
        if spec.rom.is_some() && spec.no_rom {
            return Err(bad("rom=FILE and rombar=off contradict each other".into()));
        }
        if let Some(pf) = pool {
            spec.vf_pool = Some(VfPool {
                pf: pf.to_string(),
                profile,
            });
        }
        Ok(spec)
    }
}

/// Parse `--debug-exit-port PORT[,size=1|2|4]`: (port, size).
pub fn parse_debug_exit(s: &str) -> Result<(u16, u8), ConfigError> {
    let bad = || ConfigError::BadDebugExit(s.to_string());
    let (port, size) = match s.split_once(',') {
        Some((p, opt)) => (p, opt.strip_prefix("size=").ok_or_else(bad)?),
        None => (s, "2"),
    };
    let port = match port.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16),
        None => port.parse(),
    }
    .map_err(|_| bad())?;
    let size: u8 = match size {
        "1" => 1,
        "2" => 2,
        "4" => 4,
        _ => return Err(bad()),
    };
    if u32::from(port) + u32::from(size) > 0x1_0000 {
        return Err(bad());
    }
    Ok((port, size))
}

/// Which VFIO interface passes devices through (`--vfio`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VfioMode {
    /// iommufd and the device's cdev when the host has them, else legacy.
    #[default]
    Auto,
    /// The container/group interface (`/dev/vfio/vfio`, `/dev/vfio/N`).
    Legacy,
    /// iommufd (`/dev/iommu`) with the device cdev (`/dev/vfio/devices/vfioN`).
    Iommufd,
}

impl FromStr for VfioMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(Self::Auto),
            "legacy" => Ok(Self::Legacy),
            "iommufd" => Ok(Self::Iommufd),
            _ => Err(ConfigError::BadVfioMode(s.to_string())),
        }
    }
}

/// What the VM boots.
#[derive(Debug, Clone)]
pub enum BootSource {
    /// UEFI firmware (OVMF on the Q35 machine), optionally handed a kernel
    /// through fw_cfg.
    Firmware {
        /// Code and variables.
        firmware: FirmwareConfig,
        /// A kernel for OVMF's direct kernel boot.
        kernel: Option<KernelSpec>,
    },
    /// A Linux kernel (bzImage, or an ELF vmlinux / PVH ELF).
    Kernel {
        /// Kernel image.
        kernel: PathBuf,
        /// Optional initramfs.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
    /// Raw machine code (hand-made test guests): `image` is copied to
    /// `load_addr` and every vCPU starts at `mode`, each with its own
    /// APIC ID (read it with CPUID leaf 1).
    Raw {
        /// The code/data bytes.
        image: Vec<u8>,
        /// Guest physical load address.
        load_addr: u64,
        /// Start state.
        mode: CpuMode,
    },
}

/// A whole VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPU count.
    pub cpus: u32,
    /// What to boot.
    pub boot: BootSource,
    /// Where COM1 goes.
    pub serial: SerialConfig,
    /// What a guest reset does.
    pub on_reset: OnReset,
    /// Exit 0 as soon as this text appears on the serial console.
    pub expect_serial: Option<String>,
    /// Exit [`crate::EXIT_TIMEOUT`] after this long.
    pub timeout: Option<Duration>,
    /// I/O port of the debug-exit device (absent unless asked for).
    pub debug_exit_port: Option<u16>,
    /// How many ports from `debug_exit_port` it decodes (1, 2 or 4).
    pub debug_exit_size: u8,
    /// Path of the KVM device (normally `/dev/kvm`).
    pub kvm_path: PathBuf,
    /// User fw_cfg items (firmware boot only).
    pub fw_cfg: Vec<FwCfgUserItem>,
    /// Host PCI functions passed through with VFIO.
    pub devices: Vec<DeviceSpec>,
    /// virtio-blk disks, in bus order.
    pub disks: Vec<DiskSpec>,
    /// virtio-net cards.
    pub nets: Vec<NetSpec>,
    /// A virtio-console whose output goes to this file.
    pub virtio_console: Option<PathBuf>,
    /// A virtio-rng device.
    pub rng: bool,
    /// `--vf-create N`: create N VFs on a `vf=PF` device's PF when it
    /// has none.
    pub vf_create: Option<u32>,
    /// Which VFIO interface to use.
    pub vfio: VfioMode,
    /// Print exit statistics at exit (`--stats`).
    pub stats: bool,
    /// seccomp filters (`--seccomp`; off unless asked for, so in-process
    /// callers such as tests keep their own threads unfiltered).
    pub seccomp: crate::seccomp::SeccompMode,
    /// Landlock file-access limits (`--landlock`; off unless asked for).
    pub landlock: bool,
    /// `--user USER[:GROUP]`: drop to this user once the VM is built.
    pub user: Option<crate::jail::UserSpec>,
}

impl VmConfig {
    /// A config with defaults: 512 MiB, 1 vCPU, serial on stdio.
    pub fn new(boot: BootSource) -> Self {
        Self {
            memory: 512 << 20,
            cpus: 1,
            boot,
            serial: SerialConfig::Stdio,
            on_reset: OnReset::Exit,
            expect_serial: None,
            timeout: None,
            debug_exit_port: None,
            debug_exit_size: devices::legacy::debug_exit::DEFAULT_SIZE,
            kvm_path: PathBuf::from("/dev/kvm"),
            fw_cfg: Vec::new(),
            devices: Vec::new(),
            disks: Vec::new(),
            nets: Vec::new(),
            virtio_console: None,
            rng: false,
            vf_create: None,
            vfio: VfioMode::Auto,
            stats: false,
            seccomp: crate::seccomp::SeccompMode::Off,
            landlock: false,
            user: None,
        }
    }

    /// Checks that need no KVM: files readable, counts sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.user {
            if self.on_reset == OnReset::Restart {
                return Err(ConfigError::UserWithRestart);
            }
            crate::jail::resolve(u).map_err(|e| ConfigError::BadUser(e.to_string()))?;
        }
        if self.cpus == 0 {
            return Err(ConfigError::ZeroCpus);
        }
        if self.cpus > crate::MAX_CPUS {
            return Err(ConfigError::TooManyCpus {
                requested: self.cpus,
                limit: crate::MAX_CPUS,
                why: "Tessera supports (xAPIC IDs)",
            });
        }
        let kernel = match &self.boot {
            BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            } => Some((kernel, initrd, cmdline)),
            BootSource::Firmware { firmware, kernel } => {
                check_file("firmware", &firmware.code)?;
                if let Some(t) = &firmware.vars_template {
                    check_file("vars template", t)?;
                }
                kernel.as_ref().map(|k| (&k.kernel, &k.initrd, &k.cmdline))
            }
            BootSource::Raw { .. } => None,
        };
        if let Some((kernel, initrd, cmdline)) = kernel {
            check_file("kernel", kernel)?;
            if let Some(i) = initrd {
                check_file("initrd", i)?;
            }
            if cmdline.contains('\0') {
                return Err(ConfigError::BadCmdline);
            }
        }
        if !self.fw_cfg.is_empty() && !matches!(self.boot, BootSource::Firmware { .. }) {
            return Err(ConfigError::NeedsFirmware("--fw-cfg"));
        }
        for item in &self.fw_cfg {
            if let FwCfgValue::File(p) = &item.value {
                check_file("--fw-cfg file", p)?;
            }
        }
        if matches!(&self.expect_serial, Some(t) if t.is_empty()) {
            return Err(ConfigError::EmptyExpect);
        }
        if let Some(n) = self.vf_create {
            if n == 0 {
                return Err(ConfigError::ZeroVfCreate);
            }
            if !self.devices.iter().any(|d| d.vf_pool.is_some()) {
                return Err(ConfigError::VfCreateWithoutPool);
            }
        }
        Ok(())
    }
}

/// A regular file we can open for reading.
pub fn check_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::BadFile {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(io_reason(&e)))?;
    if meta.is_dir() {
        return Err(bad("is a directory, not a file".into()));
    }
    std::fs::File::open(path).map_err(|e| bad(io_reason(&e)))?;
    if meta.len() == 0 {
        return Err(bad("is empty".into()));
    }
    Ok(())
}

/// Short, lowercase reason for an I/O error.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4gib").unwrap(), 4 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        for bad in ["", "M", "-1G", "1.5G", "12X", "99999999999T", "4 G"] {
            assert!(parse_size(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(3 << 30), "3G");
        assert_eq!(format_size(24684096 << 10), "23.5G");
    }

    #[test]
    fn serial_and_reset_options() {
        assert!(matches!("stdio".parse(), Ok(SerialConfig::Stdio)));
        assert!(matches!("null".parse(), Ok(SerialConfig::Null)));
        assert!(
            matches!("file=/tmp/x".parse(), Ok(SerialConfig::File(p)) if p == Path::new("/tmp/x"))
        );
        assert!("file=".parse::<SerialConfig>().is_err());
        assert!("tcp".parse::<SerialConfig>().is_err());
        assert_eq!("restart".parse::<OnReset>().unwrap(), OnReset::Restart);
        assert!("reboot".parse::<OnReset>().is_err());
        assert!(parse_timeout("0").is_err());
        assert_eq!(parse_timeout("30").unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn fw_cfg_items() {
        let i: FwCfgUserItem = "name=opt/a/b,string=x,y".parse().unwrap();
        assert_eq!(i.name, "opt/a/b");
        assert_eq!(i.value, FwCfgValue::String("x,y".into()));
        let f: FwCfgUserItem = "name=opt/f,file=/tmp/x".parse().unwrap();
        assert_eq!(f.value, FwCfgValue::File("/tmp/x".into()));
        for bad in [
            "opt/a,string=x",
            "name=opt/a",
            "name=,string=x",
            "name=etc/e820,string=x",
            "name=opt/a,file=",
        ] {
            assert!(bad.parse::<FwCfgUserItem>().is_err(), "{bad}");
        }
        let long = format!("name=opt/{},string=x", "a".repeat(60));
        assert!(long.parse::<FwCfgUserItem>().is_err());
    }

    #[test]
    fn net_specs() {
        let n: NetSpec = "tap=tap0,mac=52:54:00:ab:cd:ef".parse().unwrap();
        assert_eq!(n.tap.as_deref(), Some("tap0"));
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
        let n: NetSpec = "tap".parse().unwrap();
        assert_eq!((n.tap, n.mac), (None, None));
        for (bad, says) in [
            ("mac=52:54:00:00:00:01", "give tap"),
            ("tap=x,mac=01:00:00:00:00:01", "unicast"),
            ("tap=x,mac=52:54:00", "six hex bytes"),
            ("tap=averyveryverylongname", "1 to 15"),
            ("tap=x,vhost=on", "not an option"),
        ] {
            let e = bad.parse::<NetSpec>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn disk_specs() {
        let d: DiskSpec = "path=/img/a.raw,readonly=on,serial=vm1-disk,cache=none,queues=2"
            .parse()
            .unwrap();
        assert_eq!(d.path, PathBuf::from("/img/a.raw"));
        assert!(d.read_only);
        assert_eq!(d.serial.as_deref(), Some("vm1-disk"));
        assert_eq!(d.cache, DiskCache::None);
        assert_eq!(d.queues, 2);
        let d: DiskSpec = "/img/b.raw".parse().unwrap();
        assert_eq!(
            (d.read_only, d.cache, d.queues),
            (false, DiskCache::Writeback, 1)
        );
        for (bad, says) in [
            ("readonly=on", "no image"),
            ("path=x,format=vmdk", "qemu-img convert"),
            ("path=x,serial=123456789012345678901", "at most 20"),
            ("path=x,queues=0", "1 to 16"),
            ("path=x,bogus", "not an option"),
        ] {
            let e = bad.parse::<DiskSpec>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn device_specs() {
        let d: DeviceSpec = "/sys/bus/pci/devices/0000:01:10.0,rom=/gop.rom,x-no-mmap"
            .parse()
            .unwrap();
        assert_eq!(d.path, "/sys/bus/pci/devices/0000:01:10.0");
        assert_eq!(d.rom.as_deref(), Some(Path::new("/gop.rom")));
        assert!(d.no_mmap && !d.no_rom);
        let d: DeviceSpec = "0000:03:00.0,rombar=off".parse().unwrap();
        assert!(d.no_rom && d.rom.is_none());
        for bad in [
            "",
            ",rom=x",
            "01:00.0,rom=",
            "01:00.0,mmap",
            "01:00.0,rom=a,rombar=off",
        ] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
        assert_eq!(d.vf_pool, None);
        assert_eq!("iommufd".parse::<VfioMode>().unwrap(), VfioMode::Iommufd);
        assert_eq!(parse_debug_exit("0xf4,size=4").unwrap(), (0xf4, 4));
        assert_eq!(parse_debug_exit("1281").unwrap(), (0x501, 2));
        for bad in ["0xf4,size=3", "port", "0xffff,size=4", "0xf4,4"] {
            assert!(parse_debug_exit(bad).is_err(), "{bad}");
        }
        assert!("cdev".parse::<VfioMode>().is_err());
    }

    #[test]
    fn vf_pool_specs_take_a_pf_and_profile_options() {
        let d: DeviceSpec =
            "vf=0000:03:00.0,exec-quantum-ms=20,preempt-timeout-us=20000,priority=high,rombar=off"
                .parse()
                .unwrap();
        assert_eq!(d.path, "0000:03:00.0");
        assert!(d.no_rom && !d.no_mmap);
        assert_eq!(
            d.vf_pool,
            Some(VfPool {
                pf: "0000:03:00.0".into(),
                profile: ProfileChange {
                    exec_quantum_ms: Some(20),
                    preempt_timeout_us: Some(20000),
                    priority: Some("high".into()),
                },
            })
        );
        let d: DeviceSpec = "vf=/sys/bus/pci/devices/0000:01:00.0,x-no-mmap"
            .parse()
            .unwrap();
        let pool = d.vf_pool.unwrap();
        assert_eq!(pool.pf, "/sys/bus/pci/devices/0000:01:00.0");
        assert_eq!(pool.profile, ProfileChange::default());
        for (bad, why) in [
            ("vf=", "vf= needs the PF"),
            (
                "vf=01:00.0,exec-quantum-ms=fast",
                "exec-quantum-ms=fast: use a whole number of milliseconds",
            ),
            (
                "vf=01:00.0,preempt-timeout-us=-1",
                "preempt-timeout-us=-1: use a whole number of microseconds",
            ),
            (
                "vf=01:00.0,exec-quantum-ms=4294967296",
                "from 0 to 4294967295",
            ),
            (
                "vf=01:00.0,priority=urgent",
                "priority=urgent: use low, normal or high",
            ),
            ("vf=01:00.0,quantum=5", "and for vf=PF exec-quantum-ms=N"),
            (
                "01:10.0,priority=high",
                "tessera vf profile 01:10.0 --priority high",
            ),
            ("vf=01:00.0,rom=a,rombar=off", "contradict"),
        ] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn vf_create_needs_a_vf_pool_device_and_a_count() {
        let mut c = VmConfig::new(BootSource::Raw {
            image: vec![0xf4],
            load_addr: 0x1000,
            mode: CpuMode::Real { cs: 0, ip: 0x1000 },
        });
        c.vf_create = Some(2);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::VfCreateWithoutPool)
        ));
        c.devices.push("vf=01:00.0".parse().unwrap());
        c.validate().unwrap();
        c.vf_create = Some(0);
        assert!(matches!(c.validate(), Err(ConfigError::ZeroVfCreate)));
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = VmConfig::new(BootSource::Kernel {
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: None,
            cmdline: String::new(),
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/vmlinuz") && e.contains("no such file"),
            "{e}"
        );
        c.boot = BootSource::Kernel {
            kernel: "/".into(),
            initrd: None,
            cmdline: String::new(),
        };
        assert!(c.validate().unwrap_err().to_string().contains("directory"));
        c.cpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::ZeroCpus)));
    }
}
