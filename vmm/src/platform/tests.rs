use std::sync::{Arc, Mutex};

use devices::pci::{BarKind, Bdf, MsiMessage};
use devices::{Effect, Effects, Window};
use vm_memory::MmapRegion;

use super::*;
use crate::bus::tests::Probe;
use crate::exit::EffectSink;
use crate::vm_ops::tests::{Call, Recorder};

fn platform() -> (Arc<Recorder>, Platform) {
    let rec = Arc::new(Recorder::default());
    (
        rec.clone(),
        Platform::new(rec, &[(0, 0x1000_0000), (0x1_0000_0000, 0x1000_0000)]),
    )
}

#[test]
fn ecam_and_pm_block_follow_the_guest() {
    let (_, mut p) = platform();
    p.add_window(
        Window::Ecam,
        Movable::new(Arc::new(Mutex::new(Probe::default())), 0x1000_0000),
    );
    p.add_window(
        Window::AcpiPm,
        Movable::new(Arc::new(Mutex::new(Probe::default())), 0x80),
    );
    let ecam = |new| Effect::Window {
        window: Window::Ecam,
        new,
    };
    p.apply(Effects::one(ecam(Some((0xb000_0000, 0x1000_0000)))));
    let mut b = [0u8; 4];
    assert!(p.buses.mmio.read(0xb000_0010, &mut b));
    p.apply(Effects::one(ecam(Some((0xe000_0000, 0x1000_0000)))));
    assert!(!p.buses.mmio.read(0xb000_0010, &mut b));
    assert!(p.buses.mmio.read(0xe000_0010, &mut b));
    assert_eq!(p.window_base(Window::Ecam), Some(0xe000_0000));
    // Only the length changes (PCIEXBAR 256 -> 64 buses): the bus range
    // follows.
    p.apply(Effects::one(ecam(Some((0xe000_0000, 0x400_0000)))));
    assert!(p.buses.mmio.read(0xe3ff_fff0, &mut b));
    assert!(!p.buses.mmio.read(0xe400_0010, &mut b));
    p.apply(Effects::one(ecam(Some((0xe000_0000, 0x1000_0000)))));
    assert!(p.buses.mmio.read(0xe400_0010, &mut b));
    p.apply(Effects::one(ecam(None)));
    assert!(!p.buses.mmio.read(0xe000_0010, &mut b));
    let pm = |new| Effect::Window {
        window: Window::AcpiPm,
        new,
    };
    p.apply(Effects::one(pm(Some((0x600, 0x80)))));
    assert!(p.buses.pio.read(0x604, &mut b[..2]));
    p.apply(Effects::one(pm(Some((0xb000, 0x80)))));
    assert!(!p.buses.pio.read(0x604, &mut b[..2]));
    assert!(p.buses.pio.read(0xb004, &mut b[..2]));
}

#[test]
fn a_window_moved_onto_another_device_stays_unmapped() {
    let (_, mut p) = platform();
    p.add_window(
        Window::Ecam,
        Movable::new(Arc::new(Mutex::new(Probe::default())), 0x1000),
    );
    p.buses
        .mmio
        .insert(
            0xfee0_0000,
            0x1000,
            "other",
            Arc::new(Mutex::new(Probe::default())),
        )
        .unwrap();
    p.apply(Effects::one(Effect::Window {
        window: Window::Ecam,
        new: Some((0xfee0_0000, 0x1000)),
    }));
    assert_eq!(p.window_base(Window::Ecam), None);
}

/// A function whose BARs sit where the test says; BAR2 is 16 KiB with a
/// mapped first half; reads return the BAR index and offset.
struct Endpoint {
    bases: [Option<u64>; 7],
    memory: Arc<MmapRegion>,
    bells: Vec<Arc<vmm_sys_util::eventfd::EventFd>>,
}

impl Endpoint {
    fn new() -> Self {
        Self {
            bases: [None; 7],
            memory: Arc::new(MmapRegion::new(0x2000).unwrap()),
            bells: (0..2)
                .map(|_| Arc::new(vmm_sys_util::eventfd::EventFd::new(0).unwrap()))
                .collect(),
        }
    }
}

impl devices::pci::PciDevice for Endpoint {
    fn config_read(&mut self, _: u16, data: &mut [u8]) {
        data.fill(0);
    }
    fn config_write(&mut self, _: u16, _: &[u8]) -> Vec<PciChange> {
        Vec::new()
    }
    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        data.fill(index);
        data[0] = offset as u8;
    }
    fn bar_layout(&mut self, index: u8) -> Option<BarLayout> {
        let base = self.bases[usize::from(index)]?;
        Some(match index {
            0 => BarLayout::trapped(base, BarKind::Io, 0x20, "io".into()),
            2 => BarLayout {
                base,
                kind: BarKind::Mem64 { prefetchable: true },
                size: 0x4000,
                pieces: vec![
                    BarPiece::Memory {
                        offset: 0,
                        len: 0x2000,
                        memory: self.memory.clone(),
                        read_only: false,
                        name: "ep BAR2".into(),
                    },
                    BarPiece::Trap {
                        offset: 0x2000,
                        len: 0x2000,
                        name: "ep BAR2 msix-table".into(),
                    },
                ],
            },
            4 => BarLayout {
                base,
                kind: BarKind::Mem32 {
                    prefetchable: false,
                },
                size: 0x2000,
                pieces: vec![
                    BarPiece::Trap {
                        offset: 0,
                        len: 0x1000,
                        name: "ep BAR4 config".into(),
                    },
                    BarPiece::Doorbells {
                        offset: 0x1000,
                        len: 0x1000,
                        doorbells: self
                            .bells
                            .iter()
                            .enumerate()
                            .map(|(i, fd)| devices::pci::Doorbell {
                                offset: 0x1000 + 4 * i as u64,
                                fd: fd.clone(),
                            })
                            .collect(),
                        name: "ep BAR4 notify".into(),
                    },
                ],
            },
            _ => BarLayout::trapped(
                base,
                BarKind::Mem32 {
                    prefetchable: false,
                },
                0x1000,
                "mem".into(),
            ),
        })
    }
}

fn bar_change(index: u8) -> Effects {
    Effects::one(Effect::Pci {
        bdf: Bdf::new(0, 2, 0),
        change: PciChange::Bar {
            index,
            kind: BarKind::Io,
            size: 0,
            old: None,
            new: None,
        },
    })
}

fn setup() -> (Arc<Recorder>, Platform, Arc<Mutex<Endpoint>>) {
    let (rec, p) = platform();
    let ep = Arc::new(Mutex::new(Endpoint::new()));
    p.add_pci_function(Bdf::new(0, 2, 0), ep.clone()).unwrap();
    (rec, p, ep)
}

#[test]
fn bars_follow_the_device_and_never_cover_other_devices() {
    let (_, p, ep) = setup();
    ep.lock().unwrap().bases[1] = Some(0xc000_0000);
    p.apply(bar_change(1));
    let mut b = [0u8; 4];
    assert!(p.buses.mmio.read(0xc000_0010, &mut b));
    assert_eq!(b, [0x10, 1, 1, 1]);
    ep.lock().unwrap().bases[1] = Some(0xc001_0000);
    p.apply(bar_change(1));
    assert!(!p.buses.mmio.read(0xc000_0010, &mut b));
    assert!(p.buses.mmio.read(0xc001_0010, &mut b));
    ep.lock().unwrap().bases[0] = Some(0xc000);
    p.apply(bar_change(0));
    assert!(p.buses.pio.read(0xc004, &mut b[..1]));
    // Over another device: refused; disabling then removes nothing else.
    p.buses
        .mmio
        .insert(
            0xfee0_0000,
            0x1000,
            "lapic",
            Arc::new(Mutex::new(Probe::default())),
        )
        .unwrap();
    ep.lock().unwrap().bases[1] = Some(0xfee0_0000);
    p.apply(bar_change(1));
    assert!(!p.buses.mmio.read(0xc001_0010, &mut b));
    ep.lock().unwrap().bases[1] = None;
    p.apply(bar_change(1));
    assert!(
        p.buses.mmio.read(0xfee0_0000, &mut b),
        "the other device is untouched"
    );
}

#[test]
fn memory_pieces_become_slots_that_move_and_are_reused() {
    let (rec, p, ep) = setup();
    ep.lock().unwrap().bases[2] = Some(0x8_0000_0000);
    p.apply(bar_change(2));
    assert_eq!(
        rec.take(),
        vec![Call::SetMemory {
            slot: 2,
            gpa: 0x8_0000_0000,
            len: 0x2000,
            read_only: false
        }]
    );
    let mut b = [0u8; 4];
    assert!(
        !p.buses.mmio.read(0x8_0000_0000, &mut b),
        "mapped, not trapped"
    );
    assert!(
        p.buses.mmio.read(0x8_0000_2004, &mut b),
        "the MSI-X page is trapped"
    );
    assert_eq!(b[0], 4, "trap offsets are relative to the BAR... ");
    ep.lock().unwrap().bases[2] = Some(0x9_0000_0000);
    p.apply(bar_change(2));
    assert_eq!(
        rec.take(),
        vec![
            Call::RemoveMemory {
                slot: 2,
                gpa: 0x8_0000_0000
            },
            Call::SetMemory {
                slot: 2,
                gpa: 0x9_0000_0000,
                len: 0x2000,
                read_only: false
            }
        ],
        "the slot id is given back and reused"
    );
    // Applying the same (stale or repeated) change again changes nothing.
    p.apply(bar_change(2));
    assert!(rec.take().is_empty());
    assert_eq!(p.mapped_history().len(), 2);
    // Off page alignment the memory piece is trapped instead.
    ep.lock().unwrap().bases[2] = Some(0x9_0000_0800);
    p.apply(bar_change(2));
    assert_eq!(
        rec.take(),
        vec![Call::RemoveMemory {
            slot: 2,
            gpa: 0x9_0000_0000
        }]
    );
    assert!(p.buses.mmio.read(0x9_0000_0804, &mut b));
    assert_eq!(b[0], 4);
}

#[test]
fn a_trapped_piece_never_lies_under_ram_or_mapped_memory() {
    let (rec, p, ep) = setup();
    // Over RAM (0..256 MiB): refused, nothing of the BAR is mapped.
    ep.lock().unwrap().bases[1] = Some(0x0800_0000);
    p.apply(bar_change(1));
    let mut b = [0u8; 4];
    assert!(!p.buses.mmio.read(0x0800_0010, &mut b));
    // Under another BAR's mapped memory: refused too.
    ep.lock().unwrap().bases[2] = Some(0x8_0000_0000);
    p.apply(bar_change(2));
    rec.take();
    ep.lock().unwrap().bases[1] = Some(0x8_0000_1000);
    p.apply(bar_change(1));
    assert!(!p.buses.mmio.read(0x8_0000_1010, &mut b));
}

#[test]
fn a_memory_piece_never_shadows_a_trapped_device() {
    let (rec, p, ep) = setup();
    p.buses
        .mmio
        .insert(
            0xfed0_1000,
            0x10,
            "hpet-ish",
            Arc::new(Mutex::new(Probe::default())),
        )
        .unwrap();
    ep.lock().unwrap().bases[2] = Some(0xfed0_0000);
    p.apply(bar_change(2));
    assert!(rec.take().is_empty(), "no slot");
    let mut b = [0u8; 4];
    assert!(
        !p.buses.mmio.read(0xfed0_2000, &mut b),
        "and nothing else of the BAR"
    );
}

#[test]
fn msi_changes_of_one_write_are_one_routing_update() {
    let (rec, p) = platform();
    let msi = |vector| Effect::Pci {
        bdf: Bdf::new(0, 4, 0),
        change: PciChange::Msi {
            vector,
            message: Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x30 + u32::from(vector),
            }),
        },
    };
    let mut e = Effects::none();
    for v in 0..4 {
        e.push(msi(v));
    }
    p.apply(e);
    let calls = rec.take();
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::SetRoutes { .. }))
            .count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn doorbells_become_ioeventfds_that_follow_the_bar() {
    use std::os::fd::AsRawFd;
    let (rec, p, ep) = setup();
    let fds: Vec<i32> = ep
        .lock()
        .unwrap()
        .bells
        .iter()
        .map(|f| f.as_raw_fd())
        .collect();
    ep.lock().unwrap().bases[4] = Some(0xc010_0000);
    rec.take();
    p.apply(bar_change(4));
    let registered = |calls: &[Call], on: bool| -> Vec<(i32, u64)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Ioevent {
                    fd,
                    addr,
                    registered,
                } if *registered == on => Some((*fd, *addr)),
                _ => None,
            })
            .collect()
    };
    let calls = rec.take();
    assert_eq!(
        registered(&calls, true),
        vec![(fds[0], 0xc010_1000), (fds[1], 0xc010_1004)]
    );
    // The rest of the piece is trapped (a write that is not a kick still
    // reaches the device).
    let mut b = [0u8; 4];
    assert!(p.buses.mmio.read(0xc010_1008, &mut b));
    // Moved: the old doorbells go, new ones come.
    ep.lock().unwrap().bases[4] = Some(0xc020_0000);
    p.apply(bar_change(4));
    let calls = rec.take();
    assert_eq!(
        registered(&calls, false),
        vec![(fds[0], 0xc010_1000), (fds[1], 0xc010_1004)]
    );
    assert_eq!(
        registered(&calls, true),
        vec![(fds[0], 0xc020_1000), (fds[1], 0xc020_1004)]
    );
    assert!(!p.buses.mmio.read(0xc010_1008, &mut b));
    // Decoding off: nothing left.
    ep.lock().unwrap().bases[4] = None;
    p.apply(bar_change(4));
    assert_eq!(registered(&rec.take(), false).len(), 2);
    assert!(!p.buses.mmio.read(0xc020_1008, &mut b));
}

/// A page standing in for KVM's coalesced ring (8-byte aligned).
struct RingPage(Box<[u64; 512]>);

impl RingPage {
    fn push(&mut self, addr: u64, byte: u8) {
        let p: *mut u8 = self.0.as_mut_ptr().cast();
        // SAFETY: offsets inside the page; the test is single-threaded.
        unsafe {
            let last = p.add(4).cast::<u32>();
            let l = *last;
            let e = p.add(8 + l as usize * 24);
            e.cast::<u64>().write_unaligned(addr);
            e.add(8).cast::<u32>().write_unaligned(1);
            *e.add(16) = byte;
            *last = (l + 1) % crate::coalesced::RING_ENTRIES;
        }
    }
}

#[test]
fn flash_programming_coalesces_only_while_its_slot_is_unmapped() {
    use devices::legacy::pflash::Pflash;
    let (rec, mut p) = platform();
    let base = 0xffc0_0000u64;
    let len = 0x2_0000u64;
    let path = std::env::temp_dir().join(format!("tessera-coalesced-{}.fd", std::process::id()));
    std::fs::write(&path, vec![0xffu8; len as usize]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let flash = Arc::new(Mutex::new(Pflash::new(file, len, false).unwrap()));
    p.buses
        .mmio
        .insert(base, len, "UEFI variable flash", flash.clone())
        .unwrap();
    let f2 = flash.clone();
    let slot = p.slots().allocate();
    p.set_flash(FlashWindow {
        device: flash.clone(),
        contents: Box::new(move || f2.lock().unwrap().contents().to_vec()),
        gpa: base,
        slot,
        buffer: HostBuffer::new(len as usize).unwrap(),
    });
    let mut page = RingPage(Box::new([0u64; 512]));
    // SAFETY: the page outlives the platform (dropped after it below).
    let ring = unsafe { crate::coalesced::Ring::on(page.0.as_mut_ptr().cast()) };
    p.set_coalesced(crate::coalesced::Coalesced::new(ring));
    p.apply(Effects::one(Effect::FlashMode { read_array: true }));
    rec.take();

    // The program command exits (slot mapped, no zone): the slot goes,
    // then the range becomes a zone.
    if let Some(e) = p.buses.mmio.write(base + 0x10, &[0x10]) {
        p.apply(e);
    }
    let calls = rec.take();
    let unmap = calls
        .iter()
        .position(|c| matches!(c, Call::RemoveMemory { .. }));
    let zone = calls.iter().position(|c| {
        *c == Call::Coalesced {
            addr: base,
            len: len as u32,
            registered: true,
        }
    });
    assert!(unmap.is_some() && zone > unmap, "{calls:?}");

    // The guest's next writes went to the ring: the byte, another
    // program command and byte, then read array.
    page.push(base + 0x10, 0x42);
    page.push(base + 0x11, 0x10);
    page.push(base + 0x11, 0x43);
    page.push(base + 0x11, 0xff);
    assert_eq!(p.drain_coalesced(), 4);
    let calls = rec.take();
    let unzone = calls.iter().position(|c| {
        *c == Call::Coalesced {
            addr: base,
            len: len as u32,
            registered: false,
        }
    });
    let map = calls
        .iter()
        .position(|c| matches!(c, Call::SetMemory { .. }));
    assert!(
        unzone.is_some() && map > unzone,
        "zone off before the slot returns: {calls:?}"
    );
    let mut b = [0u8; 2];
    p.buses.mmio.read(base + 0x10, &mut b);
    assert_eq!(b, [0x42, 0x43], "the replayed writes programmed the flash");
    assert_eq!(p.coalesced_writes(), Some(4));
    // Nothing registered now: draining is idle.
    page.push(base, 0x10);
    assert_eq!(p.drain_coalesced(), 0);
    drop(p);
    drop(page);
}
