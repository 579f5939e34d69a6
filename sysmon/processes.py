"""
Facts about running processes from C{/proc}: a process's start time (what
makes a pid trustworthy: a reused pid has another one), its command line,
and the processes that run a given program.

Every function takes the C{/proc} root, so tests can use a fixture tree
(L{sysmon.testing.ProcTree}).
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

__all__ = [
    "clockTicks",
    "commandLine",
    "find",
    "matches",
    "sessionId",
    "startTime",
    "state",
    "statFields",
    "ticksNow",
]

PROC = "/proc"


def statFields(pid: int, proc: str = PROC) -> list[str] | None:
    """
    The fields of C{/proc/<pid>/stat} after the command name: element 0 is
    field 3 (the state), element 19 field 22 (the start time).

    @return: the fields, or L{None} if there is no such process.
    """
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold
    # spaces and parentheses: the fields go on after the last ')'.
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 1 :].decode("ascii", "replace").split()


def state(pid: int, proc: str = PROC) -> str | None:
    """
    The state letter of process C{pid} (C{R}, C{S}, C{Z} ...), or L{None}
    if there is no such process.
    """
    fields = statFields(pid, proc)
    return fields[0] if fields else None


def startTime(pid: int, proc: str = PROC) -> int | None:
    """
    The start time of process C{pid}: field 22 of C{/proc/<pid>/stat},
    clock ticks after boot.  A pid and its start time name one process for
    the whole life of the system.

    @return: the start time, or L{None} if there is no such process (or it
        is a zombie: it has ended and only waits to be reaped).
    """
    fields = statFields(pid, proc)
    # After the name: field 3 (state) is fields[0], field 22 is fields[19].
    if fields is None or len(fields) < 20:
        return None
    if fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def sessionId(pid: int, proc: str = PROC) -> int | None:
    """
    The session of process C{pid} (field 6 of C{/proc/<pid>/stat}), or
    L{None} if there is no such process.
    """
    fields = statFields(pid, proc)
    if fields is None or len(fields) < 4:
        return None
    try:
        return int(fields[3])
    except ValueError:
        return None


def commandLine(pid: int, proc: str = PROC) -> tuple[str, ...] | None:
    """
    The command line of process C{pid}, or L{None} if it has ended (or is a
    kernel thread, which has none).
    """
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return None
    if not data:
        return None
    return tuple(
        os.fsdecode(part) for part in data.rstrip(b"\0").split(b"\0")
    )


def matches(
    cmdline: Sequence[str], path: str, args: Sequence[str] | None = None
) -> bool:
    """
    Does a process with this command line run C{path}?

    The program is recognised as the first word (as given, or by its base
    name, since a program may be started by name through C{PATH}), or as the
    second word after an interpreter (a script started through its C{#!}
    line).

    @param args: also require exactly these arguments after the program;
        L{None}: any arguments.
    """
    base = os.path.basename(path)
    for index in (0, 1):
        if len(cmdline) <= index:
            break
        word = cmdline[index]
        if word == path or (index == 0 and os.path.basename(word) == base) or (
            index == 1 and os.path.basename(word) == base and "/" in word
        ):
            return args is None or tuple(cmdline[index + 1 :]) == tuple(args)
    return False


def clockTicks() -> int:
    """
    The kernel's clock ticks per second (the unit of L{startTime}).
    """
    return os.sysconf("SC_CLK_TCK")


def ticksNow(proc: str = PROC) -> int:
    """
    Clock ticks since boot now, comparable with L{startTime}.
    """
    with open(f"{proc}/uptime") as f:
        uptime = float(f.read().split()[0])
    return int(uptime * clockTicks())


def _pids(proc: str) -> Iterator[int]:
    try:
        names = os.listdir(proc)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def find(
    path: str,
    args: Sequence[str] | None = None,
    *,
    after: int = 0,
    proc: str = PROC,
) -> list[tuple[int, int]]:
    """
    The processes that run C{path} (see L{matches}), newest first.

    @param args: also match these arguments; L{None}: any.
    @param after: only processes that started at or after this many clock
        ticks after boot.
    @return: C{(pid, startTime)} pairs.
    """
    found = []
    me = os.getpid()
    for pid in _pids(proc):
        if pid == me:
            continue
        cmdline = commandLine(pid, proc)
        if cmdline is None or not matches(cmdline, path, args):
            continue
        started = startTime(pid, proc)
        if started is None or started < after:
            continue
        found.append((pid, started))
    found.sort(key=lambda item: (item[1], item[0]), reverse=True)
    return found
