//! Boot register state, GDT and page tables, as plain data.
//!
//! Four entry states are provided:
//!
//! | Entry            | sregs                      | regs                 | memory to write            |
//! |------------------|----------------------------|----------------------|----------------------------|
//! | Linux 64-bit     | [`long_mode_sregs`]        | [`long_mode_regs`]   | [`long_mode_boot_data`]    |
//! | PVH (32-bit)     | [`protected_mode_sregs`]   | [`pvh_regs`]         | [`pvh_boot_data`]          |
//! | real-mode test   | [`real_mode_sregs`]        | [`real_mode_regs`]   | none                       |
//! | firmware (reset) | [`firmware_reset_sregs`]   | [`firmware_reset_regs`] | none                    |
//!
//! Both GDTs live at [`BOOT_GDT_START`] and use the same selectors
//! ([`CODE_SELECTOR`] 0x08, [`DATA_SELECTOR`] 0x10, [`TSS_SELECTOR`] 0x18);
//! they differ only in the code segment: 64-bit in [`BOOT_GDT`], 32-bit in
//! [`PVH_GDT`]. Four 8-byte entries is all that fits below the IDT at
//! [`BOOT_IDT_START`], so the two tables are alternatives, not one table.
//!
//! The descriptor caches loaded through `KVM_SET_SREGS` are what the CPU
//! uses; the in-memory GDT matters only once the guest reloads a selector.

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_COUNT, PDE_START, PDPTE_START,
    PML4_START,
};

/// CR0.PE: protected mode.
pub const X86_CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (hard-wired to 1 on modern CPUs).
pub const X86_CR0_ET: u64 = 1 << 4;
/// CR0.NE: native x87 error reporting.
pub const X86_CR0_NE: u64 = 1 << 5;
/// CR0.NW: not write-through (part of the reset value).
pub const X86_CR0_NW: u64 = 1 << 29;
/// CR0.CD: cache disable (part of the reset value).
pub const X86_CR0_CD: u64 = 1 << 30;
/// CR0.PG: paging.
pub const X86_CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension (required for long mode).
pub const X86_CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1, which always reads as one.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

/// GDT flags of a 64-bit code segment (L=1, present, execute/read, accessed).
pub const GDT_FLAGS_CODE64: u16 = 0xa09b;
/// GDT flags of a 32-bit flat code segment (D=1, G=1, present, execute/read, accessed).
pub const GDT_FLAGS_CODE32: u16 = 0xc09b;
/// GDT flags of a flat data segment (D/B=1, G=1, present, read/write, accessed).
pub const GDT_FLAGS_DATA: u16 = 0xc093;
/// GDT flags of a busy TSS with 4 KiB granularity (long-mode table).
pub const GDT_FLAGS_TSS: u16 = 0x808b;
/// GDT flags of a busy 32-bit TSS with byte granularity (PVH table).
pub const GDT_FLAGS_TSS_BYTE: u16 = 0x008b;

/// Index of the code descriptor in both boot GDTs.
pub const CODE_INDEX: u8 = 1;
/// Index of the data descriptor in both boot GDTs.
pub const DATA_INDEX: u8 = 2;
/// Index of the TSS descriptor in both boot GDTs.
pub const TSS_INDEX: u8 = 3;
/// Code selector: 64-bit code in [`BOOT_GDT`], 32-bit code in [`PVH_GDT`].
pub const CODE_SELECTOR: u16 = CODE_INDEX as u16 * 8;
/// Flat data selector (DS, ES, FS, GS, SS).
pub const DATA_SELECTOR: u16 = DATA_INDEX as u16 * 8;
/// TSS selector (TR).
pub const TSS_SELECTOR: u16 = TSS_INDEX as u16 * 8;

/// Encodes a segment descriptor.
///
/// `flags` holds the access byte in bits 7:0 and the G, D/B, L, AVL nibble in
/// bits 15:12 (bits 11:8 are ignored); `limit` is the 20-bit raw limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let flags = flags as u64;
    let base = base as u64;
    let limit = limit as u64;
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// GDT for the Linux 64-bit boot protocol: null, 64-bit code (0x08), data
/// (0x10), TSS (0x18). Write it at [`BOOT_GDT_START`].
pub const BOOT_GDT: [u64; 4] = [
    0,
    gdt_entry(GDT_FLAGS_CODE64, 0, 0xfffff),
    gdt_entry(GDT_FLAGS_DATA, 0, 0xfffff),
    gdt_entry(GDT_FLAGS_TSS, 0, 0xfffff),
];

/// GDT for PVH entry (32-bit flat protected mode): null, 32-bit code (0x08),
/// data (0x10), TSS (0x18, limit 0x67 as the PVH ABI asks). Write it at
/// [`BOOT_GDT_START`] instead of [`BOOT_GDT`].
pub const PVH_GDT: [u64; 4] = [
    0,
    gdt_entry(GDT_FLAGS_CODE32, 0, 0xfffff),
    gdt_entry(GDT_FLAGS_DATA, 0, 0xfffff),
    gdt_entry(GDT_FLAGS_TSS_BYTE, 0, 0x67),
];

/// GDTR limit of the boot GDTs.
pub const BOOT_GDT_LIMIT: u16 = (BOOT_GDT.len() * 8 - 1) as u16;
/// IDTR limit of the boot IDT (one zeroed 8-byte slot: any interrupt is fatal).
pub const BOOT_IDT_LIMIT: u16 = 7;

/// Page-table entry bit: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Page-table entry bit: writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Page-directory entry bit: 2 MiB page.
pub const PTE_PAGE_SIZE: u64 = 1 << 7;

const PAGE: usize = 0x1000;
const ENTRIES_PER_TABLE: u64 = 512;
const HUGE_PAGE: u64 = 2 << 20;

fn descriptor_base(entry: u64) -> u64 {
    ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000)
}

fn descriptor_limit(entry: u64) -> u32 {
    let raw = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

fn bit(entry: u64, n: u32) -> u8 {
    ((entry >> n) & 1) as u8
}

/// Decodes a descriptor into the segment-cache form `KVM_SET_SREGS` takes,
/// with selector `table_index * 8` and the limit expanded by the granularity
/// bit. A descriptor without the present bit yields an unusable segment.
pub fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let present = bit(entry, 47);
    kvm_segment {
        base: descriptor_base(entry),
        limit: descriptor_limit(entry),
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(entry, 54),
        s: bit(entry, 44),
        l: bit(entry, 53),
        g: bit(entry, 55),
        avl: bit(entry, 52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Serialises a GDT (little-endian descriptors).
pub fn gdt_bytes(table: &[u64]) -> Vec<u8> {
    table.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Identity map of 0..4 GiB with 2 MiB pages, as `(guest address, bytes)`:
/// one PML4 page at [`PML4_START`], one PDPT page at [`PDPTE_START`] and four
/// page directories (one 16 KiB blob) at [`PDE_START`]. Every page is
/// complete, so writing them overwrites whatever was there.
pub fn identity_page_tables() -> Vec<(u64, Vec<u8>)> {
    let table_flags = PTE_PRESENT | PTE_WRITABLE;
    let mut pml4 = vec![0u8; PAGE];
    pml4[..8].copy_from_slice(&(PDPTE_START | table_flags).to_le_bytes());

    let mut pdpt = vec![0u8; PAGE];
    for i in 0..PDE_COUNT {
        let pd = PDE_START + i * PAGE as u64;
        let off = i as usize * 8;
        pdpt[off..off + 8].copy_from_slice(&(pd | table_flags).to_le_bytes());
    }

    let pds: Vec<u8> = (0..PDE_COUNT * ENTRIES_PER_TABLE)
        .flat_map(|i| ((i * HUGE_PAGE) | table_flags | PTE_PAGE_SIZE).to_le_bytes())
        .collect();

    vec![(PML4_START, pml4), (PDPTE_START, pdpt), (PDE_START, pds)]
}

/// Everything the 64-bit boot state needs in guest memory: [`BOOT_GDT`], a
/// zeroed IDT slot, and [`identity_page_tables`].
pub fn long_mode_boot_data() -> Vec<(u64, Vec<u8>)> {
    let mut data = vec![
        (BOOT_GDT_START, gdt_bytes(&BOOT_GDT)),
        (BOOT_IDT_START, vec![0u8; usize::from(BOOT_IDT_LIMIT) + 1]),
    ];
    data.extend(identity_page_tables());
    data
}

/// Everything the PVH boot state needs in guest memory: [`PVH_GDT`] and a
/// zeroed IDT slot.
pub fn pvh_boot_data() -> Vec<(u64, Vec<u8>)> {
    vec![
        (BOOT_GDT_START, gdt_bytes(&PVH_GDT)),
        (BOOT_IDT_START, vec![0u8; usize::from(BOOT_IDT_LIMIT) + 1]),
    ]
}

fn load_flat_segments(sregs: &mut kvm_sregs, gdt: &[u64; 4]) {
    sregs.gdt = kvm_dtable {
        base: BOOT_GDT_START,
        limit: BOOT_GDT_LIMIT,
        ..Default::default()
    };
    sregs.idt = kvm_dtable {
        base: BOOT_IDT_START,
        limit: BOOT_IDT_LIMIT,
        ..Default::default()
    };
    let code = segment_from_gdt(gdt[usize::from(CODE_INDEX)], CODE_INDEX);
    let data = segment_from_gdt(gdt[usize::from(DATA_INDEX)], DATA_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[usize::from(TSS_INDEX)], TSS_INDEX);
}

/// 64-bit long mode with paging through [`identity_page_tables`], starting
/// from what `KVM_GET_SREGS` returned (the APIC base and LDT are kept).
///
/// CS = 0x08 (64-bit), DS/ES/FS/GS/SS = 0x10, TR = 0x18, CR0 = PE|ET|NE|PG
/// (caches enabled), CR3 = [`PML4_START`], CR4 = PAE, EFER = LME|LMA.
pub fn long_mode_sregs(base: &kvm_sregs) -> kvm_sregs {
    let mut sregs = *base;
    load_flat_segments(&mut sregs, &BOOT_GDT);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// General registers for the Linux 64-bit boot protocol: `rip` = kernel
/// 64-bit entry, `rsi` = address of `boot_params` (normally
/// [`crate::layout::ZERO_PAGE_START`]), stack at [`BOOT_STACK_POINTER`].
pub fn long_mode_regs(rip: u64, rsi: u64) -> kvm_regs {
    kvm_regs {
        rip,
        rsi,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// 32-bit flat protected mode without paging, the PVH entry state, starting
/// from what `KVM_GET_SREGS` returned.
///
/// CS = 0x08 (32-bit), DS/ES/FS/GS/SS = 0x10, TR = 0x18, CR0 = PE|ET,
/// CR3 = CR4 = EFER = 0.
pub fn protected_mode_sregs(base: &kvm_sregs) -> kvm_sregs {
    let mut sregs = *base;
    load_flat_segments(&mut sregs, &PVH_GDT);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// General registers for PVH entry: `rip` = the kernel's PVH entry point
/// (XEN_ELFNOTE_PHYS32_ENTRY), `rbx` = address of `hvm_start_info`.
pub fn pvh_regs(rip: u64, start_info: u64) -> kvm_regs {
    kvm_regs {
        rip,
        rbx: start_info,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

fn real_mode_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: u64::from(selector) << 4,
        limit: 0xffff,
        selector,
        type_,
        present: 1,
        s: 1,
        ..Default::default()
    }
}

/// Real mode with CS = `cs_selector` (base `cs_selector << 4`, limit 0xffff)
/// and DS/ES/FS/GS/SS = 0, starting from what `KVM_GET_SREGS` returned.
/// CR0 = ET (caches enabled), CR3 = CR4 = EFER = 0. For tiny test guests.
pub fn real_mode_sregs(base: &kvm_sregs, cs_selector: u16) -> kvm_sregs {
    let mut sregs = *base;
    sregs.cs = real_mode_segment(cs_selector, 0xb);
    let data = real_mode_segment(0, 0x3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr0 = X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// General registers for a real-mode test guest: IP = `ip`, everything else 0.
pub fn real_mode_regs(ip: u64) -> kvm_regs {
    kvm_regs {
        rip: ip,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// CS selector at reset.
pub const RESET_CS_SELECTOR: u16 = 0xf000;
/// CS base at reset: with IP [`RESET_IP`] the first fetch is at 0xffff_fff0.
pub const RESET_CS_BASE: u64 = 0xffff_0000;
/// IP at reset.
pub const RESET_IP: u64 = 0xfff0;
/// CR0 at reset: CD | NW | ET.
pub const RESET_CR0: u64 = X86_CR0_CD | X86_CR0_NW | X86_CR0_ET;
/// EDX at reset as KVM sets it (family 6 processor signature).
pub const RESET_RDX: u64 = 0x600;

/// Architectural reset state (Intel SDM Vol. 3 Table 10-1), the state
/// firmware such as OVMF expects, starting from what `KVM_GET_SREGS`
/// returned (the APIC base and interrupt bitmap are kept).
pub fn firmware_reset_sregs(base: &kvm_sregs) -> kvm_sregs {
    let mut sregs = *base;
    sregs.cs = kvm_segment {
        base: RESET_CS_BASE,
        ..real_mode_segment(RESET_CS_SELECTOR, 0xb)
    };
    let data = real_mode_segment(0, 0x3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.ldt = kvm_segment {
        s: 0,
        ..real_mode_segment(0, 0x2)
    };
    sregs.tr = kvm_segment {
        s: 0,
        ..real_mode_segment(0, 0x3)
    };
    let table = kvm_dtable {
        base: 0,
        limit: 0xffff,
        ..Default::default()
    };
    sregs.gdt = table;
    sregs.idt = table;
    sregs.cr0 = RESET_CR0;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.cr8 = 0;
    sregs.efer = 0;
    sregs
}

/// General registers at reset: RIP = 0xfff0, RFLAGS = 2, RDX = 0x600.
pub fn firmware_reset_regs() -> kvm_regs {
    kvm_regs {
        rip: RESET_IP,
        rdx: RESET_RDX,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(bytes: &[u8], index: usize) -> u64 {
        u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
    }

    /// Something resembling `KVM_GET_SREGS` on a fresh vCPU.
    fn fresh_sregs() -> kvm_sregs {
        let mut s = kvm_sregs {
            apic_base: 0xfee0_0900,
            cr0: 0x6000_0010,
            ..Default::default()
        };
        s.cs.selector = 0xf000;
        s.cs.base = 0xffff_0000;
        s.ldt.type_ = 2;
        s.ldt.present = 1;
        s.ldt.limit = 0xffff;
        s.interrupt_bitmap[1] = 0x55;
        s
    }

    #[test]
    fn gdt_entry_known_encodings() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc09b, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0, 0xfffff), 0x008f_8b00_0000_ffff);
        assert_eq!(gdt_entry(0x008b, 0, 0x67), 0x0000_8b00_0000_0067);
        // Base bits are scattered over bytes 2-4 and 7.
        assert_eq!(
            gdt_entry(0x0093, 0x1234_5678, 0xabcde),
            0x120a_9334_5678_bcde
        );
    }

    #[test]
    fn boot_gdts() {
        assert_eq!(
            BOOT_GDT,
            [
                0,
                0x00af_9b00_0000_ffff,
                0x00cf_9300_0000_ffff,
                0x008f_8b00_0000_ffff
            ]
        );
        assert_eq!(PVH_GDT[0], 0);
        assert_eq!(PVH_GDT[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(PVH_GDT[2], BOOT_GDT[2]);
        assert_eq!(
            (CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR),
            (0x8, 0x10, 0x18)
        );
        assert_eq!(BOOT_GDT_LIMIT, 31);
        assert!(BOOT_GDT_START + u64::from(BOOT_GDT_LIMIT) < BOOT_IDT_START);
        let bytes = gdt_bytes(&BOOT_GDT);
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[8..16], &[0xff, 0xff, 0, 0, 0, 0x9b, 0xaf, 0x00]);
    }

    #[test]
    fn segment_decoding() {
        let cs = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(cs.selector, 0x8);
        assert_eq!(cs.base, 0);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.type_, 0xb);
        assert_eq!(
            (cs.present, cs.dpl, cs.s, cs.l, cs.db, cs.g),
            (1, 0, 1, 1, 0, 1)
        );
        assert_eq!(cs.unusable, 0);

        let cs32 = segment_from_gdt(PVH_GDT[1], 1);
        assert_eq!((cs32.l, cs32.db), (0, 1));

        let tss = segment_from_gdt(PVH_GDT[3], 3);
        assert_eq!(tss.selector, 0x18);
        assert_eq!(tss.limit, 0x67);
        assert_eq!((tss.type_, tss.s, tss.g), (0xb, 0, 0));

        let odd = segment_from_gdt(gdt_entry(0x0093, 0x1234_5678, 0xabcde), 31);
        assert_eq!(odd.base, 0x1234_5678);
        assert_eq!(odd.limit, 0xabcde);
        assert_eq!(odd.selector, 31 * 8);

        let null = segment_from_gdt(0, 0);
        assert_eq!((null.present, null.unusable), (0, 1));
        let high_dpl = segment_from_gdt(gdt_entry(0xc0fb, 0, 0xfffff), 200);
        assert_eq!((high_dpl.dpl, high_dpl.selector), (3, 1600));
    }

    #[test]
    fn page_tables_identity_map_4g() {
        let tables = identity_page_tables();
        assert_eq!(tables.len(), 3);
        let (pml4_addr, pml4) = &tables[0];
        let (pdpt_addr, pdpt) = &tables[1];
        let (pd_addr, pd) = &tables[2];
        assert_eq!((*pml4_addr, *pdpt_addr, *pd_addr), (0x9000, 0xa000, 0xb000));
        assert_eq!((pml4.len(), pdpt.len(), pd.len()), (0x1000, 0x1000, 0x4000));

        assert_eq!(u64_at(pml4, 0), 0xa003);
        assert!((1..512).all(|i| u64_at(pml4, i) == 0));
        assert_eq!(
            (0..5).map(|i| u64_at(pdpt, i)).collect::<Vec<_>>(),
            vec![0xb003, 0xc003, 0xd003, 0xe003, 0]
        );
        assert_eq!(u64_at(pd, 0), 0x83);
        assert_eq!(u64_at(pd, 1), 0x20_0083);
        assert_eq!(u64_at(pd, 2047), 0xffe0_0083);

        // Walk the tables for a few addresses, including the MMIO hole.
        for va in [0u64, 0x10_0000, 0x7fff_ffff, 0xfee0_0000, 0xffff_fff0] {
            let pml4e = u64_at(pml4, ((va >> 39) & 0x1ff) as usize);
            assert_eq!(pml4e & !0xfff, *pdpt_addr);
            let pdpte = u64_at(pdpt, ((va >> 30) & 0x1ff) as usize);
            let pd_index = ((pdpte & !0xfff) - pd_addr) / 8 + ((va >> 21) & 0x1ff);
            let pde = u64_at(pd, pd_index as usize);
            assert_eq!(pde & 0x83, 0x83, "{va:#x}");
            assert_eq!((pde & !0x1f_ffff) | (va & 0x1f_ffff), va);
        }
    }

    #[test]
    fn boot_data_blobs() {
        let long = long_mode_boot_data();
        assert_eq!(long[0], (BOOT_GDT_START, gdt_bytes(&BOOT_GDT)));
        assert_eq!(long[1], (BOOT_IDT_START, vec![0; 8]));
        assert_eq!(long.len(), 5);
        let pvh = pvh_boot_data();
        assert_eq!(pvh[0], (BOOT_GDT_START, gdt_bytes(&PVH_GDT)));
        assert_eq!(pvh.len(), 2);
        // No blob overlaps another.
        let mut ranges: Vec<(u64, u64)> =
            long.iter().map(|(a, b)| (*a, a + b.len() as u64)).collect();
        ranges.sort_unstable();
        assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0));
    }

    #[test]
    fn long_mode_state() {
        let base = fresh_sregs();
        let s = long_mode_sregs(&base);
        assert_eq!(s.cr0, 0x8000_0031);
        assert_eq!(s.cr3, 0x9000);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.efer, 0x500);
        assert_eq!((s.gdt.base, s.gdt.limit), (0x500, 31));
        assert_eq!((s.idt.base, s.idt.limit), (0x520, 7));
        assert_eq!(s.cs, segment_from_gdt(BOOT_GDT[1], 1));
        assert_eq!(s.cs.l, 1);
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(seg.selector, 0x10);
            assert_eq!(seg.type_, 0x3);
        }
        assert_eq!(s.tr.selector, 0x18);
        assert_eq!(s.tr.type_, 0xb);
        // Untouched state carried over from KVM.
        assert_eq!(s.apic_base, base.apic_base);
        assert_eq!(s.interrupt_bitmap, base.interrupt_bitmap);
        assert_eq!(s.ldt, base.ldt);

        let r = long_mode_regs(0x100_0200, 0x7000);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rbp, r.rflags),
            (0x100_0200, 0x7000, 0x8ff0, 0x8ff0, 2)
        );
        assert_eq!((r.rax, r.rbx, r.rdi), (0, 0, 0));
    }

    #[test]
    fn pvh_state() {
        let mut base = fresh_sregs();
        base.cr4 = 0x20;
        base.efer = 0x500;
        base.cr3 = 0x1234_5000;
        let s = protected_mode_sregs(&base);
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x11, 0, 0, 0));
        assert_eq!(s.cs.selector, 0x8);
        assert_eq!(
            (s.cs.l, s.cs.db, s.cs.limit, s.cs.base),
            (0, 1, 0xffff_ffff, 0)
        );
        assert_eq!((s.ds.selector, s.ss.selector, s.ss.db), (0x10, 0x10, 1));
        assert_eq!((s.tr.selector, s.tr.limit), (0x18, 0x67));
        assert_eq!((s.gdt.base, s.gdt.limit), (0x500, 31));

        let r = pvh_regs(0x100_0000, 0x6000);
        assert_eq!((r.rip, r.rbx, r.rflags), (0x100_0000, 0x6000, 2));
        assert_eq!(r.rsi, 0);
    }

    #[test]
    fn real_mode_state() {
        let base = long_mode_sregs(&fresh_sregs());
        let s = real_mode_sregs(&base, 0x1000);
        assert_eq!(
            (s.cs.selector, s.cs.base, s.cs.limit),
            (0x1000, 0x10000, 0xffff)
        );
        assert_eq!(
            (s.cs.type_, s.cs.present, s.cs.s, s.cs.db, s.cs.l),
            (0xb, 1, 1, 0, 0)
        );
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(
                (seg.selector, seg.base, seg.limit, seg.type_),
                (0, 0, 0xffff, 3)
            );
        }
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x10, 0, 0, 0));
        let r = real_mode_regs(0x42);
        assert_eq!((r.rip, r.rflags, r.rsp), (0x42, 2, 0));
    }

    #[test]
    fn firmware_reset_state() {
        let base = long_mode_sregs(&fresh_sregs());
        let s = firmware_reset_sregs(&base);
        assert_eq!(
            (s.cs.selector, s.cs.base, s.cs.limit),
            (0xf000, 0xffff_0000, 0xffff)
        );
        assert_eq!((s.cs.type_, s.cs.s, s.cs.present), (0xb, 1, 1));
        assert_eq!((s.ds.selector, s.ds.base, s.ds.limit), (0, 0, 0xffff));
        assert_eq!((s.gdt.base, s.gdt.limit), (0, 0xffff));
        assert_eq!((s.idt.base, s.idt.limit), (0, 0xffff));
        assert_eq!((s.ldt.type_, s.ldt.s), (2, 0));
        assert_eq!((s.tr.type_, s.tr.s, s.tr.present), (3, 0, 1));
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x6000_0010, 0, 0, 0));
        assert_eq!(s.apic_base, 0xfee0_0900);
        // First instruction fetch is 16 bytes below 4 GiB.
        let r = firmware_reset_regs();
        assert_eq!(s.cs.base + r.rip, 0xffff_fff0);
        assert_eq!((r.rflags, r.rdx), (2, 0x600));
    }
}
