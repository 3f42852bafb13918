//! MSI capability emulation.
//!
//! [`MsiCapability`] adds an MSI capability (ID 0x05) to a function's
//! [`PciConfiguration`] and keeps the routes the guest programmed. The
//! registers live in the configuration space itself; after every
//! configuration write the device calls
//! [`MsiCapability::config_written`], which reports a
//! [`PciChange::Msi`] for each vector whose route changed:
//!
//! * a vector is *live* when MSI is enabled, the vector is below the
//!   multiple-message-enable count and (with per-vector masking) its mask
//!   bit is clear; its message is the programmed address and the data
//!   with the low log2(count) bits replaced by the vector number;
//! * otherwise its route is `None`.
//!
//! [`MsiCapability::trigger`] is the device raising a vector: it returns
//! the message to send, or sets the vector's pending bit when the vector is
//! masked. Unmasking a pending vector clears the bit and lists the vector
//! in [`InterruptUpdate::fire`]: the device must then send it.
//!
//! Usage in a device's `config_write`:
//!
//! ```text
//! let mut changes = self.config.write(offset, data);
//! let update = self.msi.config_written(&mut self.config, offset, data.len());
//! changes.extend(update.changes);
//! for (vector, message) in update.fire { /* deliver */ }
//! ```

use thiserror::Error;

use super::config::{CONFIG_SPACE_SIZE, ConfigError, PciConfiguration};
use super::{MsiMessage, PciChange};

/// Capability ID of MSI.
pub const MSI_CAPABILITY_ID: u8 = 0x05;

/// Message control: MSI enable.
pub const MSI_CONTROL_ENABLE: u16 = 1 << 0;
/// Message control: 64-bit address capable.
pub const MSI_CONTROL_64BIT: u16 = 1 << 7;
/// Message control: per-vector masking capable.
pub const MSI_CONTROL_PER_VECTOR_MASK: u16 = 1 << 8;

/// Errors adding an MSI capability.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MsiError {
    /// The vector count is not a power of two from 1 to 32.
    #[error("MSI vector count {0} is not a power of two from 1 to 32")]
    BadVectorCount(u16),
    /// The configuration space has no room for the capability.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a write did to a function's interrupt vectors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InterruptUpdate {
    /// Route changes ([`PciChange::Msi`]) for the VMM.
    pub changes: Vec<PciChange>,
    /// Vectors that were pending and just became deliverable: the device
    /// must send each message now.
    pub fire: Vec<(u16, MsiMessage)>,
}

impl InterruptUpdate {
    /// True when nothing changed and nothing must fire.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.fire.is_empty()
    }
}

/// An MSI capability in a function's configuration space; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct MsiCapability {
    offset: u16,
    vectors: u16,
    is_64bit: bool,
    per_vector_mask: bool,
    routes: Vec<Option<MsiMessage>>,
}

impl MsiCapability {
    /// Add an MSI capability to `config` supporting `vectors` vectors (a
    /// power of two, 1..=32), with a 64-bit message address if `is_64bit`
    /// and mask/pending registers if `per_vector_mask`.
    pub fn add(
        config: &mut PciConfiguration,
        vectors: u16,
        is_64bit: bool,
        per_vector_mask: bool,
    ) -> Result<Self, MsiError> {
        if !vectors.is_power_of_two() || vectors > 32 {
            return Err(MsiError::BadVectorCount(vectors));
        }
        let mmc = vectors.trailing_zeros() as u16;
        let mut control = mmc << 1;
        if is_64bit {
            control |= MSI_CONTROL_64BIT;
        }
        if per_vector_mask {
            control |= MSI_CONTROL_PER_VECTOR_MASK;
        }
        let body_len = match (is_64bit, per_vector_mask) {
            (false, false) => 8,
            (true, false) => 12,
            (false, true) => 18,
            (true, true) => 22,
        };
        let mut body = vec![0u8; body_len];
        body[..2].copy_from_slice(&control.to_le_bytes());
        let offset = config.add_capability(MSI_CAPABILITY_ID, &body)?;
        let cap = Self {
            offset,
            vectors,
            is_64bit,
            per_vector_mask,
            routes: vec![None; usize::from(vectors)],
        };
        cap.set_masks(config)?;
        Ok(cap)
    }

    /// Emulate an MSI capability that already sits at `offset` of
    /// `config` (a passed-through function's): its message control gives
    /// the layout; at most `max_vectors` vectors are offered (the host
    /// driver's limit), and the multiple-message-capable field is lowered
    /// to match. The registers become guest-writable as in [`add`](Self::add).
    pub fn at(
        config: &mut PciConfiguration,
        offset: u16,
        max_vectors: u16,
    ) -> Result<Self, MsiError> {
        let mut control = config.read_u16(offset + 2);
        let mmc = ((control >> 1) & 0x7).min(5);
        let mut vectors = 1u16 << mmc;
        while vectors > max_vectors.max(1) {
            vectors >>= 1;
        }
        control = (control & !(0x7 << 1) & !MSI_CONTROL_ENABLE & !(0x7 << 4))
            | ((vectors.trailing_zeros() as u16) << 1);
        config.set_u16(offset + 2, control);
        let cap = Self {
            offset,
            vectors,
            is_64bit: control & MSI_CONTROL_64BIT != 0,
            per_vector_mask: control & MSI_CONTROL_PER_VECTOR_MASK != 0,
            routes: vec![None; usize::from(vectors)],
        };
        let end = usize::from(offset) + usize::from(cap.len());
        if end > CONFIG_SPACE_SIZE {
            return Err(MsiError::Config(ConfigError::OutOfRange {
                offset,
                len: usize::from(cap.len()),
            }));
        }
        // Start from a clean state: disabled, no stale address, data, mask
        // or pending bits from the host driver.
        for at in offset + 4..offset + cap.len() {
            config.set_u8(at, 0);
        }
        cap.set_masks(config)?;
        Ok(cap)
    }

    fn set_masks(&self, config: &mut PciConfiguration) -> Result<(), MsiError> {
        config.set_writable_mask(self.offset + 2, &0x0071u16.to_le_bytes())?;
        config.set_writable_mask(self.offset + 4, &0xffff_fffcu32.to_le_bytes())?;
        if self.is_64bit {
            config.set_writable_mask(self.offset + 8, &[0xff; 4])?;
        }
        config.set_writable_mask(self.data_offset(), &[0xff; 2])?;
        if let Some(mask) = self.mask_offset() {
            config.set_writable_mask(mask, &self.implemented_bits().to_le_bytes())?;
        }
        Ok(())
    }

    /// Offset of the capability in configuration space.
    pub fn offset(&self) -> u16 {
        self.offset
    }

    /// Offset of the pending-bits register, when the capability has
    /// per-vector masking.
    pub fn pending_offset(&self) -> Option<u16> {
        self.mask_offset().map(|m| m + 4)
    }

    /// Vectors the function supports (multiple message capable).
    pub fn vectors(&self) -> u16 {
        self.vectors
    }

    /// Bytes the capability occupies.
    pub fn len(&self) -> u16 {
        match self.mask_offset() {
            Some(m) => m - self.offset + 8,
            None => self.data_offset() - self.offset + 2,
        }
    }

    /// Never true: a capability has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn data_offset(&self) -> u16 {
        self.offset + if self.is_64bit { 0xc } else { 0x8 }
    }

    fn mask_offset(&self) -> Option<u16> {
        self.per_vector_mask.then(|| self.data_offset() + 4)
    }

    fn implemented_bits(&self) -> u32 {
        if self.vectors >= 32 {
            u32::MAX
        } else {
            (1u32 << self.vectors) - 1
        }
    }

    /// True when the guest enabled MSI.
    pub fn enabled(&self, config: &PciConfiguration) -> bool {
        config.read_u16(self.offset + 2) & MSI_CONTROL_ENABLE != 0
    }

    /// Vectors enabled by multiple message enable (at most
    /// [`vectors`](Self::vectors)).
    pub fn enabled_vectors(&self, config: &PciConfiguration) -> u16 {
        let mme = (config.read_u16(self.offset + 2) >> 4) & 0x7;
        (1u16 << mme.min(5)).min(self.vectors)
    }

    /// True when vector `vector` is masked (always false without
    /// per-vector masking).
    pub fn is_masked(&self, config: &PciConfiguration, vector: u16) -> bool {
        match self.mask_offset() {
            Some(m) if vector < 32 => config.read_u32(m) & (1 << vector) != 0,
            _ => false,
        }
    }

    /// True when vector `vector` has its pending bit set.
    pub fn is_pending(&self, config: &PciConfiguration, vector: u16) -> bool {
        match self.mask_offset() {
            Some(m) if vector < 32 => config.read_u32(m + 4) & (1 << vector) != 0,
            _ => false,
        }
    }

    /// The message vector `vector` would send, whether or not it is live;
    /// `None` beyond the enabled vectors.
    pub fn message(&self, config: &PciConfiguration, vector: u16) -> Option<MsiMessage> {
        let count = self.enabled_vectors(config);
        if vector >= count {
            return None;
        }
        let lo = u64::from(config.read_u32(self.offset + 4));
        let hi = if self.is_64bit {
            u64::from(config.read_u32(self.offset + 8))
        } else {
            0
        };
        let data = config.read_u16(self.data_offset());
        let data = (data & !(count - 1)) | vector;
        Some(MsiMessage {
            address: (hi << 32) | lo,
            data: u32::from(data),
        })
    }

    fn live(&self, config: &PciConfiguration, vector: u16) -> Option<MsiMessage> {
        if !self.enabled(config) || self.is_masked(config, vector) {
            return None;
        }
        self.message(config, vector)
    }

    /// The routes as last reported, indexed by vector.
    pub fn routes(&self) -> &[Option<MsiMessage>] {
        &self.routes
    }

    /// Call after every configuration write of `len` bytes at `offset`
    /// (after [`PciConfiguration::write`]): reports route changes and
    /// pending vectors that became deliverable. Writes elsewhere report
    /// nothing.
    pub fn config_written(
        &mut self,
        config: &mut PciConfiguration,
        offset: u16,
        len: usize,
    ) -> InterruptUpdate {
        let start = usize::from(offset);
        let cap = usize::from(self.offset);
        if start + len <= cap || start >= cap + usize::from(self.len()) {
            return InterruptUpdate::default();
        }
        self.refresh(config)
    }

    fn refresh(&mut self, config: &mut PciConfiguration) -> InterruptUpdate {
        let mut update = InterruptUpdate::default();
        for vector in 0..self.vectors {
            let route = self.live(config, vector);
            let slot = &mut self.routes[usize::from(vector)];
            if *slot != route {
                *slot = route;
                update.changes.push(PciChange::Msi {
                    vector,
                    message: route,
                });
            }
            if let Some(message) = route {
                if self.is_pending(config, vector) {
                    self.set_pending(config, vector, false);
                    update.fire.push((vector, message));
                }
            }
        }
        update
    }

    fn set_pending(&self, config: &mut PciConfiguration, vector: u16, pending: bool) {
        if let Some(m) = self.mask_offset() {
            let bits = config.read_u32(m + 4);
            let bit = 1u32 << (vector % 32);
            config.set_u32(m + 4, if pending { bits | bit } else { bits & !bit });
        }
    }

    /// The device raises `vector`: returns the message to send, or `None`
    /// when MSI is disabled or the vector is not enabled (nothing happens)
    /// or masked (its pending bit is set, and it fires on unmask).
    pub fn trigger(&mut self, config: &mut PciConfiguration, vector: u16) -> Option<MsiMessage> {
        if !self.enabled(config) || vector >= self.enabled_vectors(config) {
            return None;
        }
        if self.is_masked(config, vector) {
            self.set_pending(config, vector, true);
            return None;
        }
        self.message(config, vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciDevice;
    use crate::pci::config::test_endpoint::TestEndpoint;

    fn endpoint(vectors: u16, is_64bit: bool, pvm: bool) -> (TestEndpoint, u16) {
        let mut ep = TestEndpoint::new(0x10, false);
        let msi = MsiCapability::add(&mut ep.config, vectors, is_64bit, pvm).unwrap();
        let off = msi.offset();
        ep.msi = Some(msi);
        (ep, off)
    }

    fn w16(ep: &mut TestEndpoint, off: u16, v: u16) -> Vec<PciChange> {
        ep.config_write(off, &v.to_le_bytes())
    }

    fn w32(ep: &mut TestEndpoint, off: u16, v: u32) -> Vec<PciChange> {
        ep.config_write(off, &v.to_le_bytes())
    }

    fn r32(ep: &mut TestEndpoint, off: u16) -> u32 {
        let mut b = [0u8; 4];
        ep.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn msi(vector: u16, address: u64, data: u32) -> PciChange {
        PciChange::Msi {
            vector,
            message: Some(MsiMessage { address, data }),
        }
    }

    #[test]
    fn layout_and_read_only_bits() {
        let (mut ep, off) = endpoint(4, true, true);
        assert_eq!(ep.config.find_capability(MSI_CAPABILITY_ID), Some(off));
        assert_eq!(ep.msi.as_ref().unwrap().len(), 24);
        // MMC = 2 (4 vectors), 64-bit, per-vector masking.
        assert_eq!(r32(&mut ep, off) >> 16, 0x0184);
        // Writes to read-only control bits are ignored.
        w16(&mut ep, off + 2, 0xffff);
        assert_eq!(r32(&mut ep, off) >> 16, 0x01f5);
        // Address bits 1:0 are read-only zero.
        w32(&mut ep, off + 4, 0xfee0_0003);
        assert_eq!(r32(&mut ep, off + 4), 0xfee0_0000);
        // Only implemented mask bits stick; pending is read-only.
        w32(&mut ep, off + 0x10, 0xffff_ffff);
        assert_eq!(r32(&mut ep, off + 0x10), 0xf);
        w32(&mut ep, off + 0x14, 0xffff_ffff);
        assert_eq!(r32(&mut ep, off + 0x14), 0);

        let (mut ep, off) = endpoint(1, false, false);
        assert_eq!(ep.msi.as_ref().unwrap().len(), 10);
        assert_eq!(r32(&mut ep, off) >> 16, 0);
        w16(&mut ep, off + 8, 0x4041);
        assert_eq!(r32(&mut ep, off + 8) & 0xffff, 0x4041);
        assert_eq!(
            MsiCapability::add(&mut ep.config, 3, false, false).unwrap_err(),
            MsiError::BadVectorCount(3)
        );
        assert_eq!(
            MsiCapability::add(&mut ep.config, 64, false, false).unwrap_err(),
            MsiError::BadVectorCount(64)
        );
    }

    #[test]
    fn msi32_single_vector() {
        let (mut ep, off) = endpoint(1, false, false);
        assert!(w32(&mut ep, off + 4, 0xfee0_1000).is_empty());
        assert!(w16(&mut ep, off + 8, 0x0031).is_empty());
        let ch = w16(&mut ep, off + 2, 1);
        assert_eq!(ch, vec![msi(0, 0xfee0_1000, 0x31)]);
        // Reprogramming the data while enabled moves the route.
        let ch = w16(&mut ep, off + 8, 0x0032);
        assert_eq!(ch, vec![msi(0, 0xfee0_1000, 0x32)]);
        // Unrelated writes report nothing.
        assert!(ep.config_write(0x3c, &[9]).is_empty());
        let ch = w16(&mut ep, off + 2, 0);
        assert_eq!(
            ch,
            vec![PciChange::Msi {
                vector: 0,
                message: None
            }]
        );
        let cap = ep.msi.as_mut().unwrap();
        assert_eq!(cap.trigger(&mut ep.config, 0), None);
    }

    #[test]
    fn msi64_multiple_message_enable() {
        let (mut ep, off) = endpoint(8, true, false);
        w32(&mut ep, off + 4, 0xfee0_0000);
        w32(&mut ep, off + 8, 0x1);
        w16(&mut ep, off + 0xc, 0x0043);
        // Enable with MME = 2 (4 vectors): data low 2 bits carry the vector.
        let ch = w16(&mut ep, off + 2, 1 | (2 << 4));
        assert_eq!(
            ch,
            vec![
                msi(0, 0x1_fee0_0000, 0x40),
                msi(1, 0x1_fee0_0000, 0x41),
                msi(2, 0x1_fee0_0000, 0x42),
                msi(3, 0x1_fee0_0000, 0x43),
            ]
        );
        let cap = ep.msi.as_mut().unwrap();
        assert_eq!(cap.trigger(&mut ep.config, 4), None);
        assert_eq!(
            cap.trigger(&mut ep.config, 3),
            Some(MsiMessage {
                address: 0x1_fee0_0000,
                data: 0x43
            })
        );
        // MME beyond MMC is clamped to the supported 8 vectors.
        let ch = w16(&mut ep, off + 2, 1 | (7 << 4));
        // Vectors 0..4 keep their data (0x40..0x43): only 4..8 are new.
        let expected: Vec<_> = (4..8)
            .map(|v| msi(v, 0x1_fee0_0000, 0x40 | u32::from(v)))
            .collect();
        assert_eq!(ch, expected);
        // Data with MME = 3 (8 vectors) ignores its low three bits.
        let ch = w16(&mut ep, off + 0xc, 0x0047);
        assert!(ch.is_empty());
        assert_eq!(
            ep.msi.as_ref().unwrap().routes().iter().flatten().count(),
            8
        );
    }

    #[test]
    fn per_vector_masking_and_pending() {
        let (mut ep, off) = endpoint(2, false, true);
        let mask = off + 0xc;
        w32(&mut ep, off + 4, 0xfee0_0000);
        w16(&mut ep, off + 8, 0x20);
        w32(&mut ep, mask, 0b01);
        let ch = w16(&mut ep, off + 2, 1 | (1 << 4));
        assert_eq!(ch, vec![msi(1, 0xfee0_0000, 0x21)]);
        let cap = ep.msi.as_mut().unwrap();
        assert_eq!(cap.trigger(&mut ep.config, 0), None);
        assert!(cap.is_pending(&ep.config, 0));
        assert_eq!(r32(&mut ep, mask + 4), 1);
        // Unmasking vector 0 routes it and fires the pending message.
        let ch = w32(&mut ep, mask, 0b10);
        assert_eq!(
            ch,
            vec![
                msi(0, 0xfee0_0000, 0x20),
                PciChange::Msi {
                    vector: 1,
                    message: None
                }
            ]
        );
        assert_eq!(
            ep.fired,
            vec![(
                0,
                MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x20
                }
            )]
        );
        assert_eq!(r32(&mut ep, mask + 4), 0);
        let cap = ep.msi.as_mut().unwrap();
        assert_eq!(cap.trigger(&mut ep.config, 1), None);
        assert!(cap.trigger(&mut ep.config, 0).is_some());
    }
}
