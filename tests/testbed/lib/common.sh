# shellcheck shell=bash
# Shared helpers of the testbed harness; sourced by ../testbed.
# Everything here only defines variables and functions.

TB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)     # tests/testbed
REPO_ROOT=$(cd "$TB_DIR/../.." && pwd)
CACHE=${TESTBED_CACHE:-$REPO_ROOT/target/testbed}
LOCK=$CACHE/testbed.lock

# Debian suites the artefacts come from (see lib/fetch.sh).
# shellcheck disable=SC2034  # used by lib/fetch.sh
{
  BACKPORTS=${TESTBED_BACKPORTS_SUITE:-bookworm-backports}
  BASE_SUITE=${TESTBED_BASE_SUITE:-bookworm}
}

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 2; }

# Wall-clock seconds since the epoch with centisecond precision (bash >= 5).
now() { printf '%s' "${EPOCHREALTIME}"; }
elapsed() { # START -> "12.34"
  local s=${1/./} e=${EPOCHREALTIME/./}
  printf '%d.%02d' $(( (e - s) / 1000000 )) $(( (e - s) / 10000 % 100 ))
}

# Does this host have hardware-assisted KVM good enough to boot real guests?
# True when /dev/kvm exists and the loaded KVM vendor module is kvm_intel or
# kvm_amd (kvm_pvm, the flavour on our build machines, only emulates: ~1 MIPS).
# TESTBED_DIRECT=1 forces yes, TESTBED_DIRECT=0 forces no.
have_hw_kvm() {
  case ${TESTBED_DIRECT:-} in
    1) return 0 ;;
    0) return 1 ;;
  esac
  [ -c /dev/kvm ] || return 1
  [ -d /sys/module/kvm_pvm ] && return 1
  [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]
}

# Absolute path of the tessera binary: TESSERA_BIN (relative to the repo root
# unless absolute), else target/release/tessera if present, else
# target/debug/tessera.  Prints nothing and fails if it does not exist.
tessera_bin() {
  local b=${TESSERA_BIN:-}
  if [ -z "$b" ]; then
    if [ -x "$REPO_ROOT/target/release/tessera" ]; then b=target/release/tessera
    else b=target/debug/tessera; fi
  fi
  case $b in /*) ;; *) b=$REPO_ROOT/$b ;; esac
  [ -x "$b" ] || return 1
  printf '%s\n' "$b"
}

# Print the lock file (artefact versions) with a header.
print_lock() {
  if [ -f "$LOCK" ]; then
    echo "---- testbed artefacts ($LOCK) ----"
    cat "$LOCK"
    echo "----"
  else
    echo "testbed: no lock file at $LOCK (run: tests/testbed/testbed fetch)"
  fi
}

# lock_get KEY -> value from the lock file ("key value" lines)
lock_get() { [ -f "$LOCK" ] && awk -v k="$1" '$1 == k { print $2; exit }' "$LOCK"; }
