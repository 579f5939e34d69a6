"""
Tests for L{sysmon.children}: running programs from the reactor and the
script safety check.
"""

from __future__ import annotations

import os
import signal
import stat

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sysmon.children import ChildError, ChildRunner, UnsafeScript, checkScript
from sysmon.testing import FakeReactor, processAlive, writeScript






class RealChildTests(TestCase):
    """
    Real child processes under the real reactor.
    """

    timeout = 30

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.runner = ChildRunner(reactor, killGrace=0.5)
        self.addCleanup(self.runner.stopAll)

    def script(self, name, body, mode=0o755):
        return writeScript(os.path.join(self.dir, name), body, mode)

    @defer.inlineCallbacks
    def test_exitCodeAndOutput(self):
        """
        A script that prints and exits 3 gives exit code 3 and its output.
        """
        path = self.script("three", 'echo "out $1"; echo err >&2; exit 3\n')
        result = yield self.runner.run([path, "arg"])
        self.assertEqual(result.exitCode, 3)
        self.assertIsNone(result.signal)
        self.assertFalse(result.timedOut)
        self.assertFalse(result.succeeded)
        self.assertEqual(result.stdout, b"out arg\n")
        self.assertEqual(result.stderr, b"err\n")
        self.assertEqual(result.describe(), "exited with status 3")

    @defer.inlineCallbacks
    def test_success(self):
        """
        Exit 0 is success.
        """
        result = yield self.runner.run(["true"])
        self.assertTrue(result.succeeded)
        self.assertEqual(result.exitCode, 0)

    @defer.inlineCallbacks
    def test_killedBySignal(self):
        """
        A child killed by a signal reports the signal and no exit code.
        """
        path = self.script("suicide", "kill -USR1 $$\nsleep 5\n")
        result = yield self.runner.run([path])
        self.assertIsNone(result.exitCode)
        self.assertEqual(result.signal, signal.SIGUSR1)
        self.assertEqual(result.describe(), "was killed by SIGUSR1")

    @defer.inlineCallbacks
    def test_hungChildKilledWithGrandchildren(self):
        """
        A script that hangs past its timeout is terminated together with the
        children it started, even ones that ignore SIGTERM (they get SIGKILL
        after the grace period).
        """
        pids = os.path.join(self.dir, "pids")
        path = self.script(
            "hang",
            f"sh -c 'trap \"\" TERM; echo $$ >> {pids}; while :; do sleep 0.1; done' &\n"
            f"sleep 1000 &\necho $! >> {pids}\n"
            "trap '' TERM\nwait\n",
        )
        result = yield self.runner.run([path], timeout=0.5)
        self.assertTrue(result.timedOut)
        self.assertEqual(result.signal, signal.SIGKILL)
        self.assertIn("timed out after", result.describe())
        with open(pids) as f:
            children = [int(line) for line in f.read().split()]
        self.assertEqual(len(children), 2)
        # Give init a moment to reap the orphans.
        for _ in range(50):
            if not any(processAlive(p) for p in children):
                break
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        self.assertEqual([p for p in children if processAlive(p)], [])
        self.assertEqual(self.runner.running, 0)

    @defer.inlineCallbacks
    def test_timeoutTerm(self):
        """
        A hung child that honours SIGTERM ends by SIGTERM.
        """
        result = yield self.runner.run(["sleep", "30"], timeout=0.2)
        self.assertTrue(result.timedOut)
        self.assertEqual(result.signal, signal.SIGTERM)

    @defer.inlineCallbacks
    def test_lotsOfOutput(self):
        """
        Output beyond the limit is dropped from the front: the last bytes are
        kept, the result says it was truncated, and the child is never
        blocked on a full pipe.
        """
        runner = ChildRunner(self.reactor, maxOutput=1000)
        path = self.script(
            "chatty", "i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done; echo END\n"
        )
        result = yield runner.run([path], timeout=30)
        self.assertEqual(result.exitCode, 0)
        self.assertTrue(result.truncated)
        self.assertEqual(len(result.stdout), 1000)
        self.assertTrue(result.stdout.endswith(b"line19999\nEND\n"))

    @defer.inlineCallbacks
    def test_outputToFiles(self):
        """
        stdout and stderr can be appended to files instead of captured; the
        same file may take both.
        """
        log = os.path.join(self.dir, "log")
        with open(log, "w") as f:
            f.write("before\n")
        result = yield self.runner.run(
            ["sh", "-c", "echo out; echo err >&2"], stdoutPath=log, stderrPath=log
        )
        self.assertEqual(result.exitCode, 0)
        self.assertEqual(result.stdout, b"")
        with open(log) as f:
            self.assertEqual(sorted(f.read().split()), ["before", "err", "out"])

    @defer.inlineCallbacks
    def test_envCwdStdin(self):
        """
        The environment and working directory are the ones given; stdin is
        /dev/null.
        """
        result = yield self.runner.run(
            ["sh", "-c", 'echo "$FOO"; pwd; cat; echo done'],
            env={"FOO": "bar", "PATH": "/usr/bin:/bin"},
            path=self.dir,
        )
        lines = result.stdout.decode().split("\n")
        self.assertEqual(lines[0], "bar")
        self.assertEqual(os.path.realpath(lines[1]), os.path.realpath(self.dir))
        self.assertEqual(lines[2], "done")

    @defer.inlineCallbacks
    def test_stdinData(self):
        """
        With C{stdinData} the child reads exactly those bytes on its standard
        input and then end of file, even when they are much more than a pipe
        holds.
        """
        data = b"".join(b"line %07d\n" % i for i in range(100_000))
        runner = ChildRunner(self.reactor, killGrace=0.5, maxOutput=2 * len(data))
        self.addCleanup(runner.stopAll)
        result = yield runner.run(["sh", "-c", "cat; echo end"], stdinData=data)
        self.assertTrue(result.succeeded)
        self.assertEqual(result.stdout, data + b"end\n")

    @defer.inlineCallbacks
    def test_stdinDataNotRead(self):
        """
        A child that exits without reading its input still gives its normal
        result; the unread data is dropped.
        """
        result = yield self.runner.run(
            ["sh", "-c", "exit 4"], stdinData=b"x" * (1024 * 1024)
        )
        self.assertEqual(result.exitCode, 4)
        self.assertEqual(self.runner.running, 0)

    @defer.inlineCallbacks
    def test_ownSession(self):
        """
        The child runs in a session and process group of its own.
        """
        result = yield self.runner.run(
            ["sh", "-c", "echo $$; ps -o pgid= -p $$ 2>/dev/null || cut -d' ' -f5 /proc/$$/stat"]
        )
        pid, pgid = result.stdout.split()[:2]
        self.assertEqual(pid, pgid)
        self.assertNotEqual(int(pgid), os.getpgrp())

    def test_notFound(self):
        """
        A program that does not exist fails the Deferred with L{ChildError}.
        """
        d = self.runner.run([os.path.join(self.dir, "missing")])
        e = self.failureResultOf(d, ChildError)
        self.assertIn("no such file", str(e.value))
        d = self.runner.run(["no-such-program-sysmon"])
        self.assertIn("not found in PATH", str(self.failureResultOf(d, ChildError).value))

    def test_notExecutable(self):
        """
        A file that is not executable fails with L{ChildError}.
        """
        path = self.script("plain", "exit 0\n", mode=0o644)
        d = self.runner.run([path])
        self.assertIn("not an executable", str(self.failureResultOf(d, ChildError).value))

    def test_badOutputFile(self):
        """
        An output file that cannot be opened fails with L{ChildError}.
        """
        d = self.runner.run(["true"], stdoutPath=os.path.join(self.dir, "no", "such", "dir"))
        self.assertIn("cannot open output file", str(self.failureResultOf(d, ChildError).value))

    @defer.inlineCallbacks
    def test_cancelKills(self):
        """
        Cancelling the Deferred kills the child.
        """
        d = self.runner.run(["sleep", "30"])
        self.assertEqual(self.runner.running, 1)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        for _ in range(100):
            if self.runner.running == 0:
                break
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        self.assertEqual(self.runner.running, 0)

    @defer.inlineCallbacks
    def test_stopAll(self):
        """
        L{ChildRunner.stopAll} kills every running child and fires when they
        have ended.
        """
        self.runner.run(["sleep", "30"])
        self.runner.run(["sleep", "31"])
        results = yield self.runner.stopAll()
        self.assertEqual(sorted(r.signal for r in results), [signal.SIGTERM] * 2)
        self.assertEqual(self.runner.running, 0)

    @defer.inlineCallbacks
    def test_runAsUser(self):
        """
        As root, a child can run as another user and group.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root to change user")
        result = yield self.runner.run(["sh", "-c", "id -u; id -g"], uid=65534, gid=65534,
                                       path="/")
        self.assertEqual(result.stdout.split(), [b"65534", b"65534"])


class FakeReactorChildTests(SynchronousTestCase):
    """
    The timeout sequence, driven by a clock.
    """

    def setUp(self):
        self.reactor = FakeReactor()
        self.signals = []
        self.runner = ChildRunner(
            self.reactor,
            killGrace=2,
            killpg=lambda pid, sig: self.signals.append(("group", pid, sig)),
            kill=lambda pid, sig: self.signals.append(("pid", pid, sig)),
        )

    def test_termThenKill(self):
        """
        At the timeout the process group gets SIGTERM, after the grace
        SIGKILL; nothing before.
        """
        d = self.runner.run(["true"], timeout=10)
        process = self.reactor.processes[0]
        self.assertEqual(process.args[0], "setsid")
        self.reactor.advance(9.9)
        self.assertEqual(self.signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.signals, [("group", process.pid, signal.SIGTERM)])
        self.reactor.advance(2)
        self.assertEqual(self.signals[-1], ("group", process.pid, signal.SIGKILL))
        pid = process.pid
        process.die(signal.SIGKILL)
        result = self.successResultOf(d)
        self.assertTrue(result.timedOut)
        self.assertEqual(result.pid, pid)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_exitCancelsTimer(self):
        """
        A child that ends in time leaves no timer behind and is not signalled.
        """
        d = self.runner.run(["true"], timeout=10)
        self.reactor.processes[0].output(b"hi")
        self.reactor.processes[0].exit(0)
        result = self.successResultOf(d)
        self.assertEqual((result.exitCode, result.stdout, result.timedOut), (0, b"hi", False))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.signals, [])

    def test_stdinDataWrittenAndClosed(self):
        """
        C{stdinData} makes stdin a pipe that gets the data and is then
        closed; without it stdin is a descriptor (C{/dev/null}), not a pipe.
        """
        self.runner.run(["cat"], stdinData=b"message\n")
        process = self.reactor.processes[0]
        self.assertEqual(process.childFDs[0], "w")
        self.assertEqual(process.written, b"message\n")
        self.assertTrue(process.stdinClosed)
        self.runner.run(["cat"])
        process = self.reactor.processes[1]
        self.assertIsInstance(process.childFDs[0], int)
        self.assertEqual(process.written, b"")
        self.assertFalse(process.stdinClosed)

    def test_groupGoneFallsBackToPid(self):
        """
        If the process group does not exist yet (setsid has not run), the
        signal goes to the pid.
        """

        def noGroup(pid, sig):
            raise ProcessLookupError()

        self.runner.killpg = noGroup
        self.runner.run(["true"], timeout=1)
        self.reactor.advance(1)
        self.assertEqual(self.signals, [("pid", self.reactor.processes[0].pid, signal.SIGTERM)])


class CheckScriptTests(SynchronousTestCase):
    """
    L{checkScript} refuses scripts that are not safe to run, with the reason.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.mkdir(self.dir)

    def test_good(self):
        """
        An executable regular file owned by us and not writable by others
        passes.
        """
        checkScript(writeScript(os.path.join(self.dir, "ok"), "exit 0\n", 0o755))

    def test_missing(self):
        """
        A missing script is refused.
        """
        e = self.assertRaises(UnsafeScript, checkScript, os.path.join(self.dir, "none"))
        self.assertEqual(e.reason, "it does not exist")

    def test_directory(self):
        """
        A directory is refused.
        """
        e = self.assertRaises(UnsafeScript, checkScript, self.dir)
        self.assertEqual(e.reason, "it is not a regular file")

    def test_notExecutable(self):
        """
        A file without execute permission is refused.
        """
        path = writeScript(os.path.join(self.dir, "x"), "", 0o644)
        e = self.assertRaises(UnsafeScript, checkScript, path)
        self.assertEqual(e.reason, "it is not executable (mode 0644)")

    def test_groupWritable(self):
        """
        A file writable by group or others is refused.
        """
        for mode in (0o775, 0o757):
            path = writeScript(os.path.join(self.dir, f"w{mode:o}"), "", mode)
            e = self.assertRaises(UnsafeScript, checkScript, path)
            self.assertEqual(e.reason, f"it is writable by group or others (mode {mode:04o})")
            self.assertIn(path, str(e))

    def test_wrongOwner(self):
        """
        A file owned by another user is refused, naming the owner.
        """
        path = writeScript(os.path.join(self.dir, "theirs"), "", 0o755)
        if os.geteuid() == 0:
            os.chown(path, 65534, 65534)
            e = self.assertRaises(UnsafeScript, checkScript, path)
        else:
            e = self.assertRaises(UnsafeScript, checkScript, path, allowedUids=[0])
        self.assertIn("it is owned by ", e.reason)
        self.assertIn(", not by root", e.reason)

    def test_allowedUids(self):
        """
        The owners allowed can be given.
        """
        path = writeScript(os.path.join(self.dir, "mine"), "", 0o755)
        owner = os.stat(path).st_uid
        checkScript(path, allowedUids=[owner])
        self.assertRaises(UnsafeScript, checkScript, path, allowedUids=[owner + 1])
