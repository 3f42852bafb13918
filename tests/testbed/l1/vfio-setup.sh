# shellcheck shell=bash
# Bind L1's stand-ins for GPU VFs to vfio-pci so L2 guests can have them.
# Sourced by the in-L1 scripts (l2/passthrough-tests.sh, l2/bench-vfio.sh).
#
#   pt_vfio_setup      creates PT_NVFS [2] VFs on the igb PF (autoprobe off,
#                      PF link up: the PF serves the VF mailbox), binds one VF,
#                      edu, bochs-display, the NVMe controller and ivshmem to
#                      vfio-pci (driver_override + drivers_probe), and sets
#                        PT_VF PT_EDU PT_BOCHS PT_NVME PT_IVSHMEM   (BDFs)
#                      An absent device leaves its variable empty (and says
#                      so); binding a present one that fails is an error.
#   pt_driver_of BDF   the driver bound to BDF, or "none"
#   pt_find VEN DEV    first BDF with that vendor:device (0x-prefixed ids)

pt_find() {
  local d
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor")" = "$1" ] && [ "$(cat "$d/device")" = "$2" ] && { basename "$d"; return 0; }
  done
  return 1
}

pt_driver_of() {
  local l
  l=$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null) && basename "$l" || echo none
}

# pt_bind BDF: to vfio-pci, waiting for sysfs to settle
pt_bind() {
  local b=$1 d=/sys/bus/pci/devices/$1
  [ "$(pt_driver_of "$b")" = vfio-pci ] && return 0
  echo vfio-pci > "$d/driver_override" || return 1
  [ -e "$d/driver" ] && { echo "$b" > "$d/driver/unbind" || return 1; }
  echo "$b" > /sys/bus/pci/drivers_probe 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ "$(pt_driver_of "$b")" = vfio-pci ] && return 0
    sleep 0.2
  done
  echo "pt_bind: $b is bound to $(pt_driver_of "$b"), not vfio-pci" >&2
  return 1
}

pt_vfio_setup() {
  local pf nic n vf dev var b
  PT_VF='' PT_EDU='' PT_BOCHS='' PT_NVME='' PT_IVSHMEM=''
  modprobe vfio-pci 2>/dev/null
  if pf=$(pt_find 0x8086 0x10c9); then
    for n in /sys/bus/pci/devices/"$pf"/net/*; do
      [ -e "$n" ] && nic=$(basename "$n") && ip link set "$nic" up
    done
    if [ "$(cat "/sys/bus/pci/devices/$pf/sriov_numvfs")" = 0 ]; then
      echo 0 > "/sys/bus/pci/devices/$pf/sriov_drivers_autoprobe"
      echo "${PT_NVFS:-2}" > "/sys/bus/pci/devices/$pf/sriov_numvfs" || { echo "pt_vfio_setup: creating VFs on $pf failed" >&2; return 1; }
    fi
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [ -e "/sys/bus/pci/devices/$pf/virtfn0" ] && break
      sleep 0.2
    done
    vf=$(basename "$(readlink "/sys/bus/pci/devices/$pf/virtfn0")")
    pt_bind "$vf" || return 1
    PT_VF=$vf
  else
    echo "pt_vfio_setup: no igb PF (8086:10c9)" >&2
  fi
  for dev in "EDU 0x1234 0x11e8" "BOCHS 0x1234 0x1111" "NVME 0x1b36 0x0010" "IVSHMEM 0x1af4 0x1110"; do
    # shellcheck disable=SC2086  # "NAME VENDOR DEVICE"
    set -- $dev
    var=PT_$1
    if b=$(pt_find "$2" "$3"); then
      pt_bind "$b" || return 1
      printf -v "$var" %s "$b"
    else
      echo "pt_vfio_setup: no $1 ($2:$3) here" >&2
    fi
  done
  export PT_VF PT_EDU PT_BOCHS PT_NVME PT_IVSHMEM
  local x
  for x in VF EDU BOCHS NVME IVSHMEM; do
    var=PT_$x
    [ -n "${!var}" ] && echo "pt_vfio_setup: $x ${!var} $(cat "/sys/bus/pci/devices/${!var}/vendor"):$(cat "/sys/bus/pci/devices/${!var}/device") group $(basename "$(readlink "/sys/bus/pci/devices/${!var}/iommu_group")") driver $(pt_driver_of "${!var}")"
  done
  return 0
}
