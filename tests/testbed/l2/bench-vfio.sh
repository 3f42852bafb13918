#!/bin/bash
# Passthrough start-up benchmark (not a test): how long from starting the
# VMM until its first vCPU enters the guest, with one VFIO device and
# BENCH_VFIO_MEMS ["1G 2G"] of guest RAM, tessera vs QEMU
# (`-device vfio-pci`), in one L1.  Runs inside L1 (it binds the device).
#
#   bench-vfio.sh --cache DIR --logdir DIR
#
# The device is the edu stand-in (BENCH_VFIO_DEVICE=edu|vf|nvme|bochs|ivshmem)
# bound to vfio-pci by l1/vfio-setup.sh.  Before the first vCPU runs both
# VMMs open the device, map all guest RAM for DMA (pinning it; the cost
# that grows with RAM) and build the machine.
#
# Measured per run (BENCH_N [3] runs of each, alternating):
#   tessera: its --stats line `startup first_vcpu_entry_epoch_us=...`
#   QEMU:    the first `kvm_vcpu_ioctl ... type 0xae80` (KVM_RUN) in its
#            trace log (-trace kvm_vcpu_ioctl with -msg timestamp=on)
# minus the wall clock just before the VMM was started.  The guest is the
# direct-boot L2 test guest; it boots and powers off.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vmm.sh
. "$HERE/vmm.sh"
# shellcheck source=../l1/vfio-setup.sh
. "$HERE/../l1/vfio-setup.sh"

parse_l2_args "$@"
K=$CACHE/l2/vmlinuz
I=$CACHE/l2/initrd.gz
N=${BENCH_N:-3}
MEMS=${BENCH_VFIO_MEMS:-1G 2G}
CMDLINE="console=ttyS0 panic=-1 quiet"
mkdir -p "$LOGDIR"

pt_vfio_setup > "$LOGDIR/vfio-setup.txt" 2>&1 || { cat "$LOGDIR/vfio-setup.txt"; echo "bench-vfio: binding the stand-ins failed"; exit 1; }
case ${BENCH_VFIO_DEVICE:-edu} in
  edu) DEV=$PT_EDU ;;
  vf) DEV=$PT_VF ;;
  nvme) DEV=$PT_NVME ;;
  bochs) DEV=$PT_BOCHS ;;
  ivshmem) DEV=$PT_IVSHMEM ;;
  *) echo "bench-vfio: BENCH_VFIO_DEVICE must be edu, vf, nvme, bochs or ivshmem"; exit 2 ;;
esac
[ -n "$DEV" ] || { echo "bench-vfio: no ${BENCH_VFIO_DEVICE:-edu} device in this L1"; exit 1; }

us_now() { echo "${EPOCHREALTIME/./}"; }

# run_one VMM MEM I -> prints the milliseconds to the first vCPU entry, or "-"
run_one() {
  local vmm=$1 mem=$2 i=$3 out=$LOGDIR/$1-$2-$3 t0 entry=""
  case $vmm in
    tessera)
      t0=$(us_now)
      "$TESSERA_BIN" run --kernel "$K" --initrd "$I" --cmdline "$CMDLINE" --memory "$mem" \
        --device "$DEV" --serial "file=$out.serial" --timeout 120 --stats > "$out.vmm" 2>&1 < /dev/null
      entry=$(sed -n 's/.*first_vcpu_entry_epoch_us=\([0-9]*\).*/\1/p' "$out.vmm" | head -1) ;;
    qemu)
      t0=$(us_now)
      timeout 120 qemu-system-x86_64 -accel kvm -cpu host -M q35 -m "$mem" -smp 1 -nodefaults \
        -no-user-config -display none -no-reboot -serial "file:$out.serial" \
        -kernel "$K" -initrd "$I" -append "$CMDLINE" -device "vfio-pci,host=$DEV" \
        -msg timestamp=on -trace "enable=kvm_vcpu_ioctl,file=$out.trace" > "$out.vmm" 2>&1 < /dev/null
      # "PID@SECONDS.MICROS:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg ..."
      entry=$(grep -m1 'type 0xae80' "$out.trace" 2>/dev/null | sed -n 's/^[0-9]*@\([0-9]*\)\.\([0-9]*\):.*/\1\2/p') ;;
  esac
  if [ -n "$entry" ]; then
    echo $(( (entry - t0) / 1000 ))
  else
    echo "-"
  fi
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

echo "bench-vfio in L1 ($(uname -r)): device ${BENCH_VFIO_DEVICE:-edu} $DEV, $N runs each; tessera $TESSERA_BIN; $(qemu-system-x86_64 --version | head -1)"
printf '| guest RAM | tessera ms (runs) | QEMU ms (runs) | ratio tessera/QEMU |\n|---|---|---|---|\n'
for mem in $MEMS; do
  t_all="" q_all=""
  for i in $(seq 1 "$N"); do
    t_all+="$(run_one tessera "$mem" "$i") "
    q_all+="$(run_one qemu "$mem" "$i") "
  done
  tm=$(tr ' ' '\n' <<< "$t_all" | grep -E '^[0-9]+$' | median)
  qm=$(tr ' ' '\n' <<< "$q_all" | grep -E '^[0-9]+$' | median)
  ratio=-
  [ "$tm" != - ] && [ "$qm" != - ] && [ "$qm" -gt 0 ] && ratio=$(awk -v a="$tm" -v b="$qm" 'BEGIN { printf "%.2f", a / b }')
  printf '| %s | %s (%s) | %s (%s) | %s |\n' "$mem" "$tm" "${t_all% }" "$qm" "${q_all% }" "$ratio"
done
