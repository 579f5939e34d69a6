"""
C{twistd -n watchdog} for real, against fake devices: a FIFO and a pty
read by the test.  The daemon's PATH starts with stand-ins for systemctl
and shutdown that only record, so that nothing a test does can reboot the
machine.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
import tty

import attrs
from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from sysmon.children import ChildRunner
from sysmon.testing import TwistdChild, fakeInitSystem, makeTestCA
from sysmon.watchdog import checks as C
from sysmon.watchdog import config
from sysmon.watchdog.device import WatchdogDevice
from sysmon.watchdog.service import WatchdogService
from sysmon.watchdog.shutdown import Mailer
from tests.watchdog.harness import RecordingShutdown, script
from tests.watchdog.smtpd import startSMTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Reader:
    """
    Reads a fake device's other end, stamping each byte.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.bytes: list[tuple[bytes, float]] = []
        self.eof = False

    def read(self, until: float) -> None:
        """
        Read what arrives for C{until} seconds (or to EOF).
        """
        end = time.monotonic() + until
        while not self.eof:
            if select.select([self.fd], [], [], min(0.05, until))[0]:
                try:
                    data = os.read(self.fd, 64)
                except OSError:  # a pty's master reads EIO once the slave is closed
                    data = b""
                now = time.monotonic()
                if not data:
                    self.eof = True
                    break
                self.bytes += [(bytes([b]), now) for b in data]
            elif time.monotonic() >= end:
                break

    def waitFor(self, data: bytes, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and data not in self.text():
            self.read(0.1)

    def text(self) -> bytes:
        return b"".join(b for b, _ in self.bytes)

    def nulTimes(self) -> list[float]:
        return [t for b, t in self.bytes if b == b"\0"]


class LiveTests(TestCase):
    """
    The daemon feeding fake devices.
    """

    def setUp(self) -> None:
        if shutil.which("setsid") is None:
            raise self.skipTest("setsid (util-linux) is not installed")
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "log"))
        os.makedirs(os.path.join(self.root, "watchdog.d"))
        self.bin, self.initCalls = fakeInitSystem(os.path.join(self.root, "bin"))
        self.env = dict(os.environ, PATH=self.bin + ":" + os.environ["PATH"],
                        PYTHONPATH=ROOT)
        self.env.pop("NOTIFY_SOCKET", None)

    def conf(self, device: str | None, extra: str = "") -> str:
        path = os.path.join(self.root, "watchdog.conf")
        with open(path, "w") as f:
            if device:
                f.write(f"watchdog-device = {device}\n")
            f.write(f"interval = 1\nlog-dir = {self.root}/log\nadmin =\n"
                    f"test-directory = {self.root}/watchdog.d\n{extra}")
        return path

    def daemon(self, *args: str, prefix: tuple[str, ...] = (),
               logDir: str | None = None) -> TwistdChild:
        child = TwistdChild(self, ROOT)
        if logDir is not None:
            child.logfile = os.path.join(logDir, "twistd.log")
        child.spawn("watchdog", *args, prefix=prefix, env=self.env)
        return child

    def fifo(self) -> tuple[str, Reader]:
        path = os.path.join(self.root, "watchdog")
        os.mkfifo(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, fd)
        return path, Reader(fd)

    def test_fifo(self) -> None:
        """
        A FIFO as the device: the ioctls are refused with one clear ENOTTY
        line, a NUL byte comes every interval (1 s), and SIGTERM brings the
        magic "V" and the close.
        """
        path, reader = self.fifo()
        child = self.daemon("-c", self.conf(path))
        reader.waitFor(b"\0\0\0\0", 30)
        child.kill(signal.SIGTERM)
        reader.read(10)
        self.assertTrue(reader.eof)
        text = reader.text()
        self.assertTrue(text.endswith(b"V"), text)
        self.assertEqual(set(text[:-1]), {0})
        gaps = [b - a for a, b in zip(reader.nulTimes(), reader.nulTimes()[1:])]
        self.assertGreaterEqual(len(gaps), 3)
        for gap in gaps:
            self.assertTrue(0.6 < gap < 1.6, gaps)
        log = child.log()
        self.assertEqual(log.count("does not take watchdog ioctls (ENOTTY)"), 1)
        self.assertIn("magic close", log)
        # twistd ends by re-raising the signal that stopped it.
        self.assertEqual(child.process.returncode, -signal.SIGTERM)
        self.assertIn("Server Shut Down.", log)

    def test_pty(self) -> None:
        """
        A pty as the device: NUL bytes arrive at the master, then "V" at a
        clean stop.
        """
        master, slave = os.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        tty.setraw(slave)
        reader = Reader(master)
        child = self.daemon("-c", self.conf(os.ttyname(slave)))
        reader.waitFor(b"\0\0", 30)
        child.kill(signal.SIGTERM)
        reader.read(3)
        self.assertTrue(reader.text().endswith(b"\0V"), reader.text())
        self.assertIn("(ENOTTY)", child.log())

    def test_busy(self) -> None:
        """
        A device another process holds exclusively (a pty slave with
        TIOCEXCL; root ignores that, so the daemon runs as nobody): the
        daemon ends with a clear EBUSY line and exit status 1.
        """
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            raise self.skipTest("needs root and setpriv (util-linux)")
        nobody = pwd.getpwnam("nobody")
        master, slave = os.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        fcntl.ioctl(slave, termios.TIOCEXCL)
        name = os.ttyname(slave)
        os.chown(name, nobody.pw_uid, -1)
        for d in (self.root, os.path.join(self.root, "log")):
            os.chmod(d, 0o777)
        os.chmod(os.path.dirname(self.root), 0o755)
        prefix = ("setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                  "--clear-groups")
        probe = subprocess.run([*prefix, sys.executable, "-c", "import sysmon"],
                               cwd=ROOT, env=self.env, capture_output=True)
        if probe.returncode != 0:
            raise self.skipTest(f"nobody cannot import sysmon here: {probe.stderr!r}")
        child = self.daemon("-c", self.conf(name), prefix=prefix, logDir=self.root)
        self.assertEqual(child.process.wait(60), 1)
        self.assertIn(f"{name} is busy: another process holds it", child.log())

    def test_noAction(self) -> None:
        """
        -q never opens the device (no byte, no open in 4 s) and a decided
        shutdown is only logged as blocked; the init system is not asked.
        """
        path, reader = self.fifo()
        failing = script(self.root, "failing", "exit 3\n")
        child = self.daemon("-q", "-c", self.conf(
            path, f"test-binary = {failing}\nretry-timeout = 0\n"))
        child.waitLog("Shutdown blocked by --no-action (error 3", 30)
        reader.read(4)
        self.assertEqual(reader.bytes, [])
        self.assertNotIn("opened the watchdog device", child.log())
        child.kill(signal.SIGTERM)
        self.assertFalse(os.path.exists(self.initCalls))

    def test_sdNotify(self) -> None:
        """
        With NOTIFY_SOCKET set, READY=1 comes at start and WATCHDOG=1 with
        each refresh, as datagrams on the socket the test made.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        address = os.path.join(self.root, "notify")
        sock.bind(address)
        sock.settimeout(30)
        self.env["NOTIFY_SOCKET"] = address
        self.daemon("-q", "-c", self.conf(None))
        messages = []
        while sum(m.count("WATCHDOG=1") for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        self.assertIn("READY=1", messages[0].split("\n"))
        self.assertIn("WATCHDOG=1", messages[-1].split("\n"))


class DecisionTests(TestCase):
    """
    A decided shutdown, in this process with the real reactor: a real test
    program fails, the admin gets mail through a real SMTP server (Twisted's
    ESMTP with STARTTLS and a test CA), the action is called once, and the
    device (a FIFO) is fed through the grace and not after it.
    """

    @defer.inlineCallbacks
    def test_decision(self) -> defer.Deferred[None]:
        """
        The whole sequence, with timings checked against the grace
        (sigterm-delay 1 s + margin 0.5 s).
        """
        from twisted.internet import reactor

        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "log"))
        ca = makeTestCA(os.path.join(root, "ca"))
        server = startSMTPServer(self, ca)
        path = os.path.join(root, "watchdog")
        os.mkfifo(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, fd)
        reader = Reader(fd)
        device = WatchdogDevice(path, 60, interval=1)
        mailer = Mailer(reactor, admin="ops@example.test", host="127.0.0.1",
                        port=server.port, caFile=ca.caCert, hostname="node7.example.test")
        failing = script(root, "failing", "exit 3\n")
        runner = ChildRunner(reactor, killGrace=0.0)
        check = C.TestProgramCheck(failing, runner, os.path.join(root, "log"), 60)
        cfg = attrs.evolve(config.parse([], "<test>"), logDir=os.path.join(root, "log"),
                           retryTimeout=0, sigtermDelay=1, admin="ops@example.test")
        action = RecordingShutdown()
        service = WatchdogService(cfg, [check], action=action, device=device, mailer=mailer,
                                  reactor=reactor)
        service.margin = 0.5
        service.privilegedStartService()
        service.startService()
        self.addCleanup(runner.stopAll)
        self.addCleanup(service.stopService)
        deadline = time.monotonic() + 30
        while not action.calls and time.monotonic() < deadline:
            reader.read(0)
            yield task.deferLater(reactor, 0.02, lambda: None)
        asked = time.monotonic()
        self.assertEqual(action.calls, [(3, "reboot")])
        self.assertEqual(len(server.messages), 1)
        mail = server.messages[0]
        self.assertTrue(mail.tls)
        self.assertEqual(mail.recipients, ["ops@example.test"])
        self.assertEqual(mail.headers["subject"], "node7.example.test is going down!")
        self.assertIn("because of error 3!", mail.body)
        # Fed through the grace, then not any more.
        while time.monotonic() < asked + 4:
            reader.read(0)
            yield task.deferLater(reactor, 0.02, lambda: None)
        after = [t - asked for t in reader.nulTimes() if t > asked]
        self.assertTrue(after, "the device was not fed during the grace")
        self.assertLess(max(after), 1.5 + 0.3)
        self.assertFalse(service.feeding)
        self.assertEqual(action.calls, [(3, "reboot")])
        self.assertGreater(service.failures[failing], 1)
        yield service.stopService()
        reader.read(0.5)
        self.assertNotIn(b"V", reader.text())
