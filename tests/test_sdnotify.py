"""
Tests for L{sysmon.sdnotify}: notifications reach a real C{AF_UNIX}
datagram socket the test binds, by path and in the abstract namespace.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sysmon.sdnotify import Notifier, watchdogInterval


class NotifierTests(SynchronousTestCase):
    """
    L{Notifier} against a real listening socket.
    """

    def setUp(self):
        # A short directory: socket paths are limited to 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="sdn")
        self.addCleanup(shutil.rmtree, self.dir)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict) -> None:
        if event.get("log_namespace") == "sysmon.sdnotify.Notifier":
            self.events.append(event)

    def listen(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(10)
        return sock

    def notifier(self, environ: dict, **kw) -> Notifier:
        n = Notifier(environ, **kw)
        self.addCleanup(n.close)
        return n

    def test_pathSocket(self):
        """
        READY=1 and WATCHDOG=1 arrive as sent, one datagram each, from one
        non-blocking close-on-exec socket.
        """
        path = os.path.join(self.dir, "notify")
        server = self.listen(path)
        n = self.notifier({"NOTIFY_SOCKET": path})
        self.assertTrue(n.enabled)
        self.assertTrue(n.send("READY=1"))
        self.assertEqual(server.recv(4096), b"READY=1")
        sock = n._sock
        self.assertTrue(n.send("WATCHDOG=1"))
        self.assertEqual(server.recv(4096), b"WATCHDOG=1")
        self.assertIs(n._sock, sock)
        self.assertFalse(sock.getblocking())
        self.assertFalse(os.get_inheritable(sock.fileno()))

    def test_severalFields(self):
        """
        Several fields go in one datagram, one per line; a newline inside a
        field cannot start a line of its own.
        """
        path = os.path.join(self.dir, "notify")
        server = self.listen(path)
        n = self.notifier({"NOTIFY_SOCKET": path})
        self.assertTrue(n.send("READY=1", "STATUS=checks ok\nSTOPPING=1"))
        self.assertEqual(server.recv(4096), b"READY=1\nSTATUS=checks ok STOPPING=1")

    def test_abstractSocket(self):
        """
        C{@name} is a name in the abstract namespace (leading NUL).
        """
        name = f"sysmon-test-{os.getpid()}-{id(self)}"
        server = self.listen("\0" + name)
        n = self.notifier({"NOTIFY_SOCKET": "@" + name})
        self.assertTrue(n.send("WATCHDOG=1"))
        self.assertEqual(server.recv(4096), b"WATCHDOG=1")

    def test_noSocket(self):
        """
        Without NOTIFY_SOCKET nothing is sent and C{send} says so.
        """
        n = self.notifier({})
        self.assertFalse(n.enabled)
        self.assertFalse(n.send("READY=1"))
        self.assertIsNone(n._sock)
        self.assertEqual(self.events, [])

    def test_relativeName(self):
        """
        A NOTIFY_SOCKET that is neither absolute nor abstract (such as a
        vsock address) turns notifications off, with one warning.
        """
        n = self.notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
        self.assertFalse(n.enabled)
        self.assertFalse(n.send("READY=1"))
        self.assertEqual(len(self.events), 1)
        self.assertIn("vsock:2:1234", formatEvent(self.events[0]))

    def test_nobodyListens(self):
        """
        A socket path nobody listens on: C{send} returns False, never
        raises, and the failure is logged once a minute.
        """
        clock = Clock()
        path = os.path.join(self.dir, "gone")
        n = self.notifier({"NOTIFY_SOCKET": path}, now=clock.seconds)
        self.assertFalse(n.send("READY=1"))
        self.assertFalse(n.send("WATCHDOG=1"))
        self.assertEqual(len(self.events), 1)
        self.assertIn(path, formatEvent(self.events[0]))
        clock.advance(61)
        self.assertFalse(n.send("WATCHDOG=1"))
        self.assertEqual(len(self.events), 2)

    def test_listenerGoesAway(self):
        """
        A service manager that closed its socket: False, no exception.
        """
        path = os.path.join(self.dir, "notify")
        server = self.listen(path)
        n = self.notifier({"NOTIFY_SOCKET": path})
        self.assertTrue(n.send("READY=1"))
        server.close()
        os.unlink(path)
        self.assertFalse(n.send("WATCHDOG=1"))

    def test_closeAndSendAgain(self):
        """
        C{close} releases the socket; a later send opens a new one.
        """
        path = os.path.join(self.dir, "notify")
        server = self.listen(path)
        n = self.notifier({"NOTIFY_SOCKET": path})
        n.send("READY=1")
        n.close()
        self.assertIsNone(n._sock)
        n.close()
        self.assertTrue(n.send("STOPPING=1"))
        self.assertEqual(server.recv(4096), b"READY=1")
        self.assertEqual(server.recv(4096), b"STOPPING=1")


class WatchdogIntervalTests(SynchronousTestCase):
    """
    L{watchdogInterval} reads the service watchdog timeout.
    """

    def test_unset(self):
        """
        No WATCHDOG_USEC: no timeout.
        """
        self.assertIsNone(watchdogInterval({}))

    def test_seconds(self):
        """
        WATCHDOG_USEC is given in seconds.
        """
        self.assertEqual(watchdogInterval({"WATCHDOG_USEC": "30000000"}), 30.0)
        self.assertEqual(watchdogInterval({"WATCHDOG_USEC": "500000"}), 0.5)

    def test_ourPid(self):
        """
        WATCHDOG_PID naming us (given or C{os.getpid()}) keeps the timeout.
        """
        env = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "4242"}
        self.assertEqual(watchdogInterval(env, pid=4242), 20.0)
        env["WATCHDOG_PID"] = str(os.getpid())
        self.assertEqual(watchdogInterval(env), 20.0)

    def test_otherPid(self):
        """
        WATCHDOG_PID naming another process: the timeout is not ours.
        """
        env = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "4243"}
        self.assertIsNone(watchdogInterval(env, pid=4242))

    def test_invalid(self):
        """
        Values that are not positive integers mean no timeout.
        """
        for usec in ["", "abc", "0", "-5", "1.5"]:
            self.assertIsNone(watchdogInterval({"WATCHDOG_USEC": usec}), usec)
        self.assertIsNone(
            watchdogInterval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, pid=1)
        )
