"""
Tests for the host directory interface and its file backend.
"""

from __future__ import annotations

import os

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sysmon.directory import DirectoryError, HostRecord, IHostDirectory, normalizeAddress
from sysmon.directory.file import FileHostDirectory, parseHosts

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(os.path.dirname(HERE), "conf", "hosts")


class RecordTests(SynchronousTestCase):
    """
    L{HostRecord} and address normalization.
    """

    def test_normalize(self):
        """
        Equivalent spellings of an address are one key; IPv4-mapped IPv6 is
        IPv4; anything else is a L{ValueError}.
        """
        self.assertEqual(normalizeAddress("0:0::1"), "::1")
        self.assertEqual(normalizeAddress(" 10.0.0.1 "), "10.0.0.1")
        self.assertEqual(normalizeAddress("::ffff:10.0.0.1"), "10.0.0.1")
        self.assertRaises(ValueError, normalizeAddress, "10.0.0.256")
        self.assertRaises(ValueError, normalizeAddress, "host.example")

    def test_recordIsFrozen(self):
        """
        Records are immutable, attributes included.
        """
        r = HostRecord("a", "10.0.0.1", 1, None, {"rack": "r1"})
        self.assertRaises(Exception, setattr, r, "node", 2)
        with self.assertRaises(TypeError):
            r.attributes["rack"] = "r2"  # type: ignore[index]
        self.assertEqual(r, HostRecord("a", "10.0.0.1", 1, None, {"rack": "r1"}))


class ParseTests(SynchronousTestCase):
    """
    L{parseHosts}.
    """

    def test_sample(self):
        """
        The sample file under conf/ parses.
        """
        with open(SAMPLE) as f:
            records = parseHosts(f, SAMPLE)
        self.assertEqual([r.name for r in records], ["master", "node00", "node01", "node02"])
        self.assertEqual(records[1].magic, 0x0123456789ABCDEF)
        self.assertEqual(records[1].node, 0)
        self.assertIsNone(records[0].node)
        self.assertEqual(records[3].address, "2001:db8::12")
        self.assertEqual(dict(records[1].attributes), {"rack": "r1"})

    def bad(self, text, message):
        e = self.assertRaises(DirectoryError, parseHosts, text.splitlines(), "hosts")
        self.assertEqual(str(e), message)

    def test_badLines(self):
        """
        Every kind of bad line is an error naming file and line.
        """
        self.bad("# c\nonlyname", "hosts:2: expected 'name address [key=value ...]', got 'onlyname'")
        self.bad("a 10.0.0.300", "hosts:1: bad address '10.0.0.300': expected an IPv4 or IPv6 address")
        self.bad("a 10.0.0.1 node=x", "hosts:1: bad node 'x': expected an integer from 0 to 2147483647")
        self.bad("a 10.0.0.1 node=-1", "hosts:1: bad node '-1': expected an integer from 0 to 2147483647")
        self.bad("a 10.0.0.1 magic=0x12345678123456789",
                 "hosts:1: bad magic '0x12345678123456789': expected a hexadecimal number of at most 16 digits")
        self.bad("a 10.0.0.1 rack", "hosts:1: expected key=value, got 'rack'")
        self.bad("a 10.0.0.1 r=1 r=2", "hosts:1: r given twice")
        self.bad("node=1 10.0.0.1", "hosts:1: the line must start with a host name, not 'node=1'")

    def test_duplicates(self):
        """
        Names, addresses and node numbers are unique.
        """
        self.bad("a 10.0.0.1\na 10.0.0.2", "hosts:2: name a already given on line 1")
        self.bad("a 10.0.0.1\nb 10.0.0.01", "hosts:2: bad address '10.0.0.01': expected an IPv4 or IPv6 address")
        self.bad("a ::1\n\nb 0::1", "hosts:3: address ::1 already given on line 1")
        self.bad("a 10.0.0.1 node=3\nb 10.0.0.2 node=3", "hosts:2: node 3 already given on line 1")


class FileDirectoryTests(SynchronousTestCase):
    """
    L{FileHostDirectory}.
    """

    def setUp(self):
        self.path = self.mktemp()
        self.write("n1 10.0.0.1 node=1 magic=1111111111111111\nn2 ::1 node=2\n")
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)
        # Make sure a rewrite within one mtime tick is still seen as new.
        st = os.stat(self.path)
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9 * (1 + len(text))))

    def test_interface(self):
        """
        The file backend provides L{IHostDirectory}.
        """
        verifyObject(IHostDirectory, FileHostDirectory(self.path))

    def test_lookups(self):
        """
        Hosts are found by address (any spelling), name and node; unknown
        ones give L{None}.
        """
        d = FileHostDirectory(self.path)
        self.assertEqual(self.successResultOf(d.lookupAddress("10.0.0.1")).name, "n1")
        self.assertEqual(self.successResultOf(d.lookupAddress("0::1")).name, "n2")
        self.assertEqual(self.successResultOf(d.lookupName("n2")).node, 2)
        self.assertEqual(self.successResultOf(d.lookupNode(1)).magic, 0x1111111111111111)
        self.assertIsNone(self.successResultOf(d.lookupAddress("10.0.0.9")))
        self.assertIsNone(self.successResultOf(d.lookupAddress("not an address")))
        self.assertIsNone(self.successResultOf(d.lookupNode(7)))
        self.assertEqual([h.name for h in self.successResultOf(d.hosts())], ["n1", "n2"])

    def test_badFileAtStart(self):
        """
        A bad or missing file is an error when the directory is made.
        """
        self.write("n1 10.0.0.1 node=one\n")
        e = self.assertRaises(DirectoryError, FileHostDirectory, self.path)
        self.assertEqual(str(e), f"{self.path}:1: bad node 'one': expected an integer from 0 to 2147483647")
        e = self.assertRaises(DirectoryError, FileHostDirectory, self.path + ".none")
        self.assertIn("cannot read hosts file", str(e))

    def test_reloadOnChange(self):
        """
        A changed file is read again on the next lookup.
        """
        d = FileHostDirectory(self.path)
        self.write("n3 10.0.0.3 node=3\n")
        self.assertEqual(self.successResultOf(d.lookupNode(3)).name, "n3")
        self.assertIsNone(self.successResultOf(d.lookupNode(1)))

    def test_badEditKeepsOldData(self):
        """
        A bad edit is logged once, with file and line, and the previous
        hosts keep serving; a later good edit is taken.
        """
        d = FileHostDirectory(self.path)
        self.write("n1 10.0.0.1\nbroken\n")
        self.assertEqual(self.successResultOf(d.lookupNode(1)).name, "n1")
        self.assertEqual(self.successResultOf(d.lookupNode(2)).name, "n2")
        errors = [e for e in self.logged if e.get("log_level").name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn(f"{self.path}:2:", errors[0]["error"])
        self.assertIsNotNone(self.successResultOf(d.lookupName("n1")))
        self.assertEqual(len([e for e in self.logged if e.get("log_level").name == "error"]), 1)
        self.write("n9 10.0.0.9\n")
        self.assertEqual(self.successResultOf(d.lookupName("n9")).address, "10.0.0.9")

    def test_removedFileKeepsOldData(self):
        """
        A hosts file that disappears leaves the previous hosts serving, with
        one error logged.
        """
        d = FileHostDirectory(self.path)
        os.unlink(self.path)
        self.assertEqual(self.successResultOf(d.lookupNode(1)).name, "n1")
        self.successResultOf(d.lookupNode(2))
        errors = [e for e in self.logged if e.get("log_level").name == "error"]
        self.assertEqual(len(errors), 1)
