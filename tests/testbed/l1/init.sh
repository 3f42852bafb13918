#!/bin/busybox sh
# shellcheck shell=sh disable=SC2086,SC2013
# /init of the L1 ("nested host") initramfs, built by `testbed fetch`.
#  1. mount the pseudo filesystems and insmod the modules in /modules.order
#     (dependency order, plain .ko files: busybox insmod cannot unpack .ko.xz;
#     the list is empty, or missing, when the kernel has them built in);
#  2. mount the host's root filesystem (virtio-9p tag "hostroot", read-only)
#     as the lower layer of an overlayfs with a tmpfs upper layer: L1 sees
#     every host file (the repo, target/, the host's QEMU) and may write
#     anywhere; the writes are discarded at power-off;
#  3. mount the per-run job directory (9p tag "job", read-write) at
#     /run/testbed inside the chroot: cmd.sh comes from there and files
#     written there (logs) appear on the host;
#  4. start the heartbeat (below);
#  5. chroot into the overlay and run /run/testbed/cmd.sh with bash, its
#     output going to /job/out.log, which L0 streams to its stdout;
#  6. write the exit status to the job directory and power off.
# Nothing of CMD goes to L1's serial console: its tty waits for the UART's
# transmit interrupt, and a writer there blocks for good if that interrupt is
# lost (L1's IO-APIC interrupts pass L0's emulated interrupt remapping); the
# kernel's own console output polls and stays there.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /mnt/host /mnt/rw /mnt/root /job
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
t_mods=$(cut -d' ' -f1 /proc/uptime)
# (empty for a kernel with everything built in: TESTBED_L1=iommufd)
for m in $(cat /modules.order 2>/dev/null); do
  insmod /lib/modules/$m.ko || echo "TESTBED: insmod $m failed"
done
t_mods_done=$(cut -d' ' -f1 /proc/uptime)
fail() { echo "TESTBED: L1 init: $*"; poweroff -f; }
# host root: read-only, aggressive client caching (it does not change under us)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /mnt/host ||
  fail "cannot mount hostroot"
mount -t tmpfs -o mode=755 tmpfs /mnt/rw && mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /mnt/root ||
  fail "cannot mount the overlay"
R=/mnt/root
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job /job || fail "cannot mount job"
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
ln -sf /proc/self/fd $R/dev/fd
ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout
ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/run
mkdir -p $R/run/testbed
mount --bind /job $R/run/testbed
mount -t debugfs none $R/sys/kernel/debug 2>/dev/null
ip link set lo up 2>/dev/null
# Heartbeat: every 10 s /job/heartbeat (uptime, load, the serial port's
# counters, the processes); every 30 s /job/dmesg (the kernel log's tail) and
# /job/stuck (kernel stacks of tasks in uninterruptible sleep). L0 ends a
# run whose heartbeat stops (lib/l1.sh) and shows these files.
heartbeat() {
  n=0
  while :; do
    {
      echo "L1 uptime $(cut -d' ' -f1 /proc/uptime)s, load $(cut -d' ' -f1-4 /proc/loadavg)"
      grep -m1 '^0:' /proc/tty/driver/serial
      grep 'ttyS0\|vfio' /proc/interrupts
      # shellcheck disable=SC2009  # busybox pgrep cannot list the commands
      ps | grep -v ' \[.*\]$'
    } > /job/heartbeat.new 2>&1 && mv /job/heartbeat.new /job/heartbeat
    if [ $((n % 3)) = 0 ]; then
      dmesg | tail -n 200 > /job/dmesg.new 2>&1 && mv /job/dmesg.new /job/dmesg
      for st in /proc/[0-9]*/stat; do
        d=${st%/stat}
        read -r _ comm state _ < "$st" 2>/dev/null || continue
        [ "$state" = D ] || continue
        echo "-- ${d#/proc/} $comm D wchan=$(cat $d/wchan 2>/dev/null)"
        cat $d/stack 2>/dev/null
      done > /job/stuck.new 2>&1 && mv /job/stuck.new /job/stuck
    fi
    n=$((n + 1))
    sleep 10
  done
}
heartbeat < /dev/null > /dev/null 2>&1 &
echo "TESTBED: L1 $(uname -r) up at $(cut -d' ' -f1 /proc/uptime)s (modules ${t_mods}-${t_mods_done}s), $(ls /dev/kvm 2>&1)" > /job/out.log
chroot $R /bin/bash /run/testbed/cmd.sh < /dev/null >> /job/out.log 2>&1
rc=$?
echo $rc > /job/rc
sync
poweroff -f
