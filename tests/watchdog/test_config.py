"""
Tests for L{sysmon.watchdog.config}: watchdog.conf read with the values the
Linux watchdog daemon 5.16 takes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

import attrs
from hypothesis import given, strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sysmon.watchdog import config
from sysmon.watchdog.config import (
    ConfigError,
    ConfigWarning,
    FileCheck,
    WatchdogConfig,
    describe,
    load,
    parse,
    sanityErrors,
)

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "watchdog.conf")
DEBIAN = "/etc/watchdog.conf"

# Every field but path, sources and warnings, at the original's defaults.
DEFAULTS = {
    "interval": 1,
    "logtick": 1,
    "maxLoad1": 0,
    "maxLoad5": 0,
    "maxLoad15": 0,
    "minMemory": 0,
    "allocatableMemory": 0,
    "maxSwap": 0,
    "device": None,
    "deviceTimeout": 60,
    "refreshUseSettimeout": "auto",
    "refreshIgnoreErrors": False,
    "temperatureSensors": (),
    "maxTemperature": 90,
    "tempPowerOff": True,
    "files": (),
    "pidfiles": (),
    "pings": (),
    "pingCount": 3,
    "interfaces": (),
    "testBinaries": (),
    "testTimeout": 60,
    "testDirectory": "/etc/watchdog.d",
    "repairBinary": None,
    "repairTimeout": 60,
    "retryTimeout": 60,
    "repairMaximum": 1,
    "softboot": False,
    "admin": "root",
    "sigtermDelay": 5,
    "realtime": False,
    "priority": 1,
    "logDir": "/var/log/watchdog",
    "heartbeatFile": None,
    "heartbeatStamps": 300,
    "verbose": 0,
    "logKilledPids": False,
    "smtpHost": "localhost",
    "smtpPort": 25,
    "smtpCAFile": None,
    "mailFrom": None,
    "sendmail": None,
    "fileTimeout": 5,
}

KEY_NAMES = [key.name for key in config.SCHEMA.keys]


class FieldsMixin:
    """
    Compare every value field of a L{WatchdogConfig} at once.
    """

    def assertFields(self, cfg: WatchdogConfig, expected: dict) -> None:
        names = {a.name for a in attrs.fields(WatchdogConfig)} - {"path", "sources", "warnings"}
        self.assertEqual(set(expected), names, "the test must list every field")
        actual = {name: getattr(cfg, name) for name in names}
        for name in sorted(names):
            self.assertEqual(
                (name, type(actual[name]).__name__, actual[name]),
                (name, type(expected[name]).__name__, expected[name]),
            )

    def assertWarnings(self, cfg: WatchdogConfig, expected: list[str]) -> None:
        self.assertEqual([str(w) for w in cfg.warnings], expected)


def _debianConffileMD5() -> str:
    """
    The md5 dpkg recorded for /etc/watchdog.conf of the installed watchdog
    5.16 package; L{SkipTest} when there is none.
    """
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}\n${Conffiles}\n", "watchdog"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise SkipTest("dpkg-query is missing: not a Debian system, no watchdog package")
    if result.returncode != 0:
        raise SkipTest(
            "the Debian package 'watchdog' is not installed (apt-get install watchdog): "
            + result.stderr.strip()
        )
    version, _, conffiles = result.stdout.partition("\n")
    if not version.startswith("5.16"):
        raise SkipTest(f"the installed watchdog package is {version or 'not installed'}, not 5.16")
    for line in conffiles.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == DEBIAN:
            return fields[1]
    raise SkipTest(f"the watchdog package lists no conffile {DEBIAN}")


class DebianFileTests(FieldsMixin, SynchronousTestCase):
    """
    The file Debian's watchdog 5.16 package installs.
    """

    def test_debianPackageFile(self):
        """
        The pristine /etc/watchdog.conf of Debian's watchdog 5.16 (its md5 is
        the one dpkg recorded) sets realtime = yes and priority = 1 on lines
        70 and 71; everything else is the default, and nothing in it
        (tab-separated keys, commented settings) is a warning.
        """
        expected = _debianConffileMD5()
        if not os.path.exists(DEBIAN):
            self.fail(f"{DEBIAN} of the watchdog package was deleted; reinstall the package")
        with open(DEBIAN, "rb") as f:
            actual = hashlib.md5(f.read()).hexdigest()
        if actual != expected:
            self.fail(
                f"{DEBIAN} was modified locally (md5 {actual}, the package's is {expected}); "
                "restore it (apt-get install --reinstall -o Dpkg::Options::=--force-confask "
                "watchdog) to run this test"
            )
        cfg = load(DEBIAN)
        self.assertFields(cfg, dict(DEFAULTS, realtime=True, priority=1))
        self.assertEqual(cfg.path, DEBIAN)
        self.assertEqual(cfg.warnings, ())
        self.assertEqual(
            dict(cfg.sources),
            dict(
                {name: "default" for name in KEY_NAMES},
                realtime=f"{DEBIAN}:70",
                priority=f"{DEBIAN}:71",
            ),
        )
        self.assertEqual(sanityErrors(cfg), [])


class DefaultsTests(FieldsMixin, SynchronousTestCase):
    """
    The defaults.
    """

    def test_emptyFile(self):
        """
        An empty file and a bare L{WatchdogConfig} both hold the original's
        defaults, every key's source is "default", and there are no warnings.
        """
        for cfg in [parse([], "e.conf"), WatchdogConfig()]:
            self.assertFields(cfg, DEFAULTS)
            self.assertEqual(dict(cfg.sources), {name: "default" for name in KEY_NAMES})
            self.assertEqual(cfg.warnings, ())
        self.assertEqual(parse([], "e.conf").path, "e.conf")
        self.assertEqual(WatchdogConfig().path, "<defaults>")

    def test_evolve(self):
        """
        Command-line overrides apply with C{attrs.evolve}, as the tap does
        for C{-b} and C{-v}.
        """
        cfg = parse(["verbose = 1"])
        cfg = attrs.evolve(cfg, retryTimeout=0, softboot=True, verbose=cfg.verbose + 2)
        self.assertEqual((cfg.retryTimeout, cfg.softboot, cfg.verbose), (0, True, 3))


EVERY_KEY = """\
# every key of watchdog.conf
interval = 10
logtick = 6
max-load-1 = 24
max-load-5 = 0
max-load-15 = 10
min-memory = 100
allocatable-memory = 200
max-swap = 300
watchdog-device = /dev/watchdog1
watchdog-timeout = 30
watchdog-refresh-use-settimeout = Yes
watchdog-refresh-ignore-errors = YES
temperature-sensor = /sys/t1
temperature-device = /sys/t2
temperature-sensor = /sys/t3
max-temperature = 80
temp-power-off = no
file = /var/log/syslog
change = 1407
file = /var/run/a
file = /var/run/b
change = 60
pidfile = /run/a.pid
pidfile = /run/b.pid
ping = 192.0.2.1
ping-count = 5
ping = 192.0.2.2
interface = eth0
interface = eth1
test-binary = /usr/bin/t1
test-timeout = 20
test-binary = /usr/bin/t2
test-directory = /etc/wd.d
repair-binary = /usr/sbin/repair
repair-timeout = 40
retry-timeout = 120
repair-maximum = 0
softboot-option = no
admin = ops@example.org
sigterm-delay = 9
realtime = yes
priority = 50
log-dir = /var/log/wd
heartbeat-file = /var/log/wd/heartbeat
heartbeat-stamps = 100
verbose = 2
log-killed-pids = yes
smtp-host = mail.example.org
smtp-port = 587
smtp-ca-file = /etc/ssl/ca.pem
mail-from = wd@example.org
sendmail = /usr/sbin/sendmail
file-timeout = 2.5
"""


class EveryKeyTests(FieldsMixin, SynchronousTestCase):
    """
    A file that sets every key.
    """

    def test_everyKey(self):
        """
        Every key reaches its field: list keys in file order, each C{change}
        on the file just before it, max-load-5 derived from max-load-1 when
        it is 0 (even when given as 0) while max-load-15 keeps its value,
        the obsolete temperature-device among the sensors in file order.
        """
        lines = EVERY_KEY.splitlines()
        used = {line.split("=")[0].strip() for line in lines if "=" in line}
        self.assertEqual(used, set(KEY_NAMES), "the file must use every key")
        cfg = parse(lines, "all.conf")
        self.assertFields(
            cfg,
            {
                "interval": 10,
                "logtick": 6,
                "maxLoad1": 24,
                "maxLoad5": 18,
                "maxLoad15": 10,
                "minMemory": 100,
                "allocatableMemory": 200,
                "maxSwap": 300,
                "device": "/dev/watchdog1",
                "deviceTimeout": 30,
                "refreshUseSettimeout": "yes",
                "refreshIgnoreErrors": True,
                "temperatureSensors": ("/sys/t1", "/sys/t2", "/sys/t3"),
                "maxTemperature": 80,
                "tempPowerOff": False,
                "files": (
                    FileCheck("/var/log/syslog", 1407),
                    FileCheck("/var/run/a", 0),
                    FileCheck("/var/run/b", 60),
                ),
                "pidfiles": ("/run/a.pid", "/run/b.pid"),
                "pings": ("192.0.2.1", "192.0.2.2"),
                "pingCount": 5,
                "interfaces": ("eth0", "eth1"),
                "testBinaries": ("/usr/bin/t1", "/usr/bin/t2"),
                "testTimeout": 20,
                "testDirectory": "/etc/wd.d",
                "repairBinary": "/usr/sbin/repair",
                "repairTimeout": 40,
                "retryTimeout": 120,
                "repairMaximum": 0,
                "softboot": False,
                "admin": "ops@example.org",
                "sigtermDelay": 9,
                "realtime": True,
                "priority": 50,
                "logDir": "/var/log/wd",
                "heartbeatFile": "/var/log/wd/heartbeat",
                "heartbeatStamps": 100,
                "verbose": 2,
                "logKilledPids": True,
                "smtpHost": "mail.example.org",
                "smtpPort": 587,
                "smtpCAFile": "/etc/ssl/ca.pem",
                "mailFrom": "wd@example.org",
                "sendmail": "/usr/sbin/sendmail",
                "fileTimeout": 2.5,
            },
        )
        self.assertWarnings(
            cfg,
            [
                "all.conf:15: temperature-device is obsolete (watchdog 5.14 and older); "
                "'/sys/t2' is read as a temperature-sensor (a sysfs file in milli-degrees C)"
            ],
        )
        self.assertEqual(cfg.sources["interval"], "all.conf:2")
        self.assertEqual(cfg.sources["max-load-5"], "all.conf:4")
        self.assertEqual(cfg.sources["max-load-15"], "all.conf:6")
        self.assertEqual(cfg.sources["file-timeout"], "all.conf:54")
        self.assertNotIn("default", cfg.sources.values())
        self.assertEqual(sanityErrors(cfg), [])

    def test_describe(self):
        """
        The start-up summary names every check, as the original's
        C{print_info} does, plus sysmon's mail and file time-out settings.
        """
        self.assertEqual(
            describe(parse(EVERY_KEY.splitlines())),
            [
                "int=10s realtime=yes load=24,18,10 soft=no",
                f"memory: minimum pages = 100 free, 200 allocatable, maximum swap = 300 "
                f"pages ({os.sysconf('SC_PAGE_SIZE')} byte pages)",
                "ping: 192.0.2.1",
                "ping: 192.0.2.2",
                "ping: 5 attempts per interval",
                "file: /var/log/syslog:1407",
                "file: /var/run/a:0",
                "file: /var/run/b:60",
                "pidfile: /run/a.pid",
                "pidfile: /run/b.pid",
                "interface: eth0",
                "interface: eth1",
                "temperature: maximum = 80",
                "temperature: /sys/t1",
                "temperature: /sys/t2",
                "temperature: /sys/t3",
                "test binary time-out = 20",
                "test binary V0: /usr/bin/t1",
                "test binary V0: /usr/bin/t2",
                "test/repair V1: programs in /etc/wd.d",
                "repair binary: time-out = 40",
                "repair binary: program = /usr/sbin/repair",
                "error retry time-out = 120 seconds",
                "repair attempts = unlimited",
                "alive=/dev/watchdog1 heartbeat=/var/log/wd/heartbeat to=ops@example.org",
                "mail: via sendmail program /usr/sbin/sendmail, from wd@example.org",
                "file check time-out = 2.5 seconds",
            ],
        )

    def test_describeDefaults(self):
        """
        The summary of the defaults says what is not checked, and that no
        mail goes out when admin is empty.
        """
        self.assertEqual(
            describe(parse(["admin =", "test-directory ="])),
            [
                "int=1s realtime=no load=0,0,0 soft=no",
                "memory not checked",
                "ping: no machine to check",
                "file: no file to check",
                "pidfile: no server process to check",
                "interface: no interface to check",
                "temperature: no sensors to check",
                "no test binary files",
                "no repair binary files",
                "error retry time-out = 60 seconds",
                "repair attempts = 1",
                "alive=[none] heartbeat=[none] to=[none]",
                "file check time-out = 5 seconds",
            ],
        )
        self.assertIn("mail: via SMTP localhost:25, from [default]", describe(WatchdogConfig()))


class WarningTests(FieldsMixin, SynchronousTestCase):
    """
    What the original warns about: the line is ignored (or the old value
    kept) and the warning names file and line.
    """

    def test_noEquals(self):
        """
        A line without C{=} is a warning with its line number.
        """
        cfg = parse(["realtime = yes", "realtime no"], "w.conf")
        self.assertTrue(cfg.realtime)
        self.assertWarnings(cfg, ["w.conf:2: ignored line without '=': 'realtime no'"])
        self.assertEqual(
            cfg.warnings[0], ConfigWarning("w.conf", 2, "ignored line without '=': 'realtime no'")
        )

    def test_unknownKey(self):
        """
        An unknown key (including a known one in another case, and the
        pre-5 options) is a warning with its line number, not an error.
        """
        cfg = parse(["# x", "colour = blue", "Interval = 5", "= 3"], "w.conf")
        self.assertEqual(cfg.interval, 1)
        self.assertWarnings(
            cfg,
            [
                "w.conf:2: unknown key 'colour' ignored",
                "w.conf:3: unknown key 'Interval' ignored",
                "w.conf:4: unknown key '' ignored",
            ],
        )

    def test_badNumber(self):
        """
        A value that does not start with a digit or a sign is "expected a
        number": a warning, and the old value (and its source) stays.
        """
        cfg = parse(["interval = 5", "interval = abc", "ping-count =", "priority = .5"], "w.conf")
        self.assertEqual((cfg.interval, cfg.pingCount, cfg.priority), (5, 3, 1))
        self.assertEqual(cfg.sources["interval"], "w.conf:1")
        self.assertWarnings(
            cfg,
            [
                "w.conf:2: bad value 'abc' for interval: expected a number; old value kept",
                "w.conf:3: ping-count needs a value (a number); old value kept",
                "w.conf:4: bad value '.5' for priority: expected a number; old value kept",
            ],
        )

    def test_badYesNo(self):
        """
        Only yes and no (and auto where allowed) are accepted; anything else
        keeps the old value (the original ignores it silently; sysmon warns).
        """
        cfg = parse(
            [
                "realtime = true",
                "temp-power-off = 0",
                "watchdog-refresh-use-settimeout = sometimes",
                "softboot-option =",
            ],
            "w.conf",
        )
        self.assertFields(cfg, DEFAULTS)
        self.assertWarnings(
            cfg,
            [
                "w.conf:1: bad value 'true' for realtime: expected yes or no (any case); "
                "old value kept",
                "w.conf:2: bad value '0' for temp-power-off: expected yes or no (any case); "
                "old value kept",
                "w.conf:3: bad value 'sometimes' for watchdog-refresh-use-settimeout: "
                "expected auto, yes or no (any case); old value kept",
                "w.conf:4: softboot-option needs a value (yes or no (any case)); old value kept",
            ],
        )

    def test_changeBeforeFile(self):
        """
        A C{change} before any C{file} is a warning and is lost: it does not
        attach to a later file.
        """
        cfg = parse(["change = 30", "file = /a"], "w.conf")
        self.assertEqual(cfg.files, (FileCheck("/a", 0),))
        self.assertWarnings(cfg, ["w.conf:1: change without a file before it; ignored"])

    def test_secondChange(self):
        """
        A second C{change} for the same file is a warning and replaces the
        first, as the original does; after C{change = 0} (no check) another
        C{change} is not a duplicate, as in the original.
        """
        cfg = parse(
            ["file = /a", "change = 30", "change = 40", "file = /b", "change = 0", "change = 5"],
            "w.conf",
        )
        self.assertEqual(cfg.files, (FileCheck("/a", 40), FileCheck("/b", 5)))
        self.assertWarnings(cfg, ["w.conf:3: second change for file '/a': 30 replaced by 40"])

    def test_badChange(self):
        """
        A C{change} that is not a number is a warning and, as in the
        original (which applies the 0 it read), resets the last file's
        change to 0; before any file it gives both warnings.
        """
        cfg = parse(
            ["change = x", "file = /a", "change = 30", "change = soon", "change ="], "w.conf"
        )
        self.assertEqual(cfg.files, (FileCheck("/a", 0),))
        self.assertWarnings(
            cfg,
            [
                "w.conf:1: bad value 'x' for change: expected a number; "
                "0 is used (no change check), as watchdog 5.16 does",
                "w.conf:1: change without a file before it; ignored",
                "w.conf:4: bad value 'soon' for change: expected a number; "
                "0 is used (no change check), as watchdog 5.16 does",
                "w.conf:4: second change for file '/a': 30 replaced by 0",
                "w.conf:5: bad value '' for change: expected a number; "
                "0 is used (no change check), as watchdog 5.16 does",
            ],
        )

    def test_blankListEntry(self):
        """
        An empty value for a list key is a warning; the entry is not added
        and a later C{change} attaches to the file before.
        """
        cfg = parse(
            ["ping = 192.0.2.1", "ping =", "file = /a", "file =", "change = 9", "test-binary = "],
            "w.conf",
        )
        self.assertEqual(cfg.pings, ("192.0.2.1",))
        self.assertEqual(cfg.files, (FileCheck("/a", 9),))
        self.assertEqual(cfg.testBinaries, ())
        self.assertWarnings(
            cfg,
            [
                "w.conf:2: ping needs a value (text); line ignored",
                "w.conf:4: file needs a value (text); line ignored",
                "w.conf:6: test-binary needs a value (text); line ignored",
            ],
        )

    def test_temperatureDevice(self):
        """
        The 5.14 key temperature-device is read as a temperature-sensor,
        with a warning that it is obsolete.
        """
        cfg = parse(["temperature-device = /sys/t"], "old.conf")
        self.assertEqual(cfg.temperatureSensors, ("/sys/t",))
        self.assertWarnings(
            cfg,
            [
                "old.conf:1: temperature-device is obsolete (watchdog 5.14 and older); "
                "'/sys/t' is read as a temperature-sensor (a sysfs file in milli-degrees C)"
            ],
        )

    def test_warningsInLineOrder(self):
        """
        Warnings from the line reader and from the file/change rules come in
        line order.
        """
        cfg = parse(["change = 1", "nonsense", "temperature-device = /t", "x = 1"], "w.conf")
        self.assertEqual([w.line for w in cfg.warnings], [1, 2, 3, 4])


_LINES = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.builds(
            "{}{}={}".format,
            st.sampled_from(KEY_NAMES + ["", "x"]),
            st.sampled_from(["", " ", "\t"]),
            st.text(alphabet="0123456789+-abyesnoYESNO #\"/\t\0\b\x0c\r", max_size=12),
        ),
    ),
    max_size=25,
)


class FuzzTests(SynchronousTestCase):
    """
    Arbitrary text.
    """

    @given(_LINES)
    def test_anyText(self, lines):
        """
        Any lines either give a L{WatchdogConfig} whose warnings all name a
        line of the text, or raise L{ConfigError} (interval <= 0, empty
        log-dir); nothing else.
        """
        try:
            cfg = parse(lines, "fuzz")
        except ConfigError as e:
            self.assertIn(e.line, range(1, len(lines) + 1))
            return
        for warning in cfg.warnings:
            self.assertIn(warning.line, range(1, len(lines) + 1))
        self.assertGreater(cfg.interval, 0)
        self.assertIsInstance(sanityErrors(cfg), list)
        self.assertIsInstance(describe(cfg), list)


class FatalTests(SynchronousTestCase):
    """
    Settings the daemon cannot start with.
    """

    def test_intervalNotPositive(self):
        """
        C{interval <= 0} is fatal: a L{ConfigError} naming file and the line
        that set it.  Only the final value counts.
        """
        for value in ["0", "-1", "+0", "-"]:
            e = self.assertRaises(
                ConfigError, parse, ["# c", f"interval = {value}"], "/etc/w.conf"
            )
            self.assertEqual((e.path, e.line), ("/etc/w.conf", 2))
        self.assertEqual(str(e), "/etc/w.conf:2: interval = 0 must be > 0")
        self.assertEqual(parse(["interval = 0", "interval = 2"]).interval, 2)
        e = self.assertRaises(ConfigError, parse, ["interval = 0", "interval = x"], "w")
        self.assertEqual(e.line, 1)

    def test_emptyLogDir(self):
        """
        An empty log-dir is fatal: the original cannot create the
        directory and stops.
        """
        e = self.assertRaises(ConfigError, parse, ["log-dir ="], "w.conf")
        self.assertEqual(str(e), "w.conf:1: log-dir is empty: the output files need a directory")


class SanityTests(SynchronousTestCase):
    """
    L{sanityErrors}: the checks C{-f} skips.
    """

    def test_intervalTooLong(self):
        """
        C{interval >= watchdog-timeout - 1} is an error at the interval's
        line, worded as the original, with a suggestion that passes.
        """
        cfg = parse(["watchdog-timeout = 10", "interval = 9"], "w.conf")
        errors = sanityErrors(cfg)
        self.assertEqual(
            [str(e) for e in errors],
            [
                "w.conf:2: This interval length (9) might reboot the system while the "
                "process sleeps! Try 8 or less (watchdog-timeout = 10, from w.conf:1)"
            ],
        )
        self.assertEqual((errors[0].path, errors[0].line), ("w.conf", 2))
        self.assertEqual(sanityErrors(parse(["watchdog-timeout = 10", "interval = 8"])), [])
        self.assertEqual(
            [str(e) for e in sanityErrors(parse(["interval = 59"], "w.conf"))],
            [
                "w.conf:1: This interval length (59) might reboot the system while the "
                "process sleeps! Try 58 or less (watchdog-timeout = 60, the default)"
            ],
        )

    def test_timeoutTooShort(self):
        """
        With the default interval, the error is at the watchdog-timeout line.
        """
        self.assertEqual(
            [str(e) for e in sanityErrors(parse(["", "watchdog-timeout = 2"], "w.conf"))],
            [
                "w.conf:2: This interval length (1) might reboot the system while the "
                "process sleeps! Try a watchdog-timeout of 3 or more (interval is the default)"
            ],
        )

    def test_maxLoadTooLow(self):
        """
        C{0 < max-load-1 < 2} is an error at the max-load-1 line; 0 (off),
        negative values and 2 are not.
        """
        errors = sanityErrors(parse(["", "", "max-load-1 = 1"], "w.conf"))
        self.assertEqual(
            [str(e) for e in errors],
            ["w.conf:3: Using this maximal load average (1) might reboot the system too often!"],
        )
        for value in ["0", "-1", "2"]:
            self.assertEqual(sanityErrors(parse([f"max-load-1 = {value}"])), [])

    def test_both(self):
        """
        Both problems are reported, in the original's order; fields made
        with C{attrs.evolve} and no file line name the default.
        """
        errors = sanityErrors(attrs.evolve(WatchdogConfig(), interval=60, maxLoad1=1))
        self.assertEqual(
            [str(e) for e in errors],
            [
                "<defaults>: This interval length (60) might reboot the system while "
                "the process sleeps! Try 58 or less (interval and watchdog-timeout: not "
                "from the file)",
                "<defaults>: Using this maximal load average (1) might reboot the system "
                "too often! (max-load-1 is the default)",
            ],
        )
        self.assertEqual([(e.path, e.line) for e in errors], [("<defaults>", None)] * 2)

    def test_force(self):
        """
        Settings within the limits give no errors (what C{-f} would skip
        is empty): the defaults, the sample file, and the boundaries.
        """
        self.assertEqual(sanityErrors(WatchdogConfig()), [])
        self.assertEqual(sanityErrors(load(SAMPLE)), [])
        self.assertEqual(
            sanityErrors(parse(["interval = 58", "max-load-1 = 2", "watchdog-timeout = 60"])),
            [],
        )


class QuirkTests(FieldsMixin, SynchronousTestCase):
    """
    The original's reading rules that give surprising values, kept so the
    same file gives the same values.
    """

    def test_atoi(self):
        """
        Integers are read like C{atoi} once they start with a digit or a
        sign: trailing text is ignored, white space around is trimmed.
        """
        cases = [("10s", 10), ("+5", 5), ("-3", -3), (" 7 ", 7), ("5 # comment", 5),
                 ("0x10", 0), ("1e3", 1), ("3.9", 3), ("\t12\r", 12)]
        for text, value in cases:
            cfg = parse([f"sigterm-delay ={text}\n"], "q.conf")
            self.assertEqual((text, cfg.sigtermDelay), (text, value))
            self.assertEqual(cfg.warnings, ())

    def test_trailingCommentIsValue(self):
        """
        A C{#} after a value is part of it: numbers stop before it, strings
        keep it, and yes/no no longer matches (old value kept).
        """
        cfg = parse(
            ["interval = 5 # comment", "admin = root # me", "realtime = yes # please"], "q.conf"
        )
        self.assertEqual((cfg.interval, cfg.admin, cfg.realtime), (5, "root # me", False))
        self.assertWarnings(
            cfg,
            [
                "q.conf:3: bad value 'yes # please' for realtime: expected yes or no "
                "(any case); old value kept"
            ],
        )

    def test_yesNoAnyCase(self):
        """
        yes, no and auto are matched in any case.
        """
        cfg = parse(
            [
                "realtime = YES",
                "temp-power-off = No",
                "log-killed-pids = yEs",
                "watchdog-refresh-use-settimeout = AUTO",
                "watchdog-refresh-ignore-errors = Yes",
            ]
        )
        self.assertEqual(
            (cfg.realtime, cfg.tempPowerOff, cfg.logKilledPids, cfg.refreshUseSettimeout,
             cfg.refreshIgnoreErrors),
            (True, False, True, "auto", True),
        )
        cfg = parse(["watchdog-refresh-use-settimeout = nO"])
        self.assertEqual(cfg.refreshUseSettimeout, "no")

    def test_keysCaseSensitive(self):
        """
        Keys must be written in lower case, as the original's C{strcmp}.
        """
        cfg = parse(["REALTIME = yes", "Admin = x"], "q.conf")
        self.assertFields(cfg, DEFAULTS)
        self.assertEqual(len(cfg.warnings), 2)

    def test_lastScalarWins(self):
        """
        A scalar key given twice takes the last value, and names that line.
        """
        cfg = parse(["interval = 2", "admin = a", "interval = 3", "admin = b"], "q.conf")
        self.assertEqual((cfg.interval, cfg.admin), (3, "b"))
        self.assertEqual(cfg.sources["interval"], "q.conf:3")

    def test_emptyDisables(self):
        """
        An empty value sets string keys to L{None}: C{admin =} disables the
        mail, and likewise device, repair binary, heartbeat and test
        directory, even after an earlier value.
        """
        cfg = parse(
            [
                "admin = ops",
                "admin =",
                "watchdog-device = /dev/watchdog",
                "watchdog-device = ",
                "repair-binary =",
                "heartbeat-file =\t",
                "test-directory =",
                "sendmail =",
            ],
            "q.conf",
        )
        self.assertFields(
            cfg,
            dict(DEFAULTS, admin=None, device=None, repairBinary=None, heartbeatFile=None,
                 testDirectory=None),
        )
        self.assertEqual(cfg.warnings, ())
        self.assertEqual(cfg.sources["admin"], "q.conf:2")

    def test_quotesKept(self):
        """
        Quotes are part of the value, as in the original, which does no
        unquoting.
        """
        cfg = parse(['admin = "ops"', "file = '/a b'"])
        self.assertEqual((cfg.admin, cfg.files), ('"ops"', (FileCheck("'/a b'", 0),)))

    def test_whitespace(self):
        """
        Space, tab, CR, LF and backspace are trimmed around lines, keys and
        values (Debian's file uses tabs); other characters such as a form
        feed are not.
        """
        cfg = parse(["\t realtime\t\t= yes\r\n", "\badmin\b=\bme\b", "ping = 192.0.2.1\f"])
        self.assertEqual((cfg.realtime, cfg.admin, cfg.pings), (True, "me", ("192.0.2.1\f",)))

    def test_nulEndsLine(self):
        """
        A NUL byte ends the line, as it ends the C string.
        """
        cfg = parse(["interval = 4\0garbage", "admin = a\0b"])
        self.assertEqual((cfg.interval, cfg.admin), (4, "a"))

    def test_derivedLoads(self):
        """
        max-load-5 and max-load-15 default to 3/4 and 1/2 of max-load-1,
        by C integer division (truncated towards zero); a value given (not
        0) is kept.
        """
        for lines, loads in [
            (["max-load-1 = 25"], (25, 18, 12)),
            (["max-load-1 = 25", "max-load-5 = 20"], (25, 20, 12)),
            (["max-load-1 = 25", "max-load-15 = 20"], (25, 18, 20)),
            (["max-load-5 = 20", "max-load-1 = 25", "max-load-5 = 0"], (25, 18, 12)),
            (["max-load-1 = -5"], (-5, -3, -2)),
            (["max-load-1 = 1"], (1, 0, 0)),
            (["max-load-5 = 7"], (0, 7, 0)),
        ]:
            cfg = parse(lines)
            self.assertEqual((lines, (cfg.maxLoad1, cfg.maxLoad5, cfg.maxLoad15)), (lines, loads))

    def test_softbootOption(self):
        """
        C{softboot-option = yes} makes retry-timeout 0 whatever the file
        says about it, and names the softboot line as its source.
        """
        cfg = parse(["softboot-option = yes", "retry-timeout = 30"], "q.conf")
        self.assertEqual((cfg.softboot, cfg.retryTimeout), (True, 0))
        self.assertEqual(cfg.sources["retry-timeout"], "q.conf:1")
        self.assertEqual(parse(["softboot-option = no", "retry-timeout = 30"]).retryTimeout, 30)


class LoadTests(FieldsMixin, SynchronousTestCase):
    """
    L{load}: reading files.
    """

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_load(self):
        """
        A file is read with its name in sources and warnings.
        """
        path = self.write(b"interval = 3\nnonsense\n")
        cfg = load(path)
        self.assertEqual((cfg.interval, cfg.path, cfg.sources["interval"]), (3, path, f"{path}:1"))
        self.assertWarnings(cfg, [f"{path}:2: ignored line without '=': 'nonsense'"])

    def test_missing(self):
        """
        A missing file is an error naming it, unless C{missingOk}: then the
        defaults, with a warning naming the file.
        """
        path = self.mktemp()
        e = self.assertRaises(ConfigError, load, path)
        self.assertEqual(str(e), f"{path}: cannot open the configuration file: no such file")
        cfg = load(path, missingOk=True)
        self.assertFields(cfg, DEFAULTS)
        self.assertWarnings(cfg, [f"{path}: no such file; the defaults are used"])

    def test_unreadable(self):
        """
        A file that cannot be read (here a directory) is an error naming it.
        """
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(ConfigError, load, path)
        self.assertEqual(e.path, path)
        self.assertIn("cannot read the configuration file", str(e))

    def test_lineEnds(self):
        """
        Only LF ends a line, as with C{getline}: a lone CR inside a line
        does not start a new one (so line numbers match), a CR before the
        LF is trimmed.
        """
        path = self.write(b"interval = 5\rjunk\r\nnonsense\n")
        cfg = load(path)
        self.assertEqual(cfg.interval, 5)
        self.assertWarnings(cfg, [f"{path}:2: ignored line without '=': 'nonsense'"])

    def test_bytesKept(self):
        """
        Bytes that are not UTF-8 are kept, so a path in the file names the
        same file.
        """
        path = self.write(b"file = /tmp/caf\xe9\n")
        cfg = load(path)
        self.assertEqual(os.fsencode(cfg.files[0].path), b"/tmp/caf\xe9")


class SampleTests(FieldsMixin, SynchronousTestCase):
    """
    conf/watchdog.conf, the commented sample.
    """

    def sampleLines(self) -> list[str]:
        with open(SAMPLE, encoding="utf-8") as f:
            return f.read().splitlines()

    def test_parsesToDefaults(self):
        """
        The sample parses with no warnings to the defaults: every setting in
        it is commented out.
        """
        cfg = load(SAMPLE)
        self.assertEqual(cfg.warnings, ())
        self.assertFields(cfg, DEFAULTS)

    def test_everyKey(self):
        """
        Every key appears in the sample as a commented C{#key = value} line.
        """
        present = {
            m.group(1)
            for m in (re.match(r"#([a-z0-9-]+) = ", line) for line in self.sampleLines())
            if m
        }
        self.assertEqual(present, set(KEY_NAMES))

    def test_shownDefaults(self):
        """
        Uncommented, the sample's settings are all valid, and every key with
        a default shows that default (only the obsolete temperature-device
        warns).
        """
        lines = [line[1:] for line in self.sampleLines() if re.match(r"#[a-z0-9-]+ = ", line)]
        cfg = parse(lines, "uncommented")
        self.assertEqual(
            [w.message.split(";")[0] for w in cfg.warnings],
            ["temperature-device is obsolete (watchdog 5.14 and older)"],
        )
        examples = {"device", "temperatureSensors", "files", "pidfiles", "pings", "interfaces",
                    "testBinaries", "repairBinary", "heartbeatFile", "smtpCAFile", "mailFrom",
                    "sendmail"}
        for name, value in DEFAULTS.items():
            if name not in examples:
                self.assertEqual((name, getattr(cfg, name)), (name, value))
        self.assertEqual(cfg.files, (FileCheck("/var/log/syslog", 1407),))
