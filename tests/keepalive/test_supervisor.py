"""
Tests for L{sysmon.keepalive.supervisor}: a L{Supervisor} in this process,
on the real reactor, supervising real processes.
"""

from __future__ import annotations

import errno
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.trial import unittest

from sysmon import processes
from sysmon.keepalive.errors import (
    AlreadyRegistered,
    BadRequest,
    NoSuchProcess,
    NotRegistered,
    Refused,
)
from sysmon.keepalive.policy import State
from sysmon.keepalive.supervisor import Supervisor
from sysmon.keepalive.table import Record, Table
from sysmon.keepalive.config import ProcessConfig
from sysmon.testing import LogCapture, ProcTree, commandLineSoon, processAlive, writeScript

_marker = itertools.count(int(time.time() * 1000) % 1000000 * 100)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class SupervisorTestCase(unittest.TestCase):
    """
    A supervisor under a temporary directory; every process it ever ran is
    killed at the end.
    """

    timeout = 60
    usePidfd: bool | None = None

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="ka", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.scripts = os.path.join(self.root, "scripts")
        os.mkdir(self.scripts)
        self.logDir = os.path.join(self.root, "log")
        self.tablePath = os.path.join(self.root, "table", "keepalive.data")
        self.logs = LogCapture(self)
        self.pids: set[int] = set()
        self.addCleanup(self._killAll)
        self.supervisor: Supervisor | None = None

    def _killAll(self) -> None:
        for pid in self.pids:
            _kill(pid)

    def marker(self) -> str:
        """
        A number no other test's processes use (C{sleep <marker>}).
        """
        return str(10_000_000 + next(_marker))

    def config(self, name: str, **keys: Any) -> str:
        """
        Write a process config file; keys with C{_} are written with C{-}.
        """
        path = os.path.join(self.root, name + ".cfg")
        with open(path, "w") as f:
            for key, value in keys.items():
                f.write(f"{key.replace('_', '-').replace('env-', 'env.')} = {value}\n")
        return path

    def script(self, name: str, body: str, directory: str | None = None) -> str:
        return writeScript(os.path.join(directory or self.root, name), body)

    def start(self, clean: bool = False, **kw: Any) -> Supervisor:
        """
        Start a supervisor on this test's table; it is stopped at the end.
        """
        kw.setdefault("usePidfd", self.usePidfd)
        supervisor = Supervisor(
            self.tablePath,
            logDir=self.logDir,
            scriptDir=self.scripts,
            controlPath=os.path.join(self.root, "ctl"),
            clean=clean,
            reactor=_reactor(),
            **kw,
        )
        supervisor.startService()
        self.supervisor = supervisor
        self.addCleanup(self.stop, supervisor)
        self.track()
        return supervisor

    def stop(self, supervisor: Supervisor) -> defer.Deferred[None]:
        self.track(supervisor)
        if supervisor.running:
            return supervisor.stopService()
        return defer.succeed(None)

    def track(self, supervisor: Supervisor | None = None) -> None:
        supervisor = supervisor or self.supervisor
        if supervisor is not None:
            for entry in supervisor.entries.values():
                if entry.record.pid:
                    self.pids.add(entry.record.pid)

    def record(self, slot: int) -> Record:
        assert self.supervisor is not None
        return self.supervisor.entries[slot].record

    async def waitFor(self, predicate: Callable[[], Any], timeout: float = 15.0,
                      what: str = "the condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.track()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            await task.deferLater(_reactor(), 0.02, lambda: None)

    async def waitPid(self, slot: int, old: int) -> int:
        """
        Wait until slot's process is a running one other than C{old}.
        """
        def new() -> int:
            r = self.record(slot)
            return r.pid if r.pid and r.pid != old and r.state is State.OK else 0

        pid = await self.waitFor(new, what=f"a new process in slot {slot}")
        self.pids.add(pid)
        return pid

    def popen(self, marker: str) -> subprocess.Popen[bytes]:
        """
        Start C{sleep <marker>} outside keepalive; killed at the end.
        """
        child = subprocess.Popen(["/bin/sleep", marker], start_new_session=True)
        self.pids.add(child.pid)
        self.assertEqual(commandLineSoon(child.pid), ("/bin/sleep", marker))

        def end() -> None:
            child.kill()
            child.wait()

        self.addCleanup(end)
        return child

    async def sleep(self, seconds: float) -> None:
        await task.deferLater(_reactor(), seconds, lambda: None)


def _fds(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def _statusField(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(name)


class RestartTests(SupervisorTestCase):
    """
    Deaths and restarts of children.
    """

    @defer.inlineCallbacks
    def test_killedRestartedAtOnce(self) -> Any:
        """
        A child killed with SIGKILL is started again at once, in a new
        process; the death and the restart are logged, and the restart
        counts (the process's and the supervisor's) go up.
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        first = self.record(slot).pid
        self.assertTrue(processAlive(first))
        yield defer.ensureDeferred(self.sleep(1.1))
        os.kill(first, signal.SIGKILL)
        second = yield defer.ensureDeferred(self.waitPid(slot, first))
        self.assertTrue(processAlive(second))
        self.assertEqual(self.record(slot).restarts, 1)
        self.assertEqual(supervisor.restarts, 1)
        self.assertEqual(self.record(slot).lastExit, "was killed by SIGKILL")
        self.assertTrue(self.logs.has(f"(pid {first}) was killed by SIGKILL; restarted at once "
                                      f"as pid {second}"))

    @defer.inlineCallbacks
    def test_errorLimitDown(self) -> Any:
        """
        A program that exits at once is restarted until it has failed
        error-limit times within its probation period; then it is C{down},
        logged, and not restarted any more.  Registering it again brings it
        back, with its failures forgotten.
        """
        supervisor = self.start()
        flag = os.path.join(self.root, "flag")
        marker = self.marker()
        program = self.script("flaky", f'[ -e {flag} ] && exec sleep {marker}\nexit 1\n')
        cfg = self.config("flaky", command=program, respawn_time=0, error_limit=10)
        [slot] = yield supervisor.register(cfg)
        yield defer.ensureDeferred(self.waitFor(
            lambda: self.record(slot).state is State.DOWN, what="state down"))
        record = self.record(slot)
        self.assertEqual((record.restarts, len(record.failures), record.pid), (9, 10, 0))
        self.assertEqual(supervisor.restarts, 9)
        self.assertEqual(record.lastExit, "exited with status 1")
        self.assertTrue(self.logs.has("is down: 10 failures within 300s (error limit 10)"))
        yield defer.ensureDeferred(self.sleep(0.5))
        self.assertEqual((self.record(slot).restarts, self.record(slot).state), (9, State.DOWN))

        open(flag, "w").close()
        again = yield supervisor.register(cfg)
        self.assertEqual(again, [slot])
        pid = yield defer.ensureDeferred(self.waitPid(slot, 0))
        self.assertTrue(processAlive(pid))
        self.assertEqual(self.record(slot).failures, ())

    @defer.inlineCallbacks
    def test_respawnTime(self) -> Any:
        """
        A program that dies sooner than its respawn time after starting
        waits that long before each restart.
        """
        supervisor = self.start()
        stamps = os.path.join(self.root, "stamps")
        program = self.script("quick", f"date +%s.%N >> {stamps}\nexit 3\n")
        [slot] = yield supervisor.register(
            self.config("quick", command=program, respawn_time=0.4, error_limit=1000))

        def count() -> bool:
            try:
                with open(stamps) as f:
                    return len(f.read().split()) >= 4
            except FileNotFoundError:
                return False

        yield defer.ensureDeferred(self.waitFor(count, what="four starts"))
        with open(stamps) as f:
            times = [float(t) for t in f.read().split()]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertTrue(all(gap >= 0.39 for gap in gaps), gaps)
        self.assertTrue(self.logs.has("restarting in 0.4s: it lived"))
        yield supervisor.unregister(slot=slot, kill=True)

    @defer.inlineCallbacks
    def test_noRespawnWaitForLongLived(self) -> Any:
        """
        A process that lived longer than its respawn time is restarted
        without waiting.
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(
            self.config("s", command="/bin/sleep", args=marker, respawn_time=0.3))
        first = self.record(slot).pid
        yield defer.ensureDeferred(self.sleep(0.4))
        os.kill(first, signal.SIGKILL)
        before = time.monotonic()
        yield defer.ensureDeferred(self.waitPid(slot, first))
        self.assertLess(time.monotonic() - before, 0.25)


class ChildTests(SupervisorTestCase):
    """
    How children are started: session, files, environment, user.
    """

    @defer.inlineCallbacks
    def test_childSetup(self) -> Any:
        """
        A child runs in a session of its own, with only stdin (C{/dev/null}),
        stdout and stderr open, no signal ignored, and the config's
        environment additions; its output goes to C{<basename>.<pid>}.
        """
        supervisor = self.start()
        marker = self.marker()
        program = self.script("talk", f'echo "out $GREETING"\necho err >&2\nexec sleep {marker}\n')
        [slot] = yield supervisor.register(
            self.config("talk", command=program, env_GREETING="hello"))
        pid = self.record(slot).pid
        log = os.path.join(self.logDir, f"talk.{pid}")
        self.assertEqual(self.record(slot).logPath, log)

        def said() -> bool:
            with open(log) as f:
                return "err" in f.read()

        yield defer.ensureDeferred(self.waitFor(said, what="the output"))
        with open(log) as f:
            self.assertEqual(f.read().split("\n"), ["out hello", "err", ""])
        # The shell holds its script open (dash: fd 10) until it execs sleep.
        yield defer.ensureDeferred(self.waitFor(
            lambda: commandLineSoon(pid) == ("sleep", marker), what="the exec of sleep"))
        self.assertEqual(os.getsid(pid), pid)
        fds = _fds(pid)
        self.assertEqual(fds, [0, 1, 2], [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds])
        self.assertEqual(os.readlink(f"/proc/{pid}/fd/0"), "/dev/null")
        # Only the signals a program can handle (glibc keeps 32 and 33).
        handled = sum(1 << (s - 1) for s in signal.valid_signals() if s < 65)
        self.assertEqual(int(_statusField(pid, "SigIgn"), 16) & handled, 0)
        self.assertEqual(int(_statusField(pid, "SigBlk"), 16) & handled, 0)

    @defer.inlineCallbacks
    def test_userAndDirectory(self) -> Any:
        """
        C{user} and C{cwd} are applied: the process runs as that user, with
        that user's primary group, in that directory.
        """
        nobody = pwd.getpwnam("nobody")
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(
            self.config("u", command="/bin/sleep", args=marker, user="nobody", cwd="/tmp"))
        pid = self.record(slot).pid
        yield defer.ensureDeferred(self.waitFor(
            lambda: os.readlink(f"/proc/{pid}/exe").endswith("sleep"), what="exec"))
        self.assertEqual(_statusField(pid, "Uid").split()[0], str(nobody.pw_uid))
        self.assertEqual(_statusField(pid, "Gid").split()[0], str(nobody.pw_gid))
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), "/tmp")

    @defer.inlineCallbacks
    def test_logReplacedOnRestart(self) -> Any:
        """
        A restart deletes the previous instance's log file; unregistering a
        process that is not running deletes its log.
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        first = self.record(slot).pid
        firstLog = self.record(slot).logPath
        os.kill(first, signal.SIGKILL)
        second = yield defer.ensureDeferred(self.waitPid(slot, first))
        self.assertFalse(os.path.exists(firstLog))
        secondLog = os.path.join(self.logDir, f"sleep.{second}")
        self.assertTrue(os.path.exists(secondLog))
        yield supervisor.unregister(slot=slot, kill=True)
        self.assertFalse(os.path.exists(secondLog))
        self.assertFalse(processAlive(second))

    @defer.inlineCallbacks
    def test_termWait(self) -> Any:
        """
        Unregistering with kill sends SIGTERM to the process's group and,
        to one that ignores it, SIGKILL after its term wait; whatever it
        started goes with it.
        """
        supervisor = self.start()
        marker = self.marker()
        stubborn = self.script("stubborn", f"trap '' TERM\nsleep {marker} &\nwhile :; do sleep 0.05; done\n")
        [slot] = yield supervisor.register(self.config("stubborn", command=stubborn, term_wait=0.6))
        pid = self.record(slot).pid

        def background() -> list[int]:
            return [p for p, _ in processes.find("/bin/sleep", (marker,))]

        [helper] = yield defer.ensureDeferred(self.waitFor(background, what="its background job"))
        self.pids.add(helper)
        before = time.monotonic()
        yield supervisor.unregister(slot=slot, kill=True)
        took = time.monotonic() - before
        self.assertGreaterEqual(took, 0.55)
        self.assertLess(took, 5)
        self.assertFalse(processAlive(pid))
        # Its group got the same SIGKILL at the same moment.
        yield defer.ensureDeferred(self.waitFor(lambda: not processAlive(helper),
                                                timeout=2, what="its background job killed"))
        self.assertTrue(self.logs.has("ignored SIGTERM for 0.6s: SIGKILL"))

    @defer.inlineCallbacks
    def test_termEndsAtOnce(self) -> Any:
        """
        A process that honours SIGTERM is gone at once: no SIGKILL, no wait.
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(
            self.config("s", command="/bin/sleep", args=marker, term_wait=5))
        pid = self.record(slot).pid
        before = time.monotonic()
        yield supervisor.unregister(path="/bin/sleep", kill=True)
        self.assertLess(time.monotonic() - before, 2)
        self.assertFalse(processAlive(pid))
        self.assertFalse(self.logs.has("ignored SIGTERM"))

    @defer.inlineCallbacks
    def test_unregisterLeavesRunning(self) -> Any:
        """
        Unregistering without kill forgets the process and leaves it
        running; it is reaped when it ends (no zombie).
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        pid = self.record(slot).pid
        yield supervisor.unregister(pid=pid)
        self.assertNotIn(slot, supervisor.entries)
        self.assertTrue(processAlive(pid))
        os.kill(pid, signal.SIGKILL)
        yield defer.ensureDeferred(self.waitFor(
            lambda: not os.path.exists(f"/proc/{pid}"), what="the orphan reaped"))


class NoPidfdChildTests(RestartTests):
    """
    The same restarts without pidfds: children reaped through Twisted's
    SIGCHLD handling.
    """

    usePidfd = False


class RequestTests(SupervisorTestCase):
    """
    Bad requests get clear errors and change nothing.
    """

    @defer.inlineCallbacks
    def test_registeredTwice(self) -> Any:
        """
        A running process cannot be registered again.
        """
        supervisor = self.start()
        cfg = self.config("s", command="/bin/sleep", args=self.marker())
        yield supervisor.register(cfg)
        error = yield self.assertFailure(supervisor.register(cfg), AlreadyRegistered)
        self.assertIn("already registered (slot 1, state ok", str(error))
        self.assertEqual(len(supervisor.entries), 1)

    @defer.inlineCallbacks
    def test_unregisterSelection(self) -> Any:
        """
        Unregistering names exactly one selector; an ambiguous path asks for
        the arguments; unknown entries are L{NotRegistered}.
        """
        supervisor = self.start()
        one, two = self.marker(), self.marker()
        yield supervisor.register(self.config("a", command="/bin/sleep", args=one))
        yield supervisor.register(self.config("b", command="/bin/sleep", args=two))
        error = yield self.assertFailure(supervisor.unregister(path="/bin/sleep"), BadRequest)
        self.assertIn("2 registered processes run /bin/sleep (slots 1, 2)", str(error))
        yield self.assertFailure(supervisor.unregister(), BadRequest)
        yield self.assertFailure(supervisor.unregister(slot=1, pid=5), BadRequest)
        error = yield self.assertFailure(supervisor.unregister(slot=9), NotRegistered)
        self.assertEqual(str(error), "slot 9 is not registered")
        yield self.assertFailure(supervisor.unregister(group="web"), NotRegistered)
        self.assertEqual(len(supervisor.entries), 2)
        slots = yield supervisor.unregister(path="/bin/sleep", args=[two], matchArgs=True,
                                            kill=True)
        self.assertEqual(slots, [2])

    @defer.inlineCallbacks
    def test_adoptWrongProcess(self) -> Any:
        """
        C{-R} refuses a pid that is not running, or that runs another
        program than the config names.
        """
        supervisor = self.start()
        cfg = self.config("s", command="/bin/sleep", args="5")
        error = yield self.assertFailure(supervisor.adopt(cfg, 4194304), NoSuchProcess)
        self.assertEqual(str(error), "no process 4194304 is running")
        error = yield self.assertFailure(supervisor.adopt(cfg, os.getpid()), NoSuchProcess)
        self.assertIn(f"process {os.getpid()} runs ", str(error))
        self.assertIn("not /bin/sleep", str(error))
        self.assertEqual(supervisor.entries, {})


class RestartScriptTests(SupervisorTestCase):
    """
    Restart scripts and their exit codes.
    """

    def restarter(self, name: str, body: str, mode: int = 0o755) -> str:
        path = self.script(name, body, self.scripts)
        os.chmod(path, mode)
        return path

    @defer.inlineCallbacks
    def test_scriptRestarts(self) -> Any:
        """
        A process with a restart script is restarted by the script; keepalive
        then follows the process the script started.
        """
        supervisor = self.start()
        marker = self.marker()
        ran = os.path.join(self.root, "ran")
        self.restarter("restart-s", f'echo "$KEEPALIVE_SLOT $KEEPALIVE_LAST_EXIT" >> {ran}\n'
                                    f"setsid -f /bin/sleep {marker} > /dev/null 2>&1\n")
        [slot] = yield supervisor.register(self.config(
            "s", command="/bin/sleep", args=marker, restart_script="restart-s"))
        first = self.record(slot).pid
        os.kill(first, signal.SIGKILL)
        second = yield defer.ensureDeferred(self.waitPid(slot, first))
        with open(ran) as f:
            self.assertEqual(f.read(), f"{slot} was killed by SIGKILL\n")
        self.assertEqual(commandLineSoon(second), ("/bin/sleep", marker))
        self.assertFalse(self.record(slot).child)
        os.kill(second, signal.SIGKILL)
        third = yield defer.ensureDeferred(self.waitPid(slot, second))
        self.assertTrue(processAlive(third))

    @defer.inlineCallbacks
    def test_unsafeScriptRefused(self) -> Any:
        """
        A restart script writable by its group, or owned by another user, is
        refused at registration with the reason, and nothing is registered.
        """
        supervisor = self.start()
        marker = self.marker()
        self.restarter("loose", "exit 0\n", mode=0o775)
        error = yield self.assertFailure(supervisor.register(self.config(
            "s", command="/bin/sleep", args=marker, restart_script="loose")), Refused)
        self.assertIn("writable by group or others (mode 0775)", str(error))
        owned = self.restarter("owned", "exit 0\n")
        os.chown(owned, pwd.getpwnam("nobody").pw_uid, -1)
        error = yield self.assertFailure(supervisor.register(self.config(
            "t", command="/bin/sleep", args=marker, restart_script="owned")), Refused)
        self.assertIn("owned by nobody", str(error))
        self.assertEqual(supervisor.entries, {})
        self.assertEqual(processes.find("/bin/sleep", (marker,)), [])

    @defer.inlineCallbacks
    def test_downCode(self) -> Any:
        """
        A restart script that exits with the C{-c down=} code puts the
        process down at once.
        """
        supervisor = self.start()
        self.restarter("give-up", "exit 7\n")
        [slot] = yield supervisor.register(self.config(
            "s", command="/bin/sleep", args=self.marker(), restart_script="give-up"),
            downCode=7)
        os.kill(self.record(slot).pid, signal.SIGKILL)
        yield defer.ensureDeferred(self.waitFor(
            lambda: self.record(slot).state is State.DOWN, what="down"))
        self.assertEqual(len(self.record(slot).failures), 1)
        self.assertTrue(self.logs.has("exited with 7 (-c down=7)"))

    @defer.inlineCallbacks
    def test_rejectCode(self) -> Any:
        """
        A restart script that exits with the C{-c reject=} code refused:
        each refusal counts as a failure and the script is asked again,
        until the error limit puts the process down.
        """
        supervisor = self.start()
        asked = os.path.join(self.root, "asked")
        self.restarter("not-now", f"echo x >> {asked}\nexit 5\n")
        [slot] = yield supervisor.register(self.config(
            "s", command="/bin/sleep", args=self.marker(), restart_script="not-now",
            error_limit=3, respawn_time=0), rejectCode=5)
        os.kill(self.record(slot).pid, signal.SIGKILL)
        yield defer.ensureDeferred(self.waitFor(
            lambda: self.record(slot).state is State.DOWN, what="down", timeout=20))
        with open(asked) as f:
            self.assertEqual(len(f.read().split()), 2)
        self.assertEqual(len(self.record(slot).failures), 3)
        self.assertTrue(self.logs.has("refused the restart (exit 5, -c reject=5)"))

    @defer.inlineCallbacks
    def test_failingScriptFallsBack(self) -> Any:
        """
        A restart script that fails with another code is logged with its
        output, and keepalive starts the command itself.
        """
        supervisor = self.start()
        self.restarter("broken", "echo cannot reach the database >&2\nexit 1\n")
        marker = self.marker()
        [slot] = yield supervisor.register(self.config(
            "s", command="/bin/sleep", args=marker, restart_script="broken"))
        first = self.record(slot).pid
        os.kill(first, signal.SIGKILL)
        second = yield defer.ensureDeferred(self.waitPid(slot, first))
        self.assertTrue(self.record(slot).child)
        self.assertEqual(commandLineSoon(second), ("/bin/sleep", marker))
        self.assertTrue(self.logs.has("cannot reach the database"))


class NonChildTests(SupervisorTestCase):
    """
    Processes keepalive did not start: adopted by pid, taken over from the
    table, daemons that fork away.
    """

    @defer.inlineCallbacks
    def test_adoptedDeathNoticed(self) -> Any:
        """
        A process registered by pid is watched; when it dies, keepalive
        starts the program itself.
        """
        supervisor = self.start()
        marker = self.marker()
        outside = self.popen(marker)
        slot = yield supervisor.adopt(self.config("s", command="/bin/sleep", args=marker),
                                      outside.pid)
        record = self.record(slot)
        self.assertEqual((record.pid, record.child, record.spawned, record.state),
                         (outside.pid, False, False, State.OK))
        self.assertEqual(record.startTime, processes.startTime(outside.pid))
        outside.kill()
        new = yield defer.ensureDeferred(self.waitPid(slot, outside.pid))
        self.assertTrue(self.record(slot).child)
        self.assertEqual(commandLineSoon(new), ("/bin/sleep", marker))

    @defer.inlineCallbacks
    def test_takeOverAfterRestart(self) -> Any:
        """
        Stopping keepalive leaves its processes running; the next keepalive
        takes them over from the table and restarts them when they die.
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        pid = self.record(slot).pid
        yield supervisor.stopService()
        self.assertTrue(processAlive(pid))
        self.start()
        record = self.record(slot)
        self.assertEqual((record.pid, record.child, record.state), (pid, False, State.OK))
        self.assertTrue(self.logs.has(f"pid {pid} still running; watching it again"))
        os.kill(pid, signal.SIGKILL)
        new = yield defer.ensureDeferred(self.waitPid(slot, pid))
        self.assertTrue(processAlive(new))

    @defer.inlineCallbacks
    def test_reusedPidNotMistaken(self) -> Any:
        """
        A table record whose pid now belongs to another process (another
        start time) is not taken for it: that process is left alone, and
        the program is started again.
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        yield supervisor.stopService()
        os.kill(self.record(slot).pid, signal.SIGKILL)
        # Start times count clock ticks (10 ms): let one pass.
        yield defer.ensureDeferred(self.sleep(0.05))
        stranger = self.popen(marker)
        table = Table(self.tablePath)
        [record] = table.load()
        self.assertNotEqual(processes.startTime(stranger.pid), record.startTime)
        record.pid = stranger.pid
        table.save(record)
        table.close()
        self.start()
        new = yield defer.ensureDeferred(self.waitPid(slot, stranger.pid))
        self.assertNotEqual(new, stranger.pid)
        self.assertTrue(self.record(slot).child)
        yield defer.ensureDeferred(self.sleep(0.2))
        self.assertIsNone(stranger.poll())

    @defer.inlineCallbacks
    def test_unrecordedRestartTakenOver(self) -> Any:
        """
        When keepalive stopped after restarting a process but before the
        table had the new pid, the next keepalive follows the process that
        runs the same command in a session of its own, started after the
        recorded one, instead of starting a second one; a process with the
        same command that is not a session leader is not taken for it.
        """
        supervisor = self.start()
        marker, other = self.marker(), self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        [slot2] = yield supervisor.register(self.config("t", command="/bin/sleep", args=other))
        yield supervisor.stopService()
        for s in (slot, slot2):
            pid = self.record(s).pid
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        yield defer.ensureDeferred(self.sleep(0.05))
        successor = self.popen(marker)
        plain = subprocess.Popen(["/bin/sleep", other])
        self.pids.add(plain.pid)
        self.addCleanup(plain.wait)
        self.addCleanup(plain.kill)
        self.start()
        record = self.record(slot)
        self.assertEqual((record.pid, record.state, record.child), (successor.pid, State.OK, False))
        self.assertTrue(self.logs.has(f"pid {successor.pid} runs the same command in a session "
                                      "of its own"))
        new = yield defer.ensureDeferred(self.waitPid(slot2, 0))
        self.assertNotEqual(new, plain.pid)
        self.assertIsNone(plain.poll())
        self.assertEqual([p for p, _ in processes.find("/bin/sleep", (marker,))], [successor.pid])

    @defer.inlineCallbacks
    def test_daemonizingProgram(self) -> Any:
        """
        A program with a pid file that forks into the background and exits
        is followed through its pid file, and restarted when the process
        that stayed dies.
        """
        supervisor = self.start()
        marker = self.marker()
        pidfile = os.path.join(self.root, "d.pid")
        daemon = self.script("daemon", f"setsid -f sh -c 'echo $$ > {pidfile}; "
                                       f"exec /bin/sleep {marker}'\nexit 0\n")
        [slot] = yield supervisor.register(self.config("d", command=daemon, pidfile=pidfile))

        def following() -> int:
            r = self.record(slot)
            return r.pid if r.state is State.OK and not r.child else 0

        pid = yield defer.ensureDeferred(self.waitFor(following, what="the daemon followed"))
        self.pids.add(pid)
        with open(pidfile) as f:
            self.assertEqual(int(f.read()), pid)
        os.kill(pid, signal.SIGKILL)
        yield defer.ensureDeferred(self.waitFor(
            lambda: following() not in (0, pid), what="the daemon again"))

    @defer.inlineCallbacks
    def test_cleanStart(self) -> Any:
        """
        A clean start (C{-i}) forgets the table and deletes the old logs.
        """
        supervisor = self.start()
        marker = self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        log = self.record(slot).logPath
        yield supervisor.stopService()
        os.kill(self.record(slot).pid, signal.SIGKILL)
        fresh = self.start(clean=True)
        self.assertEqual(fresh.entries, {})
        self.assertFalse(os.path.exists(log))
        yield fresh.writer.flush()
        self.assertEqual(Table(self.tablePath, readonly=True).load(), [])

    @defer.inlineCallbacks
    def test_quit(self) -> Any:
        """
        Quitting stops the processes keepalive started and leaves those
        registered by pid running, and clears the table.
        """
        supervisor = self.start()
        started, outside = self.marker(), self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=started))
        mine = self.record(slot).pid
        theirs = self.popen(outside)
        other = yield supervisor.adopt(self.config("o", command="/bin/sleep", args=outside),
                                       theirs.pid)
        stopped = yield supervisor.quit()
        self.assertEqual(stopped, [slot])
        self.assertNotEqual(other, slot)
        self.assertFalse(processAlive(mine))
        self.assertTrue(processAlive(theirs.pid))
        yield supervisor.stopService()
        self.assertEqual(Table(self.tablePath, readonly=True).load(), [])


class PollingTests(NonChildTests):
    """
    The same for processes that are not children, polled every interval
    instead of watched through pidfds.
    """

    usePidfd = False

    def start(self, clean: bool = False, **kw: Any) -> Supervisor:
        kw.setdefault("interval", 0.2)
        return super().start(clean, **kw)


class GroupTests(SupervisorTestCase):
    """
    Groups: a critical member's failure restarts the whole group.
    """

    @defer.inlineCallbacks
    def test_criticalMemberRestartsGroup(self) -> Any:
        """
        When the critical member dies, the other members are stopped and
        everything is started again; a plain member's death restarts only
        that member.
        """
        supervisor = self.start()
        one, two = self.marker(), self.marker()
        app = self.config("app", command="/bin/sleep", args=one)
        web = self.config("web", command="/bin/sleep", args=two)
        group = os.path.join(self.root, "group.cfg")
        with open(group, "w") as f:
            f.write(f"group = site\ncritical = {app}\nmember = {web}\n")
        slots = yield supervisor.register(group)
        self.assertEqual(len(slots), 2)
        critical, plain = (s for s in slots)
        self.assertTrue(self.record(critical).critical)
        appPid, webPid = self.record(critical).pid, self.record(plain).pid
        os.kill(webPid, signal.SIGKILL)
        newWeb = yield defer.ensureDeferred(self.waitPid(plain, webPid))
        self.assertEqual(self.record(critical).pid, appPid)
        os.kill(appPid, signal.SIGKILL)
        yield defer.ensureDeferred(self.waitPid(critical, appPid))
        yield defer.ensureDeferred(self.waitPid(plain, newWeb))
        self.assertFalse(processAlive(newWeb))
        slotsGone = yield supervisor.unregister(group="site", kill=True)
        self.assertEqual(sorted(slotsGone), sorted(slots))


class DescriptorLimitTests(SupervisorTestCase):
    """
    When keepalive has no file descriptor left for a pidfd, processes are
    still watched: children through SIGCHLD, others by polling.
    """

    def setUp(self) -> None:
        super().setUp()

        def exhausted(pid: int, flags: int = 0) -> int:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        self.patch(os, "pidfd_open", exhausted)

    @defer.inlineCallbacks
    def test_childrenAndOthersStillWatched(self) -> Any:
        """
        Without pidfds to be had, a killed child and a killed adopted
        process are both noticed and restarted, and the shortage is logged
        once.
        """
        supervisor = self.start(usePidfd=True, interval=0.2)
        marker, outside = self.marker(), self.marker()
        [slot] = yield supervisor.register(self.config("s", command="/bin/sleep", args=marker))
        first = self.record(slot).pid
        os.kill(first, signal.SIGKILL)
        yield defer.ensureDeferred(self.waitPid(slot, first))
        theirs = self.popen(outside)
        other = yield supervisor.adopt(self.config("o", command="/bin/sleep", args=outside),
                                       theirs.pid)
        self.assertTrue(supervisor.entries[other].polled)
        theirs.kill()
        yield defer.ensureDeferred(self.waitPid(other, theirs.pid))
        self.assertEqual(self.logs.count("no file descriptor left for a pidfd"), 1)


class StartTests(SupervisorTestCase):
    """
    What keepalive refuses to start with.
    """

    def test_tableInUse(self) -> None:
        """
        A second keepalive on a table that a running keepalive holds stops
        with the reason (exit status 1) and touches nothing.
        """
        self.start()
        second = Supervisor(self.tablePath, logDir=self.logDir, scriptDir=self.scripts,
                            reactor=_reactor())
        with self.assertRaises(SystemExit) as caught:
            second.privilegedStartService()
        self.assertEqual(caught.exception.code, 1)
        self.assertTrue(self.logs.has(
            f"another keepalive (pid {os.getpid()}) is using the table {self.tablePath}"))

    def test_badTable(self) -> None:
        """
        A table file that is not keepalive's stops keepalive with the reason
        (exit status 1); the file is left as it was.
        """
        os.makedirs(os.path.dirname(self.tablePath))
        with open(self.tablePath, "w") as f:
            f.write("not a database\n")
        supervisor = Supervisor(self.tablePath, logDir=self.logDir, scriptDir=self.scripts,
                                reactor=_reactor())
        with self.assertRaises(SystemExit) as caught:
            supervisor.privilegedStartService()
        self.assertEqual(caught.exception.code, 1)
        self.assertTrue(self.logs.has(f"table {self.tablePath}: not a keepalive table"))
        with open(self.tablePath) as f:
            self.assertEqual(f.read(), "not a database\n")


class PidReuseWhilePollingTests(SupervisorTestCase):
    """
    A polled process whose pid is taken by another process between two
    polls, on a fixture C{/proc} (real pid reuse cannot be arranged).
    """

    usePidfd = False

    @defer.inlineCallbacks
    def test_reusedBetweenPolls(self) -> Any:
        """
        When the pid of a polled process shows another start time, the
        process is taken as dead and the program is started again; the
        process now holding the pid is not signalled or adopted.
        """
        proc = ProcTree.make(os.path.join(self.root, "proc"))
        marker = self.marker()
        proc.process(4242, starttime=500, cmdline=("/bin/sleep", marker))
        supervisor = self.start(proc=proc.root, interval=0.1)
        slot = yield supervisor.adopt(self.config("s", command="/bin/sleep", args=marker), 4242)
        yield defer.ensureDeferred(self.sleep(0.3))
        self.assertEqual((self.record(slot).pid, self.record(slot).state), (4242, State.OK))
        proc.process(4242, starttime=900, cmdline=("/usr/bin/other",))
        new = yield defer.ensureDeferred(self.waitPid(slot, 4242))
        self.assertTrue(self.record(slot).child)
        self.assertEqual(commandLineSoon(new), ("/bin/sleep", marker))
        self.assertEqual(self.record(slot).lastExit,
                         "ended (not keepalive's child: status unknown)")
