"""
Tests for L{sysmon.beostat.gmond}: the Ganglia gmond 3.x codec against
datagrams captured from a real gmond 3.7.2 and gmetric (and an independent
decoder's reading of them), the per-host state and its view in libbeostat
units, property tests (random and mutated bytes never raise anything but
L{GmondError}), and a live test against a real gmond.
"""

from __future__ import annotations

import math
import os
import struct
import time
import xml.etree.ElementTree as ET
from typing import Any

import attrs
from hypothesis import given, settings, strategies as st
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sysmon.beostat import gmond
from sysmon.beostat.gmond import (
    GmondError,
    GmondHost,
    GmondView,
    Metadata,
    MetadataRequest,
    MetricId,
    Value,
    decode,
    encode,
)
from sysmon.beostat.records import Load, Memory

from . import gmondcap
from .gmondpeer import GmondPeer, unavailable

NO_CAPTURES = "shared/data/gmond is not beside the checkout"

#: The spoofed host string of the captured gmond and of most gmetric calls.
PROBE = "127.0.0.1:probe-node-01"


def _allCaptured() -> list[bytes]:
    if not gmondcap.available():
        return []
    return [d for name in gmondcap.NAMES for d in gmondcap.capture(name)]


#: Every captured datagram (empty when the captures are not there).
CAPTURED = _allCaptured()


def _kind(message: gmond.Message) -> int:
    if isinstance(message, Metadata):
        return gmond.GMETADATA_FULL
    if isinstance(message, MetadataRequest):
        return gmond.GMETADATA_REQUEST
    return message.kind


def _feed(host: GmondHost, datagrams: list[bytes], hostString: str | None = None) -> list[Any]:
    """
    Apply the datagrams (only those of C{hostString}, when given) and return
    what C{apply} returned.
    """
    out = []
    for data in datagrams:
        message = decode(data)
        if hostString is None or message.id.host == hostString:
            out.append(host.apply(message))
    return out


_INTEGER_TYPES = {"int8", "uint8", "int16", "uint16", "int32", "uint32"}


def _expectedView(records: list[dict[str, Any]], hostString: str) -> GmondView:
    """
    The view of C{hostString} computed straight from the independent
    decoder's records: the last value of each metric (string values
    converted with their metadata type), then gmond's units turned into
    libbeostat's by hand.
    """
    types: dict[str, str] = {}
    last: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["host"] != hostString:
            continue
        if r["id"] == 128:
            types[r["name"]] = r["type"]
        elif 129 <= r["id"] <= 135:
            last[r["name"]] = r

    def num(name: str) -> Any:
        r = last.get(name)
        if r is None:
            return None
        if r["id"] == 133:
            return int(r["value"]) if types[name] in _INTEGER_TYPES else float(r["value"])
        return r["value"]

    def kb(name: str) -> int:
        value = num(name)
        return 0 if value is None else int(round(value * 1024))

    def pct(name: str) -> float | None:
        value = num(name)
        return None if value is None else min(1.0, max(0.0, value / 100.0))

    address, _, hostname = hostString.partition(":")
    idle, wio = num("cpu_idle"), num("cpu_wio") or 0.0
    memory = None
    if num("mem_total") is not None:
        memory = Memory(total=kb("mem_total"), free=kb("mem_free"),
                        available=kb("mem_free") + kb("mem_buffers") + kb("mem_cached"),
                        buffers=kb("mem_buffers"), cached=kb("mem_cached"),
                        swapTotal=kb("swap_total"), swapFree=kb("swap_free"))
    load = None
    if num("load_one") is not None:
        load = Load(num("load_one"), num("load_five"), num("load_fifteen"),
                    running=num("proc_run") or 0, total=num("proc_total") or 0)
    disk = {n: None if num(n) is None else int(round(num(n) * 10**9))
            for n in ("disk_total", "disk_free")}
    return GmondView(
        hostname=hostname, address=address,
        cpuCount=num("cpu_num"),
        mhz=None if num("cpu_speed") is None else float(num("cpu_speed")),
        cpuUser=pct("cpu_user"), cpuNice=pct("cpu_nice"), cpuSystem=pct("cpu_system"),
        cpuIdle=pct("cpu_idle"), cpuWio=pct("cpu_wio"),
        cpuUsage=None if idle is None else min(1.0, max(0.0, 1 - (idle + wio) / 100)),
        load=load, memory=memory,
        rxRate=num("bytes_in"), txRate=num("bytes_out"),
        rxPacketRate=num("pkts_in"), txPacketRate=num("pkts_out"),
        diskTotal=disk["disk_total"], diskFree=disk["disk_free"],
        bootTime=num("boottime"), heartbeat=num("heartbeat"),
    )


class LayoutTests(SynchronousTestCase):
    """
    Hand-built messages, byte for byte, and each message kind.
    """

    def test_valueLayout(self) -> None:
        """
        A C{gmetric_ushort}: id, metric_id (host, name, bool spoof), format,
        the value in a 4-byte unit; strings padded to 4 with zeros.
        """
        message = Value(MetricId("h", "m", False), 129, "%hu", 2)
        data = bytes.fromhex("00000081" "00000001" "68000000" "00000001" "6d000000"
                             "00000000" "00000003" "25687500" "00000002")
        self.assertEqual(encode(message), data)
        self.assertEqual(decode(data), message)

    def test_metadataLayout(self) -> None:
        """
        C{gmetadata_full}: metric_id, type, name, units, slope, tmax, dmax,
        then the extra-data array of (name, data) strings.
        """
        message = Metadata(MetricId("1.2.3.4:n", "x", True), "float", "x", "KB", 3, 60, 0,
                           (("GROUP", "mem"),))
        data = (bytes.fromhex("00000080" "00000009") + b"1.2.3.4:n\0\0\0"
                + bytes.fromhex("00000001") + b"x\0\0\0" + bytes.fromhex("00000001")
                + bytes.fromhex("00000005") + b"float\0\0\0" + bytes.fromhex("00000001")
                + b"x\0\0\0" + bytes.fromhex("00000002") + b"KB\0\0"
                + bytes.fromhex("00000003" "0000003c" "00000000" "00000001" "00000005")
                + b"GROUP\0\0\0" + bytes.fromhex("00000003") + b"mem\0")
        self.assertEqual(encode(message), data)
        self.assertEqual(decode(data), message)

    def test_request(self) -> None:
        """
        C{gmetadata_request} is the metric id alone.
        """
        message = MetadataRequest(MetricId("a:b", "cpu_num", True))
        data = encode(message)
        self.assertEqual(data, bytes.fromhex("00000088" "00000003") + b"a:b\0"
                         + bytes.fromhex("00000007") + b"cpu_num\0" + bytes.fromhex("00000001"))
        self.assertEqual(decode(data), message)

    def test_everyKind(self) -> None:
        """
        Every value kind, at the ends of its range, survives encode and
        decode; 130 and 131 (which gmond never sent in the captures) too.
        """
        mid = MetricId("host", "metric", False)
        for kind, values in [
            (129, [0, 65535]), (130, [-32768, 32767, -1]), (131, [-2**31, 2**31 - 1]),
            (132, [0, 2**32 - 1]), (133, ["", "abc", "é€"]), (134, [0.5, -2.0, math.inf]),
            (135, [1e300, -0.0, 2.718281828459045]),
        ]:
            for value in values:
                message = Value(mid, kind, "%s", value)
                self.assertEqual(decode(encode(message)), message)
        nan = decode(encode(Value(mid, 134, "%f", math.nan)))
        self.assertTrue(math.isnan(nan.value))  # type: ignore[union-attr, arg-type]

    def test_encodeRefuses(self) -> None:
        """
        Values that do not fit their kind, over-long strings and things that
        are not messages: L{GmondError}.
        """
        mid = MetricId("h", "m", False)
        for bad in [
            Value(mid, 129, "", 65536), Value(mid, 129, "", -1), Value(mid, 130, "", 40000),
            Value(mid, 132, "", 2**32), Value(mid, 131, "", 1.5), Value(mid, 132, "", "7"),
            Value(mid, 133, "", 7), Value(mid, 134, "", 1e300), Value(mid, 135, "", "1.0"),
            Value(mid, 128, "", 1), Value(mid, 137, "", 1),
            Value(MetricId("h" * 1465, "m", False), 133, "", ""),
            Value(mid, 133, "", "x" * 1400 + "y" * 64),
            Metadata(mid, "uint32", "m", "", -1, 0, 0),
            Metadata(mid, "uint32", "m", "", 0, 2**32, 0),
        ]:
            self.assertRaises(GmondError, encode, bad)
        self.assertRaises(GmondError, encode, "not a message")  # type: ignore[arg-type]


class CaptureTests(SynchronousTestCase):
    """
    The datagrams a real gmond 3.7.2 and gmetric sent.
    """

    def setUp(self) -> None:
        if not gmondcap.available():
            raise self.skipTest(NO_CAPTURES)

    def test_fieldByField(self) -> None:
        """
        Every datagram of the three captures decodes to what the independent
        decoder read, field by field.
        """
        for name in gmondcap.NAMES:
            datagrams = gmondcap.capture(name)
            records = gmondcap.decoded(name)
            self.assertEqual(len(datagrams), len(records), name)
            for data, r in zip(datagrams, records):
                where = f"{name} #{r['seq']}"
                message = decode(data)
                self.assertEqual(len(data), r["len"], where)
                self.assertEqual(_kind(message), r["id"], where)
                self.assertEqual((message.id.host, message.id.name, message.id.spoof),
                                 (r["host"], r["name"], r["spoof"]), where)
                if isinstance(message, Metadata):
                    self.assertEqual(
                        (message.type, message.name, message.units, message.slope,
                         message.tmax, message.dmax, [list(e) for e in message.extra]),
                        (r["type"], r["mname"], r["units"], r["slope"], r["tmax"], r["dmax"],
                         r["extra"]), where)
                elif isinstance(message, Value):
                    self.assertEqual(message.format, r["fmt"], where)
                    self.assertEqual(message.value, r["value"], where)
                    expected = {133: str, 134: float, 135: float}.get(message.kind, int)
                    self.assertIsInstance(message.value, expected, where)
                else:
                    self.assertEqual(set(r) - {"seq", "len", "t_rel", "src", "kind"},
                                     {"id", "host", "name", "spoof"}, where)

    def test_kinds(self) -> None:
        """
        The captures hold the kinds the README lists: gmond A 128, 129, 132,
        133, 134, 135; B also 136 requests; gmetric only 128 and 133.
        """
        counts = {}
        for name in gmondcap.NAMES:
            kinds: dict[int, int] = {}
            for data in gmondcap.capture(name):
                k = _kind(decode(data))
                kinds[k] = kinds.get(k, 0) + 1
            counts[name] = kinds
        self.assertEqual(sorted(counts["gmond_a"]), [128, 129, 132, 133, 134, 135])
        self.assertEqual(sum(counts["gmond_a"].values()), 150)
        self.assertEqual(counts["gmond_b"][136], 41)
        self.assertEqual(sum(counts["gmond_b"].values()), 219)
        self.assertEqual(counts["gmetric"], {128: 12, 133: 12})

    def test_roundTrip(self) -> None:
        """
        C{encode(decode(x)) == x} for every captured datagram.
        """
        self.assertEqual(len(CAPTURED), 150 + 219 + 24)
        for data in CAPTURED:
            self.assertEqual(encode(decode(data)), data)

    def test_truncated(self) -> None:
        """
        Every datagram cut anywhere short of its end: L{GmondError}.
        """
        for data in set(CAPTURED):
            for end in range(len(data)):
                self.assertRaises(GmondError, decode, data[:end])

    def test_trailingIgnored(self) -> None:
        """
        Bytes after the message are ignored, as gmond (which decodes from its
        whole receive buffer and never checks the end) ignores them.
        """
        for data in CAPTURED[:40]:
            self.assertEqual(decode(data + b"\0\0\0\x01garbage"), decode(data))

    def test_mutated(self) -> None:
        """
        An unknown id (a gmond 2.5 packet, or past 136), a bool other than
        0/1, a string longer than the limit or than the datagram, an
        extra-data count the datagram cannot hold, a short out of range:
        L{GmondError}.
        """
        metadata = CAPTURED[0]
        message = decode(metadata)
        assert isinstance(message, Metadata)
        hostLength = len(message.id.host.encode())
        spoofAt = 4 + 4 + hostLength + (-hostLength % 4)
        spoofAt += 4 + len(message.id.name) + (-len(message.id.name) % 4)
        for kind in (0, 1, 127, 137, 0xFFFFFFFF):
            self.assertRaises(GmondError, decode, struct.pack(">I", kind) + metadata[4:])
        for spoof in (2, 0x100, 0xFFFFFFFF):
            bad = metadata[:spoofAt] + struct.pack(">I", spoof) + metadata[spoofAt + 4:]
            self.assertRaises(GmondError, decode, bad)
        for length in (len(metadata), 0xFFFFFFFF):
            self.assertRaises(GmondError, decode, metadata[:4] + struct.pack(">I", length)
                              + metadata[8:])
        self.assertRaises(GmondError, decode, metadata[:4] + struct.pack(">I", 1465)
                          + metadata[8:] + bytes(1500))
        self.assertIsInstance(decode(metadata[:4] + struct.pack(">I", 1464) + b"h" * 1464
                                     + metadata[8 + hostLength + (-hostLength % 4):]),
                              Metadata)
        # The extra-data count is the last word of the same metadata without extra data.
        countAt = len(encode(attrs.evolve(message, extra=()))) - 4
        self.assertEqual(struct.unpack_from(">I", metadata, countAt)[0], len(message.extra))
        self.assertRaises(GmondError, decode, metadata[:countAt] + struct.pack(">I", 2**31)
                          + metadata[countAt + 4:])
        ushort = Value(MetricId("h", "m", False), 129, "%hu", 5)
        data = encode(ushort)
        self.assertRaises(GmondError, decode, data[:-4] + struct.pack(">I", 0x10000))
        short = encode(Value(MetricId("h", "m", False), 130, "%hd", -5))
        self.assertRaises(GmondError, decode, short[:-4] + struct.pack(">i", 0x8000))
        self.assertRaises(GmondError, decode, short[:-4] + struct.pack(">i", -0x8001))

    def test_replacement(self) -> None:
        """
        Bytes that are not UTF-8 decode with replacement characters.
        """
        data = encode(MetadataRequest(MetricId("ab", "cd", False)))
        bad = data[:8] + b"a\xff" + data[10:]
        self.assertEqual(decode(bad).id.host, "a\ufffd")


class HostTests(SynchronousTestCase):
    """
    L{GmondHost}: what a receiver keeps of one host, and its view.
    """

    def setUp(self) -> None:
        if not gmondcap.available():
            raise self.skipTest(NO_CAPTURES)

    def test_gmondA(self) -> None:
        """
        Run A whole gives the view computed by hand from the independent
        decoder's records.
        """
        host = GmondHost()
        _feed(host, gmondcap.capture("gmond_a"))
        view = host.view()
        self.assertEqual(view, _expectedView(gmondcap.decoded("gmond_a"), PROBE))
        self.assertEqual((view.hostname, view.address, view.cpuCount), ("probe-node-01",
                                                                         "127.0.0.1", 2))
        self.assertIsNotNone(view.memory)
        self.assertIsNotNone(view.load)
        self.assertIsNotNone(view.diskTotal)

    def test_gmondB(self) -> None:
        """
        Run B whole (gmond and gmetric on one spoofed host) gives the view
        computed by hand, and agrees with gmond's own XML dump at the end of
        the run where the two say the same thing.
        """
        host = GmondHost()
        _feed(host, gmondcap.capture("gmond_b"), PROBE)
        view = host.view()
        self.assertEqual(view, _expectedView(gmondcap.decoded("gmond_b"), PROBE))
        root = ET.parse(gmondcap.xmlPath()).getroot()
        (element,) = [h for h in root.iter("HOST") if h.get("NAME") == "probe-node-01"]
        self.assertEqual((view.hostname, view.address), (element.get("NAME"), element.get("IP")))
        self.assertEqual(str(view.heartbeat), element.get("GMOND_STARTED"))
        xml = {m.get("NAME"): m.get("VAL") for m in element.iter("METRIC")}
        assert view.load is not None and view.memory is not None
        ours = {
            "cpu_user": "%.1f" % (view.cpuUser * 100),  # type: ignore[operator]
            "cpu_nice": "%.1f" % (view.cpuNice * 100),  # type: ignore[operator]
            "cpu_system": "%.1f" % (view.cpuSystem * 100),  # type: ignore[operator]
            "cpu_idle": "%.1f" % (view.cpuIdle * 100),  # type: ignore[operator]
            "cpu_wio": "%.1f" % (view.cpuWio * 100),  # type: ignore[operator]
            "load_one": "%.2f" % view.load.one,
            "load_five": "%.2f" % view.load.five,
            "load_fifteen": "%.2f" % view.load.fifteen,
            "proc_run": str(view.load.running),
            "proc_total": str(view.load.total),
            "mem_free": "%.0f" % (view.memory.free / 1024),
            "mem_buffers": "%.0f" % (view.memory.buffers / 1024),
            "mem_cached": "%.0f" % (view.memory.cached / 1024),
            "swap_free": "%.0f" % (view.memory.swapFree / 1024),
        }
        self.assertEqual(ours, {name: xml[name] for name in ours})
        for name in xml:
            if name.startswith("test_"):
                self.assertEqual(str(host.value(name)), xml[name], name)

    def test_gmetricConverted(self) -> None:
        """
        gmetric sends every value as a string (133); its metadata's type
        converts it: integer types to L{int}, float and double to L{float},
        string stays.  The spoofed heartbeat (C{-H}) is the host's
        heartbeat.
        """
        datagrams = gmondcap.capture("gmetric")
        host, spoofed = GmondHost(), GmondHost()
        _feed(host, datagrams, PROBE)
        _feed(spoofed, datagrams, "192.0.2.10:spoofhost")
        expected = {
            "test_metric": 42, "test_string": "hello ganglia", "test_float": 3.14159,
            "test_double": 2.718281828459045, "test_int8": -5, "test_uint8": 200,
            "test_int16": -1234, "test_uint16": 54321, "test_int32": -123456, "test_meta": 7,
        }
        self.assertEqual(host.names(), sorted(expected))
        for name, value in expected.items():
            self.assertEqual(host.value(name), value, name)
            self.assertIs(type(host.value(name)), type(value), name)
        self.assertEqual(host.metadata("test_meta").extra,  # type: ignore[union-attr]
                         (("SPOOF_HOST", PROBE), ("GROUP", "probe_group"),
                          ("DESC", "probe description"), ("TITLE", "Probe Title")))
        self.assertEqual(spoofed.value("test_spoof"), 99)
        view = spoofed.view()
        self.assertEqual((view.hostname, view.address, view.heartbeat),
                         ("spoofhost", "192.0.2.10", 0))

    def test_requestsAsGmond(self) -> None:
        """
        Run B's receiving gmond got no metadata for its first 25 s and asked
        for it (136) for every value it lacked metadata for: fed what was
        relayed to it, L{GmondHost} asks for exactly the same, in order.
        """
        datagrams = gmondcap.capture("gmond_b")
        records = gmondcap.index("gmond_b")["records"]
        hosts: dict[str, GmondHost] = {}
        asked = []
        for data, record in zip(datagrams, records):
            message = decode(data)
            if record["relayed"] and not isinstance(message, MetadataRequest):
                request = hosts.setdefault(message.id.host, GmondHost()).apply(message)
                if request is not None:
                    asked.append(request)
        sent = [m for m in map(decode, datagrams) if isinstance(m, MetadataRequest)]
        self.assertEqual(len(sent), 41)
        self.assertEqual(asked, sent)

    def test_stringBeforeMetadata(self) -> None:
        """
        A string value with no metadata yet is kept raw and answered with a
        metadata request; the metadata then converts it.
        """
        host = GmondHost()
        mid = MetricId("10.0.0.5:node5", "cpu_num", True)
        self.assertEqual(host.apply(Value(mid, 133, "%s", "8")), MetadataRequest(mid))
        self.assertEqual(host.value("cpu_num"), "8")
        self.assertIsNone(host.view().cpuCount)
        self.assertIsNone(host.apply(Metadata(mid, "uint16", "cpu_num", "CPUs", 0, 1200, 0)))
        self.assertEqual(host.value("cpu_num"), 8)
        self.assertEqual(host.view().cpuCount, 8)
        self.assertIsNone(host.apply(Value(mid, 133, "%s", "16")))
        self.assertEqual(host.view().cpuCount, 16)

    def test_typedWithoutMetadata(self) -> None:
        """
        A typed value needs no metadata to be used; a request is still
        returned, as gmond sends one.
        """
        host = GmondHost()
        mid = MetricId("node7", "load_one", False)
        self.assertEqual(host.apply(Value(mid, 134, "%.2f", 0.5)), MetadataRequest(mid))
        view = host.view()
        self.assertEqual(view.load, Load(0.5, 0.0, 0.0, 0, 0, 0))
        self.assertEqual((view.hostname, view.address), ("node7", None))

    def test_badConversionIgnored(self) -> None:
        """
        A string value that is not of its metadata's type is ignored, and
        the previous value stays; a raw one that turns out bad when the
        metadata comes is dropped.
        """
        host = GmondHost()
        mid = MetricId("n", "m", False)
        host.apply(Metadata(mid, "uint8", "m", "", 3, 60, 0))
        host.apply(Value(mid, 133, "%s", "7"))
        for bad in ("256", "-1", "x", "1.5", ""):
            self.assertIsNone(host.apply(Value(mid, 133, "%s", bad)))
            self.assertEqual(host.value("m"), 7)
        other = MetricId("n", "f", False)
        host.apply(Value(other, 133, "%s", "pi"))
        host.apply(Metadata(other, "double", "f", "", 3, 60, 0))
        self.assertIsNone(host.value("f"))
        self.assertEqual(gmond.convert(" 1e3 ", "float"), 1000.0)
        self.assertEqual(gmond.convert("-0x1", "int32"), None)
        self.assertEqual(gmond.convert("text", "weird"), "text")

    def test_spoofForms(self) -> None:
        """
        A spoofed host must be C{"IP:name"} (gmond drops others); a part
        before the colon that is not an IP (gmond with C{override_hostname}
        and no C{override_ip} sends C{"name:name"}) gives no address.
        """
        host = GmondHost()
        self.assertIsNone(host.apply(Value(MetricId("nocolon", "cpu_num", True), 129, "", 2)))
        self.assertIsNone(host.apply(Value(MetricId("1.2.3.4:", "cpu_num", True), 129, "", 2)))
        self.assertEqual(host.view(), GmondView())
        host.apply(Value(MetricId("peer:peer", "cpu_num", True), 129, "", 2))
        self.assertEqual((host.view().hostname, host.view().address), ("peer", None))
        host.apply(Value(MetricId("fe80::1:v6", "cpu_num", True), 129, "", 2))
        self.assertEqual(gmond.splitSpoof("fe80::1:v6"), ("fe80", ":1:v6"))
        self.assertEqual(gmond.splitSpoof(":a:b"), (":a", "b"))

    def test_requestsIgnored(self) -> None:
        """
        A metadata request is for the sender's own metrics: nothing changes.
        """
        host = GmondHost()
        self.assertIsNone(host.apply(MetadataRequest(MetricId("a:b", "cpu_num", True))))
        self.assertEqual(host.view(), GmondView())

    def test_limits(self) -> None:
        """
        Percentages outside 0..100 are clamped; non-finite or negative
        numbers, and string values of numeric metrics without metadata, are
        unknown.
        """
        host = GmondHost()
        mid = lambda name: MetricId("n", name, False)  # noqa: E731
        host.apply(Value(mid("cpu_idle"), 134, "", 150.0))
        host.apply(Value(mid("cpu_user"), 134, "", -3.0))
        host.apply(Value(mid("disk_total"), 135, "", math.inf))
        host.apply(Value(mid("disk_free"), 135, "", 1e308))
        host.apply(Value(mid("bytes_in"), 134, "", math.nan))
        host.apply(Value(mid("mem_total"), 134, "", -1.0))
        host.apply(Value(mid("cpu_num"), 133, "", "two"))
        view = host.view()
        self.assertEqual((view.cpuIdle, view.cpuUser, view.cpuUsage), (1.0, 0.0, 0.0))
        self.assertEqual((view.diskTotal, view.diskFree, view.rxRate), (None, None, None))
        self.assertEqual((view.memory, view.cpuCount), (None, None))


class FuzzTests(SynchronousTestCase):
    """
    Random and mutated bytes never raise anything but L{GmondError}, and
    whatever decodes is safe to apply, view and encode.
    """

    def assertOnlyGmondError(self, data: bytes) -> None:
        try:
            message = decode(data)
        except GmondError:
            return
        host = GmondHost()
        result = host.apply(message)
        self.assertIn(type(result), (type(None), MetadataRequest))
        self.assertIsInstance(host.view(), GmondView)
        try:
            encode(message)
        except GmondError:
            pass

    @settings(max_examples=500, deadline=None)
    @given(st.one_of(
        st.binary(max_size=400),
        st.builds(lambda kind, rest: struct.pack(">I", kind) + rest,
                  st.integers(126, 138), st.binary(max_size=400)),
    ))
    def test_randomBytes(self, data: bytes) -> None:
        """
        Random bytes, and random bytes after a plausible message id.
        """
        self.assertOnlyGmondError(data)

    @settings(max_examples=1000, deadline=None)
    @given(
        st.sampled_from(CAPTURED or [encode(MetadataRequest(MetricId("a:b", "c", True)))]),
        st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=8),
        st.integers(0, 300),
    )
    def test_mutatedCaptures(self, original: bytes, flips: list[tuple[int, int]],
                             cut: int) -> None:
        """
        Captured datagrams with bytes changed and cut short.
        """
        data = bytearray(original)
        for at, value in flips:
            data[at % len(data)] = value
        self.assertOnlyGmondError(bytes(data[:cut]))
        self.assertOnlyGmondError(bytes(data))


def _memTotal() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


class _Receiver(DatagramProtocol):
    """
    Decodes what a gmond sends into one L{GmondHost}; fires C{ready} when
    the wanted metrics have all come.
    """

    WANTED = ("cpu_num", "mem_total", "mem_free", "load_one", "load_five", "load_fifteen",
              "cpu_idle", "heartbeat")

    def __init__(self) -> None:
        self.host = GmondHost()
        self.ready: defer.Deferred[GmondView] = defer.Deferred()
        self.errors: list[tuple[bytes, str]] = []
        self.count = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.count += 1
        try:
            message = decode(data)
        except GmondError as e:
            self.errors.append((data, str(e)))
            return
        self.host.apply(message)
        if not self.ready.called and all(self.host.value(n) is not None for n in self.WANTED):
            self.ready.callback(self.host.view())


class LiveTests(TestCase):
    """
    A real gmond 3.7.2 (Debian's ganglia-monitor) sending to a Twisted UDP
    port on 127.0.0.1.
    """

    @defer.inlineCallbacks
    def test_realGmond(self) -> Any:
        """
        Within 30 s, what gmond sends decodes (all of it) into a view of
        this machine: its CPU count, its MemTotal (within 1 %), its load,
        the configured host name and IP, and a heartbeat of about now.
        """
        reason = unavailable()
        if reason is not None:
            raise self.skipTest(reason)
        from twisted.internet import reactor

        receiver = _Receiver()
        port = reactor.listenUDP(0, receiver, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        peer = GmondPeer(self, port.getHost().port, hostname="sysmon-peer", ip="127.0.0.1")
        peer.start()
        receiver.ready.addTimeout(30, reactor)
        try:
            view = yield receiver.ready
        except defer.TimeoutError:
            self.fail(f"gmond sent {receiver.count} datagrams, not all metrics in 30 s; "
                      f"view {receiver.host.view()}; gmond said:\n{peer.log()}")
        self.assertEqual(receiver.errors, [])
        self.assertEqual((view.hostname, view.address), ("sysmon-peer", "127.0.0.1"))
        self.assertEqual(view.cpuCount, os.cpu_count())
        total = _memTotal()
        self.assertLessEqual(abs(view.memory.total - total), total * 0.01)
        self.assertLessEqual(view.memory.free, view.memory.total)
        local = os.getloadavg()
        for sent, here in zip((view.load.one, view.load.five, view.load.fifteen), local):
            self.assertGreaterEqual(sent, 0.0)
            self.assertLessEqual(abs(sent - here), 2.0 + here / 2, (view.load, local))
        self.assertLessEqual(abs(view.heartbeat - time.time()), 60)
        self.assertTrue(0.0 <= view.cpuIdle <= 1.0)
