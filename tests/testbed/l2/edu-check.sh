#!/bin/bash
# Check of the tessera-edu driver and the L2 passthrough guest ($CACHE/l2pt).
# Runs inside L1 (whose kernel is the l2pt kernel, so the module loads there
# too) with the Debian L1 kernel:
#
#   tests/testbed/testbed run -- bash tests/testbed/l2/edu-check.sh
#
# 1. in L1: insmod $CACHE/l2pt/modules/tessera_edu.ko on L1's own edu
#    (1234:11e8); `echo 100 > raise` must add exactly 100 to irq_count and
#    to the tessera-edu line of /proc/interrupts; `echo 50 > raise_burst`
#    (back to back: MSIs may merge, so only reported); dma_check must say ok;
# 2. the edu is moved to vfio-pci (driver_override + drivers_probe) and QEMU
#    (-accel kvm) boots the l2pt guest with it (-device vfio-pci,host=BDF)
#    and an appended /check.sh that does the same in L2: the guest must list
#    it with driver=tessera-edu and the check must pass (L2-CHECK rc=0).
# Prints PASS/FAIL lines and "N passed, M failed"; exit status 1 on a failure.
# Knobs: TESTBED_CACHE (default <repo>/target/testbed), L2_TIMEOUT [300].
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${TESTBED_CACHE:-$HERE/../../../target/testbed}
L2PT=$CACHE/l2pt
BUSYBOX=$CACHE/pkg/busybox
if [ "${TESTBED_IN_L1:-0}" = 1 ]; then LOG=/run/testbed/edu-check; else LOG=$(mktemp -d); fi
mkdir -p "$LOG"
npass=0 nfail=0
pass() { echo "PASS $*"; npass=$((npass + 1)); }
fail() { echo "FAIL $*"; nfail=$((nfail + 1)); }
finish() { echo "$npass passed, $nfail failed"; [ "$nfail" = 0 ]; exit; }

# The check itself (POSIX sh, busybox or dash): run here in L1 and as L2's /check.sh.
CHECK=$HERE/edu-guest-check.sh

# --- 1. L1's own edu ---------------------------------------------------------
echo "L1 kernel $(uname -r); l2pt: $(cat "$L2PT/.version" 2>/dev/null)"
ko=$L2PT/modules/tessera_edu.ko
[ -f "$ko" ] || { fail "module: no $ko (run tests/testbed/testbed fetch)"; finish; }
edu=
for x in /sys/bus/pci/devices/*; do
  [ "$(cat "$x/vendor")" = 0x1234 ] && [ "$(cat "$x/device")" = 0x11e8 ] && edu=$(basename "$x")
done
[ -n "$edu" ] || { fail "edu: no 1234:11e8 in L1"; finish; }
sys=/sys/bus/pci/devices/$edu
echo "edu at $edu, driver: $(basename "$(readlink "$sys/driver" 2>/dev/null)" 2>/dev/null)"
if ! "$BUSYBOX" insmod "$ko"; then
  fail "insmod: $ko did not load: $(dmesg | tail -3)"; finish
fi
cp "$CHECK" "$LOG/check.sh"
chmod 0755 "$LOG/check.sh"
if out=$("$LOG/check.sh" 2>&1); then rc=0; else rc=$?; fi
printf '%s\n' "$out" | sed 's/^/  [L1] /'
if [ $rc = 0 ]; then pass "l1-edu ($(printf '%s\n' "$out" | grep -E '^edu-check (raise|raise_burst|dma_check) ' | cut -d' ' -f2- | paste -sd';'))"
else fail "l1-edu: the check failed in L1 (see above)"; fi

# --- 2. the l2pt guest with edu passed through --------------------------------
"$BUSYBOX" rmmod tessera_edu || fail "rmmod tessera_edu"
echo vfio-pci > "$sys/driver_override"
[ -e "$sys/driver" ] && echo "$edu" > "$sys/driver/unbind"
echo "$edu" > /sys/bus/pci/drivers_probe
drv=$(basename "$(readlink "$sys/driver" 2>/dev/null)" 2>/dev/null)
[ "$drv" = vfio-pci ] || { fail "vfio-bind: $edu on ${drv:-no driver}, not vfio-pci"; finish; }
t=$(mktemp -d)
cp "$LOG/check.sh" "$t/check.sh"
(cd "$t" && echo ./check.sh | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null | gzip -1 -n) > "$t/check.gz"
cat "$L2PT/initrd.gz" "$t/check.gz" > "$LOG/initrd-check.gz"
rm -rf "$t"
cmd=(qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 256M -nodefaults -no-reboot
  -display none -serial stdio -kernel "$L2PT/vmlinuz" -initrd "$LOG/initrd-check.gz"
  -append "console=ttyS0 panic=-1 quiet" -device "vfio-pci,host=$edu")
echo "L2: ${cmd[*]}"
t0=$(cut -d' ' -f1 /proc/uptime)
timeout -s KILL "${L2_TIMEOUT:-300}" "${cmd[@]}" < /dev/null > "$LOG/l2.serial" 2>&1
rc=$?
ser=$(sed 's/\r$//' "$LOG/l2.serial")
printf '%s\n' "$ser" | sed 's/^/  [L2] /'
echo "L2: exit status $rc, $(awk -v a="$t0" '{ printf "%.1f", $1 - a }' /proc/uptime) s"
pci=$(printf '%s\n' "$ser" | grep -m1 '^L2-PCI .* 1234:11e8 ')
case $pci in
  *driver=tessera-edu) pass "l2-probe ($pci)" ;;
  *) fail "l2-probe: want an L2-PCI line for 1234:11e8 with driver=tessera-edu, got '${pci:-none}'" ;;
esac
if [ $rc = 0 ] && printf '%s\n' "$ser" | grep -q '^L2-CHECK rc=0'; then
  pass "l2-edu ($(printf '%s\n' "$ser" | grep -E '^L2-CHECK edu-check (raise|raise_burst|dma_check) ' | cut -d' ' -f3- | paste -sd';'))"
else
  fail "l2-edu: want L2-CHECK rc=0 and QEMU exit 0; QEMU exit $rc, $(printf '%s\n' "$ser" | grep '^L2-CHECK rc=' || echo 'no L2-CHECK rc line')"
fi
finish
