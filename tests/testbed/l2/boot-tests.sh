#!/bin/bash
# L2 boot tests.  Runs where KVM works: inside L1 (`testbed boot-tests` on a
# host without hardware KVM) or directly on a host with hardware KVM.
#
#   boot-tests.sh --cache DIR --logdir DIR
#
# DIR/l2/vmlinuz (Debian cloud kernel) and DIR/l2/initrd.gz (l2/init.sh) come
# from `testbed fetch`.  Every test boots one L2 guest with the VMM chosen by
# TESTBED_L2_VMM (tessera | qemu stand-in, see vmm.sh) and prints one
# "PASS name (...)" or "FAIL name: why" line, then the tail of the guest's
# serial log and of the VMM's output on failure.  The last line is
# "N passed, M failed"; the exit status is 1 if any test failed.
# Per test, LOGDIR/NAME.serial is the guest's serial console and LOGDIR/NAME.vmm
# the VMM's command line + stdout/stderr; LOGDIR/results has the PASS/FAIL lines.
#
# Knobs: L2_TIMEOUT [300] the VMM's --timeout for runs that should finish
#        (the outer guard adds L2_GUARD_SLACK [60]); L2_HANG_TIMEOUT [20] the
#        --timeout of the timeout test; L2_MEM [256M]; L2_CMDLINE_EXTRA;
#        TESTBED_TESTS="name ..." runs only those tests.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vmm.sh
. "$HERE/vmm.sh"

CACHE="" LOGDIR=""
while [ $# -gt 0 ]; do
  case $1 in
    --cache) CACHE=$2; shift ;;
    --logdir) LOGDIR=$2; shift ;;
    *) echo "usage: $0 --cache DIR --logdir DIR" >&2; exit 2 ;;
  esac
  shift
done
{ [ -n "$CACHE" ] && [ -n "$LOGDIR" ]; } || { echo "usage: $0 --cache DIR --logdir DIR" >&2; exit 2; }
KERNEL=$CACHE/l2/vmlinuz
INITRD=$CACHE/l2/initrd.gz
BUSYBOX=$CACHE/pkg/busybox
MEM=${L2_MEM:-256M}
TMO=${L2_TIMEOUT:-300}
HANG_TMO=${L2_HANG_TIMEOUT:-20}
CMDLINE="console=ttyS0 panic=-1 quiet ${L2_CMDLINE_EXTRA:-}"
MARKER=TESSERA-L2-BOOT-OK
mkdir -p "$LOGDIR"
RESULTS=$LOGDIR/results
: > "$RESULTS"
npass=0 nfail=0

where() {
  if [ "${TESTBED_IN_L1:-0}" = 1 ]; then echo "in L1 ($(uname -r), nested KVM)"; else echo "on this host ($(uname -r))"; fi
}
echo "L2 boot tests $(where): VMM $(vmm_name), kernel $(basename "$(readlink -f "$KERNEL")") $(file -b "$KERNEL" 2>/dev/null | grep -o 'version [^ ]*'), memory $MEM"
[ "${TESTBED_L2_VMM:-tessera}" = tessera ] && echo "tessera: $TESSERA_BIN ($("$TESSERA_BIN" --version 2>&1 | head -1))"
[ -c /dev/kvm ] || { echo "FAIL no /dev/kvm here"; echo "0 passed, 1 failed"; exit 1; }

selected() { [ -z "${TESTBED_TESTS:-}" ] || [[ " $TESTBED_TESTS " == *" $1 "* ]]; }

# l2 NAME options...   boot one guest: sets RC, SECS, SER (serial log), OUT
l2() {
  local name=$1
  shift
  SER=$LOGDIR/$name.serial OUT=$LOGDIR/$name.vmm
  rm -f "$SER"
  local t0=$EPOCHREALTIME
  vmm_run "$OUT" -- --memory "$MEM" --serial "file=$SER" "$@"
  RC=$?
  local e=${EPOCHREALTIME/./} s=${t0/./}
  SECS=$(printf '%d.%01d' $(( (e - s) / 1000000 )) $(( (e - s) / 100000 % 10 )))
  [ -f "$SER" ] || : > "$SER"
}

marker_at() { # seconds of guest uptime at the marker, for the PASS line
  sed -n "s/.*$MARKER .*uptime=\([0-9.]*\)s.*/\1/p" "$SER" | head -1
}

# result NAME OK(0/1) DETAIL
result() {
  local name=$1 ok=$2 detail=$3
  if [ "$ok" = 1 ]; then
    echo "PASS $name ($detail)" | tee -a "$RESULTS"
    npass=$((npass + 1))
  else
    echo "FAIL $name: $detail" | tee -a "$RESULTS"
    nfail=$((nfail + 1))
    echo "---- tail of L2's serial log ($SER) ----"
    tail -n "${L2_TAIL:-25}" "$SER" | tr -d '\r'
    echo "---- tail of the VMM's output ($OUT) ----"
    tail -n "${L2_TAIL:-25}" "$OUT"
    echo "----"
  fi
}

has() { grep -qF -- "$1" "$SER"; }

# A second initramfs with /check.sh, appended to the base image.
make_check_initrd() { # OUT.gz SCRIPT-TEXT
  local t
  t=$(mktemp -d)
  printf '%s\n' "$2" > "$t/check.sh"
  chmod 0755 "$t/check.sh"
  (cd "$t" && echo ./check.sh | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null | gzip -1 -n) > "$t/check.gz"
  cat "$INITRD" "$t/check.gz" > "$1"
  rm -rf "$t"
}

t_boot_1cpu() {
  l2 boot-1cpu --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" --cpus 1 --timeout "$TMO"
  if [ $RC = 0 ] && has "$MARKER" && has "L2-CPUS 1 "; then
    result boot-1cpu 1 "marker at guest uptime $(marker_at)s, exit 0, ${SECS}s"
  else
    result boot-1cpu 0 "want $MARKER, 'L2-CPUS 1' and exit status 0; got exit status $RC after ${SECS}s"
  fi
}

t_boot_2cpu() {
  l2 boot-2cpu --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" --cpus 2 --timeout "$TMO"
  if [ $RC = 0 ] && has "$MARKER" && has "L2-CPUS 2 "; then
    result boot-2cpu 1 "guest reports 2 CPUs, exit 0, ${SECS}s"
  else
    result boot-2cpu 0 "want $MARKER, 'L2-CPUS 2' and exit status 0; got exit status $RC ($(grep -a -m1 L2-CPUS "$SER" | tr -d '\r')) after ${SECS}s"
  fi
}

# shellcheck disable=SC2016  # the check script is guest code
t_poweroff() {
  local ird=$LOGDIR/poweroff-initrd.gz
  make_check_initrd "$ird" '#!/bin/sh
# check script (appended initramfs): the command line arrived, /proc works
grep -q "tessera.test=poweroff" /proc/cmdline || { echo "tessera.test=poweroff missing from /proc/cmdline"; exit 1; }
echo "cmdline ok: $(cat /proc/cmdline)"
exit 0'
  l2 poweroff --kernel "$KERNEL" --initrd "$ird" --cmdline "$CMDLINE tessera.test=poweroff" --cpus 1 --timeout "$TMO"
  if [ $RC = 0 ] && has "L2-CHECK rc=0" && has "L2-POWEROFF"; then
    result poweroff-exit-0 1 "check script passed, guest powered off, exit 0, ${SECS}s"
  else
    result poweroff-exit-0 0 "want 'L2-CHECK rc=0', 'L2-POWEROFF' and exit status 0; got exit status $RC after ${SECS}s"
  fi
}

t_panic() {
  l2 panic --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE tessera.panic=1" --cpus 1 --timeout "$TMO"
  # non-zero, and not because of a timeout (124) or the outer guard (125)
  if [ $RC != 0 ] && [ $RC != 124 ] && [ $RC != 125 ] && has "Kernel panic"; then
    result panic-exit-nonzero 1 "exit status $RC (3 = guest reset), ${SECS}s"
  else
    result panic-exit-nonzero 0 "want 'Kernel panic' and a non-zero exit status other than 124/125; got exit status $RC after ${SECS}s"
  fi
}

t_expect_serial() {
  l2 expect-serial --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE tessera.hang=1" --cpus 1 \
    --expect-serial "$MARKER" --timeout "$TMO"
  if [ $RC = 0 ] && has "$MARKER"; then
    result expect-serial-exit-0 1 "exit 0 after ${SECS}s on a guest that never powers off"
  else
    result expect-serial-exit-0 0 "want exit status 0 once $MARKER appears (guest then hangs); got exit status $RC after ${SECS}s"
  fi
}

t_timeout() {
  l2 timeout --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE tessera.hang=1" --cpus 1 --timeout "$HANG_TMO"
  # tessera prints the last serial lines on timeout: the last line the guest
  # printed must appear in the VMM's own output
  local last
  last=$(tr -d '\r' < "$SER" | grep -v '^[[:space:]]*$' | tail -n 1)
  if [ $RC = 124 ] && { [ -z "$last" ] || grep -qF -- "$last" <(tail -n +2 "$OUT"); }; then
    result timeout-124 1 "--timeout $HANG_TMO: exit 124 after ${SECS}s, last serial line shown: '${last:-<none>}'"
  else
    result timeout-124 0 "want exit status 124 after --timeout $HANG_TMO and the last serial line ('$last') in the VMM's output; got exit status $RC after ${SECS}s"
  fi
}

t0=$EPOCHREALTIME
for t in boot-1cpu boot-2cpu poweroff-exit-0 panic-exit-nonzero expect-serial-exit-0 timeout-124; do
  selected "$t" || continue
  case $t in
    boot-1cpu) t_boot_1cpu ;;
    boot-2cpu) t_boot_2cpu ;;
    poweroff-exit-0) t_poweroff ;;
    panic-exit-nonzero) t_panic ;;
    expect-serial-exit-0) t_expect_serial ;;
    timeout-124) t_timeout ;;
  esac
done
s=${t0/./} e=${EPOCHREALTIME/./}
echo "L2 boot tests took $(( (e - s) / 1000000 ))s (logs: $LOGDIR)"
echo "$npass passed, $nfail failed"
[ "$nfail" = 0 ]
