"""
The restart policy: what keepalive does when a monitored process dies.

The rules are the NonStop Clusters Keepalive Manager's: an B{error limit}
of failures within a B{probation period} stops the restarts (state
C{down}); a process that dies sooner than its B{respawn time} after it
started waits that long before it is restarted; B{term wait} is the time
between SIGTERM and SIGKILL when keepalive stops a process.  Pure logic:
no clock, no I/O; the supervisor passes the times in.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["Decision", "Policy", "State"]


class State(str, enum.Enum):
    """
    The states of a monitored process (the table's C{state} field).

    @cvar START: being started.
    @cvar OK: running.
    @cvar DEAD: not running; goes to C{respawn}, or to C{down} at the error
        limit.
    @cvar RESPAWN: waiting for, or in, its restart.
    @cvar DOWN: error limit reached (or its group went down): no more
        restarts until it is registered again.
    @cvar SHUTDOWN: stopped on purpose (a group member stopped because a
        critical member failed, or keepalive stopping it).
    @cvar DAEMONIZE: it forks into the background; keepalive is finding
        the process that stays.
    """

    START = "start"
    OK = "ok"
    DEAD = "dead"
    RESPAWN = "respawn"
    DOWN = "down"
    SHUTDOWN = "shutdown"
    DAEMONIZE = "daemonize"


@attrs.frozen
class Decision:
    """
    What to do after a failure.

    @ivar action: C{"respawn"} or C{"down"}.
    @ivar delay: seconds to wait before the restart (0 for at once).
    @ivar reason: one phrase for the log.
    """

    action: str
    delay: float
    reason: str


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, not {value}")


def _notNegative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value}")


@attrs.frozen
class Policy:
    """
    One process's restart parameters.

    @ivar errorLimit: failures within C{probation} that put it C{down}.
    @ivar probation: seconds over which failures are counted.
    @ivar respawnTime: a process that lived less than this many seconds
        waits this long before its restart.
    @ivar termWait: seconds between SIGTERM and SIGKILL when stopping it.
    """

    errorLimit: int = attrs.field(default=10, validator=_positive)
    probation: float = attrs.field(default=300.0, validator=_positive)
    respawnTime: float = attrs.field(default=1.0, validator=_notNegative)
    termWait: float = attrs.field(default=2.0, validator=_notNegative)

    def countFailure(
        self, now: float, failures: tuple[float, ...]
    ) -> tuple[bool, tuple[float, ...]]:
        """
        Add a failure at C{now} to the recent ones.

        @param failures: the times of earlier failures.
        @return: whether the error limit is now reached, and the failures
            that are still within the probation period (C{now} included).
        """
        recent = tuple(t for t in failures if now - t < self.probation) + (now,)
        return len(recent) >= self.errorLimit, recent

    def afterDeath(
        self, now: float, startedAt: float, failures: tuple[float, ...]
    ) -> tuple[Decision, tuple[float, ...]]:
        """
        Decide what follows a death at C{now} of a process started at
        C{startedAt}.

        @param failures: the times of earlier failures.
        @return: the decision, and the failures to remember.
        """
        limitReached, recent = self.countFailure(now, failures)
        if limitReached:
            return (
                Decision(
                    "down",
                    0.0,
                    f"{len(recent)} failures within {self.probation:g}s "
                    f"(error limit {self.errorLimit})",
                ),
                recent,
            )
        lived = now - startedAt
        if lived < self.respawnTime:
            return (
                Decision(
                    "respawn",
                    self.respawnTime,
                    f"it lived {max(lived, 0.0):.2f}s, less than its respawn time "
                    f"of {self.respawnTime:g}s",
                ),
                recent,
            )
        return Decision("respawn", 0.0, "restarting at once"), recent
