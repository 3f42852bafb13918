//! Least privilege once the VM is built: Landlock, `--user`, no new
//! privileges. Applied by the main thread right before the seccomp filters
//! (which forbid the calls these need), so before the first guest
//! instruction.
//!
//! - **Landlock** (`--landlock on`, the default of `tessera run`): file
//!   access is limited to what the VM uses: its kernel, initrd, firmware,
//!   VARS and template, ROM and fw_cfg files, serial and firmware logs
//!   (read-write where tessera writes), `/dev/kvm`, `/dev/vfio`,
//!   `/dev/iommu`, `/dev/null`, `/run/tessera` (VF locks), and `/sys` and
//!   `/proc` (read-only; `/sys/bus/pci` and `/sys/devices` read-write for
//!   VF pools). Files already open are not affected. Not applied with
//!   `--on-reset restart` yet (a restart opens the files again, which a
//!   rule on a file system without stable inodes, such as 9p, refuses).
//! - **`--user USER[:GROUP]`**: supplementary groups dropped, then the
//!   group and user changed; leaving root this way clears every capability
//!   (`/proc/PID/status` CapEff/CapPrm 0). A restart would have to open
//!   the devices again, which needs the privileges given up, so `--user`
//!   and `--on-reset restart` are refused together.
//! - `PR_SET_NO_NEW_PRIVS`, always (also required by Landlock and
//!   seccomp).
//!
//! Each layer logs (at info level) whether the kernel supported it.

use std::ffi::CString;
use std::path::PathBuf;

use crate::config::{BootSource, FwCfgValue, SerialConfig, VmConfig};

/// `--user USER[:GROUP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// User name or numeric uid.
    pub user: String,
    /// Group name or numeric gid (default: the user's primary group).
    pub group: Option<String>,
}

impl std::str::FromStr for UserSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g.to_string())),
            None => (s, None),
        };
        if user.is_empty() || group.as_deref() == Some("") {
            return Err(format!("invalid --user '{s}': use USER or USER:GROUP"));
        }
        Ok(UserSpec {
            user: user.to_string(),
            group,
        })
    }
}

/// Errors while dropping privileges.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The user or group does not exist.
    #[error("--user: no {0} '{1}' on this host")]
    Unknown(&'static str, String),
    /// A set*id call failed.
    #[error("--user: cannot {0}: {1} (tessera must start as root to change user)")]
    Drop(&'static str, std::io::Error),
    /// Landlock refused the ruleset.
    #[error("Landlock: {0} (use --landlock off on a kernel that refuses it)")]
    Landlock(String),
    /// PR_SET_NO_NEW_PRIVS failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
}

/// The files and directories the VM may still open: (path, writable).
pub fn allowed_paths(cfg: &VmConfig) -> Vec<(PathBuf, bool)> {
    let mut v: Vec<(PathBuf, bool)> = Vec::new();
    match &cfg.boot {
        BootSource::Firmware { firmware, kernel } => {
            v.push((firmware.code.clone(), false));
            v.push((firmware.vars.clone(), true));
            v.extend(firmware.vars_template.clone().map(|p| (p, false)));
            v.extend(firmware.log.clone().map(|p| (p, true)));
            if let Some(k) = kernel {
                v.push((k.kernel.clone(), false));
                v.extend(k.initrd.clone().map(|p| (p, false)));
            }
        }
        BootSource::Kernel { kernel, initrd, .. } => {
            v.push((kernel.clone(), false));
            v.extend(initrd.clone().map(|p| (p, false)));
        }
        BootSource::Raw { .. } => {}
    }
    if let SerialConfig::File(p) = &cfg.serial {
        v.push((p.clone(), true));
    }
    for item in &cfg.fw_cfg {
        if let FwCfgValue::File(p) = &item.value {
            v.push((p.clone(), false));
        }
    }
    for d in &cfg.devices {
        v.extend(d.rom.clone().map(|p| (p, false)));
    }
    v.push((cfg.kvm_path.clone(), true));
    for (p, w) in [
        ("/dev/vfio", true),
        ("/dev/iommu", true),
        ("/dev/null", true),
        ("/run/tessera", true),
        ("/sys", false),
        ("/sys/bus/pci", true),
        ("/sys/devices", true),
        ("/proc", false),
    ] {
        v.push((PathBuf::from(p), w));
    }
    v
}

fn landlock(paths: &[(PathBuf, bool)]) -> Result<(), JailError> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        path_beneath_rules,
    };
    let abi = ABI::V3;
    let err = |e: landlock::RulesetError| JailError::Landlock(e.to_string());
    let ro: Vec<&PathBuf> = paths.iter().filter(|(_, w)| !w).map(|(p, _)| p).collect();
    let rw: Vec<&PathBuf> = paths.iter().filter(|(_, w)| *w).map(|(p, _)| p).collect();
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(ro, AccessFs::from_read(abi)))
        .map_err(err)?
        .add_rules(path_beneath_rules(rw, AccessFs::from_all(abi)))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => {
            log::info!(
                "landlock: enforced; files outside the VM's {} paths are closed to tessera",
                paths.len()
            );
        }
        RulesetStatus::PartiallyEnforced => {
            log::info!("landlock: partly enforced (this kernel's Landlock is older than ABI 3)");
        }
        RulesetStatus::NotEnforced => {
            log::warn!(
                "landlock: not supported by this kernel (not in its LSM list, or built without it); file access is not restricted"
            );
        }
    }
    Ok(())
}

fn lookup_uid(user: &str) -> Result<(libc::uid_t, libc::gid_t), JailError> {
    let unknown = || JailError::Unknown("user", user.to_string());
    let name = CString::new(user).map_err(|_| unknown())?;
    // SAFETY: getpwnam returns NULL or a pointer to a static passwd entry,
    // read at once; tessera's main thread is the only one calling it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if !pw.is_null() {
        // SAFETY: non-null, points at a valid passwd.
        return Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) });
    }
    let uid: libc::uid_t = user.parse().map_err(|_| unknown())?;
    Ok((uid, uid))
}

fn lookup_gid(group: &str) -> Result<libc::gid_t, JailError> {
    let unknown = || JailError::Unknown("group", group.to_string());
    let name = CString::new(group).map_err(|_| unknown())?;
    // SAFETY: as in lookup_uid, for getgrnam.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if !gr.is_null() {
        // SAFETY: non-null, points at a valid group.
        return Ok(unsafe { (*gr).gr_gid });
    }
    group.parse().map_err(|_| unknown())
}

/// The uid and gid `spec` names (resolved before anything is dropped).
pub fn resolve(spec: &UserSpec) -> Result<(libc::uid_t, libc::gid_t), JailError> {
    let (uid, primary) = lookup_uid(&spec.user)?;
    let gid = match &spec.group {
        Some(g) => lookup_gid(g)?,
        None => primary,
    };
    Ok((uid, gid))
}

fn change_user(uid: libc::uid_t, gid: libc::gid_t, spec: &UserSpec) -> Result<(), JailError> {
    let last = || std::io::Error::last_os_error();
    // SAFETY: setgroups with an empty list, then setresgid/setresuid: plain
    // system calls on this process's credentials.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(JailError::Drop("drop the supplementary groups", last()));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(JailError::Drop("change group", last()));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(JailError::Drop("change user", last()));
        }
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .map(|l| l[7..].trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    log::info!(
        "user: now {} (uid {uid}, gid {gid}), no supplementary groups; effective capabilities {caps}",
        spec.user
    );
    Ok(())
}

/// Apply the layers `cfg` asks for (see the module documentation).
pub fn apply(cfg: &VmConfig) -> Result<(), JailError> {
    if !cfg.landlock && cfg.user.is_none() && cfg.seccomp == crate::seccomp::SeccompMode::Off {
        return Ok(());
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(JailError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let user = cfg
        .user
        .as_ref()
        .map(|u| resolve(u).map(|ids| (u, ids)))
        .transpose()?;
    if cfg.landlock && cfg.on_reset == crate::config::OnReset::Restart {
        // A restart opens the kernel, firmware, VARS and logs again, and a
        // Landlock rule follows an inode: on file systems whose inodes are
        // not stable across lookups (9p, as in the testbed) the re-open
        // would be refused. Until the handles are kept across restarts,
        // such a VM runs without Landlock, and says so.
        log::warn!(
            "landlock: not applied with --on-reset restart (a restart opens the VM's files again)"
        );
    } else if cfg.landlock {
        landlock(&allowed_paths(cfg))?;
    }
    if let Some((spec, (uid, gid))) = user {
        change_user(uid, gid, spec)?;
    } else if cfg.landlock || cfg.seccomp != crate::seccomp::SeccompMode::Off {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            log::info!("user: running as root with its capabilities (--user USER drops them)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_specs() {
        assert_eq!(
            "nobody".parse::<UserSpec>().unwrap(),
            UserSpec {
                user: "nobody".into(),
                group: None
            }
        );
        let s: UserSpec = "vm:kvm".parse().unwrap();
        assert_eq!((s.user.as_str(), s.group.as_deref()), ("vm", Some("kvm")));
        assert!("".parse::<UserSpec>().is_err());
        assert!("a:".parse::<UserSpec>().is_err());
        assert!(":g".parse::<UserSpec>().is_err());
    }

    #[test]
    fn resolves_names_and_numbers() {
        let root = resolve(&"root".parse().unwrap()).unwrap();
        assert_eq!(root, (0, 0));
        assert_eq!(resolve(&"1234:99".parse().unwrap()).unwrap(), (1234, 99));
        assert!(matches!(
            resolve(&"no-such-user-tessera".parse().unwrap()),
            Err(JailError::Unknown("user", _))
        ));
        assert!(matches!(
            resolve(&"root:no-such-group-tessera".parse().unwrap()),
            Err(JailError::Unknown("group", _))
        ));
    }

    #[test]
    fn the_vm_files_are_in_the_allowed_set() {
        let mut cfg = VmConfig::new(BootSource::Kernel {
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            cmdline: String::new(),
        });
        cfg.serial = SerialConfig::File("/log/serial".into());
        let a = allowed_paths(&cfg);
        assert!(a.contains(&("/k".into(), false)));
        assert!(a.contains(&("/i".into(), false)));
        assert!(a.contains(&("/log/serial".into(), true)));
        assert!(a.contains(&("/dev/kvm".into(), true)));
        assert!(!a.iter().any(|(p, _)| p == std::path::Path::new("/etc")));
    }
}
