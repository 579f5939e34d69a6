"""
ICMP echo ("ping") for the watchdog's C{ping} check.

Two parts, as everywhere in sysmon: a pure codec (L{checksum},
L{encodeEcho}, L{decodeReply}, which raises L{ICMPError} and nothing else on
bad input) and the transport, L{Pinger}, which owns one ICMP socket per
address family, registered with the reactor as a reader, and answers
L{Pinger.ping} with the watchdog's result code.

The rules are those of the original daemon (src/net.c): a target is tried
C{ping-count} times, each attempt waiting C{interval / ping-count} seconds
for the reply to I{that} attempt; the first matching reply means success
(C{ENOERR}); no reply to any attempt means C{ENETUNREACH}; a C{sendto} that
fails ends the check at once with its errno.  Unlike the original, the
waits are reactor timers, so several targets are pinged at the same time
and nothing blocks.

Sockets: the unprivileged kind (C{SOCK_DGRAM, IPPROTO_ICMP}, allowed by
C{net.ipv4.ping_group_range}) is tried first, then the raw kind (root or
C{CAP_NET_RAW}).  With a datagram ICMP socket the kernel sets the echo
identifier itself (to the socket's "port") and hands over only the ICMP
message; a raw IPv4 socket sees the IP header first and every echo reply
that reaches the host, so replies are matched by source address, sequence
number and a random token in the payload (and, on raw sockets, the
identifier too).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from typing import Any, Callable, Iterable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sysmon.watchdog.codes import ENOERR

__all__ = [
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "ECHOV6_REPLY",
    "ECHOV6_REQUEST",
    "EchoReply",
    "ICMPError",
    "Pinger",
    "PingSocketError",
    "checksum",
    "decodeReply",
    "encodeEcho",
]

ECHO_REPLY = 0
ECHO_REQUEST = 8
ECHOV6_REQUEST = 128
ECHOV6_REPLY = 129

_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_IPPROTO_ICMP = 1


# -- codec ---------------------------------------------------------------------


class ICMPError(ValueError):
    """
    The bytes are not an ICMP (or ICMPv6) echo reply: too short, a bad IP
    header, another message type, or a bad checksum.  The only exception
    L{decodeReply} raises.
    """


@attrs.frozen
class EchoReply:
    """
    A decoded echo reply.

    @ivar ident: the echo identifier (on datagram ICMP sockets, the one the
        kernel chose, not the one that was encoded).
    @ivar seq: the sequence number.
    @ivar payload: the data after the 8-byte ICMP header.
    """

    ident: int
    seq: int
    payload: bytes


def checksum(data: bytes) -> int:
    """
    The Internet checksum (RFC 1071): the ones' complement of the ones'
    complement sum of C{data} taken as big-endian 16-bit words, an odd last
    byte padded with a zero byte.  Over a message that carries its correct
    checksum, the result is 0.

    @param data: the bytes to sum.
    @return: the checksum, 0 to 0xffff, to be stored big-endian.
    """
    if len(data) % 2:
        data = data + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encodeEcho(ident: int, seq: int, payload: bytes, v6: bool = False,
               reply: bool = False) -> bytes:
    """
    An ICMP echo request (or, with C{reply}, an echo reply) message, without
    an IP header.

    For ICMPv6 the checksum field is left 0: it covers a pseudo-header with
    both addresses, and the kernel fills it in for raw and datagram ICMPv6
    sockets alike.

    @param ident: the identifier, 0 to 0xffff.
    @param seq: the sequence number, 0 to 0xffff.
    @param payload: the data that the reply must echo.
    @param v6: build an ICMPv6 message (types 128/129) instead of ICMP (8/0).
    @param reply: build an echo reply instead of a request.
    @raise ValueError: C{ident} or C{seq} out of range.
    @return: the message.
    """
    if not (0 <= ident <= 0xFFFF and 0 <= seq <= 0xFFFF):
        raise ValueError(f"echo identifier {ident} or sequence {seq} is not 16 bits")
    if v6:
        kind = ECHOV6_REPLY if reply else ECHOV6_REQUEST
        return _HEADER.pack(kind, 0, 0, ident, seq) + payload
    kind = ECHO_REPLY if reply else ECHO_REQUEST
    message = _HEADER.pack(kind, 0, 0, ident, seq) + payload
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]


def decodeReply(data: bytes, v6: bool, raw: bool) -> EchoReply:
    """
    Decode what an ICMP socket received as an echo reply.

    @param data: the datagram as the socket returned it.
    @param v6: it came from an ICMPv6 socket.
    @param raw: it came from a raw socket; raw IPv4 sockets put the IP header
        first, which is checked (version 4, protocol ICMP) and skipped.
        Datagram ICMP sockets and ICMPv6 sockets give the ICMP message
        alone.
    @raise ICMPError: anything that is not a well-formed echo reply (the
        message says what), including, for IPv4, a bad checksum.
    @return: the reply's identifier, sequence number and payload.
    """
    message = bytes(data)
    if raw and not v6:
        if len(message) < 20:
            raise ICMPError(f"{len(message)} bytes: too short for an IPv4 header")
        version, headerLength = message[0] >> 4, (message[0] & 0x0F) * 4
        if version != 4 or headerLength < 20:
            raise ICMPError(f"not an IPv4 header (version {version}, length {headerLength})")
        if len(message) < headerLength:
            raise ICMPError(f"{len(message)} bytes: shorter than its IP header ({headerLength})")
        if message[9] != _IPPROTO_ICMP:
            raise ICMPError(f"IP protocol {message[9]} is not ICMP")
        message = message[headerLength:]
    if len(message) < _HEADER.size:
        raise ICMPError(f"{len(message)} bytes: too short for an ICMP header")
    kind, code, _, ident, seq = _HEADER.unpack_from(message)
    wanted = ECHOV6_REPLY if v6 else ECHO_REPLY
    if kind != wanted or code != 0:
        raise ICMPError(f"ICMP type {kind} code {code} is not an echo reply")
    if not v6 and checksum(message) != 0:
        raise ICMPError("bad ICMP checksum")
    return EchoReply(ident, seq, message[_HEADER.size:])


# -- transport -----------------------------------------------------------------


class PingSocketError(Exception):
    """
    L{Pinger.open} could open no ICMP socket at all; the message says what
    was tried and what to change (run as root, or widen
    C{net.ipv4.ping_group_range}).

    @ivar errno: the error number of the last failure.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


_KINDS = {"dgram": socket.SOCK_DGRAM, "raw": socket.SOCK_RAW}
_PROTOCOLS = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
_FAMILY_NAMES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
# The family itself is missing (IPv6 compiled out or ipv6.disable=1).
_NO_FAMILY = (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT)
# A send that the kernel could not queue: the packet is lost, the wait goes on.
_LOST = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)

_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1
_PAYLOAD_FILL = b"sysmon watchdog ping 0123456789abcdefghijklmnopqrstuv"[:48]
_TOKEN = 8
_READS_PER_WAKEUP = 64


def _acceptOnly(sock: Any, family: int, kind: str, replyType: int) -> None:
    """
    Let a raw socket's kernel filter drop every ICMP type but the echo reply
    (datagram ICMP sockets only ever get their own replies).
    """
    if kind != "raw":
        return
    if family == socket.AF_INET:
        sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", ~(1 << replyType) & 0xFFFFFFFF))
    else:
        words = [0xFFFFFFFF] * 8
        words[replyType >> 5] &= ~(1 << (replyType & 31)) & 0xFFFFFFFF
        sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))


@implementer(IReadDescriptor)
class _ICMPReader:
    """
    One open ICMP socket as the reactor sees it: readable → hand every
    datagram to the L{Pinger}.

    @ivar family: C{AF_INET} or C{AF_INET6}.
    @ivar kind: C{"dgram"} or C{"raw"}.
    @ivar sock: the socket.
    """

    def __init__(self, pinger: Pinger, family: int, kind: str, sock: Any) -> None:
        self.pinger = pinger
        self.family = family
        self.kind = kind
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return f"ICMP {_FAMILY_NAMES[self.family]} ({self.kind})"

    def doRead(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, source = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                # A pending socket error (an ICMP error queued for us): it
                # belongs to no single ping; reading it cleared it.
                self.pinger.log.debug("{socket}: receive error {why}",
                                      socket=self.logPrefix(), why=e)
                return None
            self.pinger._received(self, data, source)
        return None

    def connectionLost(self, reason: Failure) -> None:
        self.pinger._lost(self, reason)


class _Ping:
    """
    One call of L{Pinger.ping} in progress.

    @ivar target: the address, as given.
    @ivar packed: the address's packed bytes (compared with reply sources).
    @ivar sockaddr: the address for C{sendto}.
    @ivar family: its address family.
    @ivar attempt: the number of the attempt under way (1 up to C{count}).
    @ivar seq: that attempt's sequence number, or C{None} between attempts.
    @ivar payload: that attempt's payload (a random token and fill).
    @ivar sentAt: when that attempt was sent, in reactor seconds.
    @ivar timer: that attempt's timeout.
    """

    def __init__(self, target: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 sockaddr: tuple, count: int, wait: float) -> None:
        self.target = target
        self.packed = address.packed
        self.family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        self.sockaddr = sockaddr
        self.count = count
        self.wait = wait
        self.attempt = 0
        self.seq: int | None = None
        self.payload = b""
        self.sentAt = 0.0
        self.timer: Any = None
        self.deferred: defer.Deferred[int] = defer.Deferred(self._cancel)
        self.pinger: Pinger | None = None

    def _cancel(self, _: defer.Deferred[int]) -> None:
        if self.pinger is not None:
            self.pinger._forget(self)


class Pinger:
    """
    Sends ICMP echo requests and matches the replies, for any number of
    targets and pings at the same time, over one socket per address family.

    Life cycle: L{open} (before privileges are dropped: in
    C{privilegedStartService}), any number of L{ping}s, L{close}.

    @ivar sent: echo requests sent so far.
    @ivar ignored: datagrams received that answered none of our pings (not
        echo replies, malformed, late, or someone else's).
    @ivar kinds: after L{open}, the socket kind (C{"dgram"} or C{"raw"})
        open for each family (C{AF_INET}, C{AF_INET6}).
    """

    log = Logger()

    def __init__(self, reactor: Any = None, kinds: Iterable[str] = ("dgram", "raw"),
                 socketFactory: Callable[[int, int, int], Any] = socket.socket) -> None:
        """
        @param reactor: an L{IReactorFDSet} and L{IReactorTime} provider; the
            global reactor by default.
        @param kinds: the socket kinds to try, in order: C{"dgram"}
            (unprivileged ICMP sockets) and C{"raw"} (root).
        @param socketFactory: makes a socket from C{(family, type, proto)}
            (L{socket.socket}; tests pass their own).
        @raise ValueError: an unknown kind.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self._kinds = tuple(kinds)
        for kind in self._kinds:
            if kind not in _KINDS:
                raise ValueError(f"unknown ICMP socket kind {kind!r} (dgram or raw)")
        if not self._kinds:
            raise ValueError("no ICMP socket kind to try")
        self._socketFactory = socketFactory
        self._readers: dict[int, _ICMPReader] = {}
        self._unavailable: dict[int, int] = {}
        self._pending: dict[tuple[int, int], _Ping] = {}
        self._sequence = itertools.count(1)
        self._ident = os.getpid() & 0xFFFF
        self._open = False
        self.sent = 0
        self.ignored = 0
        self.kinds: dict[int, str] = {}

    # -- set-up --------------------------------------------------------------

    def open(self) -> None:
        """
        Open an ICMP socket for IPv4 and, where the system has it, IPv6:
        non-blocking, close-on-exec, read by the reactor.  Does nothing when
        already open.

        A family whose sockets cannot be opened is logged; pings to it
        then answer with that error number (C{EAFNOSUPPORT} when the
        system has no IPv6).

        @raise PingSocketError: no socket could be opened for either
            family; the message says why and what would allow it.
        """
        if self._open:
            return
        failures: list[str] = []
        lastErrno: int | None = None
        for family in (socket.AF_INET, socket.AF_INET6):
            opened, why, code = self._openFamily(family)
            if opened is not None:
                self._readers[family] = opened
                self.kinds[family] = opened.kind
                continue
            self._unavailable[family] = code
            lastErrno = code
            failures.append(f"{_FAMILY_NAMES[family]}: {why}")
        if not self._readers:
            raise PingSocketError(
                "cannot open an ICMP socket for ping: " + "; ".join(failures)
                + ". Unprivileged ICMP sockets need the group in"
                + f" net.ipv4.ping_group_range (now {_pingGroupRange()}, gid {os.getegid()});"
                + " raw ICMP sockets need root (CAP_NET_RAW)", lastErrno)
        for family in self._unavailable:
            self.log.warn("no {family} ICMP socket, {family} pings will fail: {why}",
                          family=_FAMILY_NAMES[family],
                          why=os.strerror(self._unavailable[family]))
        for reader in self._readers.values():
            self.reactor.addReader(reader)
        self._open = True
        self.log.info("ping sockets open: {sockets}",
                      sockets=", ".join(r.logPrefix() for r in self._readers.values()))

    def _openFamily(self, family: int) -> tuple[_ICMPReader | None, str, int]:
        """
        Try each kind of socket for C{family}.

        @return: the reader, or C{None}, what went wrong and its errno.
        """
        why: list[str] = []
        code = errno.EACCES
        for kind in self._kinds:
            try:
                sock = self._socketFactory(family, _KINDS[kind] | socket.SOCK_CLOEXEC,
                                           _PROTOCOLS[family])
            except OSError as e:
                code = e.errno or errno.EACCES
                why.append(f"{kind} socket: {e.strerror or e}")
                if code in _NO_FAMILY:
                    break
                continue
            try:
                sock.setblocking(False)
            except OSError as e:
                sock.close()
                code = e.errno or errno.EIO
                why.append(f"{kind} socket: {e.strerror or e}")
                continue
            replyType = ECHO_REPLY if family == socket.AF_INET else ECHOV6_REPLY
            try:
                _acceptOnly(sock, family, kind, replyType)
            except OSError as e:
                self.log.info("{family} {kind} ICMP socket: no type filter ({why})",
                              family=_FAMILY_NAMES[family], kind=kind, why=e)
            return _ICMPReader(self, family, kind, sock), "", 0
        return None, ", ".join(why), code

    def close(self) -> None:
        """
        Stop reading and close the sockets.  Pings still under way are
        cancelled: their Deferreds fail with L{defer.CancelledError}, as if
        the caller had cancelled them (a ping cut short by a shutdown says
        nothing about the network, so it never reports C{ENETUNREACH}).
        Does nothing when not open.
        """
        for ping in list({id(p): p for p in self._pending.values()}.values()):
            ping.deferred.cancel()
        for reader in self._readers.values():
            self.reactor.removeReader(reader)
            reader.sock.close()
        self._readers.clear()
        self._unavailable.clear()
        self.kinds.clear()
        self._open = False

    # -- pinging -------------------------------------------------------------

    def ping(self, address: str, count: int = 3, wait: float = 1.0) -> defer.Deferred[int]:
        """
        Ping C{address}: send an echo request, wait C{wait} seconds for the
        reply to it, and again, up to C{count} attempts in all.

        @param address: an IPv4 or IPv6 address (numeric; an IPv6 link-local
            address may carry its zone, C{fe80::1%eth0}).
        @param count: attempts, at least 1 (the watchdog's C{ping-count}).
        @param wait: seconds to wait for each attempt's reply (the
            watchdog's C{interval / ping-count}).
        @raise ValueError: not an IP address, an unknown zone, C{count} < 1
            or C{wait} <= 0.
        @raise RuntimeError: the pinger is not open.
        @return: a Deferred that fires with C{ENOERR} (0) on the first
            matching reply, C{errno.ENETUNREACH} when no attempt got one, or
            the errno of a C{sendto} that failed (C{ENETUNREACH},
            C{EHOSTUNREACH}, C{EPERM}, ...; C{EAFNOSUPPORT} and the like when
            the family has no socket).  It never fails; cancelling it stops
            the ping (no more requests, its timer gone) and it then fails
            with L{defer.CancelledError}.
        """
        if count < 1:
            raise ValueError(f"ping count {count} is less than 1")
        if not wait > 0:
            raise ValueError(f"ping wait {wait} is not a positive number of seconds")
        if not isinstance(address, str):
            raise ValueError(f"ping target {address!r} is not an address string")
        parsed = ipaddress.ip_address(address)
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        if isinstance(parsed, ipaddress.IPv4Address):
            sockaddr: tuple = (str(parsed), 0)
        else:
            sockaddr = (str(parsed).split("%")[0], 0, 0, _zoneIndex(parsed.scope_id))
        if not self._open:
            raise RuntimeError("Pinger.ping before open() or after close()")
        ping = _Ping(address, parsed, sockaddr, count, wait)
        if ping.family not in self._readers:
            code = self._unavailable.get(ping.family, errno.EAFNOSUPPORT)
            self.log.error("cannot ping {target}: no {family} ICMP socket ({why})",
                           target=address, family=_FAMILY_NAMES[ping.family],
                           why=os.strerror(code))
            return defer.succeed(code)
        ping.pinger = self
        self._attempt(ping)
        return ping.deferred

    def _nextSequence(self, family: int) -> int:
        for _ in range(0x10000):
            seq = next(self._sequence) & 0xFFFF
            if (family, seq) not in self._pending:
                return seq
        raise RuntimeError("65536 pings in flight")

    def _attempt(self, ping: _Ping) -> None:
        """
        Send the next echo request of C{ping} and start its wait.
        """
        reader = self._readers[ping.family]
        ping.attempt += 1
        ping.seq = self._nextSequence(ping.family)
        ping.payload = os.urandom(_TOKEN) + _PAYLOAD_FILL
        self._pending[(ping.family, ping.seq)] = ping
        message = encodeEcho(self._ident, ping.seq, ping.payload,
                             v6=ping.family == socket.AF_INET6)
        ping.sentAt = self.reactor.seconds()
        try:
            reader.sock.sendto(message, ping.sockaddr)
        except OSError as e:
            code = e.errno or errno.EIO
            if code not in _LOST:
                self._forget(ping)
                if code == errno.ENETUNREACH:
                    self.log.error("network is unreachable (target: {target})",
                                   target=ping.target)
                else:
                    self.log.error("sendto gave error for target {target} = {errno} = {why}",
                                   target=ping.target, errno=code, why=os.strerror(code))
                ping.pinger = None
                ping.deferred.callback(code)
                return
            self.log.warn("ping {attempt} to {target} not sent ({why}); counted as lost",
                          attempt=ping.attempt, target=ping.target, why=os.strerror(code))
        else:
            self.sent += 1
        ping.timer = self.reactor.callLater(ping.wait, self._timedOut, ping)

    def _timedOut(self, ping: _Ping) -> None:
        ping.timer = None
        self._forget(ping)
        if ping.attempt < ping.count:
            self.log.debug("no answer to ping {attempt} from target {target}, trying again",
                           attempt=ping.attempt, target=ping.target)
            self._attempt(ping)
            return
        self.log.error("no response from ping (target: {target}, {count} attempts)",
                       target=ping.target, count=ping.count)
        ping.pinger = None
        ping.deferred.callback(errno.ENETUNREACH)

    def _forget(self, ping: _Ping) -> None:
        """
        Stop waiting for C{ping}'s current attempt (its reply is late from now on).
        """
        if ping.timer is not None and ping.timer.active():
            ping.timer.cancel()
        ping.timer = None
        if ping.seq is not None and self._pending.get((ping.family, ping.seq)) is ping:
            del self._pending[(ping.family, ping.seq)]
        ping.seq = None

    def _received(self, reader: _ICMPReader, data: bytes, source: Any) -> None:
        """
        A datagram from C{reader}'s socket: if it is the reply to an attempt
        under way, that ping succeeds; anything else is counted and dropped.
        """
        v6 = reader.family == socket.AF_INET6
        try:
            reply = decodeReply(data, v6=v6, raw=reader.kind == "raw")
            sender = ipaddress.ip_address(str(source[0]).split("%")[0]).packed
        except (ICMPError, ValueError, IndexError, TypeError):
            self.ignored += 1
            return
        ping = self._pending.get((reader.family, reply.seq))
        if (ping is None or ping.payload != reply.payload or ping.packed != sender
                or (reader.kind == "raw" and reply.ident != self._ident)):
            self.ignored += 1
            return
        attempt, elapsed = ping.attempt, self.reactor.seconds() - ping.sentAt
        self._forget(ping)
        ping.pinger = None
        self.log.debug("got answer on ping={attempt} from target {target} time={ms:.3f}ms",
                       attempt=attempt, target=ping.target, ms=elapsed * 1000)
        ping.deferred.callback(ENOERR)

    def _lost(self, reader: _ICMPReader, reason: Failure) -> None:
        """
        The reactor gave up on a socket: stop using it.  Pings waiting on it
        time out as usual.
        """
        self.log.error("{socket} lost: {why}", socket=reader.logPrefix(),
                       why=reason.getErrorMessage())
        if self._readers.get(reader.family) is reader:
            del self._readers[reader.family]
            self.kinds.pop(reader.family, None)
            self._unavailable[reader.family] = errno.EBADF
            self.reactor.removeReader(reader)
            reader.sock.close()


def _zoneIndex(zone: str | None) -> int:
    """
    The interface index of an IPv6 zone (C{eth0} or C{2}); 0 without one.

    @raise ValueError: no such interface.
    """
    if not zone:
        return 0
    if zone.isdigit():
        return int(zone)
    try:
        return socket.if_nametoindex(zone)
    except OSError:
        raise ValueError(f"no network interface {zone!r} for the IPv6 zone") from None


def _pingGroupRange(path: str = "/proc/sys/net/ipv4/ping_group_range") -> str:
    try:
        with open(path) as f:
            return '"' + " ".join(f.read().split()) + '"'
    except OSError:
        return "unknown"
