"""
Tests for the shared test helpers in L{sysmon.testing}: the fakes must
behave like the real things they stand for, or tests built on them prove
nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess

from twisted.internet import error
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase

from sysmon.testing import (
    CPU_FIELDS,
    NET_DEV_FIELDS,
    FakeReactor,
    ProcTree,
    RecordingDatagramTransport,
    commandLineSoon,
    makeTestCA,
    processUsage,
)


class Echo(DatagramProtocol):
    def __init__(self):
        self.started = self.stopped = 0

    def startProtocol(self):
        self.started += 1

    def stopProtocol(self):
        self.stopped += 1

    def datagramReceived(self, data, addr):
        self.transport.write(data.upper(), addr)


class DatagramTests(SynchronousTestCase):
    """
    L{RecordingDatagramTransport} and the UDP side of L{FakeReactor}.
    """

    def test_listenUDP(self):
        """
        C{listenUDP} records the call, connects the protocol and starts it;
        writes are recorded with their address; C{stopListening} stops it.
        """
        reactor = FakeReactor()
        proto = Echo()
        port = reactor.listenUDP(6666, proto, interface="127.0.0.1")
        self.assertEqual(proto.started, 1)
        self.assertIs(proto.transport, port)
        self.assertEqual(reactor.udp[0].port, 6666)
        self.assertEqual(port.getHost().port, 6666)
        self.assertEqual(port.getHost().host, "127.0.0.1")
        proto.datagramReceived(b"hi", ("10.0.0.1", 6665))
        self.assertEqual(port.pop(), [(b"HI", ("10.0.0.1", 6665))])
        self.assertEqual(port.written, [])
        port.stopListening()
        self.assertEqual(proto.stopped, 1)
        self.assertFalse(port.listening)

    def test_ephemeralPort(self):
        """
        Port 0 gets a made-up ephemeral port, as the kernel would.
        """
        reactor = FakeReactor()
        a = reactor.listenUDP(0, Echo())
        b = reactor.listenUDP(0, Echo())
        self.assertNotEqual(a.getHost().port, 0)
        self.assertNotEqual(a.getHost().port, b.getHost().port)

    def test_failListen(self):
        """
        A port set to fail raises L{error.CannotListenError}, like a busy port.
        """
        reactor = FakeReactor()
        reactor.failListen = 3040
        self.assertRaises(error.CannotListenError, reactor.listenUDP, 3040, Echo())

    def test_multicast(self):
        """
        C{listenMulticast} records the call; groups, TTL and loopback are
        recorded on the transport.
        """
        reactor = FakeReactor()
        port = reactor.listenMulticast(3040, Echo(), listenMultiple=True)
        self.assertTrue(reactor.udp[0].multicast)
        self.assertTrue(reactor.udp[0].listenMultiple)
        self.successResultOf(port.joinGroup("239.192.3.40", "127.0.0.1"))
        self.assertEqual(port.groups, {("239.192.3.40", "127.0.0.1")})
        port.setTTL(3)
        self.assertEqual(port.getTTL(), 3)
        port.leaveGroup("239.192.3.40", "127.0.0.1")
        self.assertEqual(port.groups, set())

    def test_writeChecksTypes(self):
        """
        Writing text instead of bytes is an error, as on a real socket.
        """
        t = RecordingDatagramTransport()
        self.assertRaises(TypeError, t.write, "text", ("127.0.0.1", 1))
        self.assertRaises(ValueError, t.write, b"x")
        t.connect("127.0.0.1", 9)
        t.write(b"x")
        self.assertEqual(t.written, [(b"x", ("127.0.0.1", 9))])

    def test_ipv6Host(self):
        """
        An IPv6 bind address gives an IPv6 host address.
        """
        self.assertEqual(RecordingDatagramTransport("::1", 5).getHost().type, "UDP")
        self.assertEqual(RecordingDatagramTransport("::1", 5).getHost().host, "::1")


class Recorder(ProcessProtocol):
    def __init__(self):
        self.events = []

    def childDataReceived(self, fd, data):
        self.events.append(("data", fd, data))

    def processExited(self, reason):
        self.events.append(("exited", reason.value))

    def processEnded(self, reason):
        self.events.append(("ended", reason.value))


class ProcessTests(SynchronousTestCase):
    """
    C{spawnProcess} on L{FakeReactor}.
    """

    def test_spawnRecorded(self):
        """
        The call is recorded with its arguments and the protocol connected.
        """
        reactor = FakeReactor()
        proto = Recorder()
        p = reactor.spawnProcess(proto, "/bin/x", ["x", "-a"], env={"A": "1"}, path="/tmp",
                                 uid=5, gid=6, childFDs={0: "w", 1: "r"})
        self.assertIs(proto.transport, p)
        self.assertEqual((p.executable, p.args, p.env, p.path, p.uid, p.gid),
                         ("/bin/x", ["x", "-a"], {"A": "1"}, "/tmp", 5, 6))
        self.assertEqual(reactor.processes, [p])
        self.assertTrue(p.pid)

    def test_exitAndSignal(self):
        """
        The test ends the fake child; the protocol sees exited then ended
        with the right reasons; a dead child cannot be signalled.
        """
        reactor = FakeReactor()
        proto = Recorder()
        p = reactor.spawnProcess(proto, "/bin/x")
        p.signalProcess("TERM")
        self.assertEqual(p.signals, ["TERM"])
        p.output(b"err", 2)
        p.exit(3)
        kinds = [e[0] for e in proto.events]
        self.assertEqual(kinds, ["data", "exited", "ended"])
        self.assertEqual(proto.events[1][1].exitCode, 3)
        self.assertIsInstance(proto.events[1][1], error.ProcessTerminated)
        self.assertIsNone(p.pid)
        self.assertRaises(error.ProcessExitedAlready, p.signalProcess, "KILL")
        self.assertRaises(RuntimeError, p.exit, 0)

    def test_cleanExitAndDeath(self):
        """
        Exit 0 is L{error.ProcessDone}; death by signal carries the signal.
        """
        reactor = FakeReactor()
        a, b = Recorder(), Recorder()
        reactor.spawnProcess(a, "x").exit(0)
        reactor.spawnProcess(b, "x").die(signal.SIGSEGV)
        self.assertIsInstance(a.events[-1][1], error.ProcessDone)
        self.assertEqual(b.events[-1][1].signal, signal.SIGSEGV)


class ProcTreeTests(SynchronousTestCase):
    """
    L{ProcTree} writes files in the kernel's formats.
    """

    def setUp(self):
        self.root = self.mktemp()
        self.tree = ProcTree.make(self.root)

    def read(self, name):
        with open(os.path.join(self.root, name)) as f:
            return f.read()

    def test_loadavg(self):
        """
        /proc/loadavg: three loads, running/total, last pid.
        """
        self.tree.loadavg(1.5, 2, 3, 4, 500, 99)
        self.assertEqual(self.read("loadavg"), "1.50 2.00 3.00 4/500 99\n")

    def test_meminfo(self):
        """
        /proc/meminfo lines are "Name:   value kB"; fields can be changed or
        left out.
        """
        self.tree.meminfo(MemAvailable=None, MemFree=42)
        fields = {line.split(":")[0]: line.split()[1:] for line in self.read("meminfo").splitlines()}
        self.assertEqual(fields["MemFree"], ["42", "kB"])
        self.assertNotIn("MemAvailable", fields)
        self.assertIn("MemTotal", fields)

    def test_stat(self):
        """
        /proc/stat: the "cpu" line sums the per-CPU lines, which have the
        kernel's ten fields; btime is there.
        """
        self.tree.stat(cpus=[(1, 2, 3, 4), (10, 20, 30, 40, 5)])
        lines = self.read("stat").splitlines()
        self.assertEqual(lines[0].split(), ["cpu", "11", "22", "33", "44", "5", "0", "0", "0", "0", "0"])
        self.assertEqual(len(lines[1].split()), 1 + len(CPU_FIELDS))
        self.assertIn("btime 1700000000", lines)

    def test_netdevMatchesKernelLayout(self):
        """
        /proc/net/dev has the two header lines and 16 counters per
        interface, like this machine's own.
        """
        self.tree.netdev({"eth1": {"rx_bytes": 7, "tx_bytes": 9}})
        lines = self.read("net/dev").splitlines()
        with open("/proc/net/dev") as f:
            real = f.read().splitlines()
        self.assertEqual(lines[1].split("|")[1].split(), real[1].split("|")[1].split())
        name, counters = lines[2].split(":")
        self.assertEqual(name.strip(), "eth1")
        self.assertEqual(len(counters.split()), len(NET_DEV_FIELDS))
        self.assertEqual(len(counters.split()), len(real[2].split(":")[1].split()))
        self.assertEqual(counters.split()[0], "7")
        self.assertEqual(counters.split()[8], "9")

    def test_processStat(self):
        """
        /proc/<pid>/stat has the start time as field 22, like the kernel's.
        """
        self.tree.process(321, comm="my prog", starttime=98765, ppid=7)
        fields = self.read("321/stat").rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state)
        self.assertEqual(fields[22 - 3], "98765")
        self.assertEqual(fields[4 - 3], "7")
        with open("/proc/self/stat") as f:
            real = f.read().rsplit(")", 1)[1].split()
        self.assertLessEqual(len(fields), len(real))
        self.assertEqual(self.read("321/cmdline"), "sleep\x001000\x00")
        self.tree.removeProcess(321)
        self.assertFalse(os.path.exists(os.path.join(self.root, "321")))

    def test_cpuinfoAndUptime(self):
        """
        /proc/cpuinfo has a block per CPU with "cpu MHz"; /proc/uptime two numbers.
        """
        self.tree.cpuinfo(mhz=[1000.5, 2000])
        mhz = [l.split(":")[1].strip() for l in self.read("cpuinfo").splitlines() if l.startswith("cpu MHz")]
        self.assertEqual(mhz, ["1000.500", "2000.000"])
        self.assertEqual(len(self.read("uptime").split()), 2)


class ProcessUsageTests(SynchronousTestCase):
    """
    L{processUsage} reads a real process's figures.
    """

    def test_self(self):
        """
        This process has used some CPU and holds some memory; the peak is at
        least the current figure.
        """
        before = processUsage(os.getpid())
        sum(range(3_000_000))
        after = processUsage(os.getpid())
        self.assertGreater(after.cpu, before.cpu)
        self.assertGreater(after.rss, 1_000_000)
        self.assertGreaterEqual(after.peakRss, after.rss)


def _handshake(certPath: str, keyPath: str, serverName: str, trust: str) -> None:
    """
    A TLS handshake in memory between an OpenSSL server presenting
    C{certPath} and a client that trusts C{trust} and checks C{serverName}
    (stdlib L{ssl}, so the test does not depend on the code under test).
    Raises L{ssl.SSLError} when the client rejects the server.
    """
    import ssl

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certPath, keyPath)
    client = ssl.create_default_context(cafile=trust)
    c2s, s2c = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    clientSide = client.wrap_bio(s2c, c2s, server_hostname=serverName)
    serverSide = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", clientSide), ("server", serverSide)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c2s.read())
        s2c.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


class TestCATests(SynchronousTestCase):
    """
    L{makeTestCA} makes certificates that a standard TLS client accepts for
    exactly the names given, and only with the right authority.
    """

    def setUp(self):
        self.ca = makeTestCA(self.mktemp())

    def test_files(self):
        """
        The four PEM files exist; the keys are readable by the owner only.
        """
        for path in (self.ca.caCert, self.ca.caKey, self.ca.serverCert, self.ca.serverKey):
            self.assertTrue(os.path.isfile(path), path)
        self.assertEqual(os.stat(self.ca.serverKey).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(self.ca.caKey).st_mode & 0o777, 0o600)
        with open(self.ca.caCert, "rb") as f:
            self.assertTrue(f.read().startswith(b"-----BEGIN CERTIFICATE-----"))
        self.assertEqual(self.ca.hostnames, ("localhost", "127.0.0.1"))

    def test_acceptedForDNSNameAndIP(self):
        """
        A client trusting the CA accepts the server certificate for the DNS
        name and for the IP address (an IP subjectAltName entry).
        """
        for name in ("localhost", "127.0.0.1"):
            _handshake(self.ca.serverCert, self.ca.serverKey, name, self.ca.caCert)

    def test_wrongName(self):
        """
        A name that is not in the certificate is refused.
        """
        import ssl

        with self.assertRaises(ssl.SSLCertVerificationError) as e:
            _handshake(self.ca.serverCert, self.ca.serverKey, "other.example",
                       self.ca.caCert)
        self.assertIn("other.example", str(e.exception))

    def test_secondCAIsUnrelated(self):
        """
        A second L{makeTestCA} is an unrelated authority: a client trusting
        only it refuses the first one's server certificate.
        """
        import ssl

        other = makeTestCA(self.mktemp())
        with self.assertRaises(ssl.SSLCertVerificationError) as e:
            _handshake(self.ca.serverCert, self.ca.serverKey, "localhost",
                       other.caCert)
        self.assertIn("unable to get local issuer certificate", str(e.exception))

    def test_issueAndIPv6(self):
        """
        L{TestCA.issue} makes further certificates from the same authority,
        IPv6 addresses included; an expired one is refused.
        """
        import datetime
        import ssl

        cert, key = self.ca.issue("v6", ["::1", "db.example"])
        _handshake(cert, key, "::1", self.ca.caCert)
        _handshake(cert, key, "db.example", self.ca.caCert)
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
        cert, key = self.ca.issue("expired", ["localhost"], days=1, notBefore=old)
        with self.assertRaises(ssl.SSLCertVerificationError) as e:
            _handshake(cert, key, "localhost", self.ca.caCert)
        self.assertIn("expired", str(e.exception))


class CommandLineSoonTests(SynchronousTestCase):
    """
    L{commandLineSoon} waits for a new process's command line.
    """

    def test_newProcess(self) -> None:
        """
        Asked at once after the start, it gives the command line the process
        was started with.
        """
        child = subprocess.Popen(["/bin/sleep", "7654321"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        self.assertEqual(commandLineSoon(child.pid), ("/bin/sleep", "7654321"))

    def test_ended(self) -> None:
        """
        For a process that has ended it gives L{None} without waiting out
        the timeout.
        """
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        self.assertIsNone(commandLineSoon(child.pid, timeout=30))
