"""
Test helpers for the watchdog service: a recording shutdown action, a fake
pinger and a harness that runs a L{WatchdogService} on a L{FakeReactor}
with fixture trees.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import attrs
from twisted.internet import defer
from zope.interface import implementer

from sysmon.children import ChildRunner
from sysmon.testing import FakeReactor, LogCapture, ProcTree, writeScript
from sysmon.watchdog import config
from sysmon.watchdog.checks import BlockingRunner, Check
from sysmon.watchdog.codes import ENOERR
from sysmon.watchdog.service import WatchdogService
from sysmon.watchdog.shutdown import IShutdownAction


@implementer(IShutdownAction)
class RecordingShutdown:
    """
    A shutdown action that only records what it was asked.

    @ivar calls: (code, mode) per call.
    """

    def __init__(self, accepted: bool = True) -> None:
        self.calls: list[tuple[int, str]] = []
        self.accepted = accepted

    def shutdown(self, code: int, mode: str) -> defer.Deferred[bool]:
        self.calls.append((code, mode))
        return defer.succeed(self.accepted)


class FakePinger:
    """
    A pinger whose answer the test sets.

    @ivar code: what every ping answers.
    @ivar pings: (address, count, wait) per ping.
    """

    def __init__(self) -> None:
        self.code = ENOERR
        self.pings: list[tuple[str, int, float]] = []
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.closed = True

    def ping(self, address: str, count: int, wait: float) -> defer.Deferred[int]:
        self.pings.append((address, count, wait))
        return defer.succeed(self.code)


def script(directory: str, name: str, body: str = "exit 0\n") -> str:
    """
    Write an executable shell script (mode 0755) and return its path.
    """
    return writeScript(os.path.join(directory, name), body)


@attrs.define
class Harness:
    """
    A service on a fake reactor with fixture /proc and /sys trees.

    @ivar root: the test's directory.
    """

    case: Any
    root: str = ""
    reactor: FakeReactor = attrs.Factory(FakeReactor)
    action: RecordingShutdown = attrs.Factory(RecordingShutdown)
    cfg: config.WatchdogConfig | None = None
    proc: ProcTree | None = None
    runner: ChildRunner | None = None
    service: WatchdogService | None = None

    def __attrs_post_init__(self) -> None:
        self.root = os.path.abspath(self.case.mktemp())
        os.makedirs(os.path.join(self.root, "log"))
        os.makedirs(os.path.join(self.root, "sys"))
        self.proc = ProcTree.make(os.path.join(self.root, "proc"))
        self.cfg = attrs.evolve(config.parse([], "<test>"),
                                logDir=os.path.join(self.root, "log"), admin=None)
        noSignal = lambda pid, signum: None  # noqa: E731
        self.runner = ChildRunner(self.reactor, killGrace=2.0, killpg=noSignal, kill=noSignal)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def configure(self, **changes: Any) -> config.WatchdogConfig:
        self.cfg = attrs.evolve(self.cfg, **changes)
        return self.cfg

    def start(self, checks: Sequence[Check], **kw: Any) -> WatchdogService:
        kw.setdefault("repairRunner", self.runner)
        kw.setdefault("syncRunner", BlockingRunner())
        self.service = WatchdogService(self.cfg, checks, action=self.action,
                                       reactor=self.reactor, **kw)
        self.service.privilegedStartService()
        self.service.startService()
        self.case.addCleanup(self.stop)
        return self.service

    def stop(self) -> None:
        if self.service is not None and self.service.running:
            for process in self.reactor.processes:
                if not process.ended:
                    process.exit(0)
            self.service.stopService()

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass, one second at a time (so every round runs).
        """
        whole = int(seconds)
        for _ in range(whole):
            self.reactor.advance(1)
        if seconds - whole:
            self.reactor.advance(seconds - whole)

    def running(self) -> list[Any]:
        """
        The fake child processes that have not ended.
        """
        return [p for p in self.reactor.processes if not p.ended]
