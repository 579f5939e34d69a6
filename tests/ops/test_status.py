"""
L{sysmon.ops.status}: the status snapshot read from real daemon services,
built by their plugins' own C{Options} and C{makeService}, driven through
their real entry points (datagrams into their protocols, RPC calls over
UDP, real processes), and the finished dumps read from a dump directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import tempfile
import time
from typing import Any, Callable

from twisted.internet import defer, protocol, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sysmon.beostat import procfs
from sysmon.beostat import tap as beotap
from sysmon.beostat import wire as beowire
from sysmon.beostat.records import Load
from sysmon.beostat.send import StatusBuilder
from sysmon.netdump import tap as netdumptap
from sysmon.netdump import wire as ndwire
from sysmon.netdump.sim import Memory, SimClient
from sysmon.netdump.store import PageWriter
from sysmon.ops import status
from sysmon.ops.daemons import Daemons
from sysmon.rpc import message as rpcmessage
from sysmon.rpc.xdr import Packer
from sysmon.statd import nsm
from sysmon.statd import tap as statdtap
from sysmon.testing import FakeReactor, ProcTree, processAlive

PAGE = 4096
_REQUEST = struct.Struct(">QIIII")


def emptyFile(case: Any) -> str:
    path = os.path.abspath(case.mktemp())
    with open(path, "w"):
        pass
    return path


# -- netdump on a fake reactor, with emulated clients -------------------------------


class NetdumpBench:
    """
    The netdump service of C{twistd netdump} on a L{FakeReactor}; emulated
    clients (L{SimClient}) answer its requests by function calls.  A client
    made with C{holdAt} sends whole pages only below that page frame and
    only the first fragment of the others, so its dump stays in progress
    with exactly C{holdAt} pages done (it is never silent, so it is never
    given up).
    """

    def __init__(self, case: Any, reactor: FakeReactor | None = None) -> None:
        self.reactor = reactor or FakeReactor()
        self.root = os.path.abspath(case.mktemp())
        options = netdumptap.Options()
        options.parseOptions(["--config", emptyFile(case), "--dumpdir", self.root,
                              "--port", "0", "--addr", "127.0.0.1", "--secure", "0",
                              "--timeout", "1", "--retries", "20"])
        self.service = netdumptap.makeService(options, self.reactor)
        # The fake reactor has no threads: write pages and fsync at once.
        self.service.server.writer = PageWriter(self.reactor, threaded=False)
        self.service.server.deferToThread = lambda f, *a: defer.maybeDeferred(f, *a)
        self.service.startService()
        case.addCleanup(self.service.stopService)
        self.transport = self.reactor.udp[0].transport
        self.clients: dict[str, tuple[SimClient, int | None]] = {}

    def crash(self, ip: str, pages: int, holdAt: int | None = None,
              log: bytes = b"Kernel panic - not syncing: test\n") -> SimClient:
        """
        Client C{ip} with C{pages} pages of memory sends its console log
        and announces its crash.
        """
        sim = SimClient(Memory(pages, PAGE, (), 0.0, seed=len(self.clients) + 1))
        self.clients[ip] = (sim, holdAt)
        for chunk in sim.logChunks(log):
            self.service.protocol.datagramReceived(chunk, (ip, 6665))
        self.service.protocol.datagramReceived(sim.start(), (ip, 6666))
        return sim

    def pump(self) -> None:
        while batch := self.transport.pop():
            for data, (ip, port) in batch:
                sim, holdAt = self.clients[ip]
                replies, logs = sim.handle(data)
                command, pfn = _REQUEST.unpack(data[:_REQUEST.size])[2:4]
                if holdAt is not None and command == ndwire.COMM.SEND_MEM and pfn >= holdAt:
                    replies = replies[:1]
                for datagram in logs:
                    self.service.protocol.datagramReceived(datagram, (ip, 6665))
                for datagram in replies:
                    self.service.protocol.datagramReceived(datagram, (ip, 6666))

    def run(self, until: Callable[[], bool], limit: float = 60.0) -> None:
        elapsed = 0.0
        while not until():
            if elapsed > limit:
                raise AssertionError(f"not reached in {limit} clock seconds")
            self.pump()
            self.reactor.advance(0.25)
            elapsed += 0.25


class NetdumpStatusTests(SynchronousTestCase):
    """
    The C{dumps} part of the snapshot.
    """

    def setUp(self) -> None:
        self.bench = NetdumpBench(self)
        self.daemons = Daemons(netdump=self.bench.service)

    def dumps(self) -> dict[str, Any]:
        return status.snapshot(self.daemons)["dumps"]

    def test_inProgress(self) -> None:
        """
        A dump in progress is listed with its client, its crash directory,
        its state, how many of its pages are done and how many there are,
        the bytes written, when it started and its log's URL; it is not
        listed among the finished dumps although its directory already
        has a dump.json.
        """
        bench = self.bench
        bench.reactor.advance(1000)
        bench.crash("10.0.0.7", pages=256, holdAt=96)
        server = bench.service.server
        bench.run(lambda: "10.0.0.7" in server.sessions
                  and server.sessions["10.0.0.7"].journal is not None
                  and server.sessions["10.0.0.7"].journal.done == 96)
        session = server.sessions["10.0.0.7"]
        directory = os.path.basename(session.directory)
        self.assertTrue(directory.startswith("10.0.0.7-"))
        dumps = self.dumps()
        self.assertEqual(dumps["active"], [{
            "client": "10.0.0.7", "port": 6666, "directory": directory, "state": "memory",
            "pages_done": 96, "pages_total": 256, "bytes": 96 * PAGE, "started": 1000.0,
            "log": "/dumps/" + directory.replace(":", "%3A") + "/log",
        }])
        self.assertEqual([d["directory"] for d in status.finishedDumps(bench.root).dumps],
                         [directory])
        self.assertEqual((dumps["finished"], dumps["finished_count"]), ([], 0))
        json.dumps(status.snapshot(self.daemons), allow_nan=False)

    def test_finished(self) -> None:
        """
        A finished dump is no longer active; it is listed as finished with
        its client, end time, outcome, the size of its vmcore, its pages
        and its log's URL, from its dump.json.
        """
        bench = self.bench
        bench.crash("10.0.0.8", pages=64)
        server = bench.service.server
        bench.run(lambda: bench.clients["10.0.0.8"][0].rebooted)
        dumps = self.dumps()
        self.assertEqual(dumps["active"], [])
        [finished] = dumps["finished"]
        [name] = [n for n in os.listdir(bench.root) if n.startswith("10.0.0.8-")]
        with open(os.path.join(bench.root, name, "dump.json")) as f:
            info = json.load(f)
        self.assertEqual(finished, {
            "directory": name, "client": "10.0.0.8", "time": info["end_time"],
            "started": info["start_time"], "outcome": "complete", "complete": True,
            "reason": "", "size": os.path.getsize(os.path.join(bench.root, name, "vmcore")),
            "pages": 64, "pages_total": 64, "log": status.logURL(name),
        })
        self.assertGreater(finished["size"], 64 * PAGE)
        self.assertEqual(dumps["finished_count"], 1)
        self.assertNotIn("10.0.0.8", server.sessions)


class FinishedDumpsTests(SynchronousTestCase):
    """
    L{status.finishedDumps} reads crash directories from disk.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)

    def crashDir(self, name: str, info: Any, mtime: float, log: bool = True,
                 vmcore: int | None = None) -> str:
        path = os.path.join(self.root, name)
        os.mkdir(path)
        with open(os.path.join(path, "dump.json"), "w") as f:
            f.write(info if isinstance(info, str) else json.dumps(info))
        if log:
            with open(os.path.join(path, "log"), "w") as f:
                f.write("oops\n")
        if vmcore is not None:
            with open(os.path.join(path, "vmcore-incomplete"), "wb") as f:
                f.truncate(vmcore)
        os.utime(os.path.join(path, "dump.json"), (mtime, mtime))
        return path

    def test_newestFirstAtMostLimit(self) -> None:
        """
        The newest dumps come first (by when their dump.json was written),
        at most C{limit} of them; C{count} tells how many there are.
        """
        for i in range(60):
            self.crashDir(f"10.0.0.{i}-2026-01-01-00:{i:02d}",
                          {"client": {"ip": f"10.0.0.{i}"}, "outcome": "complete",
                           "end_time": 5000.0 + i}, mtime=1000 + i)
        finished = status.finishedDumps(self.root, limit=50)
        self.assertEqual(finished.count, 60)
        self.assertEqual([d["client"] for d in finished.dumps],
                         [f"10.0.0.{i}" for i in range(59, 9, -1)])
        self.assertEqual(finished.dumps[0]["time"], 5059.0)
        self.assertEqual(len(status.finishedDumps(self.root).dumps), status.FINISHED_LIMIT)

    def test_onlyCrashDirectories(self) -> None:
        """
        Only directories directly in the dump directory that hold a
        dump.json count: not console/, magic/ or scripts/, not files, not
        symbolic links to directories, not directories without dump.json.
        """
        real = self.crashDir("10.0.0.1-2026-01-01-00:00", {"outcome": "complete"}, 1000)
        for name in ("console", "magic", "scripts", "10.0.0.2-2026-01-01-00:00"):
            os.mkdir(os.path.join(self.root, name))
        with open(os.path.join(self.root, "console", "dump.json"), "w") as f:
            f.write("{}")
        with open(os.path.join(self.root, "10.0.0.3-file"), "w") as f:
            f.write("{}")
        os.symlink(real, os.path.join(self.root, "10.0.0.4-2026-01-01-00:00"))
        self.assertEqual([d["directory"] for d in status.finishedDumps(self.root).dumps],
                         ["10.0.0.1-2026-01-01-00:00"])

    def test_incompleteAndDamaged(self) -> None:
        """
        An incomplete dump says so, with the size of its vmcore-incomplete
        and its reason; a dump without a log has no log URL; an unreadable
        dump.json gives outcome C{unknown} and the client from the
        directory's name; a missing dump directory gives nothing.
        """
        self.crashDir("10.0.0.5-2026-01-01-00:00",
                      {"client": {"ip": "10.0.0.5"}, "outcome": "incomplete",
                       "reason": "client gone", "start_time": 10.0, "end_time": 20.0,
                       "ram_pages_received": 3, "nr_pages": 8}, 1000, log=False, vmcore=32768)
        self.crashDir("10.0.0.6-2026-01-01-00:01.1", "{not json", 999)
        first, second = status.finishedDumps(self.root).dumps
        self.assertEqual(first, {
            "directory": "10.0.0.5-2026-01-01-00:00", "client": "10.0.0.5", "time": 20.0,
            "started": 10.0, "outcome": "incomplete", "complete": False,
            "reason": "client gone", "size": 32768, "pages": 3, "pages_total": 8,
            "log": None})
        self.assertEqual((second["client"], second["outcome"], second["complete"],
                          second["time"], second["size"]),
                         ("10.0.0.6", "unknown", False, 999, 0))
        self.assertEqual(status.finishedDumps(os.path.join(self.root, "missing")),
                         status.Finished([], 0))

    def test_logURL(self) -> None:
        """
        Log URLs quote the directory name as one path segment.
        """
        self.assertEqual(status.logURL("10.0.0.1-2026-01-01-00:00.1"),
                         "/dumps/10.0.0.1-2026-01-01-00%3A00.1/log")
        self.assertEqual(status.logURL("a/b c"), "/dumps/a%2Fb%20c/log")


# -- recvstats on a fake reactor --------------------------------------------------


class RecvstatsStatusTests(SynchronousTestCase):
    """
    The C{nodes} part of the snapshot, from sendstats reports given to the
    recvstats service's socket protocol.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.wall = [1_700_000_000.0]
        options = beotap.RecvstatsOptions()
        options.parseOptions(["--no-multicast", "--bind", "127.0.0.1", "--port", "0",
                              "--shm", os.path.abspath(self.mktemp()),
                              "--master-interval", "0", "--request-interval", "0"])
        self.service = beotap.makeRecvstatsService(options, self.reactor)
        self.service.wallClock = lambda: self.wall[0]
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.daemons = Daemons(recvstats=self.service)
        self.proc = ProcTree.make(os.path.abspath(self.mktemp()))

    def report(self, builder: StatusBuilder, address: str = "10.1.0.3") -> None:
        snapshot = procfs.readSnapshot(self.proc.root, "/")
        message = builder.build(snapshot, self.wall[0])
        self.service.protocol.datagramReceived(beowire.encode(message), (address, 3040))

    def nodes(self) -> list[dict[str, Any]]:
        return status.snapshot(self.daemons, now=lambda: self.wall[0])["nodes"]

    def test_node(self) -> None:
        """
        A node that reported twice shows its number, host name, address,
        state, age, interval, CPU use in percent (from the tick deltas) and
        CPU count, memory used (total less available) and total, load
        averages, receive and transmit rates over all interfaces, and
        where its number came from.
        """
        builder = StatusBuilder(3, b"B" * 16, "n3.example", 5.0)
        self.proc.meminfo(MemTotal=1000000, MemAvailable=250000)
        self.proc.loadavg(1.5, 1.0, 0.5)
        self.report(builder)
        self.proc.stat(cpus=((150, 0, 50, 1050, 5, 0, 1, 0, 0, 0),
                             (170, 2, 40, 1040, 3, 0, 2, 0, 0, 0)))
        self.proc.netdev({
            "lo": {"rx_bytes": 1500, "rx_packets": 15, "tx_bytes": 1500, "tx_packets": 15},
            "eth0": {"rx_bytes": 123456789 + 5000, "rx_packets": 98770,
                     "tx_bytes": 23456789 + 2500, "tx_packets": 45680},
        })
        self.wall[0] += 5
        self.report(builder)
        self.wall[0] += 1.25
        self.assertEqual(self.nodes(), [{
            "node": 3, "name": "n3.example", "address": "10.1.0.3", "state": "up",
            "age": 1.2, "interval": 5.0, "cpu": 50.0, "cpus": 2,
            "memory": {"used": 750000 * 1024, "total": 1000000 * 1024},
            "load": [1.5, 1.0, 0.5], "net": {"rx": 1100.0, "tx": 600.0},
            "origin": "sender", "source": "sendstats",
        }])

    def test_firstReport(self) -> None:
        """
        After one report there is no CPU use and no network rate yet (they
        need two): those are null, the rest is there; a host name-less node
        is named by its number; the memory used of a kernel without
        MemAvailable is what it does not use for free, buffers and cache.
        """
        self.proc.meminfo(MemTotal=1000, MemFree=100, Buffers=50, Cached=250,
                          MemAvailable=None)
        self.report(StatusBuilder(4, b"C" * 16, "", 5.0))
        [node] = self.nodes()
        self.assertEqual((node["node"], node["name"], node["cpu"], node["net"]),
                         (4, "node 4", None, None))
        self.assertEqual(node["memory"], {"used": 600 * 1024, "total": 1000 * 1024})

    def test_staleThenDown(self) -> None:
        """
        A node silent for more than two of its intervals is C{stale} while
        recvstats still counts it up, and C{down} once recvstats marks it
        down (after four).
        """
        self.report(StatusBuilder(5, b"D" * 16, "n5", 1.0))
        self.reactor.advance(1)
        self.assertEqual(self.nodes()[0]["state"], "up")
        self.wall[0] += 2.5
        self.reactor.advance(1)
        self.assertEqual([n["state"] for n in self.nodes()], ["stale"])
        self.wall[0] += 2.0
        self.reactor.advance(1)
        [node] = self.nodes()
        self.assertEqual((node["state"], node["age"]), ("down", 4.5))

    def test_notANumber(self) -> None:
        """
        Figures in a node's record that are not finite numbers (NaN,
        infinity) are null, so that the snapshot stays valid JSON.  (The
        decoders refuse such loads today; the page must not depend on it.)
        """
        self.report(StatusBuilder(6, b"E" * 16, "n6", 5.0))
        record = self.service.controller.nodes[6].record
        record.load = Load(float("nan"), float("inf"), 0.5)
        record.cpuUsage = float("nan")
        record.rates = (float("inf"), 2.0, 0.0, 0.0)
        [node] = self.nodes()
        self.assertEqual((node["load"], node["cpu"], node["net"]),
                         ([None, None, 0.5], None, {"rx": None, "tx": 2.0}))
        json.dumps(status.snapshot(self.daemons), allow_nan=False)

    def test_sortedByNumber(self) -> None:
        """
        Nodes are listed by number.
        """
        for number in (12, 2, 7):
            self.report(StatusBuilder(number, bytes([number]) * 16, f"n{number}", 5.0))
        self.assertEqual([n["node"] for n in self.nodes()], [2, 7, 12])


# -- statd and keepalive on the real reactor ------------------------------------------


class _RPC(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: list[defer.Deferred[bytes]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.waiting:
            self.waiting.pop(0).callback(data)


class StatdStatusTests(TestCase):
    """
    The C{statd} part of the snapshot, after SM_MON calls over UDP.
    """

    timeout = 30

    def setUp(self) -> defer.Deferred[None]:
        from twisted.internet import reactor

        self.reactor = reactor
        options = statdtap.Options()
        options.parseOptions(["--port", "0", "--addr", "127.0.0.1", "--no-notify",
                              "--state-file", os.path.abspath(self.mktemp()),
                              "--name", "server.example"])
        self.service = statdtap.makeService(options, reactor)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.rpc = _RPC()
        port = reactor.listenUDP(0, self.rpc, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return task.deferLater(reactor, 0.05, lambda: None)

    def mon(self, host: bytes, my: bytes, proc: int = 16) -> defer.Deferred[bytes]:
        args = nsm.Mon(nsm.MonId(host, nsm.MyId(my, 100021, 4, proc)), b"P" * 16)
        call = rpcmessage.encodeCall(len(self.rpc.waiting) + 1, nsm.PROG, nsm.VERS, nsm.MON,
                                     args.pack(Packer()).bytes())
        d: defer.Deferred[bytes] = defer.Deferred()
        self.rpc.waiting.append(d)
        self.rpc.transport.write(call, ("127.0.0.1", self.service.udpPort))
        return d.addTimeout(10, self.reactor)

    @defer.inlineCallbacks
    def test_monitoredHosts(self) -> Any:
        """
        statd's part names our state number and each monitored host with
        the callbacks lockd asked for, whether it is to be notified and its
        last known state.
        """
        yield self.mon(b"client2", b"server")
        yield self.mon(b"client1", b"server", proc=24)
        yield self.mon(b"client1", b"server")
        part = status.snapshot(Daemons(statd=self.service))["statd"]
        self.assertEqual(part, {"state": 1, "hosts": [
            {"name": "client1", "monitored": True, "state": None, "notify_pending": False,
             "callbacks": [{"my_name": "server", "prog": 100021, "vers": 4, "proc": 16},
                           {"my_name": "server", "prog": 100021, "vers": 4, "proc": 24}]},
            {"name": "client2", "monitored": True, "state": None, "notify_pending": False,
             "callbacks": [{"my_name": "server", "prog": 100021, "vers": 4, "proc": 16}]},
        ]})

    def test_notStarted(self) -> None:
        """
        Before statd opened its database there is no state and no host.
        """
        options = statdtap.Options()
        options.parseOptions(["--state-file", os.path.abspath(self.mktemp())])
        part = status.snapshot(Daemons(statd=statdtap.makeService(options)))["statd"]
        self.assertEqual(part, {"state": None, "hosts": []})


class KeepaliveStatusTests(TestCase):
    """
    The C{keepalive} part of the snapshot, from a real supervisor running a
    real process.
    """

    timeout = 60

    def setUp(self) -> None:
        from sysmon.keepalive import tap as katap
        from twisted.internet import reactor

        # The control socket's path must stay short: not under _trial_temp.
        self.root = tempfile.mkdtemp(prefix="ops", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.root, True)
        options = katap.Options()
        options.parseOptions(["--table", os.path.join(self.root, "table"),
                              "--control", os.path.join(self.root, "ctl"),
                              "--log-dir", os.path.join(self.root, "log"),
                              "--script-dir", os.path.join(self.root, "scripts")])
        self.service = katap.makeService(options, reactor)
        self.service.privilegedStartService()
        self.service.startService()
        self.pids: set[int] = set()
        self.addCleanup(self.killAll)
        self.addCleanup(self.service.stopService)
        self.daemons = Daemons(keepalive=self.service)

    def killAll(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def processes(self) -> list[dict[str, Any]]:
        part = status.snapshot(self.daemons)["keepalive"]
        for p in part["processes"]:
            if p["pid"]:
                self.pids.add(p["pid"])
        return part["processes"]

    @defer.inlineCallbacks
    def test_processes(self) -> Any:
        """
        Each registered process is listed with its slot, program, pid,
        state and restarts; when it dies and is restarted, its new pid, the
        restart and how it ended show.
        """
        config = os.path.join(self.root, "sleep.cfg")
        marker = str(20_000_000 + os.getpid())
        with open(config, "w") as f:
            f.write(f"command = /bin/sleep\nargs = {marker}\nrespawn-time = 0\n")
        supervisor = self.daemons.supervisor()
        [slot] = yield supervisor.register(config)
        [process] = self.processes()
        first = process["pid"]
        self.assertTrue(processAlive(first))
        self.assertEqual(process, {
            "slot": slot, "name": "sleep", "path": "/bin/sleep", "args": [marker],
            "pid": first, "state": "ok", "restarts": 0, "group": None, "last_exit": ""})
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while not (self.processes()[0]["restarts"] == 1 and self.processes()[0]["pid"]):
            if time.monotonic() > deadline:
                self.fail(f"not restarted: {self.processes()}")
            yield task.deferLater(self.daemonsReactor(), 0.05, lambda: None)
        [process] = self.processes()
        self.assertNotEqual(process["pid"], first)
        self.assertEqual((process["state"], process["last_exit"]),
                         ("ok", "was killed by SIGKILL"))

    def daemonsReactor(self) -> Any:
        from twisted.internet import reactor

        return reactor


# -- the rest --------------------------------------------------------------------


class SnapshotTests(SynchronousTestCase):
    """
    The snapshot as a whole.
    """

    def test_nothingEnabled(self) -> None:
        """
        With no daemon enabled, every daemon's part is null and C{enabled}
        says each is off; C{generated} is the clock's time; it is JSON.
        """
        snap = status.snapshot(Daemons(), now=lambda: 1234.5)
        self.assertEqual(snap, {
            "generated": 1234.5,
            "enabled": {name: False for name in status.DAEMON_NAMES},
            "nodes": None, "dumps": None, "statd": None, "keepalive": None,
            "watchdog": None, "sendstats": None,
        })
        json.dumps(snap, allow_nan=False)

    def test_enabledNotStarted(self) -> None:
        """
        Daemons that are enabled but not started yet (before the reactor
        runs) are listed as enabled with empty parts; the watchdog's and
        sendstats' parts give their rounds, feeding and no-action mode, and
        their interval and masters.
        """
        from sysmon.keepalive import tap as katap
        from sysmon.watchdog import tap as wdtap

        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        recv = beotap.RecvstatsOptions()
        recv.parseOptions(["--no-multicast", "--shm", os.path.join(root, "shm")])
        send = beotap.SendstatsOptions()
        send.parseOptions(["--rate", "7", "--master", "10.0.0.1", "--master", "10.0.0.2:4000"])
        watchdog = wdtap.Options()
        watchdog.parseOptions(["-q", "-c", emptyFile(self)])
        keepalive = katap.Options()
        keepalive.parseOptions(["--table", os.path.join(root, "t"),
                                "--control", os.path.join(root, "c")])
        reactor = FakeReactor()
        daemons = Daemons(
            recvstats=beotap.makeRecvstatsService(recv, reactor),
            sendstats=beotap.makeSendstatsService(send, reactor),
            watchdog=wdtap.makeService(watchdog, reactor),
            keepalive=katap.makeService(keepalive, reactor),
        )
        snap = status.snapshot(daemons)
        self.assertEqual(snap["enabled"], {"netdump": False, "statd": False, "recvstats": True,
                                           "sendstats": True, "watchdog": True,
                                           "keepalive": True})
        self.assertEqual((snap["nodes"], snap["keepalive"]), ([], {"processes": []}))
        self.assertEqual(snap["watchdog"], {"rounds": 0, "feeding": True, "no_action": True})
        self.assertEqual(snap["sendstats"], {"interval": 7.0,
                                             "masters": ["10.0.0.1:3040", "10.0.0.2:4000"]})
        json.dumps(snap, allow_nan=False)
