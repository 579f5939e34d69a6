"""
The values one node reports, as typed records shared by every part of
recvstats/sendstats: the C{/proc} parsers produce them, the wire codec
carries them, the gmond mapping fills them from Ganglia metrics, and the
shared-memory writer stores them.

The per-packet records (L{CpuTicks}, L{Memory}, L{Load}, L{Interface},
L{FileSystem}) are named tuples: recvstats makes several per packet, tens
of thousands of packets a second, straight from C{struct} unpacks, and packs
them again into the shared-memory file; a named tuple is the cheapest
immutable record for both.

Units are the kernel's and libbeostat's: CPU time in clock ticks
(C{USER_HZ}), memory and file-system sizes in bytes, loads as floats,
network counters in bytes and packets since the interface came up.
"""

from __future__ import annotations

from operator import add as _add
from operator import sub as _sub
from typing import NamedTuple, Sequence

import attrs

__all__ = [
    "CPU_TICK_FIELDS",
    "NET_FIELDS",
    "CpuInfo",
    "CpuTicks",
    "FileSystem",
    "Interface",
    "Load",
    "Memory",
    "Snapshot",
    "cpuUsage",
    "cpuUsages",
]

#: The eight per-CPU tick counters of C{/proc/stat}, in the kernel's order.
CPU_TICK_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

#: The eight per-interface counters of C{/proc/net/dev} that sysmon carries.
NET_FIELDS = ("rxBytes", "rxPackets", "rxErrors", "rxDrops",
              "txBytes", "txPackets", "txErrors", "txDrops")

#: Longest interface name carried (the kernel's IFNAMSIZ, with its NUL).
IFNAMSIZ = 16


class CpuTicks(NamedTuple):
    """
    Tick counters of one CPU (or of all CPUs, the C{cpu} line of
    C{/proc/stat}).  Kernels before 2.6.11 lack the later fields: they are 0.

    A named tuple, not an attrs class: recvstats makes and adds tens of
    these per packet, tens of thousands of packets a second.  C{+} and C{-}
    work field by field (not tuple concatenation).
    """

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0

    def astuple(self) -> tuple[int, ...]:
        """
        The counters in L{CPU_TICK_FIELDS} order.
        """
        return self

    def __add__(self, other: CpuTicks) -> CpuTicks:  # type: ignore[override]
        return _newTicks(CpuTicks, map(_add, self, other))

    def __sub__(self, other: CpuTicks) -> CpuTicks:
        return _newTicks(CpuTicks, map(_sub, self, other))


_newTicks = tuple.__new__


def cpuUsage(delta: CpuTicks) -> float | None:
    """
    The busy fraction (0.0 to 1.0) over an interval, from the tick
    increments of that interval: everything but idle and iowait, over all.

    @return: L{None} when no tick passed (or counters went backwards, as
        after a reboot): there is no usage to report.
    """
    if min(delta) < 0:
        return None
    total = sum(delta)
    if total <= 0:
        return None
    return (total - delta[3] - delta[4]) / total


def cpuUsages(deltas: Sequence[int], unsigned: bool = False) -> list[float | None]:
    """
    L{cpuUsage} of many CPUs at once (the same formula), from their tick
    increments laid flat, eight per CPU in L{CPU_TICK_FIELDS} order: the
    way recvstats handles a node's CPUs without an object (or a Python-level
    loop) per CPU.

    @param unsigned: the caller knows that no increment is negative (they
        came off the wire as unsigned numbers): skip looking.
    """
    totals = list(map(sum, zip(*[iter(deltas)] * 8)))
    if not unsigned and deltas and min(deltas) < 0:
        # Some row went backwards: that CPU has no usage, the others do.
        backwards = [min(deltas[i:i + 8]) < 0 for i in range(0, len(deltas), 8)]
        totals = [0 if back else total for back, total in zip(backwards, totals)]
    return [(total - idle - iowait) / total if total > 0 else None
            for total, idle, iowait in zip(totals, deltas[3::8], deltas[4::8])]


@attrs.frozen
class CpuInfo:
    """
    The static description of a node's processors (C{/proc/cpuinfo}).

    @ivar count: how many processors.
    @ivar mhz: the clock of the first processor, in MHz (0.0 when the
        kernel does not say, as on some ARM machines).
    @ivar model: the first processor's model name.
    """

    count: int
    mhz: float = 0.0
    model: str = ""


class Memory(NamedTuple):
    """
    C{/proc/meminfo}'s main figures, in bytes.
    """

    total: int = 0
    free: int = 0
    available: int = 0
    buffers: int = 0
    cached: int = 0
    swapTotal: int = 0
    swapFree: int = 0


class Load(NamedTuple):
    """
    C{/proc/loadavg}: three load averages, running and total scheduling
    entities, and the last pid handed out.
    """

    one: float = 0.0
    five: float = 0.0
    fifteen: float = 0.0
    running: int = 0
    total: int = 0
    lastPid: int = 0


class Interface(NamedTuple):
    """
    One row of C{/proc/net/dev}.
    """

    name: str
    rxBytes: int = 0
    rxPackets: int = 0
    rxErrors: int = 0
    rxDrops: int = 0
    txBytes: int = 0
    txPackets: int = 0
    txErrors: int = 0
    txDrops: int = 0

    def counters(self) -> tuple[int, ...]:
        """
        The counters in L{NET_FIELDS} order.
        """
        return self[1:]


class FileSystem(NamedTuple):
    """
    C{statfs(2)} of a node's root file system: the fundamental block size,
    blocks in all / free / available to unprivileged users, inodes in all /
    free.
    """

    blockSize: int = 0
    blocks: int = 0
    free: int = 0
    available: int = 0
    files: int = 0
    freeFiles: int = 0


@attrs.frozen
class Snapshot:
    """
    Everything one reading of a node's C{/proc} gave.  A part whose file
    could not be read or parsed is L{None} and its reason is in C{errors};
    the other parts are still good.

    @ivar cpuInfo: from C{/proc/cpuinfo}.
    @ivar cpuTotal: the C{cpu} line of C{/proc/stat}.
    @ivar cpus: the C{cpuN} lines, in order of N.
    @ivar memory: from C{/proc/meminfo}.
    @ivar load: from C{/proc/loadavg}.
    @ivar interfaces: the rows of C{/proc/net/dev}, in the kernel's order.
    @ivar rootfs: statfs of the root file system.
    @ivar errors: C{(file, reason)} for each part that failed.
    """

    cpuInfo: CpuInfo | None = None
    cpuTotal: CpuTicks | None = None
    cpus: tuple[CpuTicks, ...] | None = None
    memory: Memory | None = None
    load: Load | None = None
    interfaces: tuple[Interface, ...] | None = None
    rootfs: FileSystem | None = None
    errors: tuple[tuple[str, str], ...] = ()
