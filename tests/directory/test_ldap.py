"""
Tests for the LDAP backend's parts that need no server: the settings file,
filters, entries to records, and the cache and outage rules of
L{LDAPHostDirectory} (with a fake connection and a fake clock).  The same
code against a real slapd is in L{tests.directory.test_live}.
"""

from __future__ import annotations

import os

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sysmon.directory import DirectoryError, DirectoryUnavailable, HostRecord, IHostDirectory
from sysmon.directory.ldap import (
    DEFAULT_MAP,
    BadEntry,
    LDAPHostDirectory,
    LDAPSettings,
    loadSettings,
    recordsFromEntry,
    searchFilter,
)
from sysmon.testing import LogCapture

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "conf", "ldap", "directory.conf")


def settings(**kw) -> LDAPSettings:
    kw.setdefault("url", "ldap://127.0.0.1:389")
    kw.setdefault("base", "ou=hosts,dc=sysmon,dc=test")
    return LDAPSettings(**kw)


class SettingsTests(SynchronousTestCase):
    """
    L{loadSettings}: the settings file and the URL.
    """

    def write(self, text: str, mode: int = 0o600, name: str = "settings") -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_urlAlone(self):
        """
        A URL with the base DN as its path is enough; the rest defaults.
        """
        s = loadSettings("ldap://ldap.example.org:3389/ou=hosts,dc=example,dc=org")
        self.assertEqual(s.url, "ldap://ldap.example.org:3389")
        self.assertEqual(s.base, "ou=hosts,dc=example,dc=org")
        self.assertEqual((s.bindDN, s.password, s.startTLS, s.caFile), (None, None, False, None))
        self.assertEqual(s.filter, "(objectClass=ipHost)")
        self.assertEqual(dict(s.attributes), dict(DEFAULT_MAP))
        self.assertEqual((s.ttl, s.timeout, s.retry), (300.0, 5.0, 10.0))
        self.assertEqual(s.security, "none")

    def test_percentEncodedBase(self):
        """
        The URL's path is percent-decoded (RFC 4516), so a DN with a space
        works.
        """
        s = loadSettings("ldaps://h/ou=cluster%20hosts,dc=x")
        self.assertEqual(s.base, "ou=cluster hosts,dc=x")
        self.assertEqual(s.security, "ldaps")

    def test_file(self):
        """
        Every key of the settings file is read; the password comes from its
        file without the final newline and a relative password file is
        relative to the settings file.
        """
        secret = self.write("s3cret\n", name="ldap.secret")
        ca = self.write("-----BEGIN CERTIFICATE-----\n", name="ca.pem")
        path = os.path.join(os.path.dirname(secret), "directory.conf")
        with open(path, "w") as f:
            f.write(
            "url = ldap://h:1389\n"
            "base = ou=hosts,dc=x\n"
            "bind_dn = cn=reader,dc=x\n"
            f"password_file = {os.path.basename(secret)}\n"
            "starttls = yes\n"
            f"ca_file = {ca}\n"
            "filter = (objectClass=sysmonHost)\n"
            "map.node = employeeNumber\n"
            "ttl = 60\ntimeout = 2\nretry = 3\n")  # fmt: skip
        s = loadSettings(configFile=path)
        self.assertEqual(s.password, "s3cret")
        self.assertEqual(s.passwordFile, os.path.abspath(secret))
        self.assertEqual((s.bindDN, s.startTLS, s.caFile), ("cn=reader,dc=x", True, ca))
        self.assertEqual(s.attributes["node"], "employeeNumber")
        self.assertEqual(s.attributes["name"], "cn")
        self.assertEqual((s.ttl, s.timeout, s.retry), (60.0, 2.0, 3.0))
        self.assertEqual(s.security, "StartTLS")
        self.assertNotIn("s3cret", repr(s))

    def test_urlOverridesFile(self):
        """
        C{--directory} wins over the file's url, and its path over C{base}.
        """
        path = self.write("url = ldap://a/dc=a\nbase = dc=b\n")
        self.assertEqual(loadSettings(configFile=path).base, "dc=a")
        s = loadSettings("ldap://c/dc=c", path)
        self.assertEqual((s.url, s.base), ("ldap://c", "dc=c"))

    def test_badLines(self):
        """
        A bad value or an unknown key names the file and line.
        """
        path = self.write("url = ldap://a/dc=a\n\ntimeout = never\n")
        e = self.assertRaises(DirectoryError, loadSettings, None, path)
        self.assertIn(f"{path}:3:", str(e))
        path = self.write("url = ldap://a/dc=a\nbindDN = cn=x\n")
        e = self.assertRaises(DirectoryError, loadSettings, None, path)
        self.assertIn(f"{path}:2:", str(e))
        path = self.write("url = ldap://a/dc=a\nfilter = objectClass=ipHost\n")
        e = self.assertRaises(DirectoryError, loadSettings, None, path)
        self.assertIn(f"{path}:2:", str(e))

    def test_refused(self):
        """
        Incomplete or inconsistent settings are refused with the reason.
        """
        secret = self.write("pw\n")
        cases = [
            ("", "no LDAP server"),
            ("url = http://a/dc=x\n", "not an ldap:// or ldaps:// URL"),
            ("url = ldap://a\n", "no base DN"),
            ("url = ldap://a/dc=x??sub?(cn=*)\n", "only ldap[s]://host[:port]/base"),
            ("url = ldap://a:99999/dc=x\n", "bad port"),
            ("url = ldap://a/dc=x\nbind_dn = cn=r\n", "no password_file"),
            (f"url = ldap://a/dc=x\npassword_file = {secret}\n", "no bind_dn"),
            ("url = ldaps://a/dc=x\nstarttls = yes\n", "TLS already"),
            ("url = ldap://a/dc=x\nca_file = /nonexistent/ca.pem\n", "does not exist"),
            ("url = ldap://a/dc=x\nmap.rack = l\n", "unknown map key(s) map.rack"),
            ("url = ldap://a/dc=x\nbind_dn = cn=r\npassword_file = /nonexistent\n",
             "cannot read password file"),
            (f"url = ldap://a/dc=x\nbind_dn = cn=r\npassword_file = {self.write('')}\n",
             "is empty"),
        ]
        for text, message in cases:
            path = self.write(text)
            e = self.assertRaises(DirectoryError, loadSettings, None, path)
            self.assertIn(message, str(e), f"{text}: {e}")

    def test_sample(self):
        """
        The sample settings file under conf/ldap loads (its password file
        aside, which does not exist here).
        """
        with open(SAMPLE) as f:
            text = f.read()
        lines = [line for line in text.splitlines() if not line.startswith("password_file")]
        s = loadSettings(configFile=self.write("\n".join(lines) + "\nbind_dn =\n"))
        self.assertTrue(s.url.startswith("ldap"))
        self.assertTrue(s.base)


class RecordTests(SynchronousTestCase):
    """
    L{searchFilter} and L{recordsFromEntry}.
    """

    def test_filters(self):
        """
        Questions are the host filter ANDed with the field's attribute;
        filter metacharacters in the value are escaped.
        """
        s = settings(filter="(objectClass=sysmonHost)", attributes={**DEFAULT_MAP, "node": "uidNumber"})
        self.assertEqual(searchFilter(s), "(objectClass=sysmonHost)")
        self.assertEqual(searchFilter(s, "address", "10.0.0.1"),
                         "(&(objectClass=sysmonHost)(ipHostNumber=10.0.0.1))")
        self.assertEqual(searchFilter(s, "node", 7), "(&(objectClass=sysmonHost)(uidNumber=7))")
        self.assertEqual(searchFilter(s, "name", "a*)(cn=b\\"),
                         "(&(objectClass=sysmonHost)(cn=a\\2a\\29\\28cn=b\\5c))")

    def test_entry(self):
        """
        An entry gives one record per address, its RDN value as the name,
        the node number, the magic read as hex and its DN; attribute names
        match case-insensitively and values may be bytes.
        """
        dn = "cn=node01,ou=hosts,dc=x"
        records = recordsFromEntry(dn, {
            "CN": [b"n01", b"node01"], "ipHostNumber": [b"10.0.0.1", b"0:0::0:1"],
            "sysmonnodenumber": [b"1"], "netdumpMagic": [b"0123456789ABCDEF"]}, settings())
        self.assertEqual(records, [
            HostRecord("node01", "10.0.0.1", 1, 0x0123456789ABCDEF, {"dn": dn}),
            HostRecord("node01", "::1", 1, 0x0123456789ABCDEF, {"dn": dn})])
        bare = recordsFromEntry("cn=x,dc=x", {"cn": ["x"], "ipHostNumber": ["10.0.0.2"]}, settings())
        self.assertEqual((bare[0].node, bare[0].magic), (None, None))

    def test_badEntries(self):
        """
        An entry that cannot be a host is a L{BadEntry} naming its DN, the
        attribute and the value.
        """
        dn = "cn=bad,dc=x"
        base = {"cn": ["bad"], "ipHostNumber": ["10.0.0.1"]}
        cases = [
            ({"cn": ["bad"]}, "no ipHostNumber"),
            ({"ipHostNumber": ["10.0.0.1"]}, "no cn"),
            ({**base, "ipHostNumber": ["10.0.0.300"]}, "'10.0.0.300' is not an IP address"),
            ({**base, "sysmonNodeNumber": ["-3"]}, "sysmonNodeNumber '-3' is not an integer"),
            ({**base, "sysmonNodeNumber": ["1", "2"]}, "has 2 values"),
            ({**base, "netdumpMagic": ["0123456789abcdef0"]}, "netdumpMagic '0123456789abcdef0'"),
            ({**base, "netdumpMagic": ["xyz"]}, "is not a hexadecimal number"),
        ]
        for attributes, message in cases:
            e = self.assertRaises(BadEntry, recordsFromEntry, dn, attributes, settings())
            self.assertIn(dn, str(e))
            self.assertIn(message, str(e))


class FakeClient:
    """
    Stands in for L{LDAPClient}: answers from C{hosts}, or raises C{error}.
    """

    def __init__(self, hosts: list[HostRecord]) -> None:
        self.hostList = hosts
        self.error: Exception | None = None
        self.asked: list[tuple[str, object]] = []
        self.skipped: list[str] = []
        self.closed = 0

    def lookup(self, field, value):
        self.asked.append((field, value))
        if self.error is not None:
            raise self.error
        for h in self.hostList:
            if getattr(h, field) == value:
                return h
        return None

    def hosts(self):
        self.asked.append(("hosts", None))
        if self.error is not None:
            raise self.error
        return list(self.hostList)

    def close(self):
        self.closed += 1


class Thread:
    """
    Stands in for the worker thread: runs at once, or holds every call
    until released (a hung server).
    """

    def __init__(self) -> None:
        self.hold = False
        self.held: list[tuple[defer.Deferred, object, tuple]] = []

    def __call__(self, f, *args):
        if not self.hold:
            return defer.maybeDeferred(f, *args)
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, f, args))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, f, args in held:
            try:
                d.callback(f(*args))
            except Exception as e:
                d.errback(e)


N1 = HostRecord("node01", "10.0.0.1", 1, 0x1111)
N2 = HostRecord("node02", "10.0.0.2", 2, 0x2222)


class DirectoryTests(SynchronousTestCase):
    """
    L{LDAPHostDirectory}: cache, time-out and outage rules.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.client = FakeClient([N1, N2])
        self.thread = Thread()
        self.logs = LogCapture(self)
        self.directory = LDAPHostDirectory(
            settings(ttl=60, timeout=2, retry=10), reactor=self.clock,
            runInThread=self.thread, client=self.client)

    def lookup(self, address):
        return self.successResultOf(self.directory.lookupAddress(address))

    def test_interface(self):
        """
        It provides L{IHostDirectory}.
        """
        self.assertTrue(verifyObject(IHostDirectory, self.directory))

    def test_cachedForTTL(self):
        """
        An answer is reused for C{ttl} seconds, then asked again; a host the
        server does not know is cached too.
        """
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.assertIsNone(self.lookup("10.0.0.9"))
        self.clock.advance(59)
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.assertIsNone(self.lookup("10.0.0.9"))
        self.assertEqual(len(self.client.asked), 2)
        self.clock.advance(2)
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.assertEqual(len(self.client.asked), 3)

    def test_keys(self):
        """
        Lookups by name and node ask by that field; equivalent spellings of
        an address are one cache entry; a non-address is unknown without
        asking.
        """
        self.assertEqual(self.successResultOf(self.directory.lookupName("node02")), N2)
        self.assertEqual(self.successResultOf(self.directory.lookupNode(1)), N1)
        self.assertEqual(self.lookup("::ffff:10.0.0.1"), N1)
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.assertIsNone(self.lookup("not-an-address"))
        self.assertEqual(self.client.asked,
                         [("name", "node02"), ("node", 1), ("address", "10.0.0.1")])

    def test_oneQuestionAtATime(self):
        """
        Lookups of one key while its question is out share the answer.
        """
        self.thread.hold = True
        first = self.directory.lookupAddress("10.0.0.1")
        second = self.directory.lookupAddress("10.0.0.1")
        self.assertNoResult(first)
        self.thread.release()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (N1, N1))
        self.assertEqual(len(self.client.asked), 1)

    def test_outageServesStaleCache(self):
        """
        With the server out of reach, expired answers keep serving, a host
        never seen is a L{DirectoryUnavailable} "unknown host", one warning
        is logged for the whole outage, and the server is asked again only
        every C{retry} seconds; when it answers again, that is logged and
        fresh answers are used.
        """
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.clock.advance(61)
        self.client.error = DirectoryUnavailable("LDAP server ldap://127.0.0.1:389 unreachable: "
                                                 "connection refused")
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        f = self.failureResultOf(self.directory.lookupAddress("10.0.0.2"), DirectoryUnavailable)
        self.assertIn("unknown host (address 10.0.0.2)", f.getErrorMessage())
        self.assertIn("connection refused", f.getErrorMessage())
        asked = len(self.client.asked)
        for _ in range(30):  # 12 s
            self.assertEqual(self.lookup("10.0.0.1"), N1)
            self.failureResultOf(self.directory.lookupAddress("10.0.0.2"))
            self.clock.advance(0.4)
        self.assertEqual(len(self.client.asked), asked + 1)  # one retry after 10 s
        self.assertEqual(self.logs.count("cannot answer"), 1)
        self.client.error = None
        self.clock.advance(10)
        changed = HostRecord("node01", "10.0.0.1", 11, 0x1111)
        self.client.hostList[0] = changed
        self.assertEqual(self.lookup("10.0.0.1"), changed)
        self.assertEqual(self.logs.count("is back after"), 1)
        self.assertEqual(self.lookup("10.0.0.2"), N2)

    def test_timeout(self):
        """
        A server that does not answer fails the lookup after C{timeout}
        seconds, from the cache or as an unknown host, and starts an outage;
        the late answer is dropped.
        """
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.clock.advance(61)
        self.thread.hold = True
        known = self.directory.lookupAddress("10.0.0.1")
        unknown = self.directory.lookupAddress("10.0.0.2")
        self.assertNoResult(known)
        self.clock.advance(1.9)
        self.assertNoResult(unknown)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(known), N1)
        f = self.failureResultOf(unknown, DirectoryUnavailable)
        self.assertIn("did not answer within 2s", f.getErrorMessage())
        self.assertEqual(self.logs.count("cannot answer"), 1)
        self.thread.release()  # the late answers are dropped: still in the outage
        self.assertIsNotNone(self.directory._outage)
        self.failureResultOf(self.directory.lookupAddress("10.0.0.2"), DirectoryUnavailable)

    def test_startsInOutage(self):
        """
        A server out of reach at start (L{verify}'s answer) starts the
        outage: its one warning is logged then, and the first lookups do not
        wait for it.
        """
        directory = LDAPHostDirectory(settings(retry=10), reactor=self.clock,
                                      runInThread=self.thread, client=self.client,
                                      unreachable="LDAP server down")
        self.assertEqual(self.logs.count("cannot answer: LDAP server down"), 1)
        self.failureResultOf(directory.lookupAddress("10.0.0.1"), DirectoryUnavailable)
        self.assertEqual(self.client.asked, [])
        self.clock.advance(10)
        self.assertEqual(self.successResultOf(directory.lookupAddress("10.0.0.1")), N1)

    def test_badEntry(self):
        """
        An entry that cannot be read fails that lookup only: no outage.
        """
        self.client.error = BadEntry("cn=x,dc=x: netdumpMagic 'q' is not a hexadecimal number")
        f = self.failureResultOf(self.directory.lookupAddress("10.0.0.1"), BadEntry)
        self.assertIn("cn=x,dc=x", f.getErrorMessage())
        self.assertIsNone(self.directory._outage)
        self.assertEqual(self.logs.count("cannot answer"), 0)

    def test_permanentErrorServesCache(self):
        """
        A server that starts refusing the bind (a changed password) is an
        outage too: the cache keeps serving and the reason is logged once.
        """
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.clock.advance(61)
        self.client.error = DirectoryError("LDAP server ldap://x refused the bind as cn=r: "
                                           "invalid credentials")
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.assertEqual(self.logs.count("invalid credentials"), 1)

    def test_hosts(self):
        """
        C{hosts()} always asks the server and fills the cache; in an outage
        it fails rather than give a partial list.
        """
        self.assertEqual(self.successResultOf(self.directory.hosts()), [N1, N2])
        self.assertEqual(self.lookup("10.0.0.2"), N2)
        self.assertEqual(self.successResultOf(self.directory.lookupNode(1)), N1)
        self.assertEqual(self.client.asked, [("hosts", None)])
        self.client.error = DirectoryUnavailable("down")
        self.failureResultOf(self.directory.hosts(), DirectoryUnavailable)
        self.failureResultOf(self.directory.hosts(), DirectoryUnavailable)
        self.assertEqual(len(self.client.asked), 2)

    def test_closed(self):
        """
        After C{close()}, cached answers still serve and anything else fails
        at once; the connection is closed.
        """
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.directory.close()
        self.assertEqual(self.client.closed, 1)
        self.assertEqual(self.lookup("10.0.0.1"), N1)
        self.failureResultOf(self.directory.lookupAddress("10.0.0.2"), DirectoryUnavailable)

    def test_passwordFileMode(self):
        """
        A password file others can read is warned about.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("pw")
        os.chmod(path, 0o644)
        LDAPHostDirectory(settings(bindDN="cn=r", password="pw", passwordFile=path),
                          reactor=self.clock, runInThread=self.thread, client=self.client)
        self.assertEqual(self.logs.count("can be read by others (mode 0644)"), 1)
        os.chmod(path, 0o600)
        LDAPHostDirectory(settings(bindDN="cn=r", password="pw", passwordFile=path),
                          reactor=self.clock, runInThread=self.thread, client=self.client)
        self.assertEqual(self.logs.count("can be read by others"), 1)
