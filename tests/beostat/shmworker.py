"""
A helper program for the shared-memory tests in L{tests.beostat.test_shm}:
the readers (and, for the growth test, the writer) that must run as real,
separate processes.  It imports nothing but L{sysmon.beostat.shm},
L{sysmon.beostat.reader} and L{sysmon.beostat.records}, as a reader
program would.

Every record the tests write is L{makeRecord}C{(node, k)}: each of its
fields is derived from the node number and one counter C{k}, so a reader
that finds a record which differs from C{makeRecord(node, k)} for the C{k}
in its C{sequence} field has seen a torn record.

Modes (C{python shmworker.py MODE ...}); each prints one JSON line of
results on stdout at the end and exits 0, or dies with a traceback:

  - C{hammer PATH READS NODES [raw]}: C{READS} reads of nodes
    C{0..NODES-1}, a mix of whole-record reads (L{ShmFile.read}) and
    single-field L{Beostat} calls, each checked.  With C{raw}, whole
    records are copied without the seqlock (the control that shows the
    checks can see a torn record); it then stops at 50 torn records.
  - C{churn PATH}: a writer that rewrites nodes C{0..3} of a new file
    (C{k} after C{k}) until it is killed; prints C{ready} first.
  - C{grow PATH LAST}: the writer of the growth test: umask 077, a file of
    16 slots, nodes C{-1..3} written, C{ready} printed; after a line on
    stdin, nodes C{4..LAST} written one by one (the file grows) while the
    hot nodes C{0..3} keep being rewritten.
  - C{follow PATH LAST}: a reader of the growth test: prints C{ready}
    once it has the file open, reads continuously until a line arrives on
    stdin, then checks every node C{-1..LAST}.
"""

from __future__ import annotations

import functools
import json
import os
import random
import select
import sys
import time

from sysmon.beostat import reader, shm
from sysmon.beostat.records import CpuTicks, FileSystem, Interface, Load, Memory

#: Per-record limits of the files these tests make.
MAX_CPUS = 4
MAX_INTERFACES = 2
#: Nodes the growth test's writer keeps rewriting while it adds others.
HOT = (0, 1, 2, 3)
#: The counter of a node that is written once in the growth test.
FIXED_BASE = 1_000_000


def makeRecord(node: int, k: int, cpus: int = MAX_CPUS,
               interfaces: int = MAX_INTERFACES) -> shm.NodeRecord:
    """
    The record of C{node} for counter C{k} (C{k >= 1}): every field is
    derived from C{k} (and C{node}), in values that the file stores
    exactly (the float32 fields get multiples of 1/256 below 2**16).
    """
    small = k % 1024
    return shm.NodeRecord(
        node=node, state=shm.UP, source=shm.SENDSTATS, interval=1.0,
        updated=float(k), firstSeen=1.0, senderTime=k + 0.5, address="10.0.0.1",
        bootId=k.to_bytes(16, "big"), hostname=f"n{node}-{k}", model=f"model {k}",
        sequence=k, packets=k + 1, lost=node + 1, cpuCount=cpus,
        mhz=float(k % 4096), cpuUsage=(k % 256) / 256,
        ticks=CpuTicks(*(k + j for j in range(8))),
        memory=Memory(8 * k, 3 * k, 5 * k, k, 2 * k, 7 * k, 4 * k),
        load=Load(small + 0.25, small + 0.5, small + 0.75, k, k + 1, k + 2),
        rates=(float(k), 2.0 * k, 3.0 * k, 4.0 * k),
        rootfs=FileSystem(4096, 10 * k, 5 * k, 4 * k, 3 * k, 2 * k),
        cpuUsages=[((k + i) % 256) / 256 for i in range(cpus)],
        cpuTicks=[k + 10 * i + j for i in range(cpus) for j in range(8)],
        interfaceCount=interfaces,
        interfaces=[Interface(f"e{i}k{k % 1000}", *(k + 10 * i + j for j in range(8)))
                    for i in range(interfaces)],
        origin=node % 4,
    )


#: L{makeRecord} for checks: a reader reads each version of a record
#: several times.  (The records it returns must not be changed.)
expected = functools.lru_cache(maxsize=256)(makeRecord)


class Checker:
    """
    Checks what a reader got against L{makeRecord}, per node.

    @ivar torn: reads that matched no single C{k}.
    @ivar missing: reads (among C{torn}) that raised L{reader.NoData} or
        L{IndexError} for a part that the writer always writes.
    @ivar backwards: reads of a node whose C{k} was older than one read
        before (a reader must never go back in time).
    @ivar firstK: the smallest C{k} seen.
    @ivar lastK: the largest C{k} seen.
    @ivar examples: the first few bad reads, for the report.
    """

    def __init__(self) -> None:
        self.torn = 0
        self.missing = 0
        self.backwards = 0
        self.firstK: int | None = None
        self.lastK = 0
        self.latest: dict[int, int] = {}
        self.examples: list[str] = []

    def seen(self, node: int, k: int) -> None:
        if k < self.latest.get(node, 0):
            self.backwards += 1
            self.bad(f"node {node}: k {k} after {self.latest[node]}")
        else:
            self.latest[node] = k
        if self.firstK is None or k < self.firstK:
            self.firstK = k
        self.lastK = max(self.lastK, k)

    def bad(self, what: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(what)

    def check(self, node: int, k: int, ok: bool, what: object) -> None:
        """
        Count one read: C{ok} says whether all of it belongs to C{k}.
        """
        if not ok:
            self.torn += 1
            self.bad(f"node {node}: {what!r}"[:400])
            return
        self.seen(node, k)

    def record(self, record: shm.NodeRecord) -> None:
        self.check(record.node, record.sequence,
                   record == expected(record.node, record.sequence), record)


def _counting(file: shm.ShmFile) -> list[int]:
    """
    Count the calls of the read functions that C{file.consistent} runs:
    calls beyond one per read are retries after a write overlapped.
    """
    calls = [0]
    original = file.consistent

    def consistent(node, read, tries=100000):
        def counted(mm, offset):
            calls[0] += 1
            return read(mm, offset)
        return original(node, counted, tries)

    file.consistent = consistent  # type: ignore[method-assign]
    return calls


def hammer(path: str, reads: int, nodes: int, raw: bool = False) -> dict:
    """
    C{reads} checked reads of nodes C{0..nodes-1} while a writer rewrites
    them.
    """
    b = reader.Beostat(path)
    f = b.file
    calls = _counting(f)
    c = Checker()
    layout = f.layout
    size = layout.recordSize

    def meminfo(n):
        m = b.get_meminfo(n)
        k = m.mem.free // 3
        c.check(n, k, m == reader.MemInfo(reader.MemUsage(5 * k, 3 * k),
                                          reader.MemUsage(3 * k, 4 * k), 0, k, 2 * k, 5 * k), m)

    def loadavg(n):
        a = b.get_loadavg(n)
        k = a.num_active_procs
        s = k % 1024
        c.check(n, k, a == reader.LoadAvg((s + 0.25, s + 0.5, s + 0.75), k, k + 1, k + 2), a)

    def statCpu(n):
        t = b.get_stat_cpu(n)
        k = t.user
        c.check(n, k, t == reader.StatCpu(k, k + 2, k + 1, *(k + j for j in range(3, 8))), t)

    def statCpuOne(n):
        cpu = n % MAX_CPUS
        t = b.get_stat_cpu(n, cpu)
        k = t.user - 10 * cpu
        c.check(n, k, t == reader.StatCpu(*(k + 10 * cpu + j for j in (0, 2, 1, 3, 4, 5, 6, 7))),
                t)

    def netDev(n):
        devs = b.get_net_dev(n)
        k = devs[0].recv.bytes
        want = [reader.NetDev(f"e{i}k{k % 1000}",
                              reader.NetStat(*(k + 10 * i + j for j in range(4))),
                              reader.NetStat(*(k + 10 * i + j for j in range(4, 8))))
                for i in range(MAX_INTERFACES)]
        c.check(n, k, devs == want, devs)

    def statfs(n):
        s = b.get_statfs(n)
        k = s.freeFiles // 2
        c.check(n, k, s == FileSystem(4096, 10 * k, 5 * k, 4 * k, 3 * k, 2 * k), s)

    def netRate(n):
        # rx + tx = 3k: half of a torn pair shows as a sum that 3 does not divide
        # (two times in three).
        rate = b.get_net_rate(n)
        k = int(rate) // 3
        c.check(n, k, rate == 3.0 * k, rate)

    def cpuPercent(n):
        usage = b.get_cpu_percent(n, n % MAX_CPUS)
        c.check(n, c.latest.get(n, 0), 0.0 <= usage < 1.0 and usage * 256 == int(usage * 256),
                usage)

    def whole(n):
        c.record(f.read(n))

    def failed(n, operation, e):
        # A node the writer always keeps whole has no part missing and
        # always has its CPUs and interfaces: anything else is a torn read.
        c.torn += 1
        c.missing += 1
        c.bad(f"node {n}: {operation.__name__}: {e!r}")

    def rawWhole(n):
        offset = f.layout.recordOffset(n)
        c.record(shm.parseRecord(f.fresh()[offset:offset + size], layout))

    if raw:
        operations = [rawWhole]
    else:
        operations = [whole, meminfo, loadavg, statCpu, netRate, cpuPercent,
                      whole, meminfo, loadavg, statCpuOne, netDev, statfs]
    started = time.monotonic()
    count = len(operations)
    done = 0
    for i in range(reads):
        operation = operations[i % count]
        node = (i // count) % nodes
        try:
            operation(node)
        except (reader.NoData, IndexError) as e:
            failed(node, operation, e)
        done += 1
        if raw and c.torn >= 50:
            break
    elapsed = time.monotonic() - started
    b.close()
    return {"reads": done, "retries": calls[0] - (0 if raw else done), "torn": c.torn,
            "missing": c.missing, "backwards": c.backwards, "firstK": c.firstK, "lastK": c.lastK,
            "examples": c.examples, "seconds": round(elapsed, 2)}


def _once(node: int) -> int:
    """
    The counter of a node that the growth test's writer writes only once.
    """
    return 1 if node == shm.FIRST_NODE else FIXED_BASE + node


def _lineWaiting() -> bool:
    return bool(select.select([sys.stdin], [], [], 0)[0])


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def churn(path: str) -> None:
    """
    Rewrite nodes C{0..3} of a new file, C{k} after C{k}, until killed.
    """
    w = shm.ShmWriter(path, slots=16, maxCpus=MAX_CPUS, maxInterfaces=MAX_INTERFACES)
    w.open()
    k = 1
    for node in HOT:
        w.write(makeRecord(node, k))
        k += 1
    _say("ready")
    while True:
        w.write(makeRecord(HOT[k % len(HOT)], k))
        k += 1


def grow(path: str, last: int) -> dict:
    """
    The growth test's writer: see the module docstring.
    """
    os.umask(0o077)
    w = shm.ShmWriter(path, slots=16, maxCpus=MAX_CPUS, maxInterfaces=MAX_INTERFACES)
    w.open()
    k = 1
    for node in (-1, *HOT):
        w.write(makeRecord(node, k))
        k += 1
    modes = [os.stat(path).st_mode & 0o777]
    slots = [w.layout.slots]
    _say("ready")
    sys.stdin.readline()
    writes = 0
    for node in range(HOT[-1] + 1, last + 1):
        w.write(makeRecord(node, _once(node)))
        w.write(makeRecord(HOT[node % len(HOT)], k))
        k += 1
        writes += 2
        if w.layout.slots != slots[-1]:
            slots.append(w.layout.slots)
            modes.append(os.stat(path).st_mode & 0o777)
            # Give the readers time to work on each size of the file.
            until = time.monotonic() + 0.15
            while time.monotonic() < until:
                w.write(makeRecord(HOT[k % len(HOT)], k))
                k += 1
                writes += 1
    w.close()
    return {"slots": slots, "modes": modes, "writes": writes,
            "entries": sorted(os.listdir(os.path.dirname(path)))}


def follow(path: str, last: int) -> dict:
    """
    A reader of the growth test: see the module docstring.
    """
    b = reader.Beostat(path)
    f = b.file
    c = Checker()
    startSlots = f.layout.slots
    _say("ready")
    seen: set[int] = set()
    lost: list[int] = []
    generations = {f.header()["generation"]}
    slotsSeen = {startSlots}
    beyondStart = 0
    iterations = 0
    scan = shm.FIRST_NODE
    rng = random.Random(os.getpid())

    def check(node: int) -> None:
        nonlocal beyondStart
        try:
            record = b.record(node)
        except reader.NoData:
            if node in seen:
                lost.append(node)
            return
        if node in HOT:
            c.record(record)
        else:
            c.check(node, record.sequence, record == makeRecord(node, _once(node)), record)
        if node not in seen:
            seen.add(node)
            if node - shm.FIRST_NODE >= startSlots:
                beyondStart += 1

    while True:
        iterations += 1
        if iterations % 64 == 0:
            if _lineWaiting():
                break
            header = f.header()
            generations.add(header["generation"])
        nodes = f.nodes()
        slotsSeen.add(len(nodes))
        check(HOT[iterations % len(HOT)])
        check(rng.choice(nodes))
        check(scan)
        scan = scan + 1 if scan + 1 < nodes.stop else shm.FIRST_NODE
        if seen:
            old = rng.choice(tuple(seen)) if iterations % 16 == 0 else min(seen)
            check(old)
        # A single-field call, as a scheduler would make.
        node = HOT[iterations % len(HOT)]
        m = b.get_meminfo(node)
        c.check(node, m.mem.free // 3, m.mem.used == 5 * (m.mem.free // 3), m)
    duringRun = len(seen)
    missing = []
    for node in range(shm.FIRST_NODE, last + 1):
        if node in HOT:
            continue
        try:
            if b.record(node) != makeRecord(node, _once(node)):
                missing.append(node)
        except reader.NoData:
            missing.append(node)
    for node in HOT:
        c.record(b.record(node))
    result = {"iterations": iterations, "startSlots": startSlots,
              "slotsSeen": sorted(slotsSeen), "generations": sorted(generations),
              "seenDuringRun": duringRun, "beyondStart": beyondStart, "lost": lost[:20],
              "torn": c.torn, "backwards": c.backwards, "examples": c.examples,
              "missing": missing[:20], "finalSlots": f.layout.slots,
              "count": b.count_idle_cpus(2.0)}
    b.close()
    return result


def main(argv: list[str]) -> None:
    mode, path, *rest = argv
    if mode == "hammer":
        result = hammer(path, int(rest[0]), int(rest[1]), raw=rest[2:] == ["raw"])
    elif mode == "churn":
        churn(path)
        return
    elif mode == "grow":
        result = grow(path, int(rest[0]))
    elif mode == "follow":
        result = follow(path, int(rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    _say(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
