#!/bin/sh
# shellcheck shell=sh
# The tessera-edu check (l2/edu/tessera_edu.c), for busybox sh or dash: finds
# the edu (1234:11e8), which must be bound to tessera-edu, and
#   - writes EDU_RAISE [100] to raise: irq_count and the tessera-edu line of
#     /proc/interrupts must grow by exactly that much;
#   - writes EDU_BURST [50] to raise_burst (back to back) and reports how many
#     interrupts arrived (1..EDU_BURST: MSIs raised faster than they are
#     handled may merge);
#   - reads dma_check, which must be "ok 4096 bytes".
# Prints "edu-check NAME ok|fail ..." lines (dma_check: the attribute's
# text); exit status 0 if all passed.
# l2/edu-check.sh runs it in L1 and as /check.sh of the l2pt guest (L2).
R=${EDU_RAISE:-100} B=${EDU_BURST:-50} bad=0
ok() { echo "edu-check $1 ok $2"; }
no() { echo "edu-check $1 fail $2"; bad=1; }
d=
for x in /sys/bus/pci/devices/*; do
  [ "$(cat "$x/vendor")" = 0x1234 ] && [ "$(cat "$x/device")" = 0x11e8 ] && d=$x
done
[ -n "$d" ] || { no find "no 1234:11e8 PCI function"; exit 1; }
drv=$(basename "$(readlink "$d/driver")")
[ "$drv" = tessera-edu ] || { no driver "$d: driver ${drv:-none}, not tessera-edu"; exit 1; }
ok driver "$(basename "$d") id=$(cat "$d/id")"
pi() { awk "/tessera-edu\$/ { s = 0; for (i = 2; i <= NF && \$i ~ /^[0-9]+\$/; i++) s += \$i; print s }" /proc/interrupts; }
c0=$(cat "$d/irq_count") p0=$(pi)
t0=$(cut -d" " -f1 /proc/uptime)
echo "$R" > "$d/raise" || no raise "write $R to raise failed"
t1=$(cut -d" " -f1 /proc/uptime)
c1=$(cat "$d/irq_count") p1=$(pi)
if [ $((c1 - c0)) = "$R" ]; then ok raise "irq_count $c0 -> $c1 (+$R) in $(awk "BEGIN { print $t1 - $t0 }") s"
else no raise "irq_count $c0 -> $c1, want +$R"; fi
if [ $((p1 - p0)) = "$R" ]; then ok proc-interrupts "tessera-edu $p0 -> $p1"
else no proc-interrupts "tessera-edu $p0 -> $p1, want +$R: $(grep tessera-edu /proc/interrupts)"; fi
echo "$B" > "$d/raise_burst" || no raise_burst "write $B to raise_burst failed"
sleep 1
c2=$(cat "$d/irq_count")
echo "edu-check raise_burst $B writes: irq_count $c1 -> $c2 (+$((c2 - c1)))"
if [ $((c2 - c1)) -lt 1 ] || [ $((c2 - c1)) -gt "$B" ]; then no raise_burst "+$((c2 - c1)) not in 1..$B"; fi
r=$(cat "$d/dma_check")
echo "edu-check dma_check $r"
[ "$r" = "ok 4096 bytes" ] || bad=1
grep tessera-edu /proc/interrupts
dmesg | grep -i "tessera-edu\|tessera_edu" | tail -5
exit $bad
