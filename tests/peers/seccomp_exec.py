"""Runs a program under the seccomp filter a systemd unit's SystemCallFilter= describes.

Usage: seccomp_exec.py 'FILTER' PROGRAM ARGS..

FILTER is the allow list of the unit's SystemCallFilter= lines joined with spaces
(e.g. '@system-service bpf'): groups are expanded with systemd's own table
(`systemd-analyze syscall-filter`), every other system call fails with EPERM, as with
SystemCallErrorNumber=EPERM. The end-to-end tests start canarygate through this to
show that the packaged unit's filter keeps io_uring and bpf(2) working.
"""

import errno
import os
import subprocess
import sys

import seccomp


def groups():
    """Group name -> its entries (system calls and other groups)."""
    table = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True, text=True, check=True,
    ).stdout
    found, current = {}, None
    for line in table.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            found[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            found[current].append(line.strip())
    return found


def expand(name, table):
    if not name.startswith("@"):
        return {name}
    calls = set()
    for entry in table[name]:
        calls |= expand(entry, table)
    return calls


def main():
    spec, program = sys.argv[1], sys.argv[2:]
    table = groups()
    allowed = set()
    for item in spec.split():
        allowed |= expand(item, table)
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for call in sorted(allowed):
        try:
            flt.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError, OSError):
            # A name this architecture does not have (e.g. the *_time64 calls).
            pass
    flt.load()
    os.execv(program[0], program)


main()
