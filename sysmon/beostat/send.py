"""
sendstats: read this node's C{/proc} every interval and send it to the
masters (unicast) or to the multicast group; obey the masters' requests
for an immediate update or a new rate.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any, Callable, Sequence

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.abstract import isIPAddress
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from sysmon.beostat import procfs, wire
from sysmon.beostat.records import Snapshot

__all__ = ["SendstatsService", "StatusBuilder", "bootId", "MIN_INTERVAL", "MAX_INTERVAL"]

#: Bounds on the reporting interval, whoever asks (command line or master).
MIN_INTERVAL = 0.1
MAX_INTERVAL = 3600.0
#: Every this many status messages, CPU counters go out whole (not as
#: increments), with the host name and CPU description.
FULL_EVERY = 30
#: Signed requests older than this (by the sender's clock) are replays.
REQUEST_MAX_AGE = 300.0


def bootId(proc: str = "/proc") -> bytes:
    """
    The kernel's boot id (C{/proc/sys/kernel/random/boot_id}) as 16 bytes,
    or a random one for this process when the kernel has none to give.
    """
    try:
        with open(os.path.join(proc, "sys/kernel/random/boot_id")) as f:
            return uuid.UUID(f.read().strip()).bytes
    except (OSError, ValueError):
        return uuid.uuid4().bytes


class StatusBuilder:
    """
    Turns successive L{Snapshot}s into status L{wire.Message}s: counts the
    sequence and sends per-CPU counters as increments from the previous
    message, whole every L{FULL_EVERY} messages and when asked.

    @ivar sequence: the last sequence number used.
    """

    def __init__(self, node: int, boot: bytes, hostname: str, interval: float,
                 fullEvery: int = FULL_EVERY) -> None:
        self.node = node
        self.boot = boot
        self.hostname = hostname
        self.interval = interval
        self.fullEvery = fullEvery
        self.sequence = 0
        self._previous = None
        self._sinceFull = 0

    def build(self, snapshot: Snapshot, now: float, full: bool = False,
              multicast: bool = False) -> wire.Message:
        """
        The next status message.
        """
        self.sequence = (self.sequence % 0xFFFFFFFF) + 1
        cpus = None
        if snapshot.cpus is not None:
            previous = self._previous
            full = (full or previous is None or len(previous[1]) != len(snapshot.cpus)
                    or self._sinceFull + 1 >= self.fullEvery)
            if full:
                ticks, base = snapshot.cpus, 0
                self._sinceFull = 0
            else:
                ticks = tuple(now_ - before for now_, before in zip(snapshot.cpus, previous[1]))
                if any(min(t.astuple()) < 0 for t in ticks):  # counters went back
                    ticks, base, full = snapshot.cpus, 0, True
                    self._sinceFull = 0
                else:
                    base = previous[0]
                    self._sinceFull += 1
            cpus = wire.CpuBlock.fromTicks(len(snapshot.cpus), 0, base, ticks)
            self._previous = (self.sequence, snapshot.cpus)
        else:
            full = True
        net = None
        if snapshot.interfaces is not None:
            net = wire.NetBlock(total=len(snapshot.interfaces), first=0,
                                interfaces=snapshot.interfaces)
        return wire.Message(
            type=wire.STATUS, node=self.node, bootId=self.boot, sequence=self.sequence,
            timestamp=now, interval=self.interval, multicast=multicast,
            hostname=self.hostname if full else None,
            cpuInfo=snapshot.cpuInfo if full else None,
            cpuTotal=snapshot.cpuTotal, cpus=cpus, memory=snapshot.memory, load=snapshot.load,
            net=net, rootfs=snapshot.rootfs,
        )


class _SendstatsProtocol(DatagramProtocol):
    def __init__(self, owner: SendstatsService) -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner.datagramReceived(data, addr)


class SendstatsService(service.Service):
    """
    The sendstats daemon.

    @param masters: C{(host, port)} of each master for unicast; empty for
        multicast to C{group}.
    @param group: the multicast group (multicast mode).
    @param port: the group's port; also the local port in multicast mode.
    @param interfaceAddress: the local IPv4 address whose interface sends
        and joins (multicast), or C{""} for the kernel's choice.
    @param ttl: multicast TTL.
    @param interval: seconds between reports.
    @param node: this node's number, -1 for "derive from my address".
    @param snapshot: returns a L{Deferred} firing with a L{Snapshot}.
    @param key: HMAC key, or L{None}.
    @ivar counters: C{reports} (status reports that went out: one a
        report, whatever its parts and destinations), C{sent} (datagrams),
        C{send_errors}, C{skipped}, C{update_requests}, C{rate_requests},
        C{bad}, C{stale}.
    """

    log = Logger()

    def __init__(self, masters: Sequence[tuple[str, int]], group: str = wire.DEFAULT_GROUP,
                 port: int = wire.DEFAULT_PORT, interfaceAddress: str = "", ttl: int = 1,
                 interval: float = 5.0, node: int = -1,
                 snapshot: Callable[[], defer.Deferred[Snapshot]] | None = None,
                 key: bytes | None = None, hostname: str | None = None,
                 boot: bytes | None = None, proc: str = "/proc", rootfs: str = "/",
                 reactor: Any = None, wallClock: Callable[[], float] = time.time) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.masters = list(masters)
        self.group = group
        self.port = port
        self.interfaceAddress = interfaceAddress
        self.ttl = ttl
        self.interval = interval
        self.key = key
        self.wallClock = wallClock
        if snapshot is None:
            from twisted.internet import threads

            def snapshot() -> defer.Deferred[Snapshot]:
                return threads.deferToThreadPool(
                    reactor, reactor.getThreadPool(), procfs.readSnapshot, proc, rootfs)
        self.snapshot = snapshot
        self.builder = StatusBuilder(node, boot or bootId(proc),
                                     hostname or socket.gethostname(), interval)
        self.counters: dict[str, int] = {}
        self.port_ = None
        self._loop: task.LoopingCall | None = None
        self._addresses: list[tuple[str, int]] = []
        self._busy = False
        self._wantFull = False
        self._reported: set[tuple[str, str]] = set()

    @property
    def multicast(self) -> bool:
        """
        Whether this sender reports to the multicast group.
        """
        return not self.masters

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- lifecycle -----------------------------------------------------------

    def privilegedStartService(self) -> None:
        protocol = _SendstatsProtocol(self)
        try:
            self._listen(protocol)
        except CannotListenError as e:
            self.log.error("sendstats cannot listen on {where}:{port}: {reason}",
                           where=e.interface or "*", port=e.port, reason=e.socketError)
            raise SystemExit(1)
        service.Service.privilegedStartService(self)

    def _listen(self, protocol: DatagramProtocol) -> None:
        if self.multicast:
            # Bound to the group: receives the masters' requests and nothing
            # addressed to this host's own recvstats, if it runs one.
            self.port_ = self.reactor.listenMulticast(
                self.port, protocol, interface=self.group, listenMultiple=True)
            self.port_.setTTL(self.ttl)
            self.port_.setLoopbackMode(1)
            if self.interfaceAddress:
                self.port_.setOutgoingInterface(self.interfaceAddress)
            self.port_.joinGroup(self.group, self.interfaceAddress or "0.0.0.0")
        else:
            self.port_ = self.reactor.listenUDP(0, protocol)

    def startService(self) -> None:
        if self.port_ is None:
            self.privilegedStartService()
        service.Service.startService(self)
        where = (f"group {self.group}:{self.port}" if self.multicast
                 else ", ".join(f"{h}:{p}" for h, p in self.masters))
        self.log.info("sendstats reporting every {interval} s to {where} as node {node}",
                      interval=self.interval, where=where, node=self.builder.node)
        self._startLoop()

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        port, self.port_ = self.port_, None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        return defer.succeed(None)

    def _startLoop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = task.LoopingCall(self.report)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    # -- reporting -------------------------------------------------------------

    def _destinations(self) -> defer.Deferred[list[tuple[str, int]]]:
        if self.multicast:
            return defer.succeed([(self.group, self.port)])
        if self._addresses:
            return defer.succeed(self._addresses)

        def resolve(item):
            host, port = item
            if isIPAddress(host):
                return defer.succeed((host, port))
            d = self.reactor.resolve(host)
            d.addCallback(lambda ip: (ip, port))
            return d

        d = defer.gatherResults([resolve(m) for m in self.masters], consumeErrors=True)

        def resolved(addresses):
            self._addresses = addresses
            return addresses

        def failed(failure):
            self.log.warn("cannot resolve the masters' names ({error}); trying again at the "
                          "next report", error=failure.value)
            return []

        return d.addCallbacks(resolved, failed)

    def report(self, full: bool = False) -> defer.Deferred[None] | None:
        """
        Read C{/proc} and send one status message (in parts if big).
        """
        if self._busy:  # the previous reading is still under way
            self._wantFull = self._wantFull or full
            self._count("skipped")
            return None
        self._busy = True
        full, self._wantFull = full or self._wantFull, False
        d = self.snapshot()
        d.addCallback(self._send, full)
        d.addErrback(lambda f: self.log.failure("cannot report", f))

        def done(_):
            self._busy = False
        return d.addBoth(done)

    def _send(self, snapshot: Snapshot, full: bool) -> defer.Deferred[None]:
        for where, reason in snapshot.errors:
            if (where, reason) not in self._reported:
                self._reported.add((where, reason))
                self.log.warn("cannot read {file}: {reason}", file=where, reason=reason)
        message = self.builder.build(snapshot, self.wallClock(), full=full,
                                     multicast=self.multicast)
        datagrams = wire.encodeStatus(message, self.key)

        def send(destinations):
            port = self.port_
            if port is None:
                return
            sent = False
            for destination in destinations:
                for datagram in datagrams:
                    try:
                        port.write(datagram, destination)
                        self._count("sent")
                        sent = True
                    except OSError as e:
                        self._count("send_errors")
                        self.log.debug("cannot send to {ip}:{port}: {error}", ip=destination[0],
                                       port=destination[1], error=e)
            if sent:
                self._count("reports")
        return self._destinations().addCallback(send)

    # -- requests from the masters ---------------------------------------------

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        A master's request (or anything else that reached the socket).
        """
        try:
            message = wire.decode(data, self.key)
        except wire.WireError as e:
            self._count("bad")
            self.log.debug("bad datagram from {ip}:{port}: {error}", ip=addr[0], port=addr[1],
                           error=e)
            return
        if message.type == wire.STATUS:
            return  # another node's report, seen on the group
        if message.node not in (-1, self.builder.node):
            return
        if self.key is not None and abs(self.wallClock() - message.timestamp) > REQUEST_MAX_AGE:
            self._count("stale")
            self.log.warn("ignoring a stale {kind} from {ip}:{port}", kind=message.typeName,
                          ip=addr[0], port=addr[1])
            return
        if message.type == wire.UPDATE_REQUEST:
            self._count("update_requests")
            self.report(full=True)
        elif message.type == wire.SET_RATE:
            self._count("rate_requests")
            self.setInterval(message.interval, f"{addr[0]}:{addr[1]}")

    def setInterval(self, interval: float, by: str) -> None:
        """
        Report every C{interval} seconds from now on (bounded to
        L{MIN_INTERVAL}..L{MAX_INTERVAL}).
        """
        interval = min(max(interval, MIN_INTERVAL), MAX_INTERVAL)
        if interval == self.interval:
            return
        self.log.info("reporting interval {old} s -> {new} s, asked by {peer}",
                      old=self.interval, new=interval, peer=by)
        self.interval = self.builder.interval = interval
        if self.running:
            self._startLoop()
