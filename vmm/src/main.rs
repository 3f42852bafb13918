//! The `tessera` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vmm::config::{
    ConfigError, DeviceSpec, DiskSpec, FirmwareConfig, FwCfgUserItem, KernelSpec, NetSpec,
    VfioMode, parse_debug_exit, parse_size, parse_timeout,
};
use vmm::{BootSource, EXIT_FAILURE, EXIT_USAGE, OnReset, SerialConfig, StopReason, VmConfig};

/// Tessera: a KVM virtual machine monitor that gives a VM its own slice of a real GPU.
#[derive(Parser, Debug)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a VM and run it until it powers off.
    Run(RunArgs),
    /// SR-IOV VFs: list, create, destroy, bind, unbind, check, profile.
    Vf(vmm::vf::VfArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Console: with --serial stdio the terminal is in raw mode; Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A.

Environment: TESSERA_KVM_DEVICE overrides the KVM device path (default /dev/kvm).

Exit status:
  0    the guest powered off, or --expect-serial text appeared
  1    the VM failed (triple fault, KVM error) or Tessera did (a panic)
  2    bad input: options, files, or host setup (/dev/kvm)
  3    the guest reset the machine (with --on-reset exit)
  124  --timeout expired
  159  a forbidden system call (--seccomp)
  128+N  stopped by signal N (130 SIGINT, 143 SIGTERM)
  (v<<1)|1  the guest wrote v to --debug-exit-port")]
struct RunArgs {
    /// Guest RAM, e.g. 512M or 4G.
    #[arg(long, short = 'm', default_value = "512M", value_name = "SIZE")]
    memory: String,
    /// Number of vCPUs.
    #[arg(long, short = 'c', default_value_t = 1, value_name = "N")]
    cpus: u32,
    /// Linux kernel: booted directly (bzImage, an ELF with a PVH note, or a
    /// multiboot kernel such as a kvm-unit-tests .flat image), or
    /// handed to the firmware through fw_cfg when --firmware is given (then
    /// also any x86-64 EFI application, which OVMF starts itself).
    #[arg(long, short = 'k', value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// UEFI firmware code (e.g. /usr/share/OVMF/OVMF_CODE_4M.fd): boots the Q35 machine.
    #[arg(long, value_name = "PATH")]
    firmware: Option<PathBuf>,
    /// This VM's UEFI variable store; every variable write is saved to it at once.
    #[arg(long, value_name = "PATH")]
    vars: Option<PathBuf>,
    /// Copied to --vars when that file does not exist yet (default: the
    /// template the firmware's descriptor names, e.g. OVMF_VARS_4M.fd).
    #[arg(long, value_name = "PATH")]
    vars_template: Option<PathBuf>,
    /// Write the firmware's debug log (I/O port 0x402) to PATH.
    #[arg(long, value_name = "PATH")]
    firmware_log: Option<PathBuf>,
    /// Extra fw_cfg file for the firmware: name=opt/...,file=PATH or name=opt/...,string=TEXT (repeatable).
    #[arg(long, value_name = "ITEM")]
    fw_cfg: Vec<String>,
    /// Initramfs for the kernel.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0", value_name = "STR")]
    cmdline: String,
    /// Where COM1 goes: stdio, null or file=PATH.
    #[arg(long, default_value = "stdio", value_name = "stdio|file=PATH|null")]
    serial: String,
    /// What a guest reset does: exit (status 3) or restart.
    #[arg(long, default_value = "exit", value_name = "exit|restart")]
    on_reset: String,
    /// Exit 0 as soon as TEXT appears on the serial console.
    #[arg(long, value_name = "TEXT")]
    expect_serial: Option<String>,
    /// Stop after SECS seconds with status 124, printing the last serial lines.
    #[arg(long, value_name = "SECS")]
    timeout: Option<String>,
    /// A debug-exit device for test guests at PORT, decoding SIZE ports
    /// (1, 2 or 4; default 2, as QEMU's isa-debug-exit): a write of v exits
    /// with status (v<<1)|1. kvm-unit-tests use 0xf4,size=4.
    #[arg(long, value_name = "PORT[,size=N]")]
    debug_exit_port: Option<String>,
    /// Pass a host PCI function through with VFIO: a sysfs path
    /// (/sys/bus/pci/devices/0000:01:10.0) or a BDF (0000:01:10.0), bound to
    /// vfio-pci; or vf=PF: any free VF of that SR-IOV PF, held by this VM
    /// alone while it runs (bound to vfio-pci if needed), with the Xe
    /// scheduling profile options exec-quantum-ms=N, preempt-timeout-us=N,
    /// priority=low|normal|high. Options: rom=FILE (expansion ROM image),
    /// rombar=off (no ROM), x-no-mmap (trap every BAR access). Repeatable.
    #[arg(
        long,
        value_name = "PATH|vf=PF[,exec-quantum-ms=N][,preempt-timeout-us=N][,priority=P][,rom=FILE][,rombar=off][,x-no-mmap]"
    )]
    device: Vec<String>,
    /// A virtio-blk disk: a raw image FILE (locked: no other VM may open it
    /// for writing). readonly=on refuses guest writes; serial=ID (at most
    /// 20 characters) is what the guest reads as the disk's serial;
    /// cache=none makes every completed write durable (O_DSYNC),
    /// writeback (default) leaves that to the guest's flushes; queues=N
    /// request queues. Repeatable: the first is /dev/vda.
    #[arg(
        long,
        value_name = "path=FILE[,format=raw][,readonly=on][,serial=ID][,cache=none|writeback][,queues=N]"
    )]
    disk: Vec<String>,
    /// A virtio-net card on a host tap: tap=NAME attaches to an existing
    /// tap (or creates NAME, deleted at exit), tap alone creates one;
    /// mac=MAC sets the guest's address. Repeatable.
    #[arg(long, value_name = "tap[=NAME][,mac=MAC]")]
    net: Vec<String>,
    /// A virtio-console (the guest's /dev/hvc0) whose output is appended to
    /// FILE: a second console next to the serial one.
    #[arg(long, value_name = "file=FILE")]
    virtio_console: Option<String>,
    /// A virtio-rng device fed from the host's /dev/urandom (1 MiB/s).
    #[arg(long)]
    rng: bool,
    /// With --device vf=PF: create N VFs on the PF when it has none
    /// (host driver autoprobe off). Not needed when it has VFs.
    #[arg(long, value_name = "N")]
    vf_create: Option<u32>,
    /// VFIO interface: iommufd when the host has it (auto), or legacy container/group, or iommufd.
    #[arg(long, default_value = "auto", value_name = "auto|legacy|iommufd")]
    vfio: String,
    /// At exit, print VM-exit counts per vCPU and per device range to stderr.
    #[arg(long)]
    stats: bool,
    /// System-call filters per thread: on (a forbidden call ends tessera,
    /// naming the thread and the call), log (the kernel logs it and lets it
    /// through) or off.
    #[arg(long, default_value = "on", value_name = "on|log|off")]
    seccomp: String,
    /// Limit file access with Landlock to the files the VM uses (on/off).
    #[arg(long, default_value = "on", value_name = "on|off")]
    landlock: String,
    /// Once the VM is built, run as this user (and group): capabilities,
    /// supplementary groups and root are given up.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "warn", value_name = "LEVEL", value_parser = parse_level)]
    log_level: log::LevelFilter,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not a log level (error, warn, info, debug, trace, off)"))
}

fn config(args: &RunArgs) -> Result<VmConfig, ConfigError> {
    let kernel = args.kernel.clone().map(|kernel| KernelSpec {
        kernel,
        initrd: args.initrd.clone(),
        cmdline: args.cmdline.clone(),
    });
    let boot = match (&args.firmware, kernel) {
        (Some(code), kernel) => BootSource::Firmware {
            firmware: FirmwareConfig {
                code: code.clone(),
                vars: args.vars.clone().ok_or(ConfigError::MissingVars)?,
                vars_template: args.vars_template.clone(),
                log: args.firmware_log.clone(),
            },
            kernel,
        },
        (None, Some(k)) => {
            for (set, flag) in [
                (args.vars.is_some(), "--vars"),
                (args.vars_template.is_some(), "--vars-template"),
                (args.firmware_log.is_some(), "--firmware-log"),
                (!args.fw_cfg.is_empty(), "--fw-cfg"),
            ] {
                if set {
                    return Err(ConfigError::NeedsFirmware(flag));
                }
            }
            BootSource::Kernel {
                kernel: k.kernel,
                initrd: k.initrd,
                cmdline: k.cmdline,
            }
        }
        (None, None) => return Err(ConfigError::NothingToBoot),
    };
    let mut cfg = VmConfig::new(boot);
    cfg.fw_cfg = args
        .fw_cfg
        .iter()
        .map(|s| s.parse::<FwCfgUserItem>())
        .collect::<Result<_, _>>()?;
    cfg.memory = parse_size(&args.memory)?;
    cfg.cpus = args.cpus;
    cfg.serial = args.serial.parse::<SerialConfig>()?;
    cfg.on_reset = args.on_reset.parse::<OnReset>()?;
    cfg.expect_serial = args.expect_serial.clone();
    cfg.timeout = args.timeout.as_deref().map(parse_timeout).transpose()?;
    if let Some(d) = &args.debug_exit_port {
        let (port, size) = parse_debug_exit(d)?;
        cfg.debug_exit_port = Some(port);
        cfg.debug_exit_size = size;
    }
    cfg.devices = args
        .device
        .iter()
        .map(|s| s.parse::<DeviceSpec>())
        .collect::<Result<_, _>>()?;
    cfg.disks = args
        .disk
        .iter()
        .map(|s| s.parse::<DiskSpec>())
        .collect::<Result<_, _>>()?;
    cfg.nets = args
        .net
        .iter()
        .map(|s| s.parse::<NetSpec>())
        .collect::<Result<_, _>>()?;
    cfg.virtio_console = match args.virtio_console.as_deref() {
        None => None,
        Some(v) => match v.strip_prefix("file=") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => return Err(ConfigError::BadVirtioConsole(v.to_string())),
        },
    };
    cfg.rng = args.rng;
    cfg.vf_create = args.vf_create;
    cfg.vfio = args.vfio.parse::<VfioMode>()?;
    cfg.stats = args.stats;
    cfg.seccomp = match args.seccomp.as_str() {
        "on" => vmm::seccomp::SeccompMode::On,
        "log" => vmm::seccomp::SeccompMode::Log,
        "off" => vmm::seccomp::SeccompMode::Off,
        other => return Err(ConfigError::BadSeccomp(other.to_string())),
    };
    cfg.landlock = match args.landlock.as_str() {
        "on" => true,
        "off" => false,
        other => return Err(ConfigError::BadLandlock(other.to_string())),
    };
    cfg.user = args
        .user
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ConfigError::BadUser)?;
    if let Some(dev) = std::env::var_os("TESSERA_KVM_DEVICE") {
        cfg.kvm_path = dev.into();
    }
    Ok(cfg)
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tessera: error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        EXIT_USAGE
                    } else {
                        0
                    },
                );
            }
            // One line: clap's first line, without the usage block.
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            if first.ends_with(':') {
                // "the following required arguments were not provided:" + the list
                first = format!("{first} {}", lines.next().unwrap_or(""));
            }
            let sub = std::env::args()
                .nth(1)
                .filter(|a| a == "vf")
                .unwrap_or("run".into());
            return usage_error(format_args!("{first} (see 'tessera {sub} --help')"));
        }
    };
    vmm::panic::install_hook();
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Vf(args) => ExitCode::from(vmm::vf::main(&args)),
    }
}

fn run(args: &RunArgs) -> ExitCode {
    vmm::logger::init(args.log_level);
    let cfg = match config(args) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match vmm::run(&cfg) {
        Ok(report) => {
            if let Some(stats) = &report.stats {
                for line in stats.lines() {
                    eprintln!("{line}");
                }
            }
            match &report.reason {
                StopReason::Timeout => {
                    eprintln!(
                        "tessera: timed out after {}s; last serial lines:\n{}",
                        cfg.timeout.map(|t| t.as_secs()).unwrap_or(0),
                        indent(&report.serial_tail)
                    );
                }
                StopReason::Fatal { cpu, message } => {
                    eprintln!(
                        "tessera: vCPU {cpu} stopped the VM: {}",
                        message.lines().next().unwrap_or("")
                    );
                    if !report.serial_tail.is_empty() {
                        eprintln!(
                            "tessera: last serial lines:\n{}",
                            indent(&report.serial_tail)
                        );
                    }
                }
                StopReason::Panic { thread, message } => {
                    eprintln!(
                        "tessera: the VM was stopped because thread '{thread}' panicked: {message}"
                    );
                }
                StopReason::Reset => log::info!("guest reset the machine"),
                other => log::info!("VM stopped: {other:?}"),
            }
            ExitCode::from(report.reason.exit_code())
        }
        Err(e) if e.is_user_error() => usage_error(e),
        Err(e) => {
            eprintln!("tessera: error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
