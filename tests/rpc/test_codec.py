"""
Tests for XDR, RPC messages and record marking, with property tests.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sysmon.rpc import message as m
from sysmon.rpc.record import RecordReassembler, RecordTooLarge, frame
from sysmon.rpc.xdr import Packer, Unpacker, XDRError


class XDRTests(SynchronousTestCase):
    """
    XDR encoding rules (RFC 4506).
    """

    def test_roundTrip(self):
        """
        Integers, bools, strings with padding, fixed opaque, arrays.
        """
        data = (Packer().uint(7).int(-1).bool(True).string(b"abcde").fopaque(16, b"p" * 16)
                .hyper(2**40).bytes())
        self.assertEqual(data[:12], bytes.fromhex("00000007 ffffffff 00000001".replace(" ", "")))
        self.assertEqual(data[12:24], b"\x00\x00\x00\x05abcde\0\0\0")
        u = Unpacker(data)
        self.assertEqual((u.uint(), u.int(), u.bool(), u.string(10), u.fopaque(16), u.hyper()),
                         (7, -1, True, b"abcde", b"p" * 16, 2**40))
        u.done()

    def test_bounds(self):
        """
        A string over its bound, truncated data and left-over bytes are
        errors.
        """
        data = Packer().string(b"x" * 1025).bytes()
        self.assertRaises(XDRError, Unpacker(data).string, 1024)
        self.assertRaises(XDRError, Unpacker(data[:-4]).string, 2000)
        self.assertRaises(XDRError, Unpacker(b"\0\0\0").uint)
        u = Unpacker(b"\0\0\0\1\0")
        u.uint()
        self.assertRaises(XDRError, u.done)
        self.assertRaises(XDRError, Unpacker(Packer().uint(2).bytes()).bool)
        self.assertRaises(XDRError, Unpacker(Packer().uint(17).bytes()).array, Unpacker.uint, 16)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_fuzz(self, data):
        """
        Random bytes raise only L{XDRError}.
        """
        u = Unpacker(data)
        try:
            u.string(1024)
            u.array(u.uint, 16)
            u.fopaque(16)
            u.bool()
        except XDRError:
            pass


class MessageTests(SynchronousTestCase):
    """
    RPC calls and replies.
    """

    def test_callRoundTrip(self):
        """
        A call with AUTH_SYS decodes to what was encoded.
        """
        cred = m.AuthSys(1, b"host", 0, 0, (1, 2)).toAuth()
        call = m.decodeCall(m.encodeCall(9, 100024, 1, 2, b"args", cred))
        self.assertEqual((call.xid, call.prog, call.vers, call.proc, call.args),
                         (9, 100024, 1, 2, b"args"))
        self.assertEqual(m.AuthSys.fromAuth(call.cred).gids, (1, 2))

    def test_rpcVersion(self):
        """
        rpcvers 3 raises L{m.RPCMismatch} with the xid; the answer is
        RPC_MISMATCH(2, 2).
        """
        e = self.assertRaises(m.RPCMismatch, m.decodeCall, m.encodeCall(5, 1, 1, 1, rpcvers=3))
        self.assertEqual(e.xid, 5)
        reply = m.decodeReply(m.deniedReply(5, m.RPC_MISMATCH, 2, 2))
        self.assertEqual((reply.accepted, reply.stat, reply.low, reply.high), (False, 0, 2, 2))

    def test_badCredentials(self):
        """
        An auth body over 400 bytes or a broken AUTH_SYS body is
        L{m.BadCredentials}.
        """
        big = m.OpaqueAuth(m.AUTH_SYS, b"x" * 404)
        self.assertRaises(m.BadCredentials, m.decodeCall, m.encodeCall(1, 1, 1, 1, cred=big))
        broken = m.OpaqueAuth(m.AUTH_SYS, b"\0\0\0\1")
        self.assertRaises(m.BadCredentials, m.decodeCall, m.encodeCall(1, 1, 1, 1, cred=broken))

    def test_notACall(self):
        """
        A reply or garbage is not a call.
        """
        self.assertRaises(m.NotACall, m.decodeCall, m.acceptedReply(1))
        self.assertRaises(m.NotACall, m.decodeCall, b"\0\0")

    def test_acceptedReplies(self):
        """
        Reply words as Linux sends them.
        """
        self.assertEqual(m.acceptedReply(7, m.PROG_MISMATCH, low=1, high=1),
                         bytes.fromhex("00000007000000010000000000000000000000000000000200000001"
                                       "00000001"))
        r = m.decodeReply(m.acceptedReply(7, m.SUCCESS, b"\0\0\0\1"))
        self.assertEqual((r.accepted, r.stat, r.results), (True, 0, b"\0\0\0\1"))

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=300))
    def test_fuzzCall(self, data):
        """
        Random bytes raise only L{XDRError} (its subclasses) from
        decodeCall and decodeReply.
        """
        for decode in (m.decodeCall, m.decodeReply):
            try:
                decode(data)
            except XDRError:
                pass

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), max_size=6))
    def test_fuzzMutatedCall(self, flips):
        """
        Mutated calls raise only L{XDRError}.
        """
        data = bytearray(m.encodeCall(3, 100024, 1, 2, b"\0\0\0\4name" + b"\0" * 30,
                                      m.AuthSys(1, b"h", 0, 0).toAuth()))
        for at, value in flips:
            data[at % len(data)] = value
        try:
            m.decodeCall(bytes(data))
        except XDRError:
            pass


class RecordTests(SynchronousTestCase):
    """
    TCP record marking.
    """

    def test_fragments(self):
        """
        A record split into fragments, delivered a byte at a time, is one
        record; two pipelined records are two.
        """
        stream = (b"\x00\x00\x00\x03abc" + b"\x80\x00\x00\x02de") + frame(b"second")
        r = RecordReassembler()
        out = []
        for i in range(len(stream)):
            out += r.feed(stream[i : i + 1])
        self.assertEqual(out, [b"abcde", b"second"])

    def test_cap(self):
        """
        A record over the cap raises L{RecordTooLarge}, even in fragments.
        """
        r = RecordReassembler(maxRecord=10)
        self.assertRaises(RecordTooLarge, r.feed, b"\x80\x00\x00\x0b")
        r = RecordReassembler(maxRecord=10)
        r.feed(b"\x00\x00\x00\x06abcdef")
        self.assertRaises(RecordTooLarge, r.feed, b"\x80\x00\x00\x06")
