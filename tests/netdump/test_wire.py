"""
Tests for the netdump codec, L{sysmon.netdump.wire}, including property
tests: random and mutated bytes never raise anything but L{WireError}.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sysmon.netdump import wire
from sysmon.netdump.wire import COMM, REPLY, Reply, Request, StartInfo, WireError

from .captures import available, capture


class RequestTests(SynchronousTestCase):
    """
    24-byte requests.
    """

    def test_layout(self):
        """
        magic (8), nr, command, from, to: big-endian, 24 bytes.
        """
        data = Request(0x0102030405060708, 9, COMM.SEND_MEM, 0x1234, 0).toBytes()
        self.assertEqual(
            data,
            bytes.fromhex("0102030405060708" "00000009" "00000001" "00001234" "00000000"),
        )
        self.assertEqual(wire.encodeRequest(0x0102030405060708, 9, 1, 0x1234), data)
        self.assertEqual(Request.fromBytes(data), Request(0x0102030405060708, 9, 1, 0x1234, 0))

    def test_bad(self):
        """
        Wrong length or unknown command: L{WireError}.
        """
        self.assertRaises(WireError, Request.fromBytes, b"\0" * 23)
        self.assertRaises(WireError, Request.fromBytes, b"\0" * 12 + b"\0\0\0\x0a" + b"\0" * 8)


class ReplyTests(SynchronousTestCase):
    """
    Replies: 13-byte header and payload.
    """

    def test_layout(self):
        """
        version (1), nr, code, info (big-endian), payload.
        """
        data = Reply(5, 7, REPLY.MEM, 1024, b"x" * 1024).toBytes()
        self.assertEqual(data[:13], bytes.fromhex("05" "00000007" "00000003" "00000400"))
        self.assertEqual(Reply.fromBytes(data).payload, b"x" * 1024)

    def test_bad(self):
        """
        Short, unknown version or code, or an oversized payload: L{WireError}.
        """
        self.assertRaises(WireError, Reply.fromBytes, b"\x04" * 12)
        self.assertRaises(WireError, Reply.fromBytes, wire.encodeReply(6, 0, 3, 0))
        self.assertRaises(WireError, Reply.fromBytes, wire.encodeReply(4, 0, 13, 0))
        self.assertRaises(WireError, Reply.fromBytes, wire.encodeReply(4, 0, 3, 0, b"x" * 1025))
        Reply.fromBytes(wire.encodeReply(4, 0, REPLY.LOG, 0, b"x" * 1447))
        self.assertRaises(WireError, Reply.fromBytes, wire.encodeReply(4, 0, 2, 0, b"x" * 1448))


class StartTests(SynchronousTestCase):
    """
    The START_NETDUMP announcement.
    """

    def test_v5(self):
        """
        A v5 START: nr = ELF machine, info = version, and the text with the
        task, PAGE_OFFSET and magic.
        """
        reply = Reply(4, 62, REPLY.START_NETDUMP, 5,
                      b"task_struct:0xffff81003a6c8000 page_offset:0xffff810000000000 "
                      b"netdump_magic:0x1234abcd5678ef01\n")
        self.assertEqual(
            wire.decodeStart(reply),
            StartInfo(62, 5, 0xFFFF81003A6C8000, 0xFFFF810000000000, 0x1234ABCD5678EF01),
        )

    def test_legacy(self):
        """
        An early RHEL3 START (nr 0, info 0) is a legacy client without magic.
        """
        info = wire.decodeStart(Reply(4, 0, REPLY.START_NETDUMP, 0, wire.LEGACY_START_TEXT))
        self.assertTrue(info.legacy)
        self.assertIsNone(info.magic)

    def test_roundTrip(self):
        """
        L{wire.encodeStart} makes what L{wire.decodeStart} reads.
        """
        info = StartInfo(3, 5, 0xC1F4A000, 0xC0000000, 0xDEADBEEF)
        self.assertEqual(wire.decodeStart(Reply.fromBytes(wire.encodeStart(info))), info)

    def test_bad(self):
        """
        A v5 START without its text, or another code: L{WireError}.
        """
        self.assertRaises(WireError, wire.decodeStart, Reply(4, 62, REPLY.START_NETDUMP, 5, b"hi"))
        self.assertRaises(WireError, wire.decodeStart, Reply(4, 62, REPLY.HELLO, 5, b""))


class RegistersTests(SynchronousTestCase):
    """
    The REGS payload.
    """

    def test_staleBytesIgnored(self):
        """
        Exactly the text plus sizeof(elf_gregset_t) is taken; the stale bytes
        the client appends are not.
        """
        regs = bytes(range(216))
        reply = Reply(5, 3, REPLY.REGS, 1000, wire.REGS_TEXT + regs + b"STALE")
        self.assertEqual(wire.registersFromReply(reply, wire.EM_X86_64), regs)
        reply = Reply(5, 3, REPLY.REGS, 1000, wire.REGS_TEXT + regs[:68] + b"??")
        self.assertEqual(wire.registersFromReply(reply, wire.EM_386), regs[:68])

    def test_short(self):
        """
        Fewer register bytes than the machine has, or no text: L{WireError}.
        """
        self.assertRaises(WireError, wire.registersFromReply,
                          Reply(5, 3, REPLY.REGS, 0, wire.REGS_TEXT + b"x" * 100), wire.EM_X86_64)
        self.assertRaises(WireError, wire.registersFromReply,
                          Reply(5, 3, REPLY.REGS, 0, b"x" * 300), wire.EM_X86_64)


class ClassifyTests(SynchronousTestCase):
    """
    Telling replies, requests and console text apart on one port.
    """

    def test_kinds(self):
        """
        Replies, requests and text are recognised.
        """
        self.assertEqual(wire.classify(wire.encodeReply(4, 0, REPLY.LOG, 0, b"hi")), "reply")
        self.assertEqual(wire.classify(wire.encodeReply(5, 9, REPLY.MEM, 0, b"\0" * 1024)), "reply")
        self.assertEqual(wire.classify(wire.encodeRequest(0, 1, COMM.SEND_MEM, 5)), "request")
        self.assertEqual(wire.classify(b"[    0.000000] Linux version 6.1\n"), "console")
        self.assertEqual(wire.classify(b""), "console")
        self.assertEqual(wire.classify(b"\x04\0\0\0\0\0\0\0\x0d" + b"\0" * 4), "console")

    def test_realNetconsoleIsConsole(self):
        """
        Every datagram of the real netconsole captures is console text.
        """
        if not available():
            raise self.skipTest("shared/data/netconsole is not beside the checkout")
        for folder in ("6.1-virtio", "6.12-release-userdata"):
            for name in ("basic", "ext"):
                for datagram in capture(folder, name):
                    self.assertEqual(wire.classify(datagram), "console", datagram[:60])


class ExtendedTests(SynchronousTestCase):
    """
    Extended netconsole records.
    """

    def test_plainRecord(self):
        """
        level, seq, usec, flags and the text.
        """
        r = wire.decodeExtended(b"14,350,1903144,-;ncprobe: test line 1 of 20\n")
        self.assertEqual((r.release, r.level, r.seq, r.usec, r.flags, r.fragment),
                         (None, 14, 350, 1903144, b"-", None))
        self.assertEqual(r.body, b"ncprobe: test line 1 of 20\n")

    def test_release(self):
        """
        The release prefix is recognised (it contains a non-digit).
        """
        r = wire.decodeExtended(b"6.12.117+deb12-cloud-amd64,6,359,2270882,-;netconsole: up\n host=probe\n")
        self.assertEqual(r.release, b"6.12.117+deb12-cloud-amd64")
        self.assertEqual((r.level, r.seq), (6, 359))
        self.assertEqual(r.body, b"netconsole: up\n host=probe\n")

    def test_fragment(self):
        """
        ncfrag=<offset>/<total> is parsed; a fragment past its total is bad.
        """
        r = wire.decodeExtended(b"14,376,1932835,-,ncfrag=970/989;LLLL\n")
        self.assertEqual(r.fragment, (970, 989))
        self.assertRaises(WireError, wire.decodeExtended, b"14,376,1,-,ncfrag=988/989;LLLL")
        self.assertRaises(WireError, wire.decodeExtended, b"14,376,1,-,ncfrag=5/0;L")

    def test_futureFieldsIgnored(self):
        """
        Unknown fields before C{;} are ignored.
        """
        r = wire.decodeExtended(b"6,1,2,-,newfield=3,ncfrag=0/3;abc")
        self.assertEqual((r.fragment, r.body), ((0, 3), b"abc"))

    def test_plainTextIsNotExtended(self):
        """
        Plain console text raises L{WireError}.
        """
        self.assertRaises(WireError, wire.decodeExtended, b"[    0.000000] Linux version\n")

    def test_realCaptures(self):
        """
        Every datagram of the real extended captures decodes.
        """
        if not available():
            raise self.skipTest("shared/data/netconsole is not beside the checkout")
        fragments = 0
        for folder in ("6.1-virtio", "6.12-release-userdata"):
            for datagram in capture(folder, "ext"):
                record = wire.decodeExtended(datagram)
                fragments += record.fragment is not None
        self.assertGreater(fragments, 0)


class FuzzTests(SynchronousTestCase):
    """
    Decoders raise only L{WireError}, whatever the bytes.
    """

    def assertOnlyWireError(self, decode, data):
        try:
            decode(data)
        except WireError:
            pass

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=1500))
    def test_randomBytes(self, data):
        """
        Random datagrams.
        """
        wire.classify(data)
        self.assertOnlyWireError(Reply.fromBytes, data)
        self.assertOnlyWireError(Request.fromBytes, data)
        self.assertOnlyWireError(wire.decodeExtended, data)
        try:
            reply = Reply.fromBytes(data)
        except WireError:
            return
        self.assertOnlyWireError(wire.decodeStart, reply)
        for machine in wire.GREGSET_SIZE:
            self.assertOnlyWireError(lambda r: wire.registersFromReply(r, machine), reply)

    @settings(max_examples=500, deadline=None)
    @given(
        st.sampled_from([
            wire.encodeStart(StartInfo(62, 5, 0xFFFF81003A6C8000, 0xFFFF810000000000, 0x11)),
            wire.encodeReply(5, 3, REPLY.REGS, 100, wire.REGS_TEXT + bytes(216) + b"x"),
            b"14,376,1932835,-,ncfrag=970/989;LLLL\n",
            b"6.12.117,6,359,2270882,-;netconsole: up\n host=probe\n",
            wire.encodeReply(5, 9, REPLY.MEM, 1024, bytes(1024)),
        ]),
        st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
        st.integers(0, 1200),
    )
    def test_mutatedBytes(self, original, flips, cut):
        """
        Valid datagrams with bytes changed and cut short.
        """
        data = bytearray(original)
        for at, value in flips:
            if data:
                data[at % len(data)] = value
        data = bytes(data[: max(cut, 0)])
        self.test_randomBytes.hypothesis.inner_test(self, data)
