//! Direct kernel boot: load the kernel, initrd and command line into guest
//! memory and describe how the boot vCPU must start.
//!
//! A bzImage boots through the Linux 64-bit boot protocol (zero page,
//! entry at `startup_64`). An ELF image carrying a Xen PVH note boots
//! through PVH (32-bit protected mode, `hvm_start_info`); an ELF vmlinux
//! without the note boots through the 64-bit protocol at its entry point.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use arch::e820::E820Entry;
use arch::layout::{self, MemoryLayout};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{
    BzImage, Cmdline, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::config::{format_size, io_reason};

/// Kernel loading errors.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be read.
    #[error("kernel '{}': {}", .0.display(), .1)]
    KernelFile(std::path::PathBuf, String),
    /// The initrd file cannot be read.
    #[error("initrd '{}': {}", .0.display(), .1)]
    InitrdFile(std::path::PathBuf, String),
    /// Neither bzImage nor ELF.
    #[error("kernel '{}' is not a Linux kernel image (neither a bzImage nor an ELF vmlinux): pass the file the distribution installs as /boot/vmlinuz-*", .0.display())]
    NotAKernel(std::path::PathBuf),
    /// The image is a kernel we cannot boot.
    #[error("kernel '{}' cannot be booted: {}", .0.display(), .1)]
    Unbootable(std::path::PathBuf, String),
    /// Kernel + initrd do not fit.
    #[error("--memory {} is too small for this kernel and initrd: they need at least {} (use --memory {} or more)", format_size(*have), format_size(*need), format_size(round_up_mib(*need)))]
    TooSmall {
        /// Guest RAM.
        have: u64,
        /// What is needed.
        need: u64,
    },
    /// Command line too long.
    #[error("--cmdline is {len} bytes, more than the {max} this kernel accepts")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Writing boot structures into guest memory failed.
    #[error("cannot write {0} into guest memory: {1}")]
    Write(&'static str, String),
}

fn round_up_mib(n: u64) -> u64 {
    let step = 64 << 20;
    n.div_ceil(step) * step
}

/// How the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// 64-bit Linux boot protocol: long mode at `entry`, RSI = zero page.
    Linux64 {
        /// Entry point (`startup_64`).
        entry: u64,
        /// Zero page address.
        zero_page: u64,
    },
    /// PVH: 32-bit protected mode at `entry`, EBX = start info.
    Pvh {
        /// PVH entry point.
        entry: u64,
        /// hvm_start_info address.
        start_info: u64,
    },
    /// Multiboot v1: 32-bit protected mode at `entry`, EAX = the
    /// bootloader magic, EBX = the boot information.
    Multiboot {
        /// Entry point.
        entry: u64,
        /// Boot information address.
        info: u64,
    },
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const LOADFLAGS_CAN_USE_HEAP: u8 = 0x80;
const HEAP_END_PTR: u16 = 0xfe00;
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const PAGE: u64 = 4096;

/// Load `kernel` (and `initrd`, `cmdline`) for a direct boot.
/// `rsdp` is where the ACPI RSDP was placed.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    rsdp: u64,
) -> Result<BootEntry, BootError> {
    let mut file =
        File::open(kernel).map_err(|e| BootError::KernelFile(kernel.into(), io_reason(&e)))?;
    let kernel_size = file
        .metadata()
        .map_err(|e| BootError::KernelFile(kernel.into(), io_reason(&e)))?
        .len();
    let too_small = |need: u64| BootError::TooSmall {
        have: layout.ram_size(),
        need,
    };
    // Cheap early check: the image alone must fit above 1 MiB.
    if layout::HIMEM_START + kernel_size > layout.low_ram_end() {
        return Err(too_small(layout::HIMEM_START + kernel_size + (16 << 20)));
    }
    // A multiboot kernel (not a bzImage, a multiboot header in its first
    // 8 KiB), as QEMU's -kernel tells them apart.
    let mut head = Vec::with_capacity(8192);
    (&mut file)
        .take(8192)
        .read_to_end(&mut head)
        .map_err(|e| BootError::KernelFile(kernel.into(), io_reason(&e)))?;
    let is_bzimage = head.get(0x202..0x206) == Some(b"HdrS");
    if !is_bzimage && let Some(h) = firmware::multiboot::find_header(&head) {
        return load_multiboot(mem, layout, kernel, h, initrd, cmdline);
    }
    file.rewind()
        .map_err(|e| BootError::KernelFile(kernel.into(), io_reason(&e)))?;
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let loaded = match Elf::load(mem, None, &mut file, himem) {
        Ok(r) => r,
        Err(e) if not_elf(&e) => BzImage::load(mem, None, &mut file, himem).map_err(|e| {
            if not_bzimage(&e) {
                BootError::NotAKernel(kernel.into())
            } else {
                BootError::Unbootable(kernel.into(), e.to_string())
            }
        })?,
        Err(e) => return Err(BootError::Unbootable(kernel.into(), e.to_string())),
    };
    // Linux decompresses in place and needs init_size bytes from its load address.
    let init_size = loaded
        .setup_header
        .map(|h| u64::from(h.init_size))
        .unwrap_or(0);
    let kernel_end = (loaded.kernel_load.0 + init_size).max(loaded.kernel_end);

    let hdr = loaded.setup_header;
    let cmdline_max = hdr
        .map(|h| h.cmdline_size as usize)
        .filter(|&n| n > 0)
        .unwrap_or(2048)
        .min(layout::CMDLINE_MAX_SIZE as usize - 1);
    if cmdline.len() > cmdline_max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: cmdline_max,
        });
    }
    let mut cl = Cmdline::new(layout::CMDLINE_MAX_SIZE as usize)
        .map_err(|e| BootError::Write("the command line", e.to_string()))?;
    if !cmdline.is_empty() {
        cl.insert_str(cmdline)
            .map_err(|e| BootError::Write("the command line", e.to_string()))?;
    }
    linux_loader::loader::load_cmdline(mem, GuestAddress(layout::CMDLINE_START), &cl)
        .map_err(|e| BootError::Write("the command line", e.to_string()))?;

    let initrd_max = hdr
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m != 0)
        .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
    let initrd_placed = match initrd {
        Some(path) => Some(load_initrd(mem, layout, path, initrd_max, kernel_end)?),
        None => {
            if kernel_end > layout.low_ram_end() {
                return Err(too_small(kernel_end + (16 << 20)));
            }
            None
        }
    };

    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            setup_pvh(mem, layout, initrd_placed, rsdp)?;
            Ok(BootEntry::Pvh {
                entry: entry.0,
                start_info: layout::PVH_INFO_START,
            })
        }
        _ => {
            setup_zero_page(mem, layout, &loaded, cmdline.len(), initrd_placed, rsdp)?;
            // bzImage: startup_64 sits 0x200 past the 32-bit entry.
            let entry = if hdr.is_some() {
                loaded.kernel_load.0 + 0x200
            } else {
                loaded.kernel_load.0
            };
            Ok(BootEntry::Linux64 {
                entry,
                zero_page: layout::ZERO_PAGE_START,
            })
        }
    }
}

/// Where the multiboot information goes (the command-line area, unused
/// otherwise by a multiboot boot).
const MULTIBOOT_INFO: u64 = layout::CMDLINE_START;

/// Load a multiboot kernel: its segments, the initrd as its one module
/// (page-aligned, at the top of RAM below 4 GiB), the boot information
/// with the guest's RAM map and command line.
fn load_multiboot(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    kernel: &Path,
    header: firmware::multiboot::Header,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<BootEntry, BootError> {
    let image =
        std::fs::read(kernel).map_err(|e| BootError::KernelFile(kernel.into(), io_reason(&e)))?;
    let plan = firmware::multiboot::plan(&image, header)
        .map_err(|e| BootError::Unbootable(kernel.into(), e.to_string()))?;
    let end = plan.end();
    if end > layout.low_ram_end() {
        return Err(BootError::TooSmall {
            have: layout.ram_size(),
            need: end + (16 << 20),
        });
    }
    for seg in &plan.segments {
        if seg.addr < layout::HIMEM_START
            && seg.addr + seg.file_range.len() as u64 + seg.zero > MULTIBOOT_INFO
        {
            return Err(BootError::Unbootable(
                kernel.into(),
                format!(
                    "a segment at {:#x} overlaps the boot information at {MULTIBOOT_INFO:#x}",
                    seg.addr
                ),
            ));
        }
        mem.write_slice(&image[seg.file_range.clone()], GuestAddress(seg.addr))
            .map_err(|e| BootError::Write("the multiboot kernel", e.to_string()))?;
        let zero_at = seg.addr + seg.file_range.len() as u64;
        let zeros = vec![0u8; seg.zero as usize];
        mem.write_slice(&zeros, GuestAddress(zero_at))
            .map_err(|e| BootError::Write("the multiboot kernel's BSS", e.to_string()))?;
    }
    let module = match initrd {
        Some(p) => {
            let (start, size) = load_initrd(mem, layout, p, u64::from(u32::MAX), end)?;
            Some(firmware::multiboot::Module {
                start: start as u32,
                end: (start + size) as u32,
            })
        }
        None => None,
    };
    if cmdline.len() as u64 > layout::CMDLINE_MAX_SIZE - 4096 {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: (layout::CMDLINE_MAX_SIZE - 4096) as usize,
        });
    }
    let ram: Vec<(u64, u64)> = e820_entries(layout)
        .iter()
        .filter(|e| e.kind == arch::e820::E820Type::Ram)
        .map(|e| (e.addr, e.size))
        .collect();
    let info = firmware::multiboot::boot_info(MULTIBOOT_INFO as u32, &ram, cmdline, module);
    mem.write_slice(&info, GuestAddress(MULTIBOOT_INFO))
        .map_err(|e| BootError::Write("the multiboot information", e.to_string()))?;
    Ok(BootEntry::Multiboot {
        entry: u64::from(plan.entry),
        info: MULTIBOOT_INFO,
    })
}

/// The file is not an ELF image at all (as opposed to a broken one).
fn not_elf(e: &linux_loader::loader::Error) -> bool {
    use linux_loader::loader::elf::Error as E;
    matches!(
        e,
        linux_loader::loader::Error::Elf(
            E::InvalidElfMagicNumber | E::ReadElfHeader | E::SeekElfStart
        )
    )
}

/// The file is not a bzImage at all (too short, no `HdrS` magic).
fn not_bzimage(e: &linux_loader::loader::Error) -> bool {
    use linux_loader::loader::bzimage::Error as B;
    matches!(
        e,
        linux_loader::loader::Error::Bzimage(
            B::InvalidBzImage | B::ReadBzImageHeader | B::SeekBzImageHeader | B::Underflow
        )
    )
}

/// Put the initrd as high as the kernel allows, page-aligned, above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    path: &Path,
    initrd_addr_max: u64,
    kernel_end: u64,
) -> Result<(u64, u64), BootError> {
    let mut f = File::open(path).map_err(|e| BootError::InitrdFile(path.into(), io_reason(&e)))?;
    let size = f
        .metadata()
        .map_err(|e| BootError::InitrdFile(path.into(), io_reason(&e)))?
        .len();
    let top = layout.low_ram_end().min(initrd_addr_max.saturating_add(1));
    let need = kernel_end.div_ceil(PAGE) * PAGE + size + (16 << 20);
    let start = top
        .checked_sub(size)
        .map(|s| s & !(PAGE - 1))
        .filter(|&s| s >= kernel_end)
        .ok_or(BootError::TooSmall {
            have: layout.ram_size(),
            need,
        })?;
    mem.read_exact_volatile_from(GuestAddress(start), &mut f, size as usize)
        .map_err(|e| BootError::InitrdFile(path.into(), e.to_string()))?;
    Ok((start, size))
}

fn e820_entries(layout: &MemoryLayout) -> Vec<E820Entry> {
    arch::e820::direct_boot_map(layout)
}

fn setup_zero_page(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    loaded: &KernelLoaderResult,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = loaded.setup_header {
        params.hdr = hdr;
    } else {
        params.hdr = setup_header {
            kernel_alignment: KERNEL_MIN_ALIGNMENT_BYTES,
            ..Default::default()
        };
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.loadflags |= LOADFLAGS_CAN_USE_HEAP;
    params.hdr.heap_end_ptr = HEAP_END_PTR;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32 + 1;
    if let Some((start, size)) = initrd {
        params.hdr.ramdisk_image = start as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp;
    let entries = e820_entries(layout);
    if entries.len() > params.e820_table.len() {
        return Err(BootError::Write("the e820 map", "too many entries".into()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&entries) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = entries.len() as u8;
    let bp = BootParams::new::<boot_params>(&params, GuestAddress(layout::ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem)
        .map_err(|e| BootError::Write("the zero page", e.to_string()))
}

fn setup_pvh(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<(), BootError> {
    let entries = e820_entries(layout);
    let info_size = std::mem::size_of::<hvm_start_info>() as u64;
    let memmap_addr = (layout::PVH_INFO_START + info_size).next_multiple_of(8);
    let memmap_size = (entries.len() * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
    let modlist_addr = (memmap_addr + memmap_size).next_multiple_of(8);
    if modlist_addr + std::mem::size_of::<hvm_modlist_entry>() as u64 > layout::ZERO_PAGE_START {
        return Err(BootError::Write(
            "the PVH start info",
            "too many memory map entries".into(),
        ));
    }
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() { modlist_addr } else { 0 },
        cmdline_paddr: layout::CMDLINE_START,
        rsdp_paddr: rsdp,
        memmap_paddr: memmap_addr,
        memmap_entries: entries.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new::<hvm_start_info>(&info, GuestAddress(layout::PVH_INFO_START));
    for (i, e) in entries.iter().enumerate() {
        // The first entry fixes the table's address; the rest follow it.
        let at = (i == 0).then_some(GuestAddress(memmap_addr));
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        };
        params
            .add_section::<hvm_memmap_table_entry>(&entry, at)
            .map_err(|e| BootError::Write("the PVH memory map", e.to_string()))?;
    }
    if let Some((start, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr: start,
            size,
            ..Default::default()
        };
        params
            .add_module::<hvm_modlist_entry>(&module, Some(GuestAddress(modlist_addr)))
            .map_err(|e| BootError::Write("the PVH module list", e.to_string()))?;
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| BootError::Write("the PVH start info", e.to_string()))
}

/// Copy a raw test image into guest memory.
pub fn load_raw(mem: &GuestMemoryMmap, image: &[u8], addr: u64) -> Result<(), BootError> {
    mem.write_slice(image, GuestAddress(addr))
        .map_err(|e| BootError::Write("the raw image", e.to_string()))
}
