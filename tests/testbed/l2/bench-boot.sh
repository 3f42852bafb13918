#!/bin/bash
# Boot benchmark (not a test): tessera vs QEMU, same guest, in one L1 (or
# directly on a host with hardware KVM).
#
#   bench-boot.sh --cache DIR --logdir DIR
#
# For run i = 1..BENCH_N [3], in this order: tessera, QEMU -M microvm,
# QEMU -M q35 (both QEMUs -accel kvm -cpu host, SeaBIOS/qboot firmware,
# -kernel/-initrd direct boot), each with the same kernel ($CACHE/l2/vmlinuz),
# initramfs ($CACHE/l2/initrd.gz), command line, BENCH_MEM [256M] and
# BENCH_CPUS [1].  The guest's /init prints the marker and its facts, holds
# 1 s (tessera.hold=1) and powers off.
#
# Measured per run:
#   marker_s   wall time from starting the VMM process to reading the
#              TESSERA-L2-BOOT-OK line on its serial console (stdout)
#   total_s    wall time until the VMM process exited (includes the 1 s hold)
#   peak_rss   peak RSS of the VMM process: GNU time's %M (getrusage
#              ru_maxrss of the process; the VMM is exec'd, no wrapper left)
#   guest_mem  guest RAM the VMM has touched: sum of Rss over the VMM's
#              mappings at least half the guest memory size big (the guest
#              RAM mapping(s)), read from /proc/PID/smaps while the guest
#              holds (after it printed L2-MEM)
#   overhead   peak_rss - guest_mem: what the VMM itself costs
#   pre_kernel marker_s minus the guest's own uptime at the marker (its
#              clock starts with the kernel): VMM start plus firmware
#   first_entry  tessera only (--stats): VMM start to the first vCPU entry
#   exits      tessera only (--stats): exits by kind (pio, mmio, other)
#              and by device, printed per row after the table (the
#              per-device counts of each row's last run)
# The table shows medians and the tessera/QEMU ratios.  With
# TESTBED_L2_VMM=qemu the "tessera" rows are the QEMU q35 stand-in.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vmm.sh
. "$HERE/vmm.sh"

parse_l2_args "$@"
K=$CACHE/l2/vmlinuz
I=$CACHE/l2/initrd.gz
N=${BENCH_N:-3}
MEM=${BENCH_MEM:-256M}
CPUS=${BENCH_CPUS:-1}
TMO=${BENCH_TIMEOUT:-300}
CMDLINE="console=ttyS0 panic=-1 quiet tessera.hold=1"
MARKER=TESSERA-L2-BOOT-OK
mkdir -p "$LOGDIR"
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "bench-boot: needs GNU time at $TIME (Debian package 'time')"; exit 2; }

mem_kb() { # 256M / 1G / 512 (MiB) -> KiB
  case $1 in
    *G) echo $(( ${1%G} * 1024 * 1024 )) ;;
    *M) echo $(( ${1%M} * 1024 )) ;;
    *) echo $(( $1 * 1024 )) ;;
  esac
}
MEM_KB=$(mem_kb "$MEM")

OVMF_CODE=$CACHE/ovmf/OVMF_CODE_4M.fd
OVMF_TEMPLATE=$CACHE/ovmf/OVMF_VARS_4M.fd

variant_cmd() { # VARIANT RUN -> NUL-separated argv
  local -a q=(qemu-system-x86_64 -accel kvm -cpu host)
  # A fresh copy of the variable store per run, for both VMMs alike.
  local vars=$LOGDIR/vars-$1-$2.fd
  local -a common=(-m "$MEM" -smp "$CPUS" -nodefaults -no-user-config -display none -no-reboot
                   -serial stdio -kernel "$K" -initrd "$I" -append "$CMDLINE")
  case $1 in
    tessera)
      if [ "${TESTBED_L2_VMM:-tessera}" = tessera ]; then
        tessera_cmd --kernel "$K" --initrd "$I" --cmdline "$CMDLINE" --memory "$MEM" \
          --cpus "$CPUS" --serial stdio --timeout "$TMO" --stats
      else
        printf '%s\0' "${q[@]}" -M q35 "${common[@]}"
      fi ;;
    qemu-microvm) printf '%s\0' "${q[@]}" -M microvm "${common[@]}" ;;
    qemu-q35) printf '%s\0' "${q[@]}" -M q35 "${common[@]}" ;;
    tessera-ovmf)
      rm -f "$vars"
      tessera_cmd --firmware "$OVMF_CODE" --vars "$vars" --vars-template "$OVMF_TEMPLATE" \
        --kernel "$K" --initrd "$I" --cmdline "$CMDLINE" --memory "$MEM" \
        --cpus "$CPUS" --serial stdio --timeout "$TMO" --stats ;;
    qemu-q35-ovmf)
      cp "$OVMF_TEMPLATE" "$vars"
      printf '%s\0' "${q[@]}" -M q35 \
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE" \
        -drive "if=pflash,format=raw,unit=1,file=$vars" "${common[@]}" ;;
  esac
}

# Rss (KiB) of the mappings of PID that are >= half the guest memory.
guest_rss_kb() {
  awk -v min=$(( MEM_KB / 2 )) '
    /^Size:/ { size = $2 }
    /^Rss:/ { if (size >= min) sum += $2 }
    END { print sum + 0 }' "/proc/$1/smaps" 2>/dev/null
}

fmt_s() { printf '%d.%02d' $(( $1 / 1000000 )) $(( $1 / 10000 % 100 )); }

# measure VARIANT RUN -> appends "variant run marker_us total_us peak_kb
# guest_kb rc uptime_us first_entry_us exits pio mmio other" to $DATA (-1:
# not known) and the run's per-device lines to $DATA.dev
DATA=$LOGDIR/bench.data
: > "$DATA"
: > "$DATA.dev"
measure() {
  local v=$1 i=$2 log=$LOGDIR/bench-$1-$2.log pidf timef line pid="" marker=-1 guest=-1 rep="" t0 now
  local uptime=-1 first=-1 exits="-1 -1 -1 -1" up
  local -a cmd=()
  mapfile -d '' cmd < <(variant_cmd "$v" "$i")
  pidf=$(mktemp) timef=$(mktemp)
  echo "CMD: ${cmd[*]}" > "$log"
  t0=${EPOCHREALTIME/./}
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner bash (below)
  while IFS= read -r line; do
    line=${line%$'\r'}
    now=${EPOCHREALTIME/./}
    printf '[%s] %s\n' "$(fmt_s $(( now - t0 )))" "$line" >> "$log"
    case $line in
      *"$MARKER"*)
        if [ "$marker" = -1 ]; then
          marker=$(( now - t0 ))
          # "uptime=3.11s": the guest kernel's clock at the marker, in us
          up=${line##*uptime=}; up=${up%%s*}
          [[ $up =~ ^[0-9]+\.[0-9]+$ ]] && uptime=$(awk -v u="$up" 'BEGIN { printf "%d", u * 1000000 }')
        fi ;;
      "tessera-stats: startup "*)
        up=${line##*first_vcpu_entry_ms=}; up=${up%% *}
        [[ $up =~ ^[0-9]+(\.[0-9]+)?$ ]] && first=$(awk -v u="$up" 'BEGIN { printf "%d", u * 1000 }') ;;
      "tessera-stats: exits vcpu=0 "*)
        exits=$(awk '{ for (f = 1; f <= NF; f++) { split($f, kv, "="); v[kv[1]] = kv[2] } }
                     END { print v["total"], v["pio"], v["mmio"], v["other"] }' <<< "$line") ;;
      "tessera-stats: device="*) echo "$v $i ${line#tessera-stats: }" >> "$DATA.dev" ;;
      L2-MEM*)
        rep=${line#L2-MEM }
        pid=$(cat "$pidf")
        guest=$(guest_rss_kb "$pid")
        { echo "smaps sample (pid $pid):"; awk -v min=$(( MEM_KB / 2 )) '
            /^[0-9a-f]+-[0-9a-f]+ / { m = $0 } /^Size:/ { size = $2 }
            /^Rss:/ { if (size >= min) print "  " m " Size " size " kB Rss " $2 " kB" }' "/proc/$pid/smaps"; } >> "$log" ;;
    esac
  done < <(timeout -s KILL $(( TMO + 60 )) "$TIME" -f '%M %x' -o "$timef" \
             bash -c 'echo $$ > "$0"; exec "$@"' "$pidf" "${cmd[@]}" < /dev/null 2>&1)
  local total=$(( ${EPOCHREALTIME/./} - t0 ))
  local peak rc
  read -r peak rc < <(tail -n 1 "$timef")
  rm -f "$pidf" "$timef"
  peak=${peak:--1} rc=${rc:--1}
  echo "$v $i $marker $total $peak $guest $rc $uptime $first $exits" >> "$DATA"
  printf 'BENCH %-13s run %d: marker %ss, exit %ss (status %s), peak RSS %s KiB, guest RAM touched %s KiB, VMM overhead %s KiB (guest says: %s)\n' \
    "$v" "$i" "$( [ "$marker" -ge 0 ] && fmt_s "$marker" || echo never)" "$(fmt_s "$total")" "$rc" \
    "$peak" "$guest" "$(( peak - guest ))" "${rep:-no L2-MEM line}"
}

echo "bench-boot $( [ "${TESTBED_IN_L1:-0}" = 1 ] && echo "in L1 ($(uname -r), nested KVM)" || echo "on this host ($(uname -r))"): $N runs each, guest $(file -b "$K" 2>/dev/null | grep -o 'version [^ ]*'), $MEM, $CPUS vCPU(s), cmdline '$CMDLINE'"
qemu-system-x86_64 --version | head -1
[ "${TESTBED_L2_VMM:-tessera}" = tessera ] && echo "tessera: $TESSERA_BIN ($("$TESSERA_BIN" --version 2>&1 | head -1))"
VARIANTS="tessera qemu-microvm qemu-q35"
# OVMF rows: tessera's Q35 machine vs QEMU -M q35, same OVMF pflash pair.
[ "${BENCH_OVMF:-1}" = 1 ] && [ "${TESTBED_L2_VMM:-tessera}" = tessera ] && VARIANTS="$VARIANTS tessera-ovmf qemu-q35-ovmf"
for i in $(seq 1 "$N"); do
  for v in $VARIANTS; do
    measure "$v" "$i"
  done
done

# Medians and ratios
python3 - "$DATA" "${TESTBED_L2_VMM:-tessera}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
names = [n for n in ["tessera", "qemu-microvm", "qemu-q35", "tessera-ovmf", "qemu-q35-ovmf"]
         if any(x[0] == n for x in rows)]
med, bad = {}, 0
for n in names:
    r = [x for x in rows if x[0] == n]
    ok = [x for x in r if int(x[2]) >= 0 and x[6] == "0" and int(x[4]) > 0]
    bad += len(r) - len(ok)
    if not ok:
        med[n] = None
        continue
    m = lambda k: statistics.median(int(x[k]) for x in ok)
    med[n] = dict(marker=m(2) / 1e6, total=m(3) / 1e6, peak=m(4) / 1024,
                  guest=m(5) / 1024, over=statistics.median((int(x[4]) - int(x[5])) for x in ok) / 1024,
                  n=len(ok), of=len(r))
    # the later columns (uptime, first entry, exits) when every run has them
    def opt(k, scale=1.0, f=None):
        v = [int(x[k]) for x in ok if len(x) > k and int(x[k]) >= 0]
        if len(v) != len(ok):
            return None
        return statistics.median(f(x) for x in ok) / scale if f else statistics.median(v) / scale
    med[n].update(uptime=opt(7, 1e6), first=opt(8, 1e3),
                  pre=opt(7, 1e6, lambda x: int(x[2]) - int(x[7])),
                  exits=[opt(k) for k in (9, 10, 11, 12)])
label = {"tessera": "tessera" if sys.argv[2] == "tessera" else "tessera*"}
print()
print("| VMM | runs ok | time to marker (s) | time to exit (s) | peak RSS (MiB) | guest RAM touched (MiB) | VMM overhead = peak - guest (MiB) |")
print("|---|---|---|---|---|---|---|")
for n in names:
    d = med[n]
    if d is None:
        print(f"| {label.get(n, n)} | 0 | - | - | - | - | - |")
        continue
    print(f"| {label.get(n, n)} | {d['n']}/{d['of']} | {d['marker']:.2f} | {d['total']:.2f} | {d['peak']:.1f} | {d['guest']:.1f} | {d['over']:.1f} |")
for ours, q in (("tessera", "qemu-microvm"), ("tessera", "qemu-q35"), ("tessera-ovmf", "qemu-q35-ovmf")):
    if ours not in med or q not in med:
        continue
    t, d = med[ours], med[q]
    if t is None or d is None:
        print(f"| ratio {label.get(ours, ours)}/{q} | - | - | - | - | - | - |")
        continue
    r = lambda k: f"{t[k] / d[k]:.2f}" if d[k] else "-"
    print(f"| ratio {label.get(ours, ours)}/{q} | | {r('marker')} | {r('total')} | {r('peak')} | {r('guest')} | {r('over')} |")
print("(medians; times from VMM process start; tessera* = QEMU q35 stand-in, TESTBED_L2_VMM=qemu)" if sys.argv[2] != "tessera"
      else "(medians; times from VMM process start)")

# Where the time goes: before the kernel (VMM start + firmware) and the
# kernel's own time to the marker; tessera's exits.
f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
fi = lambda v: "-" if v is None else f"{v:.0f}"
print()
print("| VMM | time to marker (s) | guest uptime at marker (s) | before the kernel = marker - uptime (s) | VMM start to first vCPU entry (ms) | exits | pio | mmio | other |")
print("|---|---|---|---|---|---|---|---|---|")
for n in names:
    d = med[n]
    if d is None:
        continue
    e = d["exits"]
    print(f"| {label.get(n, n)} | {d['marker']:.2f} | {f(d['uptime'])} | {f(d['pre'])} | {f(d['first'], 1)} | {fi(e[0])} | {fi(e[1])} | {fi(e[2])} | {fi(e[3])} |")
for ours, q in (("tessera", "qemu-microvm"), ("tessera-ovmf", "qemu-q35-ovmf")):
    if med.get(ours) and med.get(q) and med[ours]["pre"] is not None and med[q]["pre"]:
        print(f"| ratio {label.get(ours, ours)}/{q} | {med[ours]['marker'] / med[q]['marker']:.2f} | | {med[ours]['pre'] / med[q]['pre']:.2f} | | | | | |")

# Exits by device (tessera rows, the last run of each): the busiest ranges.
dev = {}
try:
    for l in open(sys.argv[1] + ".dev"):
        v, run, rest = l.rstrip("\n").split(" ", 2)
        dev.setdefault(v, {}).setdefault(int(run), []).append(rest)
except FileNotFoundError:
    pass
for v in names:
    runs = dev.get(v)
    if not runs:
        continue
    last = max(runs)
    items = []
    for rest in runs[last]:
        if "kind=trap" not in rest:
            continue
        name = rest.split('"')[1]
        kv = dict(t.split("=", 1) for t in rest.rsplit('"', 1)[1].split() if "=" in t)
        items.append((int(kv.get("reads", 0)) + int(kv.get("writes", 0)), name, kv))
    items.sort(key=lambda t: -t[0])
    print()
    print(f"Exits by device, {label.get(v, v)} run {last} (accesses dispatched to each trapped range; top 12):")
    print()
    print("| device | bus | base | reads | writes |")
    print("|---|---|---|---|---|")
    for total, name, kv in items[:12]:
        print(f"| {name} | {kv.get('bus', '')} | {kv.get('base', '')} | {kv.get('reads', '')} | {kv.get('writes', '')} |")
sys.exit(1 if bad else 0)
EOF
