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
/// one frame, as on a tap); the other end is returned. `vnet_hdr`: the
/// "tap" carries the header; `guest_csum`: the driver took GUEST_CSUM.
fn handler_with(vnet_hdr: bool, guest_csum: bool) -> (NetHandler, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let tap = Arc::new(File::from(OwnedFd::from(a)));
    (NetHandler::new(tap, "net0".into(), vnet_hdr, guest_csum), b)
}

fn handler() -> (NetHandler, UnixDatagram) {
    handler_with(false, false)
}

fn queue(mem: &GuestMemoryMmap, at: u64, chains: &[&[(u64, u32, u16)]]) -> (Queue, u64) {
    let q = MockSplitQueue::create(mem, GuestAddress(at), 32);
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
    assert!(h.waiting.is_some());
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

#[test]
fn offloads_are_offered_only_on_a_tap_with_the_header() {
    let (a, _b) = UnixDatagram::pair().unwrap();
    let plain = Net::new(File::from(OwnedFd::from(a)), "n".into(), [2, 0, 0, 0, 0, 1]);
    assert_eq!(plain.features() & OFFLOADS, 0);
    let (a, _b) = UnixDatagram::pair().unwrap();
    let hdr_only = Net::with_vnet_hdr(File::from(OwnedFd::from(a)), "n".into(), [2; 6], false);
    assert_eq!(hdr_only.features() & OFFLOADS, 0);
    let (a, _b) = UnixDatagram::pair().unwrap();
    let full = Net::with_vnet_hdr(File::from(OwnedFd::from(a)), "n".into(), [2; 6], true);
    assert_eq!(full.features() & OFFLOADS, OFFLOADS);
    assert_ne!(full.features() & F_MAC, 0);
}

#[test]
fn the_tap_is_told_exactly_what_the_driver_took() {
    assert_eq!(tap_offloads(0), 0, "OVMF takes none");
    assert_eq!(tap_offloads(F_GUEST_CSUM), libc::TUN_F_CSUM);
    assert_eq!(
        tap_offloads(F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_CSUM | F_HOST_TSO4),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
    );
    // TSO without checksum offload is not a valid set: nothing
    assert_eq!(tap_offloads(F_GUEST_TSO4 | F_GUEST_TSO6), 0);
}

#[test]
fn with_the_header_on_the_tap_it_passes_through_both_ways() {
    let mem = memory();
    let (mut h, peer) = handler_with(true, true);
    // transmit: a TSO-style header (NEEDS_CSUM, GSO TCPv4) reaches the tap
    // unchanged, ahead of the frame
    let hdr: [u8; HDR_LEN] = [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];
    let frame = vec![0x42u8; 3000];
    mem.write_slice(&hdr, GuestAddress(0x8000)).unwrap();
    mem.write_slice(&frame, GuestAddress(0x9000)).unwrap();
    let (mut q, _) = queue(
        &mem,
        0,
        &[&[(0x8000, HDR_LEN as u32, 0), (0x9000, 3000, 0)]],
    );
    assert_eq!(h.process(TX, &mut q, &mem).unwrap(), 1);
    let mut got = vec![0u8; 8192];
    let n = peer.recv(&mut got).unwrap();
    assert_eq!(n, HDR_LEN + 3000);
    assert_eq!(got[..HDR_LEN], hdr);
    assert_eq!(got[HDR_LEN..n], frame[..]);

    // receive: a 64 KiB segment with its header lands in a "big packets"
    // chain (header descriptor plus 17 pages), num_buffers 1, flags kept
    let mut seg = vec![0u8; HDR_LEN + 65000];
    seg[..10].copy_from_slice(&[HDR_F_DATA_VALID, 1, 54, 0, 0xa8, 0x05, 0, 0, 0, 0]);
    for (i, b) in seg[HDR_LEN..].iter_mut().enumerate() {
        *b = i as u8;
    }
    peer.send(&seg).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
    let mut descs = vec![(0x2_0000u64, HDR_LEN as u32, F_WRITE)];
    descs.extend((0..17u64).map(|p| (0x10_0000 + p * 0x1000, 0x1000u32, F_WRITE)));
    let (mut q, used) = queue(&mem, 0, &[&descs]);
    assert_eq!(h.process(RX, &mut q, &mem).unwrap(), 1);
    assert_eq!(used_len(&mem, used, 0), (HDR_LEN + 65000) as u32);
    let mut back = [0u8; HDR_LEN];
    mem.read_slice(&mut back, GuestAddress(0x2_0000)).unwrap();
    assert_eq!(back[..10], seg[..10], "the tap's header as it came");
    assert_eq!(back[10..], 1u16.to_le_bytes(), "num_buffers");
    let mut body = vec![0u8; 65000];
    mem.read_slice(&mut body, GuestAddress(0x10_0000)).unwrap();
    assert_eq!(body[..], seg[HDR_LEN..]);
}

#[test]
fn a_driver_without_guest_csum_gets_no_checksum_flags() {
    let mem = memory();
    let (mut h, peer) = handler_with(true, false);
    let mut f = vec![0u8; HDR_LEN + 60];
    f[0] = HDR_F_DATA_VALID;
    peer.send(&f).unwrap();
    let (mut q, used) = queue(&mem, 0, &[&[(0x8000, 1526, F_WRITE)]]);
    assert_eq!(h.process(RX, &mut q, &mem).unwrap(), 1);
    assert_eq!(used_len(&mem, used, 0), (HDR_LEN + 60) as u32);
    let mut hdr = [0xffu8; HDR_LEN];
    mem.read_slice(&mut hdr, GuestAddress(0x8000)).unwrap();
    assert_eq!(hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    // a read shorter than a header is no frame
    peer.send(&[1, 2, 3]).unwrap();
    let (mut q, _) = queue(&mem, 0x2_0000, &[&[(0x8000, 1526, F_WRITE)]]);
    assert_eq!(h.process(RX, &mut q, &mem).unwrap(), 0);
    assert_eq!(h.dropped, 1);
}
