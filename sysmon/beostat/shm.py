"""
The shared-memory file that recvstats writes and every reader maps: a fixed
header and one fixed-size record per node number, each record guarded by
its own sequence counter (a seqlock) so that readers get a consistent
record without taking any lock.  The layout is specified in
docs/beostat-shm.md; L{HEADER} and L{FIXED} are its executable form.

One process writes (L{ShmWriter}); any number read (L{ShmFile}, and the
libbeostat-style API in L{sysmon.beostat.reader}).  The file grows by
writing a bigger file beside it and renaming it over the old one; the old
mapping is then flagged C{REPLACED} so that readers re-open the path.

This module does no networking and imports nothing from Twisted: readers
are plain programs.
"""

from __future__ import annotations

import functools
import ipaddress
import mmap
import os
import struct
import time
from typing import Callable, Iterator

import attrs

from sysmon.beostat.records import IFNAMSIZ, CpuTicks, FileSystem, Interface, Load, Memory

__all__ = [
    "DEFAULT_MAX_CPUS",
    "DEFAULT_MAX_INTERFACES",
    "DEFAULT_SLOTS",
    "FIXED",
    "HEADER",
    "LayoutError",
    "NodeRecord",
    "ShmFile",
    "ShmWriter",
    "defaultPath",
]

MAGIC = b"BEOSTAT\0"
VERSION = 1
HEADER_SIZE = 256
FIXED_SIZE = 512
DEFAULT_SLOTS = 16
DEFAULT_MAX_CPUS = 64
DEFAULT_MAX_INTERFACES = 16
#: Node number of slot 0: the master.
FIRST_NODE = -1

# Header flags.
REPLACED = 0x1

# Record states.
EMPTY, UP, DOWN = 0, 1, 2
STATE_NAMES = {EMPTY: "empty", UP: "up", DOWN: "down"}

# Record sources.
SENDSTATS, GMOND = 1, 2
SOURCE_NAMES = {0: "-", SENDSTATS: "sendstats", GMOND: "gmond"}

# Bits of a record's "valid" word: which parts hold data.
V_CPUINFO, V_TICKS, V_MEMORY, V_LOAD, V_NET, V_ROOTFS, V_USAGE, V_RATES = (
    1 << i for i in range(8))

#: The file header.  Little-endian, no padding.
HEADER = struct.Struct("<8sIIIIIIIIQdddi")
H_FLAGS = 32
H_GENERATION = 40
H_LAST_REQUEST = 48
H_HEARTBEAT = 64

#: The fixed part of a record.  Little-endian, every field naturally aligned.
FIXED = struct.Struct(
    "<I"        # 0   seq (seqlock: odd while being written)
    "B"         # 4   state
    "B"         # 5   source
    "H"         # 6   cpus stored
    "i"         # 8   node
    "I"         # 12  interval, ms
    "d"         # 16  updated
    "d"         # 24  first seen
    "d"         # 32  sender time
    "16s"       # 40  address
    "16s"       # 56  boot id
    "64s"       # 72  host name
    "64s"       # 136 CPU model
    "I"         # 200 sequence
    "I"         # 204 packets
    "I"         # 208 lost
    "I"         # 212 valid
    "I"         # 216 CPU count
    "f"         # 220 MHz
    "f"         # 224 CPU usage
    "I"         # 228 interfaces stored
    "8Q"        # 232 ticks
    "7Q"        # 296 memory
    "3f"        # 352 loads
    "3I"        # 364 running, total, last pid
    "4d"        # 376 rx, tx bytes/s; rx, tx packets/s
    "6Q"        # 408 root fs
    "I"         # 456 interfaces on the node
    "I"         # 460 origin of the node number
)
F_STATE = 4
F_UPDATED = 16
F_MHZ = 220
F_USAGE = 224
F_TICKS = 232
F_LOADS = 352
F_RATES = 376
CPU_ENTRY = struct.Struct("<f8I")
INTERFACE_ENTRY = struct.Struct("<16s8Q")
_SEQ = struct.Struct("<I")
_ZERO16 = b"\0" * 16


class LayoutError(Exception):
    """
    The file is not a version-1 beostat file, or its header is damaged.
    """


def defaultPath() -> str:
    """
    C{/var/shm/beostat} where C{/var/shm} exists (the original's place),
    else C{/dev/shm/beostat}.
    """
    if os.path.isdir("/var/shm"):
        return "/var/shm/beostat"
    return "/dev/shm/beostat"


@functools.lru_cache(maxsize=65536)
def _packAddress(address: str) -> bytes:
    if not address:
        return _ZERO16
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv4Address):
        return b"\0" * 10 + b"\xff\xff" + parsed.packed
    return parsed.packed


def _unpackAddress(raw: bytes) -> str:
    if raw == _ZERO16:
        return ""
    parsed = ipaddress.IPv6Address(raw)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


@functools.lru_cache(maxsize=65536)
def _packText(text: str, size: int) -> bytes:
    raw = text.encode("utf-8", "replace")[: size - 1]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def _unpackText(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@attrs.define
class Layout:
    """
    The geometry of one file: slots and the per-record limits.
    """

    slots: int
    maxCpus: int
    maxInterfaces: int

    @property
    def cpuOffset(self) -> int:
        return FIXED_SIZE

    @property
    def interfaceOffset(self) -> int:
        return (FIXED_SIZE + self.maxCpus * CPU_ENTRY.size + 7) & ~7

    @property
    def recordSize(self) -> int:
        end = self.interfaceOffset + self.maxInterfaces * INTERFACE_ENTRY.size
        return (end + 63) & ~63

    @property
    def fileSize(self) -> int:
        return HEADER_SIZE + self.slots * self.recordSize

    def recordOffset(self, node: int) -> int:
        return HEADER_SIZE + (node - FIRST_NODE) * self.recordSize


@attrs.define
class NodeRecord:
    """
    Everything the file holds for one node.

    @ivar node: the node number (-1: the master).
    @ivar state: L{EMPTY}, L{UP} or L{DOWN}.
    @ivar source: L{SENDSTATS} or L{GMOND}.
    @ivar interval: the node's reporting interval, seconds.
    @ivar updated: when recvstats last heard from it (recvstats' clock).
    @ivar firstSeen: when recvstats first heard from it.
    @ivar senderTime: the timestamp of its last message (its own clock).
    @ivar address: its IP address.
    @ivar cpuUsage: busy fraction of all its CPUs, or L{None}.
    @ivar cpuUsages: the busy fraction of each CPU, or L{None}, at most the
        file's limit of CPUs.
    @ivar cpuTicks: their tick counters laid flat, eight per CPU in
        L{CPU_TICK_FIELDS} order (the file keeps the low 32 bits): recvstats
        works on whole rows of CPUs at once.  L{cpus} is the same per CPU.
    @ivar ticks: the node's C{cpu} line of C{/proc/stat}.
    @ivar rates: C{(rx, tx bytes/s, rx, tx packets/s)} or L{None}.
    @ivar cpuCount: how many CPUs it has (may exceed C{len(cpus)}).
    @ivar interfaceCount: how many interfaces it has (may exceed
        C{len(interfaces)}).
    @ivar origin: where its node number came from: 0 the sender, 1 the
        host directory, 2 C{--ip-base}, 3 handed out by recvstats.
    """

    node: int
    state: int = EMPTY
    source: int = 0
    interval: float = 0.0
    updated: float = 0.0
    firstSeen: float = 0.0
    senderTime: float = 0.0
    address: str = ""
    bootId: bytes = _ZERO16
    hostname: str = ""
    model: str = ""
    sequence: int = 0
    packets: int = 0
    lost: int = 0
    cpuCount: int = 0
    mhz: float | None = None
    cpuUsage: float | None = None
    ticks: CpuTicks | None = None
    memory: Memory | None = None
    load: Load | None = None
    rates: tuple[float, float, float, float] | None = None
    rootfs: FileSystem | None = None
    cpuUsages: list[float | None] = attrs.Factory(list)
    cpuTicks: list[int] = attrs.Factory(list)
    interfaceCount: int = 0
    interfaces: list[Interface] | None = None
    origin: int = 0

    @property
    def cpus(self) -> list[tuple[float | None, CpuTicks]]:
        """
        C{(usage or None, ticks)} per CPU.
        """
        ticks = self.cpuTicks
        return [(usage, CpuTicks(*ticks[8 * i:8 * i + 8]))
                for i, usage in enumerate(self.cpuUsages)]

    @cpus.setter
    def cpus(self, rows: list[tuple[float | None, CpuTicks]]) -> None:
        self.cpuUsages = [usage for usage, _ in rows]
        self.cpuTicks = [value for _, ticks in rows for value in CpuTicks(*ticks)]

    def valid(self) -> int:
        """
        The record's valid bits.
        """
        return ((V_CPUINFO if self.mhz is not None else 0)
                | (V_TICKS if self.ticks is not None else 0)
                | (V_MEMORY if self.memory is not None else 0)
                | (V_LOAD if self.load is not None else 0)
                | (V_NET if self.interfaces is not None else 0)
                | (V_ROOTFS if self.rootfs is not None else 0)
                | (V_USAGE if self.cpuUsage is not None else 0)
                | (V_RATES if self.rates is not None else 0))


# The fixed part cut into the pieces that change together, so that a write
# can replace only what a message changed (ShmWriter.write's "parts").
# Their formats, in order, make FIXED (checked below).
_STATUS = struct.Struct("<BBHiIddd")        # 4: state ... sender time
_IDENTITY = struct.Struct("<16s16s64s64s")  # 40: address, boot id, host, model
_COUNTS = struct.Struct("<IIIIIffI")        # 200: sequence ... interfaces stored
_TICKS = struct.Struct("<8Q")               # 232
_MEMORY = struct.Struct("<7Q")              # 296
_LOAD = struct.Struct("<3f3I")              # 352
_RATES = struct.Struct("<4d")               # 376
_ROOTFS = struct.Struct("<6Q")              # 408
_TAIL = struct.Struct("<II")                # 456: interfaces on the node, origin
_PIECES = (_STATUS, _IDENTITY, _COUNTS, _TICKS, _MEMORY, _LOAD, _RATES, _ROOTFS, _TAIL)
(_AT_STATUS, _AT_IDENTITY, _AT_COUNTS, _AT_TICKS, _AT_MEMORY, _AT_LOAD, _AT_RATES, _AT_ROOTFS,
 _AT_TAIL) = (4 + sum(p.size for p in _PIECES[:i]) for i in range(len(_PIECES)))

#: Parts of a record that L{ShmWriter.write} can replace by themselves
#: (the status fields -- state, times, counts, usage -- always go).
(PART_IDENTITY, PART_TICKS, PART_MEMORY, PART_LOAD, PART_RATES, PART_ROOTFS, PART_CPUS,
 PART_INTERFACES) = (1 << i for i in range(8))
ALL_PARTS = (1 << 8) - 1

_ZERO_TICKS = (0,) * 8
_ZERO_RATES = (0.0, 0.0, 0.0, 0.0)
_NO_MEMORY = Memory()
_NO_LOAD = Load()
_NO_ROOTFS = FileSystem()
_U64 = 0xFFFFFFFFFFFFFFFF
_U32 = 0xFFFFFFFF


def _statusValues(record: NodeRecord, layout: Layout) -> tuple:
    return (record.state, record.source, min(len(record.cpuUsages), layout.maxCpus),
            record.node, round(record.interval * 1000), record.updated, record.firstSeen,
            record.senderTime)


def _identityValues(record: NodeRecord, layout: Layout) -> tuple:
    return (_packAddress(record.address), record.bootId, _packText(record.hostname, 64),
            _packText(record.model, 64))


def _countValues(record: NodeRecord, layout: Layout) -> tuple:
    usage = record.cpuUsage
    return (record.sequence & _U32, record.packets & _U32, record.lost & _U32,
            record.valid(), record.cpuCount, _f32(record.mhz or 0.0),
            -1.0 if usage is None else _f32(usage),
            min(len(record.interfaces or ()), layout.maxInterfaces))


def _ticksValues(record: NodeRecord, layout: Layout) -> tuple:
    return record.ticks or _ZERO_TICKS


def _memoryValues(record: NodeRecord, layout: Layout) -> tuple:
    return record.memory or _NO_MEMORY


def _loadValues(record: NodeRecord, layout: Layout) -> tuple:
    load = record.load or _NO_LOAD
    return (_f32(load.one), _f32(load.five), _f32(load.fifteen),
            load.running, load.total, load.lastPid)


def _ratesValues(record: NodeRecord, layout: Layout) -> tuple:
    return record.rates or _ZERO_RATES


def _rootfsValues(record: NodeRecord, layout: Layout) -> tuple:
    return record.rootfs or _NO_ROOTFS


def _tailValues(record: NodeRecord, layout: Layout) -> tuple:
    return record.interfaceCount, record.origin


#: C{(part bit or 0 for always, offset, struct, values function)} of the
#: fixed part, in the record's order.
_FIXED_PIECES = (
    (0, _AT_STATUS, _STATUS, _statusValues),
    (PART_IDENTITY, _AT_IDENTITY, _IDENTITY, _identityValues),
    (0, _AT_COUNTS, _COUNTS, _countValues),
    (PART_TICKS, _AT_TICKS, _TICKS, _ticksValues),
    (PART_MEMORY, _AT_MEMORY, _MEMORY, _memoryValues),
    (PART_LOAD, _AT_LOAD, _LOAD, _loadValues),
    (PART_RATES, _AT_RATES, _RATES, _ratesValues),
    (PART_ROOTFS, _AT_ROOTFS, _ROOTFS, _rootfsValues),
    (0, _AT_TAIL, _TAIL, _tailValues),
)


def _pack(st: struct.Struct, values: tuple) -> bytes:
    """
    C{values} packed by C{st}; numbers out of the field's range (a gmond
    figure, a counter past 2**64) are clamped to it rather than refused.
    """
    try:
        return st.pack(*values)
    except (struct.error, OverflowError):
        return st.pack(*[_clampTo(code, v) for code, v in zip(_codes(st), values)])


@functools.lru_cache(maxsize=None)
def _codes(st: struct.Struct) -> str:
    """
    One format letter per value of C{st} ("<3f" -> "fff").
    """
    codes = ""
    count = ""
    for c in st.format.lstrip("<>!=@"):
        if c.isdigit():
            count += c
            continue
        codes += c * (1 if c == "s" else int(count or 1))
        count = ""
    return codes


def _clampTo(code: str, value):
    if code == "Q":
        return min(max(int(value), 0), _U64)
    if code == "I":
        return min(max(int(value), 0), _U32)
    if code == "i":
        return min(max(int(value), -0x80000000), 0x7FFFFFFF)
    if code == "H":
        return min(max(int(value), 0), 0xFFFF)
    if code == "B":
        return min(max(int(value), 0), 0xFF)
    if code == "f":
        return _f32(value)
    return value


#: The parts whose fields, with the counts before and the tail after, make
#: one contiguous run (offsets 200-464): a status message usually changes
#: them all, and one pack of the run is cheaper than seven.
_RUN_PARTS = PART_TICKS | PART_MEMORY | PART_LOAD | PART_RATES | PART_ROOTFS
_RUN = struct.Struct("<" + "".join(p.format[1:] for p in _PIECES[2:]))


def _recordPieces(record: NodeRecord, layout: Layout, parts: int) -> list:
    """
    C{(offset in the record, bytes)} of the status fields and of the
    C{parts} of C{record}, packed (before the record is locked).
    """
    if parts & _RUN_PARTS == _RUN_PARTS:
        pieces = [
            (_AT_STATUS, _pack(_STATUS, _statusValues(record, layout))),
            (_AT_COUNTS, _pack(_RUN, (
                *_countValues(record, layout), *_ticksValues(record, layout),
                *_memoryValues(record, layout), *_loadValues(record, layout),
                *_ratesValues(record, layout), *_rootfsValues(record, layout),
                *_tailValues(record, layout)))),
        ]
        if parts & PART_IDENTITY:
            pieces.append((_AT_IDENTITY, _pack(_IDENTITY, _identityValues(record, layout))))
    else:
        pieces = [(at, _pack(st, values(record, layout)))
                  for part, at, st, values in _FIXED_PIECES if not part or parts & part]
    if parts & PART_CPUS:
        pieces.append((layout.cpuOffset, _cpuEntries(record, layout)))
    if parts & PART_INTERFACES:
        pieces.append((layout.interfaceOffset, _interfaceEntries(record, layout)))
    return pieces


def _cpuEntries(record: NodeRecord, layout: Layout) -> bytes | bytearray:
    """
    The per-CPU entries of C{record}, packed (empty when it has none).
    """
    usages = record.cpuUsages[:layout.maxCpus]
    count = len(usages)
    if not count:
        return b""
    ticks = record.cpuTicks[:8 * count]
    if len(ticks) < 8 * count:
        ticks = ticks + [0] * (8 * count - len(ticks))
    tickStruct, usageStruct = _cpuColumns(count)
    try:
        packedTicks = tickStruct.pack(*ticks)
    except struct.error:  # the file keeps the low 32 bits
        packedTicks = tickStruct.pack(*[t & _U32 for t in ticks])
    packedUsages = usageStruct.pack(*[-1.0 if u is None else u for u in usages])  # fit f32
    # The entries interleave a usage and eight counters per CPU: move
    # 4-byte words with strided copies rather than a Python loop per CPU.
    entries = bytearray(CPU_ENTRY.size * count)
    words = memoryview(entries).cast("I")
    words[0::9] = memoryview(packedUsages).cast("I")
    source = memoryview(packedTicks).cast("I")
    for k in range(8):
        words[k + 1::9] = source[k::8]
    return entries


@functools.lru_cache(maxsize=None)
def _cpuColumns(count: int) -> tuple[struct.Struct, struct.Struct]:
    return struct.Struct(f"<{8 * count}I"), struct.Struct(f"<{count}f")


def _interfaceEntries(record: NodeRecord, layout: Layout) -> bytes:
    """
    The interface entries of C{record}, packed.
    """
    return b"".join(_pack(INTERFACE_ENTRY, (_packText(i.name, IFNAMSIZ), *i[1:]))
                    for i in (record.interfaces or ())[:layout.maxInterfaces])


_F32_MAX = 3.4028234663852886e38


def _f32(value: float) -> float:
    if -_F32_MAX <= value <= _F32_MAX:
        return value
    return min(max(value, -_F32_MAX), _F32_MAX) if value == value else 0.0


def parseRecord(data: bytes | memoryview, layout: Layout) -> NodeRecord:
    """
    A record from its bytes (a consistent copy: see L{ShmFile.read}).
    """
    v = FIXED.unpack_from(data, 0)
    valid = v[16]
    nCpus = min(v[3], layout.maxCpus)
    nIfaces = min(v[20], layout.maxInterfaces)
    entries = _cpuStruct(nCpus).unpack_from(data, layout.cpuOffset) if nCpus else ()
    usages = [None if usage < 0 else usage for usage in entries[0::9]]
    ticks = [0] * (8 * nCpus)
    for k in range(8):
        ticks[k::8] = entries[k + 1::9]
    interfaces = []
    for i in range(nIfaces):
        name, *counters = INTERFACE_ENTRY.unpack_from(
            data, layout.interfaceOffset + i * INTERFACE_ENTRY.size)
        interfaces.append(Interface(_unpackText(name), *counters))
    return NodeRecord(
        node=v[4], state=v[1], source=v[2], interval=v[5] / 1000, updated=v[6],
        firstSeen=v[7], senderTime=v[8], address=_unpackAddress(v[9]), bootId=v[10],
        hostname=_unpackText(v[11]), model=_unpackText(v[12]), sequence=v[13],
        packets=v[14], lost=v[15], cpuCount=v[17],
        mhz=v[18] if valid & V_CPUINFO else None,
        cpuUsage=v[19] if valid & V_USAGE and v[19] >= 0 else None,
        ticks=CpuTicks(*v[21:29]) if valid & V_TICKS else None,
        memory=Memory(*v[29:36]) if valid & V_MEMORY else None,
        load=Load(*v[36:42]) if valid & V_LOAD else None,
        rates=tuple(v[42:46]) if valid & V_RATES else None,
        rootfs=FileSystem(*v[46:52]) if valid & V_ROOTFS else None,
        cpuUsages=usages, cpuTicks=ticks, interfaceCount=v[52],
        interfaces=interfaces if valid & V_NET else None, origin=v[53],
    )


def _readHeader(mm: mmap.mmap | bytes) -> tuple:
    if len(mm) < HEADER_SIZE:
        raise LayoutError("shorter than a header")
    fields = HEADER.unpack_from(mm, 0)
    magic, version, headerSize, recordSize, slots, maxCpus, maxIfaces = fields[:7]
    if magic != MAGIC:
        raise LayoutError("not a beostat file (bad magic)")
    if version != VERSION or headerSize != HEADER_SIZE:
        raise LayoutError(f"version {version}, header size {headerSize}: not understood")
    layout = Layout(slots, maxCpus, maxIfaces)
    if layout.recordSize != recordSize or len(mm) < layout.fileSize:
        raise LayoutError("record size or file size does not match the header")
    return fields


class ShmFile:
    """
    A read-only mapping of the file, re-opened when the writer replaces it.
    Single-threaded: use one per thread.

    @ivar layout: the geometry of the current mapping.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or defaultPath()
        self._mm: mmap.mmap | None = None
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise LayoutError(f"{self.path}: shorter than a header")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        try:
            fields = _readHeader(mm)
        except LayoutError as e:
            mm.close()
            raise LayoutError(f"{self.path}: {e}") from None
        if self._mm is not None:
            self._mm.close()
        self._mm = mm
        self.layout = Layout(fields[4], fields[5], fields[6])

    def close(self) -> None:
        """
        Unmap.
        """
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def fresh(self) -> mmap.mmap:
        """
        The current mapping, re-opened first if the writer has replaced the
        file.
        """
        mm = self._mm
        if mm is None:
            raise LayoutError("closed")
        if _SEQ.unpack_from(mm, H_FLAGS)[0] & REPLACED:
            self._open()
            mm = self._mm
        return mm

    def header(self) -> dict:
        """
        The header's fields by name.
        """
        fields = HEADER.unpack_from(self.fresh(), 0)
        names = ("magic", "version", "headerSize", "recordSize", "slots", "maxCpus",
                 "maxInterfaces", "flags", "writerPid", "generation", "lastRequest",
                 "created", "heartbeat", "firstNode")
        return dict(zip(names, fields))

    def nodes(self) -> range:
        """
        The node numbers the file has slots for.
        """
        self.fresh()
        return range(FIRST_NODE, FIRST_NODE + self.layout.slots)

    def consistent(self, node: int, read: Callable[[mmap.mmap, int], object],
                   tries: int = 100000) -> object:
        """
        C{read(mapping, recordOffset)} under the record's seqlock: retried
        until no write overlapped it.

        @raise IndexError: the file has no slot for C{node}.
        """
        mm = self.fresh()
        layout = self.layout
        if not FIRST_NODE <= node < FIRST_NODE + layout.slots:
            raise IndexError(node)
        offset = layout.recordOffset(node)
        end = offset + 4
        # The seq is read with one 4-byte copy (struct unpacks byte by byte).
        for attempt in range(tries):
            before = mm[offset:end]
            if before[0] & 1:
                if attempt > 100:
                    time.sleep(0)
                continue
            value = read(mm, offset)
            if mm[offset:end] == before:
                return value
        raise TimeoutError(f"node {node}: record kept changing")

    def read(self, node: int, tries: int = 100000) -> NodeRecord:
        """
        A consistent copy of node C{node}'s record.
        """
        # The layout is looked at after consistent() re-opened a replaced file.
        raw = self.consistent(node, lambda mm, off: mm[off:off + self.layout.recordSize], tries)
        return parseRecord(raw, self.layout)

    def records(self, damaged: list[int] | None = None) -> Iterator[NodeRecord]:
        """
        Every record that is not empty.

        @param damaged: when given, records that stay locked (a writer died
            in the middle of one) are skipped and their node numbers added
            to it, instead of raising L{TimeoutError}.
        """
        for node in self.nodes():
            try:
                record = self.read(node, tries=100000 if damaged is None else 1000)
            except TimeoutError:
                if damaged is None:
                    raise
                damaged.append(node)
                continue
            if record.state != EMPTY:
                yield record


class ShmWriter:
    """
    The one writer of the file (recvstats).

    @param path: the file.
    @param slots: how many node slots to start with (the file grows).
    @param maxCpus: per-CPU entries kept per record.
    @param maxInterfaces: interface entries kept per record.
    @param clock: C{time.time}, for the header's timestamps.
    """

    def __init__(self, path: str, slots: int = DEFAULT_SLOTS, maxCpus: int = DEFAULT_MAX_CPUS,
                 maxInterfaces: int = DEFAULT_MAX_INTERFACES,
                 clock: Callable[[], float] = time.time) -> None:
        if slots < 1 or not 0 < maxCpus <= 0xFFFF or not 0 < maxInterfaces <= 0xFFFF:
            raise ValueError("slots, maxCpus and maxInterfaces must be positive")
        self.path = path
        self.clock = clock
        self.layout = Layout(slots, maxCpus, maxInterfaces)
        self._mm: mmap.mmap | None = None
        self.recovered: list[NodeRecord] = []
        self.damaged: list[int] = []

    # -- opening and growing --------------------------------------------

    def open(self) -> list[NodeRecord]:
        """
        Map the file: an existing file of the same record geometry is kept
        with its records (so a restarted recvstats keeps the cluster's
        state), anything else is replaced by a new, empty file.

        Records left locked by a writer that died in the middle of one are
        emptied and listed in C{damaged}.

        @return: the records found in a kept file.
        """
        wanted = self.layout
        try:
            old = ShmFile(self.path)
        except (OSError, LayoutError, ValueError):
            old = None
        if old is not None and (old.layout.maxCpus, old.layout.maxInterfaces) == (
                wanted.maxCpus, wanted.maxInterfaces):
            damaged: list[int] = []
            self.recovered = list(old.records(damaged))
            self.damaged = damaged
            slots = max(wanted.slots, old.layout.slots)
            old.close()
            if slots == old.layout.slots:
                self._map(os.open(self.path, os.O_RDWR), Layout(slots, wanted.maxCpus,
                                                                  wanted.maxInterfaces))
                self._setHeaderField("<I", 36, os.getpid())
                for node in damaged:
                    self.clear(node)
                return self.recovered
            self._replace(Layout(slots, wanted.maxCpus, wanted.maxInterfaces), self.recovered)
            return self.recovered
        if old is not None:
            old.close()
        self._replace(wanted, [])
        return []

    def _map(self, fd: int, layout: Layout) -> None:
        try:
            self._mm = mmap.mmap(fd, layout.fileSize, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.layout = layout

    def _replace(self, layout: Layout, records: list[NodeRecord],
                 copyFrom: mmap.mmap | None = None, oldLayout: Layout | None = None) -> None:
        """
        Write a new file of C{layout} beside the old one, fill it, rename it
        over the old one and flag the old mapping C{REPLACED}.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        temporary = os.path.join(directory, f".{os.path.basename(self.path)}.{os.getpid()}.new")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.ftruncate(fd, layout.fileSize)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        old = self._mm
        # A file left by an earlier recvstats is flagged too, so that its
        # readers re-open the path.
        previous = _openPrevious(self.path) if old is None else None
        generation = 0
        lastRequest = 0.0
        if old is not None:
            generation = struct.unpack_from("<Q", old, H_GENERATION)[0] + 1
            lastRequest = struct.unpack_from("<d", old, H_LAST_REQUEST)[0]
        elif previous is not None:
            generation = previous[1] + 1
            lastRequest = previous[2]
        self._map(fd, layout)
        mm = self._mm
        now = self.clock()
        mm[0:HEADER.size] = HEADER.pack(
            MAGIC, VERSION, HEADER_SIZE, layout.recordSize, layout.slots, layout.maxCpus,
            layout.maxInterfaces, 0, os.getpid(), generation, lastRequest, now, now, FIRST_NODE)
        if copyFrom is not None and oldLayout is not None:
            # Same record geometry: the records move over byte for byte.
            mm[HEADER_SIZE:oldLayout.fileSize] = copyFrom[HEADER_SIZE:oldLayout.fileSize]
        for record in records:
            self.write(record)
        os.rename(temporary, self.path)
        if old is not None:
            flags = struct.unpack_from("<I", old, H_FLAGS)[0] | REPLACED
            old[H_FLAGS:H_FLAGS + 4] = struct.pack("<I", flags)
            old.close()
        elif previous is not None:
            fd, _, _, flags = previous
            try:
                os.pwrite(fd, struct.pack("<I", flags | REPLACED), H_FLAGS)
            finally:
                os.close(fd)

    def grow(self, slots: int) -> None:
        """
        Make room for C{slots} slots (the file only grows).
        """
        if slots <= self.layout.slots:
            return
        old = self.layout
        self._replace(Layout(slots, old.maxCpus, old.maxInterfaces), [],
                      copyFrom=self._mm, oldLayout=old)

    def close(self) -> None:
        """
        Unmap; the file stays for readers.
        """
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    # -- writing ---------------------------------------------------------

    def _setHeaderField(self, fmt: str, offset: int, value: object) -> None:
        raw = struct.pack(fmt, value)
        self._mm[offset:offset + len(raw)] = raw

    def setLastRequest(self, when: float) -> None:
        """
        Record when recvstats last asked the nodes for updates.
        """
        self._setHeaderField("<d", H_LAST_REQUEST, when)

    def heartbeat(self, when: float) -> None:
        """
        Record that recvstats is alive (readers may warn when this is old).
        """
        self._setHeaderField("<d", H_HEARTBEAT, when)

    def _image(self, record: NodeRecord, layout: Layout) -> bytearray:
        """
        The record's bytes (its seq field left 0), built apart from the
        mapping so that nothing can fail half-way through a locked write.
        """
        image = bytearray(layout.recordSize)
        for at, data in _recordPieces(record, layout, ALL_PARTS):
            image[at:at + len(data)] = data
        return image

    def _locked(self, offset: int, size: int, body: bytes | bytearray) -> None:
        """
        Replace C{size - 4} bytes after a record's seq under its seqlock.
        (Slice assignment copies; C{struct.pack_into} would first zero its
        target, making the seq even for a moment.)
        """
        self._lockedPieces(offset, [(4, body)])

    def _lockedPieces(self, offset: int, pieces: list) -> None:
        """
        Replace C{(offset in the record, bytes)} pieces of the record at
        C{offset} under its seqlock.
        """
        mm = self._mm
        seq = _SEQ.unpack_from(mm, offset)[0]
        if seq & 1:  # a writer died mid-record: start even again
            seq += 1
        mm[offset:offset + 4] = _SEQ.pack((seq + 1) & 0xFFFFFFFF)
        for at, data in pieces:
            at += offset
            mm[at:at + len(data)] = data
        mm[offset:offset + 4] = _SEQ.pack((seq + 2) & 0xFFFFFFFF)

    def write(self, record: NodeRecord, parts: int = ALL_PARTS) -> None:
        """
        Store C{record} in its node's slot, growing the file when the node
        number is beyond it.  Readers never see a half-written record.

        @param parts: the L{PART_IDENTITY}... bits of what changed since this
            writer last wrote the record: the rest of the slot is left as
            it is (recvstats' per-packet path).  Only L{ALL_PARTS}, the
            default, rewrites the whole slot; it must be the first write of
            a record, and the write after its number of CPUs or interfaces
            shrank.
        """
        node = record.node
        if node < FIRST_NODE:
            raise ValueError(f"node {node} is below {FIRST_NODE}")
        layout = self.layout
        if parts == ALL_PARTS or node - FIRST_NODE >= layout.slots:
            image = self._image(record, layout)
            if node - FIRST_NODE >= layout.slots:
                self.grow(max(node - FIRST_NODE + 1, layout.slots * 2))
                layout = self.layout
            self._locked(layout.recordOffset(node), layout.recordSize, memoryview(image)[4:])
            return
        self._lockedPieces(layout.recordOffset(node), _recordPieces(record, layout, parts))

    def setState(self, node: int, state: int) -> None:
        """
        Change only a record's state (up/down), under its seqlock.
        """
        mm = self._mm
        offset = self._slot(node)
        seq = _SEQ.unpack_from(mm, offset)[0] | 1
        mm[offset:offset + 4] = _SEQ.pack(seq)
        mm[offset + F_STATE] = state
        mm[offset:offset + 4] = _SEQ.pack((seq + 1) & 0xFFFFFFFF)

    def clear(self, node: int) -> None:
        """
        Empty a node's slot (the node was forgotten).
        """
        layout = self.layout
        self._locked(self._slot(node), layout.recordSize, bytes(layout.recordSize - 4))

    def _slot(self, node: int) -> int:
        """
        The offset of node C{node}'s record.

        @raise IndexError: the file has no slot for it.
        """
        if not FIRST_NODE <= node < FIRST_NODE + self.layout.slots:
            raise IndexError(f"node {node}: no such slot")
        return self.layout.recordOffset(node)


def _openPrevious(path: str) -> tuple[int, int, float, int] | None:
    """
    An existing beostat file at C{path}, opened for writing its flags:
    C{(fd, generation, lastRequest, flags)}, or L{None}.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    header = os.pread(fd, HEADER.size, 0)
    if len(header) < HEADER.size or header[:8] != MAGIC:
        os.close(fd)
        return None
    fields = HEADER.unpack(header)
    return fd, fields[9], fields[10], fields[7]


_cpuStructs: dict[int, struct.Struct] = {}


def _cpuStruct(count: int) -> struct.Struct:
    s = _cpuStructs.get(count)
    if s is None:
        s = _cpuStructs[count] = struct.Struct("<" + "f8I" * count)
    return s


assert HEADER.size == 76 and FIXED.size == 464, (HEADER.size, FIXED.size)
assert "<I" + "".join(p.format[1:] for p in _PIECES) == FIXED.format.replace(" ", "")
assert (_AT_TICKS, _AT_LOAD, _AT_RATES, _AT_TAIL + _TAIL.size) == (
    F_TICKS, F_LOADS, F_RATES, FIXED.size)
