use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::pci::msix::MSIX_CONTROL_ENABLE;
use crate::virtio::{QueueError, QueueHandler, STATUS_ACKNOWLEDGE, STATUS_DRIVER};

/// A device with two queues whose handler completes every chain with the
/// number of readable bytes as the used length, counting them.
struct Counter {
    served: Arc<AtomicUsize>,
}

struct CounterHandler {
    served: Arc<AtomicUsize>,
}

impl QueueHandler for CounterHandler {
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<usize, QueueError> {
        let mut n = 0;
        while let Some(c) = queue.pop_descriptor_chain(mem) {
            let head = c.head_index();
            queue
                .add_used(mem, head, 7)
                .map_err(|source| QueueError::Ring { index, source })?;
            self.served.fetch_add(1, Ordering::SeqCst);
            n += 1;
        }
        Ok(n)
    }
}

impl VirtioDevice for Counter {
    fn device_type(&self) -> u16 {
        9
    }
    fn pci_class(&self) -> (u8, u8, u8) {
        (0xff, 0, 0)
    }
    fn name(&self) -> String {
        "virtio-test".into()
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![16, 16]
    }
    fn features(&self) -> u64 {
        1 << 3
    }
    fn config_read(&self, offset: u64, data: &mut [u8]) {
        super::super::read_le_fields(&[0xa1, 0xa2, 0xa3, 0xa4], offset, data);
    }
    fn activate(&mut self, _features: u64) -> Box<dyn QueueHandler> {
        Box::new(CounterHandler {
            served: self.served.clone(),
        })
    }
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn device(mem: &GuestMemoryMmap) -> (VirtioPci, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let d = VirtioPci::new(
        Box::new(Counter {
            served: served.clone(),
        }),
        mem.clone(),
        "virtio-test".into(),
    )
    .unwrap();
    (d, served)
}

fn r(d: &mut VirtioPci, off: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    d.bar_read(0, off, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn w(d: &mut VirtioPci, off: u64, len: usize, v: u64) {
    let _ = d.bar_write(0, off, &v.to_le_bytes()[..len]);
}

fn cfg16(d: &mut VirtioPci, off: u16) -> u16 {
    let mut b = [0u8; 2];
    d.config_read(off, &mut b);
    u16::from_le_bytes(b)
}

/// Walk the capability list as a driver does: (cap id, offset) pairs.
fn caps(d: &mut VirtioPci) -> Vec<(u8, u16)> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    d.config_read(0x34, &mut b);
    let mut at = u16::from(b[0]);
    while at != 0 && out.len() < 16 {
        d.config_read(at, &mut b);
        out.push((b[0], at));
        d.config_read(at + 1, &mut b);
        at = u16::from(b[0]);
    }
    out
}

/// Negotiate `features`, set queue 0 up at `ring` (size 16, vector 0) and
/// set DRIVER_OK.
fn bring_up(d: &mut VirtioPci, features: u64, ring: u64) {
    w(d, 0x14, 1, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER));
    w(d, 0x08, 4, 0);
    w(d, 0x0c, 4, features & 0xffff_ffff);
    w(d, 0x08, 4, 1);
    w(d, 0x0c, 4, features >> 32);
    w(
        d,
        0x14,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
    );
    assert_ne!(
        r(d, 0x14, 1) as u8 & STATUS_FEATURES_OK,
        0,
        "features accepted"
    );
    let mem = d.mem.clone();
    let q = MockSplitQueue::create(&mem, GuestAddress(ring), 16);
    w(d, 0x16, 2, 0);
    w(d, 0x18, 2, 16);
    for (off, addr) in [
        (0x20, q.desc_table_addr().0),
        (0x28, q.avail_addr().0),
        (0x30, q.used_addr().0),
    ] {
        w(d, off, 4, addr & 0xffff_ffff);
        w(d, off + 4, 4, addr >> 32);
    }
    w(d, 0x1a, 2, 0);
    assert_eq!(r(d, 0x1a, 2), 0, "vector 0 taken");
    w(d, 0x1c, 2, 1);
    // MSI-X on, then DRIVER_OK
    let msix = caps(d).into_iter().find(|c| c.0 == 0x11).unwrap().1;
    let _ = d.config_write(msix + 2, &MSIX_CONTROL_ENABLE.to_le_bytes());
    w(
        d,
        0x14,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
    );
}

/// The used ring's index (`used`: the ring's address; a MockSplitQueue
/// must not be created again to find it: that resets the rings).
fn used_idx(mem: &GuestMemoryMmap, used: u64) -> u16 {
    mem.read_obj::<u16>(GuestAddress(used + 2)).unwrap()
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn the_function_is_a_modern_virtio_device_with_every_capability() {
    let mem = memory();
    let (mut d, _) = device(&mem);
    assert_eq!(cfg16(&mut d, 0x00), 0x1af4);
    assert_eq!(cfg16(&mut d, 0x02), 0x1049);
    assert_eq!(cfg16(&mut d, 0x2c), 0x1af4);
    assert!(
        cfg16(&mut d, 0x2e) >= 0x40,
        "OVMF's Virtio10Dxe wants subsystem >= 0x40"
    );
    let mut rev = [0u8];
    d.config_read(0x08, &mut rev);
    assert_eq!(rev[0], 1);
    let list = caps(&mut d);
    let mut types = Vec::new();
    for &(id, at) in &list {
        if id == 0x09 {
            let mut b = [0u8; 16];
            d.config_read(at, &mut b[..4]);
            d.config_read(at + 4, &mut b[4..8]);
            d.config_read(at + 8, &mut b[8..12]);
            d.config_read(at + 12, &mut b[12..16]);
            types.push((b[3], b[4], u32::from_le_bytes(b[8..12].try_into().unwrap())));
        }
    }
    assert_eq!(
        types,
        vec![
            (CFG_COMMON, 0, COMMON_OFFSET as u32),
            (CFG_NOTIFY, 0, NOTIFY_OFFSET as u32),
            (CFG_ISR, 0, ISR_OFFSET as u32),
            (CFG_DEVICE, 0, DEVICE_OFFSET as u32),
            (CFG_PCI, 0, 0),
        ]
    );
    let notify = list.iter().find(|c| c.0 == 0x09).unwrap().1;
    let _ = notify;
    let msix = list.iter().find(|c| c.0 == 0x11).unwrap().1;
    assert_eq!(
        cfg16(&mut d, msix + 2) & 0x7ff,
        2,
        "3 vectors: 2 queues + config"
    );
    assert_eq!(r(&mut d, 0x12, 2), 2, "num_queues");
    // Device features: its own bit 3 and VERSION_1 in the upper half.
    w(&mut d, 0x00, 4, 0);
    assert_ne!(r(&mut d, 0x04, 4) & (1 << 3), 0);
    w(&mut d, 0x00, 4, 1);
    assert_ne!(r(&mut d, 0x04, 4) & 1, 0, "VERSION_1");
    // Device config through the device window.
    assert_eq!(r(&mut d, DEVICE_OFFSET + 1, 2), 0xa3a2);
}

#[test]
fn features_ok_is_refused_without_version_1_or_with_unknown_bits() {
    let mem = memory();
    let (mut d, _) = device(&mem);
    for bad in [0u64, F_VERSION_1 | (1 << 40)] {
        w(&mut d, 0x14, 1, 0);
        w(
            &mut d,
            0x14,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER),
        );
        w(&mut d, 0x08, 4, 0);
        w(&mut d, 0x0c, 4, bad & 0xffff_ffff);
        w(&mut d, 0x08, 4, 1);
        w(&mut d, 0x0c, 4, bad >> 32);
        w(
            &mut d,
            0x14,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
        );
        assert_eq!(r(&mut d, 0x14, 1) as u8 & STATUS_FEATURES_OK, 0, "{bad:#x}");
    }
}

#[test]
fn a_kick_is_served_by_the_worker_and_raises_the_queue_vector() {
    let mem = memory();
    let (mut d, served) = device(&mem);
    let ring = 0x1_0000;
    bring_up(&mut d, F_VERSION_1, ring);
    let q = MockSplitQueue::create(&mem, GuestAddress(ring), 16);
    let descs = [RawDescriptor::from(SplitDescriptor::new(
        0x2_0000, 64, 0, 0,
    ))];
    q.add_desc_chains(&descs, 0).unwrap();
    assert_eq!(r(&mut d, 0x14, 1), 0xf, "DRIVER_OK, no NEEDS_RESET");
    w(&mut d, NOTIFY_OFFSET, 2, 0);
    let used = q.used_addr().0;
    assert!(wait_for(|| used_idx(&mem, used) == 1), "served");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert!(wait_for(|| d.vectors.is_pending(0)), "vector 0 raised");
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 1, "ISR queue bit");
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 0, "read clears it");
    // A second chain, kicked through the doorbell eventfd the way KVM's
    // ioeventfd would.
    let descs = [RawDescriptor::from(SplitDescriptor::new(
        0x2_0000, 64, 0, 0,
    ))];
    q.add_desc_chains(&descs, 1).unwrap();
    let layout = d.bar_layout(0);
    assert!(layout.is_none(), "BAR0 not placed yet: no layout");
    d.kicks[0].write(1).unwrap();
    assert!(wait_for(|| used_idx(&mem, used) == 2));
}

#[test]
fn reset_stops_the_worker_and_restores_every_register() {
    let mem = memory();
    let (mut d, served) = device(&mem);
    let ring = 0x1_0000;
    bring_up(&mut d, F_VERSION_1, ring);
    w(&mut d, 0x10, 2, 2);
    assert_eq!(r(&mut d, 0x10, 2), 2, "config vector");
    w(&mut d, 0x10, 2, 9);
    assert_eq!(r(&mut d, 0x10, 2), u64::from(NO_VECTOR), "no such vector");
    let generation = r(&mut d, 0x15, 1);
    w(&mut d, 0x14, 1, 0);
    assert_eq!(r(&mut d, 0x14, 1), 0);
    assert_eq!(r(&mut d, 0x15, 1), (generation + 1) & 0xff);
    assert_eq!(r(&mut d, 0x1c, 2), 0, "queue disabled");
    assert_eq!(r(&mut d, 0x1a, 2), u64::from(NO_VECTOR));
    assert_eq!(r(&mut d, 0x18, 2), 16, "size back to the maximum");
    // A kick after the reset is not served.
    let q = MockSplitQueue::create(&mem, GuestAddress(ring), 16);
    let descs = [RawDescriptor::from(SplitDescriptor::new(
        0x2_0000, 64, 0, 0,
    ))];
    q.add_desc_chains(&descs, 0).unwrap();
    w(&mut d, NOTIFY_OFFSET, 2, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(served.load(Ordering::SeqCst), 0);
    assert_eq!(used_idx(&mem, q.used_addr().0), 0);
}

#[test]
fn a_queue_outside_guest_memory_makes_the_device_need_a_reset() {
    let mem = memory();
    let (mut d, _) = device(&mem);
    w(
        &mut d,
        0x14,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER),
    );
    w(&mut d, 0x08, 4, 1);
    w(&mut d, 0x0c, 4, 1);
    w(
        &mut d,
        0x14,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
    );
    w(&mut d, 0x20, 4, 0xffff_0000);
    w(&mut d, 0x24, 4, 0x7);
    w(&mut d, 0x1c, 2, 1);
    w(
        &mut d,
        0x14,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
    );
    assert_ne!(r(&mut d, 0x14, 1) as u8 & STATUS_DEVICE_NEEDS_RESET, 0);
    w(&mut d, 0x14, 1, 0);
    assert_eq!(r(&mut d, 0x14, 1), 0, "a reset clears it");
}

#[test]
fn bar0_is_trapped_around_one_doorbell_per_queue_and_the_pci_cfg_window_reads_it() {
    let mem = memory();
    let (mut d, _) = device(&mem);
    let _ = d.config_write(0x10, &0xfe00_0000u32.to_le_bytes());
    let _ = d.config_write(0x04, &2u16.to_le_bytes());
    let layout = d.bar_layout(0).unwrap();
    assert_eq!((layout.base, layout.size), (0xfe00_0000, BAR_SIZE));
    let mut covered = 0;
    for p in &layout.pieces {
        let (o, l) = p.range();
        assert_eq!(o, covered, "no gaps");
        covered += l;
        if let BarPiece::Doorbells { doorbells, .. } = p {
            assert_eq!(o, NOTIFY_OFFSET);
            let offs: Vec<u64> = doorbells.iter().map(|b| b.offset).collect();
            assert_eq!(
                offs,
                vec![NOTIFY_OFFSET, NOTIFY_OFFSET + 4],
                "relative to the BAR"
            );
            assert!(Arc::ptr_eq(&doorbells[1].fd, &d.kicks[1]));
        }
    }
    assert_eq!(covered, BAR_SIZE);
    // VIRTIO_PCI_CAP_PCI_CFG: bar 0, offset 0x12 (num_queues), length 2.
    let c = d.pci_cfg_cap;
    let _ = d.config_write(c + 4, &[0]);
    let _ = d.config_write(c + 8, &0x12u32.to_le_bytes());
    let _ = d.config_write(c + 12, &2u32.to_le_bytes());
    assert_eq!(cfg16(&mut d, c + 16), 2);
}

#[test]
fn fuzz_virtio_pci_transport() {
    let mem = memory();
    let (mut d, _) = device(&mem);
    crate::fuzz::run("virtio_pci_transport", 20_000, |rng| {
        let width = rng.width();
        let bytes = rng.bytes();
        match rng.below(4) {
            0 => {
                let off = rng.offset(BAR_SIZE + 0x100);
                let _ = d.bar_write(0, off, &bytes[..width]);
            }
            1 => {
                let mut b = [0u8; 8];
                d.bar_read(
                    rng.below(3) as u8,
                    rng.offset(BAR_SIZE + 0x100),
                    &mut b[..width],
                );
            }
            2 => {
                let off = (rng.below(256) as u16) & !(width.max(1) as u16 - 1);
                let _ = d.config_write(off, &bytes[..width.min(4)]);
            }
            _ => {
                // Mostly sane bring-ups, sometimes with garbage ring
                // addresses, so activation and reset are exercised.
                if rng.one_in(50) {
                    bring_up_unchecked(&mut d, rng.u64());
                }
            }
        }
    });
}

fn bring_up_unchecked(d: &mut VirtioPci, ring: u64) {
    w(d, 0x14, 1, 0);
    w(d, 0x14, 1, 3);
    w(d, 0x08, 4, 1);
    w(d, 0x0c, 4, 1);
    w(d, 0x14, 1, 11);
    w(d, 0x20, 4, ring & 0xffff_f000);
    w(d, 0x28, 4, (ring & 0xffff_f000) + 0x100);
    w(d, 0x30, 4, (ring & 0xffff_f000) + 0x200);
    w(d, 0x1c, 2, 1);
    w(d, 0x14, 1, 15);
}

/// A handler that leaves buffers in the queue (a receive queue with no
/// data to give): each kick is one `process` call, not a spin.
struct Waiting {
    calls: Arc<AtomicUsize>,
}

impl QueueHandler for Waiting {
    fn process(
        &mut self,
        _: usize,
        _: &mut Queue,
        _: &GuestMemoryMmap,
    ) -> Result<usize, QueueError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(0)
    }
    fn drains(&self, _: usize) -> bool {
        false
    }
}

struct WaitingDevice {
    calls: Arc<AtomicUsize>,
}

impl VirtioDevice for WaitingDevice {
    fn device_type(&self) -> u16 {
        1
    }
    fn pci_class(&self) -> (u8, u8, u8) {
        (2, 0, 0)
    }
    fn name(&self) -> String {
        "virtio-waiting".into()
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![16]
    }
    fn features(&self) -> u64 {
        0
    }
    fn config_read(&self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&mut self, _: u64) -> Box<dyn QueueHandler> {
        Box::new(Waiting {
            calls: self.calls.clone(),
        })
    }
}

#[test]
fn buffers_a_handler_leaves_for_later_do_not_make_the_worker_spin() {
    let mem = memory();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut d = VirtioPci::new(
        Box::new(WaitingDevice {
            calls: calls.clone(),
        }),
        mem.clone(),
        "virtio-waiting".into(),
    )
    .unwrap();
    let ring = 0x1_0000;
    bring_up(&mut d, F_VERSION_1 | F_RING_EVENT_IDX, ring);
    let q = MockSplitQueue::create(&mem, GuestAddress(ring), 16);
    let descs = [RawDescriptor::from(SplitDescriptor::new(
        0x2_0000, 64, 2, 0,
    ))];
    q.add_desc_chains(&descs, 0).unwrap();
    assert!(
        wait_for(|| calls.load(Ordering::SeqCst) >= 1),
        "served at activation"
    );
    let before = calls.load(Ordering::SeqCst);
    w(&mut d, NOTIFY_OFFSET, 2, 0);
    assert!(wait_for(|| calls.load(Ordering::SeqCst) > before));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "one call per kick"
    );
}
