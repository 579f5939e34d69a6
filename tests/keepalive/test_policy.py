"""
Tests for L{sysmon.keepalive.policy}: the restart rules, with the times
passed in.
"""

from __future__ import annotations

from twisted.trial import unittest

from sysmon.keepalive.policy import Decision, Policy, State


class PolicyTests(unittest.SynchronousTestCase):
    """
    Error limit within probation, respawn time.
    """

    def test_defaults(self) -> None:
        """
        The defaults are the NonStop Clusters manager's: 10 failures within
        300 s, term wait 2 s; respawn time 1 s (runit's floor).
        """
        self.assertEqual(Policy(), Policy(errorLimit=10, probation=300.0, respawnTime=1.0,
                                          termWait=2.0))

    def test_tenthFailureWithinProbationIsDown(self) -> None:
        """
        The failure that reaches the error limit within the probation period
        puts the process down; the ones before it restart it.
        """
        policy = Policy(errorLimit=10, probation=300)
        failures: tuple[float, ...] = ()
        for n in range(9):
            decision, failures = policy.afterDeath(1000.0 + n * 10, 990.0 + n * 10, failures)
            self.assertEqual(decision.action, "respawn", n)
        decision, failures = policy.afterDeath(1090.0, 1080.0, failures)
        self.assertEqual(decision, Decision("down", 0.0,
                                            "10 failures within 300s (error limit 10)"))
        self.assertEqual(len(failures), 10)

    def test_oldFailuresForgotten(self) -> None:
        """
        Failures older than the probation period do not count: nine old ones
        and one new one restart the process, and only the new one is kept.
        """
        policy = Policy(errorLimit=10, probation=300)
        old = tuple(100.0 + n for n in range(9))
        decision, failures = policy.afterDeath(500.0, 450.0, old)
        self.assertEqual(decision.action, "respawn")
        self.assertEqual(failures, (500.0,))

    def test_probationBoundary(self) -> None:
        """
        A failure exactly one probation period ago no longer counts; one a
        moment later still does.
        """
        policy = Policy(errorLimit=2, probation=300)
        self.assertEqual(policy.afterDeath(400.0, 350.0, (100.0,))[0].action, "respawn")
        self.assertEqual(policy.afterDeath(400.0, 350.0, (100.5,))[0].action, "down")

    def test_respawnTime(self) -> None:
        """
        A process that lived less than its respawn time waits that long; one
        that lived longer (or exactly that long) is restarted at once.
        """
        policy = Policy(respawnTime=5)
        decision, _ = policy.afterDeath(102.0, 100.0, ())
        self.assertEqual((decision.action, decision.delay), ("respawn", 5))
        self.assertIn("it lived 2.00s, less than its respawn time of 5s", decision.reason)
        self.assertEqual(policy.afterDeath(105.0, 100.0, ())[0].delay, 0)
        self.assertEqual(Policy(respawnTime=0).afterDeath(100.0, 100.0, ())[0].delay, 0)

    def test_countFailure(self) -> None:
        """
        L{Policy.countFailure} (a restart script's refusal) counts toward the
        same limit.
        """
        policy = Policy(errorLimit=2, probation=60)
        self.assertEqual(policy.countFailure(10.0, ()), (False, (10.0,)))
        self.assertEqual(policy.countFailure(20.0, (10.0,)), (True, (10.0, 20.0)))

    def test_invalid(self) -> None:
        """
        Limits that make no sense are refused with the field's name.
        """
        for kw, name in [({"errorLimit": 0}, "errorLimit"), ({"probation": 0}, "probation"),
                         ({"respawnTime": -1}, "respawnTime"), ({"termWait": -1}, "termWait")]:
            with self.assertRaises(ValueError) as caught:
                Policy(**kw)
            self.assertIn(name, str(caught.exception))

    def test_states(self) -> None:
        """
        The states are the table's words.
        """
        self.assertEqual([s.value for s in State],
                         ["start", "ok", "dead", "respawn", "down", "shutdown", "daemonize"])
