# shellcheck shell=bash
# `testbed run [--] CMD...`: boot L1 under the L0 QEMU (TCG) and run CMD in it.
#
# L0 machine: q35 (kernel-irqchip=split), 2 vCPUs, 4 GiB, `-cpu max` (emulated
# SVM, so L1 loads kvm_amd and gets a real /dev/kvm), an intel-iommu with
# interrupt remapping and caching-mode (L1 boots with intel_iommu=on), an igb
# NIC (SR-IOV PF, up to 7 VFs) behind a PCIe root port, and the other
# stand-ins for GPU VFs that the passthrough tests hand to L2 guests, each
# behind its own root port (own IOMMU group in L1): edu (plain MSI, DMA), a
# bochs-display (16 MiB framebuffer BAR), an NVMe controller (MSI-X, DMA; its
# namespace is $CACHE/pt/nvme.img, made on first use with a known checksum in
# nvme.img.sha256; read-only, so several L1s may share it) and an ivshmem-plain with a TESTBED_IVSHMEM [4G] 64-bit
# prefetchable BAR (backed by the sparse file $job/ivshmem.mem, so the host
# can read what L2 wrote into the BAR).
#
# L0 service (TB_L0_SERVICE=1): CMD inside L1 may ask L0 for one thing by
# writing "screendump FILE DEVICE-ID" to /run/testbed/l0-request (FILE
# relative to the job directory); L0 runs it on its HMP monitor and writes
# the monitor's answer to l0-reply.
# L1 is the Debian 6.12 kernel (TESTBED_L1=iommufd: one built with IOMMUFD,
# see lib/l1-kernel.sh) with the busybox initramfs of l1/init.sh: it
# mounts this machine's / read-only over virtio-9p (+ tmpfs overlay), and runs
# CMD with bash in a chroot of it, in the current directory, so host-built
# binaries (target/*/tessera) run unchanged.  /dev/kvm and /dev/vfio are there.
#
# CMD's output (written by L1 to the job directory's out.log) and L1's serial
# console (kernel messages) are streamed to our stdout; the exit status is
# CMD's, or 125 when L1 never reported one (crash, hang, TESTBED_TIMEOUT).
# On failure the tail of L1's console log is printed and the job directory
# (console.log, out.log, cmd.sh, anything CMD wrote to /run/testbed) is kept
# under $CACHE/logs; with TESTBED_KEEP=1 it is always kept.
#
# Watchdog: L1 writes a heartbeat into the job directory every 10 s
# (l1/init.sh).  When it stops for TESTBED_STALL seconds, or the run passes
# TESTBED_TIMEOUT, L0 writes what it can still see (L1's last heartbeat, its
# kernel log and stuck tasks, L0 QEMU's vCPU registers and thread
# backtraces) to JOB/stall.txt, prints its summary, and ends L1.  A stalled
# L1 (dead, not merely slow: its heartbeat stopped) is booted again for the
# whole command, TESTBED_STALL_RETRIES times, and says so; a run that only
# took too long is not.
#
# Knobs (defaults in brackets):
#   TESTBED_TIMEOUT  hard limit for the whole L1 run, seconds [1800]
#   TESTBED_STALL    seconds without a heartbeat that end L1 [300]
#   TESTBED_STALL_RETRIES  new L1 runs after a stall [1]
#   TESTBED_PANIC_RETRIES  new L1 runs after L1's kernel panicked [1]
#   TESTBED_QEMU     L0 QEMU binary [qemu-system-x86_64]
#   TESTBED_MEM      L1 RAM [4G]      TESTBED_SMP  L1 vCPUs [2]
#   TESTBED_APPEND   extra L1 kernel command line
#   TESTBED_VERBOSE  1 = full L1 kernel log on the console
#   TESTBED_LOGDIR   where job directories go [$CACHE/logs]
#   TESTBED_SHIM     LD_PRELOAD for L0 QEMU [$CACHE/l1/qemu-bql-shim.so; "" = none]
#                    Works around QEMU 10.0.2's TCG abort
#                    "tcg_handle_interrupt: assertion failed: (bql_locked())"
#                    (L2 writes CR8 with a virtual interrupt pending, hit with
#                    OVMF L2 guests); see l1/qemu-bql-shim.c.  Keep it until a
#                    fixed QEMU is installable from Debian.
# Environment variables named TESTBED_*, TESSERA_*, BENCH_*, L2_*, PT_*, RUST_LOG and
# RUST_BACKTRACE are passed on to CMD.

# Last job directory of cmd_run (for callers that want to read its files;
# they set TB_NO_CLEAN=1 and remove it themselves).
# shellcheck disable=SC2034  # read by ../testbed
TB_JOB=

# The NVMe stand-in's namespace: 32 MiB of random bytes and their sha256
# (the passthrough tests read the namespace in L2 and compare).  Made once;
# L2 guests only read it.
pt_nvme_image() {
  local d=$CACHE/pt
  [ -f "$d/nvme.img" ] && [ -f "$d/nvme.img.sha256" ] && return 0
  mkdir -p "$d"
  head -c 32M /dev/urandom > "$d/nvme.img.tmp" || die "cannot write $d/nvme.img"
  sha256sum < "$d/nvme.img.tmp" | cut -d' ' -f1 > "$d/nvme.img.sha256"
  mv "$d/nvme.img.tmp" "$d/nvme.img"
}

# The L0 service (see the header): poll the job directory for a request.
l0_service() { # JOB
  local job=$1 verb arg dev
  while sleep 0.3; do
    [ -f "$job/l0-request" ] || continue
    read -r verb arg dev < "$job/l0-request"
    rm -f "$job/l0-request"
    case $verb in
      screendump) hmp "$job/monitor.sock" "screendump $job/$arg $dev" > "$job/l0-reply" 2>&1 ;;
      *) echo "unknown L0 request: $verb" > "$job/l0-reply" ;;
    esac
  done
}

# hmp SOCKET COMMAND: run one HMP command on L0's monitor, print its answer.
hmp() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
def until_prompt():
    buf = b""
    while not buf.endswith(b"(qemu) "):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf
try:
    s.connect(sys.argv[1])
    until_prompt()
    s.sendall(sys.argv[2].encode() + b"\n")
    out = until_prompt().decode(errors="replace").replace("(qemu) ", "")
    # the monitor echoes the command with terminal escapes: drop that line
    print(out.split("\n", 1)[1].strip() if "\n" in out else out.strip())
except OSError as e:
    print(f"L0 monitor {sys.argv[1]}: no answer to {sys.argv[2]!r} ({e})")
EOF
}

# l1_watch JOB TPID: the watchdog of the header (TPID: the `timeout` that
# runs L0 QEMU; a TERM to it is passed on to QEMU).  JOB/stalled gets the
# reason, JOB/stall.txt the report.
l1_watch() {
  local job=$1 tpid=$2 stall=${TESTBED_STALL:-300} limit=${TESTBED_TIMEOUT:-1800}
  local start now age why
  start=$(date +%s)
  while sleep 5; do
    kill -0 "$tpid" 2>/dev/null || return 0
    [ -f "$job/rc" ] && continue   # CMD is done, L1 is powering off
    now=$(date +%s)
    if [ -f "$job/heartbeat" ]; then
      age=$((now - $(stat -c %Y "$job/heartbeat")))
    else
      age=$((now - start))
    fi
    if [ "$age" -ge "$stall" ]; then
      why="stall: no heartbeat from L1 for ${age}s (TESTBED_STALL=${stall}s)"
    elif [ $((now - start)) -ge "$limit" ]; then
      why="timeout: the L1 run took longer than TESTBED_TIMEOUT=${limit}s (its heartbeat was ${age}s old)"
    else
      continue
    fi
    echo "$why" > "$job/stalled"
    l1_report "$job" "$tpid" "$why" > "$job/stall.txt" 2>&1
    kill -TERM "$tpid" 2>/dev/null
    return 0
  done
}

# l1_report JOB TPID WHY: what L0 can see of a stalled L1.  The part before
# the "== L0 QEMU process" line is the summary cmd_run prints.
l1_report() {
  local job=$1 tpid=$2 qemu t
  qemu=$(pgrep -P "$tpid" | head -1)
  echo "L1 ended by L0's watchdog: $3"
  echo "== L1's last heartbeat ($(stat -c %y "$job/heartbeat" 2>/dev/null || echo none)) =="
  cat "$job/heartbeat" 2>/dev/null
  echo "== L1 tasks in uninterruptible sleep at its last check =="
  cat "$job/stuck" 2>/dev/null
  echo "== tail of L1's kernel log at its last check =="
  tail -n 30 "$job/dmesg" 2>/dev/null
  echo "== tail of CMD's output =="
  tail -n 10 "$job/out.log" 2>/dev/null
  if [ -S "$job/monitor.sock" ]; then
    echo "== L0 monitor: info status, info cpus, the vCPUs' RIP/RSP/CR3 =="
    timeout 30 bash -c "$(declare -f hmp); hmp '$job/monitor.sock' 'info status'"
    timeout 30 bash -c "$(declare -f hmp); hmp '$job/monitor.sock' 'info cpus'"
    timeout 30 bash -c "$(declare -f hmp); hmp '$job/monitor.sock' 'info registers -a'" > "$job/registers.txt"
    grep -E '^CPU#|^RAX|^RIP|^CR0' "$job/registers.txt"
  fi
  [ -n "$qemu" ] || return 0
  echo "== L0 QEMU process $qemu: its threads =="
  for t in /proc/"$qemu"/task/*; do
    echo "${t##*/} $(cat "$t/comm" 2>/dev/null) state=$(cut -d' ' -f3 "$t/stat" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)"
  done
  if command -v gdb > /dev/null; then
    echo "== L0 QEMU: backtraces of its threads (gdb) =="
    timeout 90 gdb -batch -nx -p "$qemu" -ex 'thread apply all bt 30' 2>&1 | grep -v '^\[New LWP\|^warning:'
  fi
}

# cmd_run CMD...: run CMD in L1 (see the header), again after a stall or
# a panic of L1's kernel.
cmd_run() {
  local try=0 ptry=0 rc what
  while :; do
    l1_run_once "$@"
    rc=$?
    [ "$rc" = 125 ] || return "$rc"
    if grep -qs '^stall:' "$TB_JOB/stalled"; then
      [ "$try" -lt "${TESTBED_STALL_RETRIES:-1}" ] || return "$rc"
      try=$((try + 1))
      log "RETRY: L1 stalled ($(cat "$TB_JOB/stalled")); its report is in $TB_JOB/stall.txt; booting L1 again for the whole command (retry $try of ${TESTBED_STALL_RETRIES:-1})"
    elif what=$(grep -a -m1 -A1 'Kernel panic - not syncing' "$TB_JOB/console.log" 2>/dev/null); then
      # L1's kernel died under L0's emulation (see the header): not CMD's
      # verdict, so CMD runs again in a fresh L1
      [ "$ptry" -lt "${TESTBED_PANIC_RETRIES:-1}" ] || return "$rc"
      ptry=$((ptry + 1))
      log "RETRY: L1's kernel panicked ($(printf '%s' "$what" | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ' ')); its console log is in $TB_JOB/console.log; booting L1 again for the whole command (retry $ptry of ${TESTBED_PANIC_RETRIES:-1})"
    else
      return "$rc"
    fi
  done
}

l1_run_once() {
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "usage: testbed run [--] CMD [ARG...]"
  ensure_artifacts

  local l1=$CACHE/l1 l1k logdir=${TESTBED_LOGDIR:-$CACHE/logs}
  local timeout=${TESTBED_TIMEOUT:-1800} qemu=${TESTBED_QEMU:-qemu-system-x86_64}
  local job append shim t0 qrc rc v
  mkdir -p "$logdir"
  # keep at most the 20 newest job directories (failed or TESTBED_KEEP runs)
  find "$logdir" -maxdepth 1 -name 'l1-*' -type d -printf '%T@ %p\n' | sort -rn |
    tail -n +20 | cut -d' ' -f2- | while IFS= read -r old; do rm -rf "$old"; done
  l1k=$(l1_kernel_dir)   # TESTBED_L1 (lib/l1-kernel.sh)
  pt_nvme_image
  job=$(mktemp -d "$logdir/l1-$(date +%Y%m%d-%H%M%S)-XXXX")
  TB_JOB=$job

  # cmd.sh runs inside L1 (chroot of the host root) with bash
  {
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb'
    echo 'export TESTBED_IN_L1=1'
    while IFS= read -r v; do
      printf 'export %s=%q\n' "$v" "${!v}"
    done < <(compgen -e | grep -E '^(TESTBED_|TESSERA_|BENCH_|L2_|PT_|RUST_LOG$|RUST_BACKTRACE$)' |
             grep -vE '^(TESTBED_IN_L1|TESTBED_DIRECT)$')
    printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
    printf '%q ' "$@"; echo
  } > "$job/cmd.sh"

  # no_timer_check: under load the TCG L1 failed the IO-APIC timer check and
  # panicked ("IO-APIC + timer doesn't work!")
  append="console=ttyS0 panic=-1 oops=panic intel_iommu=on no_timer_check"
  [ "${TESTBED_VERBOSE:-0}" = 1 ] || append="$append quiet loglevel=3"
  append="$append ${TESTBED_APPEND:-}"

  local -a pre=() mon=() cmd
  shim=${TESTBED_SHIM-$l1/qemu-bql-shim.so}
  [ -n "$shim" ] && [ -f "$shim" ] && pre=(env "LD_PRELOAD=$shim")
  # HMP monitor for inspecting a hung L1 (unix socket paths are limited to 108 bytes)
  [ ${#job} -lt 90 ] && mon=(-monitor "unix:$job/monitor.sock,server=on,wait=off")
  # shellcheck disable=SC2054  # commas are QEMU option syntax
  cmd=("$qemu"
    -accel tcg -cpu max -machine q35,kernel-irqchip=split
    -m "${TESTBED_MEM:-4G}" -smp "${TESTBED_SMP:-2}"
    -nodefaults -no-user-config -display none -no-reboot
    -chardev "stdio,id=con,signal=off,logfile=$job/console.log" -serial chardev:con
    "${mon[@]}"
    -device intel-iommu,intremap=on,caching-mode=on
    -kernel "$l1k/vmlinuz" -initrd "$l1k/initrd.gz" -append "$append"
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev "local,id=job,path=$job,security_model=none,multidevs=remap"
    -device virtio-9p-pci,fsdev=job,mount_tag=job
    -netdev user,id=n0,restrict=on
    -device pcie-root-port,id=rp1,chassis=1,slot=1 -device igb,bus=rp1,netdev=n0
    -device pcie-root-port,id=rp2,chassis=2,slot=2 -device edu,bus=rp2
    -device pcie-root-port,id=rp3,chassis=3,slot=3 -device bochs-display,bus=rp3,id=ptbochs
    -drive "file=$CACHE/pt/nvme.img,if=none,id=nvm0,format=raw,readonly=on"
    -device pcie-root-port,id=rp4,chassis=4,slot=4 -device nvme,bus=rp4,drive=nvm0,serial=tessera-pt
    -object "memory-backend-file,id=ivshm,size=${TESTBED_IVSHMEM:-4G},mem-path=$job/ivshmem.mem,share=on"
    -device pcie-root-port,id=rp5,chassis=5,slot=5 -device ivshmem-plain,bus=rp5,memdev=ivshm)
  printf '%s ' "${pre[@]}" "${cmd[@]}" > "$job/l0-cmdline"
  log "booting L1 (kernel: ${TB_L1:-debian}, $l1k/vmlinuz; timeout ${timeout}s, job dir $job)"
  [ "${TESTBED_VERBOSE:-0}" = 1 ] && log "L0: $(cat "$job/l0-cmdline")"

  t0=$(now)
  local qpid spid fd tpid wpid
  # L1's serial output ends lines with \r\n: strip the \r (CI logs, and
  # "N passed, M failed" must stand alone on its line)
  exec {fd}> >(sed -u 's/\r$//')
  spid=$!
  # the watchdog ends L1 first; `timeout` is the backstop
  timeout --kill-after=10 "$((timeout + 180))" "${pre[@]}" "${cmd[@]}" < /dev/null >&"$fd" &
  qpid=$!
  # CMD's output, as L1 writes it (tail ends after QEMU, having read it all)
  tail --pid="$qpid" -s 0.3 -n +1 -F "$job/out.log" 2>/dev/null 1>&"$fd" &
  tpid=$!
  l1_watch "$job" "$qpid" &
  wpid=$!
  local svc=""
  [ "${TB_L0_SERVICE:-0}" = 1 ] && { l0_service "$job" & svc=$!; }
  # shellcheck disable=SC2064  # expand the pids now
  trap "kill $qpid $wpid $tpid 2>/dev/null; exit 130" INT TERM
  wait "$qpid"
  qrc=$?
  trap - INT TERM
  kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null
  [ -n "$svc" ] && { kill "$svc" 2>/dev/null; wait "$svc" 2>/dev/null; }
  wait "$tpid" 2>/dev/null
  exec {fd}>&-
  wait "$spid" 2>/dev/null
  if [ -f "$job/rc" ]; then rc=$(cat "$job/rc"); else rc=125; fi
  log "L1 done: CMD exit status $rc, L0 QEMU exit status $qrc, wall $(elapsed "$t0")s"
  [ "$qrc" = 124 ] && log "L1 run killed by the backstop timeout ($((timeout + 180))s): the watchdog did not end it"
  if [ -f "$job/stalled" ]; then
    {
      echo "---- L0's watchdog report (all of it: $job/stall.txt) ----"
      sed '/^== L0 QEMU process/,$d' "$job/stall.txt" 2>/dev/null
    } >&2
  fi
  if [ "$rc" != 0 ]; then
    {
      echo "---- tail of L1's console log ($job/console.log) ----"
      tail -n "${TESTBED_TAIL:-40}" "$job/console.log" 2>/dev/null
      echo "---- end of L1's console log; kept in $job ----"
    } >&2
  elif [ "${TESTBED_KEEP:-0}" = 1 ]; then
    log "job dir kept: $job"
  elif [ "${TB_NO_CLEAN:-0}" != 1 ]; then
    rm -rf "$job"
  fi
  return "$rc"
}
