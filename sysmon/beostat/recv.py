"""
recvstats: receive the nodes' status (and Ganglia gmond packets), keep each
node's state, and publish it in the shared-memory file.

L{Recvstats} is the policy: node numbers, CPU fractions from tick deltas,
network rates from counter deltas, up/down/forgotten, the requests sent to
the nodes.  L{StatsProtocol} and L{GmondProtocol} are thin socket glue;
L{RecvstatsService} binds the sockets and runs the timers.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
import uuid
from collections import Counter
from operator import add as _add
from operator import sub as _sub
from typing import Any, Callable

import attrs
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from sysmon.beostat import gmond as gmondwire
from sysmon.beostat import shm, wire
from sysmon.beostat.records import (
    CpuTicks,
    FileSystem,
    Interface,
    _newTicks,
    cpuUsage,
    cpuUsages,
)
from sysmon.ratelimit import Once
from sysmon.udp import growReceiveBuffer

__all__ = ["GmondProtocol", "Recvstats", "RecvstatsService", "StatsProtocol"]

#: A node is down after this many of its intervals without a word.
MISSED_INTERVALS = 4
#: The interval assumed for gmond hosts: gmond's host_tmax.
GMOND_TMAX = 20.0
#: Node numbers recvstats hands out itself (no directory, no --ip-base).
ORIGIN_SENDER, ORIGIN_DIRECTORY, ORIGIN_IPBASE, ORIGIN_ASSIGNED = 0, 1, 2, 3
#: The highest node number accepted (the file grows to it).
MAX_NODE = 1 << 20
#: Seconds before a number given while the directory could not answer is
#: asked for again.
DIRECTORY_RETRY = 30.0
RECEIVE_BUFFER = 8 * 1024 * 1024


@attrs.define
class NodeState:
    """
    What recvstats keeps for one node beyond its published record.

    @ivar cpuSequences: per CPU, the sequence of the message its counters
        (in the record's C{cpuTicks}) are current with, or L{None} when they
        are not known to be (after a missed message, or as recovered from
        the file: 32 bits only).
    @ivar written: the record has been written whole since this state was
        made; later writes replace only the parts a message changed.
    @ivar interfaces: the node's interfaces by position.
    @ivar lastNet: C{name -> (sender time, rx bytes, rx packets, tx bytes,
        tx packets)}, for rates.
    @ivar netRates: C{name -> (rx, tx, rx packets, tx packets per second)}.
    """

    record: shm.NodeRecord
    origin: int = ORIGIN_SENDER
    source: tuple[str, int] | None = None
    multicast: bool = False
    cpuSequences: list[int | None] = attrs.Factory(list)
    written: bool = False
    interfaces: list[Interface | None] = attrs.Factory(list)
    lastNet: dict[str, tuple[float, int, int, int, int]] = attrs.Factory(dict)
    netRates: dict[str, tuple[float, float, float, float]] = attrs.Factory(dict)
    gmond: gmondwire.GmondHost | None = None
    lastRateRequest: float = float("-inf")


class Recvstats:
    """
    The recvstats policy, independent of sockets.

    @param writer: the shared-memory writer (opened).
    @param clock: supplies C{seconds()} (the reactor).
    @param send: C{send(datagram, (host, port))} for requests to nodes.
    @param key: HMAC key for requests, or L{None}.
    @param group: C{(group, port)} of the multicast group, or L{None}.
    @param rate: the interval recvstats asks every node to use, or L{None}.
    @param forget: forget a node silent this many seconds (0: never).
    @param directory: an L{sysmon.directory.IHostDirectory} for the node
        numbers of senders that do not give one, or L{None}.
    @param ipBase: with no directory answer, node = address - C{ipBase}.
    @param directoryRetry: a sender numbered while the directory could not
        answer is numbered provisionally; its first report this many seconds
        later asks the directory again (at most once per interval), until
        the directory answers.
    @ivar counters: packets by outcome, for logs and metrics: C{status}
        (status reports taken), C{bad} (malformed, or a node number above
        the limit), C{unsigned}, C{bad_signature}, C{requests_seen}
        (requests: ours looped back, or another master's); C{gmond} and
        C{gmond_bad} for the gmond socket; C{errors}, C{send_errors},
        C{requests_sent}, C{went_down}...
    """

    log = Logger()

    def __init__(self, writer: shm.ShmWriter, clock: Any, send: Callable[[bytes, tuple], None],
                 key: bytes | None = None, group: tuple[str, int] | None = None,
                 rate: float | None = None, forget: float = 0.0, directory: Any = None,
                 ipBase: str | None = None, wallClock: Callable[[], float] = time.time,
                 directoryRetry: float = DIRECTORY_RETRY) -> None:
        self.writer = writer
        self.clock = clock
        self.send = send
        self.key = key
        self.group = group
        self.rate = rate
        self.forget = forget
        self.directory = directory
        self.ipBase = int(ipaddress.ip_address(ipBase)) if ipBase else None
        self.wallClock = wallClock
        self.directoryRetry = directoryRetry
        self.counters: Counter[str] = Counter()
        self.nodes: dict[int, NodeState] = {}
        self.byAddress: dict[str, int] = {}
        self._pending: dict[str, list] = {}
        # Provisional numbers: sender key -> when the directory may be asked
        # again; and the newest message of each sender being asked again.
        self._provisional: dict[str, float] = {}
        self._asking: dict[str, list] = {}
        self._handedOut: set[int] = set()
        self._nextFree = 0
        self._instance = uuid.uuid4().bytes
        self._sequence = 0
        self._complaint = Once(60.0)
        for record in writer.recovered:
            self._recover(record)

    def _recover(self, record: shm.NodeRecord) -> None:
        state = NodeState(record=record, origin=record.origin)
        if record.source == shm.GMOND:
            state.gmond = gmondwire.GmondHost()
        if record.address and record.origin != ORIGIN_SENDER:
            self.byAddress[self._addressKey(record)] = record.node
            self._handedOut.add(record.node)
        state.cpuSequences = [None] * len(record.cpuUsages)
        state.interfaces = list(record.interfaces or ())
        self.nodes[record.node] = state

    @staticmethod
    def _addressKey(record: shm.NodeRecord) -> str:
        return ("gmond:" if record.source == shm.GMOND else "") + record.address

    def now(self) -> float:
        """
        Wall-clock time for records (what readers compare with).
        """
        return self.wallClock()

    def _complain(self, peer: str, what: str, text: str, **fields: Any) -> None:
        """
        Log a problem with a peer at most once a minute per kind.
        """
        if self._complaint((peer, what), self.clock.seconds()):
            self.log.warn(text, peer=peer, **fields)

    # -- node numbers ------------------------------------------------------

    def _assign(self, key: str, address: str, then: Callable[[int, int], None]) -> None:
        """
        Find the node number for a sender that gave none and call
        C{then(node, origin)}: the directory, then C{--ip-base}, then the
        lowest free number.  A number given because the directory could not
        answer is provisional: see L{_askAgain}.
        """
        node = self.byAddress.get(key)
        if node is not None:
            then(node, self.nodes[node].origin if node in self.nodes else ORIGIN_ASSIGNED)
            if key in self._asking:
                self._asking[key][:] = [then]  # keep only the newest message
            elif key in self._provisional and self.clock.seconds() >= self._provisional[key]:
                self._askAgain(key, address, node, then)
            return
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting[:] = [then]  # keep only the newest message
            return
        if self.directory is None:
            self._assigned(key, address, None, [then])
            return
        self._pending[key] = waiting = [then]
        d = self.directory.lookupAddress(address)

        def found(host):
            del self._pending[key]
            self._assigned(key, address, self._directoryNumber(host, address), waiting)

        def failed(failure):
            del self._pending[key]
            self._complain(address, "directory", "directory lookup for {peer} failed: {error}",
                           error=failure.value)
            self._assigned(key, address, None, waiting, provisional=True)

        d.addCallbacks(found, failed)

    def _assigned(self, key: str, address: str, fromDirectory: int | None,
                  waiting: list, provisional: bool = False) -> None:
        node = self.byAddress.get(key)
        origin = ORIGIN_ASSIGNED
        if node is None:
            if fromDirectory is not None:
                node, origin = fromDirectory, ORIGIN_DIRECTORY
            elif self.ipBase is not None and ":" not in address:
                offset = int(ipaddress.ip_address(address)) - self.ipBase
                if 0 <= offset < MAX_NODE:
                    node, origin = offset, ORIGIN_IPBASE
            if node is None:
                node = self._nextFree
                while node in self.nodes or node in self._handedOut:
                    node += 1
                self._nextFree = node + 1
            self.byAddress[key] = node
            self._handedOut.add(node)
            how = {ORIGIN_DIRECTORY: "from the directory", ORIGIN_IPBASE: "from --ip-base",
                   ORIGIN_ASSIGNED: "first free number"}[origin]
            if provisional:
                self._provisional[key] = self.clock.seconds() + self.directoryRetry
                how += ", provisionally: the directory did not answer"
            self.log.info("{peer} is node {node} ({how})", peer=address, node=node, how=how)
        else:
            origin = self.nodes[node].origin if node in self.nodes else ORIGIN_ASSIGNED
        for then in waiting:
            then(node, origin)

    def _askAgain(self, key: str, address: str, node: int,
                  then: Callable[[int, int], None]) -> None:
        """
        Ask the directory again for a sender filed under the provisional
        number C{node}.  An answer is final: a number other than C{node}
        moves the sender there (the provisional node is released as
        C{--forget} releases one, and its newest message is filed under the
        new number); no number, or the same one, keeps it where it is.  A
        failure leaves it provisional until C{directoryRetry} seconds after
        this question.
        """
        self._provisional[key] = self.clock.seconds() + self.directoryRetry
        self._asking[key] = newest = [then]
        d = self.directory.lookupAddress(address)

        def found(host):
            del self._asking[key]
            if self.byAddress.get(key) != node or self._provisional.pop(key, None) is None:
                return  # forgotten or taken back meanwhile: numbered afresh
            fromDirectory = self._directoryNumber(host, address)
            if fromDirectory is None or fromDirectory == node:
                self.log.info("{peer} keeps node {node}: the directory {answer}", peer=address,
                              node=node, answer="confirms it" if fromDirectory == node
                              else "has no node number for it")
                state = self.nodes.get(node)
                if fromDirectory == node and state is not None:
                    state.origin = state.record.origin = ORIGIN_DIRECTORY
                    state.written = False  # the whole record, origin included
                return
            self._release(node, key)
            self.byAddress[key] = fromDirectory
            self._handedOut.add(fromDirectory)
            self.log.info("{peer} moves from node {old} (provisional) to node {node} "
                          "(from the directory)", peer=address, old=node, node=fromDirectory)
            for then in newest:
                then(fromDirectory, ORIGIN_DIRECTORY)

        def failed(failure):
            del self._asking[key]
            self._complain(address, "directory", "directory lookup for {peer} failed: {error}",
                           error=failure.value)

        d.addCallbacks(found, failed)

    def _directoryNumber(self, host: Any, address: str) -> int | None:
        """
        The node number the directory gives C{host} (found for C{address}),
        or L{None}: none, or one beyond L{MAX_NODE} (complained about).
        """
        node = host.node if host is not None else None
        if node is not None and not -1 <= node < MAX_NODE:
            self._complain(address, "directory node", "the directory gives {peer} node {node}, "
                           "above the limit; numbering it as if it gave none", node=node)
            return None
        return node

    def _release(self, node: int, key: str) -> None:
        """
        Drop node C{node} (the sender C{key}'s) from the table and the file;
        a number recvstats had handed out to it is free again.
        """
        self.writer.clear(node)
        self.nodes.pop(node, None)
        self._provisional.pop(key, None)
        if self.byAddress.pop(key, None) is not None:
            self._handedOut.discard(node)
            self._nextFree = min(self._nextFree, node)

    def _claim(self, node: int, key: str, origin: int) -> NodeState:
        """
        The state of node C{node} for the sender C{key}; a number that
        recvstats had handed out to another sender (first free or
        C{--ip-base}) is taken back from it when a sender names it or the
        directory gives it; the directory's number is taken back when a
        sender names it.
        """
        state = self.nodes.get(node)
        if state is not None and origin < state.origin and origin <= ORIGIN_DIRECTORY:
            # A number we chose loses to the sender's own or the directory's.
            other = self._addressKey(state.record)
            self.byAddress.pop(other, None)
            self._provisional.pop(other, None)
            self._handedOut.discard(node)
            self._nextFree = 0
            self.log.info("node {node} is claimed by {claimant}; {peer} will get another number",
                          node=node, peer=state.record.address,
                          claimant="a sender" if origin == ORIGIN_SENDER else "the directory")
            self.writer.clear(node)
            del self.nodes[node]
            state = None
        if state is None:
            now = self.now()
            state = NodeState(record=shm.NodeRecord(node=node, firstSeen=now), origin=origin)
            self.nodes[node] = state
        state.origin = state.record.origin = origin
        return state

    # -- sendstats messages ----------------------------------------------------

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        One datagram on the status socket.
        """
        try:
            message = wire.decode(data, self.key)
        except wire.Unsigned:
            self.counters["unsigned"] += 1
            self._complain(addr[0], "unsigned", "dropping unsigned datagrams from {peer}")
            return
        except wire.BadSignature:
            self.counters["bad_signature"] += 1
            self._complain(addr[0], "signature", "dropping badly signed datagrams from {peer}")
            return
        except wire.WireError as e:
            self.counters["bad"] += 1
            self._complain(addr[0], "bad", "dropping malformed datagrams from {peer}: {error}",
                           error=str(e))
            return
        if message.type != wire.STATUS:
            self.counters["requests_seen"] += 1  # ours, looped back, or another master's
            return
        self.statusReceived(message, addr)

    def statusReceived(self, message: wire.Message, addr: tuple[str, int]) -> None:
        """
        A decoded status message from C{addr}: counted as C{status} when
        taken, as C{bad} when it claims a node number above L{MAX_NODE}.
        """
        address = addr[0]
        if message.node >= MAX_NODE:
            self.counters["bad"] += 1
            self._complain(address, "node", "{peer} claims node {node}, above the limit",
                           node=message.node)
            return
        self.counters["status"] += 1
        if message.node >= 0:
            self._apply(message.node, ORIGIN_SENDER, message, addr)
        else:
            self._assign(address, address,
                         lambda node, origin: self._apply(node, origin, message, addr))

    def masterReported(self, message: wire.Message) -> None:
        """
        This machine's own status, filed as node -1 (the master).
        """
        self._apply(-1, ORIGIN_SENDER, message, ("127.0.0.1", 0))

    def _apply(self, node: int, origin: int, message: wire.Message,
               addr: tuple[str, int]) -> None:
        state = self.nodes.get(node)
        if state is None or state.origin != origin:
            state = self._claim(node, addr[0], origin)
        record = state.record
        if record.address and record.address != addr[0] and record.state == shm.UP \
                and record.source == shm.SENDSTATS:
            self._complain(addr[0], "clash", "node {node} reported by {peer} and by {other}",
                           node=node, other=record.address)
        # What this message changes, so that the writer replaces only that.
        parts = 0 if state.written else shm.ALL_PARTS
        if record.address != addr[0]:
            record.address = addr[0]
            parts |= shm.PART_IDENTITY
        record.source = shm.SENDSTATS
        state.source = addr
        state.multicast = message.multicast
        if message.bootId != record.bootId:
            if record.bootId != shm._ZERO16:
                self.log.info("node {node} ({peer}) restarted", node=node, peer=addr[0])
            record.bootId = message.bootId
            record.ticks = None
            record.cpuUsages, record.cpuTicks, state.cpuSequences = [], [], []
            state.lastNet.clear()
            state.netRates.clear()
            parts = shm.ALL_PARTS
        elif message.sequence != record.sequence:
            gap = (message.sequence - record.sequence) & 0xFFFFFFFF
            if 1 < gap < 0x80000000:
                record.lost += gap - 1
        record.sequence = message.sequence
        record.packets += 1
        record.updated = self.wallClock()
        record.senderTime = message.timestamp
        record.interval = message.interval
        if record.state != shm.UP:
            self.log.info("node {node} ({peer}) is up", node=node, peer=addr[0])
            record.state = shm.UP
        if message.hostname is not None:
            record.hostname = message.hostname
            parts |= shm.PART_IDENTITY
        if message.cpuInfo is not None:
            record.cpuCount = message.cpuInfo.count
            record.mhz = message.cpuInfo.mhz
            record.model = message.cpuInfo.model
            parts |= shm.PART_IDENTITY
        if message.cpuTotal is not None:
            if record.ticks is not None:
                usage = cpuUsage(message.cpuTotal - record.ticks)
                if usage is not None:
                    record.cpuUsage = usage
            record.ticks = message.cpuTotal
            parts |= shm.PART_TICKS
        if message.cpus is not None:
            parts |= self._applyCpus(state, message.cpus, message.sequence)
        if message.memory is not None:
            record.memory = message.memory
            parts |= shm.PART_MEMORY
        if message.load is not None:
            record.load = message.load
            parts |= shm.PART_LOAD
        if message.rootfs is not None:
            record.rootfs = message.rootfs
            parts |= shm.PART_ROOTFS
        if message.net is not None:
            parts |= self._applyNet(state, message.net, message.timestamp)
        self.writer.write(record, parts)
        state.written = True
        if self.rate is not None and message.part == 0 and \
                abs(message.interval - self.rate) > 1e-3:
            self._correctRate(state)

    def _applyCpus(self, state: NodeState, block: wire.CpuBlock, sequence: int) -> int:
        """
        Per-CPU rows, whole or increments (docs/beostat-wire.md, "CPU
        counters"): increments from a message this receiver missed give the
        usage but leave that CPU's counters unknown until the next whole
        ones, which are then not compared with stale counters.

        A CPU's counters are known while its entry in C{state.cpuSequences}
        names the message they are from.  The rows are handled a block at a
        time on flat lists: a 20 000-node cluster sends tens of thousands of
        these a second.

        @return: the record's parts that changed.
        """
        parts = shm.PART_CPUS
        record = state.record
        total = block.total
        sequences = state.cpuSequences
        if len(sequences) != total:
            # The node's CPU count changed (or this is its first block).
            keep = min(total, len(sequences))
            state.cpuSequences = sequences = sequences[:keep] + [None] * (total - keep)
            record.cpuUsages = record.cpuUsages[:keep] + [None] * (total - keep)
            record.cpuTicks = record.cpuTicks[:8 * keep] + [0] * (8 * (total - keep))
            parts = shm.ALL_PARTS
        if not record.cpuCount:
            record.cpuCount = total
        values = block.values
        first = block.first
        count = len(values) // 8
        last = first + count
        ticks, usages = record.cpuTicks, record.cpuUsages
        known = sequences[first:last]
        if block.base == 0:
            if None not in known:
                fresh = cpuUsages(list(map(_sub, values, ticks[8 * first:8 * last])))
            else:
                fresh = [None if seen is None else cpuUsage(_newTicks(
                    CpuTicks, map(_sub, values[8 * i:8 * i + 8],
                                  ticks[8 * (first + i):8 * (first + i) + 8])))
                    for i, seen in enumerate(known)]
            ticks[8 * first:8 * last] = values
            sequences[first:last] = [sequence] * count
        else:
            fresh = cpuUsages(values, unsigned=True)  # varints: never negative
            if known.count(block.base) == count:
                ticks[8 * first:8 * last] = map(_add, ticks[8 * first:8 * last], values)
                sequences[first:last] = [sequence] * count
            else:
                for i, seen in enumerate(known, first):
                    if seen == block.base:
                        ticks[8 * i:8 * i + 8] = map(_add, ticks[8 * i:8 * i + 8],
                                                     values[8 * (i - first):8 * (i - first) + 8])
                        sequences[i] = sequence
                    else:
                        sequences[i] = None  # counters unknown till whole ones
        # No tick passed on a CPU: it keeps its last usage.
        if None in fresh:
            usages[first:last] = [old if new is None else new
                                  for new, old in zip(fresh, usages[first:last])]
        else:
            usages[first:last] = fresh
        return parts

    def _applyNet(self, state: NodeState, block: wire.NetBlock, when: float) -> int:
        """
        Interface rows: stored, and rates from the last counters of the
        same interface (bytes and packets each way; a counter that went
        back, as when an interface is re-created, restarts its rates).

        @return: the record's parts that changed.
        """
        record = state.record
        stored = len(record.interfaces or ())
        rows = block.interfaces
        if block.first == 0 and len(rows) == block.total:
            state.interfaces = present = list(rows)  # the whole table in one part
        else:
            if len(state.interfaces) != block.total:
                state.interfaces = (state.interfaces + [None] * block.total)[:block.total]
            state.interfaces[block.first:block.first + len(rows)] = rows
            present = [i for i in state.interfaces if i is not None]
        lastNet, netRates = state.lastNet, state.netRates
        for row in rows:
            name = row.name
            now = (when, row.rxBytes, row.rxPackets, row.txBytes, row.txPackets)
            last = lastNet.get(name)
            lastNet[name] = now
            if last is None or when <= last[0]:
                continue
            rxBytes, rxPackets = now[1] - last[1], now[2] - last[2]
            txBytes, txPackets = now[3] - last[3], now[4] - last[4]
            if rxBytes < 0 or rxPackets < 0 or txBytes < 0 or txPackets < 0:
                netRates.pop(name, None)
                continue
            span = when - last[0]
            netRates[name] = (rxBytes / span, txBytes / span, rxPackets / span, txPackets / span)
        if len(lastNet) > len(present):
            # An interface went away: its last rate no longer counts.
            names = {i.name for i in present}
            for name in [n for n in lastNet if n not in names]:
                del lastNet[name]
                netRates.pop(name, None)
        record.interfaceCount = block.total
        record.interfaces = present[:self.writer.layout.maxInterfaces]
        if netRates:
            record.rates = tuple(map(sum, zip(*netRates.values())))
        if len(record.interfaces) < stored:
            return shm.ALL_PARTS  # entries left over from more interfaces
        return shm.PART_INTERFACES | shm.PART_RATES

    # -- gmond -----------------------------------------------------------------

    def gmondReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        One datagram on the gmond socket.
        """
        try:
            message = gmondwire.decode(data)
        except gmondwire.GmondError as e:
            self.counters["gmond_bad"] += 1
            self._complain(addr[0], "gmond", "dropping malformed gmond packets from {peer}: "
                           "{error}", error=str(e))
            return
        self.counters["gmond"] += 1
        if isinstance(message, gmondwire.MetadataRequest):
            return  # another gmond asking its peers for metadata
        address = addr[0]
        host = message.id.host
        if message.id.spoof and ":" in host:
            spoofed = host.split(":", 1)[0]
            try:
                address = str(ipaddress.ip_address(spoofed))
            except ValueError:
                pass
        self._assign("gmond:" + address, address,
                     lambda node, origin: self._applyGmond(node, origin, message, address))

    def _applyGmond(self, node: int, origin: int, message: Any, address: str) -> None:
        state = self._claim(node, "gmond:" + address, origin)
        if state.gmond is None:
            state.gmond = gmondwire.GmondHost()
        if state.gmond.apply(message) is not None:
            self.counters["gmond_no_metadata"] += 1
        view = state.gmond.view()
        record = state.record
        record.source = shm.GMOND
        record.address = address
        record.updated = self.now()
        record.interval = GMOND_TMAX
        record.packets += 1
        if record.state != shm.UP:
            self.log.info("gmond host {peer} is node {node}, up", node=node, peer=address)
            record.state = shm.UP
        if view.hostname:
            record.hostname = view.hostname
        if view.cpuCount is not None:
            record.cpuCount = view.cpuCount
        if view.mhz is not None:
            record.mhz = float(view.mhz)
        if view.cpuUsage is not None:
            record.cpuUsage = view.cpuUsage
        if view.load is not None:
            record.load = view.load
        if view.memory is not None:
            record.memory = view.memory
        if None not in (view.rxRate, view.txRate):
            record.rates = (view.rxRate, view.txRate, view.rxPacketRate or 0.0,
                            view.txPacketRate or 0.0)
        if view.diskTotal is not None and view.diskFree is not None:
            record.rootfs = FileSystem(blockSize=1, blocks=int(view.diskTotal),
                                       free=int(view.diskFree), available=int(view.diskFree))
        if view.heartbeat is not None:
            record.bootId = int(view.heartbeat).to_bytes(16, "big")
        self.writer.write(record)

    # -- time --------------------------------------------------------------

    def sweep(self) -> None:
        """
        Mark silent nodes down, forget long-silent ones, beat the header.
        """
        now = self.now()
        nodes = self.nodes
        # Node numbers, not (node, state) pairs: 20 000 fresh tuples a
        # second would wake the cyclic garbage collector over every state.
        for node in list(nodes):
            state = nodes[node]
            record = state.record
            silent = now - record.updated
            if self.forget and silent > self.forget:
                self.log.info("forgetting node {node} ({peer}), silent {silent:.0f} s",
                              node=node, peer=record.address, silent=silent)
                self._release(node, self._addressKey(record))
                continue
            if record.state == shm.UP and silent > MISSED_INTERVALS * max(record.interval, 0.1):
                record.state = shm.DOWN
                self.writer.setState(node, shm.DOWN)
                self.counters["went_down"] += 1
                self.log.warn("node {node} ({peer}) is down: silent for {silent:.1f} s",
                              node=node, peer=record.address, silent=silent)
        self.writer.heartbeat(now)

    def _request(self, kind: int, node: int = -1, interval: float = 0.0) -> bytes:
        self._sequence = (self._sequence % 0xFFFFFFFF) + 1
        return wire.encode(wire.Message(type=kind, node=node, bootId=self._instance,
                                        sequence=self._sequence, timestamp=self.now(),
                                        interval=interval), self.key)

    def requestUpdates(self) -> None:
        """
        Ask every node for an immediate update (and for the configured rate):
        on the group, and to each unicast node directly.
        """
        datagrams = [self._request(wire.UPDATE_REQUEST)]
        if self.rate is not None:
            datagrams.append(self._request(wire.SET_RATE, interval=self.rate))
        targets = []
        if self.group is not None:
            targets.append(self.group)
        targets += [s.source for s in self.nodes.values()
                    if s.source is not None and not s.multicast
                    and s.record.source == shm.SENDSTATS and s.record.state == shm.UP]
        for target in targets:
            for datagram in datagrams:
                self.send(datagram, target)
        self.counters["requests_sent"] += len(targets) * len(datagrams)
        self.writer.setLastRequest(self.now())

    def _correctRate(self, state: NodeState) -> None:
        now = self.clock.seconds()
        if now - state.lastRateRequest < 10:
            return
        state.lastRateRequest = now
        if state.multicast and self.group is not None:
            target = self.group
            datagram = self._request(wire.SET_RATE, interval=self.rate)
        elif state.source is not None:
            target = state.source
            datagram = self._request(wire.SET_RATE, node=state.record.node if state.origin ==
                                     ORIGIN_SENDER else -1, interval=self.rate)
        else:
            return
        self.log.info("asking node {node} ({peer}) to report every {rate} s instead of "
                      "{interval} s", node=state.record.node, peer=state.record.address,
                      rate=self.rate, interval=state.record.interval)
        self.send(datagram, target)
        self.counters["requests_sent"] += 1


class StatsProtocol(DatagramProtocol):
    """
    The status socket (multicast and unicast on one port).
    """

    log = Logger()

    def __init__(self, controller: Recvstats) -> None:
        self.controller = controller

    def startProtocol(self) -> None:
        sock = getattr(self.transport, "socket", None)
        if isinstance(sock, socket.socket):
            growReceiveBuffer(sock, RECEIVE_BUFFER)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.controller.datagramReceived(data, addr)
        except Exception:
            self.controller.counters["errors"] += 1
            self.log.failure("handling a datagram from {ip}:{port}", ip=addr[0], port=addr[1])

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        Send a request; failures are counted, not raised.
        """
        try:
            self.transport.write(data, addr)
        except OSError as e:
            self.controller.counters["send_errors"] += 1
            self.log.debug("cannot send to {ip}:{port}: {error}", ip=addr[0], port=addr[1],
                           error=e)


class GmondProtocol(StatsProtocol):
    """
    The gmond socket.
    """

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.controller.gmondReceived(data, addr)
        except Exception:
            self.controller.counters["errors"] += 1
            self.log.failure("handling a gmond packet from {ip}:{port}", ip=addr[0],
                             port=addr[1])


class RecvstatsService(service.Service):
    """
    The recvstats daemon: sockets, shared-memory file, timers.

    @param settings: a L{RecvstatsSettings}.
    """

    log = Logger()

    def __init__(self, settings: RecvstatsSettings, directory: Any = None,
                 reactor: Any = None, wallClock: Callable[[], float] = time.time) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        self.directory = directory
        self.wallClock = wallClock
        self.controller: Recvstats | None = None
        self.writer: shm.ShmWriter | None = None
        self.protocol = StatsProtocol(None)
        self.ports: list[Any] = []
        self._loops: list[task.LoopingCall] = []
        self._master: Any = None

    def privilegedStartService(self) -> None:
        s = self.settings
        self.writer = shm.ShmWriter(s.shm, slots=s.slots, maxCpus=s.maxCpus,
                                    maxInterfaces=s.maxInterfaces, clock=self.wallClock)
        recovered = self.writer.open()
        if self.writer.damaged:
            self.log.warn("{path}: records of nodes {nodes} were left half-written by an earlier "
                          "writer and are emptied", path=s.shm, nodes=self.writer.damaged)
        group = (s.group, s.port) if s.group else None
        self.controller = Recvstats(
            self.writer, self.reactor, self.protocol.send, key=s.key, group=group,
            rate=s.rate, forget=s.forget, directory=self.directory, ipBase=s.ipBase,
            wallClock=self.wallClock, directoryRetry=s.directoryRetry)
        self.protocol.controller = self.controller
        try:
            if s.group:
                port = self.reactor.listenMulticast(s.port, self.protocol, interface=s.bind,
                                                    listenMultiple=True)
                port.setTTL(s.ttl)
                if s.interfaceAddress:
                    port.setOutgoingInterface(s.interfaceAddress)
                port.joinGroup(s.group, s.interfaceAddress or "0.0.0.0")
            else:
                port = self.reactor.listenUDP(s.port, self.protocol, interface=s.bind)
            self.ports.append(port)
            if s.gmondPort is not None:
                self.ports.append(self.reactor.listenUDP(
                    s.gmondPort, GmondProtocol(self.controller), interface=s.bind))
        except CannotListenError as e:
            self.log.error("recvstats cannot listen on {where}:{port}: {reason}",
                           where=e.interface or "*", port=e.port, reason=e.socketError)
            raise SystemExit(1)
        self.log.info("recvstats on port {port}{group}, shared memory {path} ({nodes} nodes "
                      "kept from before)", port=port.getHost().port,
                      group=f", group {s.group} on {s.interfaceAddress or 'any interface'}"
                      if s.group else "", path=s.shm, nodes=len(recovered))
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        if self.controller is None:
            self.privilegedStartService()
        service.Service.startService(self)
        s = self.settings
        if not s.requestInterval:
            self.controller.requestUpdates()  # only at start
        for period, call in ((1.0, self.controller.sweep),
                             (s.requestInterval, self.controller.requestUpdates)):
            if period and period > 0:
                loop = task.LoopingCall(call)
                loop.clock = self.reactor
                loop.start(period, now=True).addErrback(
                    lambda f: self.log.failure("recvstats timer", f))
                self._loops.append(loop)
        if s.masterInterval:
            self._startMaster()

    def _startMaster(self) -> None:
        """
        Report this machine itself as node -1, as the original did.
        """
        from sysmon.beostat.send import StatusBuilder, bootId
        from sysmon.beostat import procfs
        from twisted.internet import threads

        s = self.settings
        builder = StatusBuilder(-1, bootId(s.masterProc), socket.gethostname(),
                                s.masterInterval)

        def report():
            d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                          procfs.readSnapshot, s.masterProc, "/")

            def apply(snapshot):
                message = builder.build(snapshot, self.wallClock())
                self.controller.masterReported(message)
            return d.addCallback(apply).addErrback(
                lambda f: self.log.failure("reading this machine's /proc", f))

        loop = task.LoopingCall(report)
        loop.clock = self.reactor
        loop.start(s.masterInterval, now=True)
        self._loops.append(loop)

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        ports, self.ports = self.ports, []
        d = defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

        def closed(_):
            if self.writer is not None:
                self.writer.close()
        return d.addCallback(closed)


@attrs.frozen
class RecvstatsSettings:
    """
    recvstats' settings, as L{sysmon.beostat.tap} builds them.
    """

    shm: str
    port: int = wire.DEFAULT_PORT
    bind: str = ""
    group: str | None = wire.DEFAULT_GROUP
    interfaceAddress: str = ""
    ttl: int = 1
    gmondPort: int | None = None
    key: bytes | None = None
    rate: float | None = None
    requestInterval: float = 60.0
    forget: float = 0.0
    slots: int = shm.DEFAULT_SLOTS
    maxCpus: int = shm.DEFAULT_MAX_CPUS
    maxInterfaces: int = shm.DEFAULT_MAX_INTERFACES
    ipBase: str | None = None
    directoryRetry: float = DIRECTORY_RETRY
    masterInterval: float = 0.0
    masterProc: str = "/proc"
