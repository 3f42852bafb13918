//! One VM per VF: an exclusive flock on `/run/tessera/vf/<bdf>.lock`.
//!
//! The kernel drops an flock when its holder exits, however it exits, so a
//! crashed tessera never leaves a VF locked. The lock file is never
//! deleted (deleting flock files races with the next locker); its contents
//! name the holder for `tessera vf list`, and are only believed while the
//! lock is held.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{HostError, HostRoot, PciAddress};

/// `/run/tessera/vf/<bdf>.lock` under the root.
pub fn vf_lock_path(root: &HostRoot, addr: PciAddress) -> PathBuf {
    root.run_dir()
        .join("tessera/vf")
        .join(format!("{addr}.lock"))
}

/// A VF held for one VM; dropping it releases the VF.
#[derive(Debug)]
pub struct VfClaim {
    /// The VF.
    pub address: PciAddress,
    /// The lock file.
    pub path: PathBuf,
    file: File,
}

impl VfClaim {
    /// Release the VF now (the same as dropping the claim).
    pub fn release(self) {
        drop(self.file);
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: the fd is open for the life of `file`; flock only takes
    // integer arguments.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_lock(path: &Path) -> Result<File, HostError> {
    let lock_err = |source| HostError::Lock {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(lock_err)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(lock_err)
}

/// Take `addr` for this process without waiting: the claim lasts until it
/// is dropped or the process exits. `owner` (e.g. "vm web-1") is written
/// into the lock file with this pid, for `tessera vf list`. A VF another
/// process holds gives [`HostError::InUse`] naming it.
pub fn claim_vf(root: &HostRoot, addr: PciAddress, owner: &str) -> Result<VfClaim, HostError> {
    let path = vf_lock_path(root, addr);
    let mut file = open_lock(&path)?;
    // `tessera vf list` probes with a brief shared lock; ride that out.
    let mut tries = 0;
    loop {
        match flock(&file, libc::LOCK_EX) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                tries += 1;
                if tries >= 5 {
                    let by =
                        lock_owner(root, addr).unwrap_or_else(|| "another process".to_string());
                    return Err(HostError::InUse { address: addr, by });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => return Err(HostError::Lock { path, source }),
        }
    }
    let text = format!("pid {}\nowner {owner}\n", std::process::id());
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(text.as_bytes()));
    if let Err(source) = written {
        return Err(HostError::Lock { path, source });
    }
    Ok(VfClaim {
        address: addr,
        path,
        file,
    })
}

/// `/run/tessera/pf/<bdf>.lock` under the root: held while VFs are
/// created on a PF for `--device vf=PF --vf-create N`.
pub fn pf_lock_path(root: &HostRoot, pf: PciAddress) -> PathBuf {
    root.run_dir().join("tessera/pf").join(format!("{pf}.lock"))
}

/// The creation lock of one PF; dropping it releases the PF.
#[derive(Debug)]
pub struct PfLock {
    _file: File,
}

/// Take `pf`'s creation lock, waiting up to `wait` for another process
/// that holds it (one creating VFs on that PF right now).
pub fn lock_pf(root: &HostRoot, pf: PciAddress, wait: Duration) -> Result<PfLock, HostError> {
    let path = pf_lock_path(root, pf);
    let file = open_lock(&path)?;
    let start = std::time::Instant::now();
    loop {
        match flock(&file, libc::LOCK_EX) {
            Ok(()) => return Ok(PfLock { _file: file }),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if start.elapsed() >= wait {
                    return Err(HostError::PfLockTimeout {
                        pf,
                        path: root.display(&path),
                        secs: wait.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => return Err(HostError::Lock { path, source }),
        }
    }
}

/// Who holds `addr` ("tessera vm web-1 (pid 1234)"), or `None` when it is
/// free. Probes with a non-blocking shared lock, released at once.
pub fn lock_owner(root: &HostRoot, addr: PciAddress) -> Option<String> {
    let path = vf_lock_path(root, addr);
    let mut file = File::open(&path).ok()?;
    if flock(&file, libc::LOCK_SH).is_ok() {
        // Free (the lock goes with `file`).
        return None;
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
    };
    Some(match (field("owner "), field("pid ")) {
        (Some(o), Some(p)) => format!("tessera {o} (pid {p})"),
        (None, Some(p)) => format!("tessera (pid {p})"),
        _ => "a tessera VM".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeHost;
    use super::*;

    #[test]
    fn a_second_claim_on_one_vf_fails_and_names_the_first() {
        let h = FakeHost::new("lock-two");
        let vf: PciAddress = "0000:01:10.0".parse().unwrap();
        assert_eq!(
            vf_lock_path(&h.root, vf),
            h.dir.join("run/tessera/vf/0000:01:10.0.lock")
        );
        assert_eq!(lock_owner(&h.root, vf), None);
        let first = claim_vf(&h.root, vf, "vm a").unwrap();
        let owner = lock_owner(&h.root, vf).unwrap();
        assert_eq!(owner, format!("tessera vm a (pid {})", std::process::id()));
        let e = claim_vf(&h.root, vf, "vm b").unwrap_err();
        assert!(matches!(e, HostError::InUse { .. }));
        assert!(e.to_string().contains("in use by tessera vm a"), "{e}");
        // Another VF is independent.
        let other = claim_vf(&h.root, "0000:01:10.2".parse().unwrap(), "vm b").unwrap();
        first.release();
        assert_eq!(lock_owner(&h.root, vf), None);
        let again = claim_vf(&h.root, vf, "vm c").unwrap();
        assert!(lock_owner(&h.root, vf).unwrap().contains("vm c"));
        drop((again, other));
    }

    #[test]
    fn a_claim_held_by_another_process_is_seen_and_dies_with_it() {
        let h = FakeHost::new("lock-proc");
        let vf: PciAddress = "0000:01:10.4".parse().unwrap();
        let path = vf_lock_path(&h.root, vf);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "pid 1\nowner vm elsewhere\n").unwrap();
        // flock(1) from util-linux holds the lock in a child process
        // (--close: only flock itself, not the sleep it runs).
        let child = std::process::Command::new("flock")
            .args(["-x", "--close"])
            .arg(&path)
            .args(["sleep", "30"])
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("SKIP a_claim_held_by_another_process...: flock(1) is not installed");
            return;
        };
        let t = std::time::Instant::now();
        while lock_owner(&h.root, vf).is_none() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            lock_owner(&h.root, vf).as_deref(),
            Some("tessera vm elsewhere (pid 1)")
        );
        assert!(claim_vf(&h.root, vf, "vm here").is_err());
        child.kill().unwrap();
        child.wait().unwrap();
        let claim = claim_vf(&h.root, vf, "vm here").expect("the dead holder's lock is gone");
        drop(claim);
    }
}
