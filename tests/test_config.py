"""
Tests for L{sysmon.config}, the shared C{key = value} reader.
"""

from __future__ import annotations

import os

from hypothesis import given, strategies as st
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sysmon import config
from sysmon.config import ConfigError, Key, Schema


def schema(**kw):
    return Schema(
        [
            Key("port", config.port, 6666),
            Key("max_concurrent_dumps", config.integer(1, 64), 4),
            Key("secure", config.boolean, True),
            Key("dumpdir", config.string, "/var/crash"),
            Key("file", config.string, multiple=True),
            Key("interval", config.number(0.1), 1.0),
            Key("mode", config.octal, 0o644),
            Key("magic", config.hexInteger(16)),
            Key("env.", config.string, prefix=True),
            Key("watchdog-device", config.string, "/dev/watchdog", allowEmpty=True),
            Key("level", config.choice("low", "high"), "low"),
        ],
        **kw,
    )


class ParseTests(SynchronousTestCase):
    """
    Reading configuration text.
    """

    def test_defaults(self):
        """
        Keys the file does not set keep their defaults, and say so.
        """
        c = schema().parseLines([], "x.conf")
        self.assertEqual(c["port"], 6666)
        self.assertEqual(c["file"], [])
        self.assertEqual(c["env."], {})
        self.assertEqual(c.sources["port"], "default")

    def test_scalarsAndComments(self):
        """
        Whole-line comments and blank lines are skipped; C{key = value} is
        split at the first C{=} and both sides trimmed; the value is coerced.
        """
        c = schema().parseLines(
            ["# comment\n", "\n", "   port =  7000  \n", "dumpdir=/srv/a=b\n", "  # indented\n"],
            "n.conf",
        )
        self.assertEqual(c["port"], 7000)
        self.assertEqual(c["dumpdir"], "/srv/a=b")
        self.assertEqual(c.sources["port"], "n.conf:3")
        self.assertEqual(c.warnings, [])

    def test_lastScalarWins(self):
        """
        A scalar key given twice takes the last value.
        """
        c = schema().parseLines(["port = 1", "port = 2"])
        self.assertEqual(c["port"], 2)

    def test_listKeysAppend(self):
        """
        List keys collect every value in file order.
        """
        c = schema().parseLines(["file = /a", "port = 1", "file = /b"])
        self.assertEqual(c["file"], ["/a", "/b"])

    def test_prefixKeys(self):
        """
        A prefix key collects C{prefix + NAME = value} into a dict.
        """
        c = schema().parseLines(["env.PATH = /bin", "env.LANG = C", "env.PATH = /usr/bin"])
        self.assertEqual(c["env."], {"PATH": "/usr/bin", "LANG": "C"})

    def test_quotedValues(self):
        """
        One pair of matching quotes around a value is removed, as in the
        FreeBSD netdump.conf sample (C{dumpdirprefix="/var/spool/netdump"}).
        """
        c = schema().parseLines(['dumpdir="/var/spool/netdump"', "level='high'"])
        self.assertEqual(c["dumpdir"], "/var/spool/netdump")
        self.assertEqual(c["level"], "high")

    def test_booleans(self):
        """
        yes/no, true/false, on/off and 1/0 are booleans, in any case.
        """
        for text, value in [("YES", True), ("no", False), ("True", True), ("0", False),
                            ("on", True), ("off", False), ("1", True)]:
            self.assertIs(schema().parseLines([f"secure = {text}"])["secure"], value)

    def test_typedValues(self):
        """
        Numbers, octal modes, hex magics and choices are coerced.
        """
        c = schema().parseLines(
            ["interval = 2.5", "mode = 0600", "magic = 0x0123456789ABCDEF", "level = high"]
        )
        self.assertEqual(c["interval"], 2.5)
        self.assertEqual(c["mode"], 0o600)
        self.assertEqual(c["magic"], 0x0123456789ABCDEF)
        self.assertEqual(c["level"], "high")

    def test_entriesInOrder(self):
        """
        Every accepted line is kept as an entry in file order, so keys that
        refer to the line before can be resolved.
        """
        c = schema().parseLines(["file = /a", "port = 9", "file = /b"], "w.conf")
        self.assertEqual(
            [(e.line, e.key, e.value) for e in c.entries],
            [(1, "file", "/a"), (2, "port", 9), (3, "file", "/b")],
        )

    def test_emptyValueDisables(self):
        """
        An empty value sets a key that allows it to L{None} (disabled).
        """
        c = schema().parseLines(["watchdog-device ="])
        self.assertIsNone(c["watchdog-device"])


class BadInputTests(SynchronousTestCase):
    """
    Unknown keys warn; bad values are errors naming file, line and the
    accepted form.
    """

    def test_unknownKeyWarns(self):
        """
        An unknown key is a warning with file and line, not an error.
        """
        c = schema().parseLines(["port = 1", "colour = blue"], "/etc/netdump.conf")
        self.assertEqual(len(c.warnings), 1)
        self.assertEqual(
            str(c.warnings[0]), "/etc/netdump.conf:2: unknown key 'colour' ignored"
        )
        self.assertEqual(c["port"], 1)

    def test_lineWithoutEquals(self):
        """
        A line without C{=} is a warning with its line number.
        """
        c = schema().parseLines(["", "just words"], "w.conf")
        self.assertEqual(str(c.warnings[0]), "w.conf:2: ignored line without '=': 'just words'")

    def test_badNumberNamesFileAndLine(self):
        """
        A bad number raises L{ConfigError} naming file, line, key and the
        accepted form.
        """
        e = self.assertRaises(
            ConfigError,
            schema().parseLines,
            ["# c", "max_concurrent_dumps = four"],
            "/etc/netdump.conf",
        )
        self.assertEqual(e.path, "/etc/netdump.conf")
        self.assertEqual(e.line, 2)
        self.assertEqual(
            str(e),
            "/etc/netdump.conf:2: bad value 'four' for max_concurrent_dumps: "
            "expected an integer from 1 to 64",
        )

    def test_outOfRange(self):
        """
        A number outside its bounds is refused like a non-number.
        """
        e = self.assertRaises(ConfigError, schema().parseLines, ["port = 70000"], "p")
        self.assertIn("expected a port number from 0 to 65535", str(e))
        e = self.assertRaises(ConfigError, schema().parseLines, ["interval = 0"], "p")
        self.assertIn("expected a number >= 0.1", str(e))
        self.assertRaises(ConfigError, schema().parseLines, ["interval = nan"], "p")

    def test_badBoolean(self):
        """
        A word that is not a boolean is refused with the accepted words.
        """
        e = self.assertRaises(ConfigError, schema().parseLines, ["secure = maybe"], "p")
        self.assertIn("yes/no, true/false, on/off or 1/0", str(e))

    def test_emptyValueNotAllowed(self):
        """
        An empty value for a key that needs one is an error.
        """
        e = self.assertRaises(ConfigError, schema().parseLines, ["port ="], "p")
        self.assertEqual(e.line, 1)

    def test_badHex(self):
        """
        A magic with too many or non-hex digits is refused.
        """
        self.assertRaises(ConfigError, schema().parseLines, ["magic = 0x1" + "0" * 16], "p")
        self.assertRaises(ConfigError, schema().parseLines, ["magic = xyz"], "p")

    def test_warnModeKeepsOldValue(self):
        """
        With C{badValue="warn"} (the watchdog's rule) a bad value is a
        warning and the previous value stays.
        """
        c = schema(badValue="warn").parseLines(["port = 10", "port = ten"], "w.conf")
        self.assertEqual(c["port"], 10)
        self.assertEqual(len(c.warnings), 1)
        self.assertTrue(str(c.warnings[0]).startswith("w.conf:2: bad value 'ten' for port"))
        self.assertTrue(str(c.warnings[0]).endswith("; old value kept"))

    @given(st.lists(st.text(max_size=40), max_size=20))
    def test_arbitraryText(self, lines):
        """
        Any text either parses or raises L{ConfigError}; nothing else.
        """
        try:
            schema().parseLines(lines, "fuzz")
        except ConfigError:
            pass


class CReaderTests(SynchronousTestCase):
    """
    The options that let a schema read a C daemon's file with the same
    values: C{atoi} integers, quotes kept, the C reader's white space.
    """

    def test_cInteger(self):
        """
        L{config.cInteger} takes what C{atoi} takes once the text starts
        with a digit or a sign: trailing text is ignored, a lone sign is 0,
        and values beyond a C{long} are clamped, then cut to 32 bits.
        """
        for text, value in [
            ("10", 10), ("10s", 10), ("+5", 5), ("-3", -3), ("5 # five", 5),
            ("007", 7), ("+", 0), ("-x", 0), ("+-5", 0), ("2147483647", 2**31 - 1),
            ("2147483648", -(2**31)), ("4294967297", 1),
            ("9" * 30, -1), ("-" + "9" * 30, 0), ("0" * 40 + "12", 12),
        ]:
            self.assertEqual(config.cInteger(text), value, text)

    def test_cIntegerRefuses(self):
        """
        Text that does not start with a digit or a sign is refused, even
        when C{atoi} would skip white space before a number; Unicode digits
        are not digits.
        """
        for text in ["", "abc", " 7", "\v7", "x10", "\u0667", ".5"]:
            self.assertRaises(ValueError, config.cInteger, text)

    def test_keepQuotes(self):
        """
        With C{unquote=False} quotes stay part of the value.
        """
        c = schema(unquote=False).parseLines(['dumpdir = "/var/crash"'])
        self.assertEqual(c["dumpdir"], '"/var/crash"')

    def test_whitespaceSet(self):
        """
        With C{whitespace} only those characters are trimmed: a form feed
        stays part of the value, a backspace is trimmed.
        """
        c = schema(whitespace=" \t\r\n\b").parseLines(
            ["\bdumpdir = /a\f\n", "\t  # comment", "\b\bport\b=\b7\r\n"]
        )
        self.assertEqual(c["dumpdir"], "/a\f")
        self.assertEqual(c["port"], 7)
        self.assertEqual(c.warnings, [])
        self.assertEqual(schema().parseLines(["dumpdir = /a\f"])["dumpdir"], "/a")

    def test_warnModeSkipsListEntry(self):
        """
        With C{badValue="warn"} an empty entry of a list key is a warning
        saying the line was ignored (a list has no old value to keep).
        """
        c = schema(badValue="warn").parseLines(["file = /a", "file ="], "w.conf")
        self.assertEqual(c["file"], ["/a"])
        self.assertEqual(
            [str(w) for w in c.warnings],
            ["w.conf:2: file needs a value (text); line ignored"],
        )


class LoadTests(SynchronousTestCase):
    """
    Reading files.
    """

    def test_loadFile(self):
        """
        L{Schema.load} reads a file and names it in sources.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("port = 6000\n")
        c = schema().load(path)
        self.assertEqual(c["port"], 6000)
        self.assertEqual(c.sources["port"], f"{path}:1")

    def test_missingFile(self):
        """
        A missing file is an error unless C{missingOk}, when the defaults
        are used.
        """
        path = self.mktemp()
        e = self.assertRaises(ConfigError, schema().load, path)
        self.assertEqual(str(e), f"{path}: no such file")
        self.assertEqual(schema().load(path, missingOk=True)["port"], 6666)

    def test_unreadable(self):
        """
        A directory given as the file is a clear error.
        """
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(ConfigError, schema().load, path)
        self.assertIn("cannot read", str(e))


class Opts(usage.Options):
    optParameters = [
        ["port", "p", None, "port", int],
        ["concurrent", "c", None, "dumps at once"],
        ["dumpdir", None, None, "where"],
    ]


class OverrideTests(SynchronousTestCase):
    """
    The command line overrides the file.
    """

    def test_applyOptions(self):
        """
        Options that were given override the file's values; options left at
        L{None} change nothing; option names map to keys.
        """
        c = schema().parseLines(["port = 7000", "max_concurrent_dumps = 2", "dumpdir = /a"])
        opts = Opts()
        opts.parseOptions(["--port", "7001", "--concurrent", "8"])
        c.applyOptions(opts, {"concurrent": "max_concurrent_dumps"})
        self.assertEqual(c["port"], 7001)
        self.assertEqual(c["max_concurrent_dumps"], 8)
        self.assertEqual(c["dumpdir"], "/a")
        self.assertEqual(c.sources["port"], "command line (--port)")

    def test_badCommandLineValue(self):
        """
        A bad value from the command line is an error naming the option.
        """
        c = schema().defaults()
        opts = Opts()
        opts.parseOptions(["--concurrent", "0"])
        e = self.assertRaises(
            ConfigError, c.applyOptions, opts, {"concurrent": "max_concurrent_dumps"}
        )
        self.assertEqual(
            str(e),
            "command line (--concurrent): bad value '0' for max_concurrent_dumps: "
            "expected an integer from 1 to 64",
        )

    def test_overrideList(self):
        """
        Overriding a list key replaces the whole list.
        """
        c = schema().parseLines(["file = /a"])
        c.override("file", ["/x", "/y"])
        self.assertEqual(c["file"], ["/x", "/y"])
        c.override("file", "/z")
        self.assertEqual(c["file"], ["/z"])

    def test_overrideUnknownKey(self):
        """
        Overriding a key the schema does not have is a programming error.
        """
        self.assertRaises(KeyError, schema().defaults().override, "nope", 1)


class SchemaTests(SynchronousTestCase):
    """
    Building schemas.
    """

    def test_duplicateKey(self):
        """
        A key defined twice is refused.
        """
        self.assertRaises(ValueError, Schema, [Key("a"), Key("a")])

    def test_badPolicy(self):
        """
        Only "error" and "warn" are policies for bad values.
        """
        self.assertRaises(ValueError, Schema, [], badValue="ignore")
