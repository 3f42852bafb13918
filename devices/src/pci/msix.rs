//! MSI-X capability, vector table and pending-bit array.
//!
//! [`MsixCapability::add`] puts an MSI-X capability (ID 0x11) into a
//! function's [`PciConfiguration`] pointing at a vector table and a
//! pending-bit array (PBA) inside the function's memory BARs. The table
//! and PBA live in this struct; the device forwards accesses to them from
//! its [`PciDevice::bar_read`](super::PciDevice::bar_read) /
//! [`bar_write`](super::PciDevice::bar_write) through
//! [`MsixCapability::bar_read`] / [`MsixCapability::bar_write`] (or the
//! `table_*` / `pba_*` helpers, with offsets relative to the table or PBA),
//! and calls [`MsixCapability::config_written`] after each configuration
//! write so the enable and function-mask bits take effect.
//!
//! A vector is *live* when MSI-X is enabled, the function is not masked
//! and the vector's own mask bit is clear; live vectors route to the
//! message in their table entry, others to nothing. Every route change is
//! reported as a [`PciChange::Msi`]. [`MsixCapability::trigger`] returns
//! the message to send for a live vector, or sets the vector's pending bit
//! when it is masked; when a pending vector becomes live again its bit is
//! cleared and it appears in [`InterruptUpdate::fire`] (the device must
//! send it).
//!
//! Table entries start masked, as the specification requires.

use thiserror::Error;

use super::config::{ConfigError, PciConfiguration};
use super::msi::InterruptUpdate;
use super::{BarKind, MsiMessage, PciChange};

/// Capability ID of MSI-X.
pub const MSIX_CAPABILITY_ID: u8 = 0x11;
/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Largest table.
pub const MSIX_MAX_VECTORS: u16 = 2048;
/// Message control: MSI-X enable.
pub const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const MSIX_CONTROL_FUNCTION_MASK: u16 = 1 << 14;

/// Writable bits of the four dwords of a table entry (address low bits
/// 1:0 are zero; only the mask bit of vector control is implemented).
const ENTRY_MASKS: [u32; 4] = [0xffff_fffc, 0xffff_ffff, 0xffff_ffff, 0x1];
/// Bytes of the capability.
const CAPABILITY_LEN: usize = 12;

/// Errors adding an MSI-X capability.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MsixError {
    /// The table size is not 1..=2048.
    #[error("MSI-X table size {0} is not between 1 and 2048")]
    BadTableSize(u16),
    /// The BAR index is not a memory BAR declared in the configuration.
    #[error("BAR {0} is not a memory BAR of this function")]
    NotMemoryBar(u8),
    /// The table or PBA offset is not 8-byte aligned.
    #[error("MSI-X structure offset {0:#x} is not 8-byte aligned")]
    Misaligned(u64),
    /// The table or PBA does not fit in its BAR.
    #[error("MSI-X structure at {offset:#x}+{len:#x} does not fit in BAR {bar}")]
    DoesNotFit {
        /// The BAR.
        bar: u8,
        /// Offset in the BAR.
        offset: u64,
        /// Length of the structure.
        len: u64,
    },
    /// The table and PBA overlap.
    #[error("MSI-X table and PBA overlap")]
    Overlap,
    /// The configuration space has no room for the capability.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// One table entry, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
    /// The vector's mask bit.
    pub masked: bool,
}

/// An MSI-X capability with its table and PBA; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct MsixCapability {
    offset: u16,
    table_bar: u8,
    table_offset: u64,
    pba_bar: u8,
    pba_offset: u64,
    /// Raw entries: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    routes: Vec<Option<MsiMessage>>,
}

impl MsixCapability {
    /// Add an MSI-X capability with `vectors` table entries to `config`.
    /// The table is at `table.1` in BAR `table.0`, the PBA at `pba.1` in
    /// BAR `pba.0`; both BARs must already be declared as memory BARs and
    /// both structures must fit in them without overlapping.
    pub fn add(
        config: &mut PciConfiguration,
        vectors: u16,
        table: (u8, u64),
        pba: (u8, u64),
    ) -> Result<Self, MsixError> {
        if vectors == 0 || vectors > MSIX_MAX_VECTORS {
            return Err(MsixError::BadTableSize(vectors));
        }
        let table_len = u64::from(vectors) * MSIX_ENTRY_SIZE;
        let pba_len = pba_len(vectors);
        check_structure(config, table.0, table.1, table_len)?;
        check_structure(config, pba.0, pba.1, pba_len)?;
        if table.0 == pba.0 && table.1 < pba.1 + pba_len && pba.1 < table.1 + table_len {
            return Err(MsixError::Overlap);
        }
        let mut body = Vec::with_capacity(CAPABILITY_LEN - 2);
        body.extend_from_slice(&(vectors - 1).to_le_bytes());
        body.extend_from_slice(&(table.1 as u32 | u32::from(table.0)).to_le_bytes());
        body.extend_from_slice(&(pba.1 as u32 | u32::from(pba.0)).to_le_bytes());
        let offset = config.add_capability(MSIX_CAPABILITY_ID, &body)?;
        config.set_writable_mask(
            offset + 2,
            &(MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK).to_le_bytes(),
        )?;
        Ok(Self {
            offset,
            table_bar: table.0,
            table_offset: table.1,
            pba_bar: pba.0,
            pba_offset: pba.1,
            table: vec![[0, 0, 0, 1]; usize::from(vectors)],
            pending: vec![0; pba_len as usize / 8],
            enabled: false,
            function_masked: false,
            routes: vec![None; usize::from(vectors)],
        })
    }

    /// Emulate an MSI-X capability that already sits at `offset` of
    /// `config` (a passed-through function's): the table size and the
    /// table/PBA locations come from the capability itself. Enable and
    /// function mask start clear and become guest-writable; the table
    /// starts with every vector masked. The BARs must already be declared.
    pub fn at(config: &mut PciConfiguration, offset: u16) -> Result<Self, MsixError> {
        let control = config.read_u16(offset + 2);
        let vectors = (control & 0x7ff) + 1;
        let table = config.read_u32(offset + 4);
        let pba = config.read_u32(offset + 8);
        let table = ((table & 0x7) as u8, u64::from(table & !0x7));
        let pba = ((pba & 0x7) as u8, u64::from(pba & !0x7));
        let table_len = u64::from(vectors) * MSIX_ENTRY_SIZE;
        check_structure(config, table.0, table.1, table_len)?;
        check_structure(config, pba.0, pba.1, pba_len(vectors))?;
        config.set_u16(offset + 2, control & 0x7ff);
        config.set_writable_mask(
            offset + 2,
            &(MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK).to_le_bytes(),
        )?;
        Ok(Self {
            offset,
            table_bar: table.0,
            table_offset: table.1,
            pba_bar: pba.0,
            pba_offset: pba.1,
            table: vec![[0, 0, 0, 1]; usize::from(vectors)],
            pending: vec![0; pba_len(vectors) as usize / 8],
            enabled: false,
            function_masked: false,
            routes: vec![None; usize::from(vectors)],
        })
    }

    /// Offset of the capability in configuration space.
    pub fn offset(&self) -> u16 {
        self.offset
    }

    /// Number of table entries.
    pub fn vectors(&self) -> u16 {
        self.table.len() as u16
    }

    /// (BAR, offset, length) of the vector table.
    pub fn table_location(&self) -> (u8, u64, u64) {
        let len = self.table.len() as u64 * MSIX_ENTRY_SIZE;
        (self.table_bar, self.table_offset, len)
    }

    /// (BAR, offset, length) of the pending-bit array.
    pub fn pba_location(&self) -> (u8, u64, u64) {
        (self.pba_bar, self.pba_offset, self.pending.len() as u64 * 8)
    }

    /// True when the guest enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// True when the guest set the function mask.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Table entry `vector`, decoded.
    pub fn entry(&self, vector: u16) -> Option<MsixEntry> {
        let e = self.table.get(usize::from(vector))?;
        Some(MsixEntry {
            address: (u64::from(e[1]) << 32) | u64::from(e[0]),
            data: e[2],
            masked: e[3] & 1 != 0,
        })
    }

    /// True when vector `vector` has its pending bit set.
    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pending
            .get(v / 64)
            .is_some_and(|q| q & (1 << (v % 64)) != 0)
    }

    fn set_pending(&mut self, vector: u16, pending: bool) {
        let v = usize::from(vector);
        if let Some(q) = self.pending.get_mut(v / 64) {
            if pending {
                *q |= 1 << (v % 64);
            } else {
                *q &= !(1 << (v % 64));
            }
        }
    }

    /// The routes as last reported, indexed by vector.
    pub fn routes(&self) -> &[Option<MsiMessage>] {
        &self.routes
    }

    fn live(&self, vector: u16) -> Option<MsiMessage> {
        let e = self.entry(vector)?;
        (self.enabled && !self.function_masked && !e.masked).then_some(MsiMessage {
            address: e.address,
            data: e.data,
        })
    }

    fn refresh(&mut self, vectors: std::ops::Range<u16>) -> InterruptUpdate {
        let mut update = InterruptUpdate::default();
        for vector in vectors {
            let route = self.live(vector);
            let Some(slot) = self.routes.get_mut(usize::from(vector)) else {
                break;
            };
            if *slot != route {
                *slot = route;
                update.changes.push(PciChange::Msi {
                    vector,
                    message: route,
                });
            }
            if let Some(message) = route {
                if self.is_pending(vector) {
                    self.set_pending(vector, false);
                    update.fire.push((vector, message));
                }
            }
        }
        update
    }

    /// Call after every configuration write of `len` bytes at `offset`
    /// (after [`PciConfiguration::write`]): picks up the enable and
    /// function-mask bits and reports what they changed.
    pub fn config_written(
        &mut self,
        config: &PciConfiguration,
        offset: u16,
        len: usize,
    ) -> InterruptUpdate {
        let start = usize::from(offset);
        let cap = usize::from(self.offset);
        if start + len <= cap || start >= cap + CAPABILITY_LEN {
            return InterruptUpdate::default();
        }
        let control = config.read_u16(self.offset + 2);
        let enabled = control & MSIX_CONTROL_ENABLE != 0;
        let masked = control & MSIX_CONTROL_FUNCTION_MASK != 0;
        if (enabled, masked) == (self.enabled, self.function_masked) {
            return InterruptUpdate::default();
        }
        self.enabled = enabled;
        self.function_masked = masked;
        self.refresh(0..self.vectors())
    }

    /// Read the vector table at `offset` (relative to the table's start);
    /// bytes beyond the table read as zero.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let pos = offset.saturating_add(i as u64);
            *b = self.table_byte(pos).unwrap_or(0);
        }
    }

    fn table_byte(&self, pos: u64) -> Option<u8> {
        let entry = self
            .table
            .get(usize::try_from(pos / MSIX_ENTRY_SIZE).ok()?)?;
        let dword = entry[(pos % MSIX_ENTRY_SIZE / 4) as usize];
        Some((dword >> (8 * (pos % 4))) as u8)
    }

    /// Write the vector table at `offset` (relative to the table's start);
    /// reports the route changes and pending vectors unmasked by it.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) -> InterruptUpdate {
        let mut first = u16::MAX;
        let mut last = 0u16;
        for (i, &v) in data.iter().enumerate() {
            let pos = offset.saturating_add(i as u64);
            let Ok(index) = usize::try_from(pos / MSIX_ENTRY_SIZE) else {
                continue;
            };
            let Some(entry) = self.table.get_mut(index) else {
                continue;
            };
            let field = (pos % MSIX_ENTRY_SIZE / 4) as usize;
            let shift = 8 * (pos % 4);
            let mask = ENTRY_MASKS[field] & (0xff << shift);
            entry[field] = (entry[field] & !mask) | ((u32::from(v) << shift) & mask);
            first = first.min(index as u16);
            last = last.max(index as u16);
        }
        if first > last {
            return InterruptUpdate::default();
        }
        self.refresh(first..last + 1)
    }

    /// Read the pending-bit array at `offset` (relative to its start);
    /// bytes beyond it read as zero.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let pos = offset.saturating_add(i as u64);
            *b = usize::try_from(pos / 8)
                .ok()
                .and_then(|q| self.pending.get(q))
                .map_or(0, |q| (q >> (8 * (pos % 8))) as u8);
        }
    }

    /// Read the PBA at `offset` where a vector is also pending when
    /// `pending(vector)` says so (a device whose interrupts wait in
    /// eventfds, see [`crate::interrupt::MsiVectors::is_pending`]).
    pub fn pba_read_with(&self, offset: u64, data: &mut [u8], pending: impl Fn(u16) -> bool) {
        self.pba_read(offset, data);
        for (i, b) in data.iter_mut().enumerate() {
            let first = offset.saturating_add(i as u64).saturating_mul(8);
            for bit in 0..8u64 {
                let v = first.saturating_add(bit);
                if v < u64::from(self.vectors()) && pending(v as u16) {
                    *b |= 1 << bit;
                }
            }
        }
    }

    /// Read BAR `bar` at `offset` if it hits the table or the PBA; returns
    /// false (leaving `data` alone) otherwise.
    pub fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) -> bool {
        let (tb, to, tl) = self.table_location();
        let (pb, po, pl) = self.pba_location();
        if bar == tb && (to..to + tl).contains(&offset) {
            self.table_read(offset - to, data);
            true
        } else if bar == pb && (po..po + pl).contains(&offset) {
            self.pba_read(offset - po, data);
            true
        } else {
            false
        }
    }

    /// Write BAR `bar` at `offset` if it hits the table (the PBA is
    /// read-only: such writes are dropped); `None` when it hits neither.
    pub fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> Option<InterruptUpdate> {
        let (tb, to, tl) = self.table_location();
        let (pb, po, pl) = self.pba_location();
        if bar == tb && (to..to + tl).contains(&offset) {
            Some(self.table_write(offset - to, data))
        } else if bar == pb && (po..po + pl).contains(&offset) {
            Some(InterruptUpdate::default())
        } else {
            None
        }
    }

    /// The device raises `vector`: returns the message to send, or `None`
    /// when MSI-X is disabled or there is no such vector (nothing happens)
    /// or the vector or function is masked (the pending bit is set and the
    /// vector fires when unmasked).
    pub fn trigger(&mut self, vector: u16) -> Option<MsiMessage> {
        let entry = self.entry(vector)?;
        if !self.enabled {
            return None;
        }
        if self.function_masked || entry.masked {
            self.set_pending(vector, true);
            return None;
        }
        Some(MsiMessage {
            address: entry.address,
            data: entry.data,
        })
    }
}

/// Bytes of the PBA for `vectors` vectors (whole qwords).
fn pba_len(vectors: u16) -> u64 {
    u64::from(vectors).div_ceil(64) * 8
}

fn check_structure(
    config: &PciConfiguration,
    bar: u8,
    offset: u64,
    len: u64,
) -> Result<(), MsixError> {
    let info = config
        .bar(bar)
        .filter(|b| b.kind != BarKind::Io && usize::from(bar) < super::config::NUM_BARS)
        .ok_or(MsixError::NotMemoryBar(bar))?;
    if offset % 8 != 0 {
        return Err(MsixError::Misaligned(offset));
    }
    if offset.checked_add(len).is_none_or(|end| end > info.size) {
        return Err(MsixError::DoesNotFit { bar, offset, len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciDevice;
    use crate::pci::config::test_endpoint::TestEndpoint;

    const TABLE_BAR: u8 = 0;

    /// A function with a 64-bit BAR 0 holding a `vectors`-entry table at 0
    /// and the PBA at 0x800.
    fn endpoint(vectors: u16) -> (TestEndpoint, u16) {
        let mut ep = TestEndpoint::new(0x20, true);
        ep.config
            .add_bar(
                TABLE_BAR,
                BarKind::Mem64 {
                    prefetchable: false,
                },
                0x1000,
            )
            .unwrap();
        let msix = MsixCapability::add(&mut ep.config, vectors, (0, 0), (0, 0x800)).unwrap();
        let off = msix.offset();
        ep.msix = Some(msix);
        (ep, off)
    }

    fn control(ep: &mut TestEndpoint, off: u16, value: u16) -> Vec<PciChange> {
        ep.config_write(off + 2, &value.to_le_bytes())
    }

    fn program(
        ep: &mut TestEndpoint,
        vector: u64,
        address: u64,
        data: u32,
        masked: bool,
    ) -> Vec<PciChange> {
        let base = vector * MSIX_ENTRY_SIZE;
        let mut changes = ep.bar_write(TABLE_BAR, base, &(address as u32).to_le_bytes());
        changes.extend(ep.bar_write(TABLE_BAR, base + 4, &((address >> 32) as u32).to_le_bytes()));
        changes.extend(ep.bar_write(TABLE_BAR, base + 8, &data.to_le_bytes()));
        changes.extend(ep.bar_write(TABLE_BAR, base + 12, &u32::from(masked).to_le_bytes()));
        changes
    }

    fn route(vector: u16, address: u64, data: u32) -> PciChange {
        PciChange::Msi {
            vector,
            message: Some(MsiMessage { address, data }),
        }
    }

    fn unrouted(vector: u16) -> PciChange {
        PciChange::Msi {
            vector,
            message: None,
        }
    }

    #[test]
    fn capability_body() {
        let (mut ep, off) = endpoint(5);
        assert_eq!(ep.config.find_capability(MSIX_CAPABILITY_ID), Some(off));
        let mut b = [0u8; 12];
        ep.config_read(off, &mut b);
        assert_eq!(b[0], MSIX_CAPABILITY_ID);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 4);
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), 0);
        assert_eq!(u32::from_le_bytes([b[8], b[9], b[10], b[11]]), 0x800);
        // Table size is read-only; only enable and function mask stick.
        control(&mut ep, off, 0xffff);
        ep.config_read(off + 2, &mut b[..2]);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0xc004);
        let m = ep.msix.as_ref().unwrap();
        assert!(m.enabled() && m.function_masked());
        assert_eq!(m.table_location(), (0, 0, 80));
        assert_eq!(m.pba_location(), (0, 0x800, 8));
    }

    #[test]
    fn add_validation() {
        let mut ep = TestEndpoint::new(0x20, false);
        ep.config
            .add_bar(
                0,
                BarKind::Mem32 {
                    prefetchable: false,
                },
                0x1000,
            )
            .unwrap();
        ep.config.add_bar(1, BarKind::Io, 0x100).unwrap();
        let c = &mut ep.config;
        assert_eq!(
            MsixCapability::add(c, 0, (0, 0), (0, 0x800)).unwrap_err(),
            MsixError::BadTableSize(0)
        );
        assert_eq!(
            MsixCapability::add(c, 2049, (0, 0), (0, 0x800)).unwrap_err(),
            MsixError::BadTableSize(2049)
        );
        assert_eq!(
            MsixCapability::add(c, 4, (1, 0), (0, 0x800)).unwrap_err(),
            MsixError::NotMemoryBar(1)
        );
        assert_eq!(
            MsixCapability::add(c, 4, (2, 0), (0, 0x800)).unwrap_err(),
            MsixError::NotMemoryBar(2)
        );
        assert_eq!(
            MsixCapability::add(c, 4, (0, 4), (0, 0x800)).unwrap_err(),
            MsixError::Misaligned(4)
        );
        assert!(matches!(
            MsixCapability::add(c, 256, (0, 0), (0, 0xff8)),
            Err(MsixError::DoesNotFit { .. })
        ));
        assert_eq!(
            MsixCapability::add(c, 4, (0, 0), (0, 0x38)).unwrap_err(),
            MsixError::Overlap
        );
        assert!(MsixCapability::add(c, 4, (0, 0), (0, 0x40)).is_ok());
    }

    #[test]
    fn table_programming_reads_back() {
        let (mut ep, _) = endpoint(4);
        let mut b = [0u8; 16];
        ep.bar_read(TABLE_BAR, 0x10, &mut b);
        assert_eq!(
            b,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            "entries start masked"
        );
        assert!(program(&mut ep, 1, 0x1_fee0_1003, 0x4041, true).is_empty());
        ep.bar_read(TABLE_BAR, 0x10, &mut b[..8]);
        assert_eq!(
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            0x1_fee0_1000
        );
        // Vector control reserved bits are read-only.
        ep.bar_write(TABLE_BAR, 0x1c, &0xffff_fffeu32.to_le_bytes());
        let mut d = [0u8; 4];
        ep.bar_read(TABLE_BAR, 0x1c, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0);
        // A qword write covering address low and high.
        ep.bar_write(TABLE_BAR, 0x20, &0x2_fee0_2000u64.to_le_bytes());
        let m = ep.msix.as_ref().unwrap();
        assert_eq!(
            m.entry(2),
            Some(MsixEntry {
                address: 0x2_fee0_2000,
                data: 0,
                masked: true
            })
        );
        assert_eq!(
            m.entry(1),
            Some(MsixEntry {
                address: 0x1_fee0_1000,
                data: 0x4041,
                masked: false
            })
        );
        // Beyond the table and PBA: not the capability's.
        let mut m = ep.msix.take().unwrap();
        assert!(!m.bar_read(TABLE_BAR, 0x40, &mut d));
        assert!(m.bar_write(TABLE_BAR, 0x900, &d).is_none());
        assert!(m.bar_write(1, 0, &d).is_none());
        // Odd-sized and out-of-range helper accesses do not panic.
        m.table_read(u64::MAX - 2, &mut b);
        assert_eq!(b, [0; 16]);
        assert!(m.table_write(u64::MAX - 2, &[1; 8]).is_empty());
    }

    #[test]
    fn enable_routes_unmasked_vectors() {
        let (mut ep, off) = endpoint(4);
        // Programming while disabled reports nothing.
        assert!(program(&mut ep, 0, 0xfee0_0000, 0x30, false).is_empty());
        assert!(program(&mut ep, 2, 0xfee0_1000, 0x32, false).is_empty());
        let ch = control(&mut ep, off, MSIX_CONTROL_ENABLE);
        assert_eq!(
            ch,
            vec![route(0, 0xfee0_0000, 0x30), route(2, 0xfee0_1000, 0x32)]
        );
        // Reprogramming a live vector moves it.
        let ch = ep.bar_write(TABLE_BAR, 0x28, &0x33u32.to_le_bytes());
        assert_eq!(ch, vec![route(2, 0xfee0_1000, 0x33)]);
        // Masking one vector.
        let ch = ep.bar_write(TABLE_BAR, 0x2c, &1u32.to_le_bytes());
        assert_eq!(ch, vec![unrouted(2)]);
        // Disable.
        let ch = control(&mut ep, off, 0);
        assert_eq!(ch, vec![unrouted(0)]);
        assert!(
            ep.msix
                .as_ref()
                .unwrap()
                .routes()
                .iter()
                .all(Option::is_none)
        );
        assert_eq!(ep.msix.as_mut().unwrap().trigger(0), None);
        assert!(!ep.msix.as_ref().unwrap().is_pending(0));
    }

    #[test]
    fn function_mask_then_pending_then_unmask() {
        let (mut ep, off) = endpoint(70);
        program(&mut ep, 0, 0xfee0_0000, 0x40, false);
        program(&mut ep, 65, 0xfee0_0000, 0x41, false);
        let ch = control(
            &mut ep,
            off,
            MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK,
        );
        assert!(ch.is_empty());
        let m = ep.msix.as_mut().unwrap();
        assert_eq!(m.trigger(65), None);
        assert!(m.is_pending(65));
        assert_eq!(m.trigger(70), None);
        let mut pba = [0u8; 16];
        ep.bar_read(TABLE_BAR, 0x800, &mut pba);
        assert_eq!(u64::from_le_bytes(pba[8..].try_into().unwrap()), 1 << 1);
        // The PBA is read-only.
        assert!(ep.bar_write(TABLE_BAR, 0x808, &[0; 8]).is_empty());
        assert!(ep.msix.as_ref().unwrap().is_pending(65));
        // Clearing the function mask routes both and fires the pending one.
        let ch = control(&mut ep, off, MSIX_CONTROL_ENABLE);
        assert_eq!(
            ch,
            vec![route(0, 0xfee0_0000, 0x40), route(65, 0xfee0_0000, 0x41)]
        );
        assert_eq!(
            ep.fired,
            vec![(
                65,
                MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x41
                }
            )]
        );
        assert!(!ep.msix.as_ref().unwrap().is_pending(65));
        assert_eq!(
            ep.msix.as_mut().unwrap().trigger(0),
            Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x40
            })
        );
    }

    #[test]
    fn vector_mask_pending_then_unmask_fires() {
        let (mut ep, off) = endpoint(2);
        control(&mut ep, off, MSIX_CONTROL_ENABLE);
        // Program while masked (the Linux way), then trigger.
        assert!(program(&mut ep, 1, 0xfee0_3000, 0x51, true).is_empty());
        assert_eq!(ep.msix.as_mut().unwrap().trigger(1), None);
        let mut pba = [0u8; 8];
        ep.bar_read(TABLE_BAR, 0x800, &mut pba);
        assert_eq!(pba[0], 0b10);
        let ch = ep.bar_write(TABLE_BAR, 0x1c, &0u32.to_le_bytes());
        assert_eq!(ch, vec![route(1, 0xfee0_3000, 0x51)]);
        assert_eq!(
            ep.fired,
            vec![(
                1,
                MsiMessage {
                    address: 0xfee0_3000,
                    data: 0x51
                }
            )]
        );
        ep.bar_read(TABLE_BAR, 0x800, &mut pba);
        assert_eq!(pba[0], 0);
    }
}
