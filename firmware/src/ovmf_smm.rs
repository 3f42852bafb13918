//! Recognising an OVMF build that needs SMM from the image itself.
//!
//! OVMF built with `SMM_REQUIRE` (every Secure Boot build: Debian's
//! `OVMF_CODE_4M.secboot.fd`, `.ms.fd`, `.snakeoil.fd`; Fedora's and Arch's
//! `.secboot` builds) halts early on a machine without SMM; under KVM that
//! shows as `KVM_RUN failed: Input/output error`. Firmware descriptors say
//! so for the files they list, but a copy elsewhere, or a build no
//! descriptor lists, has to be recognised from its contents.
//!
//! The PEI and DXE volumes of OVMF sit LZMA-compressed inside
//! `FVMAIN_COMPACT` (an EFI_SECTION_GUID_DEFINED section with the LZMA
//! custom-decompress GUID). The first volume in that stream is PEIFV, and an
//! SMM build's PEIFV holds `SmmAccessPei` (OvmfPkg/SmmAccess/SmmAccessPei.inf,
//! included only `!if $(SMM_REQUIRE) == TRUE` in OvmfPkgX64.fdf). Only the
//! beginning of the stream is decompressed ([`PEI_SCAN_INPUT`]).
/// The LZMA custom-decompress GUID (EE4E5898-3914-4259-9D6E-DC7BD79403CF),
/// in its on-disk byte order.
const LZMA_GUID: [u8; 16] = [
    0x98, 0x58, 0x4e, 0xee, 0x14, 0x39, 0x59, 0x42, 0x9d, 0x6e, 0xdc, 0x7b, 0xd7, 0x94, 0x03, 0xcf,
];

/// SmmAccessPei's FILE_GUID (6C0E75B4-B0B9-44D1-8210-3377D7B4E066).
const SMM_ACCESS_PEI: [u8; 16] = [
    0xb4, 0x75, 0x0e, 0x6c, 0xb9, 0xb0, 0xd1, 0x44, 0x82, 0x10, 0x33, 0x77, 0xd7, 0xb4, 0xe0, 0x66,
];

/// PiSmmCore's FILE_GUID (E94F54CD-81EB-47ED-AEC3-856F5DC157A9), for
/// images whose volumes are not compressed.
const PI_SMM_CORE: [u8; 16] = [
    0xcd, 0x54, 0x4f, 0xe9, 0xeb, 0x81, 0xed, 0x47, 0xae, 0xc3, 0x85, 0x6f, 0x5d, 0xc1, 0x57, 0xa9,
];

/// How much of each compressed stream is decompressed: PEIFV (896 KiB in
/// OVMF's X64 layouts, most of it padding) comes first, and Debian's
/// builds decode 128 KiB to about 1.1 MiB (14 ms in a release build).
pub const PEI_SCAN_INPUT: usize = 128 << 10;

const SECTION_GUID_DEFINED: u8 = 0x02;

/// What the image says about SMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmmNeed {
    /// An SMM module was found: the build needs SMM.
    Required,
    /// A compressed PEI volume was read and has no SMM module.
    NotRequired,
    /// Nothing conclusive (no LZMA section, or it did not decompress).
    Unknown,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The compressed payload of every LZMA GUID-defined section in `code`.
fn lzma_sections(code: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..]
        .windows(LZMA_GUID.len())
        .position(|w| w == LZMA_GUID)
    {
        let guid_at = from + pos;
        from = guid_at + 1;
        // EFI_COMMON_SECTION_HEADER (size:24, type:8) then the GUID, or
        // EFI_COMMON_SECTION_HEADER2 (size 0xffffff, type, u32 size).
        let (start, size) = match guid_at.checked_sub(4).map(|h| (h, &code[h..guid_at])) {
            Some((h, hdr)) if hdr[3] == SECTION_GUID_DEFINED && hdr[..3] != [0xff; 3] => {
                (h, u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize)
            }
            _ => match guid_at.checked_sub(8).map(|h| (h, &code[h..guid_at])) {
                Some((h, hdr)) if hdr[..4] == [0xff, 0xff, 0xff, SECTION_GUID_DEFINED] => (
                    h,
                    u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize,
                ),
                _ => continue,
            },
        };
        // DataOffset (from the section start) follows the GUID.
        let Some(off) = code
            .get(guid_at + 16..guid_at + 18)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        else {
            continue;
        };
        let (Some(data_start), Some(end)) = (start.checked_add(off), start.checked_add(size))
        else {
            continue;
        };
        if off < guid_at + 20 - start || data_start >= end || end > code.len() {
            continue;
        }
        out.push(&code[data_start..end]);
    }
    out
}

/// What the first [`PEI_SCAN_INPUT`] bytes of an LZMA ("alone" header)
/// stream decompress to, or `None` if they do not decode.
fn lzma_prefix(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let opts = lzma_rs::decompress::Options {
        unpacked_size: lzma_rs::decompress::UnpackedSize::ReadFromHeader,
        memlimit: Some(64 << 20),
        // A prefix of the stream: what it decodes to is kept.
        allow_incomplete: true,
    };
    let mut stream = lzma_rs::decompress::Stream::new_with_options(&opts, Vec::new());
    let input = &data[..data.len().min(PEI_SCAN_INPUT)];
    stream.write_all(input).ok()?;
    let out = stream.finish().ok()?;
    (!out.is_empty()).then_some(out)
}

/// Whether the firmware CODE image `code` needs SMM (see the module
/// documentation).
pub fn smm_need(code: &[u8]) -> SmmNeed {
    if contains(code, &PI_SMM_CORE) || contains(code, &SMM_ACCESS_PEI) {
        return SmmNeed::Required;
    }
    let mut verdict = SmmNeed::Unknown;
    for section in lzma_sections(code).into_iter().take(4) {
        if let Some(pei) = lzma_prefix(section) {
            if contains(&pei, &SMM_ACCESS_PEI) {
                return SmmNeed::Required;
            }
            verdict = SmmNeed::NotRequired;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A GUID-defined LZMA section around `payload` (an LZMA stream).
    fn section(payload: &[u8]) -> Vec<u8> {
        let size = 24 + payload.len();
        let mut s = Vec::new();
        s.extend_from_slice(&(size as u32).to_le_bytes()[..3]);
        s.push(SECTION_GUID_DEFINED);
        s.extend_from_slice(&LZMA_GUID);
        s.extend_from_slice(&24u16.to_le_bytes());
        s.extend_from_slice(&1u16.to_le_bytes());
        s.extend_from_slice(payload);
        s
    }

    fn compress(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::lzma_compress(&mut Cursor::new(data), &mut out).unwrap();
        out
    }

    fn image(volumes: &[u8]) -> Vec<u8> {
        let mut img = vec![0xffu8; 0x90];
        img.extend(section(&compress(volumes)));
        img.resize(img.len() + 0x1000, 0xff);
        img
    }

    #[test]
    fn smm_access_pei_in_the_compressed_pei_volume() {
        let mut pei = vec![0u8; 0x14000];
        pei.extend_from_slice(&SMM_ACCESS_PEI);
        pei.resize(0x20000, 0);
        assert_eq!(smm_need(&image(&pei)), SmmNeed::Required);
        let plain = vec![0u8; 0x20000];
        assert_eq!(smm_need(&image(&plain)), SmmNeed::NotRequired);
        // Beyond what the scanned input decodes to, the GUID is not seen
        // (incompressible filler, so the GUID lies past the input prefix).
        let mut late: Vec<u8> = (0..PEI_SCAN_INPUT * 2)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect();
        late.extend_from_slice(&SMM_ACCESS_PEI);
        assert_eq!(smm_need(&image(&late)), SmmNeed::NotRequired);
    }

    #[test]
    fn uncompressed_or_unreadable_images() {
        let mut img = vec![0u8; 0x4000];
        img[0x1000..0x1010].copy_from_slice(&PI_SMM_CORE);
        assert_eq!(smm_need(&img), SmmNeed::Required);
        assert_eq!(smm_need(&[0u8; 0x4000]), SmmNeed::Unknown);
        // A section whose payload is not LZMA, and truncated ones.
        let mut bad = vec![0u8; 0x90];
        bad.extend(section(&[0x5a; 200]));
        assert_eq!(smm_need(&bad), SmmNeed::Unknown);
        let good = image(&[1u8; 0x1000]);
        for cut in [0x90, 0x94, 0xa0, 0xa8, 0x90 + 24 + 5] {
            assert_eq!(smm_need(&good[..cut]), SmmNeed::Unknown, "cut {cut:#x}");
        }
        // The GUID at the very start (no room for a header).
        assert_eq!(smm_need(&LZMA_GUID), SmmNeed::Unknown);
    }

    #[test]
    fn debian_builds_if_present() {
        // Debian's ovmf package, where installed (or the testbed's copy of
        // the non-SMM build).
        // $TESSERA_TEST_OVMF_DIR: a directory with the package's files.
        let mut dirs = vec![
            "/usr/share/OVMF".to_string(),
            "/var/tmp/tessera-testbed/ovmf".to_string(),
        ];
        dirs.extend(std::env::var("TESSERA_TEST_OVMF_DIR"));
        for dir in &dirs {
            for (name, want) in [
                ("OVMF_CODE_4M.fd", SmmNeed::NotRequired),
                ("OVMF_CODE_4M.secboot.fd", SmmNeed::Required),
                ("OVMF_CODE.fd", SmmNeed::NotRequired),
                ("OVMF_CODE.secboot.fd", SmmNeed::Required),
            ] {
                let p = std::path::Path::new(dir).join(name);
                if let Ok(code) = std::fs::read(&p) {
                    let t = std::time::Instant::now();
                    assert_eq!(smm_need(&code), want, "{}", p.display());
                    eprintln!("{}: {want:?} in {:?}", p.display(), t.elapsed());
                }
            }
        }
    }
}
