//! Contents of the fw_cfg items and files OVMF reads on a Q35 machine.
//!
//! The device itself is `devices::legacy::fw_cfg::FwCfg`; this module only
//! builds bytes. The item keys are repeated here (this crate does not
//! depend on `devices`); they are QEMU's `FW_CFG_*` numbers, fixed by the
//! fw_cfg ABI.
//!
//! What a VMM adds for an OVMF boot:
//!
//! | key / file | contents |
//! |---|---|
//! | [`FW_CFG_NB_CPUS`], [`FW_CFG_MAX_CPUS`] | [`cpu_count_item`] |
//! | [`E820_FILE`] | [`e820_file`] |
//! | `etc/acpi/rsdp`, `etc/acpi/tables`, `etc/table-loader` | `acpi::table_loader`, from one generator |
//! | [`BOOTORDER_FILE`] (optional) | [`bootorder`] |
//! | [`PCI_MMIO64_MB_FILE`] (optional) | [`pci_mmio64_mb`] |
//! | kernel items (optional) | [`KernelItems::items`] |

use arch::MemoryLayout;
use arch::e820::{firmware_map, to_bytes};

/// Key of the boot CPU count (u16).
pub const FW_CFG_NB_CPUS: u16 = 0x05;
/// Key of the guest RAM size (u64), read by kvm-unit-tests.
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
/// Key of the kernel load address (u32).
pub const FW_CFG_KERNEL_ADDR: u16 = 0x07;
/// Key of the kernel size without setup (u32).
pub const FW_CFG_KERNEL_SIZE: u16 = 0x08;
/// Key of the initrd load address (u32).
pub const FW_CFG_INITRD_ADDR: u16 = 0x0a;
/// Key of the initrd size (u32).
pub const FW_CFG_INITRD_SIZE: u16 = 0x0b;
/// Key of the possible CPU count (u16).
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;
/// Key of the kernel bytes after the setup sectors.
pub const FW_CFG_KERNEL_DATA: u16 = 0x11;
/// Key of the initrd bytes.
pub const FW_CFG_INITRD_DATA: u16 = 0x12;
/// Key of the command-line address (u32).
pub const FW_CFG_CMDLINE_ADDR: u16 = 0x13;
/// Key of the command-line size, NUL included (u32).
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x14;
/// Key of the NUL-terminated command line.
pub const FW_CFG_CMDLINE_DATA: u16 = 0x15;
/// Key of the setup code address (u32).
pub const FW_CFG_SETUP_ADDR: u16 = 0x16;
/// Key of the setup size (u32).
pub const FW_CFG_SETUP_SIZE: u16 = 0x17;
/// Key of the setup bytes (boot sector + setup sectors, header patched).
pub const FW_CFG_SETUP_DATA: u16 = 0x18;

/// File with the RAM map ([`e820_file`]).
pub const E820_FILE: &str = "etc/e820";
/// File with the boot order ([`bootorder`]).
pub const BOOTORDER_FILE: &str = "bootorder";
/// File with the size of OVMF's 64-bit PCI MMIO window ([`pci_mmio64_mb`]).
pub const PCI_MMIO64_MB_FILE: &str = "opt/ovmf/X-PciMmio64Mb";

/// Where QEMU puts the setup code of a modern bzImage (`real_addr`).
pub const SETUP_ADDR: u32 = 0x1_0000;
/// Where QEMU puts the command line (`cmdline_addr`).
pub const CMDLINE_ADDR: u32 = 0x2_0000;
/// Where QEMU puts the protected-mode kernel (`prot_addr`).
pub const KERNEL_ADDR: u32 = 0x10_0000;
/// Memory QEMU keeps free for firmware data at the top of low RAM when it
/// places the initrd (`pcmc->acpi_data_size` on PC machines).
pub const ACPI_DATA_SIZE: u64 = 0x2_0000 + 0x8000;
/// `type_of_loader` QEMU writes: 0xB (QEMU), revision 0.
pub const LOADER_TYPE_QEMU: u8 = 0xb0;

// Linux boot protocol (Documentation/arch/x86/boot.rst) offsets.
const HDR_SETUP_SECTS: usize = 0x1f1;
const HDR_MAGIC: usize = 0x202;
const HDR_VERSION: usize = 0x206;
const HDR_TYPE_OF_LOADER: usize = 0x210;
const HDR_LOADFLAGS: usize = 0x211;
const HDR_RAMDISK_IMAGE: usize = 0x218;
const HDR_RAMDISK_SIZE: usize = 0x21c;
const HDR_HEAP_END_PTR: usize = 0x224;
const HDR_CMD_LINE_PTR: usize = 0x228;
const HDR_INITRD_ADDR_MAX: usize = 0x22c;
const HDR_XLOADFLAGS: usize = 0x236;
/// End of the fields read here.
const HDR_END: usize = 0x238;
/// "HdrS".
const HDR_MAGIC_VALUE: u32 = 0x5372_6448;
const LOADED_HIGH: u8 = 0x01;
const CAN_USE_HEAP: u8 = 0x80;
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
const SECTOR: usize = 512;

/// Errors from building kernel items.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FwCfgContentError {
    /// No "HdrS" setup header: not a bzImage.
    #[error("not a bzImage (no Linux boot protocol header)")]
    NotBzImage,
    /// Boot protocol older than 2.02 (pre-2.4 kernels).
    #[error("Linux boot protocol {0:#x} is too old (2.02 or later needed)")]
    ProtocolTooOld(u16),
    /// A zImage (loaded low), not a bzImage.
    #[error("kernel is a zImage, not a bzImage (LOADED_HIGH clear)")]
    NotLoadedHigh,
    /// The setup sectors run past the end of the file.
    #[error("setup of {setup} bytes is larger than the {len}-byte kernel file")]
    SetupTooLarge {
        /// Setup size from the header.
        setup: usize,
        /// File length.
        len: usize,
    },
    /// The initrd does not fit below the kernel's and the RAM's limit.
    #[error("initrd of {size} bytes does not fit below {max:#x}")]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// Highest usable address.
        max: u64,
    },
    /// A blob is larger than the 32-bit size fields.
    #[error("{0} is larger than 4 GiB")]
    TooLarge(&'static str),
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Neither a bzImage nor a PE/COFF image.
    #[error(
        "neither a Linux bzImage nor a PE/COFF EFI application (no \"HdrS\" boot header, no \"MZ\" signature)"
    )]
    NotBootable,
    /// An MZ file whose PE headers are missing or cut short.
    #[error("not a valid PE/COFF image: {0}")]
    BadPe(&'static str),
    /// A PE image for another CPU than x86-64.
    #[error(
        "a PE/COFF image for machine type {0:#06x}, not x86-64 (0x8664): this OVMF starts only x86-64 EFI applications"
    )]
    PeNotX64(u16),
    /// A PE image that is not an EFI application (a driver, a Windows
    /// program).
    #[error(
        "a PE/COFF image of subsystem {0} ({sub}), not an EFI application (10): OVMF starts only applications handed over as the kernel",
        sub = pe_subsystem_name(*.0)
    )]
    PeNotEfiApplication(u16),
}

fn pe_subsystem_name(s: u16) -> &'static str {
    match s {
        1 => "native",
        2 => "Windows GUI",
        3 => "Windows console",
        10 => "EFI application",
        11 => "EFI boot service driver",
        12 => "EFI runtime driver",
        13 => "EFI ROM",
        _ => "unknown",
    }
}

/// `bootorder`: the devices OVMF may boot from, first to last, as QEMU
/// writes them (OpenFirmware paths, one per line, NUL-terminated). With the
/// file present OVMF connects only these devices and orders `BootOrder` by
/// them (`QemuBootOrderLib`); `disks` are the (device, function) numbers of
/// virtio-blk functions on bus 0 (`/pci@i0cf8/scsi@DEV[,FN]/disk@0,0`).
pub fn bootorder_file(disks: &[(u8, u8)]) -> Vec<u8> {
    let mut s = String::new();
    for (i, &(dev, func)) in disks.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        if func == 0 {
            s.push_str(&format!("/pci@i0cf8/scsi@{dev:x}/disk@0,0"));
        } else {
            s.push_str(&format!("/pci@i0cf8/scsi@{dev:x},{func:x}/disk@0,0"));
        }
    }
    let mut b = s.into_bytes();
    b.push(0);
    b
}

/// `etc/e820`: the firmware RAM map of `layout` ([`firmware_map`]) as
/// packed 20-byte `{u64 base, u64 length, u32 type}` entries.
pub fn e820_file(layout: &MemoryLayout) -> Vec<u8> {
    to_bytes(&firmware_map(layout))
}

/// `bootorder`: OpenFirmware device paths, one per line, NUL-terminated, as
/// QEMU's `get_boot_devices_list` builds it (`"a\nb\0"`). Empty for no
/// paths; do not add the file then.
pub fn bootorder(paths: &[&str]) -> Vec<u8> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mut out = paths.join("\n").into_bytes();
    out.push(0);
    out
}

/// `opt/ovmf/X-PciMmio64Mb`: the size of OVMF's 64-bit PCI MMIO window in
/// MiB as decimal ASCII without NUL (what `-fw_cfg ...,string=` stores).
/// OVMF accepts at most 16 TiB (16777216); edk2-stable202211 only uses it
/// when it is larger than its own estimate.
pub fn pci_mmio64_mb(mb: u64) -> Vec<u8> {
    mb.to_string().into_bytes()
}

/// The CPU count items: ([`FW_CFG_NB_CPUS`], boot CPUs) and
/// ([`FW_CFG_MAX_CPUS`], possible CPUs), each a little-endian u16.
pub fn cpu_count_items(boot: u16, max: u16) -> [(u16, Vec<u8>); 2] {
    [
        (FW_CFG_NB_CPUS, boot.to_le_bytes().to_vec()),
        (FW_CFG_MAX_CPUS, max.to_le_bytes().to_vec()),
    ]
}

/// [`cpu_count_items`] with as many possible CPUs as boot CPUs (no CPU
/// hotplug).
pub fn cpu_count_item(cpus: u16) -> [(u16, Vec<u8>); 2] {
    cpu_count_items(cpus, cpus)
}

/// The fw_cfg items of a direct kernel boot through OVMF, as QEMU's
/// `x86_load_linux` creates them for a modern bzImage.
///
/// OVMF (`QemuKernelLoaderFsDxe`, `X86QemuLoadImageLib`) reads
/// `SETUP_SIZE`/`SETUP_DATA` + `KERNEL_SIZE`/`KERNEL_DATA` (concatenated
/// they are the bzImage it starts through the EFI stub, or through its
/// legacy loader), `INITRD_SIZE`/`INITRD_DATA` and
/// `CMDLINE_SIZE`/`CMDLINE_DATA`. The address items are not used by OVMF
/// but are provided as QEMU does. The setup header in `setup` is patched
/// like QEMU's (`type_of_loader`, `CAN_USE_HEAP` + `heap_end_ptr`,
/// `cmd_line_ptr`, `ramdisk_image`/`ramdisk_size`); OVMF's legacy loader
/// overwrites what it uses and the EFI stub ignores them. QEMU's `vga=`
/// and device-tree handling are not mirrored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelItems {
    /// Boot protocol version from the header.
    pub protocol: u16,
    /// The first `(setup_sects + 1) * 512` bytes, header patched.
    pub setup: Vec<u8>,
    /// The rest of the file: the protected-mode kernel.
    pub kernel: Vec<u8>,
    /// The initrd, if any.
    pub initrd: Option<Vec<u8>>,
    /// The command line with its NUL terminator.
    pub cmdline: Vec<u8>,
    /// `SETUP_ADDR` value.
    pub setup_addr: u32,
    /// `KERNEL_ADDR` value.
    pub kernel_addr: u32,
    /// `CMDLINE_ADDR` value.
    pub cmdline_addr: u32,
    /// `INITRD_ADDR` value (0 without initrd).
    pub initrd_addr: u32,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn len_u32(what: &'static str, len: usize) -> Result<u32, FwCfgContentError> {
    u32::try_from(len).map_err(|_| FwCfgContentError::TooLarge(what))
}

/// PE/COFF facts OVMF's `LoadImage` checks (PE signature at `e_lfanew`,
/// the COFF machine, a PE32+ optional header and its subsystem).
const PE_MACHINE_X64: u16 = 0x8664;
const PE32_PLUS_MAGIC: u16 = 0x20b;
const PE_SUBSYSTEM_EFI_APPLICATION: u16 = 10;

/// `Ok` if `image` is an x86-64 PE32+ EFI application.
pub fn check_efi_application(image: &[u8]) -> Result<(), FwCfgContentError> {
    if !image.starts_with(b"MZ") {
        return Err(FwCfgContentError::NotBootable);
    }
    let at = |off: usize, len: usize| image.get(off..off.checked_add(len)?);
    let lfanew = at(0x3c, 4)
        .map(|b| u32_at(b, 0) as usize)
        .ok_or(FwCfgContentError::BadPe("file ends inside the MZ header"))?;
    if at(lfanew, 4) != Some(b"PE\0\0") {
        return Err(FwCfgContentError::BadPe(
            "no \"PE\\0\\0\" signature where the MZ header points (e_lfanew)",
        ));
    }
    // COFF header: machine (u16), ..., optional header size at +16.
    let coff = lfanew + 4;
    let machine = at(coff, 2)
        .map(|b| u16_at(b, 0))
        .ok_or(FwCfgContentError::BadPe("file ends inside the COFF header"))?;
    if machine != PE_MACHINE_X64 {
        return Err(FwCfgContentError::PeNotX64(machine));
    }
    // Optional header: magic (u16) at 0, subsystem (u16) at 68.
    let opt = coff + 20;
    let magic = at(opt, 2)
        .map(|b| u16_at(b, 0))
        .ok_or(FwCfgContentError::BadPe("no optional header"))?;
    if magic != PE32_PLUS_MAGIC {
        return Err(FwCfgContentError::BadPe(
            "the optional header is not PE32+ (magic 0x20b)",
        ));
    }
    let subsystem = at(opt + 68, 2)
        .map(|b| u16_at(b, 0))
        .ok_or(FwCfgContentError::BadPe(
            "file ends inside the optional header",
        ))?;
    if subsystem != PE_SUBSYSTEM_EFI_APPLICATION {
        return Err(FwCfgContentError::PeNotEfiApplication(subsystem));
    }
    Ok(())
}

impl KernelItems {
    /// Splits the bzImage `kernel` into setup and kernel, patches the setup
    /// header and computes the addresses, as QEMU does on a PC machine
    /// whose RAM below 4 GiB ends at `layout.low_ram_end()`.
    pub fn from_bzimage(
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
        cmdline: &str,
        layout: &MemoryLayout,
    ) -> Result<Self, FwCfgContentError> {
        if kernel.len() < HDR_END || u32_at(&kernel, HDR_MAGIC) != HDR_MAGIC_VALUE {
            return Err(FwCfgContentError::NotBzImage);
        }
        let protocol = u16_at(&kernel, HDR_VERSION);
        if protocol < 0x202 {
            return Err(FwCfgContentError::ProtocolTooOld(protocol));
        }
        if kernel[HDR_LOADFLAGS] & LOADED_HIGH == 0 {
            return Err(FwCfgContentError::NotLoadedHigh);
        }
        if cmdline.contains('\0') {
            return Err(FwCfgContentError::CmdlineNul);
        }
        let sects = match kernel[HDR_SETUP_SECTS] {
            0 => 4,
            n => usize::from(n),
        };
        let setup_size = (sects + 1) * SECTOR;
        if setup_size > kernel.len() {
            return Err(FwCfgContentError::SetupTooLarge {
                setup: setup_size,
                len: kernel.len(),
            });
        }
        len_u32("kernel", kernel.len())?;

        // Highest initrd address, as x86_load_linux computes it.
        let mut initrd_max = if protocol >= 0x20c
            && u16_at(&kernel, HDR_XLOADFLAGS) & XLF_CAN_BE_LOADED_ABOVE_4G != 0
        {
            u64::from(u32::MAX)
        } else if protocol >= 0x203 {
            u64::from(u32_at(&kernel, HDR_INITRD_ADDR_MAX))
        } else {
            0x37ff_ffff
        };
        let ram_limit = layout.low_ram_end().saturating_sub(ACPI_DATA_SIZE);
        if initrd_max >= ram_limit {
            initrd_max = ram_limit.saturating_sub(1);
        }

        // Keep one copy of the (large) kernel: copy the small setup out and
        // drop it from the front of the buffer in place.
        let mut setup = kernel[..setup_size].to_vec();
        let mut rest = kernel;
        rest.drain(..setup_size);
        setup[HDR_CMD_LINE_PTR..HDR_CMD_LINE_PTR + 4].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
        setup[HDR_TYPE_OF_LOADER] = LOADER_TYPE_QEMU;
        setup[HDR_LOADFLAGS] |= CAN_USE_HEAP;
        // cmdline_addr - real_addr - 0x200 = 0xfe00.
        let heap_end = (CMDLINE_ADDR - SETUP_ADDR - 0x200) as u16;
        setup[HDR_HEAP_END_PTR..HDR_HEAP_END_PTR + 2].copy_from_slice(&heap_end.to_le_bytes());

        let mut initrd_addr = 0u32;
        if let Some(data) = &initrd {
            let size = data.len() as u64;
            if size >= initrd_max {
                return Err(FwCfgContentError::InitrdTooLarge {
                    size,
                    max: initrd_max,
                });
            }
            // initrd_max < 2^32 and size < initrd_max.
            initrd_addr = ((initrd_max - size) & !0xfff) as u32;
            let size32 = size as u32;
            setup[HDR_RAMDISK_IMAGE..HDR_RAMDISK_IMAGE + 4]
                .copy_from_slice(&initrd_addr.to_le_bytes());
            setup[HDR_RAMDISK_SIZE..HDR_RAMDISK_SIZE + 4].copy_from_slice(&size32.to_le_bytes());
        }

        let mut cmdline_bytes = cmdline.as_bytes().to_vec();
        cmdline_bytes.push(0);
        len_u32("command line", cmdline_bytes.len())?;

        Ok(KernelItems {
            protocol,
            setup,
            kernel: rest,
            initrd,
            cmdline: cmdline_bytes,
            setup_addr: SETUP_ADDR,
            kernel_addr: KERNEL_ADDR,
            cmdline_addr: CMDLINE_ADDR,
            initrd_addr,
        })
    }

    /// The kernel items for `kernel` as OVMF starts it: a Linux bzImage
    /// (also one with an EFI stub, or a unified kernel image: as QEMU, the
    /// boot header wins) through [`KernelItems::from_bzimage`], any other
    /// x86-64 PE/COFF EFI application through
    /// [`KernelItems::from_efi_application`].
    pub fn for_firmware(
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
        cmdline: &str,
        layout: &MemoryLayout,
    ) -> Result<Self, FwCfgContentError> {
        if kernel.len() >= HDR_END && u32_at(&kernel, HDR_MAGIC) == HDR_MAGIC_VALUE {
            Self::from_bzimage(kernel, initrd, cmdline, layout)
        } else if kernel.starts_with(b"MZ") {
            Self::from_efi_application(kernel, initrd, cmdline)
        } else {
            Err(FwCfgContentError::NotBootable)
        }
    }

    /// The items of an EFI application: the whole file is the kernel
    /// (`SETUP_SIZE` 0; OVMF's `QemuKernelLoaderFsDxe` serves setup +
    /// kernel concatenated as its "kernel" file and `QemuLoadKernelImage`
    /// hands that to `LoadImage`), the command line becomes the image's
    /// load options, an initrd is offered as OVMF's "initrd" file and
    /// `LoadFile2` initrd device path. The PE headers are checked so that a
    /// file OVMF would not start (another CPU, a driver) is refused here
    /// with a reason instead of silently falling through to OVMF's shell.
    pub fn from_efi_application(
        image: Vec<u8>,
        initrd: Option<Vec<u8>>,
        cmdline: &str,
    ) -> Result<Self, FwCfgContentError> {
        check_efi_application(&image)?;
        if cmdline.contains('\0') {
            return Err(FwCfgContentError::CmdlineNul);
        }
        len_u32("EFI application", image.len())?;
        if let Some(i) = &initrd {
            len_u32("initrd", i.len())?;
        }
        let mut cmdline_bytes = cmdline.as_bytes().to_vec();
        cmdline_bytes.push(0);
        len_u32("command line", cmdline_bytes.len())?;
        Ok(KernelItems {
            protocol: 0,
            setup: Vec::new(),
            kernel: image,
            initrd,
            cmdline: cmdline_bytes,
            setup_addr: SETUP_ADDR,
            kernel_addr: KERNEL_ADDR,
            cmdline_addr: CMDLINE_ADDR,
            initrd_addr: 0,
        })
    }

    /// The items to add, as `(key, bytes)`; sizes and addresses are
    /// little-endian u32. Without an initrd the initrd items are left out
    /// (an absent item reads as size 0).
    pub fn items(&self) -> Vec<(u16, Vec<u8>)> {
        self.clone().into_items()
    }

    /// The fw_cfg items, moving the data out (no copy of the kernel).
    pub fn into_items(self) -> Vec<(u16, Vec<u8>)> {
        // Sizes were checked to fit in u32 when the items were built.
        let size = |len: usize| (len as u32).to_le_bytes().to_vec();
        let mut items = vec![
            (
                FW_CFG_CMDLINE_ADDR,
                self.cmdline_addr.to_le_bytes().to_vec(),
            ),
            (FW_CFG_CMDLINE_SIZE, size(self.cmdline.len())),
            (FW_CFG_CMDLINE_DATA, self.cmdline),
        ];
        if let Some(initrd) = self.initrd {
            items.push((FW_CFG_INITRD_ADDR, self.initrd_addr.to_le_bytes().to_vec()));
            items.push((FW_CFG_INITRD_SIZE, size(initrd.len())));
            items.push((FW_CFG_INITRD_DATA, initrd));
        }
        items.extend([
            (FW_CFG_KERNEL_ADDR, self.kernel_addr.to_le_bytes().to_vec()),
            (FW_CFG_KERNEL_SIZE, size(self.kernel.len())),
            (FW_CFG_KERNEL_DATA, self.kernel),
            (FW_CFG_SETUP_ADDR, self.setup_addr.to_le_bytes().to_vec()),
            (FW_CFG_SETUP_SIZE, size(self.setup.len())),
            (FW_CFG_SETUP_DATA, self.setup),
        ]);
        items
    }
}

#[cfg(test)]
mod tests {
    use arch::layout::{GIB, MIB};

    use super::*;

    #[test]
    fn bootorder_lists_the_disks_as_qemu_does() {
        assert_eq!(
            bootorder_file(&[(3, 0), (0x1a, 2)]),
            b"/pci@i0cf8/scsi@3/disk@0,0\n/pci@i0cf8/scsi@1a,2/disk@0,0\0".to_vec()
        );
        assert_eq!(bootorder_file(&[]), b"\0".to_vec());
    }

    fn item(items: &[(u16, Vec<u8>)], key: u16) -> Option<&[u8]> {
        items
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    fn u32_item(items: &[(u16, Vec<u8>)], key: u16) -> u32 {
        u32::from_le_bytes(item(items, key).unwrap().try_into().unwrap())
    }

    /// A synthetic bzImage: `sects` setup sectors, protocol `version`.
    fn bzimage(sects: u8, version: u16, payload: usize) -> Vec<u8> {
        let setup = (usize::from(if sects == 0 { 4 } else { sects }) + 1) * 512;
        let mut k: Vec<u8> = (0..setup + payload).map(|i| (i % 251) as u8).collect();
        k[HDR_SETUP_SECTS] = sects;
        k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        k[HDR_MAGIC..HDR_MAGIC + 4].copy_from_slice(b"HdrS");
        k[HDR_VERSION..HDR_VERSION + 2].copy_from_slice(&version.to_le_bytes());
        k[HDR_TYPE_OF_LOADER] = 0;
        k[HDR_LOADFLAGS] = LOADED_HIGH;
        k[HDR_INITRD_ADDR_MAX..HDR_INITRD_ADDR_MAX + 4]
            .copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[HDR_XLOADFLAGS..HDR_XLOADFLAGS + 2].copy_from_slice(&0u16.to_le_bytes());
        k
    }

    #[test]
    fn e820_file_is_the_firmware_map() {
        let l = MemoryLayout::new(8 * GIB).unwrap();
        let f = e820_file(&l);
        assert_eq!(f.len(), 2 * 20);
        assert_eq!(&f[..8], &0u64.to_le_bytes());
        assert_eq!(&f[8..16], &l.low_ram_end().to_le_bytes());
        assert_eq!(&f[16..20], &1u32.to_le_bytes());
        assert_eq!(&f[20..28], &(4 * GIB).to_le_bytes());
        let small = e820_file(&MemoryLayout::new(512 * MIB).unwrap());
        assert_eq!(small.len(), 20);
        assert_eq!(&small[8..16], &(512 * MIB).to_le_bytes());
    }

    #[test]
    fn bootorder_format() {
        assert_eq!(bootorder(&[]), b"");
        assert_eq!(
            bootorder(&["/pci@i0cf8/scsi@3/disk@0,0"]),
            b"/pci@i0cf8/scsi@3/disk@0,0\0"
        );
        assert_eq!(bootorder(&["/a", "/b"]), b"/a\n/b\0");
    }

    #[test]
    fn mmio64_and_cpus() {
        assert_eq!(pci_mmio64_mb(65536), b"65536");
        assert_eq!(pci_mmio64_mb(0), b"0");
        let [(k1, v1), (k2, v2)] = cpu_count_items(4, 8);
        assert_eq!((k1, v1.as_slice()), (0x05, &[4u8, 0][..]));
        assert_eq!((k2, v2.as_slice()), (0x0f, &[8u8, 0][..]));
        assert_eq!(cpu_count_item(2)[1].1, vec![2, 0]);
    }

    #[test]
    fn bzimage_split_and_items() {
        let layout = MemoryLayout::new(GIB).unwrap();
        let image = bzimage(27, 0x020f, 10_000);
        let initrd = vec![0x5a; 5000];
        let k = KernelItems::from_bzimage(
            image.clone(),
            Some(initrd.clone()),
            "console=ttyS0",
            &layout,
        )
        .unwrap();
        let setup_size = 28 * 512;
        assert_eq!(k.protocol, 0x020f);
        assert_eq!(k.setup.len(), setup_size);
        assert_eq!(k.kernel, image[setup_size..]);
        // setup + kernel is the original file except the patched header.
        let mut whole = k.setup.clone();
        whole.extend_from_slice(&k.kernel);
        let diff: Vec<usize> = (0..image.len()).filter(|&i| whole[i] != image[i]).collect();
        assert!(
            diff.iter().all(|&i| (0x210..0x230).contains(&i)),
            "{diff:x?}"
        );

        let items = k.items();
        assert_eq!(
            item(&items, FW_CFG_CMDLINE_DATA),
            Some(&b"console=ttyS0\0"[..])
        );
        assert_eq!(u32_item(&items, FW_CFG_CMDLINE_SIZE), 14);
        assert_eq!(u32_item(&items, FW_CFG_CMDLINE_ADDR), 0x20000);
        assert_eq!(u32_item(&items, FW_CFG_SETUP_ADDR), 0x10000);
        assert_eq!(u32_item(&items, FW_CFG_SETUP_SIZE), setup_size as u32);
        assert_eq!(u32_item(&items, FW_CFG_KERNEL_ADDR), 0x100000);
        assert_eq!(u32_item(&items, FW_CFG_KERNEL_SIZE), 10_000);
        assert_eq!(item(&items, FW_CFG_KERNEL_DATA), Some(&image[setup_size..]));
        assert_eq!(u32_item(&items, FW_CFG_INITRD_SIZE), 5000);
        assert_eq!(item(&items, FW_CFG_INITRD_DATA), Some(&initrd[..]));
        // 1 GiB of RAM: initrd_max = 1 GiB - 0x28000 - 1, page aligned down.
        let expect = ((GIB - ACPI_DATA_SIZE - 1 - 5000) & !0xfff) as u32;
        assert_eq!(u32_item(&items, FW_CFG_INITRD_ADDR), expect);

        // Patched header fields.
        let s = &k.setup;
        assert_eq!(s[HDR_TYPE_OF_LOADER], 0xb0);
        assert_eq!(s[HDR_LOADFLAGS], LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!(u16_at(s, HDR_HEAP_END_PTR), 0xfe00);
        assert_eq!(u32_at(s, HDR_CMD_LINE_PTR), 0x20000);
        assert_eq!(u32_at(s, HDR_RAMDISK_IMAGE), expect);
        assert_eq!(u32_at(s, HDR_RAMDISK_SIZE), 5000);
    }

    #[test]
    fn initrd_limits() {
        let layout = MemoryLayout::new(GIB).unwrap();
        // Header limit below the RAM limit.
        let mut image = bzimage(4, 0x0206, 100);
        image[HDR_INITRD_ADDR_MAX..HDR_INITRD_ADDR_MAX + 4]
            .copy_from_slice(&0x0100_0000u32.to_le_bytes());
        let k =
            KernelItems::from_bzimage(image.clone(), Some(vec![1; 0x1000]), "", &layout).unwrap();
        assert_eq!(k.initrd_addr, 0x0100_0000 - 0x1000);
        assert!(matches!(
            KernelItems::from_bzimage(image.clone(), Some(vec![1; 0x0100_0000]), "", &layout),
            Err(FwCfgContentError::InitrdTooLarge { .. })
        ));
        // XLF_CAN_BE_LOADED_ABOVE_4G: the RAM limit applies.
        let mut image = bzimage(4, 0x020c, 100);
        image[HDR_XLOADFLAGS] = XLF_CAN_BE_LOADED_ABOVE_4G as u8;
        let big = MemoryLayout::new(8 * GIB).unwrap();
        let k = KernelItems::from_bzimage(image.clone(), Some(vec![1; 10]), "", &big).unwrap();
        assert_eq!(
            u64::from(k.initrd_addr),
            (big.low_ram_end() - ACPI_DATA_SIZE - 1 - 10) & !0xfff
        );
        // No initrd: no initrd items, header untouched there.
        let k = KernelItems::from_bzimage(image.clone(), None, "x", &big).unwrap();
        let items = k.items();
        assert!(item(&items, FW_CFG_INITRD_SIZE).is_none());
        assert_eq!(
            u32_at(&k.setup, HDR_RAMDISK_IMAGE),
            u32_at(&image, HDR_RAMDISK_IMAGE)
        );
        assert_eq!(items.len(), 9);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let layout = MemoryLayout::new(GIB).unwrap();
        let image = bzimage(0, 0x0202, 700);
        let k = KernelItems::from_bzimage(image.clone(), None, "", &layout).unwrap();
        assert_eq!(k.setup.len(), 5 * 512);
        assert_eq!(k.kernel.len(), 700);
        assert_eq!(k.cmdline, b"\0");
    }

    #[test]
    fn rejects_non_bzimages() {
        let layout = MemoryLayout::new(GIB).unwrap();
        let from = |img: &[u8]| KernelItems::from_bzimage(img.to_vec(), None, "", &layout);
        assert_eq!(from(&[]), Err(FwCfgContentError::NotBzImage));
        assert_eq!(from(&[0u8; 0x1000]), Err(FwCfgContentError::NotBzImage));
        let elf = {
            let mut e = vec![0u8; 0x1000];
            e[..4].copy_from_slice(b"\x7fELF");
            e
        };
        assert_eq!(from(&elf), Err(FwCfgContentError::NotBzImage));
        assert_eq!(
            from(&bzimage(4, 0x0201, 10)),
            Err(FwCfgContentError::ProtocolTooOld(0x201))
        );
        let mut zimage = bzimage(4, 0x0204, 10);
        zimage[HDR_LOADFLAGS] = 0;
        assert_eq!(from(&zimage), Err(FwCfgContentError::NotLoadedHigh));
        let truncated = &bzimage(30, 0x020f, 0)[..0x1000];
        assert!(matches!(
            from(truncated),
            Err(FwCfgContentError::SetupTooLarge { .. })
        ));
        assert_eq!(
            KernelItems::from_bzimage(bzimage(4, 0x020f, 10), None, "a\0b", &layout),
            Err(FwCfgContentError::CmdlineNul)
        );
        // Exactly the setup, no kernel: accepted (empty kernel).
        assert_eq!(from(&bzimage(4, 0x020f, 0)).unwrap().kernel.len(), 0);
    }

    /// A minimal PE32+ image: MZ header, PE signature at 0x80, COFF header
    /// for `machine`, an optional header with `subsystem`.
    fn pe(machine: u16, subsystem: u16) -> Vec<u8> {
        let mut img: Vec<u8> = (0..4096).map(|i| (i % 253) as u8).collect();
        img[..2].copy_from_slice(b"MZ");
        img[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        img[0x80..0x84].copy_from_slice(b"PE\0\0");
        img[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
        img[0x98..0x9a].copy_from_slice(&PE32_PLUS_MAGIC.to_le_bytes());
        img[0x98 + 68..0x98 + 70].copy_from_slice(&subsystem.to_le_bytes());
        img
    }

    #[test]
    fn efi_application_is_the_whole_kernel_item() {
        let layout = MemoryLayout::new(GIB).unwrap();
        let app = pe(0x8664, 10);
        let k = KernelItems::for_firmware(app.clone(), None, "-v", &layout).unwrap();
        let items = k.items();
        assert_eq!(u32_item(&items, FW_CFG_SETUP_SIZE), 0);
        assert_eq!(item(&items, FW_CFG_SETUP_DATA), Some(&[][..]));
        assert_eq!(u32_item(&items, FW_CFG_KERNEL_SIZE), 4096);
        // Byte for byte: nothing is patched in a PE image.
        assert_eq!(item(&items, FW_CFG_KERNEL_DATA), Some(&app[..]));
        assert_eq!(item(&items, FW_CFG_CMDLINE_DATA), Some(&b"-v\0"[..]));
        assert!(item(&items, FW_CFG_INITRD_SIZE).is_none());
        // An initrd is offered as OVMF's initrd file.
        let k = KernelItems::for_firmware(app, Some(vec![7; 100]), "", &layout).unwrap();
        assert_eq!(u32_item(&k.items(), FW_CFG_INITRD_SIZE), 100);
        // A bzImage with an EFI stub (MZ and HdrS) is still a bzImage.
        let mut stub = bzimage(4, 0x020f, 100);
        stub[..2].copy_from_slice(b"MZ");
        let k = KernelItems::for_firmware(stub, None, "", &layout).unwrap();
        assert_eq!(k.protocol, 0x020f);
        assert_eq!(k.setup.len(), 5 * 512);
    }

    #[test]
    fn rejects_what_ovmf_would_not_start() {
        let layout = MemoryLayout::new(GIB).unwrap();
        let from = |img: Vec<u8>| KernelItems::for_firmware(img, None, "", &layout);
        assert_eq!(from(vec![0; 4096]), Err(FwCfgContentError::NotBootable));
        assert_eq!(
            from(b"\x7fELF".to_vec()),
            Err(FwCfgContentError::NotBootable)
        );
        assert_eq!(
            from(pe(0x014c, 10)),
            Err(FwCfgContentError::PeNotX64(0x14c))
        );
        assert_eq!(
            from(pe(0xaa64, 10)),
            Err(FwCfgContentError::PeNotX64(0xaa64))
        );
        let e = from(pe(0x8664, 11)).unwrap_err();
        assert_eq!(e, FwCfgContentError::PeNotEfiApplication(11));
        assert!(e.to_string().contains("EFI boot service driver"), "{e}");
        assert!(matches!(
            from(pe(0x8664, 3)),
            Err(FwCfgContentError::PeNotEfiApplication(3))
        ));
        // Truncated or lying headers.
        assert!(matches!(
            from(b"MZ".to_vec()),
            Err(FwCfgContentError::BadPe(_))
        ));
        let mut far = pe(0x8664, 10);
        far[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(from(far), Err(FwCfgContentError::BadPe(_))));
        let mut pe32 = pe(0x8664, 10);
        pe32[0x98..0x9a].copy_from_slice(&0x10bu16.to_le_bytes());
        assert!(matches!(from(pe32), Err(FwCfgContentError::BadPe(_))));
        assert!(matches!(
            from(pe(0x8664, 10)[..0x98 + 40].to_vec()),
            Err(FwCfgContentError::BadPe(_))
        ));
        assert_eq!(
            KernelItems::for_firmware(pe(0x8664, 10), None, "a\0", &layout),
            Err(FwCfgContentError::CmdlineNul)
        );
        // Any prefix of a valid image is refused, never a panic.
        let good = pe(0x8664, 10);
        for n in 0..0x98 + 70 {
            assert!(check_efi_application(&good[..n]).is_err(), "prefix {n}");
        }
        assert!(check_efi_application(&good[..0x98 + 70]).is_ok());
    }

    #[test]
    fn real_kernel_if_present() {
        // Best effort: a kernel from the testbed (or $TESSERA_TEST_KERNEL)
        // when one has been fetched, else a distribution kernel in /boot.
        let testbed =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testbed/l1/vmlinuz");
        let from_boot = || {
            std::fs::read_dir("/boot").ok().and_then(|d| {
                d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
                })
            })
        };
        let path = std::env::var_os("TESSERA_TEST_KERNEL")
            .map(std::path::PathBuf::from)
            .or_else(|| testbed.exists().then_some(testbed))
            .or_else(from_boot);
        let Some(path) = path else {
            return;
        };
        let Ok(image) = std::fs::read(&path) else {
            return;
        };
        let layout = MemoryLayout::new(GIB).unwrap();
        let k = KernelItems::from_bzimage(image.clone(), None, "console=ttyS0", &layout).unwrap();
        assert!(k.protocol >= 0x20c, "{path:?}");
        assert_eq!(k.setup.len() + k.kernel.len(), image.len());
        // The kernel part of a bzImage starts with the compressed payload's
        // 32/64-bit entry code; the setup ends on a sector boundary.
        assert_eq!(k.setup.len() % 512, 0);
    }
}
