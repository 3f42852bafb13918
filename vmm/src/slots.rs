//! KVM memory slots beyond guest RAM: firmware ROM and flash mapped as
//! read-only memory, so reads run at memory speed and only writes exit,
//! and passed-through BARs mapped as guest memory, so their accesses never
//! exit. Slot numbers are reused once freed (a BAR the guest moves or
//! turns off gives its slot back).

use std::sync::{Arc, Mutex};

use vm_memory::{MmapRegion, VolatileMemory};

use crate::kvm::KvmError;
use crate::vm_ops::VmOps;

/// Host memory backing a slot: an anonymous mapping owned here.
#[derive(Debug)]
pub struct HostBuffer {
    region: MmapRegion,
}

impl HostBuffer {
    /// `len` bytes of zeroed anonymous memory.
    pub fn new(len: usize) -> std::io::Result<Self> {
        let region = MmapRegion::new(len).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { region })
    }

    /// Copy `bytes` in at offset 0 (they must fit).
    pub fn fill(&self, bytes: &[u8]) -> std::io::Result<()> {
        let vs = self
            .region
            .get_slice(0, bytes.len())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        vs.copy_from(bytes);
        Ok(())
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.region.size()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hands out slot numbers above the RAM slots, takes them back, and maps
/// host memory into the guest through [`VmOps`].
pub struct Slots {
    vm: Arc<dyn VmOps>,
    ids: Mutex<SlotIds>,
    /// Guest ranges backed by memory now: RAM and every mapped slot, by
    /// base (lengths as values), so nothing trapped is placed under them.
    ranges: Mutex<std::collections::BTreeMap<u64, u64>>,
}

#[derive(Debug)]
struct SlotIds {
    next: u32,
    free: Vec<u32>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots").field("ids", &self.ids).finish()
    }
}

impl Slots {
    /// Slot numbers start at `first_free` (the RAM slots come first).
    pub fn new(vm: Arc<dyn VmOps>, first_free: u32, ram: &[(u64, u64)]) -> Self {
        Self {
            vm,
            ids: Mutex::new(SlotIds {
                next: first_free,
                free: Vec::new(),
            }),
            ranges: Mutex::new(ram.iter().copied().collect()),
        }
    }

    /// True when `[gpa, gpa + len)` touches RAM or a mapped slot.
    pub fn overlaps_memory(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return true;
        };
        let ranges = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        ranges
            .range(..end)
            .next_back()
            .is_some_and(|(&b, &l)| b.saturating_add(l) > gpa)
    }

    fn note(&self, gpa: u64, len: Option<u64>) {
        let mut ranges = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        match len {
            Some(l) => {
                ranges.insert(gpa, l);
            }
            None => {
                ranges.remove(&gpa);
            }
        }
    }

    /// A slot number: a freed one if any, else a fresh one.
    pub fn allocate(&self) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        match ids.free.pop() {
            Some(id) => id,
            None => {
                ids.next += 1;
                ids.next - 1
            }
        }
    }

    /// Give `slot` back (it must be unmapped).
    pub fn free(&self, slot: u32) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if !ids.free.contains(&slot) {
            ids.free.push(slot);
        }
    }

    /// Map `buf` at guest address `gpa` in `slot`, read-only for the guest
    /// when `read_only` (guest writes then exit as MMIO writes).
    pub fn map(
        &self,
        slot: u32,
        gpa: u64,
        buf: &HostBuffer,
        read_only: bool,
    ) -> Result<(), KvmError> {
        // SAFETY: `buf` is a live anonymous mapping of exactly `len()`
        // bytes; the platform that owns it keeps it for the life of the
        // machine, and no vCPU runs once the platform is dropped (a vCPU
        // that would not stop keeps the platform alive with it).
        unsafe {
            self.vm.set_memory(
                slot,
                gpa,
                buf.len() as u64,
                buf.region.as_ptr() as u64,
                read_only,
            )
        }?;
        self.note(gpa, Some(buf.len() as u64));
        Ok(())
    }

    /// Map the first `len` bytes of `memory` (a device BAR mapping) at
    /// `gpa` in `slot`, writable unless `read_only`.
    pub fn map_region(
        &self,
        slot: u32,
        gpa: u64,
        memory: &Arc<MmapRegion>,
        len: u64,
        read_only: bool,
    ) -> Result<(), KvmError> {
        if len == 0 || len > memory.size() as u64 {
            return Err(KvmError::BadSlot { gpa, len });
        }
        // SAFETY: `memory` is a live mapping of at least `len` bytes; the
        // caller keeps an `Arc` to it for as long as the slot is mapped
        // (the platform's record of the mapped BAR holds one).
        unsafe {
            self.vm
                .set_memory(slot, gpa, len, memory.as_ptr() as u64, read_only)
        }?;
        self.note(gpa, Some(len));
        Ok(())
    }

    /// Remove `slot`: guest accesses to its range exit as MMIO again.
    pub fn unmap(&self, slot: u32, gpa: u64) -> Result<(), KvmError> {
        self.vm.remove_memory(slot, gpa)?;
        self.note(gpa, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm_ops::tests::Recorder;

    #[test]
    fn freed_slot_ids_are_reused() {
        let s = Slots::new(Arc::new(Recorder::default()), 3, &[(0, 0x1000)]);
        assert!(s.overlaps_memory(0xfff, 1) && !s.overlaps_memory(0x1000, 0x10));
        assert_eq!((s.allocate(), s.allocate()), (3, 4));
        s.free(3);
        s.free(3);
        assert_eq!(s.allocate(), 3);
        assert_eq!(s.allocate(), 5);
    }
}
