"""
Tests for console text assembly (L{sysmon.netdump.console}), with the real
netconsole captures.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from sysmon.netdump.console import ConsoleStreams

from .captures import available, capture, console


class LogStreamTests(SynchronousTestCase):
    """
    REPLY_LOG chunks placed by offset.
    """

    def test_inOrder(self):
        """
        The first chunk at offset 0 is a boot; chunks in order are passed on.
        """
        s = ConsoleStreams()
        first = s.logChunk("a", 6664, 0, b"hello ", 0)
        self.assertEqual((first.text, first.booted, first.logStart), (b"hello ", True, True))
        self.assertEqual(s.logChunk("a", 6664, 6, b"world\n", 0).text, b"world\n")

    def test_outOfOrder(self):
        """
        An early chunk waits for the one before it.
        """
        s = ConsoleStreams()
        s.logChunk("a", 1, 0, b"aaaa", 0)
        self.assertEqual(s.logChunk("a", 1, 8, b"cccc", 0).text, b"")
        self.assertEqual(s.logChunk("a", 1, 4, b"bbbb", 0).text, b"bbbbcccc")

    def test_overlapAndDuplicate(self):
        """
        Overlapping text is taken once; duplicates are dropped, the first
        chunk's too while it is fresh (later, the same first chunk is the
        client booting again).
        """
        s = ConsoleStreams()
        s.logChunk("a", 1, 0, b"abcdef", 0)
        self.assertEqual(s.logChunk("a", 1, 4, b"efgh", 0).text, b"gh")
        self.assertEqual(s.logChunk("a", 1, 2, b"cd", 0).text, b"")
        duplicate = s.logChunk("a", 1, 0, b"abcdef", 1)
        self.assertEqual((duplicate.text, duplicate.booted), (b"", False))
        rebooted = s.logChunk("a", 1, 0, b"abcdef", 100)
        self.assertEqual((rebooted.text, rebooted.booted), (b"abcdef", True))

    def test_gapMarkedAfterHold(self):
        """
        A missing chunk is given up after the hold time: the gap is marked.
        """
        s = ConsoleStreams()
        s.logChunk("a", 1, 0, b"aaaa", 0)
        s.logChunk("a", 1, 8, b"cccc", 0)
        self.assertEqual(s.tick(1.0), {})
        self.assertEqual(s.tick(2.5), {"a": b"\n[netdump: 4 bytes of console text lost]\ncccc"})
        self.assertEqual(s.lostBytes, 4)

    def test_holdBounded(self):
        """
        Held text is bounded: past the limit the gap is given up at once.
        """
        s = ConsoleStreams()
        s.holdBytes = 10
        s.logChunk("a", 1, 0, b"x", 0)
        self.assertEqual(s.logChunk("a", 1, 100, b"y" * 6, 0).text, b"")
        out = s.logChunk("a", 1, 200, b"z" * 6, 0).text
        self.assertIn(b"lost", out)
        self.assertTrue(out.endswith(b"yyyyyy"))

    def test_restartIsBoot(self):
        """
        Offset 0 after more text: the client booted again.
        """
        s = ConsoleStreams()
        s.logChunk("a", 1, 0, b"first boot\n", 0)
        again = s.logChunk("a", 1, 0, b"second\n", 5)
        self.assertTrue(again.booted and again.logStart)
        self.assertEqual(again.text, b"second\n")

    def test_joinMidStream(self):
        """
        A server that starts mid-stream takes the text as it comes.
        """
        s = ConsoleStreams()
        out = s.logChunk("a", 1, 5000, b"late\n", 0)
        self.assertEqual((out.text, out.booted), (b"late\n", False))

    def test_clientsBounded(self):
        """
        Only C{maxClients} clients are remembered.
        """
        s = ConsoleStreams()
        s.maxClients = 3
        for i in range(10):
            s.logChunk(f"10.0.0.{i}", 1, 0, b"x", 0)
        self.assertEqual(len(s._logs), 3)


class NetconsoleTests(SynchronousTestCase):
    """
    Plain and extended netconsole, from the real captures.
    """

    def needCaptures(self):
        if not available():
            raise self.skipTest("shared/data/netconsole is not beside the checkout")

    def test_plainIsTheConsole(self):
        """
        The basic stream, passed through, holds every kernel line of the
        guest's serial console, byte for byte.
        """
        for folder in ("6.1-virtio", "6.12-release-userdata"):
            s = ConsoleStreams()
            text = b"".join(s.netconsole("10.0.0.1", 6665, d, 0).text
                            for d in capture(folder, "basic"))
            serial = console(folder).replace(b"\r\n", b"\n")
            kernelLines = [l for l in serial.split(b"\n") if re.match(rb"^\[\s*\d+\.\d+\] ", l)]
            self.assertGreater(len(kernelLines), 100)
            missing = [l for l in kernelLines if l not in text]
            self.assertLess(len(missing), len(kernelLines) // 50, missing[:5])

    def test_extendedReassembled(self):
        """
        The extended stream becomes one dmesg-style line per record; the
        record split with ncfrag comes out whole; user data lines follow.
        """
        self.needCaptures()
        for folder in ("6.1-virtio", "6.12-release-userdata"):
            s = ConsoleStreams()
            text = b"".join(s.netconsole("10.0.0.1", 6665, d, 0).text
                            for d in capture(folder, "ext"))
            long = [l for l in text.split(b"\n") if b"long line, 988 bytes" in l]
            self.assertEqual(len(long), 1)
            self.assertEqual(len(long[0].split(b"] ", 1)[1]), 988)
            self.assertIn(b"ncprobe: test line 20 of 20", text)
            self.assertTrue(re.search(rb"^\[\s+\d+\.\d{6}\] ncprobe: test line 1 of 20$", text, re.M))
            if "userdata" in folder:
                self.assertIn(b"\n host=probe\n", text)
            self.assertNotIn(b"ncfrag", text)

    def test_escapesUndone(self):
        """
        \\xNN escapes of extended records become bytes again.
        """
        s = ConsoleStreams()
        out = s.netconsole("a", 1, b"6,1,1000000,-;caf\\xc3\\xa9\\x09tab\n", 0).text
        self.assertEqual(out, "[    1.000000] café\ttab\n".encode())

    def test_fragmentsOutOfOrder(self):
        """
        ncfrag fragments are reassembled in any order.
        """
        s = ConsoleStreams()
        self.assertEqual(s.netconsole("a", 1, b"6,9,1,-,ncfrag=3/6;def", 0).text, b"")
        self.assertEqual(s.netconsole("a", 1, b"6,9,1,-,ncfrag=0/6;abc", 0).text,
                         b"[    0.000001] abcdef\n")

    def test_newPortIsBoot(self):
        """
        A netconsole stream from a new source port is a new boot.
        """
        s = ConsoleStreams()
        self.assertFalse(s.netconsole("a", 1000, b"x\n", 0).booted)
        self.assertFalse(s.netconsole("a", 1000, b"y\n", 0).booted)
        self.assertTrue(s.netconsole("a", 1001, b"z\n", 0).booted)
