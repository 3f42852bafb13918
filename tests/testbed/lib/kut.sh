# shellcheck shell=bash
# `testbed kvm-unit-tests`: kvm-unit-tests' x86_64 tests under tessera and
# QEMU in one L1 (l2/kvm-unit-tests.py), from the pinned source vendored in
# tests/kvm-unit-tests/ (a `git archive` of the upstream commit its name
# gives, with its LICENSE and COPYRIGHT), built here with Debian's gcc.
#
#   $CACHE/kut/<tarball name>/   the built tree (x86/*.flat), stamped
#
# KUT_TESTS="name,..." runs only those; KUT_TESTS=ci the subset tests/check
# runs (KUT_CI_TESTS).

KUT_TARBALL=$(find "$TB_DIR/../kvm-unit-tests" -maxdepth 1 -name 'kvm-unit-tests-*.tar.xz' 2>/dev/null | sort | head -1)
# The subset tests/check runs: quick ones that cover CPUID/MSRs, the APIC
# and interrupts, the PIT/TSC, SMP bring-up and the instruction emulator.
KUT_CI_TESTS=${KUT_CI_TESTS:-"smptest,smptest3,msr,tsc,setjmp,syscall,hypercall,idt_test,umip,rdpru"}

# build_kut: the built tree's path on stdout.
build_kut() {
  local name d t
  [ -n "$KUT_TARBALL" ] || die "no tests/kvm-unit-tests/kvm-unit-tests-*.tar.xz"
  name=$(basename "$KUT_TARBALL" .tar.xz)
  d=$CACHE/kut/$name
  if [ -f "$d/.built" ] && [ "$d/.built" -nt "$KUT_TARBALL" ]; then
    echo "$d"
    return 0
  fi
  rm -rf "$d" && mkdir -p "$CACHE/kut"
  t=$(mktemp -d "$CACHE/kut/build.XXXXXX")
  tar -xJf "$KUT_TARBALL" -C "$t" || die "unpacking $KUT_TARBALL failed"
  log "building $name (x86_64, multiboot .flat images)"
  if ! (cd "$t/kvm-unit-tests" && ./configure --arch=x86_64 && nice make -j"$(nproc)") > "$t/build.log" 2>&1; then
    tail -n 20 "$t/build.log" >&2
    die "building kvm-unit-tests failed (log: $t/build.log; needs gcc, make, binutils)"
  fi
  mv "$t/kvm-unit-tests" "$d"
  mv "$t/build.log" "$d/build.log"
  rm -rf "$t"
  touch "$d/.built"
  log "built $d ($(find "$d/x86" -name '*.flat' | wc -l) tests)"
  echo "$d"
}

cmd_kvm_unit_tests() {
  ensure_artifacts
  local b kut rc
  b=$(tessera_bin) || die "no tessera binary (build it with cargo build --release -p vmm, or set TESSERA_BIN)"
  export TESSERA_BIN=$b
  kut=$(build_kut) || exit 1
  log "kvm-unit-tests inside L1: tessera ($b) and QEMU ($(qemu-system-x86_64 --version | head -1))"
  local only=${KUT_TESTS:-}
  [ "$only" = ci ] && only=$KUT_CI_TESTS
  TB_NO_CLEAN=1 cmd_run python3 "$TB_DIR/l2/kvm-unit-tests.py" --kut "$kut" --logdir /run/testbed/kut --only "$only"
  rc=$?
  if [ "$rc" = 0 ] && [ "${TESTBED_KEEP:-0}" != 1 ]; then
    rm -rf "$TB_JOB"
  else
    log "logs kept in $TB_JOB"
  fi
  return "$rc"
}
