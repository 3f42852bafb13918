//! Multiboot (version 1) kernels, as QEMU's `-kernel` loads them: the
//! header in the first 8 KiB, the image placed from its ELF32 program
//! headers or from the header's address fields (the "a.out kludge"), and
//! the boot information structure the kernel finds in EBX.
//! kvm-unit-tests' `.flat` images and many test kernels are multiboot ELF32
//! files. No I/O here: [`LoadPlan`] says what to copy where, [`boot_info`]
//! builds the structure for a given address.

/// Header magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What EAX holds at the entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
const SEARCH_LEN: usize = 8192;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Bits 0-15 a loader must understand: page-aligned modules (0), memory
/// information (1); bit 2 (video mode) is optional and ignored.
const REQUIRED_KNOWN: u32 = 0b011;

/// Boot information flags set by [`boot_info`].
const INFO_MEM: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// Errors from a multiboot image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultibootError {
    /// The header asks for something a loader must provide and Tessera does not.
    #[error(
        "multiboot header flags {0:#x} ask for features Tessera does not provide (only page-aligned modules and memory information)"
    )]
    UnsupportedFlags(u32),
    /// Neither the a.out kludge nor a usable ELF32 file.
    #[error("multiboot kernel is not an ELF32 x86 file and its header gives no load addresses")]
    NotElf32,
    /// Header or program headers point outside the file or are inconsistent.
    #[error("multiboot kernel: {0}")]
    Bad(&'static str),
}

/// A found header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Offset of the header in the file.
    pub offset: usize,
    /// Its flags.
    pub flags: u32,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The multiboot header of `image`, if it has one (4-byte aligned in the
/// first 8 KiB, magic + flags + checksum summing to 0).
pub fn find_header(image: &[u8]) -> Option<Header> {
    let end = image.len().min(SEARCH_LEN);
    (0..end.saturating_sub(11)).step_by(4).find_map(|off| {
        let magic = u32_at(image, off)?;
        let flags = u32_at(image, off + 4)?;
        let sum = u32_at(image, off + 8)?;
        (magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0)
            .then_some(Header { offset: off, flags })
    })
}

/// One piece of the image: `file[file_range]` copied to `addr`, then
/// `zero` bytes of zeros after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: u64,
    /// Bytes of the file.
    pub file_range: std::ops::Range<usize>,
    /// Zeroed bytes after them (BSS).
    pub zero: u64,
}

/// Where the image goes and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// The pieces.
    pub segments: Vec<Segment>,
    /// The entry point (32-bit protected mode, paging off).
    pub entry: u32,
}

impl LoadPlan {
    /// The end of the highest piece (BSS included).
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.addr + (s.file_range.len() as u64) + s.zero)
            .max()
            .unwrap_or(0)
    }
}

/// What to load for the multiboot kernel `image` with header `h`.
pub fn plan(image: &[u8], h: Header) -> Result<LoadPlan, MultibootError> {
    if h.flags & 0xffff & !REQUIRED_KNOWN & !0b100 != 0 {
        return Err(MultibootError::UnsupportedFlags(h.flags));
    }
    if h.flags & FLAG_AOUT_KLUDGE != 0 {
        return aout_plan(image, h);
    }
    elf32_plan(image)
}

fn aout_plan(image: &[u8], h: Header) -> Result<LoadPlan, MultibootError> {
    let f = |i: usize| {
        u32_at(image, h.offset + 12 + 4 * i).ok_or(MultibootError::Bad("header cut short"))
    };
    let (header_addr, load_addr, load_end, bss_end, entry) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
    if load_addr > header_addr {
        return Err(MultibootError::Bad("load_addr above header_addr"));
    }
    // The file offset that load_addr corresponds to.
    let start = (h.offset as u64)
        .checked_sub(u64::from(header_addr - load_addr))
        .ok_or(MultibootError::Bad(
            "header_addr - load_addr exceeds the header's offset",
        ))? as usize;
    let len = if load_end == 0 {
        image.len() - start
    } else {
        load_end
            .checked_sub(load_addr)
            .ok_or(MultibootError::Bad("load_end_addr below load_addr"))? as usize
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= image.len())
        .ok_or(MultibootError::Bad(
            "load_end_addr beyond the end of the file",
        ))?;
    let loaded_end = u64::from(load_addr) + len as u64;
    let zero = if bss_end == 0 {
        0
    } else {
        u64::from(bss_end)
            .checked_sub(loaded_end)
            .ok_or(MultibootError::Bad("bss_end_addr below load_end_addr"))?
    };
    Ok(LoadPlan {
        segments: vec![Segment {
            addr: u64::from(load_addr),
            file_range: start..end,
            zero,
        }],
        entry,
    })
}

fn elf32_plan(image: &[u8]) -> Result<LoadPlan, MultibootError> {
    // ELF32, little endian, x86 (EM_386), executable.
    if image.get(..4) != Some(b"\x7fELF") || image.get(4) != Some(&1) || image.get(5) != Some(&1) {
        return Err(MultibootError::NotElf32);
    }
    if u16_at(image, 18) != Some(3) {
        return Err(MultibootError::NotElf32);
    }
    let bad = MultibootError::Bad;
    let entry = u32_at(image, 24).ok_or(bad("ELF header cut short"))?;
    let phoff = u32_at(image, 28).ok_or(bad("ELF header cut short"))? as usize;
    let phentsize = usize::from(u16_at(image, 42).ok_or(bad("ELF header cut short"))?);
    let phnum = usize::from(u16_at(image, 44).ok_or(bad("ELF header cut short"))?);
    if phentsize < 32 || phnum == 0 {
        return Err(bad("no program headers"));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or(bad("program header table out of the file"))?;
        let field =
            |k: usize| u32_at(image, ph + 4 * k).ok_or(bad("program header table out of the file"));
        // p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz
        if field(0)? != 1 {
            continue; // not PT_LOAD
        }
        let (offset, paddr, filesz, memsz) =
            (field(1)? as usize, field(3)?, field(4)? as usize, field(5)?);
        let end = offset
            .checked_add(filesz)
            .filter(|&e| e <= image.len())
            .ok_or(bad("a segment runs past the end of the file"))?;
        let zero = u64::from(memsz)
            .checked_sub(filesz as u64)
            .ok_or(bad("a segment's memory size is below its file size"))?;
        if u64::from(paddr) + u64::from(memsz) > 1 << 32 {
            return Err(bad("a segment ends above 4 GiB"));
        }
        segments.push(Segment {
            addr: u64::from(paddr),
            file_range: offset..end,
            zero,
        });
    }
    if segments.is_empty() {
        return Err(bad("no loadable segment"));
    }
    Ok(LoadPlan { segments, entry })
}

/// A module (the initrd) already placed in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

/// The boot information structure and what it points to, to be written at
/// guest address `at`: the 116-byte info, the memory map (`ram`: (base,
/// length) of usable RAM, everything else reserved by omission), the
/// command line, the loader name and the module list. `mem_lower` and
/// `mem_upper` are the KiB of RAM below 640 KiB and contiguous above
/// 1 MiB, as QEMU computes them.
pub fn boot_info(at: u32, ram: &[(u64, u64)], cmdline: &str, module: Option<Module>) -> Vec<u8> {
    const INFO_LEN: usize = 116;
    let mut out = vec![0u8; INFO_LEN];
    let put =
        |out: &mut Vec<u8>, off: usize, v: u32| out[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let addr_of = |out: &Vec<u8>| at + out.len() as u32;
    let mut flags = INFO_MEM | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME;

    let lower = ram
        .iter()
        .find(|(b, _)| *b == 0)
        .map_or(0, |(_, l)| (*l).min(0xa0000) / 1024);
    let upper = ram
        .iter()
        .find(|(b, l)| *b <= 0x10_0000 && b + l > 0x10_0000)
        .map_or(0, |(b, l)| (b + l - 0x10_0000) / 1024);
    put(&mut out, 4, lower as u32);
    put(&mut out, 8, upper.min(u64::from(u32::MAX)) as u32);

    // memory map: {size = 20, base u64, length u64, type u32}
    let mmap_addr = addr_of(&out);
    for (base, len) in ram {
        out.extend_from_slice(&20u32.to_le_bytes());
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    let mmap_len = addr_of(&out) - mmap_addr;
    put(&mut out, 44, mmap_len);
    put(&mut out, 48, mmap_addr);

    let cmdline_addr = addr_of(&out);
    out.extend_from_slice(cmdline.as_bytes());
    out.push(0);
    put(&mut out, 16, cmdline_addr);

    let name_addr = addr_of(&out);
    out.extend_from_slice(b"tessera\0");
    put(&mut out, 64, name_addr);

    if let Some(m) = module {
        while out.len() % 4 != 0 {
            out.push(0);
        }
        let mods_addr = addr_of(&out);
        // {mod_start, mod_end, string, reserved}: the string is the
        // command line's empty tail.
        for v in [m.start, m.end, name_addr + 7, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put(&mut out, 20, 1);
        put(&mut out, 24, mods_addr);
        flags |= INFO_MODS;
    }
    put(&mut out, 0, flags);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(flags: u32, at: usize, len: usize) -> Vec<u8> {
        let mut img = vec![0u8; len];
        img[at..at + 4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        img[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        img[at + 8..at + 12]
            .copy_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)).to_le_bytes());
        img
    }

    /// A minimal ELF32 with two PT_LOAD segments, like kvm-unit-tests'.
    fn elf32() -> Vec<u8> {
        let mut e = vec![0u8; 0x3000];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 1;
        e[5] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes());
        e[18..20].copy_from_slice(&3u16.to_le_bytes());
        e[24..28].copy_from_slice(&0x4000bcu32.to_le_bytes());
        e[28..32].copy_from_slice(&0x34u32.to_le_bytes());
        e[42..44].copy_from_slice(&32u16.to_le_bytes());
        e[44..46].copy_from_slice(&3u16.to_le_bytes());
        let ph = |e: &mut Vec<u8>, i: usize, v: [u32; 6]| {
            for (k, x) in v.iter().enumerate() {
                let o = 0x34 + 32 * i + 4 * k;
                e[o..o + 4].copy_from_slice(&x.to_le_bytes());
            }
        };
        ph(&mut e, 0, [1, 0xb0, 0x4000b0, 0x4000b0, 0x1000, 0x1000]);
        ph(&mut e, 1, [4, 0, 0, 0, 0, 0]); // PT_NOTE: skipped
        ph(&mut e, 2, [1, 0x2000, 0x409000, 0x409000, 0x800, 0x10000]);
        // the header right after the program headers
        e[0xb0..0xb4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        e[0xb8..0xbc].copy_from_slice(&0u32.wrapping_sub(HEADER_MAGIC).to_le_bytes());
        e
    }

    #[test]
    fn elf32_images_load_by_their_program_headers() {
        let img = elf32();
        let h = find_header(&img).unwrap();
        assert_eq!(
            h,
            Header {
                offset: 0xb0,
                flags: 0
            }
        );
        let p = plan(&img, h).unwrap();
        assert_eq!(p.entry, 0x4000bc);
        assert_eq!(
            p.segments,
            vec![
                Segment {
                    addr: 0x4000b0,
                    file_range: 0xb0..0x10b0,
                    zero: 0
                },
                Segment {
                    addr: 0x409000,
                    file_range: 0x2000..0x2800,
                    zero: 0xf800
                },
            ]
        );
        assert_eq!(p.end(), 0x419000);
    }

    #[test]
    fn aout_kludge_uses_the_header_addresses() {
        let mut img = with_header(FLAG_AOUT_KLUDGE | 0b11, 0x40, 0x2000);
        // header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr
        for (i, v) in [0x10_0040u32, 0x10_0000, 0x10_1800, 0x10_4000, 0x10_0100]
            .iter()
            .enumerate()
        {
            img[0x4c + 4 * i..0x50 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        let p = plan(&img, find_header(&img).unwrap()).unwrap();
        assert_eq!(p.entry, 0x10_0100);
        assert_eq!(
            p.segments,
            vec![Segment {
                addr: 0x10_0000,
                file_range: 0..0x1800,
                zero: 0x2800
            }]
        );
        // load_end 0: the rest of the file; bss_end 0: no BSS.
        img[0x54..0x5c].fill(0);
        let p = plan(&img, find_header(&img).unwrap()).unwrap();
        assert_eq!(p.segments[0].file_range, 0..0x2000);
        assert_eq!(p.segments[0].zero, 0);
    }

    #[test]
    fn refusals() {
        assert_eq!(find_header(&[0u8; 100]), None);
        assert_eq!(find_header(&with_header(0, 2, 64)), None, "unaligned");
        let mut bad_sum = with_header(0, 0, 64);
        bad_sum[8] ^= 1;
        assert_eq!(find_header(&bad_sum), None);
        assert_eq!(
            find_header(&with_header(0, SEARCH_LEN, SEARCH_LEN + 64)),
            None,
            "beyond 8 KiB"
        );
        // video mode wanted: fine (ignored); an unknown required bit: refused.
        let img = with_header(1 << 5, 0, 64);
        assert!(matches!(
            plan(&img, find_header(&img).unwrap()),
            Err(MultibootError::UnsupportedFlags(_))
        ));
        let img = with_header(0, 0, 64);
        assert_eq!(
            plan(&img, find_header(&img).unwrap()),
            Err(MultibootError::NotElf32)
        );
        // a.out fields that point outside the file
        let mut img = with_header(FLAG_AOUT_KLUDGE, 0x40, 0x100);
        for (i, v) in [0x1040u32, 0x1000, 0x9000, 0, 0x1000].iter().enumerate() {
            img[0x4c + 4 * i..0x50 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        assert!(matches!(
            plan(&img, find_header(&img).unwrap()),
            Err(MultibootError::Bad(_))
        ));
        // every prefix of a good ELF is refused or planned, never a panic
        let good = elf32();
        for n in 0..0x200 {
            if let Some(h) = find_header(&good[..n]) {
                let _ = plan(&good[..n], h);
            }
        }
        // a segment past the end of the file
        let mut e = elf32();
        e[0x34 + 64 + 16..0x34 + 64 + 20].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(matches!(
            plan(&e, find_header(&e).unwrap()),
            Err(MultibootError::Bad(_))
        ));
    }

    #[test]
    fn boot_info_layout() {
        let ram = [(0u64, 0x9fc00u64), (0x10_0000, 0x7f0_0000)];
        let at = 0x9000;
        let b = boot_info(
            at,
            &ram,
            "console=x",
            Some(Module {
                start: 0x80_0000,
                end: 0x80_1000,
            }),
        );
        let u = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(
            u(0),
            INFO_MEM | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME | INFO_MODS
        );
        assert_eq!(u(4), 0x9fc00 / 1024);
        assert_eq!(u(8), 0x7f0_0000 / 1024);
        assert_eq!(u(44), 48, "two 24-byte entries");
        let mmap = (u(48) - at) as usize;
        assert_eq!(u(mmap), 20);
        assert_eq!(
            u64::from_le_bytes(b[mmap + 28..mmap + 36].try_into().unwrap()),
            0x10_0000
        );
        let cl = (u(16) - at) as usize;
        assert_eq!(&b[cl..cl + 10], b"console=x\0");
        assert_eq!(u(20), 1);
        let m = (u(24) - at) as usize;
        assert_eq!((u(m), u(m + 4)), (0x80_0000, 0x80_1000));
        assert_eq!(u(24) % 4, 0);
        let plain = boot_info(at, &ram, "", None);
        assert_eq!(
            u32::from_le_bytes(plain[0..4].try_into().unwrap()) & INFO_MODS,
            0
        );
    }
}
