//! OVMF firmware images: `--firmware CODE.fd --vars VARS.fd
//! [--vars-template TEMPLATE.fd]`.
//!
//! [`FirmwareImages::open`] validates a split OVMF build the way QEMU's PC
//! machine maps it (`hw/i386/pc_sysfw.c`) and prepares the per-VM variable
//! store:
//!
//! * CODE must be a non-empty multiple of 4 KiB and must not look like a
//!   variable store or a unified `OVMF.fd` (its first firmware volume must
//!   not be the NV-data volume).
//! * CODE and VARS are mapped from 4 GiB downwards, CODE ending at 4 GiB
//!   and VARS right below it ([`FlashLayout`]); together they must fit the
//!   [`FLASH_WINDOW`] (8 MiB, QEMU's limit: the I/O APIC, HPET, RCBA and
//!   local APIC sit below 0xFF80_0000). Debian's 4M build fills exactly
//!   4 MiB: VARS at 0xFFC0_0000 (540,672 B), CODE at 0xFFC8_4000
//!   (3,653,632 B), as the build's PCDs expect.
//! * When the VARS file does not exist it is created as a copy of the
//!   template: `--vars-template` if given, else the `nvram-template` the
//!   QEMU firmware descriptors (below) name for this CODE file. It is never
//!   created from CODE: a template must be a variable store (NV-data
//!   firmware volume) and must not be the CODE file. Creation is atomic: a
//!   complete copy is written and synced under a temporary name and then
//!   hard-linked into place, so a crash leaves either no VARS or a whole
//!   one, and an existing file is never replaced.
//! * An existing VARS file is used as it is (never truncated or rewritten
//!   here); it must be a non-empty multiple of 4 KiB, as large as the
//!   template when one is known, must not be a firmware code volume, and
//!   must not be the CODE file, the template, or any file a firmware
//!   descriptor names (the system-wide images are shared by every VM).
//!   Identity is by device and inode, so symlinks and hard links are seen
//!   through.
//! * VARS is opened read-write and locked (`flock`, exclusive,
//!   non-blocking) for as long as the returned file stays open: two VMMs
//!   never share one variable store.
//!
//! # Firmware descriptors and SMM
//!
//! Debian's `ovmf` package describes its images with QEMU firmware
//! descriptors (QEMU `docs/interop/firmware.json`) in
//! `/usr/share/qemu/firmware/*.json`; `/etc/qemu/firmware` overrides a
//! file of the same name (an empty file there hides it). A CODE file that
//! a descriptor lists with the `requires-smm` feature (Debian:
//! `OVMF_CODE_4M.secboot.fd` and its `.ms.fd`/`.snakeoil.fd` links) halts
//! without SMM, which Tessera does not emulate: [`FirmwareImages::open`]
//! refuses it and names a descriptor-listed x86-64 Q35 UEFI build that does
//! not need SMM (Debian: `OVMF_CODE_4M.fd` with `OVMF_VARS_4M.fd`). A
//! descriptor that maps its image other than as split flash (`device` not
//! `flash`, or `mode` not `split`) is refused too. A CODE file that no
//! descriptor lists is recognised from its contents
//! ([`crate::ovmf_smm`]: an SMM module in its compressed PEI volume) and
//! refused the same way if it needs SMM; otherwise it is accepted as it is,
//! and without `--vars-template` it then needs an existing VARS file.
//!
//! # Mapping the images
//!
//! [`FirmwareImages::into_parts`] hands out CODE's bytes, the locked VARS
//! file and the [`FlashLayout`]. CODE is mapped at
//! [`FlashLayout::code_range`] as read-only guest memory for the whole life
//! of the VM (OVMF never programs it; guest writes there exit and are
//! dropped). VARS becomes a writable `devices::legacy::pflash::Pflash` on
//! the MMIO bus at [`FlashLayout::vars_range`], mapped as read-only memory
//! only while the flash is in read-array mode (see that module).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The flash window ends here (the reset vector is at 0xFFFF_FFF0).
pub const FLASH_TOP: u64 = 0x1_0000_0000;
/// Most bytes of CODE plus VARS that fit below [`FLASH_TOP`] (QEMU's PC
/// machine limit).
pub const FLASH_WINDOW: u64 = 8 << 20;
/// Flash images are made of 4 KiB blocks (QEMU's `FLASH_SECTOR_SIZE`).
pub const BLOCK_SIZE: u64 = 4096;
/// Where QEMU firmware descriptors are read from, lowest priority first.
pub const DESCRIPTOR_DIRS: &[&str] = &["/usr/share/qemu/firmware", "/etc/qemu/firmware"];

/// `EFI_SYSTEM_NV_DATA_FV_GUID` (fff12b8d-7696-4c8b-a985-2747075b4f50) as
/// stored at offset 16 of a firmware-volume header: the variable store.
const NV_DATA_FV_GUID: [u8; 16] = [
    0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50,
];
/// Offset of the file-system GUID in `EFI_FIRMWARE_VOLUME_HEADER`.
const FV_GUID_OFFSET: usize = 16;
/// Offset and value of the `_FVH` signature.
const FV_SIGNATURE_OFFSET: usize = 40;
const FV_SIGNATURE: &[u8; 4] = b"_FVH";

/// Errors opening firmware images.
#[derive(Debug, thiserror::Error)]
pub enum OvmfError {
    /// An I/O operation on a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An image is empty or not made of whole 4 KiB blocks.
    #[error("{role} {path} is {len} bytes: it must be a non-empty multiple of {BLOCK_SIZE}")]
    BadSize {
        /// "CODE", "VARS" or "VARS template".
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// CODE and VARS together exceed the flash window.
    #[error(
        "CODE ({code_len} bytes) and VARS ({vars_len} bytes) do not fit the {FLASH_WINDOW}-byte flash window below 4 GiB"
    )]
    TooLarge {
        /// CODE size.
        code_len: u64,
        /// VARS size.
        vars_len: u64,
    },
    /// CODE is a build that needs SMM.
    #[error("{code} needs SMM, which Tessera does not emulate: {}", smm_hint(.alternative))]
    RequiresSmm {
        /// The CODE path as given.
        code: PathBuf,
        /// A non-SMM build and its template, from the descriptors.
        alternative: Option<(PathBuf, Option<PathBuf>)>,
    },
    /// A descriptor maps CODE as something other than split flash.
    #[error(
        "{code} is described by {descriptor} as {mapping} firmware; Tessera needs a split CODE/VARS flash build"
    )]
    UnsupportedMapping {
        /// The CODE path as given.
        code: PathBuf,
        /// The descriptor file.
        descriptor: PathBuf,
        /// The mapping it declares.
        mapping: String,
    },
    /// CODE's first firmware volume is a variable store.
    #[error(
        "{0} starts with a UEFI variable store: it is a VARS image or a unified OVMF.fd, not a CODE image"
    )]
    CodeIsVarStore(PathBuf),
    /// VARS and CODE are the same file.
    #[error("CODE and VARS are the same file ({0}): VARS must be a separate, per-VM file")]
    SameFile(PathBuf),
    /// VARS is a system-wide image (the template, or a file a firmware
    /// descriptor names) that every VM shares.
    #[error(
        "VARS {0} is a shared firmware image (a template or CODE file): give each VM its own VARS file, e.g. a copy created with --vars-template"
    )]
    VarsIsSharedImage(PathBuf),
    /// The template is the CODE file.
    #[error("VARS template {0} is the CODE file: VARS is never created from CODE")]
    TemplateIsCode(PathBuf),
    /// The template is not a variable store.
    #[error("VARS template {0} is not a UEFI variable store image (no NV-data firmware volume)")]
    TemplateNotVarStore(PathBuf),
    /// VARS does not exist and there is no template to create it from.
    #[error(
        "VARS {vars} does not exist and no firmware descriptor names a template for {code}: pass --vars-template"
    )]
    NoTemplate {
        /// The VARS path.
        vars: PathBuf,
        /// The CODE path.
        code: PathBuf,
    },
    /// VARS's size differs from the template's.
    #[error("VARS {vars} is {actual} bytes but its template {template} is {expected}")]
    VarsSizeMismatch {
        /// The VARS path.
        vars: PathBuf,
        /// Its size.
        actual: u64,
        /// The template path.
        template: PathBuf,
        /// The template's size.
        expected: u64,
    },
    /// VARS holds a firmware code volume.
    #[error("VARS {0} holds a firmware code volume, not a variable store")]
    VarsIsCode(PathBuf),
    /// Another process holds VARS.
    #[error("VARS {0} is in use by another process")]
    VarsLocked(PathBuf),
}

fn smm_hint(alternative: &Option<(PathBuf, Option<PathBuf>)>) -> String {
    match alternative {
        Some((code, Some(vars))) => format!("use {} (with {})", code.display(), vars.display()),
        Some((code, None)) => format!("use {}", code.display()),
        None => "use a build without SMM, e.g. Debian's /usr/share/OVMF/OVMF_CODE_4M.fd (no firmware descriptor here names one)".to_string(),
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OvmfError + 'a {
    move |source| OvmfError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where CODE and VARS sit in guest-physical memory: CODE ends at 4 GiB,
/// VARS sits right below CODE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashLayout {
    /// Guest-physical address of VARS (the lowest flash address).
    pub vars_base: u64,
    /// VARS size in bytes.
    pub vars_len: u64,
    /// Guest-physical address of CODE.
    pub code_base: u64,
    /// CODE size in bytes.
    pub code_len: u64,
}

impl FlashLayout {
    /// The layout for images of these sizes, both non-zero multiples of
    /// [`BLOCK_SIZE`] summing to at most [`FLASH_WINDOW`].
    pub fn new(code_len: u64, vars_len: u64) -> Result<Self, OvmfError> {
        let blocks_ok = |n: u64| n > 0 && n % BLOCK_SIZE == 0;
        let fits = code_len
            .checked_add(vars_len)
            .is_some_and(|total| total <= FLASH_WINDOW);
        if !fits || !blocks_ok(code_len) || !blocks_ok(vars_len) {
            return Err(OvmfError::TooLarge { code_len, vars_len });
        }
        let code_base = FLASH_TOP - code_len;
        Ok(Self {
            vars_base: code_base - vars_len,
            vars_len,
            code_base,
            code_len,
        })
    }

    /// CODE's guest-physical range.
    pub fn code_range(&self) -> Range<u64> {
        self.code_base..self.code_base + self.code_len
    }

    /// VARS's guest-physical range.
    pub fn vars_range(&self) -> Range<u64> {
        self.vars_base..self.vars_base + self.vars_len
    }

    /// The whole flash range, VARS then CODE, ending at [`FLASH_TOP`].
    pub fn range(&self) -> Range<u64> {
        self.vars_base..FLASH_TOP
    }
}

/// One target of a firmware descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorTarget {
    /// QEMU architecture name, e.g. `x86_64`.
    pub architecture: String,
    /// Machine-type globs, e.g. `pc-q35-*`.
    pub machines: Vec<String>,
}

/// The parts of a QEMU firmware descriptor this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareDescriptor {
    /// The JSON file it was read from.
    pub source: PathBuf,
    /// `description`.
    pub description: String,
    /// `interface-types`, e.g. `uefi`.
    pub interface_types: Vec<String>,
    /// `mapping.device`, e.g. `flash` or `memory`.
    pub device: String,
    /// `mapping.mode` (`split` when absent).
    pub mode: String,
    /// `mapping.executable.filename` (or `mapping.filename` for memory).
    pub executable: Option<PathBuf>,
    /// `mapping.nvram-template.filename`.
    pub nvram_template: Option<PathBuf>,
    /// `targets`.
    pub targets: Vec<DescriptorTarget>,
    /// `features`, e.g. `requires-smm`.
    pub features: Vec<String>,
}

impl FirmwareDescriptor {
    /// Parse the JSON text of the descriptor read from `source`.
    pub fn parse(source: &Path, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mapping = v.get("mapping").ok_or("no \"mapping\"")?;
        let filename = |key: &str| {
            mapping
                .get(key)
                .and_then(|f| f.get("filename"))
                .and_then(Value::as_str)
                .map(PathBuf::from)
        };
        let executable = filename("executable").or_else(|| {
            mapping
                .get("filename")
                .and_then(Value::as_str)
                .map(PathBuf::from)
        });
        let targets = v
            .get("targets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|t| DescriptorTarget {
                        architecture: t
                            .get("architecture")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        machines: strings(t.get("machines")),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            source: source.to_path_buf(),
            description: v
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            interface_types: strings(v.get("interface-types")),
            device: mapping
                .get("device")
                .and_then(Value::as_str)
                .ok_or("no \"mapping.device\"")?
                .to_string(),
            mode: mapping
                .get("mode")
                .and_then(Value::as_str)
                .unwrap_or("split")
                .to_string(),
            executable,
            nvram_template: filename("nvram-template"),
            targets,
            features: strings(v.get("features")),
        })
    }

    /// True when the firmware halts without SMM.
    pub fn requires_smm(&self) -> bool {
        self.features.iter().any(|f| f == "requires-smm")
    }

    /// True when the image is split CODE/VARS flash, as Tessera maps it.
    pub fn is_split_flash(&self) -> bool {
        self.device == "flash" && self.mode == "split"
    }

    /// True when the firmware is UEFI for an x86-64 Q35 machine.
    pub fn suits_q35(&self) -> bool {
        self.interface_types.iter().any(|i| i == "uefi")
            && self.targets.iter().any(|t| {
                t.architecture == "x86_64"
                    && t.machines
                        .iter()
                        .any(|m| m == "*" || m.starts_with("pc-q35"))
            })
    }
}

/// The firmware descriptors found on the host, in priority order.
#[derive(Debug, Clone, Default)]
pub struct Descriptors {
    list: Vec<FirmwareDescriptor>,
    skipped: Vec<(PathBuf, String)>,
}

impl Descriptors {
    /// The descriptors in [`DESCRIPTOR_DIRS`].
    pub fn system() -> Self {
        let dirs: Vec<&Path> = DESCRIPTOR_DIRS.iter().map(Path::new).collect();
        Self::from_dirs(&dirs)
    }

    /// The `*.json` descriptors in `dirs`, lowest priority first: a file
    /// overrides one of the same name in an earlier directory, and an
    /// empty file hides it. The result is ordered by file name (QEMU's
    /// priority order). Missing directories are skipped; unreadable or
    /// malformed files are listed in [`Descriptors::skipped`].
    pub fn from_dirs(dirs: &[&Path]) -> Self {
        let mut by_name: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
        for dir in dirs {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "json") {
                    by_name.insert(entry.file_name(), path);
                }
            }
        }
        let mut out = Self::default();
        for path in by_name.into_values() {
            match fs::read_to_string(&path) {
                Ok(text) if text.trim().is_empty() => {}
                Ok(text) => match FirmwareDescriptor::parse(&path, &text) {
                    Ok(d) => out.list.push(d),
                    Err(e) => out.skipped.push((path, e)),
                },
                Err(e) => out.skipped.push((path, e.to_string())),
            }
        }
        out
    }

    /// These descriptors, in priority order.
    pub fn from_list(list: Vec<FirmwareDescriptor>) -> Self {
        Self {
            list,
            skipped: Vec::new(),
        }
    }

    /// All descriptors, in priority order.
    pub fn all(&self) -> &[FirmwareDescriptor] {
        &self.list
    }

    /// Descriptor files that could not be read or parsed, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// The descriptors whose executable is the file at `code` (same device
    /// and inode), in priority order; the ones naming `code` by the very
    /// path given come first.
    pub fn describing(&self, code: &Path) -> Vec<&FirmwareDescriptor> {
        let Some(id) = file_id(code) else {
            return Vec::new();
        };
        let (mut exact, mut other): (Vec<_>, Vec<_>) = self
            .list
            .iter()
            .filter(|d| d.executable.as_deref().and_then(file_id) == Some(id))
            .partition(|d| d.executable.as_deref() == Some(code));
        exact.append(&mut other);
        exact
    }

    /// The best descriptor-listed x86-64 Q35 UEFI split-flash build that
    /// does not need SMM and whose files exist.
    pub fn non_smm_alternative(&self) -> Option<&FirmwareDescriptor> {
        self.list.iter().find(|d| {
            !d.requires_smm()
                && d.is_split_flash()
                && d.suits_q35()
                && d.executable.as_deref().is_some_and(Path::is_file)
                && d.nvram_template.as_deref().is_none_or(Path::is_file)
        })
    }

    /// True when `path` is a file some descriptor names (an executable or a
    /// template).
    fn names(&self, path: &Path) -> bool {
        let Some(id) = file_id(path) else {
            return false;
        };
        self.list.iter().any(|d| {
            [d.executable.as_deref(), d.nvram_template.as_deref()]
                .into_iter()
                .flatten()
                .any(|p| file_id(p) == Some(id))
        })
    }
}

/// (device, inode) of the file at `path`, following symlinks.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// True when `a` and `b` are the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (file_id(a), file_id(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The firmware-volume GUID at the start of `header`, if it is one.
fn fv_guid(header: &[u8]) -> Option<&[u8]> {
    let sig = header.get(FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + FV_SIGNATURE.len())?;
    (sig == FV_SIGNATURE).then(|| &header[FV_GUID_OFFSET..FV_GUID_OFFSET + 16])
}

/// True when `header` starts a UEFI variable store.
fn is_var_store(header: &[u8]) -> bool {
    fv_guid(header) == Some(&NV_DATA_FV_GUID[..])
}

/// The first 64 bytes of `file` (fewer if it is shorter).
fn read_header(path: &Path) -> Result<Vec<u8>, OvmfError> {
    let mut header = Vec::with_capacity(64);
    File::open(path)
        .and_then(|f| f.take(64).read_to_end(&mut header))
        .map_err(io_err("reading", path))?;
    Ok(header)
}

/// Size of the regular file at `path`, checked to be whole blocks.
fn block_file_len(role: &'static str, path: &Path) -> Result<u64, OvmfError> {
    let meta = fs::metadata(path).map_err(io_err("opening", path))?;
    let len = meta.len();
    if !meta.is_file() || len == 0 || len % BLOCK_SIZE != 0 {
        return Err(OvmfError::BadSize {
            role,
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(len)
}

/// Validated firmware images, ready to map (see the module documentation).
#[derive(Debug)]
pub struct FirmwareImages {
    code_path: PathBuf,
    code: Vec<u8>,
    vars_path: PathBuf,
    vars: File,
    template: Option<PathBuf>,
    vars_created: bool,
    layout: FlashLayout,
}

impl FirmwareImages {
    /// Validate `code`, open (creating it from the template if needed) and
    /// lock `vars`, using the host's firmware descriptors.
    pub fn open(code: &Path, vars: &Path, template: Option<&Path>) -> Result<Self, OvmfError> {
        Self::open_with(code, vars, template, &Descriptors::system())
    }

    /// [`FirmwareImages::open`] with the given descriptors.
    pub fn open_with(
        code: &Path,
        vars: &Path,
        template: Option<&Path>,
        descriptors: &Descriptors,
    ) -> Result<Self, OvmfError> {
        let code_len = block_file_len("CODE", code)?;

        // What the descriptors say about CODE.
        let described = descriptors.describing(code);
        if described.iter().any(|d| d.requires_smm()) {
            let alternative = descriptors
                .non_smm_alternative()
                .and_then(|d| Some((d.executable.clone()?, d.nvram_template.clone())));
            return Err(OvmfError::RequiresSmm {
                code: code.to_path_buf(),
                alternative,
            });
        }
        if let Some(d) = described.iter().find(|d| !d.is_split_flash()) {
            return Err(OvmfError::UnsupportedMapping {
                code: code.to_path_buf(),
                descriptor: d.source.clone(),
                mapping: format!("{} ({})", d.device, d.mode),
            });
        }

        let code_bytes = fs::read(code).map_err(io_err("reading", code))?;
        if code_bytes.len() as u64 != code_len {
            return Err(OvmfError::Io {
                what: "reading",
                path: code.to_path_buf(),
                source: io::Error::other("the file changed size while being read"),
            });
        }
        if is_var_store(&code_bytes) {
            return Err(OvmfError::CodeIsVarStore(code.to_path_buf()));
        }
        // A file no descriptor vouches for: the image itself says whether
        // it needs SMM (a Secure Boot build copied elsewhere, or one no
        // descriptor lists).
        if described.is_empty()
            && crate::ovmf_smm::smm_need(&code_bytes) == crate::ovmf_smm::SmmNeed::Required
        {
            let alternative = descriptors
                .non_smm_alternative()
                .and_then(|d| Some((d.executable.clone()?, d.nvram_template.clone())));
            return Err(OvmfError::RequiresSmm {
                code: code.to_path_buf(),
                alternative,
            });
        }

        // The template: explicit, else the descriptors' (if it exists).
        let template: Option<PathBuf> = match template {
            Some(t) => Some(t.to_path_buf()),
            None => described
                .iter()
                .filter_map(|d| d.nvram_template.clone())
                .find(|t| t.is_file()),
        };
        let template_len = match &template {
            Some(t) => {
                if same_file(t, code) {
                    return Err(OvmfError::TemplateIsCode(t.clone()));
                }
                let len = block_file_len("VARS template", t)?;
                if !is_var_store(&read_header(t)?) {
                    return Err(OvmfError::TemplateNotVarStore(t.clone()));
                }
                Some(len)
            }
            None => None,
        };

        // Refuse images that cannot fit before creating anything.
        FlashLayout::new(code_len, template_len.unwrap_or(BLOCK_SIZE))?;

        // VARS: never CODE, never a shared image; created from the template.
        if same_file(vars, code) {
            return Err(OvmfError::SameFile(vars.to_path_buf()));
        }
        let is_template = template.as_deref().is_some_and(|t| same_file(vars, t));
        if is_template || descriptors.names(vars) {
            return Err(OvmfError::VarsIsSharedImage(vars.to_path_buf()));
        }
        let mut vars_created = false;
        if fs::symlink_metadata(vars).is_err() {
            let Some(t) = &template else {
                return Err(OvmfError::NoTemplate {
                    vars: vars.to_path_buf(),
                    code: code.to_path_buf(),
                });
            };
            vars_created = create_from_template(vars, t)?;
        }

        let vars_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(vars)
            .map_err(io_err("opening", vars))?;
        if !lock_exclusive(&vars_file).map_err(io_err("locking", vars))? {
            return Err(OvmfError::VarsLocked(vars.to_path_buf()));
        }
        let vars_len = block_file_len("VARS", vars)?;
        if let (Some(t), Some(expected)) = (&template, template_len) {
            if vars_len != expected {
                return Err(OvmfError::VarsSizeMismatch {
                    vars: vars.to_path_buf(),
                    actual: vars_len,
                    template: t.clone(),
                    expected,
                });
            }
        }
        let header = read_header(vars)?;
        if fv_guid(&header).is_some() && !is_var_store(&header) {
            return Err(OvmfError::VarsIsCode(vars.to_path_buf()));
        }
        let layout = FlashLayout::new(code_len, vars_len)?;

        Ok(Self {
            code_path: code.to_path_buf(),
            code: code_bytes,
            vars_path: vars.to_path_buf(),
            vars: vars_file,
            template,
            vars_created,
            layout,
        })
    }

    /// The CODE image.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// The CODE path as given.
    pub fn code_path(&self) -> &Path {
        &self.code_path
    }

    /// The VARS file, open read-write and locked.
    pub fn vars(&self) -> &File {
        &self.vars
    }

    /// The VARS path as given.
    pub fn vars_path(&self) -> &Path {
        &self.vars_path
    }

    /// The template VARS was (or would have been) created from.
    pub fn template(&self) -> Option<&Path> {
        self.template.as_deref()
    }

    /// True when this call created VARS from the template.
    pub fn vars_created(&self) -> bool {
        self.vars_created
    }

    /// Where CODE and VARS map.
    pub fn layout(&self) -> FlashLayout {
        self.layout
    }

    /// The CODE bytes and the VARS file (which keeps the lock while open),
    /// for building the flash devices.
    pub fn into_parts(self) -> (Vec<u8>, File, FlashLayout) {
        (self.code, self.vars, self.layout)
    }
}

/// Create `vars` as a copy of `template`, atomically: the copy is written
/// and synced under a temporary name in the same directory, then
/// hard-linked to `vars` (which fails rather than replace a file that
/// appeared meanwhile). Returns false when another process created `vars`
/// first.
fn create_from_template(vars: &Path, template: &Path) -> Result<bool, OvmfError> {
    let bytes = fs::read(template).map_err(io_err("reading", template))?;
    let dir = match vars.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = vars.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tessera-new-{}", std::process::id()));
    let written = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(OvmfError::Io {
            what: "creating",
            path: vars.to_path_buf(),
            source: e,
        });
    }
    let linked = fs::hard_link(&tmp, vars);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Make the new directory entry durable too (best effort: some
            // filesystems refuse to sync directories).
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(OvmfError::Io {
            what: "creating",
            path: vars.to_path_buf(),
            source: e,
        }),
    }
}

/// Take an exclusive, non-blocking `flock` on `file`. Ok(false) when
/// another open file description holds it.
fn lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock only takes a descriptor number and flags; `file` keeps
    // the descriptor open for the duration of the call. (std's File::try_lock
    // is newer than the workspace's minimum Rust version.)
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh directory under the temp directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "tessera-ovmf-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, bytes).unwrap();
            p
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A firmware volume of `blocks` 4 KiB blocks with file-system `guid`.
    fn volume(blocks: usize, guid: &[u8; 16], fill: u8) -> Vec<u8> {
        let mut v = vec![fill; blocks * BLOCK_SIZE as usize];
        v[..16].fill(0);
        v[FV_GUID_OFFSET..FV_GUID_OFFSET + 16].copy_from_slice(guid);
        v[FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + 4].copy_from_slice(FV_SIGNATURE);
        v
    }

    /// EFI_FIRMWARE_FILE_SYSTEM2_GUID, the first volume of OVMF CODE.
    const FFS2_GUID: [u8; 16] = [
        0x78, 0xe5, 0x8c, 0x8c, 0x3d, 0x8a, 0x1c, 0x4f, 0x99, 0x35, 0x89, 0x61, 0x85, 0xc3, 0x2d,
        0xd3,
    ];

    fn code_image(blocks: usize) -> Vec<u8> {
        volume(blocks, &FFS2_GUID, 0xC3)
    }

    fn vars_image(blocks: usize) -> Vec<u8> {
        volume(blocks, &NV_DATA_FV_GUID, 0xFF)
    }

    fn descriptor_json(exe: &Path, template: Option<&Path>, features: &[&str]) -> String {
        let template = template
            .map(|t| {
                format!(
                    r#", "nvram-template": {{ "filename": "{}", "format": "raw" }}"#,
                    t.display()
                )
            })
            .unwrap_or_default();
        let features: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
        format!(
            r#"{{ "description": "test", "interface-types": ["uefi"],
                "mapping": {{ "device": "flash",
                    "executable": {{ "filename": "{}", "format": "raw" }}{template} }},
                "targets": [ {{ "architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"] }} ],
                "features": [{}], "tags": [] }}"#,
            exe.display(),
            features.join(", ")
        )
    }

    /// A descriptor directory in `dir` with the given files.
    fn descriptors(dir: &TempDir, files: &[(&str, String)]) -> Descriptors {
        let d = dir.path("firmware");
        fs::create_dir_all(&d).unwrap();
        for (name, text) in files {
            fs::write(d.join(name), text).unwrap();
        }
        Descriptors::from_dirs(&[&d])
    }

    fn none() -> Descriptors {
        Descriptors::default()
    }

    #[test]
    fn layout_from_the_top_of_4g() {
        let debian = FlashLayout::new(3_653_632, 540_672).unwrap();
        assert_eq!(debian.vars_base, 0xFFC0_0000);
        assert_eq!(debian.code_base, 0xFFC8_4000);
        assert_eq!(debian.vars_range(), 0xFFC0_0000..0xFFC8_4000);
        assert_eq!(debian.code_range(), 0xFFC8_4000..FLASH_TOP);
        assert_eq!(debian.range(), 0xFFC0_0000..FLASH_TOP);
        let two_mb = FlashLayout::new(1_966_080, 131_072).unwrap();
        assert_eq!(two_mb.vars_base, 0xFFE0_0000);
        assert_eq!(
            FlashLayout::new(FLASH_WINDOW - BLOCK_SIZE, BLOCK_SIZE)
                .unwrap()
                .vars_base,
            0xFF80_0000
        );
        for (c, v) in [
            (FLASH_WINDOW, BLOCK_SIZE),
            (0, BLOCK_SIZE),
            (BLOCK_SIZE, 0),
            (BLOCK_SIZE + 1, BLOCK_SIZE),
            (u64::MAX, BLOCK_SIZE),
        ] {
            assert!(
                matches!(FlashLayout::new(c, v), Err(OvmfError::TooLarge { .. })),
                "{c} {v}"
            );
        }
    }

    #[test]
    fn creates_vars_from_explicit_template_once() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let template = dir.file("VARS.template.fd", &vars_image(2));
        let vars = dir.path("vm.vars.fd");
        let images = FirmwareImages::open_with(&code, &vars, Some(&template), &none()).unwrap();
        assert!(images.vars_created());
        assert_eq!(fs::read(&vars).unwrap(), vars_image(2));
        assert_eq!(fs::metadata(&vars).unwrap().mode() & 0o777, 0o600);
        assert_eq!(images.code(), &code_image(4)[..]);
        assert_eq!(images.template(), Some(template.as_path()));
        assert_eq!(images.code_path(), code.as_path());
        assert_eq!(images.vars_path(), vars.as_path());
        assert_eq!(
            images.layout(),
            FlashLayout::new(4 * 4096, 2 * 4096).unwrap()
        );
        // The guest changes a variable; the next start keeps it.
        std::os::unix::fs::FileExt::write_all_at(images.vars(), b"changed", 100).unwrap();
        drop(images);
        let again = FirmwareImages::open_with(&code, &vars, Some(&template), &none()).unwrap();
        assert!(!again.vars_created());
        let (code_bytes, vars_file, layout) = again.into_parts();
        assert_eq!(code_bytes.len(), 4 * 4096);
        assert_eq!(vars_file.metadata().unwrap().len(), 2 * 4096);
        assert_eq!(layout.code_len, 4 * 4096);
        assert_eq!(&fs::read(&vars).unwrap()[100..107], b"changed");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn creates_vars_from_the_descriptor_template() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let template = dir.file("VARS.fd", &vars_image(2));
        let descs = descriptors(
            &dir,
            &[("60-test.json", descriptor_json(&code, Some(&template), &[]))],
        );
        let vars = dir.path("vm.fd");
        let images = FirmwareImages::open_with(&code, &vars, None, &descs).unwrap();
        assert!(images.vars_created());
        assert_eq!(images.template(), Some(template.as_path()));
        assert_eq!(fs::read(&vars).unwrap(), vars_image(2));
        // An explicit template wins over the descriptor's.
        let other = dir.file("other.fd", &vars_image(3));
        let vars2 = dir.path("vm2.fd");
        let images = FirmwareImages::open_with(&code, &vars2, Some(&other), &descs).unwrap();
        assert_eq!(fs::read(&vars2).unwrap(), vars_image(3));
        assert_eq!(images.layout().vars_len, 3 * 4096);
    }

    #[test]
    fn vars_is_never_created_from_code() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let vars = dir.path("vm.fd");
        // The template is the CODE file itself (also through a symlink).
        let err = FirmwareImages::open_with(&code, &vars, Some(&code), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::TemplateIsCode(_)), "{err}");
        let link = dir.path("link.fd");
        std::os::unix::fs::symlink(&code, &link).unwrap();
        let err = FirmwareImages::open_with(&code, &vars, Some(&link), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::TemplateIsCode(_)), "{err}");
        // A copy of a CODE image is not a variable store.
        let copy = dir.file("copy.fd", &code_image(2));
        let err = FirmwareImages::open_with(&code, &vars, Some(&copy), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::TemplateNotVarStore(_)), "{err}");
        // A descriptor naming CODE as its own template.
        let descs = descriptors(
            &dir,
            &[("60-bad.json", descriptor_json(&code, Some(&code), &[]))],
        );
        let err = FirmwareImages::open_with(&code, &vars, None, &descs).unwrap_err();
        assert!(matches!(err, OvmfError::TemplateIsCode(_)), "{err}");
        // No template at all.
        let err = FirmwareImages::open_with(&code, &vars, None, &none()).unwrap_err();
        assert!(matches!(err, OvmfError::NoTemplate { .. }), "{err}");
        assert!(err.to_string().contains("--vars-template"), "{err}");
        assert!(!vars.exists(), "nothing was created");
    }

    #[test]
    fn existing_vars_of_the_wrong_size_is_refused_untouched() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let template = dir.file("T.fd", &vars_image(2));
        let mut existing = vars_image(3);
        existing[200] = 0x42;
        let vars = dir.file("vm.fd", &existing);
        let err = FirmwareImages::open_with(&code, &vars, Some(&template), &none()).unwrap_err();
        match &err {
            OvmfError::VarsSizeMismatch {
                actual, expected, ..
            } => assert_eq!((*actual, *expected), (3 * 4096, 2 * 4096)),
            e => panic!("{e}"),
        }
        assert_eq!(fs::read(&vars).unwrap(), existing);
        // Without a known template any whole-block size is accepted.
        let images = FirmwareImages::open_with(&code, &vars, None, &none()).unwrap();
        assert_eq!(images.layout().vars_len, 3 * 4096);
        assert!(!images.vars_created());
        drop(images);
        let odd = dir.file("odd.fd", &[0xFF; 5000]);
        let err = FirmwareImages::open_with(&code, &odd, None, &none()).unwrap_err();
        assert!(
            matches!(err, OvmfError::BadSize { role: "VARS", .. }),
            "{err}"
        );
    }

    #[test]
    fn code_and_vars_must_be_different_files() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let template = dir.file("T.fd", &vars_image(2));
        let err = FirmwareImages::open_with(&code, &code, Some(&template), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::SameFile(_)), "{err}");
        let sym = dir.path("sym.fd");
        std::os::unix::fs::symlink(&code, &sym).unwrap();
        let err = FirmwareImages::open_with(&code, &sym, Some(&template), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::SameFile(_)), "{err}");
        let hard = dir.path("hard.fd");
        fs::hard_link(&code, &hard).unwrap();
        let err = FirmwareImages::open_with(&code, &hard, None, &none()).unwrap_err();
        assert!(matches!(err, OvmfError::SameFile(_)), "{err}");
        assert_eq!(fs::read(&code).unwrap(), code_image(4));
    }

    #[test]
    fn shared_images_are_never_used_as_vars() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let template = dir.file("T.fd", &vars_image(2));
        let err =
            FirmwareImages::open_with(&code, &template, Some(&template), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::VarsIsSharedImage(_)), "{err}");
        // A template some descriptor names, even when not used as one here.
        let descs = descriptors(
            &dir,
            &[("60-x.json", descriptor_json(&code, Some(&template), &[]))],
        );
        let err = FirmwareImages::open_with(&code, &template, None, &descs).unwrap_err();
        assert!(matches!(err, OvmfError::VarsIsSharedImage(_)), "{err}");
        assert_eq!(fs::read(&template).unwrap(), vars_image(2));
    }

    #[test]
    fn smm_builds_are_refused_naming_the_alternative() {
        let dir = TempDir::new();
        let secboot = dir.file("CODE.secboot.fd", &code_image(4));
        let plain = dir.file("CODE.fd", &code_image(4));
        let template = dir.file("VARS.fd", &vars_image(2));
        let ms = dir.path("CODE.ms.fd");
        std::os::unix::fs::symlink(&secboot, &ms).unwrap();
        let descs = descriptors(
            &dir,
            &[
                (
                    "50-secure.json",
                    descriptor_json(&secboot, Some(&template), &["requires-smm", "secure-boot"]),
                ),
                (
                    "60-plain.json",
                    descriptor_json(&plain, Some(&template), &["acpi-s3"]),
                ),
            ],
        );
        let vars = dir.path("vm.fd");
        for code in [&secboot, &ms] {
            let err = FirmwareImages::open_with(code, &vars, None, &descs).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{} needs SMM, which Tessera does not emulate: use {} (with {})",
                    code.display(),
                    plain.display(),
                    template.display()
                )
            );
        }
        assert!(!vars.exists());
        // The plain build opens.
        assert!(FirmwareImages::open_with(&plain, &vars, None, &descs).is_ok());
        // Without a non-SMM descriptor the message says so.
        let only = Descriptors::from_list(vec![descs.all()[0].clone()]);
        let err = FirmwareImages::open_with(&secboot, &vars, None, &only).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(no firmware descriptor here names one)"),
            "{err}"
        );
    }

    #[test]
    fn an_smm_image_no_descriptor_lists_is_recognised_from_its_contents() {
        let dir = TempDir::new();
        // PiSmmCore's FILE_GUID inside an otherwise plain image.
        let mut img = code_image(4);
        img[0x2000..0x2010].copy_from_slice(&[
            0xcd, 0x54, 0x4f, 0xe9, 0xeb, 0x81, 0xed, 0x47, 0xae, 0xc3, 0x85, 0x6f, 0x5d, 0xc1,
            0x57, 0xa9,
        ]);
        let smm = dir.file("copied.fd", &img);
        let vars = dir.file("vm.fd", &vars_image(2));
        let none = Descriptors::from_list(Vec::new());
        let err = FirmwareImages::open_with(&smm, &vars, None, &none).unwrap_err();
        assert!(matches!(err, OvmfError::RequiresSmm { .. }), "{err}");
        let plain = dir.file("plain.fd", &code_image(4));
        assert!(FirmwareImages::open_with(&plain, &vars, None, &none).is_ok());

        // Debian's Secure Boot build copied to a temporary directory, where
        // the package is installed: refused, naming the packaged non-SMM
        // build from the system's descriptors.
        let real = Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
        if let Ok(bytes) = std::fs::read(real) {
            let copy = dir.file("OVMF_CODE_4M.secboot.fd", &bytes);
            let err =
                FirmwareImages::open_with(&copy, &vars, None, &Descriptors::system()).unwrap_err();
            assert!(matches!(err, OvmfError::RequiresSmm { .. }), "{err}");
            assert!(err.to_string().contains("needs SMM"), "{err}");
            eprintln!("{err}");
            let err = FirmwareImages::open_with(&copy, &vars, None, &none).unwrap_err();
            assert!(err.to_string().contains("OVMF_CODE_4M.fd"), "{err}");
        }
    }

    #[test]
    fn non_flash_descriptors_are_refused() {
        let dir = TempDir::new();
        let code = dir.file("OVMF.amdsev.fd", &code_image(4));
        let json = format!(
            r#"{{ "interface-types": ["uefi"], "mapping": {{ "device": "memory", "filename": "{}" }},
                "targets": [], "features": ["amd-sev"] }}"#,
            code.display()
        );
        let descs = descriptors(&dir, &[("40-sev.json", json)]);
        assert_eq!(descs.all()[0].executable.as_deref(), Some(code.as_path()));
        let err = FirmwareImages::open_with(&code, &dir.path("v.fd"), None, &descs).unwrap_err();
        assert!(matches!(err, OvmfError::UnsupportedMapping { .. }), "{err}");
        assert!(err.to_string().contains("memory (split)"), "{err}");
    }

    #[test]
    fn bad_code_images_are_refused() {
        let dir = TempDir::new();
        let template = dir.file("T.fd", &vars_image(2));
        let vars = dir.path("vm.fd");
        for (name, bytes) in [("empty.fd", vec![]), ("short.fd", vec![0; 1000])] {
            let code = dir.file(name, &bytes);
            let err =
                FirmwareImages::open_with(&code, &vars, Some(&template), &none()).unwrap_err();
            assert!(
                matches!(err, OvmfError::BadSize { role: "CODE", .. }),
                "{err}"
            );
        }
        let unified = dir.file("OVMF.fd", &vars_image(4));
        let err = FirmwareImages::open_with(&unified, &vars, Some(&template), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::CodeIsVarStore(_)), "{err}");
        let err =
            FirmwareImages::open_with(&dir.path("missing.fd"), &vars, Some(&template), &none())
                .unwrap_err();
        assert!(matches!(err, OvmfError::Io { .. }), "{err}");
        let big = dir.file("big.fd", &code_image(2048));
        let err = FirmwareImages::open_with(&big, &vars, Some(&template), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::TooLarge { .. }), "{err}");
        assert!(!vars.exists(), "nothing created for images that cannot fit");
    }

    #[test]
    fn vars_holding_a_code_volume_is_refused() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let vars = dir.file("vm.fd", &code_image(2));
        let err = FirmwareImages::open_with(&code, &vars, None, &none()).unwrap_err();
        assert!(matches!(err, OvmfError::VarsIsCode(_)), "{err}");
        // A blank (never formatted) store is fine: OVMF formats it.
        let blank = dir.file("blank.fd", &[0xFF; 8192]);
        assert!(FirmwareImages::open_with(&code, &blank, None, &none()).is_ok());
    }

    #[test]
    fn vars_is_locked_while_open() {
        let dir = TempDir::new();
        let code = dir.file("CODE.fd", &code_image(4));
        let template = dir.file("T.fd", &vars_image(2));
        let vars = dir.path("vm.fd");
        let first = FirmwareImages::open_with(&code, &vars, Some(&template), &none()).unwrap();
        let err = FirmwareImages::open_with(&code, &vars, Some(&template), &none()).unwrap_err();
        assert!(matches!(err, OvmfError::VarsLocked(_)), "{err}");
        // The lock follows the file handed out by into_parts.
        let (_, file, _) = first.into_parts();
        assert!(FirmwareImages::open_with(&code, &vars, None, &none()).is_err());
        drop(file);
        assert!(FirmwareImages::open_with(&code, &vars, None, &none()).is_ok());
    }

    #[test]
    fn descriptor_directories_override_and_mask_by_name() {
        let dir = TempDir::new();
        let low = dir.path("usr");
        let high = dir.path("etc");
        fs::create_dir_all(&low).unwrap();
        fs::create_dir_all(&high).unwrap();
        let exe = Path::new("/nonexistent/CODE.fd");
        fs::write(
            low.join("50-a.json"),
            descriptor_json(exe, None, &["requires-smm"]),
        )
        .unwrap();
        fs::write(low.join("60-b.json"), descriptor_json(exe, None, &[])).unwrap();
        fs::write(low.join("70-c.json"), descriptor_json(exe, None, &[])).unwrap();
        fs::write(low.join("README"), "not json").unwrap();
        fs::write(high.join("50-a.json"), "").unwrap();
        fs::write(
            high.join("70-c.json"),
            descriptor_json(exe, None, &["verbose-dynamic"]),
        )
        .unwrap();
        fs::write(high.join("80-bad.json"), "{ not json").unwrap();
        let descs = Descriptors::from_dirs(&[&low, &high, &dir.path("missing")]);
        let names: Vec<_> = descs
            .all()
            .iter()
            .map(|d| d.source.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["60-b.json", "70-c.json"]);
        assert_eq!(descs.all()[1].features, ["verbose-dynamic"]);
        assert_eq!(descs.all()[1].source.parent(), Some(high.as_path()));
        assert_eq!(descs.skipped().len(), 1);
        assert!(descs.all()[0].suits_q35() && descs.all()[0].is_split_flash());
        assert!(
            descs.non_smm_alternative().is_none(),
            "its executable does not exist"
        );
        assert!(FirmwareDescriptor::parse(exe, r#"{"mapping": {}}"#).is_err());
    }

    const DEBIAN_DIR: &str = "/usr/share/OVMF";

    fn debian() -> Option<(Descriptors, PathBuf)> {
        let dir = Path::new(DEBIAN_DIR);
        if !dir.join("OVMF_CODE_4M.fd").is_file() {
            println!(
                "skipping: {DEBIAN_DIR}/OVMF_CODE_4M.fd is absent (install Debian's ovmf package)"
            );
            return None;
        }
        let descs = Descriptors::system();
        if descs.describing(&dir.join("OVMF_CODE_4M.fd")).is_empty() {
            println!(
                "skipping: no firmware descriptor in {DESCRIPTOR_DIRS:?} lists OVMF_CODE_4M.fd"
            );
            return None;
        }
        Some((descs, dir.to_path_buf()))
    }

    #[test]
    fn debian_4m_build_opens_and_gets_its_vars_template() {
        let Some((descs, ovmf)) = debian() else {
            return;
        };
        let dir = TempDir::new();
        let vars = dir.path("vm.VARS.fd");
        let code = ovmf.join("OVMF_CODE_4M.fd");
        let images = FirmwareImages::open_with(&code, &vars, None, &descs).unwrap();
        assert!(images.vars_created());
        assert_eq!(
            images.template(),
            Some(ovmf.join("OVMF_VARS_4M.fd").as_path())
        );
        assert_eq!(
            fs::read(&vars).unwrap(),
            fs::read(ovmf.join("OVMF_VARS_4M.fd")).unwrap()
        );
        let layout = images.layout();
        assert_eq!((layout.vars_base, layout.vars_len), (0xFFC0_0000, 540_672));
        assert_eq!(
            (layout.code_base, layout.code_len),
            (0xFFC8_4000, 3_653_632)
        );
        assert_eq!(images.code().len(), 3_653_632);
        // The reset vector is in CODE's last 16 bytes (a near jump, 0xE9 or 0x90 nop first).
        let tail = &images.code()[images.code().len() - 16..];
        assert!(tail.iter().any(|&b| b != 0), "{tail:x?}");
        drop(images);
        // Through the default (system) descriptors too.
        let again = FirmwareImages::open(&code, &vars, None).unwrap();
        assert!(!again.vars_created());
    }

    #[test]
    fn debian_secboot_builds_are_refused() {
        let Some((descs, ovmf)) = debian() else {
            return;
        };
        let dir = TempDir::new();
        let vars = dir.path("vm.VARS.fd");
        for name in [
            "OVMF_CODE_4M.secboot.fd",
            "OVMF_CODE_4M.ms.fd",
            "OVMF_CODE_4M.snakeoil.fd",
        ] {
            let code = ovmf.join(name);
            if !code.exists() {
                continue;
            }
            let err = FirmwareImages::open_with(&code, &vars, None, &descs).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{DEBIAN_DIR}/{name} needs SMM, which Tessera does not emulate: \
                     use {DEBIAN_DIR}/OVMF_CODE_4M.fd (with {DEBIAN_DIR}/OVMF_VARS_4M.fd)"
                )
            );
        }
        assert!(!vars.exists());
    }

    #[test]
    fn debian_2m_build_needs_an_explicit_template() {
        let Some((descs, ovmf)) = debian() else {
            return;
        };
        let code = ovmf.join("OVMF_CODE.fd");
        if !code.is_file() {
            println!("skipping: {} is absent", code.display());
            return;
        }
        let dir = TempDir::new();
        let vars = dir.path("vm.fd");
        let err = FirmwareImages::open_with(&code, &vars, None, &descs).unwrap_err();
        assert!(matches!(err, OvmfError::NoTemplate { .. }), "{err}");
        let images =
            FirmwareImages::open_with(&code, &vars, Some(&ovmf.join("OVMF_VARS.fd")), &descs)
                .unwrap();
        assert_eq!(images.layout().vars_base, 0xFFE0_0000);
    }

    #[test]
    fn debian_shared_files_are_protected() {
        let Some((descs, ovmf)) = debian() else {
            return;
        };
        let code = ovmf.join("OVMF_CODE_4M.fd");
        let shared = ovmf.join("OVMF_VARS_4M.fd");
        let before = fs::read(&shared).unwrap();
        let err = FirmwareImages::open_with(&code, &shared, None, &descs).unwrap_err();
        assert!(matches!(err, OvmfError::VarsIsSharedImage(_)), "{err}");
        let err = FirmwareImages::open_with(&code, &ovmf.join("OVMF_VARS_4M.ms.fd"), None, &descs)
            .unwrap_err();
        assert!(matches!(err, OvmfError::VarsIsSharedImage(_)), "{err}");
        assert_eq!(fs::read(&shared).unwrap(), before);
        let dir = TempDir::new();
        let err =
            FirmwareImages::open_with(&code, &dir.path("v.fd"), Some(&code), &descs).unwrap_err();
        assert!(matches!(err, OvmfError::TemplateIsCode(_)), "{err}");
        let alt = descs.non_smm_alternative().unwrap();
        assert_eq!(alt.executable.as_deref(), Some(code.as_path()));
        assert!(descs.all().iter().any(FirmwareDescriptor::requires_smm));
    }
}
