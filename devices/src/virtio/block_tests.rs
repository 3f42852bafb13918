use std::path::PathBuf;

use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress};

use super::*;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const HDR: u64 = 0x4_0000;
const DATA: u64 = 0x5_0000;
const STATUS: u64 = 0x6_0000;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

struct Disk {
    path: PathBuf,
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn disk(name: &str, sectors: u64) -> Disk {
    let path = std::env::temp_dir().join(format!("tessera-blk-{name}-{}", std::process::id()));
    let bytes: Vec<u8> = (0..sectors * SECTOR)
        .map(|i| (i / SECTOR) as u8 ^ (i as u8))
        .collect();
    std::fs::write(&path, bytes).unwrap();
    Disk { path }
}

fn handler(d: &Disk, read_only: bool) -> BlockHandler {
    let backend = Arc::new(RawFile::open(&d.path, read_only, false).unwrap());
    let mut b = Block::new(
        backend,
        BlockOptions {
            name: "disk0".into(),
            read_only,
            serial: Some("tessera-serial-0123456789".into()),
            queues: 1,
        },
    );
    let _ = b.activate(0);
    BlockHandler {
        backend: b.backend.clone(),
        options: b.options.clone(),
    }
}

/// Run one request: header (type, sector), then the given data
/// descriptors, then the status byte; returns (status, used length).
fn request(
    h: &mut BlockHandler,
    mem: &GuestMemoryMmap,
    ty: u32,
    sector: u64,
    data: &[(u64, u32, u16)],
) -> (u8, u32) {
    let mut hdr = [0u8; 16];
    hdr[0..4].copy_from_slice(&ty.to_le_bytes());
    hdr[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
    mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
    let mut descs = vec![(HDR, 16u32, 0u16)];
    descs.extend_from_slice(data);
    descs.push((STATUS, 1, F_WRITE));
    let raw: Vec<RawDescriptor> = descs
        .iter()
        .enumerate()
        .map(|(i, &(a, l, f))| {
            let next = if i + 1 < descs.len() { F_NEXT } else { 0 };
            RawDescriptor::from(SplitDescriptor::new(a, l, f | next, (i + 1) as u16))
        })
        .collect();
    let q = MockSplitQueue::create(mem, GuestAddress(0), 16);
    q.add_desc_chains(&raw, 0).unwrap();
    let mut queue: Queue = q.create_queue().unwrap();
    assert_eq!(h.process(0, &mut queue, mem).unwrap(), 1);
    let used_len = mem.read_obj::<u32>(q.used_addr().unchecked_add(8)).unwrap();
    (mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), used_len)
}

#[test]
fn reads_and_writes_move_sectors_between_the_image_and_guest_memory() {
    let mem = memory();
    let d = disk("rw", 64);
    let mut h = handler(&d, false);
    // Read sectors 3 and 4 into two descriptors.
    let (s, used) = request(
        &mut h,
        &mem,
        T_IN,
        3,
        &[(DATA, 512, F_WRITE), (DATA + 0x1000, 512, F_WRITE)],
    );
    assert_eq!((s, used), (S_OK, 1025));
    let image = std::fs::read(&d.path).unwrap();
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, image[3 * 512..4 * 512]);
    mem.read_slice(&mut got, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(got, image[4 * 512..5 * 512]);
    // Write sector 10 from guest memory.
    mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(
        request(&mut h, &mem, T_OUT, 10, &[(DATA, 512, 0)]),
        (S_OK, 1)
    );
    assert_eq!(request(&mut h, &mem, T_FLUSH, 0, &[]), (S_OK, 1));
    let image = std::fs::read(&d.path).unwrap();
    assert!(image[10 * 512..11 * 512].iter().all(|&b| b == 0x5a));
    assert_eq!(image.len(), 64 * 512, "the image does not grow");
}

#[test]
fn requests_past_the_end_or_of_odd_lengths_fail_and_touch_nothing() {
    let mem = memory();
    let d = disk("range", 8);
    let mut h = handler(&d, false);
    let before = std::fs::read(&d.path).unwrap();
    assert_eq!(
        request(&mut h, &mem, T_IN, 7, &[(DATA, 1024, F_WRITE)]).0,
        S_IOERR
    );
    assert_eq!(
        request(&mut h, &mem, T_IN, u64::MAX / 256, &[(DATA, 512, F_WRITE)]).0,
        S_IOERR
    );
    assert_eq!(
        request(&mut h, &mem, T_OUT, 8, &[(DATA, 512, 0)]).0,
        S_IOERR
    );
    assert_eq!(
        request(&mut h, &mem, T_OUT, 0, &[(DATA, 100, 0)]).0,
        S_IOERR
    );
    assert_eq!(request(&mut h, &mem, 77, 0, &[]).0, S_UNSUPP);
    assert_eq!(std::fs::read(&d.path).unwrap(), before);
}

#[test]
fn a_read_only_disk_refuses_every_change() {
    let mem = memory();
    let d = disk("ro", 8);
    let mut h = handler(&d, true);
    let before = std::fs::read(&d.path).unwrap();
    assert_eq!(
        request(&mut h, &mem, T_OUT, 0, &[(DATA, 512, 0)]).0,
        S_IOERR
    );
    let mut seg = [0u8; 16];
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    assert_eq!(
        request(&mut h, &mem, T_DISCARD, 0, &[(DATA, 16, 0)]).0,
        S_IOERR
    );
    assert_eq!(
        request(&mut h, &mem, T_IN, 0, &[(DATA, 512, F_WRITE)]).0,
        S_OK
    );
    assert_eq!(std::fs::read(&d.path).unwrap(), before);
    let b = Block::new(
        Arc::new(RawFile::open(&d.path, true, false).unwrap()),
        BlockOptions {
            name: "x".into(),
            read_only: true,
            serial: None,
            queues: 1,
        },
    );
    assert_ne!(b.features() & F_RO, 0);
    assert_eq!(b.features() & (F_DISCARD | F_WRITE_ZEROES), 0);
}

#[test]
fn get_id_write_zeroes_and_discard() {
    let mem = memory();
    let d = disk("misc", 16);
    let mut h = handler(&d, false);
    assert_eq!(
        request(&mut h, &mem, T_GET_ID, 0, &[(DATA, 20, F_WRITE)]),
        (S_OK, 21)
    );
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"tessera-serial-01234");
    // write-zeroes sectors 2..4
    let mut seg = [0u8; 16];
    seg[0..8].copy_from_slice(&2u64.to_le_bytes());
    seg[8..12].copy_from_slice(&2u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    assert_eq!(
        request(&mut h, &mem, T_WRITE_ZEROES, 0, &[(DATA, 16, 0)]).0,
        S_OK
    );
    let image = std::fs::read(&d.path).unwrap();
    assert!(image[2 * 512..4 * 512].iter().all(|&b| b == 0));
    assert!(image[4 * 512..5 * 512].iter().any(|&b| b != 0));
    // discard sectors 8..16, then a range past the end
    seg[0..8].copy_from_slice(&8u64.to_le_bytes());
    seg[8..12].copy_from_slice(&8u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    assert_eq!(
        request(&mut h, &mem, T_DISCARD, 0, &[(DATA, 16, 0)]).0,
        S_OK
    );
    seg[8..12].copy_from_slice(&9u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    assert_eq!(
        request(&mut h, &mem, T_DISCARD, 0, &[(DATA, 16, 0)]).0,
        S_IOERR
    );
    assert_eq!(std::fs::metadata(&d.path).unwrap().len(), 16 * 512);
}

#[test]
fn malformed_chains_are_completed_without_touching_memory_outside_ram() {
    let mem = memory();
    let d = disk("bad", 8);
    let mut h = handler(&d, false);
    // Data outside guest RAM: dropped with length 0, status untouched.
    let (s, used) = request(&mut h, &mem, T_IN, 0, &[(0x20_0000, 512, F_WRITE)]);
    assert_eq!((s, used), (0xaa, 0));
    // A readable data descriptor after a writable one.
    let (s, used) = request(
        &mut h,
        &mem,
        T_OUT,
        0,
        &[(DATA, 512, F_WRITE), (DATA, 512, 0)],
    );
    assert_eq!((s, used), (0xaa, 0));
    // No header.
    let raw = [RawDescriptor::from(SplitDescriptor::new(
        STATUS, 1, F_WRITE, 0,
    ))];
    let q = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    q.add_desc_chains(&raw, 0).unwrap();
    let mut queue: Queue = q.create_queue().unwrap();
    assert_eq!(h.process(0, &mut queue, &mem).unwrap(), 1);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
}

#[test]
fn a_second_writer_is_refused_with_a_clear_error() {
    let d = disk("lock", 8);
    let first = RawFile::open(&d.path, false, false).unwrap();
    let e = RawFile::open(&d.path, false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("in use by another process"), "{e}");
    let e = RawFile::open(&d.path, true, false).unwrap_err().to_string();
    assert!(e.contains("in use"), "{e}");
    drop(first);
    let r1 = RawFile::open(&d.path, true, false).unwrap();
    let _r2 = RawFile::open(&d.path, true, false).expect("two readers share it");
    drop(r1);
}

#[test]
fn fuzz_virtio_blk_requests() {
    let mem = memory();
    let d = disk("fuzz", 32);
    let mut h = handler(&d, false);
    crate::fuzz::run("virtio_blk_requests", 3_000, |rng| {
        let ty = rng.pick(&[
            T_IN,
            T_OUT,
            T_FLUSH,
            T_GET_ID,
            T_DISCARD,
            T_WRITE_ZEROES,
            5,
            99,
        ]);
        let sector = if rng.one_in(4) {
            rng.u64()
        } else {
            rng.below(40)
        };
        let n = rng.below(4) as usize;
        let mut data = Vec::new();
        for _ in 0..n {
            let addr = if rng.one_in(8) {
                rng.u64()
            } else {
                DATA + rng.below(0x8000)
            };
            let len = if rng.one_in(8) {
                rng.u64() as u32
            } else {
                rng.pick(&[16u32, 20, 511, 512, 1024, 4096])
            };
            let flags = if rng.one_in(2) { F_WRITE } else { 0 };
            data.push((addr, len, flags));
        }
        if matches!(ty, T_DISCARD | T_WRITE_ZEROES) {
            let mut seg = [0u8; 16];
            seg[0..8].copy_from_slice(&rng.below(40).to_le_bytes());
            seg[8..12].copy_from_slice(&(rng.below(40) as u32).to_le_bytes());
            seg[12..16].copy_from_slice(&(rng.below(3) as u32).to_le_bytes());
            let _ = mem.write_slice(&seg, GuestAddress(DATA));
        }
        let _ = request(&mut h, &mem, ty, sector, &data);
    });
    assert_eq!(
        std::fs::metadata(&d.path).unwrap().len(),
        32 * 512,
        "never grows"
    );
}
