"""
Tests for L{sysmon.beostat.procfs}: the C{/proc} parsers on real captures
(C{proc/this-machine/}), on synthetic trees (C{proc/make_fixtures.py}) and
on this machine's live C{/proc}; malformed files; and property tests: any
text gives a record or L{ProcfsError}, nothing else.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sysmon.beostat import procfs
from sysmon.beostat.procfs import (
    ProcfsError,
    parseCpuinfo,
    parseLoadavg,
    parseMeminfo,
    parseNetDev,
    parseStat,
    readSnapshot,
    statfs,
)
from sysmon.beostat.records import CpuInfo, CpuTicks, FileSystem, Interface, Load, Memory
from sysmon.testing import ProcTree

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "proc")
FILES = ("cpuinfo", "stat", "meminfo", "loadavg", "net/dev")


def loadMakeFixtures():
    """
    C{proc/make_fixtures.py}, imported from its path (C{proc/} is not a package).
    """
    path = os.path.join(FIXTURES, "make_fixtures.py")
    spec = importlib.util.spec_from_file_location("_beostat_make_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_fixtures = loadMakeFixtures()


def fixture(tree: str, name: str) -> str:
    """
    The text of one fixture file.
    """
    with open(os.path.join(FIXTURES, tree, name), encoding="utf-8") as f:
        return f.read()


def rawLine(text: str, start: str) -> list[str]:
    """
    The words of the first line of C{text} that starts with C{start}.
    """
    for line in text.splitlines():
        if line.startswith(start):
            return line.split()
    raise AssertionError(f"no line starts with {start!r}")


class FixtureFilesTests(SynchronousTestCase):
    """
    The checked-in synthetic trees are what C{make_fixtures.py} writes.
    """

    def test_upToDate(self):
        """
        Each tree holds exactly the files the script builds, with the same text.
        """
        built = make_fixtures.build()
        self.assertEqual(sorted(built), sorted(make_fixtures.TREES))
        for tree, files in built.items():
            root = os.path.join(FIXTURES, tree)
            onDisk = sorted(
                os.path.relpath(os.path.join(base, name), root)
                for base, _, names in os.walk(root) for name in names
            )
            self.assertEqual(onDisk, sorted(files), tree)
            for relative, text in files.items():
                with open(os.path.join(root, relative), encoding="utf-8", newline="") as f:
                    self.assertEqual(f.read(), text, f"{tree}/{relative}: run make_fixtures.py")


class ThisMachineTests(SynchronousTestCase):
    """
    The real captures of the machine the fixtures were made on
    (C{proc/this-machine/}: 2-CPU AMD EPYC VM, kernel 6.18).
    """

    tree = "this-machine"

    def test_cpuinfo(self):
        """
        Two processors at 2596.140 MHz, model "AMD EPYC".
        """
        text = fixture(self.tree, "cpuinfo")
        expected = sum(1 for line in text.splitlines() if line.startswith("processor\t:"))
        info = parseCpuinfo(text)
        self.assertEqual(info, CpuInfo(count=expected, mhz=2596.14, model="AMD EPYC"))
        self.assertEqual(info.count, 2)

    def test_stat(self):
        """
        The C{cpu}, C{cpu0} and C{cpu1} lines, first eight counters each.
        """
        text = fixture(self.tree, "stat")
        total, cpus = parseStat(text)
        self.assertEqual(total.astuple(), tuple(int(v) for v in rawLine(text, "cpu ")[1:9]))
        self.assertEqual(len(cpus), 2)
        for n, ticks in enumerate(cpus):
            self.assertEqual(ticks.astuple(),
                             tuple(int(v) for v in rawLine(text, f"cpu{n} ")[1:9]))
        self.assertEqual(cpus[0].user, 59103)
        self.assertEqual(total.steal, 674)
        self.assertEqual(cpus[1].idle, 335645)

    def test_meminfo(self):
        """
        The seven figures, from kB to bytes.
        """
        text = fixture(self.tree, "meminfo")

        def kB(key):
            return int(rawLine(text, key + ":")[1]) * 1024

        self.assertEqual(parseMeminfo(text), Memory(
            total=kB("MemTotal"), free=kB("MemFree"), available=kB("MemAvailable"),
            buffers=kB("Buffers"), cached=kB("Cached"), swapTotal=kB("SwapTotal"),
            swapFree=kB("SwapFree"),
        ))
        self.assertEqual(parseMeminfo(text).total, 24684084 * 1024)

    def test_loadavg(self):
        """
        C{0.08 0.34 0.66 1/82 28331}.
        """
        text = fixture(self.tree, "loadavg")
        one, five, fifteen, entities, last = text.split()
        running, total = entities.split("/")
        expected = Load(float(one), float(five), float(fifteen), int(running), int(total),
                        int(last))
        self.assertEqual(parseLoadavg(text), expected)
        self.assertEqual(expected, Load(0.08, 0.34, 0.66, 1, 82, 28331))

    def test_netDev(self):
        """
        lo, ifb0, ifb1, eth0, with columns 0-3 and 8-11.
        """
        text = fixture(self.tree, "net/dev")
        expected = []
        for line in text.splitlines()[2:]:
            name, numbers = line.split(":")
            values = [int(v) for v in numbers.split()]
            expected.append(Interface(name.strip(), *values[0:4], *values[8:12]))
        interfaces = parseNetDev(text)
        self.assertEqual(list(interfaces), expected)
        self.assertEqual([i.name for i in interfaces], ["lo", "ifb0", "ifb1", "eth0"])
        self.assertEqual(interfaces[0].rxBytes, 196508079750)

    def test_snapshot(self):
        """
        L{readSnapshot} on the tree: every part, no error.
        """
        snapshot = readSnapshot(os.path.join(FIXTURES, self.tree), rootfs=FIXTURES)
        self.assertEqual(snapshot.errors, ())
        self.assertEqual(snapshot.cpuInfo.count, 2)
        self.assertEqual(len(snapshot.cpus), 2)
        self.assertEqual(snapshot.load.lastPid, 28331)
        self.assertEqual(len(snapshot.interfaces), 4)
        self.assertIsInstance(snapshot.rootfs, FileSystem)


class SyntheticTreeTests(SynchronousTestCase):
    """
    The trees of C{make_fixtures.py}.
    """

    def snapshot(self, tree):
        return readSnapshot(os.path.join(FIXTURES, tree), rootfs=FIXTURES)

    def test_cpus256(self):
        """
        256 processors and 256 C{cpuN} lines, N in order; the C{cpu} line is
        their sum; the clock is the first CPU's.
        """
        snapshot = self.snapshot("cpus256")
        self.assertEqual(snapshot.errors, ())
        self.assertEqual(snapshot.cpuInfo,
                         CpuInfo(256, 3243.215, "AMD EPYC 7763 64-Core Processor"))
        self.assertEqual(len(snapshot.cpus), 256)
        for n in (0, 1, 100, 255):
            self.assertEqual(snapshot.cpus[n].astuple(),
                             tuple(make_fixtures.cpuTicks(n, 8)))
        total = CpuTicks()
        for ticks in snapshot.cpus:
            total += ticks
        self.assertEqual(snapshot.cpuTotal, total)

    def test_ifaces32(self):
        """
        32 interfaces in order, long names kept whole, counters glued to the
        name read right.
        """
        text = fixture("ifaces32", "net/dev")
        self.assertIn("enp129s0f1np1:", text)
        self.assertIn("  eno2:12345678 ", text)
        interfaces = self.snapshot("ifaces32").interfaces
        self.assertEqual(tuple(i.name for i in interfaces), make_fixtures.IFACE_NAMES)
        byName = {i.name: i for i in interfaces}
        counters = make_fixtures.netCounters(10)
        self.assertEqual(byName["enp129s0f1np1"].counters(),
                         tuple(counters[0:4] + counters[8:12]))
        self.assertGreater(byName["enp129s0f1np1"].rxBytes, 10**8)
        self.assertEqual(byName["eno2"].rxBytes, 12345678)
        self.assertEqual(len("vethabcdef12345"), 15)
        self.assertIn("vethabcdef12345", byName)

    def test_missing(self):
        """
        Absent files give L{None} parts and one error each; the files
        present are still parsed.
        """
        root = os.path.join(FIXTURES, "missing")
        snapshot = readSnapshot(root, rootfs=FIXTURES)
        self.assertEqual(snapshot.errors, (
            (os.path.join(root, "cpuinfo"), "No such file or directory"),
            (os.path.join(root, "stat"), "No such file or directory"),
            (os.path.join(root, "net/dev"), "No such file or directory"),
        ))
        self.assertIsNone(snapshot.cpuInfo)
        self.assertIsNone(snapshot.cpuTotal)
        self.assertIsNone(snapshot.cpus)
        self.assertIsNone(snapshot.interfaces)
        self.assertEqual(snapshot.load, Load(1.0, 0.5, 0.25, 1, 99, 4242))
        self.assertEqual(snapshot.memory.total, 1056555656 * 1024)
        self.assertIsNotNone(snapshot.rootfs)

    def test_oldKernel(self):
        """
        4-counter C{cpu} lines leave iowait and later at 0; C{MemAvailable}
        is estimated; the ARM C{cpuinfo} has no clock and names its model on
        C{Processor}.
        """
        snapshot = self.snapshot("old-kernel")
        self.assertEqual(snapshot.errors, ())
        self.assertEqual(snapshot.cpuTotal, CpuTicks(346912, 2578, 79134, 9035780))
        self.assertEqual(snapshot.cpus, (CpuTicks(123456, 789, 34567, 4567890),
                                         CpuTicks(223456, 1789, 44567, 4467890)))
        self.assertEqual(snapshot.memory, Memory(
            total=255480 * 1024, free=6004 * 1024, available=(6004 + 19056 + 148832) * 1024,
            buffers=19056 * 1024, cached=148832 * 1024, swapTotal=265032 * 1024,
            swapFree=264364 * 1024,
        ))
        self.assertEqual(snapshot.cpuInfo, CpuInfo(2, 0.0, "ARMv7 Processor rev 10 (v7l)"))
        self.assertEqual(snapshot.interfaces[1],
                         Interface("eth0", 987654321, 7654321, 3, 1, 123456789, 1234567, 0, 4))

    def test_extraFields(self):
        """
        Counters after the eighth, unknown keys and lines, and an appended
        column are ignored.
        """
        snapshot = self.snapshot("extra-fields")
        self.assertEqual(snapshot.errors, ())
        self.assertEqual(len(snapshot.cpus), 4)
        self.assertEqual(snapshot.cpus[3].astuple(), tuple(make_fixtures.cpuTicks(3, 8)))
        self.assertEqual(snapshot.memory, Memory(
            16315240 * 1024, 8123456 * 1024, 12345678 * 1024, 234567 * 1024,
            3456789 * 1024, 2097148 * 1024, 2097000 * 1024,
        ))
        self.assertEqual(snapshot.interfaces[0], Interface("lo", 5000, 50, 0, 0, 5000, 50, 0, 0))
        self.assertEqual(snapshot.cpuInfo.count, 4)
        self.assertEqual(snapshot.load, Load(0.25, 0.5, 0.75, 1, 123, 4567))

    def test_aarch64(self):
        """
        arm64: four processors, no clock, no model name.
        """
        snapshot = self.snapshot("aarch64")
        self.assertEqual(snapshot.errors, ())
        self.assertEqual(snapshot.cpuInfo, CpuInfo(4, 0.0, ""))
        self.assertEqual([i.name for i in snapshot.interfaces], ["lo", "eth0", "wlan0"])


class CpuinfoTests(SynchronousTestCase):
    """
    L{parseCpuinfo} on other architectures' formats and bad text.
    """

    def test_armUniprocessor(self):
        """
        A uniprocessor 32-bit ARM kernel has no C{processor} line: its
        C{Processor} line counts as one.
        """
        text = ("Processor\t: ARM926EJ-S rev 5 (v5l)\nBogoMIPS\t: 99.73\n"
                "Features\t: swp half thumb fastmult edsp java\nHardware\t: Atmel AT91SAM9\n")
        self.assertEqual(parseCpuinfo(text), CpuInfo(1, 0.0, "ARM926EJ-S rev 5 (v5l)"))

    def test_armModelName(self):
        """
        Newer 32-bit ARM kernels give C{model name} per processor.
        """
        text = "".join(f"processor\t: {i}\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n"
                       "BogoMIPS\t: 38.40\nCPU part\t: 0xd03\n\n" for i in range(4))
        self.assertEqual(parseCpuinfo(text), CpuInfo(4, 0.0, "ARMv7 Processor rev 4 (v7l)"))

    def test_s390(self):
        """
        s390: C{processor N:} lines count, C{cpu MHz dynamic} is the clock.
        """
        text = (
            "vendor_id       : IBM/S390\n# processors    : 2\nbogomips per cpu: 3241.00\n"
            "processor 0: version = FF,  identification = 0133E8,  machine = 2964\n"
            "processor 1: version = FF,  identification = 0133E8,  machine = 2964\n\n"
            "cpu number      : 0\ncpu MHz dynamic : 5000\ncpu MHz static  : 5000\n\n"
            "cpu number      : 1\ncpu MHz dynamic : 5000\ncpu MHz static  : 5000\n"
        )
        self.assertEqual(parseCpuinfo(text), CpuInfo(2, 5000.0, ""))
        self.assertEqual(parseCpuinfo("vendor_id : IBM/S390\n# processors    : 3\n"),
                         CpuInfo(3, 0.0, ""))

    def test_powerpc(self):
        """
        PowerPC: the model on C{cpu}, the clock on C{clock} with "MHz".
        """
        text = "".join(f"processor\t: {i}\ncpu\t\t: POWER9, altivec supported\n"
                       "clock\t\t: 2300.000000MHz\nrevision\t: 2.2 (pvr 004e 1202)\n\n"
                       for i in range(8))
        self.assertEqual(parseCpuinfo(text), CpuInfo(8, 2300.0, "POWER9, altivec supported"))

    def test_sparcAndAlpha(self):
        """
        No C{processor} lines: the count of active CPUs.
        """
        self.assertEqual(
            parseCpuinfo("cpu\t\t: TI UltraSparc IIi (Sabre)\nncpus probed\t: 4\n"
                         "ncpus active\t: 2\n"),
            CpuInfo(2, 0.0, "TI UltraSparc IIi (Sabre)"),
        )
        self.assertEqual(parseCpuinfo("cpu\t\t\t: Alpha\ncpus detected\t\t: 2\n"
                                      "cpus active\t\t: 2\n"), CpuInfo(2, 0.0, "Alpha"))

    def test_mipsAndRiscv(self):
        """
        MIPS names the model on C{cpu model}, RISC-V on C{uarch}.
        """
        self.assertEqual(parseCpuinfo("system type\t\t: MT7621\nprocessor\t\t: 0\n"
                                      "cpu model\t\t: MIPS 1004Kc V2.15\n"),
                         CpuInfo(1, 0.0, "MIPS 1004Kc V2.15"))
        self.assertEqual(parseCpuinfo("processor\t: 0\nhart\t\t: 0\nisa\t\t: rv64imafdc\n"
                                      "uarch\t\t: sifive,u74-mc\n"),
                         CpuInfo(1, 0.0, "sifive,u74-mc"))

    def test_noProcessor(self):
        """
        Text that lists no processor: L{ProcfsError} naming the file.
        """
        for text in ("", "\n\n", "vendor_id : GenuineIntel\n", "ncpus active : 0\n"):
            e = self.assertRaises(ProcfsError, parseCpuinfo, text)
            self.assertEqual(str(e), "/proc/cpuinfo: no processor listed")
            self.assertEqual(e.path, "/proc/cpuinfo")

    def test_badClock(self):
        """
        A C{cpu MHz} that is not a number: L{ProcfsError}.
        """
        for value in ("fast", "-1", "nan", "inf"):
            self.assertRaises(ProcfsError, parseCpuinfo,
                              f"processor\t: 0\ncpu MHz\t\t: {value}\n")


class StatTests(SynchronousTestCase):
    """
    L{parseStat} on other layouts and bad text.
    """

    def test_sevenCounters(self):
        """
        2.6.0 - 2.6.10 lines have 7 counters: steal is 0.
        """
        total, cpus = parseStat("cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6 7\nintr 5\n")
        self.assertEqual(total, CpuTicks(1, 2, 3, 4, 5, 6, 7, 0))
        self.assertEqual(cpus, (total,))

    def test_gaps(self):
        """
        Offline CPUs leave gaps in N: C{cpus[n]} stays CPU n, the gaps are
        zeros; lines out of order are put in order.
        """
        total, cpus = parseStat("cpu  9 9 9 9\ncpu3 3 3 3 3\ncpu0 1 1 1 1\n")
        self.assertEqual(cpus, (CpuTicks(1, 1, 1, 1), CpuTicks(), CpuTicks(),
                                CpuTicks(3, 3, 3, 3)))

    def test_noPerCpuLines(self):
        """
        Only the C{cpu} line (some 2.4 uniprocessor kernels): no per-CPU ticks.
        """
        self.assertEqual(parseStat("cpu  1 2 3 4\n"), (CpuTicks(1, 2, 3, 4), ()))

    def test_otherCpuLines(self):
        """
        Lines that start with "cpu" but are not C{cpu} or C{cpuN} are skipped.
        """
        self.assertEqual(parseStat("cpu  1 2 3 4\ncpufreq x\ncpu0x 1\n"),
                         (CpuTicks(1, 2, 3, 4), ()))

    def test_bad(self):
        """
        No C{cpu} line, too few or non-numeric counters, N twice or too
        big: L{ProcfsError}.
        """
        for text, message in [
            ("", "no cpu line"),
            ("cpu0 1 2 3 4\n", "no cpu line"),
            ("cpu  1 2 3\n", "cpu: expected at least 4 counters, got 3"),
            ("cpu  1 2 x 4\n", "cpu: not a counter: 'x'"),
            ("cpu  1 2 -3 4\n", "cpu: not a counter: '-3'"),
            ("cpu  1 2 3 4\ncpu  1 2 3 4\n", "two cpu lines"),
            ("cpu  1 2 3 4\ncpu1 1 2 3 4\ncpu1 1 2 3 4\n", "cpu1 listed twice"),
            ("cpu  1 2 3 4\ncpu65536 1 2 3 4\n", "cpu65536: CPU number out of range"),
            (f"cpu  1 2 3 {2**64}\n", "cpu: counter out of range"),
        ]:
            e = self.assertRaises(ProcfsError, parseStat, text)
            self.assertEqual(str(e), "/proc/stat: " + message)


class MeminfoTests(SynchronousTestCase):
    """
    L{parseMeminfo} details.
    """

    def test_minimal(self):
        """
        Only C{MemTotal}: the rest 0.
        """
        self.assertEqual(parseMeminfo("MemTotal: 4 kB\n"), Memory(total=4096))

    def test_firstWins(self):
        """
        A key given twice: the first value counts.
        """
        self.assertEqual(parseMeminfo("MemTotal: 4 kB\nMemTotal: 8 kB\n").total, 4096)

    def test_bad(self):
        """
        No C{MemTotal}, or a carried figure that is not a number of kB.
        """
        for text, message in [
            ("MemFree: 4 kB\n", "no MemTotal"),
            ("MemTotal: lots kB\n", "MemTotal: not a counter: 'lots'"),
            ("MemTotal: 4 MB\n", "MemTotal: expected a number of kB, got '4 MB'"),
            ("MemTotal:\n", "MemTotal: expected a number of kB, got ''"),
            (f"MemTotal: {2**60} kB\n", f"MemTotal: out of range: {2**60} kB"),
        ]:
            e = self.assertRaises(ProcfsError, parseMeminfo, text)
            self.assertEqual(str(e), "/proc/meminfo: " + message)


class LoadavgTests(SynchronousTestCase):
    """
    L{parseLoadavg} errors.
    """

    def test_bad(self):
        """
        Too few fields, or fields not in their format.
        """
        for text, message in [
            ("0.1 0.2\n", "expected 5 fields, got 2"),
            ("", "expected 5 fields, got 0"),
            ("0.1 0.2 0.3 4 5\n", "expected running/total, got '4'"),
            ("0.1 x 0.3 1/2 5\n", "5-minute load: not a number: 'x'"),
            ("0.1 0.2 nan 1/2 5\n", "15-minute load: not a number: 'nan'"),
            ("0.1 0.2 0.3 1/-2 5\n", "total: not a counter: '-2'"),
        ]:
            e = self.assertRaises(ProcfsError, parseLoadavg, text)
            self.assertEqual(str(e), "/proc/loadavg: " + message)

    def test_path(self):
        """
        The message names the path given.
        """
        e = self.assertRaises(ProcfsError, parseLoadavg, "1", "/srv/proc/loadavg")
        self.assertEqual(str(e), "/srv/proc/loadavg: expected 5 fields, got 1")
        self.assertEqual(e.reason, "expected 5 fields, got 1")


HEADER = make_fixtures.NET_HEADER


class NetDevTests(SynchronousTestCase):
    """
    L{parseNetDev} details.
    """

    def test_headerOnly(self):
        """
        No interface: an empty tuple.
        """
        self.assertEqual(parseNetDev(HEADER), ())

    def test_names(self):
        """
        A 15-byte name is kept whole (bytes, not characters, count); a name
        that is not UTF-8 keeps its bytes through C{surrogateescape}.
        """
        numbers = " 1" * 16 + "\n"
        self.assertEqual(parseNetDev(HEADER + "abcdefghijklmno:" + numbers)[0].name,
                         "abcdefghijklmno")
        self.assertRaises(ProcfsError, parseNetDev, HEADER + "abcdefghijklmn\u00e9:" + numbers)
        raw = (HEADER + "eth\xff0:" + numbers).encode("latin-1")
        name = parseNetDev(raw.decode("utf-8", "surrogateescape"))[0].name
        self.assertEqual(name.encode("utf-8", "surrogateescape"), b"eth\xff0")

    def test_bad(self):
        """
        Missing header, no colon, bad or long or repeated name, too few or
        bad numbers.
        """
        row = "  eth0:" + " 1" * 16 + "\n"
        for text, message in [
            ("", "expected two header lines"),
            (row * 2, "expected two header lines"),
            (HEADER + "eth0 1 2 3\n", "line 3: no 'name:'"),
            (HEADER + " :" + " 1" * 16 + "\n", "line 3: bad interface name ''"),
            (HEADER + "a b:" + " 1" * 16 + "\n", "line 3: bad interface name 'a b'"),
            (HEADER + "abcdefghijklmnop:" + " 1" * 16 + "\n",
             "line 3: interface name longer than 15 bytes: 'abcdefghijklmnop'"),
            (HEADER + row + row, "line 4: interface 'eth0' listed twice"),
            (HEADER + "  eth0:" + " 1" * 15 + "\n", "line 3: 'eth0': expected 16 numbers, got 15"),
            (HEADER + "  eth0:" + " 1" * 10 + " x" * 6 + "\n", "eth0: not a counter: 'x'"),
        ]:
            e = self.assertRaises(ProcfsError, parseNetDev, text)
            self.assertEqual(str(e), "/proc/net/dev: " + message)


class StatfsTests(SynchronousTestCase):
    """
    L{statfs}.
    """

    def test_values(self):
        """
        The fields of C{os.statvfs}, with C{f_frsize} as the block size.
        """
        path = self.mktemp()
        os.mkdir(path)
        result = statfs(path)
        expected = os.statvfs(path)
        self.assertEqual(result.blockSize, expected.f_frsize)
        self.assertEqual(result.blocks, expected.f_blocks)
        self.assertEqual(result.files, expected.f_files)
        self.assertGreater(result.blocks, 0)
        self.assertLessEqual(result.available, result.blocks)

    def test_missing(self):
        """
        A path that is not there: L{OSError}.
        """
        self.assertRaises(OSError, statfs, self.mktemp())


#: One malformed text per file, and the reason L{readSnapshot} gives for it.
MALFORMED = [
    ("cpuinfo", "vendor_id : GenuineIntel\n", "no processor listed"),
    ("cpuinfo", "processor : 0\ncpu MHz : ???\n", "cpu MHz: not a number: '???'"),
    ("stat", "intr 1 2 3\n", "no cpu line"),
    ("stat", "cpu  1 2 3 4\ncpu0 1 2\n", "cpu0: expected at least 4 counters, got 2"),
    ("meminfo", "MemFree: 1 kB\n", "no MemTotal"),
    ("meminfo", "MemTotal: -5 kB\n", "MemTotal: not a counter: '-5'"),
    ("loadavg", "0.00 0.01\n", "expected 5 fields, got 2"),
    ("loadavg", "\0\0\0\0\0\0\0\0\0\0", "expected 5 fields, got 1"),
    ("net/dev", "eth0: 1 2 3\n", "expected two header lines"),
    ("net/dev", HEADER + "  eth0: 1 2 3\n", "line 3: 'eth0': expected 16 numbers, got 3"),
]

PARSERS = {
    "cpuinfo": parseCpuinfo,
    "stat": parseStat,
    "meminfo": parseMeminfo,
    "loadavg": parseLoadavg,
    "net/dev": parseNetDev,
}


class ReadSnapshotTests(SynchronousTestCase):
    """
    L{readSnapshot} fails per file.
    """

    def setUp(self):
        self.root = self.mktemp()
        self.tree = ProcTree.make(self.root)

    def good(self):
        return readSnapshot(self.root, rootfs=self.root)

    def test_good(self):
        """
        A whole L{ProcTree}: every part, no error.
        """
        snapshot = self.good()
        self.assertEqual(snapshot.errors, ())
        self.assertEqual(snapshot.cpuInfo, CpuInfo(2, 2400.0, "Fixture CPU @ 2.40GHz"))
        self.assertEqual(snapshot.cpus[1], CpuTicks(120, 2, 40, 990, 3, 0, 2, 0))
        self.assertEqual(snapshot.interfaces[1].rxErrors, 1)
        self.assertEqual(snapshot.interfaces[1].txDrops, 2)

    def assertOnlyPartFails(self, name, reason):
        """
        L{readSnapshot} on the tree gives L{None} for C{name}'s part (only)
        and one error for it with C{reason}.
        """
        good = self.good()
        snapshot = readSnapshot(self.root, rootfs=self.root)
        self.assertEqual(snapshot.errors, ((os.path.join(self.root, name), reason),))
        attributes = {
            "cpuinfo": ("cpuInfo",), "stat": ("cpuTotal", "cpus"), "meminfo": ("memory",),
            "loadavg": ("load",), "net/dev": ("interfaces",),
        }
        for part, names in attributes.items():
            for attribute in names:
                if part == name:
                    self.assertIsNone(getattr(snapshot, attribute), attribute)
                else:
                    self.assertEqual(getattr(snapshot, attribute), getattr(good, attribute),
                                     attribute)
        self.assertIsNotNone(snapshot.rootfs)

    def test_malformed(self):
        """
        Each malformed file: its parser raises L{ProcfsError}, and
        L{readSnapshot} loses that part only.
        """
        for name, text, reason in MALFORMED:
            e = self.assertRaises(ProcfsError, PARSERS[name], text)
            self.assertEqual(e.reason, reason)
            path = os.path.join(self.root, name)
            os.rename(path, path + ".good")
            try:
                with open(path, "w") as f:
                    f.write(text)
                self.assertOnlyPartFails(name, reason)
            finally:
                os.replace(path + ".good", path)

    def test_unreadable(self):
        """
        A file that is missing, or a directory: that part only.
        """
        for name in FILES:
            path = os.path.join(self.root, name)
            os.rename(path, path + ".good")
            try:
                self.assertOnlyPartFails(name, "No such file or directory")
                os.mkdir(path)
                self.assertOnlyPartFails(name, "Is a directory")
                os.rmdir(path)
            finally:
                os.replace(path + ".good", path)

    def test_rootfs(self):
        """
        A root file system that cannot be reached: C{rootfs} L{None}, the rest there.
        """
        missing = os.path.join(self.root, "nowhere")
        snapshot = readSnapshot(self.root, rootfs=missing)
        self.assertEqual(snapshot.errors, ((missing, "No such file or directory"),))
        self.assertIsNone(snapshot.rootfs)
        self.assertIsNotNone(snapshot.cpus)

    def test_withoutCpuinfo(self):
        """
        C{cpuInfo=False}: C{cpuinfo} is not read, and that is no error.
        """
        os.unlink(os.path.join(self.root, "cpuinfo"))
        snapshot = readSnapshot(self.root, rootfs=self.root, cpuInfo=False)
        self.assertEqual(snapshot.errors, ())
        self.assertIsNone(snapshot.cpuInfo)
        self.assertEqual(len(snapshot.cpus), 2)

    def test_unexpectedError(self):
        """
        Should a parser raise anything else (a bug), that part is lost and
        reported; readSnapshot still returns.
        """
        def broken(text, path):
            raise ZeroDivisionError("oops")

        self.patch(procfs, "parseLoadavg", broken)
        snapshot = self.good()
        self.assertIsNone(snapshot.load)
        self.assertEqual(snapshot.errors, ((os.path.join(self.root, "loadavg"),
                                            "unexpected error: ZeroDivisionError('oops')"),))
        self.assertIsNotNone(snapshot.memory)


class LiveTests(SynchronousTestCase):
    """
    This machine's own C{/proc}.
    """

    def test_live(self):
        """
        No error; as many CPUs as C{os.cpu_count()}; C{MemTotal} within 1%
        of physical pages times page size; an C{lo} interface; a root file
        system with blocks.
        """
        if not os.path.exists("/proc/stat"):
            raise SkipTest("no /proc here")
        snapshot = readSnapshot()
        self.assertEqual(snapshot.errors, ())
        self.assertEqual(snapshot.cpuInfo.count, os.cpu_count())
        self.assertEqual(len(snapshot.cpus), os.cpu_count())
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        self.assertLess(abs(snapshot.memory.total - physical), physical / 100)
        self.assertLessEqual(snapshot.memory.available, snapshot.memory.total)
        self.assertIn("lo", [i.name for i in snapshot.interfaces])
        self.assertGreater(snapshot.rootfs.blocks, 0)
        self.assertGreater(snapshot.cpuTotal.idle, 0)
        self.assertGreaterEqual(snapshot.load.total, snapshot.load.running)


def sample(tree, name):
    """
    A fixture file's text, or "" when the tree has none.
    """
    try:
        return fixture(tree, name)
    except FileNotFoundError:
        return ""


#: Valid texts for the mutation tests (small trees only, for speed).
SAMPLES = [
    (name, sample(tree, name))
    for tree in ("this-machine", "old-kernel", "extra-fields", "aarch64")
    for name in FILES
]

#: Pieces that random text is made of, to get past the parsers' first checks.
TOKENS = [
    "cpu", "cpu0", "cpu65535", "cpu1", "processor", "Processor", "model name", "cpu MHz",
    "clock", "MemTotal", "MemFree", "MemAvailable", "kB", "MB", ":", "|", "/", "0", "1",
    "-1", "4294967296", "18446744073709551615", "18446744073709551616", "1e308", "nan",
    "0.5", "eth0", "abcdefghijklmnop", "\t", " ", "\n", "\udcff", "\u00e9", "\u0663", "+1",
    "1_000", "# processors", "ncpus active", "cpus active", "uarch", "9" * 5000,
]


class PropertyTests(SynchronousTestCase):
    """
    Whatever the text, the parsers return a record or raise L{ProcfsError}.
    """

    def check(self, text):
        for name, parse in PARSERS.items():
            try:
                parse(text)
            except ProcfsError as e:
                self.assertTrue(str(e).startswith("/proc/"), str(e))

    @settings(max_examples=300, deadline=None)
    @given(st.text())
    def test_randomText(self, text):
        """
        Any text.
        """
        self.check(text)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=20).map(" ".join),
                    max_size=12).map("\n".join))
    def test_randomLines(self, text):
        """
        Lines of words the parsers look for.
        """
        self.check(text)
        self.check(HEADER + text)

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(SAMPLES),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3) | st.integers(0, 40),
                           st.sampled_from(TOKENS) | st.text(max_size=3)), max_size=8),
        st.none() | st.integers(0, 10**6),
    )
    def test_mutatedFiles(self, sample, edits, cut):
        """
        Real files with pieces deleted, inserted or replaced, and cut short.
        """
        name, text = sample
        for at, removed, inserted in edits:
            at %= len(text) + 1
            text = text[:at] + inserted + text[at + removed:]
        if cut is not None:
            text = text[: cut % (len(text) + 1)]
        try:
            PARSERS[name](text)
        except ProcfsError:
            pass
        self.check(text)

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(SAMPLES),
        st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 10**4),
                           st.sampled_from(["delete", "replace", "insert", "cut"]),
                           st.sampled_from(TOKENS)), min_size=1, max_size=6),
    )
    def test_mutatedWords(self, sample, edits):
        """
        Real files with words deleted, replaced or inserted, and lines cut
        short after a word.
        """
        name, text = sample
        lines = text.split("\n")
        for line, word, action, token in edits:
            line %= len(lines)
            words = lines[line].split(" ")
            word %= len(words)
            if action == "delete":
                del words[word]
            elif action == "replace":
                words[word] = token
            elif action == "insert":
                words.insert(word, token)
            else:
                del words[word + 1:]
            lines[line] = " ".join(words)
        self.check("\n".join(lines))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.binary(max_size=300), min_size=5, max_size=5))
    def test_randomFiles(self, contents):
        """
        readSnapshot on files of random bytes returns, with an error for
        each part it could not parse.
        """
        root = self.mktemp()
        for name, data in zip(FILES, contents):
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        snapshot = readSnapshot(root, rootfs=root)
        self.assertIsNotNone(snapshot.rootfs)
        failed = {path for path, _ in snapshot.errors}
        self.assertEqual(snapshot.cpuInfo is None, os.path.join(root, "cpuinfo") in failed)
        self.assertEqual(snapshot.memory is None, os.path.join(root, "meminfo") in failed)
        shutil.rmtree(root)
