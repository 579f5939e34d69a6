"""
Tests for L{sysmon.ratelimit.Once}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sysmon.ratelimit import Once


class OnceTests(SynchronousTestCase):
    """
    Once per interval per key, with a bounded memory.
    """

    def test_oncePerInterval(self):
        """
        A key is allowed again only when the interval has passed; keys are
        independent.
        """
        once = Once(60.0)
        self.assertTrue(once("a", 0.0))
        self.assertFalse(once("a", 59.9))
        self.assertTrue(once("b", 59.9))
        self.assertTrue(once("a", 60.0))
        self.assertFalse(once("a", 61.0))

    def test_bounded(self):
        """
        Many keys do not grow it past its limit once their interval is over,
        and dropping old keys does not let a recent one through again.
        """
        once = Once(10.0, limit=100)
        for i in range(100):
            once(i, 0.0)
        self.assertTrue(once("recent", 5.0))
        for i in range(1000):
            once(("new", i), 20.0 + i / 1000)
        self.assertLessEqual(len(once._last), 1001)
        self.assertFalse(once(("new", 999), 21.0))
        self.assertEqual(len([k for k in once._last if isinstance(k, int)]), 0)
