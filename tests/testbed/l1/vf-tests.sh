#!/bin/bash
# `tessera vf` on real SR-IOV hardware: the igb PF (8086:10c9, 7 VFs) of the
# testbed's L1, plus its edu device.  Runs inside L1 (`testbed vf-tests`);
# it changes the host's PCI state, so never run it on a machine you care
# about.
#
#   vf-tests.sh --logdir DIR
#
# Each test prints one "PASS name (...)" or "FAIL name: why" line (also in
# DIR/results); the last line is "N passed, M failed" and the exit status is
# 1 if any test failed.  DIR/NAME.out holds each tessera command's output.
# TESSERA_BIN is the tessera binary (absolute path).
set -u
LOGDIR=
while [ $# -gt 0 ]; do
  case $1 in
    --logdir) LOGDIR=$2; shift ;;
    *) echo "usage: $0 --logdir DIR" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$LOGDIR" ] || { echo "usage: $0 --logdir DIR" >&2; exit 2; }
T=${TESSERA_BIN:?TESSERA_BIN not set}
mkdir -p "$LOGDIR"
RESULTS=$LOGDIR/results
: > "$RESULTS"
npass=0 nfail=0

result() { # NAME OK(0/1) DETAIL
  if [ "$2" = 1 ]; then
    echo "PASS $1 ($3)" | tee -a "$RESULTS"
    npass=$((npass + 1))
  else
    echo "FAIL $1: $3" | tee -a "$RESULTS"
    nfail=$((nfail + 1))
    [ -f "$LOGDIR/$1.out" ] && { echo "---- $1.out ----"; tail -n 20 "$LOGDIR/$1.out"; echo "----"; }
  fi
}

# tv NAME ARGS...: run `tessera vf ARGS` with a timeout; sets RC, OUT (file)
tv() {
  local name=$1
  shift
  OUT=$LOGDIR/$name.out
  { echo "\$ tessera vf $*"; } > "$OUT"
  timeout -s KILL 60 "$T" vf "$@" >> "$OUT" 2>&1
  RC=$?
}
has() { grep -qF -- "$1" "$OUT"; }

find_dev() { # VENDOR DEVICE -> first BDF
  local d
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = "$1" ] && [ "$(cat "$d/device")" = "$2" ]; then
      basename "$d"
      return 0
    fi
  done
  return 1
}
driver_of() { local l; l=$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null) && basename "$l" || echo none; }
group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }

echo "tessera vf tests in $(uname -r): $T ($("$T" --version 2>&1 | head -1))"
PF=$(find_dev 0x8086 0x10c9) || { echo "FAIL no igb PF (8086:10c9) here"; echo "0 passed, 1 failed"; exit 1; }
P=/sys/bus/pci/devices/$PF
nic=
for n in "$P"/net/*; do [ -e "$n" ] && nic=$(basename "$n") && break; done
# The igb PF serves its VFs' mailbox only while its link is up.
[ -n "$nic" ] && ip link set "$nic" up
echo "igb PF $PF driver=$(driver_of "$PF") net=${nic:-none} sriov_totalvfs=$(cat "$P/sriov_totalvfs")"

# ---- list before any VF exists ----
tv list-pf list
if [ $RC = 0 ] && grep -qE "^PF $PF 8086:10c9  driver igb  VFs 0/7  autoprobe (on|off)" "$OUT"; then
  result list-pf 1 "$(grep "^PF $PF" "$OUT")"
else
  result list-pf 0 "want 'PF $PF 8086:10c9  driver igb  VFs 0/7' and exit 0, got exit $RC"
fi

# ---- host-wide check ----
tv check-host check
if [ $RC = 0 ] && has "ready: nothing on this host stops passthrough"; then
  result check-host 1 "exit 0; $(grep -c '^WARN' "$OUT") warnings"
else
  result check-host 0 "want exit 0 and 'ready:', got exit $RC: $(grep -E '^(FAIL|not ready)' "$OUT" | tr '\n' ';')"
fi

# ---- create 2 VFs: autoprobe off, so igbvf (loaded in L1) leaves them alone ----
tv create create --pf "$PF" --count 2
VF0=$(basename "$(readlink "$P/virtfn0" 2>/dev/null)")
VF1=$(basename "$(readlink "$P/virtfn1" 2>/dev/null)")
if [ $RC = 0 ] && [ "$(cat "$P/sriov_numvfs")" = 2 ] && [ "$(cat "$P/sriov_drivers_autoprobe")" = 0 ] &&
   [ "$(cat "/sys/bus/pci/devices/$VF0/device" 2>/dev/null)" = 0x10ca ] &&
   [ "$(driver_of "$VF0")" = none ] && [ "$(driver_of "$VF1")" = none ]; then
  result create 1 "VFs $VF0 $VF1 (8086:10ca), autoprobe 0, no driver (igbvf is loaded)"
else
  result create 0 "want exit 0, sriov_numvfs 2, autoprobe 0, two unbound 8086:10ca VFs; got exit $RC, numvfs $(cat "$P/sriov_numvfs"), VF0 '$VF0' driver $(driver_of "$VF0")"
fi

# ---- an unbound VF is not ready ----
tv check-unbound check "$VF0"
if [ $RC = 1 ] && has "FAIL driver: $VF0 is bound to no driver, not vfio-pci: run 'tessera vf bind $VF0'"; then
  result check-unbound 1 "exit 1, names 'tessera vf bind $VF0'"
else
  result check-unbound 0 "want exit 1 and the bind advice, got exit $RC"
fi

# ---- bind both ----
tv bind bind "$VF0" "$VF1"
if [ $RC = 0 ] && [ "$(driver_of "$VF0")" = vfio-pci ] && [ "$(driver_of "$VF1")" = vfio-pci ] &&
   [ -c "/dev/vfio/$(group_of "$VF0")" ]; then
  result bind 1 "$(head -2 "$OUT" | tail -1)"
else
  result bind 0 "want both VFs on vfio-pci, got exit $RC, drivers $(driver_of "$VF0") $(driver_of "$VF1")"
fi

# ---- a bound VF is ready ----
tv check-vf check "$VF0"
if [ $RC = 0 ] && has "ready: $VF0 on vfio-pci, IOMMU group $(group_of "$VF0")"; then
  result check-vf 1 "$(grep '^ready' "$OUT")"
else
  result check-vf 0 "want exit 0 and 'ready: $VF0 on vfio-pci', got exit $RC: $(grep -E '^(FAIL|WARN)' "$OUT" | tr '\n' ';')"
fi

# ---- the PF is refused ----
tv check-pf check "$PF"
if [ $RC = 1 ] && has "FAIL sriov-pf: $PF is an SR-IOV physical function with 2 VFs enabled: pass one of its VFs instead"; then
  result check-pf 1 "exit 1, 'pass one of its VFs instead'"
else
  result check-pf 0 "want exit 1 and the sriov-pf finding, got exit $RC"
fi

# ---- another device on no VFIO driver ----
EDU=$(find_dev 0x1234 0x11e8)
if [ -n "$EDU" ]; then
  tv check-edu check "$EDU"
  if [ $RC = 1 ] && has "FAIL driver: $EDU is bound to $(driver_of "$EDU" | sed 's/^none$/no driver/'), not vfio-pci"; then
    result check-edu 1 "exit 1 for the edu device on $(driver_of "$EDU")"
  else
    result check-edu 0 "want exit 1 and the driver finding for $EDU, got exit $RC"
  fi
else
  result check-edu 0 "no edu device (1234:11e8)"
fi

# ---- list --json: the VFs with group and driver ----
tv list-json list --json
if [ $RC = 0 ] && python3 - "$OUT" "$PF" "$VF0" "$VF1" "$(group_of "$VF0")" <<'EOF'
import json, sys
text = open(sys.argv[1]).read().split("\n", 1)[1]
j = json.loads(text)
pf = next(p for p in j["pfs"] if p["address"] == sys.argv[2])
assert pf["totalvfs"] == 7 and pf["numvfs"] == 2 and pf["autoprobe"] is False, pf
vfs = {v["address"]: v for v in pf["vfs"]}
assert set(vfs) == {sys.argv[3], sys.argv[4]}, vfs
assert all(v["driver"] == "vfio-pci" and v["device"] == "10ca" for v in vfs.values()), vfs
assert vfs[sys.argv[3]]["iommu_group"] == int(sys.argv[5]), vfs
assert all(v["in_use_by"] is None and v["holders"] == [] for v in vfs.values()), vfs
EOF
then
  result list-json 1 "parses; PF totalvfs 7 numvfs 2, both VFs on vfio-pci with their groups"
else
  result list-json 0 "want JSON with the PF and both VFs, got exit $RC"
fi

# ---- a process holding the VF's group: busy, named ----
G0=$(group_of "$VF0")
sleep 30 3<>"/dev/vfio/$G0" &
holder=$!
sleep 0.5
tv check-busy check "$VF0"
if [ $RC = 1 ] && has "FAIL busy: /dev/vfio/$G0 ($VF0) is already open in pid $holder (sleep)"; then
  result check-busy 1 "exit 1, names pid $holder (sleep)"
else
  result check-busy 0 "want exit 1 and the holder pid $holder, got exit $RC"
fi
tv list-busy list
if grep -qF "VF $VF0 8086:10ca  driver vfio-pci  group $G0  open in pid $holder (sleep)" "$OUT"; then
  result list-busy 1 "list shows the holder"
else
  result list-busy 0 "want 'open in pid $holder (sleep)' for $VF0"
fi
tv unbind-busy unbind "$VF0"
if [ $RC = 2 ] && has "$VF0 is in use by pid $holder (sleep)"; then
  result unbind-busy 1 "exit 2, refused while held"
else
  result unbind-busy 0 "want exit 2 'in use by pid $holder', got exit $RC"
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# ---- memlock below the guest RAM ----
OUT=$LOGDIR/check-memlock.out
(ulimit -l 64 && exec setpriv --inh-caps=-all --bounding-set=-ipc_lock "$T" vf check "$VF0" --memory 1G) > "$OUT" 2>&1
RC=$?
if [ $RC = 1 ] && has "FAIL memlock: RLIMIT_MEMLOCK is 64K but VFIO must lock all 1G of guest RAM"; then
  result check-memlock 1 "exit 1 with ulimit -l 64 and no CAP_IPC_LOCK"
else
  result check-memlock 0 "want exit 1 and the memlock finding, got exit $RC"
fi

# ---- unbind gives the VF back (autoprobe 0: no host driver takes it) ----
tv unbind unbind "$VF1"
if [ $RC = 0 ] && [ "$(driver_of "$VF1")" = none ] && [ "$(cat "/sys/bus/pci/devices/$VF1/driver_override")" = "(null)" ]; then
  result unbind 1 "$(tail -1 "$OUT")"
else
  result unbind 0 "want $VF1 without driver or override, got exit $RC, driver $(driver_of "$VF1")"
fi

# ---- destroy ----
tv destroy destroy --pf "$PF"
if [ $RC = 0 ] && [ "$(cat "$P/sriov_numvfs")" = 0 ] && [ ! -e "$P/virtfn0" ] && has "2 VFs removed"; then
  result destroy 1 "sriov_numvfs 0, no virtfn links"
else
  result destroy 0 "want exit 0 and sriov_numvfs 0, got exit $RC, numvfs $(cat "$P/sriov_numvfs")"
fi

tv list-after list
if grep -qE "^PF $PF 8086:10c9  driver igb  VFs 0/7  autoprobe off" "$OUT"; then
  result list-after 1 "VFs 0/7, autoprobe off"
else
  result list-after 0 "want 'VFs 0/7  autoprobe off' after destroy"
fi

echo "$npass passed, $nfail failed"
[ "$nfail" = 0 ]
