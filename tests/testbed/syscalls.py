#!/usr/bin/env python3
"""The system calls each kind of tessera thread made, from strace -ff traces.

    tests/testbed/syscalls.py DIR... [--check vmm/src/seccomp.rs]

DIR holds `strace -ff -o DIR/run-ID` output (files run-ID.TID, one per thread, as the
testbed writes it with TESSERA_STRACE_DIR; the job directories keep it under
strace/). Threads are sorted into the kinds of vmm/src/seccomp.rs by the name
they gave themselves (prctl PR_SET_NAME): vcpuN -> vcpu; the thread that ran
execve -> main; every other name -> main as well (worker threads live under
the main filter). Calls of process start-up (STARTUP) and those of a vCPU
thread before its first KVM_RUN (thread start-up, under the main filter)
are left out. Prints each kind's calls; with --check, also the calls a
list lacks (exit status 1 if any) and the entries no trace used.
"""
import collections
import glob
import os
import re
import sys

CALL = re.compile(r"^([a-z_0-9]+)\(")
NAME = re.compile(r'PR_SET_NAME, "([^"]*)"')


def kind_of(path):
    name = None
    main = False
    with open(path, errors="replace") as f:
        for i, line in enumerate(f):
            if i == 0 and line.startswith("execve("):
                main = True
            m = NAME.search(line)
            if m:
                name = m.group(1)
                break
    if main:
        return "main", "main"
    if name and re.fullmatch(r"vcpu\d+", name):
        return "vcpu", name
    return "main", name or "unnamed"


# Made by the process before main() reaches the VM (the filters come later).
STARTUP = {"execve", "access", "arch_prctl", "set_tid_address"}


def calls_of(path, kind):
    """The calls in one thread's trace; for a vCPU thread only those from
    its first KVM_RUN on (before it, the thread starts up and installs its
    own filter under the inherited main one)."""
    out = set()
    started = kind != "vcpu"
    with open(path, errors="replace") as f:
        for line in f:
            if not started:
                started = "KVM_RUN" in line
            m = CALL.match(line)
            if m and started:
                out.add(m.group(1))
    return out - STARTUP


def lists_in(rs):
    text = open(rs).read()
    lists = {}
    for kind, const in (("main", "MAIN"), ("vcpu", "VCPU")):
        m = re.search(r"pub const %s: &\[\(libc::c_long, &str\)\] = syscalls!\[(.*?)\];" % const, text, re.S)
        lists[kind] = set(re.findall(r"SYS_([a-z_0-9]+)", m.group(1)))
    return lists


def main(argv):
    check = None
    if "--check" in argv:
        i = argv.index("--check")
        check = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    seen = collections.defaultdict(set)
    names = collections.defaultdict(set)
    files = 0
    for d in argv:
        for p in glob.glob(os.path.join(d, "**", "*"), recursive=True):
            # strace -ff -o PREFIX writes PREFIX.TID
            if not os.path.isfile(p) or not re.search(r"\.\d+$", p):
                continue
            files += 1
            kind, name = kind_of(p)
            seen[kind] |= calls_of(p, kind)
            names[kind].add(re.sub(r"\d+$", "N", name))
    # the main filter is inherited by vCPU threads: it must allow theirs too
    seen["main"] |= seen["vcpu"]
    print(f"{files} thread traces")
    for kind in ("main", "vcpu"):
        print(f"{kind} ({', '.join(sorted(names[kind]))}): {len(seen[kind])} calls")
        print("  " + " ".join(sorted(seen[kind])))
    if not check:
        return 0
    lists = lists_in(check)
    bad = 0
    for kind in ("main", "vcpu"):
        missing = seen[kind] - lists[kind]
        unused = lists[kind] - seen[kind]
        if missing:
            bad = 1
            print(f"MISSING from {kind}: {' '.join(sorted(missing))}")
        if unused:
            print(f"in {kind} but not traced: {' '.join(sorted(unused))}")
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
