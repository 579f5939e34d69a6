"""
Ganglia gmond 3.x packets: a pure codec for the XDR messages of
C{lib/gm_protocol.x} (ids 128 to 136), and the state of one gmond host as a
receiver sees it, mapped onto libbeostat's units.

Wire format (ganglia/monitor-core C{lib/gm_protocol.x}, XDR = big-endian
4-byte units; strings are a length, the bytes and zero padding to 4)::

    Ganglia_msg_formats id           128 metadata, 129..135 values, 136 request
    Ganglia_metric_id  {string host; string name; bool spoof}
    128: metric_id, {string type; string name; string units;
                     unsigned slope, tmax, dmax;
                     {string name; string data}<> extra}
    129..135: metric_id, string fmt, then the value:
        129 unsigned short, 130 short, 131 int, 132 unsigned int
        (each in 4 bytes), 133 string, 134 float (4), 135 double (8)
    136: metric_id

How strict L{decode} is, measured against gmond 3.7.2's receiver
(C{gmond/gmond.c} C{process_udp_recv_channel}, glibc's XDR routines):

  - Truncation, a string longer than L{MAX_STRING_LENGTH} (the protocol's
    C{GANGLIA_MAX_XDR_MESSAGE_LEN}) or than the bytes left, an extra-data
    count the bytes left cannot hold, an unknown message id: L{GmondError}.
    gmond also fails all of these.
  - A C{bool} other than 0 or 1, a C{short}/C{unsigned short} outside its
    range in its 4-byte unit: L{GmondError}.  Stricter than glibc, which
    reads any non-zero bool as true and truncates shorts; no encoder ever
    writes such words, and refusing them keeps C{encode(decode(x)) == x}.
  - Bytes after the message are ignored, as gmond ignores them: it decodes
    from a stream over its whole receive buffer (C{xdrmem_create(&x, buf,
    max_udp_message_len, ...)}) and never compares the position reached
    with the datagram's length.  Non-zero padding bytes are ignored too
    (glibc's C{xdr_opaque} skips them unread).
  - Strings are decoded as UTF-8 with C{errors="replace"}.

L{GmondHost} keeps what one sending host said (metadata and latest value
per metric, like gmond's C{Ganglia_host}) and gives a L{GmondView} of the
standard metrics in libbeostat's units.
"""

from __future__ import annotations

import ipaddress
import math
import re
import struct
from typing import Union

import attrs

from sysmon.beostat.records import Load, Memory
from sysmon.rpc.xdr import Packer, Unpacker, XDRError

__all__ = [
    "GMETADATA_FULL",
    "GMETRIC_USHORT",
    "GMETRIC_SHORT",
    "GMETRIC_INT",
    "GMETRIC_UINT",
    "GMETRIC_STRING",
    "GMETRIC_FLOAT",
    "GMETRIC_DOUBLE",
    "GMETADATA_REQUEST",
    "VALUE_KINDS",
    "MAX_MESSAGE_LENGTH",
    "MAX_STRING_LENGTH",
    "KB",
    "GB",
    "GmondError",
    "MetricId",
    "Metadata",
    "Value",
    "MetadataRequest",
    "Message",
    "decode",
    "encode",
    "splitSpoof",
    "convert",
    "GmondHost",
    "GmondView",
]

#: C{enum Ganglia_msg_formats}.
GMETADATA_FULL = 128
GMETRIC_USHORT = 129
GMETRIC_SHORT = 130
GMETRIC_INT = 131
GMETRIC_UINT = 132
GMETRIC_STRING = 133
GMETRIC_FLOAT = 134
GMETRIC_DOUBLE = 135
GMETADATA_REQUEST = 136

#: The ids of value messages.
VALUE_KINDS = frozenset(range(GMETRIC_USHORT, GMETRIC_DOUBLE + 1))

#: C{GANGLIA_MAX_XDR_MESSAGE_LEN} = 1500 - 28 - 8: the longest message gmond
#: encodes (its send buffer); L{encode} refuses longer ones.
MAX_MESSAGE_LENGTH = 1464

#: The longest string L{decode} accepts: nothing longer fits in a message.
MAX_STRING_LENGTH = MAX_MESSAGE_LENGTH

#: gmond's "KB" (mem_*, swap_*): the kernel's C{kB} of C{/proc/meminfo},
#: which libmetrics copies unchanged (C{libmetrics/linux/metrics.c}
#: C{mem_total_func}: C{atof} of the C{MemTotal:} field), i.e. 1024 bytes.
KB = 1024

#: gmond's "GB" (disk_total, disk_free): 10**9 bytes.
#: C{libmetrics/linux/metrics.c} C{find_disk_space}: "We report in GB = 1e9
#: bytes." (C{reported_units = 1e9}).
GB = 10**9

_FLOAT = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")

#: Value ranges of the integer kinds, as carried in their 4-byte unit.
_RANGES = {
    GMETRIC_USHORT: (0, 0xFFFF),
    GMETRIC_SHORT: (-0x8000, 0x7FFF),
    GMETRIC_INT: (-0x80000000, 0x7FFFFFFF),
    GMETRIC_UINT: (0, 0xFFFFFFFF),
}

#: Metadata C{type} strings (gmetric's C{-t}) whose values are integers,
#: with their ranges.
_INTEGER_TYPES = {
    "int8": (-0x80, 0x7F),
    "uint8": (0, 0xFF),
    "int16": (-0x8000, 0x7FFF),
    "uint16": (0, 0xFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF),
    "uint32": (0, 0xFFFFFFFF),
}
_FLOAT_TYPES = frozenset({"float", "double"})

_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*\Z")
_FLOAT_TEXT = re.compile(
    r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\s*\Z",
    re.IGNORECASE)


class GmondError(ValueError):
    """
    Bytes that are not a gmond 3.x message (the only exception L{decode}
    raises), or a message L{encode} cannot write.
    """


@attrs.frozen
class MetricId:
    """
    C{Ganglia_metric_id}, the prefix of every message.

    @ivar host: the sender's host name, or C{"IP:name"} when C{spoof}.
    @ivar name: the metric's name.
    @ivar spoof: whether C{host} is a spoofed C{"IP:name"}.
    """

    host: str
    name: str
    spoof: bool


@attrs.frozen
class Metadata:
    """
    C{gmetadata_full} (128): what a metric is.

    @ivar type: C{string}, C{int8}, C{uint8}, C{int16}, C{uint16},
        C{int32}, C{uint32}, C{float} or C{double} (as gmetric's C{-t}).
    @ivar slope: 0 zero, 1 positive, 2 negative, 3 both, 4 unspecified,
        5 derivative.
    @ivar tmax: longest expected interval between values, in seconds.
    @ivar dmax: seconds of silence after which the metric is deleted, 0 =
        never.
    @ivar extra: C{(name, data)} pairs: C{GROUP}, C{TITLE}, C{DESC},
        C{SPOOF_HOST}, C{SPOOF_HEARTBEAT}, ...
    """

    id: MetricId
    type: str
    name: str
    units: str
    slope: int
    tmax: int
    dmax: int
    extra: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Value:
    """
    A value message (129 to 135).

    @ivar kind: the message id, which says how C{value} is carried.
    @ivar format: the sender's printf format for the value.
    @ivar value: an L{int} (129 to 132), a L{str} (133) or a L{float} (134,
        135).
    """

    id: MetricId
    kind: int
    format: str
    value: Union[int, float, str]


@attrs.frozen
class MetadataRequest:
    """
    C{gmetadata_request} (136): "send the metadata of this metric again".
    """

    id: MetricId


Message = Union[Metadata, Value, MetadataRequest]


def _string(u: Unpacker) -> str:
    return bytes(u.string(MAX_STRING_LENGTH)).decode("utf-8", errors="replace")


def _metricId(u: Unpacker) -> MetricId:
    return MetricId(_string(u), _string(u), u.bool())


def _ranged(u: Unpacker, kind: int) -> int:
    low, high = _RANGES[kind]
    value = u.uint() if low == 0 else u.int()
    if not low <= value <= high:
        raise GmondError(f"value {value} out of range for message id {kind}")
    return value


def decode(data: bytes) -> Message:
    """
    Decode one gmond datagram.

    @param data: the datagram (bytes or a memoryview).
    @return: a L{Metadata}, L{Value} or L{MetadataRequest}.
    @raise GmondError: the bytes are not such a message (see the module's
        docstring for what is refused and what is tolerated).
    """
    u = Unpacker(bytes(data))
    try:
        kind = u.uint()
        if kind != GMETADATA_FULL and kind != GMETADATA_REQUEST and kind not in VALUE_KINDS:
            raise GmondError(f"unknown message id {kind}")
        mid = _metricId(u)
        if kind == GMETADATA_REQUEST:
            return MetadataRequest(mid)
        if kind == GMETADATA_FULL:
            mtype, name, units = _string(u), _string(u), _string(u)
            slope, tmax, dmax = u.uint(), u.uint(), u.uint()
            # Each entry takes at least 8 bytes: bound the count by what is left.
            extra = u.array(lambda: (_string(u), _string(u)), max(u.remaining - 4, 0) // 8)
            return Metadata(mid, mtype, name, units, slope, tmax, dmax, tuple(extra))
        fmt = _string(u)
        value: Union[int, float, str]
        if kind == GMETRIC_STRING:
            value = _string(u)
        elif kind == GMETRIC_FLOAT:
            value = _FLOAT.unpack(u.fopaque(4))[0]
        elif kind == GMETRIC_DOUBLE:
            value = _DOUBLE.unpack(u.fopaque(8))[0]
        else:
            value = _ranged(u, kind)
        return Value(mid, kind, fmt, value)
    except XDRError as e:
        raise GmondError(str(e)) from None


def _packString(p: Packer, text: str) -> None:
    data = text.encode("utf-8")
    if len(data) > MAX_STRING_LENGTH:
        raise GmondError(f"string of {len(data)} bytes, at most {MAX_STRING_LENGTH}")
    p.string(data)


def _packUint(p: Packer, value: int, what: str) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise GmondError(f"{what} {value} is not an unsigned int")
    p.uint(value)


def encode(message: Message) -> bytes:
    """
    Encode a message as gmond does (L{decode}'s inverse).

    @raise GmondError: a value does not fit its kind, a string or the whole
        message is too long, or C{message} is not a message.
    """
    p = Packer()
    if isinstance(message, Metadata):
        kind = GMETADATA_FULL
    elif isinstance(message, MetadataRequest):
        kind = GMETADATA_REQUEST
    elif isinstance(message, Value):
        kind = message.kind
        if kind not in VALUE_KINDS:
            raise GmondError(f"{kind} is not a value message id")
    else:
        raise GmondError(f"not a gmond message: {message!r}")
    p.uint(kind)
    mid = message.id
    _packString(p, mid.host)
    _packString(p, mid.name)
    p.bool(mid.spoof)
    if isinstance(message, Metadata):
        _packString(p, message.type)
        _packString(p, message.name)
        _packString(p, message.units)
        _packUint(p, message.slope, "slope")
        _packUint(p, message.tmax, "tmax")
        _packUint(p, message.dmax, "dmax")
        p.uint(len(message.extra))
        for name, data in message.extra:
            _packString(p, name)
            _packString(p, data)
    elif isinstance(message, Value):
        _packString(p, message.format)
        value = message.value
        if kind == GMETRIC_STRING:
            if not isinstance(value, str):
                raise GmondError(f"message id 133 carries a string, not {value!r}")
            _packString(p, value)
        elif kind in (GMETRIC_FLOAT, GMETRIC_DOUBLE):
            if isinstance(value, str) or isinstance(value, bool):
                raise GmondError(f"message id {kind} carries a number, not {value!r}")
            try:
                p.raw((_FLOAT if kind == GMETRIC_FLOAT else _DOUBLE).pack(value))
            except (struct.error, OverflowError) as e:
                raise GmondError(f"{value!r} does not fit message id {kind}: {e}") from None
        else:
            low, high = _RANGES[kind]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise GmondError(f"message id {kind} carries an integer in "
                                 f"[{low}, {high}], not {value!r}")
            if low == 0:
                p.uint(value)
            else:
                p.int(value)
    data = p.bytes()
    if len(data) > MAX_MESSAGE_LENGTH:
        raise GmondError(f"message of {len(data)} bytes, at most {MAX_MESSAGE_LENGTH}")
    return data


def splitSpoof(host: str) -> tuple[str, str] | None:
    """
    Split a spoofed host string C{"IP:name"} as gmond does
    (C{Ganglia_host_get}: the first C{:} after the first character; the
    name must not be empty).

    @return: C{(ip, name)}, or L{None} when C{host} has no such form (gmond
        drops those messages).
    """
    at = host.find(":", 1)
    if at < 0 or at == len(host) - 1:
        return None
    return host[:at], host[at + 1:]


def convert(text: str, mtype: str) -> Union[int, float, str, None]:
    """
    Convert a value sent as a string (gmetric sends every value so) to the
    type its metadata gives.

    @param mtype: the metadata's C{type}: integer types give an L{int}
        (within the type's range), C{float}/C{double} a L{float}, anything
        else (C{string}, unknown types) the text unchanged.
    @return: the value, or L{None} when the text is not a value of that
        type.
    """
    if mtype in _INTEGER_TYPES:
        if not _INTEGER_TEXT.match(text):
            return None
        value = int(text)
        low, high = _INTEGER_TYPES[mtype]
        return value if low <= value <= high else None
    if mtype in _FLOAT_TYPES:
        if not _FLOAT_TEXT.match(text):
            return None
        return float(text)
    return text


@attrs.frozen
class GmondView:
    """
    The standard gmond metrics of one host in libbeostat's units; L{None}
    where the host has not (yet) sent the metric.

    @ivar hostname: the name in a spoofed C{"IP:name"}, else the host
        string gmond sent (its C{override_hostname} or host name).
    @ivar address: the IP of a spoofed C{"IP:name"}; L{None} otherwise (the
        receiver uses the datagram's source address), also when the part
        before the colon is not an IP address: gmond 3.7.2 given
        C{override_hostname} but no C{override_ip} sends C{"name:name"}.
    @ivar cpuCount: C{cpu_num}.
    @ivar mhz: C{cpu_speed}.
    @ivar cpuUser: C{cpu_user} as a fraction (gmond sends percent); also
        C{cpuNice}, C{cpuSystem}, C{cpuIdle}, C{cpuWio}.  Clamped to
        [0, 1].
    @ivar cpuUsage: 1 - (C{cpu_idle} + C{cpu_wio}) / 100, clamped to
        [0, 1]; known when C{cpu_idle} is (C{cpu_wio} counts as 0 until
        known), as L{sysmon.beostat.records.cpuUsage} counts idle and iowait
        as not busy.
    @ivar load: C{load_one/five/fifteen}, C{proc_run} as C{running} (gmond
        already subtracts its own reading process from C{/proc/loadavg}'s
        count), C{proc_total} as C{total}, C{lastPid} 0 (gmond does not
        send it); missing parts are 0.  L{None} until a C{load_*} came.
    @ivar memory: C{mem_total}, C{mem_free}, C{mem_buffers}, C{mem_cached},
        C{swap_total}, C{swap_free}, converted from KB (L{KB}) to bytes;
        C{available} is free + buffers + cached, since gmond sends no
        C{MemAvailable}; missing parts are 0.  L{None} until C{mem_total}
        came (without it the record means nothing).
    @ivar rxRate: C{bytes_in}, bytes per second (gmond sends a rate over
        all interfaces but C{lo} and C{bond*}); C{txRate}: C{bytes_out}.
    @ivar rxPacketRate: C{pkts_in}, packets per second; C{txPacketRate}:
        C{pkts_out}.
    @ivar diskTotal: C{disk_total}, bytes (from L{GB}) of the local,
        writable C{/dev/*} file systems; C{diskFree}: C{disk_free}, the
        bytes available to unprivileged users there.
    @ivar bootTime: C{boottime}, seconds since the epoch.
    @ivar heartbeat: C{heartbeat}: when the sending gmond started, seconds
        since the epoch (gmond's C{GMOND_STARTED}).
    """

    hostname: str | None = None
    address: str | None = None
    cpuCount: int | None = None
    mhz: float | None = None
    cpuUser: float | None = None
    cpuNice: float | None = None
    cpuSystem: float | None = None
    cpuIdle: float | None = None
    cpuWio: float | None = None
    cpuUsage: float | None = None
    load: Load | None = None
    memory: Memory | None = None
    rxRate: float | None = None
    txRate: float | None = None
    rxPacketRate: float | None = None
    txPacketRate: float | None = None
    diskTotal: int | None = None
    diskFree: int | None = None
    bootTime: int | None = None
    heartbeat: int | None = None


def _isAddress(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


class GmondHost:
    """
    What one gmond host has said, as a receiver keeps it (gmond's
    C{Ganglia_host}): the metadata and the latest value of each metric,
    keyed by the metric id's name.  The receiver chooses which messages
    belong to one host (gmond keys hosts by the spoofed IP, else the source
    address).

    Values sent as strings (id 133; gmetric sends every value so) are
    converted with their metadata's type (L{convert}); a string value that
    arrives before its metadata is kept raw and converted once the metadata
    comes.  A typed value (129 to 135 but 133) is usable without metadata.

    @ivar hostname: the host name of the last message applied (see
        L{GmondView.hostname}).
    @ivar address: the spoofed IP of the last message applied, or L{None}
        (see L{GmondView.address}).
    """

    def __init__(self) -> None:
        self._metadata: dict[str, Metadata] = {}
        self._values: dict[str, Value] = {}
        self.hostname: str | None = None
        self.address: str | None = None

    def apply(self, message: Message) -> MetadataRequest | None:
        """
        Take in one decoded message from this host.

        Spoofed messages whose host is not C{"IP:name"} are ignored, as
        gmond ignores them.  A string value that does not convert to its
        metadata's type is ignored (the previous value stays).  Metadata
        requests are for the sender's own metrics: a receiver ignores them.

        @return: for a value of a metric with no metadata yet, the
            L{MetadataRequest} the receiver should send back, as gmond does
            for every such value, typed or not (C{Ganglia_metadata_check}:
            "sending metadata request flag for metric"); otherwise L{None}.
        """
        if isinstance(message, MetadataRequest):
            return None
        mid = message.id
        if mid.spoof:
            parts = splitSpoof(mid.host)
            if parts is None:
                return None
            address, hostname = parts
            if not _isAddress(address):
                address = None
        else:
            address, hostname = None, mid.host
        if isinstance(message, Metadata):
            self._metadata[mid.name] = message
            pending = self._values.get(mid.name)
            if pending is not None and pending.kind == GMETRIC_STRING:
                if convert(pending.value, message.type) is None:  # type: ignore[arg-type]
                    del self._values[mid.name]
        else:
            meta = self._metadata.get(mid.name)
            if (message.kind == GMETRIC_STRING and meta is not None
                    and convert(message.value, meta.type) is None):  # type: ignore[arg-type]
                return None
            self._values[mid.name] = message
        self.address, self.hostname = address, hostname
        if isinstance(message, Value) and mid.name not in self._metadata:
            return MetadataRequest(mid)
        return None

    def metadata(self, name: str) -> Metadata | None:
        """
        The latest metadata of metric C{name}, or L{None}.
        """
        return self._metadata.get(name)

    def names(self) -> list[str]:
        """
        The names of the metrics that have a value, sorted.
        """
        return sorted(self._values)

    def value(self, name: str) -> Union[int, float, str, None]:
        """
        The latest value of metric C{name}, converted with its metadata when
        it was sent as a string; a string value still without metadata is
        returned raw.  L{None} when there is none.
        """
        message = self._values.get(name)
        if message is None:
            return None
        if message.kind != GMETRIC_STRING:
            return message.value
        meta = self._metadata.get(name)
        if meta is None:
            return message.value
        return convert(message.value, meta.type)  # type: ignore[arg-type]

    def _number(self, name: str) -> float | None:
        """
        The value of C{name} as a finite number, or L{None}: also for a
        string without metadata, which may not be a number at all.
        """
        message = self._values.get(name)
        if message is None or (message.kind == GMETRIC_STRING and name not in self._metadata):
            return None
        value = self.value(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return value
        return None

    def _integer(self, name: str, scale: float = 1) -> int | None:
        """
        The value of C{name} times C{scale}, rounded, when it is a finite
        number not below 0.
        """
        value = self._number(name)
        if value is None or value < 0:
            return None
        scaled = value * scale
        if not math.isfinite(scaled):
            return None
        return int(round(scaled))

    def _fraction(self, name: str) -> float | None:
        value = self._number(name)
        return None if value is None else _clamp(value / 100.0)

    def view(self) -> GmondView:
        """
        The standard metrics in libbeostat's units (see L{GmondView}).
        """
        idle = self._number("cpu_idle")
        usage = None
        if idle is not None:
            usage = _clamp(1.0 - (idle + (self._number("cpu_wio") or 0.0)) / 100.0)
        load = None
        loads = [self._number(n) for n in ("load_one", "load_five", "load_fifteen")]
        if any(v is not None for v in loads):
            one, five, fifteen = (float(v) if v is not None else 0.0 for v in loads)
            load = Load(one, five, fifteen, running=self._integer("proc_run") or 0,
                        total=self._integer("proc_total") or 0, lastPid=0)
        memory = None
        total = self._integer("mem_total", KB)
        if total is not None:
            free = self._integer("mem_free", KB) or 0
            buffers = self._integer("mem_buffers", KB) or 0
            cached = self._integer("mem_cached", KB) or 0
            memory = Memory(total=total, free=free, available=free + buffers + cached,
                            buffers=buffers, cached=cached,
                            swapTotal=self._integer("swap_total", KB) or 0,
                            swapFree=self._integer("swap_free", KB) or 0)
        mhz = self._number("cpu_speed")
        rates = [self._number(n) for n in ("bytes_in", "bytes_out", "pkts_in", "pkts_out")]
        rx, tx, rxp, txp = (float(v) if v is not None else None for v in rates)
        return GmondView(
            hostname=self.hostname,
            address=self.address,
            cpuCount=self._integer("cpu_num"),
            mhz=float(mhz) if mhz is not None else None,
            cpuUser=self._fraction("cpu_user"),
            cpuNice=self._fraction("cpu_nice"),
            cpuSystem=self._fraction("cpu_system"),
            cpuIdle=self._fraction("cpu_idle"),
            cpuWio=self._fraction("cpu_wio"),
            cpuUsage=usage,
            load=load,
            memory=memory,
            rxRate=rx,
            txRate=tx,
            rxPacketRate=rxp,
            txPacketRate=txp,
            diskTotal=self._integer("disk_total", GB),
            diskFree=self._integer("disk_free", GB),
            bootTime=self._integer("boottime"),
            heartbeat=self._integer("heartbeat"),
        )
