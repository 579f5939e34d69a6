"""
The shipped C{conf/sysmon.tac} end to end: started as a subprocess from
the shipped C{conf/sysmon.ini} (free ports, and the few keys a test needs
to make things happen sooner), each daemon exercised once through its real
peer (netdump-sim, an NSM client, sendstats and gmond packets, a failing
watchdog test program, a process killed under keepalive), and every metric
of C{/metrics} seen to move.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest, TestCase

from sysmon.rpc import message as m
from sysmon.rpc.xdr import Packer
from sysmon.statd import nsm
from sysmon.testing import TwistdChild, freePort, writeScript
from tests.beostat import gmondcap
from tests.ops.tac import CHECKOUT, Tac
from tests.statd.live import rpcCall

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: Every metric the issue asks for, as (sample name, labels).
EXPECTED = [
    ("sysmon_netdump_dumps_in_progress", ()),
    ("sysmon_netdump_dumps_completed_total", ()),
    ("sysmon_netdump_dumps_incomplete_total", ()),
    ("sysmon_netdump_received_bytes_total", ()),
    ("sysmon_netdump_received_pages_total", ()),
    ("sysmon_netdump_console_lines_total", ()),
    ("sysmon_statd_calls_total", (("procedure", "SM_MON"), ("result", "stat_succ"))),
    ("sysmon_statd_calls_total", (("procedure", "SM_STAT"), ("result", "stat_succ"))),
    ("sysmon_statd_monitored_hosts", ()),
    ("sysmon_statd_notifications_pending", ()),
    ("sysmon_recvstats_nodes", (("state", "up"),)),
    ("sysmon_recvstats_nodes", (("state", "down"),)),
    ("sysmon_recvstats_packets_total", (("result", "good"),)),
    ("sysmon_recvstats_packets_total", (("result", "bad"),)),
    ("sysmon_recvstats_gmond_packets_total", (("result", "good"),)),
    ("sysmon_recvstats_gmond_packets_total", (("result", "bad"),)),
    ("sysmon_watchdog_rounds_total", ()),
    ("sysmon_watchdog_seconds_since_refresh", ()),
    ("sysmon_watchdog_repairs_total", ()),
    ("sysmon_keepalive_processes", (("state", "ok"),)),
    ("sysmon_keepalive_restarts_total", ()),
]


def parseMetrics(text: str) -> Samples:
    """
    The samples of a Prometheus text exposition, keyed by name and sorted
    labels.
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def monArgs(name: bytes) -> bytes:
    return nsm.Mon(nsm.MonId(name, nsm.MyId(b"localhost", 100021, 4, 16)),
                   b"P" * 16).pack(Packer()).bytes()


def _reservedPort() -> int:
    """
    A UDP port below 1024 free on 127.0.0.1.
    """
    for port in range(1023, 600, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024")


class EndToEndTests(TestCase):
    """
    The shipped tac, every daemon once, and C{/metrics}.
    """

    timeout = 300

    def scrape(self, tac: Tac) -> Samples:
        code, headers, body = tac.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/plain"), headers)
        return parseMetrics(body.decode())

    def waitMetric(self, tac: Tac, predicate: Callable[[Samples], Any], what: str,
                   timeout: float = 30) -> Samples:
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape(tac)
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                relevant = {k: v for k, v in samples.items() if k[0].startswith("sysmon_")}
                self.fail(f"timed out waiting for {what}; metrics: {relevant}\n"
                          f"log:\n{tac.log()[-4000:]}")
            time.sleep(0.1)

    def netdumpSim(self, tac: Tac, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "sysmon.netdump.sim", "--port", str(tac.ports["netdump"]),
             "--no-progress", *args], cwd=CHECKOUT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": CHECKOUT})
        self.addCleanup(lambda: process.poll() is None and (process.kill(), process.wait()))
        return process

    def test_everyDaemon(self) -> None:
        """
        After one of everything, each metric the issue names is in
        C{/metrics} and has moved: dumps completed and incomplete, pages,
        bytes and console lines; statd calls by procedure and result,
        monitored hosts, pending notifications; recvstats nodes up and down,
        good and bad packets, gmond packets; watchdog rounds, failures of
        the failing check, repairs, the time since the refresh; keepalive
        processes and a restart.  The service manager got C{READY=1}.
        """
        if os.getuid() != 0:
            raise SkipTest("needs root: SM_SIMU_CRASH is only taken from a reserved port")
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notify.bind(os.path.join(work, "notify"))
        notify.settimeout(60)

        # The watchdog: a test program that fails on its second run only,
        # and a repair program that succeeds.
        flag = os.path.join(work, "runs")
        failing = writeScript(os.path.join(work, "wd-test"), f"""#!/bin/sh
echo x >> {flag}
[ "$(wc -l < {flag})" -eq 2 ] && exit 1
exit 0
""")
        repair = writeScript(os.path.join(work, "wd-repair"), "#!/bin/sh\nexit 0\n")
        wdconf = os.path.join(work, "watchdog.conf")
        with open(wdconf, "w") as f:
            f.write(f"interval = 1\ntest-binary = {failing}\nrepair-binary = {repair}\n"
                    f"retry-timeout = 0\nlog-dir = {work}/wdlog\n")
        gmondPort = freePort()
        tac = Tac(self, {
            "netdump": {"timeout": "0.2", "retries": "5"},
            "recvstats": {"gmond-port": str(gmondPort)},
            "watchdog": {"config-file": wdconf},
        })
        tac.start(env={**os.environ, "NOTIFY_SOCKET": os.path.join(work, "notify")})
        ready = notify.recv(4096).decode()
        self.assertIn("READY=1", ready.split("\n"))

        first = self.scrape(tac)
        for name, labels in EXPECTED:
            if not labels:
                # Labelled counters appear with their first call.
                self.assertIn((name, labels), first, f"{name} missing from /metrics")

        # netdump: a client that stops half way is an incomplete dump, then
        # a whole one.
        stalled = self.netdumpSim(tac, "--memory", "64M", "--drop", "0.2")
        self.waitMetric(tac, lambda s: s[("sysmon_netdump_dumps_in_progress", ())] == 1,
                        "a dump in progress")
        stalled.send_signal(signal.SIGKILL)
        stalled.wait()
        self.waitMetric(tac, lambda s: s[("sysmon_netdump_dumps_incomplete_total", ())] == 1
                        and s[("sysmon_netdump_dumps_in_progress", ())] == 0,
                        "the stalled dump to be given up")
        whole = self.netdumpSim(tac, "--memory", "4M")
        out, _ = whole.communicate(timeout=120)
        self.assertEqual(whole.returncode, 0, out)
        done = self.waitMetric(
            tac, lambda s: s[("sysmon_netdump_dumps_completed_total", ())] == 1,
            "a completed dump")
        self.assertGreaterEqual(done[("sysmon_netdump_received_pages_total", ())], 1024 - 256)
        self.assertGreaterEqual(done[("sysmon_netdump_received_bytes_total", ())],
                                (1024 - 256) * 4096)
        self.assertGreater(done[("sysmon_netdump_console_lines_total", ())], 0)
        self.assertEqual(len(glob.glob(tac.path("var", "crash", "127.0.0.1-*", "vmcore"))), 1)
        self.assertEqual(len(glob.glob(tac.path("var", "crash", "127.0.0.1-*",
                                                "vmcore-incomplete"))), 1)

        # statd: SM_MON then SM_STAT, from this (loopback) host.
        statd = tac.ports["statd"]
        self.assertEqual(rpcCall(statd, nsm.MON, monArgs(b"peer.invalid")).results[:4],
                         b"\0\0\0\0")
        rpcCall(statd, nsm.STAT, Packer().string(b"localhost").bytes())
        samples = self.waitMetric(tac, lambda s: s[("sysmon_statd_monitored_hosts", ())] == 1,
                                  "the monitored host")
        for proc in ("SM_MON", "SM_STAT"):
            self.assertEqual(
                samples[("sysmon_statd_calls_total", (("procedure", proc),
                                                      ("result", "stat_succ")))], 1, proc)
        # SM_SIMU_CRASH (only from a reserved port on loopback: this test runs
        # as root) makes statd notify the monitored host, which cannot be
        # reached (.invalid never resolves), so the notification waits.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", _reservedPort()))
            s.settimeout(10)
            s.sendto(m.encodeCall(78, nsm.PROG, nsm.VERS, nsm.SIMU_CRASH, b""),
                     ("127.0.0.1", statd))
            reply = m.decodeReply(s.recv(65536))
            self.assertEqual((reply.accepted, reply.stat), (True, m.SUCCESS))
        self.waitMetric(tac, lambda s: s[("sysmon_statd_notifications_pending", ())] == 1,
                        "a notification pending")

        # recvstats: the tac's own sendstats, a node that goes quiet, a bad
        # packet, gmond's packets and a bad one.
        node = TwistdChild(self, CHECKOUT)
        node.spawn("sendstats", "--rate", "0.2", "--node", "7",
                   f"127.0.0.1:{tac.ports['recvstats']}",
                   env={**os.environ, "PYTHONPATH": CHECKOUT})
        # This machine (node -1), the tac's own sendstats, and node 7.
        self.waitMetric(tac, lambda s: s[("sysmon_recvstats_nodes", (("state", "up"),))] == 3,
                        "three nodes up")
        self.assertIn(7, [n["node"] for n in tac.status()["nodes"] if n["state"] == "up"])
        node.stop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00not a status packet", ("127.0.0.1", tac.ports["recvstats"]))
            for datagram in gmondcap.capture("gmond_a")[:20]:
                s.sendto(datagram, ("127.0.0.1", gmondPort))
            s.sendto(b"\xff" * 12, ("127.0.0.1", gmondPort))
        samples = self.waitMetric(
            tac, lambda s: s[("sysmon_recvstats_nodes", (("state", "down"),))] >= 1
            and s[("sysmon_recvstats_packets_total", (("result", "bad"),))] >= 1
            and s[("sysmon_recvstats_gmond_packets_total", (("result", "bad"),))] >= 1,
            "the quiet node down, the bad packets counted")
        self.assertGreaterEqual(samples[("sysmon_recvstats_packets_total",
                                         (("result", "good"),))], 2)
        self.assertEqual(samples[("sysmon_recvstats_gmond_packets_total",
                                  (("result", "good"),))], 20)

        # The watchdog: rounds, the test program's failure, its repair.
        samples = self.waitMetric(
            tac, lambda s: s[("sysmon_watchdog_repairs_total", ())] >= 1,
            "the watchdog's repair")
        self.assertGreaterEqual(samples[("sysmon_watchdog_rounds_total", ())], 2)
        self.assertEqual(samples[("sysmon_watchdog_check_failures_total",
                                  (("check", failing),))], 1)
        self.assertLess(samples[("sysmon_watchdog_seconds_since_refresh", ())], 5)

        # keepalive: a registered process killed, and restarted.
        config = os.path.join(work, "sleeper.cfg")
        with open(config, "w") as f:
            f.write("command = /bin/sleep\nargs = 3600\n")
        spawn = subprocess.run(
            [sys.executable, "-m", "sysmon.keepalive.cli", "--control",
             tac.path("var", "keepalive", "control"), "--table",
             tac.path("var", "keepalive", "keepalive.data"), "-r", config],
            cwd=CHECKOUT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": CHECKOUT})
        self.assertEqual(spawn.returncode, 0, spawn.stdout + spawn.stderr)
        self.waitMetric(tac, lambda s: s[("sysmon_keepalive_processes", (("state", "ok"),))] == 1,
                        "the registered process")
        [entry] = tac.status()["keepalive"]["processes"]
        os.kill(entry["pid"], signal.SIGKILL)
        samples = self.waitMetric(tac, lambda s: s[("sysmon_keepalive_restarts_total", ())] == 1,
                                  "the restart")
        [again] = tac.status()["keepalive"]["processes"]
        self.assertNotEqual(again["pid"], entry["pid"])
        self.addCleanup(lambda: os.kill(again["pid"], signal.SIGKILL))

        last = self.scrape(tac)
        for name, labels in EXPECTED:
            self.assertIn((name, labels), last, f"{name}{dict(labels)} missing from /metrics")
        moved = [(name, labels) for name, labels in EXPECTED
                 if last[(name, labels)] != first.get((name, labels))]
        # Those that went up and back down (dumps in progress) or are ages
        # were checked on the way.
        unmoved = set(EXPECTED) - set(moved) - {("sysmon_netdump_dumps_in_progress", ()),
                                                ("sysmon_watchdog_seconds_since_refresh", ())}
        self.assertEqual(unmoved, set())
        self.assertNotIn("Traceback", tac.log())

    def test_shippedAsIs(self) -> None:
        """
        The shipped ini, unchanged (its fixed ports), runs every daemon, and
        the README's one-line check works against it: netdump-sim dumps, and
        beostat shows this machine from recvstats' file.
        """
        tac = Tac(self, fixedPorts=True).start()
        log = tac.log()
        for line in ["netdump listening on 127.0.0.1:6666", "statd listening on udp 32765",
                     "sysmon started: running netdump, statd, recvstats, sendstats, "
                     "keepalive, watchdog, http"]:
            self.assertIn(line, log)
        self.assertNotIn("portmapper", log)
        # The installed console scripts; where the checkout is not installed
        # (a development tree), the same modules behind their names.
        fallback = os.path.join(tac.root, "bin")
        os.makedirs(fallback)
        for name, module in [("netdump-sim", "sysmon.netdump.sim"),
                             ("beostat", "sysmon.beostat.tool")]:
            writeScript(os.path.join(fallback, name),
                        f'#!/bin/sh\nexec {sys.executable} -m {module} "$@"\n')
        path = os.pathsep.join([os.path.dirname(sys.executable), fallback, os.environ["PATH"]])
        check = subprocess.run(
            "netdump-sim --memory 16M --no-progress && beostat --shm var/beostat",
            shell=True, cwd=tac.root, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PATH": path, "PYTHONPATH": CHECKOUT})
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertIn(socket.gethostname(), check.stdout)
        code, _, body = tac.get("/")
        self.assertEqual(code, 200)
        self.assertIn(b"<html", body.lower())
