#!/bin/bash
# `tessera vf` on real SR-IOV hardware: the igb PF (8086:10c9, 7 VFs) of the
# testbed's L1, plus its edu device, and `tessera run --device vf=PF` (L2
# guests that each take a free VF of the PF).  Runs inside L1 (`testbed
# vf-tests`); it changes the host's PCI state, so never run it on a machine
# you care about.
#
#   vf-tests.sh --cache DIR --logdir DIR
#
# DIR/l2/vmlinuz and DIR/l2/initrd.gz (from `testbed fetch`) are the L2
# guests of the vf=PF tests; the L2 /init prints "L2-PCI <bdf> <ven>:<dev>"
# per PCI function and powers off (with tessera.hang=1: TESSERA-L2-HANG, then
# sleeps).  Knobs: L2_TIMEOUT [300] the guests' --timeout, L2_MEM [128M].
#
# Each test prints one "PASS name (...)" or "FAIL name: why" line (also in
# DIR/results); the last line is "N passed, M failed" and the exit status is
# 1 if any test failed.  DIR/NAME.out holds each tessera command's output.
# TESSERA_BIN is the tessera binary (absolute path).
set -u
LOGDIR='' CACHE=''
while [ $# -gt 0 ]; do
  case $1 in
    --logdir) LOGDIR=$2; shift ;;
    --cache) CACHE=$2; shift ;;
    *) echo "usage: $0 --cache DIR --logdir DIR" >&2; exit 2 ;;
  esac
  shift
done
{ [ -n "$LOGDIR" ] && [ -n "$CACHE" ]; } || { echo "usage: $0 --cache DIR --logdir DIR" >&2; exit 2; }
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

# pt_find VENDOR DEVICE (first BDF), pt_driver_of BDF ("none" if unbound)
# shellcheck source=vfio-setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/vfio-setup.sh"
group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }

echo "tessera vf tests in $(uname -r): $T ($("$T" --version 2>&1 | head -1))"
PF=$(pt_find 0x8086 0x10c9) || { echo "FAIL no igb PF (8086:10c9) here"; echo "0 passed, 1 failed"; exit 1; }
P=/sys/bus/pci/devices/$PF
nic=
for n in "$P"/net/*; do [ -e "$n" ] && nic=$(basename "$n") && break; done
# The igb PF serves its VFs' mailbox only while its link is up.
[ -n "$nic" ] && ip link set "$nic" up
echo "igb PF $PF driver=$(pt_driver_of "$PF") net=${nic:-none} sriov_totalvfs=$(cat "$P/sriov_totalvfs")"

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

# ---- create 3 VFs: autoprobe off, so igbvf (loaded in L1) leaves them alone ----
tv create create --pf "$PF" --count 3
VF0=$(basename "$(readlink "$P/virtfn0" 2>/dev/null)")
VF1=$(basename "$(readlink "$P/virtfn1" 2>/dev/null)")
VF2=$(basename "$(readlink "$P/virtfn2" 2>/dev/null)")
if [ $RC = 0 ] && [ "$(cat "$P/sriov_numvfs")" = 3 ] && [ "$(cat "$P/sriov_drivers_autoprobe")" = 0 ] &&
   [ "$(cat "/sys/bus/pci/devices/$VF0/device" 2>/dev/null)" = 0x10ca ] &&
   [ "$(pt_driver_of "$VF0")" = none ] && [ "$(pt_driver_of "$VF1")" = none ] && [ "$(pt_driver_of "$VF2")" = none ]; then
  result create 1 "VFs $VF0 $VF1 $VF2 (8086:10ca), autoprobe 0, no driver (igbvf is loaded)"
else
  result create 0 "want exit 0, sriov_numvfs 3, autoprobe 0, three unbound 8086:10ca VFs; got exit $RC, numvfs $(cat "$P/sriov_numvfs"), VF0 '$VF0' driver $(pt_driver_of "$VF0")"
fi

# ---- an unbound VF is not ready ----
tv check-unbound check "$VF0"
if [ $RC = 1 ] && has "FAIL driver: $VF0 is bound to no driver, not vfio-pci: run 'tessera vf bind $VF0'"; then
  result check-unbound 1 "exit 1, names 'tessera vf bind $VF0'"
else
  result check-unbound 0 "want exit 1 and the bind advice, got exit $RC"
fi

# ---- bind all three ----
tv bind bind "$VF0" "$VF1" "$VF2"
if [ $RC = 0 ] && [ "$(pt_driver_of "$VF0")" = vfio-pci ] && [ "$(pt_driver_of "$VF1")" = vfio-pci ] &&
   [ "$(pt_driver_of "$VF2")" = vfio-pci ] && [ -c "/dev/vfio/$(group_of "$VF0")" ]; then
  result bind 1 "$(head -2 "$OUT" | tail -1)"
else
  result bind 0 "want the three VFs on vfio-pci, got exit $RC, drivers $(pt_driver_of "$VF0") $(pt_driver_of "$VF1") $(pt_driver_of "$VF2")"
fi

# ---- a bound VF is ready ----
tv check-vf check "$VF0"
if [ $RC = 0 ] && has "ready: $VF0 on vfio-pci, IOMMU group $(group_of "$VF0")"; then
  result check-vf 1 "$(grep '^ready' "$OUT")"
else
  result check-vf 0 "want exit 0 and 'ready: $VF0 on vfio-pci', got exit $RC: $(grep -E '^(FAIL|WARN)' "$OUT" | tr '\n' ';')"
fi
ok=1 why=
for v in "$VF1" "$VF2"; do
  tv "check-$v" check "$v"
  { [ $RC = 0 ] && has "ready: $v on vfio-pci"; } || { ok=0; why="$why $v: exit $RC;"; }
done
result check-vfs "$ok" "${why:-$VF1 and $VF2 ready too}"

# ---- the PF is refused ----
tv check-pf check "$PF"
if [ $RC = 1 ] && has "FAIL sriov-pf: $PF is an SR-IOV physical function with 3 VFs enabled: pass one of its VFs instead"; then
  result check-pf 1 "exit 1, 'pass one of its VFs instead'"
else
  result check-pf 0 "want exit 1 and the sriov-pf finding, got exit $RC"
fi

# ---- another device on no VFIO driver ----
EDU=$(pt_find 0x1234 0x11e8)
if [ -n "$EDU" ]; then
  tv check-edu check "$EDU"
  if [ $RC = 1 ] && has "FAIL driver: $EDU is bound to $(pt_driver_of "$EDU" | sed 's/^none$/no driver/'), not vfio-pci"; then
    result check-edu 1 "exit 1 for the edu device on $(pt_driver_of "$EDU")"
  else
    result check-edu 0 "want exit 1 and the driver finding for $EDU, got exit $RC"
  fi
else
  result check-edu 0 "no edu device (1234:11e8)"
fi

# ---- list --json: the VFs with group and driver ----
tv list-json list --json
if [ $RC = 0 ] && python3 - "$OUT" "$PF" "$VF0=$(group_of "$VF0")" "$VF1=$(group_of "$VF1")" "$VF2=$(group_of "$VF2")" <<'EOF'
import json, sys
text = open(sys.argv[1]).read().split("\n", 1)[1]
j = json.loads(text)
pf = next(p for p in j["pfs"] if p["address"] == sys.argv[2])
assert pf["totalvfs"] == 7 and pf["numvfs"] == 3 and pf["autoprobe"] is False, pf
vfs = {v["address"]: v for v in pf["vfs"]}
want = dict(a.split("=") for a in sys.argv[3:])
assert set(vfs) == set(want), vfs
assert all(v["driver"] == "vfio-pci" and v["device"] == "10ca" for v in vfs.values()), vfs
assert all(vfs[a]["iommu_group"] == int(g) for a, g in want.items()), vfs
assert all(v["in_use_by"] is None and v["holders"] == [] for v in vfs.values()), vfs
EOF
then
  result list-json 1 "parses; PF totalvfs 7 numvfs 3, the 3 VFs on vfio-pci with their groups"
else
  result list-json 0 "want JSON with the PF and its 3 VFs, got exit $RC"
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
if [ $RC = 0 ] && [ "$(pt_driver_of "$VF1")" = none ] && [ "$(cat "/sys/bus/pci/devices/$VF1/driver_override")" = "(null)" ]; then
  result unbind 1 "$(tail -1 "$OUT")"
else
  result unbind 0 "want $VF1 without driver or override, got exit $RC, driver $(pt_driver_of "$VF1")"
fi

# ==== tessera run --device vf=PF: L2 guests that each take a free VF ====
KERNEL=$CACHE/l2/vmlinuz INITRD=$CACHE/l2/initrd.gz
L2_TMO=${L2_TIMEOUT:-300} L2_MEM=${L2_MEM:-128M}
L2_CMDLINE="console=ttyS0 panic=-1 quiet"
VMPIDS=()
# No guest outlives the script, whatever happened to it.
trap 'for p in "${VMPIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done' EXIT

# vm_start NAME [--hang] [--gate FILE] [run options...]: start one L2 guest
# with --device vf=$PF in the background (after FILE exists, with --gate);
# VMPID is tessera's own pid.  NAME.serial is its console, NAME.out its log.
vm_start() {
  local name=$1 extra="" gate=""
  shift
  [ "${1:-}" = --hang ] && { extra=" tessera.hang=1"; shift; }
  [ "${1:-}" = --gate ] && { gate=$2; shift 2; }
  local ser=$LOGDIR/$name.serial out=$LOGDIR/$name.out
  rm -f "$ser"
  echo "\$ tessera run --device vf=$PF $* (cmdline '$L2_CMDLINE$extra')" > "$out"
  (
    if [ -n "$gate" ]; then
      until [ -e "$gate" ]; do sleep 0.01; done
    fi
    exec "$T" run --log-level info --kernel "$KERNEL" --initrd "$INITRD" \
      --cmdline "$L2_CMDLINE$extra" --memory "$L2_MEM" --serial "file=$ser" --timeout "$L2_TMO" \
      --device "vf=$PF" "$@" < /dev/null >> "$out" 2>&1
  ) &
  VMPID=$!
  VMPIDS+=("$VMPID")
}
# wait_serial NAME TEXT PID: until TEXT is on NAME's console (0), or the VM
# exited or L2_TMO passed (1)
wait_serial() {
  local n=0
  until grep -qaF -- "$2" "$LOGDIR/$1.serial" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || return 1
    [ $n -ge $((L2_TMO * 5)) ] && return 1
    sleep 0.2
    n=$((n + 1))
  done
}
took_of() { sed -n 's/.*took VF \([0-9a-f:.]*\) .*/\1/p' "$LOGDIR/$1.out" | head -1; }
guest_pci() { tr -d '\r' < "$LOGDIR/$1.serial" 2>/dev/null | grep -a '^L2-PCI ' | grep -a ' 8086:10ca ' | head -1; }
list_line() { grep -F "VF $1 8086:10ca" "$OUT"; }

if [ ! -f "$KERNEL" ] || [ ! -f "$INITRD" ]; then
  result pool-three 0 "no L2 guest in $CACHE/l2 (run: tests/testbed/testbed fetch)"
else
  # ---- three VMs started at the same moment, each with --device vf=PF ----
  gate=$LOGDIR/pool-gate
  rm -f "$gate"
  pids=()
  for i in 1 2 3; do
    vm_start "pool-$i" --hang --gate "$gate"
    pids+=("$VMPID")
  done
  sleep 0.5
  : > "$gate"
  ok=1 why="" took=() detail=""
  for i in 1 2 3; do
    if ! wait_serial "pool-$i" TESSERA-L2-HANG "${pids[i - 1]}"; then
      ok=0 why="$why pool-$i: no TESSERA-L2-HANG ($(tail -1 "$LOGDIR/pool-$i.out"));"
      continue
    fi
    t=$(took_of "pool-$i") g=$(guest_pci "pool-$i")
    took+=("$t")
    if [ -z "$t" ] || [ -z "$g" ]; then
      ok=0 why="$why pool-$i: took '${t:-?}', guest PCI '${g:-no 8086:10ca}';"
    fi
    detail="$detail pool-$i $t (guest: ${g#L2-PCI }),"
  done
  distinct=$(printf '%s\n' "${took[@]}" | sort -u | grep -c .)
  [ "$distinct" = 3 ] || { ok=0 why="$why took ${took[*]}: $distinct distinct VFs, want 3;"; }
  for t in "${took[@]}"; do
    case " $VF0 $VF1 $VF2 " in *" $t "*) ;; *) ok=0 why="$why $t is not a VF of $PF;" ;; esac
  done
  if [ $ok = 1 ]; then
    result pool-three 1 "started at once, 3 different VFs:${detail%,}"
  else
    result pool-three 0 "want 3 guests up, each with a different VF of $PF listed as 8086:10ca:$why"
  fi

  # ---- the VF 'vf unbind' left without a driver was bound again ----
  if [ "$(pt_driver_of "$VF1")" = vfio-pci ] && grep -qF "$VF1: bound to vfio-pci (was no driver)" "$LOGDIR"/pool-[123].out; then
    result pool-rebind 1 "$VF1 had no driver; the VM that took it bound it to vfio-pci"
  else
    result pool-rebind 0 "want $VF1 rebound to vfio-pci by the VM that took it, driver now $(pt_driver_of "$VF1")"
  fi

  # ---- vf list names each VM holding a VF ----
  tv pool-list list
  ok=1 why="" detail=""
  for i in 1 2 3; do
    t=$(took_of "pool-$i")
    [ -n "$t" ] || { ok=0; continue; }
    line=$(list_line "$t")
    case $line in
      *"in use by tessera vm with serial file $LOGDIR/pool-$i.serial (pid ${pids[i - 1]})")
        detail="$detail $t pool-$i.serial pid ${pids[i - 1]}," ;;
      *) ok=0 why="$why '$line' for pool-$i (pid ${pids[i - 1]});" ;;
    esac
  done
  if [ $ok = 1 ]; then
    result pool-list 1 "each VF 'in use by tessera vm with serial file ... (pid N)' of its VM:${detail%,}"
  else
    result pool-list 0 "want each taken VF 'in use by tessera vm with serial file ... (pid N)':$why"
  fi

  # ---- a fourth VM, no --vf-create: no free VF ----
  OUT=$LOGDIR/pool-fourth.out
  echo "\$ tessera run --device vf=$PF (a fourth VM)" > "$OUT"
  timeout -s KILL 60 "$T" run --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$L2_CMDLINE" \
    --memory "$L2_MEM" --serial null --timeout "$L2_TMO" --device "vf=$PF" < /dev/null >> "$OUT" 2>&1
  RC=$?
  errs=$(tail -n +2 "$OUT")
  if [ $RC = 2 ] && [ "$(printf '%s\n' "$errs" | grep -c .)" = 1 ] &&
     has "tessera: error: no free VF on PF $PF: all 3 VFs are in use (" && ! has panicked; then
    result pool-fourth 1 "exit 2: $errs"
  else
    result pool-fourth 0 "want exit 2 and one line 'no free VF on PF $PF: all 3 VFs are in use', got exit $RC: $errs"
  fi

  # ---- SIGTERM stops them; then every VF is free ----
  rcs=""
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null
    wait "$p"
    rcs="$rcs $?"
  done
  if [ "$rcs" = " 143 143 143" ]; then
    result pool-sigterm 1 "the three VMs exited 143 on SIGTERM"
  else
    result pool-sigterm 0 "want exit 143 from each VM, got$rcs"
  fi
  tv pool-free list
  if [ $RC = 0 ] && [ "$(grep -cE "^  VF ($VF0|$VF1|$VF2) 8086:10ca  driver vfio-pci  group [0-9]+  free$" "$OUT")" = 3 ]; then
    result pool-free 1 "after all exited, the 3 VFs are free"
  else
    result pool-free 0 "want the 3 VFs 'free' in vf list, got: $(grep -F '  VF ' "$OUT" | tr '\n' ';')"
  fi

  # ---- SIGKILL: the VF is free for the next VM, no cleanup ----
  vm_start pool-kill --hang
  kpid=$VMPID
  if wait_serial pool-kill TESSERA-L2-HANG "$kpid"; then
    kt=$(took_of pool-kill)
    tv pool-kill-held list
    held=$(list_line "$kt")
    kill -KILL "$kpid"
    wait "$kpid" 2>/dev/null
    krc=$?
    tv pool-kill-free list
    freed=$(list_line "$kt")
    vm_start pool-next
    npid=$VMPID
    wait "$npid"
    nrc=$?
    nt=$(took_of pool-next) ng=$(guest_pci pool-next)
    if [ $krc = 137 ] && [[ $held == *"in use by tessera vm with serial file $LOGDIR/pool-kill.serial (pid $kpid)" ]] &&
       [[ $freed == *"  free" ]] && [ $nrc = 0 ] && [ "$nt" = "$kt" ] && [ -n "$ng" ]; then
      result pool-sigkill 1 "VM on $kt killed (137); vf list shows it free at once; the next VM took $kt, guest ${ng#L2-PCI }, exit 0"
    else
      result pool-sigkill 0 "killed rc $krc (want 137), held '$held', after kill '$freed' (want free), next VM exit $nrc (want 0) took '$nt' (want $kt), guest '${ng:-no 8086:10ca}'"
    fi
  else
    kill -KILL "$kpid" 2>/dev/null
    result pool-sigkill 0 "the VM to kill never came up: $(tail -1 "$LOGDIR/pool-kill.out")"
  fi
fi

# ---- destroy ----
tv destroy destroy --pf "$PF"
if [ $RC = 0 ] && [ "$(cat "$P/sriov_numvfs")" = 0 ] && [ ! -e "$P/virtfn0" ] && has "3 VFs removed"; then
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
