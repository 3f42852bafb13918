//! Minimal kernel images built in memory for the boot-protocol tests: a
//! bzImage and a PVH ELF whose "kernel" is a few hand-assembled
//! instructions. They go through exactly the loaders a real kernel does.

use std::io::Write;
use std::path::PathBuf;

/// Where both images load (the conventional 1 MiB).
pub const LOAD_ADDR: u64 = 0x10_0000;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A bzImage (boot protocol 2.15, 64-bit capable) whose protected-mode part
/// holds `startup_64` at +0x200, as Linux's does. The 32-bit entry at +0
/// is `hlt`s: Tessera must enter at +0x200 in long mode.
pub fn bzimage(startup_64: &[u8]) -> Vec<u8> {
    const SETUP_SECTS: u8 = 1;
    let mut img = vec![0u8; (usize::from(SETUP_SECTS) + 1) * 512];
    img[0x1f1] = SETUP_SECTS;
    put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(&mut img, 0x202, b"HdrS"); // header magic
    put(&mut img, 0x206, &0x020fu16.to_le_bytes()); // version 2.15
    img[0x211] = 0x01; // loadflags: LOADED_HIGH
    put(&mut img, 0x214, &(LOAD_ADDR as u32).to_le_bytes()); // code32_start
    put(&mut img, 0x22c, &0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut img, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut img, 0x236, &1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut img, 0x238, &2048u32.to_le_bytes()); // cmdline_size
    put(&mut img, 0x260, &0x10_0000u32.to_le_bytes()); // init_size
    let mut pm = vec![0xf4u8; 0x200];
    pm.extend_from_slice(startup_64);
    img.extend_from_slice(&pm);
    img
}

/// An ELF64 executable loading `code32` at [`LOAD_ADDR`], with a Xen PVH
/// note (XEN_ELFNOTE_PHYS32_ENTRY) pointing at its first byte.
pub fn pvh_elf(code32: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const NOTE_OFF: usize = EHDR + 2 * PHDR;
    const CODE_OFF: usize = 0x1000;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(LOAD_ADDR as u32).to_le_bytes());

    let mut img = vec![0u8; CODE_OFF];
    put(&mut img, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1]); // ELF64, LE, v1
    put(&mut img, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut img, 18, &0x3eu16.to_le_bytes()); // x86-64
    put(&mut img, 20, &1u32.to_le_bytes());
    put(&mut img, 24, &LOAD_ADDR.to_le_bytes()); // e_entry
    put(&mut img, 32, &(EHDR as u64).to_le_bytes()); // e_phoff
    put(&mut img, 52, &(EHDR as u16).to_le_bytes());
    put(&mut img, 54, &(PHDR as u16).to_le_bytes());
    put(&mut img, 56, &2u16.to_le_bytes()); // e_phnum
    // PT_LOAD
    let load = EHDR;
    put(&mut img, load, &1u32.to_le_bytes());
    put(&mut img, load + 4, &5u32.to_le_bytes()); // R+X
    put(&mut img, load + 8, &(CODE_OFF as u64).to_le_bytes());
    put(&mut img, load + 16, &LOAD_ADDR.to_le_bytes());
    put(&mut img, load + 24, &LOAD_ADDR.to_le_bytes());
    put(&mut img, load + 32, &(code32.len() as u64).to_le_bytes());
    put(&mut img, load + 40, &(code32.len() as u64).to_le_bytes());
    put(&mut img, load + 48, &0x1000u64.to_le_bytes());
    // PT_NOTE
    let n = EHDR + PHDR;
    put(&mut img, n, &4u32.to_le_bytes());
    put(&mut img, n + 8, &(NOTE_OFF as u64).to_le_bytes());
    put(&mut img, n + 32, &(note.len() as u64).to_le_bytes());
    put(&mut img, n + 40, &(note.len() as u64).to_le_bytes());
    put(&mut img, n + 48, &4u64.to_le_bytes());
    put(&mut img, NOTE_OFF, &note);
    img.extend_from_slice(code32);
    img
}

/// A multiboot (v1) ELF32 executable, as kvm-unit-tests' `.flat` images
/// are: `code32` loaded at [`LOAD_ADDR`] (followed by 4 KiB of BSS), the
/// multiboot header (flags 0: the ELF program headers say where to load)
/// at offset 0x60.
pub fn multiboot_elf32(code32: &[u8]) -> Vec<u8> {
    const CODE_OFF: usize = 0x1000;
    let mut img = vec![0u8; CODE_OFF];
    put(&mut img, 0, &[0x7f, b'E', b'L', b'F', 1, 1, 1]); // ELF32, LE, v1
    put(&mut img, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut img, 18, &3u16.to_le_bytes()); // EM_386
    put(&mut img, 20, &1u32.to_le_bytes());
    put(&mut img, 24, &(LOAD_ADDR as u32).to_le_bytes()); // e_entry
    put(&mut img, 28, &52u32.to_le_bytes()); // e_phoff
    put(&mut img, 40, &52u16.to_le_bytes());
    put(&mut img, 42, &32u16.to_le_bytes());
    put(&mut img, 44, &1u16.to_le_bytes()); // e_phnum
    // PT_LOAD: p_type p_offset p_vaddr p_paddr p_filesz p_memsz p_flags p_align
    for (i, v) in [
        1u32,
        CODE_OFF as u32,
        LOAD_ADDR as u32,
        LOAD_ADDR as u32,
        code32.len() as u32,
        code32.len() as u32 + 0x1000,
        5,
        0x1000,
    ]
    .iter()
    .enumerate()
    {
        put(&mut img, 52 + 4 * i, &v.to_le_bytes());
    }
    let magic = 0x1bad_b002u32;
    put(&mut img, 0x60, &magic.to_le_bytes());
    put(&mut img, 0x68, &0u32.wrapping_sub(magic).to_le_bytes());
    img.extend_from_slice(code32);
    img
}

/// Write `bytes` to a fresh file in the target directory's temp area.
pub fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create image");
    f.write_all(bytes).expect("write image");
    path
}
