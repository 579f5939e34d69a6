"""
Tests for what netdump keeps on disk (L{sysmon.netdump.store}).
"""

from __future__ import annotations

import errno
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from sysmon.netdump.store import DumpStore, Journal, writeJSON


class DumpStoreTests(SynchronousTestCase):
    """
    L{DumpStore}.
    """

    def setUp(self):
        self.store = DumpStore(self.mktemp())
        self.store.prepare()

    def test_prepareMakesDirs(self):
        """
        The dump directory and console/ are created when missing.
        """
        self.assertTrue(os.path.isdir(os.path.join(self.store.root, "console")))

    def test_crashDirNames(self):
        """
        <ip>-<YYYY-MM-DD-HH:MM>, mode 0700, with .1, .2 on collision.
        """
        when = 1700000000.0
        a = self.store.newCrashDir("10.0.0.1", when)
        b = self.store.newCrashDir("10.0.0.1", when)
        c = self.store.newCrashDir("10.0.0.1", when)
        import time

        stamp = time.strftime("%Y-%m-%d-%H:%M", time.localtime(when))
        self.assertEqual(os.path.basename(a), f"10.0.0.1-{stamp}")
        self.assertEqual((b, c), (a + ".1", a + ".2"))
        self.assertEqual(os.stat(a).st_mode & 0o777, 0o700)

    def test_magic(self):
        """
        magic/<ip> holds 16 hex digits (optionally 0x); anything else is no
        magic.
        """
        os.makedirs(os.path.join(self.store.root, "magic"))

        def put(ip, text):
            with open(os.path.join(self.store.root, "magic", ip), "w") as f:
                f.write(text)

        put("10.0.0.1", "1234abcd5678ef01\n")
        put("10.0.0.2", "0x00000000000000ff")
        put("10.0.0.3", "not hex")
        put("10.0.0.4", "1" * 17)
        self.assertEqual(self.store.magicFor("10.0.0.1"), 0x1234ABCD5678EF01)
        self.assertEqual(self.store.magicFor("10.0.0.2"), 0xFF)
        self.assertIsNone(self.store.magicFor("10.0.0.3"))
        self.assertIsNone(self.store.magicFor("10.0.0.4"))
        self.assertIsNone(self.store.magicFor("10.0.0.5"))


class JournalTests(SynchronousTestCase):
    """
    L{Journal}: the restart journal.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def test_bitsSurviveReload(self):
        """
        Page bits set in one journal are there when it is loaded again,
        with the count; reserved ranges too.
        """
        j = Journal(self.dir, {"ip": "x", "nr_pages": 100})
        j.save()
        j.openPages(100)
        self.assertTrue(j.markDone(5))
        self.assertFalse(j.markDone(5))
        self.assertEqual(j.markRange(10, 90), 80)
        j.addReserved(10, 90)
        j.close()
        again = Journal.load(self.dir)
        self.assertEqual(again.done, 81)
        self.assertTrue(again.isDone(5) and again.isDone(89) and not again.isDone(90))
        self.assertEqual(again.reserved, [(10, 90)])
        self.assertEqual(again.nextMissing(0, 100), 0)
        self.assertEqual(again.nextMissing(5, 100), 6)
        self.assertEqual(again.nextMissing(10, 100), 90)

    def test_markRangeCountsOnlyNew(self):
        """
        markRange counts only pages not already set, across byte edges.
        """
        j = Journal(self.dir, {})
        j.openPages(1000)
        j.markDone(17)
        j.markDone(500)
        self.assertEqual(j.markRange(3, 997), 994 - 2)
        self.assertEqual(j.done, 994)
        self.assertEqual(j.nextMissing(0, 1000), 0)
        self.assertEqual(j.nextMissing(3, 1000), 997)

    def test_remove(self):
        """
        remove() deletes the journal files.
        """
        j = Journal(self.dir, {"nr_pages": 8})
        j.save()
        j.openPages(8)
        j.addReserved(1, 2)
        j.remove()
        self.assertEqual(os.listdir(self.dir), [])

    def test_badJournal(self):
        """
        An unreadable journal is a L{ValueError}.
        """
        with open(os.path.join(self.dir, ".netdump-session.json"), "w") as f:
            f.write("{not json")
        self.assertRaises(ValueError, Journal.load, self.dir)


class WriteJSONTests(SynchronousTestCase):
    """
    L{writeJSON}.
    """

    def test_atomic(self):
        """
        The file is replaced whole; no temporary file stays.
        """
        path = os.path.join(self.mktemp())
        writeJSON(path, {"a": 1})
        writeJSON(path, {"a": 2})
        with open(path) as f:
            self.assertEqual(json.load(f), {"a": 2})
        self.assertFalse(os.path.exists(path + ".tmp"))

    def test_fullDiskInPlace(self):
        """
        When the new copy cannot be written (ENOSPC) an existing file is
        overwritten in place.
        """
        path = self.mktemp()
        writeJSON(path, {"outcome": "in-progress", "padding": "x" * 50})

        def full(*a, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "replace", full)
        writeJSON(path, {"outcome": "complete"})
        with open(path) as f:
            self.assertEqual(json.load(f), {"outcome": "complete"})
        self.assertFalse(os.path.exists(path + ".tmp"))
        self.assertRaises(OSError, writeJSON, path + ".new", {"a": 1})
