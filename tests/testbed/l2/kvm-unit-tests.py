#!/usr/bin/env python3
"""kvm-unit-tests' x86_64 tests under tessera and under QEMU, in one L1.

    kvm-unit-tests.py --kut DIR --logdir DIR [--only NAME,...]

DIR is a built kvm-unit-tests tree (x86/*.flat, x86/unittests.cfg; built by
`testbed kvm-unit-tests` from the vendored tarball in tests/kvm-unit-tests).
Each test of x86/unittests.cfg for x86_64 runs as its .flat multiboot image
with the same vCPUs, memory and arguments under
  tessera run --kernel T.flat --debug-exit-port 0xf4,size=4 (seccomp on)
  qemu-system-x86_64 -M q35 -accel kvm -cpu host -kernel T.flat
                     -device isa-debug-exit,iobase=0xf4,iosize=4
Both read the status the test writes to port 0xf4 the kvm-unit-tests way
(exit (code << 1) | 1: 1 PASS, 77 SKIP, anything else FAIL; 124 timeout).
The test's own `-cpu` model is not used: both run the host CPU (tessera has
no CPU models). A test is skipped, with the reason, when its parameters
need a QEMU-only device or machine option, an i386 build, TCG, or a host
setting its `check =` line names that this host lacks.

Prints one line per test (`KUT name tessera=X qemu=Y`), the failing
sub-tests (`FAIL:` report lines) of tessera-only failures, and a summary;
the exit status is 1 if any test failed under tessera but not under QEMU.
Env: KUT_TIMEOUT_SCALE [2] multiplies each test's timeout (nested KVM is
slow), TESSERA_BIN, QEMU [qemu-system-x86_64].
"""
import argparse
import configparser
import os
import re
import shlex
import subprocess
import sys
import time

DEFAULT_TIMEOUT = 90


def parse_cfg(path):
    cp = configparser.RawConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    with open(path) as f:
        cp.read_file(f)
    for name in cp.sections():
        yield name, dict(cp.items(name))


def plan(name, t, kut):
    """(skip reason or None, smp, memory MiB, append, timeout s)."""
    arch = t.get("arch", "")
    if arch and arch != "x86_64":
        return f"{arch} only", 0, 0, "", 0
    if t.get("accel", "kvm") not in ("kvm", ""):
        return f"accel={t['accel']} only", 0, 0, "", 0
    flat = os.path.join(kut, "x86", t["file"].strip())
    if not os.path.exists(flat):
        return f"{t['file']} not built (an EFI-only test)", 0, 0, "", 0
    for c in t.get("check", "").split():
        path, _, want = c.partition("=")
        try:
            have = open(path).read().strip()
        except OSError:
            return f"check {c}: {path} missing on this host", 0, 0, "", 0
        if have != want:
            return f"check {c}: host has {have}", 0, 0, "", 0
    smp = int(eval(t.get("smp", "1").replace("$MAX_SMP", str(os.cpu_count() or 1)), {}))  # noqa: S307 (the cfg's arithmetic)
    mem = 128
    args = shlex.split(t.get("qemu_params", t.get("extra_params", "")))
    append = t.get("test_args", "").strip().strip("'\"")
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-cpu":
            i += 2
            continue
        if a == "-m":
            v = args[i + 1].lower()
            mem = int(v[:-1]) * 1024 if v.endswith("g") else int(v.rstrip("m"))
            i += 2
            continue
        if a == "-smp":
            smp = int(args[i + 1].split(",")[0])
            i += 2
            continue
        if a == "-append":
            append = args[i + 1]
            i += 2
            continue
        return f"needs QEMU option {' '.join(args[i:i + 2])}", 0, 0, "", 0
    timeout = t.get("timeout", str(DEFAULT_TIMEOUT)).rstrip("s")
    return None, smp, mem, append, int(float(timeout))


def status_of(rc):
    if rc == 1:
        return "PASS"
    if rc == 77:
        return "SKIP"
    if rc == 124:
        return "TIMEOUT"
    return f"FAIL({rc})"


def run(cmd, out, timeout):
    t0 = time.time()
    with open(out, "wb") as f:
        f.write((" ".join(shlex.quote(c) for c in cmd) + "\n").encode())
        f.flush()
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=timeout + 30)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kut", required=True)
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--only", default="")
    o = ap.parse_args()
    os.makedirs(o.logdir, exist_ok=True)
    tessera = os.environ["TESSERA_BIN"]
    qemu = os.environ.get("QEMU", "qemu-system-x86_64")
    scale = float(os.environ.get("KUT_TIMEOUT_SCALE", "2"))
    only = set(filter(None, o.only.split(",")))
    rows = []
    for name, t in parse_cfg(os.path.join(o.kut, "x86", "unittests.cfg")):
        if only and name not in only:
            continue
        skip, smp, mem, append, tmo = plan(name, t, o.kut)
        if skip:
            rows.append((name, "skip", "skip", skip, 0, 0))
            print(f"KUT {name} skipped: {skip}", flush=True)
            continue
        tmo = int(tmo * scale)
        flat = os.path.join(o.kut, "x86", t["file"].strip())
        tser = os.path.join(o.logdir, f"{name}.tessera")
        trc, tsec = run([tessera, "run", "--kernel", flat, "--cpus", str(smp), "--memory", f"{mem}M",
                         "--cmdline", append, "--debug-exit-port", "0xf4,size=4", "--serial", "stdio",
                         "--timeout", str(tmo)], tser, tmo)
        qser = os.path.join(o.logdir, f"{name}.qemu")
        qrc, qsec = run([qemu, "-M", "q35", "-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none",
                         "-serial", "stdio", "--no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                         "-smp", str(smp), "-m", str(mem), "-kernel", flat, "-append", append], qser, tmo)
        ts, qs = status_of(trc), status_of(qrc)
        rows.append((name, ts, qs, "", tsec, qsec))
        print(f"KUT {name} tessera={ts} ({tsec:.1f}s) qemu={qs} ({qsec:.1f}s)", flush=True)
        if ts != "PASS" and ts != "SKIP" and qs in ("PASS", "SKIP"):
            fails = [ln.strip() for ln in open(tser, errors="replace") if ln.startswith("FAIL")]
            tail = open(tser, errors="replace").read().splitlines()[-3:]
            print(f"  tessera-only: {'; '.join(fails[:8]) or ' | '.join(tail)}", flush=True)
    ran = [r for r in rows if r[1] != "skip"]
    tpass = sum(r[1] in ("PASS", "SKIP") for r in ran)
    qpass = sum(r[2] in ("PASS", "SKIP") for r in ran)
    tonly = [r[0] for r in ran if r[1] not in ("PASS", "SKIP") and r[2] in ("PASS", "SKIP")]
    qonly = [r[0] for r in ran if r[2] not in ("PASS", "SKIP") and r[1] in ("PASS", "SKIP")]
    print("\n| test | tessera | QEMU |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]}{' (' + r[3] + ')' if r[3] else ''} |")
    print(f"\nKUT-SUMMARY run {len(ran)} of {len(rows)} (skipped {len(rows) - len(ran)}); "
          f"pass or skip: tessera {tpass}, QEMU {qpass}; tessera-only failures {len(tonly)}: {' '.join(tonly) or '-'}; "
          f"QEMU-only failures {len(qonly)}: {' '.join(qonly) or '-'}")
    return 1 if tonly else 0


if __name__ == "__main__":
    sys.exit(main())
