"""
recvstats and sendstats as real C{twistd} processes: multicast between two
network namespaces of the test's own, unicast on loopback, signed packets,
a real Ganglia gmond 3.7.2, garbage on the wire, and the C{beostat} table.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from sysmon.beostat import procfs, shm, wire
from sysmon.beostat.records import Load, Memory
from sysmon.beostat.send import StatusBuilder
from sysmon.testing import Namespace, ProcTree, TwistdChild, freePort, stopProcess

from . import gmondpeer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def waitFor(predicate, timeout: float, step: float = 0.02):
    """
    Poll C{predicate} until it returns something true; return that, or
    L{None} after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def readRecord(path: str, node: int) -> shm.NodeRecord | None:
    """
    Node C{node}'s record, or L{None} while the file or the record is not
    there yet.
    """
    try:
        file = shm.ShmFile(path)
    except (OSError, shm.LayoutError):
        return None
    try:
        record = file.read(node)
    except IndexError:
        return None
    finally:
        file.close()
    return record if record.state != shm.EMPTY else None


class Pair:
    """
    A recvstats and a sendstats with a fixture /proc, however connected.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.case = case
        base = os.path.abspath(case.mktemp())
        os.makedirs(base)
        self.shm = os.path.join(base, "beostat")
        self.tree = ProcTree.make(os.path.join(base, "proc"))
        self.rootfs = base
        self.recv = TwistdChild(case, ROOT)
        self.send = TwistdChild(case, ROOT)

    def startRecv(self, *args: str, prefix=()) -> None:
        self.recv.spawn("recvstats", "--shm", self.shm, "--master-interval", "0", *args,
                        prefix=prefix)
        self.recv.waitLog("recvstats on port")

    def startSend(self, *args: str, prefix=()) -> float:
        self.send.spawn("sendstats", "--proc", self.tree.root, "--rootfs", self.rootfs,
                        "--hostname", "fixture-node", *args, prefix=prefix)
        self.send.waitLog("sendstats reporting every")
        return time.monotonic()

    def checkRecord(self, record: shm.NodeRecord) -> None:
        """
        The record holds the fixture's values.
        """
        snapshot = procfs.readSnapshot(self.tree.root, self.rootfs)
        case = self.case
        case.assertEqual(record.state, shm.UP)
        case.assertEqual(record.hostname, "fixture-node")
        case.assertEqual(record.memory, snapshot.memory)
        case.assertEqual(record.load, snapshot.load)
        case.assertEqual(record.ticks, snapshot.cpuTotal)
        case.assertEqual([t for _, t in record.cpus], list(snapshot.cpus))
        case.assertEqual(record.interfaces, list(snapshot.interfaces))
        case.assertEqual((record.cpuCount, record.mhz, record.model),
                         (2, 2400.0, "Fixture CPU @ 2.40GHz"))
        case.assertEqual((record.rootfs.blockSize, record.rootfs.blocks, record.rootfs.files),
                         (snapshot.rootfs.blockSize, snapshot.rootfs.blocks,
                          snapshot.rootfs.files))

    def exercise(self, node: int, address: str, started: float) -> None:
        """
        The acceptance sequence: the record matches the fixture within two
        intervals of sendstats' start, recvstats' rate (0.5 s) replaces
        sendstats' (1 s), and a stopped sendstats is down after 4 intervals.
        """
        case = self.case
        record = waitFor(lambda: readRecord(self.shm, node), 10)
        arrived = time.monotonic() - started
        case.assertIsNotNone(record, self.recv.log()[-2000:])
        case.assertLessEqual(arrived, 2 * 1.0, "first report later than two intervals")
        self.checkRecord(record)
        case.assertEqual(record.address, address)
        # the rate change: recvstats --rate 0.5 against sendstats -r 1
        self.send.waitLog("reporting interval 1.0 s -> 0.5 s, asked by", timeout=15)
        record = waitFor(lambda: (r := readRecord(self.shm, node)) and r.interval == 0.5 and r,
                         5)
        case.assertIsNotNone(record, "the node never reported at the new rate")
        before = record.packets
        time.sleep(3.0)
        after = readRecord(self.shm, node).packets
        case.assertTrue(5 <= after - before <= 8, f"{after - before} reports in 3 s at 0.5 s")
        # a new figure on the sender shows up within an interval or two
        self.tree.loadavg(one=3.5, five=2.25, fifteen=1.0, running=4, total=300, lastPid=99)
        case.assertTrue(waitFor(lambda: readRecord(self.shm, node).load.one == 3.5, 2))
        # stop sendstats: down after 4 intervals (2 s), not before
        self.send.stop()
        stopped = time.monotonic()
        last = readRecord(self.shm, node).updated
        down = waitFor(lambda: readRecord(self.shm, node).state == shm.DOWN, 10, step=0.01)
        took = time.monotonic() - stopped
        case.assertTrue(down, "the node never went down")
        final = readRecord(self.shm, node)
        silent = final.updated and time.time() - last
        case.assertGreater(silent, 4 * 0.5)
        case.assertLess(took, 4 * 0.5 + 1.5)
        # recvstats marks the file first, then logs: the line may trail it.
        self.recv.waitLog(f"node {node} ({address}) is down", timeout=2)


class MulticastTests(SynchronousTestCase):
    """
    Multicast between two network namespaces joined by a veth pair.
    """

    def test_namespaces(self):
        """
        sendstats in one namespace and recvstats in another, multicast TTL 1
        on the veth given with C{-i}: the node appears with the fixture's
        values, takes recvstats' rate, and goes down when stopped.
        """
        ns = Namespace(self, local="10.204.77.1", remote="10.204.77.2", localNamespace=True)
        pair = Pair(self)
        pair.startRecv("-i", ns.veth, "--rate", "0.5", prefix=ns.prefix(local=True))
        started = pair.startSend("-i", ns.peer, "--ttl", "1", "-r", "1",
                                 prefix=ns.prefix())
        pair.exercise(0, "10.204.77.2", started)
        self.assertIn(f"group 239.192.3.40 on 10.204.77.1", pair.recv.log())
        record = readRecord(pair.shm, 0)
        self.assertEqual(record.origin, 3)  # number handed out by recvstats


class UnicastTests(SynchronousTestCase):
    """
    Unicast on loopback, and what recvstats survives there.
    """

    def test_loopback(self):
        """
        The same acceptance over unicast on 127.0.0.1, with the node number
        given by the sender; C{beostat} shows the node.
        """
        pair = Pair(self)
        port = freePort()
        pair.startRecv("--no-multicast", "--bind", "127.0.0.1", "-p", str(port),
                       "--rate", "0.5")
        started = pair.startSend("--master", f"127.0.0.1:{port}", "-r", "1", "--node", "12")
        record = waitFor(lambda: readRecord(pair.shm, 12), 10)
        self.assertIsNotNone(record)
        table = subprocess.run([sys.executable, "-m", "sysmon.beostat.tool", "--shm", pair.shm],
                               capture_output=True, text=True, cwd=ROOT, timeout=60)
        self.assertEqual(table.returncode, 0, table.stderr)
        [row] = [line for line in table.stdout.splitlines() if "fixture-node" in line]
        self.assertEqual(row.split()[:2], ["12", "up"])
        self.assertIn("127.0.0.1", row)
        self.assertIn("15.6G", row)  # MemTotal 16315240 kB
        pair.exercise(12, "127.0.0.1", started)

    def test_keyFile(self):
        """
        With C{--key-file}, a sender signing with the key is applied; one
        with another key and one not signing at all are dropped, and
        recvstats says so naming them.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        keys = {}
        for name, text in (("good", "correct horse battery staple\n"), ("bad", "wrong\n")):
            keys[name] = os.path.join(base, name)
            with open(keys[name], "w") as f:
                f.write(text)
            os.chmod(keys[name], 0o600)
        pair = Pair(self)
        port = freePort()
        pair.startRecv("--no-multicast", "--bind", "127.0.0.1", "-p", str(port),
                       "--key-file", keys["good"])
        others = [TwistdChild(self, ROOT), TwistdChild(self, ROOT)]
        others[0].spawn("sendstats", "--proc", pair.tree.root, "--master",
                        f"127.0.0.1:{port}", "--node", "2", "-r", "0.2", "--key-file",
                        keys["bad"])
        others[1].spawn("sendstats", "--proc", pair.tree.root, "--master",
                        f"127.0.0.1:{port}", "--node", "3", "-r", "0.2")
        pair.startSend("--master", f"127.0.0.1:{port}", "--node", "1", "-r", "0.2",
                       "--key-file", keys["good"])
        self.assertIsNotNone(waitFor(lambda: readRecord(pair.shm, 1), 10))
        pair.recv.waitLog("dropping badly signed datagrams from 127.0.0.1", timeout=20)
        pair.recv.waitLog("dropping unsigned datagrams from 127.0.0.1", timeout=20)
        time.sleep(1)
        self.assertIsNone(readRecord(pair.shm, 2))
        self.assertIsNone(readRecord(pair.shm, 3))
        self.assertGreater(readRecord(pair.shm, 1).packets, 3)

    def test_garbage(self):
        """
        100 000 random and mutated datagrams do not stop a running
        recvstats from applying good packets sent among them.
        """
        pair = Pair(self)
        port = freePort()
        pair.startRecv("--no-multicast", "--bind", "127.0.0.1", "-p", str(port))
        snapshot = procfs.readSnapshot(pair.tree.root, pair.rootfs)
        good = StatusBuilder(7, b"G" * 16, "good-node", 1.0)
        # The mutated datagrams are another node's; its number differs from
        # 7 in two bytes, so that mutations do not make good packets of
        # node 7 (every byte of a fixed-width field decodes).
        other = StatusBuilder(0x0F08, b"H" * 16, "other", 1.0)
        rng = random.Random(5)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        template = wire.encodeStatus(other.build(snapshot, time.time()))[0]
        sent = 0
        for round_ in range(100):
            for _ in range(1000):
                kind = rng.random()
                if kind < 0.4:
                    junk = rng.randbytes(rng.randrange(0, 1500))
                elif kind < 0.5:
                    junk = b"BEOS\x01" + rng.randbytes(rng.randrange(0, 200))
                else:
                    junk = bytearray(template)
                    for _ in range(rng.randrange(1, 6)):
                        at = rng.randrange(len(junk))
                        junk[at] = rng.randrange(256)
                    junk = bytes(junk)
                sock.sendto(junk, ("127.0.0.1", port))
                sent += 1
            for datagram in wire.encodeStatus(good.build(snapshot, time.time())):
                sock.sendto(datagram, ("127.0.0.1", port))
            # paced by the daemon: the good packet is applied before the next round
            record = waitFor(lambda: (r := readRecord(pair.shm, 7)) and
                             r.sequence == round_ + 1 and r, 20, step=0.005)
            self.assertIsNotNone(record, f"round {round_}: {readRecord(pair.shm, 7)}")
        self.assertEqual(sent, 100_000)
        self.assertEqual((record.packets, record.lost), (100, 0))
        self.assertEqual(record.hostname, "good-node")
        self.assertIsNone(pair.recv.process.poll())
        self.assertIn("dropping malformed datagrams from 127.0.0.1", pair.recv.log())
        self.assertNotIn("Unhandled", pair.recv.log())
        self.assertNotIn("Traceback", pair.recv.log())


def _xdrString(data: bytes, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">I", data, at)
    return data[at + 4:at + 4 + n].decode(), at + 4 + (n + 3) // 4 * 4


def independentDecode(data: bytes) -> tuple[str, str, object] | None:
    """
    A gmond value datagram decoded here, without sysmon's decoder:
    C{(host, metric, value)}, or L{None} for other packets.
    """
    (kind,) = struct.unpack_from(">I", data, 0)
    host, at = _xdrString(data, 4)
    name, at = _xdrString(data, at)
    at += 4  # spoof
    if kind == 128 or kind == 136:
        return None
    _fmt, at = _xdrString(data, at)
    if kind == 133:
        return host, name, _xdrString(data, at)[0]
    code = {129: ">I", 130: ">i", 131: ">i", 132: ">I", 134: ">f", 135: ">d"}[kind]
    return host, name, struct.unpack_from(code, data, at)[0]


class GmondTests(SynchronousTestCase):
    """
    A real Ganglia gmond 3.7.2 feeding recvstats.
    """

    def test_realGmond(self):
        """
        gmond (Debian ganglia-monitor) with a unicast send channel to
        recvstats' --gmond-port appears as a node whose load, memory and
        CPU equal what gmond sent, decoded here from the same datagrams.
        """
        reason = gmondpeer.unavailable()
        if reason:
            raise self.skipTest(reason)
        pair = Pair(self)
        port, gport = freePort(), freePort()
        pair.startRecv("--no-multicast", "--bind", "127.0.0.1", "-p", str(port),
                       "--gmond-port", str(gport))
        # gmond -> relay (records every datagram) -> recvstats
        relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        relay.bind(("127.0.0.1", 0))
        relay.settimeout(0.2)
        self.addCleanup(relay.close)
        seen: list[bytes] = []
        running = [True]

        def forward():
            while running[0]:
                try:
                    data, _ = relay.recvfrom(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                seen.append(data)
                relay.sendto(data, ("127.0.0.1", gport))

        thread = threading.Thread(target=forward, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(running.__setitem__, 0, False)
        peer = gmondpeer.GmondPeer(self, relay.getsockname()[1], hostname="gm-node",
                                   ip="127.0.0.9")
        peer.start()
        wanted = {"load_one", "load_five", "load_fifteen", "mem_total", "mem_free",
                  "mem_buffers", "mem_cached", "swap_total", "swap_free", "cpu_idle",
                  "cpu_wio", "cpu_num", "proc_run", "proc_total"}

        def complete():
            names = {d[1] for d in map(independentDecode, list(seen)) if d}
            return wanted <= names

        self.assertTrue(waitFor(complete, 60), peer.log())
        peer.stop()
        time.sleep(0.5)
        running[0] = False
        values = {}
        for data in seen:
            decoded = independentDecode(data)
            if decoded:
                self.assertEqual(decoded[0], "127.0.0.9:gm-node")
                values[decoded[1]] = decoded[2]
        record = None
        for node in range(0, 4):
            r = readRecord(pair.shm, node)
            if r is not None and r.source == shm.GMOND:
                record = r
        self.assertIsNotNone(record, pair.recv.log())
        self.assertEqual((record.address, record.hostname), ("127.0.0.9", "gm-node"))
        f32 = lambda v: struct.unpack(">f", struct.pack(">f", float(v)))[0]  # noqa: E731
        self.assertEqual(record.load, Load(f32(values["load_one"]), f32(values["load_five"]),
                                           f32(values["load_fifteen"]), int(values["proc_run"]),
                                           int(values["proc_total"]), 0))
        kb = {k: int(float(values[k])) * 1024 for k in
              ("mem_total", "mem_free", "mem_buffers", "mem_cached", "swap_total", "swap_free")}
        self.assertEqual(record.memory, Memory(
            kb["mem_total"], kb["mem_free"], kb["mem_free"] + kb["mem_buffers"] + kb["mem_cached"],
            kb["mem_buffers"], kb["mem_cached"], kb["swap_total"], kb["swap_free"]))
        usage = 1 - (float(values["cpu_idle"]) + float(values["cpu_wio"])) / 100
        self.assertAlmostEqual(record.cpuUsage, f32(min(1.0, max(0.0, usage))), places=6)
        self.assertEqual(record.cpuCount, int(values["cpu_num"]))
        self.assertEqual(record.cpuCount, os.cpu_count())
