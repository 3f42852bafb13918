use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;

use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

/// A handler whose "tap" is one end of a datagram socket pair (one read,
/// one frame, as on a tap); the other end is returned.
fn handler() -> (NetHandler, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut net = Net::new(
        File::from(OwnedFd::from(a)),
        "net0".into(),
        [2, 0, 0, 0, 0, 1],
    );
    let h = net.activate(0);
    // Recover the concrete handler through a fresh one with the same tap.
    drop(h);
    (
        NetHandler {
            tap: net.tap.clone(),
            name: "net0".into(),
            stash: None,
            buf: vec![0u8; MAX_FRAME + HDR_LEN],
            dropped: 0,
        },
        b,
    )
}

fn queue(mem: &GuestMemoryMmap, at: u64, chains: &[&[(u64, u32, u16)]]) -> (Queue, u64) {
    let q = MockSplitQueue::create(mem, GuestAddress(at), 16);
    let mut start = 0u16;
    for descs in chains {
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| {
                let next = if i + 1 < descs.len() { F_NEXT } else { 0 };
                RawDescriptor::from(SplitDescriptor::new(a, l, f | next, start + i as u16 + 1))
            })
            .collect();
        q.add_desc_chains(&raw, start).unwrap();
        start += descs.len() as u16;
    }
    (q.create_queue().unwrap(), q.used_addr().0)
}

fn used_len(mem: &GuestMemoryMmap, used: u64, i: u64) -> u32 {
    mem.read_obj::<u32>(GuestAddress(used + 4 + 8 * i + 4))
        .unwrap()
}

#[test]
fn transmitted_frames_reach_the_tap_without_the_header() {
    let mem = memory();
    let (mut h, peer) = handler();
    let frame: Vec<u8> = (0..100u8).collect();
    mem.write_slice(&[0xee; HDR_LEN], GuestAddress(0x8000))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(0x8000 + HDR_LEN as u64))
        .unwrap();
    // header and frame in one descriptor, then split in two
    mem.write_slice(&[0; HDR_LEN], GuestAddress(0x9000))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(0xa000)).unwrap();
    let (mut q, _) = queue(
        &mem,
        0,
        &[
            &[(0x8000, (HDR_LEN + 100) as u32, 0)],
            &[(0x9000, HDR_LEN as u32, 0), (0xa000, 100, 0)],
        ],
    );
    assert_eq!(h.process(TX, &mut q, &mem).unwrap(), 2);
    let mut got = [0u8; 200];
    for _ in 0..2 {
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &frame[..]);
    }
}

#[test]
fn received_frames_get_a_header_and_wait_for_buffers() {
    let mem = memory();
    let (mut h, peer) = handler();
    let frame: Vec<u8> = (0..60u8).collect();
    peer.send(&frame).unwrap();
    // No receive buffer yet: the frame waits.
    let (mut empty, _) = queue(&mem, 0x4_0000, &[]);
    assert_eq!(h.fill_rx(&mut empty, &mem).unwrap(), 0);
    assert!(h.stash.is_some());
    // A buffer comes (the guest's kick): the frame lands in it.
    let (mut q, used) = queue(&mem, 0, &[&[(0x8000, 1526, F_WRITE)]]);
    assert_eq!(h.process(RX, &mut q, &mem).unwrap(), 1);
    assert_eq!(used_len(&mem, used, 0), (HDR_LEN + 60) as u32);
    let mut hdr = [0u8; HDR_LEN];
    mem.read_slice(&mut hdr, GuestAddress(0x8000)).unwrap();
    assert_eq!(hdr[10], 1, "num_buffers");
    let mut body = [0u8; 60];
    mem.read_slice(&mut body, GuestAddress(0x8000 + HDR_LEN as u64))
        .unwrap();
    assert_eq!(body[..], frame[..]);
    // A frame larger than the buffer is dropped, the buffer returned empty.
    peer.send(&[7u8; 3000]).unwrap();
    let (q, used) = queue(&mem, 0x2_0000, &[&[(0x8000, 1526, F_WRITE)]]);
    let mut queues = [Some(q), None];
    let done = h.on_event(0, &mut queues, &mem).unwrap();
    assert_eq!(done, vec![RX]);
    assert_eq!(used_len(&mem, used, 0), 0);
    assert_eq!(h.dropped, 1);
}

#[test]
fn fuzz_virtio_net_chains() {
    let mem = memory();
    let (mut h, peer) = handler();
    peer.set_nonblocking(true).unwrap();
    crate::fuzz::run("virtio_net_chains", 2_000, |rng| {
        let n = rng.below(4) as usize;
        let mut descs = Vec::new();
        for _ in 0..n {
            let addr = if rng.one_in(8) {
                rng.u64()
            } else {
                0x8000 + rng.below(0x8000)
            };
            let len = if rng.one_in(8) {
                rng.u64() as u32
            } else {
                rng.below(3000) as u32
            };
            let flags = if rng.one_in(2) { F_WRITE } else { 0 };
            descs.push((addr, len, flags));
        }
        if rng.one_in(2) {
            let _ = peer.send(&vec![0x55u8; rng.below(2000) as usize]);
        }
        let (mut q, _) = queue(&mem, 0, &[&descs]);
        let index = rng.below(2) as usize;
        let _ = h.process(index, &mut q, &mem);
        let mut buf = [0u8; 4096];
        while peer.recv(&mut buf).is_ok() {
            if !rng.one_in(2) {
                break;
            }
        }
    });
}
