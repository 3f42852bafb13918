//! fw_cfg back-end of the ACPI model: QEMU's linker/loader files for OVMF.
//!
//! [`build`] turns an [`AcpiTables`] model into the three fw_cfg files QEMU
//! gives OVMF (see QEMU `hw/acpi/bios-linker-loader.c` and edk2
//! `OvmfPkg/Include/IndustryStandard/QemuLoader.h`):
//!
//! * [`RSDP_FILE`] (`etc/acpi/rsdp`): the tables of [`Zone::FSeg`] (the
//!   RSDP), allocated in the F-segment zone, aligned to at least 16.
//! * [`TABLES_FILE`] (`etc/acpi/tables`): the tables of [`Zone::High`],
//!   concatenated in model order, each at its alignment relative to the
//!   start of the file; allocated in the high zone, aligned to at least 64
//!   (and to the largest table alignment, so every table is aligned).
//! * [`LOADER_FILE`] (`etc/table-loader`): 128-byte commands. One ALLOCATE
//!   per non-empty file (tables first, as QEMU), then one ADD_POINTER per
//!   [`TablePointer`](super::TablePointer) and one ADD_CHECKSUM per
//!   [`TableChecksum`](super::TableChecksum), in model order.
//!
//! # Relation to [`AcpiTables::place_at`]
//!
//! Both back-ends read the same fix-up lists with the same meaning: a
//! pointer gets the address of the start of its target table, all pointers
//! are applied before any checksum, and checksums run in list order with
//! their byte zero beforehand. They differ in how a pointer is written:
//! `place_at` overwrites the field with the absolute address, while the
//! loader *adds* the base address of the pointee's file to the field. So
//! the blobs here carry, in each pointer field, the target table's offset
//! inside its file, and each checksum byte is zeroed (OVMF's
//! `CalculateCheckSum8` covers the byte itself). Given the same table
//! addresses, the result in guest memory is byte-for-byte what `place_at`
//! produces (the tests check this with an interpreter that mirrors OVMF's
//! `QemuFwCfgAcpi.c`). Unlike `place_at`, zones are honoured: the RSDP and
//! the other tables live in separate allocations.
//!
//! OVMF then installs every table that an ADD_POINTER points at (except the
//! RSDT/XSDT) through its ACPI table protocol, which copies them and builds
//! its own RSDP and XSDT, so the final addresses are OVMF's choice.
//!
//! # Sizes
//!
//! fw_cfg sizes are fixed when the directory is first read, but these files
//! are rebuilt when the guest first selects one (see the fw_cfg device). A
//! rebuild must not be longer than the boot build. [`LoaderFiles::pad_tables`]
//! reserves room by zero-padding `etc/acpi/tables` to a fixed size, as
//! QEMU's legacy `ACPI_BUILD_TABLE_SIZE`; the other two files only grow if
//! tables or fix-ups are added, which a rebuild of the same machine does
//! not do.

use super::tables::{AcpiTables, PointerWidth, Zone, sig_str};

/// fw_cfg name of the RSDP file.
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
/// fw_cfg name of the file holding every table but the RSDP.
pub const TABLES_FILE: &str = "etc/acpi/tables";
/// fw_cfg name of the linker/loader script.
pub const LOADER_FILE: &str = "etc/table-loader";

/// Size of one loader command.
pub const COMMAND_SIZE: usize = 128;
/// Size of a file name field in a command, including the NUL.
pub const FILE_NAME_SIZE: usize = 56;
/// Minimum alignment of the RSDP file (QEMU's value).
pub const RSDP_FILE_ALIGN: u64 = 16;
/// Minimum alignment of the tables file (QEMU's value).
pub const TABLES_FILE_ALIGN: u64 = 64;
/// Largest alignment OVMF accepts in ALLOCATE (one page).
pub const MAX_ALIGN: u64 = 4096;
/// A fixed size for `etc/acpi/tables` with room for rebuilds, for
/// [`LoaderFiles::pad_tables`]: QEMU's legacy `ACPI_BUILD_TABLE_SIZE`.
pub const DEFAULT_TABLES_SIZE: usize = 0x20000;

/// Loader command type: allocate and download a file.
pub const CMD_ALLOCATE: u32 = 1;
/// Loader command type: relocate a pointer.
pub const CMD_ADD_POINTER: u32 = 2;
/// Loader command type: compute a checksum.
pub const CMD_ADD_CHECKSUM: u32 = 3;
/// ALLOCATE zone: anywhere (`QemuLoaderAllocHigh`).
pub const ALLOC_ZONE_HIGH: u8 = 1;
/// ALLOCATE zone: F-segment (`QemuLoaderAllocFSeg`).
pub const ALLOC_ZONE_FSEG: u8 = 2;

/// Errors from building the loader files.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableLoaderError {
    /// The model has no RSDP.
    #[error("no RSDP among the tables")]
    NoRsdp,
    /// OVMF rejects ALLOCATE alignments above one page.
    #[error("table {table}: alignment {align} is larger than {MAX_ALIGN}")]
    AlignmentTooLarge {
        /// Table signature.
        table: String,
        /// Its alignment.
        align: u64,
    },
    /// A file, offset or length does not fit the 32-bit command fields.
    #[error("file {file} is too large for the loader ({len:#x} bytes)")]
    FileTooLarge {
        /// File name.
        file: &'static str,
        /// Its size in bytes.
        len: usize,
    },
    /// A pointer field is too narrow for the target's offset in its file.
    #[error("table {table}: pointer at {offset:#x} cannot hold file offset {value:#x}")]
    PointerOverflow {
        /// Table holding the pointer.
        table: String,
        /// Offset of the field in the table.
        offset: usize,
        /// The target's offset in its file.
        value: u64,
    },
}

/// One linker/loader command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoaderCommand {
    /// Download `file` into memory of `zone`, aligned to `align`.
    Allocate {
        /// fw_cfg file name.
        file: &'static str,
        /// Power-of-two alignment.
        align: u32,
        /// [`ALLOC_ZONE_HIGH`] or [`ALLOC_ZONE_FSEG`].
        zone: u8,
    },
    /// Add the address of `pointee_file` to the `size`-byte little-endian
    /// field at `offset` in `pointer_file`.
    AddPointer {
        /// File holding the pointer field.
        pointer_file: &'static str,
        /// File the pointer points into.
        pointee_file: &'static str,
        /// Offset of the field in `pointer_file`.
        offset: u32,
        /// Field size: 1, 2, 4 or 8.
        size: u8,
    },
    /// Set byte `result_offset` of `file` so that `start..start + length`
    /// sums to zero.
    AddChecksum {
        /// File holding the range.
        file: &'static str,
        /// Offset of the checksum byte.
        result_offset: u32,
        /// First byte of the range.
        start: u32,
        /// Length of the range.
        length: u32,
    },
}

fn put_name(out: &mut [u8], name: &str) {
    // Names are the constants above, all shorter than FILE_NAME_SIZE.
    out[..name.len()].copy_from_slice(name.as_bytes());
}

impl LoaderCommand {
    /// The command in the packed little-endian layout of `QEMU_LOADER_ENTRY`:
    /// u32 type, then the command's fields, zero-padded to 128 bytes.
    pub fn to_bytes(&self) -> [u8; COMMAND_SIZE] {
        let mut b = [0u8; COMMAND_SIZE];
        let name1 = 4..4 + FILE_NAME_SIZE;
        let after1 = 4 + FILE_NAME_SIZE;
        match *self {
            LoaderCommand::Allocate { file, align, zone } => {
                b[..4].copy_from_slice(&CMD_ALLOCATE.to_le_bytes());
                put_name(&mut b[name1], file);
                b[after1..after1 + 4].copy_from_slice(&align.to_le_bytes());
                b[after1 + 4] = zone;
            }
            LoaderCommand::AddPointer {
                pointer_file,
                pointee_file,
                offset,
                size,
            } => {
                b[..4].copy_from_slice(&CMD_ADD_POINTER.to_le_bytes());
                put_name(&mut b[name1], pointer_file);
                let after2 = after1 + FILE_NAME_SIZE;
                put_name(&mut b[after1..after2], pointee_file);
                b[after2..after2 + 4].copy_from_slice(&offset.to_le_bytes());
                b[after2 + 4] = size;
            }
            LoaderCommand::AddChecksum {
                file,
                result_offset,
                start,
                length,
            } => {
                b[..4].copy_from_slice(&CMD_ADD_CHECKSUM.to_le_bytes());
                put_name(&mut b[name1], file);
                b[after1..after1 + 4].copy_from_slice(&result_offset.to_le_bytes());
                b[after1 + 4..after1 + 8].copy_from_slice(&start.to_le_bytes());
                b[after1 + 8..after1 + 12].copy_from_slice(&length.to_le_bytes());
            }
        }
        b
    }
}

/// Where one table of the model went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLocation {
    /// Table signature.
    pub name: [u8; 4],
    /// [`RSDP_FILE`] or [`TABLES_FILE`].
    pub file: &'static str,
    /// Offset of the table in its file.
    pub offset: usize,
    /// Length of the table.
    pub len: usize,
}

/// The three fw_cfg files for OVMF. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderFiles {
    /// Contents of [`RSDP_FILE`].
    pub rsdp: Vec<u8>,
    /// Contents of [`TABLES_FILE`].
    pub tables: Vec<u8>,
    /// Contents of [`LOADER_FILE`]: `commands` encoded.
    pub loader: Vec<u8>,
    /// The commands, decoded.
    pub commands: Vec<LoaderCommand>,
    /// Where each table of the model went, in model order.
    pub locations: Vec<TableLocation>,
}

impl LoaderFiles {
    /// The files as `(name, contents)`, ready for fw_cfg.
    pub fn files(&self) -> [(&'static str, &[u8]); 3] {
        [
            (RSDP_FILE, &self.rsdp),
            (TABLES_FILE, &self.tables),
            (LOADER_FILE, &self.loader),
        ]
    }

    /// Zero-pads `etc/acpi/tables` to at least `len` bytes, so that a
    /// rebuild that grows a little still fits the size fixed at boot. The
    /// padding is never referenced by a command. Use the same `len` for
    /// every build (e.g. [`DEFAULT_TABLES_SIZE`]).
    pub fn pad_tables(&mut self, len: usize) {
        if self.tables.len() < len {
            self.tables.resize(len, 0);
        }
    }
}

fn align_up(value: usize, align: usize) -> usize {
    // Alignments are at most MAX_ALIGN, sizes are in-memory blobs: no
    // overflow in practice, but saturate rather than wrap.
    value.saturating_add(align - 1) & !(align - 1)
}

fn file_of(zone: Zone) -> &'static str {
    match zone {
        Zone::FSeg => RSDP_FILE,
        Zone::High => TABLES_FILE,
    }
}

fn to_u32(file: &'static str, value: usize, len: usize) -> Result<u32, TableLoaderError> {
    u32::try_from(value).map_err(|_| TableLoaderError::FileTooLarge { file, len })
}

/// Builds the loader files for `model`. See the module documentation.
pub fn build(model: &AcpiTables) -> Result<LoaderFiles, TableLoaderError> {
    if model.find(b"RSDP").is_none() {
        return Err(TableLoaderError::NoRsdp);
    }
    let mut rsdp = Vec::new();
    let mut tables = Vec::new();
    let mut rsdp_align = RSDP_FILE_ALIGN;
    let mut tables_align = TABLES_FILE_ALIGN;

    // Lay out each file: model order, each table at its alignment.
    let mut locations = Vec::with_capacity(model.tables().len());
    for t in model.tables() {
        if t.align() > MAX_ALIGN {
            return Err(TableLoaderError::AlignmentTooLarge {
                table: sig_str(&t.name()),
                align: t.align(),
            });
        }
        let (file, file_align) = match t.zone() {
            Zone::FSeg => (&mut rsdp, &mut rsdp_align),
            Zone::High => (&mut tables, &mut tables_align),
        };
        *file_align = (*file_align).max(t.align());
        // align <= MAX_ALIGN fits in usize.
        let offset = align_up(file.len(), t.align() as usize);
        file.resize(offset, 0);
        file.extend_from_slice(t.bytes());
        locations.push(TableLocation {
            name: t.name(),
            file: file_of(t.zone()),
            offset,
            len: t.bytes().len(),
        });
    }

    let mut commands = Vec::new();
    for (file, bytes, align, zone) in [
        (TABLES_FILE, &tables, tables_align, ALLOC_ZONE_HIGH),
        (RSDP_FILE, &rsdp, rsdp_align, ALLOC_ZONE_FSEG),
    ] {
        if !bytes.is_empty() {
            to_u32(file, bytes.len(), bytes.len())?;
            commands.push(LoaderCommand::Allocate {
                file,
                // At most MAX_ALIGN.
                align: align as u32,
                zone,
            });
        }
    }

    for p in model.pointers() {
        let at = locations[p.in_table.index()];
        let target = locations[p.target.index()];
        let value = target.offset as u64;
        let fits = match p.width {
            PointerWidth::Dword => u32::try_from(value).is_ok(),
            PointerWidth::Qword => true,
        };
        if !fits {
            return Err(TableLoaderError::PointerOverflow {
                table: sig_str(&at.name),
                offset: p.offset,
                value,
            });
        }
        let field = at.offset + p.offset;
        let width = p.width.bytes();
        let file = if at.file == RSDP_FILE {
            &mut rsdp
        } else {
            &mut tables
        };
        file[field..field + width].copy_from_slice(&value.to_le_bytes()[..width]);
        commands.push(LoaderCommand::AddPointer {
            pointer_file: at.file,
            pointee_file: target.file,
            offset: to_u32(at.file, field, file.len())?,
            // 4 or 8.
            size: width as u8,
        });
    }

    for c in model.checksums() {
        let at = locations[c.table.index()];
        let file = if at.file == RSDP_FILE {
            &mut rsdp
        } else {
            &mut tables
        };
        let field = at.offset + c.field;
        file[field] = 0;
        let len = file.len();
        commands.push(LoaderCommand::AddChecksum {
            file: at.file,
            result_offset: to_u32(at.file, field, len)?,
            start: to_u32(at.file, at.offset + c.start, len)?,
            length: to_u32(at.file, c.len, len)?,
        });
    }

    let loader = commands.iter().flat_map(|c| c.to_bytes()).collect();
    Ok(LoaderFiles {
        rsdp,
        tables,
        loader,
        commands,
        locations,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{AcpiConfig, MmioWindow, PciHostConfig, TableId, build as build_acpi};
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }
    fn le(b: &[u8]) -> u64 {
        let mut v = [0u8; 8];
        v[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(v)
    }
    fn name_at(b: &[u8]) -> Result<String, String> {
        let end = b
            .iter()
            .position(|&c| c == 0)
            .ok_or("malformed file name")?;
        Ok(String::from_utf8(b[..end].to_vec()).unwrap())
    }

    /// A downloaded blob in the interpreter.
    struct Blob {
        base: u64,
        data: Vec<u8>,
    }

    /// The blobs by name, and the (pointee file, address) of every
    /// ADD_POINTER.
    type Loaded = (BTreeMap<String, Blob>, Vec<(String, u64)>);

    /// Runs a loader script the way OVMF's `QemuFwCfgAcpi.c` does (first
    /// pass), with the same validation. `addr` picks where each file is
    /// "allocated". Returns the blobs and the pointee addresses of every
    /// ADD_POINTER (for the second pass).
    fn run_loader(
        loader: &[u8],
        fw_cfg: &BTreeMap<&str, Vec<u8>>,
        addr: impl Fn(&str, u32, u8) -> u64,
    ) -> Result<Loaded, String> {
        if loader.len() % COMMAND_SIZE != 0 {
            return Err("invalid size".into());
        }
        let mut blobs: BTreeMap<String, Blob> = BTreeMap::new();
        let mut pointees = Vec::new();
        for e in loader.chunks(COMMAND_SIZE) {
            let kind = le(&e[..4]) as u32;
            let c = &e[4..];
            match kind {
                CMD_ALLOCATE => {
                    let file = name_at(&c[..56])?;
                    let align = le(&c[56..60]) as u32;
                    let zone = c[60];
                    if u64::from(align) > 4096 || !align.is_power_of_two() {
                        return Err(format!("unsupported alignment {align}"));
                    }
                    let data = fw_cfg.get(file.as_str()).ok_or("file not found")?.clone();
                    let base = addr(&file, align, zone);
                    assert_eq!(base % u64::from(align), 0, "fake allocator misaligned");
                    if blobs.insert(file.clone(), Blob { base, data }).is_some() {
                        return Err(format!("duplicated file {file}"));
                    }
                }
                CMD_ADD_POINTER => {
                    let pointer = name_at(&c[..56])?;
                    let pointee = name_at(&c[56..112])?;
                    let offset = le(&c[112..116]) as usize;
                    let size = c[116] as usize;
                    let (pointee_base, pointee_size) = {
                        let b = blobs.get(&pointee).ok_or("invalid blob reference")?;
                        (b.base, b.data.len() as u64)
                    };
                    let blob = blobs.get_mut(&pointer).ok_or("invalid blob reference")?;
                    if ![1, 2, 4, 8].contains(&size)
                        || blob.data.len() < size
                        || blob.data.len() - size < offset
                    {
                        return Err("invalid pointer location or size".into());
                    }
                    let field = &mut blob.data[offset..offset + size];
                    let mut value = le(field);
                    if value >= pointee_size {
                        return Err("invalid pointer value".into());
                    }
                    value += pointee_base;
                    if size < 8 && value >> (size * 8) != 0 {
                        return Err("relocated pointer value unrepresentable".into());
                    }
                    field.copy_from_slice(&value.to_le_bytes()[..size]);
                    pointees.push((pointee, value));
                }
                CMD_ADD_CHECKSUM => {
                    let file = name_at(&c[..56])?;
                    let result = le(&c[56..60]) as usize;
                    let start = le(&c[60..64]) as usize;
                    let length = le(&c[64..68]) as usize;
                    let blob = blobs.get_mut(&file).ok_or("invalid blob reference")?;
                    let size = blob.data.len();
                    if size <= result || size < length || size - length < start {
                        return Err("invalid checksum range".into());
                    }
                    // CalculateCheckSum8: 0 - sum, over the range as it is
                    // now (including the result byte).
                    blob.data[result] = sum(&blob.data[start..start + length]).wrapping_neg();
                }
                _ => {} // OVMF skips unknown commands (and zero padding).
            }
        }
        Ok((blobs, pointees))
    }

    /// OVMF's second pass: which tables would be installed (signatures),
    /// skipping RSDT/XSDT and duplicates, requiring a valid header.
    fn installed_tables(blobs: &BTreeMap<String, Blob>, pointees: &[(String, u64)]) -> Vec<String> {
        let mut seen = Vec::new();
        let mut installed = Vec::new();
        for (file, addr) in pointees {
            if seen.contains(addr) {
                continue;
            }
            seen.push(*addr);
            let blob = &blobs[file];
            let rest = &blob.data[(addr - blob.base) as usize..];
            let sig = String::from_utf8_lossy(&rest[..4]).into_owned();
            if sig == "FACS" {
                let len = le(&rest[4..8]) as usize;
                assert!(len >= 64 && len <= rest.len());
                installed.push(sig);
                continue;
            }
            let len = le(&rest[4..8]) as usize;
            assert!(len >= 36 && len <= rest.len(), "{sig}: bad length");
            assert_eq!(sum(&rest[..len]), 0, "{sig}: bad checksum");
            if sig != "RSDT" && sig != "XSDT" {
                installed.push(sig);
            }
        }
        installed
    }

    fn fw_cfg_files(f: &LoaderFiles) -> BTreeMap<&'static str, Vec<u8>> {
        f.files().iter().map(|(n, b)| (*n, b.to_vec())).collect()
    }

    /// The same model with the tables reordered by zone (High first, then
    /// FSeg), so that `place_at` lays them out exactly like the two loader
    /// files placed back to back.
    fn zone_ordered(model: &AcpiTables) -> AcpiTables {
        let mut order: Vec<usize> = (0..model.tables().len()).collect();
        order.sort_by_key(|&i| model.tables()[i].zone() == Zone::FSeg);
        let mut t = AcpiTables::new();
        let mut new_id: BTreeMap<usize, TableId> = BTreeMap::new();
        for &i in &order {
            let b = &model.tables()[i];
            let id = t
                .add_table(b.name(), b.zone(), b.align(), b.bytes().to_vec())
                .unwrap();
            new_id.insert(i, id);
        }
        for p in model.pointers() {
            t.add_pointer(
                new_id[&p.in_table.index()],
                p.offset,
                p.width,
                new_id[&p.target.index()],
            )
            .unwrap();
        }
        for c in model.checksums() {
            t.add_checksum(new_id[&c.table.index()], c.start, c.len, c.field)
                .unwrap();
        }
        t
    }

    fn q35_config() -> AcpiConfig {
        AcpiConfig {
            cpu_count: 4,
            i8042: true,
            cmos_rtc: true,
            pci: Some(PciHostConfig::q35(
                0xb000_0000,
                MmioWindow {
                    base: 0xc000_0000,
                    size: 0x3c00_0000,
                },
            )),
            ..AcpiConfig::default()
        }
    }

    fn models() -> Vec<AcpiTables> {
        vec![
            build_acpi(&AcpiConfig::default()).unwrap(),
            build_acpi(&q35_config()).unwrap(),
        ]
    }

    #[test]
    fn loader_result_equals_place_at_at_the_same_addresses() {
        for model in models() {
            let files = build(&model).unwrap();
            let base = 0x7ff0_0000u64;
            // place_at of the zone-ordered model puts the High tables at
            // `base` with the tables file's layout, then the RSDP.
            let placed = zone_ordered(&model).place_at(base, 0x10_0000).unwrap();
            let tables_len = files.tables.len();
            let rsdp_addr = placed.rsdp_addr;
            assert_eq!(rsdp_addr, (base + tables_len as u64).next_multiple_of(16));

            let (blobs, _) = run_loader(&files.loader, &fw_cfg_files(&files), |f, _, _| {
                if f == TABLES_FILE { base } else { rsdp_addr }
            })
            .unwrap();
            assert_eq!(blobs[TABLES_FILE].data, placed.bytes[..tables_len]);
            let rsdp_off = (rsdp_addr - base) as usize;
            assert_eq!(blobs[RSDP_FILE].data, placed.bytes[rsdp_off..rsdp_off + 36]);
        }
    }

    #[test]
    fn ovmf_would_install_every_table_with_valid_checksums() {
        for (model, expected) in models().into_iter().zip([
            vec!["FACP", "FACS", "DSDT", "APIC"],
            vec!["FACP", "FACS", "DSDT", "APIC", "MCFG"],
        ]) {
            let files = build(&model).unwrap();
            // Page-aligned, far apart, tables below 4 GiB (32-bit pointers).
            let (blobs, pointees) =
                run_loader(&files.loader, &fw_cfg_files(&files), |f, _, zone| {
                    if f == TABLES_FILE {
                        assert_eq!(zone, ALLOC_ZONE_HIGH);
                        0x7fe2_3000
                    } else {
                        assert_eq!(zone, ALLOC_ZONE_FSEG);
                        0xf_5000
                    }
                })
                .unwrap();
            let mut installed = installed_tables(&blobs, &pointees);
            installed.sort();
            let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            expected.sort();
            assert_eq!(installed, expected);

            // Every checksum of the model holds in the loaded blobs.
            for c in model.checksums() {
                let loc = files.locations[c.table.index()];
                let data = &blobs[loc.file].data;
                let start = loc.offset + c.start;
                assert_eq!(sum(&data[start..start + c.len]), 0);
            }
            // RSDP -> XSDT -> FACP/APIC in guest terms.
            let rsdp = &blobs[RSDP_FILE].data;
            assert_eq!(&rsdp[..8], b"RSD PTR ");
            let tables = &blobs[TABLES_FILE];
            let xsdt = (le(&rsdp[24..32]) - tables.base) as usize;
            assert_eq!(&tables.data[xsdt..xsdt + 4], b"XSDT");
            let first = (le(&tables.data[xsdt + 36..xsdt + 44]) - tables.base) as usize;
            assert_eq!(&tables.data[first..first + 4], b"FACP");
        }
    }

    #[test]
    fn file_layout_and_commands() {
        let model = build_acpi(&AcpiConfig::default()).unwrap();
        let f = build(&model).unwrap();
        assert_eq!(f.rsdp.len(), 36);
        assert_eq!(f.loader.len(), f.commands.len() * COMMAND_SIZE);
        assert_eq!(
            f.commands.len(),
            2 + model.pointers().len() + model.checksums().len()
        );
        assert_eq!(
            f.commands[..2],
            [
                LoaderCommand::Allocate {
                    file: TABLES_FILE,
                    align: 64,
                    zone: ALLOC_ZONE_HIGH
                },
                LoaderCommand::Allocate {
                    file: RSDP_FILE,
                    align: 16,
                    zone: ALLOC_ZONE_FSEG
                },
            ]
        );
        // Tables are at their alignment inside the file, in model order.
        let high: Vec<&TableLocation> = f
            .locations
            .iter()
            .filter(|l| l.file == TABLES_FILE)
            .collect();
        assert_eq!(high[0].offset, 0);
        for (l, t) in f.locations.iter().zip(model.tables()) {
            assert_eq!(l.offset as u64 % t.align(), 0);
            let file = if l.file == RSDP_FILE {
                &f.rsdp
            } else {
                &f.tables
            };
            assert_eq!(&file[l.offset..l.offset + 4], &t.bytes()[..4]);
        }
        for w in high.windows(2) {
            assert!(w[0].offset + w[0].len <= w[1].offset);
        }
        // Pointer fields hold the target's offset in its file; checksum
        // bytes are zero.
        for (p, cmd) in model.pointers().iter().zip(&f.commands[2..]) {
            let target = f.locations[p.target.index()];
            let LoaderCommand::AddPointer {
                offset,
                size,
                pointee_file,
                ..
            } = *cmd
            else {
                panic!("{cmd:?}");
            };
            assert_eq!(pointee_file, target.file);
            let at = f.locations[p.in_table.index()];
            let file = if at.file == RSDP_FILE {
                &f.rsdp
            } else {
                &f.tables
            };
            let o = offset as usize;
            assert_eq!(le(&file[o..o + size as usize]), target.offset as u64);
        }
        for c in model.checksums() {
            let at = f.locations[c.table.index()];
            let file = if at.file == RSDP_FILE {
                &f.rsdp
            } else {
                &f.tables
            };
            assert_eq!(file[at.offset + c.field], 0);
        }
    }

    #[test]
    fn command_encoding() {
        let a = LoaderCommand::Allocate {
            file: RSDP_FILE,
            align: 16,
            zone: ALLOC_ZONE_FSEG,
        }
        .to_bytes();
        assert_eq!(&a[..4], &[1, 0, 0, 0]);
        assert_eq!(&a[4..4 + RSDP_FILE.len()], RSDP_FILE.as_bytes());
        assert!(a[4 + RSDP_FILE.len()..60].iter().all(|&b| b == 0));
        assert_eq!(&a[60..65], &[16, 0, 0, 0, 2]);
        assert!(a[65..].iter().all(|&b| b == 0));

        let p = LoaderCommand::AddPointer {
            pointer_file: RSDP_FILE,
            pointee_file: TABLES_FILE,
            offset: 0x0102_0304,
            size: 8,
        }
        .to_bytes();
        assert_eq!(&p[..4], &[2, 0, 0, 0]);
        assert_eq!(&p[60..60 + TABLES_FILE.len()], TABLES_FILE.as_bytes());
        assert_eq!(&p[116..121], &[4, 3, 2, 1, 8]);
        assert!(p[121..].iter().all(|&b| b == 0));

        let c = LoaderCommand::AddChecksum {
            file: TABLES_FILE,
            result_offset: 9,
            start: 0x100,
            length: 0x24,
        }
        .to_bytes();
        assert_eq!(&c[..4], &[3, 0, 0, 0]);
        assert_eq!(&c[60..72], &[9, 0, 0, 0, 0, 1, 0, 0, 0x24, 0, 0, 0]);
        assert!(c[72..].iter().all(|&b| b == 0));
    }

    #[test]
    fn padding_is_harmless() {
        let model = build_acpi(&q35_config()).unwrap();
        let mut f = build(&model).unwrap();
        let unpadded = f.tables.len();
        f.pad_tables(DEFAULT_TABLES_SIZE);
        assert_eq!(f.tables.len(), DEFAULT_TABLES_SIZE);
        assert!(f.tables[unpadded..].iter().all(|&b| b == 0));
        f.pad_tables(16);
        assert_eq!(f.tables.len(), DEFAULT_TABLES_SIZE, "never shrinks");
        // Loader script padded with zero entries (as the fw_cfg device
        // pads a shorter rebuild) still works.
        let mut loader = f.loader.clone();
        loader.resize(loader.len() + 4 * COMMAND_SIZE, 0);
        let (blobs, pointees) = run_loader(&loader, &fw_cfg_files(&f), |n, _, _| {
            if n == TABLES_FILE {
                0x1000_0000
            } else {
                0xf_0000
            }
        })
        .unwrap();
        assert_eq!(installed_tables(&blobs, &pointees).len(), 5);
    }

    #[test]
    fn errors() {
        let mut t = AcpiTables::new();
        t.add_table(*b"FACP", Zone::High, 8, vec![0; 36]).unwrap();
        assert_eq!(build(&t), Err(TableLoaderError::NoRsdp));
        t.add_table(*b"RSDP", Zone::FSeg, 16, vec![0; 36]).unwrap();
        assert!(build(&t).is_ok());
        t.add_table(*b"BIGA", Zone::High, 8192, vec![0; 36])
            .unwrap();
        assert_eq!(
            build(&t),
            Err(TableLoaderError::AlignmentTooLarge {
                table: "BIGA".into(),
                align: 8192
            })
        );
    }

    #[test]
    fn table_alignment_raises_file_alignment() {
        let mut t = AcpiTables::new();
        let r = t.add_table(*b"RSDP", Zone::FSeg, 32, vec![0; 36]).unwrap();
        let a = t.add_table(*b"AAAA", Zone::High, 8, vec![1; 40]).unwrap();
        let b = t.add_table(*b"BBBB", Zone::High, 256, vec![2; 40]).unwrap();
        t.add_pointer(r, 24, PointerWidth::Qword, b).unwrap();
        t.add_pointer(a, 36, PointerWidth::Dword, b).unwrap();
        let f = build(&t).unwrap();
        assert_eq!(f.locations[2].offset, 256);
        assert_eq!(&f.tables[36..40], &256u32.to_le_bytes());
        assert_eq!(&f.rsdp[24..32], &256u64.to_le_bytes());
        assert!(matches!(
            f.commands[0],
            LoaderCommand::Allocate { align: 256, .. }
        ));
        assert!(matches!(
            f.commands[1],
            LoaderCommand::Allocate { align: 32, .. }
        ));
    }
}
