"""
C{twistd watchdog}'s command line: the original's options, the sanity
checks and C{-f}, and the checks built from a configuration.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sysmon.watchdog import checks as C
from sysmon.watchdog import tap
from tests.watchdog.harness import FakePinger, script


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)

    def conf(self, text: str) -> str:
        path = os.path.join(self.root, "watchdog.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """
        A file with only comments gives the defaults: interval 1, retry 60.
        """
        options = self.parse("-c", self.conf("# nothing\n"))
        cfg = options.watchdogConfig
        self.assertEqual((cfg.interval, cfg.retryTimeout, cfg.device), (1, 60, None))
        self.assertFalse(options["no-action"])

    def test_softboot(self) -> None:
        """
        -b sets the retry timeout to 0 (act on the first failure).
        """
        cfg = self.parse("-b", "-c", self.conf("retry-timeout = 30\n")).watchdogConfig
        self.assertEqual(cfg.retryTimeout, 0)

    def test_verbose(self) -> None:
        """
        -v counts; the file's verbose is the floor.
        """
        self.assertEqual(self.parse("-v", "-v", "-c", self.conf("")).watchdogConfig.verbose, 2)

    def test_sanity(self) -> None:
        """
        interval >= watchdog-timeout - 1 is refused with the original's
        wording (but suggesting a value that passes: the original's "Try 9"
        would fail again), the file and line, and the hint about --force;
        -f accepts it.
        """
        path = self.conf("watchdog-timeout = 10\ninterval = 9\n")
        e = self.assertRaises(usage.UsageError, self.parse, "-c", path)
        self.assertIn("This interval length (9) might reboot the system while the process "
                      "sleeps! Try 8 or less", str(e))
        self.assertIn(f"{path}:2", str(e))
        self.assertIn("--force", str(e))
        self.assertEqual(self.parse("-f", "-c", path).watchdogConfig.interval, 9)

    def test_badFile(self) -> None:
        """
        A missing configuration file and a fatal value are usage errors
        naming the file.
        """
        missing = os.path.join(self.root, "missing.conf")
        e = self.assertRaises(usage.UsageError, self.parse, "-c", missing)
        self.assertIn(missing, str(e))
        e = self.assertRaises(usage.UsageError, self.parse, "-c", self.conf("interval = 0\n"))
        self.assertIn("watchdog.conf:1", str(e))

    def test_retired(self) -> None:
        """
        The options the original retired give its message.
        """
        path = self.conf("")
        e = self.assertRaises(usage.UsageError, self.parse, "-c", path, "-i", "10")
        self.assertEqual(str(e), f"Option -i is no longer valid, please specify it in {path}.")

    def test_loopExit(self) -> None:
        """
        -X takes a count; a negative one is refused.
        """
        self.assertEqual(self.parse("-X", "5", "-c", self.conf(""))["loop-exit"], 5)
        self.assertRaises(usage.UsageError, self.parse, "-X", "-1", "-c", self.conf(""))


class BuildChecksTests(SynchronousTestCase):
    """
    L{tap.buildChecks}.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "watchdog.d"))

    def build(self, text: str) -> list[C.Check]:
        from sysmon.watchdog import config

        cfg = config.parse(text.splitlines(), "<test>")
        return tap.buildChecks(cfg, Clock(), pinger=FakePinger())

    def test_order(self) -> None:
        """
        The checks come in the original's order, each named for its retry
        timer; test programs replace the fork test.
        """
        prog = script(self.root, "t1")
        v1 = script(os.path.join(self.root, "watchdog.d"), "v1")
        made = self.build(
            f"max-load-1 = 24\nmin-memory = 10\nallocatable-memory = 5\n"
            f"temperature-sensor = /sys/t1\nfile = /var/log/syslog\nchange = 100\n"
            f"pidfile = /run/x.pid\ninterface = eth0\nping = 127.0.0.1\n"
            f"test-binary = {prog}\ntest-directory = {self.root}/watchdog.d\n")
        self.assertEqual(
            [(type(c).__name__, c.name) for c in made],
            [("FileTableCheck", "<file-table>"), ("LoadCheck", "<load-average>"),
             ("MemoryCheck", "<free-memory>"), ("AllocatableMemoryCheck", "<alloc-memory>"),
             ("TemperatureCheck", "/sys/t1"), ("FileCheck", "/var/log/syslog"),
             ("PidfileCheck", "/run/x.pid"), ("InterfaceCheck", "eth0"),
             ("PingCheck", "127.0.0.1"), ("TestProgramCheck", prog),
             ("TestProgramCheck", v1)])
        self.assertEqual([c.version for c in made[-2:]], [0, 1])
        self.assertEqual(made[5].change, 100)
        self.assertEqual(made[8].wait, 1 / 3)

    def test_forkTest(self) -> None:
        """
        With no test programs, the fork test is there.
        """
        made = self.build(f"test-directory = {self.root}/watchdog.d\n")
        self.assertEqual([c.name for c in made], ["<file-table>", "<fork test>"])

    def test_unsafeTestBinary(self) -> None:
        """
        A configured test-binary that is writable by others is refused with
        the reason.
        """
        prog = script(self.root, "t1")
        os.chmod(prog, 0o777)
        e = self.assertRaises(usage.UsageError, self.build, f"test-binary = {prog}\n")
        self.assertIn("writable by group or others", str(e))

    def test_badPing(self) -> None:
        """
        A ping target that is not an address is refused at start.
        """
        e = self.assertRaises(usage.UsageError, self.build, "ping = gateway.local\n")
        self.assertIn("gateway.local", str(e))
