//! The passthrough model against a fake function: a configuration image
//! with every capability kind (including the ones to hide), BARs of every
//! type, MSI and MSI-X.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::pci::MsiMessage;
use crate::pci::config::{COMMAND_BUS_MASTER, COMMAND_IO, COMMAND_MEMORY};

/// What the fake function saw.
#[derive(Default)]
struct Record {
    config_writes: Vec<(u16, Vec<u8>)>,
    region_writes: Vec<(u32, u64, Vec<u8>)>,
    irqs: Vec<(IrqIndex, usize)>,
    resample: usize,
    maps: Vec<(u32, u64, u64)>,
    resets: usize,
}

struct Fake {
    config: Mutex<Vec<u8>>,
    regions: HashMap<u32, RegionInfo>,
    irq_counts: HashMap<IrqIndex, u32>,
    record: Arc<Mutex<Record>>,
}

impl VfioBackend for Fake {
    fn address(&self) -> &str {
        "0000:01:10.0"
    }
    fn config_read(&self, offset: u16, data: &mut [u8]) -> io::Result<()> {
        let cfg = self.config.lock().unwrap();
        for (i, b) in data.iter_mut().enumerate() {
            *b = *cfg
                .get(usize::from(offset) + i)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        }
        Ok(())
    }
    fn config_write(&self, offset: u16, data: &[u8]) -> io::Result<()> {
        self.record
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
        Ok(())
    }
    fn region(&self, index: u32) -> RegionInfo {
        self.regions.get(&index).cloned().unwrap_or_default()
    }
    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        // Each byte reads as its region index plus the offset's low byte.
        for (i, b) in data.iter_mut().enumerate() {
            *b = (index as u8).wrapping_add((offset as u8).wrapping_add(i as u8));
        }
        Ok(())
    }
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.record
            .lock()
            .unwrap()
            .region_writes
            .push((index, offset, data.to_vec()));
        Ok(())
    }
    fn map_region(&self, index: u32, offset: u64, len: u64) -> io::Result<Arc<MmapRegion>> {
        self.record.lock().unwrap().maps.push((index, offset, len));
        MmapRegion::new(len as usize)
            .map(Arc::new)
            .map_err(|e| io::Error::other(e.to_string()))
    }
    fn irq_count(&self, irq: IrqIndex) -> u32 {
        self.irq_counts.get(&irq).copied().unwrap_or(0)
    }
    fn set_irqs(&self, irq: IrqIndex, fds: &[&EventFd]) -> io::Result<()> {
        self.record.lock().unwrap().irqs.push((irq, fds.len()));
        Ok(())
    }
    fn set_intx_resample(&self, _fd: &EventFd) -> io::Result<()> {
        self.record.lock().unwrap().resample += 1;
        Ok(())
    }
    fn reset(&self) -> io::Result<()> {
        self.record.lock().unwrap().resets += 1;
        Ok(())
    }
}

/// A PCI Express function (4 KiB space) with:
/// BAR0 64-bit non-prefetchable 16 KiB holding the MSI-X table (0x2000)
/// and PBA (0x3000); BAR2 64-bit prefetchable 8 GiB (an LMEM-like BAR);
/// BAR4 I/O 32 bytes; a 64 KiB ROM region.
/// Capabilities: PM 0x40 -> VPD 0x48 -> MSI 0x50 (64-bit, per-vector mask,
/// 4 vectors) -> MSI-X 0x70 (8 vectors) -> PCIe 0x80 (endpoint, v2) ->
/// EA 0xc0 -> vendor 0xd0.
/// Extended: SR-IOV 0x100 -> AER 0x140 -> ARI 0x180 -> ReBAR 0x1a0 ->
/// DSN 0x1c0.
fn image() -> Vec<u8> {
    let mut c = vec![0u8; 4096];
    let put =
        |c: &mut Vec<u8>, at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut c, 0, &0x10ca_8086u32.to_le_bytes());
    put(&mut c, 4, &0x0010_0006u32.to_le_bytes()); // status: cap list; command: host had decode on
    put(&mut c, 8, &0x0200_0001u32.to_le_bytes()); // class 0x020000
    c[0x0e] = 0x80; // multi-function on the host
    put(&mut c, 0x10, &0x4u32.to_le_bytes()); // BAR0: 64-bit
    put(&mut c, 0x18, &0xcu32.to_le_bytes()); // BAR2: 64-bit prefetchable
    put(&mut c, 0x20, &0x1u32.to_le_bytes()); // BAR4: I/O
    put(&mut c, 0x2c, &0x1234_5678u32.to_le_bytes()); // subsystem
    c[0x34] = 0x40;
    c[0x3d] = 1; // INTA
    // PM
    put(&mut c, 0x40, &[0x01, 0x48, 0x03, 0x00, 0x08, 0x00]);
    // VPD (hidden)
    put(&mut c, 0x48, &[0x03, 0x50, 0xaa, 0xbb, 0xcc, 0xdd]);
    // MSI: 64-bit + per-vector mask, MMC = 2 (4 vectors), some junk state
    put(&mut c, 0x50, &[0x05, 0x70]);
    put(
        &mut c,
        0x52,
        &((1u16 << 8) | (1 << 7) | (2 << 1) | 1).to_le_bytes(),
    );
    put(&mut c, 0x54, &0xfee0_0000u32.to_le_bytes());
    // MSI-X: 8 vectors, table BAR0+0x2000, PBA BAR0+0x3000
    put(&mut c, 0x70, &[0x11, 0x80]);
    put(&mut c, 0x72, &7u16.to_le_bytes());
    put(&mut c, 0x74, &0x2000u32.to_le_bytes());
    put(&mut c, 0x78, &0x3000u32.to_le_bytes());
    // PCIe v2 endpoint with a link
    put(&mut c, 0x80, &[0x10, 0xc0]);
    put(&mut c, 0x82, &0x0002u16.to_le_bytes());
    put(&mut c, 0x8c, &0x0041_3c12u32.to_le_bytes()); // LNKCAP
    put(&mut c, 0x92, &0x1011u16.to_le_bytes()); // LNKSTA
    // EA (hidden)
    put(&mut c, 0xc0, &[0x14, 0xd0, 0x01, 0x00, 0xde, 0xad]);
    // vendor-specific
    put(&mut c, 0xd0, &[0x09, 0x00, 0x08, 0x42]);
    // Extended: SR-IOV (hidden) -> AER -> ARI (hidden) -> ReBAR (hidden) -> DSN
    let ext = |id: u32, ver: u32, next: u32| (id | (ver << 16) | (next << 20)).to_le_bytes();
    put(&mut c, 0x100, &ext(0x10, 1, 0x140));
    put(&mut c, 0x104, &[0x55; 8]);
    put(&mut c, 0x140, &ext(0x01, 2, 0x180));
    put(&mut c, 0x144, &[0x11; 4]);
    put(&mut c, 0x180, &ext(0x0e, 1, 0x1a0));
    put(&mut c, 0x1a0, &ext(0x15, 1, 0x1c0));
    put(&mut c, 0x1c0, &ext(0x03, 1, 0));
    put(&mut c, 0x1c4, &0xcafe_f00du32.to_le_bytes());
    // Device-specific registers between two hidden capabilities (ARI is 8
    // bytes long): not part of any capability.
    put(&mut c, 0x190, &0x7777_7777u32.to_le_bytes());
    c
}

fn fake(mmap: bool) -> (Box<Fake>, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let mut regions = HashMap::new();
    regions.insert(
        0,
        RegionInfo {
            size: 0x4000,
            mmap,
            sparse: None,
        },
    );
    regions.insert(
        2,
        RegionInfo {
            size: 8 << 30,
            mmap,
            sparse: None,
        },
    );
    regions.insert(
        4,
        RegionInfo {
            size: 32,
            mmap: false,
            sparse: None,
        },
    );
    regions.insert(
        region::ROM,
        RegionInfo {
            size: 0x10000,
            mmap: false,
            sparse: None,
        },
    );
    regions.insert(
        region::CONFIG,
        RegionInfo {
            size: 4096,
            mmap: false,
            sparse: None,
        },
    );
    let irq_counts = HashMap::from([(IrqIndex::Intx, 1), (IrqIndex::Msi, 4), (IrqIndex::Msix, 8)]);
    (
        Box::new(Fake {
            config: Mutex::new(image()),
            regions,
            irq_counts,
            record: record.clone(),
        }),
        record,
    )
}

fn device(opts: VfioOptions) -> (VfioPciDevice, Arc<Mutex<Record>>) {
    let (f, r) = fake(true);
    (VfioPciDevice::new(f, opts).expect("the fake builds"), r)
}

fn r32(d: &mut VfioPciDevice, off: u16) -> u32 {
    let mut b = [0u8; 4];
    d.config_read(off, &mut b);
    u32::from_le_bytes(b)
}

fn r16(d: &mut VfioPciDevice, off: u16) -> u16 {
    let mut b = [0u8; 2];
    d.config_read(off, &mut b);
    u16::from_le_bytes(b)
}

fn r8(d: &mut VfioPciDevice, off: u16) -> u8 {
    let mut b = [0u8; 1];
    d.config_read(off, &mut b);
    b[0]
}

fn w32(d: &mut VfioPciDevice, off: u16, v: u32) -> Vec<PciChange> {
    d.config_write(off, &v.to_le_bytes())
}

fn w16(d: &mut VfioPciDevice, off: u16, v: u16) -> Vec<PciChange> {
    d.config_write(off, &v.to_le_bytes())
}

/// The capability IDs a guest finds walking from 0x34.
fn walk(d: &mut VfioPciDevice) -> Vec<(u8, u16)> {
    let mut out = Vec::new();
    let mut at = u16::from(r8(d, 0x34));
    while at != 0 && out.len() < 64 {
        out.push((r8(d, at), at));
        at = u16::from(r8(d, at + 1));
    }
    out
}

fn walk_ext(d: &mut VfioPciDevice) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut at = 0x100u16;
    while at != 0 && out.len() < 64 {
        let h = r32(d, at);
        if h == 0 {
            break;
        }
        out.push((h as u16, at));
        at = (h >> 20) as u16;
    }
    out
}

#[test]
fn only_the_allowed_capabilities_are_linked_and_hidden_ones_read_zero() {
    let (mut d, _) = device(VfioOptions::default());
    assert_eq!(
        walk(&mut d),
        vec![
            (0x01, 0x40),
            (0x05, 0x50),
            (0x11, 0x70),
            (0x10, 0x80),
            (0x09, 0xd0)
        ]
    );
    assert_eq!(r16(&mut d, 0x06) & 0x10, 0x10, "capability list bit");
    for at in [0x48u16, 0x4c, 0xc0, 0xc4] {
        assert_eq!(r32(&mut d, at), 0, "hidden capability at {at:#x}");
    }
    // Extended: a null capability at 0x100 (SR-IOV was there) leads to
    // AER and DSN; ARI and ReBAR are gone.
    assert_eq!(
        walk_ext(&mut d),
        vec![(0x0000, 0x100), (0x0001, 0x140), (0x0003, 0x1c0)]
    );
    assert_eq!(r32(&mut d, 0x104), 0, "SR-IOV body hidden");
    assert_eq!(r32(&mut d, 0x180), 0);
    assert_eq!(r32(&mut d, 0x1a0), 0);
    assert_eq!(r32(&mut d, 0x1c4), 0xcafe_f00d, "kept bodies pass through");
    assert_eq!(r32(&mut d, 0x144), 0x1111_1111);
}

#[test]
fn identity_passes_through_and_the_header_is_single_function() {
    let (mut d, _) = device(VfioOptions::default());
    assert_eq!(r32(&mut d, 0), 0x10ca_8086);
    assert_eq!(r32(&mut d, 0x2c), 0x1234_5678);
    assert_eq!(r8(&mut d, 0x0e), 0);
    assert_eq!(
        r16(&mut d, 0x04),
        0,
        "decode starts off whatever the host had"
    );
}

#[test]
fn a_pcie_endpoint_becomes_an_integrated_endpoint_without_a_link() {
    let (mut d, _) = device(VfioOptions::default());
    assert_eq!((r16(&mut d, 0x82) >> 4) & 0xf, 9);
    assert_eq!(r16(&mut d, 0x82) & 0xf, 2, "version kept");
    assert_eq!(r32(&mut d, 0x8c), 0);
    assert_eq!(r16(&mut d, 0x92), 0);
}

#[test]
fn bars_size_like_the_hardware_and_keep_their_types() {
    let (mut d, rec) = device(VfioOptions::default());
    let size = |d: &mut VfioPciDevice, reg: u16| {
        let _ = w32(d, reg, u32::MAX);
        r32(d, reg)
    };
    assert_eq!(size(&mut d, 0x10), 0xffff_c004, "16 KiB, 64-bit");
    assert_eq!(size(&mut d, 0x14), u32::MAX);
    assert_eq!(
        size(&mut d, 0x18),
        0x0000_000c,
        "8 GiB: low half all type bits"
    );
    assert_eq!(size(&mut d, 0x1c), 0xffff_fffe, "8 GiB upper half");
    assert_eq!(size(&mut d, 0x20), 0xffff_ffe1, "32 ports, I/O");
    assert_eq!(size(&mut d, 0x24), 0, "no BAR5");
    assert_eq!(size(&mut d, 0x30) & 0xffff_f800, 0xffff_0000, "64 KiB ROM");
    assert!(
        rec.lock().unwrap().config_writes.is_empty(),
        "BAR writes never reach the function: {:?}",
        rec.lock().unwrap().config_writes
    );
}

#[test]
fn decode_maps_bars_and_the_command_register_reaches_the_device() {
    let (mut d, rec) = device(VfioOptions::default());
    let _ = w32(&mut d, 0x10, 0xfe00_0000);
    let _ = w32(&mut d, 0x14, 0);
    let _ = w32(&mut d, 0x18, 0);
    let _ = w32(&mut d, 0x1c, 0x8);
    let _ = w32(&mut d, 0x20, 0xc000);
    let changes = w16(
        &mut d,
        0x04,
        COMMAND_MEMORY | COMMAND_IO | COMMAND_BUS_MASTER,
    );
    let mut bars: Vec<(u8, Option<u64>)> = changes
        .iter()
        .filter_map(|c| match c {
            PciChange::Bar { index, new, .. } => Some((*index, *new)),
            _ => None,
        })
        .collect();
    bars.sort();
    assert_eq!(
        bars,
        vec![
            (0, Some(0xfe00_0000)),
            (2, Some(8 << 32)),
            (4, Some(0xc000))
        ]
    );
    assert_eq!(
        rec.lock().unwrap().config_writes,
        vec![(0x04, vec![0x07, 0x00])],
        "only the command write went to the function"
    );
    let off = w16(&mut d, 0x04, COMMAND_BUS_MASTER);
    assert!(
        off.iter()
            .all(|c| matches!(c, PciChange::Bar { new: None, .. }))
    );
    assert_eq!(off.len(), 3, "decode off unmaps every BAR");
}

#[test]
fn bar_layout_maps_everything_but_the_msix_pages() {
    let (mut d, rec) = device(VfioOptions::default());
    let _ = w32(&mut d, 0x10, 0xfe00_0000);
    let _ = w32(&mut d, 0x1c, 0x8);
    let _ = w16(&mut d, 0x04, COMMAND_MEMORY);
    let l = d.bar_layout(0).expect("BAR0 decodes");
    let shape: Vec<(bool, u64, u64, String)> = l
        .pieces
        .iter()
        .map(|p| {
            let (o, n) = p.range();
            (
                matches!(p, BarPiece::Memory { .. }),
                o,
                n,
                p.name().to_string(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (true, 0, 0x2000, "vfio 0000:01:10.0 BAR0".into()),
            (
                false,
                0x2000,
                0x1000,
                "vfio 0000:01:10.0 BAR0 msix-table".into()
            ),
            (
                false,
                0x3000,
                0x1000,
                "vfio 0000:01:10.0 BAR0 msix-pba".into()
            ),
        ]
    );
    let l2 = d.bar_layout(2).expect("BAR2 decodes");
    assert_eq!(l2.base, 8 << 32);
    assert!(matches!(&l2.pieces[..], [BarPiece::Memory { offset: 0, len, .. }] if *len == 8 << 30));
    assert!(d.bar_layout(4).is_none(), "I/O decode is off");
    assert_eq!(
        rec.lock().unwrap().maps,
        vec![(0, 0, 0x2000), (2, 0, 8 << 30)]
    );
}

#[test]
fn x_no_mmap_and_sparse_areas_decide_what_is_mapped() {
    let (f, rec) = fake(true);
    let mut d = VfioPciDevice::new(
        f,
        VfioOptions {
            no_mmap: true,
            ..Default::default()
        },
    )
    .unwrap();
    let _ = w32(&mut d, 0x1c, 0x8);
    let _ = w16(&mut d, 0x04, COMMAND_MEMORY);
    assert!(rec.lock().unwrap().maps.is_empty());
    let l = d.bar_layout(2).unwrap();
    assert!(matches!(&l.pieces[..], [BarPiece::Trap { offset: 0, .. }]));

    let (mut f, rec) = fake(true);
    f.regions.get_mut(&2).unwrap().sparse = Some(vec![(0x1000, 0x3000), (1 << 30, 1 << 20)]);
    let mut d = VfioPciDevice::new(f, VfioOptions::default()).unwrap();
    let _ = w32(&mut d, 0x1c, 0x8);
    let _ = w16(&mut d, 0x04, COMMAND_MEMORY);
    let l = d.bar_layout(2).unwrap();
    let kinds: Vec<(bool, u64, u64)> = l
        .pieces
        .iter()
        .map(|p| {
            (
                matches!(p, BarPiece::Memory { .. }),
                p.range().0,
                p.range().1,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (false, 0, 0x1000),
            (true, 0x1000, 0x3000),
            (false, 0x4000, (1 << 30) - 0x4000),
            (true, 1 << 30, 1 << 20),
            (
                false,
                (1 << 30) + (1 << 20),
                (8 << 30) - (1 << 30) - (1 << 20)
            ),
        ]
    );
    assert!(rec.lock().unwrap().maps.contains(&(2, 1 << 30, 1 << 20)));
}

#[test]
fn trapped_bar_accesses_go_to_the_region_and_msix_to_the_table() {
    let (mut d, rec) = device(VfioOptions::default());
    let mut b = [0u8; 4];
    d.bar_read(4, 0x10, &mut b);
    assert_eq!(b, [0x14, 0x15, 0x16, 0x17], "I/O BAR through region 4");
    assert!(d.bar_write(4, 2, &[9]).is_empty());
    assert_eq!(rec.lock().unwrap().region_writes, vec![(4, 2, vec![9])]);
    // MSI-X table entry 1: address, data, unmask -> nothing yet (disabled)
    assert!(
        d.bar_write(0, 0x2010, &0xfee0_1000u32.to_le_bytes())
            .is_empty()
    );
    d.bar_read(0, 0x2010, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0xfee0_1000);
    assert_eq!(
        rec.lock().unwrap().region_writes.len(),
        1,
        "table writes stay here"
    );
}

#[test]
fn msix_enable_wires_every_vector_at_vfio_and_routes_follow_the_table() {
    let (mut d, rec) = device(VfioOptions::default());
    assert_eq!(
        rec.lock().unwrap().irqs,
        vec![(IrqIndex::Intx, 1)],
        "INTx at start"
    );
    assert_eq!(rec.lock().unwrap().resample, 1);
    assert_eq!(d.msi_vectors().unwrap().len(), 8);
    let _ = d.bar_write(0, 0x2010, &0xfee0_1000u32.to_le_bytes());
    let _ = d.bar_write(0, 0x2018, &0x41u32.to_le_bytes());
    let _ = d.bar_write(0, 0x201c, &0u32.to_le_bytes());
    let changes = w16(&mut d, 0x72, MSIX_ENABLE);
    assert_eq!(
        changes,
        vec![PciChange::Msi {
            vector: 1,
            message: Some(MsiMessage {
                address: 0xfee0_1000,
                data: 0x41
            })
        }]
    );
    assert_eq!(
        rec.lock().unwrap().irqs,
        vec![
            (IrqIndex::Intx, 1),
            (IrqIndex::Intx, 0),
            (IrqIndex::Msix, 8)
        ]
    );
    // Masking vector 1 parks its route; the eventfd keeps a pending bit
    // that the PBA shows.
    let masked = d.bar_write(0, 0x201c, &1u32.to_le_bytes());
    assert_eq!(
        masked,
        vec![PciChange::Msi {
            vector: 1,
            message: None
        }]
    );
    d.msi_vectors().unwrap().trigger(1).unwrap();
    let mut pba = [0u8; 8];
    d.bar_read(0, 0x3000, &mut pba);
    assert_eq!(pba[0], 0b10);
    // Disable: back to INTx, pending dropped.
    let _ = w16(&mut d, 0x72, 0);
    assert_eq!(rec.lock().unwrap().irqs.last(), Some(&(IrqIndex::Intx, 1)));
    d.bar_read(0, 0x3000, &mut pba);
    assert_eq!(pba[0], 0);
}

const MSIX_ENABLE: u16 = 1 << 15;

#[test]
fn msi_enable_wires_the_enabled_vectors_and_mask_bits_park_routes() {
    let (mut d, rec) = device(VfioOptions::default());
    // The stale host state was cleared: disabled, no address.
    assert_eq!(r16(&mut d, 0x52) & 1, 0);
    assert_eq!(r32(&mut d, 0x54), 0);
    assert_eq!((r16(&mut d, 0x52) >> 1) & 7, 2, "4 vectors offered");
    let _ = w32(&mut d, 0x54, 0xfee0_0000);
    let _ = w32(&mut d, 0x58, 0);
    let _ = w16(&mut d, 0x5c, 0x30);
    // Enable with MME = 1 (2 vectors).
    let changes = w16(&mut d, 0x52, (1 << 4) | 1);
    assert_eq!(changes.len(), 2);
    assert_eq!(rec.lock().unwrap().irqs.last(), Some(&(IrqIndex::Msi, 2)));
    // Mask vector 0 (mask register at 0x60), raise it: pending at 0x64.
    let masked = w32(&mut d, 0x60, 1);
    assert_eq!(
        masked,
        vec![PciChange::Msi {
            vector: 0,
            message: None
        }]
    );
    d.msi_vectors().unwrap().trigger(0).unwrap();
    assert_eq!(r32(&mut d, 0x64) & 1, 1);
    let unmasked = w32(&mut d, 0x60, 0);
    assert!(matches!(
        &unmasked[..],
        [PciChange::Msi {
            vector: 0,
            message: Some(_)
        }]
    ));
    assert!(
        !rec.lock()
            .unwrap()
            .config_writes
            .iter()
            .any(|(o, _)| (0x50..0x68).contains(o)),
        "MSI registers are emulated, never written to the function"
    );
}

#[test]
fn a_rom_file_replaces_the_device_rom_sized_to_a_power_of_two() {
    let rom: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let (mut d, _) = device(VfioOptions {
        rom: Some(rom.clone()),
        ..Default::default()
    });
    let _ = w32(&mut d, 0x30, u32::MAX);
    assert_eq!(
        r32(&mut d, 0x30) & 0xffff_f801,
        0xffff_e001,
        "8 KiB, enable bit writable"
    );
    let _ = w32(&mut d, 0x30, 0xfeb0_0001);
    let changes = w16(&mut d, 0x04, COMMAND_MEMORY);
    assert!(changes.iter().any(|c| matches!(
        c,
        PciChange::Bar {
            index: 6,
            new: Some(0xfeb0_0000),
            ..
        }
    )));
    let mut b = [0u8; 4];
    d.bar_read(ROM_BAR_INDEX, 4996, &mut b);
    assert_eq!(b, [rom[4996], rom[4997], rom[4998], rom[4999]]);
    d.bar_read(ROM_BAR_INDEX, 5000, &mut b);
    assert_eq!(b, [0; 4], "padding");
    let _ = d.bar_write(ROM_BAR_INDEX, 0, &[0xff]);
    d.bar_read(ROM_BAR_INDEX, 0, &mut b);
    assert_eq!(b[0], 0, "read-only");
    let l = d.bar_layout(ROM_BAR_INDEX).unwrap();
    let [
        BarPiece::Memory {
            memory,
            read_only: true,
            len: 0x2000,
            ..
        },
    ] = &l.pieces[..]
    else {
        panic!("the ROM is read-only memory: {:?}", l.pieces);
    };
    let mut got = vec![0u8; rom.len()];
    use vm_memory::VolatileMemory;
    memory
        .get_slice(0, rom.len())
        .unwrap()
        .copy_to(&mut got[..]);
    assert_eq!(got, rom, "the mapped ROM holds the file");
}

#[test]
fn the_device_rom_is_read_once_and_served_from_memory() {
    let (mut d, _) = device(VfioOptions::default());
    let mut b = [0u8; 4];
    d.bar_read(ROM_BAR_INDEX, 0x10, &mut b);
    assert_eq!(b, [0x16, 0x17, 0x18, 0x19], "the fake's region 6 contents");
}

#[test]
fn rombar_off_hides_the_rom() {
    let (mut d, _) = device(VfioOptions {
        no_rom: true,
        ..Default::default()
    });
    let _ = w32(&mut d, 0x30, u32::MAX);
    assert_eq!(r32(&mut d, 0x30), 0);
}

#[test]
fn fuzz_config_virtualization_and_msi_msix() {
    let (mut d, _) = device(VfioOptions::default());
    let before = (walk(&mut d), walk_ext(&mut d));
    let mut n = 0u64;
    crate::fuzz::run("vfio_config", 200_000, |rng| {
        // The capability chains are the model's, not the guest's: whatever
        // was written, a guest walking them finds the same kept list and
        // never a hidden capability (checked every 1000 executions).
        n += 1;
        if n % 1000 == 0 {
            let now = (walk(&mut d), walk_ext(&mut d));
            assert_eq!(now, before, "capability chains changed under guest writes");
            assert!(
                now.0
                    .iter()
                    .all(|(id, _)| crate::vfio::caps::keep_capability(*id))
            );
            assert!(
                now.1
                    .iter()
                    .all(|(id, _)| *id == 0 || crate::vfio::caps::keep_extended_capability(*id))
            );
        }
        let r = rng.u64();
        let len = [1usize, 2, 4][(r % 3) as usize];
        let off = ((r >> 8) % 4200) as u16 & !(len as u16 - 1);
        let val = (rng.u64() as u32).to_le_bytes();
        match (r >> 40) % 5 {
            0 | 1 => {
                let _ = d.config_write(off, &val[..len]);
            }
            2 => {
                let mut b = [0u8; 4];
                d.config_read(off, &mut b[..len]);
            }
            3 => {
                let bar = ((r >> 20) % 8) as u8;
                let _ = d.bar_write(bar, rng.u64() % 0x5000, &val[..len]);
            }
            _ => {
                let bar = ((r >> 20) % 8) as u8;
                let mut b = [0u8; 8];
                d.bar_read(bar, rng.u64() % (1 << 34), &mut b[..len]);
                let _ = d.bar_layout(bar);
            }
        }
    });
}

#[test]
fn a_hidden_capability_hides_only_its_own_bytes() {
    let (mut d, _) = device(VfioOptions::default());
    assert_eq!(r32(&mut d, 0x180), 0, "ARI header");
    assert_eq!(r32(&mut d, 0x184), 0, "ARI body");
    assert_eq!(
        r32(&mut d, 0x190),
        0x7777_7777,
        "registers after it pass through"
    );
}

#[test]
fn only_the_enabled_kind_routes_vectors_when_msi_and_msix_are_both_on() {
    let (mut d, _) = device(VfioOptions::default());
    // MSI-X vector 0 live.
    let _ = d.bar_write(0, 0x2000, &0xfee0_1000u32.to_le_bytes());
    let _ = d.bar_write(0, 0x2008, &0x41u32.to_le_bytes());
    let _ = d.bar_write(0, 0x200c, &0u32.to_le_bytes());
    let _ = w16(&mut d, 0x72, MSIX_ENABLE);
    // A confused guest enables MSI too: MSI-X keeps the vectors.
    let _ = w32(&mut d, 0x54, 0xfee0_2000);
    let _ = w16(&mut d, 0x5c, 0x99);
    let both = w16(&mut d, 0x52, 1);
    assert!(both.is_empty(), "MSI does not take over vector 0: {both:?}");
    let off = w16(&mut d, 0x52, 0);
    assert!(
        off.is_empty(),
        "and disabling it does not kill MSI-X's vector 0: {off:?}"
    );
    // MSI-X off with MSI on: MSI's route replaces it.
    let _ = w16(&mut d, 0x52, 1);
    let switch = w16(&mut d, 0x72, 0);
    assert_eq!(
        switch,
        vec![PciChange::Msi {
            vector: 0,
            message: Some(MsiMessage {
                address: 0xfee0_2000,
                data: 0x99
            })
        }]
    );
}

#[test]
fn emulated_bytes_of_a_write_never_reach_the_function() {
    let (mut d, rec) = device(VfioOptions::default());
    // id, next, MSI control: all emulated.
    let _ = w32(&mut d, 0x50, 0x0001_0000);
    // interrupt line and pin emulated, min_gnt/max_lat passed through.
    let _ = w32(&mut d, 0x3c, 0xaabb_0105);
    assert_eq!(
        rec.lock().unwrap().config_writes,
        vec![(0x3e, vec![0xbb, 0xaa])]
    );
    assert_eq!(r8(&mut d, 0x3c), 0x05, "the line is kept here");
}

#[test]
fn d3hot_takes_the_bars_away_and_d0_brings_them_back() {
    let (mut d, _) = device(VfioOptions::default());
    let _ = w32(&mut d, 0x1c, 0x8);
    let _ = w16(&mut d, 0x04, COMMAND_MEMORY);
    assert!(d.bar_layout(2).is_some());
    let changes = w16(&mut d, 0x44, 3);
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, PciChange::Bar { index: 2, .. }))
    );
    assert!(
        d.bar_layout(2).is_none(),
        "no mapping while the kernel blocks it"
    );
    let changes = w16(&mut d, 0x44, 0);
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, PciChange::Bar { index: 2, .. }))
    );
    assert!(d.bar_layout(2).is_some());
}

#[test]
fn a_function_reset_returns_the_emulated_registers_to_reset() {
    let (mut d, rec) = device(VfioOptions::default());
    let _ = w32(&mut d, 0x10, 0xfe00_0000);
    let _ = w16(&mut d, 0x04, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    let _ = d.bar_write(0, 0x200c, &0u32.to_le_bytes());
    let _ = w16(&mut d, 0x72, MSIX_ENABLE);
    // Device control (PCIe cap 0x80 + 8): Initiate FLR.
    let changes = w16(&mut d, 0x88, 0x8000);
    assert!(changes.iter().any(|c| matches!(
        c,
        PciChange::Bar {
            index: 0,
            new: None,
            ..
        }
    )));
    assert_eq!(r16(&mut d, 0x04), 0, "decode off");
    assert_eq!(r32(&mut d, 0x10), 0x4, "BAR back at 0");
    assert_eq!(r16(&mut d, 0x72) & MSIX_ENABLE, 0);
    assert_eq!(rec.lock().unwrap().irqs.last(), Some(&(IrqIndex::Intx, 1)));
    assert!(
        rec.lock()
            .unwrap()
            .config_writes
            .contains(&(0x88, vec![0x00, 0x80])),
        "the FLR itself reaches the function"
    );
}
