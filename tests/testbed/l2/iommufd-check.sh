#!/bin/bash
# iommufd check of the TESTBED_L1=iommufd L1 kernel.  Runs inside L1:
#
#   TESTBED_L1=iommufd tests/testbed/testbed run -- bash tests/testbed/l2/iommufd-check.sh
#
# 1. /dev/iommu and /dev/kvm exist;
# 2. edu (1234:11e8) and bochs-display (1234:1111) are bound to vfio-pci
#    (driver_override + drivers_probe); each then has a VFIO device cdev,
#    /sys/bus/pci/devices/BDF/vfio-dev/vfioN and /dev/vfio/devices/vfioN,
#    and its group node /dev/vfio/GROUP (legacy API);
# 3. QEMU (the host's, through the 9p root) boots an L2 with both devices
#    through iommufd (-object iommufd + vfio-pci,iommufd=); L2's /init lists
#    its PCI functions, so the edu and the bochs-display must be there;
# 4. the same L2 with the devices through the legacy container/group API
#    (L2_LEGACY=0 skips it).
# Prints PASS/FAIL lines and "N passed, M failed"; exit status 1 on a failure.
# Knobs: TESTBED_CACHE (for $CACHE/l2/{vmlinuz,initrd.gz}; default
# <repo>/target/testbed), L2_TIMEOUT [300].
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${TESTBED_CACHE:-$HERE/../../../target/testbed}
if [ "${TESTBED_IN_L1:-0}" = 1 ]; then LOG=/run/testbed/iommufd-check; else LOG=$(mktemp -d); fi
mkdir -p "$LOG"
npass=0 nfail=0
pass() { echo "PASS $*"; npass=$((npass + 1)); }
fail() { echo "FAIL $*"; nfail=$((nfail + 1)); }

echo "L1 kernel $(uname -r); /proc/cmdline: $(cat /proc/cmdline)"
ls -l /dev/iommu /dev/kvm /dev/vfio/vfio 2>&1
if [ -c /dev/iommu ]; then pass dev-iommu; else fail "dev-iommu: no /dev/iommu"; fi
if [ -c /dev/kvm ]; then pass dev-kvm; else fail "dev-kvm: no /dev/kvm"; fi

find_pci() { # VENDOR DEVICE -> BDF
  local d
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor")" = "0x$1" ] && [ "$(cat "$d/device")" = "0x$2" ] && { basename "$d"; return 0; }
  done
  return 1
}

bind_vfio() { # BDF
  local d=/sys/bus/pci/devices/$1
  echo vfio-pci > "$d/driver_override"
  [ -e "$d/driver" ] && echo "$1" > "$d/driver/unbind"
  echo "$1" > /sys/bus/pci/drivers_probe
  [ "$(basename "$(readlink "$d/driver")")" = vfio-pci ]
}

declare -a bdfs=()
for id in 1234:11e8:edu 1234:1111:bochs-display; do
  IFS=: read -r ven dev name <<< "$id"
  bdf=$(find_pci "$ven" "$dev") || { fail "$name: no $ven:$dev PCI function in L1"; continue; }
  if ! bind_vfio "$bdf"; then fail "$name-bind: $bdf not bound to vfio-pci"; continue; fi
  grp=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")
  cdev=$(ls "/sys/bus/pci/devices/$bdf/vfio-dev" 2>/dev/null)
  echo "$name $ven:$dev at $bdf: driver vfio-pci, iommu group $grp, vfio-dev: ${cdev:-none}"
  ls -l "/sys/bus/pci/devices/$bdf/vfio-dev/" "/dev/vfio/devices/${cdev:-none}" "/dev/vfio/$grp" 2>&1
  if [ -n "$cdev" ] && [ -c "/dev/vfio/devices/$cdev" ] && [ -c "/dev/vfio/$grp" ]; then
    pass "$name-vfio ($bdf: /dev/vfio/devices/$cdev, /dev/vfio/$grp)"
    bdfs+=("$bdf")
  else
    fail "$name-vfio: $bdf has no device cdev (vfio-dev: ${cdev:-none}) or no /dev/vfio/$grp"
  fi
done
echo "/dev/vfio: $(cd /dev/vfio && echo *); /dev/vfio/devices: $(cd /dev/vfio/devices 2>/dev/null && echo *)"

# l2_boot NAME DEVICE-OPTIONS...: boot the L2 test guest with QEMU and check
# that its PCI list has the edu and the bochs-display.
l2_boot() {
  local name=$1 out=$LOG/$1.serial t0 rc
  shift
  local -a cmd=(qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 256M -nodefaults -no-reboot
    -display none -serial stdio -kernel "$CACHE/l2/vmlinuz" -initrd "$CACHE/l2/initrd.gz"
    -append "console=ttyS0 panic=-1 quiet" "$@")
  echo "L2 ($name): ${cmd[*]}"
  t0=$(cut -d' ' -f1 /proc/uptime)
  timeout -s KILL "${L2_TIMEOUT:-300}" "${cmd[@]}" < /dev/null > "$out" 2>&1
  rc=$?
  sed 's/\r$//' "$out" | sed "s/^/  [$name] /"
  echo "L2 ($name): exit status $rc, $(awk -v a="$t0" '{ printf "%.1f", $1 - a }' /proc/uptime) s"
  if [ "$rc" = 0 ] && grep -q 'L2-PCI .* 1234:11e8 ' "$out" && grep -q 'L2-PCI .* 1234:1111 ' "$out" &&
     grep -q L2-POWEROFF "$out"; then
    pass "$name (L2 lists edu 1234:11e8 and bochs-display 1234:1111, exit 0)"
  else
    fail "$name: exit status $rc, or L2 did not list 1234:11e8 and 1234:1111 (log: $out)"
  fi
}

if [ ${#bdfs[@]} = 2 ]; then
  # shellcheck disable=SC2054  # commas are QEMU option syntax
  declare -a dev=(-object iommufd,id=iommufd0)
  for b in "${bdfs[@]}"; do dev+=(-device "vfio-pci,host=$b,iommufd=iommufd0"); done
  l2_boot l2-iommufd "${dev[@]}"
  if [ "${L2_LEGACY:-1}" = 1 ]; then
    dev=()
    for b in "${bdfs[@]}"; do dev+=(-device "vfio-pci,host=$b"); done
    l2_boot l2-vfio-group "${dev[@]}"
  fi
else
  fail "l2-iommufd: not run (edu and bochs-display are not both on vfio-pci)"
fi
echo "$npass passed, $nfail failed"
[ "$nfail" = 0 ]
