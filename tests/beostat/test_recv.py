"""
Tests for recvstats' policy (L{sysmon.beostat.recv.Recvstats}) and
sendstats' service (L{sysmon.beostat.send.SendstatsService}), on a fake
reactor with a real shared-memory file.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from sysmon.beostat import procfs, shm, wire
from sysmon.beostat.reader import Beostat
from sysmon.beostat.recv import (
    MAX_NODE,
    ORIGIN_ASSIGNED,
    ORIGIN_DIRECTORY,
    Recvstats,
    RecvstatsService,
    RecvstatsSettings,
)
from sysmon.beostat.records import CpuTicks, Interface
from sysmon.beostat.send import SendstatsService, StatusBuilder
from sysmon.directory import DirectoryUnavailable, HostRecord
from sysmon.directory.file import FileHostDirectory
from sysmon.testing import FakeReactor, LogCapture, ProcTree

from . import gmondcap

HERE = os.path.dirname(os.path.abspath(__file__))
BOOT = b"B" * 16


class Wall:
    """
    A settable wall clock.
    """

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    """
    A L{Recvstats} on a fake reactor with a real file and a reader of it.
    """

    def __init__(self, case: SynchronousTestCase, **kw) -> None:
        self.dir = case.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "beostat")
        self.reactor = FakeReactor()
        self.wall = Wall()
        self.sent: list[tuple[bytes, tuple]] = []
        self.writer = shm.ShmWriter(self.path, slots=4, maxCpus=kw.pop("maxCpus", 8),
                                    clock=self.wall)
        self.writer.open()
        self.recv = Recvstats(self.writer, self.reactor,
                              lambda d, a: self.sent.append((d, a)), wallClock=self.wall, **kw)
        self.reader = Beostat(self.path)
        case.addCleanup(self.reader.close)
        case.addCleanup(self.writer.close)

    def deliver(self, datagrams, addr=("10.0.0.5", 3040)) -> None:
        for d in datagrams:
            self.recv.datagramReceived(d, addr)


def tree(case: SynchronousTestCase) -> ProcTree:
    return ProcTree.make(case.mktemp())


def snapshot(t: ProcTree) -> procfs.Snapshot:
    return procfs.readSnapshot(t.root, "/")


class StatusTests(SynchronousTestCase):
    """
    Status messages become records.
    """

    def test_recordMatchesProc(self):
        """
        One report from a fixture /proc fills the node's record with the
        fixture's values, in libbeostat units.
        """
        h = Harness(self)
        t = tree(self)
        snap = snapshot(t)
        builder = StatusBuilder(3, BOOT, "n3", 1.0)
        h.deliver(wire.encodeStatus(builder.build(snap, h.wall())))
        record = h.writer and shm.ShmFile(h.path).read(3)
        self.assertEqual(record.state, shm.UP)
        self.assertEqual(record.hostname, "n3")
        self.assertEqual(record.address, "10.0.0.5")
        self.assertEqual(record.memory, snap.memory)
        self.assertEqual(record.memory.total, 16315240 * 1024)
        self.assertEqual(record.load, snap.load)
        self.assertEqual(record.rootfs, snap.rootfs)
        self.assertEqual(record.ticks, snap.cpuTotal)
        self.assertEqual([ticks for _, ticks in record.cpus], list(snap.cpus))
        self.assertEqual(record.interfaces, list(snap.interfaces))
        self.assertEqual(record.cpuCount, 2)
        self.assertEqual(h.reader.get_MHz(3), 2400.0)
        self.assertEqual(h.reader.get_time(3), h.wall.now)
        self.assertEqual(h.reader.get_loadavg(3).load, (0.25, 0.5, 0.75))

    def test_cpuUsageFromDeltas(self):
        """
        CPU usage is the busy share of the ticks between two reports, per
        CPU (sent as increments) and for the node.
        """
        h = Harness(self)
        t = tree(self)
        builder = StatusBuilder(1, BOOT, "n1", 1.0)
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), h.wall())))
        # CPU 0: +30 user, +70 idle -> 0.3; CPU 1: +90 system, +10 idle -> 0.9
        t.stat(cpus=((130, 0, 50, 1070, 5, 0, 1, 0), (120, 2, 130, 1000, 3, 0, 2, 0)))
        h.wall.now += 1
        message = builder.build(snapshot(t), h.wall())
        self.assertNotEqual(message.cpus.base, 0)  # increments, not whole counters
        h.deliver(wire.encodeStatus(message))
        self.assertAlmostEqual(h.reader.get_cpu_percent(1, 0), 0.3, places=6)
        self.assertAlmostEqual(h.reader.get_cpu_percent(1, 1), 0.9, places=6)
        self.assertAlmostEqual(h.reader.get_cpu_percent(1), 120 / 200, places=6)
        # counters accumulate from the increments
        self.assertEqual(h.reader.get_stat_cpu(1, 1).system, 130)
        self.assertEqual(h.reader.count_idle_cpus(0.5), 1)

    def test_fewerInterfacesAndCpus(self):
        """
        A node that reports fewer interfaces and CPUs than before shows only
        the new ones, with the counters that the new report carries.
        """
        h = Harness(self)
        t = tree(self)
        t.netdev({"lo": {"rx_bytes": 1}, "eth0": {"rx_bytes": 2}, "eth1": {"rx_bytes": 3}})
        t.stat(cpus=((100, 0, 50, 1000, 5, 0, 1, 0), (120, 2, 40, 1090, 3, 0, 2, 0),
                     (130, 2, 40, 1090, 3, 0, 2, 0)))
        builder = StatusBuilder(2, BOOT, "n2", 1.0)
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), h.wall())))
        record = shm.ShmFile(h.path).read(2)
        self.assertEqual(([i.name for i in record.interfaces], len(record.cpus)),
                         (["lo", "eth0", "eth1"], 3))
        t.netdev({"lo": {"rx_bytes": 5}, "eth0": {"rx_bytes": 6}})
        t.stat(cpus=((150, 0, 50, 1050, 5, 0, 1, 0),))
        h.wall.now += 1
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), h.wall())))
        record = shm.ShmFile(h.path).read(2)
        self.assertEqual([(i.name, i.rxBytes) for i in record.interfaces],
                         [("lo", 5), ("eth0", 6)])
        # CPU 0 kept its counters: +50 user, +50 idle since the first report
        self.assertEqual(record.cpus, [(0.5, CpuTicks(150, 0, 50, 1050, 5, 0, 1, 0))])
        self.assertEqual(h.reader.get_net_dev(2)[-1].name, "eth0")
        # A report with as many of each (written in parts) updates them too.
        t.netdev({"lo": {"rx_bytes": 7}, "eth0": {"rx_bytes": 9}})
        t.stat(cpus=((160, 0, 50, 1080, 5, 0, 1, 0),))
        h.wall.now += 1
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), h.wall())))
        record = shm.ShmFile(h.path).read(2)
        self.assertEqual([(i.name, i.rxBytes) for i in record.interfaces],
                         [("lo", 7), ("eth0", 9)])
        self.assertEqual(record.cpus, [(0.25, CpuTicks(160, 0, 50, 1080, 5, 0, 1, 0))])

    def test_master(self):
        """
        recvstats' own report is node -1, in slot 0 of the file.
        """
        h = Harness(self)
        h.recv.masterReported(StatusBuilder(-1, BOOT, "master", 5.0).build(
            snapshot(tree(self)), h.wall()))
        self.assertEqual(h.reader.nodes(), [-1])
        self.assertEqual(shm.ShmFile(h.path).read(-1).hostname, "master")

    def test_missedBase(self):
        """
        Increments from a message recvstats missed give the usage but not
        the counters: they are not added to older counters, and the next
        whole counters are not compared with stale ones.
        """
        h = Harness(self)
        t = tree(self)
        builder = StatusBuilder(1, BOOT, "n1", 1.0)
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), 1.0)))      # whole, seq 1
        t.stat(cpus=((150, 0, 50, 1050, 5, 0, 1, 0), (120, 2, 40, 1090, 3, 0, 2, 0)))
        builder.build(snapshot(t), 2.0)                                     # seq 2: lost
        t.stat(cpus=((200, 0, 50, 1100, 5, 0, 1, 0), (120, 2, 40, 1190, 3, 0, 2, 0)))
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), 3.0)))      # base 2
        self.assertAlmostEqual(h.reader.get_cpu_percent(1, 0), 0.5, places=6)
        self.assertEqual(h.reader.get_stat_cpu(1, 0).user, 100)  # not 100 + 50
        full = builder.build(snapshot(t), 4.0, full=True)
        h.deliver(wire.encodeStatus(full))
        self.assertEqual(h.reader.get_stat_cpu(1, 0).user, 200)
        self.assertAlmostEqual(h.reader.get_cpu_percent(1, 0), 0.5, places=6)  # kept

    def test_startedMidStream(self):
        """
        Increments seen before any whole counters are not taken as counters.
        """
        h = Harness(self)
        t = tree(self)
        builder = StatusBuilder(1, BOOT, "n1", 1.0)
        builder.build(snapshot(t), 1.0)                                     # before recvstats
        t.stat(cpus=((130, 0, 50, 1070, 5, 0, 1, 0), (120, 2, 40, 1090, 3, 0, 2, 0)))
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), 2.0)))
        self.assertAlmostEqual(h.reader.get_cpu_percent(1, 0), 0.3, places=6)
        self.assertEqual(h.reader.get_stat_cpu(1, 0).user, 0)
        t.stat(cpus=((130, 0, 50, 1170, 5, 0, 1, 0), (120, 2, 40, 1190, 3, 0, 2, 0)))
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), 3.0, full=True)))
        self.assertEqual(h.reader.get_stat_cpu(1, 0).user, 130)
        # not the average since boot (from counters it never had): kept
        self.assertAlmostEqual(h.reader.get_cpu_percent(1, 0), 0.3, places=6)

    def test_outOfRangeValues(self):
        """
        Values a sender may send but the file cannot hold (a load's
        counts beyond 32 bits) are clamped; the record stays readable.
        """
        from sysmon.beostat.records import Load
        h = Harness(self)
        message = StatusBuilder(1, BOOT, "n1", 1.0).build(snapshot(tree(self)), 1.0)
        import attrs
        message = attrs.evolve(message, load=Load(1.0, 2.0, 3.0, 2 ** 40, 2 ** 63, 2 ** 33))
        h.deliver(wire.encodeStatus(message))
        self.assertEqual(h.reader.get_loadavg(1)[1:], (2 ** 32 - 1,) * 3)
        self.assertEqual(h.recv.counters["errors"], 0)

    def test_netRate(self):
        """
        The net rate is the byte counters' growth over the sender's clock.
        """
        h = Harness(self)
        t = tree(self)
        builder = StatusBuilder(1, BOOT, "n1", 1.0)
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), 100.0)))
        self.assertRaises(Exception, h.reader.get_net_rate, 1)
        t.netdev({"lo": {"rx_bytes": 1000, "rx_packets": 10, "tx_bytes": 1000,
                         "tx_packets": 10},
                  "eth0": {"rx_bytes": 123456789 + 4000, "rx_packets": 98765,
                           "tx_bytes": 23456789 + 2000, "tx_packets": 45678, "rx_errs": 1,
                           "tx_drop": 2}})
        h.deliver(wire.encodeStatus(builder.build(snapshot(t), 102.0)))
        self.assertEqual(h.reader.get_net_rate(1), 3000.0)

    def test_lossCounted(self):
        """
        Gaps in the sender's sequence are counted as lost messages.
        """
        h = Harness(self)
        builder = StatusBuilder(1, BOOT, "n1", 1.0)
        snap = snapshot(tree(self))
        h.deliver(wire.encodeStatus(builder.build(snap, 1.0)))
        builder.build(snap, 2.0)
        builder.build(snap, 3.0)
        h.deliver(wire.encodeStatus(builder.build(snap, 4.0)))
        record = shm.ShmFile(h.path).read(1)
        self.assertEqual((record.packets, record.lost, record.sequence), (2, 2, 4))

    def test_restartResetsDeltas(self):
        """
        A new boot id starts the node's deltas afresh (no usage from the
        old boot's counters).
        """
        h = Harness(self)
        snap = snapshot(tree(self))
        h.deliver(wire.encodeStatus(StatusBuilder(1, BOOT, "n1", 1.0).build(snap, 1.0)))
        h.deliver(wire.encodeStatus(StatusBuilder(1, b"C" * 16, "n1", 1.0).build(snap, 2.0)))
        record = shm.ShmFile(h.path).read(1)
        self.assertEqual(record.bootId, b"C" * 16)
        self.assertIsNone(record.cpuUsage)

    def test_partsAppliedAlone(self):
        """
        A node too big for one datagram arrives in parts; each part is
        applied as it comes and together they fill the record.
        """
        h = Harness(self, maxCpus=64)
        t = tree(self)
        t.stat(cpus=[(10 ** 7 + i, 10 ** 5, 10 ** 6, 10 ** 9, 10 ** 5, 10 ** 4, 10 ** 5, 0)
                     for i in range(128)])
        t.netdev({f"eth{i}": {"rx_bytes": 10 ** 12 + i} for i in range(40)})
        t.cpuinfo(mhz=[2400.0] * 128)
        datagrams = wire.encodeStatus(StatusBuilder(9, BOOT, "big", 1.0).build(
            snapshot(t), 1.0))
        self.assertGreater(len(datagrams), 1)
        h.deliver(datagrams[:1])
        self.assertEqual(shm.ShmFile(h.path).read(9).cpuCount, 128)
        h.deliver(datagrams[1:])
        record = shm.ShmFile(h.path).read(9)
        self.assertEqual(len(record.cpus), 64)  # the file keeps --max-cpus
        self.assertEqual(record.cpus[63][1].user, 10 ** 7 + 63)
        self.assertEqual(record.interfaceCount, 40)
        self.assertEqual(len(record.interfaces), 16)
        self.assertEqual(record.packets, len(datagrams))


class StateTests(SynchronousTestCase):
    """
    Up, down and forgotten.
    """

    def test_downAfterFourIntervals(self):
        """
        A node is down once it has been silent for more than 4 of its
        intervals, not before; its next report brings it back up.
        """
        h = Harness(self)
        snap = snapshot(tree(self))
        builder = StatusBuilder(2, BOOT, "n2", 2.0)
        h.deliver(wire.encodeStatus(builder.build(snap, h.wall())))
        h.wall.now += 8.0
        h.recv.sweep()
        self.assertEqual(h.reader.get_state(2), "up")
        h.wall.now += 0.01
        h.recv.sweep()
        self.assertEqual(h.reader.get_state(2), "down")
        self.assertEqual(h.reader.count_idle_cpus(99.0), 0)
        h.deliver(wire.encodeStatus(builder.build(snap, h.wall())))
        self.assertEqual(h.reader.get_state(2), "up")

    def test_forget(self):
        """
        With C{forget}, a node silent that long loses its record.
        """
        h = Harness(self, forget=30.0)
        h.deliver(wire.encodeStatus(StatusBuilder(2, BOOT, "n2", 1.0).build(
            snapshot(tree(self)), 0.0)))
        h.wall.now += 31
        h.recv.sweep()
        self.assertEqual(h.reader.nodes(), [])
        self.assertNotIn(2, h.recv.nodes)

    def test_heartbeat(self):
        """
        Each sweep stamps the header, so readers can tell recvstats lives.
        """
        h = Harness(self)
        h.recv.sweep()
        self.assertEqual(shm.ShmFile(h.path).header()["heartbeat"], h.wall.now)


class NumberingTests(SynchronousTestCase):
    """
    Node numbers for senders that do not give one.
    """

    def send(self, h: Harness, node: int, address: str) -> None:
        message = StatusBuilder(node, address.encode().ljust(16, b"\0")[:16], address,
                                1.0).build(snapshot(self.t), h.wall())
        h.deliver(wire.encodeStatus(message), (address, 3040))

    def setUp(self):
        self.t = tree(self)

    def test_firstFree(self):
        """
        Without a directory or base, senders get the lowest free numbers,
        and keep them.
        """
        h = Harness(self)
        self.send(h, 0, "10.0.0.1")
        self.send(h, -1, "10.0.0.7")
        self.send(h, -1, "10.0.0.8")
        self.send(h, -1, "10.0.0.7")
        self.assertEqual(sorted(h.recv.nodes), [0, 1, 2])
        self.assertEqual(h.recv.nodes[1].record.address, "10.0.0.7")
        self.assertEqual(h.recv.nodes[1].record.packets, 2)

    def test_claimedNumberMoves(self):
        """
        A sender that names a number recvstats had handed out wins it; the
        other sender is given a new number on its next report.
        """
        h = Harness(self)
        self.send(h, -1, "10.0.0.7")
        self.send(h, 0, "10.0.0.1")
        self.assertEqual(h.recv.nodes[0].record.address, "10.0.0.1")
        self.send(h, -1, "10.0.0.7")
        self.assertEqual(h.recv.nodes[1].record.address, "10.0.0.7")

    def test_ipBase(self):
        """
        With C{ipBase}, the number is the address's offset from it.
        """
        h = Harness(self, ipBase="10.0.0.0")
        self.send(h, -1, "10.0.1.4")
        self.assertEqual(list(h.recv.nodes), [260])
        self.assertGreaterEqual(shm.ShmFile(h.path).layout.slots, 262)

    def test_directory(self):
        """
        The host directory's node number comes first.
        """
        hosts = self.mktemp()
        with open(hosts, "w") as f:
            f.write("n40 10.0.0.9 node=40\n")
        h = Harness(self, directory=FileHostDirectory(hosts), ipBase="10.0.0.0")
        self.send(h, -1, "10.0.0.9")
        self.send(h, -1, "10.0.0.10")
        self.assertEqual(sorted(h.recv.nodes), [10, 40])
        self.assertEqual(h.recv.nodes[40].record.origin, 1)

    def test_numbersSurviveRestart(self):
        """
        A restarted recvstats keeps the records and the numbers it handed
        out (they are in the file).
        """
        h = Harness(self)
        self.send(h, -1, "10.0.0.7")
        self.send(h, -1, "10.0.0.8")
        h.writer.close()
        writer = shm.ShmWriter(h.path, slots=4, maxCpus=8)
        self.assertEqual(len(writer.open()), 2)
        self.addCleanup(writer.close)
        again = Recvstats(writer, h.reactor, lambda d, a: None, wallClock=h.wall)
        self.assertEqual(again.byAddress, {"10.0.0.7": 0, "10.0.0.8": 1})
        h.writer, h.recv = writer, again
        self.send(h, -1, "10.0.0.9")
        self.assertEqual(again.byAddress["10.0.0.9"], 2)


class FakeDirectory:
    """
    A host directory whose answers the test decides: while C{down}, every
    lookup fails with L{DirectoryUnavailable}; else the host in C{hosts} (or
    L{None}); while C{hold}, the Deferred is kept in C{held} for the test
    to fire.

    @ivar asked: every address looked up, in order.
    """

    def __init__(self, hosts: dict[str, int] | None = None) -> None:
        self.hosts = dict(hosts or {})
        self.down = False
        self.hold = False
        self.held: list[defer.Deferred] = []
        self.asked: list[str] = []

    def answer(self, address: str) -> HostRecord | None:
        node = self.hosts.get(address)
        return None if node is None else HostRecord(f"n{node}", address, node=node)

    def lookupAddress(self, address: str) -> defer.Deferred:
        self.asked.append(address)
        if self.hold:
            d: defer.Deferred = defer.Deferred()
            self.held.append(d)
            return d
        if self.down:
            return defer.fail(DirectoryUnavailable(f"unknown host (address {address}): down"))
        return defer.succeed(self.answer(address))


class ProvisionalNumberTests(SynchronousTestCase):
    """
    A sender numbered while the directory could not answer is numbered
    provisionally, and moved to the directory's number once it answers.
    """

    RETRY = 30.0

    def setUp(self):
        self.t = tree(self)
        self.snap = snapshot(self.t)
        self.builders: dict[str, StatusBuilder] = {}
        self.directory = FakeDirectory({"10.0.0.7": 7, "10.0.0.8": 0})
        self.directory.down = True
        self.h = Harness(self, directory=self.directory, directoryRetry=self.RETRY)
        self.logs = LogCapture(self)

    def send(self, address: str) -> wire.Message:
        """
        The next report of the node-less sender at C{address}.
        """
        builder = self.builders.get(address)
        if builder is None:
            builder = self.builders[address] = StatusBuilder(
                -1, address.encode().ljust(16, b"\0"), "host-" + address, 1.0)
        message = builder.build(self.snap, self.h.wall())
        self.h.deliver(wire.encodeStatus(message), (address, 3040))
        return message

    def later(self, seconds: float) -> None:
        """
        Let C{seconds} pass on both clocks.
        """
        self.h.reactor.advance(seconds)
        self.h.wall.now += seconds

    def record(self, node: int) -> shm.NodeRecord:
        """
        Node C{node}'s record as the file holds it.
        """
        f = shm.ShmFile(self.h.path)
        self.addCleanup(f.close)
        return f.read(node)

    def filed(self) -> dict[int, tuple[str, int]]:
        """
        What the file holds: node -> (address, origin).
        """
        f = shm.ShmFile(self.h.path)
        self.addCleanup(f.close)
        out = {}
        for node in f.nodes():
            record = f.read(node)
            if record.state != shm.EMPTY:
                out[node] = (record.address, record.origin)
        return out

    def test_failedLookupIsProvisional(self):
        """
        A failed lookup files the sender under the first free number, as
        before, and the log says the number is provisional.
        """
        self.send("10.0.0.7")
        self.assertEqual(self.filed(), {0: ("10.0.0.7", ORIGIN_ASSIGNED)})
        self.assertEqual(self.directory.asked, ["10.0.0.7"])
        self.assertTrue(self.logs.has("10.0.0.7 is node 0 (first free number, provisionally"))

    def test_noRetryBeforeInterval(self):
        """
        Reports within C{directoryRetry} seconds of the failure do not ask
        the directory again, even when it is back.
        """
        self.send("10.0.0.7")
        self.directory.down = False
        for _ in range(29):
            self.later(1.0)
            self.send("10.0.0.7")
        self.assertEqual(self.directory.asked, ["10.0.0.7"])
        self.assertEqual(self.filed(), {0: ("10.0.0.7", ORIGIN_ASSIGNED)})

    def test_retryAtMostOncePerInterval(self):
        """
        The first report after the interval asks again; while the directory
        still fails, the next question waits another interval.
        """
        self.send("10.0.0.7")
        self.later(self.RETRY)
        self.send("10.0.0.7")
        self.assertEqual(self.directory.asked, ["10.0.0.7"] * 2)
        for _ in range(29):
            self.later(1.0)
            self.send("10.0.0.7")
        self.assertEqual(len(self.directory.asked), 2)
        self.later(1.0)
        self.send("10.0.0.7")
        self.assertEqual(len(self.directory.asked), 3)
        self.assertEqual(self.filed(), {0: ("10.0.0.7", ORIGIN_ASSIGNED)})

    def test_movedToDirectoryNumber(self):
        """
        When the directory answers with another number, the sender moves
        there: the provisional node is emptied in the file, the report is
        filed under the directory's number at once, the move is logged with
        both numbers, and the number is final (no more questions) and the
        provisional one free again.
        """
        self.send("10.0.0.7")
        self.directory.down = False
        self.later(self.RETRY)
        message = self.send("10.0.0.7")
        self.assertEqual(self.filed(), {7: ("10.0.0.7", ORIGIN_DIRECTORY)})
        self.assertEqual(self.record(7).sequence, message.sequence)
        self.assertEqual(sorted(self.h.recv.nodes), [7])
        self.assertTrue(self.logs.has(
            "10.0.0.7 moves from node 0 (provisional) to node 7 (from the directory)"))
        self.later(self.RETRY * 3)
        self.send("10.0.0.7")
        self.assertEqual(len(self.directory.asked), 2)
        self.assertEqual(self.record(7).packets, 2)
        # 0 is free again: a sender the directory does not know gets it
        self.send("10.0.0.9")
        self.assertEqual(self.filed(), {0: ("10.0.0.9", ORIGIN_ASSIGNED),
                                        7: ("10.0.0.7", ORIGIN_DIRECTORY)})

    def test_staysWhenSameNumber(self):
        """
        When the directory gives the provisional number itself, the sender
        stays, the number becomes the directory's, and it is final.
        """
        self.send("10.0.0.8")
        self.directory.down = False
        self.later(self.RETRY)
        self.send("10.0.0.8")
        self.send("10.0.0.8")
        self.assertEqual(self.filed(), {0: ("10.0.0.8", ORIGIN_DIRECTORY)})
        self.assertEqual(self.record(0).packets, 3)
        self.assertTrue(self.logs.has("10.0.0.8 keeps node 0: the directory confirms it"))
        self.later(self.RETRY * 3)
        self.send("10.0.0.8")
        self.assertEqual(len(self.directory.asked), 2)

    def test_notFoundOnRetryIsFinal(self):
        """
        When the directory answers that it does not know the sender, the
        provisional number becomes final.
        """
        self.send("10.0.0.9")
        self.directory.down = False
        self.later(self.RETRY)
        self.send("10.0.0.9")
        self.later(self.RETRY * 3)
        self.send("10.0.0.9")
        self.assertEqual(self.directory.asked, ["10.0.0.9"] * 2)
        self.assertEqual(self.filed(), {0: ("10.0.0.9", ORIGIN_ASSIGNED)})
        self.assertTrue(self.logs.has("10.0.0.9 keeps node 0: the directory has no node"))

    def test_answerAtFirstIsFinal(self):
        """
        A directory that answers the first lookup, found or not found, is
        never asked again for that sender.
        """
        self.directory.down = False
        self.send("10.0.0.7")
        self.send("10.0.0.9")
        self.later(self.RETRY * 3)
        self.send("10.0.0.7")
        self.send("10.0.0.9")
        self.assertEqual(self.directory.asked, ["10.0.0.7", "10.0.0.9"])
        self.assertEqual(self.filed(), {0: ("10.0.0.9", ORIGIN_ASSIGNED),
                                        7: ("10.0.0.7", ORIGIN_DIRECTORY)})
        self.assertFalse(self.logs.has("provisionally"))

    def test_slowAnswerFilesNewestReport(self):
        """
        Reports that come while the question is out are filed under the
        provisional number; when the answer moves the sender, the newest of
        them is what is filed under the new number.
        """
        self.send("10.0.0.7")
        self.directory.down = False
        self.directory.hold = True
        self.later(self.RETRY)
        self.send("10.0.0.7")
        self.later(1.0)
        self.send("10.0.0.7")
        self.later(1.0)
        newest = self.send("10.0.0.7")
        self.assertEqual(len(self.directory.asked), 2)
        self.assertEqual(self.record(0).packets, 4)
        [d] = self.directory.held
        d.callback(self.directory.answer("10.0.0.7"))
        self.assertEqual(self.filed(), {7: ("10.0.0.7", ORIGIN_DIRECTORY)})
        record = self.record(7)
        self.assertEqual((record.sequence, record.packets), (newest.sequence, 1))

    def test_forgottenWhileAsking(self):
        """
        A sender forgotten while the question is out is not moved by the
        answer: its next report is numbered afresh.
        """
        self.h.recv.forget = 5.0
        self.send("10.0.0.7")
        self.directory.down = False
        self.directory.hold = True
        self.later(self.RETRY)
        self.send("10.0.0.7")
        self.later(6.0)
        self.h.recv.sweep()
        self.assertEqual(self.filed(), {})
        [d] = self.directory.held
        d.callback(self.directory.answer("10.0.0.7"))
        self.assertEqual(self.filed(), {})
        self.assertEqual(self.h.recv.byAddress, {})
        self.directory.hold = False
        self.send("10.0.0.7")
        self.assertEqual(self.filed(), {7: ("10.0.0.7", ORIGIN_DIRECTORY)})

    def test_movedOntoAnotherProvisional(self):
        """
        Two senders numbered provisionally 0 and 1 whose directory numbers
        are the other way round: the first to move takes its number back
        from the other, which is numbered afresh (from the directory) on
        its next report; each ends up once in the file, under its own
        directory number.
        """
        self.directory.hosts = {"10.0.0.1": 1, "10.0.0.2": 0}
        self.send("10.0.0.1")
        self.send("10.0.0.2")
        self.assertEqual(self.filed(), {0: ("10.0.0.1", ORIGIN_ASSIGNED),
                                        1: ("10.0.0.2", ORIGIN_ASSIGNED)})
        self.directory.down = False
        self.later(self.RETRY)
        self.send("10.0.0.1")
        self.assertEqual(self.filed(), {1: ("10.0.0.1", ORIGIN_DIRECTORY)})
        self.assertTrue(self.logs.has("node 1 is claimed by the directory; 10.0.0.2 will get"))
        self.send("10.0.0.2")
        self.assertEqual(self.filed(), {0: ("10.0.0.2", ORIGIN_DIRECTORY),
                                        1: ("10.0.0.1", ORIGIN_DIRECTORY)})
        self.assertEqual(self.directory.asked,
                         ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"])

    def test_directoryNumberAboveLimit(self):
        """
        A directory number beyond C{MAX_NODE} is not used (the file would
        grow to it): the sender is numbered as if the directory gave none,
        and the log says why.
        """
        self.directory.down = False
        self.directory.hosts["10.0.0.9"] = MAX_NODE
        self.send("10.0.0.9")
        self.assertEqual(self.filed(), {0: ("10.0.0.9", ORIGIN_ASSIGNED)})
        f = shm.ShmFile(self.h.path)
        self.addCleanup(f.close)
        self.assertEqual(f.layout.slots, 4)
        self.assertTrue(self.logs.has(f"the directory gives 10.0.0.9 node {MAX_NODE}, above"))

    def test_serviceSetting(self):
        """
        The service passes its C{directoryRetry} setting to the policy; the
        default is 30 s.
        """
        self.assertEqual(RecvstatsSettings(shm="x").directoryRetry, 30.0)
        path = os.path.join(self.mktemp(), "beostat")
        os.makedirs(os.path.dirname(path))
        service = RecvstatsService(RecvstatsSettings(
            shm=path, group=None, directoryRetry=7.5, masterInterval=0),
            directory=self.directory, reactor=FakeReactor())
        service.startService()
        self.assertEqual(service.controller.directoryRetry, 7.5)
        self.assertIs(service.controller.directory, self.directory)
        self.successResultOf(service.stopService())


class SignatureTests(SynchronousTestCase):
    """
    With a key, only signed packets count.
    """

    def test_dropAndCount(self):
        """
        Unsigned and wrongly signed packets are dropped and counted; signed
        ones are applied; malformed ones counted as bad.
        """
        h = Harness(self, key=b"secret")
        message = StatusBuilder(5, BOOT, "n5", 1.0).build(snapshot(tree(self)), 1.0)
        h.deliver(wire.encodeStatus(message))
        h.deliver(wire.encodeStatus(message, key=b"wrong"))
        h.deliver([b"garbage"])
        self.assertEqual(h.recv.nodes, {})
        h.deliver(wire.encodeStatus(message, key=b"secret"))
        self.assertEqual(list(h.recv.nodes), [5])
        self.assertEqual((h.recv.counters["unsigned"], h.recv.counters["bad_signature"],
                          h.recv.counters["bad"], h.recv.counters["status"]), (1, 1, 1, 1))


class PacketCounterTests(SynchronousTestCase):
    """
    The packet counters that the metrics read.
    """

    def test_nodeAboveLimitIsBad(self):
        """
        A status report claiming a node number above C{MAX_NODE} counts as
        C{bad}, not as a status report taken; a good one counts as C{status}.
        """
        h = Harness(self)
        snap = snapshot(tree(self))
        h.deliver(wire.encodeStatus(StatusBuilder(MAX_NODE, BOOT, "big", 1.0)
                                    .build(snap, h.wall())))
        self.assertEqual((h.recv.counters["bad"], h.recv.counters["status"]), (1, 0))
        self.assertEqual(h.recv.nodes, {})
        h.deliver(wire.encodeStatus(StatusBuilder(2, BOOT, "n2", 1.0).build(snap, h.wall())))
        self.assertEqual((h.recv.counters["bad"], h.recv.counters["status"]), (1, 1))


class RequestTests(SynchronousTestCase):
    """
    recvstats' requests to the nodes.
    """

    def test_requestUpdates(self):
        """
        An update request (and the set-rate, when a rate is configured) goes
        to the group and to every unicast node; the header records when.
        """
        h = Harness(self, group=(wire.DEFAULT_GROUP, 3040), rate=2.0, key=b"k")
        snap = snapshot(tree(self))
        m = StatusBuilder(1, BOOT, "n1", 2.0).build(snap, h.wall())
        h.deliver(wire.encodeStatus(m, key=b"k"), ("10.0.0.1", 40001))
        h.sent.clear()
        h.recv.requestUpdates()
        sent = [(wire.decode(d, key=b"k"), a) for d, a in h.sent]
        self.assertEqual(sorted((m.typeName, a) for m, a in sent), [
            ("set-rate", ("10.0.0.1", 40001)), ("set-rate", (wire.DEFAULT_GROUP, 3040)),
            ("update-request", ("10.0.0.1", 40001)),
            ("update-request", (wire.DEFAULT_GROUP, 3040))])
        self.assertEqual({m.interval for m, _ in sent if m.type == wire.SET_RATE}, {2.0})
        self.assertEqual(h.reader.get_last_multicast(), h.wall.now)

    def test_rateCorrection(self):
        """
        A node reporting at another rate than the configured one is asked
        to change, at most every 10 s.
        """
        h = Harness(self, rate=0.5)
        snap = snapshot(tree(self))
        builder = StatusBuilder(4, BOOT, "n4", 1.0)
        for _ in range(3):
            h.deliver(wire.encodeStatus(builder.build(snap, h.wall())), ("10.0.0.4", 40004))
        [(datagram, addr)] = h.sent
        request = wire.decode(datagram)
        self.assertEqual((request.type, request.node, request.interval, addr),
                         (wire.SET_RATE, 4, 0.5, ("10.0.0.4", 40004)))
        h.reactor.advance(10)
        h.deliver(wire.encodeStatus(builder.build(snap, h.wall())), ("10.0.0.4", 40004))
        self.assertEqual(len(h.sent), 2)


class GmondTests(SynchronousTestCase):
    """
    gmond packets become records.
    """

    def test_capture(self):
        """
        A real gmond's packets (capture A) make one node, keyed by the
        spoofed address, with gmond's values in libbeostat units.
        """
        from sysmon.beostat import gmond
        h = Harness(self)
        datagrams = gmondcap.capture("gmond_a")
        host = gmond.GmondHost()
        for data in datagrams:
            h.recv.gmondReceived(data, ("127.0.0.1", 43597))
            host.apply(gmond.decode(data))
        view = host.view()
        [node] = h.recv.nodes
        record = shm.ShmFile(h.path).read(node)
        self.assertEqual(record.source, shm.GMOND)
        self.assertEqual(record.hostname, "probe-node-01")
        self.assertEqual(record.address, "127.0.0.1")
        self.assertEqual(record.load, view.load)
        self.assertEqual(record.memory, view.memory)
        self.assertAlmostEqual(record.cpuUsage, view.cpuUsage, places=6)
        self.assertEqual(record.cpuCount, view.cpuCount)
        self.assertEqual(h.recv.counters["gmond"], len(datagrams))
        h.recv.gmondReceived(b"\0\0\0\x80junk", ("127.0.0.1", 1))
        self.assertEqual(h.recv.counters["gmond_bad"], 1)


class SendstatsTests(SynchronousTestCase):
    """
    The sendstats service on a fake reactor.
    """

    def service(self, **kw) -> tuple[SendstatsService, FakeReactor]:
        reactor = FakeReactor()
        t = tree(self)
        kw.setdefault("masters", [])
        service = SendstatsService(
            kw.pop("masters"), interval=1.0, node=kw.pop("node", 3), reactor=reactor,
            snapshot=lambda: defer.succeed(procfs.readSnapshot(t.root, "/")),
            hostname="n3", boot=BOOT, wallClock=lambda: reactor.seconds() + 1e9, **kw)
        service.startService()
        self.addCleanup(service.stopService)
        return service, reactor

    def test_multicast(self):
        """
        Without masters, sendstats binds the group, joins it on the given
        interface with the TTL, and reports to it every interval.
        """
        service, reactor = self.service(interfaceAddress="10.9.0.2", ttl=1)
        [listen] = reactor.udp
        self.assertTrue(listen.multicast)
        self.assertEqual(listen.interface, wire.DEFAULT_GROUP)
        port = listen.transport
        self.assertEqual(port.groups, {(wire.DEFAULT_GROUP, "10.9.0.2")})
        self.assertEqual((port.ttl, port.outgoingInterface), (1, "10.9.0.2"))
        [(datagram, addr)] = port.pop()
        self.assertEqual(addr, (wire.DEFAULT_GROUP, 3040))
        message = wire.decode(datagram)
        self.assertTrue(message.multicast)
        self.assertEqual((message.node, message.hostname, message.interval), (3, "n3", 1.0))
        reactor.advance(1.0)
        self.assertEqual(len(port.pop()), 1)

    def test_reportsCounted(self):
        """
        Each report that goes out counts once in C{reports}, however many
        masters get it (C{sent} counts the datagrams); a report that no
        master could be sent does not count.
        """
        service, reactor = self.service(masters=[("10.0.0.1", 3040), ("10.0.0.2", 5545)])
        counters = service.counters
        self.assertEqual((counters.get("reports"), counters.get("sent")), (1, 2))
        reactor.advance(1.0)
        self.assertEqual((counters.get("reports"), counters.get("sent")), (2, 4))
        port = reactor.udp[0].transport

        def refuse(data, addr=None):
            raise OSError(101, "Network is unreachable")

        self.patch(port, "write", refuse)
        reactor.advance(1.0)
        self.assertEqual((counters.get("reports"), counters.get("send_errors")), (2, 2))

    def test_unicastToMasters(self):
        """
        With masters, each gets every report.
        """
        service, reactor = self.service(masters=[("10.0.0.1", 3040), ("10.0.0.2", 5545)])
        port = reactor.udp[0].transport
        self.assertFalse(reactor.udp[0].multicast)
        self.assertEqual(sorted(a for _, a in port.pop()),
                         [("10.0.0.1", 3040), ("10.0.0.2", 5545)])

    def test_requests(self):
        """
        An update request makes an immediate report with whole counters; a
        set-rate changes the interval; requests for another node are
        ignored.
        """
        service, reactor = self.service()
        port = reactor.udp[0].transport
        port.pop()
        reactor.advance(0.5)
        now = reactor.seconds() + 1e9

        def request(kind, node=-1, interval=0.0):
            service.datagramReceived(wire.encode(wire.Message(
                type=kind, node=node, timestamp=now, interval=interval)), ("10.0.0.1", 3040))

        request(wire.UPDATE_REQUEST)
        [(datagram, _)] = port.pop()
        self.assertEqual(wire.decode(datagram).cpus.base, 0)
        request(wire.SET_RATE, node=7, interval=0.25)
        self.assertEqual(service.interval, 1.0)
        request(wire.SET_RATE, node=3, interval=0.25)
        self.assertEqual(service.interval, 0.25)
        port.pop()
        reactor.pump([0.25] * 4)
        self.assertEqual(len(port.pop()), 4)
        request(wire.SET_RATE, interval=0.001)
        self.assertEqual(service.interval, 0.1)

    def test_signedRequests(self):
        """
        With a key, reports are signed and only signed, fresh requests are
        obeyed.
        """
        service, reactor = self.service(key=b"k")
        port = reactor.udp[0].transport
        [(datagram, _)] = port.pop()
        self.assertTrue(wire.decode(datagram, key=b"k").signed)
        now = reactor.seconds() + 1e9
        for key, when in ((None, now), (b"bad", now), (b"k", now - 1000)):
            data = wire.encode(wire.Message(type=wire.SET_RATE, timestamp=when,
                                            interval=3.0), key=key)
            service.datagramReceived(data, ("10.0.0.1", 3040))
        self.assertEqual(service.interval, 1.0)
        self.assertEqual((service.counters["bad"], service.counters["stale"]), (2, 1))
        service.datagramReceived(wire.encode(wire.Message(
            type=wire.SET_RATE, timestamp=now, interval=3.0), key=b"k"), ("10.0.0.1", 3040))
        self.assertEqual(service.interval, 3.0)


class ServiceTests(SynchronousTestCase):
    """
    The recvstats service's sockets and timers.
    """

    def test_sockets(self):
        """
        recvstats listens on the status port (joined to the group on the
        interface) and the gmond port, asks for updates at start, and
        releases everything at stop.
        """
        path = os.path.join(self.mktemp(), "beostat")
        os.makedirs(os.path.dirname(path))
        reactor = FakeReactor()
        service = RecvstatsService(RecvstatsSettings(
            shm=path, port=3040, interfaceAddress="10.9.0.1", gmondPort=8649,
            masterInterval=0), reactor=reactor)
        service.startService()
        status, gmondListen = reactor.udp
        self.assertTrue(status.multicast)
        self.assertTrue(status.listenMultiple)
        self.assertEqual(status.transport.groups, {(wire.DEFAULT_GROUP, "10.9.0.1")})
        self.assertEqual(gmondListen.port, 8649)
        [(datagram, addr)] = status.transport.pop()
        self.assertEqual(wire.decode(datagram).type, wire.UPDATE_REQUEST)
        self.assertEqual(addr, (wire.DEFAULT_GROUP, 3040))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)
        self.successResultOf(service.stopService())
        self.assertFalse(status.transport.listening)
        self.assertFalse(gmondListen.transport.listening)
        self.assertEqual(reactor.getDelayedCalls(), [])
