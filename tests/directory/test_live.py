"""
The LDAP backend against a real OpenLDAP slapd (L{tests.directory.slapd}):
lookups, binds, TLS with a test CA, and the server stopped or hung in the
middle of a run while the reactor keeps turning.
"""

from __future__ import annotations

import os
import time

import attrs
from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from sysmon.directory import DirectoryError, DirectoryUnavailable
from sysmon.directory.ldap import LDAPHostDirectory, LDAPSettings, loadSettings, verify
from sysmon.testing import LogCapture, makeTestCA
from tests.directory.slapd import HOSTS, READER, Slapd

MAGIC1 = 0x0123456789ABCDEF
MAGIC2 = 0xFEDCBA9876543210


def sleep(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, lambda: None)


class Lag:
    """
    Measures how long the reactor goes without turning: a 5 ms looping
    call records the longest gap between two of its runs.
    """

    def __init__(self) -> None:
        from twisted.internet import reactor

        self.worst = 0.0
        self._last = time.monotonic()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor
        self._loop.start(0.005)

    def _tick(self) -> None:
        now = time.monotonic()
        self.worst = max(self.worst, now - self._last)
        self._last = now

    def stop(self) -> float:
        self._loop.stop()
        return self.worst


class LiveTestCase(TestCase):
    """
    A slapd with three hosts, and settings that bind as the reader.
    """

    timeout = 120

    def setUp(self):
        self.slapd = Slapd(self)
        self.slapd.start()
        self.slapd.addHost("node01", "10.1.0.1", node=1, magic=MAGIC1)
        self.slapd.addHost("node02", ["10.1.0.2", "fd00::2"], node=2, magic=MAGIC2)
        self.slapd.addHost("printer", "10.1.0.99", aux=False)
        self.logs = LogCapture(self)

    def settings(self, url: str | None = None, **keys: str) -> LDAPSettings:
        keys.setdefault("bind_dn", READER)
        keys.setdefault("password_file", self.slapd.passwordFile())
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(f"url = {url or self.slapd.url}\nbase = {HOSTS}\n")
            for key, value in keys.items():
                f.write(f"{key} = {value}\n")
        return loadSettings(configFile=path)

    def directory(self, settings: LDAPSettings, unreachable: str | None = None):
        directory = LDAPHostDirectory(settings, unreachable=unreachable)
        self.addCleanup(directory.close)
        return directory


class LookupTests(LiveTestCase):
    """
    Lookups through the worker thread.
    """

    @defer.inlineCallbacks
    def test_lookups(self):
        """
        By address, name and node: name, node number and magic from the
        entry; a host without sysmonHost has neither; an unknown host is
        L{None}; the list has one record per address.
        """
        settings = self.settings()
        self.assertIsNone(verify(settings))
        directory = self.directory(settings)
        node01 = yield directory.lookupAddress("10.1.0.1")
        self.assertEqual((node01.name, node01.address, node01.node, node01.magic),
                         ("node01", "10.1.0.1", 1, MAGIC1))
        self.assertEqual(node01.attributes["dn"], f"cn=node01,{HOSTS}")
        node02 = yield directory.lookupAddress("fd00:0::2")
        self.assertEqual((node02.name, node02.node, node02.magic), ("node02", 2, MAGIC2))
        self.assertEqual((yield directory.lookupName("node02")).node, 2)
        self.assertEqual((yield directory.lookupNode(1)).name, "node01")
        printer = yield directory.lookupAddress("10.1.0.99")
        self.assertEqual((printer.name, printer.node, printer.magic), ("printer", None, None))
        self.assertIsNone((yield directory.lookupAddress("10.1.0.50")))
        self.assertIsNone((yield directory.lookupNode(77)))
        hosts = yield directory.hosts()
        self.assertEqual(sorted((h.name, h.address) for h in hosts), [
            ("node01", "10.1.0.1"), ("node02", "10.1.0.2"), ("node02", "fd00::2"),
            ("printer", "10.1.0.99")])

    def test_anonymousSeesNothing(self):
        """
        Bound anonymously, on a server that only lets the reader see hosts,
        the base is hidden: start fails saying the base does not exist or
        may not be visible to an anonymous bind.
        """
        settings = self.settings(bind_dn="", password_file="")
        e = self.assertRaises(DirectoryError, verify, settings)
        self.assertIn(f"base '{HOSTS}' does not exist, or an anonymous bind may not see it",
                      str(e))

    @defer.inlineCallbacks
    def test_serverRestarted(self):
        """
        The kept connection dies when slapd restarts between two lookups:
        the next lookup opens a new one and is answered, with no outage.
        """
        directory = self.directory(self.settings(ttl="0"))
        self.assertEqual((yield directory.lookupAddress("10.1.0.1")).node, 1)
        self.slapd.stop()
        self.slapd.start()
        self.assertEqual((yield directory.lookupAddress("10.1.0.1")).node, 1)
        self.assertEqual(self.logs.count("cannot answer"), 0)

    @defer.inlineCallbacks
    def test_badEntry(self):
        """
        A host whose magic cannot be read fails its lookup with the DN and
        the value; other hosts are not affected.
        """
        self.slapd.addHost("broken", "10.1.0.7", magic="not-hex")
        directory = self.directory(self.settings())
        failure = yield self.assertFailure(directory.lookupAddress("10.1.0.7"), DirectoryError)
        self.assertIn(f"cn=broken,{HOSTS}: netdumpMagic 'not-hex'", str(failure))
        self.assertEqual((yield directory.lookupAddress("10.1.0.1")).node, 1)


class StartTests(LiveTestCase):
    """
    L{verify}, as daemons call it at start: credentials, TLS and base.
    """

    def test_wrongPassword(self):
        """
        A wrong bind password is a L{DirectoryError} naming the bind DN and
        the password file, not an outage.
        """
        path = self.slapd.passwordFile("not-the-password")
        e = self.assertRaises(DirectoryError, verify, self.settings(password_file=path))
        self.assertNotIsInstance(e, DirectoryUnavailable)
        self.assertIn(f"refused the bind as {READER}: invalid credentials", str(e))
        self.assertIn(path, str(e))

    def test_noSuchBase(self):
        """
        A base DN that does not exist is a L{DirectoryError} naming it.
        """
        settings = attrs.evolve(self.settings(), base="ou=nothing,dc=sysmon,dc=test")
        e = self.assertRaises(DirectoryError, verify, settings)
        self.assertIn("base 'ou=nothing,dc=sysmon,dc=test' does not exist", str(e))

    def test_unreachable(self):
        """
        A server that is not running is not an error at start: L{verify}
        says why, quickly.
        """
        settings = self.settings(timeout="2")
        self.slapd.stop()
        started = time.monotonic()
        reason = verify(settings)
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertIn(f"LDAP server {self.slapd.url} unreachable", reason)

    @defer.inlineCallbacks
    def test_ldaps(self):
        """
        ldaps:// with the test CA as the CA file binds and looks up.
        """
        settings = self.settings(self.slapd.ldapsURL, ca_file=self.slapd.caFile)
        self.assertEqual(settings.security, "ldaps")
        self.assertIsNone(verify(settings))
        self.assertEqual((yield self.directory(settings).lookupAddress("10.1.0.1")).name,
                         "node01")

    @defer.inlineCallbacks
    def test_startTLS(self):
        """
        StartTLS on ldap:// with the test CA binds and looks up.
        """
        settings = self.settings(starttls="yes", ca_file=self.slapd.caFile)
        self.assertEqual(settings.security, "StartTLS")
        self.assertIsNone(verify(settings))
        self.assertEqual((yield self.directory(settings).lookupNode(2)).name, "node02")

    def test_unknownCA(self):
        """
        With another CA as the CA file, ldaps:// and StartTLS both fail at
        start with a message that says the certificate is not trusted and
        names the CA file; neither counts as the server being down.
        """
        other = makeTestCA(os.path.abspath(self.mktemp()))
        for settings in (self.settings(self.slapd.ldapsURL, ca_file=other.caCert),
                         self.settings(starttls="yes", ca_file=other.caCert)):
            e = self.assertRaises(DirectoryError, verify, settings)
            self.assertNotIsInstance(e, DirectoryUnavailable)
            self.assertIn(f"TLS ({settings.security}) failed", str(e))
            self.assertIn(f"not trusted by the CAs in {other.caCert}", str(e))
            self.assertIn("certificate verify failed", str(e))
            self.assertNotIn("('", str(e))  # ldap3's re-raised tuples unwrapped


class OutageTests(LiveTestCase):
    """
    slapd stopped or hung in the middle of a run.
    """

    @defer.inlineCallbacks
    def outage(self, what: str, breakServer, mendServer, timeout: float):
        """
        Look two hosts up, break the server, and for 3 s look up a cached
        host and an unknown one every 50 ms while measuring the reactor;
        then mend it and wait for the unknown host to be answered.  The
        reactor never stalls as long as the timeout, and no lookup takes
        much longer than it (the figures are printed).

        @return: the slowest cached lookup, in seconds.
        """
        directory = self.directory(self.settings(ttl="0.2", timeout=str(timeout), retry="1"))
        self.assertEqual((yield directory.lookupAddress("10.1.0.1")).node, 1)
        self.assertEqual((yield directory.lookupName("node02")).node, 2)
        yield sleep(0.3)  # both expired: every lookup asks the server
        breakServer()
        lag = Lag()
        slowestCached = slowestUnknown = 0.0
        deadline = time.monotonic() + 3
        rounds = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            record = yield directory.lookupAddress("10.1.0.1")
            slowestCached = max(slowestCached, time.monotonic() - started)
            self.assertEqual((record.name, record.node, record.magic), ("node01", 1, MAGIC1))
            self.assertEqual((yield directory.lookupName("node02")).address, "10.1.0.2")
            started = time.monotonic()
            failure = yield self.assertFailure(directory.lookupAddress("10.1.0.99"),
                                               DirectoryUnavailable)
            slowestUnknown = max(slowestUnknown, time.monotonic() - started)
            self.assertIn("unknown host (address 10.1.0.99)", str(failure))
            rounds += 1
            yield sleep(0.05)
        worst = lag.stop()
        self.assertGreater(rounds, 10)
        self.assertEqual(self.logs.count("cannot answer"), 1, self.logs.texts())
        mendServer()
        deadline = time.monotonic() + 10
        while True:
            try:
                printer = yield directory.lookupAddress("10.1.0.99")
                break
            except DirectoryUnavailable:
                self.assertLess(time.monotonic(), deadline, "no recovery")
                yield sleep(0.1)
        self.assertEqual(printer.name, "printer")
        self.assertEqual(self.logs.count("is back after"), 1)
        self.assertEqual(self.logs.count("cannot answer"), 1)
        print(f"\n{what}: worst reactor gap {worst * 1000:.1f} ms, slowest cached lookup "
              f"{slowestCached * 1000:.1f} ms, slowest unknown {slowestUnknown * 1000:.1f} ms "
              f"(timeout {timeout:g} s)")
        self.assertLess(worst, timeout)
        self.assertLess(slowestCached, timeout + 0.5)
        self.assertLess(slowestUnknown, timeout + 0.5)
        return slowestCached

    @defer.inlineCallbacks
    def test_stopped(self):
        """
        slapd stopped: cached hosts keep being answered, an unknown host is
        an "unknown host" error at once, one warning for the outage, the
        reactor never stalls for as long as the timeout, and lookups recover
        when slapd is back.
        """
        yield self.outage("slapd stopped", self.slapd.stop, self.slapd.start, 2.0)

    @defer.inlineCallbacks
    def test_hung(self):
        """
        slapd hung (SIGSTOP: connections are accepted, nothing answers):
        a lookup waits at most the timeout, then the cache answers; the
        reactor keeps turning; SIGCONT brings answers back.
        """
        timeout = 1.0
        cached = yield self.outage("slapd hung", self.slapd.pause, self.slapd.resume, timeout)
        self.assertGreater(cached, timeout * 0.8)  # the first one did wait for the server

    @defer.inlineCallbacks
    def test_startedWhileDown(self):
        """
        A directory made while slapd is down (L{verify} said so) answers
        "unknown host" at once and recovers when slapd starts.
        """
        settings = self.settings(timeout="2", retry="0.5")
        self.slapd.stop()
        reason = verify(settings)
        directory = self.directory(settings, unreachable=reason)
        yield self.assertFailure(directory.lookupAddress("10.1.0.1"), DirectoryUnavailable)
        self.slapd.start()
        yield sleep(0.6)
        self.assertEqual((yield directory.lookupAddress("10.1.0.1")).name, "node01")
        self.assertEqual(self.logs.count("cannot answer"), 1)

