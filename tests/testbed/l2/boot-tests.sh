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

parse_l2_args "$@"
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

# ---- Q35 + stock OVMF (tessera only: the firmware flags are tessera's) ----
OVMF_CODE=$CACHE/ovmf/OVMF_CODE_4M.fd
OVMF_TEMPLATE=$CACHE/ovmf/OVMF_VARS_4M.fd
ovmf_args() { # VARS-FILE
  echo --firmware "$OVMF_CODE" --vars "$1" --vars-template "$OVMF_TEMPLATE"
}

# Checks every OVMF boot must pass: UEFI, the Q35 chipset, a clean kernel log.
ovmf_facts_ok() {
  has "$MARKER" && has "L2-EFI yes" && has " 8086:29c0 " && has " 8086:2918 " && has "L2-DMESG-BAD-COUNT 0"
}
ovmf_facts() { # what the guest reported, for FAIL lines
  tr -d '\r' < "$SER" | grep -aE "L2-EFI|L2-PCI |L2-DMESG-BAD|L2-CPUS" | tr '\n' ';'
}

t_ovmf_boot() { # NAME CPUS
  local name=$1 cpus=$2 vars=$LOGDIR/$1.vars
  rm -f "$vars"
  # shellcheck disable=SC2046  # ovmf_args is a word list
  l2 "$name" $(ovmf_args "$vars") --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" --cpus "$cpus" --timeout "$TMO"
  if [ $RC = 0 ] && ovmf_facts_ok && has "L2-CPUS $cpus "; then
    result "$name" 1 "OVMF -> kernel via fw_cfg -> marker at guest uptime $(marker_at)s, $cpus CPU(s), /sys/firmware/efi, 8086:29c0 + 8086:2918, no ACPI errors, exit 0, ${SECS}s"
  else
    result "$name" 0 "want marker, L2-EFI yes, 8086:29c0 and 8086:2918, L2-DMESG-BAD-COUNT 0, L2-CPUS $cpus and exit 0; got exit $RC after ${SECS}s; guest said: $(ovmf_facts)"
  fi
}

# Guest code writing/reading a non-volatile UEFI variable through efivarfs.
# Our own vendor GUID: Linux refuses unknown names under the EFI global GUID.
EFI_VAR=TesseraTest-5e7a3c1e-9d0b-4c7a-8e21-7e55e4a0b0a1
# shellcheck disable=SC2016  # guest code
efi_write_check='#!/bin/sh
mount -t efivarfs none /sys/firmware/efi/efivars || exit 1
v=/sys/firmware/efi/efivars/'$EFI_VAR'
# attributes NV|BS|RT (7, little-endian u32) followed by the data
printf "\007\000\000\000tessera-persist-$1" > "$v" || exit 2
sync
echo "VAR-WRITTEN $(od -An -c "$v" | tr -d " \n")"
exit 0'
# shellcheck disable=SC2016  # guest code
efi_read_check='#!/bin/sh
mount -t efivarfs none /sys/firmware/efi/efivars || exit 1
v=/sys/firmware/efi/efivars/'$EFI_VAR'
[ -e "$v" ] || { echo "variable missing"; exit 3; }
echo "VAR-READ $(tail -c +5 "$v")"
tail -c +5 "$v" | grep -q "tessera-persist-$1" || exit 4
exit 0'

make_efi_initrd() { # OUT.gz write|read TAG
  local script
  if [ "$2" = write ]; then script=$efi_write_check; else script=$efi_read_check; fi
  make_check_initrd "$1" "${script//\$1/$3}"
}

t_ovmf_vars_persist() {
  local vars=$LOGDIR/ovmf-vars-persist.vars w=$LOGDIR/efi-write.gz r=$LOGDIR/efi-read.gz
  rm -f "$vars"
  make_efi_initrd "$w" write stop
  make_efi_initrd "$r" read stop
  # shellcheck disable=SC2046
  l2 ovmf-vars-write $(ovmf_args "$vars") --kernel "$KERNEL" --initrd "$w" --cmdline "$CMDLINE" --timeout "$TMO"
  local rc1=$RC s1=$SECS ok1=0
  has "L2-CHECK rc=0" && has "VAR-WRITTEN" && ok1=1
  # shellcheck disable=SC2046
  l2 ovmf-vars-read $(ovmf_args "$vars") --kernel "$KERNEL" --initrd "$r" --cmdline "$CMDLINE" --timeout "$TMO"
  if [ $rc1 = 0 ] && [ $ok1 = 1 ] && [ $RC = 0 ] && has "L2-CHECK rc=0"; then
    result ovmf-vars-persist 1 "variable written in boot 1 (exit 0, ${s1}s) was read back in boot 2 ($(grep -a -m1 VAR-READ "$SER" | tr -d '\r' | sed 's/.*VAR-READ/VAR-READ/'), ${SECS}s)"
  else
    result ovmf-vars-persist 0 "boot 1: exit $rc1, write ok=$ok1; boot 2: exit $RC; guest said: $(grep -a 'L2-CHECK' "$SER" | tr -d '\r' | tr '\n' ';')"
  fi
}

t_ovmf_vars_sigkill() {
  local vars=$LOGDIR/ovmf-vars-kill.vars w=$LOGDIR/efi-write-kill.gz r=$LOGDIR/efi-read-kill.gz
  rm -f "$vars"
  make_efi_initrd "$w" write kill
  make_efi_initrd "$r" read kill
  SER=$LOGDIR/ovmf-vars-kill.serial OUT=$LOGDIR/ovmf-vars-kill.vmm
  rm -f "$SER"
  local -a cmd=()
  # shellcheck disable=SC2046
  mapfile -d '' cmd < <(tessera_cmd $(ovmf_args "$vars") --kernel "$KERNEL" --initrd "$w" \
    --cmdline "$CMDLINE tessera.hang=1" --memory "$MEM" --serial "file=$SER" --timeout "$TMO")
  echo "L2-VMM-CMD: ${cmd[*]}" > "$OUT"
  "${cmd[@]}" < /dev/null >> "$OUT" 2>&1 &
  local pid=$! waited=0
  until grep -qa "L2-CHECK rc=" "$SER" 2>/dev/null || [ $waited -ge "$TMO" ] || ! kill -0 $pid 2>/dev/null; do
    sleep 1; waited=$((waited + 1))
  done
  kill -KILL $pid 2>/dev/null
  wait $pid 2>/dev/null
  local killed_rc=$? wrote=0
  grep -qa "VAR-WRITTEN" "$SER" && wrote=1
  # shellcheck disable=SC2046
  l2 ovmf-vars-after-kill $(ovmf_args "$vars") --kernel "$KERNEL" --initrd "$r" --cmdline "$CMDLINE" --timeout "$TMO"
  if [ $wrote = 1 ] && [ $killed_rc = 137 ] && [ $RC = 0 ] && has "L2-CHECK rc=0"; then
    result ovmf-vars-sigkill 1 "tessera SIGKILLed ${waited}s in, right after the guest wrote the variable; the next boot read it back (${SECS}s)"
  else
    result ovmf-vars-sigkill 0 "written=$wrote, first tessera status $killed_rc (want 137); second boot exit $RC; guest said: $(grep -a 'L2-CHECK' "$SER" | tr -d '\r' | tr '\n' ';')"
  fi
}

t_ovmf_reboot() {
  local vars=$LOGDIR/ovmf-reboot.vars
  rm -f "$vars"
  # shellcheck disable=SC2046
  l2 ovmf-reboot-exit $(ovmf_args "$vars") --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE tessera.reboot=1" --timeout "$TMO"
  local rc1=$RC s1=$SECS
  # With --on-reset restart the firmware runs again: the guest boots (and
  # reboots) more than once until --timeout ends it.
  # shellcheck disable=SC2046
  l2 ovmf-reboot-restart $(ovmf_args "$vars") --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE tessera.reboot=1" \
    --on-reset restart --timeout "${L2_RESTART_TIMEOUT:-90}"
  local boots
  boots=$(grep -ac "$MARKER" "$SER")
  if [ $rc1 = 3 ] && [ $RC = 124 ] && [ "$boots" -ge 2 ]; then
    result ovmf-reboot 1 "guest reboot: exit 3 with --on-reset exit (${s1}s); with --on-reset restart OVMF booted the kernel $boots times in ${SECS}s"
  else
    result ovmf-reboot 0 "want exit 3, then >=2 boots and exit 124 with --on-reset restart; got $rc1, then $RC with $boots boot(s)"
  fi
}

# An EFI application (l2/efi/, built by testbed fetch with gnu-efi) as the
# --kernel of the OVMF machine, as a CI user hands over a firmware test: it
# prints through ConOut and the UART, echoes its load options (the
# --cmdline) and exits with exit=N through a 4-byte debug-exit port at 0xf4.
t_ovmf_efi_app() {
  local vars=$LOGDIR/ovmf-efi-app.vars app=$CACHE/efi/tessera-efi-app.efi opts="exit=21 tag=tessera-ci"
  rm -f "$vars"
  # shellcheck disable=SC2046
  l2 ovmf-efi-app $(ovmf_args "$vars") --kernel "$app" --cmdline "$opts" --debug-exit-port 0xf4,size=4 --timeout "$TMO"
  # (21 << 1) | 1, as QEMU's isa-debug-exit
  if [ $RC = 43 ] && has "TESSERA-EFI-APP conout: hello" && has "TESSERA-EFI-APP uart: options [$opts]" &&
     has "exiting through port 0xf4" && ! has "still running after"; then
    result ovmf-efi-app 1 "OVMF started the EFI application: ConOut and UART lines on the console, load options '$opts', firmware vendor '$(tr -d '\r' < "$SER" | sed -n 's/.*vendor \[\([^]]*\)\].*/\1/p' | head -1)', exit 43 = (21<<1)|1 through the debug-exit port, ${SECS}s"
  else
    result ovmf-efi-app 0 "want exit 43 (exit=21 through port 0xf4), the ConOut line and the UART line with options [$opts]; got exit $RC after ${SECS}s; app said: $(tr -d '\r' < "$SER" | grep -a 'TESSERA-EFI-APP' | tr '\n' ';')"
  fi
}

t0=$EPOCHREALTIME
ALL_TESTS="boot-1cpu boot-2cpu poweroff-exit-0 panic-exit-nonzero expect-serial-exit-0 timeout-124"
if [ "${TESTBED_L2_VMM:-tessera}" = tessera ]; then
  ALL_TESTS="$ALL_TESTS ovmf-boot-1cpu ovmf-boot-2cpu ovmf-vars-persist ovmf-vars-sigkill ovmf-reboot ovmf-efi-app"
else
  echo "note: the OVMF tests use tessera's firmware options and run only with TESTBED_L2_VMM=tessera"
fi
for t in $ALL_TESTS; do
  selected "$t" || continue
  case $t in
    boot-1cpu) t_boot_1cpu ;;
    boot-2cpu) t_boot_2cpu ;;
    poweroff-exit-0) t_poweroff ;;
    panic-exit-nonzero) t_panic ;;
    expect-serial-exit-0) t_expect_serial ;;
    timeout-124) t_timeout ;;
    ovmf-boot-1cpu) t_ovmf_boot ovmf-boot-1cpu 1 ;;
    ovmf-boot-2cpu) t_ovmf_boot ovmf-boot-2cpu 2 ;;
    ovmf-vars-persist) t_ovmf_vars_persist ;;
    ovmf-vars-sigkill) t_ovmf_vars_sigkill ;;
    ovmf-reboot) t_ovmf_reboot ;;
    ovmf-efi-app) t_ovmf_efi_app ;;
  esac
done
s=${t0/./} e=${EPOCHREALTIME/./}
echo "L2 boot tests took $(( (e - s) / 1000000 ))s (logs: $LOGDIR)"
echo "$npass passed, $nfail failed"
[ "$nfail" = 0 ]
