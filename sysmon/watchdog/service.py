"""
The watchdog service: rounds of checks, retry timers, repairs, the
shutdown decision, and the device refresh on a timer of its own.

Every C{interval} seconds a round starts every check that is not still
busy from an earlier round; each result, when it comes, goes through the
original's rules (L{WatchdogService.handle}):

  - ENOERR clears the check's retry timer and repair count; EDONTKNOW
    changes nothing;
  - EREBOOT, ERESET, ETOOHOT and ENOMEM go straight to the shutdown
    decision;
  - any other code starts the check's retry timer; a failure that persists
    strictly longer than C{retry-timeout} seconds is repaired (by the
    check's own program for C{test-directory} programs, else by
    C{repair-binary}), counting toward C{repair-maximum}; with no repair
    program, with the count exceeded, or when the repair fails, the
    shutdown is decided.

The device is fed from a separate timer every C{interval} seconds, so a
check that hangs never delays the refresh: only a decided shutdown stops
the feeding, and only after the mail, the request to the init system and
a grace of C{sigterm-delay} + L{WatchdogService.margin} seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from typing import Any, Callable, Sequence

import attrs
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from sysmon.children import ChildError, ChildResult, ChildRunner
from sysmon.watchdog.checks import BlockingRunner, Check, ThreadRunner, childResultCode
from sysmon.watchdog.codes import (
    EDONTKNOW,
    ENOERR,
    ERESET,
    ETOOHOT,
    NOT_REPAIRABLE,
    describe,
)
from sysmon.watchdog.config import WatchdogConfig
from sysmon.watchdog.device import DeviceError
from sysmon.watchdog.shutdown import describeDecision

__all__ = ["RetryState", "WatchdogService", "bootClock", "lockMemory"]


@attrs.define
class RetryState:
    """
    One check's retry timer and repair count.

    @ivar since: when the current run of failures began (L{None}: none).
    @ivar repairs: repairs since the check last passed.
    """

    since: float | None = None
    repairs: int = 0


class _NoObject(Check):
    """
    The pseudo-check for failures with no object (device refresh, sync): no
    retry timer, the global repair program without an object name.
    """

    name = "<no object>"
    timed = False


_NO_OBJECT = _NoObject()


def bootClock() -> float:
    """
    CLOCK_BOOTTIME (it keeps counting across a suspend, as the original's
    retry timers do), else CLOCK_MONOTONIC.
    """
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


class WatchdogService(service.Service):
    """
    Runs the checks and feeds the device.

    @ivar rounds: rounds started.
    @ivar feeding: the device is still being fed (False after a decided
        shutdown's grace, or at once for ERESET).
    @ivar decided: the code of the decided shutdown, or L{None}.
    @ivar states: check name -> L{RetryState}.
    @ivar failures: check name -> failed results seen (for metrics).
    @ivar repairsRun: repair programs started.
    @ivar lastRefresh: the clock's time of the last successful refresh.
    """

    log = Logger()
    name = "watchdog"
    #: seconds beyond sigterm-delay that the init system gets to reboot
    #: before the device is left to expire.
    margin = 10.0

    def __init__(
        self,
        config: WatchdogConfig,
        checks: Sequence[Check],
        *,
        action: Any,
        device: Any = None,
        heartbeat: Any = None,
        notifier: Any = None,
        mailer: Any = None,
        pinger: Any = None,
        repairRunner: ChildRunner | None = None,
        syncRunner: BlockingRunner | None = None,
        reactor: Any = None,
        now: Callable[[], float] | None = None,
        noAction: bool = False,
        sync: bool = False,
        tuneProcess: bool = False,
        loopExit: int = 0,
        stop: Callable[[], None] | None = None,
    ) -> None:
        """
        @param action: the L{sysmon.watchdog.shutdown.IShutdownAction}.
        @param device: the L{sysmon.watchdog.device.WatchdogDevice}, or
            L{None} (no device configured, or C{-q}).
        @param heartbeat: a L{sysmon.watchdog.device.Heartbeat}, or L{None};
            opened and closed here, stamped by the device on each refresh.
        @param notifier: a L{sysmon.sdnotify.Notifier}, or L{None}.
        @param mailer: a L{sysmon.watchdog.shutdown.Mailer}, or L{None}.
        @param pinger: opened in C{privilegedStartService} and closed at
            the end, when ping checks need it.
        @param now: the clock of the retry timers (CLOCK_BOOTTIME by
            default; the reactor's with an injected reactor).
        @param tuneProcess: at start, protect the process from the OOM killer
            and apply the configuration's C{realtime}/C{priority} (a whole
            process's settings: off in unit tests).
        @param stop: what C{--loop-exit} calls (the reactor's C{stop}).
        """
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621

            now = now or bootClock
        self.reactor = reactor
        self.now = now or reactor.seconds
        self.config = config
        self.checks = list(checks)
        self.action = action
        self.device = device
        self.heartbeat = heartbeat
        self.notifier = notifier
        self.mailer = mailer
        self.pinger = pinger
        self.repairRunner = repairRunner or ChildRunner(reactor, killGrace=2.0)
        self.syncRunner = syncRunner or ThreadRunner(reactor)
        self.noAction = noAction
        self.sync = sync
        self.tuneProcess = tuneProcess
        self.loopExit = loopExit
        self.stop = stop or reactor.stop
        self.rounds = 0
        self.feeding = True
        self.decided: int | None = None
        self.states: dict[str, RetryState] = {}
        self.failures: dict[str, int] = {}
        self.repairsRun = 0
        self.lastRefresh: float | None = None
        self._busy: dict[Check, defer.Deferred[Any]] = {}
        self._repairing: dict[Check, defer.Deferred[Any]] = {}
        self._refreshLoop: task.LoopingCall | None = None
        self._roundLoop: task.LoopingCall | None = None
        self._expiry: Any = None
        self._shutdown: defer.Deferred[Any] | None = None

    # -- life cycle --------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Open what needs root: the device (never under C{-q}), the ping
        sockets, the heartbeat file.  A device that cannot be opened ends
        the daemon with the reason (exit status 1): a watchdog daemon that
        cannot feed its device is not doing its job.
        """
        if self.tuneProcess:
            lockMemory(self.config.realtime, self.config.priority, self.log)
        if self.device is not None and not self.noAction:
            try:
                self.device.open()
            except DeviceError as e:
                self.log.critical("{error}", error=str(e))
                raise SystemExit(1)
        if self.pinger is not None:
            self.pinger.open()
        if self.heartbeat is not None and self.device is not None and not self.noAction:
            self.heartbeat.open()
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        interval = self.config.interval
        if self.notifier is not None:
            self.notifier.send("READY=1", f"STATUS=checking every {interval}s")
        self._refreshLoop = task.LoopingCall(self.refresh)
        self._refreshLoop.clock = self.reactor
        self._refreshLoop.start(interval, now=True)
        self._roundLoop = task.LoopingCall(self.round)
        self._roundLoop.clock = self.reactor
        self._roundLoop.start(interval, now=True)

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        for loop in (self._refreshLoop, self._roundLoop):
            if loop is not None and loop.running:
                loop.stop()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        pending = list(self._busy.values()) + list(self._repairing.values())
        for d in pending:
            d.cancel()
        if self._shutdown is not None:
            self._shutdown.cancel()
        for check in self.checks:
            check.close()
        if self.pinger is not None:
            self.pinger.close()
        if self.device is not None and self.device.isOpen:
            if self.decided is None:
                self.device.close(magic=True)
            else:
                # A shutdown is under way: leave the timer armed, so the
                # hardware resets the machine if the shutdown hangs.
                self.log.warn("stopping during a shutdown: {device} left armed",
                              device=self.device.path)
                self.device.close(magic=False)
        if self.heartbeat is not None:
            self.heartbeat.close()
        if self.notifier is not None:
            self.notifier.send("STOPPING=1")
        return defer.DeferredList(
            [self.repairRunner.stopAll()] + [_quiet(d) for d in pending]
        ).addCallback(lambda _: None)

    # -- the refresh -------------------------------------------------------------

    def refresh(self) -> None:
        """
        Feed the device (unless the feeding stopped), write the heartbeat,
        tell systemd the daemon is alive.
        """
        if not self.feeding:
            return
        if self.device is not None and self.device.isOpen:
            code = self.device.keepalive()
            if code != ENOERR:
                self.log.error("cannot refresh {device}: {code} = '{text}'",
                               device=self.device.path, code=code, text=describe(code))
                self.handle(code, None)
                return
        self.lastRefresh = self.now()
        if self.notifier is not None:
            self.notifier.send("WATCHDOG=1")

    # -- rounds ------------------------------------------------------------------

    def round(self) -> None:
        """
        Start one round: every check that is not still busy (or being
        repaired) from an earlier round.
        """
        self.rounds += 1
        if self.sync:
            self.syncRunner.call(_sync, 60.0).addCallback(self.handle, None)
        for check in self.checks:
            if check in self._busy or check in self._repairing:
                continue
            d = defer.maybeDeferred(check.run)
            self._busy[check] = d
            d.addBoth(self._checked, check)
        verbose = self.config.verbose
        if verbose and self.config.logtick and self.rounds % self.config.logtick == 0:
            self.log.debug("still alive after {rounds} interval(s)", rounds=self.rounds)
        if self.loopExit and self.rounds >= self.loopExit:
            self.log.warn("loop exit on interval counter reached")
            self.loopExit = 0
            self.reactor.callLater(0, self.stop)

    def _checked(self, result: Any, check: Check) -> None:
        self._busy.pop(check, None)
        if isinstance(result, Failure):
            if result.check(defer.CancelledError):
                return None
            self.log.failure("check {check} raised", result, check=check.name)
            return None
        if self.running:
            self.handle(result, check)
        return None

    # -- the rules ---------------------------------------------------------------

    def handle(self, code: int, check: Check | None) -> None:
        """
        Act on one result, as the original's C{wd_action}.

        @param check: the check it came from; L{None} for failures with no
            object (device refresh, sync), which skip the retry timer.
        """
        check = check or _NO_OBJECT
        if code == EDONTKNOW:
            return
        if code == ENOERR:
            state = self.states.get(check.name)
            if state is not None and (state.since is not None or state.repairs):
                self.log.info("{check} is healthy again", check=check.name)
                del self.states[check.name]
            return
        self.failures[check.name] = self.failures.get(check.name, 0) + 1
        if self.decided is not None:
            return
        if code in NOT_REPAIRABLE:
            self.decide(code, check)
            return
        self._attemptRepair(code, check)

    def _attemptRepair(self, code: int, check: Check) -> None:
        state = None
        retry = self.config.retryTimeout
        if check.timed:
            state = self.states.setdefault(check.name, RetryState())
        if state is not None and retry > 0:
            now = self.now()
            if state.since is None:
                state.since = now
                self.log.warn(
                    "{check} failed with {code} = '{text}': acting if it still fails "
                    "after {retry} seconds", check=check.name, code=code, text=describe(code),
                    retry=retry,
                )
                return
            used = int(now - state.since)
            if used <= retry:
                if self.config.verbose:
                    self.log.debug("Retry at {used} seconds for {check}", used=used,
                                   check=check.name)
                return
            self.log.warn("Retry timed-out at {used} seconds for {check}", used=used,
                          check=check.name)
        if state is not None:
            maximum = self.config.repairMaximum
            state.repairs += 1
            if maximum > 0 and state.repairs > maximum:
                self.log.warn("Repair count exceeded ({count} for {check})",
                              count=state.repairs, check=check.name)
                self.decide(code, check)
                return
            # The next fault period starts afresh.
            state.since = None
        argv = check.repairCommand(code, self.config.repairBinary)
        if argv is None:
            self.decide(code, check)
            return
        self._repair(code, check, argv)

    def _repair(self, code: int, check: Check, argv: list[str]) -> None:
        self.repairsRun += 1
        self.log.warn("repairing {check} (error {code} = '{text}'): {argv}",
                      check=check.name, code=code, text=describe(code), argv=argv)
        logDir = self.config.logDir
        timeout = self.config.repairTimeout or None
        d = self.repairRunner.run(
            argv,
            timeout=timeout,
            stdoutPath=os.path.join(logDir, "repair-bin.stdout"),
            stderrPath=os.path.join(logDir, "repair-bin.stderr"),
        )
        self._repairing[check] = d

        def ended(result: ChildResult) -> int:
            return childResultCode(result)

        def failed(failure: Any) -> int:
            failure.trap(ChildError)
            self.log.error("cannot run repair program {program}: {why}",
                           program=argv[0], why=str(failure.value))
            return code

        def done(result: Any) -> None:
            self._repairing.pop(check, None)
            if isinstance(result, Failure):
                if not result.check(defer.CancelledError):
                    self.log.failure("repair of {check}", result, check=check.name)
                return
            if not self.running:
                return
            if result == ENOERR:
                self.log.info("repair of {check} succeeded", check=check.name)
                return
            self.log.error("repair binary {program} returned {code} = '{text}'",
                           program=argv[0], code=result, text=describe(result))
            self.decide(result, check)

        d.addCallbacks(ended, failed).addBoth(done)

    # -- the decision ------------------------------------------------------------

    def decide(self, code: int, check: Check | None = None) -> None:
        """
        Shut the system down because of C{code}: mail the admin, ask the init
        system, and after the grace stop feeding the device.  Under C{-q}
        only logged.  Decided once: later failures change nothing.
        """
        name = check.name if check is not None else _NO_OBJECT.name
        if self.noAction:
            self.log.warn(
                "Shutdown blocked by --no-action (error {code} = '{text}' from {check})",
                code=code, text=describe(code), check=name,
            )
            self.states.pop(name, None)
            return
        if self.decided is not None:
            return
        self.decided = code
        self.log.critical("{decision}", decision=describeDecision(code), code=code,
                          check=name)
        if self.notifier is not None:
            self.notifier.send(f"STATUS=shutting down: error {code} = '{describe(code)}'")
        if code == ERESET:
            self.stopFeeding("a hard reset was requested")
            return
        if code == ETOOHOT:
            mode = "poweroff" if self.config.tempPowerOff else "halt"
        else:
            mode = "reboot"
        if self.mailer is not None:
            mailed = self.mailer.send(code)
        else:
            mailed = defer.succeed(False)
        self._shutdown = mailed
        mailed.addBoth(lambda _: self.action.shutdown(code, mode))
        mailed.addBoth(self._asked, mode)

    def _asked(self, accepted: Any, mode: str) -> None:
        self._shutdown = None
        if isinstance(accepted, Failure):
            if accepted.check(defer.CancelledError):
                return
            self.log.failure("asking the init system to {mode}", accepted, mode=mode)
        grace = self.config.sigtermDelay + self.margin
        self.log.warn("the init system was asked to {mode}; the device is fed for "
                      "{grace} more seconds", mode=mode, grace=grace)
        self._expiry = self.reactor.callLater(
            grace, self.stopFeeding, f"the system did not {mode} within {grace} seconds")

    def stopFeeding(self, why: str) -> None:
        """
        Stop refreshing the device so the hardware resets the machine (its
        timeout set to 1 s first).
        """
        if not self.feeding:
            return
        self.feeding = False
        if self.device is not None and self.device.isOpen:
            self.device.setTimeout(1)
            self.log.critical("{why}: no longer feeding {device}, the hardware watchdog "
                              "will reset the machine", why=why, device=self.device.path)
        else:
            self.log.critical("{why}: no watchdog device is open, nothing can force a "
                              "reset", why=why)


def _quiet(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    return d.addErrback(lambda _: None)


def _sync() -> int:
    os.sync()
    os.sync()
    return ENOERR


def lockMemory(realtime: bool, priority: int, log: Logger | None = None,
               proc: str = "/proc") -> None:
    """
    What the original does at start: keep out of the OOM killer's reach
    (C{oom_score_adj} -1000) and, with C{realtime}, lock the process in
    memory and run it SCHED_RR at C{priority}.  Best effort: what is not
    permitted is logged.
    """
    log = log or WatchdogService.log
    try:
        with open(os.path.join(proc, "self", "oom_score_adj"), "w") as f:
            f.write("-1000\n")
    except OSError as e:
        log.warn("cannot protect the daemon from the OOM killer: {why}", why=e.strerror)
    if not realtime:
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    MCL_CURRENT, MCL_FUTURE = 1, 2
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        log.warn("cannot lock the daemon in memory: {why}",
                 why=os.strerror(ctypes.get_errno()))
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
    except OSError as e:
        log.warn("cannot run at real-time priority {priority}: {why}",
                 priority=priority, why=e.strerror)
