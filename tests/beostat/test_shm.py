"""
Tests for the shared-memory file (L{sysmon.beostat.shm}) and the
libbeostat-style reader of it (L{sysmon.beostat.reader}): records round
trip, the header, reopening and replacing the file, the reader API in
libbeostat's units, and, with real separate processes, the seqlock under
a busy writer and the file growing under readers.

The child processes run C{tests/beostat/shmworker.py}; every one is
stopped by pid when its test ends, even when the test fails.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from sysmon.beostat import reader, shm
from sysmon.beostat.reader import Beostat, LoadAvg, MemInfo, MemUsage, NetDev, NetStat, NoData
from sysmon.beostat.records import CpuTicks, FileSystem, Interface, Load, Memory
from sysmon.testing import stopProcess

from .shmworker import HOT, MAX_CPUS, MAX_INTERFACES, makeRecord

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "shmworker.py")

#: Reads the reader process makes in the seqlock test.
READS = 1_000_000
#: The last node the growth test writes (slots -1..4998: 5000).
LAST_NODE = 4998


def _seq(path: str, node: int) -> int:
    """
    The seqlock word of C{node}'s record, read from the file.
    """
    f = shm.ShmFile(path)
    try:
        return struct.unpack_from("<I", f.fresh(), f.layout.recordOffset(node))[0]
    finally:
        f.close()


def dieMidRecord(path: str, node: int) -> None:
    """
    Leave C{node}'s record as a writer that died in the middle of writing
    it would: its sequence counter odd and part of it overwritten.
    """
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        layout = shm.Layout(*struct.unpack_from("<3I", mm, 20))  # slots, CPUs, interfaces
        offset = layout.recordOffset(node)
        seq = struct.unpack_from("<I", mm, offset)[0]
        struct.pack_into("<I", mm, offset, seq + 1)
        struct.pack_into("<Q", mm, offset + shm.F_TICKS, 12345)


def fullRecord(node: int = 3) -> shm.NodeRecord:
    """
    A record with every field set, in values the file stores exactly.
    """
    return shm.NodeRecord(
        node=node, state=shm.UP, source=shm.SENDSTATS, interval=2.5,
        updated=1_700_000_123.25, firstSeen=1_700_000_000.5, senderTime=1_700_000_122.75,
        address="10.1.2.3", bootId=bytes(range(16)), hostname="nœud-3.cluster",
        model="Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", sequence=0xFFFFFFFE,
        packets=123456, lost=7, cpuCount=3, mhz=2400.5, cpuUsage=0.375,
        ticks=CpuTicks(2**40 + 1, 2, 3, 2**41, 5, 6, 7, 8),
        memory=Memory(16 * 2**30, 4 * 2**30, 9 * 2**30, 2**28, 3 * 2**29, 2**32, 2**31),
        load=Load(0.5, 0.25, 0.125, 3, 812, 4242),
        rates=(1000.0, 250.0, 10.5, 2.25),
        rootfs=FileSystem(4096, 10_000_000, 4_000_000, 3_500_000, 655_360, 600_000),
        cpuUsages=[0.5, None, 0.0],
        cpuTicks=[100, 1, 50, 800, 4, 0, 2, 0, 200, 2, 60, 700, 5, 1, 3, 1,
                  300, 3, 70, 600, 6, 2, 4, 2],
        interfaceCount=2,
        interfaces=[Interface("eth0", 2**63, 2, 3, 4, 5, 6, 7, 8),
                    Interface("ib0", 10, 20, 0, 0, 30, 40, 0, 1)],
        origin=2,
    )


class FileCase(SynchronousTestCase):
    """
    A temporary directory with a file path in it, and writers and readers
    that are closed when the test ends.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "beostat")

    def writer(self, slots: int = 16, maxCpus: int = 8, maxInterfaces: int = 4,
               clock=None, open: bool = True) -> shm.ShmWriter:
        kw = {} if clock is None else {"clock": clock}
        w = shm.ShmWriter(self.path, slots=slots, maxCpus=maxCpus,
                          maxInterfaces=maxInterfaces, **kw)
        self.addCleanup(w.close)
        if open:
            w.open()
        return w

    def file(self) -> shm.ShmFile:
        f = shm.ShmFile(self.path)
        self.addCleanup(f.close)
        return f

    def beostat(self) -> Beostat:
        b = Beostat(self.path)
        self.addCleanup(b.close)
        return b


class RecordTests(FileCase):
    """
    What L{shm.ShmWriter} writes, L{shm.ShmFile} reads back.
    """

    def test_roundTrip(self):
        """
        A record with every field set (per-CPU entries, interfaces, 64-bit
        counters, a UTF-8 host name, an IPv4 address) reads back equal.
        """
        w = self.writer()
        record = fullRecord()
        w.write(record)
        self.assertEqual(self.file().read(3), record)

    def test_roundTripIPv6AndMaster(self):
        """
        The master's slot (node -1) holds a record too, and an IPv6 address
        survives.
        """
        w = self.writer()
        record = fullRecord(node=-1)
        record.address = "fe80::1"
        w.write(record)
        self.assertEqual(self.file().read(-1), record)

    def test_missingParts(self):
        """
        Parts that a record does not have read back as L{None}, and its
        valid bits say which parts it has.
        """
        w = self.writer()
        w.write(shm.NodeRecord(node=5, state=shm.UP, hostname="bare", load=Load(1.0)))
        got = self.file().read(5)
        self.assertEqual(
            (got.hostname, got.load, got.memory, got.ticks, got.cpuUsage, got.mhz, got.rates,
             got.rootfs, got.interfaces, got.cpus),
            ("bare", Load(1.0), None, None, None, None, None, None, None, []))
        self.assertEqual(got.valid(), shm.V_LOAD)

    def test_clippedToLimits(self):
        """
        A node with more CPUs and interfaces than the file keeps is stored
        with the first C{maxCpus} and C{maxInterfaces} of them; its counts
        still say how many it has.  Long names are cut at a character
        boundary, within their fields.
        """
        w = self.writer(maxCpus=2, maxInterfaces=1)
        record = fullRecord()
        record.cpus = [(i / 8, CpuTicks(i, i, i, i)) for i in range(5)]
        record.cpuCount = 5
        record.interfaces = [Interface("a-very-long-interface-name", 1),
                             Interface("eth1", 2), Interface("eth2", 3)]
        record.interfaceCount = 3
        record.hostname = "é" * 40
        w.write(record)
        got = self.file().read(3)
        self.assertEqual(got.cpus, record.cpus[:2])
        self.assertEqual(got.cpuCount, 5)
        self.assertEqual(got.interfaces, [Interface("a-very-long-int", 1)])
        self.assertEqual(got.interfaceCount, 3)
        self.assertEqual(got.hostname, "é" * 31)

    def test_perCpuTicksKeepLow32Bits(self):
        """
        Per-CPU tick counters keep their low 32 bits; the node's total keeps
        all 64.
        """
        w = self.writer()
        record = fullRecord()
        record.cpus = [(0.5, CpuTicks(2**32 + 5, 2**33, 7, 2**40 + 9))]
        w.write(record)
        got = self.file().read(3)
        self.assertEqual(got.cpus, [(0.5, CpuTicks(5, 0, 7, 9))])
        self.assertEqual(got.ticks, record.ticks)

    def test_fewerCpusThanBefore(self):
        """
        A record rewritten with fewer CPUs and interfaces shows only the new
        ones, not the entries the longer record left behind.
        """
        w = self.writer()
        w.write(fullRecord())
        shorter = fullRecord()
        shorter.cpus = shorter.cpus[:1]
        shorter.interfaces = []
        w.write(shorter)
        got = self.file().read(3)
        self.assertEqual((got.cpus, got.interfaces), (shorter.cpus, []))

    def test_partsOnly(self):
        """
        A write of some parts replaces those parts and the status fields
        (state, times, counts) and leaves the rest of the slot as it was.
        """
        w = self.writer()
        record = fullRecord()
        w.write(record)
        changed = fullRecord()
        changed.memory = Memory(*range(1, 8))
        changed.load = Load(9.0, 8.0, 7.0, 6, 5, 4)
        changed.hostname = "renamed"
        changed.updated += 10
        changed.packets += 1
        changed.cpus = [(0.75, CpuTicks(*range(i, i + 8))) for i in range(3)]  # as many
        w.write(changed, shm.PART_MEMORY)
        got = self.file().read(3)
        self.assertEqual((got.memory, got.updated, got.packets),
                         (changed.memory, changed.updated, changed.packets))
        self.assertEqual((got.load, got.hostname, got.cpus),
                         (record.load, record.hostname, record.cpus))
        w.write(changed, shm.PART_LOAD | shm.PART_IDENTITY | shm.PART_CPUS)
        self.assertEqual(self.file().read(3), changed)

    def test_setState(self):
        """
        L{shm.ShmWriter.setState} changes the state and nothing else, under
        the seqlock: the counter moves on by two and is even again.
        """
        w = self.writer()
        w.write(fullRecord())
        before = _seq(self.path, 3)
        w.setState(3, shm.DOWN)
        got = self.file().read(3)
        want = fullRecord()
        want.state = shm.DOWN
        self.assertEqual(got, want)
        self.assertEqual(_seq(self.path, 3), before + 2)

    def test_clear(self):
        """
        L{shm.ShmWriter.clear} empties a slot under the seqlock: the record
        reads as empty and L{shm.ShmFile.records} leaves it out.
        """
        w = self.writer()
        w.write(fullRecord(3))
        w.write(fullRecord(4))
        before = _seq(self.path, 3)
        w.clear(3)
        f = self.file()
        got = f.read(3)
        self.assertEqual((got.state, got.hostname, got.memory, got.cpus, got.interfaces),
                         (shm.EMPTY, "", None, [], None))
        self.assertEqual([r.node for r in f.records()], [4])
        self.assertEqual(_seq(self.path, 3), before + 2)

    def test_stateAndClearOutOfRange(self):
        """
        L{shm.ShmWriter.setState} and L{shm.ShmWriter.clear} of a node the
        file has no slot for (below -1, or beyond the slots) raise and
        change no record.  (Unchecked, a node below -1 gives a negative
        offset, which C{struct} and mmap slicing count from the end of the
        file: another node's record would be overwritten.)
        """
        w = self.writer(slots=16, maxCpus=4, maxInterfaces=2)
        for node in range(-1, 15):
            w.write(fullRecord(node))
        quiet = []
        for name, call in (("setState(-2)", lambda: w.setState(-2, shm.DOWN)),
                           ("clear(-2)", lambda: w.clear(-2)),
                           ("setState(15)", lambda: w.setState(15, shm.DOWN)),
                           ("clear(15)", lambda: w.clear(15))):
            try:
                call()
            except (IndexError, ValueError, struct.error):
                pass
            else:
                quiet.append(name)
        f = self.file()
        size = f.layout.recordSize
        changed = []
        for node in range(-1, 15):
            try:
                raw = f.consistent(node, lambda mm, off: mm[off:off + size], tries=1000)
            except TimeoutError:
                changed.append(node)
                continue
            if shm.parseRecord(raw, f.layout) != fullRecord(node):
                changed.append(node)
        self.assertEqual((quiet, changed), ([], []), "(did not raise, records changed)")

    def test_writeBelowMaster(self):
        """
        Node numbers below -1 are refused.
        """
        w = self.writer()
        self.assertRaises(ValueError, w.write, shm.NodeRecord(node=-2))

    def test_readOutOfRange(self):
        """
        L{shm.ShmFile.read} of a node the file has no slot for raises
        L{IndexError}; L{shm.ShmFile.nodes} is the range of slots.
        """
        self.writer(slots=4)
        f = self.file()
        self.assertRaises(IndexError, f.read, 3)
        self.assertRaises(IndexError, f.read, -2)
        self.assertEqual(f.nodes(), range(-1, 3))

    def test_badLimits(self):
        """
        A writer needs at least one slot, CPU entry and interface entry.
        """
        for kw in ({"slots": 0}, {"maxCpus": 0}, {"maxInterfaces": 0}, {"maxCpus": 0x10000}):
            self.assertRaises(ValueError, shm.ShmWriter, self.path, **kw)


class HeaderTests(FileCase):
    """
    The file header: geometry, writer, heartbeat, last request, generation.
    """

    def test_newFile(self):
        """
        A new file's header names its geometry, its writer's pid and its
        creation time, and the file is as long as its slots need.
        """
        self.writer(slots=16, maxCpus=8, maxInterfaces=4, clock=lambda: 1234.5)
        h = self.file().header()
        layout = shm.Layout(16, 8, 4)
        self.assertEqual(
            (h["magic"], h["version"], h["headerSize"], h["recordSize"], h["slots"],
             h["maxCpus"], h["maxInterfaces"], h["flags"], h["writerPid"], h["generation"],
             h["lastRequest"], h["created"], h["heartbeat"], h["firstNode"]),
            (shm.MAGIC, 1, 256, layout.recordSize, 16, 8, 4, 0, os.getpid(), 0, 0.0, 1234.5,
             1234.5, -1))
        self.assertEqual(os.path.getsize(self.path), layout.fileSize)

    def test_heartbeatAndLastRequest(self):
        """
        L{shm.ShmWriter.heartbeat} and L{shm.ShmWriter.setLastRequest} land
        in the header, where readers see them.
        """
        w = self.writer()
        f = self.file()
        w.heartbeat(1_700_000_001.5)
        w.setLastRequest(1_700_000_000.25)
        h = f.header()
        self.assertEqual((h["heartbeat"], h["lastRequest"]), (1_700_000_001.5, 1_700_000_000.25))
        self.assertEqual(self.beostat().get_last_multicast(), 1_700_000_000.25)

    def test_growKeepsRecordsAndHeader(self):
        """
        Writing a node beyond the slots grows the file (at least doubling
        it): records and the last request time move over, the generation
        goes up, the old mapping is flagged replaced and a reader that had
        it open follows to the new file.
        """
        w = self.writer(slots=4)
        w.write(fullRecord(1))
        w.setLastRequest(99.5)
        f = self.file()
        self.assertEqual(f.layout.slots, 4)
        w.write(fullRecord(7))
        self.assertEqual(w.layout.slots, 9)
        w.write(fullRecord(8))
        self.assertEqual(w.layout.slots, 18)
        self.assertEqual(f.read(1), fullRecord(1))
        self.assertEqual(f.read(7), fullRecord(7))
        h = f.header()
        self.assertEqual((h["slots"], h["generation"], h["lastRequest"], h["flags"]),
                         (18, 2, 99.5, 0))
        self.assertEqual(sorted(os.listdir(self.dir)), ["beostat"])

    def test_mode0644UnderUmask(self):
        """
        The file is readable by everyone (0644) whatever the writer's umask,
        when it is made and after it grows.
        """
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)
        w = self.writer(slots=2)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)
        w.write(fullRecord(40))
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)


class ReopenTests(FileCase):
    """
    A restarted writer keeps what it can of an existing file and replaces
    what it cannot use.
    """

    def test_reopenKeepsRecords(self):
        """
        A writer opening a file of the same geometry returns its records
        (L{shm.ShmWriter.recovered}) and keeps them in the file.
        """
        first = self.writer()
        first.write(fullRecord(2))
        first.write(fullRecord(5))
        first.close()
        second = self.writer(open=False)
        recovered = second.open()
        self.assertEqual(recovered, [fullRecord(2), fullRecord(5)])
        self.assertEqual(second.recovered, recovered)
        second.write(fullRecord(6))
        self.assertEqual([r.node for r in self.file().records()], [2, 5, 6])
        self.assertEqual(self.file().header()["writerPid"], os.getpid())

    def test_reopenWithMoreSlots(self):
        """
        A writer asking for more slots than the file has keeps the records
        in a bigger file.
        """
        first = self.writer(slots=4)
        first.write(fullRecord(1))
        first.close()
        second = self.writer(slots=32, open=False)
        self.assertEqual(second.open(), [fullRecord(1)])
        f = self.file()
        self.assertEqual((f.layout.slots, f.read(1)), (32, fullRecord(1)))

    def test_otherGeometryReplaced(self):
        """
        A file made with another C{maxCpus} is replaced by a new, empty one
        of the writer's geometry.
        """
        first = self.writer(maxCpus=4)
        first.write(fullRecord(2))
        first.close()
        second = self.writer(maxCpus=8, open=False)
        self.assertEqual(second.open(), [])
        f = self.file()
        self.assertEqual((f.layout.maxCpus, list(f.records())), (8, []))

    def test_garbageFile(self):
        """
        L{shm.ShmFile} refuses a file that is not a beostat file with
        L{shm.LayoutError}: garbage, a short file, another version, a file
        shorter than its header says; a writer replaces such a file.
        """
        def check(data: bytes) -> None:
            with open(self.path, "wb") as f:
                f.write(data)
            self.assertRaises(shm.LayoutError, shm.ShmFile, self.path)

        check(os.urandom(8192))
        check(b"BEOSTAT\0")
        check(b"")
        w = self.writer(slots=4)
        w.close()
        with open(self.path, "rb") as f:
            good = f.read()
        check(good[:8] + struct.pack("<I", 2) + good[12:])
        check(good[:-1])
        check(good[:16] + struct.pack("<I", 12345) + good[20:])
        check(os.urandom(8192))
        self.assertEqual(self.writer(open=False).open(), [])
        self.assertEqual(self.file().layout.slots, 16)

    def test_missingFile(self):
        """
        A reader of a file that does not exist gets L{OSError}.
        """
        self.assertRaises(OSError, shm.ShmFile, self.path)

    def test_restartReplacesForReaders(self):
        """
        When a restarted writer replaces the file (more slots, or another
        geometry), a reader that had the old file open follows to the new
        one, as it does when the file grows.  (A writer that flagged only
        its own mappings would leave them reading the old file for ever.)
        """
        first = self.writer(slots=4)
        first.write(fullRecord(1))
        first.close()
        b = self.beostat()
        self.assertEqual(b.get_time(1), fullRecord(1).updated)
        second = self.writer(slots=32, open=False)
        second.open()
        second.write(fullRecord(20))
        self.assertEqual(b.get_time(20), fullRecord(20).updated)

    def test_restartWithOtherGeometryForReaders(self):
        """
        A reader that had the file open when a restarted writer replaced it
        with one of another record size reads the new file's records, from
        its first read on.

        (Fails with the current code: L{shm.ShmFile.read} takes the record
        size from C{self.layout} before C{consistent} re-opens the file, so
        its first read after the switch copies a record of the old size and
        C{parseRecord} raises C{struct.error}.)
        """
        first = self.writer(slots=8, maxCpus=4, maxInterfaces=2)
        first.write(fullRecord(1))
        first.close()
        f = self.file()
        self.assertEqual(f.read(1), fullRecord(1))
        second = self.writer(slots=8, maxCpus=8, maxInterfaces=4, open=False)
        self.assertEqual(second.open(), [])
        newer = fullRecord(1)
        newer.hostname = "after the restart"
        second.write(newer)
        self.assertEqual(f.read(1), newer)
        self.assertEqual(f.layout.maxCpus, 8)

    def test_deadWriterRecoveredByNextWrite(self):
        """
        A record left odd (its writer died in the middle of it, leaving
        half of it written) is not handed to readers, and the next write of
        that node makes it whole and readable again.
        """
        w = self.writer()
        w.write(fullRecord(3))
        dieMidRecord(self.path, 3)
        f = self.file()
        self.assertRaises(TimeoutError, f.consistent, 3, lambda mm, off: None, tries=50)
        newer = fullRecord(3)
        newer.hostname = "again"
        w.write(newer)
        self.assertEqual(f.read(3), newer)
        self.assertEqual(_seq(self.path, 3) % 2, 0)

    def test_reopenAfterWriterDiedMidRecord(self):
        """
        A writer restarted after its predecessor died in the middle of a
        record opens the file, keeps the other records, and its next write
        of that node makes it readable.  (Reading the old records through
        the seqlock alone would spin on the odd one and fail: recvstats
        could not start again.)
        """
        first = self.writer()
        first.write(fullRecord(2))
        first.write(fullRecord(3))
        dieMidRecord(self.path, 3)
        first.close()
        second = self.writer(open=False)
        recovered = second.open()
        self.assertIn(fullRecord(2), recovered)
        second.write(fullRecord(3))
        self.assertEqual(self.file().read(3), fullRecord(3))


class ReaderTests(FileCase):
    """
    L{Beostat}, the libbeostat calls, in libbeostat's units.
    """

    def setUp(self) -> None:
        super().setUp()
        self.w = self.writer(slots=16, maxCpus=8, maxInterfaces=4)
        self.w.write(fullRecord(3))
        self.b = self.beostat()

    def test_cpuPercent(self):
        """
        C{get_cpu_percent} is a fraction from 0 to 1: of the whole node by
        default, of one CPU when asked.  A CPU with no usage yet is
        L{NoData}; a CPU the file does not have is L{IndexError}.
        """
        self.assertEqual(self.b.get_cpu_percent(3), 0.375)
        self.assertEqual(self.b.get_cpu_percent(3, -1), 0.375)
        self.assertEqual(self.b.get_cpu_percent(3, 0), 0.5)
        self.assertEqual(self.b.get_cpu_percent(3, 2), 0.0)
        self.assertRaises(NoData, self.b.get_cpu_percent, 3, 1)
        self.assertRaises(IndexError, self.b.get_cpu_percent, 3, 3)

    def test_statCpu(self):
        """
        C{get_stat_cpu} gives tick counters in libbeostat's field order
        (user, system, nice, idle, then the later kernels' counters), for
        the node or for one CPU.
        """
        stat = self.b.get_stat_cpu(3)
        self.assertEqual(stat, reader.StatCpu(user=2**40 + 1, system=3, nice=2, idle=2**41,
                                              iowait=5, irq=6, softirq=7, steal=8))
        self.assertEqual(tuple(self.b.get_stat_cpu(3, 1)), (200, 60, 2, 700, 5, 1, 3, 1))
        self.assertRaises(IndexError, self.b.get_stat_cpu, 3, 3)

    def test_meminfo(self):
        """
        C{get_meminfo} is in bytes, C{used} being total minus free.
        """
        self.assertEqual(
            self.b.get_meminfo(3),
            MemInfo(mem=MemUsage(12 * 2**30, 4 * 2**30), swap=MemUsage(2**31, 2**31),
                    shared=0, buffers=2**28, cached=3 * 2**29, available=9 * 2**30))

    def test_loadavg(self):
        """
        C{get_loadavg} gives three floats and the running, total and last
        pid integers of C{/proc/loadavg}.
        """
        load = self.b.get_loadavg(3)
        self.assertEqual(load, LoadAvg((0.5, 0.25, 0.125), 3, 812, 4242))
        self.assertEqual([type(x) for x in load.load], [float] * 3)
        self.assertEqual([type(x) for x in load[1:]], [int] * 3)

    def test_netDevAndRate(self):
        """
        C{get_net_dev} lists the interfaces with receive and transmit
        counters; C{get_net_rate} is received plus sent bytes per second.
        """
        self.assertEqual(self.b.get_net_dev(3), [
            NetDev("eth0", NetStat(2**63, 2, 3, 4), NetStat(5, 6, 7, 8)),
            NetDev("ib0", NetStat(10, 20, 0, 0), NetStat(30, 40, 0, 1))])
        self.assertEqual(self.b.get_net_rate(3), 1250.0)

    def test_timeMhzStatfsState(self):
        """
        C{get_time} is recvstats' last update, seconds since the epoch;
        C{get_MHz}, C{get_cpu_count}, C{get_statfs} (and C{get_statfs_p})
        and C{get_state} read their parts of the record.
        """
        self.assertEqual(self.b.get_time(3), 1_700_000_123.25)
        self.assertIsInstance(self.b.get_time(3), float)
        self.assertEqual(self.b.get_MHz(3), 2400.5)
        self.assertEqual(self.b.get_cpu_count(3), 3)
        statfs = FileSystem(4096, 10_000_000, 4_000_000, 3_500_000, 655_360, 600_000)
        self.assertEqual(self.b.get_statfs(3), statfs)
        self.assertEqual(self.b.get_statfs_p(3), statfs)
        self.assertEqual(self.b.get_state(3), "up")
        self.w.setState(3, shm.DOWN)
        self.assertEqual(self.b.get_state(3), "down")

    def test_countIdleCpus(self):
        """
        C{count_idle_cpus_on_node} counts CPUs under the threshold; CPUs
        beyond the per-CPU entries count with the node's usage; a CPU with
        no usage yet counts only for a threshold above 1 (a huge threshold
        counts every CPU); a down node counts none.  C{count_idle_cpus}
        sums over the up nodes.
        """
        record = fullRecord(4)
        record.cpuCount = 5  # CPUs 3 and 4 count with the node's 0.375
        self.w.write(record)
        b = self.b
        self.assertEqual([b.count_idle_cpus_on_node(3, t) for t in (0.0, 0.1, 0.4, 0.6, 1e9)],
                         [0, 1, 1, 2, 3])
        self.assertEqual([b.count_idle_cpus_on_node(4, t) for t in (0.0, 0.1, 0.4, 0.6, 1e9)],
                         [0, 1, 3, 4, 5])
        self.assertEqual(b.count_idle_cpus(0.4), 4)
        self.assertEqual(b.count_idle_cpus(1e9), 8)
        self.w.setState(4, shm.DOWN)
        self.assertEqual(b.count_idle_cpus_on_node(4, 1e9), 0)
        self.assertEqual(b.count_idle_cpus(1e9), 3)
        self.assertRaises(NoData, b.count_idle_cpus_on_node, 5, 1e9)

    def test_lastMulticast(self):
        """
        C{get_last_multicast} is 0.0 until the writer records a request.
        """
        self.assertEqual(self.b.get_last_multicast(), 0.0)
        self.w.setLastRequest(1_700_000_000.5)
        self.assertEqual(self.b.get_last_multicast(), 1_700_000_000.5)

    def test_noDataForEmptyNode(self):
        """
        Every per-node call on a slot that was never written, or that was
        cleared, raises L{NoData}.
        """
        self.w.write(fullRecord(6))
        self.w.clear(6)
        for node in (5, 6):
            for call in (self.b.get_state, self.b.get_time, self.b.get_cpu_count,
                         self.b.get_cpu_percent, self.b.get_stat_cpu, self.b.get_meminfo,
                         self.b.get_loadavg, self.b.get_net_dev, self.b.get_net_rate,
                         self.b.get_MHz, self.b.get_statfs, self.b.record):
                self.assertRaises(NoData, call, node)
            self.assertRaises(NoData, self.b.get_cpu_percent, node, 0)
            self.assertRaises(NoData, self.b.get_stat_cpu, node, 0)
        self.assertEqual(self.b.nodes(), [3])

    def test_noDataForMissingParts(self):
        """
        A node whose record lacks a part (a gmond node without per-CPU
        figures, say) raises L{NoData} for the calls that need it and
        answers the others.
        """
        self.w.write(shm.NodeRecord(node=7, state=shm.UP, source=shm.GMOND, updated=5.0,
                                    load=Load(1.5, 1.0, 0.5, 1, 2, 3)))
        for call in (self.b.get_cpu_count, self.b.get_cpu_percent, self.b.get_stat_cpu,
                     self.b.get_meminfo, self.b.get_net_dev, self.b.get_net_rate,
                     self.b.get_MHz, self.b.get_statfs):
            self.assertRaises(NoData, call, 7)
        self.assertRaises(NoData, self.b.get_cpu_percent, 7, 0)
        self.assertEqual(self.b.get_time(7), 5.0)
        self.assertEqual(self.b.get_loadavg(7), LoadAvg((1.5, 1.0, 0.5), 1, 2, 3))

    def test_outOfRange(self):
        """
        Nodes the file has no slot for raise L{NoData} (L{IndexError} is
        for CPUs), whether below the master or beyond the slots.
        """
        for node in (-2, 15, 10_000):
            for call in (self.b.get_time, self.b.get_meminfo, self.b.get_cpu_percent,
                         self.b.get_net_dev, self.b.record):
                self.assertRaises(NoData, call, node)
            self.assertRaises(NoData, self.b.count_idle_cpus_on_node, node, 1.0)

    def test_followsGrowth(self):
        """
        A reader opened on the small file answers for nodes written after
        the file grew, and still for the old ones.
        """
        self.w.write(fullRecord(100))
        self.assertEqual(self.b.get_time(100), fullRecord(100).updated)
        self.assertEqual(self.b.get_time(3), fullRecord(3).updated)
        self.assertEqual(self.b.nodes(), [3, 100])


class ModuleFunctionTests(FileCase):
    """
    The module-level functions of L{sysmon.beostat.reader} read the default
    file.
    """

    def setUp(self) -> None:
        super().setUp()
        self.patch(shm, "defaultPath", lambda: self.path)
        self.patch(reader, "_default", None)
        self.addCleanup(lambda: reader._default and reader._default.close())
        self.w = self.writer()
        self.w.write(fullRecord(3))
        self.w.setLastRequest(42.5)

    def test_functions(self):
        """
        Every libbeostat call is a module-level function too, answering
        from L{shm.defaultPath}.
        """
        self.assertEqual(reader.get_time(3), fullRecord(3).updated)
        self.assertEqual(reader.get_cpu_percent(3), 0.375)
        self.assertEqual(reader.get_cpu_percent(3, 0), 0.5)
        self.assertEqual(reader.get_meminfo(3).mem, MemUsage(12 * 2**30, 4 * 2**30))
        self.assertEqual(reader.get_loadavg(3).load, (0.5, 0.25, 0.125))
        self.assertEqual(reader.get_net_rate(3), 1250.0)
        self.assertEqual(reader.get_net_dev(3)[1].name, "ib0")
        self.assertEqual(reader.get_MHz(3), 2400.5)
        self.assertEqual(reader.get_statfs(3).blockSize, 4096)
        self.assertEqual(reader.get_statfs_p(3).blockSize, 4096)
        self.assertEqual(reader.get_stat_cpu(3).idle, 2**41)
        self.assertEqual(reader.get_cpu_count(3), 3)
        self.assertEqual(reader.get_state(3), "up")
        self.assertEqual(reader.count_idle_cpus(1e9), 3)
        self.assertEqual(reader.count_idle_cpus_on_node(3, 0.1), 1)
        self.assertEqual(reader.get_last_multicast(), 42.5)
        self.assertEqual(reader.nodes(), [3])
        self.assertRaises(NoData, reader.get_meminfo, 4)
        self.assertEqual(reader._default.file.path, self.path)
        for name in ("get_time", "get_meminfo", "count_idle_cpus", "get_last_multicast"):
            self.assertIn(name, reader.__all__)
            self.assertEqual(getattr(reader, name).__doc__, getattr(Beostat, name).__doc__)


class DefaultPathTests(SynchronousTestCase):
    """
    L{shm.defaultPath}: where recvstats and readers look by default.
    """

    def test_defaultPath(self):
        """
        The default file is in C{/var/shm} where that exists (the
        original's place), else in C{/dev/shm}.
        """
        self.patch(os.path, "isdir", lambda p: p == "/var/shm")
        self.assertEqual(shm.defaultPath(), "/var/shm/beostat")
        self.patch(os.path, "isdir", lambda p: False)
        self.assertEqual(shm.defaultPath(), "/dev/shm/beostat")


class Worker:
    """
    C{shmworker.py MODE ...} in a child process: stdin and stdout are
    pipes, stderr goes to a file; stopped by pid when the test ends, even
    when it fails.

    @ivar process: the L{subprocess.Popen}.
    """

    def __init__(self, case: SynchronousTestCase, *args: str) -> None:
        self.log = os.path.abspath(case.mktemp()) + ".stderr"
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log, "wb") as err:
            self.process = subprocess.Popen([sys.executable, WORKER, *args], cwd=ROOT, env=env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=err, bufsize=0)
        self._buffer = b""
        case.addCleanup(self.stop)

    def stop(self) -> None:
        if self.process.poll() is None:
            # A stopped child would not act on SIGTERM before SIGCONT.
            os.kill(self.process.pid, signal.SIGCONT)
        stopProcess(self.process)
        self.process.stdin.close()
        self.process.stdout.close()

    def stderr(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]

    def send(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")

    def readLine(self, timeout: float = 60) -> str:
        """
        The child's next line of output.

        @raise AssertionError: none came in C{timeout} seconds, or the child
            exited first.
        """
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no output from {self.process.args[2:]} in {timeout}s:\n"
                                     f"{self.stderr()}")
            if select.select([fd], [], [], min(left, 1.0))[0]:
                data = os.read(fd, 65536)
                if not data:
                    self.process.wait(30)
                    raise AssertionError(
                        f"{self.process.args[2:]} exited ({self.process.returncode}):\n"
                        f"{self.stderr()}")
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def result(self, timeout: float = 60) -> dict:
        """
        The child's JSON report, once it has exited 0.
        """
        report = json.loads(self.readLine(timeout))
        self.process.wait(30)
        if self.process.returncode != 0:
            raise AssertionError(f"exited {self.process.returncode}:\n{self.stderr()}")
        return report


class ConcurrencyTests(FileCase):
    """
    Readers in separate processes never see a torn record while a writer
    keeps rewriting it.
    """

    def startWriter(self) -> tuple[shm.ShmWriter, int]:
        w = self.writer(slots=16, maxCpus=MAX_CPUS, maxInterfaces=MAX_INTERFACES)
        k = 1
        for node in HOT:
            w.write(makeRecord(node, k))
            k += 1
        return w, k

    def test_millionReadsNeverTorn(self):
        """
        A reader process making 1 000 000 reads (whole records with
        L{shm.ShmFile.read}, and single-field L{Beostat} calls) while this
        process rewrites the same four records as fast as it can never sees
        a torn record: every read matches one write exactly, and no node
        goes back in time.  The reads really overlapped the writes (many
        thousands of writes happened while it read, and its seqlock retried
        reads).
        """
        w, k = self.startWriter()
        worker = Worker(self, "hammer", self.path, str(READS), str(len(HOT)))
        writes = 0
        deadline = time.monotonic() + 300
        while worker.process.poll() is None and time.monotonic() < deadline:
            for _ in range(64):
                w.write(makeRecord(HOT[k % len(HOT)], k))
                k += 1
            writes += 64
        report = worker.result(timeout=10)
        self.assertEqual(report["reads"], READS)
        self.assertEqual((report["torn"], report["missing"], report["backwards"],
                          report["examples"]), (0, 0, 0, []), report)
        self.assertGreater(writes, 20_000)
        self.assertGreater(report["lastK"] - report["firstK"], 20_000, report)
        self.assertGreater(report["retries"], 0, report)

    def test_checksSeeTornCopies(self):
        """
        The control for L{test_millionReadsNeverTorn}: the same checks on
        records copied without the seqlock do find torn records, so a
        torn read would not go unnoticed.
        """
        w, k = self.startWriter()
        worker = Worker(self, "hammer", self.path, str(READS), str(len(HOT)), "raw")
        deadline = time.monotonic() + 60
        while worker.process.poll() is None and time.monotonic() < deadline:
            for _ in range(64):
                w.write(makeRecord(HOT[k % len(HOT)], k))
                k += 1
        report = worker.result(timeout=10)
        self.assertGreater(report["torn"], 0, report)

    def test_seqlockInvariants(self):
        """
        What a seqlock reader relies on, shown without depending on a
        reader's timing: a writer process stopped (SIGSTOP) at arbitrary
        points, thousands of times, never leaves a record's sequence
        counter lower than it was before, nor an even counter on a
        half-written record.

        (This catches a writer that stores into the mapping with
        C{struct.pack_into}, which first zeroes the bytes it is about to
        write: the counter drops to 0 -- even -- for a moment, and a record
        being packed reads as all zeros under it.)
        """
        worker = Worker(self, "churn", self.path)
        self.assertEqual(worker.readLine(), "ready")
        f = self.file()
        layout = f.layout
        pid = worker.process.pid
        samples = 0
        last = dict.fromkeys(HOT, 0)
        bad: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(bad) < 3:
            os.kill(pid, signal.SIGSTOP)
            _, status = os.waitpid(pid, os.WUNTRACED)
            self.assertTrue(os.WIFSTOPPED(status), status)
            mm = f.fresh()
            for node in HOT:
                offset = layout.recordOffset(node)
                seq = struct.unpack_from("<I", mm, offset)[0]
                if seq < last[node]:
                    bad.append(f"node {node}: counter {seq} after {last[node]}")
                last[node] = seq
                if seq & 1:
                    continue
                record = shm.parseRecord(mm[offset:offset + layout.recordSize], layout)
                if record != makeRecord(node, record.sequence):
                    bad.append(f"node {node}: counter {seq}, record {record!r}"[:300])
            samples += 1
            os.kill(pid, signal.SIGCONT)
            # Let it run on, so that the next stop lands somewhere else.
            time.sleep(0.0001)
        self.assertEqual(bad, [], f"after {samples} stops")
        self.assertGreater(samples, 1000)
        self.assertGreater(min(last.values()), 1000)


class GrowthTests(FileCase):
    """
    The file grows from 16 to 5 000 node slots while reader processes keep
    working.
    """

    def test_growUnderReaders(self):
        """
        A writer process (umask 077) starts a file of 16 slots and writes
        nodes up to 4998, one by one, while it keeps rewriting four hot
        nodes; the file grows several times.  Two reader processes opened
        on the 16-slot file read all the while: they never fail, never see
        a torn record, follow the file to each new size, see nodes beyond
        the first 16 slots while the writer works, never lose a node they
        have seen, and in the end read every node back (all 20 000 CPUs
        count as idle).  The file is 0644 at every size and no temporary
        file is left.
        """
        writer = Worker(self, "grow", self.path, str(LAST_NODE))
        self.assertEqual(writer.readLine(), "ready")
        readers = [Worker(self, "follow", self.path, str(LAST_NODE)) for _ in range(2)]
        for r in readers:
            self.assertEqual(r.readLine(), "ready")
        writer.send("go")
        wrote = writer.result(timeout=120)
        for r in readers:
            r.send("stop")
        reports = [r.result(timeout=120) for r in readers]

        self.assertEqual(wrote["slots"][0], 16)
        self.assertGreaterEqual(wrote["slots"][-1], 5000)
        self.assertGreaterEqual(len(wrote["slots"]), 5)
        self.assertEqual(set(wrote["modes"]), {0o644}, wrote)
        self.assertEqual(wrote["entries"], ["beostat"])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)
        self.assertEqual(self.file().layout.slots, wrote["slots"][-1])
        for report in reports:
            self.assertEqual(report["startSlots"], 16)
            self.assertEqual(report["finalSlots"], wrote["slots"][-1])
            self.assertEqual((report["torn"], report["backwards"], report["lost"],
                              report["missing"], report["examples"]), (0, 0, [], [], []), report)
            self.assertGreaterEqual(len(report["slotsSeen"]), 3, report)
            self.assertGreaterEqual(len(report["generations"]), 3, report)
            self.assertGreater(report["beyondStart"], 0, report)
            self.assertEqual(report["count"], (LAST_NODE + 2) * MAX_CPUS)
