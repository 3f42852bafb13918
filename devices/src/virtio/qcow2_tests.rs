//! qcow2 against `qemu-img` as the oracle (`tests/check` installs
//! qemu-utils; without `qemu-img` these tests fail and say so).

use std::path::{Path, PathBuf};
use std::process::Command;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::chain::Segment;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("tessera-qcow2-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is needed for the qcow2 tests: apt-get install qemu-utils");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "qemu-img {args:?}: {text}");
    text
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 512) as u8 ^ (i as u8).wrapping_mul(7))
        .collect()
}

/// golden.qcow2 (4 MiB of a pattern) and overlay.qcow2 on it.
fn chain(d: &Dir) -> (PathBuf, PathBuf, Vec<u8>) {
    let raw = d.0.join("golden.raw");
    let data = pattern(4 << 20);
    std::fs::write(&raw, &data).unwrap();
    let golden = d.0.join("golden.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", p(&raw), p(&golden)]);
    let overlay = d.0.join("overlay.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "golden.qcow2",
        "-F",
        "qcow2",
        p(&overlay),
    ]);
    (golden, overlay, data)
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

fn segs(addr: u64, len: u32) -> Segments {
    let mut s = Segments::default();
    s.push_for_tests(Segment { addr, len });
    s
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn an_overlay_reads_through_to_its_golden_image_and_qemu_img_checks_it_clean() {
    let d = dir("chain");
    let (golden, overlay, data) = chain(&d);
    let golden_before = sha(&golden);
    let mem = memory();
    {
        let disk = Qcow2Disk::open(&overlay, false, false).unwrap();
        assert_eq!(disk.size(), 4 << 20);
        // read 64 KiB at 1 MiB: the golden image's bytes
        assert_eq!(
            disk.read_into(1 << 20, &segs(0x1000, 0x10000), &mem)
                .unwrap(),
            0x10000
        );
        let mut got = vec![0u8; 0x10000];
        mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
        assert_eq!(got, data[1 << 20..(1 << 20) + 0x10000]);
        // write 4 KiB at an offset inside a cluster (copy-on-write), zero
        // 64 KiB, discard nothing else, flush
        mem.write_slice(&[0xa5; 4096], GuestAddress(0x20_0000))
            .unwrap();
        disk.write_from(0x30_1200, &segs(0x20_0000, 4096), &mem)
            .unwrap();
        disk.write_zeroes(0x10_0000, 0x1_0000).unwrap();
        disk.flush().unwrap();
        // a second VM must not write the golden image, or this overlay
        let e = crate::virtio::block::RawFile::open(&golden, false, false).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        let e = Qcow2Disk::open(&overlay, false, false).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        // but another overlay of the same golden image may open
        let other = d.0.join("other.qcow2");
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-b",
            "golden.qcow2",
            "-F",
            "qcow2",
            p(&other),
        ]);
        Qcow2Disk::open(&other, false, false).expect("a second overlay shares the golden image");
    }
    let check = qemu_img(&["check", p(&overlay)]);
    assert!(check.contains("No errors were found"), "{check}");
    assert_eq!(sha(&golden), golden_before, "the golden image is untouched");
    let out = d.0.join("out.raw");
    qemu_img(&["convert", "-O", "raw", p(&overlay), p(&out)]);
    let flat = std::fs::read(&out).unwrap();
    let mut want = data.clone();
    want[0x30_1200..0x30_2200].fill(0xa5);
    want[0x10_0000..0x11_0000].fill(0);
    assert!(flat == want, "qemu-img reads what tessera wrote");
}

#[test]
fn images_made_by_tessera_writes_read_back_in_tessera_and_zlib_clusters_read() {
    let d = dir("zlib");
    let raw = d.0.join("src.raw");
    let data = pattern(1 << 20);
    std::fs::write(&raw, &data).unwrap();
    let z = d.0.join("z.qcow2");
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", p(&raw), p(&z)]);
    let mem = memory();
    let disk = Qcow2Disk::open(&z, false, false).unwrap();
    disk.read_into(0, &segs(0, 1 << 20), &mem).unwrap();
    let mut got = vec![0u8; 1 << 20];
    mem.read_slice(&mut got, GuestAddress(0)).unwrap();
    assert_eq!(got, data, "compressed clusters read");
    // overwrite part of a compressed cluster and read it back
    mem.write_slice(&[0x11; 512], GuestAddress(0x10_0000))
        .unwrap();
    disk.write_from(0x8200, &segs(0x10_0000, 512), &mem)
        .unwrap();
    disk.flush().unwrap();
    disk.read_into(0x8000, &segs(0x20_0000, 0x1000), &mem)
        .unwrap();
    let mut b = vec![0u8; 0x1000];
    mem.read_slice(&mut b, GuestAddress(0x20_0000)).unwrap();
    assert_eq!(b[..0x200], data[0x8000..0x8200]);
    assert!(b[0x200..0x400].iter().all(|&x| x == 0x11));
    drop(disk);
    let check = qemu_img(&["check", p(&z)]);
    assert!(check.contains("No errors were found"), "{check}");
}

#[test]
fn dirty_corrupt_and_zstd_images_are_refused_with_what_to_run() {
    let d = dir("refuse");
    let img = d.0.join("a.qcow2");
    qemu_img(&["create", "-f", "qcow2", p(&img), "1M"]);
    let set_bit = |bit: u8| {
        let mut b = std::fs::read(&img).unwrap();
        b[79] |= 1 << bit;
        std::fs::write(&img, b).unwrap();
    };
    set_bit(0);
    let e = Qcow2Disk::open(&img, false, false).unwrap_err().to_string();
    assert!(e.contains("qemu-img check -r all"), "{e}");
    qemu_img(&["create", "-f", "qcow2", p(&img), "1M"]);
    set_bit(1);
    let e = Qcow2Disk::open(&img, false, false).unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");
    let zstd = d.0.join("z.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        p(&zstd),
        "1M",
    ]);
    let e = Qcow2Disk::open(&zstd, false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("zstd") && e.contains("qemu-img convert"), "{e}");
}
