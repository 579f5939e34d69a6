"""
Tests for L{sysmon.watchdog.icmp}: the echo codec, the pinger's retry and
matching rules against a fake socket and a L{Clock}, and real pings over
loopback and into a network namespace of the test's own, with both kinds of
ICMP socket.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sysmon.testing import Namespace
from sysmon.watchdog.codes import ENOERR
from sysmon.watchdog.icmp import (
    EchoReply,
    ICMPError,
    Pinger,
    PingSocketError,
    checksum,
    decodeReply,
    encodeEcho,
)


def ipv4Header(payload: bytes, source: str = "192.0.2.7", destination: str = "192.0.2.1",
               options: bytes = b"", protocol: int = 1) -> bytes:
    """
    An IPv4 header (with C{options}, a multiple of 4 bytes) for C{payload},
    as a raw socket delivers it.
    """
    words = (20 + len(options)) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | words, 0, 20 + len(options) + len(payload),
                         1, 0, 64, protocol, 0, socket.inet_aton(source),
                         socket.inet_aton(destination)) + options
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


# -- codec ---------------------------------------------------------------------


class ChecksumTests(SynchronousTestCase):
    """
    L{checksum} is the RFC 1071 Internet checksum.
    """

    def test_rfc1071Example(self):
        """
        The example of RFC 1071 section 3 (words 0001 f203 f4f5 f6f7 sum to
        ddf2) gives its complement, 220d.
        """
        self.assertEqual(checksum(bytes.fromhex("0001f203f4f5f6f7")), 0x220D)

    def test_ipv4HeaderVector(self):
        """
        A well-known IPv4 header (checksum field zeroed) gives the checksum
        that header carries, b861; with the checksum in place the result is 0.
        """
        header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
        self.assertEqual(checksum(header), 0xB861)
        filled = header[:10] + b"\xb8\x61" + header[12:]
        self.assertEqual(checksum(filled), 0)

    def test_oddLength(self):
        """
        An odd last byte is summed as the high byte of a word; the carry is
        folded back in.
        """
        self.assertEqual(checksum(b"\x01"), 0xFEFF)
        self.assertEqual(checksum(b"\xff\xff\x00\x01"), 0xFFFE)
        self.assertEqual(checksum(b""), 0xFFFF)


class EncodeTests(SynchronousTestCase):
    """
    L{encodeEcho} builds echo requests and replies.
    """

    def test_request(self):
        """
        An ICMPv4 echo request: type 8, code 0, the checksum over the whole
        message, identifier and sequence big-endian, then the payload.
        """
        self.assertEqual(encodeEcho(0x1234, 1, b""), bytes.fromhex("0800e5ca12340001"))
        message = encodeEcho(7, 9, b"hello")
        self.assertEqual(message[:1], b"\x08")
        self.assertEqual(message[8:], b"hello")
        self.assertEqual(checksum(message), 0)

    def test_requestV6(self):
        """
        An ICMPv6 echo request is type 128 with the checksum left to the
        kernel (0).
        """
        self.assertEqual(encodeEcho(0x1234, 1, b"x", v6=True),
                         bytes.fromhex("8000000012340001") + b"x")

    def test_reply(self):
        """
        With C{reply}, the types are 0 and 129.
        """
        self.assertEqual(encodeEcho(1, 2, b"", reply=True)[0], 0)
        self.assertEqual(encodeEcho(1, 2, b"", v6=True, reply=True)[0], 129)

    def test_range(self):
        """
        An identifier or sequence number that does not fit 16 bits is refused.
        """
        self.assertRaises(ValueError, encodeEcho, 0x10000, 1, b"")
        self.assertRaises(ValueError, encodeEcho, 1, -1, b"")


class DecodeTests(SynchronousTestCase):
    """
    L{decodeReply} accepts echo replies only, and raises L{ICMPError} for
    anything else.
    """

    def test_roundtrip(self):
        """
        An encoded echo reply decodes to its identifier, sequence number and
        payload, for ICMP and ICMPv6, from datagram sockets (no IP header).
        """
        for v6 in (False, True):
            data = encodeEcho(0xBEEF, 0xFFFF, b"token and fill", v6=v6, reply=True)
            self.assertEqual(decodeReply(data, v6=v6, raw=False),
                             EchoReply(0xBEEF, 0xFFFF, b"token and fill"))

    def test_rawIPv4HeaderStripped(self):
        """
        From a raw IPv4 socket, the IP header (with or without options) is
        skipped by its own length.
        """
        message = encodeEcho(3, 4, b"payload", reply=True)
        for options in (b"", b"\x01\x01\x01\x00", b"\x01" * 8):
            self.assertEqual(decodeReply(ipv4Header(message, options=options), v6=False, raw=True),
                             EchoReply(3, 4, b"payload"))

    def test_rawIPv6NoHeader(self):
        """
        A raw ICMPv6 socket gives the ICMPv6 message alone.
        """
        message = encodeEcho(3, 4, b"p", v6=True, reply=True)
        self.assertEqual(decodeReply(message, v6=True, raw=True), EchoReply(3, 4, b"p"))

    def test_refused(self):
        """
        Echo requests, other ICMP types, a non-zero code, the wrong family's
        reply type, a bad checksum, short data, a bad or non-ICMP IP header
        are each refused with L{ICMPError}.
        """
        reply = encodeEcho(1, 2, b"abcd", reply=True)
        badSum = reply[:2] + bytes([reply[2] ^ 0xFF]) + reply[3:]
        unreachable = bytes([3, 1]) + reply[2:]
        cases = [
            (encodeEcho(1, 2, b"abcd"), False, False),
            (unreachable, False, False),
            (reply[:1] + b"\x01" + reply[2:], False, False),
            (badSum, False, False),
            (reply[:7], False, False),
            (b"", False, False),
            (encodeEcho(1, 2, b"", v6=True), True, False),
            (bytes([1, 4]) + b"\0" * 6, True, False),
            (reply, True, False),
            (encodeEcho(1, 2, b"", v6=True, reply=True), False, False),
            (reply, False, True),
            (ipv4Header(reply)[:19], False, True),
            (ipv4Header(reply, protocol=17), False, True),
            (b"\x65" + ipv4Header(reply)[1:], False, True),
            (b"\x43" + ipv4Header(reply)[1:], False, True),
            (b"\x4f" + ipv4Header(reply)[1:20], False, True),
            (ipv4Header(encodeEcho(1, 2, b"abcd")), False, True),
        ]
        for data, v6, raw in cases:
            with self.subTest(data=data, v6=v6, raw=raw):
                self.assertRaises(ICMPError, decodeReply, data, v6, raw)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200), st.booleans(), st.booleans())
    def test_randomBytes(self, data, v6, raw):
        """
        Random bytes, whatever the socket, decode to an L{EchoReply} or
        raise L{ICMPError}, nothing else.
        """
        try:
            result = decodeReply(data, v6, raw)
        except ICMPError:
            return
        self.assertIsInstance(result, EchoReply)

    @settings(max_examples=500, deadline=None)
    @given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64),
           st.booleans(), st.booleans(),
           st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
           st.integers(0, 100))
    def test_mutatedReplies(self, ident, seq, payload, v6, raw, flips, cut):
        """
        Valid replies with bytes changed and the end cut off decode or raise
        L{ICMPError}; unchanged, they decode to what was encoded.
        """
        data = encodeEcho(ident, seq, payload, v6=v6, reply=True)
        if raw and not v6:
            data = ipv4Header(data)
        self.assertEqual(decodeReply(data, v6, raw), EchoReply(ident, seq, payload))
        mutated = bytearray(data)
        for where, value in flips:
            if mutated:
                mutated[where % len(mutated)] = value
        mutated = mutated[:max(0, len(mutated) - cut)]
        try:
            decodeReply(bytes(mutated), v6, raw)
        except ICMPError:
            pass


# -- the pinger against a fake network -------------------------------------------


class FakeSocket:
    """
    An ICMP socket that records what is sent and returns what a test queues.

    @ivar sent: C{(data, address)} in send order.
    @ivar inbox: C{(data, source)} for C{recvfrom}.
    @ivar sendErrors: errnos the next sends raise, one each.
    """

    _fds = iter(range(1000, 100000))

    def __init__(self, family: int, type: int, proto: int) -> None:
        self.family, self.type, self.proto = family, type, proto
        self.sent: list[tuple[bytes, tuple]] = []
        self.inbox: list[tuple[bytes, tuple]] = []
        self.sendErrors: list[int] = []
        self.options: list[tuple] = []
        self.blocking = True
        self.closed = False
        self.fd = next(self._fds)

    def fileno(self) -> int:
        return -1 if self.closed else self.fd

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def setsockopt(self, *args) -> None:
        self.options.append(args)

    def sendto(self, data: bytes, address: tuple) -> int:
        if self.closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if self.sendErrors:
            code = self.sendErrors.pop(0)
            raise OSError(code, os.strerror(code))
        self.sent.append((data, address))
        return len(data)

    def recvfrom(self, size: int) -> tuple[bytes, tuple]:
        if not self.inbox:
            raise BlockingIOError(errno.EAGAIN, "no data")
        return self.inbox.pop(0)

    def close(self) -> None:
        self.closed = True


class FakeNetwork:
    """
    A socket factory for L{Pinger}: refuses the (family, kind) pairs in
    C{refuse} with the errno given there, otherwise makes a L{FakeSocket}.
    """

    def __init__(self, refuse: dict | None = None) -> None:
        self.refuse = refuse or {}
        self.sockets: dict[int, FakeSocket] = {}
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, family: int, type: int, proto: int) -> FakeSocket:
        self.calls.append((family, type, proto))
        kind = "raw" if type & ~socket.SOCK_CLOEXEC == socket.SOCK_RAW else "dgram"
        if (family, kind) in self.refuse:
            code = self.refuse[(family, kind)]
            raise OSError(code, os.strerror(code))
        sock = self.sockets[family] = FakeSocket(family, type, proto)
        return sock


ALL_DGRAM_REFUSED = {(socket.AF_INET, "dgram"): errno.EACCES,
                     (socket.AF_INET6, "dgram"): errno.EACCES}


class PingerTests(SynchronousTestCase):
    """
    L{Pinger} with fake sockets and a fake clock: the retry, matching and
    error rules.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.events: list[dict] = []

    def makePinger(self, refuse: dict | None = None, **kw) -> tuple[Pinger, FakeNetwork]:
        network = FakeNetwork(refuse)
        pinger = Pinger(self.reactor, socketFactory=network, **kw)
        pinger.log = Logger(observer=self.events.append, namespace="test")
        pinger.open()
        return pinger, network

    def reader(self, pinger: Pinger, family: int = socket.AF_INET):
        readers = [r for r in self.reactor.readers if r.family == family]
        self.assertEqual(len(readers), 1)
        return readers[0]

    def answer(self, pinger: Pinger, network: FakeNetwork, index: int = -1,
               family: int = socket.AF_INET, source: str | None = None,
               ident: int | None = None, payload: bytes | None = None,
               deliver: bool = True) -> None:
        """
        Queue the echo reply to the request sent as C{index} on C{family}'s
        socket (optionally from another address, with another identifier or
        payload) and let the pinger read it.
        """
        sock = network.sockets[family]
        data, address = sock.sent[index]
        v6 = family == socket.AF_INET6
        _, _, _, sentIdent, seq = struct.unpack("!BBHHH", data[:8])
        message = encodeEcho(sentIdent if ident is None else ident, seq,
                             data[8:] if payload is None else payload, v6=v6, reply=True)
        raw = sock.type & ~socket.SOCK_CLOEXEC == socket.SOCK_RAW
        if raw and not v6:
            message = ipv4Header(message, source=source or address[0])
        sock.inbox.append((message, (source or address[0], 0) if not v6
                           else (source or address[0], 0, 0, 0)))
        if deliver:
            self.reader(pinger, family).doRead()

    def results(self, d: defer.Deferred) -> list:
        out: list = []
        d.addBoth(out.append)
        return out

    def assertNoTimers(self):
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])

    def sequences(self, sock: FakeSocket) -> list[int]:
        return [struct.unpack("!H", data[6:8])[0] for data, _ in sock.sent]

    # open

    def test_opensDatagramSocketsFirst(self):
        """
        Where unprivileged ICMP sockets are allowed, both families get one:
        close-on-exec, non-blocking, read by the reactor, no raw filter.
        """
        pinger, network = self.makePinger()
        self.assertEqual(pinger.kinds, {socket.AF_INET: "dgram", socket.AF_INET6: "dgram"})
        self.assertEqual(network.calls, [
            (socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP),
            (socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMPV6),
        ])
        for sock in network.sockets.values():
            self.assertFalse(sock.blocking)
            self.assertEqual(sock.options, [])
        self.assertEqual({r.sock for r in self.reactor.readers}, set(network.sockets.values()))
        for r in self.reactor.readers:
            self.assertIn("dgram", r.logPrefix())

    def test_fallsBackToRaw(self):
        """
        Where datagram ICMP sockets are refused, raw ones are opened, with a
        kernel filter that passes only echo replies.
        """
        pinger, network = self.makePinger(ALL_DGRAM_REFUSED)
        self.assertEqual(pinger.kinds, {socket.AF_INET: "raw", socket.AF_INET6: "raw"})
        v4 = network.sockets[socket.AF_INET]
        self.assertEqual(v4.type & ~socket.SOCK_CLOEXEC, socket.SOCK_RAW)
        self.assertEqual(v4.options, [(255, 1, struct.pack("=I", 0xFFFFFFFE))])
        v6 = network.sockets[socket.AF_INET6]
        (level, name, value), = v6.options
        self.assertEqual((level, name), (socket.IPPROTO_ICMPV6, 1))
        words = struct.unpack("=8I", value)
        self.assertEqual(words[4], 0xFFFFFFFD)  # type 129 = word 4, bit 1 passes
        self.assertEqual([w for i, w in enumerate(words) if i != 4], [0xFFFFFFFF] * 7)

    def test_rawOnly(self):
        """
        C{kinds=("raw",)} opens raw sockets without trying datagram ones; an
        unknown kind is refused.
        """
        pinger, network = self.makePinger(kinds=("raw",))
        self.assertEqual(pinger.kinds, {socket.AF_INET: "raw", socket.AF_INET6: "raw"})
        self.assertEqual([t & ~socket.SOCK_CLOEXEC for _, t, _ in network.calls],
                         [socket.SOCK_RAW, socket.SOCK_RAW])
        self.assertRaises(ValueError, Pinger, self.reactor, kinds=("stream",))

    def test_openFailsClearly(self):
        """
        When no ICMP socket can be opened, L{Pinger.open} raises
        L{PingSocketError} saying what to change, and nothing is registered.
        """
        refuse = dict(ALL_DGRAM_REFUSED)
        refuse[(socket.AF_INET, "raw")] = errno.EPERM
        refuse[(socket.AF_INET6, "raw")] = errno.EPERM
        network = FakeNetwork(refuse)
        pinger = Pinger(self.reactor, socketFactory=network)
        error = self.assertRaises(PingSocketError, pinger.open)
        message = str(error)
        self.assertIn("ping_group_range", message)
        self.assertIn("root", message)
        self.assertIn("IPv4", message)
        self.assertEqual(error.errno, errno.EPERM)
        self.assertEqual(self.reactor.readers, set())
        self.assertRaises(RuntimeError, pinger.ping, "127.0.0.1")

    def test_noIPv6(self):
        """
        A system without IPv6 still pings IPv4; an IPv6 ping answers
        EAFNOSUPPORT at once, sending nothing, and the log names the target.
        """
        pinger, network = self.makePinger({(socket.AF_INET6, "dgram"): errno.EAFNOSUPPORT})
        self.assertEqual(pinger.kinds, {socket.AF_INET: "dgram"})
        # the family is missing: the raw kind is not tried for it
        self.assertEqual(len(network.calls), 2)
        self.assertEqual(self.successResultOf(pinger.ping("::1")), errno.EAFNOSUPPORT)
        self.assertTrue(any(e.get("target") == "::1" for e in self.events))

    def test_openTwiceAndCloseTwice(self):
        """
        A second open does nothing; close removes the readers and closes the
        sockets, and a second close does nothing.
        """
        pinger, network = self.makePinger()
        pinger.open()
        self.assertEqual(len(network.calls), 2)
        pinger.close()
        pinger.close()
        self.assertEqual(self.reactor.readers, set())
        self.assertTrue(all(s.closed for s in network.sockets.values()))

    # retries and replies

    def test_retriesCountTimesWaitApart(self):
        """
        Without replies, exactly C{count} requests are sent, C{wait} seconds
        apart, each with its own sequence number and token, and then the
        ping answers ENETUNREACH with no timer left; the log names the target.
        """
        pinger, network = self.makePinger()
        sock = network.sockets[socket.AF_INET]
        result = self.results(pinger.ping("192.0.2.9", count=3, wait=0.5))
        self.assertEqual(len(sock.sent), 1)
        for n in (2, 3):
            self.reactor.advance(0.499)
            self.assertEqual(len(sock.sent), n - 1)
            self.reactor.advance(0.001)
            self.assertEqual(len(sock.sent), n)
        self.reactor.advance(0.499)
        self.assertEqual(result, [])
        self.reactor.advance(0.001)
        self.assertEqual(result, [errno.ENETUNREACH])
        self.assertEqual(len(sock.sent), 3)
        self.assertEqual({address for _, address in sock.sent}, {("192.0.2.9", 0)})
        self.assertEqual(len(set(self.sequences(sock))), 3)
        self.assertEqual(len({data[8:16] for data, _ in sock.sent}), 3)
        self.assertNoTimers()
        self.assertEqual(pinger.sent, 3)
        failed = [e for e in self.events if e["log_level"].name == "error"]
        self.assertEqual([e["target"] for e in failed], ["192.0.2.9"])

    def test_requestFormat(self):
        """
        What is sent is an echo request whose identifier is ours, for the
        family's message type (ICMPv6 to an IPv6 address, with scope 0).
        """
        pinger, network = self.makePinger()
        pinger.ping("192.0.2.9")
        pinger.ping("2001:db8::1")
        data, _ = network.sockets[socket.AF_INET].sent[0]
        self.assertEqual(data[0], 8)
        self.assertEqual(checksum(data), 0)
        self.assertEqual(struct.unpack("!H", data[4:6])[0], os.getpid() & 0xFFFF)
        data6, address6 = network.sockets[socket.AF_INET6].sent[0]
        self.assertEqual(data6[0], 128)
        self.assertEqual(address6, ("2001:db8::1", 0, 0, 0))

    def test_firstReplyWins(self):
        """
        The reply to the second attempt ends the ping with ENOERR: nothing
        more is sent, no timer is left, and a second copy of the reply is
        ignored.
        """
        pinger, network = self.makePinger()
        sock = network.sockets[socket.AF_INET]
        result = self.results(pinger.ping("192.0.2.9", count=3, wait=1.0))
        self.reactor.advance(1.0)
        self.assertEqual(len(sock.sent), 2)
        self.answer(pinger, network, index=1)
        self.assertEqual(result, [ENOERR])
        self.assertNoTimers()
        self.answer(pinger, network, index=1)
        self.reactor.advance(10)
        self.assertEqual(len(sock.sent), 2)
        self.assertEqual(result, [ENOERR])
        self.assertEqual(pinger.ignored, 1)

    def test_lateReplyIgnored(self):
        """
        A reply to the first attempt that arrives while the second is
        waiting does not count (as in the original, which waits for that
        attempt's sequence number); the reply to the current attempt does.
        """
        pinger, network = self.makePinger()
        result = self.results(pinger.ping("192.0.2.9", count=2, wait=1.0))
        self.reactor.advance(1.0)
        self.answer(pinger, network, index=0)
        self.assertEqual(result, [])
        self.assertEqual(pinger.ignored, 1)
        self.answer(pinger, network, index=1)
        self.assertEqual(result, [ENOERR])

    def test_lateReplyAfterTheEnd(self):
        """
        A reply to the last attempt after its wait is over changes nothing:
        the ping has answered ENETUNREACH.
        """
        pinger, network = self.makePinger()
        result = self.results(pinger.ping("192.0.2.9", count=1, wait=1.0))
        self.reactor.advance(1.0)
        self.answer(pinger, network, index=0)
        self.assertEqual(result, [errno.ENETUNREACH])
        self.assertEqual(pinger.ignored, 1)

    def test_foreignRepliesIgnored(self):
        """
        Replies with the right sequence number but another source address,
        another payload token, or (on raw sockets, which see every reply)
        another identifier are ignored, as is a datagram that is not an
        echo reply.
        """
        pinger, network = self.makePinger(ALL_DGRAM_REFUSED)
        result = self.results(pinger.ping("192.0.2.9", count=1, wait=1.0))
        self.answer(pinger, network, source="192.0.2.10")
        payload = network.sockets[socket.AF_INET].sent[0][0][8:]
        self.answer(pinger, network, payload=bytes([payload[0] ^ 1]) + payload[1:])
        self.answer(pinger, network, ident=(os.getpid() + 1) & 0xFFFF)
        sock = network.sockets[socket.AF_INET]
        sock.inbox.append((ipv4Header(encodeEcho(1, 1, b"x")), ("192.0.2.9", 0)))
        sock.inbox.append((b"\x45", ("192.0.2.9", 0)))
        self.reader(pinger).doRead()
        self.assertEqual(result, [])
        self.assertEqual(pinger.ignored, 5)
        self.answer(pinger, network)
        self.assertEqual(result, [ENOERR])

    def test_datagramSocketIdentRewritten(self):
        """
        On a datagram ICMP socket the kernel sets the identifier, so a reply
        with another identifier still counts.
        """
        pinger, network = self.makePinger()
        result = self.results(pinger.ping("192.0.2.9"))
        self.answer(pinger, network, ident=(os.getpid() + 1) & 0xFFFF)
        self.assertEqual(result, [ENOERR])

    def test_manyInFlight(self):
        """
        Pings to the same and to different targets, IPv4 and IPv6, run at
        the same time; each reply ends only its own ping.
        """
        pinger, network = self.makePinger(ALL_DGRAM_REFUSED)
        first = self.results(pinger.ping("192.0.2.9", count=2, wait=1.0))
        second = self.results(pinger.ping("192.0.2.9", count=2, wait=1.0))
        other = self.results(pinger.ping("198.51.100.3", count=2, wait=1.0))
        six = self.results(pinger.ping("2001:db8::7", count=2, wait=1.0))
        self.answer(pinger, network, index=1)
        self.assertEqual((first, second, other, six), ([], [ENOERR], [], []))
        self.answer(pinger, network, index=0, family=socket.AF_INET6)
        self.assertEqual(six, [ENOERR])
        self.answer(pinger, network, index=0)
        self.assertEqual(first, [ENOERR])
        self.reactor.advance(1.0)
        self.assertEqual(other, [])
        self.answer(pinger, network, index=-1)
        self.assertEqual(other, [ENOERR])
        self.assertNoTimers()

    def test_readsEverythingQueued(self):
        """
        One wake-up reads all the datagrams waiting, so replies queued
        together end all their pings.
        """
        pinger, network = self.makePinger()
        results = [self.results(pinger.ping(f"192.0.2.{n}")) for n in range(1, 6)]
        for index in range(5):
            self.answer(pinger, network, index=index, deliver=False)
        self.reader(pinger).doRead()
        self.assertEqual(results, [[ENOERR]] * 5)

    # errors

    def test_sendtoErrorAtOnce(self):
        """
        A failed sendto ends the ping at once with its errno (here
        ENETUNREACH), with no timer left and the target in the log.
        """
        pinger, network = self.makePinger()
        network.sockets[socket.AF_INET].sendErrors = [errno.ENETUNREACH]
        result = self.results(pinger.ping("192.0.2.9"))
        self.assertEqual(result, [errno.ENETUNREACH])
        self.assertNoTimers()
        self.assertEqual(pinger.sent, 0)
        failed = [e for e in self.events if e["log_level"].name == "error"]
        self.assertEqual([e["target"] for e in failed], ["192.0.2.9"])

    def test_sendtoErrorOnRetry(self):
        """
        A sendto that fails on the second attempt answers its errno
        (EHOSTUNREACH, EPERM from a firewall) after the first wait.
        """
        for code in (errno.EHOSTUNREACH, errno.EPERM):
            pinger, network = self.makePinger()
            result = self.results(pinger.ping("192.0.2.9", count=3, wait=1.0))
            network.sockets[socket.AF_INET].sendErrors = [code]
            self.assertEqual(result, [])
            self.reactor.advance(1.0)
            self.assertEqual(result, [code])
            self.assertNoTimers()
            pinger.close()

    def test_sendBufferFull(self):
        """
        A send that the kernel could not queue (EAGAIN, ENOBUFS) is a lost
        packet: the ping waits and tries again as for a missing reply.
        """
        pinger, network = self.makePinger()
        sock = network.sockets[socket.AF_INET]
        sock.sendErrors = [errno.EAGAIN, errno.ENOBUFS]
        result = self.results(pinger.ping("192.0.2.9", count=3, wait=1.0))
        self.reactor.advance(1.0)
        self.assertEqual(result, [])
        self.reactor.advance(1.0)
        self.assertEqual(len(sock.sent), 1)
        self.answer(pinger, network)
        self.assertEqual(result, [ENOERR])

    def test_badArguments(self):
        """
        A host name, a malformed address, a number, an unknown IPv6 zone, a count
        below 1 or a wait that is not positive raise ValueError when ping is
        called; nothing is sent.
        """
        pinger, network = self.makePinger()
        for address in ("example.com", "300.1.2.3", "", "fe80::1%no-such-if0", 3):
            self.assertRaises(ValueError, pinger.ping, address)
        self.assertRaises(ValueError, pinger.ping, "127.0.0.1", count=0)
        self.assertRaises(ValueError, pinger.ping, "127.0.0.1", wait=0)
        self.assertEqual(network.sockets[socket.AF_INET].sent, [])
        self.assertNoTimers()

    def test_addressForms(self):
        """
        An IPv4-mapped IPv6 address is pinged over IPv4; an IPv6 zone given
        as a number becomes the scope id.
        """
        pinger, network = self.makePinger()
        result = self.results(pinger.ping("::ffff:192.0.2.9"))
        self.assertEqual(network.sockets[socket.AF_INET].sent[0][1], ("192.0.2.9", 0))
        self.answer(pinger, network)
        self.assertEqual(result, [ENOERR])
        pinger.ping("fe80::1%3")
        self.assertEqual(network.sockets[socket.AF_INET6].sent[0][1], ("fe80::1", 0, 0, 3))

    # cancel and close

    def test_cancel(self):
        """
        Cancelling a ping fails its Deferred with CancelledError, stops its
        timer, sends no more, and its reply is then ignored.
        """
        pinger, network = self.makePinger()
        d = pinger.ping("192.0.2.9", count=3, wait=1.0)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertNoTimers()
        self.answer(pinger, network)
        self.reactor.advance(10)
        self.assertEqual(len(network.sockets[socket.AF_INET].sent), 1)
        self.assertEqual(pinger.ignored, 1)

    def test_closeCancelsPending(self):
        """
        Closing the pinger cancels the pings under way (they do not report
        ENETUNREACH), removes the readers and closes the sockets.
        """
        pinger, network = self.makePinger()
        d1 = pinger.ping("192.0.2.9")
        d2 = pinger.ping("2001:db8::1")
        done = pinger.ping("192.0.2.8")
        self.answer(pinger, network, index=-1)
        pinger.close()
        self.failureResultOf(d1, defer.CancelledError)
        self.failureResultOf(d2, defer.CancelledError)
        self.assertEqual(self.successResultOf(done), ENOERR)
        self.assertNoTimers()
        self.assertEqual(self.reactor.readers, set())
        self.assertTrue(all(s.closed for s in network.sockets.values()))
        self.assertRaises(RuntimeError, pinger.ping, "192.0.2.9")

    def test_socketLost(self):
        """
        A socket that the reactor gives up on is dropped: the ping waiting on
        it times out, and later pings to that family answer EBADF.
        """
        from twisted.python.failure import Failure

        pinger, network = self.makePinger()
        result = self.results(pinger.ping("192.0.2.9", count=1, wait=1.0))
        reader = self.reader(pinger)
        reader.connectionLost(Failure(OSError(errno.EBADF, "gone")))
        self.assertNotIn(reader, self.reactor.readers)
        self.reactor.advance(1.0)
        self.assertEqual(result, [errno.ENETUNREACH])
        self.assertEqual(self.successResultOf(pinger.ping("192.0.2.9")), errno.EBADF)


# -- real sockets ----------------------------------------------------------------


_CLONE_NEWNET = 0x40000000


def _ipv6Loopback() -> str | None:
    """
    Why IPv6 on ::1 cannot be used here, or C{None} when it can.
    """
    if not socket.has_ipv6:
        return "Python has no IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"IPv6 loopback is not available: {e}"
    return None


def namespaceSockets(ns: Namespace):
    """
    A socket factory that makes its sockets inside C{ns}'s far namespace
    (from a thread that enters it), for the pinger in this process.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def factory(family: int, type: int, proto: int) -> socket.socket:
        outcome: dict = {}

        def work():
            fd = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code))
                outcome["socket"] = socket.socket(family, type, proto)
            except OSError as e:
                outcome["error"] = e
            finally:
                os.close(fd)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["socket"]

    return factory


class LivePingTests(TestCase):
    """
    L{Pinger} with the real reactor and real ICMP sockets.
    """

    def openPinger(self, **kw) -> Pinger:
        from twisted.internet import reactor

        pinger = Pinger(reactor, **kw)
        try:
            pinger.open()
        except PingSocketError as e:
            raise self.skipTest(f"no ICMP socket here: {e}")
        self.addCleanup(pinger.close)
        return pinger

    def assertFlags(self, pinger: Pinger) -> None:
        for reader in pinger._readers.values():
            fd = reader.fileno()
            self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
            self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)

    @defer.inlineCallbacks
    def test_loopbackIPv4(self):
        """
        127.0.0.1 answers: ENOERR, with real sockets of whatever kind this
        system allows, close-on-exec and non-blocking.
        """
        pinger = self.openPinger()
        self.assertFlags(pinger)
        result = yield pinger.ping("127.0.0.1", count=3, wait=1.0)
        self.assertEqual(result, ENOERR)
        self.assertEqual(pinger.sent, 1)

    @defer.inlineCallbacks
    def test_loopbackIPv6(self):
        """
        ::1 answers: ENOERR.
        """
        why = _ipv6Loopback()
        if why:
            raise self.skipTest(why)
        pinger = self.openPinger()
        if socket.AF_INET6 not in pinger.kinds:
            raise self.skipTest("no ICMPv6 socket")
        result = yield pinger.ping("::1", count=3, wait=1.0)
        self.assertEqual(result, ENOERR)

    @defer.inlineCallbacks
    def test_loopbackRaw(self):
        """
        Raw sockets (forced) reach 127.0.0.1 and ::1 too, skipping the IP
        header and the other echo traffic they see; several pings at once
        each get their answer.
        """
        if os.geteuid() != 0:
            raise self.skipTest("raw ICMP sockets need root")
        pinger = self.openPinger(kinds=("raw",))
        self.assertEqual(pinger.kinds[socket.AF_INET], "raw")
        self.assertFlags(pinger)
        targets = ["127.0.0.1", "127.0.0.1", "127.0.0.2"]
        if _ipv6Loopback() is None and socket.AF_INET6 in pinger.kinds:
            targets.append("::1")
        results = yield defer.gatherResults([pinger.ping(t, count=3, wait=1.0)
                                             for t in targets])
        self.assertEqual(results, [ENOERR] * len(targets))

    @defer.inlineCallbacks
    def test_noReply(self):
        """
        A host in a namespace of the test's own answers (ENOERR); once it
        ignores echo requests, the ping answers ENETUNREACH after its
        C{count} waits, not before.
        """
        ns = Namespace(self, local="10.213.61.1", remote="10.213.61.2")
        pinger = self.openPinger()
        result = yield pinger.ping(ns.remote, count=3, wait=0.2)
        self.assertEqual(result, ENOERR)
        done = ns.run("sysctl", "-w", "net.ipv4.icmp_echo_ignore_all=1")
        self.assertEqual(done.returncode, 0, done.stderr)
        sentBefore = pinger.sent
        started = time.monotonic()
        result = yield pinger.ping(ns.remote, count=3, wait=0.2)
        elapsed = time.monotonic() - started
        self.assertEqual(result, errno.ENETUNREACH)
        self.assertEqual(pinger.sent - sentBefore, 3)
        self.assertGreaterEqual(elapsed, 0.55)
        self.assertLess(elapsed, 3.0)

    @defer.inlineCallbacks
    def test_datagramSockets(self):
        """
        Unprivileged ICMP sockets (made in a namespace of the test's own):
        refused with a clear error while net.ipv4.ping_group_range leaves
        our group out; once it lets us in, 127.0.0.1 and ::1 answer, and
        127.0.0.1 stops answering (ENETUNREACH) when echo is ignored.
        """
        ns = Namespace(self, local="10.213.62.1", remote="10.213.62.2")
        factory = namespaceSockets(ns)
        gid = os.getegid()
        done = ns.run("sysctl", "-w", f"net.ipv4.ping_group_range={gid + 1} {gid + 1}")
        self.assertEqual(done.returncode, 0, done.stderr)
        refused = Pinger(kinds=("dgram",), socketFactory=factory)
        error = self.assertRaises(PingSocketError, refused.open)
        self.assertIn("ping_group_range", str(error))

        done = ns.run("sysctl", "-w", f"net.ipv4.ping_group_range={gid} {gid}")
        self.assertEqual(done.returncode, 0, done.stderr)
        pinger = Pinger(kinds=("dgram",), socketFactory=factory)
        pinger.open()
        self.addCleanup(pinger.close)
        self.assertEqual(pinger.kinds[socket.AF_INET], "dgram")
        self.assertFlags(pinger)
        targets = ["127.0.0.1", "127.0.0.1"]
        v6 = ns.run("ip", "-6", "addr", "show", "dev", "lo")
        if socket.AF_INET6 in pinger.kinds and "::1" in v6.stdout:
            targets.append("::1")
        results = yield defer.gatherResults([pinger.ping(t, count=3, wait=1.0)
                                             for t in targets])
        self.assertEqual(results, [ENOERR] * len(targets))

        done = ns.run("sysctl", "-w", "net.ipv4.icmp_echo_ignore_all=1")
        self.assertEqual(done.returncode, 0, done.stderr)
        result = yield pinger.ping("127.0.0.1", count=2, wait=0.2)
        self.assertEqual(result, errno.ENETUNREACH)

