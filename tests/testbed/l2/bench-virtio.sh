#!/bin/bash
# virtio-blk and virtio-net benchmark (not a test): tessera vs QEMU 10
# (virtio-blk-pci / virtio-net-pci, modern, -accel kvm -cpu host -M q35)
# with the same guest, image and tap, in one L1, BENCH_N [3] alternating
# runs each; the medians and the tessera/QEMU ratios are printed.
#
#   bench-virtio.sh --cache DIR --logdir DIR
#
# Disk: a 256 MiB raw image in L1's tmpfs (the virtualisation cost, not a
# medium's), writeback caching in both, one queue, 512 MiB, 1 vCPU. The
# guest (the L2 passthrough guest plus bench/randio.c built static) runs:
# sequential 1 MiB O_DIRECT read and write of 192 MiB (dd), 4 KiB random
# O_DIRECT read and write for BENCH_SECS [5] s at queue depth 1 and 32
# (randio). Network: the guest sends 64 MiB to L1 over the tap (TCP) and
# receives 64 MiB; MB/s from L1's clock. QEMU's tap uses vhost=off (both
# VMMs move frames in userspace) and its default offloads, tessera's
# offers checksum and TSO offload too.
#
# Both VMMs run on one L1 CPU (BENCH_PIN [0], taskset -c; "" = unpinned):
# with a VMM's I/O thread on one L1 CPU and its vCPU on the other, L0's TCG
# triple-faults or hangs the L2 guest under traffic (see the testbed
# README), which is what cut the first run short. Pinned, the device
# thread and the vCPU share one CPU: the numbers compare the two VMMs, not
# what either does on real hardware.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vmm.sh
. "$HERE/vmm.sh"
parse_l2_args "$@"
K=$CACHE/l2pt/vmlinuz
I=$CACHE/l2pt/initrd.gz
BUSYBOX=$CACHE/pkg/busybox
N=${BENCH_N:-3}
SECS=${BENCH_SECS:-5}
CMDLINE="console=ttyS0 panic=-1 quiet"
T=${TESSERA_BIN:?TESSERA_BIN not set}
mkdir -p "$LOGDIR"
IMG=/tmp/bench-virtio.img
head -c 256M /dev/urandom > "$IMG"

# The guest: the l2pt initramfs, randio, and a check script.
work=$(mktemp -d)
gcc -static -O2 -o "$work/randio" "$HERE/bench/randio.c" || { echo "bench-virtio: cannot build randio (gcc, libc6-dev)"; exit 1; }
cat > "$work/check.sh" <<GUEST
#!/bin/sh
w=0; while [ ! -b /dev/vda ] && [ \$w -lt 50 ]; do sleep 0.1; w=\$((w + 1)); done
t() { local a b; a=\$(cut -d' ' -f1 /proc/uptime); "\$@" > /dev/null 2>&1; b=\$(cut -d' ' -f1 /proc/uptime); echo "\$a \$b" | awk '{ print \$2 - \$1 }'; }
s=\$(t dd if=/dev/vda of=/dev/null bs=1M count=192 iflag=direct)
echo "BENCH seqread_MBps \$(echo \$s | awk '{ printf "%.1f", 192 / \$1 }')" > /dev/ttyS0
s=\$(t dd if=/dev/zero of=/dev/vda bs=1M count=192 oflag=direct)
echo "BENCH seqwrite_MBps \$(echo \$s | awk '{ printf "%.1f", 192 / \$1 }')" > /dev/ttyS0
for m in read write; do for d in 1 32; do
  echo "BENCH rand\${m}_qd\${d}_iops \$(/randio /dev/vda \$m \$d $SECS 256 | cut -d' ' -f2)" > /dev/ttyS0
done; done
ifc=\$(ls /sys/class/net | grep -v '^lo\$' | head -1)
if [ -n "\$ifc" ]; then
  ip link set "\$ifc" up; ip addr add 10.10.0.2/24 dev "\$ifc"; ping -c 1 -W 5 10.10.0.1 > /dev/null 2>&1
  echo BENCH-NET-UP > /dev/ttyS0
  yes tessera-net | head -c 67108864 | nc 10.10.0.1 5001
  nc 10.10.0.1 5002 < /dev/null > /dev/null
fi
echo BENCH-DONE > /dev/ttyS0
GUEST
chmod 0755 "$work/check.sh"
(cd "$work" && printf '%s\n' check.sh randio | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null | gzip -1 -n) > "$work/extra.gz"
GUEST_INITRD=$LOGDIR/bench-initrd.gz
cat "$I" "$work/extra.gz" > "$GUEST_INITRD"
rm -rf "$work"

ip link del ttap0 2> /dev/null
ip tuntap add dev ttap0 mode tap && ip addr add 10.10.0.1/24 dev ttap0 && ip link set ttap0 up

# net_server RESULT: receive 64 MiB on 5001 and send 64 MiB on 5002, writing
# "up_MBps down_MBps" (L1's clock, first byte to last) to RESULT.
net_server() {
  python3 - "$1" <<'PY'
import socket, sys, time
N = 64 << 20
def listen(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.10.0.1", p)); s.listen(1); s.settimeout(600); return s
up, down = listen(5001), listen(5002)
c, _ = up.accept(); n = 0; t0 = None
while n < N:
    b = c.recv(1 << 16)
    if not b: break
    t0 = t0 or time.monotonic(); n += len(b)
tu = time.monotonic() - t0; c.close()
c, _ = down.accept(); chunk = b"tessera-net\n" * 8192; t0 = time.monotonic(); sent = 0
while sent < N:
    c.sendall(chunk[: min(len(chunk), N - sent)]); sent += min(len(chunk), N - sent)
c.shutdown(socket.SHUT_WR); c.recv(1); td = time.monotonic() - t0; c.close()
open(sys.argv[1], "w").write(f"{64 / tu:.1f} {64 / td:.1f}\n")
PY
}

PIN=()
[ -n "${BENCH_PIN-0}" ] && command -v taskset > /dev/null && PIN=(taskset -c "${BENCH_PIN-0}")
run_one() { # VMM I
  local vmm=$1 i=$2 out=$LOGDIR/$1-$2 srv
  : > "$out.serial"
  net_server "$out.net" &
  srv=$!
  case $vmm in
    tessera)
      "${PIN[@]}" "$T" run --kernel "$K" --initrd "$GUEST_INITRD" --cmdline "$CMDLINE" --memory 512M \
        --disk "path=$IMG" --net "tap=ttap0" --serial "file=$out.serial" --timeout 600 \
        --expect-serial BENCH-DONE > "$out.vmm" 2>&1 < /dev/null ;;
    qemu)
      timeout 600 "${PIN[@]}" qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 512M -smp 1 -nodefaults \
        -no-user-config -display none -no-reboot -serial "file:$out.serial" \
        -kernel "$K" -initrd "$GUEST_INITRD" -append "$CMDLINE" \
        -drive "file=$IMG,if=none,id=d0,format=raw,cache=writeback,aio=threads" \
        -device virtio-blk-pci,drive=d0,disable-legacy=on \
        -netdev tap,id=n0,ifname=ttap0,script=no,downscript=no,vhost=off \
        -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile= > "$out.vmm" 2>&1 < /dev/null &
      local q=$! w=0
      while ! grep -aq BENCH-DONE "$out.serial" 2> /dev/null && [ $w -lt 6000 ] && kill -0 $q 2> /dev/null; do sleep 0.1; w=$((w + 1)); done
      kill $q 2> /dev/null; wait $q 2> /dev/null ;;
  esac
  wait $srv 2> /dev/null
  tr -d '\r' < "$out.serial" | grep -a '^BENCH ' | sed "s/^BENCH /$vmm /"
  [ -f "$out.net" ] && read -r u d < "$out.net" && echo "$vmm net_guest_to_l1_MBps $u" && echo "$vmm net_l1_to_guest_MBps $d"
}

echo "bench-virtio in L1 ($(uname -r)): tessera $("$T" --version | head -1) vs $(qemu-system-x86_64 --version | head -1), $N runs each"
: > "$LOGDIR/samples"
for i in $(seq 1 "$N"); do
  for vmm in tessera qemu; do run_one $vmm "$i" | tee -a "$LOGDIR/samples"; done
done
ip link del ttap0 2> /dev/null
rm -f "$IMG"
python3 - "$LOGDIR/samples" <<'PY'
import collections, statistics, sys
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3:
        try: v[(p[0], p[1])].append(float(p[2]))
        except ValueError: pass
names = sorted({k[1] for k in v})
print("| measure | tessera | QEMU | tessera/QEMU |")
print("|---|---|---|---|")
for n in names:
    t, q = v.get(("tessera", n)), v.get(("qemu", n))
    mt = statistics.median(t) if t else None
    mq = statistics.median(q) if q else None
    r = f"{mt / mq:.2f}" if mt and mq else "-"
    print(f"| {n} | {mt if mt is not None else '-'} | {mq if mq is not None else '-'} | {r} |")
PY
