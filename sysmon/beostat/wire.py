"""
The sendstats/recvstats wire format, version 2: a pure codec, no I/O.

A datagram is a 48-byte header, a run of typed, length-prefixed sections,
and, when signed, a 32-byte HMAC-SHA-256 trailer.  Status messages carry a
node's C{/proc} figures; a node too big for one datagram (many CPUs or
interfaces) sends several parts that share a sequence number and are each
complete in themselves, so a receiver applies them one by one.  The
master's update-request and set-rate messages are a header alone.

Messages and blocks are plain attrs classes, not frozen ones, for speed
(see L{sysmon.beostat.records}); nothing changes them once made.

The format is specified in docs/beostat-wire.md; this module is its
reference implementation.  L{decode} is bounded by the datagram and raises
L{WireError} (or its subclasses L{Unsigned} and L{BadSignature}), and only
that, on bad input.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final, Iterable, Sequence

import attrs

from sysmon.beostat.records import (
    IFNAMSIZ,
    CpuInfo,
    CpuTicks,
    FileSystem,
    Interface,
    Load,
    Memory,
)

__all__ = [
    "CpuBlock",
    "DEFAULT_PORT",
    "DEFAULT_GROUP",
    "HEADER_SIZE",
    "MAX_DATAGRAM",
    "Message",
    "NetBlock",
    "SET_RATE",
    "SIGNATURE_SIZE",
    "STATUS",
    "UPDATE_REQUEST",
    "BadSignature",
    "Unsigned",
    "WireError",
    "decode",
    "encode",
    "encodeStatus",
]

MAGIC: Final = b"BEOS"
VERSION: Final = 2
DEFAULT_PORT: Final = 3040
DEFAULT_GROUP: Final = "239.192.3.40"
#: Ethernet MTU less IPv4 and UDP headers.
MAX_DATAGRAM: Final = 1472

STATUS: Final = 1
UPDATE_REQUEST: Final = 2
SET_RATE: Final = 3
_TYPES = {STATUS: "status", UPDATE_REQUEST: "update-request", SET_RATE: "set-rate"}

FLAG_SIGNED: Final = 0x01
FLAG_MULTICAST: Final = 0x02

# magic, version, type, flags, reserved, node, boot id, sequence,
# timestamp (us), interval (ms), part, parts, payload length
_HEADER = struct.Struct(">4sBBBBi16sIQIBBH")
HEADER_SIZE: Final = _HEADER.size
SIGNATURE_SIZE: Final = 32
_SECTION = struct.Struct(">HH")

SEC_HOST: Final = 1
SEC_CPUINFO: Final = 2
SEC_CPUTOTAL: Final = 3
SEC_CPUS: Final = 4
SEC_MEMORY: Final = 5
SEC_LOAD: Final = 6
SEC_NET: Final = 7
SEC_ROOTFS: Final = 8

_CPUINFO = struct.Struct(">Hf")
_CPUS = struct.Struct(">HHHI")
_LOAD = struct.Struct(">fffIII")
_NET = struct.Struct(">HHH")
# Big counters are fixed-width: one unpack instead of a loop per byte
# (version 1 carried them as varints).
_TICKS = struct.Struct(">8Q")
_MEMORY = struct.Struct(">7Q")
_ROOTFS = struct.Struct(">6Q")
_COUNTERS = struct.Struct(">8Q")
_U64 = (1 << 64) - 1
#: A named tuple from a tuple of its fields, without its class's argument
#: handling (the decoder makes several per datagram).
_newTuple = tuple.__new__
#: An interface row after its name-length byte, by name length.
_ROWS = [struct.Struct(f">{size}s8Q") for size in range(IFNAMSIZ)]
_U32 = (1 << 32) - 1
_MAX_TEXT = 255
_VARINT_MAX = (1 << 64) - 1


class WireError(ValueError):
    """
    A datagram that is not a valid version-2 message; the text says why.
    """


class Unsigned(WireError):
    """
    A key is configured and the datagram carries no signature.
    """


class BadSignature(WireError):
    """
    A key is configured and the datagram's signature does not match it.
    """


@attrs.define(unsafe_hash=True)
class CpuBlock:
    """
    Per-CPU tick counters for CPUs C{first} to C{first + count - 1}, kept
    flat (eight counters per CPU, in L{CPU_TICK_FIELDS} order) as the wire
    carries them: recvstats works on the flat row without making an object
    per CPU.

    @ivar total: how many CPUs the node has (this block may hold a part).
    @ivar first: index of the first CPU in the block.
    @ivar base: 0 when the counters are counters since boot; otherwise the
        sequence number of the sender's earlier status message that they
        are increments from.
    @ivar values: C{8 * count} counters (C{bytes} when every one is below
        128, as increments usually are: the datagram's own bytes).
    """

    total: int
    first: int
    base: int
    values: Sequence[int] = attrs.field(eq=tuple)  # bytes when all are small

    @classmethod
    def fromTicks(cls, total: int, first: int, base: int,
                  ticks: Iterable[CpuTicks]) -> CpuBlock:
        """
        A block from one L{CpuTicks} per CPU.
        """
        values: list[int] = []
        for row in ticks:
            values.extend(row)
        return cls(total=total, first=first, base=base, values=tuple(values))

    @property
    def count(self) -> int:
        """
        How many CPUs the block holds.
        """
        return len(self.values) // 8

    @property
    def ticks(self) -> tuple[CpuTicks, ...]:
        """
        One L{CpuTicks} per CPU.
        """
        v = self.values
        return tuple(_newTuple(CpuTicks, v[i:i + 8]) for i in range(0, len(v), 8))


@attrs.define(unsafe_hash=True)
class NetBlock:
    """
    Rows C{first} to C{first + len(interfaces) - 1} of the node's
    C{/proc/net/dev}, which has C{total} rows.
    """

    total: int
    first: int
    interfaces: tuple[Interface, ...]


@attrs.define(unsafe_hash=True)
class Message:
    """
    One datagram.

    @ivar type: L{STATUS}, L{UPDATE_REQUEST} or L{SET_RATE}.
    @ivar node: for a status, the sender's node number (-1: derive it from
        my address); for a request, the node it is for (-1: every node).
    @ivar bootId: 16 bytes naming the sender's boot (status) or the
        requesting recvstats instance.
    @ivar sequence: the sender's message counter (parts share one).
    @ivar timestamp: the sender's clock, seconds since the epoch.
    @ivar interval: status: the sender's reporting interval, seconds;
        set-rate: the interval asked for.
    @ivar multicast: the sender sent this to the multicast group.
    @ivar signed: the datagram carried a signature that was checked.
    """

    type: int
    node: int = -1
    bootId: bytes = b"\0" * 16
    sequence: int = 0
    timestamp: float = 0.0
    interval: float = 0.0
    part: int = 0
    parts: int = 1
    multicast: bool = False
    signed: bool = False
    hostname: str | None = None
    cpuInfo: CpuInfo | None = None
    cpuTotal: CpuTicks | None = None
    cpus: CpuBlock | None = None
    memory: Memory | None = None
    load: Load | None = None
    net: NetBlock | None = None
    rootfs: FileSystem | None = None

    @property
    def typeName(self) -> str:
        """
        The message type's name, for logs.
        """
        return _TYPES.get(self.type, str(self.type))


# -- varints (unsigned LEB128) --------------------------------------------

def _varints(values: Iterable[int]) -> bytes:
    out = bytearray()
    for value in values:
        if value < 0:
            value = 0
        elif value > _VARINT_MAX:
            value = _VARINT_MAX
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _readVarints(data: bytes, offset: int, end: int,
                 count: int) -> tuple[Sequence[int], int]:
    """
    C{count} varints from C{data[offset:end]}; returns them and the offset
    after the last one.
    """
    # Fast path: a run of one-byte varints (small increments) is its bytes,
    # returned as they are (bytes are a sequence of numbers).
    stop = offset + count
    if count and stop <= end:
        run = data[offset:stop]
        if max(run) < 0x80:
            return run, stop
    values: list[int] = []
    append = values.append
    try:
        for _ in range(count):
            byte = data[offset]
            offset += 1
            if byte < 0x80:
                append(byte)
                continue
            value = byte & 0x7F
            shift = 7
            while True:
                byte = data[offset]
                offset += 1
                value |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise WireError("number longer than 64 bits")
            if value > _VARINT_MAX:
                raise WireError("number longer than 64 bits")
            append(value)
    except IndexError:
        raise WireError("truncated number") from None
    if offset > end:
        raise WireError("truncated number")
    return values, offset


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"{what} is not UTF-8") from None


def _clip(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")


# -- sections --------------------------------------------------------------

def _section(kind: int, body: bytes) -> bytes:
    return _SECTION.pack(kind, len(body)) + body


def _u64s(values: Iterable[int]) -> list[int]:
    return [0 if v < 0 else _U64 if v > _U64 else v for v in values]


def _u32(value: int) -> int:
    return 0 if value < 0 else _U32 if value > _U32 else value


def _interfaceBytes(interface: Interface) -> bytes:
    # procfs keeps the kernel's bytes of odd names as surrogate escapes.
    name = interface.name.encode("utf-8", "surrogateescape")[: IFNAMSIZ - 1]
    return bytes([len(name)]) + name + _COUNTERS.pack(*_u64s(interface.counters()))


def _cpuBytes(ticks: Sequence[int]) -> bytes:
    return _varints(ticks)


def _cpuRows(block: CpuBlock) -> list[bytes]:
    v = block.values
    return [_cpuBytes(v[i:i + 8]) for i in range(0, len(v), 8)]


def _fixedSections(message: Message) -> list[bytes]:
    sections = []
    if message.hostname is not None:
        sections.append(_section(SEC_HOST, _clip(message.hostname, _MAX_TEXT)))
    if message.cpuInfo is not None:
        info = message.cpuInfo
        sections.append(_section(
            SEC_CPUINFO,
            _CPUINFO.pack(min(info.count, 0xFFFF), info.mhz) + _clip(info.model, _MAX_TEXT),
        ))
    if message.cpuTotal is not None:
        sections.append(_section(SEC_CPUTOTAL, _TICKS.pack(*_u64s(message.cpuTotal))))
    if message.memory is not None:
        m = message.memory
        sections.append(_section(SEC_MEMORY, _MEMORY.pack(*_u64s(m))))
    if message.load is not None:
        load = message.load
        sections.append(_section(SEC_LOAD, _LOAD.pack(
            load.one, load.five, load.fifteen,
            _u32(load.running), _u32(load.total), _u32(load.lastPid))))
    if message.rootfs is not None:
        fs = message.rootfs
        sections.append(_section(SEC_ROOTFS, _ROOTFS.pack(*_u64s(fs))))
    return sections


def _cpusSection(block: CpuBlock, items: Sequence[bytes]) -> bytes:
    # block.first is the first of items; the count is how many items.
    return _section(SEC_CPUS, _CPUS.pack(block.total, block.first, len(items), block.base)
                    + b"".join(items))


def _netSection(total: int, first: int, items: Sequence[bytes]) -> bytes:
    return _section(SEC_NET, _NET.pack(total, first, len(items)) + b"".join(items))


# -- whole datagrams ---------------------------------------------------------

def _frame(message: Message, payload: bytes, part: int, parts: int,
           key: bytes | None) -> bytes:
    flags = (FLAG_SIGNED if key is not None else 0) | (FLAG_MULTICAST if message.multicast else 0)
    header = _HEADER.pack(
        MAGIC, VERSION, message.type, flags, 0, message.node, message.bootId,
        message.sequence & 0xFFFFFFFF, max(0, int(message.timestamp * 1_000_000)),
        max(0, min(0xFFFFFFFF, round(message.interval * 1000))), part, parts, len(payload),
    )
    datagram = header + payload
    if key is not None:
        datagram += hmac.digest(key, datagram, hashlib.sha256)
    return datagram


def encode(message: Message, key: bytes | None = None) -> bytes:
    """
    One datagram holding everything in C{message}, signed with C{key} when
    given.  (Status messages that may not fit go through L{encodeStatus}.)
    """
    if len(message.bootId) != 16:
        raise ValueError("boot id must be 16 bytes")
    sections = _fixedSections(message)
    if message.cpus is not None:
        sections.append(_cpusSection(message.cpus, _cpuRows(message.cpus)))
    if message.net is not None:
        sections.append(_netSection(message.net.total, message.net.first,
                                    [_interfaceBytes(i) for i in message.net.interfaces]))
    return _frame(message, b"".join(sections), message.part, message.parts, key)


def encodeStatus(message: Message, key: bytes | None = None,
                 maxSize: int = MAX_DATAGRAM) -> list[bytes]:
    """
    A status message as one datagram if it fits in C{maxSize} bytes, else as
    parts: the first part holds the small sections, and the CPU and
    interface rows are spread over as many parts as needed, each part
    holding whole rows.

    @raise ValueError: a single row, or the small sections, cannot fit
        C{maxSize}, or more than 255 parts would be needed.
    """
    room = maxSize - HEADER_SIZE - (SIGNATURE_SIZE if key is not None else 0)
    fixed = _fixedSections(message)
    payloads: list[list[bytes]] = [list(fixed)]
    used = [sum(map(len, fixed))]
    if used[0] > room:
        raise ValueError("the fixed sections do not fit one datagram")

    def spread(items: list[bytes], overhead: int, make) -> None:
        index = 0
        while index < len(items):
            free = room - used[-1] - overhead
            take = 0
            size = 0
            while index + take < len(items) and size + len(items[index + take]) <= free:
                size += len(items[index + take])
                take += 1
            if take == 0:
                if used[-1] == 0:
                    raise ValueError("one row does not fit a datagram")
                payloads.append([])
                used.append(0)
                continue
            section = make(index, items[index:index + take])
            payloads[-1].append(section)
            used[-1] += len(section)
            index += take

    if message.cpus is not None:
        block = message.cpus
        spread(_cpuRows(block), _SECTION.size + _CPUS.size,
               lambda i, chunk: _cpusSection(
                   attrs.evolve(block, first=block.first + i), chunk))
    if message.net is not None:
        net = message.net
        spread([_interfaceBytes(i) for i in net.interfaces], _SECTION.size + _NET.size,
               lambda i, chunk: _netSection(net.total, net.first + i, chunk))
    if len(payloads) > 255:
        raise ValueError("more than 255 parts")
    return [_frame(message, b"".join(p), index, len(payloads), key)
            for index, p in enumerate(payloads)]


def decode(data: bytes, key: bytes | None = None) -> Message:
    """
    Parse one datagram.  With C{key}, the datagram must be signed with it.

    @raise Unsigned: C{key} is given and the datagram is not signed.
    @raise BadSignature: C{key} is given and the signature is wrong.
    @raise WireError: anything else wrong with it.
    """
    if len(data) < HEADER_SIZE:
        raise WireError(f"{len(data)} bytes is shorter than a header")
    (magic, version, kind, flags, _, node, bootId, sequence, micros, interval,
     part, parts, length) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("bad magic")
    if version != VERSION:
        raise WireError(f"version {version} (this is version {VERSION})")
    if kind not in _TYPES:
        raise WireError(f"unknown message type {kind}")
    if parts == 0 or part >= parts:
        raise WireError(f"part {part} of {parts}")
    end = HEADER_SIZE + length
    signed = bool(flags & FLAG_SIGNED)
    if len(data) != end + (SIGNATURE_SIZE if signed else 0):
        raise WireError(f"length {len(data)} does not match the header's {length}")
    if key is not None:
        if not signed:
            raise Unsigned("not signed")
        expected = hmac.digest(key, data[:end], hashlib.sha256)
        if not hmac.compare_digest(expected, data[end:]):
            raise BadSignature("bad signature")
    fields: dict = {}
    offset = HEADER_SIZE
    while offset < end:
        if offset + _SECTION.size > end:
            raise WireError("truncated section header")
        section, size = _SECTION.unpack_from(data, offset)
        start = offset + _SECTION.size
        stop = start + size
        if stop > end:
            raise WireError(f"section {section} runs past the end")
        reader = _READERS.get(section)
        if reader is not None:
            name, value = reader(data, start, stop)
            if name in fields:
                raise WireError(f"section {section} twice")
            fields[name] = value
        offset = stop
    return Message(
        type=kind, node=node, bootId=bootId, sequence=sequence,
        timestamp=micros / 1_000_000, interval=interval / 1000, part=part, parts=parts,
        multicast=bool(flags & FLAG_MULTICAST), signed=key is not None, **fields,
    )


def _exact(values_end: int, stop: int, what: str) -> None:
    if values_end != stop:
        raise WireError(f"{what} section has {stop - values_end} stray bytes")


def _readHost(data: bytes, start: int, stop: int):
    if stop - start > _MAX_TEXT:
        raise WireError("host name too long")
    return "hostname", _text(data[start:stop], "host name")


def _readCpuInfo(data: bytes, start: int, stop: int):
    if stop - start < _CPUINFO.size or stop - start > _CPUINFO.size + _MAX_TEXT:
        raise WireError("bad cpuinfo section length")
    count, mhz = _CPUINFO.unpack_from(data, start)
    if mhz != mhz or mhz < 0 or mhz == float("inf"):
        raise WireError("bad MHz")
    model = _text(data[start + _CPUINFO.size:stop], "CPU model")
    return "cpuInfo", CpuInfo(count=count, mhz=mhz, model=model)


def _size(start: int, stop: int, size: int, what: str) -> None:
    if stop - start != size:
        raise WireError(f"{what} section is {stop - start} bytes, not {size}")


def _readCpuTotal(data: bytes, start: int, stop: int):
    _size(start, stop, _TICKS.size, "cpu total")
    return "cpuTotal", _newTuple(CpuTicks, _TICKS.unpack_from(data, start))


def _readCpus(data: bytes, start: int, stop: int):
    if stop - start < _CPUS.size:
        raise WireError("short cpus section")
    total, first, count, base = _CPUS.unpack_from(data, start)
    if first + count > total:
        raise WireError(f"CPUs {first}+{count} of {total}")
    values, end = _readVarints(data, start + _CPUS.size, stop, 8 * count)
    _exact(end, stop, "cpus")
    return "cpus", CpuBlock(total=total, first=first, base=base, values=values)


def _readMemory(data: bytes, start: int, stop: int):
    _size(start, stop, _MEMORY.size, "memory")
    return "memory", _newTuple(Memory, _MEMORY.unpack_from(data, start))


def _readLoad(data: bytes, start: int, stop: int):
    _size(start, stop, _LOAD.size, "load")
    values = _LOAD.unpack_from(data, start)
    for v in values[:3]:
        if v != v or v < 0 or v == _INF:
            raise WireError("bad load average")
    return "load", _newTuple(Load, values)


def _readNet(data: bytes, start: int, stop: int):
    if stop - start < _NET.size:
        raise WireError("short net section")
    total, first, count = _NET.unpack_from(data, start)
    if first + count > total:
        raise WireError(f"interfaces {first}+{count} of {total}")
    offset = start + _NET.size
    interfaces = []
    for _ in range(count):
        if offset >= stop:
            raise WireError("truncated interface")
        size = data[offset]
        if not 0 < size < IFNAMSIZ or offset + 1 + size > stop:
            raise WireError("bad interface name length")
        row = _ROWS[size]  # the name and the counters in one unpack
        if offset + 1 + row.size > stop:
            raise WireError("truncated interface")
        name, *counters = row.unpack_from(data, offset + 1)
        interfaces.append(_newTuple(Interface, (name.decode("utf-8", "surrogateescape"),
                                                *counters)))
        offset += 1 + row.size
    _exact(offset, stop, "net")
    return "net", NetBlock(total=total, first=first, interfaces=tuple(interfaces))


def _readRootfs(data: bytes, start: int, stop: int):
    _size(start, stop, _ROOTFS.size, "rootfs")
    return "rootfs", _newTuple(FileSystem, _ROOTFS.unpack_from(data, start))


_INF = float("inf")


_READERS = {
    SEC_HOST: _readHost,
    SEC_CPUINFO: _readCpuInfo,
    SEC_CPUTOTAL: _readCpuTotal,
    SEC_CPUS: _readCpus,
    SEC_MEMORY: _readMemory,
    SEC_LOAD: _readLoad,
    SEC_NET: _readNet,
    SEC_ROOTFS: _readRootfs,
}
