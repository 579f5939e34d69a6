"""
Tests for L{sysmon.ops.metrics}: real daemon services, built by their
plugins' C{Options} and C{makeService}, driven through their real entry
points, scraped with C{prometheus_client}'s text exposition and parsed
back.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from typing import Any, Callable

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sysmon.beostat import procfs, wire
from sysmon.beostat import tap as beostatTap
from sysmon.beostat.send import StatusBuilder
from sysmon.keepalive import tap as keepaliveTap
from sysmon.keepalive.policy import State
from sysmon.netdump import tap as netdumpTap
from sysmon.netdump.store import PageWriter
from sysmon.ops.daemons import Daemons
from sysmon.ops.metrics import makeRegistry
from sysmon.rpc import message as m
from sysmon.rpc.xdr import Packer
from sysmon.statd import nsm
from sysmon.statd import tap as statdTap
from sysmon.testing import FakeReactor, ProcTree, processAlive, writeScript
from sysmon.watchdog import tap as watchdogTap
from tests.beostat import gmondcap
from tests.netdump.harness import makeSim

BOOT = b"B" * 16


def scrape(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    The registry's text exposition, parsed back: (sample name, sorted
    labels) -> value.
    """
    text = generate_latest(registry).decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(registry: Any, name: str, **labels: str) -> float | None:
    """
    One sample's value from a fresh scrape, L{None} when it is absent.
    """
    return scrape(registry).get((name, tuple(sorted(labels.items()))))


def families(registry: Any) -> dict[str, str]:
    """
    Metric family name -> type, from a fresh scrape.
    """
    text = generate_latest(registry).decode("utf-8")
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def mon(name: bytes, my: bytes = b"me") -> bytes:
    """
    SM_MON arguments for C{name}, with lockd's callback.
    """
    return nsm.Mon(nsm.MonId(name, nsm.MyId(my, 100021, 3, 16)), b"P" * 16).pack(
        Packer()).bytes()


class RegistryTests(SynchronousTestCase):
    """
    The registry itself.
    """

    def test_ownRegistryPerDaemon(self):
        """
        Each call makes a registry of its own, not the global one; with no
        daemon enabled it has no sysmon metric, with sendstats alone only
        sendstats' metric.
        """
        empty = makeRegistry(Daemons())
        self.assertIsNot(empty, REGISTRY)
        self.assertEqual([n for n in families(empty) if n.startswith("sysmon_")], [])
        proc = ProcTree.make(self.mktemp())
        options = beostatTap.SendstatsOptions()
        options.parseOptions(["--proc", proc.root, "--master", "127.0.0.1:3040"])
        service = beostatTap.makeSendstatsService(options, FakeReactor())
        daemons = Daemons(sendstats=service)
        first, second = makeRegistry(daemons), makeRegistry(daemons)
        self.assertIsNot(first, second)
        self.assertEqual(families(first), {"sysmon_sendstats_reports": "counter"})
        self.assertEqual(families(second), {"sysmon_sendstats_reports": "counter"})


class NetdumpMetricsTests(SynchronousTestCase):
    """
    netdump's metrics follow real dumps from emulated clients.
    """

    def setUp(self):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        conf = os.path.join(root, "netdump.conf")
        open(conf, "w").close()
        options = netdumpTap.Options()
        options.parseOptions(["--config", conf, "--dumpdir", os.path.join(root, "dumps"),
                              "--port", "0", "--secure", "0", "--window", "8",
                              "--timeout", "0.5", "--retries", "4"])
        self.reactor = FakeReactor()
        self.service = netdumpTap.makeService(options, self.reactor)
        server = self.service.server
        # Disk writes in this thread (a fake reactor has no thread pool).
        server.writer = PageWriter(self.reactor, threaded=False)
        server.deferToThread = lambda f, *a: defer.maybeDeferred(f, *a)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.transport = self.reactor.udp[0].transport
        self.protocol = self.service.protocol
        self.registry = makeRegistry(Daemons(netdump=self.service))

    def drive(self, ip: str, sim: Any, until: Callable[[], bool],
            alive: Callable[[], bool] = lambda: True) -> None:
        """
        Carry the server's requests to C{sim} (client C{ip}) and its
        answers back, advancing the clock, until C{until()}; the client
        announces its crash every second until it is acknowledged.
        """
        elapsed, nextStart = 0.0, 0.0
        while not until():
            if elapsed >= nextStart and not sim.acked and alive():
                self.protocol.datagramReceived(sim.start(), (ip, 6666))
                nextStart += 1.0
            while not until():
                batch = self.transport.pop()
                if not batch:
                    break
                for data, (host, port) in batch:
                    if host != ip or not alive():
                        continue
                    replies, logs = sim.handle(data)
                    for chunk in logs:
                        self.protocol.datagramReceived(chunk, (ip, 6664))
                    for reply in replies:
                        self.protocol.datagramReceived(reply, (ip, 6666))
            if until():
                return
            self.assertLess(elapsed, 300, "the condition was not reached")
            self.reactor.advance(0.25)
            elapsed += 0.25

    def test_dumps(self):
        """
        A dump in progress shows in the gauge; a complete one counts as
        completed with its pages and bytes (zero pages included); a client
        that goes silent mid-dump counts as incomplete, with only the pages
        it sent.
        """
        r = self.registry
        for name in ("sysmon_netdump_dumps_in_progress", "sysmon_netdump_dumps_completed_total",
                     "sysmon_netdump_dumps_incomplete_total",
                     "sysmon_netdump_received_bytes_total",
                     "sysmon_netdump_received_pages_total"):
            self.assertEqual(value(r, name), 0, name)
        server = self.service.server
        good = makeSim(memory=2 * 2**20)
        self.drive("10.1.0.1", good, lambda: good.servedCount > 20)
        self.assertEqual(value(r, "sysmon_netdump_dumps_in_progress"), 1)
        self.drive("10.1.0.1", good, lambda: good.rebooted)
        pages = good.memory.ramPages()
        self.assertEqual(value(r, "sysmon_netdump_dumps_in_progress"), 0)
        self.assertEqual(value(r, "sysmon_netdump_dumps_completed_total"), 1)
        self.assertEqual(value(r, "sysmon_netdump_dumps_incomplete_total"), 0)
        self.assertEqual(value(r, "sysmon_netdump_received_pages_total"), pages)
        self.assertEqual(value(r, "sysmon_netdump_received_bytes_total"), pages * 4096)
        self.assertEqual(value(r, "sysmon_netdump_dumps_finished_total", outcome="complete"), 1)

        bad = makeSim(memory=8 * 2**20, seed=3)
        self.drive("10.1.0.2", bad, lambda: bad.servedCount > 100)
        self.assertEqual(value(r, "sysmon_netdump_dumps_in_progress"), 1)
        # The client stops answering: given up after the retries.
        self.drive("10.1.0.2", bad, lambda: not server.sessions, alive=lambda: False)
        self.assertEqual(value(r, "sysmon_netdump_dumps_in_progress"), 0)
        self.assertEqual(value(r, "sysmon_netdump_dumps_completed_total"), 1)
        self.assertEqual(value(r, "sysmon_netdump_dumps_incomplete_total"), 1)
        self.assertEqual(value(r, "sysmon_netdump_dumps_finished_total", outcome="incomplete"),
                         1)
        received = value(r, "sysmon_netdump_received_pages_total") - pages
        self.assertGreater(received, 0)
        self.assertLess(received, bad.memory.ramPages())
        self.assertEqual(value(r, "sysmon_netdump_received_bytes_total"),
                         (pages + received) * 4096)

    def test_consoleLines(self):
        """
        Netconsole lines and the lines of netdump's log stream are counted
        as they reach the console logs.
        """
        r = self.registry
        self.assertEqual(value(r, "sysmon_netdump_console_lines_total"), 0)
        self.protocol.datagramReceived(b"eth0: link up\nusb 1-1: new device\n",
                                       ("10.1.0.5", 6665))
        self.assertEqual(value(r, "sysmon_netdump_console_lines_total"), 2)
        sim = makeSim()
        for chunk in sim.logChunks(b"Oops: 0002 [#1]\nCPU: 1\n"):
            self.protocol.datagramReceived(chunk, ("10.1.0.6", 6664))
        self.assertEqual(value(r, "sysmon_netdump_console_lines_total"), 4)


class StatdMetricsTests(TestCase):
    """
    statd's metrics follow the calls its RPC server answers and its monitor
    list (the real service on 127.0.0.1, calls through its dispatcher).
    """

    timeout = 30

    def setUp(self):
        from twisted.internet import reactor

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        options = statdTap.Options()
        options.parseOptions(["--port", "0", "--addr", "127.0.0.1", "--no-notify",
                              "--no-register",
                              "--state-file", os.path.join(directory, "status.db"),
                              "--name", "test.example.org"])
        self.service = statdTap.makeService(options, reactor)
        self.registry = makeRegistry(Daemons(statd=self.service))

    def start(self):
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def dispatch(self, data, host="127.0.0.1", port=40000):
        return self.service.rpc.dispatch(data, host, port, "udp")

    def test_beforeStart(self):
        """
        Before the service has started (no RPC server, no store yet) the
        gauges are zero, no call is counted and the rejections are zeros.
        """
        r = self.registry
        self.assertEqual(value(r, "sysmon_statd_monitored_hosts"), 0)
        self.assertEqual(value(r, "sysmon_statd_notifications_pending"), 0)
        self.assertEqual([k for k in scrape(r) if k[0] == "sysmon_statd_calls_total"], [])
        self.assertEqual(value(r, "sysmon_statd_rejected_total", reason="not_a_call"), 0)

    @defer.inlineCallbacks
    def test_calls(self):
        """
        Calls count by procedure name and result: the NSM result for SM_STAT
        and SM_MON (a refused SM_MON is stat_fail), success for the others,
        the RPC error for bad calls (an unknown procedure, or any of another
        version, by number); messages for no NSM procedure count as
        rejected.
        """
        self.start()
        r = self.registry
        P, V = nsm.PROG, nsm.VERS
        yield self.dispatch(m.encodeCall(1, P, V, nsm.NULL))
        yield self.dispatch(m.encodeCall(2, P, V, nsm.STAT, Packer().string(b"h").bytes()))
        yield self.dispatch(m.encodeCall(3, P, V, nsm.MON, mon(b"hostA")))
        yield self.dispatch(m.encodeCall(4, P, V, nsm.MON, mon(b"hostA")))
        yield self.dispatch(m.encodeCall(5, P, V, nsm.MON, mon(b"hostB")), host="192.0.2.7")
        yield self.dispatch(m.encodeCall(6, P, V, nsm.STAT, b"\0\0\0"))
        yield self.dispatch(m.encodeCall(7, P, V, 9))
        yield self.dispatch(m.encodeCall(8, P, 2, nsm.STAT))
        yield self.dispatch(m.encodeCall(8, P, 3, nsm.STAT))
        yield self.dispatch(m.encodeCall(9, 100099, 1, 0))
        yield self.dispatch(b"not an RPC message")
        calls = {dict(labels)["procedure"] + "/" + dict(labels)["result"]: v
                 for (name, labels), v in scrape(r).items()
                 if name == "sysmon_statd_calls_total"}
        self.assertEqual(calls, {"SM_NULL/success": 1, "SM_STAT/stat_succ": 1,
                                 "SM_MON/stat_succ": 2, "SM_MON/stat_fail": 1,
                                 "SM_STAT/garbage_args": 1, "9/proc_unavail": 1,
                                 "1/prog_mismatch": 2})
        rejected = {dict(labels)["reason"]: v for (name, labels), v in scrape(r).items()
                    if name == "sysmon_statd_rejected_total"}
        self.assertEqual(rejected, {"not_a_call": 1, "rpc_mismatch": 0, "auth_error": 0,
                                    "prog_unavail": 1, "record_too_large": 0})

    @defer.inlineCallbacks
    def test_unknownProcedures(self):
        """
        Unknown procedures are labelled by number, up to the RPC server's
        bound; any more count together as C{other}.
        """
        from sysmon.rpc.server import MAX_UNKNOWN_PROCEDURES

        self.start()
        for proc in range(100, 100 + MAX_UNKNOWN_PROCEDURES + 3):
            yield self.dispatch(m.encodeCall(1, nsm.PROG, nsm.VERS, proc))
        r = self.registry
        self.assertEqual(value(r, "sysmon_statd_calls_total", procedure="100",
                               result="proc_unavail"), 1)
        self.assertEqual(value(r, "sysmon_statd_calls_total", procedure="other",
                               result="proc_unavail"), 3)

    @defer.inlineCallbacks
    def test_hostsAndNotifications(self):
        """
        The monitored hosts gauge counts distinct hosts (two callers of one
        host count once); after SM_SIMU_CRASH every monitored host is
        pending notification (with --no-notify nothing is sent).
        """
        self.start()
        r = self.registry
        P, V = nsm.PROG, nsm.VERS
        yield self.dispatch(m.encodeCall(1, P, V, nsm.MON, mon(b"hostA")))
        yield self.dispatch(m.encodeCall(2, P, V, nsm.MON, mon(b"hostA", my=b"other")))
        yield self.dispatch(m.encodeCall(3, P, V, nsm.MON, mon(b"hostB")))
        self.assertEqual(value(r, "sysmon_statd_monitored_hosts"), 2)
        self.assertEqual(value(r, "sysmon_statd_notifications_pending"), 0)
        yield self.dispatch(m.encodeCall(4, P, V, nsm.SIMU_CRASH), port=800)
        self.assertEqual(value(r, "sysmon_statd_notifications_pending"), 2)
        self.assertEqual(value(r, "sysmon_statd_calls_total", procedure="SM_SIMU_CRASH",
                               result="success"), 1)
        yield self.dispatch(m.encodeCall(5, P, V, nsm.UNMON_ALL, nsm.MyId(b"me", 100021, 3, 16)
                                         .pack(Packer()).bytes()))
        self.assertEqual(value(r, "sysmon_statd_monitored_hosts"), 1)


class RecvstatsMetricsTests(SynchronousTestCase):
    """
    recvstats' metrics follow the datagrams its sockets take and its
    sweeps.
    """

    def setUp(self):
        self.start()

    def start(self, *extra: str) -> None:
        """
        Build and start recvstats with C{extra} options, and its registry.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        options = beostatTap.RecvstatsOptions()
        options.parseOptions(["--no-multicast", "--bind", "127.0.0.1", "--port", "0",
                              "--gmond-port", "0", "--master-interval", "0",
                              "--shm", os.path.join(root, "beostat"), *extra])
        self.reactor = FakeReactor()
        self.service = beostatTap.makeRecvstatsService(options, self.reactor)
        self.wall = [1_700_000_000.0]
        # The wall clock the service's records are stamped with.
        self.service.wallClock = lambda: self.wall[0]
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.status, self.gmond = (u.protocol for u in self.reactor.udp)
        self.snapshot = procfs.readSnapshot(ProcTree.make(os.path.join(root, "proc")).root, "/")
        self.registry = makeRegistry(Daemons(recvstats=self.service))

    def report(self, node: int, ip: str, key: bytes | None = None) -> None:
        message = StatusBuilder(node, BOOT, f"n{node}", 1.0).build(self.snapshot, self.wall[0])
        for datagram in wire.encodeStatus(message, key):
            self.status.datagramReceived(datagram, (ip, 3040))

    def test_signatures(self):
        """
        With a key, unsigned and badly signed reports count as bad packets;
        signed ones as good.
        """
        keyFile = os.path.abspath(self.mktemp())
        with open(keyFile, "w") as f:
            f.write("secret\n")
        os.chmod(keyFile, 0o600)
        self.start("--key-file", keyFile)
        r = self.registry
        self.report(1, "10.0.0.1")
        self.report(1, "10.0.0.1", key=b"wrong")
        self.report(1, "10.0.0.1", key=b"secret")
        self.assertEqual((value(r, "sysmon_recvstats_packets_total", result="good"),
                          value(r, "sysmon_recvstats_packets_total", result="bad")), (1, 2))

    def test_nodesAndPackets(self):
        """
        Both node states are always present; reports make nodes up and count
        as good packets, malformed datagrams as bad; a node silent for more
        than four intervals is down after the sweep.
        """
        r = self.registry
        self.assertEqual((value(r, "sysmon_recvstats_nodes", state="up"),
                          value(r, "sysmon_recvstats_nodes", state="down")), (0, 0))
        self.report(1, "10.0.0.1")
        self.report(2, "10.0.0.2")
        self.status.datagramReceived(b"garbage", ("10.0.0.3", 3040))
        self.assertEqual((value(r, "sysmon_recvstats_nodes", state="up"),
                          value(r, "sysmon_recvstats_nodes", state="down")), (2, 0))
        self.assertEqual((value(r, "sysmon_recvstats_packets_total", result="good"),
                          value(r, "sysmon_recvstats_packets_total", result="bad")), (2, 1))
        self.wall[0] += 10
        self.report(1, "10.0.0.1")
        self.reactor.advance(1.0)
        self.assertEqual((value(r, "sysmon_recvstats_nodes", state="up"),
                          value(r, "sysmon_recvstats_nodes", state="down")), (1, 1))
        self.assertEqual(value(r, "sysmon_recvstats_packets_total", result="good"), 3)

    def test_gmondPackets(self):
        """
        A real gmond's packets count as good gmond packets (and make a node),
        a malformed one as bad.
        """
        r = self.registry
        self.assertEqual((value(r, "sysmon_recvstats_gmond_packets_total", result="good"),
                          value(r, "sysmon_recvstats_gmond_packets_total", result="bad")),
                         (0, 0))
        datagrams = gmondcap.capture("gmond_a")
        for data in datagrams:
            self.gmond.datagramReceived(data, ("127.0.0.1", 43597))
        self.gmond.datagramReceived(b"\0\0\0\x80junk", ("127.0.0.1", 43597))
        self.assertEqual((value(r, "sysmon_recvstats_gmond_packets_total", result="good"),
                          value(r, "sysmon_recvstats_gmond_packets_total", result="bad")),
                         (len(datagrams), 1))
        self.assertEqual(value(r, "sysmon_recvstats_nodes", state="up"), 1)
        self.assertEqual(value(r, "sysmon_recvstats_packets_total", result="good"), 0)


class SendstatsMetricsTests(SynchronousTestCase):
    """
    sendstats' report counter.
    """

    def test_reports(self):
        """
        Every report sent counts once (at start, then every interval).
        """
        proc = ProcTree.make(os.path.abspath(self.mktemp()))
        options = beostatTap.SendstatsOptions()
        options.parseOptions(["--proc", proc.root, "--rate", "2", "--node", "4",
                              "--master", "127.0.0.1:3040", "--master", "127.0.0.2:3040"])
        reactor = FakeReactor()
        service = beostatTap.makeSendstatsService(options, reactor)
        # /proc read in this thread (a fake reactor has no thread pool).
        service.snapshot = lambda: defer.succeed(procfs.readSnapshot(proc.root, "/"))
        registry = makeRegistry(Daemons(sendstats=service))
        self.assertEqual(value(registry, "sysmon_sendstats_reports_total"), 0)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(value(registry, "sysmon_sendstats_reports_total"), 1)
        reactor.advance(2.0)
        self.assertEqual(value(registry, "sysmon_sendstats_reports_total"), 2)
        self.assertEqual(len(reactor.udp[0].transport.pop()), 4)


class WatchdogMetricsTests(SynchronousTestCase):
    """
    The watchdog's metrics follow real rounds on a clock, in no-action mode
    (no device).
    """

    def setUp(self):
        root = os.path.abspath(self.mktemp())
        proc = ProcTree.make(os.path.join(root, "proc"))
        proc.loadavg(one=5.0)
        proc._write("sys/fs/file-nr", "1024\t0\t100000\n")
        self.repair = writeScript(os.path.join(root, "repair"), "#!/bin/sh\nexit 0\n")
        conf = os.path.join(root, "watchdog.conf")
        with open(conf, "w") as f:
            f.write(f"interval = 1\nmax-load-1 = 2\nretry-timeout = 0\nrepair-maximum = 1\n"
                    f"repair-binary = {self.repair}\nlog-dir = {root}/log\n")
        options = watchdogTap.Options()
        options.parseOptions(["-q", "-c", conf, "--proc-root", proc.root,
                              "--sys-root", proc.root])
        self.reactor = FakeReactor()
        self.service = watchdogTap.makeService(options, self.reactor)
        # The clock of its timers and of lastRefresh: the test's.
        self.service.now = self.reactor.seconds
        self.registry = makeRegistry(Daemons(watchdog=self.service))

    def test_beforeStart(self):
        """
        Before the first round and refresh: zero rounds, every check at zero
        failures, and no seconds-since-refresh sample.
        """
        r = self.registry
        self.assertEqual(value(r, "sysmon_watchdog_rounds_total"), 0)
        self.assertEqual(value(r, "sysmon_watchdog_repairs_total"), 0)
        self.assertEqual(value(r, "sysmon_watchdog_check_failures_total",
                               check="<load-average>"), 0)
        self.assertEqual(value(r, "sysmon_watchdog_check_failures_total",
                               check="<file-table>"), 0)
        self.assertIsNone(value(r, "sysmon_watchdog_seconds_since_refresh"))

    def test_rounds(self):
        """
        Rounds count; a failing check counts its failures under its name and
        is repaired (in no-action mode too); the seconds since the refresh
        timer last fired grow between its firings and keep growing once
        the feeding has stopped.
        """
        r = self.registry
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(value(r, "sysmon_watchdog_rounds_total"), 1)
        self.assertEqual(value(r, "sysmon_watchdog_check_failures_total",
                               check="<load-average>"), 1)
        self.assertEqual(value(r, "sysmon_watchdog_check_failures_total",
                               check="<file-table>"), 0)
        self.assertEqual(value(r, "sysmon_watchdog_repairs_total"), 1)
        self.assertEqual(value(r, "sysmon_watchdog_seconds_since_refresh"), 0)
        self.reactor.advance(0.5)
        self.assertEqual(value(r, "sysmon_watchdog_seconds_since_refresh"), 0.5)
        [repair] = [p for p in self.reactor.processes if self.repair in p.args]
        repair.exit(0)
        self.reactor.advance(0.5)
        self.assertEqual(value(r, "sysmon_watchdog_rounds_total"), 2)
        self.assertEqual(value(r, "sysmon_watchdog_check_failures_total",
                               check="<load-average>"), 2)
        self.assertEqual(value(r, "sysmon_watchdog_seconds_since_refresh"), 0)
        self.service.stopFeeding("the test stops it")
        self.reactor.pump([1.0, 1.0, 0.5])
        self.assertEqual(value(r, "sysmon_watchdog_rounds_total"), 4)
        self.assertEqual(value(r, "sysmon_watchdog_seconds_since_refresh"), 2.5)


    def test_otherClock(self):
        """
        A clock given to C{makeRegistry} measures the seconds since the
        refresh instead of the service's own.
        """
        registry = makeRegistry(Daemons(watchdog=self.service),
                                now=lambda: self.reactor.seconds() + 7)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(value(registry, "sysmon_watchdog_seconds_since_refresh"), 7)
        self.assertEqual(value(self.registry, "sysmon_watchdog_seconds_since_refresh"), 0)


class KeepaliveMetricsTests(TestCase):
    """
    keepalive's metrics follow real processes.
    """

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.root = tempfile.mkdtemp(prefix="kam", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.root, True)
        options = keepaliveTap.Options()
        options.parseOptions(["--table", os.path.join(self.root, "keepalive.data"),
                              "--control", os.path.join(self.root, "ctl"),
                              "--log-dir", os.path.join(self.root, "log"),
                              "--script-dir", os.path.join(self.root, "scripts")])
        self.service = keepaliveTap.makeService(options, reactor)
        self.daemons = Daemons(keepalive=self.service)
        self.supervisor = self.daemons.supervisor()
        self.registry = makeRegistry(self.daemons)

    def config(self, name: str, text: str) -> str:
        path = os.path.join(self.root, name + ".cfg")
        with open(path, "w") as f:
            f.write(text)
        return path

    async def waitFor(self, predicate: Callable[[], Any], what: str) -> None:
        from twisted.internet import reactor

        deadline = time.monotonic() + 20
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            await task.deferLater(reactor, 0.02, lambda: None)

    def killAll(self) -> None:
        for entry in list(self.supervisor.entries.values()):
            pid = entry.record.pid
            if pid and processAlive(pid):
                os.kill(pid, signal.SIGKILL)

    @defer.inlineCallbacks
    def test_processesAndRestarts(self):
        """
        Every state is present (zeros before anything is registered); a
        running process is C{ok}; one that keeps failing is restarted up to
        its error limit, then C{down}, and its restarts are counted.
        """
        r = self.registry
        self.service.privilegedStartService()
        self.service.startService()
        # Cleanups run last first: stop keepalive, then kill what it left.
        self.addCleanup(self.killAll)
        self.addCleanup(self.service.stopService)
        self.assertEqual({dict(labels)["state"]: v for (name, labels), v in scrape(r).items()
                          if name == "sysmon_keepalive_processes"},
                         {state.value: 0 for state in State})
        self.assertEqual(value(r, "sysmon_keepalive_restarts_total"), 0)
        [sleeper] = yield self.supervisor.register(
            self.config("sleeper", "command = /bin/sleep\nargs = 3600\n"))
        failing = writeScript(os.path.join(self.root, "failing"), "#!/bin/sh\nexit 1\n")
        [slot] = yield self.supervisor.register(self.config(
            "failing", f"command = {failing}\nrespawn-time = 0\nerror-limit = 3\n"))
        yield defer.ensureDeferred(self.waitFor(
            lambda: self.supervisor.entries[slot].record.state is State.DOWN, "state down"))
        self.assertEqual(value(r, "sysmon_keepalive_processes", state="ok"), 1)
        self.assertEqual(value(r, "sysmon_keepalive_processes", state="down"), 1)
        self.assertEqual(value(r, "sysmon_keepalive_processes", state="respawn"), 0)
        self.assertEqual(value(r, "sysmon_keepalive_restarts_total"), 2)
        yield self.supervisor.unregister(slot=sleeper, kill=True)
        self.assertEqual(value(r, "sysmon_keepalive_processes", state="ok"), 0)
