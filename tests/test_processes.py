"""
Tests for L{sysmon.processes}, on fixture C{/proc} trees and this process.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from sysmon import processes
from sysmon.testing import ProcTree


class ProcessFactsTests(SynchronousTestCase):
    """
    Start time, state, session and command line from C{/proc/<pid>}.
    """

    def setUp(self) -> None:
        self.proc = ProcTree(self.mktemp())

    def test_nameWithParentheses(self) -> None:
        """
        A command name holding spaces and parentheses does not shift the
        fields: the start time is field 22, the state field 3.
        """
        self.proc.process(77, comm="a) b (c", starttime=4321)
        self.assertEqual(processes.startTime(77, self.proc.root), 4321)
        self.assertEqual(processes.state(77, self.proc.root), "S")
        self.assertEqual(processes.sessionId(77, self.proc.root), 77)

    def test_zombieHasNoStartTime(self) -> None:
        """
        A zombie has ended: it has no start time to trust.
        """
        self.proc.process(78, state="Z", starttime=99)
        self.assertIsNone(processes.startTime(78, self.proc.root))
        self.assertEqual(processes.state(78, self.proc.root), "Z")

    def test_missing(self) -> None:
        """
        A pid with no directory gives L{None} everywhere.
        """
        for fact in (processes.startTime, processes.state, processes.sessionId,
                     processes.commandLine, processes.statFields):
            self.assertIsNone(fact(4242, self.proc.root))

    def test_thisProcess(self) -> None:
        """
        For this process the real C{/proc} gives its own session and a start
        time no later than now.
        """
        self.assertEqual(processes.sessionId(os.getpid()), os.getsid(0))
        self.assertLessEqual(processes.startTime(os.getpid()), processes.ticksNow())


class FindTests(SynchronousTestCase):
    """
    Finding the processes of a program.
    """

    def test_matches(self) -> None:
        """
        The program is the first word (or its base name) or, after an
        interpreter, the second; arguments must match exactly when given.
        """
        self.assertTrue(processes.matches(("/bin/sleep", "5"), "/bin/sleep"))
        self.assertTrue(processes.matches(("sleep", "5"), "/usr/bin/sleep", ("5",)))
        self.assertTrue(processes.matches(("/bin/sh", "/opt/run.sh", "x"), "/opt/run.sh", ("x",)))
        self.assertFalse(processes.matches(("/bin/sleep", "5"), "/bin/sleep", ("6",)))
        self.assertFalse(processes.matches(("/bin/sh", "run.sh"), "/opt/run.sh"))
        self.assertFalse(processes.matches(("/bin/true",), "/bin/sleep"))

    def test_findNewestFirstAfter(self) -> None:
        """
        L{processes.find} gives the matching processes started at or after
        C{after}, newest first, and skips zombies.
        """
        proc = ProcTree(self.mktemp())
        proc.process(10, starttime=100, cmdline=("/bin/sleep", "9"))
        proc.process(11, starttime=300, cmdline=("/bin/sleep", "9"))
        proc.process(12, starttime=200, cmdline=("/bin/sleep", "8"))
        proc.process(13, starttime=400, state="Z", cmdline=("/bin/sleep", "9"))
        self.assertEqual(processes.find("/bin/sleep", proc=proc.root),
                         [(11, 300), (12, 200), (10, 100)])
        self.assertEqual(processes.find("/bin/sleep", ("9",), after=150, proc=proc.root),
                         [(11, 300)])
