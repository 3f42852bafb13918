#!/bin/busybox sh
# shellcheck shell=sh disable=SC2013
# /init of the L2 test guest (busybox initramfs built by `testbed fetch` into
# $CACHE/l2/initrd.gz).  Everything it prints goes to the serial console
# (console=ttyS0), one "KEY ..." line per fact:
#   TESSERA-L2-BOOT-OK <kernel release> uptime=<s>   the boot marker
#   L2-CPUS <n> online=<list>                        CPUs the guest sees
#   L2-PCI <bdf> <vendor>:<device> class=<c> driver=<d>   one per PCI function
#   L2-MEM total_kb=<MemTotal> used_kb=<MemTotal-MemFree>
#   L2-EFI yes|no                                    /sys/firmware/efi exists (UEFI boot)
#   L2-DMESG-BAD <line> / L2-DMESG-BAD-COUNT <n>     kernel log lines with ACPI
#                                                    errors or firmware bugs
#   L2-CHECK ... / L2-CHECK rc=<n>                   the optional check script
#   L2-POWEROFF uptime=<s>                           just before `poweroff -f`
# Kernel command-line switches:
#   tessera.panic=1   after the facts, crash the kernel (sysrq 'c'); with
#                     panic=-1 on the command line the kernel resets at once
#   tessera.hang=1    after the facts, print TESSERA-L2-HANG and sleep forever
#                     (for --timeout / --expect-serial tests)
#   tessera.hold=N    sleep N seconds before powering off (benchmarks sample
#                     the VMM's memory then)
#   tessera.reboot=1  after the facts, reboot instead of powering off
# Check script: a second initramfs appended to this one (the kernel unpacks
# concatenated cpio archives; `cat initrd.gz check.cpio.gz`) that contains an
# executable /check.sh.  It runs after the facts; its output is prefixed with
# "L2-CHECK " and its exit status reported as "L2-CHECK rc=N" (tests look for
# rc=0).  `testbed` builds such images with l2/boot-tests.sh's make_check_initrd.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
up() { cut -d' ' -f1 /proc/uptime; }
if [ -f /modules.order ]; then
  for m in $(cat /modules.order); do insmod "/lib/modules/$m.ko" || echo "L2: insmod $m failed"; done
fi
echo "TESSERA-L2-BOOT-OK $(uname -r) uptime=$(up)s"

panic=0 hang=0 hold=0 reboot=0
for w in $(cat /proc/cmdline); do
  case $w in
    tessera.panic=1) panic=1 ;;
    tessera.hang=1) hang=1 ;;
    tessera.hold=*) hold=${w#tessera.hold=} ;;
    tessera.reboot=1) reboot=1 ;;
  esac
done

echo "L2-CPUS $(grep -c '^processor' /proc/cpuinfo) online=$(cat /sys/devices/system/cpu/online)"
n=0
for d in /sys/bus/pci/devices/*; do
  [ -e "$d/vendor" ] || continue
  drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
  echo "L2-PCI $(basename "$d") $(sed 's/^0x//' "$d/vendor"):$(sed 's/^0x//' "$d/device") class=$(cat "$d/class") driver=${drv:-none}"
  n=$((n + 1))
done
echo "L2-PCI-COUNT $n"
awk '/^MemTotal:/ { t = $2 } /^MemFree:/ { f = $2 }
     END { printf "L2-MEM total_kb=%d used_kb=%d\n", t, t - f }' /proc/meminfo

if [ -d /sys/firmware/efi ]; then echo "L2-EFI yes"; else echo "L2-EFI no"; fi
dmesg | grep -E 'ACPI Error|ACPI BIOS Error|FW_BUG|\[Firmware Bug\]' > /tmp/bad 2>/dev/null
sed 's/^/L2-DMESG-BAD /' /tmp/bad
echo "L2-DMESG-BAD-COUNT $(wc -l < /tmp/bad)"

if [ -x /check.sh ]; then
  { /check.sh; echo "rc=$?"; } 2>&1 | sed 's/^/L2-CHECK /'
fi
if [ "$panic" = 1 ]; then
  echo "TESSERA-L2-PANIC triggering a kernel panic (sysrq c)"
  echo c > /proc/sysrq-trigger
fi
if [ "$reboot" = 1 ]; then
  echo "TESSERA-L2-REBOOT uptime=$(up)s"
  reboot -f
fi
if [ "$hang" = 1 ]; then
  echo "TESSERA-L2-HANG sleeping forever"
  while :; do sleep 3600; done
fi
[ "$hold" -gt 0 ] 2>/dev/null && sleep "$hold"
echo "L2-POWEROFF uptime=$(up)s"
poweroff -f
