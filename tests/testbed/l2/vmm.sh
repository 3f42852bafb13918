# shellcheck shell=bash
# How the L2 scripts start an L2 guest.  Sourced by boot-tests.sh and
# bench-boot.sh, which run where KVM works (inside L1, or on a host with
# hardware KVM).
#
#   vmm_run OUT -- tessera-run-options...
#
# Runs the selected L2 VMM (TESTBED_L2_VMM=tessera|qemu, default tessera) with
# the options of `tessera run` (--kernel --initrd --cmdline --memory --cpus
# --serial --expect-serial --timeout ...).  The VMM's own stdout+stderr go to
# OUT; its exit status is returned (tessera's contract: 0 guest powered off
# or --expect-serial text seen, 1 VM/VMM failure, 2 bad input, 3 guest reset,
# 124 --timeout expired, 128+N signal).  An outer `timeout` guards every run
# (the VMM's own --timeout + L2_GUARD_SLACK [60] s; its expiry gives 125 after
# a KILL, i.e. "the VMM ignored its own --timeout"; 126 if even the KILL did
# not end it, with the kernel stacks of its threads in OUT: see stuck_watch).
#
# tessera: this is the one place that knows the command line:
#   $TESSERA_BIN run --log-level ${TESSERA_LOG_LEVEL:-warn} <options>
# qemu: a stand-in that emulates the same contract with QEMU (q35, -accel
#   kvm -cpu host, SeaBIOS, -kernel): exit statuses are mapped (guest reset vs
#   poweroff is told apart with QEMU's qemu_system_shutdown_request trace
#   event, which fires only for a guest power-off), --expect-serial and
#   --timeout are done by polling the serial log file, --serial file=/stdio.

# parse_l2_args --cache DIR --logdir DIR: sets CACHE and LOGDIR (the
# arguments every L2 script takes) or exits with the usage line.
parse_l2_args() {
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
}

vmm_name() {
  case ${TESTBED_L2_VMM:-tessera} in
    tessera) echo tessera ;;
    qemu) echo qemu-q35-standin ;;
  esac
}

# The tessera invocation (single place to adjust when the CLI changes).
# TESSERA_STRACE_DIR=DIR runs each tessera under `strace -ff`, one file per
# thread in DIR (the syscalls of each thread kind, for the seccomp lists:
# tests/testbed/syscalls.py).
tessera_cmd() { # options...
  if [ -n "${TESSERA_STRACE_DIR:-}" ]; then
    mkdir -p "$TESSERA_STRACE_DIR"
    printf '%s\0' strace -ff -qq -o "$TESSERA_STRACE_DIR/run-${EPOCHREALTIME/./}" --
  fi
  printf '%s\0' "${TESSERA_BIN:?TESSERA_BIN not set}" run \
    --log-level "${TESSERA_LOG_LEVEL:-warn}" "$@"
  # traced without the filters, so the trace shows every call the code makes
  [ -n "${TESSERA_STRACE_DIR:-}" ] && printf '%s\0' --seccomp off
  return 0
}

# Outer guard: seconds derived from the VMM's --timeout in the options.
guard_secs() { # options...
  local t=600
  while [ $# -gt 0 ]; do
    [ "$1" = --timeout ] && t=$2
    shift
  done
  echo $(( t + ${L2_GUARD_SLACK:-60} ))
}

vmm_run() { # OUT -- options...
  local out=$1
  shift
  [ "${1:-}" = -- ] && shift
  local guard
  guard=$(guard_secs "$@")
  case ${TESTBED_L2_VMM:-tessera} in
    tessera)
      local -a cmd=()
      mapfile -d '' cmd < <(tessera_cmd "$@")
      echo "L2-VMM-CMD: ${cmd[*]}" > "$out"
      "${cmd[@]}" < /dev/null >> "$out" 2>&1 &
      guarded_wait $! "$guard" "$out"
      return $? ;;
    qemu) qemu_standin "$out" "$guard" "$@" ;;
    *) echo "bad TESTBED_L2_VMM" >&2; return 2 ;;
  esac
}

# guarded_wait PID GUARD OUT: wait for the VMM at PID, at most GUARD
# seconds; returns its status, 125 if it had to be killed. Just before the
# guard expires the kernel stacks of its threads go to OUT (what it is stuck
# in). A VMM that is still there 30 s after the KILL (a thread in an
# uninterruptible kernel wait ignores it) gets its stacks and the kernel's
# blocked-task report (sysrq w) written to OUT and is left behind: 126, so the
# run goes on instead of hanging the whole L1 job.
guarded_wait() {
  local pid=$1 guard=$2 out=$3 t0=${EPOCHREALTIME/./} now stage=0 rc
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    now=$(( (${EPOCHREALTIME/./} - t0) / 1000000 ))
    if [ $stage = 0 ] && [ $now -ge $((guard - 2)) ]; then
      stage=1
      { echo "L2 guard: pid $pid still running after ${now}s; its threads:"; dump_stacks "$pid"; } >> "$out" 2>&1
    elif [ $stage = 1 ] && [ $now -ge "$guard" ]; then
      stage=2
      kill -KILL "$pid" 2>/dev/null
    elif [ $stage = 2 ] && [ $now -ge $((guard + 30)) ]; then
      {
        echo "L2 guard: unkillable: pid $pid still there 30 s after SIGKILL; its threads:"
        dump_stacks "$pid"
        echo w > /proc/sysrq-trigger; sleep 1
        echo "---- dmesg (sysrq w: blocked tasks) ----"
        dmesg | tail -n 150
      } >> "$out" 2>&1
      return 126
    fi
  done
  wait "$pid"; rc=$?
  if [ $stage = 2 ]; then echo "L2 guard: killed after ${guard}s" >> "$out"; rc=125; fi
  return $rc
}

dump_stacks() { # PID
  local task
  for task in /proc/"$1"/task/*; do
    echo "-- thread ${task##*/} $(cat "$task/comm" 2>/dev/null) $(grep '^State' "$task/status" 2>/dev/null) wchan=$(cat "$task/wchan" 2>/dev/null)"
    cat "$task/stack" 2>/dev/null
  done
}

# QEMU in the role of `tessera run` (see the header).
qemu_standin() { # OUT GUARD options...
  local out=$1 guard=$2
  shift 2
  local kernel="" initrd="" cmdline="" mem=256M cpus=1 serial=stdio expect="" tmo=0
  while [ $# -gt 0 ]; do
    case $1 in
      --kernel) kernel=$2; shift ;;
      --initrd) initrd=$2; shift ;;
      --cmdline) cmdline=$2; shift ;;
      --memory) mem=$2; shift ;;
      --cpus) cpus=$2; shift ;;
      --serial) serial=$2; shift ;;
      --expect-serial) expect=$2; shift ;;
      --timeout) tmo=$2; shift ;;
      --on-reset|--log-level) shift ;;
      *) echo "qemu stand-in: unknown option $1" >> "$out"; return 2 ;;
    esac
    shift
  done
  local log trace
  trace=$(mktemp /tmp/l2-trace.XXXXXX)
  case $serial in
    file=*) log=${serial#file=} ;;
    *) log=$(mktemp /tmp/l2-serial.XXXXXX) ;;   # stdio/null: poll a temp file
  esac
  : > "$log"
  local -a cmd=(qemu-system-x86_64 -accel kvm -cpu host -M q35 -m "$mem" -smp "$cpus"
    -nodefaults -no-user-config -display none -no-reboot
    -serial "file:$log" -kernel "$kernel" -append "$cmdline"
    -trace "qemu_system_shutdown_request,file=$trace")
  [ -n "$initrd" ] && cmd+=(-initrd "$initrd")
  echo "L2-VMM-CMD: ${cmd[*]}" > "$out"
  local t0=${EPOCHREALTIME/./} pid rc="" tail_pid=""
  [ "$serial" = stdio ] && { tail -n +1 -f "$log" & tail_pid=$!; }
  "${cmd[@]}" < /dev/null >> "$out" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ -n "$expect" ] && grep -qF -- "$expect" "$log"; then
      kill "$pid"; wait "$pid"; rc=0; break
    fi
    local el=$(( (${EPOCHREALTIME/./} - t0) / 1000000 ))
    if [ "$tmo" -gt 0 ] && [ "$el" -ge "$tmo" ]; then
      kill "$pid"; wait "$pid"
      { echo "qemu stand-in: timeout after ${tmo}s; last serial lines:"; tail -n 10 "$log"; } >> "$out"
      rc=124; break
    fi
    if [ "$el" -ge "$guard" ]; then
      kill -KILL "$pid"; wait "$pid"; echo "L2 guard: killed after ${guard}s" >> "$out"; rc=125; break
    fi
    sleep 0.2
  done
  if [ -z "$rc" ]; then
    wait "$pid"
    rc=$?
    if [ $rc = 0 ]; then
      # poweroff: "qemu_system_shutdown_request reason=6" (guest-shutdown);
      # a guest reset with -no-reboot ends QEMU without that event
      grep -q 'qemu_system_shutdown_request reason=6' "$trace" || rc=3
    else
      rc=1
    fi
  fi
  [ -n "$tail_pid" ] && { sleep 0.3; kill "$tail_pid" 2>/dev/null; wait "$tail_pid" 2>/dev/null; }
  rm -f "$trace"
  case $serial in file=*) ;; *) rm -f "$log" ;; esac
  return "$rc"
}
