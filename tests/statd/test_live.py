"""
statd as a real daemon: durability through SIGKILL, the listing tool, bad
input, and interoperation with Debian's rpcbind, rpcinfo, sm-notify and
rpc.statd.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from sysmon.rpc import message as m
from sysmon.rpc.xdr import Packer, Unpacker
from sysmon.statd import nsm
from sysmon.statd.store import readStatus

from .live import ROOT, TWISTD, Namespace, Rpcbind, Statd, freePort, need, rpcCall, smStat, stop


def monArgs(name: bytes, priv: bytes = b"P" * 16) -> bytes:
    return nsm.Mon(nsm.MonId(name, nsm.MyId(b"me", 100021, 3, 16)), priv).pack(Packer()).bytes()


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysmon.statd.tool", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


class DurabilityTests(SynchronousTestCase):
    """
    The monitor list and the state number survive SIGKILL.
    """

    def test_sigkillAfterEachMon(self):
        """
        Kill the daemon with SIGKILL right after each of 50 SM_MON replies;
        after a restart all 50 entries are there; the state is odd after
        every start and grows.
        """
        path = os.path.abspath(self.mktemp())
        states = []
        for i in range(50):
            statd = Statd(self, path, "--no-notify").start()
            states.append(statd.state)
            reply = rpcCall(statd.port, nsm.MON, monArgs(b"host%02d" % i))
            self.assertEqual(Unpacker(reply.results).int(), nsm.STAT_SUCC)
            statd.kill()
        statd = Statd(self, path, "--no-notify").start()
        states.append(statd.state)
        state, hosts = readStatus(path)
        self.assertEqual([h for h, monitored, _ in hosts if monitored],
                         [f"host{i:02d}" for i in range(50)])
        self.assertTrue(all(s % 2 == 1 for s in states), states)
        self.assertEqual(states, sorted(set(states)))


class ToolTests(SynchronousTestCase):
    """
    sysmon-statd on a running daemon's database.
    """

    def test_listAndClear(self):
        """
        -l shows the hosts with M/N flags; -N clears the flag (exit 0) and
        refuses an unknown host (exit 1).
        """
        path = os.path.abspath(self.mktemp())
        statd = Statd(self, path, "--no-notify").start()
        rpcCall(statd.port, nsm.MON, monArgs(b"alpha"))
        rpcCall(statd.port, nsm.MON, monArgs(b"beta"))
        statd.stop()
        statd = Statd(self, path, "--no-notify").start()  # restart: both need notification
        out = tool("--state-file", path, "-l")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(f"state {statd.state}, 2 hosts", out.stdout)
        self.assertIn("MN alpha", out.stdout)
        self.assertIn("MN beta", out.stdout)
        self.assertEqual(tool("--state-file", path, "-N", "alpha").returncode, 0)
        self.assertIn("M- alpha", tool("--state-file", path, "-l").stdout)
        missing = tool("--state-file", path, "-N", "gamma")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("gamma", missing.stderr)


class NoiseTests(SynchronousTestCase):
    """
    Bad input does not stop the daemon.
    """

    def test_randomDatagramsAndStreams(self):
        """
        100 000 random datagrams and random TCP byte streams: statd keeps
        answering SM_STAT.
        """
        path = os.path.abspath(self.mktemp())
        statd = Statd(self, path, "--no-notify").start()
        rng = random.Random(4)
        call = m.encodeCall(1, nsm.PROG, nsm.VERS, nsm.MON, monArgs(b"x"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(100_000):
                if i % 2:
                    data = bytearray(call)
                    for _ in range(rng.randint(1, 4)):
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    data = bytes(data[: rng.randint(0, len(data))])
                else:
                    data = rng.randbytes(rng.randint(0, 600))
                s.sendto(data, ("127.0.0.1", statd.port))
                if i % 5000 == 0:
                    time.sleep(0.01)
        for _ in range(30):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.connect(("127.0.0.1", statd.port))
                try:
                    t.sendall(rng.randbytes(rng.randint(1, 5000)))
                except OSError:
                    pass
        self.assertEqual(smStat(statd.port), statd.state)
        self.assertIsNone(statd.process.poll())


class InteropTests(SynchronousTestCase):
    """
    With Debian's rpcbind, rpcinfo, sm-notify and rpc.statd.
    """

    def test_rpcinfoListsUs(self):
        """
        With rpcbind running, rpcinfo -p 127.0.0.1 lists 100024 v1 udp and
        tcp at our ports; they are gone after we stop.
        """
        Rpcbind(self)
        statd = Statd(self, os.path.abspath(self.mktemp()), "--no-notify").start()
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True,
                                 text=True, timeout=30).stdout
            rows = {tuple(line.split()[:4]) for line in out.splitlines()[1:]}
            if ("100024", "1", "udp", str(statd.port)) in rows or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertIn(("100024", "1", "udp", str(statd.port)), rows, out)
        self.assertTrue(any(r[:3] == ("100024", "1", "tcp") for r in rows), out)
        statd.stop()
        out = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True, text=True,
                             timeout=30).stdout
        self.assertNotIn("100024", out)

    def test_smNotifyCallsLockdBack(self):
        """
        sm-notify -f -P <dir> with a record for 127.0.0.1 notifies our statd,
        which calls back a test lockd (100021 v3 UDP on a reserved port,
        registered with rpcbind) with the stored mon_name, the new state and
        the 16-byte priv.
        """
        need(self, "sm-notify")
        Rpcbind(self)
        statd = Statd(self, os.path.abspath(self.mktemp())).start()
        lockd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(lockd.close)
        for port in range(850, 1000):
            try:
                lockd.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        lockdPort = lockd.getsockname()[1]
        pmap = Packer().uint(100021).uint(3).uint(17).uint(lockdPort).bytes()
        rpcCall(111, 2, Packer().uint(100021).uint(3).uint(0).uint(0).bytes(), prog=100000,
                vers=2)
        reply = rpcCall(111, 1, pmap, prog=100000, vers=2)
        self.assertTrue(Unpacker(reply.results).bool())
        self.addCleanup(rpcCall, 111, 2, Packer().uint(100021).uint(3).uint(0).uint(0).bytes(),
                        100000, 2)
        priv = bytes(range(16))
        reply = rpcCall(statd.port, nsm.MON, monArgs(b"127.0.0.1", priv))
        self.assertEqual(Unpacker(reply.results).int(), nsm.STAT_SUCC)
        # Wait for our statd's portmapper registration.
        deadline = time.monotonic() + 10
        while "100024" not in subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True,
                                             text=True).stdout:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        state = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(state, "sm"))
        os.makedirs(os.path.join(state, "sm.bak"))
        with open(os.path.join(state, "state"), "wb") as f:
            f.write(struct.pack("=i", 5))
        with open(os.path.join(state, "sm", "127.0.0.1"), "w") as f:
            f.write("0100007f 000186b5 00000003 00000010 " + "50" * 16 + " 127.0.0.1 probe\n")
        notifier = subprocess.run(["sm-notify", "-f", "-d", "-P", state, "-m", "1"],
                                  capture_output=True, text=True, timeout=120)
        self.assertEqual(notifier.returncode, 0, notifier.stderr)
        with open(os.path.join(state, "state"), "rb") as f:
            (newState,) = struct.unpack("=i", f.read(4))
        lockd.settimeout(30)
        try:
            data, addr = lockd.recvfrom(65536)
        except socket.timeout:
            self.fail(f"no callback; sm-notify said:\n{notifier.stderr}\nstatd:\n{statd.log()}")
        self.assertEqual(addr[0], "127.0.0.1")
        self.assertLess(addr[1], 1024, "the callback must come from a reserved port")
        call = m.decodeCall(data)
        self.assertEqual((call.prog, call.vers, call.proc), (100021, 3, 16))
        u = Unpacker(call.args)
        self.assertEqual((u.string(1024), u.int(), u.fopaque(16)), (b"127.0.0.1", newState, priv))
        lockd.sendto(m.acceptedReply(call.xid), addr)
        self.assertIn("SM_NOTIFY from 127.0.0.1", statd.log())

    def test_notifyModeReachesRealStatd(self):
        """
        twistd statd -n notifies a real rpc.statd running on loopback, and
        the record is answered (cleared in our database).
        """
        need(self, "rpc.statd")
        Rpcbind(self)
        path = os.path.abspath(self.mktemp())
        ours = Statd(self, path, "--no-notify").start()
        rpcCall(ours.port, nsm.MON, monArgs(b"127.0.0.1"))
        ours.stop()
        theirDir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(theirDir, "sm"))
        os.makedirs(os.path.join(theirDir, "sm.bak"))
        theirs = subprocess.Popen(["rpc.statd", "--no-notify", "-F", "-d", "-P", theirDir,
                                   "-p", str(freePort())], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        self.addCleanup(stop, theirs)
        deadline = time.monotonic() + 15
        while "100024" not in subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True,
                                             text=True).stdout:
            self.assertLess(time.monotonic(), deadline, "rpc.statd did not register")
            time.sleep(0.1)
        logfile = os.path.abspath(self.mktemp()) + ".log"
        notify = subprocess.run(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", f"--logfile={logfile}", "statd",
             "-n", "--state-file", path, "--name", "test.example.org"],
            cwd=ROOT, timeout=120)
        self.assertEqual(notify.returncode, 0)
        with open(logfile) as f:
            log = f.read()
        self.assertIn("notified 127.0.0.1", log)
        state, hosts = readStatus(path)
        self.assertEqual(hosts, [("127.0.0.1", True, False)])
        stop(theirs)
        output = theirs.stdout.read()
        self.assertIn("test.example.org", output)


class RemoteCallerTests(SynchronousTestCase):
    """
    Calls from another host: a network namespace of the test's own.
    """

    def test_monFromNonLoopbackRefused(self):
        """
        SM_MON from a non-loopback address gets stat_fail and stores
        nothing; SM_STAT from there is answered.
        """
        ns = Namespace(self)
        path = os.path.abspath(self.mktemp())
        statd = Statd(self, path, "--no-notify", addr="").start()
        script = (
            "import socket, sys\n"
            "from sysmon.rpc import message as m\n"
            "from sysmon.rpc.xdr import Packer, Unpacker\n"
            "from sysmon.statd import nsm\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)\n"
            "def call(proc, args):\n"
            f"    s.sendto(m.encodeCall(9, nsm.PROG, nsm.VERS, proc, args), ('{ns.local}', {statd.port}))\n"
            "    return Unpacker(m.decodeReply(s.recv(1000)).results).int()\n"
            "mon = nsm.Mon(nsm.MonId(b'victim', nsm.MyId(b'me', 100021, 3, 16)), b'P' * 16)\n"
            "print(call(nsm.MON, mon.pack(Packer()).bytes()), call(nsm.STAT, Packer().string(b'h').bytes()))\n"
        )
        done = ns.run(sys.executable, "-c", script, cwd=ROOT)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.split(), [str(nsm.STAT_FAIL), str(nsm.STAT_SUCC)])
        self.assertEqual(readStatus(path)[1], [])
        self.assertIn(f"refusing SM_MON from {ns.remote}", statd.log())
