"""
Tests for L{sysmon.ops.ini}: the tac's ini reader.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from sysmon.ops import ini
from sysmon.ops.ini import Entry, IniError


class ParseTests(SynchronousTestCase):
    """
    L{ini.parse} keeps every line's number and refuses what is not ini.
    """

    def test_sectionsAndEntries(self) -> None:
        """
        Sections come in file order with their C{key = value} lines; keys
        are lower-cased with C{_} made C{-}, values stripped, comments (C{#}
        and C{;}) and blank lines skipped, and a repeated key kept twice.
        """
        text = ("# top\n\n[NetDump]\nSpace_Check = 0\n; note\n  dumpdir =  var/crash  \n"
                "[sendstats]\nmaster = a:1\nmaster = b:2\nhostname =\n")
        netdump, send = ini.parse(text, "x.ini")
        self.assertEqual((netdump.name, netdump.line, netdump.path), ("netdump", 3, "x.ini"))
        self.assertEqual(netdump.entries, [Entry("space-check", "0", 4),
                                           Entry("dumpdir", "var/crash", 6)])
        self.assertEqual(send.entries, [Entry("master", "a:1", 8), Entry("master", "b:2", 9),
                                        Entry("hostname", "", 10)])
        self.assertEqual(send.get("master"), Entry("master", "b:2", 9))
        self.assertIsNone(send.get("rate"))

    def test_valueKeepsEquals(self) -> None:
        """
        Only the first C{=} separates key and value.
        """
        [section] = ini.parse("[a]\nk = x=y\n")
        self.assertEqual(section.entries, [Entry("k", "x=y", 2)])

    def assertRefused(self, text: str, line: int | None, message: str) -> IniError:
        with self.assertRaises(IniError) as caught:
            ini.parse(text, "t.ini")
        self.assertEqual(caught.exception.line, line)
        self.assertIn(message, str(caught.exception))
        self.assertTrue(str(caught.exception).startswith(f"t.ini:{line}:"), str(caught.exception))
        return caught.exception

    def test_keyBeforeSection(self) -> None:
        """
        A key above the first section is refused at its line.
        """
        self.assertRefused("# x\nport = 1\n[a]\n", 2, "port is not in a section")

    def test_badHeader(self) -> None:
        """
        A header that is not C{[name]} is refused.
        """
        self.assertRefused("[a]\n[b c]\n", 2, "bad section header")
        self.assertRefused("[a\n", 1, "bad section header")

    def test_sectionTwice(self) -> None:
        """
        A section given twice is refused at the second, naming the first.
        """
        self.assertRefused("[a]\nk=1\n[b]\n[A]\n", 4, "[a] is already at line 1")

    def test_lineWithoutEquals(self) -> None:
        """
        A line that is neither comment, header nor C{key = value} is refused,
        with its section.
        """
        error = self.assertRefused("[statd]\nport 662\n", 2, "expected 'key = value'")
        self.assertEqual(error.section, "statd")
        self.assertIn("[statd]", str(error))
        self.assertRefused("[statd]\n= 662\n", 2, "expected 'key = value'")


class SectionTests(SynchronousTestCase):
    """
    L{ini.Section}'s helpers for the keys the tac itself reads.
    """

    def test_flag(self) -> None:
        """
        L{ini.Section.flag} reads yes/no (last line wins), removes the key,
        and gives the default when it is absent.
        """
        [section] = ini.parse("[a]\nenabled = yes\nport = 1\nEnabled = Off\n")
        self.assertFalse(section.flag("enabled", True))
        self.assertEqual([e.key for e in section.entries], ["port"])
        self.assertTrue(section.flag("enabled", True))

    def test_flagRefused(self) -> None:
        """
        Anything but yes/no is an error naming file, line, section and key.
        """
        [section] = ini.parse("[watchdog]\nenabled = sometimes\n", "w.ini")
        with self.assertRaises(IniError) as caught:
            section.flag("enabled", True)
        self.assertEqual(str(caught.exception),
                         "w.ini:2: [watchdog] enabled: 'sometimes' is not yes or no "
                         "(also true/false, on/off, 1/0)")

    def test_truth(self) -> None:
        """
        L{ini.truth} takes the usual spellings in any case and nothing else.
        """
        for text in ("yes", "TRUE", "on", "1", " Yes "):
            self.assertIs(ini.truth(text), True)
        for text in ("no", "False", "OFF", "0"):
            self.assertIs(ini.truth(text), False)
        for text in ("", "2", "y", "enabled"):
            self.assertRaises(ValueError, ini.truth, text)


class ReadTests(SynchronousTestCase):
    """
    L{ini.read} reads a file, with clear errors for one it cannot.
    """

    def test_missing(self) -> None:
        """
        A missing file is an error naming it.
        """
        path = os.path.abspath(self.mktemp())
        with self.assertRaises(IniError) as caught:
            ini.read(path)
        self.assertEqual(str(caught.exception), f"{path}: cannot read it: No such file or directory")

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 is an error naming the byte.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"[a]\nk = \xff\n")
        with self.assertRaises(IniError) as caught:
            ini.read(path)
        self.assertIn("not UTF-8 text (invalid start byte at byte 8)", str(caught.exception))

    def test_read(self) -> None:
        """
        A good file gives its sections, with its path on them.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[http]\nport = 8080\n")
        [section] = ini.read(path)
        self.assertEqual((section.name, section.path, section.entries),
                         ("http", path, [Entry("port", "8080", 2)]))
