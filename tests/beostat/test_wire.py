"""
Tests for the sendstats/recvstats wire codec (docs/beostat-wire.md).
"""

from __future__ import annotations

import struct

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sysmon.beostat import wire
from sysmon.beostat.records import CpuInfo, CpuTicks, FileSystem, Interface, Load, Memory

BOOT = bytes(range(16))


def cpuTicks(i: int, scale: int = 1) -> CpuTicks:
    """
    Plausible counters for CPU C{i} of a node up for a month (scale 1) or
    one second's increments (scale 0).
    """
    if scale == 0:
        return CpuTicks(40 + i % 7, 0, 9, 50 - i % 7, 1, 0, 0, 0)
    return CpuTicks(12_345_678 + i, 1_234 + i, 3_456_789, 250_000_000 - i, 45_678, 0,
                    23_456, 0)


def interfaces(n: int) -> tuple[Interface, ...]:
    return tuple(Interface(f"eth{i}", 123_456_789_012 + i, 987_654_321, 3, 4,
                           23_456_789_012, 876_543_210, 0, 1) for i in range(n))


def status(cpus: int = 2, ifaces: int = 2, base: int = 0, **kw) -> wire.Message:
    fields = dict(
        type=wire.STATUS, node=7, bootId=BOOT, sequence=42, timestamp=1_700_000_000.25,
        interval=1.5, hostname="node007.cluster", multicast=True,
        cpuInfo=CpuInfo(cpus, 2400.0, "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"),
        cpuTotal=CpuTicks(1, 2, 3, 4, 5, 6, 7, 8),
        cpus=wire.CpuBlock.fromTicks(cpus, 0, base,
                                     [cpuTicks(i, 0 if base else 1) for i in range(cpus)]),
        memory=Memory(16 << 30, 8 << 30, 12 << 30, 1 << 20, 3 << 30, 2 << 30, 2 << 30),
        load=Load(0.5, 0.25, 0.125, 3, 456, 78901),
        net=wire.NetBlock(total=ifaces, first=0, interfaces=interfaces(ifaces)),
        rootfs=FileSystem(4096, 10_000_000, 5_000_000, 4_500_000, 2_000_000, 1_900_000),
    )
    fields.update(kw)
    return wire.Message(**fields)


class RoundTripTests(SynchronousTestCase):
    """
    What is encoded decodes to the same message.
    """

    def test_status(self):
        """
        Every section of a status message survives encoding.
        """
        message = status()
        [datagram] = wire.encodeStatus(message)
        self.assertEqual(wire.decode(datagram), message)
        self.assertEqual(datagram[:4], b"BEOS")
        self.assertEqual(datagram[4], 2)

    def test_header(self):
        """
        The header fields sit at the documented offsets, big-endian.
        """
        datagram = wire.encode(status())
        self.assertEqual(struct.unpack_from(">i", datagram, 8)[0], 7)
        self.assertEqual(datagram[12:28], BOOT)
        self.assertEqual(struct.unpack_from(">I", datagram, 28)[0], 42)
        self.assertEqual(struct.unpack_from(">Q", datagram, 32)[0], 1_700_000_000_250_000)
        self.assertEqual(struct.unpack_from(">I", datagram, 40)[0], 1500)
        self.assertEqual(datagram[6], wire.FLAG_MULTICAST)
        self.assertEqual(struct.unpack_from(">H", datagram, 46)[0], len(datagram) - 48)

    def test_requests(self):
        """
        Update requests and set-rate requests are a header alone.
        """
        for kind in (wire.UPDATE_REQUEST, wire.SET_RATE):
            message = wire.Message(type=kind, node=-1, bootId=BOOT, sequence=9,
                                   timestamp=1_700_000_000.5, interval=2.5)
            datagram = wire.encode(message)
            self.assertEqual(len(datagram), wire.HEADER_SIZE)
            self.assertEqual(wire.decode(datagram), message)

    def test_unknownSectionSkipped(self):
        """
        A section type this version does not know is skipped.
        """
        datagram = wire.encode(status(hostname=None, cpuInfo=None))
        extra = struct.pack(">HH", 999, 3) + b"abc"
        length = struct.unpack_from(">H", datagram, 46)[0] + len(extra)
        patched = datagram[:46] + struct.pack(">H", length) + datagram[48:] + extra
        self.assertEqual(wire.decode(patched), status(hostname=None, cpuInfo=None))

    def test_typicalNodeFitsOneDatagram(self):
        """
        A node with 64 CPUs and 8 interfaces reporting every second fits one
        1472-byte datagram, signed, host name and CPU description included.
        """
        message = status(cpus=64, ifaces=8, base=41)
        datagrams = wire.encodeStatus(message, key=b"k" * 32)
        self.assertEqual(len(datagrams), 1)
        self.assertLessEqual(len(datagrams[0]), 1472)

    def test_bigNodeSplits(self):
        """
        256 CPUs with whole counters and 32 interfaces go out as several
        parts of at most 1472 bytes that together carry every row once.
        """
        message = status(cpus=256, ifaces=32)
        datagrams = wire.encodeStatus(message, key=b"secret")
        self.assertGreater(len(datagrams), 1)
        parts = [wire.decode(d, key=b"secret") for d in datagrams]
        self.assertTrue(all(len(d) <= 1472 for d in datagrams))
        self.assertEqual([p.part for p in parts], list(range(len(parts))))
        self.assertEqual({p.parts for p in parts}, {len(parts)})
        self.assertEqual({p.sequence for p in parts}, {42})
        cpus = {}
        names = {}
        for p in parts:
            if p.cpus is not None:
                self.assertEqual(p.cpus.total, 256)
                for i, t in enumerate(p.cpus.ticks, p.cpus.first):
                    self.assertNotIn(i, cpus)
                    cpus[i] = t
            if p.net is not None:
                for i, iface in enumerate(p.net.interfaces, p.net.first):
                    names[i] = iface
        self.assertEqual([cpus[i] for i in range(256)], list(message.cpus.ticks))
        self.assertEqual([names[i] for i in range(32)], list(message.net.interfaces))
        self.assertEqual(parts[0].memory, message.memory)

    def test_longNamesClipped(self):
        """
        Host names and models longer than 255 bytes are clipped on a
        character boundary; interface names to 15 bytes.
        """
        message = status(hostname="é" * 200, net=wire.NetBlock(1, 0, (Interface("x" * 20),)))
        decoded = wire.decode(wire.encode(message))
        self.assertEqual(decoded.hostname, "é" * 127)
        self.assertEqual(decoded.net.interfaces[0].name, "x" * 15)


class SignatureTests(SynchronousTestCase):
    """
    HMAC-SHA-256 signatures.
    """

    def test_signedAccepted(self):
        """
        A datagram signed with the key decodes with it.
        """
        datagram = wire.encode(status(), key=b"key")
        self.assertTrue(wire.decode(datagram, key=b"key").signed)
        self.assertEqual(len(datagram), len(wire.encode(status())) + 32)

    def test_unsignedRefused(self):
        """
        With a key, an unsigned datagram is L{wire.Unsigned}.
        """
        self.assertRaises(wire.Unsigned, wire.decode, wire.encode(status()), key=b"key")

    def test_wrongKey(self):
        """
        A datagram signed with another key, or altered after signing, is
        L{wire.BadSignature}.
        """
        datagram = wire.encode(status(), key=b"other")
        self.assertRaises(wire.BadSignature, wire.decode, datagram, key=b"key")
        good = bytearray(wire.encode(status(), key=b"key"))
        good[60] ^= 1
        self.assertRaises(wire.BadSignature, wire.decode, bytes(good), key=b"key")

    def test_keyFileAgreement(self):
        """
        Without a key configured a signed datagram still decodes (the
        signature is not checked and C{signed} is false).
        """
        decoded = wire.decode(wire.encode(status(), key=b"key"))
        self.assertFalse(decoded.signed)
        self.assertEqual(decoded.memory, status().memory)


class MalformedTests(SynchronousTestCase):
    """
    Bad datagrams raise L{wire.WireError} saying why.
    """

    def assertBad(self, data: bytes, text: str) -> None:
        e = self.assertRaises(wire.WireError, wire.decode, data)
        self.assertIn(text, str(e))

    def test_cases(self):
        """
        Short, foreign, future, inconsistent and overrunning datagrams.
        """
        good = wire.encode(status())
        self.assertBad(good[:20], "shorter than a header")
        self.assertBad(b"XXXX" + good[4:], "bad magic")
        self.assertBad(good[:4] + b"\x01" + good[5:], "version 1 (this is version 2)")
        self.assertBad(good[:4] + b"\x03" + good[5:], "version 3")
        self.assertBad(good[:5] + b"\x09" + good[6:], "unknown message type")
        self.assertBad(good[:44] + b"\x01\x01" + good[46:], "part 1 of 1")
        self.assertBad(good[:-1], "does not match")
        # a section whose length runs past the payload
        body = struct.pack(">HH", wire.SEC_MEMORY, 200) + b"\0" * 7
        header = good[:46] + struct.pack(">H", len(body))
        self.assertBad(header + body, "runs past the end")
        # the same section twice
        memory = struct.pack(">HH", wire.SEC_MEMORY, 56) + b"\0" * 56
        self.assertBad(good[:46] + struct.pack(">H", 120) + memory * 2, "twice")
        # a fixed-size section of the wrong size
        memory = struct.pack(">HH", wire.SEC_MEMORY, 57) + b"\0" * 57
        self.assertBad(good[:46] + struct.pack(">H", 61) + memory, "memory section is 57 bytes, not 56")
        # stray bytes after the numbers of a section
        cpus = struct.pack(">HH", wire.SEC_CPUS, 19) + struct.pack(">HHHI", 1, 0, 1, 0) + b"\0" * 9
        self.assertBad(good[:46] + struct.pack(">H", len(cpus)) + cpus, "stray")
        # a CPU block claiming rows beyond the node's total
        cpus = struct.pack(">HH", wire.SEC_CPUS, 10) + struct.pack(">HHHI", 2, 1, 2, 0)
        self.assertBad(good[:46] + struct.pack(">H", len(cpus)) + cpus, "CPUs 1+2 of 2")
        # a number of more than 64 bits
        cpus = (struct.pack(">HH", wire.SEC_CPUS, 28) + struct.pack(">HHHI", 1, 0, 1, 0)
                + b"\xff" * 17 + b"\x01" + b"\0" * 7)
        self.assertBad(good[:46] + struct.pack(">H", len(cpus)) + cpus, "64 bits")

    @settings(max_examples=2000, deadline=None)
    @given(st.binary(max_size=1600))
    def test_randomBytes(self, data):
        """
        Random bytes raise nothing but L{wire.WireError}.
        """
        try:
            wire.decode(data)
        except wire.WireError:
            pass

    @settings(max_examples=3000, deadline=None)
    @given(st.data())
    def test_mutations(self, data):
        """
        Valid datagrams with bytes changed, inserted or cut raise nothing
        but L{wire.WireError} (signed or not).
        """
        key = data.draw(st.sampled_from([None, b"k"]))
        datagram = bytearray(wire.encodeStatus(status(cpus=8, ifaces=3), key=key)[0])
        for _ in range(data.draw(st.integers(1, 6))):
            action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            at = data.draw(st.integers(0, max(0, len(datagram) - 1)))
            if action == "flip" and datagram:
                datagram[at] = data.draw(st.integers(0, 255))
            elif action == "cut":
                del datagram[at:at + data.draw(st.integers(1, 8))]
            else:
                datagram[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        try:
            wire.decode(bytes(datagram), key=key)
        except wire.WireError:
            pass
