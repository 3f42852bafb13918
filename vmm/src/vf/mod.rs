//! `tessera vf`: SR-IOV VFs from host setup to passthrough readiness.
//!
//! The subcommands are thin: [`crate::host`] does the work, this module
//! parses the command line and prints text or JSON. Every host path comes
//! from [`HostRoot::from_env`] (`TESSERA_HOST_ROOT=DIR` for fake trees).
//!
//! Exit status: 0 done (for `check`: ready); 1 the kernel refused a change
//! (for `check`: not ready); 2 bad input or host setup, one line on stderr.

pub mod report;

use clap::{Args, Subcommand};

use crate::host::ops::{self, DriverChoice, ProfileChange};
use crate::host::{HostError, HostRoot, PciAddress, SysfsKernel, resolve_function};
use crate::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// `tessera vf ...`.
#[derive(Args, Debug)]
#[command(after_help = "\
Environment: TESSERA_HOST_ROOT=DIR reads and writes DIR/sys, DIR/dev, DIR/proc (and DIR/run, DIR/lib) instead of the host's (fake trees for tests).

Exit status:
  0  done; for check: ready for passthrough
  1  the kernel refused a change; for check: not ready
  2  bad input or host setup (one line on stderr)")]
pub struct VfArgs {
    #[command(subcommand)]
    command: VfCommand,
}

#[derive(Subcommand, Debug)]
enum VfCommand {
    /// SR-IOV PFs and their VFs: IDs, driver, VF counts, IOMMU groups, users.
    List {
        /// Machine-readable output (see README, "tessera vf list --json").
        #[arg(long)]
        json: bool,
    },
    /// Enable VFs on a PF (sriov_numvfs), with host driver autoprobe off.
    Create {
        /// The PF: a BDF (0000:03:00.0, 03:00.0) or sysfs path.
        #[arg(long, value_name = "BDF")]
        pf: String,
        /// How many VFs (at most sriov_totalvfs).
        #[arg(long, value_name = "N")]
        count: u32,
        /// Keep host drivers off the new VFs (sriov_drivers_autoprobe 0; the default).
        #[arg(long, overrides_with = "autoprobe")]
        no_autoprobe: bool,
        /// Let host drivers probe the new VFs (sriov_drivers_autoprobe 1).
        #[arg(long, overrides_with = "no_autoprobe")]
        autoprobe: bool,
    },
    /// Disable every VF of a PF (sriov_numvfs 0).
    Destroy {
        /// The PF.
        #[arg(long, value_name = "BDF")]
        pf: String,
    },
    /// Bind functions to a VFIO driver (driver_override, unbind, drivers_probe).
    Bind {
        /// The functions (VFs, or any non-SR-IOV PCI function).
        #[arg(required = true, value_name = "BDF")]
        functions: Vec<String>,
        /// vfio-pci, xe-vfio-pci, or auto (xe-vfio-pci for Xe VFs when available).
        #[arg(long, default_value = "auto", value_name = "DRIVER", value_parser = ["auto", "vfio-pci", "xe-vfio-pci"])]
        driver: String,
    },
    /// Give functions back to the host (clear driver_override, unbind, drivers_probe).
    Unbind {
        /// The functions.
        #[arg(required = true, value_name = "BDF")]
        functions: Vec<String>,
    },
    /// Everything that stops passthrough, one line each with the fix.
    Check {
        /// The function to pass through; without it, the host and every PF.
        #[arg(value_name = "BDF")]
        function: Option<String>,
        /// Machine-readable output (see README, "tessera vf check --json").
        #[arg(long)]
        json: bool,
        /// Guest RAM to check RLIMIT_MEMLOCK against, e.g. 4G.
        #[arg(long, value_name = "SIZE")]
        memory: Option<String>,
    },
    /// Show or set a VF's Xe scheduling profile (sriov_admin, Linux 6.19+).
    Profile {
        /// The VF (or the Xe PF, for its own profile).
        #[arg(value_name = "BDF")]
        function: String,
        /// Execution quantum in ms (0 = unlimited).
        #[arg(long, value_name = "MS")]
        exec_quantum_ms: Option<u32>,
        /// Preemption timeout in µs (0 = unlimited).
        #[arg(long, value_name = "US")]
        preempt_timeout_us: Option<u32>,
        /// Scheduling priority, as the kernel offers it for this function.
        #[arg(long, value_name = "PRIORITY", value_parser = ["low", "normal", "high"])]
        priority: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn fail(e: &HostError) -> u8 {
    eprintln!("tessera: error: {e}");
    e.exit_code()
}

fn resolve_all(root: &HostRoot, specs: &[String]) -> Result<Vec<PciAddress>, HostError> {
    specs.iter().map(|s| resolve_function(root, s)).collect()
}

/// Run `tessera vf ...`; returns the exit status.
pub fn main(args: &VfArgs) -> u8 {
    let root = HostRoot::from_env();
    let mut kernel = SysfsKernel {
        modprobe: root.is_system(),
    };
    match run(&args.command, &root, &mut kernel) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn run(cmd: &VfCommand, root: &HostRoot, k: &mut dyn ops::Kernel) -> Result<u8, HostError> {
    match cmd {
        VfCommand::List { json } => {
            let pfs = report::list(root)?;
            if *json {
                println!("{}", report::list_json(root, &pfs));
            } else {
                print!("{}", report::list_text(root, &pfs));
            }
            Ok(EXIT_OK)
        }
        VfCommand::Create {
            pf,
            count,
            autoprobe,
            ..
        } => {
            let pf = resolve_function(root, pf)?;
            if *count == 0 {
                return Err(HostError::ZeroCount(pf));
            }
            let c = ops::create_vfs(k, root, pf, *count, *autoprobe)?;
            print!("{}", report::created_text(root, &c, *autoprobe));
            Ok(EXIT_OK)
        }
        VfCommand::Destroy { pf } => {
            let pf = resolve_function(root, pf)?;
            match ops::destroy_vfs(k, root, pf)? {
                0 => println!("{pf}: no VFs were enabled"),
                n => println!("{pf}: {n} VFs removed (sriov_numvfs 0)"),
            }
            Ok(EXIT_OK)
        }
        VfCommand::Bind { functions, driver } => {
            let addrs = resolve_all(root, functions)?;
            let choice = match driver.as_str() {
                "auto" => DriverChoice::Auto,
                d => DriverChoice::Named(d.to_string()),
            };
            for &a in &addrs {
                let b = ops::bind(k, root, a, &choice, &addrs)?;
                println!("{}", report::bound_text(root, &b));
            }
            Ok(EXIT_OK)
        }
        VfCommand::Unbind { functions } => {
            for a in resolve_all(root, functions)? {
                let u = ops::unbind(k, root, a)?;
                println!("{}", report::unbound_text(root, &u));
            }
            Ok(EXIT_OK)
        }
        VfCommand::Check {
            function,
            json,
            memory,
        } => {
            let memory = match memory.as_deref().map(crate::config::parse_size) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    eprintln!("tessera: error: --memory: {e}");
                    return Ok(EXIT_USAGE);
                }
                None => 0,
            };
            if let Some(f) = function {
                // A malformed address is bad input; a missing function is a finding.
                if !f.contains('/') {
                    f.parse::<PciAddress>()?;
                }
            }
            let r = crate::host::checks::check_host(root, function.as_deref(), memory);
            if *json {
                println!("{}", report::check_json(root, &r));
            } else {
                print!("{}", report::check_text(root, &r));
            }
            Ok(if r.ready() { EXIT_OK } else { EXIT_FAILURE })
        }
        VfCommand::Profile {
            function,
            exec_quantum_ms,
            preempt_timeout_us,
            priority,
            json,
        } => {
            let a = resolve_function(root, function)?;
            let change = ProfileChange {
                exec_quantum_ms: *exec_quantum_ms,
                preempt_timeout_us: *preempt_timeout_us,
                priority: priority.clone(),
            };
            let p = if change == ProfileChange::default() {
                ops::read_profile(root, a)?
            } else {
                ops::set_profile(k, root, a, &change)?
            };
            if *json {
                println!("{}", report::profile_json(root, &p));
            } else {
                println!("{}", report::profile_text(&p));
            }
            Ok(EXIT_OK)
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
