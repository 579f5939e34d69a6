"""
Per-key rate limiting of log lines: a daemon that hears the same complaint
from a peer thousands of times a second says it once a minute.
"""

from __future__ import annotations

from typing import Hashable

__all__ = ["Once"]


class Once:
    """
    Answers whether something keyed C{key} may be said now: at most once per
    C{interval} seconds per key.  Old keys are dropped when many pile up, so
    a flood from ever-new (spoofed) addresses cannot grow it without bound.

    @param interval: seconds between two yeses for one key.
    @param limit: keys kept before the ones older than C{interval} go.
    """

    def __init__(self, interval: float = 60.0, limit: int = 4096) -> None:
        self.interval = interval
        self.limit = limit
        self._last: dict[Hashable, float] = {}

    def __call__(self, key: Hashable, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= self.limit:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
        self._last[key] = now
        return True
