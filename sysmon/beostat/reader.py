"""
The libbeostat-style reader: what schedulers and dashboards call to learn a
node's state from recvstats' shared-memory file, without talking to any
daemon.

Names and units follow Scyld's libbeostat (C{beostat_get_cpu_percent} is
L{Beostat.get_cpu_percent} here): CPU usage as a fraction 0.0-1.0 from tick
deltas, memory in bytes, loads as floats, network counters per interface
and a bytes-per-second rate over all of them, the time of each node's last
update in seconds since the epoch.  Where libbeostat returns -1, these
raise L{NoData} (the node has no record, or not that part yet) or
L{IndexError} (no such CPU).  Every call reads under the record's seqlock,
so it never returns half of one update and half of another.

Module-level functions use one reader of the default file
(L{sysmon.beostat.shm.defaultPath}); make a L{Beostat} for another file.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from sysmon.beostat import shm
from sysmon.beostat.records import FileSystem

__all__ = [
    "Beostat",
    "LoadAvg",
    "MemInfo",
    "MemUsage",
    "NetDev",
    "NetStat",
    "NoData",
    "StatCpu",
]

_D = struct.Struct("<d")
_F = struct.Struct("<f")
_I = struct.Struct("<I")
_H = struct.Struct("<H")
_LOADS = struct.Struct("<3f3I")
_MEMORY = struct.Struct("<7Q")
_TICKS = struct.Struct("<8Q")
_F_VALID = 212
_F_CPUCOUNT = 216
_F_CPUS_STORED = 6
_F_MEMORY = 296
_F_IFACES_STORED = 228
_F_ROOTFS = 408
_CPU_TICKS = struct.Struct("<8I")
_ROOTFS = struct.Struct("<6Q")


class NoData(LookupError):
    """
    The node has no record, or its record lacks the part asked for.
    """


class StatCpu(NamedTuple):
    """
    libbeostat's C{struct beostat_stat_cpu}, with the later kernels'
    counters too: clock ticks that only ever grow (per-CPU entries keep the
    low 32 bits).
    """

    user: int
    system: int
    nice: int
    idle: int
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0


class MemUsage(NamedTuple):
    """
    C{struct beostat_memusage}: bytes used and free.
    """

    used: int
    free: int


class MemInfo(NamedTuple):
    """
    C{struct beostat_meminfo}, in bytes.  As libbeostat warns, C{mem.used}
    counts buffers and cache; C{available} is the kernel's MemAvailable.
    """

    mem: MemUsage
    swap: MemUsage
    shared: int
    buffers: int
    cached: int
    available: int


class LoadAvg(NamedTuple):
    """
    C{struct beostat_loadavg}: the five fields of C{/proc/loadavg}.
    """

    load: tuple[float, float, float]
    num_active_procs: int
    total_procs: int
    last_pid: int


class NetStat(NamedTuple):
    """
    One direction of C{struct beostat_net_dev}.
    """

    bytes: int
    packets: int
    errs: int
    drop: int


class NetDev(NamedTuple):
    """
    C{struct beostat_net_dev}: an interface's name and its counters.
    """

    name: str
    recv: NetStat
    trans: NetStat


class Beostat:
    """
    A reader of one shared-memory file.  Not thread-safe: one per thread.

    @param path: the file (default: L{shm.defaultPath}).
    """

    def __init__(self, path: str | None = None) -> None:
        self.file = shm.ShmFile(path)

    def close(self) -> None:
        """
        Unmap the file.
        """
        self.file.close()

    # -- helpers ------------------------------------------------------------

    def _read(self, node: int, want: int, read):
        """
        C{read(mapping, offset)} for a node whose record is in use and has
        the C{want} valid bits, consistently.
        """
        def guarded(mm, offset):
            if mm[offset + shm.F_STATE] == shm.EMPTY:
                return _MISSING
            if want and _I.unpack_from(mm, offset + _F_VALID)[0] & want != want:
                return _MISSING
            return read(mm, offset)

        try:
            value = self.file.consistent(node, guarded)
        except IndexError:
            raise NoData(f"node {node}: no such slot") from None
        if value is _MISSING:
            raise NoData(f"node {node}: no data")
        return value

    # -- the libbeostat calls ----------------------------------------------

    def nodes(self) -> list[int]:
        """
        Node numbers that have a record (up or down).
        """
        return [r.node for r in self.file.records()]

    def record(self, node: int) -> shm.NodeRecord:
        """
        The node's whole record.
        """
        try:
            record = self.file.read(node)
        except IndexError:
            raise NoData(f"node {node}: no such slot") from None
        if record.state == shm.EMPTY:
            raise NoData(f"node {node}: no data")
        return record

    def get_state(self, node: int) -> str:
        """
        C{"up"} or C{"down"} (silent for 4 reporting intervals).
        """
        return shm.STATE_NAMES[self._read(node, 0, lambda mm, off: mm[off + shm.F_STATE])]

    def get_time(self, node: int) -> float:
        """
        When recvstats last heard from the node, seconds since the epoch.
        """
        return self._read(node, 0, lambda mm, off: _D.unpack_from(mm, off + shm.F_UPDATED)[0])

    def get_cpu_count(self, node: int) -> int:
        """
        How many CPUs the node has.
        """
        return self._read(node, shm.V_CPUINFO,
                          lambda mm, off: _I.unpack_from(mm, off + _F_CPUCOUNT)[0])

    def get_cpu_percent(self, node: int, cpu: int = -1) -> float:
        """
        CPU usage as a fraction from 0.0 to 1.0 over the node's last
        reporting interval: of CPU C{cpu}, or of all its CPUs for -1.
        (For gmond nodes only the whole-node figure exists.)

        @raise IndexError: the node has no CPU C{cpu} in the file.
        """
        if cpu < 0:
            return self._read(node, shm.V_USAGE,
                              lambda mm, off: _F.unpack_from(mm, off + shm.F_USAGE)[0])
        layout = self.file.layout

        def read(mm, off):
            if cpu >= _H.unpack_from(mm, off + _F_CPUS_STORED)[0]:
                return IndexError
            return _F.unpack_from(mm, off + layout.cpuOffset + cpu * shm.CPU_ENTRY.size)[0]

        value = self._read(node, shm.V_TICKS, read)
        if value is IndexError:
            raise IndexError(f"node {node} has no CPU {cpu} in the file")
        if value < 0:
            raise NoData(f"node {node}: no usage for CPU {cpu} yet")
        return value

    def get_stat_cpu(self, node: int, cpu: int = -1) -> StatCpu:
        """
        Tick counters of CPU C{cpu}, or of the whole node for -1.
        """
        if cpu < 0:
            t = self._read(node, shm.V_TICKS,
                           lambda mm, off: _TICKS.unpack_from(mm, off + shm.F_TICKS))
        else:
            layout = self.file.layout

            def read(mm, off):
                if cpu >= _H.unpack_from(mm, off + _F_CPUS_STORED)[0]:
                    return None
                return _CPU_TICKS.unpack_from(
                    mm, off + layout.cpuOffset + cpu * shm.CPU_ENTRY.size + 4)

            t = self._read(node, shm.V_TICKS, read)
            if t is None:
                raise IndexError(f"node {node} has no CPU {cpu} in the file")
        return StatCpu(t[0], t[2], t[1], t[3], t[4], t[5], t[6], t[7])

    def get_meminfo(self, node: int) -> MemInfo:
        """
        Memory and swap, in bytes.
        """
        total, free, available, buffers, cached, swapTotal, swapFree = self._read(
            node, shm.V_MEMORY, lambda mm, off: _MEMORY.unpack_from(mm, off + _F_MEMORY))
        return MemInfo(MemUsage(total - free, free), MemUsage(swapTotal - swapFree, swapFree),
                       0, buffers, cached, available)

    def get_loadavg(self, node: int) -> LoadAvg:
        """
        The node's C{/proc/loadavg}.
        """
        one, five, fifteen, running, total, last = self._read(
            node, shm.V_LOAD, lambda mm, off: _LOADS.unpack_from(mm, off + shm.F_LOADS))
        return LoadAvg((one, five, fifteen), running, total, last)

    def get_net_dev(self, node: int) -> list[NetDev]:
        """
        The node's interfaces (as many as the file keeps), in its kernel's
        order.
        """
        layout = self.file.layout

        def read(mm, off):
            count = min(_I.unpack_from(mm, off + _F_IFACES_STORED)[0], layout.maxInterfaces)
            base = off + layout.interfaceOffset
            size = shm.INTERFACE_ENTRY.size
            return [shm.INTERFACE_ENTRY.unpack_from(mm, base + i * size) for i in range(count)]

        rows = self._read(node, shm.V_NET, read)
        return [NetDev(name.split(b"\0", 1)[0].decode("utf-8", "replace"),
                       NetStat(*counters[0:4]), NetStat(*counters[4:8]))
                for name, *counters in rows]

    def get_net_rate(self, node: int) -> float:
        """
        Bytes per second received plus sent over all the node's interfaces,
        over its last reporting interval.
        """
        rx, tx = self._read(node, shm.V_RATES,
                            lambda mm, off: struct.unpack_from("<2d", mm, off + shm.F_RATES))
        return rx + tx

    def get_MHz(self, node: int) -> float:
        """
        The clock of the node's first CPU.
        """
        return self._read(node, shm.V_CPUINFO,
                          lambda mm, off: _F.unpack_from(mm, off + shm.F_MHZ)[0])

    def get_statfs(self, node: int) -> FileSystem:
        """
        statfs of the node's root file system (for gmond nodes: its disks'
        total and free space, in 1-byte blocks).
        """
        return FileSystem(*self._read(
            node, shm.V_ROOTFS, lambda mm, off: _ROOTFS.unpack_from(mm, off + _F_ROOTFS)))

    get_statfs_p = get_statfs

    def count_idle_cpus_on_node(self, node: int, threshold: float) -> int:
        """
        CPUs of an up node whose usage is below C{threshold}; a huge
        threshold counts all its CPUs.  Where per-CPU figures are missing
        (gmond) the node's overall usage stands for each CPU.
        """
        layout = self.file.layout

        def read(mm, off):
            if mm[off + shm.F_STATE] != shm.UP:
                return None
            stored = min(_H.unpack_from(mm, off + _F_CPUS_STORED)[0], layout.maxCpus)
            count = _I.unpack_from(mm, off + _F_CPUCOUNT)[0]
            overall = _F.unpack_from(mm, off + shm.F_USAGE)[0]
            base = off + layout.cpuOffset
            size = shm.CPU_ENTRY.size
            usages = [_F.unpack_from(mm, base + i * size)[0] for i in range(stored)]
            return usages + [overall] * max(0, count - stored)

        usages = self._read(node, 0, read)
        if usages is None:
            return 0
        # a negative usage is "not known yet": counted only by a huge threshold
        return sum(1 for u in usages if 0 <= u < threshold or u < 0 and threshold > 1.0)

    def count_idle_cpus(self, threshold: float) -> int:
        """
        L{count_idle_cpus_on_node} summed over the cluster.
        """
        total = 0
        for node in self.file.nodes():
            try:
                total += self.count_idle_cpus_on_node(node, threshold)
            except NoData:
                pass
        return total

    def get_last_multicast(self) -> float:
        """
        When recvstats last asked the nodes for updates (0.0: never).
        """
        return self.file.header()["lastRequest"]


_MISSING = object()
_default: Beostat | None = None


def _reader() -> Beostat:
    global _default
    if _default is None:
        _default = Beostat()
    return _default


def _forward(name: str):
    def call(*args, **kw):
        return getattr(_reader(), name)(*args, **kw)
    call.__name__ = name
    call.__doc__ = getattr(Beostat, name).__doc__
    return call


for _name in ("nodes", "get_state", "get_time", "get_cpu_count", "get_cpu_percent",
              "get_stat_cpu", "get_meminfo", "get_loadavg", "get_net_dev", "get_net_rate",
              "get_MHz", "get_statfs", "get_statfs_p", "count_idle_cpus",
              "count_idle_cpus_on_node", "get_last_multicast"):
    globals()[_name] = _forward(_name)
    __all__.append(_name)
del _name
