# shellcheck shell=bash
# The L1 kernel modes (TESTBED_L1), sourced by ../testbed after fetch.sh.
#
#   TESTBED_L1=debian   (default) Debian's bookworm-backports 6.12 generic
#                       kernel, downloaded by lib/fetch.sh; L1 insmods its
#                       modules ($CACHE/l1).
#   TESTBED_L1=iommufd  a kernel built here from Debian's linux-source-6.12
#                       (bookworm-backports) with x86_64_defconfig plus
#                       l1/iommufd.config: IOMMUFD and the VFIO device cdev
#                       (/dev/iommu, /dev/vfio/devices/vfioN) next to the
#                       VFIO container/group API, and everything L1 needs
#                       built in, so its initramfs loads no modules
#                       ($CACHE/l1-iommufd).  Debian's kernels have no
#                       CONFIG_IOMMUFD.
#
# The iommufd kernel is built by `testbed fetch` (and by run/boot-tests/...
# when it is missing or stale) only in that mode: bzImage only, at
# `nice -n 19 ionice -c3`, about 17 min on our 2 cores.  The source package
# version goes in the lock file (role l1-iommufd); the cache key in
# $CACHE/l1-iommufd/.version is that version plus a hash of
# l1/iommufd.config and L1K_RECIPE, so editing the fragment rebuilds.
#
#   $CACHE/l1-iommufd/{vmlinuz,config,.version,build.log,build-time,initrd.gz}
#
# Knobs: TESTBED_L1_JOBS (make -j, default nproc), TESTBED_L1_KEEP_BUILD=1
# (keep the source/build tree $CACHE/l1-iommufd-build for a quick incremental
# rebuild after a fragment change; ~2.5 GB).
#
# Hooks: cmd_fetch calls l1k_fetch LOCKFILE and l1k_initrd; ensure_artifacts
# calls l1k_ensure; cmd_run boots "$(l1_kernel_dir)"/{vmlinuz,initrd.gz}.

TB_L1=${TESTBED_L1:-debian}
L1K_PKG=linux-source-6.12
L1K_FRAG=$TB_DIR/l1/iommufd.config
L1K_DIR=$CACHE/l1-iommufd
L1K_BUILD=$CACHE/l1-iommufd-build
# Bump when the build recipe below changes in a way that changes the kernel.
L1K_RECIPE=1
# Debian packages the kernel build needs (bzImage of a defconfig-based
# config without BTF): installed by fetch when root.
L1K_BUILD_DEPS="bc bison flex libelf-dev libssl-dev make gcc libc6-dev xz-utils"

# True in iommufd mode; dies on an unknown mode (call it outside $(...)).
l1k_iommufd() {
  case $TB_L1 in
    iommufd) return 0 ;;
    debian) return 1 ;;
    *) die "TESTBED_L1 must be debian (default) or iommufd, not '$TB_L1'" ;;
  esac
}

# The directory with the vmlinuz and initrd.gz that L1 boots.
l1_kernel_dir() {
  if l1k_iommufd; then printf '%s\n' "$L1K_DIR"; else printf '%s\n' "$CACHE/l1"; fi
}

# l1k_check_config FRAGMENT CONFIG: every `CONFIG_X=...` line of FRAGMENT
# must be in CONFIG verbatim, every `# CONFIG_X is not set` (or CONFIG_X=n)
# must be unset there.  Prints each mismatch; fails if there is one.
l1k_check_config() {
  awk '
    FNR == NR {
      if ($0 ~ /^CONFIG_[A-Za-z0-9_]+=n$/) { sub(/=n$/, ""); want[$0] = ""; n++ }
      else if ($0 ~ /^CONFIG_[A-Za-z0-9_]+=/) { k = $0; sub(/=.*/, "", k); want[k] = $0; n++ }
      else if ($0 ~ /^# CONFIG_[A-Za-z0-9_]+ is not set$/) { want[$2] = ""; n++ }
      next
    }
    /^CONFIG_/ { k = $0; sub(/=.*/, "", k); have[k] = $0 }
    END {
      for (k in want) {
        got = (k in have) ? have[k] : "not set"
        if (want[k] == "" && got != "not set") { print "  " k ": wanted not set, got " got; bad++ }
        else if (want[k] != "" && got != want[k]) { print "  " k ": wanted " want[k] ", got " got; bad++ }
      }
      printf "%d options checked, %d wrong\n", n, bad
      exit bad > 0
    }' "$1" "$2"
}

l1k_missing_deps() {
  local p
  for p in $L1K_BUILD_DEPS; do
    [ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || printf '%s ' "$p"
  done
}

l1k_build_deps() {
  local miss
  miss=$(l1k_missing_deps)
  [ -z "$miss" ] && return 0
  is_root || die "building the iommufd L1 kernel needs these Debian packages: $miss(install them as root: apt-get install $miss)"
  log "installing the kernel build dependencies: $miss"
  # shellcheck disable=SC2086  # word list
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $miss >&2 ||
    { apt-get update -q >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $miss >&2; } ||
    die "apt-get install $miss failed"
}

# The cache key of the built kernel for source version VER.
l1k_key() { printf '%s %s config %s recipe %s\n' "$L1K_PKG" "$1" "$(inputs_hash "$L1K_FRAG")" "$L1K_RECIPE"; }

# l1k_build VER: build bzImage from linux-source-6.12=VER into $L1K_DIR,
# unless the cache already holds that build.  One build at a time per cache
# (flock): a second testbed waits for the first and then uses its kernel.
l1k_build() {
  local key lk rc
  key=$(l1k_key "$1")
  stamped "$L1K_DIR" "$key" && [ -f "$L1K_DIR/vmlinuz" ] && return 0
  exec {lk}> "$CACHE/l1-iommufd.lock"
  if ! flock -n "$lk"; then
    log "another testbed is building the iommufd L1 kernel in $CACHE; waiting for it"
    flock "$lk"
  fi
  l1k_build_locked "$1" "$key"
  rc=$?
  exec {lk}>&-
  return "$rc"
}

l1k_build_locked() { # VER KEY
  local ver=$1 key=$2 src blog t0 secs jobs
  local -a lowprio=(nice -n 19)
  stamped "$L1K_DIR" "$key" && [ -f "$L1K_DIR/vmlinuz" ] && return 0
  l1k_build_deps
  command -v ionice >/dev/null && lowprio+=(ionice -c3)
  jobs=${TESTBED_L1_JOBS:-$(nproc)}
  mkdir -p "$L1K_DIR"
  blog=$L1K_DIR/build.log
  : > "$blog"
  log "building the iommufd L1 kernel: $L1K_PKG $ver, x86_64_defconfig + l1/iommufd.config, bzImage, make -j$jobs at low priority (about 17 min on 2 cores; log: $blog)"
  t0=$(now)
  src=$L1K_BUILD/$L1K_PKG
  if [ "$(cat "$L1K_BUILD/.source" 2>/dev/null)" != "$L1K_PKG $ver" ] || [ ! -f "$src/Makefile" ]; then
    rm -rf "$L1K_BUILD"
    mkdir -p "$L1K_BUILD"
    fetch_deb "$L1K_PKG" "$ver" "$L1K_BUILD/deb"
    log "unpacking $L1K_PKG.tar.xz"
    "${lowprio[@]}" tar -xJf "$L1K_BUILD/deb/usr/src/$L1K_PKG.tar.xz" -C "$L1K_BUILD" ||
      die "unpacking $L1K_PKG.tar.xz failed"
    rm -rf "$L1K_BUILD/deb"
    [ -f "$src/Makefile" ] || die "$L1K_PKG.tar.xz did not unpack to $src"
    echo "$L1K_PKG $ver" > "$L1K_BUILD/.source"
  fi
  {
    make -C "$src" x86_64_defconfig &&
      (cd "$src" && scripts/kconfig/merge_config.sh -m .config "$L1K_FRAG") &&
      make -C "$src" olddefconfig
  } >> "$blog" 2>&1 || { tail -n 30 "$blog" >&2; die "configuring the iommufd L1 kernel failed (log: $blog)"; }
  log "checking .config against l1/iommufd.config"
  l1k_check_config "$L1K_FRAG" "$src/.config" >&2 ||
    die "the iommufd L1 kernel config lacks options of l1/iommufd.config (Kconfig dropped them: missing dependencies?); see above, $src/.config"
  "${lowprio[@]}" make -C "$src" -j"$jobs" KBUILD_BUILD_USER=tessera KBUILD_BUILD_HOST=testbed bzImage >> "$blog" 2>&1 ||
    { tail -n 40 "$blog" >&2; die "building the iommufd L1 kernel failed (log: $blog)"; }
  if ! { cp "$src/arch/x86/boot/bzImage" "$L1K_DIR/vmlinuz.tmp" && mv "$L1K_DIR/vmlinuz.tmp" "$L1K_DIR/vmlinuz" &&
         cp "$src/.config" "$L1K_DIR/config"; }; then
    die "copying the iommufd L1 kernel failed"
  fi
  secs=$(elapsed "$t0")
  echo "$secs s, make -j$jobs, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)" > "$L1K_DIR/build-time"
  echo "$key" > "$L1K_DIR/.version"
  rm -f "$L1K_DIR/initrd.gz"
  [ "${TESTBED_L1_KEEP_BUILD:-0}" = 1 ] || rm -rf "$L1K_BUILD"
  log "iommufd L1 kernel built in ${secs}s: $L1K_DIR/vmlinuz ($(du -k "$L1K_DIR/vmlinuz" | cut -f1) KiB)"
}

# l1k_fetch LOCKFILE: in iommufd mode, put the source package version in the
# lock file (resolved from bookworm-backports if it is not there yet) and
# build the kernel unless cached.
l1k_fetch() {
  local ver
  l1k_iommufd || return 0
  ver=$(lock_field "$1" l1-iommufd 3)
  if [ -z "$ver" ]; then
    ver=$(suite_version "$L1K_PKG" "$BACKPORTS")
    [ -n "$ver" ] || die "apt has no $L1K_PKG in $BACKPORTS (needed for TESTBED_L1=iommufd)"
    echo "l1-iommufd $L1K_PKG $ver $BACKPORTS (built: x86_64_defconfig + l1/iommufd.config)" >> "$1"
  fi
  l1k_build "$ver"
}

# l1k_initrd: the iommufd L1's initramfs: busybox and l1/init.sh with an
# empty module list; rebuilt when an input changed.
l1k_initrd() {
  local d=$L1K_DIR h t
  l1k_iommufd || return 0
  h=$(inputs_hash "$TB_DIR/l1/init.sh" "$d/.version" "$CACHE/pkg/.version")
  [ -f "$d/initrd.gz" ] && [ "$(cat "$d/initrd.hash" 2>/dev/null)" = "$h" ] && return 0
  t=$(mktemp -d "$CACHE/ird.XXXXXX")
  mkdir -p "$t/bin"
  cp "$CACHE/pkg/busybox" "$t/bin/busybox"
  : > "$t/modules.order"
  install -m 0755 "$TB_DIR/l1/init.sh" "$t/init"
  pack_initramfs "$t" "$d/initrd.gz"
  rm -rf "$t"
  echo "$h" > "$d/initrd.hash"
  log "built $d/initrd.gz ($(du -k "$d/initrd.gz" | cut -f1) KiB, no modules)"
}

# ensure_artifacts' hook: build what the iommufd mode needs if it is missing.
l1k_ensure() {
  l1k_iommufd || return 0
  l1k_fetch "$LOCK"
  l1k_initrd
}
