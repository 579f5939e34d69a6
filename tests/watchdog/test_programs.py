"""
Test and repair programs run for real: exit codes, signals, time limits with
the whole process group killed, the test-directory and repair-binary
calling conventions, and their output in log-dir.
"""

from __future__ import annotations

import os
import signal
import time

import attrs
from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from sysmon.children import ChildRunner
from sysmon.testing import processAlive
from sysmon.watchdog import checks as C
from sysmon.watchdog import config
from sysmon.watchdog.codes import ECHKILL, EDONTKNOW, ENOERR, ETOOLONG
from sysmon.watchdog.service import WatchdogService
from sysmon.testing import LogCapture
from tests.watchdog.harness import RecordingShutdown, script


def _reactor() -> object:
    from twisted.internet import reactor

    return reactor




class TestProgramTests(TestCase):
    """
    L{C.TestProgramCheck} with real child processes.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.logDir = os.path.join(self.root, "log")
        os.makedirs(self.logDir)
        self.runner = ChildRunner(_reactor(), killGrace=0.0)
        self.addCleanup(self.runner.stopAll)
        self.log = LogCapture(self)

    def check(self, body: str, timeout: float | None = 60, version: int = 0) -> C.Check:
        return C.TestProgramCheck(script(self.root, "test-prog", body), self.runner,
                                  self.logDir, timeout, version=version)

    @defer.inlineCallbacks
    def test_exitCodes(self) -> defer.Deferred[None]:
        """
        The exit status is the result: 0, 3, 101 (an errno) and 245
        (EDONTKNOW) come back as they are.
        """
        for status in (0, 3, 101, 245):
            code = yield self.check(f"exit {status}\n").run()
            self.assertEqual(code, status)
        self.assertEqual(EDONTKNOW, 245)
        self.assertTrue(self.log.has("returned 101 = 'Network is unreachable'"))

    @defer.inlineCallbacks
    def test_signal(self) -> defer.Deferred[None]:
        """
        A program killed by a signal (it sends itself SIGKILL) gives
        ECHKILL.
        """
        code = yield self.check("kill -KILL $$\n").run()
        self.assertEqual(code, ECHKILL)
        self.assertTrue(self.log.has("was killed by uncaught signal 9"))

    @defer.inlineCallbacks
    def test_timeout(self) -> defer.Deferred[None]:
        """
        A program that runs longer than test-timeout gives ETOOLONG, and
        its whole process group goes: the program and the sleep it started
        in the background.
        """
        pidFile = os.path.join(self.root, "grandchild")
        body = f"sleep 300 &\necho $! > {pidFile}\nsleep 300\n"
        started = time.monotonic()
        code = yield self.check(body, timeout=1).run()
        self.assertEqual(code, ETOOLONG)
        self.assertLess(time.monotonic() - started, 10)
        with open(pidFile) as f:
            grandchild = int(f.read())
        for _ in range(100):
            if not processAlive(grandchild):
                break
            yield task.deferLater(_reactor(), 0.05, lambda: None)
        self.assertFalse(processAlive(grandchild), "the background sleep survived")
        self.assertTrue(self.log.has("exceeded time limit 1"))

    @defer.inlineCallbacks
    def test_directoryProgram(self) -> defer.Deferred[None]:
        """
        A test-directory program is called with the single argument
        C{test}; a test-binary with none.
        """
        record = os.path.join(self.root, "argv")
        body = f'echo "$#:$*" >> {record}\n'
        yield self.check(body, version=1).run()
        yield self.check(body, version=0).run()
        with open(record) as f:
            self.assertEqual(f.read().splitlines(), ["1:test", "0:"])

    @defer.inlineCallbacks
    def test_output(self) -> defer.Deferred[None]:
        """
        Standard output and error are appended to test-bin.stdout and
        test-bin.stderr in log-dir.
        """
        yield self.check("echo out-one; echo err-one >&2\n").run()
        yield self.check("echo out-two; echo err-two >&2; exit 1\n").run()
        with open(os.path.join(self.logDir, "test-bin.stdout")) as f:
            self.assertEqual(f.read(), "out-one\nout-two\n")
        with open(os.path.join(self.logDir, "test-bin.stderr")) as f:
            self.assertEqual(f.read(), "err-one\nerr-two\n")

    @defer.inlineCallbacks
    def test_missing(self) -> defer.Deferred[None]:
        """
        A program that cannot be run gives the errno its exec would have
        failed with (ENOENT), as the original's child exits with it.
        """
        check = C.TestProgramCheck(os.path.join(self.root, "nope"), self.runner,
                                   self.logDir, 60)
        code = yield check.run()
        self.assertEqual(code, 2)

    @defer.inlineCallbacks
    def test_fork(self) -> defer.Deferred[None]:
        """
        The fork test passes when a process can be started.
        """
        code = yield C.ForkCheck(self.runner).run()
        self.assertEqual(code, ENOERR)

    def test_directoryListing(self) -> None:
        """
        test-directory programs: executable regular files in name order;
        dot-files, non-executables, directories and unsafe (group-writable)
        files are left out, the unsafe one with its reason in the log.
        """
        d = os.path.join(self.root, "watchdog.d")
        os.makedirs(os.path.join(d, "subdir"))
        b = script(d, "b-check")
        a = script(d, "a-check")
        script(d, ".hidden")
        with open(os.path.join(d, "notes.txt"), "w") as f:
            f.write("x")
        unsafe = script(d, "c-unsafe")
        os.chmod(unsafe, 0o775)
        self.assertEqual(C.testDirectoryPrograms(d), [a, b])
        self.assertTrue(self.log.has("not running test program " + unsafe))
        self.assertTrue(self.log.has("writable by group or others"))
        self.assertEqual(C.testDirectoryPrograms(os.path.join(self.root, "none")), [])


class RepairProgramTests(TestCase):
    """
    The service running real repair programs after real test failures.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.logDir = os.path.join(self.root, "log")
        os.makedirs(self.logDir)
        self.record = os.path.join(self.root, "repair-argv")
        self.log = LogCapture(self)
        self.runner = ChildRunner(_reactor(), killGrace=0.0)

    def service(self, checks: list[C.Check], **cfg: object) -> WatchdogService:
        settings = attrs.evolve(config.parse([], "<test>"), logDir=self.logDir, admin=None,
                                retryTimeout=0, **cfg)
        self.action = RecordingShutdown()
        service = WatchdogService(settings, checks, action=self.action, reactor=_reactor())
        service.startService()
        self.addCleanup(service.stopService)
        self.addCleanup(self.runner.stopAll)
        return service

    @defer.inlineCallbacks
    def waitFor(self, condition: object, timeout: float = 20) -> defer.Deferred[None]:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail("timed out; log:\n" + "\n".join(self.log.texts()[-20:]))
            yield task.deferLater(_reactor(), 0.05, lambda: None)

    @defer.inlineCallbacks
    def test_repairBinary(self) -> defer.Deferred[None]:
        """
        repair-binary runs as C{repair-binary <err> <object>} with its
        output in repair-bin.stdout/.stderr; exit 0 means repaired: no
        shutdown.
        """
        test = script(self.root, "failing-test", "exit 3\n")
        repair = script(self.root, "repair", f'echo "$*" >> {self.record}\n'
                                              'echo repaired; echo warn >&2\n')
        check = C.TestProgramCheck(test, self.runner, self.logDir, 60)
        service = self.service([check], repairBinary=repair, repairMaximum=0)
        yield self.waitFor(lambda: os.path.exists(self.record)
                           and service.repairsRun >= 1 and not service._repairing)
        with open(self.record) as f:
            self.assertEqual(f.readline().strip(), f"3 {test}")
        with open(os.path.join(self.logDir, "repair-bin.stdout")) as f:
            self.assertIn("repaired\n", f.read())
        with open(os.path.join(self.logDir, "repair-bin.stderr")) as f:
            self.assertIn("warn\n", f.read())
        self.assertEqual(self.action.calls, [])

    @defer.inlineCallbacks
    def test_directoryRepair(self) -> defer.Deferred[None]:
        """
        A test-directory program repairs itself: C{prog repair <err> prog};
        its repair failing (exit 9) decides the shutdown with error 9.
        """
        prog = script(self.root, "selfrepair",
                      f'echo "$*" >> {self.record}\n'
                      'if [ "$1" = test ]; then exit 4; fi\nexit 9\n')
        check = C.TestProgramCheck(prog, self.runner, self.logDir, 60, version=1)
        self.service([check])
        yield self.waitFor(lambda: self.action.calls)
        with open(self.record) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[:2], ["test", f"repair 4 {prog}"])
        self.assertEqual(self.action.calls, [(9, "reboot")])

    @defer.inlineCallbacks
    def test_repairTimeout(self) -> defer.Deferred[None]:
        """
        A repair program that runs longer than repair-timeout is killed
        (with its group) and the shutdown is decided with ETOOLONG.
        """
        test = script(self.root, "failing-test", "exit 3\n")
        repair = script(self.root, "slow-repair", "sleep 300\n")
        check = C.TestProgramCheck(test, self.runner, self.logDir, 60)
        service = self.service([check], repairBinary=repair, repairTimeout=1)
        service.repairRunner.killGrace = 0.2
        yield self.waitFor(lambda: self.action.calls)
        self.assertEqual(self.action.calls, [(ETOOLONG, "reboot")])
