# shellcheck shell=bash
# `testbed fetch`: every artefact comes from Debian packages.
#
#   L0 QEMU     qemu-system-x86 from bookworm-backports (QEMU 10; installed
#               with apt, needs root; the backports apt source is added to
#               /etc/apt/sources.list.d if apt does not know it yet)
#   L1 kernel   the package that bookworm-backports' linux-image-amd64
#               metapackage depends on (6.12 generic), `apt-get download` +
#               `dpkg -x`, never installed
#   L2 kernel   the package that bookworm's linux-image-cloud-amd64
#               metapackage depends on (6.1 cloud), downloaded the same way
#   busybox     busybox-static (static /bin/busybox for both initramfs images)
#   ovmf        ovmf (UEFI firmware files for L2 guests)
#   gnu-efi     gnu-efi (crt0, linker script, libefi: builds the test EFI
#               application; downloaded, never installed)
#
# Versions are resolved by asking apt once and written to $CACHE/testbed.lock;
# later runs reuse the lock and the cached files and do nothing expensive.
# `fetch --refresh` runs apt-get update and resolves again.
#
# Cache layout ($CACHE, default <repo>/target/testbed, env TESTBED_CACHE):
#   testbed.lock                 role package version suite
#   l1/vmlinuz l1/config l1/modules/*.ko l1/modules.order l1/initrd.gz
#   l1/qemu-bql-shim.so
#   l2/vmlinuz l2/config l2/modules/*.ko l2/modules.order
#   l2/initrd.gz (base L2 image, see l2/init.sh)
#   l2pt/vmlinuz l2pt/config l2pt/modules/*.ko l2pt/modules.order l2pt/initrd.gz
#                                the L2 passthrough guest: the L1 kernel, its
#                                igbvf + nvme, tessera_edu.ko (l2/edu/, built
#                                here against Debian's headers: l2pt/edu/)
#   pkg/busybox                  static busybox
#   efi/tessera-efi-app.efi      the EFI application of the ovmf-efi-app boot
#                                test (l2/efi/), built here with gnu-efi
#   ovmf/                        OVMF_CODE_4M.fd OVMF_VARS_4M.fd OVMF.fd ...
#   logs/                        kept L1 job directories (console logs)

# Modules L1 loads (dependencies are resolved from the modules themselves):
# 9p + overlay for the host root, KVM (AMD: `-cpu max` under TCG is an
# AMD-flavoured CPU with SVM), VFIO, igb (SR-IOV PF) and igbvf.
L1_MODS=${TESTBED_L1_MODS:-"9p 9pnet_virtio overlay kvm_amd vfio vfio_iommu_type1 vfio_pci igb igbvf tun"}
# Modules the L2 guest loads (efivarfs: the UEFI variable tests).
L2_MODS=${TESTBED_L2_MODS:-efivarfs}
# Modules of the L2 passthrough guest ($CACHE/l2pt, the L1 kernel), to which
# tessera_edu (l2/edu/) is added.
L2PT_MODS=${TESTBED_L2PT_MODS:-"igbvf nvme virtio_blk virtio_rng virtio_net"}
# Bump when build_edu_module's recipe changes in a way that changes the module.
EDU_RECIPE=1
# Debian packages build_edu_module needs (gcc-12: Debian's 6.12 kernels are
# built with it; the linux-kbuild package's tools are linked statically).
EDU_BUILD_DEPS="make gcc-12 binutils"

is_root() { [ "$(id -u)" = 0 ]; }

need_root() { # WHAT
  is_root && return 0
  die "$1 needs root (apt). Run 'tests/testbed/testbed fetch' as root once, or do it by hand:
  add a '$BACKPORTS' apt source, apt-get update, apt-get install -t $BACKPORTS qemu-system-x86"
}

has_backports() {
  apt-cache policy 2>/dev/null | grep -q "n=$BACKPORTS,"
}

ensure_backports() {
  has_backports && return 0
  need_root "adding the $BACKPORTS apt source"
  local f=/etc/apt/sources.list.d/tessera-testbed-backports.sources
  log "adding the $BACKPORTS apt source: $f"
  cat > "$f" <<EOF
# Added by tessera tests/testbed/testbed fetch (L0 QEMU 10 and the L1 kernel).
Types: deb
URIs: http://deb.debian.org/debian
Suites: $BACKPORTS
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -q >&2 || die "apt-get update failed"
  has_backports || die "apt still does not know $BACKPORTS after adding $f"
}

# Highest version of PKG available from SUITE (exact suite name).
suite_version() { # PKG SUITE
  apt-cache madison "$1" 2>/dev/null |
    awk -F' [|] ' -v s=" $2/" 'index($3, s) { gsub(/ /, "", $2); print $2 }' |
    sort -V -r | head -1
}
# apt's candidate version of PKG (default pin priorities: not backports).
candidate_version() {
  apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }'
}
# The first linux-image-* dependency of metapackage PKG at VERSION: "name version"
meta_dep() { # PKG VERSION
  apt-cache show "$1=$2" 2>/dev/null |
    awk -F': ' '$1 == "Depends" { print $2; exit }' | tr ',' '\n' |
    sed -n 's/^ *\(linux-image-[^ ]*\) *(= *\([^)]*\)).*/\1 \2/p' | head -1
}

# resolve_versions: ask apt, write $LOCK.new
resolve_versions() {
  local q l1meta l1 l2meta l2 bb ovmf
  if is_root; then
    ensure_backports
    log "apt-get update"
    apt-get update -q >/dev/null 2>&1 || log "warning: apt-get update failed; using the lists apt has"
  else
    has_backports || need_root "adding the $BACKPORTS apt source"
  fi
  q=$(suite_version qemu-system-x86 "$BACKPORTS")
  [ -n "$q" ] || die "apt has no qemu-system-x86 in $BACKPORTS"
  l1meta=$(suite_version linux-image-amd64 "$BACKPORTS")
  [ -n "$l1meta" ] || die "apt has no linux-image-amd64 in $BACKPORTS"
  l1=$(meta_dep linux-image-amd64 "$l1meta")
  [ -n "$l1" ] || die "cannot read the kernel dependency of linux-image-amd64=$l1meta"
  l2meta=$(candidate_version linux-image-cloud-amd64)
  { [ -n "$l2meta" ] && [ "$l2meta" != "(none)" ]; } || die "apt has no linux-image-cloud-amd64"
  l2=$(meta_dep linux-image-cloud-amd64 "$l2meta")
  [ -n "$l2" ] || die "cannot read the kernel dependency of linux-image-cloud-amd64=$l2meta"
  bb=$(candidate_version busybox-static)
  ovmf=$(candidate_version ovmf)
  gnuefi=$(candidate_version gnu-efi)
  { [ -n "$bb" ] && [ -n "$ovmf" ] && [ -n "$gnuefi" ]; } || die "apt has no busybox-static, ovmf or gnu-efi"
  {
    echo "# tessera testbed artefacts: role package version (from Debian; resolved $(date -u +%Y-%m-%dT%H:%MZ))"
    echo "l0-qemu qemu-system-x86 $q $BACKPORTS"
    echo "l1-kernel $l1 $BACKPORTS (linux-image-amd64 $l1meta)"
    echo "l2-kernel $l2 $BASE_SUITE (linux-image-cloud-amd64 $l2meta)"
    echo "busybox busybox-static $bb $BASE_SUITE"
    echo "ovmf ovmf $ovmf $BASE_SUITE"
    echo "gnu-efi gnu-efi $gnuefi $BASE_SUITE"
  } > "$LOCK.new"
}

lock_field() { # FILE ROLE N
  awk -v r="$2" -v n="$3" '$1 == r { print $n; exit }' "$1"
}

# Install the locked QEMU version unless it is there already.
ensure_qemu() { # LOCKFILE
  local want have
  want=$(lock_field "$1" l0-qemu 3)
  have=$(dpkg-query -W -f '${Version}' qemu-system-x86 2>/dev/null || true)
  if [ "$have" = "$want" ] && command -v qemu-system-x86_64 >/dev/null; then
    return 0
  fi
  if ! is_root && [ -n "$have" ] && command -v qemu-system-x86_64 >/dev/null; then
    log "warning: qemu-system-x86 $have is installed, the lock says $want; not root, so using it"
    return 0
  fi
  need_root "installing qemu-system-x86 $want (have: ${have:-none})"
  ensure_backports
  log "installing qemu-system-x86=$want from $BACKPORTS (replaces ${have:-nothing})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t "$BACKPORTS" "qemu-system-x86=$want" >&2 ||
    { apt-get update -q >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t "$BACKPORTS" "qemu-system-x86=$want" >&2; } ||
    die "apt-get install qemu-system-x86=$want failed"
}

# Download PKG=VER and extract it into DIR (fresh).
fetch_deb() { # PKG VER DIR
  local dl
  dl=$(mktemp -d "$CACHE/dl.XXXXXX")
  chmod 0777 "$dl"    # apt's _apt sandbox user writes the .deb here
  log "downloading $1=$2"
  (cd "$dl" && timeout 900 apt-get download -q "$1=$2" >&2) || { rm -rf "$dl"; die "apt-get download $1=$2 failed"; }
  rm -rf "$3" && mkdir -p "$3"
  dpkg -x "$dl"/*.deb "$3" || { rm -rf "$dl"; die "dpkg -x $1 failed"; }
  rm -rf "$dl"
}

# stamp DIR "pkg ver" -> true if DIR/.version already says so
stamped() { [ -f "$1/.version" ] && [ "$(cat "$1/.version")" = "$2" ]; }

# fetch_kernel ROLE PKG VER MODULES...: the kernel image, its config and
# the named modules (with their dependencies, decompressed, in load order)
# into $CACHE/ROLE.
fetch_kernel() {
  local role=$1 pkg=$2 ver=$3 d=$CACHE/$1 x kver
  shift 3
  # the stamp names the module list too: a changed list refetches
  stamped "$d" "$pkg $ver $*" && [ -f "$d/modules.order" ] && return 0
  x=$CACHE/x-$role
  fetch_deb "$pkg" "$ver" "$x"
  kver=$(ls "$x/lib/modules")
  mkdir -p "$d"
  rm -rf "$d/modules"
  cp "$x/boot/vmlinuz-$kver" "$d/vmlinuz"
  cp "$x/boot/config-$kver" "$d/config"
  python3 "$TB_DIR/l1/kmod-resolve.py" "$x/lib/modules/$kver" "$d/modules" "$@" > "$d/modules.order" ||
    die "resolving $role modules failed"
  rm -rf "$x" "$d/initrd.gz"
  echo "$pkg $ver $*" > "$d/.version"
  log "$role kernel $kver, modules: $(tr '\n' ' ' < "$d/modules.order")"
}


fetch_busybox() { # VER
  local d=$CACHE/pkg x
  stamped "$d" "busybox-static $1" && return 0
  x=$CACHE/x-bb
  fetch_deb busybox-static "$1" "$x"
  mkdir -p "$d"
  cp "$x/bin/busybox" "$d/busybox"
  rm -rf "$x"
  echo "busybox-static $1" > "$d/.version"
}

fetch_ovmf() { # VER
  local d=$CACHE/ovmf x
  stamped "$d" "ovmf $1" && return 0
  x=$CACHE/x-ovmf
  fetch_deb ovmf "$1" "$x"
  rm -rf "$d" && mkdir -p "$d"
  # pflash pair (CODE read-only + a copy of VARS per VM) and the one-image
  # variant for -bios (nested, -bios booted ~35 s faster than pflash)
  cp "$x"/usr/share/OVMF/OVMF_CODE_4M.fd "$x"/usr/share/OVMF/OVMF_VARS_4M.fd "$d/"
  [ -f "$x/usr/share/ovmf/OVMF.fd" ] && cp -L "$x/usr/share/ovmf/OVMF.fd" "$d/OVMF.fd"
  rm -rf "$x"
  echo "ovmf $1" > "$d/.version"
}

# pack_initramfs SRCDIR OUT.gz  (newc cpio by the cached static busybox, root-owned)
pack_initramfs() {
  local bb=$CACHE/pkg/busybox
  (cd "$1" && find . | LC_ALL=C sort | "$bb" cpio -o -H newc -R 0:0 2>/dev/null | gzip -1 -n) > "$2.tmp" &&
    mv "$2.tmp" "$2"
}

# Content hash of the given files, to rebuild derived images only when an
# input changed.
inputs_hash() { cat "$@" | sha256sum | cut -c1-16; }

build_shim() {
  local src=$TB_DIR/l1/qemu-bql-shim.c out=$CACHE/l1/qemu-bql-shim.so
  [ -f "$out" ] && [ "$out" -nt "$src" ] && return 0
  cc -shared -fPIC -O2 -o "$out" "$src" -ldl || die "compiling $src failed (needs a C compiler)"
}

# build_initrd ROLE [INIT [EXTRA-INPUT...]]: busybox, ROLE's modules and INIT
# (default ROLE/init.sh) as /init, packed into $CACHE/ROLE/initrd.gz; rebuilt
# only when one of its inputs (and the EXTRA-INPUT files) changed.
build_initrd() {
  local role=$1 init=${2:-$TB_DIR/$1/init.sh} d=$CACHE/$1 h t
  shift $(( $# > 1 ? 2 : 1 ))
  h=$(inputs_hash "$init" "$d/modules.order" "$d/.version" "$CACHE/pkg/.version" "$@")
  [ -f "$d/initrd.gz" ] && [ "$(cat "$d/initrd.hash" 2>/dev/null)" = "$h" ] && return 0
  t=$(mktemp -d "$CACHE/ird.XXXXXX")
  mkdir -p "$t/bin" "$t/lib/modules"
  cp "$CACHE/pkg/busybox" "$t/bin/busybox"
  cp "$d"/modules/*.ko "$t/lib/modules/"
  cp "$d/modules.order" "$t/modules.order"
  install -m 0755 "$init" "$t/init"
  pack_initramfs "$t" "$d/initrd.gz"
  rm -rf "$t"
  echo "$h" > "$d/initrd.hash"
  log "built $d/initrd.gz ($(du -k "$d/initrd.gz" | cut -f1) KiB)"
}

missing_debs() { # PKG...: the ones not installed
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || printf '%s ' "$p"
  done
}

# build_edu_module LOCKFILE: tessera_edu.ko (l2/edu/) for the l1-kernel
# package of LOCKFILE, built against that kernel's Debian headers
# (linux-headers-<abi>-<flavour>, linux-headers-<abi>-common and
# linux-kbuild-<abi> at the kernel's version: `apt-get download` + `dpkg -x`
# into a scratch directory, never installed; no running kernel of that
# version needed), into $CACHE/l2pt/edu/ (stamped with the packages, a hash
# of the sources and EDU_RECIPE; build.log kept).
build_edu_module() {
  local pkg ver kver abi key d=$CACHE/l2pt/edu src=$TB_DIR/l2/edu t h miss p
  pkg=$(lock_field "$1" l1-kernel 2)
  ver=$(lock_field "$1" l1-kernel 3)
  kver=${pkg#linux-image-}   # 6.12.95+deb12-amd64
  abi=${kver%-*}             # 6.12.95+deb12
  case $pkg in linux-image-*-*) ;; *) die "cannot derive the headers packages from the l1-kernel package '$pkg' in $1 (want linux-image-ABI-FLAVOUR; run testbed fetch --refresh)" ;; esac
  local -a debs=("linux-headers-$kver" "linux-headers-$abi-common" "linux-kbuild-$abi")
  key="${debs[*]} $ver src $(inputs_hash "$src/tessera_edu.c" "$src/Kbuild") recipe $EDU_RECIPE"
  stamped "$d" "$key" && [ -f "$d/tessera_edu.ko" ] && return 0
  # shellcheck disable=SC2086  # word list
  miss=$(missing_debs $EDU_BUILD_DEPS)
  if [ -n "$miss" ]; then
    is_root || die "building tessera_edu.ko needs these Debian packages: $miss(install them as root: apt-get install $miss)"
    log "installing the module build dependencies: $miss"
    # shellcheck disable=SC2086  # word list
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $miss >&2 ||
      die "apt-get install $miss failed (try apt-get update first)"
  fi
  mkdir -p "$d"
  t=$(mktemp -d "$CACHE/l2pt/build.XXXXXX")
  chmod 0777 "$t"    # apt's _apt sandbox user writes the .debs here
  log "downloading ${debs[*]} ($ver) to build tessera_edu.ko"
  (cd "$t" && timeout 900 apt-get download -q "${debs[@]/%/=$ver}" >&2) ||
    { rm -rf "$t"; die "apt-get download ${debs[*]/%/=$ver} failed (is the l1-kernel version in $1 still in $BACKPORTS? testbed fetch --refresh resolves it again)"; }
  for p in "$t"/*.deb; do
    dpkg -x "$p" "$t/x" || { rm -rf "$t"; die "dpkg -x $p failed"; }
  done
  h=$t/x/usr/src/linux-headers-$kver
  # The flavour's Makefile includes the common one by its installed path;
  # scripts and tools are relative links into linux-kbuild, valid here too.
  sed -i "s|^include /usr/src/|include $t/x/usr/src/|" "$h/Makefile"
  { [ -x "$h/scripts/basic/fixdep" ] && [ -x "$h/tools/objtool/objtool" ]; } ||
    { rm -rf "$t"; die "$h: scripts/ or tools/ do not lead to linux-kbuild-$abi's prebuilt tools; check the packages' layout (dpkg -c)"; }
  # Without vmlinux kbuild skips the module's BTF (no pahole needed).
  rm -f "$h/vmlinux"
  cp "$src/tessera_edu.c" "$src/Kbuild" "$t/"
  if ! nice -n 10 make -C "$h" M="$t" CC=gcc-12 -j1 modules > "$d/build.log" 2>&1; then
    tail -n 20 "$d/build.log" >&2
    rm -rf "$t"
    die "building tessera_edu.ko against $h failed (log: $d/build.log); fix $src/tessera_edu.c, or check gcc-12 and make"
  fi
  strip --strip-debug -o "$d/tessera_edu.ko" "$t/tessera_edu.ko" || { rm -rf "$t"; die "strip tessera_edu.ko failed"; }
  rm -rf "$t"
  echo "$key" > "$d/.version"
  log "built $d/tessera_edu.ko for $kver"
}

# build_efi_app LOCKFILE: l2/efi/tessera_efi_app.c linked with gnu-efi (the
# version of LOCKFILE; a lock written before gnu-efi was in it gets the line
# added) into $CACHE/efi/tessera-efi-app.efi: a PE32+ x86-64 EFI application,
# as gnu-efi's own Makefiles build one (-fpic, MS ABI, self-relocating crt0,
# objcopy to efi-app-x86_64).
build_efi_app() {
  local ver d=$CACHE/efi src=$TB_DIR/l2/efi/tessera_efi_app.c key t x
  ver=$(lock_field "$1" gnu-efi 3)
  if [ -z "$ver" ]; then
    ver=$(candidate_version gnu-efi)
    [ -n "$ver" ] || die "apt has no gnu-efi (needed for the EFI application of the boot tests)"
    echo "gnu-efi gnu-efi $ver $BASE_SUITE" >> "$1"
  fi
  key="gnu-efi $ver src $(inputs_hash "$src") recipe 1"
  stamped "$d" "$key" && [ -f "$d/tessera-efi-app.efi" ] && return 0
  t=$(mktemp -d "$CACHE/efi-build.XXXXXX")
  x=$t/x
  fetch_deb gnu-efi "$ver" "$x"
  local inc=$x/usr/include/efi lib=$x/usr/lib
  if ! { gcc -I"$inc" -I"$inc/x86_64" -I"$inc/protocol" -fpic -ffreestanding -fno-stack-protector \
           -fno-stack-check -fshort-wchar -mno-red-zone -maccumulate-outgoing-args -DGNU_EFI_USE_MS_ABI \
           -Wall -Wextra -Werror -O2 -c "$src" -o "$t/app.o" &&
         ld -shared -Bsymbolic -nostdlib -znocombreloc -T "$lib/elf_x86_64_efi.lds" "$lib/crt0-efi-x86_64.o" \
           "$t/app.o" -L"$lib" -lefi -lgnuefi -o "$t/app.so" &&
         objcopy -j .text -j .sdata -j .data -j .rodata -j .dynamic -j .dynsym -j .rel -j .rela -j '.rel.*' \
           -j '.rela.*' -j .reloc --target efi-app-x86_64 --subsystem=10 "$t/app.so" "$t/app.efi"; } 2> "$t/log"; then
    cat "$t/log" >&2
    rm -rf "$t"
    die "building the EFI application from $src with gnu-efi $ver failed (needs gcc and binutils)"
  fi
  mkdir -p "$d"
  mv "$t/app.efi" "$d/tessera-efi-app.efi"
  rm -rf "$t"
  echo "$key" > "$d/.version"
  log "built $d/tessera-efi-app.efi (gnu-efi $ver)"
}

# fetch_l2pt LOCKFILE: the L2 passthrough guest in $CACHE/l2pt: the L1 kernel
# package (fetch_kernel with L2PT_MODS), tessera_edu.ko added last to its
# modules, and an initramfs with l2/init.sh as /init.
fetch_l2pt() {
  local d=$CACHE/l2pt
  mkdir -p "$d"
  # fetch_kernel's stamp is the package only: a changed module list refetches
  [ "$(cat "$d/modules.list" 2>/dev/null)" = "$L2PT_MODS" ] || rm -f "$d/.version"
  # shellcheck disable=SC2086  # word list
  fetch_kernel l2pt "$(lock_field "$1" l1-kernel 2)" "$(lock_field "$1" l1-kernel 3)" $L2PT_MODS
  echo "$L2PT_MODS" > "$d/modules.list"
  build_edu_module "$1"
  cmp -s "$d/edu/tessera_edu.ko" "$d/modules/tessera_edu.ko" || cp "$d/edu/tessera_edu.ko" "$d/modules/"
  grep -qx tessera_edu "$d/modules.order" || echo tessera_edu >> "$d/modules.order"
  build_initrd l2pt "$TB_DIR/l2/init.sh" "$d/modules/tessera_edu.ko"
}

# cmd_fetch [--refresh]
cmd_fetch() {
  local refresh=0 lockfile
  case ${1:-} in
    --refresh) refresh=1 ;;
    "") ;;
    *) die "usage: testbed fetch [--refresh]" ;;
  esac
  mkdir -p "$CACHE"
  lockfile=$LOCK
  if [ $refresh = 1 ] || [ ! -f "$LOCK" ]; then
    resolve_versions
    lockfile=$LOCK.new
  fi
  ensure_qemu "$lockfile"
  fetch_busybox "$(lock_field "$lockfile" busybox 3)"
  # shellcheck disable=SC2086  # the module lists are word lists
  fetch_kernel l1 "$(lock_field "$lockfile" l1-kernel 2)" "$(lock_field "$lockfile" l1-kernel 3)" $L1_MODS
  # shellcheck disable=SC2086
  fetch_kernel l2 "$(lock_field "$lockfile" l2-kernel 2)" "$(lock_field "$lockfile" l2-kernel 3)" $L2_MODS
  fetch_ovmf "$(lock_field "$lockfile" ovmf 3)"
  l1k_fetch "$lockfile"   # TESTBED_L1=iommufd only (lib/l1-kernel.sh)
  fetch_l2pt "$lockfile"
  build_efi_app "$lockfile"
  [ "$lockfile" = "$LOCK" ] || mv "$LOCK.new" "$LOCK"
  build_shim
  build_initrd l1
  build_initrd l2
  l1k_initrd
  log "artefacts ready in $CACHE"
  print_lock
}

# Used by run/boot-tests/bench-boot: fetch only if something is missing.
ensure_artifacts() {
  local f
  for f in "$LOCK" "$CACHE/l1/vmlinuz" "$CACHE/l1/modules.order" "$CACHE/l2/vmlinuz" "$CACHE/l2/modules.order" \
           "$CACHE/pkg/busybox" "$CACHE/l1/qemu-bql-shim.so"; do
    [ -e "$f" ] || { log "missing $f: running fetch"; cmd_fetch "" >/dev/null; return; }
  done
  command -v "${TESTBED_QEMU:-qemu-system-x86_64}" >/dev/null ||
    { log "no L0 QEMU: running fetch"; cmd_fetch "" >/dev/null; return; }
  build_shim
  build_initrd l1
  build_initrd l2
  fetch_l2pt "$LOCK"
  build_efi_app "$LOCK"
  l1k_ensure   # TESTBED_L1=iommufd only (lib/l1-kernel.sh)
}
