//! Layout-independent model of a set of ACPI tables.
//!
//! Every table is its own byte blob. Whatever depends on where the tables end
//! up in guest memory is kept aside as a list of pointer fix-ups and checksum
//! ranges. Two back-ends consume this model:
//!
//! * [`AcpiTables::place_at`] puts all blobs in one contiguous guest-physical
//!   range, writes the pointers and computes the checksums (direct kernel
//!   boot).
//! * A fw_cfg `etc/table-loader` back-end (added later) turns the same lists
//!   into QEMU linker/loader commands: one ALLOCATE per zone, one
//!   ADD_POINTER per [`TablePointer`] and one ADD_CHECKSUM per
//!   [`TableChecksum`], in list order.
//!
//! A pointer always points at the start of its target table. Checksums are
//! applied after all pointers, in the order they were added. This order
//! matters when ranges nest: the RSDP's 20-byte checksum must come before its
//! extended checksum.

use super::AcpiError;

/// Where a table lives. This matches the zones of QEMU's table-loader
/// ALLOCATE command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// The legacy BIOS F-segment (0xe0000..0x100000), where an OS scans for
    /// the RSDP. Only the RSDP goes here.
    FSeg,
    /// Anywhere in guest RAM. Every other table goes here.
    High,
}

/// Width of a pointer field inside a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointerWidth {
    /// 32-bit field, for example FADT.DSDT or FADT.FIRMWARE_CTRL.
    Dword,
    /// 64-bit field, for example XSDT entries or FADT.X_DSDT.
    Qword,
}

impl PointerWidth {
    /// Size of the field in bytes (4 or 8).
    pub fn bytes(self) -> usize {
        match self {
            PointerWidth::Dword => 4,
            PointerWidth::Qword => 8,
        }
    }

    /// The largest address the field can hold.
    fn max_addr(self) -> u64 {
        match self {
            PointerWidth::Dword => u64::from(u32::MAX),
            PointerWidth::Qword => u64::MAX,
        }
    }
}

/// Index of a table inside an [`AcpiTables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableId(usize);

impl TableId {
    /// Position of the table in [`AcpiTables::tables`].
    pub fn index(self) -> usize {
        self.0
    }
}

/// One ACPI table as bytes, before placement.
///
/// Pointer fields and checksum fields in `bytes` hold placeholders (zero);
/// the back-ends fill them in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableBlob {
    name: [u8; 4],
    zone: Zone,
    align: u64,
    bytes: Vec<u8>,
}

impl TableBlob {
    /// Table signature (`b"RSDP"` stands for the 8-byte `"RSD PTR "`).
    pub fn name(&self) -> [u8; 4] {
        self.name
    }

    /// Zone the table must be allocated in.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// Required alignment of the table's start address (a power of two).
    pub fn align(&self) -> u64 {
        self.align
    }

    /// The table's bytes, with pointers and checksums not yet filled in.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// "Write the address of table `target` into `in_table` at `offset`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablePointer {
    /// Table holding the pointer field.
    pub in_table: TableId,
    /// Byte offset of the field inside `in_table`.
    pub offset: usize,
    /// Size of the field.
    pub width: PointerWidth,
    /// Table whose start address goes into the field.
    pub target: TableId,
}

/// "Set the byte at `field` so that bytes `start..start + len` of `table`
/// sum to zero".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableChecksum {
    /// Table holding the checksummed range and the checksum byte.
    pub table: TableId,
    /// First byte of the range.
    pub start: usize,
    /// Length of the range in bytes.
    pub len: usize,
    /// Offset of the checksum byte (inside the range).
    pub field: usize,
}

/// Offset of the checksum byte in a standard 36-byte ACPI table header.
pub const SDT_CHECKSUM_OFFSET: usize = 9;

/// A set of ACPI tables with the pointer fix-ups and checksums between them.
///
/// [`build`](super::build) creates the standard set; the methods below let
/// later code add more tables (for example MCFG) to the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcpiTables {
    tables: Vec<TableBlob>,
    pointers: Vec<TablePointer>,
    checksums: Vec<TableChecksum>,
}

/// One table inside [`PlacedTables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedTable {
    /// Table signature, as in [`TableBlob::name`].
    pub name: [u8; 4],
    /// Guest-physical address of the table.
    pub addr: u64,
    /// Length of the table in bytes.
    pub len: usize,
}

/// The result of [`AcpiTables::place_at`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedTables {
    /// Guest-physical address of the RSDP.
    pub rsdp_addr: u64,
    /// Guest-physical address where `bytes` must be written.
    pub base: u64,
    /// All tables, with pointers and checksums filled in, to be written at
    /// `base`. Gaps from alignment are zero.
    pub bytes: Vec<u8>,
    /// Where each table went, in table order.
    pub tables: Vec<PlacedTable>,
}

impl PlacedTables {
    /// The bytes of the table at position `index` (as in [`Self::tables`]).
    pub fn table_bytes(&self, index: usize) -> Option<&[u8]> {
        let t = self.tables.get(index)?;
        let start = usize::try_from(t.addr - self.base).ok()?;
        self.bytes.get(start..start + t.len)
    }

    /// The bytes of the first table with signature `name`.
    pub fn find(&self, name: &[u8; 4]) -> Option<&[u8]> {
        let index = self.tables.iter().position(|t| &t.name == name)?;
        self.table_bytes(index)
    }
}

/// Printable form of a table signature, for errors and logs.
pub(crate) fn sig_str(name: &[u8; 4]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

impl AcpiTables {
    /// An empty set of tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a table blob and returns its id. `align` must be a power of two.
    pub fn add_table(
        &mut self,
        name: [u8; 4],
        zone: Zone,
        align: u64,
        bytes: Vec<u8>,
    ) -> Result<TableId, AcpiError> {
        if !align.is_power_of_two() {
            return Err(AcpiError::BadAlignment {
                table: sig_str(&name),
                align,
            });
        }
        self.tables.push(TableBlob {
            name,
            zone,
            align,
            bytes,
        });
        Ok(TableId(self.tables.len() - 1))
    }

    fn check_range(
        &self,
        what: &'static str,
        id: TableId,
        offset: usize,
        len: usize,
    ) -> Result<(), AcpiError> {
        let table = self.tables.get(id.0).ok_or(AcpiError::UnknownTable(id.0))?;
        match offset.checked_add(len) {
            Some(end) if end <= table.bytes.len() => Ok(()),
            _ => Err(AcpiError::OutOfBounds {
                what,
                table: sig_str(&table.name),
                offset,
                len,
                table_len: table.bytes.len(),
            }),
        }
    }

    /// Records that the field at `offset` in `in_table` holds the address of
    /// `target`.
    pub fn add_pointer(
        &mut self,
        in_table: TableId,
        offset: usize,
        width: PointerWidth,
        target: TableId,
    ) -> Result<(), AcpiError> {
        self.check_range("pointer", in_table, offset, width.bytes())?;
        if target.0 >= self.tables.len() {
            return Err(AcpiError::UnknownTable(target.0));
        }
        self.pointers.push(TablePointer {
            in_table,
            offset,
            width,
            target,
        });
        Ok(())
    }

    /// Records a checksum byte at `field` covering `start..start + len` of
    /// `table`.
    pub fn add_checksum(
        &mut self,
        table: TableId,
        start: usize,
        len: usize,
        field: usize,
    ) -> Result<(), AcpiError> {
        self.check_range("checksum range", table, start, len)?;
        if field < start || field - start >= len {
            return Err(AcpiError::ChecksumFieldOutsideRange {
                table: sig_str(&self.tables[table.0].name),
                field,
                start,
                len,
            });
        }
        self.checksums.push(TableChecksum {
            table,
            start,
            len,
            field,
        });
        Ok(())
    }

    /// Records the standard checksum of a table with a 36-byte ACPI header:
    /// the byte at offset 9 over the whole table.
    pub fn add_sdt_checksum(&mut self, table: TableId) -> Result<(), AcpiError> {
        let len = self
            .tables
            .get(table.0)
            .ok_or(AcpiError::UnknownTable(table.0))?
            .bytes
            .len();
        self.add_checksum(table, 0, len, SDT_CHECKSUM_OFFSET)
    }

    /// All tables, in order.
    pub fn tables(&self) -> &[TableBlob] {
        &self.tables
    }

    /// All pointer fix-ups, in order.
    pub fn pointers(&self) -> &[TablePointer] {
        &self.pointers
    }

    /// All checksums, in the order they must be computed.
    pub fn checksums(&self) -> &[TableChecksum] {
        &self.checksums
    }

    /// The table with the given id.
    pub fn table(&self, id: TableId) -> Option<&TableBlob> {
        self.tables.get(id.0)
    }

    /// The id of the first table with signature `name`.
    pub fn find(&self, name: &[u8; 4]) -> Option<TableId> {
        self.tables
            .iter()
            .position(|t| &t.name == name)
            .map(TableId)
    }

    /// Names of the tables in order, for logs/tests. The RSDP appears as
    /// `b"RSDP"`.
    pub fn signatures(&self) -> Vec<[u8; 4]> {
        self.tables.iter().map(|t| t.name).collect()
    }

    /// Lays the tables out contiguously at guest-physical `base`, in table
    /// order, each at its alignment, using at most `limit` bytes. Then writes
    /// every pointer and computes every checksum.
    ///
    /// The model must contain a table named `b"RSDP"`; its address is
    /// returned as [`PlacedTables::rsdp_addr`]. [`build`](super::build) puts
    /// the RSDP first, so with a 16-byte aligned `base` the RSDP is at
    /// `base`. Fails with [`AcpiError::NoRoom`] if more than `limit` bytes
    /// are needed, and with [`AcpiError::PointerOverflow`] if a table that a
    /// 32-bit field points at would lie above 4 GiB.
    pub fn place_at(&self, base: u64, limit: u64) -> Result<PlacedTables, AcpiError> {
        let overflow = AcpiError::AddressOverflow { base };
        let mut placed = Vec::with_capacity(self.tables.len());
        let mut cursor = base;
        for table in &self.tables {
            let addr = align_up(cursor, table.align).ok_or(overflow.clone())?;
            let len = u64::try_from(table.bytes.len()).map_err(|_| overflow.clone())?;
            cursor = addr.checked_add(len).ok_or(overflow.clone())?;
            placed.push(PlacedTable {
                name: table.name,
                addr,
                len: table.bytes.len(),
            });
        }
        let needed = cursor - base;
        if needed > limit {
            return Err(AcpiError::NoRoom {
                base,
                needed,
                limit,
            });
        }
        let rsdp_addr = placed
            .iter()
            .find(|t| &t.name == b"RSDP")
            .map(|t| t.addr)
            .ok_or(AcpiError::NoRsdp)?;

        let total = usize::try_from(needed).map_err(|_| overflow.clone())?;
        let mut bytes = vec![0u8; total];
        // Offsets of each table inside `bytes`; all fit in usize because
        // `total` does.
        let starts: Vec<usize> = placed.iter().map(|t| (t.addr - base) as usize).collect();
        for (table, &start) in self.tables.iter().zip(&starts) {
            bytes[start..start + table.bytes.len()].copy_from_slice(&table.bytes);
        }

        for p in &self.pointers {
            let target = placed[p.target.0].addr;
            if target > p.width.max_addr() {
                return Err(AcpiError::PointerOverflow {
                    table: sig_str(&placed[p.in_table.0].name),
                    offset: p.offset,
                    target: sig_str(&placed[p.target.0].name),
                    addr: target,
                });
            }
            let at = starts[p.in_table.0] + p.offset;
            let width = p.width.bytes();
            bytes[at..at + width].copy_from_slice(&target.to_le_bytes()[..width]);
        }

        for c in &self.checksums {
            let start = starts[c.table.0];
            let range = start + c.start..start + c.start + c.len;
            bytes[start + c.field] = 0;
            let sum = bytes[range].iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
            bytes[start + c.field] = sum.wrapping_neg();
        }

        Ok(PlacedTables {
            rsdp_addr,
            base,
            bytes,
            tables: placed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    fn sample() -> (AcpiTables, TableId, TableId, TableId) {
        let mut t = AcpiTables::new();
        let rsdp = t.add_table(*b"RSDP", Zone::FSeg, 16, vec![1; 20]).unwrap();
        let a = t.add_table(*b"AAAA", Zone::High, 8, vec![2; 40]).unwrap();
        let b = t.add_table(*b"BBBB", Zone::High, 64, vec![3; 64]).unwrap();
        t.add_pointer(rsdp, 4, PointerWidth::Qword, a).unwrap();
        t.add_pointer(a, 36, PointerWidth::Dword, b).unwrap();
        t.add_sdt_checksum(a).unwrap();
        t.add_checksum(rsdp, 0, 12, 0).unwrap();
        t.add_checksum(rsdp, 0, 20, 19).unwrap();
        (t, rsdp, a, b)
    }

    #[test]
    fn layout_alignment_pointers_and_checksums() {
        let (t, _, _, _) = sample();
        let p = t.place_at(0x1004, 0x1000).unwrap();
        assert_eq!(p.base, 0x1004);
        assert_eq!(p.rsdp_addr, 0x1010);
        let addrs: Vec<u64> = p.tables.iter().map(|t| t.addr).collect();
        // RSDP 0x1010..0x1024, AAAA at 0x1028..0x1050, BBBB 64-aligned.
        assert_eq!(addrs, vec![0x1010, 0x1028, 0x1080]);
        assert_eq!(p.bytes.len(), 0x1080 + 64 - 0x1004);
        // Padding stays zero.
        assert!(p.bytes[..0xc].iter().all(|&b| b == 0));

        let rsdp = p.table_bytes(0).unwrap();
        assert_eq!(&rsdp[4..12], &0x1028u64.to_le_bytes());
        assert_eq!(sum(&rsdp[..12]), 0);
        assert_eq!(sum(rsdp), 0);
        let a = p.find(b"AAAA").unwrap();
        assert_eq!(&a[36..40], &0x1080u32.to_le_bytes());
        assert_eq!(sum(a), 0);
        // BBBB has no checksum and is untouched.
        assert_eq!(p.find(b"BBBB").unwrap(), &[3u8; 64][..]);
    }

    #[test]
    fn limit_is_enforced() {
        let (t, _, _, _) = sample();
        let needed = t.place_at(0x1000, u64::MAX).unwrap().bytes.len() as u64;
        assert!(t.place_at(0x1000, needed).is_ok());
        assert_eq!(
            t.place_at(0x1000, needed - 1),
            Err(AcpiError::NoRoom {
                base: 0x1000,
                needed,
                limit: needed - 1
            })
        );
    }

    #[test]
    fn dword_pointer_above_4g_fails() {
        let (t, _, _, _) = sample();
        let err = t.place_at(0xffff_ffc0, 0x1000).unwrap_err();
        assert!(matches!(err, AcpiError::PointerOverflow { .. }), "{err}");
        assert!(matches!(
            t.place_at(u64::MAX - 8, 0x1000),
            Err(AcpiError::AddressOverflow { .. })
        ));
    }

    #[test]
    fn invalid_fixups_are_rejected() {
        let (mut t, rsdp, a, _) = sample();
        assert!(matches!(
            t.add_pointer(rsdp, 16, PointerWidth::Qword, a),
            Err(AcpiError::OutOfBounds { .. })
        ));
        assert!(matches!(
            t.add_pointer(rsdp, 0, PointerWidth::Dword, TableId(9)),
            Err(AcpiError::UnknownTable(9))
        ));
        assert!(matches!(
            t.add_checksum(rsdp, 0, 21, 9),
            Err(AcpiError::OutOfBounds { .. })
        ));
        assert!(matches!(
            t.add_checksum(rsdp, 0, 8, 9),
            Err(AcpiError::ChecksumFieldOutsideRange { field: 9, .. })
        ));
        assert!(matches!(
            t.add_table(*b"CCCC", Zone::High, 12, vec![]),
            Err(AcpiError::BadAlignment { align: 12, .. })
        ));
    }

    #[test]
    fn missing_rsdp_is_an_error() {
        let mut t = AcpiTables::new();
        t.add_table(*b"AAAA", Zone::High, 8, vec![0; 36]).unwrap();
        assert_eq!(t.place_at(0, 0x100), Err(AcpiError::NoRsdp));
    }
}
