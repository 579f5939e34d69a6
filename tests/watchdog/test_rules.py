"""
The retry, repair and shutdown rules, for every check, on fixture trees with
a fake clock.

Each check gets the same suite (L{RulesMixin}) through a scenario that knows
how to make that check pass, fail with a repairable code, and (where the
check has one) fail with a code that is not repairable.  Time is the fake
reactor's; repair programs are fake child processes the test ends with the
exit status it wants.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sysmon.children import ChildRunner
from sysmon.watchdog import checks as C
from sysmon.watchdog.codes import (
    EDONTKNOW,
    EMAXLOAD,
    ENOCHANGE,
    ENOLOAD,
    EREBOOT,
    ERESET,
    ETOOHOT,
)
from sysmon.testing import LogCapture
from tests.watchdog.harness import FakePinger, Harness, script


class Scenario:
    """
    How to drive one kind of check.

    @cvar code: the repairable failure's code (L{None}: the check has none).
    @cvar fatal: a not-repairable failure's code (L{None}: none).
    @cvar timed: the check has a retry timer.
    """

    code: int | None = None
    fatal: int | None = None
    timed = True
    #: rounds a failing fixture takes before the check fails
    lag = 0
    version = 0

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.state = "healthy"

    def make(self) -> C.Check:
        raise NotImplementedError

    def set(self, state: str) -> None:
        """
        Make the fixture "healthy", "failing" or "fatal".
        """
        self.state = state

    def beforeRound(self) -> None:
        """
        Called just before each round (counters that must move, ...).
        """

    def afterRound(self) -> None:
        """
        Called just after each round (end the test programs it started).
        """

    def dontKnow(self, check: C.Check) -> None:
        """
        Make the check answer EDONTKNOW from now on (only test programs
        can really: by exiting with 245; for the others the service's rule
        is what is under test).
        """
        check.run = lambda: EDONTKNOW


class LoadScenario(Scenario):
    code = EMAXLOAD

    def make(self) -> C.Check:
        return C.LoadCheck((24, 18, 12), self.h.proc.root)

    def set(self, state: str) -> None:
        super().set(state)
        self.h.proc.loadavg(30.0 if state == "failing" else 0.5, 0.5, 0.5)


class LoadMissingScenario(LoadScenario):
    code = ENOLOAD

    def set(self, state: str) -> None:
        Scenario.set(self, state)
        path = os.path.join(self.h.proc.root, "loadavg")
        if state == "failing":
            with open(path, "w") as f:
                f.write("garbage\n")
        else:
            self.h.proc.loadavg()


class MemoryScenario(Scenario):
    code = 249  # EINVMEM: meminfo unreadable
    fatal = errno.ENOMEM

    def make(self) -> C.Check:
        return C.MemoryCheck(1000, 0, self.h.proc.root, pageSize=4096)

    def set(self, state: str) -> None:
        super().set(state)
        if state == "failing":
            with open(os.path.join(self.h.proc.root, "meminfo"), "w") as f:
                f.write("MemFree: lots\n")
        elif state == "fatal":
            self.h.proc.meminfo(MemAvailable=3996)  # 999 pages
        else:
            self.h.proc.meminfo(MemAvailable=4000)  # 1000 pages: enough


class SwapScenario(MemoryScenario):
    def make(self) -> C.Check:
        return C.MemoryCheck(0, 256, self.h.proc.root, pageSize=4096)

    def set(self, state: str) -> None:
        Scenario.set(self, state)
        if state == "failing":
            with open(os.path.join(self.h.proc.root, "meminfo"), "w") as f:
                f.write("MemFree: lots\n")
        elif state == "fatal":
            self.h.proc.meminfo(SwapTotal=8192, SwapFree=8192 - 1028)  # 257 pages
        else:
            self.h.proc.meminfo(SwapTotal=8192, SwapFree=8192 - 1024)  # 256 pages


class AllocScenario(Scenario):
    fatal = errno.ENOMEM

    def make(self) -> C.Check:
        self.check = C.AllocatableMemoryCheck(16, C.BlockingRunner(), pageSize=4096)
        return self.check

    def set(self, state: str) -> None:
        super().set(state)
        # 2**50 bytes cannot be mapped and populated anywhere.
        self.check.size = 2**50 if state == "fatal" else 16 * 4096


class TemperatureScenario(Scenario):
    fatal = ETOOHOT

    def make(self) -> C.Check:
        self.sensor = "/sys/class/hwmon/hwmon0/temp1_input"
        os.makedirs(self.h.path("sys", "class", "hwmon", "hwmon0"), exist_ok=True)
        return C.TemperatureCheck(self.sensor, 90, self.h.path("sys"))

    def set(self, state: str) -> None:
        super().set(state)
        with open(self.h.path("sys", "class", "hwmon", "hwmon0", "temp1_input"), "w") as f:
            f.write("90000\n" if state == "fatal" else "45000\n")


class FileScenario(Scenario):
    code = errno.ENOENT

    def make(self) -> C.Check:
        self.file = self.h.path("watched")
        return C.FileCheck(self.file, 0, C.BlockingRunner(), self.h.reactor.seconds)

    def set(self, state: str) -> None:
        super().set(state)
        if state == "failing":
            if os.path.exists(self.file):
                os.unlink(self.file)
        else:
            open(self.file, "w").close()


class FileChangeScenario(FileScenario):
    code = ENOCHANGE
    lag = 5

    def make(self) -> C.Check:
        self.file = self.h.path("changing")
        self.mtime = 1_000_000
        open(self.file, "w").close()
        return C.FileCheck(self.file, 5, C.BlockingRunner(), self.h.reactor.seconds)

    def set(self, state: str) -> None:
        Scenario.set(self, state)

    def beforeRound(self) -> None:
        if self.state == "healthy":
            self.mtime += 1
            os.utime(self.file, (self.mtime, self.mtime))


class PidfileScenario(Scenario):
    code = errno.ESRCH

    def make(self) -> C.Check:
        self.file = self.h.path("daemon.pid")
        self.alive: set[int] = {4242}

        def kill(pid: int, signum: int) -> None:
            if pid not in self.alive:
                raise ProcessLookupError(errno.ESRCH, "No such process")

        return C.PidfileCheck(self.file, kill=kill)

    def set(self, state: str) -> None:
        super().set(state)
        with open(self.file, "w") as f:
            f.write("4243\n" if state == "failing" else "4242\n")


class InterfaceScenario(Scenario):
    code = errno.ENETUNREACH

    def make(self) -> C.Check:
        self.rx = 1000
        return C.InterfaceCheck("eth0", self.h.proc.root)

    def beforeRound(self) -> None:
        if self.state == "healthy":
            self.rx += 100
        self.h.proc.netdev({"lo": {"rx_bytes": 5}, "eth0": {"rx_bytes": self.rx}})


class PingScenario(Scenario):
    code = errno.ENETUNREACH

    def make(self) -> C.Check:
        self.pinger = FakePinger()
        return C.PingCheck("10.203.77.2", self.pinger, 3, 1 / 3)

    def set(self, state: str) -> None:
        super().set(state)
        self.pinger.code = 0 if state == "healthy" else errno.ENETUNREACH


class FileTableScenario(Scenario):
    code = errno.ENOENT
    timed = False

    def make(self) -> C.Check:
        return C.FileTableCheck(self.h.proc.root)

    def set(self, state: str) -> None:
        super().set(state)
        if state == "failing":
            os.unlink(os.path.join(self.h.proc.root, "uptime"))
        else:
            self.h.proc.uptime()


class ProgramScenario(Scenario):
    """
    A test-binary: fake child processes the scenario ends after each round.
    """

    code = 3
    fatal = EREBOOT
    version = 0

    def make(self) -> C.Check:
        self.program = script(self.h.root, "check-thing")
        self.check = C.TestProgramCheck(self.program, self.h.runner, self.h.cfg.logDir, 60,
                                        version=self.version)
        return self.check

    def dontKnow(self, check: C.Check) -> None:
        self.state = "dontknow"

    def afterRound(self) -> None:
        status = {"healthy": 0, "failing": self.code, "fatal": self.fatal,
                  "dontknow": EDONTKNOW}[self.state]
        for process in self.h.running():
            if process.args[1:] == C.TestProgramCheck.argv(self.check):
                process.exit(status)


class DirectoryProgramScenario(ProgramScenario):
    version = 1


class ForkScenario(Scenario):
    fatal = EREBOOT

    def make(self) -> C.Check:
        self.runner = ChildRunner(self.h.reactor, killpg=lambda p, s: None)
        return C.ForkCheck(self.runner)

    def set(self, state: str) -> None:
        super().set(state)
        self.runner.reactor = _NoFork() if state == "fatal" else self.h.reactor

    def afterRound(self) -> None:
        for process in self.h.running():
            if process.args[1].endswith("/true"):
                process.exit(0)


class _NoFork:
    def spawnProcess(self, *a: Any, **kw: Any) -> None:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")


class RulesBase:
    """
    Set-up and helpers for the rules' tests of the check C{scenario} makes.
    """

    scenario: type[Scenario]

    def setUp(self) -> None:
        self.h = Harness(self)
        self.log = LogCapture(self)
        self.s = self.scenario(self.h)
        self.check = self.s.make()
        self.s.set("healthy")

    def start(self, **cfg: Any) -> None:
        cfg.setdefault("retryTimeout", 60)
        cfg.setdefault("repairMaximum", 1)
        self.h.configure(**cfg)
        self.s.beforeRound()
        self.service = self.h.start([self.check])
        self.s.afterRound()

    def rounds(self, n: int) -> None:
        for _ in range(n):
            self.s.beforeRound()
            self.h.reactor.advance(1)
            self.s.afterRound()

    def repairs(self) -> list[Any]:
        return [p for p in self.h.reactor.processes if p.args[1] == self.repairProgram]

    def startFailing(self) -> None:
        """
        Make the fixture fail; the next round's result is a failure.
        """
        self.s.set("failing")
        self.rounds(self.s.lag)

    def assertActed(self, code: int) -> None:
        """
        The failure was acted on: the shutdown decided with C{code} or, for
        a test-directory program (which always repairs itself), its repair
        started.
        """
        if self.s.version == 1:
            repairs = [p.args[1:] for p in self.h.running() if p.args[2:3] == ["repair"]]
            self.assertEqual(repairs, [[self.s.program, "repair", str(code), self.s.program]])
        else:
            self.assertEqual(self.h.action.calls, [(code, "reboot")])

    def withRepair(self) -> None:
        self.repairProgram = script(self.h.root, "repair-it")
        self.h.configure(repairBinary=self.repairProgram)



class PassRules(RulesBase):
    """
    Every check: healthy is healthy.
    """

    def test_pass(self) -> None:
        """
        A healthy check round after round: no failure, no timer, no shutdown.
        """
        self.start()
        self.rounds(200)
        self.assertEqual(self.service.failures, {})
        self.assertEqual(self.service.states, {})
        self.assertEqual(self.h.action.calls, [])
        self.assertTrue(self.service.feeding)



class TimedRules(RulesBase):
    """
    Checks with a retry timer and a repairable failure.
    """

    def test_fail(self) -> None:
        """
        A failure is counted under the check's name and starts its retry
        timer, with nothing decided yet.
        """
        self.start()
        self.startFailing()
        self.rounds(1)
        self.assertEqual(self.service.failures[self.check.name], 1)
        self.assertEqual(self.service.states[self.check.name].since,
                         self.h.reactor.seconds())
        self.assertEqual(self.h.action.calls, [])
        self.assertTrue(self.log.has(f"{self.check.name} failed with {self.s.code}"))

    def test_retryBoundary(self) -> None:
        """
        With retry-timeout 60, a failure that has lasted exactly 60 seconds
        changes nothing; at 61 seconds (strictly greater) the shutdown is
        decided (no repair program), with the check's code.
        """
        self.start()
        self.startFailing()
        self.rounds(1)
        began = self.service.states[self.check.name].since
        self.rounds(60)
        self.assertEqual(self.h.reactor.seconds() - began, 60)
        self.assertEqual(self.h.action.calls, [])
        self.rounds(1)
        self.assertActed(self.s.code)
        self.assertTrue(self.log.has(f"Retry timed-out at 61 seconds for {self.check.name}"))

    def test_success_clears(self) -> None:
        """
        A pass in between restarts the timer: fail, pass, then failing again
        for 60 s is not yet acted on.
        """
        self.start()
        self.startFailing()
        self.rounds(30)
        self.s.set("healthy")
        self.rounds(2)
        self.assertNotIn(self.check.name, self.service.states)
        self.s.set("failing")
        self.rounds(60)
        self.assertEqual(self.h.action.calls, [])

    def test_repairSuccess(self) -> None:
        """
        After the retry timeout the repair binary runs as
        C{repair-binary <err> <name>} (or C{prog repair <err> prog} for a
        test-directory program); exit 0 means repaired: no shutdown, and the
        next fault period starts afresh.
        """
        self.withRepair()
        self.start()
        self.startFailing()
        self.rounds(62)
        if getattr(self.s, "version", 0) == 1:
            self.repairProgram = self.s.program
            expected = [self.s.program, "repair", str(self.s.code), self.s.program]
            repairs = [p for p in self.h.running() if p.args[2:3] == ["repair"]]
        else:
            expected = [self.repairProgram, str(self.s.code), self.check.name]
            repairs = self.repairs()
        self.assertEqual(len(repairs), 1)
        self.assertEqual(repairs[0].args[1:], expected)
        repairs[0].exit(0)
        self.assertEqual(self.h.action.calls, [])
        self.assertTrue(self.log.has(f"repair of {self.check.name} succeeded"))
        self.assertIsNone(self.service.states[self.check.name].since)

    def test_repairFailure(self) -> None:
        """
        A repair program that exits 7 decides the shutdown with error 7.
        """
        self.withRepair()
        self.start()
        self.startFailing()
        self.rounds(62)
        repair = [p for p in self.h.running()
                  if p.args[1] == self.repairProgram or p.args[2:3] == ["repair"]]
        self.assertEqual(len(repair), 1)
        repair[0].exit(7)
        self.assertEqual(self.h.action.calls, [(7, "reboot")])

    def test_repairMaximum(self) -> None:
        """
        With repair-maximum 1, a repair that "succeeds" while the fault
        stays is followed, one retry period later, by "Repair count
        exceeded" and the shutdown with the check's own code.
        """
        self.withRepair()
        self.start()
        self.startFailing()
        self.rounds(62)
        for p in self.h.running():
            if p.args[1] == self.repairProgram or p.args[2:3] == ["repair"]:
                p.exit(0)
        self.assertEqual(self.h.action.calls, [])
        self.rounds(62)
        self.assertEqual(self.h.action.calls, [(self.s.code, "reboot")])
        self.assertTrue(self.log.has(f"Repair count exceeded (2 for {self.check.name})"))
        self.assertEqual(self.service.repairsRun, 1)

    def test_repairUnlimited(self) -> None:
        """
        repair-maximum 0 means unlimited: three repair periods, three
        repairs, no shutdown.
        """
        self.withRepair()
        self.start(repairMaximum=0)
        self.startFailing()
        for _ in range(3):
            self.rounds(62)
            for p in self.h.running():
                if p.args[1] == self.repairProgram or p.args[2:3] == ["repair"]:
                    p.exit(0)
        self.assertEqual(self.service.repairsRun, 3)
        self.assertEqual(self.h.action.calls, [])

    def test_dontKnow(self) -> None:
        """
        EDONTKNOW leaves the retry timer alone: after a failure, answers of
        EDONTKNOW for 70 s neither reset the timer nor act; the next failure
        is acted on at once, its timer having run since the first.
        """
        self.start()
        self.startFailing()
        self.rounds(1)
        began = self.service.states[self.check.name].since
        original = self.check.run
        self.s.dontKnow(self.check)
        self.rounds(70)
        self.assertEqual(self.service.states[self.check.name].since, began)
        self.assertEqual(self.h.action.calls, [])
        self.check.run = original
        self.startFailing()
        self.rounds(1)
        self.assertActed(self.s.code)



class FatalRules(RulesBase):
    """
    Checks with a failure that is not repairable.
    """

    def test_notRepairable(self) -> None:
        """
        A code that is not repairable goes straight to the shutdown
        decision: no retry timer, no repair program, even with one
        configured.
        """
        self.withRepair()
        self.start()
        self.s.set("fatal")
        self.rounds(1)
        mode = "poweroff" if self.s.fatal == ETOOHOT else "reboot"
        self.assertEqual(self.h.action.calls, [(self.s.fatal, mode)])
        self.assertEqual(self.service.repairsRun, 0)
        self.assertTrue(self.log.has(
            f"shutting down the system because of error {self.s.fatal} = "))


class UntimedRules(RulesBase):
    """
    Checks without an object: no retry timer.
    """

    def test_untimed(self) -> None:
        """
        A check without an object (the file table) skips the retry timer:
        its first failure is acted on.
        """
        self.start()
        self.startFailing()
        self.rounds(1)
        self.assertEqual(self.h.action.calls, [(self.s.code, "reboot")])


def _suite(name: str, scenario: type[Scenario]) -> type:
    """
    A test case with the rules that apply to C{scenario}'s check.
    """
    bases: list[type] = [PassRules]
    if scenario.code is not None:
        bases.append(TimedRules if scenario.timed else UntimedRules)
    if scenario.fatal is not None:
        bases.append(FatalRules)
    return type(name, (*bases, SynchronousTestCase), {
        "scenario": scenario, "__doc__": f"The rules for {scenario.__name__[:-8]}."})


LoadRules = _suite("LoadRules", LoadScenario)
LoadMissingRules = _suite("LoadMissingRules", LoadMissingScenario)
MemoryRules = _suite("MemoryRules", MemoryScenario)
SwapRules = _suite("SwapRules", SwapScenario)
AllocRules = _suite("AllocRules", AllocScenario)
TemperatureRules = _suite("TemperatureRules", TemperatureScenario)
FileRules = _suite("FileRules", FileScenario)
FileChangeRules = _suite("FileChangeRules", FileChangeScenario)
PidfileRules = _suite("PidfileRules", PidfileScenario)
InterfaceRules = _suite("InterfaceRules", InterfaceScenario)
PingRules = _suite("PingRules", PingScenario)
FileTableRules = _suite("FileTableRules", FileTableScenario)
ProgramRules = _suite("ProgramRules", ProgramScenario)
DirectoryProgramRules = _suite("DirectoryProgramRules", DirectoryProgramScenario)
ForkRules = _suite("ForkRules", ForkScenario)


class ResetAndDecisionTests(SynchronousTestCase):
    """
    What follows a decision: ERESET, --no-action, one decision only.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.log = LogCapture(self)
        self.s = ProgramScenario(self.h)
        self.check = self.s.make()

    def test_reset(self) -> None:
        """
        ERESET (254) from a test program: no clean shutdown (the action is
        not called) and the feeding stops at once.
        """
        self.h.configure(retryTimeout=60)
        service = self.h.start([self.check])
        self.s.fatal = ERESET
        self.s.set("fatal")
        self.s.afterRound()
        self.assertEqual(self.h.action.calls, [])
        self.assertFalse(service.feeding)
        self.assertEqual(service.decided, ERESET)

    def test_noAction(self) -> None:
        """
        Under -q a decision is only logged ("Shutdown blocked by
        --no-action") and the daemon carries on checking.
        """
        self.h.configure(retryTimeout=0)
        service = self.h.start([self.check], noAction=True)
        self.s.set("failing")
        self.s.afterRound()
        self.h.reactor.advance(1)
        self.s.afterRound()
        self.assertEqual(self.h.action.calls, [])
        self.assertTrue(service.feeding)
        self.assertIsNone(service.decided)
        self.assertEqual(self.log.count("Shutdown blocked by --no-action (error 3"), 2)

    def test_once(self) -> None:
        """
        Several checks failing at once: the action is called once, with the
        first decided error.
        """
        other = C.PidfileCheck(self.h.path("missing.pid"))
        self.h.configure(retryTimeout=0)
        self.h.start([other, self.check])
        self.s.set("failing")
        self.s.afterRound()
        for _ in range(5):
            self.h.reactor.advance(1)
            self.s.afterRound()
        self.assertEqual(self.h.action.calls, [(errno.ENOENT, "reboot")])

    def test_softbootActsAtOnce(self) -> None:
        """
        retry-timeout 0 (-b, softboot-option) acts on the first failure.
        """
        self.h.configure(retryTimeout=0)
        self.h.start([self.check])
        self.s.set("failing")
        self.s.afterRound()
        self.assertEqual(self.h.action.calls, [(3, "reboot")])

    def test_temperatureHalt(self) -> None:
        """
        ETOOHOT with temp-power-off = no asks for a halt, not a power-off.
        """
        s = TemperatureScenario(self.h)
        check = s.make()
        s.set("fatal")
        self.h.configure(tempPowerOff=False)
        self.h.start([check])
        self.assertEqual(self.h.action.calls, [(ETOOHOT, "halt")])


class _FakeDevice:
    """
    Counts refreshes; records a timeout change and how it was closed.
    """

    path = "/dev/fake-watchdog"

    def __init__(self) -> None:
        self.isOpen = False
        self.refreshes: list[float] = []
        self.timeouts: list[int] = []
        self.closed: bool | None = None
        self.clock: Any = None

    def open(self) -> None:
        self.isOpen = True

    def keepalive(self) -> int:
        self.refreshes.append(self.clock.seconds())
        return 0

    def setTimeout(self, seconds: int) -> bool:
        self.timeouts.append(seconds)
        return True

    def close(self, magic: bool = True) -> None:
        self.isOpen = False
        self.closed = magic


class _Notes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, ...]] = []

    def send(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True


class _Hung(C.Check):
    name = "/hung"

    def __init__(self) -> None:
        self.started = 0

    def run(self) -> Any:
        from twisted.internet import defer

        self.started += 1
        return defer.Deferred()


class RefreshTests(SynchronousTestCase):
    """
    The refresh has a timer of its own.
    """

    def test_hungCheck(self) -> None:
        """
        A check that never answers does not stop the refresh: one per
        interval (and WATCHDOG=1 with each), and the hung check is not
        started again while it is busy.
        """
        h = Harness(self)
        device, notes, hung = _FakeDevice(), _Notes(), _Hung()
        device.clock = h.reactor
        h.start([hung], device=device, notifier=notes)
        h.advance(10)
        self.assertEqual(device.refreshes, [float(t) for t in range(11)])
        self.assertEqual(hung.started, 1)
        self.assertEqual(notes.sent[0][0], "READY=1")
        self.assertEqual(sum(("WATCHDOG=1",) == n for n in notes.sent), 11)

    def test_graceThenExpire(self) -> None:
        """
        After a decision the device is fed for sigterm-delay + margin
        seconds, then its timeout is set to 1 s and the feeding stops; a
        stop after that leaves it armed (no magic close).
        """
        h = Harness(self)
        device = _FakeDevice()
        device.clock = h.reactor
        h.configure(sigtermDelay=5)
        s = ProgramScenario(h)
        check = s.make()
        service = h.start([check], device=device)
        s.set("fatal")
        s.afterRound()
        self.assertEqual(h.action.calls, [(EREBOOT, "reboot")])
        h.advance(14)
        self.assertEqual(device.refreshes[-1], 14.0)
        self.assertEqual(device.timeouts, [])
        h.advance(1)
        self.assertEqual(device.timeouts, [1])
        h.advance(5)
        self.assertEqual(device.refreshes[-1], 14.0)
        service.stopService()
        self.assertIs(device.closed, False)

    def test_cleanStop(self) -> None:
        """
        A stop with nothing decided is a magic close.
        """
        h = Harness(self)
        device = _FakeDevice()
        device.clock = h.reactor
        service = h.start([C.FileTableCheck(h.proc.root)], device=device)
        service.stopService()
        self.assertIs(device.closed, True)
